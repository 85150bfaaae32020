//! Reading points in the dialect: scroll (paged in id order) and count.

use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use vectorizer_engine::{Filter, PointId};
use vectorizer_service::model::{Count, Scroll};

use super::shapes::{Given, Record, WithPayload, WithVector};
use super::{bad, reply};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf, Path};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollRequest {
    #[serde(default)]
    offset: Option<PointId>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: WithVector,
    #[serde(default)]
    order_by: Given,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

pub async fn scroll(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ScrollRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    if req.order_by.0 {
        return Err(bad("`order_by` is not supported: points come in id order"));
    }
    req.with_payload.check()?;
    req.with_vector.check()?;
    let page = state
        .service
        .scroll(
            &call,
            &name,
            Scroll {
                limit: req.limit.unwrap_or(10),
                cursor: req.offset,
                filter: req.filter,
                with_payload: req.with_payload.wanted(true),
                with_vector: req.with_vector.wanted(),
            },
        )
        .await?;
    let points: Vec<Record> = page
        .points
        .into_iter()
        .map(|r| Record::from(r, &req.with_payload))
        .collect();
    let weight = crate::answer::Weight::weight(&points);
    let out = ScrollResult {
        points,
        next_page_offset: page.next_cursor,
        weight,
    };
    reply(&call, t, out).await
}

#[derive(serde::Serialize)]
struct ScrollResult {
    points: Vec<Record>,
    next_page_offset: Option<PointId>,
    #[serde(skip)]
    weight: usize,
}

impl crate::answer::Weight for ScrollResult {
    fn weight(&self) -> usize {
        self.weight
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    exact: Option<bool>,
    #[serde(default, rename = "shard_key")]
    _shard_key: Given,
}

/// Counts are always exact here.
pub async fn count(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CountRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let _ = req.exact;
    let n = state
        .service
        .count(&call, &name, Count { filter: req.filter })
        .await?;
    reply(&call, t, json!({"count": n.count})).await
}
