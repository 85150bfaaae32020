//! The internal listener: Raft's messages between members of a group,
//! commands handed to a leader, and a booting peer's hello. Every call
//! must carry a valid signature with the cluster secret (checked before
//! anything in it is acted on); any other is a 401.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::{Forward, Forwarded, Node};
use crate::sign::{self, Signed};
use crate::types::*;

/// The largest internal call: a snapshot chunk or a forwarded request.
const MAX_BODY: usize = 256 << 20;

/// Starts serving peers at the node's internal address.
pub async fn serve(node: Arc<Node>) -> Result<(), String> {
    let addr = node.options.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding the cluster address {addr}: {e}"))?;
    let app = Router::new()
        .route("/internal/hello", axum::routing::post(hello))
        .route("/internal/raft/{group}/{kind}", axum::routing::post(raft))
        .route("/internal/forward/{group}", axum::routing::post(forward))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(node);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the cluster listener stopped");
        }
    });
    Ok(())
}

/// The signature headers, if all are there.
fn signed(headers: &HeaderMap) -> Option<Signed> {
    let get = |n: &str| Some(headers.get(n)?.to_str().ok()?.to_owned());
    Some(Signed {
        node: get(sign::NODE)?,
        time: get(sign::TIME)?,
        nonce: get(sign::NONCE)?,
        signature: get(sign::SIGNATURE)?,
    })
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": "unsigned or forged internal call"}})),
    )
        .into_response()
}

/// Checks the call's signature and reads its body.
fn verified<T: DeserializeOwned>(
    node: &Node,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    let s = signed(headers).ok_or_else(unauthorized)?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    node.peers
        .signer
        .verify(method.as_str(), path, &s, body)
        .ok_or_else(unauthorized)?;
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(
                serde_json::json!({"error": {"code": "invalid_body", "message": e.to_string()}}),
            ),
        )
            .into_response()
    })
}

fn json<T: Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

async fn hello(
    State(node): State<Arc<Node>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match verified::<()>(&node, &method, &uri, &headers, &body) {
        Ok(()) => json(&node.hello()),
        Err(r) => r,
    }
}

async fn raft(
    State(node): State<Arc<Node>>,
    Path((group, kind)): Path<(u32, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(g) = node.groups.get(&group) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let raft = g.raft.clone();
    match kind.as_str() {
        "append" => match verified(&node, &method, &uri, &headers, &body) {
            Ok(req) => json(&raft.append_entries(req).await),
            Err(r) => r,
        },
        "vote" => match verified(&node, &method, &uri, &headers, &body) {
            Ok(req) => json(&raft.vote(req).await),
            Err(r) => r,
        },
        "snapshot" => match verified(&node, &method, &uri, &headers, &body) {
            Ok(req) => json(&raft.install_snapshot(req).await),
            Err(r) => r,
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn forward(
    State(node): State<Arc<Node>>,
    Path(group): Path<u32>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match verified::<Forward>(&node, &method, &uri, &headers, &body) {
        Ok(fwd) => json(&handle(&node, group, fwd).await),
        Err(r) => r,
    }
}

fn not_leader<E>(e: &RaftError<NodeId, E>) -> Option<Forwarded>
where
    E: openraft::TryAsRef<openraft::error::ForwardToLeader<NodeId, openraft::BasicNode>>
        + std::fmt::Debug,
{
    e.forward_to_leader::<openraft::BasicNode>()
        .map(|f| Forwarded::NotLeader {
            leader: f.leader_id,
        })
}

/// Runs a handed-over command here, if this node leads the group.
pub async fn handle(node: &Node, group: u32, fwd: Forward) -> Forwarded {
    let Some(g) = node.groups.get(&group) else {
        return Forwarded::NotLeader { leader: None };
    };
    let wait = node.options.request_timeout;
    let timed_out = || Forwarded::Unavailable {
        reason: format!("group {group} did not commit in time (no quorum?)"),
    };
    match fwd {
        Forward::Propose { cmd } => {
            match tokio::time::timeout(wait, g.raft.client_write(cmd)).await {
                Err(_) => timed_out(),
                Ok(Ok(r)) => Forwarded::Reply { reply: r.data },
                Ok(Err(e)) => write_error(&e),
            }
        }
        Forward::Read { cmd } => {
            let Some(shard) = &g.shard else {
                return Forwarded::NotLeader { leader: None };
            };
            match tokio::time::timeout(wait, g.raft.ensure_linearizable()).await {
                Err(_) => timed_out(),
                Ok(Err(e)) => read_error(&e),
                Ok(Ok(_)) => Forwarded::Reply {
                    reply: Reply::Shard(shard.run(*cmd, false).await),
                },
            }
        }
        Forward::Replace { old, new, addr } => {
            let raft = g.raft.clone();
            let change = async move {
                raft.add_learner(new, openraft::BasicNode::new(addr), false)
                    .await?;
                let voters: std::collections::BTreeSet<NodeId> = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != old)
                    .chain([new])
                    .collect();
                raft.change_membership(voters, false).await
            };
            match tokio::time::timeout(wait.max(Duration::from_secs(30)), change).await {
                Err(_) => timed_out(),
                Ok(Ok(_)) => Forwarded::Reply { reply: Reply::None },
                Ok(Err(e)) => write_error(&e),
            }
        }
    }
}

fn write_error(e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>) -> Forwarded {
    not_leader(e).unwrap_or_else(|| Forwarded::Unavailable {
        reason: e.to_string(),
    })
}

fn read_error(e: &RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>) -> Forwarded {
    not_leader(e).unwrap_or_else(|| Forwarded::Unavailable {
        reason: e.to_string(),
    })
}
