//! A service error as it travels between nodes, and back: the node a
//! request arrived at answers exactly what the node that ran it decided.

use std::collections::HashSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use vectorizer_service::ServiceError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    pub kind: String,
    #[serde(default)]
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub figures: [u64; 3],
}

/// Codes arrive as strings and the service keeps `&'static str`: each
/// distinct code is interned once. Codes come only from peers that signed
/// their answers, and the service has a fixed set of them.
fn intern(code: &str) -> &'static str {
    static CODES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut set = CODES.lock().unwrap_or_else(|e| e.into_inner());
    let set = set.get_or_insert_with(HashSet::new);
    if let Some(c) = set.get(code) {
        return c;
    }
    if set.len() >= 256 {
        return "invalid_request";
    }
    let c: &'static str = Box::leak(code.to_owned().into_boxed_str());
    set.insert(c);
    c
}

impl From<&ServiceError> for WireError {
    fn from(e: &ServiceError) -> Self {
        let (kind, code, figures) = match e {
            ServiceError::CollectionNotFound(_) => ("collection_not_found", "", [0; 3]),
            ServiceError::PointNotFound(_) => ("point_not_found", "", [0; 3]),
            ServiceError::AliasNotFound(_) => ("alias_not_found", "", [0; 3]),
            ServiceError::BackupNotFound(_) => ("backup_not_found", "", [0; 3]),
            ServiceError::CollectionExists(_) => ("collection_exists", "", [0; 3]),
            ServiceError::InvalidInput { code, .. } => ("invalid", *code, [0; 3]),
            ServiceError::Conflict { code, .. } => ("conflict", *code, [0; 3]),
            ServiceError::Unprocessable { code, .. } => ("unprocessable", *code, [0; 3]),
            ServiceError::TooLarge { code, .. } => ("too_large", *code, [0; 3]),
            ServiceError::Forbidden(_) => ("forbidden", "", [0; 3]),
            ServiceError::QuotaExceeded {
                quota,
                limit,
                current,
                requested,
            } => ("quota", *quota, [*limit, *current, *requested]),
            ServiceError::Busy(_) => ("busy", "", [0; 3]),
            ServiceError::Timeout => ("timeout", "", [0; 3]),
            ServiceError::Unavailable(_) => ("unavailable", "", [0; 3]),
            ServiceError::Internal(_) => ("internal", "", [0; 3]),
            ServiceError::Damaged(_) => ("damaged", "", [0; 3]),
        };
        let message = match e {
            ServiceError::CollectionNotFound(n)
            | ServiceError::PointNotFound(n)
            | ServiceError::AliasNotFound(n)
            | ServiceError::BackupNotFound(n)
            | ServiceError::CollectionExists(n)
            | ServiceError::Forbidden(n)
            | ServiceError::Busy(n)
            | ServiceError::Unavailable(n)
            | ServiceError::Damaged(n)
            | ServiceError::Internal(n) => n.clone(),
            ServiceError::InvalidInput { message, .. }
            | ServiceError::Conflict { message, .. }
            | ServiceError::Unprocessable { message, .. }
            | ServiceError::TooLarge { message, .. } => message.clone(),
            other => other.to_string(),
        };
        WireError {
            kind: kind.into(),
            code: code.into(),
            message,
            figures,
        }
    }
}

impl From<WireError> for ServiceError {
    fn from(w: WireError) -> Self {
        let m = w.message;
        match w.kind.as_str() {
            "collection_not_found" => ServiceError::CollectionNotFound(m),
            "point_not_found" => ServiceError::PointNotFound(m),
            "alias_not_found" => ServiceError::AliasNotFound(m),
            "backup_not_found" => ServiceError::BackupNotFound(m),
            "collection_exists" => ServiceError::CollectionExists(m),
            "damaged" => ServiceError::Damaged(m),
            "invalid" => ServiceError::InvalidInput {
                code: intern(&w.code),
                message: m,
            },
            "conflict" => ServiceError::Conflict {
                code: intern(&w.code),
                message: m,
            },
            "unprocessable" => ServiceError::Unprocessable {
                code: intern(&w.code),
                message: m,
            },
            "too_large" => ServiceError::TooLarge {
                code: intern(&w.code),
                message: m,
            },
            "forbidden" => ServiceError::Forbidden(m),
            "quota" => ServiceError::QuotaExceeded {
                quota: intern(&w.code),
                limit: w.figures[0],
                current: w.figures[1],
                requested: w.figures[2],
            },
            "busy" => ServiceError::Busy(m),
            "timeout" => ServiceError::Timeout,
            "unavailable" => ServiceError::Unavailable(m),
            _ => ServiceError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_unchanged() {
        let all = [
            ServiceError::CollectionNotFound("docs".into()),
            ServiceError::invalid("invalid_name", "bad name"),
            ServiceError::conflict("alias_exists", "`a` is an alias"),
            ServiceError::unprocessable("dimension_mismatch", "wrong dimension"),
            ServiceError::QuotaExceeded {
                quota: "vectors",
                limit: 10,
                current: 8,
                requested: 5,
            },
            ServiceError::Forbidden("no".into()),
            ServiceError::Unavailable("down".into()),
            ServiceError::Damaged("docs".into()),
        ];
        for e in all {
            let back: ServiceError = WireError::from(&e).into();
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e}"
            );
        }
    }
}
