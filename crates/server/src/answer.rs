//! JSON answers. Small ones are written in place; large ones (many
//! vectors or payloads) are serialized on one of the caller's worker
//! threads, so that the async workers never spend long on one answer and
//! the work counts against the caller's share, then sent in chunks. The
//! call (and so the caller's slot) is held until the last chunk is taken;
//! a reader that stalls is cut off by the connection's write timeout
//! (`serve`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vectorizer_service::Call;
use vectorizer_service::model::*;

use crate::error::ApiError;

/// Answers weighing more than this are serialized off the runtime.
const LARGE: usize = 256 << 10;
/// Chunk size of a large answer's body.
const CHUNK: usize = 64 << 10;
/// How long the whole of a large answer may take to be read.
const SEND_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// At most how many bytes an answer takes as JSON (from the engine's
/// per-record bounds; answers without records weigh by their size).
pub trait Weight {
    fn weight(&self) -> usize {
        0
    }
}

impl Weight for PointRecord {
    fn weight(&self) -> usize {
        self.json_bytes
    }
}

impl Weight for Points {
    fn weight(&self) -> usize {
        self.points.iter().map(Weight::weight).sum()
    }
}

impl Weight for ScrollPage {
    fn weight(&self) -> usize {
        self.points.iter().map(Weight::weight).sum()
    }
}

impl Weight for SearchResults {
    fn weight(&self) -> usize {
        self.results.iter().map(|h| h.json_bytes).sum()
    }
}

impl Weight for SearchBatchResults {
    fn weight(&self) -> usize {
        self.results.iter().map(Weight::weight).sum()
    }
}

impl Weight for CollectionList {
    fn weight(&self) -> usize {
        self.collections.len() * 160
    }
}

impl Weight for Usage {
    fn weight(&self) -> usize {
        self.per_collection.len() * 160
    }
}

impl Weight for CollectionDetail {}
impl Weight for Upserted {}
impl Weight for Deleted {}
impl Weight for Updated {}

impl Weight for vectorizer_service::aliases::AliasList {
    fn weight(&self) -> usize {
        self.aliases.len() * 160
    }
}
impl Weight for Counted {}
impl Weight for serde_json::Value {}

/// The answer `out` to `call`, with `status`.
pub async fn json<T: Serialize + Weight + Send + 'static>(
    call: &Arc<Call>,
    status: StatusCode,
    out: T,
) -> Result<Response, ApiError> {
    if out.weight() <= LARGE {
        let raw = serde_json::to_vec(&out).map_err(|_| ApiError::internal())?;
        return Ok(with_type(status, Body::from(raw)));
    }
    let raw = call
        .run_blocking(move || serde_json::to_vec(&out))
        .await?
        .map_err(|_| ApiError::internal())?;
    let len = raw.len();
    let body = Chunks {
        raw: Bytes::from(raw),
        at: 0,
        until: std::time::Instant::now() + SEND_WITHIN,
        _call: call.clone(),
    };
    let mut resp = with_type(status, Body::from_stream(body));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    Ok(resp)
}

fn with_type(status: StatusCode, body: Body) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A serialized answer, handed out a chunk per poll.
struct Chunks {
    raw: Bytes,
    at: usize,
    /// A reader that takes longer (a little at a time) is cut off.
    until: std::time::Instant,
    /// Keeps the caller's slot until the answer is sent (or dropped).
    _call: Arc<Call>,
}

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.at >= self.raw.len() {
            return Poll::Ready(None);
        }
        if std::time::Instant::now() > self.until {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read the answer too slowly",
            ))));
        }
        let end = (self.at + CHUNK).min(self.raw.len());
        let chunk = self.raw.slice(self.at..end);
        self.at = end;
        Poll::Ready(Some(Ok(chunk)))
    }
}
