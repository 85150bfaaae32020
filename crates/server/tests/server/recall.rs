//! Target recall through the API: a collection measures its own recall
//! and says so in `GET /collections/{name}`, the MCP `get_collection` tool
//! and the metrics; the target is set at creation, changed later, or
//! turned off; bad targets are refused and change nothing. Hub off and on.

use serde_json::{Value, json};
use vectorizer_testkit::Rng;

use crate::common::TestApp;
use crate::hub_auth::{auth, bearer, hub, key, send};

type Header = Option<(&'static str, String)>;

/// `n` random points of dimension 16, in batches.
async fn fill(app: &TestApp, h: &Header, name: &str, n: usize) {
    let mut rng = Rng::new(7);
    let vs: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..16).map(|_| rng.normal()).collect())
        .collect();
    upsert_vectors(app, h, name, &vs).await;
}

/// `vs` as points `0..` (no payloads), in batches of 100.
pub(crate) async fn upsert_vectors(app: &TestApp, h: &Header, name: &str, vs: &[Vec<f32>]) {
    for (c, chunk) in vs.chunks(100).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": c * 100 + i, "vector": v}))
            .collect();
        let (s, b) = send(
            app,
            "POST",
            &format!("/collections/{name}/points"),
            h.clone(),
            Some(json!({"points": points})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn detail(app: &TestApp, h: &Header, name: &str) -> Value {
    let (s, b) = send(app, "GET", &format!("/collections/{name}"), h.clone(), None).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Polls the collection (searching it now and then, which is what keeps a
/// closed collection open and asks for a measurement) until it reports one
/// for `target` that is not stale.
async fn measured(app: &TestApp, h: &Header, name: &str, target: f64) -> Value {
    let mut rng = Rng::new(target.to_bits());
    for i in 0.. {
        let d = detail(app, h, name).await;
        // A measurement is redone once a tenth of the points (or 100)
        // changed since.
        let (at, now) = (
            d["recall"]["points"].as_u64(),
            d["points"].as_u64().unwrap(),
        );
        if d["recall"]["target"] == json!(target)
            && at.is_some_and(|at| at + (at / 10).max(100) >= now)
        {
            return d;
        }
        assert!(i < 6000, "no measurement: {d}");
        if i % 10 == 0 {
            let v: Vec<f32> = (0..16).map(|_| rng.normal()).collect();
            let (s, b) = send(
                app,
                "POST",
                &format!("/collections/{name}/search"),
                h.clone(),
                Some(json!({"vector": v, "limit": 10})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unreachable!()
}

fn check_measure(d: &Value, points: u64) {
    let r = &d["recall"];
    assert!(
        ["stored_points", "queries"].contains(&r["source"].as_str().unwrap()),
        "{d}"
    );
    // Measured once it was large enough for graph search, and again when
    // it changed by a tenth.
    let at = r["points"].as_u64().unwrap();
    assert!(
        at > 256 && at <= points && at + (at / 10).max(100) >= points,
        "{d}"
    );
    let (estimate, ef) = (r["estimate"].as_f64().unwrap(), r["ef"].as_u64().unwrap());
    assert!((0.0..=1.0).contains(&estimate), "{d}");
    assert!((10..=1024).contains(&ef), "{d}");
    assert!(r["queries"].as_u64().unwrap() >= 64, "{d}");
    assert!(
        r["measured_at_ms"].as_u64() >= d["created_at_ms"].as_u64(),
        "{d}"
    );
    assert!(r["took_ms"].is_u64(), "{d}");
}

async fn walk(app: &TestApp, h: &Header, mcp_key: Option<&str>, metrics: bool) {
    let (s, b) = send(
        app,
        "POST",
        "/collections",
        h.clone(),
        Some(json!({"name": "t", "dimension": 16, "metric": "euclidean"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (&b["target_recall"], &b["recall"]),
        (&json!(0.95), &Value::Null)
    );
    fill(app, h, "t", 900).await;
    let d = measured(app, h, "t", 0.95).await;
    check_measure(&d, 900);
    if metrics {
        // The collection's own series, with the breadth it reports (or a
        // later measurement's, taken meanwhile).
        let (_, _, text) = app.get_text("/metrics", &[]).await;
        let line = text
            .lines()
            .find(|l| l.starts_with("vectorizer_recall_ef{") && l.contains("t\"}"))
            .unwrap_or_else(|| panic!("{text}"));
        let ef: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((10..=1024).contains(&ef), "{line}");
    }
    // The same through MCP.
    let m = crate::mcp::ok(app, mcp_key, "get_collection", json!({"collection": "t"})).await;
    assert_eq!(m["target_recall"], 0.95);
    assert!(m["recall"]["ef"].is_u64(), "{m}");

    // Bad targets: refused, nothing changed.
    for (body, status, code) in [
        (json!({"target_recall": 0.3}), 422, "invalid_config"),
        (json!({"target_recall": 1.0}), 422, "invalid_config"),
        (json!({"target_recall": "high"}), 400, "invalid_body"),
        (
            json!({"hnsw": null, "target_recall": 0.9}),
            400,
            "invalid_body",
        ),
        (json!({}), 400, "invalid_body"),
    ] {
        let (s, b) = send(
            app,
            "PATCH",
            "/collections/t",
            h.clone(),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    assert_eq!(detail(app, h, "t").await["target_recall"], 0.95);
    let (s, b) = send(
        app,
        "POST",
        "/collections",
        h.clone(),
        Some(json!({"name": "u", "dimension": 4, "metric": "dot", "target_recall": 0.2})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_config")),
        "{b}"
    );
    assert_eq!(
        send(app, "GET", "/collections/u", h.clone(), None).await.0,
        404
    );

    // A new target is measured for anew.
    let (s, b) = send(
        app,
        "PATCH",
        "/collections/t",
        h.clone(),
        Some(json!({"target_recall": 0.99})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["target_recall"], 0.99);
    let d = measured(app, h, "t", 0.99).await;
    check_measure(&d, 900);
    // Off: searches use hnsw.ef_search, and nothing is reported.
    let (s, b) = send(
        app,
        "PATCH",
        "/collections/t",
        h.clone(),
        Some(json!({"target_recall": null, "hnsw": {"ef_search": 40}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["target_recall"], &b["recall"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(b["hnsw"]["ef_search"], 40);
    // Created without a target.
    let (s, b) = send(
        app,
        "POST",
        "/collections",
        h.clone(),
        Some(json!({"name": "v", "dimension": 4, "metric": "dot", "target_recall": null})),
    )
    .await;
    assert_eq!((s, &b["target_recall"]), (201, &Value::Null), "{b}");
}

#[tokio::test]
async fn a_collection_reports_its_recall_hub_off() {
    let app = TestApp::new();
    walk(&app, &None, None, true).await;
    let (s, _, metrics) = app.get_text("/metrics", &[]).await;
    assert_eq!(s, 200);
    let tunings: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vectorizer_recall_tunings_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(tunings >= 2, "{metrics}");
}

#[tokio::test]
async fn a_collection_reports_its_recall_hub_on() {
    let hub = hub().await;
    let user = hub.store.create_user("recall@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, std::time::Duration::from_secs(60)));
    walk(&app, &bearer(&k), Some(&k), false).await;
}
