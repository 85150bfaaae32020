//! A cluster node: its Raft groups (the metadata group and the shards it
//! holds), their start, and the hand-off of a command to a group's leader,
//! here or on another node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vectorizer_service::{Service, ServiceError};

use crate::group::{Opener, Slot};
use crate::meta::MetaSm;
use crate::net::{CallError, Peers};
use crate::sign::Signer;
use crate::topology::Topology;
use crate::types::*;

/// The `cluster:` section, resolved.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    /// Where this node listens for its peers.
    pub listen: SocketAddr,
    /// Every node (this one too), in slot order.
    pub nodes: Vec<(NodeId, String)>,
    pub shards: u32,
    pub replication: u32,
    pub secret: String,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// Entries after which a group snapshots its state, and entries kept
    /// in the log behind a snapshot (a replica further behind is sent the
    /// snapshot).
    pub snapshot_entries: u64,
    pub keep_entries: u64,
    /// How long a request waits for a leader and its commit.
    pub request_timeout: Duration,
    /// The most one log entry may hold once encoded: a larger write is
    /// refused (413) where it arrives, so no entry can outlast Raft's
    /// timers while it is replicated.
    pub max_entry_bytes: usize,
}

/// A command handed to a group's leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Forward {
    /// Replicate and apply.
    Propose { cmd: Command },
    /// Read a shard on its leader, once the leader knows it still leads.
    Read { cmd: Box<ShardCommand> },
    /// Replace a member of the group: `new` (at `addr`) for `old`.
    Replace {
        old: NodeId,
        new: NodeId,
        addr: String,
    },
    /// Take a member out of the group (to repair its copy).
    Remove { node: NodeId },
    /// Add a member back: as a learner until it has caught up, then as a
    /// voter.
    Rejoin { node: NodeId, addr: String },
}

/// What a node answers a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Forwarded {
    Reply {
        reply: Reply,
    },
    /// Not this node: the leader it knows, if any.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The leader could not finish (no quorum in time): for a write, the
    /// outcome is unknown.
    Unavailable {
        reason: String,
    },
}

/// What a node says of itself to a booting peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub node: NodeId,
    /// Whether its metadata group has committed anything (the cluster
    /// has formed).
    pub formed: bool,
    /// The metadata group's voters.
    pub members: Vec<NodeId>,
    /// If this node leads the metadata group: the last entry the asking
    /// node is known to hold (some: the asker had data once).
    #[serde(default)]
    pub matched: Option<u64>,
}

pub struct Node {
    pub id: NodeId,
    pub options: ClusterOptions,
    /// The topology as configured (the metadata group's, once recorded,
    /// is the one in force).
    pub configured: Topology,
    pub meta: MetaSm,
    pub groups: BTreeMap<u32, Slot>,
    /// Raft's configuration, shared by every group.
    raft_config: Arc<openraft::Config>,
    pub peers: Arc<Peers>,
    /// The node's own service (Hub, quotas, usage outbox).
    pub main: Weak<Service>,
    /// Held while this node, as a group's leader, changes the group's
    /// members for a repair, and while it drops its own copy of a group:
    /// one at a time.
    pub(crate) repairs: tokio::sync::Mutex<()>,
    /// Leaders of groups this node does not hold, as last heard.
    hints: Mutex<HashMap<u32, NodeId>>,
}

fn raft_config(o: &ClusterOptions) -> Result<Arc<openraft::Config>, String> {
    let ms = |d: Duration| d.as_millis() as u64;
    let c = openraft::Config {
        cluster_name: "vectorizer".into(),
        heartbeat_interval: ms(o.heartbeat),
        // openraft waits its lease (the maximum) plus a random timeout in
        // [min, max) after it last heard a leader: a narrow range keeps a
        // failover near 2.5 election timeouts instead of 4 to 6.
        election_timeout_min: ms(o.election_timeout),
        election_timeout_max: ms(o.election_timeout) * 3 / 2,
        // Batches stay small enough to cross within Raft's timers; the
        // network shrinks them further by bytes (see `net.rs`).
        max_payload_entries: 64,
        install_snapshot_timeout: ms(o.request_timeout).max(1000),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(o.snapshot_entries),
        max_in_snapshot_log_to_keep: o.keep_entries,
        ..Default::default()
    };
    c.validate().map(Arc::new).map_err(|e| e.to_string())
}

/// Gives a reply from another node the weight of its wire form, so that
/// the adapter writes a large answer off the async runtime as it would
/// have here.
fn weigh(f: Forwarded, bytes: usize) -> Forwarded {
    match f {
        Forwarded::Reply {
            reply: Reply::Shard(mut r),
        } => {
            if let Ok(a) = &mut r.result {
                a.set_wire_weight(bytes);
            }
            Forwarded::Reply {
                reply: Reply::Shard(r),
            }
        }
        other => other,
    }
}

impl Node {
    /// Opens the groups this node takes part in, starts serving peers at
    /// `options.listen`, forms the cluster if none has formed yet, and
    /// routes `main`'s operations through it.
    pub async fn start(options: ClusterOptions, main: &Arc<Service>) -> Result<Arc<Node>, String> {
        let signer = Arc::new(Signer::new(&options.secret)?);
        let configured = Topology {
            nodes: options.nodes.clone(),
            shards: options.shards,
            replication: options.replication,
        };
        if configured.addr(options.node_id).is_none() {
            return Err(format!(
                "`cluster.node_id` {} is not among `cluster.nodes`",
                options.node_id
            ));
        }
        let raft_dir = options.data_dir.join("raft");
        std::fs::create_dir_all(&raft_dir).map_err(|e| format!("{}: {e}", raft_dir.display()))?;
        let peers = Arc::new(Peers::new(options.node_id, signer));
        let config = raft_config(&options)?;
        let meta = MetaSm::open(raft_dir.join("meta-snapshot.json"))?;
        let opener = Opener {
            node: options.node_id,
            data_dir: options.data_dir.clone(),
            shards: options.shards,
            config: config.clone(),
            peers: &peers,
            meta: &meta,
        };
        let mut groups = BTreeMap::new();
        let mut pristine = true;
        for g in configured.groups_of(options.node_id) {
            // A group that cannot start stops alone; the node serves the
            // others, and the operator repairs it (docs/CLUSTER.md).
            let slot = match opener.open(g, main, None, None).await {
                Ok(group) => {
                    pristine &= group.log.is_pristine()?;
                    Slot::running(group)
                }
                Err(e) => {
                    tracing::error!(group = %crate::status::group_name(g), error = %e, "a raft group could not start on this node; repair it with `vectorizer cluster repair-group`");
                    pristine = false;
                    Slot::failed(e)
                }
            };
            groups.insert(g, slot);
        }
        let node = Arc::new(Node {
            id: options.node_id,
            configured,
            meta,
            groups,
            raft_config: config,
            peers,
            main: Arc::downgrade(main),
            hints: Mutex::default(),
            repairs: Default::default(),
            options,
        });
        // Formed (or not) before this node answers its peers, so that no
        // leader has yet met the new storage when it is asked about it.
        node.form(pristine).await?;
        crate::rpc::serve(node.clone()).await?;
        node.clone().spawn_init();
        crate::usage::spawn(node.clone());
        main.attach_cluster(Arc::new(crate::route::Router(node.clone())));
        Ok(node)
    }

    /// Initializes every group with the configured members, unless the
    /// cluster has formed already (then this node is brought up to date by
    /// the leaders). Several nodes initializing with one configuration is
    /// safe: they write the same first entry.
    async fn form(&self, pristine: bool) -> Result<(), String> {
        if !pristine {
            return Ok(());
        }
        let mut hellos = Vec::new();
        for (id, addr) in &self.configured.nodes {
            if *id == self.id {
                continue;
            }
            let hello: Result<(Hello, _), _> = self
                .peers
                .call(*id, addr, "/internal/hello", (), Duration::from_secs(2))
                .await;
            if let Ok((h, _)) = hello {
                hellos.push(h);
            }
        }
        if hellos.iter().any(|h| h.formed) {
            if !hellos.iter().any(|h| h.members.contains(&self.id)) {
                return Err(format!(
                    "the cluster has formed without node {}: add it with `vectorizer cluster replace-node` first",
                    self.id
                ));
            }
            if hellos.iter().any(|h| h.matched.is_some_and(|i| i > 0)) {
                // Raft's safety rests on a node never forgetting its vote:
                // one that lost it must not come back as itself.
                return Err(format!(
                    "node {}'s storage is empty, but the cluster's leader knows it held entries: its disk was lost; bring it back under a new id with `vectorizer cluster replace-node` (docs/CLUSTER.md)",
                    self.id
                ));
            }
            tracing::warn!(
                node = self.id,
                "this node's storage is new but the cluster has formed: joining through the leaders"
            );
            return Ok(());
        }
        for (g, slot) in &self.groups {
            let Some(group) = slot.get() else { continue };
            let members: BTreeMap<NodeId, openraft::BasicNode> = self
                .configured
                .members(*g)
                .into_iter()
                .filter_map(|id| Some((id, openraft::BasicNode::new(self.configured.addr(id)?))))
                .collect();
            match group.raft.initialize(members).await {
                Ok(()) => tracing::info!(group = g, "raft group initialized"),
                Err(e) if e.api_error().is_some() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Records the topology in the metadata group once a leader is there.
    fn spawn_init(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                if self.meta.read().topology.is_some() {
                    return;
                }
                let cmd = Command::Meta(MetaCommand::Init(self.configured.clone()));
                if self
                    .submit(META_GROUP, Forward::Propose { cmd })
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// Group `g` as it runs on this node, if it does.
    pub fn group(&self, g: u32) -> Option<Arc<crate::group::Group>> {
        self.groups.get(&g)?.get()
    }

    /// What opens this node's groups.
    pub(crate) fn opener(&self) -> Opener<'_> {
        Opener {
            node: self.id,
            data_dir: self.options.data_dir.clone(),
            shards: self.options.shards,
            config: self.raft_config.clone(),
            peers: &self.peers,
            meta: &self.meta,
        }
    }

    /// The topology in force.
    pub fn topology(&self) -> Topology {
        self.with_topology(Topology::clone)
    }

    /// `f` of the topology in force, without copying it (for the paths
    /// every request takes).
    pub fn with_topology<R>(&self, f: impl FnOnce(&Topology) -> R) -> R {
        f(self
            .meta
            .read()
            .topology
            .as_ref()
            .unwrap_or(&self.configured))
    }

    pub fn hello(&self, asker: NodeId) -> Hello {
        let matched = self.group(META_GROUP).and_then(|g| {
            let m = g.raft.metrics().borrow().clone();
            m.replication?
                .get(&asker)
                .copied()
                .flatten()
                .map(|l| l.index)
        });
        let m = self.meta.read();
        Hello {
            node: self.id,
            formed: m.last_applied.is_some_and(|l| l.index > 0),
            members: m.membership.membership().voter_ids().collect(),
            matched,
        }
    }

    /// The node to ask first for group `g`'s leader.
    fn leader_hint(&self, g: u32, avoid: &BTreeSet<NodeId>) -> Option<NodeId> {
        let local = self
            .group(g)
            .and_then(|grp| grp.raft.metrics().borrow().current_leader);
        let cached = self
            .hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&g)
            .copied();
        local
            .into_iter()
            .chain(cached)
            .chain(self.with_topology(|t| t.members(g)))
            .find(|n| !avoid.contains(n))
    }

    fn remember(&self, g: u32, leader: NodeId) {
        self.hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g, leader);
    }

    /// Refuses, where it arrives, a command that would not survive its own
    /// encoding or that is larger than one entry may be: no replica ever
    /// meets an entry it cannot decode, and no entry outlasts Raft's timers.
    async fn checked(&self, fwd: Forward) -> Result<Forward, ServiceError> {
        let Forward::Propose { cmd } = fwd else {
            return Ok(fwd);
        };
        let max = self.options.max_entry_bytes;
        let (cmd, size) = tokio::task::spawn_blocking(move || {
            let size = crate::codec::round_trip(&cmd, max);
            (cmd, size)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        match size {
            Err(crate::codec::Unfit::Unencodable(e)) => {
                tracing::warn!(error = %e, "a request was refused: it does not survive its own encoding");
                Err(ServiceError::invalid(
                    "unreplicable_request",
                    "this request cannot be replicated: it does not survive its own encoding for the log",
                ))
            }
            Err(crate::codec::Unfit::TooLarge(n)) => Err(ServiceError::TooLarge {
                code: "write_too_large",
                message: format!(
                    "in cluster mode one write holds at most {max} bytes once encoded (`cluster.max_entry_bytes`), and this one holds {n}: send it in smaller batches"
                ),
            }),
            Ok(_) => Ok(Forward::Propose { cmd }),
        }
    }

    /// Hands `fwd` to group `g`'s leader, wherever it is, and waits for its
    /// answer. A write is retried only where it surely was not applied
    /// (the node was not the leader, or was never reached); a write sent
    /// without an answer is unknown, and reported as unavailable (503).
    pub async fn submit(&self, g: u32, fwd: Forward) -> Result<Reply, ServiceError> {
        let fwd = self.checked(fwd).await?;
        // A membership change waits on the leader for a learner to catch up.
        let wait = match fwd {
            Forward::Remove { .. } | Forward::Rejoin { .. } | Forward::Replace { .. } => {
                crate::rpc::MEMBERSHIP_WAIT + Duration::from_secs(10)
            }
            _ => self.options.request_timeout,
        };
        let deadline = Instant::now() + wait;
        let is_read = matches!(fwd, Forward::Read { .. });
        let mut avoid = BTreeSet::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ServiceError::Unavailable(format!(
                    "no leader of group {g} answered in time"
                )));
            }
            let Some(target) = self.leader_hint(g, &avoid) else {
                avoid.clear();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let answer = if target == self.id {
                Ok(crate::rpc::handle(self, g, fwd.clone()).await)
            } else {
                match self.with_topology(|t| t.addr(target).map(str::to_owned)) {
                    Some(addr) => {
                        let path = format!("/internal/forward/{g}");
                        self.peers
                            .call(target, &addr, &path, fwd.clone(), left)
                            .await
                            .map(|(f, bytes)| weigh(f, bytes))
                    }
                    None => Err(CallError::Unreachable(format!(
                        "node {target} has no address"
                    ))),
                }
            };
            match answer {
                Ok(Forwarded::Reply { reply }) => {
                    if target != self.id {
                        self.remember(g, target);
                    }
                    return Ok(reply);
                }
                Ok(Forwarded::NotLeader { leader }) => {
                    avoid.insert(target);
                    match leader {
                        Some(l) if !avoid.contains(&l) => self.remember(g, l),
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Ok(Forwarded::Unavailable { reason }) => {
                    return Err(ServiceError::Unavailable(reason));
                }
                Err(CallError::Unreachable(_)) => {
                    avoid.insert(target);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(CallError::NoAnswer(m)) if is_read => {
                    tracing::debug!(node = target, reason = %m, "a read went unanswered; asking another node");
                    avoid.insert(target);
                }
                Err(e) => {
                    return Err(ServiceError::Unavailable(format!(
                        "the outcome is unknown: {e}"
                    )));
                }
            }
        }
    }
}
