//! The bodies of the dialect's search routes, read without buffering: a
//! `query` or an example streams straight into its vector, and what is
//! refused is named while the body is read.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use vectorizer_engine::Filter;

use super::shapes::{Example, Given, VectorIn, WithPayload, WithVector};

/// `params`: search-time settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub hnsw_ef: Option<usize>,
    #[serde(default)]
    pub exact: Option<bool>,
    // Accepted, no effect: a quantized collection searches as it was
    // created to, and there is no ACORN here.
    #[serde(default, rename = "quantization")]
    _quantization: Given,
    #[serde(default, rename = "indexed_only")]
    _indexed_only: Given,
    #[serde(default, rename = "acorn")]
    _acorn: Given,
}

/// `{"positive", "negative", "strategy"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommend {
    #[serde(default)]
    pub positive: Vec<Example>,
    #[serde(default)]
    pub negative: Vec<Example>,
    #[serde(default)]
    pub strategy: Option<String>,
}

/// A `query`: a vector or a point id (bare or as `{"nearest": ...}`), or
/// `{"recommend": {...}}`. Other kinds are refused by name.
#[derive(Debug)]
pub enum QueryIn {
    Nearest(Example),
    Recommend(Recommend),
}

impl<'de> Deserialize<'de> for QueryIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QueryIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector, a point id, `nearest` or `recommend`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QueryIn, E> {
                Ok(QueryIn::Nearest(Example::Id(v.into())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QueryIn, E> {
                u64::try_from(v)
                    .map(|n| QueryIn::Nearest(Example::Id(n.into())))
                    .map_err(|_| E::custom("a point id must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QueryIn, E> {
                vectorizer_engine::PointId::parse_str(v)
                    .map(|id| QueryIn::Nearest(Example::Id(id)))
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<QueryIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
                while let Some(x) = seq.next_element::<f32>()? {
                    out.push(x);
                }
                Ok(QueryIn::Nearest(Example::Vector(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<QueryIn, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("`query` is empty"));
                };
                let q = match kind.as_str() {
                    "nearest" => QueryIn::Nearest(map.next_value::<Example>()?),
                    "recommend" => QueryIn::Recommend(map.next_value::<Recommend>()?),
                    other => {
                        let _ = map.next_value::<IgnoredAny>();
                        return Err(de::Error::custom(format!(
                            "`query.{}` is not supported: a vector, a point id, `nearest` or `recommend` are",
                            other.chars().take(40).collect::<String>()
                        )));
                    }
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("`query`: one kind of query per request"));
                }
                Ok(q)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    #[serde(default)]
    pub query: Option<QueryIn>,
    #[serde(default)]
    pub using: Option<String>,
    #[serde(default)]
    pub prefetch: Given,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub params: Option<Params>,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub with_payload: WithPayload,
    #[serde(default)]
    pub with_vector: WithVector,
    #[serde(default)]
    pub lookup_from: Given,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
    // For the groups form.
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default)]
    pub group_size: Option<usize>,
    #[serde(default)]
    pub with_lookup: Given,
}

/// The older search's `vector`: a list, `{"": [...]}`, or
/// `{"name": "", "vector": [...]}`; other names are refused.
#[derive(Debug)]
pub struct SearchVector(pub Vec<f32>);

impl<'de> Deserialize<'de> for SearchVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SearchVector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector, or {\"name\": \"\", \"vector\": [...]}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SearchVector, A::Error> {
                let v = VectorIn::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(SearchVector(v.0))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SearchVector, A::Error> {
                let (mut name, mut vector) = (None::<String>, None::<Vec<f32>>);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "" | "vector" if vector.is_none() => vector = Some(map.next_value()?),
                        "name" if name.is_none() => name = Some(map.next_value()?),
                        _ => {
                            return Err(de::Error::custom(
                                "named vectors are not supported: send the vector as a list",
                            ));
                        }
                    }
                }
                match (name.as_deref(), vector) {
                    (None | Some(""), Some(v)) => Ok(SearchVector(v)),
                    (Some(_), _) => Err(de::Error::custom(
                        "named vectors are not supported: send the vector as a list",
                    )),
                    (None, None) => Err(de::Error::custom("`vector` is missing")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub vector: SearchVector,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub params: Option<Params>,
    pub limit: usize,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub with_payload: WithPayload,
    #[serde(default)]
    pub with_vector: WithVector,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default)]
    pub group_size: Option<usize>,
    #[serde(default)]
    pub with_lookup: Given,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(default)]
    pub positive: Vec<Example>,
    #[serde(default)]
    pub negative: Vec<Example>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub params: Option<Params>,
    pub limit: usize,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub with_payload: WithPayload,
    #[serde(default)]
    pub with_vector: WithVector,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub using: Option<String>,
    #[serde(default)]
    pub lookup_from: Given,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

/// `{"searches": [...]}` of a batch route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<T> {
    pub searches: Vec<T>,
    #[serde(default, rename = "timeout")]
    _timeout: Given,
}
