//! Per-user backups over real HTTP: round trips, isolation between users,
//! hostile archives, permissions, retention, quotas, and SIGKILL during a
//! create on the real binary.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use vectorizer_hub::store::Plan;
use vectorizer_service::backup::BackupOptions;
use vectorizer_testkit::Rng;

use crate::common::{AppOptions, TestApp};
use crate::hub_auth::{auth, bearer, eventually, hub, key, send};

type Header = Option<(&'static str, String)>;

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A raw request; the answer's status, headers and body bytes.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: &Header,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let c = reqwest::Client::new();
    let mut rb = c.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        app.url(path),
    );
    if let Some((h, v)) = auth {
        rb = rb.header(*h, v);
    }
    for (h, v) in headers {
        rb = rb.header(*h, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

async fn download(app: &TestApp, auth: &Header, id: &str) -> Vec<u8> {
    let (s, h, body) = raw(
        app,
        "GET",
        &format!("/api/hub/backups/{id}/download"),
        auth,
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/gzip");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert_eq!(h["x-checksum-sha256"], sha(&body).as_str());
    body
}

async fn upload(
    app: &TestApp,
    auth: &Header,
    body: Vec<u8>,
    checksum: Option<&str>,
) -> (u16, Value) {
    let mut headers = vec![("content-type", "application/gzip")];
    if let Some(c) = checksum {
        headers.push(("x-checksum-sha256", c));
    }
    let (s, _, b) = raw(
        app,
        "POST",
        "/api/hub/backups/upload",
        auth,
        &headers,
        Some(body),
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Every point of a collection with vector and payload, in id order.
async fn all_points(app: &TestApp, auth: &Header, name: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let (s, b) = send(
            app,
            "POST",
            &format!("/collections/{name}/points/scroll"),
            auth.clone(),
            Some(
                json!({"limit": 1000, "cursor": cursor, "with_vector": true, "with_payload": true}),
            ),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        all.extend(b["points"].as_array().unwrap().iter().cloned());
        cursor = b["next_cursor"].clone();
        if cursor.is_null() {
            return all;
        }
    }
}

/// A collection's state as the API shows it: config, points, answers.
async fn state_of(app: &TestApp, auth: &Header, name: &str, queries: &[Vec<f32>]) -> Value {
    let (s, mut detail) = send(
        app,
        "GET",
        &format!("/collections/{name}"),
        auth.clone(),
        None,
    )
    .await;
    assert_eq!(s, 200, "{detail}");
    for volatile in [
        "name",
        "bytes",
        "memory_bytes",
        "created_at_ms",
        "unindexed_points",
        // Measured again by the restored collection.
        "recall",
    ] {
        detail.as_object_mut().unwrap().remove(volatile);
    }
    let mut answers = Vec::new();
    for q in queries {
        let (s, r) = send(
            app,
            "POST",
            &format!("/collections/{name}/search"),
            auth.clone(),
            Some(json!({"vector": q, "limit": 10, "with_payload": true, "filter": {"must": [{"key": "g", "match": {"value": 1}}]}})),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        answers.push(r["results"].clone());
    }
    json!({"detail": detail, "points": all_points(app, auth, name).await, "answers": answers})
}

fn vectors(rng: &mut Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect()
}

/// Makes collection `name` (dimension 8, cosine, `g` indexed) with `n` points.
async fn filled(app: &TestApp, auth: &Header, name: &str, n: usize, seed: u64) {
    let (s, b) = send(
        app,
        "POST",
        "/collections",
        auth.clone(),
        Some(json!({"name": name, "dimension": 8, "metric": "cosine", "payload_index": ["g"]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let mut rng = Rng::new(seed);
    let vs = vectors(&mut rng, n, 8);
    for (chunk, at) in vs.chunks(100).zip((0..).step_by(100)) {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": at + i, "vector": v, "payload": {"g": (at + i) % 3, "t": format!("p{}", at + i)}}))
            .collect();
        let (s, b) = send(
            app,
            "POST",
            &format!("/collections/{name}/points"),
            auth.clone(),
            Some(json!({"points": points})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn create(app: &TestApp, auth: &Header, body: Value) -> Value {
    let (s, b) = send(app, "POST", "/api/hub/backups", auth.clone(), Some(body)).await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn restore(app: &TestApp, auth: &Header, body: Value) -> (u16, Value) {
    send(
        app,
        "POST",
        "/api/hub/backups/restore",
        auth.clone(),
        Some(body),
    )
    .await
}

async fn backup_ids(app: &TestApp, auth: &Header) -> Vec<String> {
    let (s, b) = send(app, "GET", "/api/hub/backups", auth.clone(), None).await;
    assert_eq!(s, 200, "{b}");
    b["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file and directory under the backups directory, sorted.
fn backup_files(app: &TestApp) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.data_dir().join("backups"), &mut out);
    out.sort();
    out
}

const NONE: Header = None;

#[tokio::test]
async fn round_trip_restores_the_backed_up_state() {
    let app = TestApp::new();
    filled(&app, &NONE, "a", 450, 1).await;
    filled(&app, &NONE, "b", 120, 2).await;
    let queries = vectors(&mut Rng::new(9), 5, 8);
    let before_a = state_of(&app, &NONE, "a", &queries).await;
    let before_b = state_of(&app, &NONE, "b", &queries).await;
    let info = create(&app, &NONE, json!({"label": "nightly"})).await;
    let id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(info["label"], "nightly");
    assert_eq!(info["format_version"], 1);
    assert_eq!(
        info["collections"],
        json!([{"name": "a", "dimension": 8, "metric": "cosine", "points": 450},
               {"name": "b", "dimension": 8, "metric": "cosine", "points": 120}])
    );
    let (s, got) = send(&app, "GET", &format!("/api/hub/backups/{id}"), None, None).await;
    assert_eq!((s, &got), (200, &info));
    let archive = download(&app, &NONE, &id).await;
    assert_eq!(info["sha256"], sha(&archive).as_str());
    assert_eq!(info["size_bytes"], archive.len());

    // Changes after the backup: new points, deleted points, new payloads,
    // a dropped collection.
    send(
        &app,
        "POST",
        "/collections/a/points",
        None,
        Some(json!({"points": [{"id": 9999, "vector": vec![1.0; 8]}]})),
    )
    .await;
    send(
        &app,
        "POST",
        "/collections/a/points/delete",
        None,
        Some(json!({"ids": [0, 1, 2, 3]})),
    )
    .await;
    send(
        &app,
        "POST",
        "/collections/a/points/payload",
        None,
        Some(json!({"ids": [10, 11], "payload": {"g": 7}})),
    )
    .await;
    assert_eq!(
        send(&app, "DELETE", "/collections/b", None, None).await.0,
        200
    );
    assert_ne!(state_of(&app, &NONE, "a", &queries).await, before_a);

    // A name that exists is refused unless overwritten, and nothing changes.
    let (s, b) = restore(&app, &NONE, json!({"backup_id": id})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("collection_exists")),
        "{b}"
    );
    assert_eq!(send(&app, "GET", "/collections/b", None, None).await.0, 404);

    let (s, b) = restore(&app, &NONE, json!({"backup_id": id, "overwrite": true})).await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(state_of(&app, &NONE, "a", &queries).await, before_a);
    assert_eq!(state_of(&app, &NONE, "b", &queries).await, before_b);

    // A subset, under a new name, beside the original.
    let (s, b) = restore(
        &app,
        &NONE,
        json!({"backup_id": id, "collections": ["a"], "rename": {"a": "a2"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["restored"][0]["name"], "a2");
    assert_eq!(b["restored"][0]["points"], 450);
    assert_eq!(state_of(&app, &NONE, "a2", &queries).await, before_a);

    // The downloaded archive uploaded again is the same backup.
    let (s, up) = upload(&app, &NONE, archive.clone(), Some(&sha(&archive))).await;
    assert_eq!(s, 201, "{up}");
    assert_eq!(up["sha256"], info["sha256"]);
    assert_eq!(up["collections"], info["collections"]);
    assert_ne!(up["id"], info["id"]);
    let (s, b) = restore(
        &app,
        &NONE,
        json!({"backup_id": up["id"], "collections": ["b"], "rename": {"b": "b3"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(state_of(&app, &NONE, "b3", &queries).await, before_b);

    // Refusals of the request itself.
    for (body, status, code) in [
        (
            json!({"backup_id": id, "collections": ["nope"]}),
            422,
            "not_in_backup",
        ),
        (
            json!({"backup_id": id, "collections": ["a"], "rename": {"b": "x"}}),
            422,
            "invalid_rename",
        ),
        (
            json!({"backup_id": id, "rename": {"a": "z", "b": "z"}}),
            422,
            "invalid_rename",
        ),
        (
            json!({"backup_id": id, "rename": {"a": "bad name"}}),
            400,
            "invalid_name",
        ),
        (json!({"backup_id": "not-a-uuid"}), 404, "backup_not_found"),
        (json!({"backup_id": id, "extra": 1}), 400, "invalid_body"),
    ] {
        let (s, b) = restore(&app, &NONE, body.clone()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    let (s, b) = send(
        &app,
        "POST",
        "/api/hub/backups",
        None,
        Some(json!({"collections": ["nope"]})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("collection_not_found")),
        "{b}"
    );
    let (s, b) = send(
        &app,
        "POST",
        "/api/hub/backups",
        None,
        Some(json!({"label": "x".repeat(201)})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_label")),
        "{b}"
    );

    // Deleted, it is gone from every route.
    assert_eq!(
        send(
            &app,
            "DELETE",
            &format!("/api/hub/backups/{id}"),
            None,
            None
        )
        .await
        .0,
        200
    );
    for (m, p) in [
        ("GET", format!("/api/hub/backups/{id}")),
        ("GET", format!("/api/hub/backups/{id}/download")),
        ("DELETE", format!("/api/hub/backups/{id}")),
    ] {
        let (s, b) = send(&app, m, &p, None, None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (404, Some("backup_not_found")),
            "{m} {p}"
        );
    }
    // The metrics count what happened.
    let (_, _, text) = app.get_text("/metrics", &[]).await;
    for needle in [
        "hub_backup_operations_total{op=\"create\",result=\"ok\"} 1",
        "hub_backup_operations_total{op=\"restore\",result=\"ok\"} 3",
        "hub_backup_operations_total{op=\"upload\",result=\"ok\"} 1",
        "hub_backup_operations_total{op=\"delete\",result=\"ok\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let bytes = format!("vectorizer_backup_bytes {}", up["size_bytes"]);
    assert!(text.contains(&bytes), "{bytes} missing");
}

/// Writes going on during a create: every batch is in the backup whole or
/// not at all.
#[tokio::test]
async fn a_backup_holds_no_half_applied_batch() {
    let app = TestApp::new();
    filled(&app, &NONE, "w", 100, 3).await;
    let writer = {
        let url = app.url("/collections/w/points");
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            for batch in 1..=60u64 {
                let points: Vec<Value> = (0..50).map(|i| json!({"id": batch * 1000 + i, "vector": [batch as f32, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, i as f32], "payload": {"batch": batch}})).collect();
                let r = c
                    .post(&url)
                    .json(&json!({"points": points}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            create(&app, &NONE, json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let name = format!("r{i}");
        let (s, b) = restore(&app, &NONE, json!({"backup_id": id, "rename": {"w": name}})).await;
        assert_eq!(s, 200, "{b}");
        let mut per_batch = std::collections::BTreeMap::<u64, usize>::new();
        for p in all_points(&app, &NONE, &name).await {
            if let Some(batch) = p["payload"]["batch"].as_u64() {
                *per_batch.entry(batch).or_default() += 1;
            }
        }
        assert!(
            per_batch.values().all(|n| *n == 50),
            "a batch split in backup {i}: {per_batch:?}"
        );
    }
}

/// A tar entry as written by hand, so that a test can say anything.
struct Entry {
    path: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<&'static str>,
}

fn file(path: &str, data: Vec<u8>) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data,
        link: None,
    }
}

fn pack(entries: &[Entry]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_old_mut().name;
        name[..e.path.len()].copy_from_slice(&e.path);
        h.set_size(e.data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(e.kind);
        if let Some(l) = e.link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        gz.write_all(h.as_bytes()).unwrap();
        gz.write_all(&e.data).unwrap();
        let pad = (512 - e.data.len() % 512) % 512;
        gz.write_all(&vec![0; pad]).unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

fn unpack(archive: &[u8]) -> Vec<Entry> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            file(&e.path().unwrap().display().to_string(), data)
        })
        .collect()
}

/// The archive with its manifest changed by `f`.
fn with_manifest(entries: &[Entry], f: impl Fn(&mut Value)) -> Vec<Entry> {
    let mut m: Value = serde_json::from_slice(&entries[0].data).unwrap();
    f(&mut m);
    let mut out = vec![file("manifest.json", serde_json::to_vec(&m).unwrap())];
    out.extend(
        entries[1..]
            .iter()
            .map(|e| file(std::str::from_utf8(&e.path).unwrap(), e.data.clone())),
    );
    out
}

/// A hostile upload: what it is, its body and checksum header, and the
/// refusal it must get.
type Case = (&'static str, Vec<u8>, Option<String>, u16, &'static str);

#[tokio::test]
async fn hostile_archives_are_refused_and_leave_nothing() {
    let app = TestApp::build(AppOptions {
        backups: BackupOptions {
            max_upload_bytes: 4 << 20,
            caps: vectorizer_service::backup::ReadCaps {
                max_entries: 64,
                max_file_bytes: 64 << 20,
                max_total_bytes: 128 << 20,
                max_ratio: 100,
            },
            idle_timeout: Duration::from_secs(1),
            ..BackupOptions::default()
        },
        ..AppOptions::default()
    });
    filled(&app, &NONE, "a", 200, 4).await;
    let id = create(&app, &NONE, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = download(&app, &NONE, &id).await;
    let entries = unpack(&good);
    assert_eq!(
        std::str::from_utf8(&entries[0].path).unwrap(),
        "manifest.json"
    );
    let manifest = entries[0].data.clone();
    let first_file = std::str::from_utf8(&entries[1].path).unwrap().to_owned();

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let link = |kind, l| Entry {
        path: b"collections/a/points.bin".to_vec(),
        kind,
        data: Vec::new(),
        link: Some(l),
    };
    let mut many = vec![file("manifest.json", manifest.clone())];
    many.extend((0..70).map(|i| Entry {
        path: format!("collections/d{i}/").into_bytes(),
        kind: tar::EntryType::Directory,
        data: Vec::new(),
        link: None,
    }));
    let bomb = with_manifest(&entries, |m| {
        m["collections"][0]["files"][0]["size"] = json!(40 << 20);
    });
    let mut bomb: Vec<Entry> = bomb.into_iter().take(1).collect();
    bomb.push(file(&first_file, vec![0; 40 << 20]));
    let wrong_sum = with_manifest(&entries, |m| {
        m["collections"][0]["files"][1]["sha256"] = json!("0".repeat(64));
    });
    let wrong_size = with_manifest(&entries, |m| {
        m["collections"][0]["files"][0]["size"] = json!(12);
    });
    let missing: Vec<Entry> = unpack(&good).into_iter().take(2).collect();
    let extra = {
        let mut e = unpack(&good);
        e.push(file("collections/a/extra", b"x".to_vec()));
        e
    };
    let future = with_manifest(&entries, |m| m["format_version"] = json!(99));
    let not_first = {
        let mut e = unpack(&good);
        e.swap(0, 1);
        e
    };
    // Extension headers (PAX, GNU long names): refused unread.
    let ext = |kind| {
        pack(&[
            Entry {
                path: b"././@LongLink".to_vec(),
                kind,
                data: vec![b'a'; 64 << 10],
                link: None,
            },
            file("manifest.json", manifest.clone()),
        ])
    };
    let cases: Vec<Case> = vec![
        (
            "a directory before the manifest",
            pack(&[
                Entry {
                    path: b"collections/".to_vec(),
                    kind: tar::EntryType::Directory,
                    data: Vec::new(),
                    link: None,
                },
                file("manifest.json", manifest.clone()),
            ]),
            None,
            422,
            "invalid_manifest",
        ),
        (
            "a PAX header",
            ext(tar::EntryType::XHeader),
            None,
            422,
            "unsupported_entry",
        ),
        (
            "a global PAX header",
            ext(tar::EntryType::XGlobalHeader),
            None,
            422,
            "unsupported_entry",
        ),
        (
            "a GNU long name",
            ext(tar::EntryType::GNULongName),
            None,
            422,
            "unsupported_entry",
        ),
        ("one byte flipped", flipped, None, 422, "backup_corrupt"),
        (
            "a wrong header checksum",
            good.clone(),
            Some("ab".repeat(32)),
            422,
            "backup_corrupt",
        ),
        (
            "a checksum header that is no checksum",
            good.clone(),
            Some("xyz".into()),
            400,
            "invalid_checksum",
        ),
        (
            "`../` in a path",
            pack(&[
                file("manifest.json", manifest.clone()),
                file("collections/../../evil", b"x".to_vec()),
            ]),
            None,
            422,
            "unsafe_path",
        ),
        (
            "`../` first",
            pack(&[file("../manifest.json", manifest.clone())]),
            None,
            422,
            "unsafe_path",
        ),
        (
            "an absolute path",
            pack(&[
                file("manifest.json", manifest.clone()),
                file("/tmp/evil", b"x".to_vec()),
            ]),
            None,
            422,
            "unsafe_path",
        ),
        (
            "a symlink",
            pack(&[
                file("manifest.json", manifest.clone()),
                link(tar::EntryType::Symlink, "/etc/passwd"),
            ]),
            None,
            422,
            "unsupported_entry",
        ),
        (
            "a hardlink",
            pack(&[
                file("manifest.json", manifest.clone()),
                link(tar::EntryType::Link, "manifest.json"),
            ]),
            None,
            422,
            "unsupported_entry",
        ),
        (
            "a device",
            pack(&[
                file("manifest.json", manifest.clone()),
                Entry {
                    path: b"dev".to_vec(),
                    kind: tar::EntryType::Char,
                    data: Vec::new(),
                    link: None,
                },
            ]),
            None,
            422,
            "unsupported_entry",
        ),
        ("a gzip bomb", pack(&bomb), None, 422, "compression_ratio"),
        (
            "too many entries",
            pack(&many),
            None,
            422,
            "too_many_entries",
        ),
        (
            "a manifest lying about a file's sum",
            pack(&wrong_sum),
            None,
            422,
            "backup_corrupt",
        ),
        (
            "a manifest lying about a file's size",
            pack(&wrong_size),
            None,
            422,
            "backup_corrupt",
        ),
        (
            "a file the manifest names missing",
            pack(&missing),
            None,
            422,
            "backup_corrupt",
        ),
        (
            "a file the manifest does not name",
            pack(&extra),
            None,
            422,
            "unexpected_entry",
        ),
        (
            "a manifest that is not first",
            pack(&not_first),
            None,
            422,
            "invalid_manifest",
        ),
        (
            "a manifest that is not JSON",
            pack(&[file("manifest.json", b"{nope".to_vec())]),
            None,
            422,
            "invalid_manifest",
        ),
        (
            "a future format",
            pack(&future),
            None,
            422,
            "unsupported_format",
        ),
        (
            "a truncated archive",
            good[..good.len() * 2 / 3].to_vec(),
            None,
            422,
            "backup_corrupt",
        ),
        (
            "an archive cut before its end",
            good[..good.len() - 4].to_vec(),
            None,
            422,
            "backup_corrupt",
        ),
        (
            "bytes after the gzip stream",
            [good.clone(), b"trailing bytes".to_vec()].concat(),
            None,
            422,
            "trailing_data",
        ),
        (
            "a second gzip member",
            [good.clone(), pack(&[])].concat(),
            None,
            422,
            "trailing_data",
        ),
        (
            "a gzip bomb padded to pass the ratio by its file's size",
            [pack(&bomb), vec![0; 600 << 10]].concat(),
            None,
            422,
            "compression_ratio",
        ),
        ("an empty body", Vec::new(), None, 400, "empty_body"),
        (
            "a body that is not gzip",
            b"PK\x03\x04 a zip file".to_vec(),
            None,
            422,
            "not_gzip",
        ),
        (
            "a body over the cap",
            vec![0x1f; 5 << 20],
            None,
            413,
            "backup_too_large",
        ),
    ];
    let files_before = backup_files(&app);
    let (_, collections_before) = send(&app, "GET", "/collections", None, None).await;
    for (what, body, checksum, status, code) in cases {
        let (s, b) = upload(&app, &NONE, body, checksum.as_deref()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {b}"
        );
        assert_eq!(
            backup_files(&app),
            files_before,
            "{what} left something behind"
        );
        assert_eq!(backup_ids(&app, &NONE).await, vec![id.clone()], "{what}");
    }
    assert_eq!(
        send(&app, "GET", "/collections", None, None).await.1,
        collections_before
    );
    assert!(!std::path::Path::new("/tmp/evil").exists());
    // Not an archive at all: the media type is checked first.
    let (s, _, b) = raw(
        &app,
        "POST",
        "/api/hub/backups/upload",
        &NONE,
        &[("content-type", "application/json")],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(s, 415, "{}", String::from_utf8_lossy(&b));
    // One upload of a user's at a time; one that stalls is refused, and a
    // client that leaves mid-body leaves nothing.
    let stalled = {
        let (addr, head) = (app.addr, good[..1000].to_vec());
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "POST /api/hub/backups/upload HTTP/1.1\r\nhost: x\r\ncontent-type: application/gzip\r\ncontent-length: 100000\r\n\r\n").unwrap();
            s.write_all(&head).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = upload(&app, &NONE, good.clone(), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("too_many_requests")),
        "{b}"
    );
    let answer = stalled.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upload_stalled"), "{answer}");
    assert_eq!(backup_files(&app), files_before);
    let (addr, head) = (app.addr, good[..1000].to_vec());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "POST /api/hub/backups/upload HTTP/1.1\r\nhost: x\r\ncontent-type: application/gzip\r\ncontent-length: 100000\r\n\r\n").unwrap();
        s.write_all(&head).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    })
    .await
    .unwrap();
    let app_files = || backup_files(&app);
    for _ in 0..100 {
        if app_files() == files_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        backup_files(&app),
        files_before,
        "a client that left mid-body left a file"
    );

    // Archives whose every checksum holds but whose files lie: accepted as
    // backups (they are the caller's own bytes), refused at restore with
    // nothing created.
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let seq = m["collections"][0]["seq"].as_u64().unwrap();
    let index = entries
        .iter()
        .find(|e| e.path.ends_with(b"index.hnsw"))
        .unwrap()
        .data
        .clone();
    let points = entries
        .iter()
        .find(|e| e.path.ends_with(b"points.bin"))
        .unwrap()
        .data
        .clone();
    let mut far_key = b"VZPTS\0\0\x01".to_vec();
    far_key.extend(seq.to_le_bytes());
    far_key.extend(1u64.to_le_bytes());
    far_key.extend((1u64 << 36).to_le_bytes());
    far_key.push(0);
    far_key.extend(7u64.to_le_bytes());
    far_key.extend(0u32.to_le_bytes());
    let mut many_nodes = index.clone();
    many_nodes[24..32].copy_from_slice(&(10_000_000u64).to_le_bytes());
    let mut bad_float = index.clone();
    // Node 0's row: its stored norm, then its vector.
    let at = 40 + 200 * 2 + 4;
    bad_float[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut huge = index.clone();
    huge[at..at + 4].copy_from_slice(&3.0e38f32.to_le_bytes());
    let mut zero = index.clone();
    zero[at..at + 32].fill(0);
    let mut bad_norm = index.clone();
    for node in 0..200 {
        let row = 40 + 200 * 2 + node * 36;
        bad_norm[row..row + 4].copy_from_slice(&1.0e-30f32.to_le_bytes());
    }
    let forged = |index: &[u8], points: &[u8], claimed: u64| {
        let mut m = m.clone();
        let c = &mut m["collections"][0];
        c["points"] = json!(claimed);
        for f in c["files"].as_array_mut().unwrap() {
            let data = if f["name"] == "index.hnsw" {
                index
            } else {
                points
            };
            f["size"] = json!(data.len());
            f["sha256"] = json!(sha(data));
        }
        pack(&[
            file("manifest.json", serde_json::to_vec(&m).unwrap()),
            file("collections/a/index.hnsw", index.to_vec()),
            file("collections/a/points.bin", points.to_vec()),
        ])
    };
    for (what, archive) in [
        (
            "a manifest under-counting the points",
            forged(&index, &points, 0),
        ),
        (
            "a point table naming a key far past the graph",
            forged(&index, &far_key, 1),
        ),
        (
            "a graph claiming more nodes than its file holds",
            forged(&many_nodes, &points, 200),
        ),
        ("a graph holding a NaN", forged(&bad_float, &points, 200)),
        (
            "a vector no write accepts (a component of 3e38)",
            forged(&huge, &points, 200),
        ),
        ("a zero vector under cosine", forged(&zero, &points, 200)),
    ] {
        let (s, up) = upload(&app, &NONE, archive, None).await;
        assert_eq!(s, 201, "{what}: {up}");
        let (s, b) = restore(
            &app,
            &NONE,
            json!({"backup_id": up["id"], "rename": {"a": "forged"}}),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (422, Some("backup_corrupt")),
            "{what}: {b}"
        );
        assert_eq!(
            send(&app, "GET", "/collections/forged", None, None).await.0,
            404,
            "{what}"
        );
        assert!(
            !backup_files(&app).iter().any(|f| f.contains(".work-")),
            "{what}"
        );
        assert_eq!(
            send(
                &app,
                "DELETE",
                &format!("/api/hub/backups/{}", up["id"].as_str().unwrap()),
                None,
                None
            )
            .await
            .0,
            200
        );
    }
    let trash: Vec<_> = std::fs::read_dir(app.data_dir().join("trash"))
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert!(
        trash.iter().all(|n| *n == 0),
        "staged collections left in the trash: {trash:?}"
    );

    // Stored norms are not trusted: computed again, so the restored
    // collection scores exactly as the one backed up.
    let (s, up) = upload(&app, &NONE, forged(&bad_norm, &points, 200), None).await;
    assert_eq!(s, 201, "{up}");
    let (s, b) = restore(
        &app,
        &NONE,
        json!({"backup_id": up["id"], "rename": {"a": "renormed"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let query = json!({"vector": [0.3, -1.0, 0.5, 0.2, 0.9, -0.4, 0.1, 0.7], "limit": 5});
    let (_, want) = send(
        &app,
        "POST",
        "/collections/a/search",
        NONE.clone(),
        Some(query.clone()),
    )
    .await;
    let (_, got) = send(
        &app,
        "POST",
        "/collections/renormed/search",
        NONE.clone(),
        Some(query),
    )
    .await;
    assert_eq!(got["results"], want["results"]);
    assert!(
        want["results"][0]["score"]
            .as_f64()
            .is_some_and(|s| s > 0.0 && s <= 1.0001)
    );

    // The good one still goes in.
    let (s, b) = upload(&app, &NONE, good, None).await;
    assert_eq!(s, 201, "{b}");
}

/// A stored archive damaged on disk is refused before a download or a
/// restore reads it.
#[tokio::test]
async fn a_damaged_stored_backup_is_never_served() {
    let app = TestApp::new();
    filled(&app, &NONE, "a", 50, 5).await;
    let id = create(&app, &NONE, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = app.data_dir().join(format!("backups/local/{id}.tar.gz"));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (s, b) = send(
        &app,
        "GET",
        &format!("/api/hub/backups/{id}/download"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("backup_corrupt")),
        "{b}"
    );
    let (s, b) = restore(&app, &NONE, json!({"backup_id": id, "rename": {"a": "b"}})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("backup_corrupt")),
        "{b}"
    );
    assert_eq!(send(&app, "GET", "/collections/b", None, None).await.0, 404);
    assert!(!backup_files(&app).iter().any(|f| f.contains(".work-")));
}

#[tokio::test]
async fn users_never_reach_each_others_backups() {
    let hub = hub().await;
    let u1 = hub.store.create_user("one@example.com", "p").unwrap().id;
    let u2 = hub.store.create_user("two@example.com", "p").unwrap().id;
    let (k1, _) = key(&hub.store, u1, &["admin"], None);
    let (k2, _) = key(&hub.store, u2, &["admin"], None);
    let (a1, a2) = (bearer(&k1), bearer(&k2));
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    filled(&app, &a1, "c", 30, 6).await;
    let id = create(&app, &a1, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(backup_ids(&app, &a1).await, vec![id.clone()]);
    assert!(backup_ids(&app, &a2).await.is_empty());
    // Every route, with the other user's id.
    let routes = [
        ("GET", format!("/api/hub/backups/{id}"), None),
        ("GET", format!("/api/hub/backups/{id}/download"), None),
        (
            "POST",
            "/api/hub/backups/restore".to_owned(),
            Some(json!({"backup_id": id})),
        ),
        ("DELETE", format!("/api/hub/backups/{id}"), None),
    ];
    let mut theirs = Vec::new();
    for (m, p, body) in &routes {
        let (s, b) = send(&app, m, p, a2.clone(), body.clone()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (404, Some("backup_not_found")),
            "{m} {p}: {b}"
        );
        theirs.push(b);
    }
    assert_eq!(
        backup_ids(&app, &a1).await,
        vec![id.clone()],
        "the other user's delete changed nothing"
    );
    // The same body as for an id that never existed: the owner's, once it is gone.
    let archive = download(&app, &a1, &id).await;
    assert_eq!(
        send(
            &app,
            "DELETE",
            &format!("/api/hub/backups/{id}"),
            a1.clone(),
            None
        )
        .await
        .0,
        200
    );
    for ((m, p, body), b2) in routes.iter().zip(&theirs) {
        let (s, b) = send(&app, m, p, a1.clone(), body.clone()).await;
        assert_eq!((s, &b), (404, b2), "{m} {p}");
    }

    // An archive whose manifest names the other user restores into the
    // caller's namespace all the same.
    let forged = with_manifest(&unpack(&archive), |m| m["user_id"] = json!(u2.to_string()));
    let (s, up) = upload(&app, &a1, pack(&forged), None).await;
    assert_eq!(s, 201, "{up}");
    let (s, b) = restore(
        &app,
        &a1,
        json!({"backup_id": up["id"], "rename": {"c": "forged"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let names = |list: Value| -> Vec<String> {
        list["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(send(&app, "GET", "/collections", a1.clone(), None).await.1),
        ["c", "forged"]
    );
    assert!(names(send(&app, "GET", "/collections", a2.clone(), None).await.1).is_empty());
    // The other user cannot restore it either.
    let (s, _) = restore(&app, &a2, json!({"backup_id": up["id"]})).await;
    assert_eq!(s, 404);
    // Each user's backups live in a directory of its own.
    assert!(app.data_dir().join(format!("backups/{u1}")).is_dir());
    assert!(!app.data_dir().join(format!("backups/{u2}")).exists());
    hub.task.abort();
}

#[tokio::test]
async fn keys_without_the_permission_change_nothing() {
    let hub = hub().await;
    let u = hub.store.create_user("perm@example.com", "p").unwrap().id;
    let (admin, _) = key(&hub.store, u, &["admin"], None);
    let (reader, _) = key(&hub.store, u, &["read"], None);
    let (writer, _) = key(&hub.store, u, &["read", "write"], None);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    let (admin, reader, writer) = (bearer(&admin), bearer(&reader), bearer(&writer));
    filled(&app, &admin, "c", 20, 7).await;
    let id = create(&app, &admin, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = download(&app, &reader, &id).await;
    let files = backup_files(&app);
    for (m, p, body) in [
        ("POST", "/api/hub/backups".to_owned(), Some(json!({}))),
        (
            "POST",
            "/api/hub/backups/restore".to_owned(),
            Some(json!({"backup_id": id, "rename": {"c": "d"}})),
        ),
        ("DELETE", format!("/api/hub/backups/{id}"), None),
    ] {
        let (s, b) = send(&app, m, &p, reader.clone(), body).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{m} {p}: {b}"
        );
    }
    let (s, b) = upload(&app, &reader, archive.clone(), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );
    // Write without delete: no delete, and no overwrite of what exists.
    let (s, _) = send(
        &app,
        "DELETE",
        &format!("/api/hub/backups/{id}"),
        writer.clone(),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, b) = restore(&app, &writer, json!({"backup_id": id, "overwrite": true})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );
    assert_eq!(backup_files(&app), files);
    assert_eq!(
        send(&app, "GET", "/collections/d", admin.clone(), None)
            .await
            .0,
        404
    );
    // Reading is the reader's.
    assert_eq!(backup_ids(&app, &reader).await, vec![id.clone()]);
    let (s, b) = restore(
        &app,
        &writer,
        json!({"backup_id": id, "rename": {"c": "d"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    hub.task.abort();
}

#[tokio::test]
async fn retention_keeps_exactly_what_the_config_says() {
    let app = TestApp::build(AppOptions {
        backups: BackupOptions {
            max_per_user: 3,
            max_age: None,
            ..BackupOptions::default()
        },
        ..AppOptions::default()
    });
    filled(&app, &NONE, "a", 10, 8).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create(&app, &NONE, json!({"label": format!("b{i}")})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        // Creation times a millisecond apart at least, so newest-first is defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let newest: Vec<String> = made.iter().rev().take(3).cloned().collect();
    assert_eq!(backup_ids(&app, &NONE).await, newest);
    let files: Vec<String> = backup_files(&app)
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().to_owned())
        .collect();
    let mut want: Vec<String> = newest
        .iter()
        .flat_map(|id| [format!("{id}.json"), format!("{id}.tar.gz")])
        .collect();
    want.sort();
    assert_eq!(
        files
            .iter()
            .filter(|f| *f != "local")
            .cloned()
            .collect::<Vec<_>>(),
        want
    );

    let app = TestApp::build(AppOptions {
        backups: BackupOptions {
            max_per_user: 10,
            max_age: Some(Duration::from_millis(1500)),
            ..BackupOptions::default()
        },
        ..AppOptions::default()
    });
    filled(&app, &NONE, "a", 10, 8).await;
    let old = create(&app, &NONE, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let young = create(&app, &NONE, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(backup_ids(&app, &NONE).await.len(), 2, "{old} {young}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = create(&app, &NONE, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(backup_ids(&app, &NONE).await, [fresh]);
}

#[tokio::test]
async fn quotas_hold_for_backups_and_restores() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "small".into(),
            max_collections: 3,
            max_vectors: 100,
            max_storage_bytes: 1 << 20,
        })
        .unwrap();
    let u = hub.store.create_user("q@example.com", "small").unwrap().id;
    let (k, _) = key(&hub.store, u, &["admin"], None);
    let a = bearer(&k);
    let app = TestApp::with_auth(auth(hub.addr, Duration::from_secs(60)));
    filled(&app, &a, "c", 60, 9).await;
    let id = create(&app, &a, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // 60 more points pass the plan's 100: refused with the figures, and
    // nothing is created here or at the Hub.
    let (s, b) = restore(&app, &a, json!({"backup_id": id, "rename": {"c": "c2"}})).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(
        (
            b["error"]["code"].as_str(),
            b["error"]["quota"].as_str(),
            b["error"]["limit"].as_u64(),
            b["error"]["current"].as_u64(),
            b["error"]["requested"].as_u64()
        ),
        (
            Some("quota_exceeded"),
            Some("vectors"),
            Some(100),
            Some(60),
            Some(60)
        )
    );
    assert_eq!(
        send(&app, "GET", "/collections/c2", a.clone(), None)
            .await
            .0,
        404
    );
    let registered = |store: &vectorizer_hub::HubStore| -> Vec<String> {
        store
            .user_collections(&u)
            .unwrap()
            .collections
            .into_iter()
            .map(|c| c.collection_name)
            .collect()
    };
    assert_eq!(registered(&hub.store), ["c"]);
    // With room, the restore is registered and its usage reported.
    assert_eq!(
        send(&app, "DELETE", "/collections/c", a.clone(), None)
            .await
            .0,
        200
    );
    let (s, b) = restore(&app, &a, json!({"backup_id": id, "rename": {"c": "c2"}})).await;
    assert_eq!(s, 200, "{b}");
    // The deletion reaches the Hub through the usage reporter, as the
    // restore's registration does: both in their own time.
    let store = hub.store.clone();
    eventually(move || {
        let listed = store.user_collections(&u).unwrap().collections;
        listed.len() == 1 && listed[0].collection_name == "c2" && listed[0].vector_count == 60
    })
    .await;
    assert_eq!(registered(&hub.store), ["c2"]);

    // A backup the plan's storage cannot hold is refused before it is made:
    // the Hub judges the storage reported so far plus the estimate (the
    // collection's bytes on disk).
    let plan = |max_storage_bytes| Plan {
        name: "tiny".into(),
        max_collections: 3,
        max_vectors: 100,
        max_storage_bytes,
    };
    hub.store.create_plan(plan(1 << 20)).unwrap();
    let t = hub.store.create_user("t@example.com", "tiny").unwrap().id;
    let (tk, _) = key(&hub.store, t, &["admin"], None);
    let ta = bearer(&tk);
    filled(&app, &ta, "c", 20, 10).await;
    let store = hub.store.clone();
    eventually(move || store.usage_ledger().iter().any(|e| e.vector_count == 20)).await;
    let reported = hub
        .store
        .usage_ledger()
        .iter()
        .rev()
        .find(|e| e.vector_count == 20)
        .unwrap()
        .storage_bytes;
    let on_disk = send(&app, "GET", "/collections/c", ta.clone(), None)
        .await
        .1["bytes"]
        .as_u64()
        .unwrap();
    hub.store.create_plan(plan(reported + on_disk - 1)).unwrap();
    let (s, b) = send(
        &app,
        "POST",
        "/api/hub/backups",
        ta.clone(),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str(), b["error"]["quota"].as_str()),
        (429, Some("quota_exceeded"), Some("backup")),
        "{b}"
    );
    assert_eq!(b["error"]["requested"].as_u64(), Some(on_disk), "{b}");
    assert!(backup_ids(&app, &ta).await.is_empty());
    assert!(
        backup_files(&app)
            .iter()
            .all(|f| !f.contains(&t.to_string()) || f.ends_with(&t.to_string()))
    );
    hub.store.create_plan(plan(reported + on_disk)).unwrap();
    create(&app, &ta, json!({})).await;

    // A chunked upload (no Content-Length) with 64 KiB left under the plan:
    // refused once the allowance is passed, before a byte is written.
    let reported = hub.store.usage_ledger().last().unwrap().storage_bytes;
    hub.store.create_plan(plan(reported + (64 << 10))).unwrap();
    let dir = app.data_dir().join("backups").join(t.to_string());
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (dir, watching) = (dir.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut most = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.file_name().to_string_lossy().ends_with(".tmp") {
                        most = most.max(e.metadata().map_or(0, |m| m.len()));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };
    let (addr, key) = (app.addr, tk.clone());
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "POST /api/hub/backups/upload HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/gzip\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        let piece = vec![0x1fu8; 64 << 10];
        for _ in 0..128 {
            let sent = write!(s, "{:x}\r\n", piece.len())
                .and_then(|()| s.write_all(&piece))
                .and_then(|()| s.write_all(b"\r\n"));
            if sent.is_err() {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("\"quota\":\"backup\""), "{answer}");
    assert_eq!(most, 0, "{most} bytes of the upload were written");
    assert!(leftovers(app.data_dir()).is_empty());
    hub.task.abort();
}

/// Every entry under `dir` whose name marks unfinished work.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    let root = dir.join("backups");
    let mut found = Vec::new();
    for user in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(user.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let whole = name.ends_with(".tar.gz") || name.ends_with(".json");
            if !whole || name.starts_with('.') {
                found.push(name);
            }
        }
    }
    found
}

fn cli(args: &[&str], data: &std::path::Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .arg("backup")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// SIGKILL at random moments of a create: a listed backup is always whole,
/// and the next start leaves no temporary file. Then the offline command
/// verifies and restores what is listed.
#[test]
fn sigkill_during_a_create_never_leaves_half_a_backup() {
    use vectorizer_testkit::http::Client;
    let data = vectorizer_testkit::TempDir::new("backup-kill");
    let server = crate::e2e::start(data.path());
    let mut c = Client::new(server.addr);
    let r = c
        .json(
            "POST",
            "/collections",
            &json!({"name": "big", "dimension": 64, "metric": "cosine"}),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let mut rng = Rng::new(11);
    for at in (0..20_000u64).step_by(1000) {
        let points: Vec<Value> = (at..at + 1000)
            .map(|i| json!({"id": i, "vector": (0..64).map(|_| rng.normal()).collect::<Vec<f32>>(), "payload": {"i": i}}))
            .collect();
        assert_eq!(
            c.json(
                "POST",
                "/collections/big/points",
                &json!({"points": points})
            )
            .unwrap()
            .status,
            200
        );
    }
    // How long one create takes, to kill within it.
    let started = std::time::Instant::now();
    let r = c.json("POST", "/api/hub/backups", &json!({})).unwrap();
    assert_eq!(r.status, 201);
    let took = started.elapsed().as_millis() as u64;
    let first = r.json()["id"].as_str().unwrap().to_owned();
    drop(c);
    server.stop();
    let mut killed_mid = 0;
    for round in 0..10 {
        let mut server = crate::e2e::start(data.path());
        assert!(
            leftovers(data.path()).is_empty(),
            "round {round}: {:?}",
            leftovers(data.path())
        );
        let mut c = Client::new(server.addr);
        let listed = c
            .request("GET", "/api/hub/backups", None, &[])
            .unwrap()
            .json();
        for b in listed["backups"].as_array().unwrap() {
            let id = b["id"].as_str().unwrap();
            let r = c
                .request("GET", &format!("/api/hub/backups/{id}/download"), None, &[])
                .unwrap();
            assert_eq!(
                r.status, 200,
                "round {round}: listed backup {id} is not whole"
            );
            assert_eq!(sha(&r.body), b["sha256"].as_str().unwrap());
        }
        let addr = server.addr;
        let creating = std::thread::spawn(move || {
            let _ = Client::new(addr).json("POST", "/api/hub/backups", &json!({"label": "killed"}));
        });
        std::thread::sleep(Duration::from_millis(rng.below(took + 1)));
        if !leftovers(data.path()).is_empty() {
            killed_mid += 1;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        creating.join().unwrap();
    }
    assert!(
        killed_mid > 0,
        "no kill landed while a create was under way"
    );
    let server = crate::e2e::start(data.path());
    assert!(leftovers(data.path()).is_empty());
    server.stop();
    // Offline: every listed backup verifies, and one restores.
    let listed = cli(&["list"], data.path());
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&first.as_str()));
    for id in &ids {
        assert_eq!(cli(&["verify", id], data.path())["verified"], true);
    }
    let restored = cli(&["restore", &first, "--rename", "big=copy"], data.path());
    assert_eq!(restored["restored"][0]["points"], 20_000);
    let made = cli(
        &["create", "--collections", "copy", "--label", "offline"],
        data.path(),
    );
    assert_eq!(made["collections"][0]["name"], "copy");
    let server = crate::e2e::start(data.path());
    let mut c = Client::new(server.addr);
    let r = c
        .json("POST", "/collections/copy/points/count", &json!({}))
        .unwrap();
    assert_eq!(r.json()["count"], 20_000);
    server.stop();
}

/// A mistyped `--data-dir` is refused by every offline command, and no
/// directory is created for it.
#[test]
fn offline_commands_never_create_a_data_directory() {
    let dir = vectorizer_testkit::TempDir::new("offline-typo");
    let typo = dir.path().join("dta");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (path, said) in [
        (&typo, "does not exist"),
        (&empty, "holds no Vectorizer data"),
    ] {
        for args in [
            &["backup", "list"][..],
            &["backup", "verify", "00000000-0000-0000-0000-000000000000"],
            &["migrate", "status"],
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_vectorizer"))
                .args(args)
                .arg("--data-dir")
                .arg(path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(err.contains(said), "{args:?}: {err}");
        }
    }
    assert!(!typo.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

/// A manhattan collection whose payload indexes changed (one added, one
/// dropped) and whose recall target changed restores with its metric, its
/// indexes, its target and the same exact and filtered answers, and the
/// dialect reads it back alike.
#[tokio::test]
async fn manhattan_and_dropped_indexes_survive_a_round_trip() {
    let app = TestApp::new();
    let (s, b) = send(
        &app,
        "POST",
        "/collections",
        NONE,
        Some(json!({"name": "m", "dimension": 2, "metric": "manhattan", "payload_index": ["g", "h"], "target_recall": 0.9,
            "quantization": {"type": "int8", "rescore": true, "oversampling": 2.5}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = send(
        &app,
        "PATCH",
        "/collections/m",
        NONE,
        Some(json!({"target_recall": 0.97})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let points: Vec<Value> = (0..40)
        .map(|i| json!({"id": i, "vector": [i as f32, (i % 7) as f32], "payload": {"g": i % 3, "h": [i % 2, null]}}))
        .collect();
    let (s, _) = send(
        &app,
        "POST",
        "/collections/m/points",
        NONE,
        Some(json!({"points": points})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(&app, "DELETE", "/collections/m/payload_index/h", NONE, None).await;
    assert_eq!(s, 200);
    let search = json!({"vector": [10.5, 3.0], "limit": 5, "exact": true,
        "filter": {"must": [{"key": "g", "match": {"except": [0]}}, {"key": "h", "values_count": {"gte": 2}}]}});
    let ask = |name: &'static str| {
        let (app, search) = (&app, search.clone());
        async move {
            let (_, c) = send(app, "GET", &format!("/collections/{name}"), NONE, None).await;
            let (_, r) = send(
                app,
                "POST",
                &format!("/collections/{name}/search"),
                NONE,
                Some(search),
            )
            .await;
            (
                c["metric"].clone(),
                c["payload_index"].clone(),
                r["results"].clone(),
                c["target_recall"].clone(),
                c["quantization"].clone(),
            )
        }
    };
    let before = ask("m").await;
    assert_eq!(
        (
            before.0.clone(),
            before.1.clone(),
            before.3.clone(),
            before.4.clone()
        ),
        (
            json!("manhattan"),
            json!(["g"]),
            json!(0.97),
            json!({"type": "int8", "rescore": true, "oversampling": 2.5})
        )
    );
    assert_eq!(before.2.as_array().unwrap().len(), 5);
    let info = create(&app, &NONE, json!({"collections": ["m"]})).await;
    let (s, b) = restore(
        &app,
        &NONE,
        json!({"backup_id": info["id"], "rename": {"m": "m2"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ask("m2").await, before);
    let (s, v) = app.qdrant("GET", "/collections/m2", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["result"]["config"]["params"]["vectors"],
        json!({"size": 2, "distance": "Manhattan"})
    );
    assert_eq!(
        v["result"]["config"]["quantization_config"]["scalar"]["type"],
        json!("int8")
    );
}
