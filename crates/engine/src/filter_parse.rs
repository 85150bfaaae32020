//! Parsing filters straight from JSON into [`Filter`], with a budget for
//! every dimension that multiplies the work of evaluating one: nesting,
//! conditions, values in `match.any`, ids in `has_id`. The budget is
//! charged while parsing, so a filter over it is refused after reading at
//! most one bound's worth of input, never after building all of it.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::EngineError;
use crate::filter::{AnyOf, Condition, FieldTest, Filter, MatchValue, Range};
use crate::id::PointId;

/// Deepest nesting of filters accepted.
pub const MAX_DEPTH: usize = 8;
/// Most conditions in one filter tree.
pub const MAX_CONDITIONS: usize = 256;
/// Most values in one `match.any`.
pub const MAX_ANY: usize = 1024;
/// Most ids in one `has_id`.
pub const MAX_HAS_ID: usize = 10_000;
/// Most `any` values and `has_id` ids in one filter tree, all together.
pub const MAX_VALUES: usize = 16_384;
/// Longest dotted key.
const MAX_KEY: usize = 256;

fn invalid(e: impl fmt::Display) -> EngineError {
    EngineError::InvalidFilter(e.to_string())
}

pub(crate) fn parse(v: &serde_json::Value) -> Result<Filter, EngineError> {
    let budget = Budget::default();
    FilterSeed {
        depth: 0,
        budget: &budget,
    }
    .deserialize(v)
    .map_err(invalid)
}

/// Reads a filter from any deserializer, with a fresh budget.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
    let budget = Budget::default();
    FilterSeed {
        depth: 0,
        budget: &budget,
    }
    .deserialize(d)
}

pub(crate) fn parse_str(s: &str) -> Result<Filter, EngineError> {
    let budget = Budget::default();
    let mut de = serde_json::Deserializer::from_str(s);
    let f = FilterSeed {
        depth: 0,
        budget: &budget,
    }
    .deserialize(&mut de)
    .and_then(|f| de.end().map(|_| f))
    .map_err(invalid)?;
    Ok(f)
}

#[derive(Default)]
struct Budget {
    conditions: Cell<usize>,
    values: Cell<usize>,
}

impl Budget {
    fn condition<E: de::Error>(&self) -> Result<(), E> {
        let n = self.conditions.get() + 1;
        if n > MAX_CONDITIONS {
            return Err(E::custom(format!(
                "a filter holds at most {MAX_CONDITIONS} conditions"
            )));
        }
        self.conditions.set(n);
        Ok(())
    }

    fn value<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        if n > MAX_VALUES {
            return Err(E::custom(format!(
                "a filter holds at most {MAX_VALUES} values in `any` and `has_id` together"
            )));
        }
        self.values.set(n);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct FilterSeed<'a> {
    depth: usize,
    budget: &'a Budget,
}

impl<'de> DeserializeSeed<'de> for FilterSeed<'_> {
    type Value = Filter;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Filter, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "filters nest at most {MAX_DEPTH} deep"
            )));
        }
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FilterSeed<'_> {
    type Value = Filter;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a filter object with `must`, `should` or `must_not`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filter, A::Error> {
        let mut f = Filter::default();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let list = match k.as_str() {
                "must" => &mut f.must,
                "should" => &mut f.should,
                "must_not" => &mut f.must_not,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown filter clause `{}`",
                        clip(other)
                    )));
                }
            };
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("`{k}` appears twice")));
            }
            *list = map.next_value_seed(ListSeed(self))?;
        }
        Ok(f)
    }
}

/// A clause's conditions: a list, a single condition, or null.
struct ListSeed<'a>(FilterSeed<'a>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<Condition>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Condition>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<Condition>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of conditions")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<Condition>, E> {
        Ok(Vec::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Vec<Condition>, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Condition>, A::Error> {
        let mut out = Vec::new();
        while let Some(c) = seq.next_element_seed(ConditionSeed(self.0))? {
            out.push(c);
        }
        Ok(out)
    }
    // A single condition is accepted where a list is expected.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Condition>, A::Error> {
        Ok(vec![ConditionSeed(self.0).visit_map(map)?])
    }
}

struct ConditionSeed<'a>(FilterSeed<'a>);

impl<'de> DeserializeSeed<'de> for ConditionSeed<'_> {
    type Value = Condition;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Condition, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConditionSeed<'_> {
    type Value = Condition;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a condition object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
        let FilterSeed { depth, budget } = self.0;
        budget.condition()?;
        let nested = FilterSeed {
            depth: depth + 1,
            budget,
        };
        let (mut key, mut test, mut ids) = (None::<String>, None, None);
        let mut inner: Option<Filter> = None;
        let mut clauses = Filter::default();
        let mut has_clauses = false;
        let mut fields = 0usize;
        while let Some(k) = map.next_key::<String>()? {
            fields += 1;
            match k.as_str() {
                "has_id" => ids = Some(map.next_value_seed(IdsSeed(budget))?),
                "key" => key = Some(map.next_value::<String>()?),
                "match" => test = Some(map.next_value_seed(MatchSeed(budget))?),
                "range" => test = Some(FieldTest::Range(map.next_value_seed(RangeSeed)?)),
                "filter" => inner = Some(map.next_value_seed(nested)?),
                "must" | "should" | "must_not" => {
                    if nested.depth > MAX_DEPTH {
                        return Err(de::Error::custom(format!(
                            "filters nest at most {MAX_DEPTH} deep"
                        )));
                    }
                    let list = map.next_value_seed(ListSeed(nested))?;
                    has_clauses = true;
                    match k.as_str() {
                        "must" => clauses.must = list,
                        "should" => clauses.should = list,
                        _ => clauses.must_not = list,
                    }
                }
                other => {
                    // Read past the value so the error names the field.
                    let _ = map.next_value::<IgnoredAny>();
                    return Err(de::Error::custom(format!(
                        "unknown condition field `{}`",
                        clip(other)
                    )));
                }
            }
        }
        if let Some(ids) = ids {
            if fields != 1 {
                return Err(de::Error::custom("`has_id` stands alone in its condition"));
            }
            return Ok(Condition::HasId(ids));
        }
        if has_clauses {
            if key.is_some() || test.is_some() || inner.is_some() {
                return Err(de::Error::custom(
                    "a nested filter cannot also be a field condition",
                ));
            }
            return Ok(Condition::Nested(Box::new(clauses)));
        }
        if let Some(f) = inner {
            if fields != 1 {
                return Err(de::Error::custom("`filter` stands alone in its condition"));
            }
            return Ok(Condition::Nested(Box::new(f)));
        }
        let key = key.ok_or_else(|| de::Error::custom("a field condition needs a string `key`"))?;
        if key.is_empty() || key.chars().count() > MAX_KEY || key.split('.').any(str::is_empty) {
            return Err(de::Error::custom(format!("invalid key `{}`", clip(&key))));
        }
        let test = test.ok_or_else(|| {
            de::Error::custom(format!("condition on `{key}` needs `match` or `range`"))
        })?;
        if fields != 2 {
            return Err(de::Error::custom(format!(
                "condition on `{key}` takes one of `match`, `range`"
            )));
        }
        Ok(Condition::Field {
            key: key.split('.').map(str::to_owned).collect(),
            test,
        })
    }
}

/// `has_id`: a list of point ids.
struct IdsSeed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for IdsSeed<'_> {
    type Value = HashSet<PointId>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_> {
    type Value = HashSet<PointId>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`has_id`: a list of ids")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = HashSet::new();
        let mut n = 0usize;
        while let Some(id) = seq.next_element::<PointId>()? {
            n += 1;
            if n > MAX_HAS_ID {
                return Err(de::Error::custom(format!(
                    "`has_id` holds at most {MAX_HAS_ID} ids"
                )));
            }
            self.0.value()?;
            out.insert(id);
        }
        Ok(out)
    }
}

/// `match`: `{"value": v}` or `{"any": [v, ...]}`.
struct MatchSeed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for MatchSeed<'_> {
    type Value = FieldTest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldTest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MatchSeed<'_> {
    type Value = FieldTest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("match: an object with `value` or `any`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldTest, A::Error> {
        let mut out = None;
        while let Some(k) = map.next_key::<String>()? {
            if out.is_some() {
                return Err(de::Error::custom(
                    "match takes exactly one of `value`, `any`",
                ));
            }
            out = Some(match k.as_str() {
                "value" => FieldTest::Match(map.next_value_seed(ValueSeed)?),
                "any" => FieldTest::Any(map.next_value_seed(AnySeed(self.0))?),
                other => {
                    return Err(de::Error::custom(format!(
                        "match takes `value` or `any`, not `{}`",
                        clip(other)
                    )));
                }
            });
        }
        out.ok_or_else(|| de::Error::custom("match takes exactly one of `value`, `any`"))
    }
}

struct AnySeed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for AnySeed<'_> {
    type Value = AnyOf;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyOf, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AnySeed<'_> {
    type Value = AnyOf;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`any`: a list of keywords, integers or bools")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyOf, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            if values.len() == MAX_ANY {
                return Err(de::Error::custom(format!(
                    "`any` holds at most {MAX_ANY} values"
                )));
            }
            self.0.value()?;
            values.push(v);
        }
        Ok(AnyOf::new(values))
    }
}

/// One value to match: a keyword, an integer or a bool.
struct ValueSeed;

const MATCH_VALUE: &str = "match takes a keyword, an integer or a bool";

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = MatchValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MatchValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = MatchValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(MATCH_VALUE)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MatchValue, E> {
        Ok(MatchValue::Keyword(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<MatchValue, E> {
        Ok(MatchValue::Keyword(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<MatchValue, E> {
        Ok(MatchValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MatchValue, E> {
        Ok(MatchValue::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MatchValue, E> {
        i64::try_from(v)
            .map(MatchValue::Integer)
            .map_err(|_| E::custom(MATCH_VALUE))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MatchValue, E> {
        Err(E::custom(MATCH_VALUE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<MatchValue, E> {
        Err(E::custom(MATCH_VALUE))
    }
}

/// `range`: at least one of `gt`, `gte`, `lt`, `lte`, finite numbers.
struct RangeSeed;

impl<'de> DeserializeSeed<'de> for RangeSeed {
    type Value = Range;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Range, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RangeSeed {
    type Value = Range;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("range: an object of `gt`, `gte`, `lt`, `lte` bounds")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Range, A::Error> {
        let mut r = Range::default();
        let mut any = false;
        while let Some(k) = map.next_key::<String>()? {
            let slot = match k.as_str() {
                "gt" => &mut r.gt,
                "gte" => &mut r.gte,
                "lt" => &mut r.lt,
                "lte" => &mut r.lte,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown range bound `{}`",
                        clip(other)
                    )));
                }
            };
            let n: f64 = map.next_value().map_err(|_: A::Error| {
                de::Error::custom(format!("range bound `{k}` must be a finite number"))
            })?;
            if !n.is_finite() {
                return Err(de::Error::custom(format!(
                    "range bound `{k}` must be a finite number"
                )));
            }
            *slot = Some(n);
            any = true;
        }
        if !any {
            return Err(de::Error::custom("range needs at least one bound"));
        }
        Ok(r)
    }
}

/// At most 64 characters of a name from the input, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
