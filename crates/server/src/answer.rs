//! JSON answers. Small ones are written in place; large ones (many
//! vectors or payloads) are serialized on a blocking thread, so the async
//! workers never spend long on one answer, and sent in chunks.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vectorizer_service::model::*;

use crate::error::ApiError;

/// Answers estimated above this many bytes are serialized off the runtime.
const LARGE: usize = 256 << 10;
/// Chunk size of a large answer's body.
const CHUNK: usize = 64 << 10;

/// About how many bytes an answer takes as JSON.
pub trait Weight {
    fn weight(&self) -> usize {
        0
    }
}

fn record_weight(
    vector: Option<&Vec<f32>>,
    payload: Option<&serde_json::Map<String, serde_json::Value>>,
) -> usize {
    // A float prints in at most 16 characters; a payload's own size is not
    // known without serializing it, so count its entries generously.
    64 + vector.map_or(0, |v| v.len() * 16) + payload.map_or(0, |p| p.len() * 64)
}

impl Weight for PointRecord {
    fn weight(&self) -> usize {
        record_weight(self.vector.as_ref(), self.payload.as_ref())
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
        self.results
            .iter()
            .map(|h| record_weight(h.vector.as_ref(), h.payload.as_ref()))
            .sum()
    }
}

impl Weight for SearchBatchResults {
    fn weight(&self) -> usize {
        self.results.iter().map(Weight::weight).sum()
    }
}

impl Weight for CollectionList {
    fn weight(&self) -> usize {
        self.collections.len() * 128
    }
}

impl Weight for Usage {
    fn weight(&self) -> usize {
        self.per_collection.len() * 128
    }
}

impl Weight for CollectionDetail {}
impl Weight for Upserted {}
impl Weight for Deleted {}
impl Weight for Counted {}
impl Weight for serde_json::Value {}

/// The answer `out` with `status`.
pub async fn json<T: Serialize + Weight + Send + 'static>(
    status: StatusCode,
    out: T,
) -> Result<Response, ApiError> {
    if out.weight() <= LARGE {
        let raw = serde_json::to_vec(&out).map_err(|_| ApiError::internal())?;
        return Ok(with_type(status, Body::from(raw)));
    }
    let raw = tokio::task::spawn_blocking(move || serde_json::to_vec(&out))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|_| ApiError::internal())?;
    let len = raw.len();
    let raw = Bytes::from(raw);
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        Ok::<_, std::convert::Infallible>(raw.slice(i * CHUNK..((i + 1) * CHUNK).min(len)))
    });
    let mut resp = with_type(status, Body::from_stream(futures_stream(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    Ok(resp)
}

fn with_type(status: StatusCode, body: Body) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An iterator as a stream, one item per poll.
fn futures_stream<I: Iterator + Unpin>(it: I) -> IterStream<I> {
    IterStream(it)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
