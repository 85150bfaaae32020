//! The cluster benchmark: write throughput (and the CPU the servers spend
//! per point written) and search QPS of a three-node cluster (replication
//! factor 3) against one node, on this machine, with one local Hub for
//! both; then failover: the time from killing the leader of the writer's
//! shard to a write acknowledged by the new one, over `--kills` rounds.
//! Clients of the cluster spread their requests over the three nodes;
//! every write is replicated to all three and applied by each, and most
//! requests take one more hop to the leader.

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
const OPERATOR: &str = "bench-operator-token-0123456789";
const BATCH: usize = 100;
const WRITERS: usize = 8;
const SEARCHERS: usize = 16;
const PRELOAD: usize = 20_000;

pub fn run(args: &[String]) -> i32 {
    let mut bin = PathBuf::from("target/release/vectorizer");
    let mut seconds = 10;
    let mut kills = 20;
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
            "--kills" => {
                kills = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--kills takes a number")
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: vectorizer-bench cluster [--bin PATH] [--seconds N] [--kills N]"
                );
                return 2;
            }
        }
    }
    match bench(&bin, Duration::from_secs(seconds), kills) {
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
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
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

fn measure(
    name: &str,
    addrs: &[SocketAddr],
    pids: &[u32],
    key: &str,
    d: Duration,
) -> Result<Value, String> {
    create(addrs[0], key, "w")?;
    preload(addrs[0], key)?;
    let cpu = || -> f64 { pids.iter().map(|p| crate::sys::cpu_seconds(*p)).sum() };
    let before = cpu();
    let started = Instant::now();
    let (pps, wfail) = writes(addrs, key, d);
    let written = pps * started.elapsed().as_secs_f64();
    let cpu_ms = (cpu() - before) * 1000.0 / (written / 1000.0).max(1.0);
    let (qps, p50, p99, sfail) = searches(addrs, key, d);
    println!(
        "{name:<22} writes {pps:>9.0} points/s ({WRITERS} clients, batches of {BATCH}, {wfail} failed), servers' CPU {cpu_ms:.0} ms per 1000 points   search {qps:>7.0} QPS  p50 {p50:.2} ms  p99 {p99:.2} ms ({SEARCHERS} clients, {sfail} failed)"
    );
    Ok(
        json!({"points_per_s": pps, "cpu_ms_per_1000_points": cpu_ms, "qps": qps, "p50_ms": p50, "p99_ms": p99}),
    )
}

/// `GET /cluster` on `addr`, if it answers.
fn status(addr: SocketAddr) -> Option<Value> {
    let mut c = Client::new(addr);
    let auth = format!("Bearer {OPERATOR}");
    let r = c
        .request("GET", "/cluster", None, &[("authorization", &auth)])
        .ok()?;
    (r.status == 200)
        .then(|| serde_json::from_slice(&r.body).ok())
        .flatten()
}

/// Each shard group's last log index, as node `addr` has it.
fn last_indexes(addr: SocketAddr) -> Vec<(String, u64)> {
    status(addr)
        .and_then(|s| s["groups"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|g| g["group"].as_str().is_some_and(|n| n.starts_with("shard-")))
        .map(|g| {
            (
                g["group"].as_str().unwrap_or_default().to_owned(),
                g["last_log_index"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// One small write through `addr`: whether it was acknowledged.
fn write_one(addr: SocketAddr, key: &str, id: u64) -> bool {
    let mut c = Client::new(addr);
    let p = json!({"points": [{"id": id, "vector": vec![0.5f32; DIM]}]});
    matches!(
        call(&mut c, key, "POST", "/collections/w/points", &p),
        Ok(200)
    )
}

/// Kills the leader of the writer's shard `kills` times; each time, the
/// time until a write is acknowledged again. The killed node is started
/// again and has caught up before the next round.
fn failover(
    bin: &Path,
    configs: &[PathBuf],
    servers: &mut [Server],
    addrs: &mut [SocketAddr],
    key: &str,
    kills: usize,
) -> Result<Value, String> {
    // The writer's shard: the one whose log grows with its writes.
    let before = last_indexes(addrs[0]);
    for i in 0..5 {
        write_one(addrs[0], key, 900_000_000 + i);
    }
    let after = last_indexes(addrs[0]);
    let home = after
        .iter()
        .zip(&before)
        .find(|(a, b)| a.1 > b.1)
        .map(|(a, _)| a.0.clone())
        .ok_or("no shard's log grew with the writes")?;
    let mut times = Vec::new();
    let mut id = 910_000_000u64;
    for round in 0..kills {
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            let found = (0..addrs.len()).find(|i| {
                status(addrs[*i]).is_some_and(|s| {
                    s["groups"].as_array().is_some_and(|gs| {
                        gs.iter()
                            .any(|g| g["group"] == home.as_str() && g["role"] == "leader")
                    })
                })
            });
            if let Some(l) = found {
                break l;
            }
            if Instant::now() > deadline {
                return Err(format!("round {round}: no leader of {home}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = servers[leader].0.kill();
        let _ = servers[leader].0.wait();
        let killed = Instant::now();
        let others: Vec<SocketAddr> = (0..addrs.len())
            .filter(|i| *i != leader)
            .map(|i| addrs[i])
            .collect();
        let mut turn = 0;
        loop {
            id += 1;
            turn += 1;
            if write_one(others[turn % others.len()], key, id) {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                return Err(format!("round {round}: no write acknowledged in 60 s"));
            }
        }
        times.push(killed.elapsed().as_secs_f64());
        let (s, a) = spawn(
            bin,
            &[
                "serve",
                "--config",
                configs[leader].to_str().unwrap_or_default(),
            ],
            "vectorizer listening on http://",
        )?;
        servers[leader] = s;
        addrs[leader] = a;
        // Caught up: the restarted node has the leader's last entry.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mine = last_indexes(a);
            let theirs = last_indexes(others[0]);
            if !mine.is_empty() && mine == theirs {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "round {round}: the restarted node did not catch up"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(0.5), pct(0.99));
    println!(
        "failover ({kills} kills of {home}'s leader): p50 {p50:.2} s  p99 {p99:.2} s  min {:.2} s  max {:.2} s",
        sorted[0],
        sorted[sorted.len() - 1]
    );
    Ok(json!({"kills": kills, "p50_s": p50, "p99_s": p99, "seconds": times}))
}

fn bench(bin: &Path, d: Duration, kills: usize) -> Result<(), String> {
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
    let one_node = measure("one node", &[single_addr], &[single.0.id()], &one, d)?;
    drop(single);
    let internal: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: String = internal
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    - {{id: {}, addr: \"127.0.0.1:{p}\"}}\n", i + 1))
        .collect();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    let mut configs = Vec::new();
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
        configs.push(path);
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    let three = measure("three nodes (rf 3)", &addrs, &pids, &many, d)?;
    let failover = if kills > 0 {
        failover(bin, &configs, &mut servers, &mut addrs, &many, kills)?
    } else {
        Value::Null
    };
    println!(
        "{}",
        json!({"one_node": one_node, "three_nodes": three, "failover": failover})
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
