//! What a newcomer meets: optional bodies, refused query strings, the
//! single-tenant API keys, and a wrong service key told apart from an
//! outage.

use std::time::Duration;

use serde_json::json;

use crate::common::{AppOptions, TestApp};
use crate::hub_auth::{NODE, SIGNING, auth_custom, bearer, hub, send, status};

#[tokio::test]
async fn count_and_scroll_need_no_body_and_queries_are_refused() {
    let app = TestApp::new();
    let made = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(app.call("POST", "/collections", Some(made)).await.0, 201);
    for path in [
        "/collections/c/points/count",
        "/collections/c/points/scroll",
    ] {
        let (s, _, b) = app.send("POST", path, None).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let (s, b) = app.call("GET", "/collections?with_vector=true", None).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    // A body that is there must still say it is JSON.
    let (s, _, _) = app
        .send(
            "POST",
            "/collections/c/points/count",
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    assert_eq!(s, 415);
    // Type errors speak of the input, not of Rust's types.
    let (s, b) = app
        .call(
            "POST",
            "/collections/c/points/scroll",
            Some(json!({"limit": -1})),
        )
        .await;
    let msg = b["error"]["message"].as_str().unwrap();
    assert_eq!(s, 400);
    assert!(
        msg.contains("non-negative integer") && !msg.contains("usize"),
        "{msg}"
    );
}

/// With the Hub off and the deployment's keys set, every route but
/// `/health` needs one; the read-only key only reads.
#[tokio::test]
async fn single_tenant_keys_guard_every_route_but_health() {
    let (rw, ro) = ("rw-key-0123456789abcdef", "ro-key-0123456789abcdef");
    let app = TestApp::build(AppOptions {
        local_keys: Some((rw, ro)),
        metrics: vectorizer_server::metrics::MetricsOptions {
            public: false,
            tenant_labels: None,
        },
        ..AppOptions::default()
    });
    let made = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(status(&app, "GET", "/health", None, None).await, 200);
    for (key, want) in [
        (None, 401),
        (bearer("wrong-key-0123456789"), 401),
        (bearer(ro), 403),
    ] {
        let (s, b) = send(&app, "POST", "/collections", key, Some(made.clone())).await;
        assert_eq!(s, want, "{b}");
    }
    assert_eq!(
        status(&app, "POST", "/collections", bearer(rw), Some(made)).await,
        201
    );
    for k in [rw, ro] {
        assert_eq!(
            status(&app, "GET", "/collections/c", bearer(k), None).await,
            200
        );
    }
    assert_eq!(status(&app, "GET", "/collections", None, None).await, 401);
    assert_eq!(status(&app, "GET", "/openapi.json", None, None).await, 401);
    assert_eq!(
        status(&app, "DELETE", "/collections/c", bearer(ro), None).await,
        403
    );
    // Metrics are the operator's: a deployment key opens them.
    assert_eq!(app.get_text("/metrics", &[]).await.0, 401);
    let (s, _, _) = app
        .get_text("/metrics", &[("authorization", &format!("Bearer {rw}"))])
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        status(&app, "DELETE", "/collections/c", bearer(rw), None).await,
        200
    );
}

/// A Hub that answers but refuses the service key is `key_refused`, not
/// an outage.
#[tokio::test]
async fn a_wrong_service_key_is_not_an_outage() {
    let hub = hub().await;
    let mut cfg = vectorizer_hub::HubClientConfig::new(
        format!("http://{}", hub.addr),
        vectorizer_hub::Secret::new("not-the-service-key".into()),
    );
    cfg.retries = 0;
    let client = std::sync::Arc::new(vectorizer_hub::HubClient::new(cfg).unwrap());
    assert_eq!(
        client.check_health().await,
        vectorizer_hub::HubHealth::KeyRefused
    );
    let opts = vectorizer_server::auth::AuthOptions {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(60),
        grace: Duration::from_secs(300),
        capacity: 100,
        max_failures: 100,
        failure_window: Duration::from_secs(60),
    };
    let verifier =
        vectorizer_server::internal::Verifier::new(Some(SIGNING), Some(NODE), None).unwrap();
    let auth = std::sync::Arc::new(vectorizer_server::auth::Auth::new(client, opts, verifier));
    let app = TestApp::build(AppOptions {
        auth: Some(auth.clone()),
        operator: Some("operator-token-0123456789"),
        ..AppOptions::default()
    });
    let (s, _, h) = app
        .get_text(
            "/health",
            &[("authorization", "Bearer operator-token-0123456789")],
        )
        .await;
    assert_eq!(s, 200);
    assert!(h.contains("\"hub\":\"key_refused\""), "{h}");
    // Tenants cannot be checked meanwhile: 503, never a 401 for their key.
    let (s, b) = send(&app, "GET", "/collections", bearer("hvk_any"), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("hub_unavailable"))
    );
    // With the right key the same Hub is up.
    let right = auth_custom(
        hub.addr,
        opts,
        vectorizer_server::internal::Verifier::refusing(),
    );
    assert_eq!(
        right.hub().check_health().await,
        vectorizer_hub::HubHealth::Up
    );
    hub.task.abort();
}
