//! The engine's error type: one enum, variants named by meaning so that the
//! layers above can map each to a status without looking at messages.

use std::io;

use crate::id::PointId;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("collection `{0}` not found")]
    CollectionNotFound(String),
    #[error("collection `{0}` already exists")]
    CollectionExists(String),
    #[error("invalid collection name: {0}")]
    InvalidName(String),
    #[error("invalid collection config: {0}")]
    InvalidConfig(String),
    #[error("vector dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("invalid vector: {0}")]
    InvalidVector(String),
    #[error("a batch must hold at least one point")]
    EmptyBatch,
    #[error("batch too large: {got} points, at most {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("point id {0} appears more than once in the batch")]
    DuplicateId(PointId),
    #[error("invalid point id: {0}")]
    InvalidId(String),
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Stored data failed a checksum or could not be decoded where no
    /// recovery is possible (a damaged snapshot, not a torn log tail).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the answer would exceed {max} bytes: ask for fewer points, or without vectors")]
    AnswerTooLarge { max: usize },
    /// The request's deadline passed or its caller went away.
    #[error("the request was cancelled or ran out of time")]
    Cancelled,
    /// Another process has the data directory open.
    #[error(
        "the data directory {0} is in use by another process (is a server already running on it?)"
    )]
    InUse(String),
    /// A collection whose files could not be opened (the reason is logged).
    #[error("collection `{0}` cannot be opened: its files are damaged or unreadable")]
    Damaged(String),
    /// The vector index refused an operation it should have accepted.
    #[error("vector index error: {0}")]
    Index(String),
}

impl EngineError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }

    /// True for errors caused by the caller's input (as opposed to a failure
    /// of storage or of the engine itself).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            EngineError::Corrupt(_)
                | EngineError::Io { .. }
                | EngineError::Index(_)
                | EngineError::InUse(_)
                | EngineError::Damaged(_)
        )
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
