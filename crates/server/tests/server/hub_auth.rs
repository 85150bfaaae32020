//! Access-key authentication over real HTTP against the local Hub.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use vectorizer_hub::store::{Plan, expires_in};
use vectorizer_hub::{HubClient, HubClientConfig, HubStore, Secret};
use vectorizer_server::auth::{Auth, AuthOptions};

use crate::common::TestApp;

pub const KEY: &str = "svc-key";
/// The secret signed calls from the Hub are signed with, and this node's id.
pub const SIGNING: &str = "signing-secret";
pub const NODE: &str = "node-a";

pub(crate) struct Hub {
    pub store: Arc<HubStore>,
    pub addr: std::net::SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn hub() -> Hub {
    let store = Arc::new(HubStore::in_memory());
    store
        .create_plan(Plan {
            name: "p".into(),
            max_collections: 10,
            max_vectors: 1000,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = vectorizer_hub::router(store.clone(), KEY);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Hub { store, addr, task }
}

pub(crate) fn key(
    store: &HubStore,
    user: uuid::Uuid,
    perms: &[&str],
    expires: Option<String>,
) -> (String, uuid::Uuid) {
    let req = serde_json::from_value(json!({"service": "vectorizer", "name": "k", "permissions": perms, "user_id": user, "expires_at": expires})).unwrap();
    let made = store.generate_key(&req).unwrap();
    (made.access_key, made.access_key_id)
}

pub(crate) fn auth(addr: std::net::SocketAddr, ttl: Duration) -> Arc<Auth> {
    auth_with(addr, ttl, 1000)
}

pub(crate) fn auth_with(addr: std::net::SocketAddr, ttl: Duration, max_failures: u32) -> Arc<Auth> {
    auth_custom(
        addr,
        AuthOptions {
            ttl,
            negative_ttl: ttl,
            grace: Duration::from_secs(300),
            capacity: 100,
            max_failures,
            failure_window: Duration::from_secs(60),
        },
        vectorizer_server::internal::Verifier::new(Some(SIGNING), Some(NODE), None).unwrap(),
    )
}

/// Authentication against the Hub at `addr` with the options given.
pub(crate) fn auth_custom(
    addr: std::net::SocketAddr,
    opts: AuthOptions,
    verifier: vectorizer_server::internal::Verifier,
) -> Arc<Auth> {
    let mut cfg = HubClientConfig::new(format!("http://{addr}"), Secret::new(KEY.into()));
    cfg.timeout = Duration::from_millis(500);
    cfg.retries = 0;
    cfg.backoff = Duration::from_millis(5);
    let client = Arc::new(HubClient::new(cfg).unwrap());
    Arc::new(Auth::new(client, opts, verifier))
}

pub(crate) async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    header: Option<(&str, String)>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some((h, v)) = header {
        req = req.header(h, v);
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let (s, _, json) = app.raw(req.body(body).unwrap()).await;
    (s.as_u16(), json)
}

/// The status `send` gets.
pub(crate) async fn status(
    app: &TestApp,
    method: &str,
    path: &str,
    header: Option<(&str, String)>,
    body: Option<Value>,
) -> u16 {
    send(app, method, path, header, body).await.0
}

/// Waits until `cond` holds (at most 10 s).
pub(crate) async fn eventually(cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held");
}

pub(crate) fn bearer(k: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {k}")))
}

pub(crate) async fn validations(addr: std::net::SocketAddr) -> u64 {
    hub_calls(addr, "POST /api/internal/access-keys/validate").await
}

/// How many calls the Hub at `addr` has received on `route`.
pub(crate) async fn hub_calls(addr: std::net::SocketAddr, route: &'static str) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut c = vectorizer_testkit::http::Client::new(addr);
        let r = c
            .request("GET", "/api/dev/calls", None, &[("x-service-key", KEY)])
            .unwrap();
        r.json()[route].as_u64().unwrap_or(0)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn keys_permissions_and_isolation() {
    let hub = hub().await;
    let alice = hub.store.create_user("alice@example.com", "p").unwrap().id;
    let bob = hub.store.create_user("bob@example.com", "p").unwrap().id;
    let (rw, _) = key(&hub.store, alice, &["read", "write", "delete"], None);
    let (ro, _) = key(&hub.store, alice, &["read"], None);
    let (bobs, _) = key(&hub.store, bob, &["admin"], None);
    let (revoked, revoked_id) = key(&hub.store, alice, &["read"], None);
    hub.store.revoke_key(&revoked_id).unwrap();
    let (expired, _) = key(&hub.store, alice, &["read"], Some(expires_in(1)));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));

    // Every route but /health needs a key, the API document included.
    assert_eq!(status(&app, "GET", "/openapi.json", None, None).await, 401);
    assert_eq!(
        status(&app, "GET", "/openapi.json", bearer(&ro), None).await,
        200
    );
    // Health needs no key and shows liveness only.
    let (s, h) = send(&app, "GET", "/health", None, None).await;
    assert_eq!((s, h), (200, json!({"status": "ok"})));

    // One answer for every way a key can be wrong.
    let mut bodies = Vec::new();
    for header in [
        None,
        bearer("hvk_unknown"),
        bearer(&revoked),
        bearer(&expired),
        Some(("authorization", "Basic abc".into())),
    ] {
        let (s, b) = send(&app, "GET", "/collections", header, None).await;
        assert_eq!(s, 401, "{b}");
        bodies.push(b);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0]["error"]["code"], "unauthorized");

    // The three headers a key may come in.
    let create = json!({"name": "docs", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections",
            bearer(&rw),
            Some(create.clone())
        )
        .await,
        201
    );
    let pts = json!({"points": [{"id": 1, "vector": [1, 0]}]});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/docs/points",
            Some(("x-api-key", rw.clone())),
            Some(pts)
        )
        .await,
        200
    );
    let q = json!({"vector": [1, 0], "limit": 3});
    let (s, hits) = send(
        &app,
        "POST",
        "/collections/docs/search",
        Some(("api-key", rw.clone())),
        Some(q.clone()),
    )
    .await;
    assert_eq!(
        (s, hits["results"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    // A read-only key reads, and is refused a write before its body is read.
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/docs/search",
            bearer(&ro),
            Some(q.clone())
        )
        .await,
        200
    );
    let mut req = Request::builder()
        .method("POST")
        .uri("/collections/docs/points");
    req = req
        .header("authorization", format!("Bearer {ro}"))
        .header("content-type", "application/json");
    let (s, _, b) = app.raw(req.body(Body::from("{not json")).unwrap()).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // Bob has his own `docs`; Alice's is a 404 to him, like a missing one.
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&bobs), Some(create)).await,
        201
    );
    let (_, bob_hits) = send(
        &app,
        "POST",
        "/collections/docs/search",
        bearer(&bobs),
        Some(q),
    )
    .await;
    assert_eq!(bob_hits["results"], json!([]));
    let (_, list) = send(&app, "GET", "/collections", bearer(&bobs), None).await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 1);
    let (s1, missing) = send(&app, "GET", "/collections/nothing", bearer(&bobs), None).await;
    assert_eq!(
        status(&app, "DELETE", "/collections/docs", bearer(&bobs), None).await,
        200
    );
    let (s2, alices) = send(&app, "GET", "/collections/docs", bearer(&bobs), None).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(missing["error"]["code"], alices["error"]["code"]);
    let (s, still) = send(&app, "GET", "/collections/docs", bearer(&rw), None).await;
    assert_eq!((s, still["points"].as_u64()), (200, Some(1)));
    hub.task.abort();
}

#[tokio::test]
async fn a_burst_with_one_new_key_makes_one_hub_call() {
    let hub = hub().await;
    let user = hub.store.create_user("c@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["read"], None);
    let app = Arc::new(TestApp::with_auth(auth(hub.addr, Duration::from_secs(60))));
    let before = validations(hub.addr).await;
    // Within the tenant's share of requests in flight (64 by default).
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let (app, k) = (app.clone(), k.clone());
            tokio::spawn(async move { status(&app, "GET", "/collections", bearer(&k), None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(validations(hub.addr).await - before, 1);
    hub.task.abort();
}

/// A burst larger than the failure limit, with one new key, is one
/// attempt: a valid key lets every request in, a refused one is one
/// failure for its address, and no request of the burst gets 429.
#[tokio::test]
async fn a_burst_with_a_new_key_counts_as_one_attempt() {
    let hub = hub().await;
    let user = hub.store.create_user("burst@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["read"], None);
    let app = Arc::new(TestApp::with_auth(auth_with(
        hub.addr,
        Duration::from_secs(60),
        5,
    )));
    let burst = |k: String| {
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let (app, k) = (app.clone(), k.clone());
                tokio::spawn(
                    async move { status(&app, "GET", "/collections", bearer(&k), None).await },
                )
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let before = validations(hub.addr).await;
    assert!(burst(k.clone()).await.iter().all(|s| *s == 200));
    let refused = burst("hvk_not_a_key".into()).await;
    assert!(refused.iter().all(|s| *s == 401), "{refused:?}");
    assert_eq!(validations(hub.addr).await - before, 2);
    // The refused burst was one failure: four more make five, the limit.
    for i in 0..4 {
        let s = status(
            &app,
            "GET",
            "/collections",
            bearer(&format!("hvk_guess_{i}")),
            None,
        )
        .await;
        assert_eq!(s, 401);
    }
    let s = status(&app, "GET", "/collections", bearer("hvk_guess_next"), None).await;
    assert_eq!(s, 429);
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&k), None).await,
        200
    );
    hub.task.abort();
}

#[tokio::test]
async fn with_the_hub_down_cached_keys_work_and_new_keys_get_503() {
    let hub = hub().await;
    let user = hub.store.create_user("d@example.com", "p").unwrap().id;
    let (known, _) = key(&hub.store, user, &["read"], None);
    let (fresh, _) = key(&hub.store, user, &["read"], None);
    // A TTL of zero: every request asks the Hub, so the grace is what helps.
    let app = TestApp::with_auth(auth(hub.addr, Duration::ZERO));
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&known), None).await,
        200
    );
    hub.task.abort();
    let _ = hub.task.await;
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&known), None).await,
        200,
        "grace"
    );
    let (s, b) = send(&app, "GET", "/collections", bearer(&fresh), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("hub_unavailable"))
    );
    let (s, _) = send(&app, "GET", "/collections", bearer("hvk_never_seen"), None).await;
    assert_eq!(s, 503, "an unknown key never gets in");
}

#[tokio::test]
async fn revocation_and_expiry_reach_cached_keys() {
    let hub = hub().await;
    let user = hub.store.create_user("e@example.com", "p").unwrap().id;
    let (k, id) = key(&hub.store, user, &["read"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(1)));
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&k), None).await,
        200
    );
    hub.store.revoke_key(&id).unwrap();
    // A revoked key is refused once its cache entry is older than the TTL.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&k), None).await,
        401
    );
    // An expiring key is refused at its expiry, whatever the TTL. Expiry is
    // written in whole seconds: 3 s from now is 2 to 3 s away.
    let (short, _) = key(&hub.store, user, &["read"], Some(expires_in(3)));
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(3600)));
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&short), None).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&short), None).await,
        401
    );
    hub.task.abort();
}

#[tokio::test]
async fn failures_from_one_address_are_throttled_without_locking_keys_out() {
    let hub = hub().await;
    let user = hub.store.create_user("f@example.com", "p").unwrap().id;
    let (good, _) = key(&hub.store, user, &["read"], None);
    let app = TestApp::with_auth(auth_with(hub.addr, Duration::from_secs(60), 5));
    let from = |ip: [u8; 4], k: String| {
        let mut req = Request::builder()
            .uri("/collections")
            .header("authorization", format!("Bearer {k}"));
        req.extensions_mut()
            .unwrap()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 5000,
            ))));
        req.body(Body::empty()).unwrap()
    };
    let attacker = [10, 0, 0, 1];
    // The valid key is known before the attack starts.
    assert_eq!(app.raw(from(attacker, good.clone())).await.0, 200);
    for i in 0..5 {
        assert_eq!(
            app.raw(from(attacker, format!("hvk_guess_{i}"))).await.0,
            401
        );
    }
    let before = validations(hub.addr).await;
    let (s, headers, body) = app.raw(from(attacker, "hvk_guess_next".into())).await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str()),
        (429, Some("too_many_failures"))
    );
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        validations(hub.addr).await,
        before,
        "a throttled address makes no hub call"
    );
    // The known key still works from there, and other addresses are untouched.
    assert_eq!(app.raw(from(attacker, good.clone())).await.0, 200);
    assert_eq!(
        app.raw(from([10, 0, 0, 2], "hvk_other".into())).await.0,
        401
    );
    hub.task.abort();
}

#[tokio::test]
async fn a_slow_hub_is_cut_off_and_a_restarted_one_used_again() {
    let hub = hub().await;
    let user = hub.store.create_user("h@example.com", "p").unwrap().id;
    let (first, _) = key(&hub.store, user, &["read"], None);
    let (second, _) = key(&hub.store, user, &["read"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    // The Hub would answer "valid", but only after 2 s: the client's 500 ms
    // timeout cuts the call and the request gets 503 instead of hanging.
    let addr = hub.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = vectorizer_testkit::http::Client::new(addr);
        let f = br#"{"delay_ms": 2000, "count": 1}"#;
        let r = c
            .request(
                "POST",
                "/api/dev/faults",
                Some(f),
                &[("x-service-key", KEY), ("content-type", "application/json")],
            )
            .unwrap();
        assert_eq!(r.status, 200);
    })
    .await
    .unwrap();
    let (s, b) = send(&app, "GET", "/collections", bearer(&first), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("hub_unavailable"))
    );
    // Down, then back on the same address: validation resumes, no restart.
    hub.task.abort();
    let _ = hub.task.await;
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&second), None).await,
        503
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let router = vectorizer_hub::router(hub.store.clone(), KEY);
    let again = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&second), None).await,
        200
    );
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&first), None).await,
        200
    );
    again.abort();
}

/// Every route with a collection in its path, every method: user A on user
/// B's collection, by short name and by full name, gets exactly the answer
/// for a missing collection, and B's data is unchanged. Built from the
/// route table, so a new route without a body below fails here.
#[tokio::test]
async fn isolation_matrix_over_every_route() {
    let hub = hub().await;
    let alice = hub.store.create_user("ma@example.com", "p").unwrap().id;
    let bob = hub.store.create_user("mb@example.com", "p").unwrap().id;
    let (a, _) = key(&hub.store, alice, &["admin"], None);
    let (b, _) = key(&hub.store, bob, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let create = json!({"name": "secret", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&b), Some(create)).await,
        201
    );
    let pts = json!({"points": [{"id": 1, "vector": [1, 0], "payload": {"k": "v"}}]});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/secret/points",
            bearer(&b),
            Some(pts)
        )
        .await,
        200
    );
    let bobs_view = async |app: &TestApp| {
        let (_, list) = send(app, "GET", "/collections", bearer(&b), None).await;
        let (_, pts) = send(
            app,
            "POST",
            "/collections/secret/points/scroll",
            bearer(&b),
            Some(json!({"with_vector": true})),
        )
        .await;
        let (_, detail) = send(app, "GET", "/collections/secret", bearer(&b), None).await;
        json!({"list": list, "points": pts, "payload_index": detail["payload_index"], "hnsw": detail["hnsw"]})
    };
    let before = bobs_view(&app).await;

    let body_for = |op: &str| -> Option<Value> {
        Some(match op {
            "get_collection" | "delete_collection" | "get_point" => return None,
            "upsert_points" => json!({"points": [{"id": 9, "vector": [0, 1]}]}),
            "get_points" | "delete_points" => json!({"ids": [1]}),
            "scroll_points" | "count_points" => json!({}),
            "search" => json!({"vector": [1, 0], "limit": 3}),
            "search_batch" => json!({"searches": [{"vector": [1, 0], "limit": 3}]}),
            "create_payload_index" => json!({"field": "k"}),
            "drop_payload_index" => return None,
            "update_collection" => json!({"hnsw": {"ef_search": 7}}),
            "set_payload" | "overwrite_payload" => json!({"payload": {"k": "x"}, "ids": [1]}),
            "delete_payload" => json!({"keys": ["k"], "filter": {}}),
            other => panic!("route `{other}` needs an entry in this matrix"),
        })
    };
    let full = format!("user_{bob}:secret");
    let mut checked = 0;
    for r in vectorizer_server::app::routes()
        .iter()
        .filter(|r| r.path.contains("{name}"))
    {
        let body = body_for(r.operation);
        let path = |name: &str| r.path.replace("{name}", name).replace("{id}", "1");
        let (s0, missing) = send(
            &app,
            r.method.as_str(),
            &path("nothing"),
            bearer(&a),
            body.clone(),
        )
        .await;
        assert_eq!(
            (s0, missing["error"]["code"].as_str()),
            (404, Some("collection_not_found")),
            "{} {}",
            r.method,
            r.path
        );
        for name in ["secret", full.as_str()] {
            let (s, theirs) = send(
                &app,
                r.method.as_str(),
                &path(name),
                bearer(&a),
                body.clone(),
            )
            .await;
            assert_eq!(s, s0, "{} {} on {name}", r.method, r.path);
            assert_eq!(
                theirs["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(name, "X"),
                missing["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace("nothing", "X"),
                "{} {} on {name}",
                r.method,
                r.path
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} checks");
    assert_eq!(bobs_view(&app).await, before, "bob's data changed");
    hub.task.abort();
}

/// With the Hub enabled, a collection is checked against the plan's
/// collection count and registered with the Hub before it is made, and a
/// deletion is reported to it.
#[tokio::test]
async fn collections_are_registered_with_the_hub() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "two".into(),
            max_collections: 2,
            max_vectors: 100,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    let user = hub.store.create_user("r@example.com", "two").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let make = |name: &str| json!({"name": name, "dimension": 2, "metric": "cosine"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(make("docs"))).await,
        201
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections",
            bearer(&k),
            Some(make("notes"))
        )
        .await,
        201
    );
    let at_hub = |s: &HubStore| {
        s.user_collections(&user)
            .unwrap()
            .collections
            .into_iter()
            .map(|c| c.collection_name)
            .collect::<Vec<_>>()
    };
    let mut names = at_hub(&hub.store);
    names.sort();
    assert_eq!(names, vec!["docs".to_owned(), "notes".to_owned()]);
    // The plan allows two: a 429 with the figures, and nothing is made.
    let (s, b) = send(
        &app,
        "POST",
        "/collections",
        bearer(&k),
        Some(make("third")),
    )
    .await;
    assert_eq!(
        (
            s,
            b["error"]["code"].as_str(),
            b["error"]["quota"].as_str(),
            b["error"]["limit"].as_u64(),
            b["error"]["current"].as_u64(),
            b["error"]["requested"].as_u64()
        ),
        (
            429,
            Some("quota_exceeded"),
            Some("collections"),
            Some(2),
            Some(2),
            Some(1)
        ),
        "{b}"
    );
    assert_eq!(
        at_hub(&hub.store).len(),
        2,
        "the hub was not asked to make it"
    );
    let (_, list) = send(&app, "GET", "/collections", bearer(&k), None).await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 2);
    // A duplicate is refused here, before the Hub is asked.
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(make("docs"))).await,
        409
    );
    // Deleting reports to the Hub (shortly after, through the usage
    // reporter), which frees the slot.
    assert_eq!(
        status(&app, "DELETE", "/collections/docs", bearer(&k), None).await,
        200
    );
    eventually(|| at_hub(&hub.store) == vec!["notes".to_owned()]).await;
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections",
            bearer(&k),
            Some(make("third"))
        )
        .await,
        201
    );
    hub.task.abort();
}

/// 12 parallel creates against a plan of 3 collections: exactly 3 are
/// made, here and at the Hub; the Hub's own refusal, for a collection it
/// counts that this node does not hold, carries the figures too.
#[tokio::test]
async fn parallel_creates_cannot_overshoot_the_collection_count() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "three".into(),
            max_collections: 3,
            max_vectors: 100,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    let user = hub.store.create_user("pc@example.com", "three").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = Arc::new(TestApp::with_auth(auth(hub.addr, Duration::from_secs(60))));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (app, k) = (app.clone(), k.clone());
            tokio::spawn(async move {
                let body = json!({"name": format!("c{i}"), "dimension": 2, "metric": "dot"});
                send(&app, "POST", "/collections", bearer(&k), Some(body)).await
            })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            201 => made += 1,
            429 => assert_eq!(b["error"]["quota"], "collections", "{b}"),
            other => panic!("{other}: {b}"),
        }
    }
    assert_eq!(made, 3);
    let (_, list) = send(&app, "GET", "/collections", bearer(&k), None).await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 3);
    assert_eq!(
        hub.store.user_collections(&user).unwrap().collections.len(),
        3
    );

    // The Hub knows a collection this node never made: ours says 2 of 3,
    // the Hub says full, and its refusal stands.
    let other = hub
        .store
        .create_user("pc2@example.com", "three")
        .unwrap()
        .id;
    let (k2, _) = key(&hub.store, other, &["admin"], None);
    let req = serde_json::from_value(
        json!({"collection_name": "elsewhere", "project_id": other, "dimension": 2}),
    )
    .unwrap();
    hub.store.create_collection(&other, &req).unwrap();
    for name in ["a", "b"] {
        let body = json!({"name": name, "dimension": 2, "metric": "dot"});
        assert_eq!(
            status(&app, "POST", "/collections", bearer(&k2), Some(body)).await,
            201
        );
    }
    let body = json!({"name": "c", "dimension": 2, "metric": "dot"});
    let (s, b) = send(&app, "POST", "/collections", bearer(&k2), Some(body)).await;
    assert_eq!(
        (
            s,
            b["error"]["quota"].as_str(),
            b["error"]["limit"].as_u64(),
            b["error"]["current"].as_u64()
        ),
        (429, Some("collections"), Some(3), Some(2)),
        "{b}"
    );
    hub.task.abort();
}

/// The drift report names what the Hub and this data directory disagree on.
#[tokio::test]
async fn drift_between_the_hub_and_here() {
    let hub = hub().await;
    let user = hub.store.create_user("dr@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let auth = auth(hub.addr, Duration::from_secs(60));
    let app = TestApp::with_auth(auth.clone());
    for name in ["docs", "notes"] {
        let body = json!({"name": name, "dimension": 2, "metric": "dot"});
        assert_eq!(
            status(&app, "POST", "/collections", bearer(&k), Some(body)).await,
            201
        );
    }
    let d = vectorizer_service::drift::drift(app.data_dir(), auth.hub(), user)
        .await
        .unwrap();
    assert!(d.is_empty(), "{d:?}");
    // The Hub forgets `notes` and learns of a `ghost` this side never made.
    let at_hub = hub.store.user_collections(&user).unwrap().collections;
    let notes = at_hub
        .iter()
        .find(|c| c.collection_name == "notes")
        .unwrap()
        .collection_id;
    hub.store.delete_collection(&notes).unwrap();
    let req = serde_json::from_value(
        json!({"collection_name": "ghost", "project_id": user, "dimension": 2}),
    )
    .unwrap();
    hub.store.create_collection(&user, &req).unwrap();
    let d = vectorizer_service::drift::drift(app.data_dir(), auth.hub(), user)
        .await
        .unwrap();
    assert_eq!(d.only_here, vec!["notes".to_owned()]);
    assert_eq!(d.only_at_hub, vec!["ghost".to_owned()]);
    assert!(d.different_ids.is_empty());
    hub.task.abort();
}

/// A tracing writer into a shared buffer, for counting log lines.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The Hub lost a collection and its user for good: registering it again
/// fails on every try. Tries back off (2 s, doubling) and the failure is
/// said once, not every 2 s.
#[tokio::test]
async fn a_registration_that_keeps_failing_backs_off_and_is_said_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime runs on this thread: its tasks log here.
    let _logs = tracing::subscriber::set_default(subscriber);
    let hub = hub().await;
    let user = hub.store.create_user("gone@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(600)));
    let body = json!({"name": "lost_for_good", "dimension": 2, "metric": "dot"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(body)).await,
        201
    );
    hub.store.delete_user(&user).unwrap();
    let route = "POST /api/internal/vectorizer/users/{user_id}/collections";
    let before = hub_calls(hub.addr, route).await;
    // A write: its usage report meets the Hub's 404, and the collection is
    // registered again, which fails (no such user) however often it runs.
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/lost_for_good/points",
            bearer(&k),
            Some(points(0, 1))
        )
        .await,
        200
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let tries = hub_calls(hub.addr, route).await - before;
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let said = text
        .lines()
        .filter(|l| l.contains("could not register a collection the hub lost"))
        .count();
    // Every 2 s would be 10 tries and 10 lines; backing off: at 0, 2, 6, 14 s.
    assert!((3..=5).contains(&tries), "{tries} tries in 20 s");
    assert_eq!(said, 1, "{text}");
    hub.task.abort();
}

pub(crate) fn points(first: u64, n: u64) -> Value {
    json!({"points": (first..first + n).map(|i| json!({"id": i, "vector": [1.0, i as f32]})).collect::<Vec<_>>()})
}

/// Vector and storage quotas at their boundary, with the 429's figures.
#[tokio::test]
async fn quotas_hold_at_their_boundary() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "v100".into(),
            max_collections: 5,
            max_vectors: 100,
            max_storage_bytes: 1 << 30,
        })
        .unwrap();
    hub.store
        .create_plan(Plan {
            name: "s".into(),
            max_collections: 5,
            max_vectors: 1 << 30,
            max_storage_bytes: 4096,
        })
        .unwrap();
    let vu = hub.store.create_user("v@example.com", "v100").unwrap().id;
    let su = hub.store.create_user("s@example.com", "s").unwrap().id;
    let (vk, _) = key(&hub.store, vu, &["admin"], None);
    let (sk, _) = key(&hub.store, su, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let make = json!({"name": "c", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections",
            bearer(&vk),
            Some(make.clone())
        )
        .await,
        201
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&vk),
            Some(points(0, 100))
        )
        .await,
        200
    );
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&vk),
        Some(points(100, 1)),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "quota_exceeded");
    assert_eq!(
        (
            b["error"]["quota"].as_str(),
            b["error"]["limit"].as_u64(),
            b["error"]["current"].as_u64(),
            b["error"]["requested"].as_u64()
        ),
        (Some("vectors"), Some(100), Some(100), Some(1))
    );
    // Rewriting existing points adds no vectors: allowed at the limit.
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&vk),
            Some(points(0, 50))
        )
        .await,
        200
    );
    let (_, n) = send(
        &app,
        "POST",
        "/collections/c/points/count",
        bearer(&vk),
        Some(json!({})),
    )
    .await;
    assert_eq!(n["count"], 100);

    assert_eq!(
        status(&app, "POST", "/collections", bearer(&sk), Some(make)).await,
        201
    );
    let big = json!({"points": (1..=5).map(|i| json!({"id": i, "vector": [1, 0], "payload": {"t": "x".repeat(1000)}})).collect::<Vec<_>>()});
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&sk),
        Some(big),
    )
    .await;
    assert_eq!(
        (
            s,
            b["error"]["quota"].as_str(),
            b["error"]["limit"].as_u64()
        ),
        (429, Some("storage"), Some(4096))
    );
    assert!(
        b["error"]["current"].as_u64().unwrap() > 0
            && b["error"]["requested"].as_u64().unwrap() > 5000
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&sk),
            Some(points(1, 2))
        )
        .await,
        200
    );
    hub.task.abort();
}

/// 32 parallel upserts of 5 new points each against a limit of 100: no
/// interleaving lets them overshoot together.
#[tokio::test]
async fn parallel_upserts_cannot_overshoot_together() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "v100".into(),
            max_collections: 5,
            max_vectors: 100,
            max_storage_bytes: 1 << 30,
        })
        .unwrap();
    let user = hub.store.create_user("par@example.com", "v100").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = Arc::new(TestApp::with_auth(auth(hub.addr, Duration::from_secs(60))));
    let make = json!({"name": "c", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(make)).await,
        201
    );
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let (app, k) = (app.clone(), k.clone());
            tokio::spawn(async move {
                send(
                    &app,
                    "POST",
                    "/collections/c/points",
                    bearer(&k),
                    Some(points(i * 5, 5)),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            200 => ok += 1,
            429 => assert_eq!(b["error"]["quota"], "vectors"),
            other => panic!("{other}: {b}"),
        }
    }
    let (_, n) = send(
        &app,
        "POST",
        "/collections/c/points/count",
        bearer(&k),
        Some(json!({})),
    )
    .await;
    let stored = n["count"].as_u64().unwrap();
    assert_eq!(stored, ok * 5, "every acknowledged batch is stored whole");
    assert!(stored <= 100, "overshot the limit: {stored}");
    eprintln!("{ok} of 32 batches accepted, {stored} points stored");
    assert!((1..32).contains(&ok), "{ok} of 32 succeeded");
    hub.task.abort();
}

pub(crate) async fn set_faults(addr: std::net::SocketAddr, f: Value) {
    tokio::task::spawn_blocking(move || {
        let body = f.to_string().into_bytes();
        let r = vectorizer_testkit::http::Client::new(addr)
            .request(
                "POST",
                "/api/dev/faults",
                Some(&body),
                &[("x-service-key", KEY), ("content-type", "application/json")],
            )
            .unwrap();
        assert_eq!(r.status, 200);
    })
    .await
    .unwrap();
}

/// Usage arrives at the Hub as the engine counts it, deletions lower it, and
/// a Hub that refuses reports for a while gets every figure once it is back.
#[tokio::test]
async fn usage_reaches_the_hub_and_survives_an_outage() {
    let hub = hub().await;
    let user = hub.store.create_user("u@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let make = json!({"name": "c", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(make)).await,
        201
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(points(0, 10))
        )
        .await,
        200
    );
    let vectors_at_hub =
        |s: &HubStore| s.user_collections(&user).unwrap().collections[0].vector_count;
    eventually(|| vectors_at_hub(&hub.store) == 10).await;
    // Bytes too: the last report equals the engine's figure.
    let (_, detail) = send(&app, "GET", "/collections/c", bearer(&k), None).await;
    let bytes = detail["bytes"].as_u64().unwrap();
    assert_eq!(
        hub.store.usage_ledger().last().unwrap().storage_bytes,
        bytes
    );
    let del = json!({"ids": [0, 1, 2]});
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points/delete",
            bearer(&k),
            Some(del)
        )
        .await,
        200
    );
    eventually(|| vectors_at_hub(&hub.store) == 7).await;

    // The Hub refuses every call for a while: reports wait in the outbox.
    set_faults(hub.addr, json!({"status": 503, "count": 100_000})).await;
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(points(100, 5))
        )
        .await,
        200
    );
    let outbox = app.data_dir().join("usage-outbox.json");
    eventually(|| outbox.exists()).await;
    assert_eq!(vectors_at_hub(&hub.store), 7);
    set_faults(hub.addr, json!({"count": 0})).await;
    eventually(|| vectors_at_hub(&hub.store) == 12).await;
    // The Hub takes the report before the reporter rewrites its outbox.
    let drained = || {
        std::fs::read(&outbox)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            == Some(json!({}))
    };
    eventually(drained).await;
    let pending: Value = serde_json::from_slice(&std::fs::read(&outbox).unwrap()).unwrap();
    assert_eq!(pending, json!({}), "the outbox drains once delivered");
    // The tenant reads its own usage and limits.
    let (s, u) = send(&app, "GET", "/usage", bearer(&k), None).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (u["collections"].as_u64(), u["vectors"].as_u64()),
        (Some(1), Some(12))
    );
    assert_eq!(
        u["limits"],
        json!({"max_collections": 10, "max_vectors": 1000, "max_storage_bytes": 1 << 20})
    );
    assert_eq!(u["per_collection"][0]["name"], "c");
    assert_eq!(u["storage_bytes"], u["per_collection"][0]["storage_bytes"]);
    // The Hub's families appear in the metrics, public by default.
    let (status, _, text) = app.get_text("/metrics", &[]).await;
    assert_eq!(status, 200);
    for needle in [
        "hub_health{state=\"up\"} 1",
        "hub_quota_checks_total{quota=\"vectors\",result=\"allowed\"}",
        "hub_api_requests_total{call=\"update_usage\",status=\"ok\"}",
        "hub_api_requests_total{call=\"update_usage\",status=\"transient\"}",
        "hub_usage_reports_total{result=\"delivered\"}",
        "hub_usage_reports_total{result=\"failed\"}",
        "hub_quota_usage{quota=\"vectors\"}",
        "# TYPE hub_backup_operations_total counter",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // Per-tenant gauges (switched on in the test app) carry the exact
    // figures under the user's id.
    let tenant = format!("vectorizer_tenant_vectors{{user_id=\"{user}\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(tenant.as_str()));
    assert_eq!(line, Some(u["vectors"].to_string().as_str()), "{text}");
    hub.task.abort();
}

/// With `metrics.public` off, scraping needs the operator token: the
/// figures span every tenant, so no tenant's key opens them, not even an
/// `admin` one, and the token is never sent to the Hub.
#[tokio::test]
async fn private_metrics_need_the_operator_token() {
    let hub = hub().await;
    let user = hub.store.create_user("mx@example.com", "p").unwrap().id;
    let (admin, _) = key(&hub.store, user, &["admin"], None);
    let (reader, _) = key(&hub.store, user, &["read", "write", "delete"], None);
    let app = TestApp::build(crate::common::AppOptions {
        auth: Some(auth(hub.addr, Duration::from_secs(60))),
        metrics: vectorizer_server::metrics::MetricsOptions {
            public: false,
            tenant_labels: None,
        },
        operator: Some("op-token-1234567890"),
        ..Default::default()
    });
    let body = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&admin), Some(body)).await,
        201
    );
    let (s, b) = send(&app, "GET", "/metrics", None, None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    for k in [&reader, &admin] {
        let (s, b) = send(&app, "GET", "/metrics", bearer(k), None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let before = validations(hub.addr).await;
    // The operator token is no tenant key: refused, and the Hub never sees it.
    let (s, _) = send(
        &app,
        "GET",
        "/collections",
        bearer("op-token-1234567890"),
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(validations(hub.addr).await, before);
    let (status, _, text) = app
        .get_text(
            "/metrics",
            &[("authorization", "Bearer op-token-1234567890")],
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("vectorizer_collections 1"), "{text}");
    assert!(
        !text.contains("vectorizer_tenant_"),
        "tenant labels are off"
    );
    hub.task.abort();
}

/// With the Hub unreachable, the last known limits serve for the grace
/// period; after it, a write that needs a quota decision gets 503.
#[tokio::test]
async fn quota_limits_outlive_the_hub_only_for_the_grace_period() {
    let hub = hub().await;
    let user = hub.store.create_user("gr@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    // Limits are asked for every time (TTL 0); the grace is 1 s.
    let app = TestApp::with_quota_times(
        auth(hub.addr, Duration::from_secs(60)),
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let make = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(make)).await,
        201
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(points(0, 1))
        )
        .await,
        200
    );
    hub.task.abort();
    let _ = hub.task.await;
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(points(1, 1))
        )
        .await,
        200,
        "within the grace"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, b) = send(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&k),
        Some(points(2, 1)),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("unavailable")));
    // Usage is still answered, without the limits nobody can tell now.
    let (s, u) = send(&app, "GET", "/usage", bearer(&k), None).await;
    assert_eq!((s, u["vectors"].as_u64()), (200, Some(2)), "{u}");
    assert!(u.get("limits").is_none(), "{u}");
    // Reads need no quota decision.
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points/count",
            bearer(&k),
            Some(json!({}))
        )
        .await,
        200
    );
}
