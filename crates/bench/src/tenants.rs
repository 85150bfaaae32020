//! The tenant-scale benchmark: for each N, a data directory of N
//! collections of 100 vectors (written with the engine, in the server's
//! own format), then `vectorizer serve` over it (Hub off), measuring:
//! resident memory, threads and open files idle and after touching 1 %
//! of the collections; start-up time to ready (health 200) and to the
//! whole listing; first-search latency on closed collections; warm search
//! latency; and search throughput at 16 clients choosing collections by a
//! Zipf distribution. With `--work DIR`, the data directories are kept in
//! DIR (`n<N>/`) and reused by the next run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_engine::{CollectionConfig, Database, EngineOptions, Metric, Point, PointId};
use vectorizer_testkit::Rng;
use vectorizer_testkit::http::Client;

const DIM: usize = 32;
const POINTS: u64 = 100;
const CLIENTS: usize = 16;

fn name(i: u64) -> String {
    format!("t{i}")
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.normal()).collect()
}

/// Writes N collections of [`POINTS`] vectors into `dir`.
fn build(dir: &Path, n: u64) -> Result<f64, String> {
    let t = Instant::now();
    let options = EngineOptions {
        max_open_collections: 64,
        ..EngineOptions::default()
    };
    let db = Database::open(dir, options).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(n);
    for i in 0..n {
        let c = db
            .create_collection(
                &name(i),
                CollectionConfig::new(DIM, Metric::Cosine),
                BTreeMap::new(),
            )
            .map_err(|e| e.to_string())?;
        let pts = (0..POINTS)
            .map(|k| Point {
                id: PointId::Num(k),
                vector: vector(&mut rng),
                payload: Some(json!({"k": k}).as_object().expect("object").clone()),
            })
            .collect();
        c.upsert(pts).map_err(|e| e.to_string())?;
        c.wait_indexed();
        if i % 10_000 == 9_999 {
            eprintln!("  {} collections written", i + 1);
        }
    }
    db.flush().map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

/// Collections of 1,000 points measured apart (`k0`..), written if missing.
const LARGE: u64 = 50;

fn add_large(dir: &Path) -> Result<(), String> {
    let db = Database::open(dir, EngineOptions::default()).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(7);
    for i in 0..LARGE {
        let name = format!("k{i}");
        if db.exists(&name) {
            continue;
        }
        let c = db
            .create_collection(
                &name,
                CollectionConfig::new(DIM, Metric::Cosine),
                BTreeMap::new(),
            )
            .map_err(|e| e.to_string())?;
        let pts = (0..1000)
            .map(|k| Point {
                id: PointId::Num(k),
                vector: vector(&mut rng),
                payload: None,
            })
            .collect();
        c.upsert(pts).map_err(|e| e.to_string())?;
        c.wait_indexed();
    }
    db.flush().map_err(|e| e.to_string())
}

/// (resident bytes, threads, open files) of process `pid`.
fn process(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (field("VmRSS:") * 1024, field("Threads:"), fds)
}

fn search(c: &mut Client, coll: &str, rng: &mut Rng) -> Result<Duration, String> {
    let body = serde_json::to_vec(&json!({"vector": vector(rng), "limit": 10})).expect("json");
    let t = Instant::now();
    let r = c
        .request(
            "POST",
            &format!("/collections/{coll}/search"),
            Some(&body),
            &[("content-type", "application/json")],
        )
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("search on {coll}: {} {}", r.status, r.json()));
    }
    Ok(t.elapsed())
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Zipf(1.1) ranks over `n`, by inverting the cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64) -> Zipf {
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|k| {
                    acc += 1.0 / (k as f64).powf(1.1);
                    acc
                })
                .collect(),
        )
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        let total = *self.0.last().expect("n > 0");
        let x = rng.unit() * total;
        self.0.partition_point(|c| *c < x) as u64
    }
}

fn measure(bin: &Path, n: u64, work: Option<&Path>) -> Result<Value, String> {
    let dir = match work {
        Some(w) => w.join(format!("n{n}")),
        None => std::env::temp_dir().join(format!("vz-tenants-{n}-{}", std::process::id())),
    };
    let build_s = if work.is_some() && dir.join("catalog.redb").is_file() {
        eprintln!("reusing the {n} collections in {}", dir.display());
        0.0
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("writing {n} collections of {POINTS} vectors…");
        build(&dir, n)?
    };
    add_large(&dir)?;
    let started = Instant::now();
    let (server, addr) = crate::noisy::start_with(bin, &dir, &[])?;
    let pid = server.0.id();
    let mut c = Client::new(addr);
    loop {
        if c.request("GET", "/health", None, &[])
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let listed = c
        .request("GET", "/collections", None, &[])
        .map_err(|e| e.to_string())?;
    let listed_n = listed.json()["collections"].as_array().map_or(0, Vec::len);
    let listed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if listed_n as u64 != n + LARGE {
        return Err(format!("listed {listed_n} of {n} collections"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = process(pid);
    // First searches, each on a collection not opened before.
    let mut rng = Rng::new(1);
    let touched = (n / 100).max(1);
    let mut first = Vec::new();
    for i in 0..touched {
        // Spread over the whole range.
        let coll = name(i * (n / touched));
        first.push(search(&mut c, &coll, &mut rng)?);
    }
    first.sort();
    let mut large = Vec::new();
    for i in 0..LARGE {
        large.push(search(&mut c, &format!("k{i}"), &mut rng)?);
    }
    large.sort();
    let after = process(pid);
    let mut warm = Vec::new();
    for round in 0..5 {
        for i in 0..touched.min(200) {
            let coll = name(i * (n / touched));
            let d = search(&mut c, &coll, &mut rng)?;
            if round > 0 {
                warm.push(d);
            }
        }
    }
    warm.sort();
    // Throughput: 16 clients, collections by Zipf rank.
    let zipf = Arc::new(Zipf::new(n));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (zipf, stop, done, failed) =
                (zipf.clone(), stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(addr);
                let mut rng = Rng::new(100 + t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let coll = name(zipf.pick(&mut rng));
                    match search(&mut c, &coll, &mut rng) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let secs = 5.0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let under_load = process(pid);
    let metrics = c
        .request("GET", "/metrics", None, &[])
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default();
    let metric = |k: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(k) && l[k.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let out = json!({
        "collections": n,
        "build_seconds": build_s,
        "data_bytes": crate::sys::tree_size(&dir),
        "ready_ms": ready_ms,
        "listed_ms": listed_ms,
        "idle": {"rss_bytes": idle.0, "threads": idle.1, "open_files": idle.2},
        "after_touching_1pct": {"touched": touched, "rss_bytes": after.0, "threads": after.1, "open_files": after.2},
        "under_zipf_load": {"rss_bytes": under_load.0, "threads": under_load.1, "open_files": under_load.2},
        "first_search_ms": {"p50": ms(&first, 0.5), "p99": ms(&first, 0.99), "n": first.len()},
        "first_search_1000_points_ms": {"p50": ms(&large, 0.5), "p99": ms(&large, 0.99), "n": large.len()},
        "warm_search_ms": {"p50": ms(&warm, 0.5), "p99": ms(&warm, 0.99), "n": warm.len()},
        "zipf_qps": done.load(Ordering::Relaxed) as f64 / secs,
        "zipf_failed": failed.load(Ordering::Relaxed),
        "opens": metric("vectorizer_collection_opens_total"),
        "evictions": metric("vectorizer_collection_evictions_total"),
        "open_collections": metric("vectorizer_open_collections"),
    });
    drop(server);
    if work.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(out)
}

pub fn run(args: &[String]) -> i32 {
    let mut bin = std::path::PathBuf::from("target/release/vectorizer");
    let mut counts = vec![1_000u64, 10_000, 100_000];
    let mut work: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--bin", Some(p)) => bin = p.into(),
            ("--work", Some(p)) => work = Some(p.into()),
            ("--counts", Some(c)) => {
                counts = match c.split(',').map(str::parse).collect() {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("--counts takes numbers separated by commas: {e}");
                        return 2;
                    }
                }
            }
            _ => {
                eprintln!(
                    "usage: vectorizer-bench tenants [--bin PATH] [--counts 1000,10000,100000]"
                );
                return 2;
            }
        }
    }
    for n in counts {
        match measure(&bin, n, work.as_deref()) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("tenants {n}: {e}");
                return 1;
            }
        }
    }
    0
}
