//! Parsing filters straight from JSON into [`Filter`], with a budget for
//! every dimension that multiplies the work of evaluating one: nesting,
//! conditions, values in `match.any` / `match.except`, ids in `has_id`,
//! the length of a `match.text`. The budget is
//! charged while parsing, so a filter over it is refused after reading at
//! most one bound's worth of input, never after building all of it.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use self::field::{IdsSeed, MatchSeed, RangeSeed};
use crate::error::EngineError;
use crate::filter::{Condition, FieldTest, Filter, MinShould};

mod field;

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
/// Longest `match.text`, in bytes.
pub const MAX_TEXT: usize = 1024;

fn invalid(e: impl fmt::Display) -> EngineError {
    EngineError::InvalidFilter(e.to_string())
}

pub(crate) fn parse(v: &serde_json::Value) -> Result<Filter, EngineError> {
    let budget = Budget::default();
    FilterSeed {
        depth: 0,
        budget: &budget,
        within: false,
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
        within: false,
    }
    .deserialize(d)
}

pub(crate) fn parse_str(s: &str) -> Result<Filter, EngineError> {
    let budget = Budget::default();
    let mut de = serde_json::Deserializer::from_str(s);
    let f = FilterSeed {
        depth: 0,
        budget: &budget,
        within: false,
    }
    .deserialize(&mut de)
    .and_then(|f| de.end().map(|_| f))
    .map_err(invalid)?;
    Ok(f)
}

#[derive(Default)]
pub(crate) struct Budget {
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
                "a filter holds at most {MAX_VALUES} values in `any`, `except` and `has_id` together"
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
    /// Inside a `nested` condition, where conditions apply to one element
    /// of a list and `has_id` has no meaning.
    within: bool,
}

impl<'a> FilterSeed<'a> {
    fn deeper<E: de::Error>(self) -> Result<FilterSeed<'a>, E> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(E::custom(format!("filters nest at most {MAX_DEPTH} deep")));
        }
        Ok(FilterSeed {
            depth: self.depth + 1,
            ..self
        })
    }
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
        f.write_str("a filter object with `must`, `should`, `must_not` or `min_should`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filter, A::Error> {
        let mut f = Filter::default();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !CLAUSES.contains(&k.as_str()) {
                return Err(de::Error::custom(format!(
                    "unknown filter clause `{}`",
                    clip(&k)
                )));
            }
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("`{k}` appears twice")));
            }
            clause(&mut f, &k, &mut map, self)?;
        }
        Ok(f)
    }
}

const CLAUSES: [&str; 4] = ["must", "should", "must_not", "min_should"];

/// Reads the value of clause `k` of a filter into `f`.
fn clause<'de, A: MapAccess<'de>>(
    f: &mut Filter,
    k: &str,
    map: &mut A,
    seed: FilterSeed<'_>,
) -> Result<(), A::Error> {
    match k {
        "must" => f.must = map.next_value_seed(ListSeed(seed))?,
        "should" => f.should = map.next_value_seed(ListSeed(seed))?,
        "must_not" => f.must_not = map.next_value_seed(ListSeed(seed))?,
        _ => f.min_should = map.next_value_seed(MinShouldSeed(seed))?,
    }
    Ok(())
}

/// `min_should`: `{"conditions": [...], "min_count": n}`, or null.
struct MinShouldSeed<'a>(FilterSeed<'a>);

impl<'de> DeserializeSeed<'de> for MinShouldSeed<'_> {
    type Value = Option<MinShould>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MinShouldSeed<'_> {
    type Value = Option<MinShould>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`min_should`: an object of `conditions` and `min_count`")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut conditions, mut min_count) = (None, None);
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "conditions" if conditions.is_none() => {
                    conditions = Some(map.next_value_seed(ConditionList(self.0))?)
                }
                "min_count" if min_count.is_none() => {
                    min_count = Some(map.next_value::<u32>().map_err(|_: A::Error| {
                        de::Error::custom(
                            "`min_should.min_count` must be a whole number below 2^32",
                        )
                    })? as usize)
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "`min_should` takes `conditions` and `min_count` once each, not `{}`",
                        clip(other)
                    )));
                }
            }
        }
        match (conditions, min_count) {
            (Some(conditions), Some(min_count)) => Ok(Some(MinShould {
                conditions,
                min_count,
            })),
            _ => Err(de::Error::custom(
                "`min_should` needs `conditions` and `min_count`",
            )),
        }
    }
}

/// `min_should.conditions`: a list, and only a list.
struct ConditionList<'a>(FilterSeed<'a>);

impl<'de> DeserializeSeed<'de> for ConditionList<'_> {
    type Value = Vec<Condition>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Condition>, D::Error> {
        d.deserialize_seq(ListSeed(self.0))
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
        let seed = self.0;
        let budget = seed.budget;
        budget.condition()?;
        let (mut key, mut test, mut ids) = (None::<String>, None, None);
        let mut inner: Option<Filter> = None;
        let mut clauses = Filter::default();
        let mut has_clauses = false;
        let mut special: Option<Condition> = None;
        let mut fields = 0usize;
        while let Some(k) = map.next_key::<String>()? {
            // A field given as null is a field not given (clients that
            // write every optional field send them so).
            let got = match k.as_str() {
                "has_id" if seed.within => {
                    return Err(de::Error::custom(
                        "`has_id` cannot be used inside `nested`: it applies to points, not to list elements",
                    ));
                }
                "has_id" => set(&mut ids, map.next_value_seed(OrNull(IdsSeed(budget)))?),
                "key" => set(&mut key, map.next_value::<Option<String>>()?),
                "match" => set(&mut test, map.next_value_seed(OrNull(MatchSeed(budget)))?),
                "range" => set(
                    &mut test,
                    map.next_value_seed(OrNull(RangeSeed::Range))?
                        .map(FieldTest::Range),
                ),
                "values_count" => set(
                    &mut test,
                    map.next_value_seed(OrNull(RangeSeed::Count))?
                        .map(FieldTest::ValuesCount),
                ),
                "filter" => set(&mut inner, map.next_value_seed(OrNull(seed.deeper()?))?),
                "is_empty" => set(
                    &mut special,
                    map.next_value_seed(OrNull(KeyOnly("is_empty")))?
                        .map(Condition::IsEmpty),
                ),
                "is_null" => set(
                    &mut special,
                    map.next_value_seed(OrNull(KeyOnly("is_null")))?
                        .map(Condition::IsNull),
                ),
                "nested" => set(
                    &mut special,
                    map.next_value_seed(OrNull(NestedSeed(seed.deeper()?)))?,
                ),
                c if CLAUSES.contains(&c) => {
                    clause(&mut clauses, c, &mut map, seed.deeper()?)?;
                    has_clauses = true;
                    true
                }
                "geo_radius" | "geo_bounding_box" | "geo_polygon" | "has_vector" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        return Err(de::Error::custom(format!(
                            "the `{k}` condition is not supported"
                        )));
                    }
                    false
                }
                other => {
                    // Read past the value so the error names the field.
                    let _ = map.next_value::<IgnoredAny>();
                    return Err(de::Error::custom(format!(
                        "unknown condition field `{}`",
                        clip(other)
                    )));
                }
            };
            fields += got as usize;
        }
        if let Some(ids) = ids {
            if fields != 1 {
                return Err(de::Error::custom("`has_id` stands alone in its condition"));
            }
            return Ok(Condition::HasId(ids));
        }
        if let Some(c) = special {
            if fields != 1 {
                return Err(de::Error::custom(
                    "`is_empty`, `is_null` and `nested` each stand alone in their condition",
                ));
            }
            return Ok(c);
        }
        if fields == 0 {
            // A condition that says nothing (`{}`, or fields all null) is
            // refused: read as "anything", it would make a delete by filter
            // delete every point.
            return Err(de::Error::custom(
                "a condition needs one of `key`, `has_id`, `is_empty`, `is_null`, `nested`, `filter`, `must`, `should`, `must_not`, `min_should`",
            ));
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
        let key = path(&key)?;
        let name = key.join(".");
        let test = test.ok_or_else(|| {
            de::Error::custom(format!(
                "condition on `{name}` needs `match`, `range` or `values_count`"
            ))
        })?;
        if fields != 2 {
            return Err(de::Error::custom(format!(
                "condition on `{name}` takes one of `match`, `range`, `values_count`"
            )));
        }
        Ok(Condition::Field { key, test })
    }
}

/// Stores a field's value if it was given; says whether it was.
fn set<T>(slot: &mut Option<T>, v: Option<T>) -> bool {
    let got = v.is_some();
    if got {
        *slot = v;
    }
    got
}

/// A value that may be null, read with `S` when it is not.
struct OrNull<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A dotted key as its parts. `[]` after a part (Qdrant's way of saying
/// "every element of this list") is accepted and changes nothing, since
/// every step descends into lists; an index such as `[0]` is refused.
fn path<E: de::Error>(key: &str) -> Result<Vec<String>, E> {
    let bad = || E::custom(format!("invalid key `{}`", clip(key)));
    if key.is_empty() || key.chars().count() > MAX_KEY {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for part in key.split('.') {
        let mut name = part;
        while let Some(head) = name.strip_suffix("[]") {
            name = head;
        }
        if name.contains('[') || name.contains(']') {
            return Err(E::custom(format!(
                "key `{}`: list indexes such as `[0]` are not supported; `[]` is",
                clip(key)
            )));
        }
        if name.is_empty() {
            return Err(bad());
        }
        parts.push(name.to_owned());
    }
    Ok(parts)
}

/// `is_empty` and `is_null`: `{"key": "..."}`.
struct KeyOnly(&'static str);

impl<'de> DeserializeSeed<'de> for KeyOnly {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeyOnly {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}`: an object with a string `key`", self.0)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut key = None;
        while let Some(k) = map.next_key::<String>()? {
            if k != "key" || key.is_some() {
                return Err(de::Error::custom(format!(
                    "`{}` takes only a `key`",
                    self.0
                )));
            }
            key = Some(map.next_value::<String>()?);
        }
        let key = key.ok_or_else(|| de::Error::custom(format!("`{}` needs a `key`", self.0)))?;
        path(&key)
    }
}

/// `nested`: `{"key": "list", "filter": {...}}`.
struct NestedSeed<'a>(FilterSeed<'a>);

impl<'de> DeserializeSeed<'de> for NestedSeed<'_> {
    type Value = Condition;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Condition, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NestedSeed<'_> {
    type Value = Condition;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`nested`: an object of `key` and `filter`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
        let (mut key, mut filter) = (None, None);
        let seed = FilterSeed {
            within: true,
            ..self.0
        };
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "key" if key.is_none() => key = Some(map.next_value::<String>()?),
                "filter" if filter.is_none() => filter = Some(map.next_value_seed(seed)?),
                other => {
                    return Err(de::Error::custom(format!(
                        "`nested` takes `key` and `filter` once each, not `{}`",
                        clip(other)
                    )));
                }
            }
        }
        match (key, filter) {
            (Some(key), Some(filter)) => Ok(Condition::Within {
                key: path(&key)?,
                filter: Box::new(filter),
            }),
            _ => Err(de::Error::custom("`nested` needs `key` and `filter`")),
        }
    }
}

/// At most 64 characters of a name from the input, for an error message.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
