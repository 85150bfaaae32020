//! Collection configuration: dimension, metric, HNSW parameters, and the
//! limits every collection enforces on its input.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// The largest dimension a collection accepts.
pub const MAX_DIMENSION: usize = 65_536;
/// The longest collection name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity; the score is in [-1, 1], higher is closer.
    Cosine,
    /// Euclidean (L2) distance; the score is the distance, lower is closer.
    Euclidean,
    /// Inner product; the score is the dot product, higher is closer.
    Dot,
    /// Manhattan (L1) distance; the score is the distance, lower is closer.
    Manhattan,
}

impl Metric {
    /// True when a larger score means a closer point.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Euclidean | Metric::Manhattan)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
            Metric::Dot => "dot",
            Metric::Manhattan => "manhattan",
        }
    }
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node on the upper layers (the base layer keeps twice as many).
    #[serde(deserialize_with = "whole")]
    pub m: usize,
    /// Beam width while inserting.
    #[serde(deserialize_with = "whole")]
    pub ef_construction: usize,
    /// Default beam width while searching; a search may override it.
    #[serde(deserialize_with = "whole")]
    pub ef_search: usize,
}

/// A non-negative integer, also when written with a zero fraction (`5.0`):
/// JSON, and JSON Schema, count that as the integer 5.
pub fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative integer")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("an integer too large"))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("expected a non-negative integer"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<usize, E> {
            if v.fract() == 0.0 && (0.0..9.007_199_254_740_992e15).contains(&v) {
                Ok(v as usize)
            } else {
                Err(E::custom("expected a non-negative integer"))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// [`whole`], optional.
pub fn whole_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative integer or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
        }
    }
}

/// The largest `ef` a search or an index build may ask for.
pub const MAX_EF: usize = 4096;

impl HnswParams {
    pub fn validate(&self) -> Result<(), EngineError> {
        if !(2..=128).contains(&self.m) {
            return Err(EngineError::InvalidConfig(
                "hnsw.m must be between 2 and 128".into(),
            ));
        }
        if !(4..=MAX_EF).contains(&self.ef_construction) {
            return Err(EngineError::InvalidConfig(format!(
                "hnsw.ef_construction must be between 4 and {MAX_EF}"
            )));
        }
        if !(1..=MAX_EF).contains(&self.ef_search) {
            return Err(EngineError::InvalidConfig(format!(
                "hnsw.ef_search must be between 1 and {MAX_EF}"
            )));
        }
        Ok(())
    }
}

/// What a collection is created with; fixed for its lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub dimension: usize,
    pub metric: Metric,
    #[serde(default)]
    pub hnsw: HnswParams,
    /// Payload fields (dotted paths) indexed for filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_index: Vec<String>,
    /// The recall@10 searches without `ef` aim for: the collection measures
    /// its own recall and picks the search breadth that meets it. `None`:
    /// searches use `hnsw.ef_search`. Absent from files written before it
    /// existed: [`DEFAULT_TARGET_RECALL`].
    #[serde(default = "default_target_recall")]
    pub target_recall: Option<f64>,
    /// Vectors kept in memory as 8-bit codes, the full ones on disk.
    /// `None`: full vectors in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

/// Quantized vectors: the graph is built and searched on 8-bit codes held
/// in memory (about a quarter of the floats' size), and the best
/// `limit × oversampling` candidates of a search are rescored with the
/// full vectors, which stay on disk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    #[serde(rename = "type")]
    pub kind: QuantizationKind,
    /// Rescore the best candidates with the full vectors (scores are then
    /// exact); without it, scores are the codes' approximations.
    #[serde(default = "yes")]
    pub rescore: bool,
    /// Candidates rescored, as a multiple of the search's `limit`.
    #[serde(default = "default_oversampling")]
    pub oversampling: f64,
}

/// Kinds of quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizationKind {
    /// One signed byte per component, with one scale per vector.
    Int8,
}

fn yes() -> bool {
    true
}

/// Candidates rescored per hit asked for, when a config names no number.
pub const DEFAULT_OVERSAMPLING: f64 = 3.0;
/// The most `oversampling` may be.
pub const MAX_OVERSAMPLING: f64 = 16.0;

fn default_oversampling() -> f64 {
    DEFAULT_OVERSAMPLING
}

impl Quantization {
    /// int8 with rescoring and the default oversampling.
    pub fn int8() -> Quantization {
        Quantization {
            kind: QuantizationKind::Int8,
            rescore: true,
            oversampling: DEFAULT_OVERSAMPLING,
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        if !(1.0..=MAX_OVERSAMPLING).contains(&self.oversampling) {
            return Err(EngineError::InvalidConfig(format!(
                "quantization.oversampling must be between 1 and {MAX_OVERSAMPLING}"
            )));
        }
        Ok(())
    }
}

/// The target recall of a collection that does not name one.
pub const DEFAULT_TARGET_RECALL: f64 = 0.95;

fn default_target_recall() -> Option<f64> {
    Some(DEFAULT_TARGET_RECALL)
}

/// Checks a target recall: between 0.5 and 0.999 (a search breadth can
/// meet neither a coin toss nor certainty).
pub fn validate_target_recall(t: Option<f64>) -> Result<(), EngineError> {
    match t {
        Some(t) if !(0.5..=0.999).contains(&t) => Err(EngineError::InvalidConfig(
            "target_recall must be between 0.5 and 0.999 (or null: no target)".into(),
        )),
        _ => Ok(()),
    }
}

/// Most payload fields one collection indexes.
pub const MAX_INDEXED_FIELDS: usize = 32;

impl CollectionConfig {
    pub fn new(dimension: usize, metric: Metric) -> Self {
        CollectionConfig {
            dimension,
            metric,
            hnsw: HnswParams::default(),
            payload_index: Vec::new(),
            target_recall: default_target_recall(),
            quantization: None,
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        if !(1..=MAX_DIMENSION).contains(&self.dimension) {
            return Err(EngineError::InvalidConfig(format!(
                "dimension must be between 1 and {MAX_DIMENSION}"
            )));
        }
        if self.payload_index.len() > MAX_INDEXED_FIELDS {
            return Err(EngineError::InvalidConfig(format!(
                "at most {MAX_INDEXED_FIELDS} payload fields can be indexed"
            )));
        }
        for (i, f) in self.payload_index.iter().enumerate() {
            validate_field_path(f)?;
            if self.payload_index[..i].contains(f) {
                return Err(EngineError::InvalidConfig(format!(
                    "payload_index: `{f}` is listed twice"
                )));
            }
        }
        validate_target_recall(self.target_recall)?;
        if let Some(q) = &self.quantization {
            q.validate()?;
        }
        self.hnsw.validate()
    }
}

/// Checks a payload field path as indexes name it: 1 to 256 characters,
/// dotted, no empty part.
pub fn validate_field_path(f: &str) -> Result<(), EngineError> {
    if f.is_empty() || f.chars().count() > 256 || f.split('.').any(str::is_empty) {
        return Err(EngineError::InvalidConfig(format!(
            "payload_index: `{f}` is not a field path (1 to 256 characters, dotted, no empty part)"
        )));
    }
    Ok(())
}

/// Checks a collection name: 1 to 200 bytes of ASCII letters, digits and
/// `_ - . :`, not starting with `.` (names become directory names).
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(EngineError::InvalidName(format!(
            "a name must be 1 to {MAX_NAME_LEN} bytes long"
        )));
    }
    if name.starts_with('.') {
        return Err(EngineError::InvalidName(
            "a name must not start with `.`".into(),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(EngineError::InvalidName(format!(
            "character {c:?} is not allowed; use letters, digits, `_`, `-`, `.`, `:`"
        )));
    }
    Ok(())
}

/// Limits on a single operation, so that one request cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most points in one upsert, get or delete batch.
    pub max_batch: usize,
    /// Largest `limit` of a search or scroll.
    pub max_limit: usize,
    /// Largest serialized payload of one point, in bytes.
    pub max_payload_bytes: usize,
    /// Largest answer (records or hits, with their vectors and payloads)
    /// one request may build, in bytes of JSON, estimated before building.
    pub max_answer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            max_limit: 10_000,
            max_payload_bytes: 64 * 1024,
            max_answer_bytes: 32 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("docs").is_ok());
        assert!(validate_name("user_1:docs-v2.1").is_ok());
        for bad in [
            "",
            ".hidden",
            "a/b",
            "..",
            "a\0b",
            "sp ace",
            &"x".repeat(201),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_bounds() {
        assert!(CollectionConfig::new(0, Metric::Cosine).validate().is_err());
        assert!(
            CollectionConfig::new(65_537, Metric::Cosine)
                .validate()
                .is_err()
        );
        assert!(
            CollectionConfig::new(65_536, Metric::Dot)
                .validate()
                .is_ok()
        );
        let mut c = CollectionConfig::new(4, Metric::Euclidean);
        c.hnsw.m = 1;
        assert!(c.validate().is_err());
    }
}
