//! A local HiveHub: the control plane's HTTP contract
//! (`docs/HUB_CONTRACT.md`) implemented in full for development and
//! tests: plans, users, access keys (stored only as SHA-256 hashes), the
//! collection registry, quota decisions, a usage ledger and MCP server
//! registrations, persisted to one JSON file; and Vectorizer's client of
//! the Hub (`client`).

pub mod client;
pub mod model;
pub mod server;
pub mod store;
pub mod time;

pub use client::{HubClient, HubClientConfig, HubError, HubHealth, Secret};
/// The SDK's request and answer types, as the client returns them.
pub use hivehub_internal_sdk::models as sdk;
pub use server::{SERVICE_KEY_ENV, router};
pub use store::{HubStore, StoreError};
