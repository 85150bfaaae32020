//! Calls from the Hub itself. A request carrying `x-hivehub-service` is
//! honoured only with proof that the caller holds the service key:
//!
//! ```text
//! x-hivehub-timestamp: <unix seconds>
//! x-hivehub-signature: hex(HMAC-SHA256(service key,
//!     "<METHOD>\n<path and query>\n<timestamp>\n<hex(SHA-256(body))>"))
//! x-hivehub-user-id:   <the user the call acts for>
//! ```
//!
//! The timestamp must be within ±300 s of ours, the signature is compared
//! in constant time, and a signature is accepted once (replays within the
//! window are refused). A bare header, a bad or missing signature, a stale
//! timestamp or a replay is a 401.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vectorizer_service::{Permission, Tenant};

use crate::app::AppState;
use crate::error::ApiError;

pub const SERVICE_HEADER: &str = "x-hivehub-service";
pub const USER_HEADER: &str = "x-hivehub-user-id";
pub const TIMESTAMP_HEADER: &str = "x-hivehub-timestamp";
pub const SIGNATURE_HEADER: &str = "x-hivehub-signature";

/// How far a signed request's clock may be from ours.
pub const WINDOW: Duration = Duration::from_secs(300);

/// A request from the Hub, verified, acting for a user.
#[derive(Debug, Clone)]
pub struct InternalCall(pub Tenant);

pub struct Verifier {
    key: Vec<u8>,
    /// Signatures accepted within the window, to refuse replays.
    seen: Mutex<HashMap<String, Instant>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature of a request, as the Hub computes it.
pub fn sign(key: &[u8], method: &str, path_and_query: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    let body_hash = hex(&Sha256::digest(body));
    mac.update(format!("{method}\n{path_and_query}\n{timestamp}\n{body_hash}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    pub fn new(service_key: &str) -> Verifier {
        Verifier {
            key: service_key.as_bytes().to_vec(),
            seen: Mutex::default(),
        }
    }

    /// Checks one request's proof; `Ok` names the user it acts for.
    fn verify(
        &self,
        method: &str,
        path: &str,
        ts: &str,
        sig: &str,
        user: &str,
        body: &[u8],
    ) -> Result<Uuid, &'static str> {
        let ts: u64 = ts.parse().map_err(|_| "bad timestamp")?;
        if now().abs_diff(ts) > WINDOW.as_secs() {
            return Err("stale timestamp");
        }
        let user: Uuid = user.parse().map_err(|_| "bad user id")?;
        let expected = sign(&self.key, method, path, ts, body);
        let same = expected.len() == sig.len()
            && expected
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err("bad signature");
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| at.elapsed() < WINDOW * 2);
        if seen.insert(sig.to_owned(), Instant::now()).is_some() {
            return Err("replayed request");
        }
        Ok(user)
    }
}

fn refused() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid access key",
    )
    .into_response()
}

/// Verifies requests that claim to come from the Hub, and marks them with
/// [`InternalCall`] for the caller extractor.
pub async fn verify(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(verifier) = state.auth.as_ref().map(|a| a.verifier()) else {
        return next.run(req).await;
    };
    if !req.headers().contains_key(SERVICE_HEADER) {
        return next.run(req).await;
    }
    // Read in a block: a borrow of the request must not live across the
    // await below (the body is not `Sync`).
    let (ts, sig, user) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            header(USER_HEADER),
        )
    };
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, state.limits.max_body_bytes).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        )
        .into_response();
    };
    match verifier.verify(&method, &path, &ts, &sig, &user, &bytes) {
        Ok(user_id) => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(InternalCall(Tenant {
                user_id,
                access_key_id: Uuid::nil(),
                project_id: None,
                permissions: vec![Permission::Admin],
                plan: "internal".into(),
            }));
            next.run(req).await
        }
        Err(why) => {
            tracing::warn!(why, "refused an internal call");
            refused()
        }
    }
}
