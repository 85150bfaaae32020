//! A test application: real storage in a temporary directory, the real
//! router, served by the real accept loop on a loopback port, and driven
//! over HTTP by a client of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use vectorizer_engine::Limits;
use vectorizer_server::app::{AppState, HttpLimits, router};
use vectorizer_service::{Service, ServiceOptions, ShareOptions};
use vectorizer_testkit::TempDir;

pub struct TestApp {
    /// Kept so the data directory lives as long as the app.
    _dir: TempDir,
    pub addr: SocketAddr,
    /// The Qdrant dialect's listener, over the same state.
    pub qdrant: SocketAddr,
    #[allow(dead_code)]
    pub service: Arc<Service>,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    qdrant_server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        self.qdrant_server.abort();
    }
}

/// Limits small enough for tests to reach.
pub const MAX_BODY: usize = 256 << 10;
pub const MAX_BATCH: usize = 100;
/// The header a test sets to play a client at another address.
pub const CLIENT_IP: &str = "x-forwarded-for";

/// How a [`TestApp`] is set up; `Default` is the Hub switched off.
#[derive(Clone)]
pub struct AppOptions {
    pub auth: Option<Arc<vectorizer_server::auth::Auth>>,
    pub quota_ttl: Duration,
    pub grace: Duration,
    pub metrics: vectorizer_server::metrics::MetricsOptions,
    pub operator: Option<&'static str>,
    pub share: ShareOptions,
    pub limits: Limits,
    pub max_body: usize,
    pub request_timeout: Duration,
    /// With the Hub off: the deployment's (read-write, read-only) API keys.
    pub local_keys: Option<(&'static str, &'static str)>,
    pub backups: vectorizer_service::backup::BackupOptions,
    /// The MCP operation log's rotation size.
    pub oplog_file_bytes: u64,
    /// Most collections open at once.
    pub max_open_collections: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            auth: None,
            quota_ttl: Duration::from_secs(60),
            grace: Duration::from_secs(300),
            metrics: vectorizer_server::metrics::MetricsOptions {
                public: true,
                tenant_labels: Some(10),
            },
            operator: None,
            share: ShareOptions::default(),
            limits: Limits {
                max_batch: MAX_BATCH,
                max_limit: 1000,
                max_payload_bytes: 1024,
                max_answer_bytes: 32 << 20,
            },
            max_body: MAX_BODY,
            request_timeout: Duration::from_secs(30),
            local_keys: None,
            backups: vectorizer_service::backup::BackupOptions::default(),
            oplog_file_bytes: 1 << 20,
            max_open_collections: 2,
        }
    }
}

impl TestApp {
    pub fn new() -> TestApp {
        Self::build(AppOptions::default())
    }

    /// With access-key authentication against a Hub.
    pub fn with_auth(auth: Arc<vectorizer_server::auth::Auth>) -> TestApp {
        Self::build(AppOptions {
            auth: Some(auth),
            ..AppOptions::default()
        })
    }

    /// As [`with_auth`], with the quota cache's TTL and grace given.
    pub fn with_quota_times(
        auth: Arc<vectorizer_server::auth::Auth>,
        quota_ttl: Duration,
        grace: Duration,
    ) -> TestApp {
        Self::build(AppOptions {
            auth: Some(auth),
            quota_ttl,
            grace,
            ..AppOptions::default()
        })
    }

    pub fn build(o: AppOptions) -> TestApp {
        let dir = TempDir::new("server");
        let options = ServiceOptions {
            data_dir: dir.path().to_owned(),
            limits: o.limits,
            max_batch_searches: 10,
            share: o.share,
            backups: o.backups,
            // Two at most: every test runs with collections closed and
            // reopened all the time.
            max_open_collections: Some(o.max_open_collections),
            memory_budget_bytes: None,
            ..ServiceOptions::new(dir.path())
        };
        let service = Arc::new(Service::open(options).unwrap());
        if let Some(auth) = &o.auth {
            service.attach_hub(auth.hub().clone(), o.quota_ttl, o.grace);
            let reporter = vectorizer_service::usage::Reporter::open(
                auth.hub().clone(),
                dir.path(),
                Duration::from_millis(20),
            )
            .unwrap();
            service.attach_reporter(reporter, Duration::from_secs(3600));
        }
        let mcp = Arc::new(vectorizer_server::mcp::Mcp::new(
            &service,
            vectorizer_server::mcp::McpOptions {
                allowed_hosts: vec!["127.0.0.1".into(), "localhost".into()],
                max_body_bytes: o.max_body.min(16 << 20),
            },
            vectorizer_server::mcp::oplog::OpLog::start(
                vectorizer_server::mcp::oplog::OpLogOptions {
                    dir: dir.path().to_owned(),
                    max_file_bytes: o.oplog_file_bytes,
                    max_files: 2,
                },
            ),
        ));
        let state = AppState {
            mcp: Some(mcp.clone()),
            service: service.clone(),
            limits: HttpLimits {
                max_body_bytes: o.max_body,
                request_timeout: o.request_timeout,
                backup_timeout: o.request_timeout.max(std::time::Duration::from_secs(600)),
            },
            auth: o.auth,
            metrics: o.metrics,
            operator: o
                .operator
                .and_then(vectorizer_server::extract::OperatorToken::new)
                .map(Arc::new),
            client_ip_header: Some(axum::http::HeaderName::from_static(CLIENT_IP)),
            local_keys: o.local_keys.map(|(w, r)| {
                Arc::new(vectorizer_server::extract::LocalKeys {
                    write: vectorizer_server::extract::OperatorToken::new(w),
                    read: vectorizer_server::extract::OperatorToken::new(r),
                })
            }),
            cluster: None,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let opts = vectorizer_server::serve::ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(1),
        };
        let q = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        q.set_nonblocking(true).unwrap();
        let qdrant = q.local_addr().unwrap();
        let qdrant_server = tokio::spawn(vectorizer_server::serve::serve(
            tokio::net::TcpListener::from_std(q).unwrap(),
            vectorizer_server::qdrant::router(state.clone()),
            opts,
            std::future::pending(),
        ));
        let app = router(state);
        let server = tokio::spawn(vectorizer_server::serve::serve(
            listener,
            app,
            opts,
            std::future::pending(),
        ));
        TestApp {
            _dir: dir,
            addr,
            qdrant,
            qdrant_server,
            service,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            server,
        }
    }

    /// A request to the Qdrant dialect's listener, with an optional key
    /// (sent as `api-key`, as Qdrant's clients do).
    #[allow(dead_code)]
    pub async fn qdrant(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .client
            .request(method, format!("http://{}{path}", self.qdrant));
        if let Some(k) = key {
            rb = rb.header("api-key", k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The app's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; the body, if any, is sent as JSON.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, json) = self
            .send(
                method,
                path,
                body.map(|b| ("application/json", b.to_string().into_bytes())),
            )
            .await;
        (status, json)
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        let body = match body {
            Some((ct, bytes)) => {
                req = req.header("content-type", ct);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    /// `GET path` with optional headers, the answer as text (for
    /// `/metrics`).
    pub async fn get_text(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = self.client.get(self.url(path));
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let headers = convert_headers(resp.headers());
        (status, headers, resp.text().await.unwrap())
    }

    /// Sends `req` over HTTP. A `ConnectInfo` extension on it becomes the
    /// trusted proxy's client-address header, so a test can play clients
    /// at several addresses.
    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
        let mut rb = self.client.request(method, self.url(&path));
        for (k, v) in &parts.headers {
            rb = rb.header(k.as_str(), v.as_bytes());
        }
        if let Some(ci) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            rb = rb.header(CLIENT_IP, ci.0.ip().to_string());
        }
        let resp = rb.body(bytes.to_vec()).send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let headers = convert_headers(resp.headers());
        let raw = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        (status, headers, json)
    }
}

fn convert_headers(h: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            out.append(k, v);
        }
    }
    out
}
