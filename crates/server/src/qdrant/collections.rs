//! Collections in the dialect: list, info, exists, create, delete, update,
//! payload indexes and aliases.

use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use vectorizer_engine::{HnswParams, Quantization};
use vectorizer_service::ServiceError;
use vectorizer_service::aliases::{AliasAction, AliasActions};
use vectorizer_service::model::{CollectionDetail, CreateCollection, CreatePayloadIndex};

use super::search::refuse_given;
use super::shapes::{Given, UpdateResult, distance_name, metric_of};
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

pub async fn list(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let list = state.service.list_collections(&call).await?;
    let names: Vec<Value> = list
        .collections
        .into_iter()
        .map(|c| json!({"name": c.name}))
        .collect();
    reply(&call, t, json!({"collections": names})).await
}

/// A `CollectionInfo` as the clients parse it.
fn info_of(d: &CollectionDetail) -> Value {
    let indexed = d.points.saturating_sub(d.unindexed_points);
    let schema: serde_json::Map<String, Value> = d
        .payload_index
        .iter()
        .map(|f| {
            (
                f.clone(),
                json!({"data_type": "keyword", "points": d.points}),
            )
        })
        .collect();
    json!({
        // Yellow while points wait to be linked into the graph, as
        // Qdrant says while it optimizes.
        "status": if d.unindexed_points > 0 { "yellow" } else { "green" },
        "optimizer_status": "ok",
        "indexed_vectors_count": indexed,
        "points_count": d.points,
        "segments_count": 1,
        "config": {
            "params": {
                "vectors": {"size": d.dimension, "distance": distance_name(d.metric)},
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": false
            },
            "hnsw_config": {
                "m": d.hnsw.m,
                "ef_construct": d.hnsw.ef_construction,
                "full_scan_threshold": 10000,
                "max_indexing_threads": 0,
                "on_disk": false
            },
            "optimizer_config": {
                "deleted_threshold": 0.2,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": 0,
                "max_segment_size": null,
                "memmap_threshold": null,
                "indexing_threshold": 0,
                "flush_interval_sec": 5,
                "max_optimization_threads": null
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            "quantization_config": d.quantization.map(|_| json!({
                "scalar": {"type": "int8", "quantile": null, "always_ram": true}
            }))
        },
        "payload_schema": schema
    })
}

pub async fn info(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let d = state.service.get_collection(&call, &name).await?;
    reply(&call, t, info_of(&d)).await
}

pub async fn exists(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let exists = match state.service.get_collection(&call, &name).await {
        Ok(_) => true,
        Err(ServiceError::CollectionNotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    reply(&call, t, json!({"exists": exists})).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorParams {
    size: usize,
    distance: String,
    #[serde(default)]
    hnsw_config: Option<HnswDiff>,
    #[serde(default)]
    on_disk: Option<bool>,
    #[serde(default)]
    datatype: Option<String>,
    #[serde(default)]
    quantization_config: Option<QuantizationConfig>,
    #[serde(default)]
    multivector_config: Given,
}

/// Qdrant's `quantization_config`: `scalar` int8 is served (as int8 codes
/// with rescoring: its `quantile` and `always_ram` change nothing here,
/// where each vector has its own scale and codes are always in memory);
/// `product` and `binary` are refused.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
// (What `product` and `binary` hold is refused unread.)
#[allow(dead_code)]
enum QuantizationConfig {
    Scalar(ScalarQuantization),
    Product(Given),
    Binary(Given),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalarQuantization {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "quantile")]
    _quantile: Given,
    #[serde(default, rename = "always_ram")]
    _always_ram: Given,
}

/// The quantization a Qdrant create asks for (the vector's own, else the
/// collection's).
fn quantization_of(
    top: Option<QuantizationConfig>,
    inner: Option<QuantizationConfig>,
) -> Result<Option<Quantization>, ApiError> {
    match inner.or(top) {
        None => Ok(None),
        Some(QuantizationConfig::Scalar(s)) if s.kind == "int8" => Ok(Some(Quantization::int8())),
        Some(QuantizationConfig::Scalar(_)) => Err(bad(
            "`quantization_config.scalar.type`: only int8 is supported",
        )),
        Some(QuantizationConfig::Product(_) | QuantizationConfig::Binary(_)) => Err(bad(
            "only scalar quantization is supported: {\"scalar\": {\"type\": \"int8\"}}",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HnswDiff {
    #[serde(default)]
    m: Option<usize>,
    #[serde(default)]
    ef_construct: Option<usize>,
    #[serde(default, rename = "full_scan_threshold")]
    _full_scan_threshold: Given,
    #[serde(default, rename = "max_indexing_threads")]
    _max_indexing_threads: Given,
    #[serde(default, rename = "on_disk")]
    _on_disk: Given,
    #[serde(default, rename = "payload_m")]
    _payload_m: Given,
    #[serde(default, rename = "inline_storage")]
    _inline_storage: Given,
}

/// `vectors`: one `VectorParams`, or `{"": VectorParams}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum VectorsConfig {
    One(VectorParams),
    Named(std::collections::BTreeMap<String, VectorParams>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    #[serde(default)]
    vectors: Option<VectorsConfig>,
    #[serde(default)]
    hnsw_config: Option<HnswDiff>,
    // Storage tuning of Qdrant's own: accepted, no effect here.
    #[serde(default, rename = "shard_number")]
    _shard_number: Given,
    #[serde(default, rename = "replication_factor")]
    _replication_factor: Given,
    #[serde(default, rename = "write_consistency_factor")]
    _write_consistency_factor: Given,
    #[serde(default, rename = "on_disk_payload")]
    _on_disk_payload: Given,
    #[serde(default, rename = "optimizers_config")]
    _optimizers_config: Given,
    #[serde(default, rename = "wal_config")]
    _wal_config: Given,
    // What would change answers: refused when given.
    #[serde(default)]
    sparse_vectors: Given,
    #[serde(default)]
    quantization_config: Option<QuantizationConfig>,
    #[serde(default)]
    sharding_method: Given,
    #[serde(default)]
    init_from: Given,
    #[serde(default)]
    strict_mode_config: Given,
    #[serde(default)]
    metadata: Given,
}

fn hnsw_of(top: Option<HnswDiff>, inner: Option<HnswDiff>) -> Option<HnswParams> {
    let (top, inner) = (top.unwrap_or_default(), inner.unwrap_or_default());
    let m = inner.m.or(top.m);
    let ef = inner.ef_construct.or(top.ef_construct);
    if m.is_none() && ef.is_none() {
        return None;
    }
    let mut p = HnswParams::default();
    if let Some(m) = m {
        p.m = m;
    }
    if let Some(ef) = ef {
        p.ef_construction = ef;
    }
    Some(p)
}

pub async fn create(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Create>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    for (field, v) in [
        ("sparse_vectors", &req.sparse_vectors),
        ("sharding_method", &req.sharding_method),
        ("init_from", &req.init_from),
        ("strict_mode_config", &req.strict_mode_config),
        ("metadata", &req.metadata),
    ] {
        refuse_given(field, v)?;
    }
    let params = match req.vectors {
        None => {
            return Err(bad(
                "`vectors` is required: {\"size\": n, \"distance\": \"Cosine\"}",
            ));
        }
        Some(VectorsConfig::One(p)) => p,
        Some(VectorsConfig::Named(mut named)) => match named.remove("") {
            Some(p) if named.is_empty() => p,
            _ => {
                return Err(bad(
                    "named vectors are not supported: give `vectors` as {\"size\", \"distance\"}",
                ));
            }
        },
    };
    refuse_given("vectors.multivector_config", &params.multivector_config)?;
    let quantization = quantization_of(req.quantization_config, params.quantization_config)?;
    if params.datatype.as_deref().is_some_and(|d| d != "float32") {
        return Err(bad("`vectors.datatype`: only float32 is supported"));
    }
    let _ = params.on_disk;
    let spec = CreateCollection {
        name,
        dimension: params.size,
        metric: metric_of(&params.distance)?,
        hnsw: hnsw_of(req.hnsw_config, params.hnsw_config),
        payload_index: Vec::new(),
        // The server's default target: Qdrant's API has no such setting.
        target_recall: None,
        quantization,
    };
    state.service.create_collection(&call, spec).await?;
    reply(&call, t, true).await
}

pub async fn drop(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    // As Qdrant answers: `false` for a collection that is not there.
    let dropped = match state.service.delete_collection(&call, &name).await {
        Ok(()) => true,
        Err(ServiceError::CollectionNotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    reply(&call, t, dropped).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[serde(default, rename = "optimizers_config")]
    _optimizers_config: Given,
    #[serde(default, rename = "params")]
    _params: Given,
    #[serde(default)]
    hnsw_config: Given,
    #[serde(default)]
    vectors: Given,
    #[serde(default)]
    quantization_config: Given,
    #[serde(default)]
    sparse_vectors: Given,
    #[serde(default)]
    strict_mode_config: Given,
    #[serde(default)]
    metadata: Given,
}

/// Accepts storage tuning (no effect here); refuses changes to the graph's
/// build parameters, vectors or quantization, which this server cannot
/// make to an existing collection.
pub async fn update(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Update>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    for (field, v) in [
        ("hnsw_config", &req.hnsw_config),
        ("vectors", &req.vectors),
        ("quantization_config", &req.quantization_config),
        ("sparse_vectors", &req.sparse_vectors),
        ("strict_mode_config", &req.strict_mode_config),
        ("metadata", &req.metadata),
    ] {
        refuse_given(field, v)?;
    }
    // The collection must exist, as for any update.
    state.service.get_collection(&call, &name).await?;
    reply(&call, t, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIndex {
    field_name: String,
    #[serde(default)]
    field_schema: Option<Value>,
}

pub async fn create_index(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreateIndex>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let kind = match &req.field_schema {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(m)) => match m.get("type").and_then(Value::as_str) {
            Some(t) => Some(t.to_owned()),
            None => return Err(bad("`field_schema` as an object needs its `type`")),
        },
        Some(_) => return Err(bad("`field_schema`: a type name or {\"type\": ...}")),
    };
    match kind.as_deref() {
        None | Some("keyword" | "integer" | "float" | "bool" | "uuid") => {}
        Some(other) => {
            return Err(bad(format!(
                "`{}` payload indexes are not supported: keyword, integer, float, bool and uuid are",
                crate::error::cut(other.to_owned(), 40)
            )));
        }
    }
    let req = CreatePayloadIndex {
        field: req.field_name,
    };
    state
        .service
        .create_payload_index(&call, &name, req)
        .await?;
    reply(&call, t, UpdateResult::done()).await
}

pub async fn delete_index(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path((name, field)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    state
        .service
        .drop_payload_index(&call, &name, &field)
        .await?;
    reply(&call, t, UpdateResult::done()).await
}

/// One alias action, as Qdrant's clients send it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub enum AliasOp {
    #[serde(rename = "create_alias")]
    Create(CreateAlias),
    #[serde(rename = "delete_alias")]
    Delete(DeleteAlias),
    #[serde(rename = "rename_alias")]
    Rename(RenameAlias),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAlias {
    collection_name: String,
    alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteAlias {
    alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameAlias {
    old_alias_name: String,
    new_alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeAliases {
    actions: Vec<AliasOp>,
    #[serde(default, rename = "timeout")]
    _timeout: Given,
}

/// Applies the actions together (a rename is a delete and a create, of
/// the collection the alias names when it is read).
pub async fn update_aliases(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    ApiJson(req): ApiJson<ChangeAliases>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let mut actions = Vec::new();
    let mut current = None;
    for a in req.actions {
        match a {
            AliasOp::Create(c) => actions.push(AliasAction::CreateAlias {
                alias: c.alias_name,
                collection: c.collection_name,
            }),
            AliasOp::Delete(d) => actions.push(AliasAction::DeleteAlias {
                alias: d.alias_name,
            }),
            AliasOp::Rename(r) => {
                if current.is_none() {
                    current = Some(state.service.list_aliases(&call).await?);
                }
                let list = current.as_ref().expect("read above");
                let Some(found) = list.aliases.iter().find(|x| x.alias == r.old_alias_name) else {
                    return Err(ServiceError::AliasNotFound(r.old_alias_name).into());
                };
                let collection = found.collection.clone();
                actions.push(AliasAction::DeleteAlias {
                    alias: r.old_alias_name,
                });
                actions.push(AliasAction::CreateAlias {
                    alias: r.new_alias_name,
                    collection,
                });
            }
        }
    }
    state
        .service
        .update_aliases(&call, AliasActions { actions })
        .await?;
    reply(&call, t, true).await
}

fn alias_list(list: vectorizer_service::aliases::AliasList, of: Option<&str>) -> Value {
    let aliases: Vec<Value> = list
        .aliases
        .into_iter()
        .filter(|a| of.is_none_or(|c| a.collection == c))
        .map(|a| json!({"alias_name": a.alias, "collection_name": a.collection}))
        .collect();
    json!({"aliases": aliases})
}

pub async fn aliases(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let list = state.service.list_aliases(&call).await?;
    reply(&call, t, alias_list(list, None)).await
}

pub async fn aliases_of(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    // Through an alias, the collection's own name.
    let d = state.service.get_collection(&call, &name).await?;
    let list = state.service.list_aliases(&call).await?;
    reply(&call, t, alias_list(list, Some(&d.name))).await
}
