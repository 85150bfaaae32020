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

impl TestApp {
    pub fn new() -> TestApp {
        Self::build(None)
    }

    /// With access-key authentication against a Hub.
    pub fn with_auth(auth: Arc<vectorizer_server::auth::Auth>) -> TestApp {
        Self::build(Some(auth))
    }

    fn build(auth: Option<Arc<vectorizer_server::auth::Auth>>) -> TestApp {
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
        if let Some(auth) = &auth {
            service.attach_hub(
                auth.hub().clone(),
                Duration::from_secs(60),
                Duration::from_secs(300),
            );
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
            auth,
        };
        TestApp {
            router: router(state),
            _dir: dir,
        }
    }

    /// Sends a request; the body, if any, is sent as JSON.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

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

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, json)
    }
}
