//! The parts of a field condition and of `has_id`: `match` (value, any,
//! except, text), `range`, `values_count` and id lists, each charged to the
//! filter's budget as it is read.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Budget, MAX_ANY, MAX_HAS_ID, MAX_TEXT, clip};
use crate::filter::{AnyOf, FieldTest, FloatBits, MatchValue, Range};
use crate::id::PointId;

/// `has_id`: a list of point ids.
pub(super) struct IdsSeed<'a>(pub(super) &'a Budget);

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
pub(super) struct MatchSeed<'a>(pub(super) &'a Budget);

impl<'de> DeserializeSeed<'de> for MatchSeed<'_> {
    type Value = FieldTest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldTest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MatchSeed<'_> {
    type Value = FieldTest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("match: an object with `value`, `any`, `except` or `text`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldTest, A::Error> {
        let mut out = None;
        let one = "match takes exactly one of `value`, `any`, `except`, `text`";
        while let Some(k) = map.next_key::<String>()? {
            if out.is_some() {
                return Err(de::Error::custom(one));
            }
            out = Some(match k.as_str() {
                "value" => FieldTest::Match(map.next_value_seed(ValueSeed)?),
                "any" => FieldTest::Any(map.next_value_seed(AnySeed(self.0, "any"))?),
                "except" => FieldTest::Except(map.next_value_seed(AnySeed(self.0, "except"))?),
                "text" => {
                    let t: String = map.next_value()?;
                    if t.len() > MAX_TEXT {
                        return Err(de::Error::custom(format!(
                            "`match.text` holds at most {MAX_TEXT} bytes"
                        )));
                    }
                    FieldTest::Text(t)
                }
                "text_any" | "phrase" | "prefix" => {
                    let _ = map.next_value::<IgnoredAny>();
                    return Err(de::Error::custom(format!(
                        "`match.{k}` is not supported; `match.text` is"
                    )));
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "match takes `value`, `any`, `except` or `text`, not `{}`",
                        clip(other)
                    )));
                }
            });
        }
        out.ok_or_else(|| de::Error::custom(one))
    }
}

struct AnySeed<'a>(&'a Budget, &'static str);

impl<'de> DeserializeSeed<'de> for AnySeed<'_> {
    type Value = AnyOf;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyOf, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AnySeed<'_> {
    type Value = AnyOf;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}`: a list of keywords, numbers or bools", self.1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyOf, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            if values.len() == MAX_ANY {
                return Err(de::Error::custom(format!(
                    "`{}` holds at most {MAX_ANY} values",
                    self.1
                )));
            }
            self.0.value()?;
            values.push(v);
        }
        Ok(AnyOf::new(values))
    }
}

/// One value to match: a keyword, a finite number or a bool.
struct ValueSeed;

const MATCH_VALUE: &str = "match takes a keyword, a finite number or a bool";

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
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MatchValue, E> {
        FloatBits::value(v).ok_or_else(|| E::custom(MATCH_VALUE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<MatchValue, E> {
        Err(E::custom(MATCH_VALUE))
    }
}

/// `range` (finite numbers) and `values_count` (whole numbers): at least
/// one of `gt`, `gte`, `lt`, `lte`; a null bound is a bound not given.
#[derive(Clone, Copy)]
pub(super) enum RangeSeed {
    Range,
    Count,
}

impl RangeSeed {
    fn name(self) -> &'static str {
        match self {
            RangeSeed::Range => "range",
            RangeSeed::Count => "values_count",
        }
    }

    fn bound<'de, A: MapAccess<'de>>(self, k: &str, map: &mut A) -> Result<Option<f64>, A::Error> {
        let name = self.name();
        if let RangeSeed::Count = self {
            let n: Option<u32> = map.next_value().map_err(|_: A::Error| {
                de::Error::custom(format!("{name} bound `{k}` must be a whole number"))
            })?;
            return Ok(n.map(f64::from));
        }
        let not_finite =
            || de::Error::custom(format!("{name} bound `{k}` must be a finite number"));
        match map
            .next_value::<Option<Bound>>()
            .map_err(|_: A::Error| not_finite())?
        {
            None => Ok(None),
            Some(Bound::Number(n)) if n.is_finite() => Ok(Some(n)),
            Some(Bound::Number(_)) => Err(not_finite()),
            Some(Bound::Text(_)) => Err(de::Error::custom(format!(
                "{name} bound `{k}`: datetime ranges are not supported; bounds are numbers"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for RangeSeed {
    type Value = Range;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Range, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RangeSeed {
    type Value = Range;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: an object of `gt`, `gte`, `lt`, `lte` bounds",
            self.name()
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Range, A::Error> {
        let mut r = Range::default();
        while let Some(k) = map.next_key::<String>()? {
            let slot = match k.as_str() {
                "gt" => &mut r.gt,
                "gte" => &mut r.gte,
                "lt" => &mut r.lt,
                "lte" => &mut r.lte,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown {} bound `{}`",
                        self.name(),
                        clip(other)
                    )));
                }
            };
            *slot = self.bound(&k, &mut map)?;
        }
        if r == Range::default() {
            return Err(de::Error::custom(format!(
                "{} needs at least one bound",
                self.name()
            )));
        }
        Ok(r)
    }
}

/// A range bound as sent: a number, or text (a datetime, refused by name).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Bound {
    Number(f64),
    Text(#[allow(dead_code)] String),
}
