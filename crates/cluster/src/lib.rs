//! Vectorizer's cluster mode. Users' data is spread over shards, each
//! replicated by a Raft group (openraft) whose state machine is the engine
//! behind a service of its own; one more group holds the metadata (the
//! topology, users' home shards, the collection catalog, plan limits). A
//! node routes every operation of its service to the caller's home shard,
//! forwarding it to the shard's leader with the caller signed in.
//! See docs/CLUSTER.md.

// Storage functions return openraft's `StorageError`, which openraft's
// traits fix; it is large, and boxing it would only convert back.
#![allow(clippy::result_large_err)]

pub mod admin;
mod applied;
mod barrier;
pub mod codec;
pub mod group;
pub mod log;
pub mod membership;
pub mod meta;
pub mod net;
pub mod node;
mod recent;
mod repair;
mod replicate;
pub mod route;
pub mod rpc;
pub mod shard;
pub mod sign;
mod snapshot;
pub mod status;
pub mod topology;
pub mod types;
mod usage;
pub mod wire;

pub use node::{ClusterOptions, Node};
pub use sign::SECRET_ENV;
