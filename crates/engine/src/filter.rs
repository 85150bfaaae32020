//! Payload filters in the JSON shape Qdrant users know:
//! `{"must": [...], "should": [...], "must_not": [...]}` of field conditions
//! (`match` value / any, `range`), `has_id`, and nested filters.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::EngineError;
use crate::id::PointId;
use crate::payload::{PayloadView, Scalar};

/// Deepest nesting of filters accepted.
const MAX_DEPTH: usize = 8;
/// Most conditions in one filter tree.
const MAX_CONDITIONS: usize = 1024;

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
    Any(Vec<MatchValue>),
    Range(Range),
}

/// An exact value to match: a keyword, an integer or a bool.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidFilter(msg.into())
}

impl Filter {
    /// Parses a filter from JSON, naming the offending part on error.
    pub fn from_json(v: &Value) -> Result<Filter, EngineError> {
        let mut budget = MAX_CONDITIONS;
        parse_filter(v, 0, &mut budget)
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

fn parse_filter(v: &Value, depth: usize, budget: &mut usize) -> Result<Filter, EngineError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("filters nest at most {MAX_DEPTH} deep")));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a filter must be a JSON object"))?;
    let mut f = Filter::default();
    for (k, list) in obj {
        let target = match k.as_str() {
            "must" => &mut f.must,
            "should" => &mut f.should,
            "must_not" => &mut f.must_not,
            other => return Err(bad(format!("unknown filter clause `{other}`"))),
        };
        if list.is_null() {
            continue;
        }
        let items: Vec<&Value> = match list {
            Value::Array(a) => a.iter().collect(),
            // A single condition is accepted where a list is expected.
            Value::Object(_) => vec![list],
            _ => return Err(bad(format!("`{k}` must be a list of conditions"))),
        };
        for c in items {
            if *budget == 0 {
                return Err(bad(format!(
                    "a filter holds at most {MAX_CONDITIONS} conditions"
                )));
            }
            *budget -= 1;
            target.push(parse_condition(c, depth, budget)?);
        }
    }
    Ok(f)
}

fn parse_condition(v: &Value, depth: usize, budget: &mut usize) -> Result<Condition, EngineError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a condition must be a JSON object"))?;
    if let Some(ids) = obj.get("has_id") {
        if obj.len() != 1 {
            return Err(bad("`has_id` stands alone in its condition"));
        }
        let ids = ids
            .as_array()
            .ok_or_else(|| bad("`has_id` must be a list of ids"))?;
        let set = ids
            .iter()
            .map(|i| {
                serde_json::from_value::<PointId>(i.clone())
                    .map_err(|e| bad(format!("`has_id`: {e}")))
            })
            .collect::<Result<HashSet<_>, _>>()?;
        return Ok(Condition::HasId(set));
    }
    if obj.contains_key("must") || obj.contains_key("should") || obj.contains_key("must_not") {
        return Ok(Condition::Nested(Box::new(parse_filter(
            v,
            depth + 1,
            budget,
        )?)));
    }
    if let Some(inner) = obj.get("filter") {
        return Ok(Condition::Nested(Box::new(parse_filter(
            inner,
            depth + 1,
            budget,
        )?)));
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a field condition needs a string `key`"))?;
    if key.is_empty() || key.len() > 256 || key.split('.').any(str::is_empty) {
        return Err(bad(format!("invalid key `{key}`")));
    }
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    let mut test = None;
    for (k, val) in obj {
        match k.as_str() {
            "key" => {}
            "match" => test = Some(parse_match(key, val)?),
            "range" => test = Some(FieldTest::Range(parse_range(key, val)?)),
            other => return Err(bad(format!("unknown condition field `{other}`"))),
        }
    }
    let test = test.ok_or_else(|| bad(format!("condition on `{key}` needs `match` or `range`")))?;
    Ok(Condition::Field { key: path, test })
}

fn parse_match_value(key: &str, v: &Value) -> Result<MatchValue, EngineError> {
    match v {
        Value::String(s) => Ok(MatchValue::Keyword(s.clone())),
        Value::Bool(b) => Ok(MatchValue::Bool(*b)),
        Value::Number(n) => n.as_i64().map(MatchValue::Integer).ok_or_else(|| {
            bad(format!(
                "`{key}`: match takes a keyword, an integer or a bool"
            ))
        }),
        _ => Err(bad(format!(
            "`{key}`: match takes a keyword, an integer or a bool"
        ))),
    }
}

fn parse_match(key: &str, v: &Value) -> Result<FieldTest, EngineError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("`{key}`: match must be an object")))?;
    if obj.len() != 1 {
        return Err(bad(format!(
            "`{key}`: match takes exactly one of `value`, `any`"
        )));
    }
    if let Some(val) = obj.get("value") {
        return Ok(FieldTest::Match(parse_match_value(key, val)?));
    }
    if let Some(any) = obj.get("any") {
        let list = any
            .as_array()
            .ok_or_else(|| bad(format!("`{key}`: `any` must be a list")))?;
        let values = list
            .iter()
            .map(|x| parse_match_value(key, x))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(FieldTest::Any(values));
    }
    Err(bad(format!("`{key}`: match takes `value` or `any`")))
}

fn parse_range(key: &str, v: &Value) -> Result<Range, EngineError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("`{key}`: range must be an object")))?;
    let mut r = Range::default();
    for (k, val) in obj {
        let n = val.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            bad(format!(
                "`{key}`: range bound `{k}` must be a finite number"
            ))
        })?;
        match k.as_str() {
            "gt" => r.gt = Some(n),
            "gte" => r.gte = Some(n),
            "lt" => r.lt = Some(n),
            "lte" => r.lte = Some(n),
            other => return Err(bad(format!("`{key}`: unknown range bound `{other}`"))),
        }
    }
    if obj.is_empty() {
        return Err(bad(format!("`{key}`: range needs at least one bound")));
    }
    Ok(r)
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
            FieldTest::Any(list) => list.iter().any(|m| m.matches(v)),
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
    }
}
