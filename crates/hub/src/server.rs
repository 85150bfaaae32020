//! The local Hub's HTTP server: the contract's routes over a [`HubStore`].
//! Every route but `/health` requires `X-Service-Key`, compared in constant
//! time with the key this Hub was started with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::model::*;
use crate::store::{HubStore, StoreError};

/// Where both the Hub and Vectorizer read the service key from.
pub const SERVICE_KEY_ENV: &str = "HIVEHUB_SERVICE_API_KEY";

#[derive(Clone)]
struct Hub {
    store: Arc<HubStore>,
    service_key: Arc<str>,
    /// Calls per route, for tests that count what reaches the Hub.
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    faults: Arc<Mutex<Faults>>,
}

/// Failures to inject into the next contract calls (`POST /api/dev/faults`),
/// so that clients' retries, timeouts and circuit breakers can be tested.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Faults {
    /// Answer this status instead of serving the call.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// How many calls the fault applies to.
    #[serde(default)]
    pub count: u32,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: msg.into(),
            details: None,
        }),
    )
        .into_response()
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        let status = match &self {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StoreError::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            StoreError::Io(detail) => {
                tracing::error!(%detail, "hub storage failed");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        error(status, self.to_string())
    }
}

/// Equal-length byte comparison whose time does not depend on where the
/// inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn guard(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    *hub.calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{} {route}", req.method()))
        .or_default() += 1;
    let path = req.uri().path().to_owned();
    if !path.starts_with("/api/dev/") {
        let fault = {
            let mut f = hub.faults.lock().unwrap_or_else(|e| e.into_inner());
            (f.count > 0).then(|| {
                f.count -= 1;
                f.clone()
            })
        };
        if let Some(f) = fault {
            if f.delay_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(f.delay_ms)).await;
            }
            if let Some(code) = f.status.and_then(|c| StatusCode::from_u16(c).ok()) {
                return error(code, "injected failure");
            }
        }
    }
    if path == "/health" {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get("x-service-key")
        .is_some_and(|k| same(k.as_bytes(), hub.service_key.as_bytes()));
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid service key");
    }
    next.run(req).await
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn calls(State(hub): State<Hub>) -> Json<BTreeMap<String, u64>> {
    Json(hub.calls.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn set_faults(State(hub): State<Hub>, Json(f): Json<Faults>) -> Json<Faults> {
    *hub.faults.lock().unwrap_or_else(|e| e.into_inner()) = f.clone();
    Json(f)
}

/// Runs a store call on a blocking thread: the store reads and writes its
/// file (with fsync), which must not hold up an async runtime that may be
/// a server's own (`serve --local-hub`).
async fn on_store<T: Send + 'static>(
    hub: &Hub,
    f: impl FnOnce(&HubStore) -> T + Send + 'static,
) -> T {
    let store = hub.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .expect("a hub store task panicked")
}

async fn user_collections(
    State(hub): State<Hub>,
    Path(user): Path<Uuid>,
) -> Result<Json<UserCollectionsResponse>, StoreError> {
    on_store(&hub, move |s| s.user_collections(&user))
        .await
        .map(Json)
}

async fn create_collection(
    State(hub): State<Hub>,
    Path(user): Path<Uuid>,
    Json(req): Json<CreateCollectionRequest>,
) -> Result<Json<CreateCollectionResponse>, StoreError> {
    on_store(&hub, move |s| s.create_collection(&user, &req))
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct UserQuery {
    user_id: Uuid,
}

async fn validate_collection(
    State(hub): State<Hub>,
    Path(collection): Path<Uuid>,
    Query(q): Query<UserQuery>,
) -> Result<Json<CollectionValidation>, StoreError> {
    on_store(&hub, move |s| {
        s.validate_collection(&collection, &q.user_id)
    })
    .await
    .map(Json)
}

async fn update_usage(
    State(hub): State<Hub>,
    Path(collection): Path<Uuid>,
    Json(req): Json<UpdateUsageRequest>,
) -> Result<Json<UpdateUsageResponse>, StoreError> {
    on_store(&hub, move |s| s.update_usage(&collection, &req))
        .await
        .map(Json)
}

async fn delete_collection(
    State(hub): State<Hub>,
    Path(collection): Path<Uuid>,
) -> Result<Json<serde_json::Value>, StoreError> {
    on_store(&hub, move |s| s.delete_collection(&collection))
        .await
        .map(|_| Json(json!({"success": true})))
}

async fn quota(
    State(hub): State<Hub>,
    Json(req): Json<QuotaCheckRequest>,
) -> Result<Json<QuotaCheckResponse>, StoreError> {
    on_store(&hub, move |s| s.quota_check(&req)).await.map(Json)
}

async fn generate_key(
    State(hub): State<Hub>,
    Json(req): Json<GenerateAccessKeyRequest>,
) -> Result<Json<GenerateAccessKeyResponse>, StoreError> {
    on_store(&hub, move |s| s.generate_key(&req))
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct ServiceQuery {
    service: Option<String>,
}

async fn list_keys(
    State(hub): State<Hub>,
    Query(q): Query<ServiceQuery>,
) -> Json<ListAccessKeysResponse> {
    Json(on_store(&hub, move |s| s.list_keys(q.service.as_deref())).await)
}

async fn get_key(
    State(hub): State<Hub>,
    Path(id): Path<Uuid>,
) -> Result<Json<AccessKeyInfo>, StoreError> {
    on_store(&hub, move |s| s.get_key(&id)).await.map(Json)
}

async fn revoke_key(
    State(hub): State<Hub>,
    Path(id): Path<Uuid>,
) -> Result<Json<RevokeAccessKeyResponse>, StoreError> {
    on_store(&hub, move |s| s.revoke_key(&id)).await.map(Json)
}

async fn validate_key(
    State(hub): State<Hub>,
    Json(req): Json<ValidateKeyRequest>,
) -> Json<ValidateKeyResponse> {
    Json(on_store(&hub, move |s| s.validate_key(&req)).await)
}

async fn register_mcp(
    State(hub): State<Hub>,
    Json(req): Json<RegisterMcpServer>,
) -> Result<Json<RegisterMcpResponse>, StoreError> {
    on_store(&hub, move |s| s.register_mcp(&req))
        .await
        .map(Json)
}

async fn deregister_mcp(
    State(hub): State<Hub>,
    Path(id): Path<Uuid>,
) -> Result<Json<serde_json::Value>, StoreError> {
    on_store(&hub, move |s| s.deregister_mcp(&id))
        .await
        .map(|_| Json(json!({"success": true})))
}

/// The Hub's routes over `store`, accepting callers that present `service_key`.
pub fn router(store: Arc<HubStore>, service_key: &str) -> Router {
    let hub = Hub {
        store,
        service_key: service_key.into(),
        calls: Default::default(),
        faults: Default::default(),
    };
    let v = "/api/internal/vectorizer";
    Router::new()
        .route("/health", get(health))
        .route("/api/dev/calls", get(calls))
        .route("/api/dev/faults", post(set_faults))
        .route(
            &format!("{v}/users/{{user_id}}/collections"),
            get(user_collections).post(create_collection),
        )
        .route(
            &format!("{v}/collections/{{collection_id}}/validate"),
            get(validate_collection),
        )
        .route(
            &format!("{v}/collections/{{collection_id}}/usage"),
            put(update_usage),
        )
        .route(
            &format!("{v}/collections/{{collection_id}}"),
            delete(delete_collection),
        )
        .route(&format!("{v}/quota"), post(quota))
        .route("/api/internal/access-keys/generate", post(generate_key))
        .route("/api/internal/access-keys/validate", post(validate_key))
        .route("/api/internal/access-keys", get(list_keys))
        .route(
            "/api/internal/access-keys/{access_key_id}",
            get(get_key).delete(revoke_key),
        )
        .route("/api/internal/mcp/servers", post(register_mcp))
        .route(
            "/api/internal/mcp/servers/{server_id}",
            delete(deregister_mcp),
        )
        .layer(axum::middleware::from_fn_with_state(hub.clone(), guard))
        .with_state(hub)
}
