//! Calls from the Hub itself (the contract's signed calls, scheme v2). A
//! request carrying `x-hivehub-service` is honoured only with a valid
//! signature by the signing secret (`HIVEHUB_SIGNING_SECRET`, never the
//! service key) over this message:
//!
//! ```text
//! "v2" \n METHOD \n PATH_AND_QUERY \n TIMESTAMP \n NONCE \n NODE_ID \n USER_ID \n hex(SHA-256(body))
//! ```
//!
//! The user, the node and the nonce are signed, so a call cannot be aimed
//! at another user or node; `x-hivehub-node` must be this node's
//! `hub.node_id`; the timestamp must be within ±300 s; and a nonce is
//! accepted once per node, across restarts (accepted nonces are appended,
//! fsynced, to `hub-nonces.log` in the data directory). Every header is
//! checked before any of the body is read, and a signed call's body is read
//! with a 1 MiB limit. A refused call does not use up its nonce, and gets
//! the same 401 as a bad access key.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
pub const NODE_HEADER: &str = "x-hivehub-node";
pub const TIMESTAMP_HEADER: &str = "x-hivehub-timestamp";
pub const NONCE_HEADER: &str = "x-hivehub-nonce";
pub const SIGNATURE_HEADER: &str = "x-hivehub-signature";
/// The environment variable holding the signing secret.
pub const SIGNING_SECRET_ENV: &str = "HIVEHUB_SIGNING_SECRET";

/// How far a signed request's clock may be from ours.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Largest body of a signed call.
pub const MAX_SIGNED_BODY: usize = 1 << 20;
const NONCE_FILE: &str = "hub-nonces.log";

/// A request from the Hub, verified, acting for a user.
#[derive(Debug, Clone)]
pub struct InternalCall(pub Tenant);

/// What verifies calls from the Hub on this node.
pub struct Verifier {
    /// Absent: calls from the Hub are refused.
    secret: Option<Vec<u8>>,
    node_id: Option<String>,
    nonces: Mutex<Nonces>,
    /// Signed bodies being read at once: whoever knows the node's id gets
    /// past the header checks, and each read buffers up to 1 MiB.
    reads: tokio::sync::Semaphore,
}

/// Signed bodies read at once, at most.
const MAX_SIGNED_READS: usize = 8;

/// Nonces accepted within twice the window, by their timestamp, and the
/// file that keeps them across restarts (`None`: memory only).
struct Nonces {
    seen: HashMap<String, u64>,
    file: Option<(PathBuf, std::fs::File)>,
    /// Nonces must reach the file; once it is lost (a failed rewrite),
    /// every call is refused rather than accepted without record.
    durable: bool,
    appended: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fields a signed call covers.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub timestamp: u64,
    pub nonce: &'a str,
    pub node_id: &'a str,
    pub user_id: &'a str,
    pub body: &'a [u8],
}

/// The signature of a call, as the Hub computes it.
pub fn sign(secret: &[u8], c: &Signed<'_>) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    let body_hash = hex(&Sha256::digest(c.body));
    mac.update(
        format!(
            "v2\n{}\n{}\n{}\n{}\n{}\n{}\n{body_hash}",
            c.method, c.path_and_query, c.timestamp, c.nonce, c.node_id, c.user_id
        )
        .as_bytes(),
    );
    hex(&mac.finalize().into_bytes())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Nonces {
    fn open(dir: Option<&Path>) -> std::io::Result<Nonces> {
        let mut n = Nonces {
            seen: HashMap::new(),
            file: None,
            durable: dir.is_some(),
            appended: 0,
        };
        let Some(dir) = dir else { return Ok(n) };
        std::fs::create_dir_all(dir)?;
        let path = dir.join(NONCE_FILE);
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                // A torn last line (a crash mid-append) has no timestamp.
                if let Some((ts, nonce)) = line.split_once(' ')
                    && let Ok(ts) = ts.parse::<u64>()
                {
                    n.seen.insert(nonce.to_owned(), ts);
                }
            }
        }
        n.prune();
        n.rewrite(&path)?;
        Ok(n)
    }

    /// Forgets nonces whose timestamp no longer passes the window check.
    fn prune(&mut self) {
        let t = now();
        self.seen
            .retain(|_, ts| t.abs_diff(*ts) <= WINDOW.as_secs() * 2);
    }

    /// Writes the live nonces to a fresh file (tmp, fsync, rename).
    fn rewrite(&mut self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for (nonce, ts) in &self.seen {
            writeln!(f, "{ts} {nonce}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        self.file = Some((path.to_owned(), f));
        self.appended = 0;
        Ok(())
    }

    /// Records a nonce durably; false if it was seen before.
    fn accept(&mut self, nonce: &str, ts: u64) -> std::io::Result<bool> {
        if self.seen.contains_key(nonce) {
            return Ok(false);
        }
        match &mut self.file {
            Some((_, f)) => {
                writeln!(f, "{ts} {nonce}")?;
                f.sync_data()?;
                self.appended += 1;
            }
            None if self.durable => {
                return Err(std::io::Error::other("the nonce log is not open"));
            }
            None => {}
        }
        self.seen.insert(nonce.to_owned(), ts);
        if self.appended > 4096 {
            self.prune();
            if let Some((path, _)) = self.file.take() {
                self.rewrite(&path)?;
            }
        }
        Ok(true)
    }
}

impl Verifier {
    /// A verifier for this node. `secret` is the signing secret, `node_id`
    /// this node's id; without either, every call from the Hub is refused.
    /// Accepted nonces are kept in `data_dir` (memory only without one).
    pub fn new(
        secret: Option<&str>,
        node_id: Option<&str>,
        data_dir: Option<&Path>,
    ) -> std::io::Result<Verifier> {
        Ok(Verifier {
            secret: secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
            node_id: node_id.filter(|s| !s.is_empty()).map(str::to_owned),
            nonces: Mutex::new(Nonces::open(data_dir)?),
            reads: tokio::sync::Semaphore::new(MAX_SIGNED_READS),
        })
    }

    /// A verifier that refuses every call (the Hub's calls not set up).
    pub fn refusing() -> Verifier {
        Verifier {
            secret: None,
            node_id: None,
            nonces: Mutex::new(Nonces {
                seen: HashMap::new(),
                file: None,
                durable: false,
                appended: 0,
            }),
            reads: tokio::sync::Semaphore::new(MAX_SIGNED_READS),
        }
    }

    /// The cheap checks, on headers only. `Ok` holds the user, the
    /// timestamp and the nonce.
    fn check_headers<'a>(
        &self,
        header: &impl Fn(&str) -> &'a str,
    ) -> Result<(Uuid, u64, &'a str, &'a str), &'static str> {
        let (Some(_), Some(node)) = (&self.secret, &self.node_id) else {
            return Err("calls from the hub are not set up on this node");
        };
        if header(NODE_HEADER) != node {
            return Err("meant for another node");
        }
        let ts: u64 = header(TIMESTAMP_HEADER)
            .parse()
            .map_err(|_| "bad timestamp")?;
        if now().abs_diff(ts) > WINDOW.as_secs() {
            return Err("stale timestamp");
        }
        let nonce = header(NONCE_HEADER);
        if !(32..=128).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("bad nonce");
        }
        let user: Uuid = header(USER_HEADER).parse().map_err(|_| "bad user id")?;
        let sig = header(SIGNATURE_HEADER);
        if sig.len() != 64 || !sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("bad signature");
        }
        // The nonce is checked with the signature, on a blocking thread:
        // its lock is held while a nonce is fsynced.
        Ok((user, ts, nonce, sig))
    }

    /// The signature check over the body, then the nonce is used up.
    fn check_signature(
        &self,
        method: &str,
        path_and_query: &str,
        (user, ts, nonce, sig): (Uuid, u64, &str, &str),
        user_header: &str,
        body: &[u8],
    ) -> Result<Uuid, &'static str> {
        let (Some(secret), Some(node)) = (&self.secret, &self.node_id) else {
            return Err("calls from the hub are not set up on this node");
        };
        let expected = sign(
            secret,
            &Signed {
                method,
                path_and_query,
                timestamp: ts,
                nonce,
                node_id: node,
                user_id: user_header,
                body,
            },
        );
        if !same(&expected, sig) {
            return Err("bad signature");
        }
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        match nonces.accept(nonce, ts) {
            Ok(true) => Ok(user),
            Ok(false) => Err("replayed nonce"),
            Err(e) => {
                tracing::error!(error = %e, "could not record a nonce; refusing the call");
                Err("nonce not recorded")
            }
        }
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

fn too_large() -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body too large",
    )
    .into_response()
}

/// Verifies requests that claim to come from the Hub, and marks them with
/// [`InternalCall`] for the caller extractor.
pub async fn verify(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !req.headers().contains_key(SERVICE_HEADER) {
        return next.run(req).await;
    }
    let Some(auth) = state.auth.clone() else {
        return refused();
    };
    let verifier = auth.verifier();
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let checked = match verifier.check_headers(&header) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(why, "refused an internal call");
            return refused();
        }
    };
    let declared = header(axum::http::header::CONTENT_LENGTH.as_str());
    if declared.parse::<usize>().is_ok_and(|n| n > MAX_SIGNED_BODY) {
        return too_large();
    }
    let Ok(_reading) = verifier.reads.try_acquire() else {
        tracing::warn!("refused an internal call: too many signed bodies being read");
        return refused();
    };
    let Ok(bytes) = to_bytes(body, MAX_SIGNED_BODY).await else {
        return too_large();
    };
    let user_header = header(USER_HEADER).to_owned();
    let (user, ts, nonce, sig) = checked;
    let (nonce, sig) = (nonce.to_owned(), sig.to_owned());
    // The nonce is fsynced before the call runs: on a blocking thread.
    let body = bytes.clone();
    let auth2 = auth.clone();
    let checked = tokio::task::spawn_blocking(move || {
        auth2.verifier().check_signature(
            &method,
            &path,
            (user, ts, &nonce, &sig),
            &user_header,
            &body,
        )
    })
    .await
    .unwrap_or(Err("the check failed"));
    match checked {
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
