//! `vectorizer migrate` on real data directories, with the real binary
//! and the local Hub over HTTP: a run serves each user exactly its
//! collections, a rollback returns the exact state before, `plan` and
//! `--dry-run` change no byte, conflicts stop a run before its first step,
//! and SIGKILL at any moment is finished by `run` or `rollback`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_engine::collection::With;
use vectorizer_engine::{Database, Deadline, EngineOptions};
use vectorizer_testkit::http::Client;
use vectorizer_testkit::{Rng, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_vectorizer");
const SVC: &str = "svc-migrate";

use crate::e2e::Server;

/// Starts `vectorizer <args>` with the service key, its log to `log`.
fn spawn_logged(args: &[&str], prefix: &str, log: Option<&Path>) -> (Server, SocketAddr) {
    let server = crate::e2e::spawn(args, &[("HIVEHUB_SERVICE_API_KEY", SVC)], prefix, log);
    let addr = server.addr;
    (server, addr)
}

fn spawn(args: &[&str], prefix: &str) -> (Server, SocketAddr) {
    spawn_logged(args, prefix, None)
}

fn serve(data: &Path, config: Option<&Path>) -> (Server, SocketAddr) {
    let mut args = vec!["serve", "--port", "0", "--data-dir", data.to_str().unwrap()];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    spawn(&args, "vectorizer listening on http://")
}

/// SIGKILL (a server dropped is killed).
fn kill(server: Server) {
    drop(server);
}

/// SIGTERM, and a clean exit.
fn term(server: Server) {
    server.stop();
}

fn call(c: &mut Client, key: Option<&str>, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    let raw = body.to_string();
    let r = c.request(method, path, Some(raw.as_bytes()), &h).unwrap();
    (r.status, r.json())
}

/// `POST path` with the Hub off, answered 200.
fn post(c: &mut Client, path: &str, body: Value) {
    let (s, b) = call(c, None, "POST", path, body);
    assert_eq!(s, 200, "{path}: {b}");
}

/// Collections with payload indexes, deletions, payload changes, and data
/// both in snapshots and in the log.
fn populate(data: &Path) {
    let (server, addr) = serve(data, None);
    let mut c = Client::new(addr);
    let mut rng = Rng::new(21);
    for (name, n) in [
        ("docs", 300u64),
        ("team-a", 120),
        ("team-b", 60),
        ("misc", 40),
    ] {
        let (s, b) = call(
            &mut c,
            None,
            "POST",
            "/collections",
            json!({"name": name, "dimension": 8, "metric": "cosine", "payload_index": ["g"]}),
        );
        assert_eq!(s, 201, "{b}");
        let points: Vec<Value> = (0..n)
            .map(|i| json!({"id": i, "vector": (0..8).map(|_| rng.normal()).collect::<Vec<f32>>(), "payload": {"g": i % 4, "name": name}}))
            .collect();
        post(
            &mut c,
            &format!("/collections/{name}/points"),
            json!({"points": points}),
        );
        post(
            &mut c,
            &format!("/collections/{name}/points/delete"),
            json!({"ids": [0, 1, 2]}),
        );
    }
    let (s, b) = call(
        &mut c,
        None,
        "POST",
        "/aliases",
        json!({"actions": [{"create_alias": {"alias": "docs-live", "collection": "docs"}}]}),
    );
    assert_eq!(s, 200, "{b}");
    drop(c);
    // In snapshots.
    term(server);
    let (server, addr) = serve(data, None);
    let mut c = Client::new(addr);
    for name in ["docs", "team-a"] {
        let points: Vec<Value> = (1000..1020u64)
            .map(|i| json!({"id": i, "vector": (0..8).map(|_| rng.normal()).collect::<Vec<f32>>(), "payload": {"g": 9}}))
            .collect();
        post(
            &mut c,
            &format!("/collections/{name}/points"),
            json!({"points": points}),
        );
        post(
            &mut c,
            &format!("/collections/{name}/points/payload"),
            json!({"ids": [5, 6], "payload": {"late": true}}),
        );
        post(
            &mut c,
            &format!("/collections/{name}/points/delete"),
            json!({"ids": [7]}),
        );
    }
    drop(c);
    // The rest in the log only.
    kill(server);
}

/// The logical state of every collection: name, config, metadata, and
/// every point with vector and payload (read without writing a byte).
pub(crate) fn logical(data: &Path) -> BTreeMap<String, Value> {
    let options = EngineOptions {
        background: false,
        ..EngineOptions::default()
    };
    // A process this test binary spawns inherits open files until it
    // execs: the lock of a directory just closed may linger for a moment.
    let mut tries = 0;
    let db = loop {
        match Database::open(data, options.clone()) {
            Err(vectorizer_engine::EngineError::InUse(_)) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let mut out = BTreeMap::new();
    for name in db.names().unwrap() {
        let c = db.collection(&name).unwrap();
        let mut points = Vec::new();
        let mut from = None;
        loop {
            let with = With {
                payload: true,
                vector: true,
            };
            let (page, next) = c.scroll(1000, from, None, with, &Deadline::none()).unwrap();
            points.extend(
                page.into_iter()
                    .map(|r| json!([r.id.to_string(), r.vector, r.payload])),
            );
            match next {
                Some(n) => from = Some(n),
                None => break,
            }
        }
        out.insert(
            c.name().to_owned(),
            json!({"config": c.config(), "metadata": c.metadata(), "points": points}),
        );
    }
    out
}

/// A filtered search every collection answers.
fn query() -> Value {
    json!({"vector": [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25], "limit": 5, "filter": {"must": [{"key": "g", "match": {"value": 1}}]}})
}

/// The alias table on disk.
fn aliases(data: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(data.join("aliases.json")).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes.
fn bytes_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

struct Hub {
    _proc: Server,
    addr: SocketAddr,
    users: [String; 2],
    keys: [String; 2],
}

fn hub(dir: &Path) -> Hub {
    let file = dir.join("hub.json");
    let dev = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("hub-dev")
            .arg("--data")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    dev(&[
        "plan",
        "p",
        "--max-collections",
        "50",
        "--max-vectors",
        "1000000",
        "--max-storage-bytes",
        "1000000000",
    ]);
    let users = [
        dev(&["user", "one@example.com", "--plan", "p"]),
        dev(&["user", "two@example.com", "--plan", "p"]),
    ];
    let key = |u: &str| {
        dev(&["key", "--user", u, "--permissions", "admin"])
            .lines()
            .find_map(|l| l.strip_prefix("access key (shown once): "))
            .unwrap()
            .to_owned()
    };
    let keys = [key(&users[0]), key(&users[1])];
    let (proc, addr) = spawn(
        &[
            "hub-dev",
            "--data",
            file.to_str().unwrap(),
            "serve",
            "--port",
            "0",
        ],
        "local hub listening on http://",
    );
    Hub {
        _proc: proc,
        addr,
        users,
        keys,
    }
}

impl Hub {
    /// The user's collections at the Hub: name and vector count.
    fn collections(&self, user: &str) -> BTreeMap<String, u64> {
        let r = Client::new(self.addr)
            .request(
                "GET",
                &format!("/api/internal/vectorizer/users/{user}/collections"),
                None,
                &[("x-service-key", SVC)],
            )
            .unwrap();
        r.json()["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["collection_name"].as_str().unwrap().to_owned(),
                    c["vector_count"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// `vectorizer migrate <args> --data-dir <data>` with the service key, to
/// run as the caller likes.
fn migrate_cmd(args: &[&str], data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("migrate")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("HIVEHUB_SERVICE_API_KEY", SVC);
    c
}

/// Runs `vectorizer migrate <args> --data-dir <data>`: exit code, stdout.
fn migrate(args: &[&str], data: &Path) -> (i32, String, String) {
    for _ in 0..20 {
        let out = migrate_cmd(args, data).output().unwrap();
        let answer = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        // The lock may linger a moment in a process just spawned (see
        // `logical`); a server that holds it holds it throughout.
        if !answer.2.contains("in use by a running server") {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the data directory stayed in use");
}

/// The config naming the Hub, and the mapping: `team-*` to the second
/// user, everything else to the first.
fn files(dir: &Path, hub: &Hub) -> (PathBuf, PathBuf, PathBuf) {
    let cfg = dir.join("migrate.yml");
    std::fs::write(&cfg, format!("hub:\n  api_url: http://{}\n", hub.addr)).unwrap();
    let on = dir.join("serve.yml");
    std::fs::write(
        &on,
        format!("hub:\n  enabled: true\n  api_url: http://{}\n", hub.addr),
    )
    .unwrap();
    let mapping = dir.join("mapping.yml");
    std::fs::write(
        &mapping,
        format!(
            "default_user: {}\ncollections:\n  \"team-*\": {}\n  docs: {}\n",
            hub.users[0], hub.users[1], hub.users[0]
        ),
    )
    .unwrap();
    (cfg, on, mapping)
}

/// `before` with each collection under its user's name and owner.
fn moved(before: &BTreeMap<String, Value>, hub: &Hub) -> BTreeMap<String, Value> {
    before
        .iter()
        .map(|(name, v)| {
            let user = if name.starts_with("team-") {
                &hub.users[1]
            } else {
                &hub.users[0]
            };
            let mut v = v.clone();
            v["metadata"] = json!({"owner_id": user});
            (format!("user_{user}:{name}"), v)
        })
        .collect()
}

/// The moved state, with the Hub ids and projects the run added left out.
fn without_hub_ids(mut s: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    for v in s.values_mut() {
        let m = v["metadata"].as_object_mut().unwrap();
        assert!(m.remove("hub_collection_id").is_some(), "registered");
        assert!(m.remove("hub_project_id").is_some(), "registered");
    }
    s
}

#[test]
fn a_migration_serves_each_user_its_own_and_rolls_back_exactly() {
    let dir = TempDir::new("migrate");
    let data = dir.path().join("data");
    populate(&data);
    let before = logical(&data);
    assert_eq!(before.len(), 4);
    // Search answers before, with the Hub off.
    let (server, addr) = serve(&data, None);
    let mut c = Client::new(addr);
    let answers_before: BTreeMap<String, Value> = before
        .keys()
        .map(|name| {
            let (s, r) = call(
                &mut c,
                None,
                "POST",
                &format!("/collections/{name}/search"),
                query(),
            );
            assert_eq!(s, 200, "{r}");
            (name.clone(), r["results"].clone())
        })
        .collect();
    drop(c);
    kill(server);
    let hub = hub(dir.path());
    let (cfg, on, mapping) = files(dir.path(), &hub);
    let (cfg, on, mapping) = (
        cfg.to_str().unwrap(),
        on.to_str().unwrap(),
        mapping.to_str().unwrap(),
    );

    // The server points the way, and serves none of them to a tenant.
    let log = dir.path().join("serve.log");
    let (server, addr) = spawn_logged(
        &[
            "serve",
            "--port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            on,
        ],
        "vectorizer listening on http://",
        Some(&log),
    );
    // Said once the catalog has been read, off the start-up path.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut logged = std::fs::read_to_string(&log).unwrap();
    while !logged.contains("have no owner") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        logged = std::fs::read_to_string(&log).unwrap();
    }
    assert!(
        logged.contains("4 collections have no owner")
            && logged.contains("vectorizer migrate plan"),
        "{logged}"
    );
    let mut c = Client::new(addr);
    let (s, b) = call(
        &mut c,
        Some(&hub.keys[0]),
        "GET",
        "/collections",
        Value::Null,
    );
    assert_eq!(
        (s, b["collections"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{b}"
    );
    let (_, u) = call(&mut c, Some(&hub.keys[0]), "GET", "/usage", Value::Null);
    assert_eq!(
        (u["collections"].as_u64(), u["vectors"].as_u64()),
        (Some(0), Some(0)),
        "{u}"
    );
    let (s, h) = call(&mut c, None, "GET", "/health", Value::Null);
    assert_eq!((s, h), (200, json!({"status": "ok"})));
    drop(c);
    term(server);

    // plan and --dry-run change no byte.
    let untouched = bytes_of(&data);
    let (code, out, err) = migrate(
        &["plan", "--config", cfg, "--mapping", mapping, "--json"],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["users_checked"], true);
    let targets: BTreeMap<String, String> = plan["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(targets["team-b"], format!("user_{}:team-b", hub.users[1]));
    assert_eq!(targets["misc"], format!("user_{}:misc", hub.users[0]));
    assert!(
        plan["collections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["conflict"].is_null()),
        "{plan}"
    );
    let (code, _, err) = migrate(
        &["run", "--dry-run", "--config", cfg, "--mapping", mapping],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        bytes_of(&data) == untouched,
        "plan or --dry-run changed the data directory"
    );

    // The run: backed up, moved, registered, reported.
    let (code, out, err) = migrate(
        &["run", "--config", cfg, "--mapping", mapping, "--json"],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["phase"], "done");
    let backup = report["backup"].as_str().unwrap();
    assert!(data.join(format!("migration/{backup}.tar.gz")).is_file());
    assert_eq!(without_hub_ids(logical(&data)), moved(&before, &hub));
    let u0 = &hub.users[0];
    assert_eq!(
        aliases(&data),
        json!({format!("user_{u0}:docs-live"): format!("user_{u0}:docs")})
    );
    let (_, status, _) = migrate(&["status", "--json"], &data);
    assert_eq!(
        serde_json::from_str::<Value>(&status).unwrap()["phase"],
        "done"
    );
    let want = |user: usize| -> BTreeMap<String, u64> {
        before
            .iter()
            .filter(|(n, _)| n.starts_with("team-") == (user == 1))
            .map(|(n, v)| (n.clone(), v["points"].as_array().unwrap().len() as u64))
            .collect()
    };
    assert_eq!(hub.collections(&hub.users[0]), want(0));
    assert_eq!(hub.collections(&hub.users[1]), want(1));

    // Each user is served exactly its own, with the same answers.
    let (server, addr) = serve(&data, Some(Path::new(on)));
    let mut c = Client::new(addr);
    for (u, key) in hub.keys.iter().enumerate() {
        let (_, list) = call(&mut c, Some(key), "GET", "/collections", Value::Null);
        let names: Vec<&str> = list["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = want(u).into_keys().collect();
        assert_eq!(names, expected);
        for name in &expected {
            let (s, r) = call(
                &mut c,
                Some(key),
                "POST",
                &format!("/collections/{name}/points/count"),
                json!({}),
            );
            assert_eq!((s, r["count"].as_u64()), (200, Some(want(u)[name])));
            let (s, r) = call(
                &mut c,
                Some(key),
                "POST",
                &format!("/collections/{name}/search"),
                query(),
            );
            assert_eq!(s, 200, "{r}");
            assert_eq!(
                r["results"], answers_before[name],
                "{name}: other answers than before"
            );
            assert!(!r["results"].as_array().unwrap().is_empty());
        }
        let (s, _) = call(
            &mut c,
            Some(key),
            "POST",
            "/collections/docs-live/points/count",
            json!({}),
        );
        assert_eq!(
            s,
            if u == 0 { 200 } else { 404 },
            "the alias moved with its collection"
        );
        let other = if u == 0 { "team-a" } else { "docs" };
        assert_eq!(
            call(
                &mut c,
                Some(key),
                "GET",
                &format!("/collections/{other}"),
                Value::Null
            )
            .0,
            404
        );
    }
    drop(c);
    term(server);

    // Rolled back: the exact state before, and the Hub forgets them.
    let (code, out, err) = migrate(&["rollback", "--config", cfg, "--json"], &data);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["phase"],
        "rolled_back"
    );
    assert_eq!(logical(&data), before);
    assert_eq!(aliases(&data), json!({"docs-live": "docs"}));
    assert!(hub.collections(&hub.users[0]).is_empty());
    assert!(hub.collections(&hub.users[1]).is_empty());
    let (code, _, err) = migrate(&["rollback", "--config", cfg], &data);
    assert_eq!(code, 1, "a second rollback has nothing to do: {err}");
}

#[test]
fn conflicts_and_unknown_users_stop_a_run_before_its_first_step() {
    let dir = TempDir::new("migrate-conflicts");
    let data = dir.path().join("data");
    populate(&data);
    let hub = hub(dir.path());
    let (cfg, _, _) = files(dir.path(), &hub);
    let cfg = cfg.to_str().unwrap();
    let untouched = bytes_of(&data);
    // Unmapped collections.
    let only_docs = dir.path().join("only-docs.yml");
    std::fs::write(
        &only_docs,
        format!("collections:\n  docs: {}\n", hub.users[0]),
    )
    .unwrap();
    let (code, out, _) = migrate(
        &[
            "plan",
            "--config",
            cfg,
            "--mapping",
            only_docs.to_str().unwrap(),
            "--json",
        ],
        &data,
    );
    assert_eq!(code, 1);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let conflicts: BTreeMap<String, Value> = plan["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["conflict"].clone(),
            )
        })
        .collect();
    assert_eq!(conflicts["docs"], Value::Null);
    assert_eq!(conflicts["misc"], "unmapped");
    let (code, _, err) = migrate(
        &[
            "run",
            "--config",
            cfg,
            "--mapping",
            only_docs.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conflicts"), "{err}");
    // A user the Hub does not know.
    let stranger = uuid::Uuid::new_v4().to_string();
    let (code, out, _) = migrate(
        &[
            "run",
            "--config",
            cfg,
            "--default-user",
            &stranger,
            "--json",
        ],
        &data,
    );
    assert_eq!(code, 1);
    assert!(out.contains("unknown_user"), "{out}");
    // No Hub: nothing can be checked, so nothing runs.
    let out = migrate_cmd(
        &["run", "--default-user", &hub.users[0], "--config", cfg],
        &data,
    )
    .env_remove("HIVEHUB_SERVICE_API_KEY")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HIVEHUB_SERVICE_API_KEY"));
    assert!(
        bytes_of(&data) == untouched,
        "a refused run changed the data directory"
    );
    assert!(!data.join("migration").exists());
    // Asking needs a terminal.
    let out = migrate_cmd(&["plan", "--interactive", "--config", cfg], &data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
    // A name the Hub has already for the user is a conflict.
    let taken = Client::new(hub.addr)
        .request(
            "POST",
            &format!(
                "/api/internal/vectorizer/users/{}/collections",
                hub.users[0]
            ),
            Some(
                json!({"collection_name": "misc", "project_id": hub.users[0], "dimension": 8})
                    .to_string()
                    .as_bytes(),
            ),
            &[("x-service-key", SVC), ("content-type", "application/json")],
        )
        .unwrap();
    assert!(
        taken.status < 300,
        "{}",
        String::from_utf8_lossy(&taken.body)
    );
    let (code, out, _) = migrate(
        &[
            "plan",
            "--config",
            cfg,
            "--default-user",
            &hub.users[0],
            "--json",
        ],
        &data,
    );
    assert_eq!(code, 1);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let misc = plan["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "misc")
        .unwrap();
    assert_eq!(misc["conflict"], "hub_exists", "{plan}");
    // A server holding the directory refuses the migration.
    let (server, _) = serve(&data, None);
    let out = migrate_cmd(
        &["run", "--config", cfg, "--default-user", &hub.users[0]],
        &data,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running server"), "{err}");
    kill(server);
}

/// SIGKILL of `migrate run` at random moments, then `run` again (even
/// rounds) or `rollback` (odd ones): both end consistent, nothing lost,
/// nothing duplicated, and the Hub keeps exactly the registrations of a
/// finished run.
#[test]
fn sigkill_during_a_run_is_finished_by_run_or_rollback() {
    let dir = TempDir::new("migrate-kill");
    let template = dir.path().join("template");
    populate(&template);
    let before = logical(&template);
    let hub = hub(dir.path());
    let (cfg, _, mapping) = files(dir.path(), &hub);
    let (cfg, mapping) = (cfg.to_str().unwrap(), mapping.to_str().unwrap());
    // How long a whole run takes, to kill within it.
    let data = dir.path().join("timing");
    copy(&template, &data);
    let started = Instant::now();
    assert_eq!(
        migrate(&["run", "--config", cfg, "--mapping", mapping], &data).0,
        0
    );
    let took = started.elapsed().as_millis() as u64;
    assert_eq!(migrate(&["rollback", "--config", cfg], &data).0, 0);
    let mut rng = Rng::new(5);
    let mut cut = 0;
    for round in 0..10 {
        let data = dir.path().join(format!("round-{round}"));
        copy(&template, &data);
        let mut child = migrate_cmd(&["run", "--config", cfg, "--mapping", mapping], &data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(took + 1)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            cut += 1;
        }
        let (_, status, _) = migrate(&["status", "--json"], &data);
        if serde_json::from_str::<Value>(&status).unwrap()["phase"] == "running" {
            let out = Command::new(BIN)
                .args(["serve", "--port", "0", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "round {round}: a server started mid-migration"
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("vectorizer migrate run"),
                "round {round}"
            );
        }
        if round % 2 == 0 {
            let (code, _, err) = migrate(&["run", "--config", cfg, "--mapping", mapping], &data);
            assert_eq!(code, 0, "round {round}: {err}");
            assert_eq!(
                without_hub_ids(logical(&data)),
                moved(&before, &hub),
                "round {round}"
            );
            assert_eq!(hub.collections(&hub.users[0]).len(), 2, "round {round}");
            assert_eq!(hub.collections(&hub.users[1]).len(), 2, "round {round}");
        }
        let (code, _, err) = migrate(&["rollback", "--config", cfg], &data);
        // A run killed before it began has nothing to roll back.
        let (_, status, _) = migrate(&["status", "--json"], &data);
        let phase = serde_json::from_str::<Value>(&status).unwrap()["phase"].clone();
        assert!(code == 0 || phase == "none", "round {round}: {err}");
        assert_eq!(
            logical(&data).keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "round {round}: rollback {code} {err} phase {phase}"
        );
        assert_eq!(logical(&data), before, "round {round}");
        assert!(hub.collections(&hub.users[0]).is_empty(), "round {round}");
        assert!(hub.collections(&hub.users[1]).is_empty(), "round {round}");
    }
    assert!(cut > 0, "no kill landed during a run");
}

fn copy(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A collection a tenant deleted after the run comes back from the backup
/// on rollback, as it was before the run.
#[test]
fn rollback_restores_from_the_backup_what_was_deleted_since() {
    let dir = TempDir::new("migrate-deleted");
    let data = dir.path().join("data");
    populate(&data);
    let before = logical(&data);
    let hub = hub(dir.path());
    let (cfg, on, mapping) = files(dir.path(), &hub);
    let (cfg, mapping) = (cfg.to_str().unwrap(), mapping.to_str().unwrap());
    assert_eq!(
        migrate(&["run", "--config", cfg, "--mapping", mapping], &data).0,
        0
    );
    let (server, addr) = serve(&data, Some(&on));
    let (s, b) = call(
        &mut Client::new(addr),
        Some(&hub.keys[0]),
        "DELETE",
        "/collections/misc",
        Value::Null,
    );
    assert_eq!(s, 200, "{b}");
    term(server);
    assert!(!logical(&data).keys().any(|n| n.ends_with(":misc")));
    let (code, _, err) = migrate(&["rollback", "--config", cfg], &data);
    assert_eq!(code, 0, "{err}");
    assert_eq!(logical(&data), before);
    assert!(hub.collections(&hub.users[0]).is_empty());
    assert!(hub.collections(&hub.users[1]).is_empty());
}
