//! Quantized collections through the API: created over REST, MCP and the
//! Qdrant dialect, searched with exact scores from the full vectors, read
//! back whole, smaller in memory; bad settings refused and nothing made.
//! Hub off and on.

use serde_json::{Value, json};
use vectorizer_testkit::Rng;

use crate::common::TestApp;
use crate::hub_auth::{auth, bearer, hub, key, send};
use crate::recall::upsert_vectors;

type Header = Option<(&'static str, String)>;

fn vectors(n: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(21);
    (0..n)
        .map(|_| (0..16).map(|_| rng.normal()).collect())
        .collect()
}

async fn create(app: &TestApp, h: &Header, body: Value) -> (u16, Value) {
    let (s, b) = send(app, "POST", "/collections", h.clone(), Some(body)).await;
    (s, b)
}

async fn search(app: &TestApp, h: &Header, name: &str, body: Value) -> Vec<Value> {
    let (s, b) = send(
        app,
        "POST",
        &format!("/collections/{name}/search"),
        h.clone(),
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["results"].as_array().unwrap().clone()
}

async fn walk(app: &TestApp, h: &Header, key: Option<&str>) {
    let (s, b) = create(
        app,
        h,
        json!({"name": "q", "dimension": 16, "metric": "euclidean", "quantization": {"type": "int8"}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["quantization"],
        json!({"type": "int8", "rescore": true, "oversampling": 3.0})
    );
    let (s, b) = create(
        app,
        h,
        json!({"name": "f", "dimension": 16, "metric": "euclidean"}),
    )
    .await;
    assert_eq!((s, &b["quantization"]), (201, &Value::Null), "{b}");
    // (Two collections within a plan's 1,000 vectors; past 256 points each,
    // so searches walk the graph.)
    let vs = vectors(450);
    upsert_vectors(app, h, "q", &vs).await;
    upsert_vectors(app, h, "f", &vs).await;
    // Graph search rescored with the full vectors: the exact scan's scores,
    // to the bit, and the float collection's.
    for q in &vs[..5] {
        let q: Vec<f32> = q.iter().map(|x| x + 0.05).collect();
        let graph = search(app, h, "q", json!({"vector": q, "limit": 5, "ef": 200})).await;
        let exact = search(app, h, "q", json!({"vector": q, "limit": 5, "exact": true})).await;
        let float = search(app, h, "f", json!({"vector": q, "limit": 5, "exact": true})).await;
        assert_eq!(graph, exact);
        assert_eq!(graph, float);
    }
    // Stored vectors read back as written.
    let (s, b) = send(app, "GET", "/collections/q/points/17", h.clone(), None).await;
    assert_eq!(s, 200, "{b}");
    let back: Vec<f32> = serde_json::from_value(b["vector"].clone()).unwrap();
    assert_eq!(back, vs[17]);
    let (_, qd) = send(app, "GET", "/collections/q", h.clone(), None).await;
    let (_, fd) = send(app, "GET", "/collections/f", h.clone(), None).await;
    assert!(
        qd["memory_bytes"].as_u64() < fd["memory_bytes"].as_u64(),
        "{qd} {fd}"
    );
    // Bad settings: refused, nothing created; and fixed for life.
    for (body, status, code) in [
        (
            json!({"type": "int8", "oversampling": 0.5}),
            422,
            "invalid_config",
        ),
        (
            json!({"type": "int8", "oversampling": 17}),
            422,
            "invalid_config",
        ),
        (json!({"type": "int4"}), 400, "invalid_body"),
        (json!({"type": "int8", "bits": 8}), 400, "invalid_body"),
        (json!({"rescore": true}), 400, "invalid_body"),
    ] {
        let (s, b) = create(
            app,
            h,
            json!({"name": "bad", "dimension": 4, "metric": "dot", "quantization": body.clone()}),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    assert_eq!(
        send(app, "GET", "/collections/bad", h.clone(), None)
            .await
            .0,
        404
    );
    let (s, b) = send(
        app,
        "PATCH",
        "/collections/f",
        h.clone(),
        Some(json!({"quantization": {"type": "int8"}})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );

    // MCP.
    let m = crate::mcp::ok(
        app,
        key,
        "create_collection",
        json!({"name": "mq", "dimension": 16, "metric": "cosine", "quantization": {"type": "int8", "oversampling": 2}}),
    )
    .await;
    assert_eq!(m["quantization"]["oversampling"], json!(2.0), "{m}");
    let m = crate::mcp::ok(app, key, "get_collection", json!({"collection": "mq"})).await;
    assert_eq!(m["quantization"]["type"], "int8", "{m}");

    // The Qdrant dialect: scalar int8 is served, product refused.
    let qkey = key;
    let (s, b) = app
        .qdrant(
            "PUT",
            "/collections/qq",
            qkey,
            Some(json!({"vectors": {"size": 16, "distance": "Cosine"},
                "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = send(app, "GET", "/collections/qq", h.clone(), None).await;
    assert_eq!(b["quantization"]["type"], "int8", "{b}");
    let (_, b) = app.qdrant("GET", "/collections/qq", qkey, None).await;
    assert_eq!(
        b["result"]["config"]["quantization_config"]["scalar"]["type"], "int8",
        "{b}"
    );
    let (s, b) = app
        .qdrant(
            "PUT",
            "/collections/qp",
            qkey,
            Some(json!({"vectors": {"size": 16, "distance": "Cosine",
                "quantization_config": {"product": {"compression": "x16"}}}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        send(app, "GET", "/collections/qp", h.clone(), None).await.0,
        404
    );
}

#[tokio::test]
async fn quantized_collections_hub_off() {
    let app = TestApp::new();
    walk(&app, &None, None).await;
}

#[tokio::test]
async fn quantized_collections_hub_on() {
    let hub = hub().await;
    let user = hub.store.create_user("int8@example.com", "p").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, std::time::Duration::from_secs(60)));
    walk(&app, &bearer(&k), Some(&k)).await;
}
