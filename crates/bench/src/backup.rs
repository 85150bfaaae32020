//! The backup benchmark: a 100,000 × 128 collection backed up, downloaded,
//! uploaded and restored through the REST routes of a server started with
//! the local Hub; throughput in MB/s (of the collection's bytes on disk
//! and of the archive) and points/s, and the archive's size against the
//! data's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::http::Client;

use crate::noisy::{DIM, call, fresh_hub, load, new_key, start};

const POINTS: usize = 100_000;

pub fn run(args: &[String]) -> i32 {
    let mut bin = PathBuf::from("target/release/vectorizer");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bin" => bin = PathBuf::from(it.next().expect("--bin takes a path")),
            other => {
                eprintln!("unknown argument {other}; usage: vectorizer-bench backup [--bin PATH]");
                return 2;
            }
        }
    }
    match bench(&bin) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("backup: {e}");
            1
        }
    }
}

/// A JSON request's status and body.
fn json_call(
    c: &mut Client,
    key: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let auth = format!("Bearer {key}");
    let raw = serde_json::to_vec(body).expect("serializable");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    c.request(method, path, Some(&raw), &h)
        .map(|r| (r.status, r.json()))
        .map_err(|e| format!("{method} {path}: {e}"))
}

/// Waits until the collection's points are all linked into its graph.
fn settled(c: &mut Client, key: &str, name: &str) -> Result<Value, String> {
    for _ in 0..600 {
        let (s, d) = json_call(c, key, "GET", &format!("/collections/{name}"), &Value::Null)?;
        if s == 200 && d["unindexed_points"] == 0 {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{name} never finished indexing"))
}

fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, f64), String> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

fn mb(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn bench(bin: &Path) -> Result<(), String> {
    let data = fresh_hub(bin, "backup")?;
    let key = new_key(bin, &data, "backup@bench", "admin")?;
    let (server, addr) = start(bin, &data)?;
    println!("server on {addr}; loading {POINTS} × {DIM}");
    load(addr, &key, "a", POINTS, 1)?;
    let mut c = Client::new(addr);
    let detail = settled(&mut c, &key, "a")?;
    let data_bytes = detail["bytes"].as_u64().unwrap_or(0);
    let mut runs = Vec::new();
    for round in 0..3 {
        let (info, create_s) =
            timed(
                || match json_call(&mut c, &key, "POST", "/api/hub/backups", &json!({}))? {
                    (201, b) => Ok(b),
                    (s, b) => Err(format!("create: {s} {b}")),
                },
            )?;
        let id = info["id"].as_str().unwrap_or_default().to_owned();
        let archive_bytes = info["size_bytes"].as_u64().unwrap_or(0);
        let (archive, download_s) = timed(|| download(&mut c, &key, &id))?;
        let (uploaded, upload_s) = timed(|| upload(addr, &key, &archive))?;
        let name = format!("r{round}");
        let body = json!({"backup_id": uploaded, "rename": {"a": name}});
        let (_, restore_s) =
            timed(
                || match json_call(&mut c, &key, "POST", "/api/hub/backups/restore", &body)? {
                    (200, b) => Ok(b),
                    (s, b) => Err(format!("restore: {s} {b}")),
                },
            )?;
        let (s, counted) = json_call(
            &mut c,
            &key,
            "POST",
            &format!("/collections/{name}/points/count"),
            &json!({}),
        )?;
        if s != 200 || counted["count"] != POINTS {
            return Err(format!("the restored collection holds {counted}"));
        }
        call(
            &mut c,
            &key,
            "DELETE",
            &format!("/collections/{name}"),
            &Value::Null,
        )?;
        println!(
            "round {round}: create {create_s:.2} s ({:.0} MB/s of data, {:.0} points/s); download {download_s:.2} s ({:.0} MB/s); upload {upload_s:.2} s ({:.0} MB/s); restore {restore_s:.2} s ({:.0} MB/s of data, {:.0} points/s)",
            mb(data_bytes, create_s),
            POINTS as f64 / create_s,
            mb(archive_bytes, download_s),
            mb(archive_bytes, upload_s),
            mb(data_bytes, restore_s),
            POINTS as f64 / restore_s,
        );
        runs.push(json!({
            "create_s": create_s, "download_s": download_s, "upload_s": upload_s, "restore_s": restore_s,
            "archive_bytes": archive_bytes,
        }));
    }
    let best = |k: &str| {
        runs.iter()
            .filter_map(|r| r[k].as_f64())
            .fold(f64::MAX, f64::min)
    };
    let archive_bytes = runs[0]["archive_bytes"].as_u64().unwrap_or(0);
    println!(
        "data {:.1} MB on disk, archive {:.1} MB ({:.2} of the data); best create {:.0} MB/s {:.0} points/s, best restore {:.0} MB/s {:.0} points/s",
        data_bytes as f64 / 1e6,
        archive_bytes as f64 / 1e6,
        archive_bytes as f64 / data_bytes.max(1) as f64,
        mb(data_bytes, best("create_s")),
        POINTS as f64 / best("create_s"),
        mb(data_bytes, best("restore_s")),
        POINTS as f64 / best("restore_s"),
    );
    println!(
        "{}",
        json!({"points": POINTS, "dimension": DIM, "data_bytes": data_bytes, "runs": runs})
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

fn download(c: &mut Client, key: &str, id: &str) -> Result<Vec<u8>, String> {
    let auth = format!("Bearer {key}");
    let r = c
        .request(
            "GET",
            &format!("/api/hub/backups/{id}/download"),
            None,
            &[("authorization", auth.as_str())],
        )
        .map_err(|e| format!("download: {e}"))?;
    if r.status != 200 {
        return Err(format!("download: {}", r.status));
    }
    Ok(r.body)
}

/// Uploads `archive`; the new backup's id.
fn upload(addr: SocketAddr, key: &str, archive: &[u8]) -> Result<String, String> {
    let auth = format!("Bearer {key}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/gzip"),
    ];
    let r = Client::new(addr)
        .request("POST", "/api/hub/backups/upload", Some(archive), &h)
        .map_err(|e| format!("upload: {e}"))?;
    match r.status {
        201 => Ok(r.json()["id"].as_str().unwrap_or_default().to_owned()),
        s => Err(format!("upload: {s} {}", String::from_utf8_lossy(&r.body))),
    }
}
