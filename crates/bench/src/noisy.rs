//! The noisy-neighbour benchmark: tenant B's search latency alone, and
//! while tenant A attacks at its limits in each of four ways: its
//! heaviest REST requests, MCP tool calls at the MCP body limit, and a
//! flood of writes and payload indexes that keeps linking busy, and writes
//! spread over 40 collections (with what is left to link when it stops).
//! Starts `vectorizer serve --local-hub` on a free port with a fresh data
//! directory, makes the plan, users and keys with `vectorizer hub-dev`,
//! loads both tenants, then measures B at 16 clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::gaussian_mixture;
use vectorizer_testkit::http::Client;

pub(crate) const DIM: usize = 128;
const CLIENTS: usize = 16;
/// A's clients: more than its share of requests in flight (64), so that
/// it is at both of its limits.
const ATTACKERS: usize = 80;

pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn hub_dev(bin: &Path, data: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("hub-dev")
        .arg("--data")
        .arg(data.join("hub.json"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn new_key(bin: &Path, data: &Path, email: &str, perms: &str) -> Result<String, String> {
    let user = hub_dev(bin, data, &["user", email, "--plan", "bench"])?;
    let out = hub_dev(
        bin,
        data,
        &["key", "--user", user.trim(), "--permissions", perms],
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("access key (shown once): "))
        .map(str::to_owned)
        .ok_or_else(|| "no key printed".to_owned())
}

pub(crate) fn call(
    c: &mut Client,
    key: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<u16, String> {
    send(
        c,
        key,
        method,
        path,
        &serde_json::to_vec(body).expect("serializable"),
    )
}

fn send(c: &mut Client, key: &str, method: &str, path: &str, raw: &[u8]) -> Result<u16, String> {
    let auth = format!("Bearer {key}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    c.request(method, path, Some(raw), &h)
        .map(|r| r.status)
        .map_err(|e| format!("{method} {path}: {e}"))
}

/// How tenant A attacks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Its heaviest REST requests: filtered counts of 256 conditions,
    /// searches with the widest beam and limit, filtered searches, and
    /// batches of 1,000 upserts.
    Heavy,
    /// MCP `search_batch` calls: half at the MCP body limit (2 MiB, long
    /// vectors, refused once read), half valid batches of 100 searches.
    Mcp,
    /// Batches of 1,000 new points (a linking backlog)
    /// and payload indexes created one after another.
    IndexFlood,
    /// Writes spread over [`SPREAD`] collections, each with points to link.
    ManyCollections,
}

/// A's collections in the many-collections attack.
const SPREAD: usize = 40;

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Heavy => "heavy",
            Attack::Mcp => "mcp",
            Attack::IndexFlood => "index_flood",
            Attack::ManyCollections => "many_collections",
        }
    }
}

/// An MCP `tools/call` of `search_batch` on `a` with `searches`.
fn mcp_batch(searches: &[Value]) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "search_batch",
        "arguments": {"collection": "a", "searches": searches}
    }})
}

/// The bodies attacker `t` sends in turn, as (path, body).
fn bodies(kind: Attack, t: usize) -> Vec<(String, Vec<u8>)> {
    let q: Vec<f32> = (0..DIM).map(|i| (i % 7) as f32).collect();
    let encode = |v: &Value| serde_json::to_vec(v).expect("serializable");
    match kind {
        Attack::Heavy => {
            let conds: Vec<Value> = (0..256)
                .map(|i| json!({"key": "t", "match": {"any": (0..64).map(|j| 1000 + i * 64 + j).collect::<Vec<i64>>()}}))
                .collect();
            let heavy = json!({"should": conds});
            let pts: Vec<Value> = (0..1000)
                .map(|i| json!({"id": 500_000 + i, "vector": q}))
                .collect();
            [
                ("/collections/a/points/count", json!({"filter": heavy})),
                (
                    "/collections/a/search",
                    json!({"vector": q, "limit": 1000, "ef": 4096}),
                ),
                (
                    "/collections/a/search",
                    json!({"vector": q, "limit": 100, "filter": heavy}),
                ),
                ("/collections/a/points", json!({"points": pts})),
            ]
            .iter()
            .map(|(p, b)| (p.to_string(), encode(b)))
            .collect()
        }
        Attack::Mcp => {
            // Just under the default MCP body limit of 2 MiB.
            let long: Vec<f32> = (0..1800).map(|i| i as f32 * 0.001).collect();
            let big = vec![json!({"vector": long, "limit": 10}); 100];
            let valid = vec![json!({"vector": q, "limit": 100, "ef": 512}); 100];
            vec![
                ("/mcp".to_owned(), encode(&mcp_batch(&big))),
                ("/mcp".to_owned(), encode(&mcp_batch(&valid))),
            ]
        }
        Attack::IndexFlood => {
            let pts: Vec<Value> = (0..1000)
                .map(|i| {
                    let v: Vec<f32> = (0..DIM).map(|d| ((i * 31 + d * 7 + t) % 97) as f32).collect();
                    json!({"id": 1_000_000 + t * 1000 + i, "vector": v, "payload": {"t": i % 97, "u": t}})
                })
                .collect();
            let mut out = vec![(
                "/collections/a/points".to_owned(),
                encode(&json!({"points": pts})),
            )];
            // New fields up to the engine's 32, then the same ones again.
            out.extend((0..4).map(|k| {
                (
                    "/collections/a/payload_index".to_owned(),
                    encode(&json!({"field": format!("f{}", (t * 4 + k) % 30)})),
                )
            }));
            out
        }
        Attack::ManyCollections => (0..4)
            .map(|k| {
                let n = t * 4 + k;
                let pts: Vec<Value> = (0..500)
                    .map(|i| {
                        let v: Vec<f32> = (0..DIM)
                            .map(|d| ((i * 13 + d * 7 + n) % 89) as f32)
                            .collect();
                        json!({"id": n * 1000 + i, "vector": v})
                    })
                    .collect();
                (
                    format!("/collections/m{}/points", n % SPREAD),
                    encode(&json!({"points": pts})),
                )
            })
            .collect(),
    }
}

/// Points A's spread collections hold unlinked now.
fn spread_backlog(addr: SocketAddr, key: &str) -> u64 {
    let mut c = Client::new(addr);
    let auth = format!("Bearer {key}");
    (0..SPREAD)
        .filter_map(|i| {
            c.request(
                "GET",
                &format!("/collections/m{i}"),
                None,
                &[("authorization", auth.as_str())],
            )
            .ok()
        })
        .filter_map(|r| r.json()["unindexed_points"].as_u64())
        .sum()
}

pub(crate) fn load(
    addr: SocketAddr,
    key: &str,
    name: &str,
    n: usize,
    seed: u64,
) -> Result<(), String> {
    let mut c = Client::new(addr);
    let made = json!({"name": name, "dimension": DIM, "metric": "euclidean"});
    if call(&mut c, key, "POST", "/collections", &made)? != 201 {
        return Err(format!("creating {name}"));
    }
    let (base, _) = gaussian_mixture(n, DIM, 100, 0.5, seed);
    for (b, chunk) in base.chunks(1000).enumerate() {
        let pts: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": b * 1000 + i, "vector": v, "payload": {"t": (b * 1000 + i) % 97}}))
            .collect();
        let s = call(
            &mut c,
            key,
            "POST",
            &format!("/collections/{name}/points"),
            &json!({"points": pts}),
        )?;
        if s != 200 {
            return Err(format!("upsert into {name}: {s}"));
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// B's searches at 16 clients for `d`: (QPS, p50 ms, p99 ms, non-200s).
fn measure_b(
    addr: SocketAddr,
    key: &str,
    queries: &[Vec<f32>],
    d: Duration,
) -> (f64, f64, f64, u64) {
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let errors = &errors;
                s.spawn(move || {
                    let mut c = Client::new(addr);
                    let mut out = Vec::new();
                    let mut i = t;
                    while started.elapsed() < d {
                        let q = json!({"vector": queries[i % queries.len()], "limit": 10});
                        let t0 = Instant::now();
                        match call(&mut c, key, "POST", "/collections/b/search", &q) {
                            Ok(200) => out.push(t0.elapsed()),
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += CLIENTS;
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    (
        lat.len() as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        errors.into_inner(),
    )
}

/// A's attack of `kind`, from 80 clients until `stop`. Returns (requests,
/// 429s, 503s).
fn attack(addr: SocketAddr, key: &str, kind: Attack, stop: &AtomicBool) -> (u64, u64, u64) {
    let (sent, busy, cut) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..ATTACKERS {
            let (sent, busy, cut) = (&sent, &busy, &cut);
            s.spawn(move || {
                let mut c = Client::new(addr);
                // The bodies are made once: the load generator shares the
                // machine and must spend its CPU on sending, not encoding.
                let bodies = bodies(kind, t);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (path, body) = &bodies[(t + n) % bodies.len()];
                    n += 1;
                    let s = send(&mut c, key, "POST", path, body).unwrap_or(0);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match s {
                        // Retry-After says 1 s; a hostile client does not wait.
                        429 => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            cut.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (sent.into_inner(), busy.into_inner(), cut.into_inner())
}

pub fn run(args: &[String]) -> i32 {
    let mut bin = PathBuf::from("target/release/vectorizer");
    let mut secs = 10u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bin" => bin = PathBuf::from(it.next().expect("--bin takes a path")),
            "--seconds" => secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(secs),
            other => {
                eprintln!(
                    "unknown argument {other}; usage: vectorizer-bench noisy [--bin PATH] [--seconds N]"
                );
                return 2;
            }
        }
    }
    match bench(&bin, Duration::from_secs(secs)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("noisy: {e}");
            1
        }
    }
}

/// A fresh data directory whose local Hub has the plan `bench`, roomy
/// enough for any benchmark.
pub(crate) fn fresh_hub(bin: &Path, tag: &str) -> Result<PathBuf, String> {
    let data = std::env::temp_dir().join(format!("vz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    hub_dev(
        bin,
        &data,
        &[
            "plan",
            "bench",
            "--max-collections",
            "64",
            "--max-vectors",
            "10000000",
            "--max-storage-bytes",
            "100000000000",
        ],
    )?;
    Ok(data)
}

/// Starts `bin serve --local-hub` on a free port over `data`.
pub(crate) fn start(bin: &Path, data: &Path) -> Result<(Server, SocketAddr), String> {
    start_with(bin, data, &["--local-hub"])
}

/// Starts `bin serve` with `args` on a free port over `data`.
pub(crate) fn start_with(
    bin: &Path,
    data: &Path,
    args: &[&str],
) -> Result<(Server, SocketAddr), String> {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(args)
        .args(["--port", "0", "--data-dir"])
        .arg(data)
        .env("VECTORIZER_LOGGING__LEVEL", "error")
        .env_remove("HIVEHUB_SERVICE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let addr: SocketAddr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("vectorizer listening on http://")
                .map(str::to_owned)
        })
        .ok_or("the server printed no address")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok((server, addr))
}

fn bench(bin: &Path, d: Duration) -> Result<(), String> {
    let data = fresh_hub(bin, "noisy")?;
    let a = new_key(bin, &data, "a@bench", "read,write,delete")?;
    let b = new_key(bin, &data, "b@bench", "read,write,delete")?;
    let (server, addr) = start(bin, &data)?;
    println!("server on {addr}; loading tenant A (100,000 × {DIM}) and tenant B (20,000 × {DIM})");
    load(addr, &a, "a", 100_000, 1)?;
    load(addr, &b, "b", 20_000, 2)?;
    // Let background linking finish, so both phases see the same graph.
    std::thread::sleep(Duration::from_secs(10));
    let (queries, _) = gaussian_mixture(1000, DIM, 100, 0.5, 2);
    let (qps, p50, p99, err) = measure_b(addr, &b, &queries, d);
    println!(
        "B alone,              {CLIENTS} clients: {qps:>7.0} QPS  p50 {p50:.2} ms  p99 {p99:.2} ms  errors {err}"
    );
    let mut report = serde_json::Map::new();
    report.insert(
        "b_alone".into(),
        json!({"qps": qps, "p50_ms": p50, "p99_ms": p99}),
    );
    {
        let mut c = Client::new(addr);
        for i in 0..SPREAD {
            let made = json!({"name": format!("m{i}"), "dimension": DIM, "metric": "euclidean"});
            if call(&mut c, &a, "POST", "/collections", &made)? != 201 {
                return Err(format!("creating m{i}"));
            }
        }
    }
    for kind in [
        Attack::Heavy,
        Attack::Mcp,
        Attack::IndexFlood,
        Attack::ManyCollections,
    ] {
        let stop = AtomicBool::new(false);
        let ((sent, busy, cut), (qps2, p50b, p99b, err2)) = std::thread::scope(|s| {
            let h = s.spawn(|| attack(addr, &a, kind, &stop));
            std::thread::sleep(Duration::from_secs(1));
            let m = measure_b(addr, &b, &queries, d);
            stop.store(true, Ordering::Relaxed);
            (h.join().unwrap(), m)
        });
        println!(
            "B with A {:<11}, {CLIENTS} clients: {qps2:>7.0} QPS  p50 {p50b:.2} ms  p99 {p99b:.2} ms  errors {err2}  (p99 {:.1}x idle; A: {sent} requests, {busy} refused 429, {cut} cut off 503)",
            kind.name(),
            p99b / p99
        );
        let mut line = json!({"qps": qps2, "p50_ms": p50b, "p99_ms": p99b, "p99_vs_idle": p99b / p99, "a": {"requests": sent, "busy": busy, "cut_off": cut}});
        if kind == Attack::ManyCollections {
            let left = spread_backlog(addr, &a);
            println!("  A's {SPREAD} collections held {left} points to link when it stopped");
            line["a"]["unlinked_after"] = json!(left);
        }
        report.insert(kind.name().into(), line);
        // The attack's linking backlog drains before the next.
        std::thread::sleep(Duration::from_secs(5));
    }
    println!("{}", Value::Object(report));
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
