//! A replica that meets a log entry it cannot decode: the test writes one
//! into a stopped follower's log file (the next index, under the leader's
//! own log id, so the follower takes it for the leader's next entry). Once
//! that entry commits, the follower stops that one group and says why;
//! it keeps serving its other groups and every request sent to it; and
//! `vectorizer cluster repair-group` drops its copy and has the leader
//! send it again, after which every replica holds the same data.

use std::process::Command;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::json;

use super::harness::*;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Writes, after the last entry of a stopped node's group log, an entry
/// with the same term and leader whose payload is not MessagePack.
fn append_undecodable(path: &std::path::Path) -> u64 {
    let db = redb::Database::open(path).unwrap();
    let last = {
        let r = db.begin_read().unwrap();
        let t = r.open_table(LOG).unwrap();
        let (k, v) = t.last().unwrap().expect("a log with entries");
        (k.value(), v.value().to_vec())
    };
    let (index, bytes) = last;
    assert_eq!(bytes[0], vectorizer_cluster::codec::VERSION);
    let mut junk = bytes[..vectorizer_cluster::codec::HEADER].to_vec();
    junk[17..25].copy_from_slice(&(index + 1).to_le_bytes());
    junk[vectorizer_cluster::codec::HEADER - 1] = 1;
    junk.extend_from_slice(&[0xc1; 16]);
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(LOG).unwrap();
        t.insert(index + 1, junk.as_slice()).unwrap();
    }
    w.commit().unwrap();
    index + 1
}

fn cli(c: &Cluster, node: usize, args: &[&str]) -> (bool, String) {
    let url = format!("http://{}", c.nodes[node].addr());
    let out = Command::new(release_binary())
        .arg("cluster")
        .args(args)
        .args(["--url", &url])
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_cannot_decode_an_entry_stops_that_group_and_is_repaired() {
    let c = Cluster::new();
    c.start().await;
    let a = 0;
    assert_eq!(create(&c, 0, a, "docs").await, 201);
    for i in 0..3 {
        assert_eq!(c.write(i, a, "docs", 5).await, Outcome::Acked);
    }
    let home = c.home(a);
    let leader = c.wait_leader(&home, None).await;
    let x = (leader + 1) % 3;
    c.wait_converged().await;
    c.nodes[x].stop();
    let g: u32 = home.strip_prefix("shard-").unwrap().parse::<u32>().unwrap() + 1;
    let bad = append_undecodable(&c.nodes[x].data.join(format!("raft/group-{g}.redb")));
    c.nodes[x].start();

    // The leader's next entries commit; node x applies its own one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let _ = c.write(leader, a, "docs", 2).await;
        if let Some(grp) = c.group(x, &home).await
            && grp["role"] == "failed"
        {
            break grp;
        }
        assert!(
            Instant::now() < deadline,
            "node {} did not report {home} as failed",
            x + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let why = failed["failed"].as_str().unwrap();
    assert!(
        why.contains(&format!("log entry {bad} cannot be decoded")),
        "{why}"
    );
    let (ok, table) = cli(&c, x, &["status"]);
    assert!(ok && table.contains("failed: "), "{table}");

    // The node serves everything else: its other groups and every request.
    let status = c.status(x).await.expect("node x answers");
    for grp in status["groups"].as_array().unwrap() {
        if grp["group"] != home.as_str() {
            assert!(grp["failed"].is_null(), "{grp}");
            assert_ne!(grp["role"], "failed", "{grp}");
        }
    }
    assert_eq!(create(&c, x, a, "more").await, 201);
    assert_eq!(c.write(x, a, "docs", 3).await, Outcome::Acked);
    let (s, v) = c
        .call(
            x,
            c.key(a),
            "POST",
            "/collections/docs/points/count",
            Some(json!({"filter": {"must": [{"key": "w", "range": {"gte": 0}}]}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["count"].as_u64().unwrap() >= 20, "{v}");

    // A restart does not make it worse: the node boots and says it again.
    c.nodes[x].stop();
    c.nodes[x].start();
    assert_eq!(c.write(leader, a, "docs", 2).await, Outcome::Acked);

    // The repair, through another node.
    let other = (x + 2) % 3;
    let x_id = (x + 1).to_string();
    let (ok, out) = cli(
        &c,
        other,
        &["repair-group", "--node", &x_id, "--group", &home],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(grp) = c.group(x, &home).await
            && grp["failed"].is_null()
            && grp["role"] == "follower"
            && grp["members"].as_array().is_some_and(|m| m.len() == 3)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {}'s copy of {home} was not repaired",
            x + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.write(x, a, "docs", 4).await, Outcome::Acked);
    // Running it again, on a healthy copy now, is safe.
    let (ok, out) = cli(&c, x, &["repair-group", "--node", &x_id, "--group", &home]);
    assert!(ok, "{out}");
    assert_eq!(c.write(other, a, "docs", 4).await, Outcome::Acked);
    c.wait_converged().await;
    // Every acknowledged write on every replica, the replicas equal.
    c.verify_offline().await;
}
