//! The dialect's request and answer shapes, and their translation to and
//! from the service's. What a request may carry but this server cannot
//! honour is refused by name; settings that only tune Qdrant's own storage
//! (shards, WAL, optimizers) are accepted and have no effect.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vectorizer_engine::{Filter, Metric, PointId};
use vectorizer_service::model::{Hit, PointRecord};

use super::bad;
use crate::error::ApiError;

/// A vector as sent: a list of numbers, or `{"": [...]}` (the default,
/// unnamed vector by its empty name). Other names are refused.
#[derive(Debug, Clone)]
pub struct VectorIn(pub Vec<f32>);

impl<'de> Deserialize<'de> for VectorIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector: a list of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
                while let Some(x) = seq.next_element::<f32>()? {
                    out.push(x);
                }
                Ok(VectorIn(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VectorIn, A::Error> {
                unnamed(map)
            }
        }
        d.deserialize_any(V)
    }
}

/// The value under the empty name of `{"": ...}`, the default vector;
/// any other name is refused.
fn unnamed<'de, A: MapAccess<'de>, T: Deserialize<'de>>(mut map: A) -> Result<T, A::Error> {
    let mut out = None;
    while let Some(k) = map.next_key::<String>()? {
        if !k.is_empty() || out.is_some() {
            return Err(de::Error::custom(
                "named vectors are not supported: send the default vector, as a list or as {\"\": [...]}",
            ));
        }
        out = Some(map.next_value::<T>()?);
    }
    out.ok_or_else(|| de::Error::custom("a vector is missing"))
}

/// Vectors of a batch: a list of vectors, or `{"": [...]}`.
#[derive(Debug, Clone)]
pub struct VectorsIn(pub Vec<Vec<f32>>);

impl<'de> Deserialize<'de> for VectorsIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorsIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of vectors")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorsIn, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<VectorIn>()? {
                    out.push(v.0);
                }
                Ok(VectorsIn(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VectorsIn, A::Error> {
                unnamed(map)
            }
        }
        d.deserialize_any(V)
    }
}

/// `with_payload`: a bool, a list of keys, or `{"include"}` / `{"exclude"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum WithPayload {
    Flag(bool),
    Keys(Vec<String>),
    Select(Selector),
    #[default]
    #[serde(skip)]
    Default,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
}

/// Most keys a `with_payload` selection may name.
pub const MAX_SELECTED_KEYS: usize = 256;

impl WithPayload {
    /// Refuses a selection of more keys than [`MAX_SELECTED_KEYS`]: each is
    /// looked up in every point answered.
    pub fn check(&self) -> Result<(), ApiError> {
        let n = match self {
            WithPayload::Keys(k) => k.len(),
            WithPayload::Select(s) => {
                s.include.as_ref().map_or(0, Vec::len) + s.exclude.as_ref().map_or(0, Vec::len)
            }
            _ => 0,
        };
        if n > MAX_SELECTED_KEYS {
            return Err(bad(format!(
                "`with_payload` names at most {MAX_SELECTED_KEYS} keys"
            )));
        }
        Ok(())
    }

    /// Whether any payload is wanted, with `default` for a field not sent.
    pub fn wanted(&self, default: bool) -> bool {
        match self {
            WithPayload::Flag(b) => *b,
            WithPayload::Default => default,
            WithPayload::Keys(_) | WithPayload::Select(_) => true,
        }
    }

    /// The payload as selected: only the keys included, or all but those
    /// excluded (top-level keys, or dotted paths into objects); `{}` for a
    /// point without one; `None` when none is wanted (`default` for a
    /// field not sent).
    pub fn apply(
        &self,
        p: Option<Map<String, Value>>,
        default: bool,
    ) -> Option<Map<String, Value>> {
        if !self.wanted(default) {
            return None;
        }
        let p = p.unwrap_or_default();
        match self {
            WithPayload::Keys(keys)
            | WithPayload::Select(Selector {
                include: Some(keys),
                ..
            }) => Some(include(&p, keys)),
            WithPayload::Select(Selector {
                exclude: Some(keys),
                ..
            }) => {
                let mut p = p;
                keys.iter().for_each(|k| exclude(&mut p, k));
                Some(p)
            }
            _ => Some(p),
        }
    }
}

fn include(p: &Map<String, Value>, keys: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in keys {
        copy_path(p, &mut out, k);
    }
    out
}

/// Copies the value at dotted `key` of `from` into `to`, rebuilding the
/// objects along the path.
fn copy_path(from: &Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    match key.split_once('.') {
        None => {
            if let Some(v) = from.get(key) {
                to.insert(key.to_owned(), v.clone());
            }
        }
        Some((head, rest)) => {
            let Some(Value::Object(inner)) = from.get(head) else {
                return;
            };
            let slot = to
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = slot {
                copy_path(inner, m, rest);
            }
        }
    }
}

fn exclude(p: &mut Map<String, Value>, key: &str) {
    match key.split_once('.') {
        None => {
            p.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(m)) = p.get_mut(head) {
                exclude(m, rest);
            }
        }
    }
}

/// `with_vector`: a bool, or a list of vector names (only `""`, the
/// default vector, exists).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum WithVector {
    Flag(bool),
    Names(Vec<String>),
    #[default]
    #[serde(skip)]
    Default,
}

impl WithVector {
    /// Refuses names of vectors other than the default one.
    pub fn check(&self) -> Result<(), ApiError> {
        match self {
            WithVector::Names(n) if n.iter().any(|n| !n.is_empty()) => Err(bad(
                "named vectors are not supported: `with_vector` is true, false or [\"\"]",
            )),
            _ => Ok(()),
        }
    }

    pub fn wanted(&self) -> bool {
        match self {
            WithVector::Flag(b) => *b,
            WithVector::Names(n) => n.iter().any(String::is_empty),
            WithVector::Default => false,
        }
    }
}

/// An example or a query given as a point id or as a vector: read without
/// buffering (a vector streams straight into its list).
#[derive(Debug, Clone)]
pub enum Example {
    Id(PointId),
    Vector(Vec<f32>),
}

impl<'de> Deserialize<'de> for Example {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Example;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a point id or a vector")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Example, E> {
                Ok(Example::Id(PointId::Num(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Example, E> {
                u64::try_from(v)
                    .map(|n| Example::Id(PointId::Num(n)))
                    .map_err(|_| E::custom("a point id must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Example, E> {
                PointId::parse_str(v).map(Example::Id).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Example, A::Error> {
                V2.visit_seq(seq).map(|v| Example::Vector(v.0))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Example, A::Error> {
                unnamed::<A, VectorIn>(map).map(|v| Example::Vector(v.0))
            }
        }
        struct V2;
        impl<'de> Visitor<'de> for V2 {
            type Value = VectorIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
                while let Some(x) = seq.next_element::<f32>()? {
                    out.push(x);
                }
                Ok(VectorIn(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a field was given something (not null, not `{}` or `[]`: some
/// clients send empty settings), read without keeping any of it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Given(pub bool);

impl<'de> Deserialize<'de> for Given {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Given;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Given, E> {
                Ok(Given(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<Given, E> {
                Ok(Given(false))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Given, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Given, E> {
                Ok(Given(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Given, E> {
                Ok(Given(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Given, E> {
                Ok(Given(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Given, E> {
                Ok(Given(true))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Given, E> {
                Ok(Given(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Given, A::Error> {
                let any = seq.next_element::<IgnoredAny>()?.is_some();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Given(any))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Given, A::Error> {
                let any = map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some();
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Given(any))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which points an operation names: `{"points": [ids]}` or
/// `{"filter": {...}}`, or a bare list of ids.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// The fields that name points in a request body.
#[derive(Debug, Default, Deserialize)]
pub struct Named {
    #[serde(default)]
    pub points: Option<Vec<PointId>>,
    #[serde(default)]
    pub filter: Option<Filter>,
}

impl Named {
    pub fn selection(self) -> Result<Selection, ApiError> {
        match (self.points, self.filter) {
            (Some(ids), None) => Ok(Selection::Ids(ids)),
            (None, Some(f)) => Ok(Selection::Filter(f)),
            _ => Err(bad(
                "name the points by exactly one of `points` and `filter`",
            )),
        }
    }
}

impl Selection {
    /// As the service's `ids` and `filter` fields.
    pub fn split(self) -> (Option<Vec<PointId>>, Option<Filter>) {
        match self {
            Selection::Ids(ids) => (Some(ids), None),
            Selection::Filter(f) => (None, Some(f)),
        }
    }
}

/// A distance's Qdrant name.
pub fn distance_name(m: Metric) -> &'static str {
    match m {
        Metric::Cosine => "Cosine",
        Metric::Euclidean => "Euclid",
        Metric::Dot => "Dot",
        Metric::Manhattan => "Manhattan",
    }
}

pub fn metric_of(name: &str) -> Result<Metric, ApiError> {
    match name {
        "Cosine" => Ok(Metric::Cosine),
        "Euclid" => Ok(Metric::Euclidean),
        "Dot" => Ok(Metric::Dot),
        "Manhattan" => Ok(Metric::Manhattan),
        other => Err(bad(format!(
            "unknown distance `{}`: Cosine, Euclid, Dot or Manhattan",
            crate::error::cut(other.to_owned(), 40)
        ))),
    }
}

/// A point as Qdrant's clients read it from retrieve and scroll.
#[derive(Debug, Serialize)]
pub struct Record {
    pub id: PointId,
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
    #[serde(skip)]
    pub json_bytes: usize,
}

impl crate::answer::Weight for Record {
    fn weight(&self) -> usize {
        self.json_bytes
    }
}

impl crate::answer::Weight for Vec<Record> {
    fn weight(&self) -> usize {
        self.iter().map(|r| r.json_bytes).sum()
    }
}

impl Record {
    pub fn from(r: PointRecord, sel: &WithPayload) -> Record {
        Record {
            id: r.id,
            payload: sel.apply(r.payload, true),
            vector: r.vector,
            json_bytes: r.json_bytes,
        }
    }
}

/// A search hit as Qdrant's clients read it.
#[derive(Debug, Serialize)]
pub struct Scored {
    pub id: PointId,
    pub version: u64,
    pub score: f32,
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
    #[serde(skip)]
    pub json_bytes: usize,
}

impl Scored {
    pub fn from(h: Hit, sel: &WithPayload) -> Scored {
        Scored {
            id: h.id,
            version: 0,
            score: h.score,
            payload: sel.apply(h.payload, false),
            vector: h.vector,
            json_bytes: h.json_bytes,
        }
    }
}

impl crate::answer::Weight for Scored {
    fn weight(&self) -> usize {
        self.json_bytes
    }
}

impl crate::answer::Weight for Vec<Scored> {
    fn weight(&self) -> usize {
        self.iter().map(|h| h.json_bytes).sum()
    }
}

impl crate::answer::Weight for Vec<Vec<Scored>> {
    fn weight(&self) -> usize {
        self.iter().map(crate::answer::Weight::weight).sum()
    }
}

/// `{"operation_id", "status": "completed"}`: every write is applied and
/// durable before it is answered, whatever `wait` says.
#[derive(Debug, Serialize)]
pub struct UpdateResult {
    pub operation_id: u64,
    pub status: &'static str,
}

impl UpdateResult {
    pub fn done() -> UpdateResult {
        UpdateResult {
            operation_id: 0,
            status: "completed",
        }
    }
}

impl crate::answer::Weight for UpdateResult {}
impl crate::answer::Weight for Vec<UpdateResult> {
    fn weight(&self) -> usize {
        self.len() * 48
    }
}
impl crate::answer::Weight for bool {}
