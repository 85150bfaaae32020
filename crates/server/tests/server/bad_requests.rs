//! Bad requests: each gets its documented status and error code in the
//! common shape, and changes nothing.

use serde_json::{Value, json};

use crate::common::{MAX_BATCH, MAX_BODY, TestApp};

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    /// Content type and raw body.
    body: Option<(&'static str, Vec<u8>)>,
    status: u16,
    code: &'static str,
}

fn json_case(
    what: &'static str,
    method: &'static str,
    path: &str,
    body: Value,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body: Some(("application/json", body.to_string().into_bytes())),
        status,
        code,
    }
}

fn raw_case(
    what: &'static str,
    method: &'static str,
    path: &str,
    ct: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body: Some((ct, body.as_bytes().to_vec())),
        status,
        code,
    }
}

fn bare(
    what: &'static str,
    method: &'static str,
    path: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body: None,
        status,
        code,
    }
}

fn point(id: Value, v: Value) -> Value {
    json!({"id": id, "vector": v})
}

fn cases() -> Vec<Case> {
    let c = "/collections";
    let p = "/collections/docs/points";
    let s = "/collections/docs/search";
    let long = "x".repeat(10_000);
    let many: Vec<Value> = (0..MAX_BATCH as u64 + 1)
        .map(|i| point(json!(i + 100), json!([1, 0, 0])))
        .collect();
    vec![
        raw_case(
            "malformed JSON",
            "POST",
            c,
            "application/json",
            "{\"name\":",
            400,
            "invalid_json",
        ),
        raw_case(
            "trailing garbage",
            "POST",
            c,
            "application/json",
            "{\"name\":\"a\",\"dimension\":3,\"metric\":\"dot\"} x",
            400,
            "invalid_json",
        ),
        raw_case(
            "empty body",
            "POST",
            c,
            "application/json",
            "",
            400,
            "invalid_body",
        ),
        json_case(
            "dimension as a string",
            "POST",
            c,
            json!({"name": "a", "dimension": "3", "metric": "dot"}),
            400,
            "invalid_body",
        ),
        json_case(
            "missing metric",
            "POST",
            c,
            json!({"name": "a", "dimension": 3}),
            400,
            "invalid_body",
        ),
        json_case(
            "unknown field",
            "POST",
            c,
            json!({"name": "a", "dimension": 3, "metric": "dot", "shards": 2}),
            400,
            "invalid_body",
        ),
        json_case(
            "unknown metric",
            "POST",
            c,
            json!({"name": "a", "dimension": 3, "metric": "chebyshev"}),
            400,
            "invalid_body",
        ),
        json_case(
            "negative dimension",
            "POST",
            c,
            json!({"name": "a", "dimension": -3, "metric": "dot"}),
            400,
            "invalid_body",
        ),
        json_case(
            "dimension 0",
            "POST",
            c,
            json!({"name": "a", "dimension": 0, "metric": "dot"}),
            422,
            "invalid_config",
        ),
        json_case(
            "dimension too large",
            "POST",
            c,
            json!({"name": "a", "dimension": 70_000, "metric": "dot"}),
            422,
            "invalid_config",
        ),
        json_case(
            "hnsw m too small",
            "POST",
            c,
            json!({"name": "a", "dimension": 3, "metric": "dot", "hnsw": {"m": 1}}),
            422,
            "invalid_config",
        ),
        json_case(
            "payload index on an empty path",
            "POST",
            c,
            json!({"name": "a", "dimension": 3, "metric": "dot", "payload_index": ["cat", "a..b"]}),
            422,
            "invalid_config",
        ),
        json_case(
            "payload index listed twice",
            "POST",
            c,
            json!({"name": "a", "dimension": 3, "metric": "dot", "payload_index": ["cat", "cat"]}),
            422,
            "invalid_config",
        ),
        json_case(
            "payload index on a bad path",
            "POST",
            &format!("{c}/docs/payload_index"),
            json!({"field": ".x"}),
            422,
            "invalid_config",
        ),
        json_case(
            "payload index without a field",
            "POST",
            &format!("{c}/docs/payload_index"),
            json!({"name": "x"}),
            400,
            "invalid_body",
        ),
        json_case(
            "duplicate create",
            "POST",
            c,
            json!({"name": "docs", "dimension": 3, "metric": "cosine"}),
            409,
            "collection_exists",
        ),
        json_case(
            "name with /",
            "POST",
            c,
            json!({"name": "a/b", "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        json_case(
            "name ..",
            "POST",
            c,
            json!({"name": "..", "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        json_case(
            "name with NUL",
            "POST",
            c,
            json!({"name": "a\u{0}b", "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        json_case(
            "name of 10,000 characters",
            "POST",
            c,
            json!({"name": long, "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        json_case(
            "name with :",
            "POST",
            c,
            json!({"name": "user_1:docs", "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        json_case(
            "empty name",
            "POST",
            c,
            json!({"name": "", "dimension": 3, "metric": "dot"}),
            400,
            "invalid_name",
        ),
        raw_case(
            "text/plain body",
            "POST",
            c,
            "text/plain",
            "{}",
            415,
            "unsupported_media_type",
        ),
        // No body reads as `{}`, which lacks the collection's fields.
        bare("no body, no content type", "POST", c, 400, "invalid_body"),
        json_case(
            "wrong dimension",
            "POST",
            p,
            json!({"points": [point(json!(9), json!([1, 0]))]}),
            422,
            "dimension_mismatch",
        ),
        raw_case(
            "NaN as a huge exponent",
            "POST",
            p,
            "application/json",
            "{\"points\":[{\"id\":9,\"vector\":[1e999,0,0]}]}",
            400,
            "invalid_json",
        ),
        json_case(
            "f32 overflow",
            "POST",
            p,
            json!({"points": [point(json!(9), json!([1e300, 0, 0]))]}),
            422,
            "invalid_vector",
        ),
        json_case(
            "empty batch",
            "POST",
            p,
            json!({"points": []}),
            422,
            "empty_batch",
        ),
        json_case(
            "duplicate ids in a batch",
            "POST",
            p,
            json!({"points": [point(json!(9), json!([1, 0, 0])), point(json!(9), json!([0, 1, 0]))]}),
            422,
            "duplicate_id",
        ),
        json_case(
            "batch over the limit",
            "POST",
            p,
            json!({"points": many}),
            422,
            "batch_too_large",
        ),
        json_case(
            "payload not an object",
            "POST",
            p,
            json!({"points": [{"id": 9, "vector": [1, 0, 0], "payload": [1, 2]}]}),
            400,
            "invalid_body",
        ),
        json_case(
            "payload over the limit",
            "POST",
            p,
            json!({"points": [{"id": 9, "vector": [1, 0, 0], "payload": {"t": "y".repeat(2000)}}]}),
            422,
            "invalid_payload",
        ),
        json_case(
            "negative id",
            "POST",
            p,
            json!({"points": [point(json!(-1), json!([1, 0, 0]))]}),
            400,
            "invalid_body",
        ),
        json_case(
            "fractional id",
            "POST",
            p,
            json!({"points": [point(json!(1.5), json!([1, 0, 0]))]}),
            400,
            "invalid_body",
        ),
        json_case(
            "id neither integer nor UUID",
            "POST",
            p,
            json!({"points": [point(json!("abc"), json!([1, 0, 0]))]}),
            400,
            "invalid_body",
        ),
        json_case(
            "zero vector under cosine",
            "POST",
            p,
            json!({"points": [point(json!(9), json!([0, 0, 0]))]}),
            422,
            "invalid_vector",
        ),
        json_case(
            "vector of strings",
            "POST",
            p,
            json!({"points": [point(json!(9), json!(["a", 0, 0]))]}),
            400,
            "invalid_body",
        ),
        json_case(
            "upsert to a missing collection",
            "POST",
            "/collections/nope/points",
            json!({"points": [point(json!(9), json!([1, 0, 0]))]}),
            404,
            "collection_not_found",
        ),
        json_case(
            "upsert to an invalid name",
            "POST",
            "/collections/a..b/points",
            json!({"points": [point(json!(9), json!([1, 0, 0]))]}),
            400,
            "invalid_name",
        ),
        json_case(
            "limit 10^9",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 1_000_000_000u64}),
            422,
            "invalid_request",
        ),
        json_case(
            "limit 0",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 0}),
            422,
            "invalid_request",
        ),
        json_case(
            "ef too large",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 3, "ef": 100_000}),
            422,
            "invalid_request",
        ),
        json_case(
            "unknown filter clause",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 3, "filter": {"maybe": []}}),
            400,
            "invalid_filter",
        ),
        json_case(
            "a geo condition",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 3, "filter": {"must": [{"key": "a", "geo_radius": {"center": {"lat": 0, "lon": 0}, "radius": 1.0}}]}}),
            400,
            "invalid_filter",
        ),
        json_case(
            "range with a string bound",
            "POST",
            s,
            json!({"vector": [1, 0, 0], "limit": 3, "filter": {"must": [{"key": "a", "range": {"gt": "x"}}]}}),
            400,
            "invalid_filter",
        ),
        json_case(
            "search wrong dimension",
            "POST",
            s,
            json!({"vector": [1, 0, 0, 0], "limit": 3}),
            422,
            "dimension_mismatch",
        ),
        json_case(
            "search a missing collection",
            "POST",
            "/collections/nope/search",
            json!({"vector": [1, 0, 0], "limit": 3}),
            404,
            "collection_not_found",
        ),
        json_case(
            "empty search batch",
            "POST",
            "/collections/docs/search/batch",
            json!({"searches": []}),
            422,
            "invalid_request",
        ),
        json_case(
            "scroll limit 0",
            "POST",
            "/collections/docs/points/scroll",
            json!({"limit": 0}),
            422,
            "invalid_request",
        ),
        json_case(
            "get with no ids",
            "POST",
            "/collections/docs/points/get",
            json!({"ids": []}),
            422,
            "empty_batch",
        ),
        bare(
            "point id not an id",
            "GET",
            "/collections/docs/points/abc",
            400,
            "invalid_id",
        ),
        bare(
            "missing point",
            "GET",
            "/collections/docs/points/999",
            404,
            "point_not_found",
        ),
        bare(
            "delete a missing collection",
            "DELETE",
            "/collections/nope",
            404,
            "collection_not_found",
        ),
        bare(
            "drop a payload index on a bad path",
            "DELETE",
            "/collections/docs/payload_index/a..b",
            422,
            "invalid_config",
        ),
        bare("unknown route", "GET", "/nope", 404, "not_found"),
        bare(
            "wrong method",
            "PUT",
            "/collections",
            405,
            "method_not_allowed",
        ),
        Case {
            what: "oversized body",
            method: "POST",
            path: p.to_owned(),
            body: Some(("application/json", vec![b' '; MAX_BODY + 1])),
            status: 413,
            code: "payload_too_large",
        },
    ]
}

async fn state(app: &TestApp) -> Value {
    let (_, list) = app.call("GET", "/collections", None).await;
    let (_, pts) = app
        .call(
            "POST",
            "/collections/docs/points/scroll",
            Some(json!({"limit": 1000, "with_vector": true})),
        )
        .await;
    json!({"list": list, "points": pts})
}

#[tokio::test]
async fn bad_requests_get_their_status_and_change_nothing() {
    let app = TestApp::new();
    app.call(
        "POST",
        "/collections",
        Some(json!({"name": "docs", "dimension": 3, "metric": "cosine"})),
    )
    .await;
    app.call(
        "POST",
        "/collections/docs/points",
        Some(json!({"points": [{"id": 1, "vector": [1, 0, 0], "payload": {"a": 1}}]})),
    )
    .await;
    let before = state(&app).await;
    let cases = cases();
    assert!(cases.len() >= 30);
    for c in cases {
        let (status, _, body) = app.send(c.method, &c.path, c.body).await;
        assert_eq!(status.as_u16(), c.status, "{}: {body}", c.what);
        assert_eq!(
            body["error"]["code"].as_str(),
            Some(c.code),
            "{}: {body}",
            c.what
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: no message",
            c.what
        );
        assert_eq!(state(&app).await, before, "{} changed state", c.what);
    }
}
