//! The server's integration tests: the real router in-process, and the real
//! binary over TCP.

mod api;
mod attacks;
mod backups;
mod bad_requests;
mod cluster;
mod common;
mod config;
mod e2e;
mod hardening;
mod hub_auth;
mod hub_calls;
mod hub_off;
mod mcp;
mod migrate;
mod newcomer;
mod qdrant;
mod quantized;
mod readme;
mod recall;
