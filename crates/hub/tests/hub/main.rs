//! The local Hub over real HTTP: the calls the SDK makes, through the real
//! `hivehub-internal-sdk` client, and the others through plain HTTP; and
//! Vectorizer's Hub client (`client`).

mod client;

use std::net::SocketAddr;
use std::sync::Arc;

use hivehub_internal_sdk::models::{
    AccessKeyPermission, CreateCollectionRequest, QuotaCheckRequest, ServiceType,
    UpdateUsageRequest,
};
use hivehub_internal_sdk::{HiveHubCloudClient, HiveHubCloudError};
use serde_json::{Value, json};
use uuid::Uuid;
use vectorizer_hub::store::{Plan, expires_in};
use vectorizer_hub::{HubStore, router};
use vectorizer_testkit::TempDir;
use vectorizer_testkit::http::Client;

const KEY: &str = "test-service-key";

async fn serve(store: Arc<HubStore>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router(store, KEY)).into_future());
    addr
}

fn setup(store: &HubStore, max_collections: u32) -> Uuid {
    store
        .create_plan(Plan {
            name: "small".into(),
            max_collections,
            max_vectors: 1000,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    store.create_user("a@example.com", "small").unwrap().id
}

/// Plain HTTP with the service key, off the async runtime.
async fn call(
    addr: SocketAddr,
    method: &'static str,
    path: String,
    body: Option<Value>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let mut c = Client::new(addr);
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = c
            .request(
                method,
                &path,
                bytes.as_deref(),
                &[("x-service-key", KEY), ("content-type", "application/json")],
            )
            .unwrap();
        (r.status, r.json())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sdk_calls_against_the_local_hub() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 2);
    let addr = serve(store.clone()).await;
    let hub = HiveHubCloudClient::new(KEY.into(), format!("http://{addr}")).unwrap();
    let v = hub.vectorizer();

    let project = Uuid::new_v4();
    let req = |name: &str| CreateCollectionRequest {
        collection_name: name.into(),
        project_id: project,
        dimension: 8,
    };
    let a = v.create_collection(&user, &req("docs")).await.unwrap();
    assert!(a.created);
    let again = v.create_collection(&user, &req("docs")).await.unwrap();
    assert_eq!(
        (again.collection_id, again.created),
        (a.collection_id, false)
    );
    v.create_collection(&user, &req("notes")).await.unwrap();
    // The plan allows two collections.
    assert!(matches!(
        v.create_collection(&user, &req("third")).await,
        Err(HiveHubCloudError::QuotaExceeded(_))
    ));

    let list = v.get_user_collections(&user).await.unwrap();
    assert_eq!(
        (
            list.total_collections,
            list.collection_limit,
            list.plan.as_str()
        ),
        (2, 2, "small")
    );

    let usage = v
        .update_usage(
            &a.collection_id,
            &UpdateUsageRequest {
                vector_count: 600,
                storage_bytes: 4096,
            },
        )
        .await
        .unwrap();
    assert!(usage.updated);
    assert_eq!(
        (
            usage.quota.current_vectors,
            usage.quota.max_vectors,
            usage.quota.can_insert
        ),
        (600, 1000, true)
    );
    // Absolute figures: a repeat changes nothing.
    let usage = v
        .update_usage(
            &a.collection_id,
            &UpdateUsageRequest {
                vector_count: 600,
                storage_bytes: 4096,
            },
        )
        .await
        .unwrap();
    assert!(!usage.updated);
    assert_eq!(store.usage_ledger().len(), 2);

    let valid = v
        .validate_collection(&a.collection_id, &user)
        .await
        .unwrap();
    assert!(valid.valid);
    let other = store.create_user("b@example.com", "small").unwrap().id;
    assert!(
        !v.validate_collection(&a.collection_id, &other)
            .await
            .unwrap()
            .valid
    );

    let q = |op: &str, n: Option<i64>| QuotaCheckRequest {
        project_id: user.to_string(),
        operation: op.into(),
        estimated_size: n,
    };
    let insert = v
        .check_quota(&q("insert_vectors", Some(400)))
        .await
        .unwrap();
    assert_eq!(
        (insert.allowed, insert.remaining, insert.limit),
        (true, Some(400), Some(1000))
    );
    assert!(
        !v.check_quota(&q("insert_vectors", Some(401)))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !v.check_quota(&q("create_collection", None))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        v.check_quota(&q("storage", Some(1000)))
            .await
            .unwrap()
            .allowed
    );

    // The SDK's key request carries no user: this Hub refuses it as bad.
    let keygen = hub
        .access_keys()
        .generate_vectorizer_key("k", vec![AccessKeyPermission::Read])
        .await;
    assert!(
        matches!(keygen, Err(HiveHubCloudError::BadRequest(_))),
        "{keygen:?}"
    );

    // A wrong service key is an authentication failure.
    let wrong = HiveHubCloudClient::new("nope".into(), format!("http://{addr}")).unwrap();
    assert!(matches!(
        wrong.vectorizer().get_user_collections(&user).await,
        Err(HiveHubCloudError::Authentication(_))
    ));
}

#[tokio::test]
async fn access_keys_validate_revoke_expire() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store.clone()).await;
    let keygen = |perms: Value, expires: Option<String>| json!({"service": "vectorizer", "name": "k", "permissions": perms, "user_id": user, "expires_at": expires});
    let (s, made) = call(
        addr,
        "POST",
        "/api/internal/access-keys/generate".into(),
        Some(keygen(json!(["read", "write"]), None)),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let key = made["access_key"].as_str().unwrap().to_owned();
    let id = made["access_key_id"].as_str().unwrap().to_owned();

    let validate = |k: String| {
        call(
            addr,
            "POST",
            "/api/internal/access-keys/validate".into(),
            Some(json!({"access_key": k, "service": "vectorizer"})),
        )
    };
    let (_, ok) = validate(key.clone()).await;
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["user_id"], user.to_string());
    assert_eq!(ok["permissions"], json!(["read", "write"]));
    assert_eq!(ok["plan"], "small");
    assert_eq!(ok["project_id"], Value::Null);
    let (_, unknown) = validate("hvk_nope".into()).await;
    assert_eq!(
        (unknown["valid"].clone(), unknown["reason"].clone()),
        (json!(false), json!("unknown"))
    );

    // The SDK lists, gets and revokes.
    let hub = HiveHubCloudClient::new(KEY.into(), format!("http://{addr}")).unwrap();
    let keys = hub
        .access_keys()
        .list(Some(ServiceType::Vectorizer))
        .await
        .unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert!(keys.keys[0].active);
    let kid: Uuid = id.parse().unwrap();
    assert!(
        hub.access_keys()
            .get(&kid)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );
    hub.access_keys().revoke(&kid).await.unwrap();
    let (_, revoked) = validate(key).await;
    assert_eq!(revoked["reason"], "revoked");
    assert!(!hub.access_keys().get(&kid).await.unwrap().active);
    assert!(matches!(
        hub.access_keys().get(&Uuid::new_v4()).await,
        Err(HiveHubCloudError::NotFound(_))
    ));

    let (_, soon) = call(
        addr,
        "POST",
        "/api/internal/access-keys/generate".into(),
        Some(keygen(json!(["admin"]), Some(expires_in(3)))),
    )
    .await;
    let soon_key = soon["access_key"].as_str().unwrap().to_owned();
    assert_eq!(validate(soon_key.clone()).await.1["valid"], true);
    // Expiry is written in whole seconds: 3 s from now is 2 to 3 s away.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(validate(soon_key).await.1["reason"], "expired");

    let (s, _) = call(
        addr,
        "POST",
        "/api/internal/access-keys/generate".into(),
        Some(json!({"service": "vectorizer", "name": "k", "permissions": []})),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn collections_mcp_health_and_auth() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store.clone()).await;
    let body = json!({"collection_name": "docs", "project_id": Uuid::new_v4(), "dimension": 4});
    let (_, made) = call(
        addr,
        "POST",
        format!("/api/internal/vectorizer/users/{user}/collections"),
        Some(body),
    )
    .await;
    let cid = made["collection_id"].as_str().unwrap().to_owned();
    let (s, out) = call(
        addr,
        "DELETE",
        format!("/api/internal/vectorizer/collections/{cid}"),
        None,
    )
    .await;
    assert_eq!((s, out), (200, json!({"success": true})));
    let (s, out) = call(
        addr,
        "DELETE",
        format!("/api/internal/vectorizer/collections/{cid}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(out["error"].is_string());

    let reg = json!({"service": "vectorizer", "node_id": "n1", "url": "http://127.0.0.1:1/mcp", "tools": [{"name": "search", "description": "d"}]});
    let (_, first) = call(
        addr,
        "POST",
        "/api/internal/mcp/servers".into(),
        Some(reg.clone()),
    )
    .await;
    let (_, second) = call(addr, "POST", "/api/internal/mcp/servers".into(), Some(reg)).await;
    assert_ne!(first["server_id"], second["server_id"]);
    assert_eq!(
        store.mcp_nodes(),
        vec!["n1".to_owned()],
        "re-registering replaces the entry"
    );
    let sid = second["server_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            addr,
            "DELETE",
            format!("/api/internal/mcp/servers/{sid}"),
            None
        )
        .await
        .0,
        200
    );
    assert!(store.mcp_nodes().is_empty());

    // Health needs no key; everything else does.
    let (s, h) = tokio::task::spawn_blocking(move || {
        let r = Client::new(addr)
            .request("GET", "/health", None, &[])
            .unwrap();
        (r.status, r.json())
    })
    .await
    .unwrap();
    assert_eq!((s, h), (200, json!({"status": "ok"})));
    let s = tokio::task::spawn_blocking(move || {
        Client::new(addr)
            .request("GET", "/api/internal/access-keys", None, &[])
            .unwrap()
            .status
    })
    .await
    .unwrap();
    assert_eq!(s, 401);
    let (_, counts) = call(addr, "GET", "/api/dev/calls".into(), None).await;
    assert_eq!(counts["DELETE /api/internal/mcp/servers/{server_id}"], 1);
}

#[test]
fn state_persists_and_holds_no_key_in_clear() {
    let dir = TempDir::new("hub");
    let path = dir.path().join("hub.json");
    let key = {
        let store = HubStore::open(&path).unwrap();
        let user = setup(&store, 3);
        let req = serde_json::from_value(
            json!({"service": "vectorizer", "name": "k", "permissions": ["read"], "user_id": user}),
        )
        .unwrap();
        store.generate_key(&req).unwrap().access_key
    };
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(!raw.contains(&key), "the key is stored in clear");
    let store = HubStore::open(&path).unwrap();
    assert_eq!(store.users().len(), 1);
    assert_eq!(store.plans()[0].max_collections, 3);
    let v = store.validate_key(
        &serde_json::from_value(json!({"access_key": key, "service": "vectorizer"})).unwrap(),
    );
    assert!(v.valid);
}

/// Two processes' stores on one file (a server with the local Hub inside,
/// and `hub-dev`) changing it at once: every change of both is kept.
#[test]
fn two_stores_on_one_file_lose_no_change() {
    let dir = TempDir::new("hub-two-writers");
    let path = dir.path().join("hub.json");
    let stores = [
        Arc::new(HubStore::open(&path).unwrap()),
        Arc::new(HubStore::open(&path).unwrap()),
    ];
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .flat_map(|(s, store)| {
            (0..4).map(move |t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store
                            .create_plan(Plan {
                                name: format!("p{s}-{t}-{i}"),
                                max_collections: 1,
                                max_vectors: 1,
                                max_storage_bytes: 1,
                            })
                            .unwrap();
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fresh = HubStore::open(&path).unwrap();
    assert_eq!(fresh.plans().len(), 2 * 4 * 25);
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
