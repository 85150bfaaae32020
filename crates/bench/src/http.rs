//! The HTTP load benchmark: batch-upsert rate, then search QPS and p50/p99
//! latency at 1, 4 and 16 concurrent clients with recall@10 from the
//! answers, on seeded 100,000 × 128 L2 data. One thread and one kept-alive
//! connection per client; the same driver speaks to Vectorizer or to a
//! Chroma server, so the two are measured with the same client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::http::Client;
use vectorizer_testkit::{Kind, exact_top_k, gaussian_mixture, recall};

const K: usize = 10;
const DIM: usize = 128;
const BATCH: usize = 1000;

/// A server under test.
trait Target: Sync {
    fn name(&self) -> &'static str;
    fn create(&self, c: &mut Client) -> Result<(), String>;
    /// Finds the collection an earlier run made (for `--search-only`).
    fn reuse(&self, _c: &mut Client) -> Result<(), String> {
        Ok(())
    }
    fn upsert(&self, c: &mut Client, first: usize, vectors: &[Vec<f32>]) -> Result<(), String>;
    fn search(&self, c: &mut Client, q: &[f32]) -> Result<Vec<usize>, String>;
    /// Waits until background indexing has caught up, where the target
    /// reports it.
    fn wait_indexed(&self, _c: &mut Client) -> Result<(), String> {
        Ok(())
    }
}

fn check(
    r: std::io::Result<vectorizer_testkit::http::Response>,
    what: &str,
) -> Result<Value, String> {
    let r = r.map_err(|e| format!("{what}: {e}"))?;
    if !(200..300).contains(&r.status) {
        return Err(format!(
            "{what}: status {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    Ok(r.json())
}

struct Vectorizer;

impl Target for Vectorizer {
    fn name(&self) -> &'static str {
        "vectorizer"
    }
    fn create(&self, c: &mut Client) -> Result<(), String> {
        let _ = c.request("DELETE", "/collections/bench", None, &[]);
        let body = json!({"name": "bench", "dimension": DIM, "metric": "euclidean", "hnsw": {"m": 16, "ef_construction": 100, "ef_search": 64}});
        check(c.json("POST", "/collections", &body), "create").map(|_| ())
    }
    fn upsert(&self, c: &mut Client, first: usize, vectors: &[Vec<f32>]) -> Result<(), String> {
        let points: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": first + i, "vector": v}))
            .collect();
        check(
            c.json(
                "POST",
                "/collections/bench/points",
                &json!({"points": points}),
            ),
            "upsert",
        )
        .map(|_| ())
    }
    fn wait_indexed(&self, c: &mut Client) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let v = check(
                c.request("GET", "/collections/bench", None, &[]),
                "describe",
            )?;
            if v["unindexed_points"].as_u64() == Some(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("indexing did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn search(&self, c: &mut Client, q: &[f32]) -> Result<Vec<usize>, String> {
        let v = check(
            c.json(
                "POST",
                "/collections/bench/search",
                &json!({"vector": q, "limit": K, "with_payload": false}),
            ),
            "search",
        )?;
        Ok(v["results"].as_array().map_or_else(Vec::new, |a| {
            a.iter()
                .filter_map(|h| h["id"].as_u64())
                .map(|i| i as usize)
                .collect()
        }))
    }
}

/// Vectorizer loaded over REST, searched through its MCP server (`/mcp`,
/// the `search` tool), so the two adapters are measured side by side.
struct VectorizerMcp;

impl Target for VectorizerMcp {
    fn name(&self) -> &'static str {
        "vectorizer-mcp"
    }
    fn create(&self, c: &mut Client) -> Result<(), String> {
        Vectorizer.create(c)
    }
    fn upsert(&self, c: &mut Client, first: usize, vectors: &[Vec<f32>]) -> Result<(), String> {
        Vectorizer.upsert(c, first, vectors)
    }
    fn wait_indexed(&self, c: &mut Client) -> Result<(), String> {
        Vectorizer.wait_indexed(c)
    }
    fn search(&self, c: &mut Client, q: &[f32]) -> Result<Vec<usize>, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "search",
            "arguments": {"collection": "bench", "vector": q, "limit": K, "with_payload": false}
        }});
        let b = serde_json::to_vec(&body).expect("serializable");
        let v = check(
            c.request(
                "POST",
                "/mcp",
                Some(&b),
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                ],
            ),
            "mcp search",
        )?;
        let hits = &v["result"]["structuredContent"]["results"];
        let Some(hits) = hits.as_array() else {
            return Err(format!("mcp search: {v}"));
        };
        Ok(hits
            .iter()
            .filter_map(|h| h["id"].as_u64())
            .map(|i| i as usize)
            .collect())
    }
}

/// Chroma's v2 REST API (default tenant and database).
struct Chroma {
    collection_id: std::sync::OnceLock<String>,
}

const CHROMA_BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

impl Target for Chroma {
    fn name(&self) -> &'static str {
        "chroma"
    }
    fn create(&self, c: &mut Client) -> Result<(), String> {
        let _ = c.request("DELETE", &format!("{CHROMA_BASE}/bench"), None, &[]);
        let body = json!({"name": "bench", "configuration": {"hnsw": {"space": "l2", "ef_construction": 100, "max_neighbors": 16, "ef_search": 64}}});
        let v = check(c.json("POST", CHROMA_BASE, &body), "create")?;
        let id = v["id"]
            .as_str()
            .ok_or("create: no collection id")?
            .to_owned();
        let _ = self.collection_id.set(id);
        Ok(())
    }
    fn reuse(&self, c: &mut Client) -> Result<(), String> {
        let v = check(
            c.request("GET", &format!("{CHROMA_BASE}/bench"), None, &[]),
            "find the collection",
        )?;
        let id = v["id"].as_str().ok_or("no collection id")?.to_owned();
        let _ = self.collection_id.set(id);
        Ok(())
    }
    fn upsert(&self, c: &mut Client, first: usize, vectors: &[Vec<f32>]) -> Result<(), String> {
        let id = self.collection_id.get().ok_or("no collection")?;
        let ids: Vec<String> = (first..first + vectors.len())
            .map(|i| i.to_string())
            .collect();
        let body = json!({"ids": ids, "embeddings": vectors});
        check(
            c.json("POST", &format!("{CHROMA_BASE}/{id}/upsert"), &body),
            "upsert",
        )
        .map(|_| ())
    }
    fn search(&self, c: &mut Client, q: &[f32]) -> Result<Vec<usize>, String> {
        let id = self.collection_id.get().ok_or("no collection")?;
        let body = json!({"query_embeddings": [q], "n_results": K, "include": ["distances"]});
        let v = check(
            c.json("POST", &format!("{CHROMA_BASE}/{id}/query"), &body),
            "query",
        )?;
        Ok(v["ids"][0].as_array().map_or_else(Vec::new, |a| {
            a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect()
        }))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub fn run(args: &[String]) -> i32 {
    let mut url = None;
    let mut target = "vectorizer".to_owned();
    let mut n = 100_000;
    let mut out = PathBuf::from("bench-out");
    let mut search_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--search-only" => search_only = true,
            "--url" => url = it.next().cloned(),
            "--target" => target = it.next().cloned().unwrap_or_default(),
            "--n" => n = it.next().and_then(|s| s.parse().ok()).unwrap_or(n),
            "--out" => out = PathBuf::from(it.next().expect("--out takes a directory")),
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    let Some(url) = url else {
        eprintln!(
            "usage: vectorizer-bench http --url http://HOST:PORT [--target vectorizer|vectorizer-mcp|chroma] [--n N] [--out DIR] [--search-only]"
        );
        return 2;
    };
    let addr: SocketAddr = match url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("--url: {e}");
            return 2;
        }
    };
    let t: Box<dyn Target> = match target.as_str() {
        "vectorizer" => Box::new(Vectorizer),
        "vectorizer-mcp" => Box::new(VectorizerMcp),
        "chroma" => Box::new(Chroma {
            collection_id: Default::default(),
        }),
        other => {
            eprintln!("unknown target {other}");
            return 2;
        }
    };
    match bench(&*t, addr, n, search_only) {
        Ok(result) => {
            let _ = std::fs::create_dir_all(&out);
            let suffix = if search_only { "-search" } else { "" };
            let path = out.join(format!("http-{}{suffix}.json", t.name()));
            std::fs::write(&path, serde_json::to_vec_pretty(&result).unwrap()).unwrap();
            println!("figures written to {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", t.name());
            1
        }
    }
}

/// Loads `n` vectors and measures searches; with `search_only`, measures
/// searches on what an earlier run loaded.
fn bench(t: &dyn Target, addr: SocketAddr, n: usize, search_only: bool) -> Result<Value, String> {
    let name = t.name();
    let (base, _) = gaussian_mixture(n, DIM, 100, 0.5, 1);
    let (queries, _) = gaussian_mixture(1000, DIM, 100, 0.5, 1);
    let queries: Vec<Vec<f32>> = queries
        .into_iter()
        .map(|q| q.iter().map(|x| x * 1.01).collect())
        .collect();
    let truth: Vec<Vec<usize>> = std::thread::scope(|s| {
        let hs: Vec<_> = queries
            .chunks(500)
            .map(|qs| {
                let base = &base;
                s.spawn(move || {
                    qs.iter()
                        .map(|q| exact_top_k(Kind::Euclidean, base, q, K, None))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut result = json!({"target": name, "n": n, "dim": DIM});
    if search_only {
        t.reuse(&mut Client::new(addr))?;
    } else {
        result["insert_per_second"] = json!(load(t, addr, &base)?);
    }
    // Searches: each client walks the query set from its own offset.
    let mut rows = Vec::new();
    for clients in [1usize, 4, 16] {
        // Long enough phases that the machine's drift averages out.
        let total = if clients == 1 { 3000 } else { 12_000 };
        let per_client = total / clients;
        let started = Instant::now();
        let per: Vec<Result<(Vec<Duration>, f64), String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..clients)
                .map(|ci| {
                    let (queries, truth) = (&queries, &truth);
                    s.spawn(move || -> Result<(Vec<Duration>, f64), String> {
                        let mut c = Client::new(addr);
                        let mut lat = Vec::with_capacity(per_client);
                        let mut rec = 0.0;
                        for j in 0..per_client {
                            let qi = (ci * 97 + j) % queries.len();
                            let t0 = Instant::now();
                            let got = t.search(&mut c, &queries[qi])?;
                            lat.push(t0.elapsed());
                            rec += recall(&truth[qi], &got);
                        }
                        Ok((lat, rec))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wall = started.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        let mut rec = 0.0;
        for p in per {
            let (l, r) = p?;
            lat.extend(l);
            rec += r;
        }
        let total = lat.len();
        lat.sort();
        let qps = total as f64 / wall;
        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        let r = rec / total as f64;
        println!(
            "[{name}] search, {clients:>2} clients: {qps:>7.0} QPS  p50 {p50:.2} ms  p99 {p99:.2} ms  recall@10 {r:.4}"
        );
        rows.push(
            json!({"clients": clients, "qps": qps, "p50_ms": p50, "p99_ms": p99, "recall": r}),
        );
    }
    result["search"] = json!(rows);
    Ok(result)
}

/// Creates the collection and upserts `base` from four clients; the
/// acknowledged rate, after which indexing is waited for.
fn load(t: &dyn Target, addr: SocketAddr, base: &[Vec<f32>]) -> Result<f64, String> {
    let name = t.name();
    let n = base.len();
    t.create(&mut Client::new(addr))?;

    // Upserts: four clients, batches of 1,000.
    let writers = 4;
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), String> {
        let batches: Vec<(usize, &[Vec<f32>])> = base
            .chunks(BATCH)
            .enumerate()
            .map(|(i, b)| (i * BATCH, b))
            .collect();
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let mine: Vec<(usize, &[Vec<f32>])> =
                    batches.iter().skip(w).step_by(writers).copied().collect();
                s.spawn(move || -> Result<(), String> {
                    let mut c = Client::new(addr);
                    mine.into_iter()
                        .try_for_each(|(first, b)| t.upsert(&mut c, first, b))
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let insert_rate = n as f64 / secs;
    println!(
        "[{name}] upsert: {n} vectors in {secs:.2} s = {insert_rate:.0} vectors/s acknowledged ({writers} clients, batches of {BATCH})"
    );
    let waited = Instant::now();
    t.wait_indexed(&mut Client::new(addr))?;
    println!(
        "[{name}] index complete {:.2} s after the last acknowledgement",
        waited.elapsed().as_secs_f64()
    );

    Ok(insert_rate)
}
