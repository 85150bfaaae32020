//! Calls between nodes: signed MessagePack (`codec.rs`) over HTTP to a
//! peer's internal address,
//! and openraft's network for every group on top of them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sign::{self, Signer};
use crate::types::{NodeId, Tc};

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// It never reached the peer (nothing was done there).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// It was sent but no answer came: the outcome is unknown.
    #[error("no answer from the peer: {0}")]
    NoAnswer(String),
    /// The peer refused it (a signature it did not accept, say).
    #[error("the peer refused the call with status {0}")]
    Refused(u16),
}

/// This node's client of its peers.
pub struct Peers {
    pub me: NodeId,
    pub signer: Arc<Signer>,
    http: reqwest::Client,
    /// Peers last found unreachable: said once when it happens, once when
    /// it ends (a peer still booting is no operator's concern).
    unreachable: Mutex<HashSet<NodeId>>,
}

impl Peers {
    pub fn new(me: NodeId, signer: Arc<Signer>) -> Peers {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client with defaults");
        Peers {
            me,
            signer,
            http,
            unreachable: Mutex::default(),
        }
    }

    fn unreachable(&self) -> std::sync::MutexGuard<'_, HashSet<NodeId>> {
        self.unreachable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts `req` to `path` on node `to` at `addr`, signed, and reads
    /// the answer; with it, the answer's size in bytes. Large bodies
    /// are encoded and decoded on a blocking thread.
    pub async fn call<Q: Serialize + Send + 'static, A: DeserializeOwned + Send + 'static>(
        &self,
        to: NodeId,
        addr: &str,
        path: &str,
        req: Q,
        timeout: Duration,
    ) -> Result<(A, usize), CallError> {
        let body = tokio::task::spawn_blocking(move || crate::codec::to_bytes(&req))
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        self.send(to, addr, path, body, timeout).await
    }

    /// Posts the encoded `body` to `path` on node `to`, signed, and reads
    /// the answer, as [`Peers::call`] does.
    pub async fn send<A: DeserializeOwned + Send + 'static>(
        &self,
        to: NodeId,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(A, usize), CallError> {
        let s = self.signer.sign(self.me, to, "POST", path, &body);
        let sent = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(sign::NODE, s.node)
            .header(sign::TO, s.to)
            .header(sign::TIME, s.time)
            .header(sign::NONCE, s.nonce)
            .header(sign::HEAD, s.head)
            .header(sign::SIGNATURE, s.signature)
            .header("content-type", crate::rpc::CONTENT_TYPE)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(e) if e.is_connect() => {
                if self.unreachable().insert(to) {
                    tracing::info!(node = to, addr, "a peer is not reachable (yet)");
                }
                return Err(CallError::Unreachable(e.to_string()));
            }
            Err(e) => return Err(CallError::NoAnswer(e.to_string())),
        };
        if self.unreachable().remove(&to) {
            tracing::info!(node = to, addr, "a peer is reachable again");
        }
        if !answer.status().is_success() {
            return Err(CallError::Refused(answer.status().as_u16()));
        }
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| CallError::NoAnswer(e.to_string()))?;
        let n = bytes.len();
        let parse = move || crate::codec::from_bytes(&bytes);
        let parsed = if n <= crate::rpc::PARSE_IN_PLACE {
            parse()
        } else {
            tokio::task::spawn_blocking(parse)
                .await
                .map_err(|e| CallError::NoAnswer(e.to_string()))?
        };
        parsed
            .map(|a| (a, n))
            .map_err(|e| CallError::NoAnswer(e.to_string()))
    }
}

/// Openraft's network for group `group`.
pub struct Network {
    pub group: u32,
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<Tc> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Conn {
        Conn {
            group: self.group,
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            stream: Default::default(),
        }
    }
}

/// A connection to one member of a group.
pub struct Conn {
    group: u32,
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    /// Its AppendEntries calls (see `replicate.rs`): only this stream's
    /// retries join them.
    stream: crate::replicate::Stream,
}

impl Conn {
    async fn rpc<
        Q: Serialize + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        E: std::error::Error + DeserializeOwned + Send + 'static,
    >(
        &self,
        kind: &str,
        req: Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<NodeId, BasicNode, E>> {
        let path = format!("/internal/raft/{}/{kind}", self.group);
        let (answer, _): (Result<A, E>, _) = self
            .peers
            .call(self.target, &self.addr, &path, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable(m) => {
                    RPCError::Unreachable(Unreachable::new(&AnyError::error(m)))
                }
                // Over the receiver's body limit: openraft sends fewer
                // entries at a time.
                CallError::Refused(413) => {
                    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
                }
                other => RPCError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<Tc> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Tc>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let to = (self.group, self.target, self.addr.as_str());
        self.stream
            .append(&self.peers, to, rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Tc>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("snapshot", rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("vote", rpc, &option).await
    }
}
