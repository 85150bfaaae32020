//! Vectorizer's service layer: the operations the HTTP and MCP adapters
//! expose, over the engine. Every entry point takes the [`Caller`] it acts
//! for, so no adapter can reach data without saying whose request it is.

pub mod aliases;
pub mod backup;
pub mod caller;
pub mod cluster;
pub mod drift;
pub mod error;
pub mod migrate;
pub mod model;
mod points;
pub mod quota;
mod scheduler;
pub mod service;
pub mod share;
pub mod usage;

pub use caller::{Caller, Permission, Tenant};
pub use cluster::{Answer, ClusterRouter, Op};
pub use error::ServiceError;
pub use service::{Call, Service, ServiceOptions};
pub use share::ShareOptions;
