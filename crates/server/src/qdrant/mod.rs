//! Qdrant's REST dialect, on a listener of its own (`qdrant:` in the
//! config): the routes and JSON shapes that Qdrant's clients send and
//! read, served through the same admission, service and cluster routing
//! as the native API. One collection, two dialects.
//!
//! Answers are `{"result", "status": "ok", "time"}`; refusals keep their
//! HTTP status and read `{"status": {"error": "..."}, "time"}`.

mod collections;
mod groups;
mod points;
mod query;
mod reads;
mod search;
mod shapes;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http_body_util::BodyExt;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use vectorizer_service::{Call, Permission};

use crate::app::{Access, AppState};
use crate::error::ApiError;

/// The Qdrant version whose API this dialect follows: current clients
/// check it against their own and accept one minor version apart.
pub const QDRANT_VERSION: &str = "1.20.0";

/// Every route of the dialect: (method, path, who may call it, handler).
fn routes() -> Vec<(Method, &'static str, Access, MethodRouter<AppState>)> {
    use Permission::{Delete, Read, Write};
    use axum::routing::{delete, patch, post, put};
    use collections as c;
    use groups as g;
    use points as p;
    use reads as r;
    use search as s;
    let n = Access::Needs;
    vec![
        (Method::GET, "/collections", n(Read), get(c::list)),
        (Method::GET, "/collections/{name}", n(Read), get(c::info)),
        (Method::PUT, "/collections/{name}", n(Write), put(c::create)),
        (
            Method::DELETE,
            "/collections/{name}",
            n(Delete),
            delete(c::drop),
        ),
        (
            Method::PATCH,
            "/collections/{name}",
            n(Write),
            patch(c::update),
        ),
        (
            Method::GET,
            "/collections/{name}/exists",
            n(Read),
            get(c::exists),
        ),
        (
            Method::PUT,
            "/collections/{name}/index",
            n(Write),
            put(c::create_index),
        ),
        (
            Method::DELETE,
            "/collections/{name}/index/{field}",
            n(Write),
            delete(c::delete_index),
        ),
        (
            Method::POST,
            "/collections/aliases",
            n(Write),
            post(c::update_aliases),
        ),
        (Method::GET, "/aliases", n(Read), get(c::aliases)),
        (
            Method::GET,
            "/collections/{name}/aliases",
            n(Read),
            get(c::aliases_of),
        ),
        (
            Method::PUT,
            "/collections/{name}/points",
            n(Write),
            put(p::upsert),
        ),
        (
            Method::POST,
            "/collections/{name}/points",
            n(Read),
            post(p::retrieve),
        ),
        (
            Method::GET,
            "/collections/{name}/points/{id}",
            n(Read),
            get(p::get_one),
        ),
        (
            Method::POST,
            "/collections/{name}/points/delete",
            n(Delete),
            post(p::delete),
        ),
        (
            Method::POST,
            "/collections/{name}/points/payload",
            n(Write),
            post(p::set_payload),
        ),
        (
            Method::PUT,
            "/collections/{name}/points/payload",
            n(Write),
            put(p::overwrite_payload),
        ),
        (
            Method::POST,
            "/collections/{name}/points/payload/delete",
            n(Write),
            post(p::delete_payload),
        ),
        (
            Method::POST,
            "/collections/{name}/points/payload/clear",
            n(Write),
            post(p::clear_payload),
        ),
        (
            Method::POST,
            "/collections/{name}/points/batch",
            n(Write),
            post(p::batch),
        ),
        (
            Method::POST,
            "/collections/{name}/points/scroll",
            n(Read),
            post(r::scroll),
        ),
        (
            Method::POST,
            "/collections/{name}/points/count",
            n(Read),
            post(r::count),
        ),
        (
            Method::POST,
            "/collections/{name}/points/query",
            n(Read),
            post(s::query),
        ),
        (
            Method::POST,
            "/collections/{name}/points/query/batch",
            n(Read),
            post(s::query_batch),
        ),
        (
            Method::POST,
            "/collections/{name}/points/query/groups",
            n(Read),
            post(g::query_groups),
        ),
        (
            Method::POST,
            "/collections/{name}/points/search",
            n(Read),
            post(s::search),
        ),
        (
            Method::POST,
            "/collections/{name}/points/search/batch",
            n(Read),
            post(s::search_batch),
        ),
        (
            Method::POST,
            "/collections/{name}/points/search/groups",
            n(Read),
            post(g::search_groups),
        ),
        (
            Method::POST,
            "/collections/{name}/points/recommend",
            n(Read),
            post(s::recommend),
        ),
        (
            Method::POST,
            "/collections/{name}/points/recommend/batch",
            n(Read),
            post(s::recommend_batch),
        ),
    ]
}

/// The dialect's router, with the native API's limits and admission.
pub fn router(state: AppState) -> Router {
    let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (_, path, access, handler) in routes() {
        let handler = handler.layer(axum::middleware::from_fn_with_state(
            crate::admission::Gate {
                state: state.clone(),
                need: access.permission(),
            },
            crate::admission::admit,
        ));
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(handler),
            None => paths.push((path, handler)),
        }
    }
    let mut app: Router<AppState> = Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz));
    for (path, mr) in paths {
        app = app.route(path, mr);
    }
    let limits = state.limits;
    app.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(known_query))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::middleware::timeout,
        ))
        .layer(CatchPanicLayer::custom(crate::middleware::panic_response))
        .layer(axum::middleware::from_fn(reshape_errors))
        .layer(axum::middleware::from_fn(crate::middleware::request_id))
        .with_state(state)
}

/// A method the matched route does not take: 405, unless the path's point
/// id is no id at all (`PUT .../points/vectors`, `POST .../points/facet`
/// are routes this dialect does not serve: 404).
async fn not_allowed(
    uri: axum::http::Uri,
    matched: Option<axum::extract::MatchedPath>,
) -> ApiError {
    let last = uri.path().rsplit('/').next().unwrap_or("");
    let on_point = matched.as_ref().map(|m| m.as_str()) == Some("/collections/{name}/points/{id}");
    if on_point && vectorizer_engine::PointId::parse_str(last).is_err() {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The query parameters Qdrant's clients send: `wait` (every write is
/// durable when answered, so it changes nothing), `ordering`, `timeout`
/// and `consistency` (accepted, no effect). Any other is refused.
async fn known_query(req: Request, next: Next) -> Response {
    let known = ["wait", "ordering", "timeout", "consistency"];
    let unknown = req.uri().query().and_then(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
            .find(|k| !known.contains(k))
            .map(|k| crate::error::cut(k.to_owned(), 40))
    });
    match unknown {
        Some(k) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("unknown query parameter `{k}`: this API takes `wait`, `ordering`, `timeout` and `consistency`"),
        )
        .into_response(),
        None => next.run(req).await,
    }
}

async fn root() -> Response {
    axum::Json(serde_json::json!({
        "title": "vectorizer - Qdrant-compatible API",
        "version": QDRANT_VERSION,
        "vectorizer_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn healthz() -> &'static str {
    "healthz check passed"
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if state.service.health().status == "ok" {
        "all shards are ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage is not ready").into_response()
    }
}

/// Every refusal in Qdrant's shape: the native error body (written by
/// admission, extractors and handlers alike) becomes
/// `{"status": {"error": message}, "time": 0}`, status and headers kept.
async fn reshape_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Error bodies are small; anything else is passed on as it is.
    let Ok(bytes) = http_body_util::Limited::new(body, 64 << 10).collect().await else {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = bytes.to_bytes();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    let Some(message) = message else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let body = serde_json::json!({"status": {"error": message}, "time": 0.0});
    let raw = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(raw))
}

/// A successful answer: `{"result", "status": "ok", "time"}`.
#[derive(Serialize)]
pub(crate) struct Envelope<T> {
    result: T,
    status: &'static str,
    time: f64,
}

impl<T: crate::answer::Weight> crate::answer::Weight for Envelope<T> {
    fn weight(&self) -> usize {
        self.result.weight()
    }
}

/// Answers `result` to `call`, timed from `started`.
pub(crate) async fn reply<T: Serialize + crate::answer::Weight + Send + 'static>(
    call: &Arc<Call>,
    started: Instant,
    result: T,
) -> Result<Response, ApiError> {
    let out = Envelope {
        result,
        status: "ok",
        time: started.elapsed().as_secs_f64(),
    };
    crate::answer::json(call, StatusCode::OK, out).await
}

/// A 400 in the dialect's words.
pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}
