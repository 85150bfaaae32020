//! int8 quantization: the graph built and searched on 8-bit codes, its best
//! candidates rescored with the full vectors read from disk. On hard data
//! the recall stays within 0.01 of float vectors at equal breadth, default
//! searches meet the target once tuned, vectors take about a quarter of the
//! memory, and a restart (the snapshot holds full vectors) answers alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vectorizer_engine::collection::Collection;
use vectorizer_engine::{
    CollectionConfig, Database, EngineOptions, Metric, PointId, Quantization, SearchRequest, With,
};
use vectorizer_testkit::{exact_top_k, gaussian_mixture, hard_mixture};

use crate::common::{TempDir, kind, load_all, mean_recall, open_with};

const K: usize = 10;

fn load(db: &Database, name: &str, config: CollectionConfig, base: &[Vec<f32>]) -> Arc<Collection> {
    let c = db.create_collection(name, config, BTreeMap::new()).unwrap();
    load_all(&c, base);
    c
}

fn against_float(n: usize, dim: usize, metric: Metric, seed: u64) {
    let base = hard_mixture(n, dim, 40, seed, 1);
    let queries = hard_mixture(200, dim, 40, seed, 3);
    let truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| exact_top_k(kind(metric), &base, q, K, None))
        .collect();
    let dir = TempDir::new("quantized");
    let db = open_with(&dir.0, EngineOptions::default());
    let float = load(
        &db,
        "float",
        CollectionConfig {
            target_recall: None,
            ..CollectionConfig::new(dim, metric)
        },
        &base,
    );
    let config = CollectionConfig {
        quantization: Some(Quantization::int8()),
        ..CollectionConfig::new(dim, metric)
    };
    let int8 = load(&db, "int8", config, &base);
    for ef in [64, 256] {
        let (f, q) = (
            mean_recall(&float, &queries, &truth, Some(ef)),
            mean_recall(&int8, &queries, &truth, Some(ef)),
        );
        eprintln!("{dim}/{metric:?} ef {ef}: float {f:.4}, int8 {q:.4}");
        assert!(
            q >= f - 0.01,
            "{dim}/{metric:?} ef {ef}: int8 {q} against float {f}"
        );
    }
    let (fm, qm) = (float.vector_memory_bytes(), int8.vector_memory_bytes());
    eprintln!(
        "{dim}/{metric:?}: vectors in memory {fm} bytes as floats, {qm} as codes ({:.3}×)",
        qm as f64 / fm as f64
    );
    assert!(qm as f64 <= 0.35 * fm as f64, "{qm} against {fm}");
    // Default searches meet the target once the collection tuned itself
    // (its measurement reads full vectors for the exact answers).
    let started = Instant::now();
    while int8.recall().is_none_or(|r| r.points != n as u64) {
        assert!(started.elapsed() < Duration::from_secs(600), "no tuning");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tuned = mean_recall(&int8, &queries, &truth, None);
    eprintln!(
        "{dim}/{metric:?}: int8 tuned to ef {}: recall {tuned:.4}",
        int8.recall().unwrap().ef
    );
    assert!(tuned >= 0.95, "{tuned}");
    // After a restart (from a snapshot: full vectors on disk again), the
    // same answers with the same scores, and the same stored vectors.
    int8.flush().unwrap();
    let before: Vec<_> = queries[..20]
        .iter()
        .map(|q| {
            int8.search(&SearchRequest {
                vector: q.clone(),
                limit: K,
                ef: Some(128),
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    drop((int8, float));
    drop(db);
    let db = open_with(&dir.0, EngineOptions::default());
    let int8 = db.collection("int8").unwrap();
    assert_eq!(int8.config().quantization, Some(Quantization::int8()));
    for (q, hits) in queries[..20].iter().zip(&before) {
        let again = int8
            .search(&SearchRequest {
                vector: q.clone(),
                limit: K,
                ef: Some(128),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(&again, hits);
    }
    for id in [0u64, 17, n as u64 - 1] {
        let with = With {
            payload: false,
            vector: true,
        };
        let got = int8.get(&[PointId::Num(id)], with).unwrap();
        assert_eq!(
            got[0].vector.as_ref(),
            Some(&base[id as usize]),
            "point {id}"
        );
    }
}

#[test]
fn int8_keeps_recall_at_128_euclidean() {
    against_float(20_000, 128, Metric::Euclidean, 11);
}

#[test]
fn int8_keeps_recall_at_384_cosine() {
    against_float(10_000, 384, Metric::Cosine, 12);
}

/// Every metric: quantized graph search against exact search.
#[test]
fn int8_finds_neighbours_in_every_metric() {
    let dim = 32;
    let (base, _) = gaussian_mixture(3000, dim, 10, 0.3, 5);
    let queries: Vec<Vec<f32>> = base[..50]
        .iter()
        .map(|v| v.iter().map(|x| x * 0.9 + 0.01).collect())
        .collect();
    for metric in [
        Metric::Cosine,
        Metric::Euclidean,
        Metric::Dot,
        Metric::Manhattan,
    ] {
        let dir = TempDir::new("quantized-metrics");
        let db = open_with(&dir.0, EngineOptions::default());
        let config = CollectionConfig {
            quantization: Some(Quantization::int8()),
            target_recall: None,
            ..CollectionConfig::new(dim, metric)
        };
        let c = load(&db, "c", config, &base);
        let truth: Vec<Vec<usize>> = queries
            .iter()
            .map(|q| exact_top_k(kind(metric), &base, q, K, None))
            .collect();
        let r = mean_recall(&c, &queries, &truth, Some(128));
        assert!(r >= 0.95, "{metric:?}: {r}");
        // Rescored scores are the exact ones.
        let hit = &c
            .search(&SearchRequest {
                vector: queries[0].clone(),
                limit: 1,
                ef: Some(128),
                ..Default::default()
            })
            .unwrap()[0];
        let PointId::Num(id) = hit.id else {
            unreachable!()
        };
        let exact = vectorizer_testkit::score(kind(metric), &queries[0], &base[id as usize]);
        assert!(
            (hit.score - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
            "{metric:?}"
        );
    }
}
