//! Cluster mode serves exactly what a single node serves. One table of
//! requests, covering every REST route and every MCP tool with each filter
//! form and each optional field, runs against a standalone node and, on
//! the same data, through each of three cluster nodes (the leader and the
//! followers of the caller's home shard); every answer must be equal. The
//! writes include filtered ones through a follower and through the leader;
//! after a full restart of every node the reads are compared again. The
//! table is checked against the router's routes and the MCP tool list, so
//! an operation cannot be left out.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};

use super::harness::*;

/// A request, through REST or through an MCP tool.
#[derive(Clone)]
enum Req {
    Rest {
        op: &'static str,
        method: &'static str,
        path: String,
        body: Option<Value>,
    },
    Mcp {
        tool: &'static str,
        args: Value,
    },
}

fn rest(op: &'static str, method: &'static str, path: &str, body: Option<Value>) -> Req {
    Req::Rest {
        op,
        method,
        path: path.to_owned(),
        body,
    }
}

fn mcp(tool: &'static str, args: Value) -> Req {
    Req::Mcp { tool, args }
}

/// Routes the table does not send, and why: none of them reads or writes a
/// tenant's data through the service's operations.
const NOT_DATA: [&str; 6] = [
    "health",
    "metrics",
    "openapi",
    "cluster_status",
    "cluster_replace_node",
    "cluster_repair_group",
];

/// MCP tools refused in cluster mode (a tool error
/// `unavailable_in_cluster_mode`), checked as such through every node.
const MCP_NOT_IN_CLUSTER: [(&str, &str); 7] = [
    ("list_aliases", "{}"),
    (
        "update_aliases",
        r#"{"actions": [{"create_alias": {"alias": "a1", "collection": "docs"}}]}"#,
    ),
    ("list_backups", "{}"),
    ("create_backup", "{}"),
    (
        "get_backup",
        r#"{"backup_id": "00000000-0000-0000-0000-000000000001"}"#,
    ),
    (
        "delete_backup",
        r#"{"backup_id": "00000000-0000-0000-0000-000000000001"}"#,
    ),
    (
        "restore_backup",
        r#"{"backup_id": "00000000-0000-0000-0000-000000000001"}"#,
    ),
];

/// Routes refused in cluster mode (400 `unavailable_in_cluster_mode`), checked as
/// such through every node: operation, method, path, body (JSON, or the
/// bytes of an upload).
const NOT_IN_CLUSTER: [(&str, &str, &str, &str); 9] = [
    ("list_aliases", "GET", "/aliases", ""),
    (
        "update_aliases",
        "POST",
        "/aliases",
        r#"{"actions": [{"create_alias": {"alias": "a1", "collection": "docs"}}]}"#,
    ),
    ("list_backups", "GET", "/api/hub/backups", ""),
    ("create_backup", "POST", "/api/hub/backups", "{}"),
    (
        "get_backup",
        "GET",
        "/api/hub/backups/00000000-0000-0000-0000-000000000001",
        "",
    ),
    (
        "delete_backup",
        "DELETE",
        "/api/hub/backups/00000000-0000-0000-0000-000000000001",
        "",
    ),
    (
        "download_backup",
        "GET",
        "/api/hub/backups/00000000-0000-0000-0000-000000000001/download",
        "",
    ),
    (
        "restore_backup",
        "POST",
        "/api/hub/backups/restore",
        r#"{"backup_id": "00000000-0000-0000-0000-000000000001"}"#,
    ),
    ("upload_backup", "POST", "/api/hub/backups/upload", "bytes"),
];

const UUID_1: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

const COLORS: [&str; 4] = ["red", "green", "blue", "ünïcødé ✓"];
const LANGS: [&str; 3] = ["en", "fr", "日本語"];

fn points() -> Vec<Value> {
    (0..40u64)
        .map(|i| {
            let id = if i % 10 == 3 {
                json!(format!("7c9e6679-7425-40de-944b-e07fc1f90a{i:02x}"))
            } else {
                json!(i * 1_000_000_007)
            };
            json!({
                "id": id,
                "vector": [1.0 + i as f32 / 7.0, (i % 5) as f32 - 2.0, 0.25 * (i % 3) as f32, -(i as f32) / 40.0],
                "payload": {
                    "color": COLORS[i as usize % 4],
                    "n": i as i64 - 20,
                    "big": 9_007_199_254_740_993u64 + i,
                    "price": i as f64 * 1.25,
                    "ok": i % 2 == 0,
                    "tags": [format!("t{}", i % 3), "all"],
                    "meta": {"lang": LANGS[i as usize % 3], "deep": {"x": i}},
                    "note": if i % 4 == 0 { Value::Null } else { json!(format!("note {i}")) },
                    "items": if i % 7 == 0 { json!([]) } else {
                        json!([{"sku": format!("s{}", i % 5), "qty": i % 4}, {"sku": "z", "qty": 9}])
                    }
                }
            })
        })
        .collect()
}

/// Every filter form the language has.
fn filters() -> Vec<Value> {
    vec![
        json!({"must": [{"key": "color", "match": {"value": "red"}}]}),
        json!({"must": [{"key": "n", "match": {"value": -3}}]}),
        json!({"must": [{"key": "ok", "match": {"value": true}}]}),
        json!({"must": [{"key": "color", "match": {"any": ["green", "ünïcødé ✓"]}}]}),
        json!({"must": [{"key": "price", "range": {"gte": 5, "lt": 30.5}}]}),
        json!({"must": [{"key": "meta.lang", "match": {"value": "日本語"}}]}),
        json!({"must": [{"key": "tags", "match": {"value": "t1"}}]}),
        json!({"must": [{"has_id": [0, 1_000_000_007, "7c9e6679-7425-40de-944b-e07fc1f90a03"]}]}),
        json!({"should": [{"key": "n", "range": {"gt": 10}}, {"key": "color", "match": {"value": "blue"}}]}),
        json!({"must_not": [{"key": "ok", "match": {"value": false}}]}),
        json!({"must": [{"filter": {"should": [{"key": "meta.deep.x", "range": {"lte": 4}}]}}], "must_not": [{"must": [{"key": "color", "match": {"value": "red"}}]}]}),
        json!({"must": {"key": "color", "match": {"value": "green"}}}),
        json!({}),
        json!({"must": [{"key": "price", "match": {"value": 2.5}}]}),
        json!({"must": [{"key": "color", "match": {"except": ["red", "green"]}}]}),
        json!({"must": [{"key": "meta.lang", "match": {"text": "本"}}]}),
        json!({"must": [{"key": "items", "values_count": {"gte": 2}}]}),
        json!({"must": [{"is_null": {"key": "note"}}]}),
        json!({"must": [{"is_empty": {"key": "items"}}]}),
        json!({"must": [{"key": "items[].sku", "match": {"any": ["s2", "s3"]}}]}),
        json!({"must": [{"nested": {"key": "items", "filter": {"must": [{"key": "sku", "match": {"value": "s1"}}, {"key": "qty", "range": {"gte": 1}}]}}}]}),
        json!({"min_should": {"conditions": [{"key": "ok", "match": {"value": true}}, {"key": "color", "match": {"value": "red"}}, {"is_null": {"key": "note"}}], "min_count": 2}}),
    ]
}

/// The writes, in order: (request, whether it is filtered).
fn writes() -> Vec<(Req, bool)> {
    let d = "/collections/docs";
    vec![
        (
            rest(
                "create_collection",
                "POST",
                "/collections",
                Some(json!({
                    "name": "docs", "dimension": 4, "metric": "cosine",
                    "hnsw": {"m": 8, "ef_construction": 64, "ef_search": 64},
                    "payload_index": ["color"], "target_recall": 0.97,
                    "quantization": {"type": "int8", "rescore": true, "oversampling": 2}
                })),
            ),
            false,
        ),
        (
            mcp(
                "create_collection",
                json!({"name": "mcp-docs", "dimension": 3, "metric": "euclidean", "target_recall": 0.93, "quantization": {"type": "int8"}}),
            ),
            false,
        ),
        (
            rest(
                "create_collection",
                "POST",
                "/collections",
                Some(json!({"name": "gone", "dimension": 2, "metric": "dot"})),
            ),
            false,
        ),
        (
            mcp(
                "create_collection",
                json!({"name": "gone2", "dimension": 2, "metric": "dot"}),
            ),
            false,
        ),
        (
            rest(
                "upsert_points",
                "POST",
                &format!("{d}/points"),
                Some(json!({"points": points()})),
            ),
            false,
        ),
        (
            mcp(
                "upsert_points",
                json!({"collection": "mcp-docs", "points": (0..10).map(|i| json!({"id": i, "vector": [i as f32, 1.0, -0.5], "payload": {"i": i}})).collect::<Vec<_>>()}),
            ),
            false,
        ),
        (
            rest(
                "create_payload_index",
                "POST",
                &format!("{d}/payload_index"),
                Some(json!({"field": "meta.lang"})),
            ),
            false,
        ),
        (
            mcp(
                "create_payload_index",
                json!({"collection": "mcp-docs", "field": "i"}),
            ),
            false,
        ),
        (
            rest(
                "create_payload_index",
                "POST",
                &format!("{d}/payload_index"),
                Some(json!({"field": "items.sku"})),
            ),
            false,
        ),
        (
            rest(
                "drop_payload_index",
                "DELETE",
                &format!("{d}/payload_index/items.sku"),
                None,
            ),
            false,
        ),
        (
            mcp(
                "drop_payload_index",
                json!({"collection": "mcp-docs", "field": "i"}),
            ),
            false,
        ),
        (
            mcp(
                "update_collection",
                json!({"collection": "mcp-docs", "hnsw": {"ef_search": 80}, "target_recall": null}),
            ),
            false,
        ),
        (
            mcp(
                "set_payload",
                json!({"collection": "mcp-docs", "ids": [1, 2], "payload": {"seen": "ü"}}),
            ),
            false,
        ),
        (
            mcp(
                "overwrite_payload",
                json!({"collection": "mcp-docs", "filter": {"must": [{"key": "i", "range": {"gte": 6}}]}, "payload": {"i": 6, "over": true}}),
            ),
            true,
        ),
        (
            mcp(
                "delete_payload",
                json!({"collection": "mcp-docs", "filter": {"must": [{"key": "seen", "match": {"value": "ü"}}]}, "keys": ["seen"]}),
            ),
            true,
        ),
        (
            rest(
                "update_collection",
                "PATCH",
                d,
                Some(json!({"hnsw": {"ef_search": 100}, "target_recall": 0.9})),
            ),
            false,
        ),
        (
            rest(
                "set_payload",
                "POST",
                &format!("{d}/points/payload"),
                Some(json!({"payload": {"seen": true, "note": "ü"}, "ids": [0, 2_000_000_014u64]})),
            ),
            false,
        ),
        (
            rest(
                "set_payload",
                "POST",
                &format!("{d}/points/payload"),
                Some(
                    json!({"payload": {"flagged": {"by": "filter"}}, "filter": {"must": [{"key": "color", "match": {"value": "blue"}}]}}),
                ),
            ),
            true,
        ),
        (
            rest(
                "overwrite_payload",
                "PUT",
                &format!("{d}/points/payload"),
                Some(
                    json!({"payload": {"color": "red", "replaced": 1}, "filter": {"must": [{"key": "n", "range": {"gte": 15}}]}}),
                ),
            ),
            true,
        ),
        (
            rest(
                "delete_payload",
                "POST",
                &format!("{d}/points/payload/delete"),
                Some(
                    json!({"keys": ["big"], "filter": {"should": [{"key": "ok", "match": {"value": true}}]}}),
                ),
            ),
            true,
        ),
        (
            rest(
                "delete_payload",
                "POST",
                &format!("{d}/points/payload/delete"),
                Some(json!({"keys": ["tags"], "ids": [1_000_000_007]})),
            ),
            false,
        ),
        (
            rest(
                "delete_points",
                "POST",
                &format!("{d}/points/delete"),
                Some(json!({"ids": [5_000_000_035u64, "7c9e6679-7425-40de-944b-e07fc1f90a0d"]})),
            ),
            false,
        ),
        (
            rest(
                "delete_points",
                "POST",
                &format!("{d}/points/delete"),
                Some(
                    json!({"filter": {"must": [{"key": "meta.lang", "match": {"value": "fr"}}, {"key": "n", "range": {"lt": -10}}]}}),
                ),
            ),
            true,
        ),
        (
            mcp(
                "delete_points",
                json!({"collection": "mcp-docs", "filter": {"must": [{"key": "i", "range": {"gte": 8}}]}}),
            ),
            true,
        ),
        (
            mcp(
                "delete_points",
                json!({"collection": "mcp-docs", "ids": [0]}),
            ),
            false,
        ),
        (
            rest(
                "create_collection",
                "POST",
                "/collections",
                Some(json!({"name": "l1", "dimension": 2, "metric": "manhattan"})),
            ),
            false,
        ),
        (
            mcp(
                "upsert_points",
                json!({"collection": "l1", "points": (0..12).map(|i| json!({"id": i, "vector": [i as f32, (i % 3) as f32], "payload": {"i": i}})).collect::<Vec<_>>()}),
            ),
            false,
        ),
        (
            rest("delete_collection", "DELETE", "/collections/gone", None),
            false,
        ),
        (
            mcp("delete_collection", json!({"collection": "gone2"})),
            false,
        ),
    ]
}

/// The reads compared after the writes, and again after a restart.
fn reads() -> Vec<Req> {
    let d = "/collections/docs";
    let q = json!([0.9, -1.0, 0.2, -0.3]);
    let mut out = vec![
        rest("list_collections", "GET", "/collections", None),
        rest("get_collection", "GET", d, None),
        rest("get_collection", "GET", "/collections/gone", None),
        rest("usage", "GET", "/usage", None),
        rest("get_point", "GET", &format!("{d}/points/0"), None),
        rest(
            "get_point",
            "GET",
            &format!("{d}/points/7c9e6679-7425-40de-944b-e07fc1f90a03"),
            None,
        ),
        rest("get_point", "GET", &format!("{d}/points/{UUID_1}"), None),
        rest(
            "get_points",
            "POST",
            &format!("{d}/points/get"),
            Some(
                json!({"ids": [0, 1_000_000_007, "7c9e6679-7425-40de-944b-e07fc1f90a03", 99], "with_payload": true, "with_vector": true}),
            ),
        ),
        rest(
            "scroll_points",
            "POST",
            &format!("{d}/points/scroll"),
            Some(json!({"limit": 7, "with_vector": true})),
        ),
        rest(
            "scroll_points",
            "POST",
            &format!("{d}/points/scroll"),
            Some(
                json!({"limit": 5, "cursor": 7_000_000_049u64, "filter": {"must": [{"key": "ok", "match": {"value": true}}]}, "with_payload": false}),
            ),
        ),
        rest(
            "search",
            "POST",
            &format!("{d}/search"),
            Some(
                json!({"vector": q, "limit": 5, "ef": 200, "score_threshold": -0.5, "with_payload": false, "with_vector": true}),
            ),
        ),
        rest(
            "search",
            "POST",
            &format!("{d}/search"),
            Some(
                json!({"vector": q, "limit": 7, "exact": true, "filter": {"must": [{"key": "ok", "match": {"value": true}}]}}),
            ),
        ),
        rest(
            "search",
            "POST",
            "/collections/l1/search",
            Some(json!({"vector": [4.2, 1.0], "limit": 4, "exact": true, "score_threshold": 3.0})),
        ),
        mcp(
            "search",
            json!({"collection": "l1", "vector": [6.5, 0.0], "limit": 3}),
        ),
        mcp(
            "search",
            json!({"collection": "docs", "vector": q, "limit": 4, "exact": true}),
        ),
        rest("get_collection", "GET", "/collections/l1", None),
        rest(
            "search_batch",
            "POST",
            &format!("{d}/search/batch"),
            Some(
                json!({"searches": filters().into_iter().map(|f| json!({"vector": q, "limit": 4, "filter": f})).collect::<Vec<_>>()}),
            ),
        ),
        // Refusals answer alike too.
        rest(
            "count_points",
            "POST",
            &format!("{d}/points/count"),
            Some(
                json!({"filter": {"must": [{"key": "a", "geo_radius": {"center": {"lat": 0, "lon": 0}, "radius": 1.0}}]}}),
            ),
        ),
        rest(
            "search",
            "POST",
            &format!("{d}/search"),
            Some(json!({"vector": [1, 2], "limit": 3})),
        ),
        mcp("list_collections", json!({})),
        mcp("get_collection", json!({"collection": "docs"})),
        mcp("get_usage", json!({})),
        mcp(
            "get_points",
            json!({"collection": "docs", "ids": [0, UUID_1, 2_000_000_014u64], "with_vector": true}),
        ),
        mcp(
            "scroll_points",
            json!({"collection": "docs", "limit": 6, "filter": {"must_not": [{"key": "color", "match": {"value": "red"}}]}}),
        ),
        mcp(
            "search_batch",
            json!({"collection": "mcp-docs", "searches": [{"vector": [1.0, 1.0, 0.0], "limit": 3}, {"vector": [5.0, 0.0, 0.0], "limit": 2, "filter": {"must": [{"key": "i", "range": {"gt": 2}}]}}]}),
        ),
    ];
    for f in filters() {
        out.push(rest(
            "count_points",
            "POST",
            &format!("{d}/points/count"),
            Some(json!({"filter": f})),
        ));
        out.push(rest(
            "search",
            "POST",
            &format!("{d}/search"),
            Some(json!({"vector": q, "limit": 6, "filter": f, "with_payload": true})),
        ));
        out.push(rest(
            "scroll_points",
            "POST",
            &format!("{d}/points/scroll"),
            Some(json!({"limit": 50, "filter": f})),
        ));
        out.push(mcp(
            "count_points",
            json!({"collection": "docs", "filter": f}),
        ));
        out.push(mcp(
            "search",
            json!({"collection": "docs", "vector": q, "limit": 3, "filter": f, "with_vector": true, "ef": 128, "score_threshold": 0.0}),
        ));
    }
    out
}

/// Figures that depend on a replica's files rather than on its data.
fn normalized(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in [
                    "created_at_ms",
                    "bytes",
                    "memory_bytes",
                    "storage_bytes",
                    "unindexed_points",
                    // Whether this replica has it open now.
                    "loaded",
                    // Each replica measures its own graph's recall.
                    "recall",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// One JSON-RPC call to `/mcp` at `addr`: its answer, if any.
async fn mcp_call(
    c: &Cluster,
    addr: SocketAddr,
    key: &str,
    method: &str,
    params: Value,
) -> Option<Value> {
    let r = c
        .http
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .ok()?;
    Some(r.json().await.unwrap_or(Value::Null))
}

/// Sends `req` as `key` to the server at `addr`: its status (REST) or
/// whether it failed (MCP), and its answer, normalized.
async fn send(c: &Cluster, addr: SocketAddr, key: &str, req: &Req) -> Value {
    match req {
        Req::Rest {
            method, path, body, ..
        } => match c.call_at(addr, key, method, path, body.clone()).await {
            Some((s, v)) => json!({"status": s, "body": normalized(v)}),
            None => json!("no answer"),
        },
        Req::Mcp { tool, args } => {
            let params = json!({"name": tool, "arguments": args});
            let Some(v) = mcp_call(c, addr, key, "tools/call", params).await else {
                return json!("no answer");
            };
            json!({
                "error": v["result"]["isError"],
                "answer": normalized(v["result"]["structuredContent"].clone()),
            })
        }
    }
}

fn describe(req: &Req) -> String {
    match req {
        Req::Rest {
            method, path, body, ..
        } => format!("{method} {path} {}", body.clone().unwrap_or(Value::Null)),
        Req::Mcp { tool, args } => format!("mcp {tool} {args}"),
    }
}

/// Every read answers through each cluster node what the standalone
/// node answers.
async fn compare_reads(c: &Cluster, single: &Node) {
    let (cluster_key, single_key) = (c.key(0).to_owned(), c.key(3).to_owned());
    let (mut served, mut nonempty) = (0, 0);
    let reads = reads();
    for req in &reads {
        let req = req.clone();
        let want = send(c, single.addr(), &single_key, &req).await;
        if want["status"] == 200 || want["error"] == false {
            served += 1;
        }
        let text = want.to_string();
        if ["\"count\":0", "\"results\":[]", "\"points\":[]"]
            .iter()
            .all(|empty| !text.contains(empty))
        {
            nonempty += 1;
        }
        assert!(
            want.get("status").is_none_or(|s| s != 503) && want != json!("no answer"),
            "the standalone node failed {}: {want}",
            describe(&req)
        );
        for i in 0..c.nodes.len() {
            let got = send(c, c.nodes[i].addr(), &cluster_key, &req).await;
            assert_eq!(
                got,
                want,
                "node {} differs from a single node on {}",
                i + 1,
                describe(&req)
            );
        }
    }
    // All but the four refusals (a deleted collection, a missing point, a
    // bad filter, a wrong dimension) are served, and nearly all find data.
    assert_eq!(served, reads.len() - 4, "reads served on a single node");
    assert!(
        nonempty * 10 >= reads.len() * 8,
        "{nonempty} of {} reads found data",
        reads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_answers_alike_through_every_node() {
    conformance(true).await;
}

/// The same with the Hub off: every request is the deployment's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_answers_alike_through_every_node_with_the_hub_off() {
    conformance(false).await;
}

async fn conformance(hub: bool) {
    let c = Cluster::with(SHARDS, hub);
    c.start().await;
    let single = c.standalone();
    single.start();

    // The table covers every route and every tool.
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    let mut tools: BTreeSet<&str> = BTreeSet::new();
    for r in writes().into_iter().map(|(r, _)| r).chain(reads()) {
        match r {
            Req::Rest { op, .. } => sent.insert(op),
            Req::Mcp { tool, .. } => tools.insert(tool),
        };
    }
    tools.extend(MCP_NOT_IN_CLUSTER.iter().map(|(t, _)| *t));
    for route in vectorizer_server::app::routes() {
        let op = route.operation;
        assert!(
            sent.contains(op)
                || NOT_DATA.contains(&op)
                || NOT_IN_CLUSTER.iter().any(|(o, ..)| *o == op),
            "the conformance table does not send `{op}`"
        );
    }
    let listed = mcp_call(&c, single.addr(), c.key(3), "tools/list", json!({}))
        .await
        .expect("tools/list answers");
    for t in listed["result"]["tools"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        assert!(
            tools.contains(name),
            "the conformance table does not call the MCP tool `{name}`"
        );
    }

    // The same writes: the filtered ones through the leader and through a
    // follower of the caller's home shard, in turn.
    let home = c.home(0);
    let mut filtered = 0;
    let mut through = BTreeSet::new();
    for (i, (req, is_filtered)) in writes().into_iter().enumerate() {
        let want = send(&c, single.addr(), c.key(3), &req).await;
        let leader = c.wait_leader(&home, None).await;
        let node = if is_filtered {
            filtered += 1;
            if filtered % 2 == 0 {
                leader
            } else {
                (leader + 1) % 3
            }
        } else {
            i % 3
        };
        through.insert((is_filtered, node == leader));
        let got = send(&c, c.nodes[node].addr(), c.key(0), &req).await;
        assert_eq!(
            got,
            want,
            "node {} differs from a single node on {}",
            node + 1,
            describe(&req)
        );
        assert!(
            want.get("status").is_none_or(|s| s.as_u64() < Some(300))
                && want.get("error").is_none_or(|e| e == false),
            "the write failed on a single node: {} {want}",
            describe(&req)
        );
    }
    assert!(
        through.contains(&(true, true)) && through.contains(&(true, false)),
        "filtered writes went through the leader and a follower"
    );
    compare_reads(&c, &single).await;

    for (op, method, path, body) in NOT_IN_CLUSTER {
        for i in 0..3 {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut rb = c
                .http
                .request(m, format!("http://{}{path}", c.nodes[i].addr()))
                .bearer_auth(c.key(0));
            rb = match body {
                "" => rb,
                "bytes" => rb
                    .header("content-type", "application/octet-stream")
                    .body(vec![0u8; 64]),
                json => rb.header("content-type", "application/json").body(json),
            };
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("unavailable_in_cluster_mode")),
                "{op} through node {}: {body}",
                i + 1
            );
        }
    }

    for (tool, args) in MCP_NOT_IN_CLUSTER {
        for i in 0..3 {
            let params =
                json!({"name": tool, "arguments": serde_json::from_str::<Value>(args).unwrap()});
            let v = mcp_call(&c, c.nodes[i].addr(), c.key(0), "tools/call", params)
                .await
                .expect("an answer");
            assert_eq!(
                (
                    &v["result"]["isError"],
                    v["result"]["structuredContent"]["error"]["code"].as_str()
                ),
                (&json!(true), Some("unavailable_in_cluster_mode")),
                "MCP {tool} through node {}: {v}",
                i + 1
            );
        }
    }

    // A normal start and all of the above logged no ERROR (that level is
    // for what an operator must act on), and only what happened.
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        for line in log.lines() {
            assert!(
                !line.contains("ERROR") && !line.contains("taken out of the catalog"),
                "node {}: {line}",
                n.id
            );
        }
    }

    // A full restart of every node; the same reads again.
    c.wait_converged().await;
    for n in &c.nodes {
        n.stop();
    }
    single.stop();
    c.start().await;
    single.start();
    compare_reads(&c, &single).await;
}
