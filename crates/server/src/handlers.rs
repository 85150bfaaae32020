//! Handlers: each extracts the caller and its input, runs the service
//! operation on the blocking pool (storage and search block), and answers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use vectorizer_service::model::*;
use vectorizer_service::{Service, ServiceError};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallerOf};

/// Runs `f` on the blocking pool and answers its value as JSON.
async fn run<T: Serialize + Send + 'static>(
    state: &AppState,
    status: StatusCode,
    f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<Response, ApiError> {
    let service = state.service.clone();
    let out = tokio::task::spawn_blocking(move || f(&service))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a storage task failed");
            ApiError::internal()
        })??;
    Ok((status, Json(out)).into_response())
}

pub async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    let service = state.service.clone();
    let h = tokio::task::spawn_blocking(move || service.health())
        .await
        .map_err(|_| ApiError::internal())?;
    let status = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(h).map_err(|_| ApiError::internal())?;
    // The Hub's state, when it is in use. Degraded or down keeps the server
    // ready: keys in the cache still work.
    if let Some(auth) = &state.auth {
        body["hub"] =
            serde_json::to_value(auth.hub().health()).map_err(|_| ApiError::internal())?;
    }
    Ok((status, Json(body)).into_response())
}

/// The OpenAPI document; with the Hub enabled it needs a key like every
/// route but `/health`.
pub async fn openapi(
    _caller: CallerOf,
    Extension(doc): Extension<Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

pub async fn usage(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    let u = state.service.clone().usage(caller).await?;
    Ok((StatusCode::OK, Json(u)).into_response())
}

/// Prometheus metrics; with the Hub enabled and `metrics.public` off, an
/// access key with the admin permission is needed: the figures span every
/// tenant.
pub async fn metrics(
    State(state): State<AppState>,
    mut parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    if !state.metrics.public && state.auth.is_some() {
        parts
            .extensions
            .insert(crate::app::Needs(vectorizer_service::Permission::Admin));
        <CallerOf as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await?;
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
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| s.list_collections(&caller)).await
}

pub async fn create_collection(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    ApiJson(req): ApiJson<CreateCollection>,
) -> Result<Response, ApiError> {
    let made = state
        .service
        .clone()
        .create_collection_registered(caller, req)
        .await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

pub async fn get_collection(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.get_collection(&caller, &name)
    })
    .await
}

pub async fn create_payload_index(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreatePayloadIndex>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.create_payload_index(&caller, &name, req)
    })
    .await
}

pub async fn delete_collection(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .service
        .clone()
        .delete_collection_registered(caller, name)
        .await?;
    Ok((StatusCode::OK, Json(json!({"deleted": true}))).into_response())
}

pub async fn upsert(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpsertPoints>,
) -> Result<Response, ApiError> {
    let out = state
        .service
        .clone()
        .upsert_checked(caller, name, req)
        .await?;
    Ok((StatusCode::OK, Json(out)).into_response())
}

pub async fn get_point(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.get_point(&caller, &name, &id)
    })
    .await
}

pub async fn get_points(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<GetPoints>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.get_points(&caller, &name, req)
    })
    .await
}

pub async fn delete_points(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<DeletePoints>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.delete_points(&caller, &name, req)
    })
    .await
}

pub async fn scroll(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Scroll>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.scroll(&caller, &name, req)
    })
    .await
}

pub async fn count(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Count>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.count(&caller, &name, req)
    })
    .await
}

pub async fn search(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Search>,
) -> Result<Response, ApiError> {
    let found = state
        .service
        .clone()
        .search_async(caller, name, req)
        .await?;
    Ok((StatusCode::OK, Json(found)).into_response())
}

pub async fn search_batch(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SearchBatch>,
) -> Result<Response, ApiError> {
    run(&state, StatusCode::OK, move |s| {
        s.search_batch(&caller, &name, req)
    })
    .await
}
