//! Target recall: on hard data, searches with default settings meet the
//! collection's target once it has tuned itself, and the recall it reports
//! is the recall separate queries get.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vectorizer_engine::collection::Collection;
use vectorizer_engine::{CollectionConfig, EngineOptions, Metric, RecallSource, SearchRequest};
use vectorizer_testkit::{exact_top_k, hard_mixture};

use crate::common::{TempDir, kind, load_all, mean_recall, open_with};

const N: usize = 20_000;
const QUERIES: usize = 256;
const K: usize = 10;
const CLUSTERS: usize = 40;

/// Mean recall@10 of `queries` searched with `ef` (`None`: the default).
fn measured(
    c: &Collection,
    metric: Metric,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    ef: Option<usize>,
) -> f64 {
    let truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| exact_top_k(kind(metric), base, q, K, None))
        .collect();
    mean_recall(c, queries, &truth, ef)
}

/// Waits (without a time limit of its own: the test harness's applies)
/// until `done` holds, polling.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        std::thread::sleep(Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(900), "{what}");
    }
}

fn check(dim: usize, metric: Metric, seed: u64) {
    let base = hard_mixture(N, dim, CLUSTERS, seed, 1);
    let seen = hard_mixture(QUERIES, dim, CLUSTERS, seed, 2);
    let fresh = hard_mixture(QUERIES, dim, CLUSTERS, seed, 3);
    let dir = TempDir::new("tuning");
    let db = open_with(&dir.0, EngineOptions::default());
    let c = db
        .create_collection("c", CollectionConfig::new(dim, metric), BTreeMap::new())
        .unwrap();
    load_all(&c, &base);
    // The first measurement of the whole graph comes with no search to ask
    // for it (one made while the last batches were linked is redone), and
    // holds stored points out of their own answers.
    wait_for("a first tuning of every point", || {
        c.recall().is_some_and(|r| r.points == N as u64)
    });
    let first = c.recall().unwrap();
    assert_eq!(first.source, RecallSource::StoredPoints);
    // Searches are recorded, and the next measurement takes them.
    for q in &seen {
        c.search(&SearchRequest {
            vector: q.clone(),
            limit: K,
            ..Default::default()
        })
        .unwrap();
    }
    wait_for("a tuning on the queries", || {
        c.recall()
            .is_some_and(|r| r.source == RecallSource::Queries && r.queries >= 200)
    });
    let report = c.recall().unwrap();
    let got = measured(&c, metric, &base, &fresh, None);
    // For the record: the breadth every collection had before.
    let fixed = measured(&c, metric, &base, &fresh, Some(64));
    eprintln!(
        "{dim}/{metric:?}: recall@10 at ef 64 {fixed:.4}; first tuning ef {} (estimate {:.4}, {} ms); \
         on {} queries ef {} estimate {:.4} ({} ms); separate queries {got:.4}",
        first.ef,
        first.estimate,
        first.took_ms,
        report.queries,
        report.ef,
        report.estimate,
        report.took_ms
    );
    assert!(
        got >= 0.95,
        "{dim}/{metric:?}: recall {got} at ef {}",
        report.ef
    );
    assert!(
        (report.estimate - got).abs() <= 0.02,
        "{dim}/{metric:?}: estimate {} against {got}",
        report.estimate
    );
    let plain = SearchRequest {
        limit: K,
        ..Default::default()
    };
    assert_eq!(c.default_ef(&plain), report.ef);
    // Not a breadth far beyond what the target needs: half of it misses.
    assert!(report.ef < 1024, "{report:?}");
    let half = measured(&c, metric, &base, &fresh, Some(report.ef / 2));
    assert!(
        half < 0.95 + 0.01,
        "ef {} already gives {half}",
        report.ef / 2
    );
    // Wider or filtered searches take at least `hnsw.ef_search`.
    let wide = SearchRequest {
        limit: 50,
        ..Default::default()
    };
    assert_eq!(c.default_ef(&wide), report.ef.max(64));
}

#[test]
fn default_searches_meet_the_target_at_128() {
    check(128, Metric::Euclidean, 11);
}

#[test]
fn default_searches_meet_the_target_at_384() {
    check(384, Metric::Cosine, 12);
}
