//! The engine benchmark: build, recall, QPS (1 and 2 threads, several ef),
//! filtered QPS, memory, disk size and restart time, on seeded Gaussian
//! mixtures. It writes each dataset (raw f32 and exact top-10) under the
//! output directory so that `scripts/bench_hnswlib.py` measures hnswlib on
//! the very same vectors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use vectorizer_engine::{
    CollectionConfig, Database, EngineOptions, Filter, HnswParams, Metric, Point, PointId,
    Quantization, SearchRequest,
};
use vectorizer_testkit::{Kind, exact_top_k, gaussian_mixture, hard_mixture, recall};

use crate::sys::{rss_bytes, tree_size};

const K: usize = 10;
const EFS: [usize; 9] = [10, 16, 24, 32, 48, 64, 128, 256, 512];

struct Dataset {
    name: &'static str,
    metric: Metric,
    dim: usize,
    base: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    truth: Vec<Vec<usize>>,
}

pub(crate) fn kind(m: Metric) -> Kind {
    match m {
        Metric::Cosine => Kind::Cosine,
        Metric::Euclidean => Kind::Euclidean,
        Metric::Manhattan => Kind::Manhattan,
        Metric::Dot => Kind::Dot,
    }
}

/// Exact top-k for every query, on two threads.
pub(crate) fn ground_truth(
    metric: Metric,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    allowed: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<Vec<usize>> {
    let half = queries.len().div_ceil(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = queries
            .chunks(half.max(1))
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            exact_top_k(
                                kind(metric),
                                base,
                                q,
                                K,
                                allowed.map(|f| f as &dyn Fn(usize) -> bool),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn dataset(
    name: &'static str,
    n: usize,
    dim: usize,
    metric: Metric,
    nq: usize,
    seed: u64,
) -> Dataset {
    let t = Instant::now();
    let (base, queries) = if name.starts_with("hard") {
        // Anisotropic clusters of very different sizes under a rotation;
        // queries drawn apart from the stored points.
        (
            hard_mixture(n, dim, 40, seed, 1),
            hard_mixture(nq, dim, 40, seed, 2),
        )
    } else {
        let (base, _) = gaussian_mixture(n, dim, 100, 0.5, seed);
        let (queries, _) = gaussian_mixture(nq, dim, 100, 0.5, seed);
        let queries = queries
            .into_iter()
            .map(|q| q.iter().map(|x| x * 1.01).collect())
            .collect();
        (base, queries)
    };
    let truth = ground_truth(metric, &base, &queries, None);
    eprintln!(
        "[{name}] data and exact top-{K} ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Dataset {
        name,
        metric,
        dim,
        base,
        queries,
        truth,
    }
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

fn export(ds: &Dataset, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_f32(&dir.join("base.f32"), &ds.base);
    write_f32(&dir.join("queries.f32"), &ds.queries);
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("truth.i32")).unwrap());
    for t in &ds.truth {
        for i in t {
            f.write_all(&(*i as i32).to_le_bytes()).unwrap();
        }
    }
    let meta = json!({"n": ds.base.len(), "dim": ds.dim, "queries": ds.queries.len(), "k": K, "metric": ds.metric.as_str()});
    std::fs::write(
        dir.join("meta.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
}

fn id_index(id: &PointId) -> usize {
    match id {
        PointId::Num(n) => *n as usize,
        PointId::Uuid(_) => usize::MAX,
    }
}

/// Passes per figure in `engine`: this machine's timings are noisy.
const PASSES: usize = 3;

/// Queries per second on `threads` threads (the best of `passes`), and
/// mean recall@10.
fn measure(
    db: &Database,
    coll: &str,
    ds: &Dataset,
    ef: Option<usize>,
    threads: usize,
    filter: Option<(&Filter, &[Vec<usize>])>,
    passes: usize,
) -> (f64, f64) {
    let runs: Vec<(f64, f64)> = (0..passes)
        .map(|_| measure_once(db, coll, ds, ef, threads, filter))
        .collect();
    (runs.iter().map(|r| r.0).fold(0.0, f64::max), runs[0].1)
}

fn measure_once(
    db: &Database,
    coll: &str,
    ds: &Dataset,
    ef: Option<usize>,
    threads: usize,
    filter: Option<(&Filter, &[Vec<usize>])>,
) -> (f64, f64) {
    let c = db.collection(coll).unwrap();
    let truth = filter.map_or(&ds.truth[..], |f| f.1);
    let per = ds.queries.len().div_ceil(threads);
    let t = Instant::now();
    let recalls: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = ds
            .queries
            .chunks(per)
            .zip(truth.chunks(per))
            .map(|(qs, ts)| {
                let c = &c;
                s.spawn(move || {
                    qs.iter()
                        .zip(ts)
                        .map(|(q, t)| {
                            let req = SearchRequest {
                                vector: q.clone(),
                                limit: K,
                                ef,
                                filter: filter.map(|f| f.0.clone()),
                                ..Default::default()
                            };
                            let got: Vec<usize> = c
                                .search(&req)
                                .unwrap()
                                .iter()
                                .map(|h| id_index(&h.id))
                                .collect();
                            recall(t, &got)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let secs = t.elapsed().as_secs_f64();
    (
        ds.queries.len() as f64 / secs,
        recalls.iter().sum::<f64>() / recalls.len() as f64,
    )
}

/// Builds collection `name`; with `payloads`, each point carries
/// `{"sel": i % 100}`, and with `indexed` that field is indexed too.
fn build(db: &Database, name: &str, ds: &Dataset, payloads: bool, indexed: bool) -> (f64, f64) {
    build_as(db, name, ds, payloads, indexed, None)
}

/// [`build`], with vectors quantized or not.
fn build_as(
    db: &Database,
    name: &str,
    ds: &Dataset,
    payloads: bool,
    indexed: bool,
    quantization: Option<Quantization>,
) -> (f64, f64) {
    let cfg = CollectionConfig {
        dimension: ds.dim,
        metric: ds.metric,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        },
        payload_index: if indexed {
            vec!["sel".to_owned()]
        } else {
            Vec::new()
        },
        // Figures at a fixed breadth, comparable with earlier runs.
        target_recall: None,
        quantization,
    };
    let c = db.create_collection(name, cfg, BTreeMap::new()).unwrap();
    let t = Instant::now();
    for (b, chunk) in ds.base.chunks(1000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = b * 1000 + j;
                let payload =
                    payloads.then(|| json!({"sel": i % 100}).as_object().unwrap().clone());
                Point {
                    id: PointId::Num(i as u64),
                    vector: v.clone(),
                    payload,
                }
            })
            .collect();
        c.upsert(pts).unwrap();
    }
    let acked = t.elapsed().as_secs_f64();
    c.wait_indexed();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "[{}] {} vectors acknowledged in {acked:.2} s ({:.0}/s); graph complete after {secs:.2} s",
        ds.name,
        ds.base.len(),
        ds.base.len() as f64 / acked
    );
    (secs, ds.base.len() as f64 / secs)
}

/// Opens the database in a fresh process: (open seconds, RSS growth bytes).
fn reopen(data: &Path) -> (f64, u64) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .arg("engine-open")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "engine-open failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["open_seconds"].as_f64().unwrap(),
        v["rss_growth_bytes"].as_u64().unwrap(),
    )
}

pub fn open_only(args: &[String]) -> i32 {
    let Some(dir) = args.first() else {
        eprintln!("usage: vectorizer-bench engine-open DIR");
        return 2;
    };
    let before = rss_bytes();
    let t = Instant::now();
    let db = Database::open(dir, EngineOptions::default()).unwrap();
    // Collections open on first use: each is opened, so that the memory
    // figure is that of the data being served.
    let open: Vec<_> = db
        .names()
        .unwrap()
        .iter()
        .map(|n| db.collection(n).unwrap())
        .collect();
    let secs = t.elapsed().as_secs_f64();
    let points: u64 = db.usage_all().unwrap().iter().map(|(_, u)| u.points).sum();
    let growth = rss_bytes().saturating_sub(before);
    println!(
        "{}",
        json!({"open_seconds": secs, "rss_growth_bytes": growth, "points": points})
    );
    drop(open);
    0
}

fn read_f32(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<_>>()
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Search figures only, on the collections a previous `engine` run left in
/// DIR (its `db-plain` of each dataset), so that a change to search can be
/// measured without building again, and so that a comparison can take
/// turns with another engine (`--passes N`, `--json`: one JSON line per
/// dataset and ef).
pub fn search_only(args: &[String]) -> i32 {
    let mut dir = None;
    let mut passes = 10;
    let mut as_json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--passes" => passes = it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            "--json" => as_json = true,
            d if dir.is_none() => dir = Some(PathBuf::from(d)),
            _ => passes = 0,
        }
    }
    let (Some(dir), 1..) = (dir, passes) else {
        eprintln!("usage: vectorizer-bench engine-search DIR [--passes N] [--json]");
        return 2;
    };
    for name in ["l2-128", "cos-384", "hard-128"] {
        let data = dir.join(name).join("data");
        let Ok(meta) = std::fs::read(data.join("meta.json")) else {
            eprintln!(
                "[{name}] no data under {}: run `engine` first",
                data.display()
            );
            continue;
        };
        let meta: Value = serde_json::from_slice(&meta).unwrap();
        let dim = meta["dim"].as_u64().unwrap() as usize;
        let metric: Metric = serde_json::from_value(meta["metric"].clone()).unwrap();
        let truth: Vec<Vec<usize>> = std::fs::read(data.join("truth.i32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect::<Vec<_>>()
            .chunks(K)
            .map(<[usize]>::to_vec)
            .collect();
        let ds = Dataset {
            name,
            metric,
            dim,
            base: Vec::new(),
            queries: read_f32(&data.join("queries.f32"), dim),
            truth,
        };
        for variant in ["plain", "int8"] {
            let at = dir.join(name).join(format!("db-{variant}"));
            if !at.exists() {
                continue;
            }
            let db = Database::open(at, EngineOptions::default()).unwrap();
            for ef in EFS {
                let (q1, r1) = measure(&db, "c", &ds, Some(ef), 1, None, passes);
                if as_json {
                    println!(
                        "{}",
                        json!({"dataset": name, "variant": variant, "ef": ef, "recall": r1, "qps_1": q1})
                    );
                } else {
                    println!(
                        "[{name} {variant}] ef={ef:<4} recall@10 {r1:.4}  QPS 1 thread {q1:>8.0}"
                    );
                }
            }
        }
    }
    0
}

/// With defaults (no `ef`): sets the collection's target to 0.95, waits
/// for its first measurement of every point, and measures searches that
/// name no breadth.
fn with_defaults(db: &Database, ds: &Dataset) -> Value {
    let c = db.collection("c").unwrap();
    c.set_target_recall(Some(0.95)).unwrap();
    let t = Instant::now();
    while c.recall().is_none_or(|r| r.points != ds.base.len() as u64) {
        assert!(
            t.elapsed().as_secs() < 900,
            "[{}] no tuning in 900 s",
            ds.name
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let tuned = c.recall().unwrap();
    let (q, r) = measure(db, "c", ds, None, 1, None, PASSES);
    json!({"ef": tuned.ef, "estimate": tuned.estimate, "recall": r, "qps_1": q,
        "tuned_after_seconds": t.elapsed().as_secs_f64()})
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn bench_dataset(ds: &Dataset, out: &Path) -> Value {
    let name = ds.name;
    export(ds, &out.join(name).join("data"));
    let mut result =
        json!({"dataset": name, "n": ds.base.len(), "dim": ds.dim, "metric": ds.metric.as_str()});

    // 1. Vectors only: the head-to-head with hnswlib.
    let plain = out.join(name).join("db-plain");
    let _ = std::fs::remove_dir_all(&plain);
    let db = Database::open(&plain, EngineOptions::default()).unwrap();
    let (build_s, rate) = build(&db, "c", ds, false, false);
    println!(
        "[{name}] build {build_s:.2} s, insert {rate:.0} vectors/s (batches of 1000, fsync per batch)"
    );
    result["build_seconds"] = json!(build_s);
    result["insert_per_second"] = json!(rate);
    let mut rows = Vec::new();
    for ef in EFS {
        let (q1, r1) = measure(&db, "c", ds, Some(ef), 1, None, PASSES);
        let (q2, _) = measure(&db, "c", ds, Some(ef), 2, None, PASSES);
        println!(
            "[{name}] ef={ef:<4} recall@10 {r1:.4}  QPS 1 thread {q1:>8.0}  2 threads {q2:>8.0}"
        );
        rows.push(json!({"ef": ef, "recall": r1, "qps_1": q1, "qps_2": q2}));
    }
    result["search"] = json!(rows);
    let c = db.collection("c").unwrap();
    let info = c.info();
    println!(
        "[{name}] engine accounting: memory {:.1} MiB, disk {:.1} MiB (before snapshot)",
        mib(info.memory_bytes),
        mib(info.disk_bytes)
    );
    db.flush().unwrap();
    let disk = c.disk_bytes();
    drop(c);
    drop(db);
    let tree = tree_size(&plain);
    let (open_s, rss) = reopen(&plain);
    println!(
        "[{name}] on disk {:.1} MiB (engine figure {:.1} MiB); restart {open_s:.3} s; resident after restart {:.1} MiB",
        mib(tree),
        mib(disk),
        mib(rss)
    );
    result["disk_bytes"] = json!(tree);
    result["restart_seconds"] = json!(open_s);
    result["rss_bytes"] = json!(rss);

    // 1b. The same vectors quantized (int8, rescored).
    let int8 = out.join(name).join("db-int8");
    let _ = std::fs::remove_dir_all(&int8);
    let db = Database::open(&int8, EngineOptions::default()).unwrap();
    let (build_s, _) = build_as(&db, "c", ds, false, false, Some(Quantization::int8()));
    let mut rows = Vec::new();
    for ef in EFS {
        let (q1, r1) = measure(&db, "c", ds, Some(ef), 1, None, PASSES);
        println!("[{name}] int8 ef={ef:<4} recall@10 {r1:.4}  QPS 1 thread {q1:>8.0}");
        rows.push(json!({"ef": ef, "recall": r1, "qps_1": q1}));
    }
    let c = db.collection("c").unwrap();
    let vectors = c.vector_memory_bytes();
    drop(c);
    db.flush().unwrap();
    drop(db);
    let (open_s, rss) = reopen(&int8);
    println!(
        "[{name}] int8: build {build_s:.2} s; vectors in memory {:.1} MiB; restart {open_s:.3} s; resident after restart {:.1} MiB",
        mib(vectors),
        mib(rss)
    );
    result["int8"] = json!({"build_seconds": build_s, "search": rows, "rss_bytes": rss,
        "vector_bytes": vectors, "restart_seconds": open_s});

    // 1c. With defaults: no `ef`, the breadth each collection tuned itself.
    let mut defaults = json!({});
    for (variant, dir) in [("float", &plain), ("int8", &int8)] {
        let db = Database::open(dir, EngineOptions::default()).unwrap();
        let d = with_defaults(&db, ds);
        println!(
            "[{name}] {variant} with defaults: tuned to ef {} ({:.1} s after opening, estimate {:.4}): recall@10 {:.4}, QPS 1 thread {:.0}",
            d["ef"],
            d["tuned_after_seconds"].as_f64().unwrap(),
            d["estimate"].as_f64().unwrap(),
            d["recall"].as_f64().unwrap(),
            d["qps_1"].as_f64().unwrap()
        );
        defaults[variant] = d;
        // (Back to no target: `engine-search` measures at fixed breadths.)
        db.collection("c").unwrap().set_target_recall(None).unwrap();
    }
    result["defaults"] = defaults;

    // 2. With payloads, for filtered search.
    let filt = out.join(name).join("db-filtered");
    let _ = std::fs::remove_dir_all(&filt);
    let db = Database::open(&filt, EngineOptions::default()).unwrap();
    build(&db, "c", ds, true, false);
    build(&db, "ci", ds, true, true);
    let mut frows = Vec::new();
    for (label, fj, modulus) in [
        (
            "10%",
            json!({"must": [{"key": "sel", "range": {"lt": 10}}]}),
            10usize,
        ),
        (
            "1%",
            json!({"must": [{"key": "sel", "match": {"value": 0}}]}),
            1usize,
        ),
    ] {
        let f = Filter::from_json(&fj).unwrap();
        let allowed = move |i: usize| i % 100 < modulus;
        let truth = ground_truth(ds.metric, &ds.base, &ds.queries, Some(&allowed));
        for (coll, how) in [("c", "no index"), ("ci", "indexed")] {
            for ef in [64, 128] {
                let (q, r) = measure(&db, coll, ds, Some(ef), 1, Some((&f, &truth)), PASSES);
                println!(
                    "[{name}] filtered {label:<3} {how:<8} ef={ef:<4} recall@10 {r:.4}  QPS 1 thread {q:>8.0}"
                );
                frows.push(json!({"selectivity": label, "payload_index": coll == "ci", "ef": ef, "recall": r, "qps_1": q}));
            }
        }
    }
    result["filtered"] = json!(frows);
    let (plain, indexed) = (
        db.collection("c").unwrap().info(),
        db.collection("ci").unwrap().info(),
    );
    println!(
        "[{name}] with payloads, engine accounting: memory {:.1} MiB, with the payload index {:.1} MiB",
        mib(plain.memory_bytes),
        mib(indexed.memory_bytes)
    );
    db.flush().unwrap();
    drop(db);
    let (open_s, rss) = reopen(&filt);
    println!(
        "[{name}] with payloads (both collections): restart {open_s:.3} s; resident after restart {:.1} MiB",
        mib(rss)
    );
    result["rss_bytes_with_payloads"] = json!(rss);
    result
}

pub fn run(args: &[String]) -> i32 {
    let mut out = PathBuf::from("bench-out");
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().expect("--out takes a directory")),
            "--quick" => quick = true,
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    let scale = if quick { 10 } else { 1 };
    let nq = if quick { 200 } else { 1000 };
    let mut results = Vec::new();
    for (name, n, dim, metric, seed) in [
        ("l2-128", 100_000, 128, Metric::Euclidean, 1u64),
        ("cos-384", 50_000, 384, Metric::Cosine, 2),
        ("hard-128", 50_000, 128, Metric::Euclidean, 3),
    ] {
        let ds = dataset(name, n / scale, dim, metric, nq, seed);
        results.push(bench_dataset(&ds, &out));
    }
    let summary = json!({"engine": results});
    std::fs::write(
        out.join("engine.json"),
        serde_json::to_vec_pretty(&summary).unwrap(),
    )
    .unwrap();
    println!("figures written to {}", out.join("engine.json").display());
    0
}
