//! Extractors: JSON bodies that fail in our error shape, and the caller a
//! request acts for (which every handler must take).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use vectorizer_service::{Call, Caller, Permission};

use crate::app::AppState;
use crate::auth::{AuthError, key_of};
use crate::error::ApiError;
use crate::internal::InternalCall;

/// A JSON body. Wrong content type: 415; too large: 413; not JSON or not
/// the expected shape: 400. Always in the common error shape.
pub struct ApiJson<T>(pub T);

/// Bodies larger than this are parsed on a blocking thread, so that the
/// async workers never spend long on one request.
const PARSE_IN_PLACE: usize = 64 << 10;

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fail = |path: String, e: serde_json::Error| {
        let (code, message) = match e.classify() {
            serde_json::error::Category::Data => {
                let m = plain(&e.to_string());
                if in_filter(&path) {
                    ("invalid_filter", format!("invalid filter at `{path}`: {m}"))
                } else {
                    let m = match path.as_str() {
                        "" | "." => m,
                        p => format!("`{p}`: {m}"),
                    };
                    ("invalid_body", m)
                }
            }
            _ => (
                "invalid_json",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ),
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    };
    let v = serde_path_to_error::deserialize::<_, T>(&mut de)
        .map_err(|e| fail(e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| fail(String::new(), e))?;
    Ok(v)
}

/// Whether a body's error lies in a `filter` field (filters are parsed,
/// within their bounds, as the body is read).
fn in_filter(path: &str) -> bool {
    !path.starts_with("payload")
        && path
            .split('.')
            .any(|seg| seg == "filter" || seg.starts_with("filter["))
}

/// A parser's message in the words of the input, not of Rust types.
pub fn plain(msg: &str) -> String {
    let mut m = msg.to_owned();
    for (rust, words) in [
        ("u8", "a non-negative integer"),
        ("u16", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u64", "a non-negative integer"),
        ("usize", "a non-negative integer"),
        ("i64", "an integer"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a boolean", "true or false"),
    ] {
        m = m.replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    for (rust, json) in [
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: sequence", "got an array"),
        ("invalid type: map", "got an object"),
        ("invalid type: string", "got the string"),
        ("invalid type: integer", "got the integer"),
        ("invalid type: floating point", "got the number"),
        ("invalid type: null", "got null"),
        ("unknown variant", "unknown value"),
    ] {
        m = m.replace(rust, json);
    }
    let m = m
        .replace("invalid type: ", "got ")
        .replace("invalid value: ", "got ");
    // A message may quote the input (an unknown field's name): never at
    // any length.
    crate::error::cut(m, crate::error::MESSAGE_CHARS)
}

impl<S: Send + Sync, T: DeserializeOwned + Send + 'static> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let admitted = req.extensions().get::<Admitted>().map(|a| a.0.clone());
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large (see server.max_body_bytes)",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "could not read the request body",
                )
            }
        })?;
        // No body at all reads as `{}`: a request whose fields are all
        // optional (count, scroll) needs none.
        if bytes.is_empty() {
            return parse(b"{}").map(ApiJson).map_err(|mut e| {
                // The position is that of the `{}` read in its place.
                if let Some((m, _)) = e.message.split_once(" at line ") {
                    e.message = format!("{m} (the body is empty)");
                }
                e
            });
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        if bytes.len() <= PARSE_IN_PLACE {
            return parse(&bytes).map(ApiJson);
        }
        // A large body is parsed on one of the caller's worker threads.
        match admitted {
            Some(call) => call.run_blocking(move || parse(&bytes)).await?,
            None => tokio::task::spawn_blocking(move || parse(&bytes))
                .await
                .map_err(|_| ApiError::internal())?,
        }
        .map(ApiJson)
    }
}

/// The operator's token (`VECTORIZER_OPERATOR_TOKEN`): server-wide views
/// such as `/metrics` need it; it is never a tenant's key, never sent to
/// the Hub, and compared in constant time.
pub struct OperatorToken(Vec<u8>);

impl OperatorToken {
    pub const ENV: &'static str = "VECTORIZER_OPERATOR_TOKEN";
    /// Shortest token accepted: a short one could be guessed.
    pub const MIN_LEN: usize = 16;

    pub fn new(token: &str) -> Option<OperatorToken> {
        (!token.is_empty()).then(|| OperatorToken(token.as_bytes().to_vec()))
    }

    pub fn matches(&self, presented: &str) -> bool {
        let p = presented.as_bytes();
        // Compared over the token's whole length whatever is presented.
        let diff = self.0.iter().enumerate().fold(0u8, |acc, (i, b)| {
            acc | (b ^ p.get(i).copied().unwrap_or(!b))
        });
        diff == 0 && p.len() == self.0.len()
    }
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(***)")
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The single-tenant deployment's keys (Hub off): `VECTORIZER_API_KEY`
/// reads and writes, `VECTORIZER_READ_API_KEY` only reads. With either
/// set, every route but `/health` needs one of them.
#[derive(Debug)]
pub struct LocalKeys {
    pub write: Option<OperatorToken>,
    pub read: Option<OperatorToken>,
}

impl LocalKeys {
    pub const WRITE_ENV: &'static str = "VECTORIZER_API_KEY";
    pub const READ_ENV: &'static str = "VECTORIZER_READ_API_KEY";

    /// The keys in the environment; `None` if neither is set.
    pub fn from_env() -> Result<Option<LocalKeys>, String> {
        let read = |name: &str| match std::env::var(name) {
            Ok(k) if k.len() < OperatorToken::MIN_LEN => Err(format!(
                "{name} must be at least {} characters",
                OperatorToken::MIN_LEN
            )),
            Ok(k) => Ok(OperatorToken::new(&k)),
            Err(_) => Ok(None),
        };
        let keys = LocalKeys {
            write: read(Self::WRITE_ENV)?,
            read: read(Self::READ_ENV)?,
        };
        Ok((keys.write.is_some() || keys.read.is_some()).then_some(keys))
    }

    /// The caller a presented key stands for.
    fn caller(&self, key: Option<&str>, need: Option<Permission>) -> Result<Caller, ApiError> {
        let matches =
            |t: &Option<OperatorToken>| key.zip(t.as_ref()).is_some_and(|(k, t)| t.matches(k));
        if matches(&self.write) {
            return Ok(Caller::Local);
        }
        if matches(&self.read) {
            if need.is_some_and(|p| p != Permission::Read) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the read-only API key cannot change anything",
                ));
            }
            return Ok(Caller::LocalReader);
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid API key",
        ))
    }

    /// Whether `key` is the read-write key (whose holder runs the
    /// deployment).
    pub fn is_writer(&self, key: &str) -> bool {
        self.write.as_ref().is_some_and(|t| t.matches(key))
    }

    /// Whether `key` is either key of the deployment.
    pub fn is_either(&self, key: &str) -> bool {
        self.is_writer(key) || self.read.as_ref().is_some_and(|t| t.matches(key))
    }
}

/// Whether the request may read `/metrics`: the operator token, or with
/// the Hub off either key of the deployment (a scraper needs no more than
/// the read-only one).
pub struct ScraperOf(pub bool);

impl FromRequestParts<AppState> for ScraperOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let OperatorOf(operator) = OperatorOf::from_request_parts(parts, state).await?;
        let local = state.auth.is_none()
            && state
                .local_keys
                .as_ref()
                .zip(key_of(&parts.headers))
                .is_some_and(|(k, key)| k.is_either(&key));
        Ok(ScraperOf(operator || local))
    }
}

/// Whether the request carries the operator token.
pub struct OperatorOf(pub bool);

impl FromRequestParts<AppState> for OperatorOf {
    type Rejection = ApiError;

    /// The operator token; with the Hub off, a key of the deployment
    /// counts too (its holder is the operator).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = state
            .operator
            .as_ref()
            .zip(bearer(parts))
            .is_some_and(|(t, b)| t.matches(b));
        let local = state.auth.is_none()
            && state
                .local_keys
                .as_ref()
                .zip(key_of(&parts.headers))
                .is_some_and(|(k, key)| k.is_writer(&key));
        Ok(OperatorOf(token || local))
    }
}

/// The client's address: the connection's peer, or, behind a trusted
/// proxy (`server.client_ip_header`), the last address in that header.
pub fn client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let Some(name) = &state.client_ip_header else {
        return peer;
    };
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

/// The admitted call a request acts as (see `admission`): its caller,
/// checked for the route's permission, and its slot in the caller's share.
/// Every handler that reaches data takes it.
pub struct CallOf(pub Arc<Call>);

/// Put on a request by the admission layer.
#[derive(Clone)]
pub struct Admitted(pub Arc<Call>);

impl<S: Send + Sync> FromRequestParts<S> for CallOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Admitted>() {
            Some(Admitted(call)) => Ok(CallOf(call.clone())),
            None => {
                tracing::error!("a handler that needs a call is not behind the admission layer");
                Err(ApiError::internal())
            }
        }
    }
}

/// Whom a request acts for. With the Hub off, every request is local; with
/// it on, the access key names a tenant, or the Hub signed the call; and
/// `need` is checked, before anything of the body is read.
pub async fn identify(
    parts: &mut Parts,
    state: &AppState,
    need: Option<Permission>,
) -> Result<Caller, ApiError> {
    let Some(auth) = &state.auth else {
        return match &state.local_keys {
            None => Ok(Caller::Local),
            Some(keys) => keys.caller(key_of(&parts.headers).as_deref(), need),
        };
    };
    // A call the Hub signed (verified by `internal::verify`).
    if let Some(InternalCall(tenant)) = parts.extensions.get::<InternalCall>() {
        return Ok(Caller::Tenant(tenant.clone()));
    }
    let unauthorized = || auth_error(AuthError::Unauthorized);
    let ip = client_ip(parts, state);
    let Some(key) = key_of(&parts.headers) else {
        auth.failed(ip);
        return Err(unauthorized());
    };
    // The operator's token is not a tenant's key: refused here, and
    // never shown to the Hub.
    if state.operator.as_ref().is_some_and(|t| t.matches(&key)) {
        return Err(unauthorized());
    }
    let tenant = auth.authenticate(&key, ip).await.map_err(auth_error)?;
    if let Some(p) = need
        && !tenant.allows(p)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this access key lacks the `{}` permission", p.as_str()),
        ));
    }
    Ok(Caller::Tenant(tenant))
}

/// Why a key was refused, as the caller sees it.
pub fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthorized => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid access key",
        ),
        AuthError::Throttled(wait) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many invalid access keys from this address, retry later",
        )
        .retry_after(wait),
        AuthError::HubUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hub_unavailable",
            "access keys cannot be checked right now, retry later",
        ),
    }
}

/// A route's path parameters; one that does not decode (not UTF-8, say)
/// is a 400 in the common error shape, not axum's plain-text answer.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    "a part of the path does not decode (percent-encoded UTF-8 is expected)",
                )
            })
    }
}
