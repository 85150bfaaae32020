//! The engine's integration tests: real files in temporary directories,
//! real child processes for the crash tests.

mod checkpoint;
mod common;
mod concurrency;
mod crash;
mod filter_model;
mod filtered;
mod model;
mod payloads;
mod quantized;
mod recall;
mod residency;
mod tuning;
