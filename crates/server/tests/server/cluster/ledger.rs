//! Cluster mode through kills, a full stop, a frozen leader, a partitioned
//! minority, a quota race, cross-user attempts, forged internal calls, and
//! a follower that must catch up from a snapshot. A ledger records every
//! write as acknowledged, refused (4xx) or unknown (no answer, 5xx); at
//! each full stop every node's replicas are read from disk and every
//! acknowledged write must be there, no refused one, every batch whole or
//! absent, each user within its plan, and the replicas of each shard equal.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::*;

/// Signs an internal call as a node with `secret` would.
/// Signs a forward with `secret` for node `to` (none: unsigned).
fn signed_call(
    secret: Option<&str>,
    to: u64,
    body: &Value,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let raw = vectorizer_cluster::codec::to_bytes(body).unwrap();
    let Some(secret) = secret else {
        return (raw, Vec::new());
    };
    let s = vectorizer_cluster::sign::Signer::new(secret).unwrap().sign(
        9,
        to,
        "POST",
        "/internal/forward/1",
        &raw,
    );
    let h = vec![
        ("x-vz-node", s.node),
        ("x-vz-to", s.to),
        ("x-vz-time", s.time),
        ("x-vz-nonce", s.nonce),
        ("x-vz-head", s.head),
        ("x-vz-signature", s.signature),
    ];
    (raw, h)
}

/// Sends a forward to node `node`'s internal port; its status.
async fn internal_call(
    c: &Cluster,
    node: usize,
    call: &(Vec<u8>, Vec<(&'static str, String)>),
) -> u16 {
    let mut rb = c
        .http
        .post(format!(
            "http://{}/internal/forward/1",
            c.nodes[node].internal
        ))
        .header("content-type", vectorizer_cluster::rpc::CONTENT_TYPE);
    for (k, v) in &call.1 {
        rb = rb.header(*k, v);
    }
    rb.body(call.0.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Cross-user reads and writes through every node are 404s; internal
/// calls without the secret are 401s (and one with it is not).
async fn isolation(c: &Cluster) {
    for node in c.live() {
        for (m, path, body) in [
            ("GET", "/collections/secret-a", None),
            (
                "POST",
                "/collections/secret-a/search",
                Some(json!({"vector": [1, 0, 0, 0], "limit": 3})),
            ),
            (
                "POST",
                "/collections/secret-a/points",
                Some(json!({"points": [{"id": 1, "vector": [1, 0, 0, 0]}]})),
            ),
            ("DELETE", "/collections/secret-a", None),
        ] {
            let got = c.call(node, c.key(1), m, path, body).await;
            assert_eq!(
                got.as_ref().map(|g| g.0),
                Some(404),
                "{m} {path} as B through node {}: {got:?}",
                node + 1
            );
            assert_eq!(got.unwrap().1["error"]["code"], "collection_not_found");
        }
        let (s, v) = c
            .call(node, c.key(0), "GET", "/collections/secret-a", None)
            .await
            .unwrap();
        assert_eq!(
            (s, v["name"].clone()),
            (200, json!("secret-a")),
            "A's own collection through node {}",
            node + 1
        );
        // B's own "docs" is B's, not A's, through every node.
        let (s, v) = c
            .call(
                node,
                c.key(1),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        let (_, a) = c
            .call(
                node,
                c.key(0),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        assert_eq!(s, 200);
        assert_ne!(v["count"], a["count"], "A and B see the same `docs`");
        // A forged forward: A's tenant, aimed at A's data.
        let forged = json!({"kind": "read", "cmd": {"owner": c.users[0].0, "caller": {"Tenant": {"user_id": c.users[0].0, "access_key_id": c.users[0].0, "project_id": null, "permissions": ["admin"], "plan": "big"}}, "op": {"op": "list_collections"}, "limits": null}});
        let id = c.nodes[node].id;
        let refused = [
            ("unsigned", signed_call(None, id, &forged)),
            (
                "forged",
                signed_call(Some("another-secret-0123456789abcdef01"), id, &forged),
            ),
            (
                "for another node",
                signed_call(Some(SECRET), id % 3 + 1, &forged),
            ),
        ];
        for (what, call) in &refused {
            assert_eq!(
                internal_call(c, node, call).await,
                401,
                "{what}, node {}",
                node + 1
            );
        }
        let genuine = signed_call(Some(SECRET), id, &forged);
        assert_eq!(
            internal_call(c, node, &genuine).await,
            200,
            "signed, node {}",
            node + 1
        );
        assert_eq!(
            internal_call(c, node, &genuine).await,
            401,
            "replayed, node {}",
            node + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_keeps_every_acknowledged_write() {
    let cluster = Cluster::new();
    for n in &cluster.nodes {
        n.start();
    }
    for s in 0..cluster.shards {
        cluster.wait_leader(&format!("shard-{s}"), None).await;
    }
    cluster.wait_leader("meta", None).await;
    let (a, b, cu) = (0, 1, 2);
    for (user, name) in [(a, "docs"), (b, "docs"), (a, "secret-a"), (cu, "tiny")] {
        assert_eq!(
            create(&cluster, user, user, name).await,
            201,
            "create {name}"
        );
    }
    let home_a = cluster.home(a);
    let started = Instant::now();
    let phase = |n: &str| {
        eprintln!(
            "cluster test: {n} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };

    phase("1");
    // 1. SIGKILL the leader of A's shard 20 times under A's and B's writes.
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = cluster.writers(&[(a, "docs"), (b, "docs")], &stop);
    for round in 0..20 {
        let leader = cluster.wait_leader(&home_a, None).await;
        let before = cluster.acked(a);
        cluster.nodes[leader].kill();
        let next = cluster.wait_leader(&home_a, Some(leader)).await;
        assert_ne!(next, leader);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.acked(a) == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no write acknowledged after the kill"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.nodes[leader].start();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    phase("2");
    // 2. Stop every node and start them again (the ledger is checked on
    // every replica's disk meanwhile).
    cluster.verify_offline().await;
    let counted = cluster
        .call(
            0,
            cluster.key(a),
            "POST",
            "/collections/docs/points/count",
            Some(json!({})),
        )
        .await
        .unwrap();
    let acked_points: usize = 5 * cluster.acked(a);
    assert!(counted.1["count"].as_u64().unwrap() as usize >= acked_points);

    phase("3");
    // 3. Freeze A's leader for 10 s: the others elect a leader and go on.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = cluster.writers(&[(a, "docs"), (b, "docs")], &stop);
    let leader = cluster.wait_leader(&home_a, None).await;
    freeze(&cluster, leader);
    let frozen_at = Instant::now();
    let next = cluster.wait_leader(&home_a, Some(leader)).await;
    assert_ne!(next, leader);
    let before = cluster.acked(a);
    while cluster.acked(a) < before + 3 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(10),
            "writes did not go on while the leader was frozen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(frozen_at.elapsed())).await;
    thaw(&cluster, leader);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    cluster.wait_converged().await;
    // A leader cut off from both followers acknowledges nothing.
    let leader = cluster.wait_leader(&home_a, None).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for o in &others {
        freeze(&cluster, *o);
    }
    let cut_at = Instant::now();
    while cut_at.elapsed() < Duration::from_secs(6) {
        let got = cluster.write(leader, a, "docs", 5).await;
        assert_ne!(
            got,
            Outcome::Acked,
            "a leader without a quorum acknowledged a write"
        );
    }
    for o in &others {
        thaw(&cluster, *o);
    }
    cluster.wait_converged().await;

    phase("4");
    // 4. A quota race: three writers on three nodes for C, with a kill in
    // the middle.
    let racers: Vec<_> = (0..3)
        .map(|node| {
            let c = cluster.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                let started = Instant::now();
                while refused < 3 && started.elapsed() < Duration::from_secs(30) {
                    if !c.nodes[node].up() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    if c.write(node, cu, "tiny", 4).await == Outcome::Refused {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = cluster.wait_leader(&cluster.home(cu), None).await;
    cluster.nodes[victim].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[victim].start();
    let mut refusals = 0;
    for r in racers {
        refusals += r.await.unwrap();
    }
    assert!(refusals > 0, "the small plan never refused a write");
    cluster.wait_converged().await;
    let (_, usage) = cluster
        .call(0, cluster.key(cu), "GET", "/usage", None)
        .await
        .unwrap();
    assert!(usage["vectors"].as_u64().unwrap() <= C_VECTORS, "{usage}");
    assert!(
        usage["vectors"].as_u64().unwrap() > C_VECTORS - 4,
        "the race stopped short of the limit: {usage}"
    );
    // Three creates at once on three nodes: C has room for one more.
    let creates: Vec<_> = (0..3)
        .map(|node| {
            let c = cluster.clone();
            tokio::spawn(async move { create(&c, node, cu, &format!("more-{node}")).await })
        })
        .collect();
    let mut made = 0;
    for cr in creates {
        match cr.await.unwrap() {
            201 => made += 1,
            429 => {}
            s => panic!("a create answered {s}"),
        }
    }
    assert_eq!(made, 1, "exactly one create fits the plan");
    let (_, list) = cluster
        .call(1, cluster.key(cu), "GET", "/collections", None)
        .await
        .unwrap();
    assert_eq!(list["collections"].as_array().unwrap().len(), 2);

    phase("5");
    // 5. Cross-user access and forged internal calls, before and after a
    // failover.
    isolation(&cluster).await;
    let leader = cluster.wait_leader(&home_a, None).await;
    cluster.nodes[leader].kill();
    cluster.wait_leader(&home_a, Some(leader)).await;
    isolation(&cluster).await;
    cluster.nodes[leader].start();
    cluster.wait_converged().await;

    phase("6");
    // 6. A follower kept down past the log the leader keeps catches up
    // from a snapshot.
    let leader = cluster.wait_leader(&home_a, None).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let last = cluster.group(follower, &home_a).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    cluster.nodes[follower].kill();
    for i in 0..150 {
        let node = if i % 2 == 0 {
            leader
        } else {
            3 - leader - follower
        };
        cluster.write(node, a, "docs", 5).await;
    }
    let purged = cluster.group(leader, &home_a).await.unwrap()["purged_index"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        purged > last,
        "the leader still holds the log the follower lacks ({purged} <= {last})"
    );
    cluster.nodes[follower].start();
    cluster.wait_converged().await;
    let g = cluster.group(follower, &home_a).await.unwrap();
    assert!(
        g["snapshot_index"].as_u64().unwrap_or(0) > last,
        "the follower caught up without a snapshot: {g}"
    );

    // 7. Node 3 loses its disk: node 4 takes its place, and holds what
    // the others hold.
    phase("7");
    let mut cluster = Arc::try_unwrap(cluster).ok().expect("every task ended");
    cluster.nodes[2].kill();
    std::fs::remove_dir_all(&cluster.nodes[2].data).unwrap();
    let new_addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(release_binary())
        .args([
            "cluster",
            "replace-node",
            "--url",
            &format!("http://{}", cluster.nodes[0].addr()),
        ])
        .args(["--old", "3", "--new", "4", "--addr", &new_addr])
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = &cluster.nodes[2];
    let config = std::fs::read_to_string(&old.config)
        .unwrap()
        .replace("node_id: 3", "node_id: 4")
        .replace(
            &format!("{{id: 3, addr: \"{}\"}}", old.internal),
            &format!("{{id: 4, addr: \"{new_addr}\"}}"),
        );
    assert!(config.contains("node_id: 4") && config.contains(&new_addr));
    std::fs::write(&old.config, config).unwrap();
    let replacement = Node {
        id: 4,
        config: old.config.clone(),
        data: old.data.clone(),
        log: old.log.clone(),
        internal: new_addr,
        child: Mutex::new(None),
        addr: Mutex::new("127.0.0.1:1".parse().unwrap()),
    };
    cluster.nodes[2] = replacement;
    cluster.nodes[2].start();
    cluster.wait_converged().await;
    let s = cluster.status(0).await.unwrap();
    for g in s["groups"].as_array().unwrap() {
        assert_eq!(g["members"], json!([1, 2, 4]), "{g}");
    }
    let (status, _) = cluster
        .call(2, cluster.key(a), "GET", "/cluster", None)
        .await
        .unwrap();
    assert_eq!(status, 401, "a tenant's key is not the operator's");
    // The operator's views: the CLI's status, and Raft's gauges.
    let out = Command::new(release_binary())
        .args([
            "cluster",
            "status",
            "--json",
            "--url",
            &format!("http://{}", cluster.nodes[2].addr()),
        ])
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["node"], 4);
    assert_eq!(
        shown["groups"].as_array().unwrap().len(),
        cluster.shards as usize + 1
    );
    let metrics = cluster
        .http
        .get(format!("http://{}/metrics", cluster.nodes[0].addr()))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "vectorizer_raft_leader",
        "vectorizer_raft_term",
        "vectorizer_raft_applied_index",
    ] {
        assert!(
            metrics.contains(&format!("{family}{{group=\"meta\"}}")),
            "{family} missing from /metrics"
        );
    }

    // The Hub heard each collection's figures (from its shard's leader).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, counted) = cluster
            .call(
                2,
                cluster.key(a),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        let hub = cluster.hub_collections(a).await;
        if hub.get("docs") == Some(&counted["count"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Hub has {hub:?}, the cluster {counted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    phase("end");
    // The end: every replica on disk, against the ledger.
    cluster.verify_offline().await;
    let ledger = cluster.ledger.lock().unwrap().clone();
    let count = |o| ledger.iter().filter(|w| w.outcome == o).count();
    eprintln!(
        "cluster ledger: {} acknowledged, {} refused, {} unknown",
        count(Outcome::Acked),
        count(Outcome::Refused),
        count(Outcome::Unknown)
    );
}
