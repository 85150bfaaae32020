//! Where things live: which nodes hold a shard's replicas, and which shard
//! is a user's home. Both are functions of the configuration alone, so
//! every node computes the same answer; the metadata group records them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::types::{META_GROUP, NodeId};

/// The cluster's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Every node's id and internal address, in slot order: a node that
    /// replaces another takes its slot, and so its replicas.
    pub nodes: Vec<(NodeId, String)>,
    pub shards: u32,
    /// Replicas of each shard.
    pub replication: u32,
}

impl Topology {
    /// The nodes that hold shard `s`: `replication` consecutive nodes in
    /// the order of `nodes`, starting at the `s`-th (so shards spread over
    /// nodes).
    pub fn replicas(&self, shard: u32) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.0).collect();
        let n = ids.len();
        let take = (self.replication as usize).min(n);
        (0..take).map(|i| ids[(shard as usize + i) % n]).collect()
    }

    /// The members of group `g`: every node for the metadata group, the
    /// shard's replicas for a shard group.
    pub fn members(&self, group: u32) -> Vec<NodeId> {
        if group == META_GROUP {
            self.nodes.iter().map(|n| n.0).collect()
        } else {
            self.replicas(group - 1)
        }
    }

    /// Node `id`'s internal address.
    pub fn addr(&self, id: NodeId) -> Option<&str> {
        self.nodes.iter().find(|n| n.0 == id).map(|n| n.1.as_str())
    }

    /// Node `new` (at `addr`) takes the slot of node `old` (done already:
    /// true again, so that a replacement cut short can be run again).
    pub fn replace(&mut self, old: NodeId, new: NodeId, addr: &str) -> bool {
        if self.addr(new).is_some() {
            return self.addr(old).is_none();
        }
        match self.nodes.iter_mut().find(|n| n.0 == old) {
            Some(slot) => {
                *slot = (new, addr.to_owned());
                true
            }
            None => false,
        }
    }

    /// The groups node `id` takes part in.
    pub fn groups_of(&self, id: NodeId) -> Vec<u32> {
        (0..=self.shards)
            .filter(|g| self.members(*g).contains(&id))
            .collect()
    }
}

/// A user's home shard: a stable hash of the user id (SHA-256, not a
/// hasher that may change between builds), modulo the shard count.
pub fn shard_of(user: &Uuid, shards: u32) -> u32 {
    let d = Sha256::digest(user.as_bytes());
    let h = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    (h % shards.max(1) as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(shards: u32, replication: u32) -> Topology {
        Topology {
            nodes: (1..=3).map(|i| (i, format!("127.0.0.1:{i}"))).collect(),
            shards,
            replication,
        }
    }

    #[test]
    fn replicas_spread_and_stay_within_the_nodes() {
        let t = three(4, 2);
        assert_eq!(t.replicas(0), vec![1, 2]);
        assert_eq!(t.replicas(1), vec![2, 3]);
        assert_eq!(t.replicas(2), vec![3, 1]);
        assert_eq!(t.members(META_GROUP), vec![1, 2, 3]);
        assert_eq!(t.groups_of(1), vec![0, 1, 3, 4]);
        let t = three(2, 5);
        assert_eq!(t.replicas(1), vec![2, 3, 1]);
        let mut t = three(4, 2);
        assert!(t.replace(2, 9, "127.0.0.1:9"));
        assert_eq!(t.replicas(0), vec![1, 9]);
        assert!(t.replace(2, 9, "127.0.0.1:9"), "run again");
        assert!(!t.replace(2, 10, "x"), "node 2 is gone");
        assert!(!t.replace(1, 3, "x"), "node 3 is a member already");
    }

    #[test]
    fn a_user_always_has_the_same_home() {
        let u = Uuid::from_u128(42);
        let s = shard_of(&u, 8);
        assert!(s < 8);
        assert_eq!(shard_of(&u, 8), s);
        let homes: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&Uuid::from_u128(i), 8)).collect();
        assert_eq!(homes.len(), 8, "users spread over every shard");
    }
}
