//! Request ids and logging, timeouts, and panics turned into 500s.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::HttpLimits;
use crate::error::ApiError;

pub const REQUEST_ID: &str = "x-request-id";

/// A fresh id: a per-process random seed hashed with a counter.
fn new_request_id() -> String {
    static SEED: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:016x}",
        SEED.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
    )
}

/// Takes the caller's `x-request-id` (if it is short and printable) or
/// makes one, runs the request inside a span carrying it, and returns it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span =
        tracing::info_span!("request", request_id = %id, method = %req.method(), route = %route);
    req.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&id).expect("printable ASCII"),
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    crate::metrics::METRICS.observe(&route, status, ms / 1000.0);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::info!(status, ms, "request done");
        }
    });
    resp.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&id).expect("printable ASCII"),
    );
    resp
}

/// Answers 503 when a request takes longer than the configured timeout.
/// Work already handed to storage still completes (a write that was
/// logged stays durable); only the answer is abandoned. The backup routes
/// that move whole archives have a timeout of their own, and so does
/// `/mcp`, whose backup tools stand for them (its other tools are held to
/// the request timeout by the MCP handler).
pub async fn timeout(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let long = req.extensions().get::<MatchedPath>().is_some_and(|p| {
        let p = p.as_str();
        (p.starts_with("/api/hub/backups")
            && (req.method() == axum::http::Method::POST || p.ends_with("/download")))
            || p == "/mcp"
    });
    let limit = if long {
        limits.backup_timeout
    } else {
        limits.request_timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
        .into_response(),
    }
}

/// Refuses a query string: no route takes one, and a parameter silently
/// ignored (`?with_vector=true`) would answer something else than asked.
pub async fn no_query(req: Request, next: Next) -> Response {
    match req.uri().query() {
        Some(q) if !q.is_empty() => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "this route takes no query parameters; options go in the JSON body",
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::internal().into_response()
}
