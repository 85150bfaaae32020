//! What the Raft groups replicate: the commands of the metadata group and
//! of the shard groups, their replies, and the type configuration both
//! kinds of group share (one network and one log store serve all groups).

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vectorizer_service::quota::PlanLimits;
use vectorizer_service::{Answer, Caller, Op};

use crate::wire::WireError;

/// A node's id, as in the `cluster:` config section.
pub type NodeId = u64;

/// The metadata group's id; shard `s` is group `s + 1`.
pub const META_GROUP: u32 = 0;

openraft::declare_raft_types!(
    /// The type configuration of every group.
    pub Tc:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<Tc>;
pub type Entry = openraft::Entry<Tc>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Membership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::storage::Snapshot<Tc>;

/// A replicated command: for the metadata group, or for one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "group", rename_all = "snake_case")]
pub enum Command {
    Meta(MetaCommand),
    Shard(Box<ShardCommand>),
    /// What this node's log holds where an entry's payload cannot be
    /// decoded (see `codec.rs`): made only when reading the log, never
    /// proposed, sent or accepted from a peer; applying it stops the group.
    #[serde(skip)]
    Undecodable {
        index: u64,
        reason: String,
    },
}

/// A change of the cluster's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum MetaCommand {
    /// Records the topology once (the first one applied wins).
    Init(crate::topology::Topology),
    /// Adds a collection to the catalog, if the owner's plan allows one
    /// more (checked here, when applied, against the catalog itself).
    CreateCollection {
        owner: Uuid,
        name: String,
        /// The owner's home shard, as the proposer computed it (recorded
        /// at the owner's first collection).
        shard: u32,
        limits: Option<PlanLimits>,
    },
    /// Removes a collection from the catalog: the entry `token` names, or
    /// whatever entry the name has without one.
    DropCollection {
        owner: Uuid,
        name: String,
        token: Option<u64>,
    },
    /// Replaces a node by another (a node that lost its disk comes back
    /// under a new id).
    ReplaceNode {
        old: NodeId,
        new: NodeId,
        addr: String,
    },
}

/// An operation on a shard's data, for the user `owner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardCommand {
    /// The user whose data this is (the nil id for the single-tenant
    /// caller): it must match the caller and live on this shard.
    pub owner: Uuid,
    pub caller: Caller,
    pub op: Op,
    /// The plan limits the write is held to (as the Hub gave them where
    /// the request arrived); none with the Hub off.
    pub limits: Option<PlanLimits>,
    /// Metadata a create adds to the collection (the Hub's ids).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What applying a command answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", content = "body", rename_all = "snake_case")]
pub enum Reply {
    /// Membership changes and other entries with no answer.
    None,
    Meta(Result<MetaReply, WireError>),
    Shard(ShardReply),
}

/// A shard's answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReply {
    pub result: Result<Answer, WireError>,
    /// What a delete removed, as its metadata said: the Hub's id (whose
    /// deletion the node that took the request owes the Hub) and the
    /// catalog entry's token.
    #[serde(default)]
    pub deleted: Option<Deleted>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deleted {
    pub hub_id: Option<Uuid>,
    pub token: Option<u64>,
}

/// The collection metadata key holding its catalog entry's token.
pub const TOKEN_KEY: &str = "cluster_catalog_token";

/// The metadata group's answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetaReply {
    Done,
    /// The catalog took the collection, under this token (the entry's log
    /// index): only a drop naming it removes this entry.
    Created {
        token: u64,
    },
    /// The catalog already held the collection, under this token.
    Exists {
        token: u64,
    },
}
