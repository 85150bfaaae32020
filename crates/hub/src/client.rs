//! Vectorizer's client of the Hub: the SDK (`hivehub-internal-sdk`) for the
//! calls it covers, the same HTTP rules for the others; retries with
//! exponential backoff and jitter on transient failures only; a circuit
//! breaker, so a dead Hub costs no timeout per request; and a health state
//! kept current by a background loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hivehub_internal_sdk::models as sdk;
use hivehub_internal_sdk::{ClientConfig, HiveHubCloudClient, HiveHubCloudError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::model::{
    ErrorBody, McpTool, RegisterMcpResponse, RegisterMcpServer, ValidateKeyRequest,
    ValidateKeyResponse,
};

/// The Hub's service key; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct HubClientConfig {
    /// Base URL, without a trailing slash.
    pub api_url: String,
    pub service_key: Secret,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Retries of a transient failure (so at most `retries + 1` attempts).
    pub retries: u32,
    /// First backoff; each retry doubles it (capped at 2 s), plus jitter.
    pub backoff: Duration,
    /// Consecutive transient failures that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit refuses calls before letting one through.
    pub breaker_cooldown: Duration,
}

impl HubClientConfig {
    pub fn new(api_url: impl Into<String>, service_key: Secret) -> Self {
        HubClientConfig {
            api_url: api_url.into(),
            service_key,
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(100),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(10),
        }
    }
}

/// What a Hub call can end in, by meaning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HubError {
    /// Timeouts, connection failures, 5xx, or an open circuit: worth a
    /// later retry.
    #[error("hub unavailable: {0}")]
    Unavailable(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// 400, 401 or 403: the Hub refused the call itself.
    #[error("refused by the hub: {0}")]
    Refused(String),
    #[error("unexpected answer from the hub: {0}")]
    BadAnswer(String),
}

impl HubError {
    pub fn is_transient(&self) -> bool {
        matches!(self, HubError::Unavailable(_))
    }

    fn from_status(status: u16, msg: String) -> HubError {
        match status {
            400 | 401 | 403 => HubError::Refused(msg),
            404 => HubError::NotFound(msg),
            429 => HubError::QuotaExceeded(msg),
            s if s >= 500 => HubError::Unavailable(format!("status {s}: {msg}")),
            s => HubError::BadAnswer(format!("status {s}: {msg}")),
        }
    }
}

impl From<HiveHubCloudError> for HubError {
    fn from(e: HiveHubCloudError) -> HubError {
        match e {
            HiveHubCloudError::Authentication(m)
            | HiveHubCloudError::BadRequest(m)
            | HiveHubCloudError::Validation(m) => HubError::Refused(m),
            HiveHubCloudError::QuotaExceeded(m) => HubError::QuotaExceeded(m),
            HiveHubCloudError::NotFound(m) => HubError::NotFound(m),
            HiveHubCloudError::ServiceUnavailable(m) => HubError::Unavailable(m),
            // Transport failures: timeouts and connection errors.
            HiveHubCloudError::Http(e) => HubError::Unavailable(e.without_url().to_string()),
            HiveHubCloudError::Serialization(e) => HubError::BadAnswer(e.to_string()),
            HiveHubCloudError::Configuration(m) => HubError::BadAnswer(m),
            // The SDK folds every other status into `Unknown`; among the
            // contract's answers only 5xx land here.
            other => HubError::Unavailable(other.to_string()),
        }
    }
}

/// The Hub's state as Vectorizer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HubHealth {
    Up,
    /// The last health check failed.
    Degraded,
    /// Several health checks in a row failed.
    Down,
    /// The Hub answers, but refuses our service key (401/403): every call
    /// of ours fails until `HIVEHUB_SERVICE_API_KEY` is fixed.
    KeyRefused,
}

impl HubHealth {
    pub const ALL: [HubHealth; 4] = [
        HubHealth::Up,
        HubHealth::Degraded,
        HubHealth::Down,
        HubHealth::KeyRefused,
    ];

    /// As `/health` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HubHealth::Up => "up",
            HubHealth::Degraded => "degraded",
            HubHealth::Down => "down",
            HubHealth::KeyRefused => "key_refused",
        }
    }
}

impl std::fmt::Display for HubHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Closed, or open past its cooldown (a probe may go through).
    fn allows(&self) -> bool {
        self.lock().open_until.is_none_or(|t| Instant::now() >= t)
    }
    fn success(&self) {
        *self.lock() = BreakerState::default();
    }
    fn failure(&self) {
        let mut s = self.lock();
        s.failures += 1;
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }
    fn is_open(&self) -> bool {
        !self.allows()
    }
}

pub struct HubClient {
    sdk: HiveHubCloudClient,
    http: reqwest::Client,
    cfg: HubClientConfig,
    breaker: Breaker,
    health: Mutex<(HubHealth, u32)>,
    /// Calls by `(call, outcome)`: outcome is `ok`, `error`, `transient` or
    /// `circuit_open`.
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    retries: AtomicU64,
    jitter: RandomState,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SDK client's Debug prints the service key: never show it.
        f.debug_struct("HubClient")
            .field("api_url", &self.cfg.api_url)
            .finish_non_exhaustive()
    }
}

impl HubClient {
    pub fn new(cfg: HubClientConfig) -> Result<HubClient, HubError> {
        let mut sdk_cfg = ClientConfig::new(cfg.service_key.0.clone(), cfg.api_url.clone());
        sdk_cfg.timeout = cfg.timeout;
        // Retries are ours; the SDK's own setting is unused by it anyway.
        sdk_cfg.retries = 0;
        let sdk = HiveHubCloudClient::with_config(sdk_cfg)
            .map_err(|e| HubError::BadAnswer(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| HubError::BadAnswer(e.to_string()))?;
        Ok(HubClient {
            sdk,
            http,
            breaker: Breaker {
                threshold: cfg.breaker_threshold.max(1),
                cooldown: cfg.breaker_cooldown,
                state: Default::default(),
            },
            cfg,
            health: Mutex::new((HubHealth::Up, 0)),
            outcomes: Mutex::default(),
            retries: AtomicU64::new(0),
            jitter: RandomState::new(),
        })
    }

    fn count(&self, call: &'static str, outcome: &'static str) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((call, outcome))
            .or_default() += 1;
    }

    /// Calls by `(call, outcome)` so far.
    pub fn outcomes(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> HubHealth {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff.as_millis() as u64;
        let exp = base
            .saturating_mul(1 << attempt.min(10).saturating_sub(1))
            .min(2000);
        let jitter = self.jitter.hash_one((attempt, Instant::now())) % base.max(1);
        Duration::from_millis(exp + jitter)
    }

    /// Runs one call with the retry and circuit-breaker rules.
    async fn call<T, F, Fut>(&self, name: &'static str, mut attempt_once: F) -> Result<T, HubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HubError>>,
    {
        if !self.breaker.allows() {
            self.count(name, "circuit_open");
            return Err(HubError::Unavailable(
                "circuit open: the hub failed repeatedly".into(),
            ));
        }
        let mut attempt = 0;
        loop {
            match attempt_once().await {
                Ok(v) => {
                    self.breaker.success();
                    self.count(name, "ok");
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    self.breaker.failure();
                    self.count(name, "transient");
                    // The health loop logs the Hub's state changes; each
                    // failed call would say the same thing every time.
                    tracing::debug!(call = name, attempt, error = %e, "hub call failed");
                    if attempt >= self.cfg.retries || !self.breaker.allows() {
                        return Err(e);
                    }
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => {
                    // The Hub answered: it is up, whatever it said.
                    self.breaker.success();
                    self.count(name, "error");
                    return Err(e);
                }
            }
        }
    }

    /// A call outside the SDK, with the SDK's headers and error mapping.
    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, HubError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.cfg.api_url))
            .header("X-Service-Key", &self.cfg.service_key.0)
            .header("Content-Type", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| HubError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let msg = resp
                .json::<ErrorBody>()
                .await
                .map(|b| b.error)
                .unwrap_or_default();
            return Err(HubError::from_status(status, msg));
        }
        resp.json::<T>()
            .await
            .map_err(|e| HubError::BadAnswer(e.to_string()))
    }

    /// `GET /health`, once, without retries (the health loop's probe).
    pub async fn probe(&self) -> Result<(), HubError> {
        let resp = self
            .http
            .get(format!("{}/health", self.cfg.api_url))
            .send()
            .await
            .map_err(|e| HubError::Unavailable(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s => Err(HubError::from_status(s, "health check failed".into())),
        }
    }

    /// Checks the service key with a call that needs it and changes
    /// nothing: a user that cannot exist (the nil UUID) answers 404 to a
    /// valid key and 401 to a wrong one.
    pub async fn probe_key(&self) -> Result<(), HubError> {
        let path = format!("/api/internal/vectorizer/users/{}/collections", Uuid::nil());
        match self
            .send::<(), serde_json::Value>(reqwest::Method::GET, &path, None)
            .await
        {
            Ok(_) | Err(HubError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Probes the Hub and updates the health state: one failure makes it
    /// degraded, two in a row down; a Hub that answers but refuses our
    /// service key is `key_refused`; a success makes it up and closes the
    /// circuit, so a Hub that comes back is used again at once. State
    /// changes are logged, once each.
    pub async fn check_health(&self) -> HubHealth {
        let state = match self.probe().await {
            Ok(()) => match self.probe_key().await {
                Err(HubError::Refused(_)) => Some(HubHealth::KeyRefused),
                _ => None,
            },
            Err(_) => Some(HubHealth::Degraded),
        };
        if state != Some(HubHealth::Degraded) {
            self.breaker.success();
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let before = h.0;
        *h = match state {
            None => (HubHealth::Up, 0),
            Some(HubHealth::KeyRefused) => (HubHealth::KeyRefused, 0),
            _ => {
                let fails = h.1 + 1;
                let s = if fails >= 2 {
                    HubHealth::Down
                } else {
                    HubHealth::Degraded
                };
                (s, fails)
            }
        };
        if h.0 != before {
            match h.0 {
                HubHealth::KeyRefused => tracing::error!(
                    "the hub refuses our service key: check HIVEHUB_SERVICE_API_KEY; no access key can be checked until it is fixed"
                ),
                HubHealth::Up => tracing::info!(from = %before, "the hub is up"),
                to => tracing::warn!(from = %before, to = %to, "hub health changed"),
            }
        }
        h.0
    }

    /// Runs [`check_health`] every `every` until the client is dropped.
    pub fn spawn_health_loop(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { return };
                c.check_health().await;
                drop(c);
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Checks a tenant's access key.
    pub async fn validate_key(&self, access_key: &str) -> Result<ValidateKeyResponse, HubError> {
        let body = ValidateKeyRequest {
            access_key: access_key.to_owned(),
            service: "vectorizer".into(),
        };
        self.call("validate_key", || {
            self.send(
                reqwest::Method::POST,
                "/api/internal/access-keys/validate",
                Some(&body),
            )
        })
        .await
    }

    pub async fn user_collections(
        &self,
        user: &Uuid,
    ) -> Result<sdk::UserCollectionsResponse, HubError> {
        self.call("user_collections", || async {
            Ok(self.sdk.vectorizer().get_user_collections(user).await?)
        })
        .await
    }

    pub async fn create_collection(
        &self,
        user: &Uuid,
        name: &str,
        project: Uuid,
        dimension: u32,
    ) -> Result<sdk::CreateCollectionResponse, HubError> {
        let req = sdk::CreateCollectionRequest {
            collection_name: name.to_owned(),
            project_id: project,
            dimension,
        };
        self.call("create_collection", || async {
            Ok(self.sdk.vectorizer().create_collection(user, &req).await?)
        })
        .await
    }

    pub async fn validate_collection(
        &self,
        collection: &Uuid,
        user: &Uuid,
    ) -> Result<sdk::CollectionValidation, HubError> {
        self.call("validate_collection", || async {
            Ok(self
                .sdk
                .vectorizer()
                .validate_collection(collection, user)
                .await?)
        })
        .await
    }

    pub async fn update_usage(
        &self,
        collection: &Uuid,
        vector_count: u64,
        storage_bytes: u64,
    ) -> Result<sdk::UpdateUsageResponse, HubError> {
        let req = sdk::UpdateUsageRequest {
            vector_count,
            storage_bytes,
        };
        self.call("update_usage", || async {
            Ok(self.sdk.vectorizer().update_usage(collection, &req).await?)
        })
        .await
    }

    pub async fn check_quota(
        &self,
        user: &Uuid,
        operation: &str,
        estimated_size: Option<i64>,
    ) -> Result<sdk::QuotaCheckResponse, HubError> {
        let req = sdk::QuotaCheckRequest {
            project_id: user.to_string(),
            operation: operation.to_owned(),
            estimated_size,
        };
        self.call("check_quota", || async {
            Ok(self.sdk.vectorizer().check_quota(&req).await?)
        })
        .await
    }

    /// Tells the Hub a collection was deleted.
    pub async fn delete_collection(&self, collection: &Uuid) -> Result<(), HubError> {
        let path = format!("/api/internal/vectorizer/collections/{collection}");
        self.call("delete_collection", || async {
            self.send::<(), serde_json::Value>(reqwest::Method::DELETE, &path, None)
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn register_mcp(
        &self,
        node_id: &str,
        url: &str,
        tools: Vec<McpTool>,
    ) -> Result<Uuid, HubError> {
        let body = RegisterMcpServer {
            service: "vectorizer".into(),
            node_id: node_id.to_owned(),
            url: url.to_owned(),
            tools,
        };
        self.call("register_mcp", || async {
            self.send::<_, RegisterMcpResponse>(
                reqwest::Method::POST,
                "/api/internal/mcp/servers",
                Some(&body),
            )
            .await
            .map(|r| r.server_id)
        })
        .await
    }

    pub async fn deregister_mcp(&self, server_id: &Uuid) -> Result<(), HubError> {
        let path = format!("/api/internal/mcp/servers/{server_id}");
        self.call("deregister_mcp", || async {
            self.send::<(), serde_json::Value>(reqwest::Method::DELETE, &path, None)
                .await
                .map(|_| ())
        })
        .await
    }
}
