//! HNSW results against exact search, on clustered data, across restarts
//! and deletions.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use vectorizer_engine::{CollectionConfig, Metric, Point, PointId, SearchRequest};
use vectorizer_testkit::{exact_top_k, gaussian_mixture, recall};

use crate::common::{TempDir, kind, open};

const N: usize = 20_000;
const QUERIES: usize = 200;
const K: usize = 10;

fn mean_recall(
    db: &vectorizer_engine::Database,
    metric: Metric,
    base: &[Vec<f32>],
    alive: &HashSet<usize>,
    queries: &[Vec<f32>],
) -> f64 {
    let c = db.collection("c").unwrap();
    // Measure the graph, not the exact scan of points still being linked.
    c.wait_indexed();
    let allowed = |i: usize| alive.contains(&i);
    let mut total = 0.0;
    for q in queries {
        let truth = exact_top_k(kind(metric), base, q, K, Some(&allowed));
        let req = SearchRequest {
            vector: q.clone(),
            limit: K,
            ..Default::default()
        };
        let got: Vec<usize> = c
            .search(&req)
            .unwrap()
            .iter()
            .map(|h| match h.id {
                PointId::Num(n) => n as usize,
                PointId::Uuid(_) => unreachable!(),
            })
            .collect();
        assert_eq!(got.len(), K);
        total += recall(&truth, &got);
    }
    let r = total / queries.len() as f64;
    eprintln!("recall@{K} {r:.4}");
    r
}

fn check(dim: usize, metric: Metric, seed: u64) {
    let (base, _) = gaussian_mixture(N, dim, 50, 0.5, seed);
    let (queries, _) = gaussian_mixture(QUERIES, dim, 50, 0.5, seed);
    // Queries come from the same centres (same seed) but are fresh draws.
    let queries: Vec<Vec<f32>> = queries
        .into_iter()
        .map(|q| q.iter().map(|x| x * 1.01).collect())
        .collect();
    let dir = TempDir::new("recall");
    let mut alive: HashSet<usize> = (0..N).collect();
    // The graph at a fixed breadth (`tuning.rs` tests the target).
    let config = CollectionConfig {
        target_recall: None,
        ..CollectionConfig::new(dim, metric)
    };
    {
        let db = open(&dir);
        let c = db.create_collection("c", config, BTreeMap::new()).unwrap();
        for (b, chunk) in base.chunks(1000).enumerate() {
            let pts = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    id: PointId::Num((b * 1000 + i) as u64),
                    vector: v.clone(),
                    payload: Some(json!({"i": i}).as_object().unwrap().clone()),
                })
                .collect();
            c.upsert(pts).unwrap();
        }
        let r = mean_recall(&db, metric, &base, &alive, &queries);
        assert!(r >= 0.95, "{dim}/{metric:?}: recall {r}");
    }
    // Restart without a flush: whatever the log holds is replayed.
    {
        let db = open(&dir);
        assert_eq!(db.collection("c").unwrap().len(), N);
        let r = mean_recall(&db, metric, &base, &alive, &queries);
        assert!(r >= 0.95, "{dim}/{metric:?} after restart: recall {r}");
        // Delete 10 %.
        let gone: Vec<PointId> = (0..N)
            .filter(|i| i % 10 == 3)
            .map(|i| PointId::Num(i as u64))
            .collect();
        for id in &gone {
            if let PointId::Num(n) = id {
                alive.remove(&(*n as usize));
            }
        }
        let c = db.collection("c").unwrap();
        for chunk in gone.chunks(500) {
            c.delete(chunk.to_vec()).unwrap();
        }
        assert_eq!(c.len(), N - N / 10);
        let r = mean_recall(&db, metric, &base, &alive, &queries);
        assert!(r >= 0.95, "{dim}/{metric:?} after deleting 10%: recall {r}");
        db.flush().unwrap();
    }
    // Restart from the snapshot.
    let db = open(&dir);
    assert_eq!(db.collection("c").unwrap().len(), N - N / 10);
    let r = mean_recall(&db, metric, &base, &alive, &queries);
    assert!(
        r >= 0.95,
        "{dim}/{metric:?} after deletes and restart: recall {r}"
    );
}

#[test]
fn recall_128_cosine() {
    check(128, Metric::Cosine, 1);
}

#[test]
fn recall_128_euclidean() {
    check(128, Metric::Euclidean, 2);
}

#[test]
fn recall_128_dot() {
    check(128, Metric::Dot, 3);
}

#[test]
fn recall_384_cosine() {
    check(384, Metric::Cosine, 4);
}

#[test]
fn recall_384_euclidean() {
    check(384, Metric::Euclidean, 5);
}

#[test]
fn recall_384_dot() {
    check(384, Metric::Dot, 6);
}

#[test]
fn recall_128_manhattan() {
    check(128, Metric::Manhattan, 7);
}

/// `exact` scores every point: with the narrowest beam, the answer is still
/// exact search's, filtered or not.
#[test]
fn exact_search_is_exact() {
    let (dim, metric) = (32, Metric::Euclidean);
    let (base, _) = gaussian_mixture(5_000, dim, 20, 0.5, 8);
    let (queries, _) = gaussian_mixture(20, dim, 20, 0.6, 9);
    let dir = TempDir::new("exact");
    let db = open(&dir);
    let c = db
        .create_collection("c", CollectionConfig::new(dim, metric), BTreeMap::new())
        .unwrap();
    let pts = base
        .iter()
        .enumerate()
        .map(|(i, v)| Point {
            id: PointId::Num(i as u64),
            vector: v.clone(),
            payload: Some(json!({"odd": i % 2 == 1}).as_object().unwrap().clone()),
        })
        .collect();
    c.upsert(pts).unwrap();
    c.wait_indexed();
    let odd = vectorizer_engine::Filter::from_json(
        &json!({"must": [{"key": "odd", "match": {"value": true}}]}),
    )
    .unwrap();
    for q in &queries {
        for filter in [None, Some(odd.clone())] {
            let allowed = |i: usize| filter.is_none() || i % 2 == 1;
            let truth = exact_top_k(kind(metric), &base, q, K, Some(&allowed));
            let got: Vec<usize> = c
                .search(&SearchRequest {
                    vector: q.clone(),
                    limit: K,
                    ef: Some(1),
                    filter: filter.clone(),
                    exact: true,
                    ..Default::default()
                })
                .unwrap()
                .iter()
                .map(|h| match h.id {
                    PointId::Num(n) => n as usize,
                    PointId::Uuid(_) => unreachable!(),
                })
                .collect();
            assert_eq!(got, truth);
        }
    }
}
