//! Payload filters in the JSON shape Qdrant users know:
//! `{"must": [...], "should": [...], "must_not": [...]}` of field conditions
//! (`match` value / any, `range`), `has_id`, and nested filters. Parsing
//! (bounded in every dimension that multiplies work) is in `filter_parse`.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::EngineError;
use crate::id::PointId;
use crate::payload::{PayloadView, Scalar};

pub use crate::filter_parse::{MAX_ANY, MAX_CONDITIONS, MAX_DEPTH, MAX_HAS_ID, MAX_VALUES};

/// A boolean combination of conditions. An empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field { key: Vec<String>, test: FieldTest },
    HasId(HashSet<PointId>),
    Nested(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldTest {
    Match(MatchValue),
    Any(AnyOf),
    Range(Range),
}

/// An exact value to match: a keyword, an integer or a bool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

/// The values of a `match.any`, hashed so that testing a payload value
/// costs the same however long the list is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnyOf {
    values: Vec<MatchValue>,
    keywords: HashSet<String>,
    integers: HashSet<i64>,
    bools: [bool; 2],
}

impl AnyOf {
    pub fn new(values: impl IntoIterator<Item = MatchValue>) -> AnyOf {
        let mut a = AnyOf::default();
        for v in values {
            let fresh = match &v {
                MatchValue::Keyword(s) => a.keywords.insert(s.clone()),
                MatchValue::Integer(i) => a.integers.insert(*i),
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
            Scalar::Int(i) => self.integers.contains(&i),
            Scalar::Float(f) => {
                f.fract() == 0.0
                    && f >= i64::MIN as f64
                    && f < i64::MAX as f64
                    && self.integers.contains(&(f as i64))
            }
            _ => false,
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
    }

    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }
}

impl Condition {
    fn matches<P: PayloadView + ?Sized>(&self, id: &PointId, payload: Option<&P>) -> bool {
        match self {
            Condition::HasId(set) => set.contains(id),
            Condition::Nested(f) => f.matches(id, payload),
            Condition::Field { key, test } => {
                let Some(payload) = payload else { return false };
                // Every value at the dotted path is visited (arrays along the
                // way element by element): a condition on a list field holds
                // when any element satisfies it.
                let mut found = false;
                payload.visit(key, &mut |v| {
                    if !found && test.matches(v) {
                        found = true;
                    }
                });
                found
            }
        }
    }
}

impl FieldTest {
    fn matches(&self, v: Scalar<'_>) -> bool {
        match self {
            FieldTest::Match(m) => m.matches(v),
            FieldTest::Any(set) => set.matches(v),
            FieldTest::Range(r) => v.as_f64().is_some_and(|x| r.contains(x)),
        }
    }
}

impl MatchValue {
    fn matches(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (MatchValue::Keyword(s), Scalar::Str(x)) => s == x,
            (MatchValue::Bool(b), Scalar::Bool(x)) => *b == x,
            (MatchValue::Integer(i), Scalar::Int(x)) => *i == x,
            (MatchValue::Integer(i), Scalar::Float(f)) => f == *i as f64 && f.fract() == 0.0,
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
            json!({"must": [{"key": "a", "match": {"value": 1.5}}]}),
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
