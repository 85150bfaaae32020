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
    let (_, b) = app
        .call(
            "POST",
            "/collections",
            Some(json!({"name": "d", "dimension": "3", "metric": "dot"})),
        )
        .await;
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("`dimension`: got the string"), "{msg}");
    let (_, b) = app
        .call(
            "POST",
            "/collections/c/points",
            Some(json!({"points": [{"id": 1, "vector": [1, 2], "payload": [1]}]})),
        )
        .await;
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`points[0].payload`") && msg.contains("an object"),
        "{msg}"
    );
    let (_, _, b) = app
        .send(
            "POST",
            "/collections",
            Some(("application/json", b"not json".to_vec())),
        )
        .await;
    assert_eq!(
        b["error"]["message"],
        "the body is not valid JSON (line 1, column 2)"
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
    // Metrics are the deployment's: either of its keys opens them (the
    // read-only one is what a scraper holds).
    assert_eq!(app.get_text("/metrics", &[]).await.0, 401);
    for k in [rw, ro] {
        let (s, _, _) = app
            .get_text("/metrics", &[("authorization", &format!("Bearer {k}"))])
            .await;
        assert_eq!(s, 200);
    }
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

/// Delete by filter; set, overwrite and delete payload keys by ids or by
/// filter; change `ef_search`. Each keeps to the caller's collections, its
/// permissions and its storage quota.
#[tokio::test]
async fn points_by_filter_payload_changes_and_search_parameters() {
    let hub = hub().await;
    hub.store
        .create_plan(vectorizer_hub::store::Plan {
            name: "small".into(),
            max_collections: 5,
            max_vectors: 1000,
            max_storage_bytes: 20_000,
        })
        .unwrap();
    let user = hub
        .store
        .create_user("ops@example.com", "small")
        .unwrap()
        .id;
    let other = hub
        .store
        .create_user("other@example.com", "small")
        .unwrap()
        .id;
    let (k, _) = crate::hub_auth::key(&hub.store, user, &["admin"], None);
    let (ro, _) = crate::hub_auth::key(&hub.store, user, &["read"], None);
    let (o, _) = crate::hub_auth::key(&hub.store, other, &["admin"], None);
    let app = TestApp::with_auth(crate::hub_auth::auth(hub.addr, Duration::from_secs(60)));
    let made = json!({"name": "c", "dimension": 2, "metric": "euclidean", "payload_index": ["g"]});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(made)).await,
        201
    );
    let pts: Vec<_> = (0..20)
        .map(|i| json!({"id": i, "vector": [i as f32, 1.0], "payload": {"g": i % 2, "tag": "t"}}))
        .collect();
    let s = status(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&k),
        Some(json!({"points": pts})),
    )
    .await;
    assert_eq!(s, 200);
    let count = async |filter: serde_json::Value| {
        send(
            &app,
            "POST",
            "/collections/c/points/count",
            bearer(&k),
            Some(json!({"filter": filter})),
        )
        .await
        .1["count"]
            .as_u64()
            .unwrap()
    };
    // Set a key on the odd points, by filter.
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points/payload",
        bearer(&k),
        Some(json!({"payload": {"odd": true}, "filter": {"must": [{"key": "g", "match": {"value": 1}}]}})),
    )
    .await;
    assert_eq!((s, b["updated"].as_u64()), (200, Some(10)), "{b}");
    assert_eq!(
        count(json!({"must": [{"key": "odd", "match": {"value": true}}]})).await,
        10
    );
    // Overwrite two points by id: their other keys are gone, and the
    // payload index answers with the new values.
    let (s, b) = send(
        &app,
        "PUT",
        "/collections/c/points/payload",
        bearer(&k),
        Some(json!({"payload": {"g": 7}, "ids": [0, 1, 999]})),
    )
    .await;
    assert_eq!((s, b["updated"].as_u64()), (200, Some(2)), "{b}");
    assert_eq!(
        count(json!({"must": [{"key": "g", "match": {"value": 7}}]})).await,
        2
    );
    assert_eq!(
        count(json!({"must": [{"key": "g", "match": {"value": 1}}]})).await,
        9
    );
    let (_, p) = send(&app, "GET", "/collections/c/points/1", bearer(&k), None).await;
    assert_eq!(p["payload"], json!({"g": 7}));
    // Remove a key everywhere.
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points/payload/delete",
        bearer(&k),
        Some(json!({"keys": ["tag"], "filter": {}})),
    )
    .await;
    assert_eq!((s, b["updated"].as_u64()), (200, Some(20)), "{b}");
    assert_eq!(
        count(json!({"must": [{"key": "tag", "match": {"value": "t"}}]})).await,
        0
    );
    // An empty filter would delete every point: refused.
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points/delete",
        bearer(&k),
        Some(json!({"filter": {}})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    assert_eq!(count(json!({})).await, 20);
    // Delete by filter.
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points/delete",
        bearer(&k),
        Some(json!({"filter": {"must": [{"key": "odd", "match": {"value": true}}]}})),
    )
    .await;
    assert_eq!((s, b["deleted"].as_u64()), (200, Some(9)), "{b}");
    assert_eq!(count(json!({})).await, 11);
    // Exactly one of ids and filter.
    for body in [
        json!({"payload": {"a": 1}}),
        json!({"payload": {"a": 1}, "ids": [1], "filter": {}}),
    ] {
        let (s, b) = send(
            &app,
            "POST",
            "/collections/c/points/payload",
            bearer(&k),
            Some(body),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (422, Some("invalid_request"))
        );
    }
    // ef_search changes; bad values change nothing.
    let (s, d) = send(
        &app,
        "PATCH",
        "/collections/c",
        bearer(&k),
        Some(json!({"hnsw": {"ef_search": 200}})),
    )
    .await;
    assert_eq!(
        (s, d["hnsw"]["ef_search"].as_u64()),
        (200, Some(200)),
        "{d}"
    );
    let (s, _) = send(
        &app,
        "PATCH",
        "/collections/c",
        bearer(&k),
        Some(json!({"hnsw": {"ef_search": 0}})),
    )
    .await;
    assert_eq!(s, 422);
    let (_, d) = send(&app, "GET", "/collections/c", bearer(&k), None).await;
    assert_eq!(d["hnsw"]["ef_search"], 200);
    // Permissions and tenancy.
    let change = json!({"payload": {"x": 1}, "filter": {}});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points/payload",
            bearer(&ro),
            Some(change.clone())
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points/payload",
            bearer(&o),
            Some(change)
        )
        .await,
        404
    );
    // The storage quota holds for payload growth: nothing changes when refused.
    let big = json!({"payload": {"blob": "x".repeat(900)}, "filter": {}});
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points/payload",
        bearer(&k),
        Some(big),
    )
    .await;
    assert_eq!(
        (s, b["error"]["quota"].as_str()),
        (429, Some("storage")),
        "{b}"
    );
    assert_eq!(
        count(json!({"must": [{"key": "blob", "match": {"any": ["x"]}}]})).await,
        0
    );
    let (_, p) = send(&app, "GET", "/collections/c/points/0", bearer(&k), None).await;
    assert!(p["payload"].get("blob").is_none());
    hub.task.abort();
}

/// Aliases: a second name, moved atomically to publish a rebuilt
/// collection; all actions of a request or none; per tenant.
#[tokio::test]
async fn aliases_publish_a_rebuilt_collection_atomically() {
    let hub = hub().await;
    let a = hub.store.create_user("al1@example.com", "p").unwrap().id;
    let b = hub.store.create_user("al2@example.com", "p").unwrap().id;
    let (ka, _) = crate::hub_auth::key(&hub.store, a, &["admin"], None);
    let (kb, _) = crate::hub_auth::key(&hub.store, b, &["admin"], None);
    let app = TestApp::with_auth(crate::hub_auth::auth(hub.addr, Duration::from_secs(60)));
    for (name, v) in [("v1", 1.0), ("v2", 2.0)] {
        let made = json!({"name": name, "dimension": 2, "metric": "euclidean"});
        assert_eq!(
            status(&app, "POST", "/collections", bearer(&ka), Some(made)).await,
            201
        );
        let pts = json!({"points": [{"id": 1, "vector": [v, 0.0], "payload": {"v": name}}]});
        let path = format!("/collections/{name}/points");
        assert_eq!(
            status(&app, "POST", &path, bearer(&ka), Some(pts)).await,
            200
        );
    }
    let point = async |k: &str| {
        let (s, p) = send(&app, "GET", "/collections/live/points/1", bearer(k), None).await;
        (s, p["payload"]["v"].as_str().map(str::to_owned))
    };
    let act = |actions: serde_json::Value| json!({"actions": actions});
    let (s, l) = send(
        &app,
        "POST",
        "/aliases",
        bearer(&ka),
        Some(act(
            json!([{"create_alias": {"alias": "live", "collection": "v1"}}]),
        )),
    )
    .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(point(&ka).await, (200, Some("v1".to_owned())));
    // Through the alias, the collection says its own name.
    let (_, d) = send(&app, "GET", "/collections/live", bearer(&ka), None).await;
    assert_eq!(d["name"], "v1");
    // The swap is one request.
    let (s, _) = send(
        &app,
        "POST",
        "/aliases",
        bearer(&ka),
        Some(act(
            json!([{"create_alias": {"alias": "live", "collection": "v2"}}]),
        )),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(point(&ka).await, (200, Some("v2".to_owned())));
    // All or nothing: a bad second action leaves the first undone.
    let (s, b2) = send(
        &app,
        "POST",
        "/aliases",
        bearer(&ka),
        Some(act(json!([{"create_alias": {"alias": "live", "collection": "v1"}}, {"delete_alias": {"alias": "nope"}}]))),
    )
    .await;
    assert_eq!(
        (s, b2["error"]["code"].as_str()),
        (404, Some("alias_not_found"))
    );
    assert_eq!(point(&ka).await, (200, Some("v2".to_owned())));
    // An alias cannot shadow a collection, nor point at another tenant's.
    let (s, _) = send(
        &app,
        "POST",
        "/aliases",
        bearer(&ka),
        Some(act(
            json!([{"create_alias": {"alias": "v1", "collection": "v2"}}]),
        )),
    )
    .await;
    assert_eq!(s, 409);
    let made = json!({"name": "live", "dimension": 2, "metric": "dot"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&ka), Some(made)).await,
        409
    );
    let (s, _) = send(
        &app,
        "POST",
        "/aliases",
        bearer(&kb),
        Some(act(
            json!([{"create_alias": {"alias": "mine", "collection": "v2"}}]),
        )),
    )
    .await;
    assert_eq!(s, 404);
    // Another tenant neither sees nor uses it.
    assert_eq!(point(&kb).await.0, 404);
    let (_, lb) = send(&app, "GET", "/aliases", bearer(&kb), None).await;
    assert_eq!(lb, json!({"aliases": []}));
    let (_, la) = send(&app, "GET", "/aliases", bearer(&ka), None).await;
    assert_eq!(
        la,
        json!({"aliases": [{"alias": "live", "collection": "v2"}]})
    );
    // Deleting the collection takes its alias along.
    assert_eq!(
        status(&app, "DELETE", "/collections/v2", bearer(&ka), None).await,
        200
    );
    assert_eq!(point(&ka).await.0, 404);
    let (_, la) = send(&app, "GET", "/aliases", bearer(&ka), None).await;
    assert_eq!(la, json!({"aliases": []}));
    // At most 100 aliases a tenant.
    let many: Vec<_> = (0..100)
        .map(|i| json!({"create_alias": {"alias": format!("a{i}"), "collection": "v1"}}))
        .collect();
    assert_eq!(
        status(
            &app,
            "POST",
            "/aliases",
            bearer(&ka),
            Some(act(json!(many)))
        )
        .await,
        200
    );
    let one = act(json!([{"create_alias": {"alias": "a100", "collection": "v1"}}]));
    let (s, b) = send(&app, "POST", "/aliases", bearer(&ka), Some(one)).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    hub.task.abort();
}

/// Refusals say what happened: a name taken by an alias or a collection,
/// an alias deleted as a collection, a route that does not exist.
#[tokio::test]
async fn refusals_name_what_is_in_the_way() {
    let app = TestApp::new();
    let made = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(app.call("POST", "/collections", Some(made)).await.0, 201);
    let alias = json!({"actions": [{"create_alias": {"alias": "al", "collection": "c"}}]});
    assert_eq!(app.call("POST", "/aliases", Some(alias)).await.0, 200);

    let (s, b) = app
        .call(
            "POST",
            "/collections",
            Some(json!({"name": "al", "dimension": 2, "metric": "dot"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("alias_exists"))
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is an alias"),
        "{b}"
    );

    let over = json!({"actions": [{"create_alias": {"alias": "c", "collection": "c"}}]});
    let (s, b) = app.call("POST", "/aliases", Some(over)).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("collection_exists"))
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("an alias cannot take"),
        "{b}"
    );

    // GET reads through the alias; DELETE says why it will not.
    assert_eq!(app.call("GET", "/collections/al", None).await.0, 200);
    let (s, b) = app.call("DELETE", "/collections/al", None).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("is_alias"))
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alias of `c`"),
        "{b}"
    );
    assert_eq!(app.call("GET", "/collections/c", None).await.0, 200);

    // No such route, whatever its shape; a real route with another method.
    let (s, b) = app
        .call("POST", "/collections/c/points/recommend", Some(json!({})))
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, b) = app
        .call("POST", "/collections/c/points/5", Some(json!({})))
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // A path part that is not UTF-8: a JSON 400 like any other refusal.
    for path in [
        "/collections/%FF",
        "/collections/c/points/%FF",
        "/api/hub/backups/%FF",
    ] {
        let (s, b) = app.call("GET", path, None).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (400, Some("invalid_path")),
            "{path}"
        );
    }
}
