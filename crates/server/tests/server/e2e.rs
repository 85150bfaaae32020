//! The real binary on a free port: create, upsert, search, SIGTERM,
//! restart, and the same answers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::http::Client;
use vectorizer_testkit::{Rng, TempDir};

pub(crate) struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

pub(crate) fn start(data: &std::path::Path) -> Server {
    start_with(data, &[])
}

fn start_with(data: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let args = ["serve", "--port", "0", "--data-dir", data.to_str().unwrap()];
    spawn(&args, env, "vectorizer listening on http://", None)
}

/// Starts `vectorizer <args>` with `env` (its log to `log`, or nowhere)
/// and reads the address its first line gives after `prefix`.
pub(crate) fn spawn(
    args: &[&str],
    env: &[(&str, &str)],
    prefix: &str,
    log: Option<&std::path::Path>,
) -> Server {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args(args)
        .env("VECTORIZER_LOGGING__LEVEL", "warn")
        // Collections closed and reopened all the time.
        .env("VECTORIZER_STORAGE__MAX_OPEN_COLLECTIONS", "2")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

impl Server {
    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(code) = self.child.try_wait().unwrap() {
                assert!(code.success(), "exit status {code}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers(c: &mut Client, queries: &[Vec<f32>]) -> Vec<Value> {
    queries
        .iter()
        .map(|q| {
            let r = c
                .json("POST", "/collections/e2e/search", &json!({"vector": q, "limit": 5, "filter": {"must_not": [{"key": "g", "match": {"value": 3}}]}}))
                .unwrap();
            assert_eq!(r.status, 200);
            r.json()["results"].clone()
        })
        .collect()
}

#[test]
fn serve_stop_restart_same_answers() {
    let data = TempDir::new("e2e");
    let mut rng = Rng::new(8);
    let queries: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..8).map(|_| rng.normal()).collect())
        .collect();
    let server = start(data.path());
    let mut c = Client::new(server.addr);
    let r = c
        .json(
            "POST",
            "/collections",
            &json!({"name": "e2e", "dimension": 8, "metric": "euclidean"}),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for b in 0..5 {
        let points: Vec<Value> = (0..100)
            .map(|i| json!({"id": b * 100 + i, "vector": (0..8).map(|_| rng.normal()).collect::<Vec<f32>>(), "payload": {"g": i % 5}}))
            .collect();
        let r = c
            .json(
                "POST",
                "/collections/e2e/points",
                &json!({"points": points}),
            )
            .unwrap();
        assert_eq!(r.json(), json!({"upserted": 100}));
    }
    // Approximate answers are reproducible for the same graph: let the
    // background indexing finish before taking the reference answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c
        .request("GET", "/collections/e2e", None, &[])
        .unwrap()
        .json()["unindexed_points"]
        != 0
    {
        assert!(Instant::now() < deadline, "indexing did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c
        .request("GET", "/health", None, &[("x-request-id", "e2e-1")])
        .unwrap();
    assert_eq!(r.header("x-request-id"), Some("e2e-1"));
    let before = answers(&mut c, &queries);
    assert!(before.iter().all(|a| a.as_array().unwrap().len() == 5));
    server.stop();

    let server = start(data.path());
    let mut c = Client::new(server.addr);
    let r = c.request("GET", "/collections/e2e", None, &[]).unwrap();
    assert_eq!(r.json()["points"], 500);
    assert_eq!(r.json()["unindexed_points"], 0);
    assert_eq!(answers(&mut c, &queries), before);
    server.stop();
}

/// A client that never finishes its request headers is cut off.
#[test]
fn slow_headers_are_cut_off() {
    use std::io::{Read, Write};
    let data = TempDir::new("e2e-slow");
    let server = start_with(
        data.path(),
        &[("VECTORIZER_SERVER__HEADER_READ_TIMEOUT_SECONDS", "1")],
    );
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
    // Longer than the configured second, shorter than the 10 s default: the
    // server must close first, and only the configured value makes it.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    assert!(
        closed.is_ok(),
        "the server kept the connection open: {closed:?}"
    );
    // A complete request on a new connection is still served.
    let mut c = Client::new(server.addr);
    assert_eq!(c.request("GET", "/health", None, &[]).unwrap().status, 200);
    server.stop();
}

/// `vectorizer hub-dev` manages a local Hub's plans, users and keys; a key
/// is printed once and never stored in clear; serving needs a service key.
#[test]
fn hub_dev_cli() {
    let dir = TempDir::new("hub-cli");
    let data = dir.path().join("hub.json");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
            .arg("hub-dev")
            .arg("--data")
            .arg(&data)
            .args(args)
            .env_remove("HIVEHUB_SERVICE_API_KEY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        run(&[
            "plan",
            "free",
            "--max-collections",
            "2",
            "--max-vectors",
            "100",
            "--max-storage-bytes",
            "1000"
        ])
        .0
    );
    let (ok, user, _) = run(&["user", "a@example.com", "--plan", "free"]);
    assert!(ok);
    let user = user.trim().to_owned();
    let (ok, out, _) = run(&["key", "--user", &user, "--permissions", "read"]);
    assert!(ok);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("access key (shown once): "))
        .unwrap()
        .to_owned();
    assert!(key.len() > 40);
    assert!(!std::fs::read_to_string(&data).unwrap().contains(&key));
    let (ok, _, err) = run(&["user", "b@example.com", "--plan", "gold"]);
    assert!(!ok && err.contains("no plan gold"), "{err}");
    // An existing user: its id, so a setup script can run again.
    let (ok, again, err) = run(&["user", "A@example.com", "--plan", "free"]);
    assert!(ok && err.contains("exists already"), "{err}");
    assert_eq!(again.trim(), user);
    // What the local Hub holds, listed (a key by its id, never in clear).
    let (ok, plans, _) = run(&["plans"]);
    assert!(ok);
    assert_eq!(
        plans.trim(),
        "free\tmax_collections=2\tmax_vectors=100\tmax_storage_bytes=1000"
    );
    let (ok, users, _) = run(&["users"]);
    assert!(ok);
    assert_eq!(users.trim(), format!("{user}\ta@example.com\tplan=free"));
    let (ok, keys, _) = run(&["keys", "--user", &user]);
    assert!(ok);
    let key_id = out
        .lines()
        .find_map(|l| l.strip_prefix("access key id: "))
        .unwrap();
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(
        keys.starts_with(&format!("{key_id}\tuser={user}\t")),
        "{keys}"
    );
    assert!(keys.contains("permissions=read\tactive"), "{keys}");
    assert!(!keys.contains(&key));
    let (ok, none, _) = run(&["keys", "--user", &uuid_nil()]);
    assert!(ok && none.is_empty());
    let (ok, _, err) = run(&["key", "--user", "a@example.com"]);
    assert!(!ok && err.contains("--user takes a user id"), "{err}");
    let (ok, _, err) = run(&[
        "key",
        "--user",
        &user,
        "--expires-at",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(!ok && err.contains("has passed already"), "{err}");
    let (ok, _, err) = run(&["key", "--user", &user, "--permissions", "read,fly"]);
    assert!(!ok && err.contains("`fly` is not one of"), "{err}");
    let (ok, _, err) = run(&["serve", "--port", "0"]);
    assert!(!ok && err.contains("HIVEHUB_SERVICE_API_KEY"), "{err}");
}

fn uuid_nil() -> String {
    "00000000-0000-0000-0000-000000000000".to_owned()
}

/// With the Hub enabled and no service key, the boot stops and says why.
#[test]
fn hub_enabled_without_a_service_key_stops_the_boot() {
    let data = TempDir::new("e2e-nokey");
    let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data.path())
        .env("VECTORIZER_HUB__ENABLED", "true")
        .env_remove("HIVEHUB_SERVICE_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HIVEHUB_SERVICE_API_KEY"), "{err}");
}

/// `vectorizer serve --local-hub` on `data`, with an operator token.
pub(crate) fn start_local_hub(data: &std::path::Path) -> Server {
    start_local_hub_logged(data, None)
}

/// As [`start_local_hub`], its log (at `warn`) appended to `log`.
pub(crate) fn start_local_hub_logged(
    data: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Server {
    let stderr = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap(),
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args(["serve", "--port", "0", "--local-hub", "--data-dir"])
        .arg(data)
        .env("VECTORIZER_LOGGING__LEVEL", "warn")
        .env("VECTORIZER_OPERATOR_TOKEN", "operator-secret-token")
        .env_remove("HIVEHUB_SERVICE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(a) = line.strip_prefix("vectorizer listening on http://") {
            break a.parse().unwrap();
        }
    };
    Server { child, addr }
}

/// Runs `vectorizer <args>`, which must succeed; its standard output.
pub(crate) fn cli_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args(args)
        .output()
        .unwrap();
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "vectorizer {}: {}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `vectorizer hub-dev` on the local Hub's file in `data`; its output.
pub(crate) fn hub_dev(data: &std::path::Path, args: &[&str]) -> String {
    let file = data.join("hub.json");
    let mut all = vec!["hub-dev", "--data", file.to_str().unwrap()];
    all.extend_from_slice(args);
    cli_ok(&all)
}

/// A user of the local Hub in `data` on plan `free` (made if missing),
/// and an access key of theirs with every permission.
pub(crate) fn local_hub_user(data: &std::path::Path, email: &str) -> (String, String) {
    hub_dev(
        data,
        &[
            "plan",
            "free",
            "--max-collections",
            "5",
            "--max-vectors",
            "1000",
            "--max-storage-bytes",
            "1000000",
        ],
    );
    let user = hub_dev(data, &["user", email, "--plan", "free"])
        .trim()
        .to_owned();
    let key_out = hub_dev(data, &["key", "--user", &user]);
    let key = key_out
        .lines()
        .find_map(|l| l.strip_prefix("access key (shown once): "))
        .unwrap()
        .to_owned();
    (user, key)
}

/// `vectorizer serve --local-hub`: one command, multi-tenant, keys made
/// with `vectorizer hub-dev` while it runs.
#[test]
fn one_command_multi_tenant_with_the_local_hub() {
    let data = TempDir::new("e2e-localhub");
    let server = start_local_hub(data.path());
    let (_, key) = local_hub_user(data.path(), "a@example.com");

    let mut c = Client::new(server.addr);
    assert_eq!(
        c.request("GET", "/collections", None, &[]).unwrap().status,
        401
    );
    let auth = format!("Bearer {key}");
    let body =
        serde_json::to_vec(&json!({"name": "docs", "dimension": 2, "metric": "cosine"})).unwrap();
    let r = c
        .request(
            "POST",
            "/collections",
            Some(&body),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = c
        .request("GET", "/collections", None, &[("authorization", &auth)])
        .unwrap();
    assert_eq!(r.json()["collections"][0]["name"], "docs");
    // Without credentials /health tells liveness only; the operator
    // token shows the details.
    assert_eq!(
        c.request("GET", "/health", None, &[]).unwrap().json(),
        json!({"status": "ok"})
    );
    let full = c
        .request(
            "GET",
            "/health",
            None,
            &[("authorization", "Bearer operator-secret-token")],
        )
        .unwrap()
        .json();
    assert_eq!(full["hub"], "up", "{full}");
    // Metrics are private with the Hub on: not for a tenant's key.
    let r = c
        .request("GET", "/metrics", None, &[("authorization", &auth)])
        .unwrap();
    assert_eq!(r.status, 401);
    let r = c
        .request(
            "GET",
            "/metrics",
            None,
            &[("authorization", "Bearer operator-secret-token")],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    // Data files and the local Hub's state are the server's alone.
    use std::os::unix::fs::PermissionsExt;
    for p in [
        data.path().join("hub.json"),
        data.path().join("collections"),
        data.path().join("hub-nonces.log"),
    ] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}", p.display());
    }
    server.stop();
}

/// The server is killed with usage reports pending (the Hub refusing them):
/// after a restart every figure reaches the Hub, a deletion included.
#[test]
fn pending_usage_survives_sigkill() {
    let dir = TempDir::new("e2e-usage");
    let hub_file = dir.path().join("hub.json");
    let bin = env!("CARGO_BIN_EXE_vectorizer");
    let cli = |args: &[&str]| hub_dev(dir.path(), args);
    cli(&[
        "plan",
        "p",
        "--max-collections",
        "5",
        "--max-vectors",
        "1000",
        "--max-storage-bytes",
        "100000000",
    ]);
    let user = cli(&["user", "k@example.com", "--plan", "p"])
        .trim()
        .to_owned();
    let key = cli(&["key", "--user", &user])
        .lines()
        .find_map(|l| l.strip_prefix("access key (shown once): "))
        .unwrap()
        .to_owned();
    let mut hub = Command::new(bin)
        .args(["hub-dev", "--data"])
        .arg(&hub_file)
        .args(["serve", "--port", "0"])
        .env("HIVEHUB_SERVICE_API_KEY", "svc")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hub.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let hub_addr: SocketAddr = line
        .trim()
        .strip_prefix("local hub listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let hub_call = |method: &str, path: &str, body: Option<Value>| {
        let b = body.map(|b| b.to_string().into_bytes());
        Client::new(hub_addr)
            .request(
                method,
                path,
                b.as_deref(),
                &[
                    ("x-service-key", "svc"),
                    ("content-type", "application/json"),
                ],
            )
            .unwrap()
            .json()
    };
    let at_hub = || -> Vec<(String, u64)> {
        let v = hub_call(
            "GET",
            &format!("/api/internal/vectorizer/users/{user}/collections"),
            None,
        );
        let mut out: Vec<(String, u64)> = v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["collection_name"].as_str().unwrap().to_owned(),
                    c["vector_count"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let until = |want: Vec<(&str, u64)>| {
        let want: Vec<(String, u64)> = want.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        for _ in 0..500 {
            if at_hub() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the hub holds {:?}, not {want:?}", at_hub());
    };
    let env = [
        ("HIVEHUB_SERVICE_API_KEY", "svc"),
        ("VECTORIZER_HUB__ENABLED", "true"),
        ("VECTORIZER_HUB__API_URL", &format!("http://{hub_addr}")),
        ("VECTORIZER_HUB__RETRIES", "0"),
    ];
    let data = dir.path().join("data");
    let server = start_with(&data, &env);
    let mut c = Client::new(server.addr);
    let auth = format!("Bearer {key}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for name in ["a", "b"] {
        let body = json!({"name": name, "dimension": 2, "metric": "dot"})
            .to_string()
            .into_bytes();
        assert_eq!(
            c.request("POST", "/collections", Some(&body), &h)
                .unwrap()
                .status,
            201
        );
    }
    let pts = |first: u64, n: u64| {
        json!({"points": (first..first + n).map(|i| json!({"id": i, "vector": [1.0, 0.5]})).collect::<Vec<_>>()}).to_string().into_bytes()
    };
    assert_eq!(
        c.request("POST", "/collections/a/points", Some(&pts(0, 10)), &h)
            .unwrap()
            .status,
        200
    );
    until(vec![("a", 10), ("b", 0)]);

    // The Hub refuses everything; changes pile up; the server is killed.
    hub_call(
        "POST",
        "/api/dev/faults",
        Some(json!({"status": 503, "count": 1_000_000})),
    );
    assert_eq!(
        c.request("POST", "/collections/a/points", Some(&pts(100, 5)), &h)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("DELETE", "/collections/b", None, &h)
            .unwrap()
            .status,
        200
    );
    let outbox = data.join("usage-outbox.json");
    for _ in 0..500 {
        if std::fs::read_to_string(&outbox).is_ok_and(|s| s.contains("Deleted")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::read_to_string(&outbox)
            .unwrap()
            .contains("Deleted")
    );
    drop(server); // SIGKILL
    hub_call("POST", "/api/dev/faults", Some(json!({"count": 0})));
    assert_eq!(
        at_hub(),
        vec![("a".to_owned(), 10), ("b".to_owned(), 0)],
        "nothing arrived while it was down"
    );

    let server = start_with(&data, &env);
    until(vec![("a", 15)]);
    server.stop();
    let _ = hub.kill();
    let _ = hub.wait();
}

/// SIGTERM while heavy requests run (about 10 s of CPU work on 2 cores):
/// the process exits within the shutdown timeout (2 s here, with 1 s of
/// slack for a loaded machine) instead of waiting for the work to end.
#[test]
fn sigterm_exits_on_time_while_work_runs() {
    let data = TempDir::new("e2e-term");
    let server = start_with(
        data.path(),
        &[("VECTORIZER_SERVER__SHUTDOWN_TIMEOUT_SECONDS", "2")],
    );
    let mut c = Client::new(server.addr);
    let r = c
        .json(
            "POST",
            "/collections",
            &json!({"name": "t", "dimension": 2, "metric": "euclidean"}),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    for b in 0..30u64 {
        let pts: Vec<Value> = (b * 10_000..(b + 1) * 10_000)
            .map(|i| json!({"id": i, "vector": [1.0, i as f32], "payload": {"t": i}}))
            .collect();
        let r = c
            .json("POST", "/collections/t/points", &json!({"points": pts}))
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let conds: Vec<Value> = (0..256)
        .map(|i| json!({"key": "t", "match": {"any": (0..64).map(|j| -1 - i * 64 - j).collect::<Vec<i64>>()}}))
        .collect();
    let heavy = json!({"filter": {"should": conds}});
    let addr = server.addr;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let heavy = heavy.clone();
            std::thread::spawn(move || {
                let _ = Client::new(addr).json("POST", "/collections/t/points/count", &heavy);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut server = server;
    let child = &mut server.child;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    drop(server);
    for w in workers {
        let _ = w.join();
    }
    // Every acknowledged point is there after a restart.
    let server = start(data.path());
    let r = Client::new(server.addr)
        .request("GET", "/collections/t", None, &[])
        .unwrap();
    assert_eq!(r.json()["points"], 300_000);
    server.stop();
}

/// check-config refuses what serve would: the Hub on without its key, a
/// short API key.
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = TempDir::new("e2e-check");
    let file = dir.path().join("c.yml");
    std::fs::write(&file, "hub:\n  enabled: true\n").unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
            .args(["check-config", "--config"])
            .arg(&file)
            .env_remove("HIVEHUB_SERVICE_API_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("HIVEHUB_SERVICE_API_KEY"), "{err}");
    let (code, _) = run(&[("HIVEHUB_SERVICE_API_KEY", "k")]);
    assert_eq!(code, Some(0));
    let (code, err) = run(&[
        ("HIVEHUB_SERVICE_API_KEY", "k"),
        ("VECTORIZER_OPERATOR_TOKEN", "short"),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("at least 16"), "{err}");
}

/// A second server on a data directory in use says so (not "internal
/// error"), and a server that cannot bind its port creates no directory.
#[test]
fn boot_failures_say_what_is_wrong_and_touch_nothing() {
    let data = TempDir::new("e2e-inuse");
    let first = start(data.path());
    let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Said once, after the version line.
    assert_eq!(err.matches("in use by another process").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "vectorizer {} starting",
            env!("CARGO_PKG_VERSION")
        )),
        "{err}"
    );
    assert!(!err.contains("internal"), "{err}");
    // The first server's port is taken: the second one fails to bind and
    // leaves no data directory behind.
    let fresh = data.path().join("never");
    let out = Command::new(env!("CARGO_BIN_EXE_vectorizer"))
        .args([
            "serve",
            "--port",
            &first.addr.port().to_string(),
            "--data-dir",
        ])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("binding"));
    assert!(!fresh.exists());
    first.stop();
}
