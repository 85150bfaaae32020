//! What a node tells its operator of the cluster: the nodes, and for each
//! group it holds its role, term, leader, members and each member's lag.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node::{Forward, Node};
use crate::types::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: NodeId,
    pub nodes: Vec<NodeStatus>,
    pub shards: u32,
    pub replication: u32,
    /// Users with a recorded home shard, and collections in the catalog.
    pub users: usize,
    pub collections: usize,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    /// `meta` or `shard-<s>`.
    pub group: String,
    /// `leader`, `follower`, `candidate` or `learner`, on this node.
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub members: Vec<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last entry of this node's latest snapshot, and the last entry
    /// removed from its log.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader: entries each member is behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<BTreeMap<NodeId, u64>>,
    /// Why the group stopped on this node (its role is then `failed`);
    /// `vectorizer cluster repair-group` fetches it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

pub fn group_name(g: u32) -> String {
    if g == META_GROUP {
        "meta".into()
    } else {
        format!("shard-{}", g - 1)
    }
}

impl Node {
    pub fn status(&self) -> ClusterStatus {
        let topology = self.topology();
        let meta = self.meta.read();
        let groups = self
            .groups
            .iter()
            .map(|(g, slot)| {
                let failed = slot.failure();
                let Some(group) = slot.get() else {
                    return GroupStatus {
                        group: group_name(*g),
                        role: "failed".into(),
                        term: 0,
                        leader: None,
                        members: Vec::new(),
                        last_log_index: None,
                        applied_index: None,
                        snapshot_index: None,
                        purged_index: None,
                        lag: None,
                        failed,
                    };
                };
                let m = group.raft.metrics().borrow().clone();
                let last = m.last_log_index;
                let lag = m.replication.as_ref().map(|r| {
                    r.iter()
                        .map(|(id, matched)| {
                            let at = matched.map_or(0, |l| l.index);
                            (*id, last.unwrap_or(0).saturating_sub(at))
                        })
                        .collect()
                });
                GroupStatus {
                    group: group_name(*g),
                    role: if failed.is_some() {
                        "failed".into()
                    } else {
                        format!("{:?}", m.state).to_lowercase()
                    },
                    term: m.current_term,
                    leader: m.current_leader,
                    members: m.membership_config.membership().voter_ids().collect(),
                    last_log_index: last,
                    applied_index: m.last_applied.map(|l| l.index),
                    snapshot_index: m.snapshot.map(|l| l.index),
                    purged_index: m.purged.map(|l| l.index),
                    lag,
                    failed,
                }
            })
            .collect();
        ClusterStatus {
            node: self.id,
            nodes: topology
                .nodes
                .iter()
                .map(|(id, addr)| NodeStatus {
                    id: *id,
                    addr: addr.clone(),
                })
                .collect(),
            shards: topology.shards,
            replication: topology.replication,
            users: meta.placement.len(),
            collections: meta.catalog.values().map(|c| c.len()).sum(),
            groups,
        }
    }

    /// Snapshots every shard's collections (for shutdown).
    pub fn flush(&self) -> Result<(), vectorizer_service::ServiceError> {
        for g in self.groups.values().filter_map(|s| s.get()) {
            if let Some(s) = &g.shard {
                s.service.flush()?;
            }
        }
        Ok(())
    }

    /// Raft's figures per group, for metrics: (group, is leader, term,
    /// last log index, applied index).
    pub fn raft_figures(&self) -> Vec<(String, bool, u64, u64, u64)> {
        self.groups
            .iter()
            .filter_map(|(g, slot)| Some((g, slot.get()?)))
            .map(|(g, group)| {
                let m = group.raft.metrics().borrow().clone();
                (
                    group_name(*g),
                    m.current_leader == Some(self.id),
                    m.current_term,
                    m.last_log_index.unwrap_or(0),
                    m.last_applied.map_or(0, |l| l.index),
                )
            })
            .collect()
    }

    /// Puts node `new` (at `addr`) in the place of node `old`: in the
    /// metadata's topology, then in every group `old` was a member of.
    pub async fn replace_node(
        &self,
        old: NodeId,
        new: NodeId,
        addr: String,
    ) -> Result<(), vectorizer_service::ServiceError> {
        // The groups of `old`'s slot: `new`'s already, if a replacement cut
        // short is run again (each group's change is skipped where done).
        let topology = self.topology();
        let slot = if topology.addr(old).is_some() {
            old
        } else {
            new
        };
        let groups = topology.groups_of(slot);
        let cmd = Command::Meta(MetaCommand::ReplaceNode {
            old,
            new,
            addr: addr.clone(),
        });
        match self.submit(META_GROUP, Forward::Propose { cmd }).await? {
            Reply::Meta(r) => {
                r?;
            }
            other => {
                return Err(vectorizer_service::ServiceError::Internal(format!(
                    "the metadata group answered {other:?}"
                )));
            }
        }
        for g in groups {
            let fwd = Forward::Replace {
                old,
                new,
                addr: addr.clone(),
            };
            self.submit(g, fwd).await?;
        }
        Ok(())
    }
}
