//! Vectorizer's Hub client against the local Hub, with injected faults.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vectorizer_hub::{HubClient, HubClientConfig, HubError, HubHealth, HubStore, Secret};

use crate::{KEY, call, serve, setup};

fn client(addr: std::net::SocketAddr, f: impl FnOnce(&mut HubClientConfig)) -> HubClient {
    let mut cfg = HubClientConfig::new(format!("http://{addr}"), Secret::new(KEY.into()));
    cfg.backoff = Duration::from_millis(10);
    f(&mut cfg);
    HubClient::new(cfg).unwrap()
}

async fn faults(addr: std::net::SocketAddr, f: Value) {
    assert_eq!(
        call(addr, "POST", "/api/dev/faults".into(), Some(f))
            .await
            .0,
        200
    );
}

async fn hits(addr: std::net::SocketAddr, route: &str) -> u64 {
    call(addr, "GET", "/api/dev/calls".into(), None).await.1[route]
        .as_u64()
        .unwrap_or(0)
}

const COLLECTIONS: &str = "GET /api/internal/vectorizer/users/{user_id}/collections";

#[tokio::test]
async fn retries_transient_failures_and_never_4xx() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store).await;
    let c = client(addr, |c| c.retries = 3);

    faults(addr, json!({"status": 500, "count": 2})).await;
    let list = c.user_collections(&user).await.unwrap();
    assert_eq!(list.plan, "small");
    assert_eq!(
        hits(addr, COLLECTIONS).await,
        3,
        "two failures, then the success"
    );
    assert_eq!(c.retries(), 2);

    for (status, want) in [
        (400, "refused"),
        (401, "refused"),
        (404, "not_found"),
        (429, "quota"),
    ] {
        let before = hits(addr, COLLECTIONS).await;
        faults(addr, json!({"status": status, "count": 1})).await;
        let e = c.user_collections(&user).await.unwrap_err();
        let kind = match e {
            HubError::Refused(_) => "refused",
            HubError::NotFound(_) => "not_found",
            HubError::QuotaExceeded(_) => "quota",
            other => panic!("{status}: {other:?}"),
        };
        assert_eq!(kind, want);
        assert_eq!(
            hits(addr, COLLECTIONS).await,
            before + 1,
            "a {status} is never retried"
        );
    }
    assert_eq!(c.retries(), 2);

    // Exhausted retries answer unavailable after retries + 1 attempts.
    let before = hits(addr, COLLECTIONS).await;
    faults(addr, json!({"status": 503, "count": 10})).await;
    assert!(matches!(
        c.user_collections(&user).await,
        Err(HubError::Unavailable(_))
    ));
    assert_eq!(hits(addr, COLLECTIONS).await, before + 4);
    // The service key appears in no error or debug output.
    assert!(!format!("{c:?}").contains(KEY));
}

#[tokio::test]
async fn a_slow_hub_times_out_and_is_retried() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store).await;
    let c = client(addr, |c| {
        c.timeout = Duration::from_millis(300);
        c.retries = 1;
    });
    faults(addr, json!({"delay_ms": 1500, "count": 1})).await;
    c.user_collections(&user).await.unwrap();
    // The first attempt was cut off by the timeout (else it would have
    // succeeded, late), and the retry succeeded.
    assert_eq!(c.outcomes()[&("user_collections", "transient")], 1);
    assert_eq!(c.outcomes()[&("user_collections", "ok")], 1);
}

#[tokio::test]
async fn an_open_circuit_fails_fast_and_health_closes_it() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store).await;
    let c = client(addr, |c| {
        c.retries = 0;
        c.breaker_threshold = 3;
        c.breaker_cooldown = Duration::from_secs(600);
    });
    faults(addr, json!({"status": 500, "count": 3})).await;
    for _ in 0..3 {
        assert!(c.user_collections(&user).await.is_err());
    }
    assert!(c.circuit_open());
    let before = hits(addr, COLLECTIONS).await;
    assert!(matches!(
        c.user_collections(&user).await,
        Err(HubError::Unavailable(_))
    ));
    assert_eq!(
        hits(addr, COLLECTIONS).await,
        before,
        "an open circuit does not call the hub"
    );
    assert_eq!(c.outcomes()[&("user_collections", "circuit_open")], 1);
    // A successful health check closes it: the hub is used again at once.
    assert_eq!(c.check_health().await, HubHealth::Up);
    assert!(!c.circuit_open());
    c.user_collections(&user).await.unwrap();
}

#[tokio::test]
async fn health_follows_the_hub_down_and_back() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(listener, vectorizer_hub::router(store.clone(), KEY)).into_future(),
    );
    let c = client(addr, |c| {
        c.timeout = Duration::from_millis(500);
        c.retries = 0;
    });
    assert_eq!(c.check_health().await, HubHealth::Up);
    server.abort();
    let _ = server.await;
    assert_eq!(c.check_health().await, HubHealth::Degraded);
    assert_eq!(c.check_health().await, HubHealth::Down);
    assert!(matches!(
        c.user_collections(&user).await,
        Err(HubError::Unavailable(_))
    ));
    // Back on the same address.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(axum::serve(listener, vectorizer_hub::router(store, KEY)).into_future());
    assert_eq!(c.check_health().await, HubHealth::Up);
    c.user_collections(&user).await.unwrap();
}

#[tokio::test]
async fn calls_outside_the_sdk() {
    let store = Arc::new(HubStore::in_memory());
    let user = setup(&store, 5);
    let addr = serve(store.clone()).await;
    let c = client(addr, |_| {});
    let req = serde_json::from_value(
        json!({"service": "vectorizer", "name": "k", "permissions": ["read"], "user_id": user}),
    )
    .unwrap();
    let key = store.generate_key(&req).unwrap().access_key;
    let v = c.validate_key(&key).await.unwrap();
    assert!(v.valid);
    assert_eq!(v.user_id, Some(user));
    let bad = c.validate_key("hvk_unknown").await.unwrap();
    assert_eq!((bad.valid, bad.reason.as_deref()), (false, Some("unknown")));

    let made = c
        .create_collection(&user, "docs", uuid::Uuid::new_v4(), 8)
        .await
        .unwrap();
    c.update_usage(&made.collection_id, 5, 100).await.unwrap();
    assert!(
        c.check_quota(&user, "insert_vectors", Some(10))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        c.validate_collection(&made.collection_id, &user)
            .await
            .unwrap()
            .valid
    );
    c.delete_collection(&made.collection_id).await.unwrap();
    assert!(matches!(
        c.delete_collection(&made.collection_id).await,
        Err(HubError::NotFound(_))
    ));

    let sid = c
        .register_mcp("node-1", "http://127.0.0.1:1/mcp", vec![])
        .await
        .unwrap();
    c.deregister_mcp(&sid).await.unwrap();
    assert!(store.mcp_nodes().is_empty());

    let wrong = HubClient::new(HubClientConfig::new(
        format!("http://{addr}"),
        Secret::new("nope".into()),
    ))
    .unwrap();
    assert!(matches!(
        wrong.validate_key(&key).await,
        Err(HubError::Refused(_))
    ));
}
