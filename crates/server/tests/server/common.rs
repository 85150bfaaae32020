//! An in-process test application: real storage in a temporary directory
//! and the real router, driven without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vectorizer_engine::Limits;
use vectorizer_server::app::{AppState, HttpLimits, router};
use vectorizer_service::{Service, ServiceOptions};
use vectorizer_testkit::TempDir;

pub struct TestApp {
    /// Kept so the data directory lives as long as the app.
    _dir: TempDir,
    pub router: Router,
}

/// Limits small enough for tests to reach.
pub const MAX_BODY: usize = 256 << 10;
pub const MAX_BATCH: usize = 100;

/// How a [`TestApp`] is set up; `Default` is the Hub switched off.
pub struct AppOptions {
    pub auth: Option<Arc<vectorizer_server::auth::Auth>>,
    pub quota_ttl: Duration,
    pub grace: Duration,
    pub metrics: vectorizer_server::metrics::MetricsOptions,
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
            limits: Limits {
                max_batch: MAX_BATCH,
                max_limit: 1000,
                max_payload_bytes: 1024,
            },
            max_batch_searches: 10,
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
            service.attach_reporter(reporter.clone());
            let svc = service.clone();
            reporter.spawn(Duration::from_secs(3600), move || svc.all_usage());
        }
        let state = AppState {
            service,
            limits: HttpLimits {
                max_body_bytes: MAX_BODY,
                request_timeout: Duration::from_secs(30),
            },
            auth: o.auth,
            metrics: o.metrics,
        };
        TestApp {
            router: router(state),
            _dir: dir,
        }
    }

    /// The app's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
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
        let mut req = Request::builder().uri(path);
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, json)
    }
}
