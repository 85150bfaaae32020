//! Points in the dialect: upsert (list and batch forms), retrieve, delete,
//! payload changes, batched updates, scroll and count.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use vectorizer_engine::{Filter, PointId};
use vectorizer_service::Call;
use vectorizer_service::model::{
    DeletePayload, DeletePoints, GetPoints, PointInput, SetPayload, UpsertPoints,
};

use super::search::refuse_given;
use super::shapes::{
    Given, Named, Record, Selection, UpdateResult, VectorIn, VectorsIn, WithPayload, WithVector,
};
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointStruct {
    id: PointId,
    vector: VectorIn,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    ids: Vec<PointId>,
    vectors: VectorsIn,
    #[serde(default)]
    payloads: Option<Vec<Option<Map<String, Value>>>>,
}

/// `{"points": [...]}` or `{"batch": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upsert {
    #[serde(default)]
    points: Option<Vec<PointStruct>>,
    #[serde(default)]
    batch: Option<Batch>,
    #[serde(default)]
    shard_key: Given,
    #[serde(default)]
    update_filter: Given,
    #[serde(default)]
    update_mode: Given,
}

impl Upsert {
    fn into_points(self) -> Result<Vec<PointInput>, ApiError> {
        refuse_given("shard_key", &self.shard_key)?;
        refuse_given("update_filter", &self.update_filter)?;
        refuse_given("update_mode", &self.update_mode)?;
        match (self.points, self.batch) {
            (Some(points), None) => Ok(points
                .into_iter()
                .map(|p| PointInput {
                    id: p.id,
                    vector: p.vector.0,
                    payload: p.payload,
                })
                .collect()),
            (None, Some(b)) => {
                let n = b.ids.len();
                let payloads = b.payloads.unwrap_or_else(|| vec![None; n]);
                if b.vectors.0.len() != n || payloads.len() != n {
                    return Err(bad(
                        "`batch`: `ids`, `vectors` and `payloads` must be of the same length",
                    ));
                }
                Ok(b.ids
                    .into_iter()
                    .zip(b.vectors.0)
                    .zip(payloads)
                    .map(|((id, vector), payload)| PointInput {
                        id,
                        vector,
                        payload,
                    })
                    .collect())
            }
            _ => Err(bad("give exactly one of `points` and `batch`")),
        }
    }
}

async fn upsert_points(
    state: &AppState,
    call: &Call,
    name: &str,
    req: Upsert,
) -> Result<(), ApiError> {
    let points = req.into_points()?;
    state
        .service
        .upsert(call, name, UpsertPoints { points })
        .await?;
    Ok(())
}

pub async fn upsert(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Upsert>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    upsert_points(&state, &call, &name, req).await?;
    reply(&call, t, UpdateResult::done()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrieve {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: WithVector,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

pub async fn retrieve(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Retrieve>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    req.with_payload.check()?;
    req.with_vector.check()?;
    let got = state
        .service
        .get_points(
            &call,
            &name,
            GetPoints {
                ids: req.ids,
                with_payload: req.with_payload.wanted(true),
                with_vector: req.with_vector.wanted(),
            },
        )
        .await?;
    let out: Vec<Record> = got
        .points
        .into_iter()
        .map(|r| Record::from(r, &req.with_payload))
        .collect();
    reply(&call, t, out).await
}

pub async fn get_one(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let r = state.service.get_point(&call, &name, &id).await?;
    reply(&call, t, Record::from(r, &WithPayload::Flag(true))).await
}

/// A points selector: `{"points": [...]}` or `{"filter": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

impl Selector {
    fn selection(self) -> Result<Selection, ApiError> {
        Named {
            points: self.points,
            filter: self.filter,
        }
        .selection()
    }
}

async fn delete_selected(
    state: &AppState,
    call: &Call,
    name: &str,
    sel: Selection,
) -> Result<(), ApiError> {
    let (ids, filter) = sel.split();
    state
        .service
        .delete_points(call, name, DeletePoints { ids, filter })
        .await?;
    Ok(())
}

pub async fn delete(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Selector>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    delete_selected(&state, &call, &name, req.selection()?).await?;
    reply(&call, t, UpdateResult::done()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadChange {
    payload: Map<String, Value>,
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

async fn change_payload(
    state: &AppState,
    call: &Call,
    name: &str,
    req: PayloadChange,
    overwrite: bool,
) -> Result<(), ApiError> {
    if req.key.is_some() {
        return Err(bad(
            "`key` (setting payload at a nested path) is not supported",
        ));
    }
    let (ids, filter) = Named {
        points: req.points,
        filter: req.filter,
    }
    .selection()?
    .split();
    let change = SetPayload {
        payload: req.payload,
        ids,
        filter,
    };
    state
        .service
        .set_payload(call, name, change, overwrite)
        .await?;
    Ok(())
}

pub async fn set_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PayloadChange>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    change_payload(&state, &call, &name, req, false).await?;
    reply(&call, t, UpdateResult::done()).await
}

pub async fn overwrite_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PayloadChange>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    change_payload(&state, &call, &name, req, true).await?;
    reply(&call, t, UpdateResult::done()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadKeys {
    keys: Vec<String>,
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

async fn remove_keys(
    state: &AppState,
    call: &Call,
    name: &str,
    req: PayloadKeys,
) -> Result<(), ApiError> {
    let (ids, filter) = Named {
        points: req.points,
        filter: req.filter,
    }
    .selection()?
    .split();
    state
        .service
        .delete_payload(
            call,
            name,
            DeletePayload {
                keys: req.keys,
                ids,
                filter,
            },
        )
        .await?;
    Ok(())
}

pub async fn delete_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PayloadKeys>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    remove_keys(&state, &call, &name, req).await?;
    reply(&call, t, UpdateResult::done()).await
}

async fn clear(state: &AppState, call: &Call, name: &str, sel: Selection) -> Result<(), ApiError> {
    let (ids, filter) = sel.split();
    let change = SetPayload {
        payload: Map::new(),
        ids,
        filter,
    };
    state.service.set_payload(call, name, change, true).await?;
    Ok(())
}

pub async fn clear_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Selector>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    clear(&state, &call, &name, req.selection()?).await?;
    reply(&call, t, UpdateResult::done()).await
}

/// One operation of `points/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Operation {
    Upsert(Upsert),
    Delete(Selector),
    SetPayload(PayloadChange),
    OverwritePayload(PayloadChange),
    DeletePayload(PayloadKeys),
    ClearPayload(Selector),
    UpdateVectors(IgnoredAny),
    DeleteVectors(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operations {
    operations: Vec<Operation>,
}

/// Most operations in one `points/batch`.
pub const MAX_OPERATIONS: usize = 1000;

/// Applies the operations in order, each as its own request would; stops
/// at the first refusal (those before it stay applied, as in Qdrant).
/// What can be known before any is applied is checked first: the number
/// of operations, the kinds supported, and the permission deletes need.
pub async fn batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Operations>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    if req.operations.len() > MAX_OPERATIONS {
        return Err(bad(format!(
            "a batch holds at most {MAX_OPERATIONS} operations"
        )));
    }
    if req
        .operations
        .iter()
        .any(|o| matches!(o, Operation::Delete(_)))
    {
        call.caller()
            .require(vectorizer_service::Permission::Delete)?;
    }
    if req
        .operations
        .iter()
        .any(|o| matches!(o, Operation::UpdateVectors(_) | Operation::DeleteVectors(_)))
    {
        return Err(bad(
            "`update_vectors` and `delete_vectors` are not supported: upsert the point instead",
        ));
    }
    let mut done = Vec::with_capacity(req.operations.len());
    for op in req.operations {
        run(&state, &call, &name, op).await?;
        done.push(UpdateResult::done());
    }
    reply(&call, t, done).await
}

async fn run(
    state: &AppState,
    call: &Arc<Call>,
    name: &str,
    op: Operation,
) -> Result<(), ApiError> {
    match op {
        Operation::Upsert(u) => upsert_points(state, call, name, u).await,
        Operation::Delete(s) => delete_selected(state, call, name, s.selection()?).await,
        Operation::SetPayload(p) => change_payload(state, call, name, p, false).await,
        Operation::OverwritePayload(p) => change_payload(state, call, name, p, true).await,
        Operation::DeletePayload(k) => remove_keys(state, call, name, k).await,
        Operation::ClearPayload(s) => clear(state, call, name, s.selection()?).await,
        Operation::UpdateVectors(_) | Operation::DeleteVectors(_) => unreachable!("refused above"),
    }
}
