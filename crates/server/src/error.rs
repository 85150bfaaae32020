//! HTTP errors: one body shape, `{"error": {"code", "message"}}`, and the
//! one place where service errors become status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vectorizer_service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
    /// More fields for the error object (a quota's figures).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error answer. Its message is cut to [`MESSAGE_CHARS`]: a
    /// message may quote the request (a name), which is never echoed back
    /// at any length.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let message = cut(message.into(), MESSAGE_CHARS);
        ApiError {
            status,
            code,
            message,
            retry_after: None,
            extra: None,
        }
    }

    pub fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

/// Longest error message, in characters.
pub const MESSAGE_CHARS: usize = 300;

/// `s` cut to at most `chars` characters (and an ellipsis): what may be
/// echoed of a caller's input.
pub fn cut(mut s: String, chars: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(chars) {
        s.truncate(i);
        s.push('…');
    }
    s
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::CollectionNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "collection_not_found", message)
            }
            ServiceError::PointNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "point_not_found", message)
            }
            ServiceError::AliasNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "alias_not_found", message)
            }
            ServiceError::BackupNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "backup_not_found", message)
            }
            ServiceError::TooLarge { code, .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
            }
            ServiceError::CollectionExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "collection_exists", message)
            }
            ServiceError::InvalidInput { code, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            ServiceError::Conflict { code, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ServiceError::Unprocessable { code, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            ServiceError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ServiceError::QuotaExceeded {
                quota,
                limit,
                current,
                requested,
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message).with(
                json!({
                    "quota": quota, "limit": limit, "current": current, "requested": requested,
                }),
            ),
            ServiceError::Busy(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
                    .retry_after(std::time::Duration::from_secs(1))
            }
            ServiceError::Timeout => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long",
            ),
            ServiceError::Unavailable(detail) => {
                tracing::warn!(%detail, "service unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "service unavailable, retry later",
                )
            }
            ServiceError::Damaged(name) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "collection_damaged",
                format!(
                    "collection `{}` cannot be opened: its files are damaged or unreadable (the operator has the details)",
                    cut(name, 100)
                ),
            ),
            ServiceError::Internal(detail) => {
                // The detail may name files or internals: logs only.
                tracing::error!(%detail, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            error.as_object_mut().expect("an object").extend(extra);
        }
        let body = json!({"error": error});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        resp
    }
}
