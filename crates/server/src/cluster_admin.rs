//! The operator's view of cluster mode: `GET /cluster` (nodes, groups,
//! leaders, lag), `POST /cluster/replace-node` and
//! `POST /cluster/repair-group`. All need the operator
//! token, never a tenant's key; a single node answers 404.

use axum::Json;
use axum::extract::{FromRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, OperatorOf};

fn admitted(state: &AppState, operator: OperatorOf) -> Result<&vectorizer_cluster::Node, ApiError> {
    if !operator.0 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "cluster administration needs the operator token: Authorization: Bearer",
        ));
    }
    state.cluster.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node runs alone (no `cluster:` section)",
        )
    })
}

/// The cluster as this node sees it.
pub async fn status(
    State(state): State<AppState>,
    operator: OperatorOf,
) -> Result<Response, ApiError> {
    let node = admitted(&state, operator)?;
    Ok(Json(node.status()).into_response())
}

/// A node to put in the place of another.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceNode {
    /// The id of the node that is gone (its disk lost, say).
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub old: usize,
    /// The new node's id: never one the cluster has used.
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub new: usize,
    /// The new node's internal address, `host:port`.
    pub addr: String,
}

/// Replaces a node in the metadata and in every group it was a member of.
/// The operator is checked before the body is read.
pub async fn replace_node(
    State(state): State<AppState>,
    operator: OperatorOf,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let node = admitted(&state, operator)?;
    let ApiJson(req) = ApiJson::<ReplaceNode>::from_request(request, &()).await?;
    if req.new == 0
        || req
            .addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`new` must be above 0 and `addr` a host:port",
        ));
    }
    node.replace_node(req.old as u64, req.new as u64, req.addr)
        .await?;
    Ok(Json(node.status()).into_response())
}

/// A node's copy of a group to drop and fetch again.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairGroup {
    /// The node whose copy is repaired.
    #[serde(deserialize_with = "vectorizer_engine::config::whole")]
    pub node: usize,
    /// The group: `meta` or `shard-<s>`.
    pub group: String,
}

/// Repairs one node's copy of one group (see docs/CLUSTER.md). The
/// operator is checked before the body is read.
pub async fn repair_group(
    State(state): State<AppState>,
    operator: OperatorOf,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    admitted(&state, operator)?;
    let ApiJson(req) = ApiJson::<RepairGroup>::from_request(request, &()).await?;
    let node = state.cluster.clone().expect("admitted: cluster mode");
    // Runs to its end even if this request is cut short (a repair left
    // half done is safe to run again, but better finished).
    let repair = {
        let node = node.clone();
        tokio::spawn(async move { node.repair_group(req.node as u64, &req.group).await })
    };
    repair.await.map_err(|_| ApiError::internal())??;
    Ok(Json(node.status()).into_response())
}
