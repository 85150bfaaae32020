//! The Qdrant dialect through the real router on its own listener: its
//! JSON shapes, refusals in its error shape, one collection seen through
//! both dialects, and tenants kept apart with the Hub on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestApp;
use crate::hub_auth::{auth, hub, key};

fn ok(v: &Value) -> &Value {
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["time"].as_f64().is_some_and(|t| t >= 0.0), "{v}");
    &v["result"]
}

fn refused(v: &Value) -> &str {
    v["status"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
}

async fn seed(app: &TestApp, key: Option<&str>, name: &str) {
    let (s, v) = app
        .qdrant(
            "PUT",
            &format!("/collections/{name}"),
            key,
            // Empty settings and storage tuning, as clients send them: accepted.
            Some(json!({"vectors": {"size": 3, "distance": "Euclid"}, "hnsw_config": {"m": 8, "ef_construct": 64}, "sparse_vectors": {}, "shard_number": 1, "optimizers_config": {"default_segment_number": 2}, "quantization_config": null})),
        )
        .await;
    assert_eq!((s.as_u16(), ok(&v)), (200, &json!(true)));
    let points: Vec<Value> = (0..20u64)
        .map(|i| {
            let id = if i % 4 == 0 {
                json!(format!("00000000-0000-0000-0000-{i:012}"))
            } else {
                json!(i)
            };
            let tag = ["a", "b"][i as usize % 2];
            json!({"id": id, "vector": [i as f32, 1.0, 0.0], "payload": {"i": i, "even": i % 2 == 0, "tag": tag}})
        })
        .collect();
    let (s, v) = app
        .qdrant(
            "PUT",
            &format!("/collections/{name}/points?wait=true"),
            key,
            Some(json!({"points": points})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ok(&v), &json!({"operation_id": 0, "status": "completed"}));
}

#[tokio::test]
async fn answers_take_qdrants_shapes() {
    let app = TestApp::new();
    let (s, v) = app.qdrant("GET", "/", None, None).await;
    assert_eq!(s, 200);
    assert!(v["title"].is_string() && v["version"].as_str().unwrap().starts_with("1."));
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(app.qdrant("GET", path, None, None).await.0, 200, "{path}");
    }
    seed(&app, None, "docs").await;

    let (_, v) = app.qdrant("GET", "/collections/docs", None, None).await;
    let info = ok(&v);
    assert_eq!(info["points_count"], 20);
    assert!(["green", "yellow"].contains(&info["status"].as_str().unwrap()));
    assert_eq!(
        info["config"]["params"]["vectors"],
        json!({"size": 3, "distance": "Euclid"})
    );
    assert_eq!(info["config"]["hnsw_config"]["m"], 8);
    assert_eq!(info["config"]["hnsw_config"]["ef_construct"], 64);
    for field in ["optimizer_config", "wal_config"] {
        assert!(info["config"][field].is_object(), "{field}");
    }
    assert_eq!(info["payload_schema"], json!({}));
    let (_, v) = app
        .qdrant("GET", "/collections/docs/exists", None, None)
        .await;
    assert_eq!(ok(&v), &json!({"exists": true}));
    let (_, v) = app.qdrant("GET", "/collections", None, None).await;
    assert_eq!(ok(&v), &json!({"collections": [{"name": "docs"}]}));

    // Euclid reports distances, nearest first.
    let (s, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/query",
            None,
            Some(json!({"query": [5.2, 1.0, 0.0], "limit": 3, "with_payload": ["i"], "filter": {"must": [{"key": "even", "match": {"value": false}}]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let points = ok(&v)["points"].as_array().unwrap();
    let ids: Vec<&Value> = points.iter().map(|p| &p["id"]).collect();
    assert_eq!(ids, [&json!(5), &json!(7), &json!(3)]);
    assert!((points[0]["score"].as_f64().unwrap() - 0.2).abs() < 1e-4);
    assert_eq!(points[0]["payload"], json!({"i": 5}));
    assert_eq!(points[0]["version"], 0);

    // Scroll pages by `next_page_offset`; count is exact.
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/scroll",
            None,
            Some(json!({"limit": 15})),
        )
        .await;
    let page = ok(&v);
    assert_eq!(page["points"].as_array().unwrap().len(), 15);
    let next = page["next_page_offset"].clone();
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/scroll",
            None,
            Some(json!({"limit": 15, "offset": next})),
        )
        .await;
    assert_eq!(ok(&v)["points"].as_array().unwrap().len(), 5);
    assert_eq!(ok(&v)["next_page_offset"], Value::Null);
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/count",
            None,
            Some(json!({"filter": {"must": [{"key": "tag", "match": {"except": ["a"]}}]}, "exact": true})),
        )
        .await;
    assert_eq!(ok(&v), &json!({"count": 10}));

    // Groups by a payload key.
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/query/groups",
            None,
            Some(json!({"query": [0.0, 1.0, 0.0], "group_by": "tag", "group_size": 2, "limit": 2})),
        )
        .await;
    let groups = ok(&v)["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["id"], "a");
    let hits: Vec<&Value> = groups[0]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["id"])
        .collect();
    assert_eq!(
        hits,
        [&json!("00000000-0000-0000-0000-000000000000"), &json!(2)]
    );
}

#[tokio::test]
async fn refusals_keep_their_status_in_qdrants_error_shape() {
    let app = TestApp::new();
    seed(&app, None, "docs").await;
    let cases = [
        ("GET", "/collections/nope", None, 404, "nope"),
        (
            "POST",
            "/collections/docs/points/query",
            Some(
                json!({"query": [1, 2, 3], "filter": {"must": [{"key": "g", "geo_radius": {"center": {"lat": 0, "lon": 0}, "radius": 1}}]}}),
            ),
            400,
            "geo_radius",
        ),
        (
            "POST",
            "/collections/docs/points/query",
            Some(json!({"query": [1, 2, 3], "using": "image"})),
            400,
            "named vectors",
        ),
        (
            "POST",
            "/collections/docs/points/query",
            Some(json!({"query": {"fusion": "rrf"}})),
            400,
            "fusion",
        ),
        (
            "POST",
            "/collections/docs/points/query",
            Some(json!({"query": [1, 2]})),
            422,
            "dimension",
        ),
        (
            "PUT",
            "/collections/other",
            Some(
                json!({"vectors": {"size": 3, "distance": "Cosine"}, "sparse_vectors": {"text": {}}}),
            ),
            400,
            "sparse_vectors",
        ),
        (
            "PUT",
            "/collections/docs/index",
            Some(json!({"field_name": "t", "field_schema": "text"})),
            400,
            "text",
        ),
        (
            "POST",
            "/collections/docs/points/scroll",
            Some(json!({"limit": 2, "mystery": 1})),
            400,
            "mystery",
        ),
        (
            "PUT",
            "/collections/docs",
            Some(json!({"vectors": {"size": 3, "distance": "Cosine"}})),
            409,
            "exists",
        ),
        ("GET", "/collections/docs?mystery=1", None, 400, "mystery"),
        (
            "PUT",
            "/collections/docs/points/vectors",
            Some(json!({"points": []})),
            404,
            "no such route",
        ),
        (
            "POST",
            "/collections/docs/points/facet",
            Some(json!({"key": "tag"})),
            404,
            "no such route",
        ),
        (
            "POST",
            "/collections/docs/points/query",
            Some(json!({"query": [1, 2, 3], "group_by": "tag"})),
            400,
            "query/groups",
        ),
        (
            "POST",
            "/collections/docs/points/query",
            Some(json!({"query": [1, 2, 3], "with_vector": ["image"]})),
            400,
            "named vectors",
        ),
        (
            "POST",
            "/collections/docs/points/query/groups",
            Some(json!({"query": [1, 2, 3], "group_by": "tag", "offset": 2})),
            400,
            "offset",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let (s, v) = app.qdrant(method, path, None, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{method} {path} {body:?}: {v}");
        let e = refused(&v);
        assert!(e.contains(says), "{method} {path}: {e}");
    }
    // Refused requests changed nothing.
    assert!(
        app.qdrant("GET", "/collections/other/exists", None, None)
            .await
            .1["result"]["exists"]
            == false
    );
    let (_, v) = app.qdrant("GET", "/collections/docs", None, None).await;
    assert_eq!(ok(&v)["payload_schema"], json!({}));
    // Deleting what is not there answers false, as Qdrant does.
    let (s, v) = app.qdrant("DELETE", "/collections/nope", None, None).await;
    assert_eq!((s.as_u16(), ok(&v)), (200, &json!(false)));
}

#[tokio::test]
async fn one_collection_two_dialects() {
    let app = TestApp::new();
    seed(&app, None, "docs").await;
    let (s, native) = app.call("GET", "/collections/docs", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            native["dimension"].clone(),
            native["metric"].clone(),
            native["points"].clone()
        ),
        (json!(3), json!("euclidean"), json!(20))
    );
    // Written natively, read in the dialect, and the other way round.
    app.call(
        "POST",
        "/collections/docs/points",
        Some(json!({"points": [{"id": 100, "vector": [9, 9, 9], "payload": {"from": "native"}}]})),
    )
    .await;
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points",
            None,
            Some(json!({"ids": [100], "with_vector": true})),
        )
        .await;
    assert_eq!(
        ok(&v),
        &json!([{"id": 100, "payload": {"from": "native"}, "vector": [9.0, 9.0, 9.0]}])
    );
    app.qdrant(
        "POST",
        "/collections/docs/points/payload",
        None,
        Some(json!({"payload": {"seen": true}, "filter": {"must": [{"has_id": [100]}]}})),
    )
    .await;
    let (_, p) = app.call("GET", "/collections/docs/points/100", None).await;
    assert_eq!(p["payload"], json!({"from": "native", "seen": true}));
    // Search answers agree.
    let (_, q) = app
        .qdrant(
            "POST",
            "/collections/docs/points/search",
            None,
            Some(json!({"vector": [3, 1, 0], "limit": 4})),
        )
        .await;
    let (_, n) = app
        .call(
            "POST",
            "/collections/docs/search",
            Some(json!({"vector": [3, 1, 0], "limit": 4, "with_payload": false})),
        )
        .await;
    let ids = |hits: &Value| {
        hits.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(ok(&q)), ids(&n["results"]));
    // A payload index made in one dialect is dropped in the other.
    app.call(
        "POST",
        "/collections/docs/payload_index",
        Some(json!({"field": "tag"})),
    )
    .await;
    let (_, v) = app.qdrant("GET", "/collections/docs", None, None).await;
    assert!(ok(&v)["payload_schema"]["tag"].is_object());
    let (s, _) = app
        .qdrant("DELETE", "/collections/docs/index/tag", None, None)
        .await;
    assert_eq!(s, 200);
    let (_, native) = app.call("GET", "/collections/docs", None).await;
    assert_eq!(native["payload_index"], json!([]));
}

#[tokio::test]
async fn tenants_are_apart_with_the_hub_on() {
    let hub = hub().await;
    let alice = hub.store.create_user("alice@example.com", "p").unwrap().id;
    let bob = hub.store.create_user("bob@example.com", "p").unwrap().id;
    let (a, _) = key(&hub.store, alice, &["admin"], None);
    let (b, _) = key(&hub.store, bob, &["admin"], None);
    let (ro, _) = key(&hub.store, bob, &["read"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    seed(&app, Some(&a), "docs").await;
    let (s, v) = app.qdrant("GET", "/collections", None, None).await;
    assert_eq!(s, 401, "{v}");
    assert!(refused(&v).contains("access key"));
    assert_eq!(
        app.qdrant("GET", "/collections", Some("hvk_wrong"), None)
            .await
            .0,
        401
    );
    let (_, v) = app.qdrant("GET", "/collections", Some(&b), None).await;
    assert_eq!(ok(&v), &json!({"collections": []}));
    let (_, v) = app
        .qdrant("GET", "/collections/docs/exists", Some(&b), None)
        .await;
    assert_eq!(ok(&v), &json!({"exists": false}));
    let (s, _) = app
        .qdrant(
            "POST",
            "/collections/docs/points/count",
            Some(&b),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);
    // Bob's collection of the same name is his own.
    seed(&app, Some(&b), "docs").await;
    let (s, v) = app
        .qdrant(
            "PUT",
            "/collections/more",
            Some(&ro),
            Some(json!({"vectors": {"size": 2, "distance": "Dot"}})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // The plan allows 1,000 vectors: past it, 429 and nothing written.
    let mut written = 20;
    let refusal = loop {
        let batch: Vec<Value> = (0..100u64)
            .map(|i| json!({"id": 1000 + written + i, "vector": [1, 2, 3]}))
            .collect();
        let (s, v) = app
            .qdrant(
                "PUT",
                "/collections/docs/points",
                Some(&b),
                Some(json!({"points": batch})),
            )
            .await;
        if s != 200 {
            assert_eq!(s, 429, "{v}");
            break v;
        }
        written += 100;
        assert!(written <= 1000, "the quota never refused");
    };
    assert!(refused(&refusal).contains("quota"), "{refusal}");
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/count",
            Some(&b),
            Some(json!({})),
        )
        .await;
    assert_eq!(ok(&v), &json!({"count": written}));
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/count",
            Some(&a),
            Some(json!({})),
        )
        .await;
    assert_eq!(ok(&v), &json!({"count": 20}));
}

/// What a hostile tenant could send to multiply work or memory, or to
/// change more than it names: each refused with a 4xx, changing nothing.
#[tokio::test]
async fn what_multiplies_work_is_bounded() {
    let app = TestApp::build(crate::common::AppOptions {
        limits: vectorizer_engine::Limits {
            max_answer_bytes: 4096,
            ..crate::common::AppOptions::default().limits
        },
        ..crate::common::AppOptions::default()
    });
    seed(&app, None, "docs").await;
    let q = "/collections/docs/points/query";
    let dup: Vec<Value> = (0..300).map(|_| json!(1)).collect();
    let many_keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let conds: Vec<Value> = (0..256)
        .map(|i| json!({"key": "i", "match": {"value": i}}))
        .collect();
    let ops: Vec<Value> = (0..1001)
        .map(|_| json!({"set_payload": {"payload": {"x": 1}, "points": [1]}}))
        .collect();
    let cases = [
        (
            q,
            json!({"query": {"recommend": {"positive": dup}}}),
            400,
            "at most 256 examples",
        ),
        (
            q,
            json!({"query": [1, 2, 3], "with_payload": many_keys}),
            400,
            "at most 256 keys",
        ),
        (
            q,
            json!({"query": 1, "filter": {"should": conds}}),
            400,
            "examples left out",
        ),
        (
            "/collections/docs/points/query/groups",
            json!({"query": [1, 2, 3], "group_by": "tag", "limit": 1000, "group_size": 1000}),
            400,
            "group_size",
        ),
        (
            "/collections/docs/points/batch",
            json!({"operations": ops}),
            400,
            "at most 1000",
        ),
        (
            "/collections/docs/points/delete",
            json!({"filter": {"must": [{"has_id": null}]}}),
            400,
            "a condition needs",
        ),
        (
            "/collections/docs/points/delete",
            json!({"filter": {"must": [{"must": []}]}}),
            422,
            "delete the collection",
        ),
        (
            "/collections/docs/points/query/batch",
            json!({"searches": (0..10).map(|_| json!({"query": [1, 2, 3], "limit": 2, "with_payload": true, "with_vector": true})).collect::<Vec<_>>()}),
            422,
            "answer limit",
        ),
    ];
    for (path, body, status, says) in cases {
        let (s, v) = app.qdrant("POST", path, None, Some(body)).await;
        assert_eq!(s.as_u16(), status, "{path}: {v}");
        let e = refused(&v);
        assert!(e.contains(says), "{path}: {e}");
    }
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/count",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(ok(&v), &json!({"count": 20}));
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points",
            None,
            Some(json!({"ids": [1]})),
        )
        .await;
    assert!(ok(&v)[0]["payload"].get("x").is_none(), "{v}");
}

/// A batch that deletes needs the delete permission before any of it is
/// applied.
#[tokio::test]
async fn a_batch_is_checked_before_it_is_applied() {
    let hub = hub().await;
    let alice = hub.store.create_user("alice@example.com", "p").unwrap().id;
    let (rwd, _) = key(&hub.store, alice, &["read", "write", "delete"], None);
    let (rw, _) = key(&hub.store, alice, &["read", "write"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    seed(&app, Some(&rwd), "docs").await;
    let body = json!({"operations": [
        {"set_payload": {"payload": {"x": 1}, "points": [1]}},
        {"delete": {"points": [2]}}
    ]});
    let (s, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/batch",
            Some(&rw),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (_, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points",
            Some(&rw),
            Some(json!({"ids": [1, 2]})),
        )
        .await;
    let got = ok(&v).as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0]["payload"].get("x").is_none(), "{v}");
    let (s, v) = app
        .qdrant(
            "POST",
            "/collections/docs/points/batch",
            Some(&rwd),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ok(&v).as_array().unwrap().len(), 2);
}
