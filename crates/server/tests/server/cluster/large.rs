//! The largest write cluster mode accepts (one log entry of just under
//! `cluster.max_entry_bytes`, the default) is replicated while another
//! tenant of the same shard keeps being served: through the leader and
//! through followers, no election, every request of the other tenant
//! answered, every replica equal. A write over the bound is refused with
//! 413 `write_too_large` where it arrives (through MCP too), and changes
//! nothing. Then a
//! follower falls 20 such writes behind and the leader is killed: the new
//! leader brings it up to date and commits again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use super::harness::*;

const DIM: usize = 2048;

/// An upsert of `n` points of `DIM` numbers, ids from `first`.
fn big(first: u64, n: u64) -> Value {
    let points: Vec<Value> = (first..first + n)
        .map(|id| {
            let v: Vec<f32> = (0..DIM)
                .map(|j| ((id as usize * 31 + j) % 16) as f32 / 8.0 - 1.0)
                .collect();
            json!({"id": id, "vector": v, "payload": {"w": id}})
        })
        .collect();
    json!({"points": points})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_write_replicates_while_the_shard_serves_others() {
    // One shard: every tenant shares it.
    let c = Arc::new(Cluster::with(1, true));
    c.start().await;
    let (a, b) = (0, 1);
    let body = json!({"name": "big", "dimension": DIM, "metric": "dot"});
    let (s, v) = c
        .call(0, c.key(a), "POST", "/collections", Some(body))
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(create(&c, 1, b, "docs").await, 201);
    assert_eq!(c.write(1, b, "docs", 5).await, Outcome::Acked);

    // Over the bound: refused where it arrives, nothing stored.
    let (s, v) = c
        .call(
            1,
            c.key(a),
            "POST",
            "/collections/big/points",
            Some(big(0, 900)),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("write_too_large")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cluster.max_entry_bytes"),
        "{v}"
    );

    // The same through MCP (its bodies may reach 16 MiB): the same refusal.
    let r: Value = c
        .http
        .post(format!("http://{}/mcp", c.nodes[2].addr()))
        .bearer_auth(c.key(a))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "upsert_points",
                "arguments": {"collection": "big", "points": big(0, 900)["points"]}
            }}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["result"]["isError"],
        true,
        "{}",
        r.to_string().chars().take(500).collect::<String>()
    );
    assert_eq!(
        r["result"]["structuredContent"]["error"]["code"],
        "write_too_large",
        "{}",
        r.to_string().chars().take(500).collect::<String>()
    );

    // The other tenant reads and writes through every node meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let other = {
        let (c, stop, served, failed, failures) = (
            c.clone(),
            stop.clone(),
            served.clone(),
            failed.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let mut turn = 0;
            while !stop.load(Ordering::SeqCst) {
                turn += 1;
                let node = turn % 3;
                let ok = if turn % 2 == 0 {
                    let o = c.write(node, b, "docs", 2).await;
                    if o != Outcome::Acked {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("write through node {}: {o:?}", node + 1));
                    }
                    o == Outcome::Acked
                } else {
                    let q = json!({"vector": [1.0, 0.0, 0.5, 0.0], "limit": 3, "filter": {"must": [{"key": "w", "range": {"gte": 0}}]}});
                    let a = c
                        .call(node, c.key(b), "POST", "/collections/docs/search", Some(q))
                        .await;
                    if !matches!(a, Some((200, _))) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("search through node {}: {a:?}", node + 1));
                    }
                    matches!(a, Some((200, _)))
                };
                if ok { &served } else { &failed }.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let term = |g: Value| g["term"].as_u64().unwrap();
    let leader = c.wait_leader("shard-0", None).await;
    let before = term(c.group(leader, "shard-0").await.unwrap());
    // Just under the bound: 800 points of 2048 numbers (8.2 MB as an
    // entry, 11 MB of JSON), through a follower, the leader, a follower.
    for (round, node) in [(leader + 1) % 3, leader, (leader + 2) % 3]
        .into_iter()
        .enumerate()
    {
        let first = 10_000 * (round as u64 + 1);
        let (s, v) = c
            .call(
                node,
                c.key(a),
                "POST",
                "/collections/big/points",
                Some(big(first, 800)),
            )
            .await
            .unwrap_or_else(|| panic!("round {round}: no answer"));
        assert_eq!(s, 200, "round {round}: {v}");
        assert_eq!(v["upserted"], 800);
    }
    c.wait_converged().await;
    stop.store(true, Ordering::SeqCst);
    other.await.unwrap();
    let served = served.load(Ordering::SeqCst);
    let failed = failed.load(Ordering::SeqCst);
    assert_eq!(
        failed,
        0,
        "the other tenant's requests failed ({served} served): {:?}\n{}",
        failures.lock().unwrap(),
        c.warnings()
    );
    assert!(served > 0);
    // No election: the same leader, in the same term, on every node.
    for i in 0..3 {
        let g = c.group(i, "shard-0").await.unwrap();
        assert_eq!(term(g.clone()), before, "node {}: {g}", i + 1);
    }
    let (s, v) = c
        .call(
            2,
            c.key(a),
            "POST",
            "/collections/big/points/count",
            Some(json!({})),
        )
        .await
        .unwrap();
    assert_eq!((s, v["count"].as_u64()), (200, Some(2400)), "{v}");

    // A follower far behind (20 of the largest writes while it is frozen),
    // then a leader change: the new leader must bring it up to date to
    // commit at all, in batches that fit Raft's timers.
    let leader = c.wait_leader("shard-0", None).await;
    let behind = (leader + 1) % 3;
    let started = std::time::Instant::now();
    freeze(&c, behind);
    for round in 0..20u64 {
        let first = 100_000 + 1_000 * round;
        let (s, v) = c
            .call(
                leader,
                c.key(a),
                "POST",
                "/collections/big/points",
                Some(big(first, 800)),
            )
            .await
            .unwrap_or_else(|| panic!("backlog write {round}: no answer"));
        assert_eq!(s, 200, "backlog write {round}: {v}");
    }
    eprintln!(
        "large writes: 20 of the largest writes acknowledged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    thaw(&c, behind);
    c.nodes[leader].kill();
    let now_leading = c.wait_leader("shard-0", Some(leader)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if c.write(now_leading, b, "docs", 1).await == Outcome::Acked {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write acknowledged after the leader change"
        );
    }
    eprintln!(
        "large writes: the first write after the leader change acknowledged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    c.nodes[leader].start();
    c.wait_converged().await;
    let (s, v) = c
        .call(
            behind,
            c.key(a),
            "POST",
            "/collections/big/points/count",
            Some(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["count"].as_u64()),
        (200, Some(2400 + 20 * 800)),
        "{v}"
    );
    c.verify_offline().await;
}
