//! Searches during writes: never blocked for a whole batch, never shown
//! half a batch; and graph compaction after heavy updates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vectorizer_engine::{CollectionConfig, Metric, Point, PointId, SearchRequest};
use vectorizer_testkit::{Rng, gaussian_mixture};

use crate::common::{TempDir, contents, open};

fn points(vectors: &[Vec<f32>], first_id: u64) -> Vec<Point> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| Point {
            id: PointId::Num(first_id + i as u64),
            vector: v.clone(),
            payload: None,
        })
        .collect()
}

#[test]
fn searches_run_during_a_long_write_and_see_whole_batches() {
    let dim = 64;
    let (base, _) = gaussian_mixture(2_000, dim, 20, 0.5, 5);
    let (big, _) = gaussian_mixture(10_000, dim, 20, 0.5, 6);
    let dir = TempDir::new("concurrent");
    let db = open(&dir);
    let c = db
        .create_collection(
            "c",
            CollectionConfig::new(dim, Metric::Euclidean),
            BTreeMap::new(),
        )
        .unwrap();
    c.upsert(points(&base, 0)).unwrap();

    let writing = AtomicBool::new(true);
    let during = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            c.upsert(points(&big, 1_000_000)).unwrap();
            writing.store(false, Ordering::SeqCst);
        });
        for t in 0..3 {
            let (c, writing, during, base) = (&c, &writing, &during, &base);
            s.spawn(move || {
                let mut rng = Rng::new(t);
                while writing.load(Ordering::SeqCst) {
                    // The batch is visible whole or not at all.
                    let n = c.len();
                    assert!(n == 2_000 || n == 12_000, "saw {n} points");
                    let q = &base[rng.below(base.len() as u64) as usize];
                    let hits = c
                        .search(&SearchRequest {
                            vector: q.clone(),
                            limit: 10,
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(hits.len(), 10);
                    if writing.load(Ordering::SeqCst) {
                        during.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(c.len(), 12_000);
    assert!(
        during.load(Ordering::Relaxed) > 0,
        "no search completed while the batch was being written"
    );
}

#[test]
fn many_concurrent_searchers_and_writers() {
    let dim = 32;
    let (base, _) = gaussian_mixture(4_000, dim, 10, 0.5, 7);
    let dir = TempDir::new("many");
    let db = open(&dir);
    let c = db
        .create_collection(
            "c",
            CollectionConfig::new(dim, Metric::Cosine),
            BTreeMap::new(),
        )
        .unwrap();
    c.upsert(points(&base[..1000], 0)).unwrap();
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (c, base) = (&c, &base);
            s.spawn(move || {
                for b in 0..15u64 {
                    let start = 1000 + (w * 15 + b) as usize * 100;
                    c.upsert(points(&base[start..start + 100], start as u64))
                        .unwrap();
                    if b % 5 == 4 {
                        c.delete(
                            (0..50)
                                .map(|i| PointId::Num(w * 500 + b * 10 + i))
                                .collect(),
                        )
                        .unwrap();
                    }
                }
            });
        }
        for t in 0..16u64 {
            let (c, base) = (&c, &base);
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..200 {
                    let q = &base[rng.below(1000) as usize];
                    let hits = c
                        .search(&SearchRequest {
                            vector: q.clone(),
                            limit: 5,
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(hits.len(), 5);
                }
            });
        }
    });
    assert!(c.len() >= 4_000 - 300);
}

#[test]
fn compaction_drops_deleted_nodes_and_keeps_every_point() {
    let dim = 16;
    let dir = TempDir::new("compact");
    let mut rng = Rng::new(3);
    let before;
    {
        let db = open(&dir);
        let c = db
            .create_collection(
                "c",
                CollectionConfig::new(dim, Metric::Euclidean),
                BTreeMap::new(),
            )
            .unwrap();
        // Rewrite the same 1,000 points five times: 4,000 dead graph nodes.
        for _ in 0..5 {
            let pts: Vec<Point> = (0..1000)
                .map(|i| Point {
                    id: PointId::Num(i),
                    vector: (0..dim).map(|_| rng.normal()).collect(),
                    payload: None,
                })
                .collect();
            c.upsert(pts).unwrap();
        }
        assert_eq!(c.graph_nodes(), (1000, 4000));
        before = contents(&c);
        db.flush().unwrap();
        assert_eq!(c.graph_nodes(), (1000, 0));
        assert_eq!(contents(&c), before);
        // Still writable, and searches still find each point by its vector.
        c.upsert(vec![Point {
            id: PointId::Num(5000),
            vector: vec![9.0; dim],
            payload: None,
        }])
        .unwrap();
        let hit = c
            .search(&SearchRequest {
                vector: vec![9.0; dim],
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(hit[0].id, PointId::Num(5000));
    }
    let db = open(&dir);
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), 1001);
    let (id, (v, _)) = before.iter().nth(123).unwrap();
    let hit = c
        .search(&SearchRequest {
            vector: v.clone(),
            limit: 1,
            ef: Some(64),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(hit[0].id, *id);
}

#[test]
fn points_are_found_before_and_after_background_linking() {
    let dim = 32;
    let (base, _) = gaussian_mixture(6_000, dim, 20, 0.5, 9);
    let dir = TempDir::new("backlog");
    let db = open(&dir);
    let c = db
        .create_collection(
            "c",
            CollectionConfig::new(dim, Metric::Euclidean),
            BTreeMap::new(),
        )
        .unwrap();
    for (b, chunk) in base.chunks(1000).enumerate() {
        c.upsert(points(chunk, (b * 1000) as u64)).unwrap();
    }
    // Acknowledged means searchable, linked or not.
    // Points 0..500 are written again later as 10_000.. with the same
    // vectors, so either id is a correct answer for them.
    let probe = |c: &vectorizer_engine::collection::Collection| {
        for i in (0..6_000).step_by(97) {
            let hit = c
                .search(&SearchRequest {
                    vector: base[i].clone(),
                    limit: 1,
                    ef: Some(256),
                    ..Default::default()
                })
                .unwrap();
            let ok = [PointId::Num(i as u64), PointId::Num(10_000 + i as u64)];
            assert!(
                ok.contains(&hit[0].id) && hit[0].score == 0.0,
                "point {i}: {:?}",
                hit[0]
            );
        }
    };
    probe(&c);
    c.wait_indexed();
    assert_eq!(c.unindexed(), 0);
    assert_eq!(c.graph_nodes(), (6_000, 0));
    probe(&c);
    // A backlog survives a restart: unlinked points are linked again.
    c.upsert(points(&base[..500], 10_000)).unwrap();
    drop(c);
    drop(db);
    let db = open(&dir);
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), 6_500);
    probe(&c);
    c.wait_indexed();
    assert_eq!(c.graph_nodes(), (6_500, 0));
    probe(&c);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let db = open(&dir);
    let second =
        vectorizer_engine::Database::open(&dir.0, vectorizer_engine::EngineOptions::default());
    assert!(second.is_err(), "two databases over the same files");
    drop(db);
    assert!(
        vectorizer_engine::Database::open(&dir.0, vectorizer_engine::EngineOptions::default())
            .is_ok()
    );
}
