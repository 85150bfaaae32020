//! Payload filters in the JSON shape Qdrant users know:
//! `{"must": [...], "should": [...], "must_not": [...], "min_should": {...}}`
//! of conditions: on a field (`match` value / any / except / text, `range`,
//! `values_count`), `is_empty`, `is_null`, `has_id`, `nested` (one object of
//! a list satisfies a filter) and filters within filters. Parsing (bounded
//! in every dimension that multiplies work) is in `filter_parse`.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::EngineError;
use crate::id::PointId;
use crate::payload::{Node, PayloadView, Scalar};

pub use crate::filter_parse::{
    MAX_ANY, MAX_CONDITIONS, MAX_DEPTH, MAX_HAS_ID, MAX_TEXT, MAX_VALUES,
};

/// A boolean combination of conditions. An empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
    pub min_should: Option<MinShould>,
}

/// At least `min_count` of `conditions` hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinShould {
    pub conditions: Vec<Condition>,
    pub min_count: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field {
        key: Vec<String>,
        test: FieldTest,
    },
    HasId(HashSet<PointId>),
    /// A filter used as a condition.
    Nested(Box<Filter>),
    /// The field is missing, null, or an empty list.
    IsEmpty(Vec<String>),
    /// The field is present and null.
    IsNull(Vec<String>),
    /// One object of the list at `key` satisfies `filter` on its own
    /// (Qdrant's `nested`): conditions on different fields must hold in
    /// the same element.
    Within {
        key: Vec<String>,
        filter: Box<Filter>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldTest {
    Match(MatchValue),
    Any(AnyOf),
    /// Some value of the field is none of these (a null is not).
    Except(AnyOf),
    /// Some string value of the field contains this text.
    Text(String),
    Range(Range),
    /// How many values the field holds (a list counts its elements, a null
    /// none), within these bounds.
    ValuesCount(Range),
}

/// An exact value to match: a keyword, an integer, a bool, or a number
/// with a fractional part (held as its bits, so that values hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
    Float(FloatBits),
}

/// A finite, non-integral `f64`, compared by its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FloatBits(u64);

impl FloatBits {
    /// `x` as a match value: integral values become integers, so that a
    /// number has exactly one form.
    pub fn value(x: f64) -> Option<MatchValue> {
        if !x.is_finite() {
            return None;
        }
        if x.fract() == 0.0 && x >= i64::MIN as f64 && x < i64::MAX as f64 {
            return Some(MatchValue::Integer(x as i64));
        }
        Some(MatchValue::Float(FloatBits(x.to_bits())))
    }

    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

/// The values of a `match.any` or `match.except`, hashed so that testing a
/// payload value costs the same however long the list is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnyOf {
    values: Vec<MatchValue>,
    keywords: HashSet<String>,
    integers: HashSet<i64>,
    floats: HashSet<FloatBits>,
    bools: [bool; 2],
}

impl AnyOf {
    pub fn new(values: impl IntoIterator<Item = MatchValue>) -> AnyOf {
        let mut a = AnyOf::default();
        for v in values {
            let fresh = match &v {
                MatchValue::Keyword(s) => a.keywords.insert(s.clone()),
                MatchValue::Integer(i) => a.integers.insert(*i),
                MatchValue::Float(f) => a.floats.insert(*f),
                MatchValue::Bool(b) => !std::mem::replace(&mut a.bools[*b as usize], true),
            };
            if fresh {
                a.values.push(v);
            }
        }
        a
    }

    /// The distinct values, in the order given.
    pub fn values(&self) -> &[MatchValue] {
        &self.values
    }

    fn matches(&self, v: Scalar<'_>) -> bool {
        match v {
            Scalar::Str(x) => self.keywords.contains(x),
            Scalar::Bool(b) => self.bools[b as usize],
            Scalar::Null => false,
            // Integers compare exactly, never through a float.
            Scalar::Int(i) => self.integers.contains(&i),
            Scalar::UInt(u) => i64::try_from(u).is_ok_and(|i| self.integers.contains(&i)),
            Scalar::Float(f) => match FloatBits::value(f) {
                Some(MatchValue::Integer(i)) => self.integers.contains(&i),
                Some(MatchValue::Float(b)) => self.floats.contains(&b),
                _ => false,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Filter {
    /// Parses a filter from JSON, naming the offending part on error.
    pub fn from_json(v: &Value) -> Result<Filter, EngineError> {
        crate::filter_parse::parse(v)
    }

    /// Parses a filter from JSON text straight into its typed form: no
    /// intermediate tree is built, and a filter over any bound is refused
    /// as soon as the bound is crossed.
    pub fn from_json_text(s: &str) -> Result<Filter, EngineError> {
        crate::filter_parse::parse_str(s)
    }

    /// Whether a point with this id and payload satisfies the filter.
    pub fn matches<P: PayloadView + ?Sized>(&self, id: &PointId, payload: Option<&P>) -> bool {
        self.must.iter().all(|c| c.matches(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(id, payload)))
            && !self.must_not.iter().any(|c| c.matches(id, payload))
            && self.min_should.as_ref().is_none_or(|m| {
                // Stops counting as soon as the answer is known.
                let mut hit = 0;
                let mut left = m.conditions.len();
                for c in &m.conditions {
                    if hit >= m.min_count || hit + left < m.min_count {
                        break;
                    }
                    hit += c.matches(id, payload) as usize;
                    left -= 1;
                }
                hit >= m.min_count
            })
    }

    /// Whether the filter matches every point by its form alone: no
    /// conditions, or only filters within it that are so themselves.
    pub fn is_empty(&self) -> bool {
        let all = |c: &Condition| matches!(c, Condition::Nested(f) if f.is_empty());
        self.must.iter().all(all)
            && (self.should.is_empty() || self.should.iter().any(all))
            && self.must_not.is_empty()
            && self.min_should.as_ref().is_none_or(|m| {
                m.min_count == 0 || m.conditions.iter().filter(|c| all(c)).count() >= m.min_count
            })
    }
}

impl Condition {
    fn matches<P: PayloadView + ?Sized>(&self, id: &PointId, payload: Option<&P>) -> bool {
        match self {
            Condition::HasId(set) => set.contains(id),
            Condition::Nested(f) => f.matches(id, payload),
            Condition::Field { key, test } => {
                let Some(payload) = payload else { return false };
                test.holds(payload, key)
            }
            Condition::IsEmpty(key) => {
                let Some(payload) = payload else { return true };
                let mut empty = true;
                payload.leaves(key, &mut |n| {
                    empty &= n.is_null() || n.array_len() == Some(0)
                });
                empty
            }
            Condition::IsNull(key) => {
                let Some(payload) = payload else { return false };
                let mut null = false;
                payload.leaves(key, &mut |n| null |= n.is_null());
                null
            }
            Condition::Within { key, filter } => {
                let Some(payload) = payload else { return false };
                let mut found = false;
                payload.leaves(key, &mut |n| {
                    let mut check = |item: Node<'_>| {
                        if !found && item.is_object() {
                            found = filter.matches(id, Some(&item));
                        }
                    };
                    if !n.each_item(&mut check) {
                        check(n);
                    }
                });
                found
            }
        }
    }
}

impl FieldTest {
    fn holds<P: PayloadView + ?Sized>(&self, payload: &P, key: &[String]) -> bool {
        if let FieldTest::ValuesCount(r) = self {
            let mut count = 0usize;
            let mut any = false;
            payload.leaves(key, &mut |n| {
                any = true;
                count += match n.array_len() {
                    Some(len) => len,
                    None => !n.is_null() as usize,
                };
            });
            return any && r.contains(count as f64);
        }
        // Every value at the dotted path is visited (arrays along the way
        // element by element): a condition on a list field holds when any
        // element satisfies it.
        let mut found = false;
        payload.visit(key, &mut |v| {
            if !found && self.matches(v) {
                found = true;
            }
        });
        found
    }

    fn matches(&self, v: Scalar<'_>) -> bool {
        match self {
            FieldTest::Match(m) => m.matches(v),
            FieldTest::Any(set) => set.matches(v),
            FieldTest::Except(set) => !matches!(v, Scalar::Null) && !set.matches(v),
            FieldTest::Text(t) => matches!(v, Scalar::Str(s) if s.contains(t.as_str())),
            FieldTest::Range(r) => v.as_f64().is_some_and(|x| r.contains(x)),
            FieldTest::ValuesCount(_) => false,
        }
    }
}

impl MatchValue {
    fn matches(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (MatchValue::Keyword(s), Scalar::Str(x)) => s == x,
            (MatchValue::Bool(b), Scalar::Bool(x)) => *b == x,
            (MatchValue::Integer(i), Scalar::Int(x)) => *i == x,
            (MatchValue::Integer(i), Scalar::UInt(x)) => i64::try_from(x) == Ok(*i),
            // An integral float is the integer it names, compared exactly.
            (MatchValue::Integer(i), Scalar::Float(f)) => {
                FloatBits::value(f) == Some(MatchValue::Integer(*i))
            }
            (MatchValue::Float(b), Scalar::Float(f)) => b.get() == f,
            _ => false,
        }
    }
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::from_json(&v).unwrap()
    }

    fn p(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// The compact payload agrees with the JSON map on every filter below.
    fn both(id: &PointId, doc: &serde_json::Map<String, Value>) -> bool {
        let compact = crate::payload::Payload::from_map(doc);
        FILTERS.with(|fs| {
            fs.iter()
                .all(|f| f.matches(id, Some(doc)) == f.matches(id, Some(&compact)))
        })
    }

    thread_local! {
        static FILTERS: Vec<Filter> = [
            json!({"must": [{"key": "cat", "match": {"value": 3}}]}),
            json!({"must": [{"key": "tag", "match": {"any": ["z", "a"]}}]}),
            json!({"must": [{"key": "price", "range": {"gte": 1, "lt": 5}}]}),
            json!({"must": [{"key": "meta.lang", "match": {"value": "en"}}]}),
            json!({"must_not": [{"key": "ok", "match": {"value": true}}]}),
            json!({"should": [{"key": "cat", "match": {"value": 9}}, {"has_id": [1]}]}),
            json!({"must": [{"key": "cat", "match": {"value": "3"}}]}),
        ]
        .iter()
        .map(|v| Filter::from_json(v).unwrap())
        .collect();
    }

    #[test]
    fn evaluates_clauses() {
        let doc = p(
            json!({"cat": 3, "tag": ["a", "b"], "price": 2.5, "ok": true, "meta": {"lang": "en"}}),
        );
        let id = PointId::Num(1);
        assert!(
            f(json!({"must": [{"key": "cat", "match": {"value": 3}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            !f(json!({"must": [{"key": "cat", "match": {"value": 4}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"key": "tag", "match": {"value": "b"}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"key": "tag", "match": {"any": ["z", "a"]}}]}))
                .matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"key": "price", "range": {"gte": 1, "lt": 5}}]}))
                .matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            !f(json!({"must": [{"key": "price", "range": {"gt": 2.5}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"key": "meta.lang", "match": {"value": "en"}}]}))
                .matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"key": "ok", "match": {"value": true}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            !f(json!({"must_not": [{"key": "ok", "match": {"value": true}}]}))
                .matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"should": [{"key": "cat", "match": {"value": 9}}, {"has_id": [1]}]}))
                .matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            !f(json!({"should": [{"key": "cat", "match": {"value": 9}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(
            f(json!({"must": [{"must_not": [{"has_id": [2]}]}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
        assert!(f(json!({})).matches::<crate::payload::Payload>(&id, None));
        assert!(
            !f(json!({"must": [{"key": "cat", "match": {"value": 3}}]}))
                .matches::<crate::payload::Payload>(&id, None)
        );
        // A keyword never matches a number and vice versa.
        assert!(
            !f(json!({"must": [{"key": "cat", "match": {"value": "3"}}]})).matches(&id, Some(&doc))
                && both(&id, &doc)
        );
    }

    #[test]
    fn rejects_malformed() {
        for v in [
            json!([]),
            json!({"maybe": []}),
            json!({"must": 3}),
            json!({"must": [{"key": "a"}]}),
            json!({"must": [{"key": "", "match": {"value": 1}}]}),
            json!({"must": [{"key": "a", "match": {"value": [1]}}]}),
            json!({"must": [{"key": "a", "match": {"value": null}}]}),
            json!({"must": [{"key": "a", "range": {}}]}),
            json!({"must": [{"key": "a", "range": {"gt": "x"}}]}),
            json!({"must": [{"key": "a", "match": {"value": 1}, "extra": 1}]}),
            json!({"must": [{"has_id": [-1]}]}),
        ] {
            assert!(Filter::from_json(&v).is_err(), "{v}");
        }
        let mut deep = json!({"must": []});
        for _ in 0..12 {
            deep = json!({"must": [deep]});
        }
        assert!(Filter::from_json(&deep).is_err());
        assert!(Filter::from_json_text(&deep.to_string()).is_err());
    }

    #[test]
    fn bounds_every_dimension() {
        let many: Vec<Value> = (0..=MAX_ANY as i64).map(Value::from).collect();
        let any = json!({"must": [{"key": "a", "match": {"any": many}}]});
        assert!(Filter::from_json_text(&any.to_string()).is_err());
        let ids: Vec<Value> = (0..=MAX_HAS_ID as u64).map(Value::from).collect();
        assert!(Filter::from_json_text(&json!({"must": [{"has_id": ids}]}).to_string()).is_err());
        let conds: Vec<Value> = (0..=MAX_CONDITIONS)
            .map(|i| json!({"key": "a", "match": {"value": i}}))
            .collect();
        assert!(Filter::from_json_text(&json!({"should": conds}).to_string()).is_err());
        // Within the bounds, the same shapes parse.
        let ok: Vec<Value> = (0..MAX_ANY as i64).map(Value::from).collect();
        let f = Filter::from_json_text(
            &json!({"must": [{"key": "a", "match": {"any": ok}}]}).to_string(),
        )
        .unwrap();
        let doc = p(json!({"a": 1000.0}));
        assert!(f.matches(&PointId::Num(1), Some(&doc)));
        assert!(!f.matches(&PointId::Num(1), Some(&p(json!({"a": 1000.5})))));
    }

    #[test]
    fn text_and_tree_parse_alike() {
        for v in [
            json!({"must": [{"key": "tag", "match": {"any": ["z", "a", "z"]}}]}),
            json!({"should": [{"has_id": [1, "550e8400-e29b-41d4-a716-446655440000"]}], "must_not": null}),
            json!({"must": {"key": "p", "range": {"gt": 1, "lte": 2.5}}}),
            json!({"must": [{"filter": {"must": [{"key": "x", "match": {"value": false}}]}}]}),
        ] {
            assert_eq!(
                Filter::from_json(&v).unwrap(),
                Filter::from_json_text(&v.to_string()).unwrap()
            );
        }
    }
}
