//! The `cluster:` section: this node's id, every node's id and internal
//! address, the shard count, the replication factor and Raft's timings.
//! The cluster secret is read from `VECTORIZER_CLUSTER_SECRET` only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, bad};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id (one of `nodes`).
    pub node_id: u64,
    /// Where this node listens for its peers; empty: its own address in
    /// `nodes`.
    pub listen: String,
    /// Every node of the cluster, this one too: `{id, addr}`, with `addr`
    /// the `host:port` its peers reach it at.
    pub nodes: Vec<ClusterNode>,
    /// Shards users are spread over (fixed once the cluster has formed).
    pub shards: u32,
    /// Copies of each shard, on as many nodes.
    pub replication_factor: u32,
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for this long (to twice it) stands
    /// for election.
    pub election_timeout_ms: u64,
    /// Entries after which a group snapshots its state.
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot: a replica further behind
    /// is sent the snapshot instead.
    pub keep_entries: u64,
    /// How long a request waits for its shard's leader and the commit of
    /// its write; past it the answer is 503 (for a write: outcome unknown).
    pub request_timeout_seconds: u64,
    /// The most one write may hold once encoded for the log (vectors as
    /// 4 bytes a number): a larger one is refused with 413
    /// `write_too_large`, to be sent in smaller batches.
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub id: u64,
    pub addr: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: 0,
            listen: String::new(),
            nodes: Vec::new(),
            shards: 8,
            replication_factor: 3,
            heartbeat_ms: 150,
            election_timeout_ms: 600,
            snapshot_entries: 10_000,
            keep_entries: 1_000,
            request_timeout_seconds: 10,
            max_entry_bytes: 8 << 20,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, why: &str| if ok { Ok(()) } else { Err(bad(key, why)) };
        check(
            (1..=64).contains(&self.nodes.len()),
            "cluster.nodes",
            "must name between 1 and 64 nodes",
        )?;
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        check(
            ids.len() == self.nodes.len() && !ids.contains(&0),
            "cluster.nodes",
            "ids must be distinct and above 0",
        )?;
        check(
            self.nodes.iter().all(|n| host_port(&n.addr)),
            "cluster.nodes",
            "each addr must be a host:port",
        )?;
        check(
            ids.contains(&self.node_id),
            "cluster.node_id",
            "must be the id of one of cluster.nodes",
        )?;
        check(
            self.listen.is_empty() || self.listen.parse::<SocketAddr>().is_ok(),
            "cluster.listen",
            "must be an ip:port, or empty",
        )?;
        check(
            (1..=1024).contains(&self.shards),
            "cluster.shards",
            "must be between 1 and 1024",
        )?;
        check(
            self.replication_factor >= 1 && self.replication_factor as usize <= self.nodes.len(),
            "cluster.replication_factor",
            "must be between 1 and the number of nodes",
        )?;
        check(
            (10..=10_000).contains(&self.heartbeat_ms),
            "cluster.heartbeat_ms",
            "must be between 10 and 10000",
        )?;
        check(
            self.election_timeout_ms >= 3 * self.heartbeat_ms && self.election_timeout_ms <= 60_000,
            "cluster.election_timeout_ms",
            "must be at least 3 heartbeats and at most 60000",
        )?;
        check(
            (10..=10_000_000).contains(&self.snapshot_entries),
            "cluster.snapshot_entries",
            "must be between 10 and 10000000",
        )?;
        check(
            self.keep_entries <= 10_000_000,
            "cluster.keep_entries",
            "must be at most 10000000",
        )?;
        check(
            (1..=600).contains(&self.request_timeout_seconds),
            "cluster.request_timeout_seconds",
            "must be between 1 and 600",
        )?;
        check(
            (64 << 10..=64 << 20).contains(&self.max_entry_bytes),
            "cluster.max_entry_bytes",
            "must be between 65536 (64 KiB) and 67108864 (64 MiB)",
        )
    }

    /// The cluster's options for this node, with the secret from the
    /// environment.
    pub fn options(&self, data_dir: &Path) -> Result<vectorizer_cluster::ClusterOptions, String> {
        let secret = std::env::var(vectorizer_cluster::SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "a `cluster:` section needs {} (the secret every node of the cluster shares)",
                    vectorizer_cluster::SECRET_ENV
                )
            })?;
        let own = self
            .nodes
            .iter()
            .find(|n| n.id == self.node_id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        let listen = if self.listen.is_empty() {
            &own
        } else {
            &self.listen
        };
        let listen = std::net::ToSocketAddrs::to_socket_addrs(listen.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cluster address {listen} does not resolve"))?;
        Ok(vectorizer_cluster::ClusterOptions {
            node_id: self.node_id,
            listen,
            nodes: self.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
            shards: self.shards,
            replication: self.replication_factor,
            secret,
            data_dir: data_dir.to_owned(),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            election_timeout: Duration::from_millis(self.election_timeout_ms),
            snapshot_entries: self.snapshot_entries,
            keep_entries: self.keep_entries,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_entry_bytes: self.max_entry_bytes,
        })
    }
}

/// Whether `s` is `host:port` with a port above 0 (the host is resolved
/// at start).
fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}
