//! The service's error type: variants by meaning, each with a stable
//! snake_case code. The HTTP layer maps them to statuses in one match.

use vectorizer_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("collection `{0}` not found")]
    CollectionNotFound(String),
    #[error("point {0} not found")]
    PointNotFound(String),
    #[error("alias `{0}` not found")]
    AliasNotFound(String),
    /// No backup of the caller's has this id (another user's has none).
    #[error("backup `{0}` not found")]
    BackupNotFound(String),
    #[error("collection `{0}` already exists")]
    CollectionExists(String),
    /// Malformed input: the request cannot be read as asked.
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// Well-formed input that the data refuses (wrong dimension, ...).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// The name is taken by something else (an alias, a collection):
    /// nothing was changed.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The request's body is larger than the server takes.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// The caller may not do this (its key lacks the permission).
    #[error("{0}")]
    Forbidden(String),
    /// The tenant's plan does not allow it: `quota` is `collections`,
    /// `vectors` or `storage`.
    #[error("{quota} quota exceeded: limit {limit}, current {current}, requested {requested}")]
    QuotaExceeded {
        quota: &'static str,
        limit: u64,
        current: u64,
        requested: u64,
    },
    /// The caller has its share of requests in flight; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// The request's time ran out (or its caller left) before its work ended.
    #[error("the request took too long")]
    Timeout,
    /// A dependency is down or the server is shutting down.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A collection whose files could not be opened; the reason is in the
    /// server's log. Other collections are served.
    #[error("collection `{0}` cannot be opened: its files are damaged or unreadable")]
    Damaged(String),
    /// A failure of ours; the message is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Unprocessable {
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        let msg = e.to_string();
        match e {
            // The engine knows the stored name; a tenant knows its short name.
            EngineError::CollectionNotFound(n) => {
                ServiceError::CollectionNotFound(crate::caller::short_name(&n).to_owned())
            }
            EngineError::CollectionExists(n) => ServiceError::CollectionExists(n),
            EngineError::InvalidName(_) => ServiceError::invalid("invalid_name", msg),
            EngineError::InvalidId(_) => ServiceError::invalid("invalid_id", msg),
            EngineError::InvalidFilter(_) => ServiceError::invalid("invalid_filter", msg),
            EngineError::InvalidConfig(_) => ServiceError::unprocessable("invalid_config", msg),
            EngineError::DimensionMismatch { .. } => {
                ServiceError::unprocessable("dimension_mismatch", msg)
            }
            EngineError::InvalidVector(_) => ServiceError::unprocessable("invalid_vector", msg),
            EngineError::EmptyBatch => ServiceError::unprocessable("empty_batch", msg),
            EngineError::BatchTooLarge { .. } => {
                ServiceError::unprocessable("batch_too_large", msg)
            }
            EngineError::DuplicateId(_) => ServiceError::unprocessable("duplicate_id", msg),
            EngineError::InvalidPayload(_) => ServiceError::unprocessable("invalid_payload", msg),
            EngineError::InvalidRequest(_) => ServiceError::unprocessable("invalid_request", msg),
            EngineError::AnswerTooLarge { .. } => {
                ServiceError::unprocessable("answer_too_large", msg)
            }
            EngineError::Cancelled => ServiceError::Timeout,
            EngineError::Corrupt(_) | EngineError::Io { .. } | EngineError::Index(_) => {
                ServiceError::Internal(msg)
            }
            EngineError::InUse(_) => ServiceError::Unavailable(msg),
            EngineError::Damaged(n) => {
                ServiceError::Damaged(crate::caller::short_name(&n).to_owned())
            }
        }
    }
}

impl From<vectorizer_hub::HubError> for ServiceError {
    fn from(e: vectorizer_hub::HubError) -> Self {
        use vectorizer_hub::HubError as H;
        match e {
            H::Unavailable(m) => ServiceError::Unavailable(format!("hub: {m}")),
            // The Hub refuses only collection creation for quota; the caller
            // fills in the figures where it knows them.
            H::QuotaExceeded(_) => ServiceError::QuotaExceeded {
                quota: "collections",
                limit: 0,
                current: 0,
                requested: 1,
            },
            // The Hub does not know the user or collection: not the tenant's to use.
            H::NotFound(m) => {
                tracing::info!(reason = %m, "the hub does not know the user or collection");
                ServiceError::Forbidden("not known to the hub".into())
            }
            // Our own call was refused or garbled: a failure of ours, logged only.
            H::Refused(m) | H::BadAnswer(m) => ServiceError::Internal(format!("hub: {m}")),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use vectorizer_hub::HubError;

    #[test]
    fn hub_errors_keep_their_meaning() {
        assert!(matches!(
            ServiceError::from(HubError::Unavailable("t".into())),
            ServiceError::Unavailable(_)
        ));
        assert!(matches!(
            ServiceError::from(HubError::QuotaExceeded("q".into())),
            ServiceError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            ServiceError::from(HubError::NotFound("n".into())),
            ServiceError::Forbidden(_)
        ));
        assert!(matches!(
            ServiceError::from(HubError::Refused("r".into())),
            ServiceError::Internal(_)
        ));
    }
}
