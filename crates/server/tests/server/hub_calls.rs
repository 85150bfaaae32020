//! The Hub's side of a hostile tenant, over real HTTP against the local
//! Hub: metering across delete and re-create and when the Hub loses a
//! collection, signed calls re-aimed or replayed, key throttling turned
//! against others, and the smaller holes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use uuid::Uuid;
use vectorizer_server::auth::AuthOptions;
use vectorizer_server::internal::{Signed, Verifier, sign};

use crate::common::TestApp;
use crate::hub_auth::{
    KEY, NODE, SIGNING, auth, auth_custom, bearer, eventually, hub, key, points, send, set_faults,
    status, validations,
};

/// Calls the local Hub received on routes starting with `prefix`.
async fn hub_calls(addr: SocketAddr, prefix: &'static str) -> u64 {
    tokio::task::spawn_blocking(move || {
        let r = vectorizer_testkit::http::Client::new(addr)
            .request("GET", "/api/dev/calls", None, &[("x-service-key", KEY)])
            .unwrap();
        r.json()
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    })
    .await
    .unwrap()
}

/// The Hub's (name, vector count) of a user's collections.
fn at_hub(store: &vectorizer_hub::HubStore, user: Uuid) -> Vec<(String, u64)> {
    let mut v: Vec<_> = store
        .user_collections(&user)
        .unwrap()
        .collections
        .into_iter()
        .map(|c| (c.collection_name, c.vector_count))
        .collect();
    v.sort();
    v
}

/// Deleting a collection and creating it again at once leaves the Hub with
/// the live collection (the deletion is delivered first); a collection the
/// Hub lost is registered again and billed from then on.
#[tokio::test]
async fn metering_survives_delete_recreate_and_a_lost_collection() {
    let hub = hub().await;
    let user = hub.store.create_user("m@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let made = json!({"name": "c", "dimension": 2, "metric": "dot"});
    for round in 0..5u64 {
        assert_eq!(
            status(&app, "POST", "/collections", bearer(&k), Some(made.clone())).await,
            201
        );
        let s = status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(points(0, 5 + round)),
        )
        .await;
        assert_eq!(s, 200);
        if round < 4 {
            assert_eq!(
                status(&app, "DELETE", "/collections/c", bearer(&k), None).await,
                200
            );
        }
    }
    eventually(|| at_hub(&hub.store, user) == vec![("c".to_owned(), 9)]).await;
    // The Hub forgets the collection; the next report finds out (404) and
    // the collection is registered again with its exact figures.
    let id = hub.store.user_collections(&user).unwrap().collections[0].collection_id;
    hub.store.delete_collection(&id).unwrap();
    let s = status(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&k),
        Some(points(100, 3)),
    )
    .await;
    assert_eq!(s, 200);
    eventually(|| at_hub(&hub.store, user) == vec![("c".to_owned(), 12)]).await;
    let (_, _, text) = app.get_text("/metrics", &[]).await;
    assert!(
        text.contains("hub_usage_reports_total{result=\"drift\"} 1"),
        "{text}"
    );
    // From now on reports go to the new id.
    let s = status(
        &app,
        "POST",
        "/collections/c/points",
        bearer(&k),
        Some(points(200, 1)),
    )
    .await;
    assert_eq!(s, 200);
    eventually(|| at_hub(&hub.store, user) == vec![("c".to_owned(), 13)]).await;
    // The Hub's ledger ends on the server's exact figures.
    let (_, u) = send(&app, "GET", "/usage", bearer(&k), None).await;
    let live = hub.store.user_collections(&user).unwrap().collections[0].collection_id;
    let exact = (
        u["vectors"].as_u64().unwrap(),
        u["storage_bytes"].as_u64().unwrap(),
    );
    eventually(|| {
        hub.store
            .usage_ledger()
            .iter()
            .rev()
            .find(|e| e.collection_id == live)
            .is_some_and(|e| (e.vector_count, e.storage_bytes) == exact)
    })
    .await;
    hub.task.abort();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn nonce() -> String {
    format!("{:032x}", Uuid::new_v4().as_u128())
}

/// A signed request as the Hub sends it; `tamper` may change any header
/// after signing.
fn signed(user: Uuid, node: &str, n: &str, body: &str, tamper: &[(&str, String)]) -> Request<Body> {
    let ts = now();
    let sig = sign(
        SIGNING.as_bytes(),
        &Signed {
            method: "POST",
            path_and_query: "/collections",
            timestamp: ts,
            nonce: n,
            node_id: node,
            user_id: &user.to_string(),
            body: body.as_bytes(),
        },
    );
    let mut headers = vec![
        ("x-hivehub-service", "hivehub".to_owned()),
        ("x-hivehub-user-id", user.to_string()),
        ("x-hivehub-node", node.to_owned()),
        ("x-hivehub-timestamp", ts.to_string()),
        ("x-hivehub-nonce", n.to_owned()),
        ("x-hivehub-signature", sig),
    ];
    for (h, v) in tamper {
        headers.retain(|(k, _)| k != h);
        headers.push((h, v.clone()));
    }
    let mut req = Request::builder()
        .method("POST")
        .uri("/collections")
        .header("content-type", "application/json");
    for (h, v) in headers {
        req = req.header(h, v);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

fn signed_app(hub: SocketAddr, nonces: &std::path::Path) -> TestApp {
    let opts = AuthOptions {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(60),
        grace: Duration::from_secs(300),
        capacity: 100,
        max_failures: 1000,
        failure_window: Duration::from_secs(60),
    };
    let verifier = Verifier::new(Some(SIGNING), Some(NODE), Some(nonces)).unwrap();
    TestApp::with_auth(auth_custom(hub, opts, verifier))
}

/// Signed calls from the Hub act for the user and node they were signed
/// for, once: re-aimed at another user or node, replayed (also after a
/// restart), signed with the service key or stale, they get 401. Two calls
/// for two users in the same second are two calls. The headers are
/// checked before the body is read.
#[tokio::test]
async fn signed_calls_are_bound_to_their_user_node_and_nonce() {
    let hub = hub().await;
    let alice = hub.store.create_user("al@example.com", "p").unwrap().id;
    let bob = hub.store.create_user("bo@example.com", "p").unwrap().id;
    let nonces = vectorizer_testkit::TempDir::new("nonces");
    let app = signed_app(hub.addr, nonces.path());
    let body = |n: &str| json!({"name": n, "dimension": 2, "metric": "dot"}).to_string();
    let first = nonce();
    let (s, _, b) = app.raw(signed(alice, NODE, &first, &body("a1"), &[])).await;
    assert_eq!(s, 201, "{b}");
    // Bob's call in the same second, with its own nonce, is its own call.
    let (s, _, _) = app.raw(signed(bob, NODE, &nonce(), &body("b1"), &[])).await;
    assert_eq!(s, 201);
    let ts = (now() + 1).to_string();
    let cases: Vec<(&str, Request<Body>)> = vec![
        ("replayed", signed(alice, NODE, &first, &body("a1"), &[])),
        (
            "re-aimed at another user",
            signed(
                alice,
                NODE,
                &nonce(),
                &body("x"),
                &[("x-hivehub-user-id", bob.to_string())],
            ),
        ),
        (
            "meant for another node",
            signed(alice, "node-b", &nonce(), &body("x"), &[]),
        ),
        (
            "re-aimed at this node",
            signed(
                alice,
                "node-b",
                &nonce(),
                &body("x"),
                &[("x-hivehub-node", NODE.to_owned())],
            ),
        ),
        (
            "stale",
            signed(
                alice,
                NODE,
                &nonce(),
                &body("x"),
                &[("x-hivehub-timestamp", (now() - 400).to_string())],
            ),
        ),
        ("short nonce", signed(alice, NODE, "abcd", &body("x"), &[])),
        (
            "no signature",
            signed(
                alice,
                NODE,
                &nonce(),
                &body("x"),
                &[("x-hivehub-signature", String::new())],
            ),
        ),
        (
            "timestamp changed",
            signed(
                alice,
                NODE,
                &nonce(),
                &body("x"),
                &[("x-hivehub-timestamp", ts)],
            ),
        ),
    ];
    for (what, req) in cases {
        let (s, _, b) = app.raw(req).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{what}"
        );
    }
    // Signed with the service key instead of the signing secret.
    let n = nonce();
    let forged = sign(
        KEY.as_bytes(),
        &Signed {
            method: "POST",
            path_and_query: "/collections",
            timestamp: now(),
            nonce: &n,
            node_id: NODE,
            user_id: &alice.to_string(),
            body: body("x").as_bytes(),
        },
    );
    let (s, _, _) = app
        .raw(signed(
            alice,
            NODE,
            &n,
            &body("x"),
            &[("x-hivehub-signature", forged)],
        ))
        .await;
    assert_eq!(s, 401);
    // A refused call did not use up its nonce: signed properly, it passes.
    let (s, _, _) = app.raw(signed(alice, NODE, &n, &body("a2"), &[])).await;
    assert_eq!(s, 201);
    // After a restart the accepted nonces are still known.
    drop(app);
    let app = signed_app(hub.addr, nonces.path());
    let (s, _, _) = app.raw(signed(alice, NODE, &first, &body("a1"), &[])).await;
    assert_eq!(s, 401, "replayed after a restart");
    // Headers first: a call with bad headers and a huge declared body is
    // refused at once, without the body ever being sent; a well-signed
    // header set with a body over 1 MiB gets 413.
    let started = Instant::now();
    let refused = tokio::task::spawn_blocking({
        let addr = app.addr;
        move || {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                c,
                "POST /collections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-hivehub-service: hivehub\r\ncontent-length: 33554432\r\n\r\n"
            )
            .unwrap();
            let mut buf = [0u8; 12];
            c.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, "HTTP/1.1 401");
    assert!(started.elapsed() < Duration::from_secs(1));
    let big = "x".repeat(2 << 20);
    let (s, _, _) = app.raw(signed(alice, NODE, &nonce(), &big, &[])).await;
    assert_eq!(s, 413);
    // A node without the signing secret refuses every call from the Hub.
    let plain = TestApp::with_auth(auth_custom(
        hub.addr,
        AuthOptions {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            grace: Duration::from_secs(300),
            capacity: 100,
            max_failures: 1000,
            failure_window: Duration::from_secs(60),
        },
        Verifier::new(None, Some(NODE), None).unwrap(),
    ));
    let (s, _, _) = plain
        .raw(signed(alice, NODE, &nonce(), &body("z"), &[]))
        .await;
    assert_eq!(s, 401);
    // Alice has exactly a1 and a2, Bob b1.
    let names = |u| {
        let mut v: Vec<String> = hub
            .store
            .user_collections(&u)
            .unwrap()
            .collections
            .into_iter()
            .map(|c| c.collection_name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(alice), ["a1", "a2"]);
    assert_eq!(names(bob), ["b1"]);
    hub.task.abort();
}

fn from(ip: [u8; 4], k: &str) -> Request<Body> {
    let mut req = Request::builder()
        .uri("/collections")
        .header("authorization", format!("Bearer {k}"));
    req.extensions_mut()
        .unwrap()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((ip, 5000))));
    req.body(Body::empty()).unwrap()
}

/// Throttling cannot be turned against others: a burst of bad keys reaches
/// the Hub at most `max_failures` times; junk keys never evict a valid
/// key; a key validated before is not throttled for its address's
/// failures; an abandoned check leaves nothing behind and still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_throttling_cannot_be_turned_against_others() {
    let hub = hub().await;
    let user = hub.store.create_user("t@example.com", "p").unwrap().id;
    let (good, _) = key(&hub.store, user, &["read"], None);
    let opts = AuthOptions {
        ttl: Duration::from_secs(1),
        negative_ttl: Duration::from_secs(60),
        grace: Duration::from_secs(300),
        capacity: 100,
        max_failures: 20,
        failure_window: Duration::from_secs(60),
    };
    let auth = auth_custom(hub.addr, opts, Verifier::refusing());
    let app = Arc::new(TestApp::with_auth(auth.clone()));
    let attacker = [10, 0, 0, 1];
    assert_eq!(app.raw(from(attacker, &good)).await.0, 200);
    // 300 bad keys at once from one address.
    let before = validations(hub.addr).await;
    let burst: Vec<_> = (0..300)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.raw(from(attacker, &format!("hvk_bad_{i}"))).await.0 })
        })
        .collect();
    for b in burst {
        assert!([401, 429].contains(&b.await.unwrap().as_u16()));
    }
    let asked = validations(hub.addr).await - before;
    eprintln!("300 bad keys at once: {asked} reached the hub");
    assert!(asked <= 20, "{asked} bad keys reached the hub");
    // The valid key, past its TTL, is checked again despite the address's
    // failures.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.raw(from(attacker, &good)).await.0, 200);
    // Junk from many addresses fills the refused cache, not the valid one:
    // with the Hub down, the valid key still works from its cache.
    for i in 0..300u32 {
        let ip = [10, 1, (i / 250) as u8, (i % 250) as u8];
        assert_eq!(app.raw(from(ip, &format!("hvk_junk_{i}"))).await.0, 401);
    }
    set_faults(hub.addr, json!({"status": 503, "count": 100_000})).await;
    assert_eq!(app.raw(from([10, 2, 0, 1], &good)).await.0, 200);
    set_faults(hub.addr, json!({"count": 0})).await;
    // Abandoned checks (a slow Hub, a client that hangs up) leave no entry
    // and count against their address.
    set_faults(hub.addr, json!({"delay_ms": 2000, "count": 100})).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client
            .get(app.url("/collections"))
            .bearer_auth(format!("hvk_slow_{i}"))
            .header(crate::common::CLIENT_IP, "10.3.0.1")
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(r.is_err());
    }
    eventually(|| auth.checks_in_flight() == 0).await;
    let (s, _, b) = app.raw(from([10, 3, 0, 1], "hvk_after")).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (429, Some("too_many_failures"))
    );
    set_faults(hub.addr, json!({"count": 0})).await;
    hub.task.abort();
}

/// A collection's config is checked before the Hub is asked; an expiry in
/// any RFC 3339 offset ends a cached key.
#[tokio::test]
async fn bad_configs_never_reach_the_hub_and_expiry_offsets_count() {
    let hub = hub().await;
    let user = hub.store.create_user("h@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(600)));
    let before = hub_calls(hub.addr, "POST /api/internal/vectorizer/users/").await;
    for bad in [
        json!({"name": "c", "dimension": 0, "metric": "dot"}),
        json!({"name": "c", "dimension": 70_000, "metric": "dot"}),
        json!({"name": "c", "dimension": 2, "metric": "dot", "hnsw": {"m": 1}}),
        json!({"name": "c", "dimension": 2, "metric": "dot", "payload_index": [""]}),
    ] {
        let (s, b) = send(&app, "POST", "/collections", bearer(&k), Some(bad.clone())).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (422, Some("invalid_config")),
            "{bad}: {b}"
        );
    }
    assert_eq!(
        hub_calls(hub.addr, "POST /api/internal/vectorizer/users/").await,
        before
    );
    // A key expiring in two seconds, written with a +05:00 offset.
    let at = SystemTime::now() + Duration::from_secs(2);
    let secs = at.duration_since(UNIX_EPOCH).unwrap().as_secs() + 5 * 3600;
    let utc = humantime_like(secs);
    let (short, _) = key(&hub.store, user, &["read"], Some(format!("{utc}+05:00")));
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&short), None).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The cache (TTL 600 s) ends the key at its own expiry, Hub or not.
    set_faults(hub.addr, json!({"status": 503, "count": 100_000})).await;
    assert_eq!(
        status(&app, "GET", "/collections", bearer(&short), None).await,
        401
    );
    set_faults(hub.addr, json!({"count": 0})).await;
    hub.task.abort();
}

/// `YYYY-MM-DDTHH:MM:SS` for Unix seconds (no offset).
fn humantime_like(secs: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .to_owned()
}
