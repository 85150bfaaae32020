//! Handlers: each extracts the caller and its input, calls the one service
//! entry point of its operation, and answers. No handler touches storage:
//! the service runs that work on the caller's share of blocking threads.

use std::sync::Arc;

use crate::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use vectorizer_service::Call;
use vectorizer_service::model::*;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, OperatorOf, ScraperOf};

async fn ok<T: Serialize + crate::answer::Weight + Send + 'static>(
    call: &Arc<Call>,
    status: StatusCode,
    out: T,
) -> Result<Response, ApiError> {
    crate::answer::json(call, status, out).await
}

/// Liveness for anyone; with the Hub enabled, the details (version,
/// counts, the Hub's state) only for the operator. Never waits for storage
/// or tenant work: the storage state is the last probe's.
pub async fn health(State(state): State<AppState>, operator: OperatorOf) -> Response {
    let h = state.service.health();
    let status = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if state.auth.is_some() && !operator.0 {
        return (status, Json(json!({"status": h.status}))).into_response();
    }
    let mut body = json!(h);
    // The Hub's state, when it is in use. Degraded or down keeps the server
    // ready: keys in the cache still work.
    if let Some(auth) = &state.auth {
        body["hub"] = json!(auth.hub().health());
    }
    (status, Json(body)).into_response()
}

/// The OpenAPI document; with the Hub enabled it needs a key like every
/// route but `/health`.
pub async fn openapi(
    _call: CallOf,
    Extension(doc): Extension<Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

pub async fn usage(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    ok(&call, StatusCode::OK, state.service.usage(&call).await?).await
}

/// Prometheus metrics. Server-wide figures are the operator's: unless
/// `metrics.public`, they need the operator token, never a tenant's key.
pub async fn metrics(
    State(state): State<AppState>,
    scraper: ScraperOf,
) -> Result<Response, ApiError> {
    if !state.metrics.public && !scraper.0 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "metrics need the operator token (or, with the Hub off, either API key): Authorization: Bearer",
        ));
    }
    let body = crate::metrics::render(&state);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

pub async fn list_collections(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.list_collections(&call).await?,
    )
    .await
}

pub async fn create_collection(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    ApiJson(req): ApiJson<CreateCollection>,
) -> Result<Response, ApiError> {
    let made = state.service.create_collection(&call, req).await?;
    ok(&call, StatusCode::CREATED, made).await
}

pub async fn get_collection(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.get_collection(&call, &name).await?,
    )
    .await
}

pub async fn create_payload_index(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreatePayloadIndex>,
) -> Result<Response, ApiError> {
    let out = state
        .service
        .create_payload_index(&call, &name, req)
        .await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn drop_payload_index(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path((name, field)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let out = state
        .service
        .drop_payload_index(&call, &name, &field)
        .await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn delete_collection(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.service.delete_collection(&call, &name).await?;
    ok(&call, StatusCode::OK, json!({"deleted": true})).await
}

pub async fn upsert(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpsertPoints>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.upsert(&call, &name, req).await?,
    )
    .await
}

pub async fn get_point(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.get_point(&call, &name, &id).await?,
    )
    .await
}

pub async fn get_points(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<GetPoints>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.get_points(&call, &name, req).await?,
    )
    .await
}

pub async fn delete_points(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<DeletePoints>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.delete_points(&call, &name, req).await?,
    )
    .await
}

pub async fn scroll(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Scroll>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.scroll(&call, &name, req).await?,
    )
    .await
}

pub async fn count(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Count>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.count(&call, &name, req).await?,
    )
    .await
}

pub async fn search(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Search>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.search(&call, &name, req).await?,
    )
    .await
}

pub async fn search_batch(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SearchBatch>,
) -> Result<Response, ApiError> {
    ok(
        &call,
        StatusCode::OK,
        state.service.search_batch(&call, &name, req).await?,
    )
    .await
}

pub async fn update_collection(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateCollection>,
) -> Result<Response, ApiError> {
    let out = state.service.update_collection(&call, &name, req).await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn set_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetPayload>,
) -> Result<Response, ApiError> {
    let out = state.service.set_payload(&call, &name, req, false).await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn overwrite_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetPayload>,
) -> Result<Response, ApiError> {
    let out = state.service.set_payload(&call, &name, req, true).await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn delete_payload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<DeletePayload>,
) -> Result<Response, ApiError> {
    let out = state.service.delete_payload(&call, &name, req).await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn list_aliases(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    let out = state.service.list_aliases(&call).await?;
    ok(&call, StatusCode::OK, out).await
}

pub async fn update_aliases(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    ApiJson(req): ApiJson<vectorizer_service::aliases::AliasActions>,
) -> Result<Response, ApiError> {
    let out = state.service.update_aliases(&call, req).await?;
    ok(&call, StatusCode::OK, out).await
}
