//! The REST API through the real router.

use serde_json::json;
use vectorizer_server::app::routes;

use crate::common::TestApp;

#[tokio::test]
async fn walkthrough() {
    let app = TestApp::new();
    let (s, body) = app
        .call(
            "POST",
            "/collections",
            Some(json!({"name": "docs", "dimension": 3, "metric": "cosine", "payload_index": ["cat"]})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["name"], "docs");
    assert_eq!(body["hnsw"]["m"], 16);
    assert_eq!(body["payload_index"], json!(["cat"]));
    // Another field indexed later; asking twice changes nothing.
    for _ in 0..2 {
        let (s, body) = app
            .call(
                "POST",
                "/collections/docs/payload_index",
                Some(json!({"field": "meta.lang"})),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["payload_index"], json!(["cat", "meta.lang"]));
    }

    let (s, body) = app
        .call(
            "POST",
            "/collections/docs/points",
            Some(json!({"points": [
                {"id": 1, "vector": [1, 0, 0], "payload": {"cat": "a", "price": 3, "meta": {"lang": "en"}}},
                {"id": 2, "vector": [0, 1, 0], "payload": {"cat": "b", "price": 7}},
                {"id": "550e8400-e29b-41d4-a716-446655440000", "vector": [1, 1, 0], "payload": {"cat": "a", "price": 5}},
                {"id": 4, "vector": [0, 0, 1]}
            ]})),
        )
        .await;
    assert_eq!((s.as_u16(), body), (200, json!({"upserted": 4})));

    let (s, body) = app
        .call("POST", "/collections/docs/search", Some(json!({"vector": [1, 0.1, 0], "limit": 2, "filter": {"must": [{"key": "cat", "match": {"value": "a"}}]}})))
        .await;
    assert_eq!(s, 200);
    let ids: Vec<_> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!(1), json!("550e8400-e29b-41d4-a716-446655440000")]
    );
    assert_eq!(body["results"][0]["payload"]["cat"], "a");
    assert!(body["results"][0].get("vector").is_none());

    // Range, nested key, must_not, score threshold, with_vector.
    let (_, body) = app
        .call(
            "POST",
            "/collections/docs/search",
            Some(json!({"vector": [1, 0, 0], "limit": 10, "with_vector": true, "with_payload": false, "score_threshold": 0.5,
                "filter": {"must": [{"key": "price", "range": {"gte": 1, "lt": 6}}], "must_not": [{"key": "meta.lang", "match": {"value": "de"}}]}})),
        )
        .await;
    let hits = body["results"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["vector"], json!([1.0, 0.0, 0.0]));
    assert!(hits[0].get("payload").is_none());

    let (s, body) = app.call("GET", "/collections/docs/points/2", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        json!({"id": 2, "vector": [0.0, 1.0, 0.0], "payload": {"cat": "b", "price": 7}})
    );

    let (_, body) = app
        .call(
            "POST",
            "/collections/docs/points/get",
            Some(json!({"ids": [4, 2, 99], "with_vector": true})),
        )
        .await;
    assert_eq!(body["points"].as_array().unwrap().len(), 2);
    assert_eq!(body["points"][0]["id"], 4);

    let (_, body) = app
        .call(
            "POST",
            "/collections/docs/points/count",
            Some(json!({"filter": {"must": [{"key": "cat", "match": {"any": ["a", "z"]}}]}})),
        )
        .await;
    assert_eq!(body, json!({"count": 2}));
    let (_, body) = app
        .call("POST", "/collections/docs/points/count", Some(json!({})))
        .await;
    assert_eq!(body, json!({"count": 4}));

    let (_, page) = app
        .call(
            "POST",
            "/collections/docs/points/scroll",
            Some(json!({"limit": 2})),
        )
        .await;
    assert_eq!(page["points"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], 4);
    let (_, page) = app
        .call(
            "POST",
            "/collections/docs/points/scroll",
            Some(json!({"limit": 2, "cursor": 4})),
        )
        .await;
    assert_eq!(
        page["points"][1]["id"],
        "550e8400-e29b-41d4-a716-446655440000"
    );
    assert_eq!(page["next_cursor"], serde_json::Value::Null);

    let (_, body) = app
        .call("POST", "/collections/docs/search/batch", Some(json!({"searches": [{"vector": [0, 1, 0], "limit": 1}, {"vector": [0, 0, 1], "limit": 1}]})))
        .await;
    assert_eq!(body["results"][0]["results"][0]["id"], 2);
    assert_eq!(body["results"][1]["results"][0]["id"], 4);

    let (_, body) = app
        .call(
            "POST",
            "/collections/docs/points/delete",
            Some(json!({"ids": [2, 2, 77]})),
        )
        .await;
    assert_eq!(body, json!({"deleted": 1}));

    let (_, body) = app.call("GET", "/collections", None).await;
    assert_eq!(body["collections"][0]["name"], "docs");
    assert_eq!(body["collections"][0]["points"], 3);
    assert!(body["collections"][0]["bytes"].as_u64().unwrap() > 0);

    let (s, body) = app.call("GET", "/collections/docs", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["points"], 3);
    assert!(body["memory_bytes"].as_u64().unwrap() > 0);

    let (_, usage) = app.call("GET", "/usage", None).await;
    assert_eq!(
        (usage["collections"].as_u64(), usage["vectors"].as_u64()),
        (Some(1), Some(3))
    );
    assert!(usage.get("limits").is_none(), "no plan without the Hub");

    let (s, _) = app.call("DELETE", "/collections/docs", None).await;
    assert_eq!(s, 200);
    let (s, body) = app.call("GET", "/collections/docs", None).await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str()),
        (404, Some("collection_not_found"))
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = TestApp::new();
    let req = axum::http::Request::builder()
        .uri("/health")
        .header("x-request-id", "abc-123")
        .body(axum::body::Body::empty())
        .unwrap();
    let (s, headers, body) = app.raw(req).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(headers["x-request-id"], "abc-123");
    let (_, headers, _) = app.send("GET", "/collections/none", None).await;
    assert_eq!(headers["x-request-id"].len(), 16);
}

/// Every route of the table is in the OpenAPI document and is served by
/// the router (a request reaches a handler, not the 404/405 fallbacks).
#[tokio::test]
async fn openapi_lists_every_route() {
    let app = TestApp::new();
    let (s, doc) = app.call("GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let table = routes();
    let mut listed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        listed += item.as_object().unwrap().len();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                table
                    .iter()
                    .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path}"
            );
            assert!(op["responses"].is_object());
        }
    }
    assert_eq!(listed, table.len());
    for r in &table {
        let path = r.path.replace("{name}", "nosuch").replace("{id}", "1");
        let body = r.request.map(|_| ("application/json", b"{}".to_vec()));
        let (status, _, json) = app.send(r.method.as_str(), &path, body).await;
        let code = json["error"]["code"].as_str().unwrap_or("");
        assert!(
            code != "not_found" && code != "method_not_allowed",
            "{} {} -> {status} {code}",
            r.method,
            r.path
        );
    }
    // Bounds and errors as the server enforces them: the test app's limits
    // (100 points a batch, limit up to 1000, 10 searches a batch).
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["UpsertPoints"]["properties"]["points"]["maxItems"],
        100
    );
    assert_eq!(schemas["Search"]["properties"]["limit"]["maximum"], 1000);
    assert_eq!(
        schemas["SearchBatch"]["properties"]["searches"]["maxItems"],
        10
    );
    assert_eq!(
        schemas["CreateCollection"]["properties"]["dimension"]["maximum"],
        65_536
    );
    assert!(schemas["Condition"]["oneOf"].as_array().unwrap().len() >= 4);
    let search = &doc["paths"]["/collections/{name}/search"]["post"];
    assert_eq!(
        search["parameters"][0]["schema"]["pattern"],
        "^[A-Za-z0-9_-]{1,64}$"
    );
    for code in ["400", "401", "404", "413", "415", "422", "429", "503"] {
        assert!(search["responses"][code].is_object(), "search lacks {code}");
    }
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object()
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The schemas the paths refer to are all defined.
    let text = doc.to_string();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            text.contains(&format!("#/components/schemas/{name}")),
            "unused schema {name}"
        );
    }
}

/// Metrics are served in the Prometheus text format and move with traffic.
#[tokio::test]
async fn metrics_move_as_requests_happen() {
    let app = TestApp::new();
    let scrape = async |app: &TestApp| -> String {
        let (status, headers, text) = app.get_text("/metrics", &[]).await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        text
    };
    let count = |text: &str, prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let line = "vectorizer_http_requests_total{route=\"/collections\",status=\"201\"} ";
    let before = scrape(&app).await;
    for name in ["m1", "m2"] {
        app.call(
            "POST",
            "/collections",
            Some(json!({"name": name, "dimension": 2, "metric": "dot"})),
        )
        .await;
    }
    app.call(
        "POST",
        "/collections/m1/points",
        Some(json!({"points": [{"id": 1, "vector": [1, 2]}]})),
    )
    .await;
    let after = scrape(&app).await;
    // Other tests in this process count too: the figure only grows.
    assert!(count(&after, line) >= count(&before, line) + 2, "{after}");
    for family in [
        "vectorizer_http_request_duration_seconds_bucket",
        "vectorizer_collections ",
        "vectorizer_vectors ",
    ] {
        assert!(after.contains(family), "{family} missing");
    }
    assert!(after.contains("route=\"/collections/{name}/points\""));
}

/// `/docs` is Swagger UI from files inside the binary: the page and every
/// asset it names come from this server (no other address in the page),
/// without a key even where the API needs one, under a policy that lets
/// the page reach no other server.
#[tokio::test]
async fn the_api_page_is_served_from_the_binary() {
    let app = crate::common::TestApp::build(crate::common::AppOptions {
        local_keys: Some(("rw-key-0123456789abcdef", "ro-key-0123456789abcdef")),
        ..crate::common::AppOptions::default()
    });
    let (s, h, html) = app.get_text("/docs", &[]).await;
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = h["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("connect-src 'self'") && policy.contains("script-src 'self'"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let named: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/docs/assets/"))
        .collect();
    assert_eq!(named.len(), 4, "{named:?}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    for path in named {
        let (s, h, body) = app.get_text(path, &[]).await;
        assert_eq!(s, 200, "{path}");
        let kind = h["content-type"].to_str().unwrap();
        let file = path.trim_start_matches("/docs/assets/");
        let on_disk = if file.starts_with("swagger-ui") {
            dir.join("swagger-ui").join(file)
        } else {
            dir.join(file)
        };
        assert_eq!(body, std::fs::read_to_string(on_disk).unwrap(), "{path}");
        let want = if file.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(kind.starts_with(want), "{path}: {kind}");
    }
    // The page's script asks for the document this server serves, with the
    // key the user typed; without one it is refused like any client.
    let (_, _, js) = app.get_text("/docs/assets/docs.js", &[]).await;
    assert!(js.contains("url: \"/openapi.json\"") && js.contains("validatorUrl: null"));
    assert_eq!(app.get_text("/openapi.json", &[]).await.0, 401);
    let ro = [("authorization", "Bearer ro-key-0123456789abcdef")];
    assert_eq!(app.get_text("/openapi.json", &ro).await.0, 200);
    let readme = std::fs::read_to_string(dir.join("swagger-ui/README.md")).unwrap();
    assert!(readme.contains(vectorizer_server::docs_page::SWAGGER_UI_VERSION));
}
