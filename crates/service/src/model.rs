//! Request and response bodies of the service's operations, with their
//! JSON schemas (the OpenAPI document is generated from these).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vectorizer_engine::{HnswParams, Metric, PointId, Quantization};

// A filter field holds the parsed filter: it is read (within the parser's
// bounds) where the request arrives, and written back in the same shape
// wherever the operation travels (log entries, internal calls).

/// Schema of a point id: a non-negative integer or a UUID string.
pub struct PointIdSchema;

impl JsonSchema for PointIdSchema {
    fn schema_name() -> Cow<'static, str> {
        "PointId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A non-negative integer or a UUID string.",
            "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "uuid"}]
        })
    }
}

/// Schema of a payload filter (Qdrant's shape).
pub struct FilterSchema;

impl JsonSchema for FilterSchema {
    fn schema_name() -> Cow<'static, str> {
        "Filter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "{\"must\": [...], \"should\": [...], \"must_not\": [...], \"min_should\": {\"conditions\": [...], \"min_count\": n}} of conditions: {\"key\": \"a.b\", \"match\": {\"value\": v}} (keyword, number or bool), match {\"any\": [...]}, {\"except\": [...]} or {\"text\": \"...\"}, {\"key\": k, \"range\": {\"gt\"|\"gte\"|\"lt\"|\"lte\": n}}, {\"key\": k, \"values_count\": {...}}, {\"is_empty\": {\"key\": k}}, {\"is_null\": {\"key\": k}}, {\"has_id\": [ids]}, {\"nested\": {\"key\": k, \"filter\": {...}}}, or a filter.",
            "type": "object",
            "properties": {
                "must": {"type": "array", "items": {"type": "object"}},
                "should": {"type": "array", "items": {"type": "object"}},
                "must_not": {"type": "array", "items": {"type": "object"}},
                "min_should": {"type": "object"}
            },
            "additionalProperties": false
        })
    }
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(crate) enum MetricSchema {
    Cosine,
    Euclidean,
    Dot,
    Manhattan,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HnswSchema {
    /// Links per node on upper layers (2 to 128; default 16).
    m: Option<usize>,
    /// Beam width while inserting (4 to 4096; default 128).
    ef_construction: Option<usize>,
    /// Default beam width while searching (1 to 4096; default 64).
    ef_search: Option<usize>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum QuantizationKindSchema {
    Int8,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct QuantizationSchema {
    /// `int8`: one signed byte per component, one scale per vector.
    #[serde(rename = "type")]
    kind: QuantizationKindSchema,
    /// Rescore the best candidates with the full vectors, so that scores
    /// are exact (default true).
    rescore: Option<bool>,
    /// Candidates rescored, as a multiple of `limit` (1 to 16; default 3).
    oversampling: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// 1 to 64 characters: letters, digits, `_`, `-`.
    pub name: String,
    /// 1 to 65,536.
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub dimension: usize,
    /// How closeness is measured: `cosine` (angle; vectors are
    /// normalised), `euclidean` (distance) or `dot` (inner product).
    #[schemars(with = "MetricSchema")]
    pub metric: Metric,
    /// Graph parameters; leave out for the defaults.
    #[serde(default)]
    #[schemars(with = "Option<HnswSchema>")]
    pub hnsw: Option<HnswParams>,
    /// Payload fields (dotted paths, at most 32) indexed for filters:
    /// conditions on them find their candidates without scanning.
    #[serde(default)]
    pub payload_index: Vec<String>,
    /// The recall@10 searches without `ef` aim for (0.5 to 0.999): the
    /// collection measures its own recall and picks the search breadth
    /// that meets it. Leave out for the server's default (0.95 unless
    /// configured); `null` for none (searches use `hnsw.ef_search`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_recall: Option<Option<f64>>,
    /// Vectors kept in memory as 8-bit codes (about a quarter of the
    /// memory) and the full vectors on disk, read to rescore each search's
    /// best candidates: `{"type": "int8"}`, optionally with `rescore` and
    /// `oversampling`. Fixed for the collection's life. Left out (or
    /// null): full vectors in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<QuantizationSchema>")]
    pub quantization: Option<Quantization>,
}

/// A field that may be absent (`None`) or a value, but not `null`.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl CreateCollection {
    /// The collection's config. The service fills in the server's default
    /// `target_recall` where a request arrives; one still without it (an
    /// internal caller's) takes the engine's default, as a config file
    /// without it does.
    pub fn config(&self) -> vectorizer_engine::CollectionConfig {
        vectorizer_engine::CollectionConfig {
            dimension: self.dimension,
            metric: self.metric,
            hnsw: self.hnsw.unwrap_or_default(),
            payload_index: self.payload_index.clone(),
            target_recall: self
                .target_recall
                .unwrap_or(Some(vectorizer_engine::config::DEFAULT_TARGET_RECALL)),
            quantization: self.quantization,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayloadIndex {
    /// A payload field, as a dotted path.
    pub field: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CollectionSummary {
    pub name: String,
    pub dimension: usize,
    #[schemars(with = "MetricSchema")]
    pub metric: Metric,
    pub points: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CollectionList {
    pub collections: Vec<CollectionSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CollectionDetail {
    pub name: String,
    pub dimension: usize,
    #[schemars(with = "MetricSchema")]
    pub metric: Metric,
    #[schemars(with = "HnswSchema")]
    pub hnsw: HnswParams,
    /// Indexed payload fields.
    pub payload_index: Vec<String>,
    pub points: u64,
    /// Bytes on disk (what storage is billed on).
    pub bytes: u64,
    /// Bytes held in memory.
    pub memory_bytes: u64,
    /// Points not yet linked into the search graph; they are found by an
    /// exact scan meanwhile.
    pub unindexed_points: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether the collection is open in memory now (it opens on first
    /// use and closes again when idle). Absent from a node without lazy
    /// opening: false.
    #[serde(default)]
    pub loaded: bool,
    /// The recall@10 searches without `ef` aim for; `null`: none.
    #[serde(default)]
    pub target_recall: Option<f64>,
    /// The collection's last measurement of its own recall, and the search
    /// breadth chosen from it; `null` until measured (a collection
    /// measures once it holds more than 256 points, all linked, and again
    /// after it is opened) or without a target.
    #[serde(default)]
    pub recall: Option<Box<RecallMeasure>>,
    /// How vectors are kept in memory; `null`: as full vectors.
    #[serde(default)]
    #[schemars(with = "Option<QuantizationSchema>")]
    pub quantization: Option<Quantization>,
}

/// A collection's measurement of its own recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecallMeasure {
    /// The target the breadth was chosen for.
    pub target: f64,
    /// Mean recall@10 of the measured queries at `ef`.
    pub estimate: f64,
    /// The breadth searches without `ef` use.
    pub ef: usize,
    /// Queries measured.
    pub queries: usize,
    /// `queries`: searches the collection answered; `stored_points`:
    /// stored points held out of their own answers (before enough
    /// searches were seen).
    #[schemars(with = "RecallSourceSchema")]
    pub source: vectorizer_engine::RecallSource,
    /// Points in the collection when measured.
    pub points: u64,
    /// When, in milliseconds since the Unix epoch.
    pub measured_at_ms: u64,
    /// How long the measurement took, in milliseconds.
    pub took_ms: u64,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum RecallSourceSchema {
    Queries,
    StoredPoints,
}

impl From<vectorizer_engine::RecallReport> for RecallMeasure {
    fn from(r: vectorizer_engine::RecallReport) -> Self {
        RecallMeasure {
            target: r.target,
            estimate: r.estimate,
            ef: r.ef,
            queries: r.queries,
            source: r.source,
            points: r.points,
            measured_at_ms: r.measured_at_ms,
            took_ms: r.took_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointInput {
    /// The point's id; a point with the same id is replaced.
    #[schemars(with = "PointIdSchema")]
    pub id: PointId,
    /// Exactly the collection's dimension of finite numbers.
    pub vector: Vec<f32>,
    /// Any JSON object, stored with the point and returned with it;
    /// filters test its fields.
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertPoints {
    /// Points to insert or replace, all or none.
    pub points: Vec<PointInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Upserted {
    pub upserted: usize,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPoints {
    /// Ids to fetch; ids that do not exist are left out of the answer.
    #[schemars(with = "Vec<PointIdSchema>")]
    pub ids: Vec<PointId>,
    /// Return each point's payload (default true).
    #[serde(default = "yes")]
    pub with_payload: bool,
    /// Return each point's vector (default false).
    #[serde(default)]
    pub with_vector: bool,
}

/// Points to delete: by `ids`, or every point matching `filter` (exactly
/// one of the two).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletePoints {
    /// The points' ids (integers or UUID strings); give this or `filter`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<PointIdSchema>>")]
    pub ids: Option<Vec<PointId>>,
    /// Every point matching this filter; give this or `ids`.
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
}

/// A payload change for the points given by `ids` or matching `filter`
/// (exactly one of the two). POST sets these top-level keys and keeps the
/// others; PUT replaces the whole payload.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPayload {
    /// The keys to set (POST) or the whole new payload (PUT).
    pub payload: Map<String, Value>,
    /// The points' ids (integers or UUID strings); give this or `filter`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<PointIdSchema>>")]
    pub ids: Option<Vec<PointId>>,
    /// Every point matching this filter; give this or `ids`.
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
}

/// Top-level payload keys to remove from the points given by `ids` or
/// matching `filter` (exactly one of the two).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletePayload {
    /// The top-level payload keys to remove.
    pub keys: Vec<String>,
    /// The points' ids (integers or UUID strings); give this or `filter`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<PointIdSchema>>")]
    pub ids: Option<Vec<PointId>>,
    /// Every point matching this filter; give this or `ids`.
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Updated {
    /// Points whose payload changed.
    pub updated: usize,
}

/// Search parameters that may change after creation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHnsw {
    /// Default beam width while searching (1 to 4096).
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub ef_search: usize,
}

/// What may change after creation: at least one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCollection {
    /// Absent, or an object (`null` is refused, as the schema says).
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub hnsw: Option<UpdateHnsw>,
    /// A new recall target (0.5 to 0.999), measured for anew; `null`: none
    /// (searches use `hnsw.ef_search`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_recall: Option<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub deleted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PointRecord {
    #[schemars(with = "PointIdSchema")]
    pub id: PointId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    /// At most how many bytes of JSON this record takes (not sent).
    #[serde(skip)]
    #[schemars(skip)]
    pub json_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Points {
    pub points: Vec<PointRecord>,
}

fn ten() -> usize {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scroll {
    /// Points per page (default 10).
    #[serde(default = "ten")]
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub limit: usize,
    /// Where to continue: the `next_cursor` of the previous page.
    #[serde(default)]
    #[schemars(with = "Option<PointIdSchema>")]
    pub cursor: Option<PointId>,
    /// Only points matching this filter.
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
    /// Return each point's payload (default true).
    #[serde(default = "yes")]
    pub with_payload: bool,
    /// Return each point's vector (default false).
    #[serde(default)]
    pub with_vector: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScrollPage {
    pub points: Vec<PointRecord>,
    /// The cursor for the next page; null at the end.
    #[schemars(with = "Option<PointIdSchema>")]
    pub next_cursor: Option<PointId>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// Count only points matching this filter (default: all points).
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Counted {
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The query vector: exactly the collection's dimension.
    pub vector: Vec<f32>,
    /// How many nearest points to return, best first.
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub limit: usize,
    /// Only points matching this filter are candidates.
    #[serde(default)]
    #[schemars(with = "Option<FilterSchema>")]
    pub filter: Option<vectorizer_engine::Filter>,
    /// Beam width for this search (default: the collection's ef_search).
    #[serde(default)]
    #[serde(deserialize_with = "vectorizer_engine::config::whole_opt")]
    pub ef: Option<usize>,
    /// Cosine and dot: keep scores >= threshold; euclidean and manhattan:
    /// distances <=.
    #[serde(default)]
    pub score_threshold: Option<f32>,
    /// Return each hit's payload (default true).
    #[serde(default = "yes")]
    pub with_payload: bool,
    /// Return each hit's vector (default false).
    #[serde(default)]
    pub with_vector: bool,
    /// Score every matching point instead of walking the graph (default
    /// false): the exact answer, at the cost of a scan.
    #[serde(default)]
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Hit {
    #[schemars(with = "PointIdSchema")]
    pub id: PointId,
    /// Cosine similarity, dot product, or euclidean or manhattan distance.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// At most how many bytes of JSON this hit takes (not sent).
    #[serde(skip)]
    #[schemars(skip)]
    pub json_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchResults {
    pub results: Vec<Hit>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBatch {
    /// Searches run together; their results come in the same order.
    pub searches: Vec<Search>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchBatchResults {
    pub results: Vec<SearchResults>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CollectionUsage {
    pub name: String,
    pub vectors: u64,
    pub storage_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UsageLimits {
    pub max_collections: u64,
    pub max_vectors: u64,
    pub max_storage_bytes: u64,
}

/// The caller's usage (the engine's exact figures) and plan limits.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub collections: usize,
    pub vectors: u64,
    pub storage_bytes: u64,
    /// The plan's limits; absent with the Hub switched off, or while it
    /// cannot be reached and the limits are not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<UsageLimits>,
    pub per_collection: Vec<CollectionUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// `ok` when storage is usable, else `unavailable`.
    pub status: String,
    pub storage: String,
    pub collections: usize,
    pub version: String,
}
