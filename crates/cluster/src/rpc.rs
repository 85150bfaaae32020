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

/// The largest internal call: a batch of log entries, a snapshot chunk or
/// a forwarded request. A hello is tiny. (Only a call whose head is
/// signed gets its body read at all.)
pub const MAX_BODY: usize = 256 << 20;
const MAX_SMALL_BODY: usize = 64 << 10;
/// The media type of internal calls' bodies (see `codec.rs`).
pub const CONTENT_TYPE: &str = "application/msgpack";
/// Bodies larger than this are decoded and encoded on a blocking thread.
pub const PARSE_IN_PLACE: usize = 64 << 10;

/// Starts serving peers at the node's internal address.
pub async fn serve(node: Arc<Node>) -> Result<(), String> {
    let addr = node.options.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding the cluster address {addr}: {e}"))?;
    let small = DefaultBodyLimit::max(MAX_SMALL_BODY);
    let app = Router::new()
        .route("/internal/hello", axum::routing::post(hello).layer(small))
        .route("/internal/raft/{group}/{kind}", axum::routing::post(raft))
        .route("/internal/forward/{group}", axum::routing::post(forward))
        .route(
            "/internal/reset/{group}",
            axum::routing::post(reset).layer(small),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(node.clone(), head))
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
        to: get(sign::TO)?,
        time: get(sign::TIME)?,
        nonce: get(sign::NONCE)?,
        head: get(sign::HEAD)?,
        signature: get(sign::SIGNATURE)?,
    })
}

/// The declared body length (a signed call always declares it).
fn length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Refuses, before its body is read, a call whose head is not signed for
/// this node: no one without the secret makes a node read a body.
async fn head(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ok = signed(req.headers())
        .zip(length(req.headers()))
        .is_some_and(|(s, length)| {
            let c = sign::Call {
                method: req.method().as_str(),
                path: req.uri().path(),
                length,
            };
            node.peers.signer.verify_head(node.id, &c, &s)
        });
    if !ok {
        return unauthorized();
    }
    next.run(req).await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": "unsigned or forged internal call"}})),
    )
        .into_response()
}

/// Checks the whole call's signature, then decodes its body (a large one
/// on a blocking thread).
async fn verified<T: DeserializeOwned + Send + 'static>(
    node: &Node,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(T, NodeId), Response> {
    let s = signed(headers).ok_or_else(unauthorized)?;
    let c = sign::Call {
        method: method.as_str(),
        path: uri.path(),
        length: length(headers).ok_or_else(unauthorized)?,
    };
    let sender = node
        .peers
        .signer
        .verify(node.id, &c, &s, &body)
        .ok_or_else(unauthorized)?;
    let n = body.len();
    let parse = move || crate::codec::from_bytes(&body);
    let parsed = if n <= PARSE_IN_PLACE {
        parse()
    } else {
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?
    };
    parsed.map(|v| (v, sender)).map_err(|e| {
        // At most one line a minute: a peer running another build would
        // otherwise repeat it at every heartbeat.
        static SAID: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        if said.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *said = Some(std::time::Instant::now());
            tracing::warn!(node = sender, path = uri.path(), error = %e, "a peer's call could not be decoded (does it run the same build?)");
        }
        (
            StatusCode::BAD_REQUEST,
            axum::Json(
                serde_json::json!({"error": {"code": "invalid_body", "message": e.to_string()}}),
            ),
        )
            .into_response()
    })
}

/// Encodes an answer (on a blocking thread: it may hold a large answer).
async fn answer<T: Serialize + Send + 'static>(v: T) -> Response {
    match tokio::task::spawn_blocking(move || crate::codec::to_bytes(&v)).await {
        Ok(Ok(bytes)) => {
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response()
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn hello(
    State(node): State<Arc<Node>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match verified::<()>(&node, &method, &uri, &headers, body).await {
        Ok(((), sender)) => answer(node.hello(sender)).await,
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
    let Some(g) = node.group(group) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let raft = g.raft.clone();
    match kind.as_str() {
        "vote" => match verified(&node, &method, &uri, &headers, body).await {
            Ok((req, _)) => answer(raft.vote(req).await).await,
            Err(r) => r,
        },
        "append" => match verified(&node, &method, &uri, &headers, body).await {
            Ok((req, _)) => answer(raft.append_entries(req).await).await,
            Err(r) => r,
        },
        "snapshot" => match verified(&node, &method, &uri, &headers, body).await {
            Ok((req, _)) => answer(raft.install_snapshot(req).await).await,
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
    match verified::<Forward>(&node, &method, &uri, &headers, body).await {
        Ok((fwd, _)) => answer(handle(&node, group, fwd).await).await,
        Err(r) => r,
    }
}

/// Drops this node's copy of a group, at the repairing node's request.
async fn reset(
    State(node): State<Arc<Node>>,
    Path(group): Path<u32>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match verified::<()>(&node, &method, &uri, &headers, body).await {
        Ok(((), _)) => {
            // To its end even if the caller gives up.
            let n = node.clone();
            let reset =
                tokio::spawn(async move { n.reset_group(group).await.map_err(|e| e.to_string()) });
            let r: Result<(), String> = reset.await.unwrap_or_else(|e| Err(e.to_string()));
            answer(r).await
        }
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

/// How long a repair's membership change may take on the leader (a
/// learner catching up with a large shard included).
pub const MEMBERSHIP_WAIT: Duration = Duration::from_secs(300);

/// Runs a handed-over command here, if this node leads the group.
pub async fn handle(node: &Node, group: u32, fwd: Forward) -> Forwarded {
    let Some(g) = node.group(group) else {
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
            match tokio::time::timeout(wait, g.reads.pass(&g.raft)).await {
                Err(_) => timed_out(),
                Ok(Err(e)) => read_error(&e),
                Ok(Ok(_)) => Forwarded::Reply {
                    reply: Reply::Shard(shard.run(*cmd, false).await),
                },
            }
        }
        Forward::Remove { node: member } => {
            let _one = node.repairs.lock().await;
            let replication = node.with_topology(|t| t.replication);
            crate::membership::remove(g.raft.clone(), member, replication, MEMBERSHIP_WAIT).await
        }
        Forward::Rejoin { node: member, addr } => {
            let _one = node.repairs.lock().await;
            crate::membership::rejoin(g.raft.clone(), member, addr, MEMBERSHIP_WAIT).await
        }
        Forward::Replace { old, new, addr } => {
            let raft = g.raft.clone();
            let voters: Vec<NodeId> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if voters.contains(&new) && !voters.contains(&old) {
                // Done already (a replacement run again).
                return Forwarded::Reply { reply: Reply::None };
            }
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

pub(crate) fn write_error(
    e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> Forwarded {
    not_leader(e).unwrap_or_else(|| Forwarded::Unavailable {
        reason: e.to_string(),
    })
}

fn read_error(e: &RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>) -> Forwarded {
    not_leader(e).unwrap_or_else(|| Forwarded::Unavailable {
        reason: e.to_string(),
    })
}
