//! The target-recall benchmark: how soon a collection loaded in bulk has
//! tuned its own search breadth, and what searches without `ef` then get,
//! on hard seeded data (anisotropic clusters of very different sizes under
//! a random rotation; queries drawn apart from the stored points).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vectorizer_engine::{
    CollectionConfig, Database, EngineOptions, Metric, Point, PointId, RecallSource, SearchRequest,
};
use vectorizer_testkit::{TempDir, hard_mixture, recall};

use crate::engine::ground_truth;

const K: usize = 10;
const QUERIES: usize = 256;
const BATCH: usize = 1000;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits for `done`, polling; false after `limit`.
fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `vectorizer-bench tuning [--points N] [--dims 128,384]`.
pub fn run(args: &[String]) -> i32 {
    let n: usize = arg(args, "--points", 30_000);
    let dims: String = arg(args, "--dims", "128,384".to_owned());
    for dim in dims
        .split(',')
        .filter_map(|d| d.trim().parse::<usize>().ok())
    {
        if !one(n, dim) {
            return 1;
        }
    }
    0
}

fn one(n: usize, dim: usize) -> bool {
    let metric = if dim == 128 {
        Metric::Euclidean
    } else {
        Metric::Cosine
    };
    let base = hard_mixture(n, dim, 40, 7, 1);
    let seen = hard_mixture(QUERIES, dim, 40, 7, 2);
    let fresh = hard_mixture(QUERIES, dim, 40, 7, 3);
    let truth = ground_truth(metric, &base, &fresh, None);
    let dir = TempDir::new("bench-tuning");
    let db = Database::open(dir.path(), EngineOptions::default()).unwrap();
    let c = db
        .create_collection("c", CollectionConfig::new(dim, metric), BTreeMap::new())
        .unwrap();
    let started = Instant::now();
    for (b, chunk) in base.chunks(BATCH).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                id: PointId::Num((b * BATCH + i) as u64),
                vector: v.clone(),
                payload: None,
            })
            .collect();
        c.upsert(pts).unwrap();
    }
    let written = started.elapsed();
    c.wait_indexed();
    let complete = Instant::now();
    let linked = complete - started;
    // The first measurement of the whole graph, with no search to ask.
    if !wait(Duration::from_secs(300), || {
        c.recall().is_some_and(|r| r.points == n as u64)
    }) {
        println!("{dim}-d: no tuning of all {n} points within 300 s");
        return false;
    }
    let first_after = complete.elapsed();
    let first = c.recall().unwrap();
    let score = |ef: Option<usize>| -> (f64, f64) {
        let t = Instant::now();
        let got: f64 = fresh
            .iter()
            .zip(&truth)
            .map(|(q, truth)| {
                let hits = c
                    .search(&SearchRequest {
                        vector: q.clone(),
                        limit: K,
                        ef,
                        ..Default::default()
                    })
                    .unwrap();
                let ids: Vec<usize> = hits
                    .iter()
                    .map(|h| match h.id {
                        PointId::Num(n) => n as usize,
                        PointId::Uuid(_) => usize::MAX,
                    })
                    .collect();
                recall(truth, &ids)
            })
            .sum();
        (
            got / fresh.len() as f64,
            fresh.len() as f64 / t.elapsed().as_secs_f64(),
        )
    };
    let (at_first, _) = score(None);
    let (at_64, qps_64) = score(Some(64));
    // Searches are recorded; the next measurement takes them.
    let searched = Instant::now();
    for q in &seen {
        c.search(&SearchRequest {
            vector: q.clone(),
            limit: K,
            ..Default::default()
        })
        .unwrap();
    }
    if !wait(Duration::from_secs(300), || {
        c.recall()
            .is_some_and(|r| r.source == RecallSource::Queries && r.queries >= 200)
    }) {
        println!("{dim}-d: no tuning on recorded queries within 300 s");
        return false;
    }
    let on_queries_after = searched.elapsed();
    let tuned = c.recall().unwrap();
    let (got, qps) = score(None);
    println!(
        "{dim}-d {metric:?}, {n} points: written in {:.1} s, graph complete at {:.1} s",
        written.as_secs_f64(),
        linked.as_secs_f64()
    );
    println!(
        "  first tuning of all points {:.1} s after the graph was complete (measuring took {} ms): ef {}, estimate {:.4}, separate queries {:.4}",
        first_after.as_secs_f64(),
        first.took_ms,
        first.ef,
        first.estimate,
        at_first
    );
    println!(
        "  on {} recorded queries {:.1} s after them ({} ms): ef {}, estimate {:.4}, separate queries {:.4} at {:.0} QPS (1 thread)",
        tuned.queries,
        on_queries_after.as_secs_f64(),
        tuned.took_ms,
        tuned.ef,
        tuned.estimate,
        got,
        qps
    );
    println!("  for comparison, ef 64: recall {at_64:.4} at {qps_64:.0} QPS");
    let curve: Vec<String> = [32, 64, 128, 256, 512, 1024]
        .iter()
        .map(|ef| {
            let (r, q) = score(Some(*ef));
            format!("ef {ef}: {r:.4} ({q:.0} QPS)")
        })
        .collect();
    println!("  recall by ef: {}", curve.join(", "));
    true
}
