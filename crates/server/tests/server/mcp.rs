//! The MCP adapter over real HTTP: every tool, permissions, error codes,
//! tenant isolation, and registration with the local Hub.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use vectorizer_hub::store::Plan;
use vectorizer_hub::{HubClient, HubClientConfig, HubStore, Secret};
use vectorizer_server::mcp::oplog::Who;
use vectorizer_server::mcp::register::{Announcement, Registration};

use crate::common::{AppOptions, TestApp};
use crate::hub_auth::{KEY, auth, eventually, hub, key};

/// Every MCP operation log file under `data`, one after another.
pub(crate) fn oplog_text(data: &std::path::Path) -> String {
    let dir = data.join(vectorizer_server::mcp::oplog::DIR);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out += &std::fs::read_to_string(e.path()).unwrap_or_default();
    }
    out
}

/// One JSON-RPC exchange with `/mcp`: the HTTP status and the body.
async fn rpc(app: &TestApp, key: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    rpc_with(app, key, &[], method, params).await
}

async fn rpc_with(
    app: &TestApp,
    key: Option<&str>,
    headers: &[(&str, &str)],
    method: &str,
    params: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string());
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Calls a tool; the JSON-RPC `result` (or `error`) object.
async fn tool(app: &TestApp, key: Option<&str>, name: &str, args: Value) -> Value {
    let (status, body) = rpc(
        app,
        key,
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
    .await;
    assert_eq!(status, 200, "{name}: {body}");
    body.get("result")
        .or_else(|| body.get("error"))
        .cloned()
        .unwrap_or_else(|| panic!("{name}: {body}"))
}

/// A successful tool's structured answer.
pub(crate) async fn ok(app: &TestApp, key: Option<&str>, name: &str, args: Value) -> Value {
    let r = tool(app, key, name, args).await;
    assert_eq!(r["isError"], false, "{name}: {r}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    r["structuredContent"].clone()
}

/// A failed tool's error code.
async fn fails(app: &TestApp, key: Option<&str>, name: &str, args: Value) -> String {
    let r = tool(app, key, name, args).await;
    assert_eq!(r["isError"], true, "{name}: {r}");
    let code = r["structuredContent"]["error"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(r["content"][0]["text"].as_str().unwrap().starts_with(&code));
    code
}

async fn tool_names(app: &TestApp, key: Option<&str>) -> BTreeSet<String> {
    let (status, body) = rpc(app, key, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

const ALL: [&str; 25] = [
    "list_collections",
    "get_collection",
    "create_collection",
    "delete_collection",
    "upsert_points",
    "get_points",
    "delete_points",
    "scroll_points",
    "count_points",
    "search",
    "search_batch",
    "set_payload",
    "overwrite_payload",
    "delete_payload",
    "create_payload_index",
    "drop_payload_index",
    "list_aliases",
    "update_aliases",
    "list_backups",
    "create_backup",
    "get_backup",
    "delete_backup",
    "restore_backup",
    "get_usage",
    "update_collection",
];

#[tokio::test]
async fn every_tool_answers_as_rest_does() {
    let app = TestApp::new();
    let (status, init) = rpc(
        &app,
        None,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(init["result"]["serverInfo"]["name"], "vectorizer");
    let (_, list) = rpc(&app, None, "tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), ALL.len());
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert!(t["description"].as_str().unwrap().len() > 30);
    }
    let search = tools.iter().find(|t| t["name"] == "search").unwrap();
    assert_eq!(
        search["inputSchema"]["properties"]["limit"]["maximum"],
        1000
    );
    let required = search["inputSchema"]["required"].as_array().unwrap();
    assert!(required.contains(&json!("collection")) && required.contains(&json!("vector")));

    let made = ok(
        &app,
        None,
        "create_collection",
        json!({"name": "docs", "dimension": 2, "metric": "cosine"}),
    )
    .await;
    assert_eq!(made["name"], "docs");
    let points = json!([
        {"id": 1, "vector": [1.0, 0.0], "payload": {"tag": "a"}},
        {"id": 2, "vector": [0.0, 1.0], "payload": {"tag": "b"}},
        {"id": 3, "vector": [0.7, 0.7], "payload": {"tag": "a"}}
    ]);
    let up = ok(
        &app,
        None,
        "upsert_points",
        json!({"collection": "docs", "points": points}),
    )
    .await;
    assert_eq!(up["upserted"], 3);
    let query = json!({"vector": [1.0, 0.1], "limit": 2, "filter": {"must": [{"key": "tag", "match": {"value": "a"}}]}});
    let mut args = query.clone();
    args["collection"] = json!("docs");
    let hits = ok(&app, None, "search", args).await;
    let (_, rest) = app
        .call("POST", "/collections/docs/search", Some(query.clone()))
        .await;
    assert_eq!(hits, rest, "MCP and REST answer the same search alike");
    assert_eq!(hits["results"][0]["id"], 1);
    let batch = ok(
        &app,
        None,
        "search_batch",
        json!({"collection": "docs", "searches": [query.clone(), query]}),
    )
    .await;
    assert_eq!(batch["results"][1], rest);
    let got = ok(
        &app,
        None,
        "get_points",
        json!({"collection": "docs", "ids": [2, 9], "with_vector": true}),
    )
    .await;
    assert_eq!(
        got["points"],
        json!([{"id": 2, "vector": [0.0, 1.0], "payload": {"tag": "b"}}])
    );
    let page = ok(
        &app,
        None,
        "scroll_points",
        json!({"collection": "docs", "limit": 2}),
    )
    .await;
    assert_eq!(page["points"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], 3);
    let counted = ok(&app, None, "count_points", json!({"collection": "docs", "filter": {"must": [{"key": "tag", "match": {"value": "a"}}]}})).await;
    assert_eq!(counted["count"], 2);
    let detail = ok(&app, None, "get_collection", json!({"collection": "docs"})).await;
    assert_eq!(detail["points"], 3);
    let all = ok(&app, None, "list_collections", json!({})).await;
    assert_eq!(all["collections"][0]["name"], "docs");
    let usage = ok(&app, None, "get_usage", json!({})).await;
    assert_eq!(usage["vectors"], 3);
    let deleted = ok(
        &app,
        None,
        "delete_points",
        json!({"collection": "docs", "ids": [1]}),
    )
    .await;
    assert_eq!(deleted["deleted"], 1);

    // Errors: the REST codes as tool errors; malformed arguments as
    // invalid params.
    assert_eq!(
        fails(
            &app,
            None,
            "upsert_points",
            json!({"collection": "docs", "points": [{"id": 5, "vector": [1.0]}]})
        )
        .await,
        "dimension_mismatch"
    );
    assert_eq!(
        fails(&app, None, "get_collection", json!({"collection": "nope"})).await,
        "collection_not_found"
    );
    assert_eq!(
        fails(
            &app,
            None,
            "create_collection",
            json!({"name": "docs", "dimension": 2, "metric": "dot"})
        )
        .await,
        "collection_exists"
    );
    assert_eq!(
        fails(
            &app,
            None,
            "search",
            json!({"collection": "docs", "vector": [1.0, 0.0], "limit": 5000})
        )
        .await,
        "invalid_request"
    );
    for (name, args) in [
        (
            "search",
            json!({"collection": "docs", "vector": "x", "limit": 1}),
        ),
        ("search", json!({"vector": [1.0, 0.0], "limit": 1})),
        (
            "search",
            json!({"collection": 7, "vector": [1.0, 0.0], "limit": 1}),
        ),
        ("list_collections", json!({"extra": 1})),
        (
            "upsert_points",
            json!({"collection": "docs", "points": [], "bogus": true}),
        ),
        ("no_such_tool", json!({})),
    ] {
        let e = tool(&app, None, name, args).await;
        assert_eq!(e["code"], -32602, "{name}: {e}");
        assert!(!e["message"].as_str().unwrap().contains("line 1"), "{e}");
    }
    // The message names the argument at fault, in JSON's words.
    let e = tool(
        &app,
        None,
        "search",
        json!({"collection": "docs", "vector": [1.0, "y"], "limit": 1}),
    )
    .await;
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("`vector[1]`") && m.contains("expected a number"),
        "{e}"
    );
    let ok_del = ok(
        &app,
        None,
        "delete_collection",
        json!({"collection": "docs"}),
    )
    .await;
    assert_eq!(ok_del["deleted"], true);

    // The operation log: one line per call, no vectors or payloads.
    let log_path = vectorizer_server::mcp::oplog::path(app.data_dir(), Who::Local);
    eventually(|| std::fs::read_to_string(&log_path).is_ok_and(|l| l.lines().count() >= 20)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    for line in log.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        for k in ["time", "request_id", "tool", "outcome", "latency_ms"] {
            assert!(!r[k].is_null(), "{k} in {line}");
        }
        assert!(
            !line.contains("vector") && !line.contains("\"tag\""),
            "{line}"
        );
    }
    assert!(log.contains("\"outcome\":\"dimension_mismatch\""));
    assert!(log.contains("\"tool\":\"search\",\"collection\":\"docs\",\"outcome\":\"ok\""));
    let (_, _, metrics) = app.get_text("/metrics", &[]).await;
    assert!(
        metrics.contains("mcp_tool_calls_total{tool=\"search\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_tool_call_duration_seconds_count{tool=\"search\"}"));
}

/// Refusals before any MCP message is handled are JSON errors like every
/// other route's, and change nothing.
#[tokio::test]
async fn http_refusals_are_json() {
    let app = TestApp::new();
    let client = reqwest::Client::new();
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.expect("a JSON body");
        (
            status,
            body["error"]["code"].as_str().unwrap().to_owned(),
            allow,
        )
    };
    let post = |path: &str| {
        client
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    };
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, code, allow) = send(
            client
                .request(method, app.url("/mcp"))
                .header("accept", "application/json, text/event-stream"),
        )
        .await;
        assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
        assert_eq!(allow.as_deref(), Some("POST"));
    }
    let create = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "create_collection", "arguments": {"name": "c", "dimension": 2, "metric": "dot"}}})
    .to_string();
    for (req, want) in [
        (post("/mcp").body("{not json"), (400, "invalid_json")),
        (post("/mcp/x").body(create.clone()), (404, "not_found")),
        (
            post("/mcp")
                .header("host", "evil.example")
                .body(create.clone()),
            (403, "host_not_allowed"),
        ),
        (
            client
                .post(app.url("/mcp"))
                .header("content-type", "application/json")
                .body(create.clone()),
            (406, "not_acceptable"),
        ),
        (
            post("/mcp").body(format!("{{\"x\":\"{}\"}}", "a".repeat(17 << 20))),
            (413, "payload_too_large"),
        ),
    ] {
        let (status, code, _) = send(req).await;
        assert_eq!((status, code.as_str()), want);
    }
    let (_, list) = tool_call_list(&app).await;
    assert_eq!(list, json!([]), "a refused request created nothing");
}

async fn tool_call_list(app: &TestApp) -> (u16, Value) {
    let (status, body) = rpc(
        app,
        None,
        "tools/call",
        json!({"name": "list_collections", "arguments": {}}),
    )
    .await;
    (
        status,
        body["result"]["structuredContent"]["collections"].clone(),
    )
}

#[tokio::test]
async fn keys_tenants_and_permissions() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "tiny".into(),
            max_collections: 10,
            max_vectors: 2,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let alice = hub
        .store
        .create_user("alice@example.com", "tiny")
        .unwrap()
        .id;
    let bob = hub.store.create_user("bob@example.com", "p").unwrap().id;
    let (a, _) = key(&hub.store, alice, &["read", "write", "delete"], None);
    let (a_read, _) = key(&hub.store, alice, &["read"], None);
    let (a_write, _) = key(&hub.store, alice, &["write"], None);
    let (b, _) = key(&hub.store, bob, &["admin"], None);

    // No key, or a bad one: 401 before any MCP message is read.
    for k in [None, Some("not-a-key-at-all-really")] {
        let (status, body) = rpc(&app, k, "tools/list", json!({})).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The tools a key may call, and no others.
    assert_eq!(tool_names(&app, Some(&a)).await.len(), ALL.len());
    let read_only = tool_names(&app, Some(&a_read)).await;
    assert_eq!(
        read_only,
        [
            "list_collections",
            "get_collection",
            "get_points",
            "scroll_points",
            "count_points",
            "search",
            "search_batch",
            "list_aliases",
            "list_backups",
            "get_backup",
            "get_usage"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        fails(
            &app,
            Some(&a_read),
            "create_collection",
            json!({"name": "x", "dimension": 2, "metric": "dot"})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        fails(
            &app,
            Some(&a_read),
            "upsert_points",
            json!({"collection": "x", "points": []})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        fails(
            &app,
            Some(&a_write),
            "delete_collection",
            json!({"collection": "x"})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        fails(
            &app,
            Some(&a_write),
            "delete_points",
            json!({"collection": "x", "ids": [1]})
        )
        .await,
        "forbidden"
    );

    ok(
        &app,
        Some(&a),
        "create_collection",
        json!({"name": "mine", "dimension": 2, "metric": "dot"}),
    )
    .await;
    ok(&app, Some(&a), "upsert_points", json!({"collection": "mine", "points": [{"id": 1, "vector": [1.0, 0.0]}, {"id": 2, "vector": [0.0, 1.0]}]})).await;
    // The plan allows 2 vectors: the third is a quota refusal with figures.
    let r = tool(
        &app,
        Some(&a),
        "upsert_points",
        json!({"collection": "mine", "points": [{"id": 3, "vector": [1.0, 1.0]}]}),
    )
    .await;
    assert_eq!(r["isError"], true);
    let e = &r["structuredContent"]["error"];
    assert_eq!(e["code"], "quota_exceeded");
    assert_eq!(
        (
            e["limit"].clone(),
            e["current"].clone(),
            e["requested"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    assert_eq!(
        ok(
            &app,
            Some(&a_read),
            "count_points",
            json!({"collection": "mine"})
        )
        .await["count"],
        2
    );

    // Bob reaches none of Alice's collection, by short or full name.
    let full = format!("user_{alice}:mine");
    for name in ["mine", full.as_str()] {
        for (t, mut args) in [
            ("get_collection", json!({})),
            ("delete_collection", json!({})),
            (
                "upsert_points",
                json!({"points": [{"id": 9, "vector": [1.0, 0.0]}]}),
            ),
            ("get_points", json!({"ids": [1]})),
            ("delete_points", json!({"ids": [1]})),
            ("scroll_points", json!({})),
            ("count_points", json!({})),
            ("search", json!({"vector": [1.0, 0.0], "limit": 1})),
            (
                "search_batch",
                json!({"searches": [{"vector": [1.0, 0.0], "limit": 1}]}),
            ),
        ] {
            args["collection"] = json!(name);
            let r = tool(&app, Some(&b), t, args).await;
            let code = r["structuredContent"]["error"]["code"]
                .as_str()
                .unwrap_or("");
            assert!(
                code == "collection_not_found" || (name == full && code == "invalid_name"),
                "{t} on {name}: {r}"
            );
            if name == "mine" {
                assert!(!r.to_string().contains(&alice.to_string()), "{r}");
            }
        }
    }
    assert_eq!(
        ok(&app, Some(&b), "list_collections", json!({})).await["collections"],
        json!([])
    );
    assert_eq!(
        ok(&app, Some(&b), "get_usage", json!({})).await["vectors"],
        0
    );
    // A session id, or any other MCP identifier, carries no one's rights:
    // Bob's key with Alice's identifiers acts as Bob.
    let (_, r) = rpc_with(
        &app,
        Some(&b),
        &[
            ("mcp-session-id", "alice-session"),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        "tools/call",
        json!({"name": "count_points", "arguments": {"collection": "mine"}}),
    )
    .await;
    assert_eq!(
        r["result"]["structuredContent"]["error"]["code"],
        "collection_not_found"
    );
    assert_eq!(
        ok(
            &app,
            Some(&a),
            "get_collection",
            json!({"collection": "mine"})
        )
        .await["points"],
        2
    );
    let log = oplog_text(app.data_dir());
    assert!(
        !log.contains(&a) && !log.contains(&b),
        "keys never in the log"
    );
}

#[tokio::test]
async fn registration_follows_the_hub() {
    let first = hub().await;
    let addr = first.addr;
    let mut cfg = HubClientConfig::new(format!("http://{addr}"), Secret::new(KEY.into()));
    cfg.timeout = Duration::from_secs(1);
    cfg.retries = 0;
    let client = std::sync::Arc::new(HubClient::new(cfg).unwrap());
    let reg = std::sync::Arc::new(Registration::default());
    reg.spawn(
        client.clone(),
        Announcement {
            node_id: "node-mcp".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            tools: vec![vectorizer_hub::model::McpTool {
                name: "search".into(),
                description: "d".into(),
            }],
            refresh: Duration::from_secs(1),
        },
    );
    eventually(|| first.store.mcp_nodes() == ["node-mcp"]).await;
    assert!(reg.is_registered());
    // The Hub restarts with its entry lost: the node registers again.
    first.task.abort();
    let _ = first.task.await;
    let store = std::sync::Arc::new(HubStore::in_memory());
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let router = vectorizer_hub::router(store.clone(), KEY);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    eventually(|| store.mcp_nodes() == ["node-mcp"]).await;
    // A graceful stop removes it.
    reg.deregister(&client).await;
    assert!(store.mcp_nodes().is_empty());
    assert!(!reg.is_registered());
}

/// The Hub down: a key checked before still works through `/mcp` (the
/// grace), one never checked is a 503 before any MCP message is read.
#[tokio::test]
async fn with_the_hub_down_unchecked_keys_get_503() {
    let hub = hub().await;
    let user = hub.store.create_user("m@example.com", "p").unwrap().id;
    let (known, _) = key(&hub.store, user, &["read"], None);
    let (fresh, _) = key(&hub.store, user, &["read"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::ZERO));
    let list = json!({"name": "list_collections", "arguments": {}});
    assert_eq!(
        rpc(&app, Some(&known), "tools/call", list.clone()).await.0,
        200
    );
    hub.task.abort();
    let _ = hub.task.await;
    let (status, body) = rpc(&app, Some(&known), "tools/call", list.clone()).await;
    assert_eq!(status, 200, "grace: {body}");
    assert_eq!(body["result"]["isError"], false);
    for k in [fresh.as_str(), "hvk_never_seen"] {
        let (status, body) = rpc(&app, Some(k), "tools/call", list.clone()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "hub_unavailable");
    }
}

/// One tenant's calls, with collection names of any length and in any
/// number, rotate only that tenant's own log files: another tenant's
/// records stay, and no record or reply carries the long name.
#[tokio::test]
async fn one_tenant_cannot_erase_the_operation_log() {
    let hub = hub().await;
    let ua = hub.store.create_user("a@example.com", "p").unwrap().id;
    let ub = hub.store.create_user("b@example.com", "p").unwrap().id;
    let (a, _) = key(&hub.store, ua, &["read", "write"], None);
    let (b, _) = key(&hub.store, ub, &["read", "write"], None);
    let app = TestApp::build(AppOptions {
        auth: Some(auth(hub.addr, Duration::from_secs(600))),
        oplog_file_bytes: 4096,
        ..AppOptions::default()
    });
    ok(&app, Some(&b), "list_collections", json!({})).await;
    let b_log = vectorizer_server::mcp::oplog::path(app.data_dir(), Who::Tenant(ub));
    eventually(|| std::fs::read_to_string(&b_log).is_ok_and(|l| l.contains(&ub.to_string()))).await;

    let long = "x".repeat(200 << 10);
    for _ in 0..5 {
        let (status, body) = rpc(
            &app,
            Some(&a),
            "tools/call",
            json!({"name": "get_collection", "arguments": {"collection": long}}),
        )
        .await;
        assert_eq!(status, 200);
        let text = body.to_string();
        assert!(text.len() < 2048, "a {} byte reply", text.len());
        assert!(body["result"]["isError"] == true, "{text}");
    }
    let a_log = vectorizer_server::mcp::oplog::path(app.data_dir(), Who::Tenant(ua));
    eventually(|| {
        std::fs::read_to_string(&a_log).is_ok_and(|l| l.matches("get_collection").count() == 5)
    })
    .await;
    for line in std::fs::read_to_string(&a_log).unwrap().lines() {
        assert!(line.len() < 1024, "a {} byte record", line.len());
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["collection"], "(invalid name)", "{line}");
    }
    for _ in 0..200 {
        ok(&app, Some(&a), "list_collections", json!({})).await;
    }
    let a_log = vectorizer_server::mcp::oplog::path(app.data_dir(), Who::Tenant(ua));
    eventually(|| {
        std::fs::read_to_string(&a_log).is_ok_and(|l| l.contains("list_collections"))
            && a_log.with_extension("log.2").exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // B's record is where it was.
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    assert_eq!(b_text.lines().count(), 1, "{b_text}");
    // A's files hold only bounded records, and at most max_files + 1 files.
    let mut a_bytes = 0;
    for entry in std::fs::read_dir(a_log.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !path.to_string_lossy().contains(&ua.to_string()) {
            continue;
        }
        a_bytes += text.len();
        for line in text.lines() {
            assert!(line.len() < 1024, "a {} byte record", line.len());
            let r: Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["user_id"], ua.to_string());
        }
    }
    assert!(a_bytes <= 3 * 4096, "{a_bytes} bytes of A's records");
}

/// The tools for payloads, indexes, aliases and backups act as their REST
/// routes do, with the same answers and the same refusals.
#[tokio::test]
async fn payload_index_alias_and_backup_tools_answer_as_rest_does() {
    let app = TestApp::new();
    let made = json!({"name": "docs", "dimension": 2, "metric": "cosine"});
    assert_eq!(app.call("POST", "/collections", Some(made)).await.0, 201);
    let points = json!({"points": [
        {"id": 1, "vector": [1.0, 0.0], "payload": {"tag": "a", "n": 1}},
        {"id": 2, "vector": [0.0, 1.0], "payload": {"tag": "b", "n": 2}}
    ]});
    assert_eq!(
        app.call("POST", "/collections/docs/points", Some(points))
            .await
            .0,
        200
    );
    let get = |id: u64| {
        let app = &app;
        async move {
            app.call("GET", &format!("/collections/docs/points/{id}"), None)
                .await
                .1["payload"]
                .clone()
        }
    };

    let set = ok(
        &app,
        None,
        "set_payload",
        json!({"collection": "docs", "ids": [1], "payload": {"seen": true}}),
    )
    .await;
    assert_eq!(set["updated"], 1);
    assert_eq!(get(1).await, json!({"tag": "a", "n": 1, "seen": true}));
    let by_filter = json!({"collection": "docs", "filter": {"must": [{"key": "tag", "match": {"value": "b"}}]}, "payload": {"only": 1}});
    assert_eq!(
        ok(&app, None, "overwrite_payload", by_filter).await["updated"],
        1
    );
    assert_eq!(get(2).await, json!({"only": 1}));
    let removed = ok(
        &app,
        None,
        "delete_payload",
        json!({"collection": "docs", "ids": [1], "keys": ["n"]}),
    )
    .await;
    assert_eq!(removed["updated"], 1);
    assert_eq!(get(1).await, json!({"tag": "a", "seen": true}));
    assert_eq!(
        fails(
            &app,
            None,
            "set_payload",
            json!({"collection": "docs", "payload": {"x": 1}})
        )
        .await,
        "invalid_request",
        "neither ids nor filter"
    );

    let indexed = ok(
        &app,
        None,
        "create_payload_index",
        json!({"collection": "docs", "field": "tag"}),
    )
    .await;
    let (_, rest) = app.call("GET", "/collections/docs", None).await;
    assert_eq!(indexed["payload_index"], rest["payload_index"]);
    assert!(
        indexed["payload_index"]
            .as_array()
            .unwrap()
            .contains(&json!("tag"))
    );

    let aliases =
        json!({"actions": [{"create_alias": {"alias": "current", "collection": "docs"}}]});
    let listed = ok(&app, None, "update_aliases", aliases).await;
    let (_, rest) = app.call("GET", "/aliases", None).await;
    assert_eq!(listed, rest);
    assert_eq!(ok(&app, None, "list_aliases", json!({})).await, rest);
    // An alias stands for its collection in every tool.
    let hits = ok(
        &app,
        None,
        "search",
        json!({"collection": "current", "vector": [1.0, 0.0], "limit": 1}),
    )
    .await;
    assert_eq!(hits["results"][0]["id"], 1);

    let backup = ok(
        &app,
        None,
        "create_backup",
        json!({"label": "from an agent"}),
    )
    .await;
    let id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["label"], "from an agent");
    let (_, rest) = app
        .call("GET", &format!("/api/hub/backups/{id}"), None)
        .await;
    assert_eq!(
        ok(&app, None, "get_backup", json!({"backup_id": id})).await,
        rest
    );
    let (_, rest) = app.call("GET", "/api/hub/backups", None).await;
    assert_eq!(ok(&app, None, "list_backups", json!({})).await, rest);
    let restored = ok(
        &app,
        None,
        "restore_backup",
        json!({"backup_id": id, "rename": {"docs": "docs2"}}),
    )
    .await;
    assert_eq!(restored["restored"][0]["name"], "docs2");
    assert_eq!(
        app.call("GET", "/collections/docs2", None).await.1["points"],
        2
    );
    assert_eq!(
        fails(
            &app,
            None,
            "restore_backup",
            json!({"backup_id": id, "rename": {"docs": "docs2"}})
        )
        .await,
        "collection_exists"
    );
    assert_eq!(
        ok(&app, None, "delete_backup", json!({"backup_id": id})).await["deleted"],
        true
    );
    assert_eq!(
        fails(&app, None, "get_backup", json!({"backup_id": id})).await,
        "backup_not_found"
    );
}

/// With the Hub on, the new tools act for the key's tenant alone and with
/// its permissions: a read-only key cannot change payloads or back up, and
/// another tenant's backup is not found.
#[tokio::test]
async fn payload_and_backup_tools_act_for_the_key_tenant() {
    let hub = hub().await;
    let ua = hub.store.create_user("pa@example.com", "p").unwrap().id;
    let ub = hub.store.create_user("pb@example.com", "p").unwrap().id;
    let (a, _) = key(&hub.store, ua, &["admin"], None);
    let (a_read, _) = key(&hub.store, ua, &["read"], None);
    let (b, _) = key(&hub.store, ub, &["admin"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(600)));
    ok(
        &app,
        Some(&a),
        "create_collection",
        json!({"name": "docs", "dimension": 2, "metric": "dot"}),
    )
    .await;
    ok(
        &app,
        Some(&a),
        "upsert_points",
        json!({"collection": "docs", "points": [{"id": 1, "vector": [1.0, 0.0]}]}),
    )
    .await;
    let set = json!({"collection": "docs", "ids": [1], "payload": {"k": 1}});
    assert_eq!(
        fails(&app, Some(&a_read), "set_payload", set.clone()).await,
        "forbidden"
    );
    assert_eq!(ok(&app, Some(&a), "set_payload", set).await["updated"], 1);
    assert_eq!(
        fails(&app, Some(&a_read), "create_backup", json!({})).await,
        "forbidden"
    );
    let made = ok(&app, Some(&a), "create_backup", json!({})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ok(&app, Some(&a_read), "get_backup", json!({"backup_id": id})).await["id"],
        id.as_str()
    );
    assert_eq!(
        fails(&app, Some(&b), "get_backup", json!({"backup_id": id})).await,
        "backup_not_found"
    );
    assert_eq!(
        fails(
            &app,
            Some(&b),
            "set_payload",
            json!({"collection": "docs", "ids": [1], "payload": {"k": 2}})
        )
        .await,
        "collection_not_found"
    );
    hub.task.abort();
}
