//! Vectorizer's engine: durable collections of vectors with JSON payloads,
//! HNSW search with payload filters. It knows nothing of HTTP or tenants:
//! a collection carries a string metadata map that it stores but does not
//! interpret.

pub mod catalog;
mod codec;
pub mod collection;
pub mod config;
pub mod database;
pub mod deadline;
pub mod distance;
pub mod error;
pub mod filter;
mod filter_parse;
mod filter_serde;
pub mod fsutil;
pub mod id;
mod index;
pub mod linker;
pub mod payload;
mod payload_index;
mod simd;
mod snapshot;
pub mod wal;

pub use collection::{
    CollectionInfo, EngineOptions, PayloadChange, RecallReport, RecallSource, Record, ScoredPoint,
    SearchRequest, Selection, With,
};
pub use config::{CollectionConfig, HnswParams, Limits, Metric, Quantization, QuantizationKind};
pub use database::{Database, Listing, Residency, Staged, Usage};
pub use deadline::Deadline;
pub use error::EngineError;
pub use filter::Filter;
pub use id::PointId;
pub use snapshot::points_in;
pub use wal::Point;
