//! The cluster benchmark: write throughput and search QPS of a three-node
//! cluster (replication factor 3) against one node, on this machine, with
//! one local Hub for both. Clients of the cluster spread their requests
//! over the three nodes; every write is replicated to all three and
//! applied by each, and most requests take one more hop to the leader.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::gaussian_mixture;
use vectorizer_testkit::http::Client;

use crate::noisy::{DIM, Server, call, fresh_hub, new_key};

const SECRET: &str = "bench-cluster-secret-0123456789abcdef";
const BATCH: usize = 100;
const WRITERS: usize = 8;
const SEARCHERS: usize = 16;
const PRELOAD: usize = 20_000;

pub fn run(args: &[String]) -> i32 {
    let mut bin = PathBuf::from("target/release/vectorizer");
    let mut seconds = 10;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bin" => bin = PathBuf::from(it.next().expect("--bin takes a path")),
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds takes a number")
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: vectorizer-bench cluster [--bin PATH] [--seconds N]"
                );
                return 2;
            }
        }
    }
    match bench(&bin, Duration::from_secs(seconds)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cluster: {e}");
            1
        }
    }
}

/// Starts `bin args` and reads the address after `prefix` on stdout.
fn spawn(bin: &Path, args: &[&str], prefix: &str) -> Result<(Server, SocketAddr), String> {
    let mut child = Command::new(bin)
        .args(args)
        .env("VECTORIZER_LOGGING__LEVEL", "error")
        .env("HIVEHUB_SERVICE_API_KEY", "bench-service-key")
        .env("VECTORIZER_CLUSTER_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
        .ok_or_else(|| format!("{args:?} printed no address"))?
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok((server, addr))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// Waits until a create succeeds through `addr` (a cluster answers once
/// its groups have leaders).
fn create(addr: SocketAddr, key: &str, name: &str) -> Result<(), String> {
    let mut c = Client::new(addr);
    let body = json!({"name": name, "dimension": DIM, "metric": "euclidean"});
    for _ in 0..300 {
        match call(&mut c, key, "POST", "/collections", &body) {
            Ok(201) => return Ok(()),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Err(format!("could not create {name} through {addr}"))
}

fn points(base: &[Vec<f32>], first: usize) -> Value {
    let pts: Vec<Value> = base
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": first + i, "vector": v, "payload": {"t": (first + i) % 97}}))
        .collect();
    json!({"points": pts})
}

/// Upserts of `BATCH` new points by `WRITERS` clients for `d`, spread
/// over `addrs`: points acknowledged per second.
fn writes(addrs: &[SocketAddr], key: &str, d: Duration) -> (f64, u64) {
    let (base, _) = gaussian_mixture(BATCH * 50, DIM, 100, 0.5, 7);
    let next = AtomicU64::new(1_000_000);
    let (done, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (next, done, failed, base) = (&next, &done, &failed, &base);
            s.spawn(move || {
                let mut c = Client::new(addrs[w % addrs.len()]);
                let mut round = w;
                while start.elapsed() < d {
                    let first = next.fetch_add(BATCH as u64, Ordering::Relaxed) as usize;
                    let chunk = &base[(round % 50) * BATCH..(round % 50 + 1) * BATCH];
                    round += 1;
                    let body = serde_json::to_vec(&points(chunk, first)).expect("json");
                    let h = [
                        ("authorization", format!("Bearer {key}")),
                        ("content-type", "application/json".into()),
                    ];
                    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    match c.request("POST", "/collections/w/points", Some(&body), &h) {
                        Ok(r) if r.status == 200 => done.fetch_add(BATCH as u64, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    (
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

/// 10-NN searches by `SEARCHERS` clients for `d`, spread over `addrs`:
/// (QPS, p50 ms, p99 ms, failures).
fn searches(addrs: &[SocketAddr], key: &str, d: Duration) -> (f64, f64, f64, u64) {
    let (queries, _) = gaussian_mixture(500, DIM, 100, 0.5, 9);
    let failed = AtomicU64::new(0);
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SEARCHERS)
            .map(|i| {
                let (queries, failed) = (&queries, &failed);
                s.spawn(move || {
                    let mut c = Client::new(addrs[i % addrs.len()]);
                    let mut out = Vec::new();
                    let mut q = i;
                    while start.elapsed() < d {
                        let body = json!({"vector": queries[q % queries.len()], "limit": 10});
                        q += 1;
                        let t = Instant::now();
                        match call(&mut c, key, "POST", "/collections/s/search", &body) {
                            Ok(200) => out.push(t.elapsed()),
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (
        lat.len() as f64 / start.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
        failed.load(Ordering::Relaxed),
    )
}

/// Loads `PRELOAD` points into collection `s` through `addr`.
fn preload(addr: SocketAddr, key: &str) -> Result<(), String> {
    create(addr, key, "s")?;
    let (base, _) = gaussian_mixture(PRELOAD, DIM, 100, 0.5, 3);
    let mut c = Client::new(addr);
    for (b, chunk) in base.chunks(500).enumerate() {
        let s = call(
            &mut c,
            key,
            "POST",
            "/collections/s/points",
            &points(chunk, b * 500),
        )?;
        if s != 200 {
            return Err(format!("preload: {s}"));
        }
    }
    // Let background linking finish before searches are timed.
    std::thread::sleep(Duration::from_secs(5));
    Ok(())
}

fn measure(name: &str, addrs: &[SocketAddr], key: &str, d: Duration) -> Result<Value, String> {
    create(addrs[0], key, "w")?;
    preload(addrs[0], key)?;
    let (pps, wfail) = writes(addrs, key, d);
    let (qps, p50, p99, sfail) = searches(addrs, key, d);
    println!(
        "{name:<22} writes {pps:>9.0} points/s ({WRITERS} clients, batches of {BATCH}, {wfail} failed)   search {qps:>7.0} QPS  p50 {p50:.2} ms  p99 {p99:.2} ms ({SEARCHERS} clients, {sfail} failed)"
    );
    Ok(json!({"points_per_s": pps, "qps": qps, "p50_ms": p50, "p99_ms": p99}))
}

fn bench(bin: &Path, d: Duration) -> Result<(), String> {
    let data = fresh_hub(bin, "cluster")?;
    let hub_file = data.join("hub.json");
    let one = new_key(bin, &data, "one@bench", "admin")?;
    let many = new_key(bin, &data, "cluster@bench", "admin")?;
    let (_hub, hub) = spawn(
        bin,
        &[
            "hub-dev",
            "--data",
            hub_file.to_str().unwrap_or_default(),
            "serve",
            "--port",
            "0",
        ],
        "local hub listening on http://",
    )?;
    let config = |name: &str, cluster: &str| -> Result<PathBuf, String> {
        let path = data.join(format!("{name}.yml"));
        let dir = data.join(name);
        std::fs::write(
            &path,
            format!(
                "server: {{port: 0}}\nstorage: {{data_dir: \"{}\"}}\nhub: {{enabled: true, api_url: \"http://{hub}\"}}\n{cluster}",
                dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(path)
    };
    let (single, single_addr) = spawn(
        bin,
        &[
            "serve",
            "--config",
            config("single", "")?.to_str().unwrap_or_default(),
        ],
        "vectorizer listening on http://",
    )?;
    println!(
        "{} × {DIM} points preloaded for searches; {}s of writes, then {}s of searches, per target",
        PRELOAD,
        d.as_secs(),
        d.as_secs()
    );
    let one_node = measure("one node", &[single_addr], &one, d)?;
    drop(single);
    let internal: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: String = internal
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    - {{id: {}, addr: \"127.0.0.1:{p}\"}}\n", i + 1))
        .collect();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3 {
        let cluster = format!("cluster:\n  node_id: {i}\n  shards: 3\n  nodes:\n{nodes}");
        let path = config(&format!("n{i}"), &cluster)?;
        let (s, a) = spawn(
            bin,
            &["serve", "--config", path.to_str().unwrap_or_default()],
            "vectorizer listening on http://",
        )?;
        servers.push(s);
        addrs.push(a);
    }
    let three = measure("three nodes (rf 3)", &addrs, &many, d)?;
    println!("{}", json!({"one_node": one_node, "three_nodes": three}));
    drop(servers);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
