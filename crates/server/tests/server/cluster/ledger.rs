//! Cluster mode: three release processes on 127.0.0.1 with the local Hub
//! over HTTP, through kills, a full stop, a frozen leader, a partitioned
//! minority, a quota race, cross-user attempts, forged internal calls, and
//! a follower that must catch up from a snapshot. A ledger records every
//! write as acknowledged, refused (4xx) or unknown (no answer, 5xx); at
//! each full stop every node's replicas are read from disk and every
//! acknowledged write must be there, no refused one, every batch whole or
//! absent, each user within its plan, and the replicas of each shard equal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::TempDir;

const SVC: &str = "svc-cluster-0123456789";
const SECRET: &str = "cluster-secret-0123456789abcdef-0123";
const OPERATOR: &str = "operator-token-cluster-0123";
const SHARDS: u32 = 2;
/// User C's plan: few vectors, two collections.
const C_VECTORS: u64 = 60;

/// The optimised binary: Raft's timings are those of a deployment, not of
/// an unoptimised build on a loaded machine. Built here if missing or stale
/// (a no-op when `.ci/run` built it first).
fn release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--bin",
                "vectorizer",
            ])
            .current_dir(&root);
        // The variables cargo sets for this test (CARGO_PKG_*, ...) would
        // make the build differ from one run from a shell, and so rebuild.
        for (k, _) in std::env::vars() {
            let keep = ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_TERM_COLOR"].contains(&k.as_str())
                || k.starts_with("CARGO_BUILD_")
                || k.starts_with("CARGO_NET_")
                || k.starts_with("CARGO_REGISTRIES_");
            if (k == "CARGO" || k.starts_with("CARGO_")) && !keep {
                build.env_remove(&k);
            }
        }
        let started = Instant::now();
        let status = build.status().unwrap();
        eprintln!(
            "cluster test: release binary ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(status.success(), "building the release binary failed");
        let debug = Path::new(env!("CARGO_BIN_EXE_vectorizer"));
        debug
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("release/vectorizer")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and reads the address its first line gives.
fn spawn(args: &[&str], prefix: &str, log: &Path) -> (Child, SocketAddr) {
    use std::io::BufRead;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(release_binary())
        .args(args)
        .env("HIVEHUB_SERVICE_API_KEY", SVC)
        .env("VECTORIZER_CLUSTER_SECRET", SECRET)
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .env("VECTORIZER_LOGGING__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?} of {args:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

struct Node {
    id: u64,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    internal: String,
    child: Mutex<Option<Child>>,
    addr: Mutex<SocketAddr>,
}

impl Node {
    fn start(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none());
        let (c, addr) = spawn(
            &["serve", "--config", self.config.to_str().unwrap()],
            "vectorizer listening on http://",
            &self.log,
        );
        *child = Some(c);
        *self.addr.lock().unwrap() = addr;
    }

    /// SIGKILL.
    fn kill(&self) {
        let mut c = self.child.lock().unwrap().take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn signal(&self, sig: &str) {
        signal(self.child.lock().unwrap().as_ref().expect("running"), sig);
    }

    fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap()
    }

    /// SIGTERM, and a clean exit.
    fn stop(&self) {
        let mut c = self.child.lock().unwrap().take().expect("running");
        signal(&c, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(code) = c.try_wait().unwrap() {
                assert!(code.success(), "node {} exited with {code}", self.id);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} ignored SIGTERM",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn up(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused,
    Unknown,
}

#[derive(Debug, Clone)]
struct Write {
    user: usize,
    collection: String,
    ids: Vec<u64>,
    outcome: Outcome,
}

struct Cluster {
    nodes: Vec<Node>,
    hub: Child,
    hub_addr: SocketAddr,
    _dir: TempDir,
    users: Vec<(uuid::Uuid, String)>,
    http: reqwest::Client,
    ledger: Mutex<Vec<Write>>,
    next_id: AtomicU64,
}

/// An HTTP answer, or none (timeout, refused connection).
type Answer = Option<(u16, Value)>;

impl Cluster {
    fn new() -> Cluster {
        let dir = TempDir::new("cluster");
        let hub_file = dir.path().join("hub.json");
        let dev = |args: &[&str]| {
            let out = Command::new(release_binary())
                .arg("hub-dev")
                .arg("--data")
                .arg(&hub_file)
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
            "big",
            "--max-collections",
            "10",
            "--max-vectors",
            "10000000",
            "--max-storage-bytes",
            "100000000000",
        ]);
        let c_vectors = C_VECTORS.to_string();
        dev(&[
            "plan",
            "small",
            "--max-collections",
            "2",
            "--max-vectors",
            &c_vectors,
            "--max-storage-bytes",
            "100000000000",
        ]);
        let users: Vec<(uuid::Uuid, String)> =
            [("a@x.io", "big"), ("b@x.io", "big"), ("c@x.io", "small")]
                .iter()
                .map(|(mail, plan)| {
                    let id = dev(&["user", mail, "--plan", plan]);
                    let key = dev(&["key", "--user", &id, "--permissions", "admin"])
                        .lines()
                        .find_map(|l| l.strip_prefix("access key (shown once): "))
                        .unwrap()
                        .to_owned();
                    (id.parse().unwrap(), key)
                })
                .collect();
        let (hub, hub_addr) = spawn(
            &[
                "hub-dev",
                "--data",
                hub_file.to_str().unwrap(),
                "serve",
                "--port",
                "0",
            ],
            "local hub listening on http://",
            &dir.path().join("hub.log"),
        );
        let internal: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let nodes_yaml: String = internal
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    - {{id: {}, addr: \"{a}\"}}\n", i + 1))
            .collect();
        let nodes = (0..3)
            .map(|i| {
                let data = dir.path().join(format!("n{}", i + 1));
                let config = dir.path().join(format!("n{}.yml", i + 1));
                std::fs::write(
                    &config,
                    format!(
                        "server: {{port: 0}}\nstorage: {{data_dir: \"{}\"}}\nhub: {{enabled: true, api_url: \"http://{hub_addr}\"}}\ncluster:\n  node_id: {}\n  shards: {SHARDS}\n  heartbeat_ms: 100\n  election_timeout_ms: 600\n  snapshot_entries: 40\n  keep_entries: 10\n  request_timeout_seconds: 4\n  nodes:\n{nodes_yaml}",
                        data.display(),
                        i + 1
                    ),
                )
                .unwrap();
                Node {
                    id: i as u64 + 1,
                    config,
                    data,
                    log: dir.path().join(format!("n{}.log", i + 1)),
                    internal: internal[i].clone(),
                    child: Mutex::new(None),
                    addr: Mutex::new("127.0.0.1:1".parse().unwrap()),
                }
            })
            .collect();
        Cluster {
            _dir: dir,
            hub,
            hub_addr,
            nodes,
            users,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(8))
                .build()
                .unwrap(),
            ledger: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    async fn call(
        &self,
        node: usize,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let addr = self.nodes[node].addr();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(m, format!("http://{addr}{path}"))
            .bearer_auth(key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.ok()?;
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(Value::Null);
        Some((status, v))
    }

    fn key(&self, user: usize) -> &str {
        &self.users[user].1
    }

    async fn status(&self, node: usize) -> Option<Value> {
        match self.call(node, OPERATOR, "GET", "/cluster", None).await {
            Some((200, v)) => Some(v),
            _ => None,
        }
    }

    /// The group holding `user`'s data.
    fn home(&self, user: usize) -> String {
        format!(
            "shard-{}",
            vectorizer_cluster::topology::shard_of(&self.users[user].0, SHARDS)
        )
    }

    /// The group `group` as node `node` sees it.
    async fn group(&self, node: usize, group: &str) -> Option<Value> {
        let s = self.status(node).await?;
        s["groups"]
            .as_array()?
            .iter()
            .find(|g| g["group"] == group)
            .cloned()
    }

    /// The index of the node that leads `group`, as a live node that
    /// leads it says.
    async fn leader(&self, group: &str) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.up() {
                continue;
            }
            if let Some(g) = self.group(i, group).await
                && g["role"] == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self, group: &str, not: Option<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.leader(group).await
                && Some(l) != not
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader of {group} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every live node has applied every group's whole log,
    /// as its leader has it.
    async fn wait_converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        'again: loop {
            assert!(
                Instant::now() < deadline,
                "replicas did not converge within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut seen: BTreeMap<String, Vec<(Value, Value, Value)>> = BTreeMap::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.up() {
                    continue;
                }
                let Some(s) = self.status(i).await else {
                    continue 'again;
                };
                for g in s["groups"].as_array().unwrap() {
                    seen.entry(g["group"].as_str().unwrap().to_owned())
                        .or_default()
                        .push((
                            g["leader"].clone(),
                            g["last_log_index"].clone(),
                            g["applied_index"].clone(),
                        ));
                }
            }
            for views in seen.values() {
                let first = &views[0];
                if first.0.is_null() || views.iter().any(|v| v != first || v.1 != v.2) {
                    continue 'again;
                }
            }
            return;
        }
    }

    /// Upserts a batch of `n` new points for `user` through `node`, and
    /// records the outcome.
    async fn write(&self, node: usize, user: usize, collection: &str, n: u64) -> Outcome {
        let first = self.next_id.fetch_add(n, Ordering::SeqCst);
        let ids: Vec<u64> = (first..first + n).collect();
        let points: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "vector": [1.0, (*id % 7) as f32, 0.5, -(*id as f32) / 100.0], "payload": {"w": first}}))
            .collect();
        let path = format!("/collections/{collection}/points");
        let outcome = match self
            .call(
                node,
                self.key(user),
                "POST",
                &path,
                Some(json!({"points": points})),
            )
            .await
        {
            Some((200, _)) => Outcome::Acked,
            Some((s, v)) if (400..500).contains(&s) => {
                assert!(
                    s == 429 && v["error"]["code"] == "quota_exceeded",
                    "a write was refused with {s} {v}"
                );
                Outcome::Refused
            }
            _ => Outcome::Unknown,
        };
        self.ledger.lock().unwrap().push(Write {
            user,
            collection: collection.to_owned(),
            ids,
            outcome,
        });
        outcome
    }

    fn acked(&self, user: usize) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.user == user && w.outcome == Outcome::Acked)
            .count()
    }

    /// Writers for `users`, each through a random live node, until
    /// `stop` is set.
    fn writers(
        self: &Arc<Self>,
        users: &[(usize, &'static str)],
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        users
            .iter()
            .map(|&(user, coll)| {
                let (c, stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut turn = user;
                    while !stop.load(Ordering::SeqCst) {
                        turn += 1;
                        let live: Vec<usize> = c.live();
                        let node = live[turn % live.len()];
                        c.write(node, user, coll, 5).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect()
    }

    /// Live nodes (a node is told apart from a frozen one by the caller
    /// through `frozen`).
    fn live(&self) -> Vec<usize> {
        let frozen = FROZEN.lock().unwrap();
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up() && !frozen.contains(i))
            .collect()
    }

    /// Stops every node, reads every replica from disk and checks the
    /// ledger against it, then starts the nodes again.
    async fn verify_offline(&self) {
        self.wait_converged().await;
        for n in &self.nodes {
            n.stop();
        }
        let mut shard_states: Vec<BTreeMap<String, Value>> = Vec::new();
        for s in 0..SHARDS {
            let replicas: Vec<BTreeMap<String, Value>> = self
                .nodes
                .iter()
                .map(|n| crate::migrate::logical(&n.data.join(format!("shards/{s}"))))
                .collect();
            for (i, r) in replicas.iter().enumerate().skip(1) {
                assert!(
                    r == &replicas[0],
                    "shard {s}: node {} differs from node 1",
                    i + 1
                );
            }
            shard_states.push(replicas.into_iter().next().unwrap());
        }
        let mut points: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
        for state in &shard_states {
            for (name, c) in state {
                let p = points.entry(name.clone()).or_default();
                for row in c["points"].as_array().unwrap() {
                    p.insert(row[0].as_str().unwrap().parse().unwrap(), row[2].clone());
                }
            }
        }
        let ledger = self.ledger.lock().unwrap().clone();
        for w in &ledger {
            let name =
                vectorizer_service::caller::stored_name(&self.users[w.user].0, &w.collection);
            let held = points.get(&name);
            let present = w
                .ids
                .iter()
                .filter(|id| held.is_some_and(|p| p.get(id) == Some(&json!({"w": w.ids[0]}))))
                .count();
            match w.outcome {
                Outcome::Acked => assert_eq!(
                    present,
                    w.ids.len(),
                    "an acknowledged write is missing: {w:?}"
                ),
                Outcome::Refused => assert_eq!(present, 0, "a refused write is present: {w:?}"),
                Outcome::Unknown => assert!(
                    present == 0 || present == w.ids.len(),
                    "a batch is partly present: {w:?}"
                ),
            }
        }
        let c_points: usize = points
            .iter()
            .filter(|(name, _)| {
                name.starts_with(&vectorizer_service::caller::stored_name(
                    &self.users[2].0,
                    "",
                ))
            })
            .map(|(_, p)| p.len())
            .sum();
        assert!(
            c_points as u64 <= C_VECTORS,
            "user C holds {c_points} points, over its plan"
        );
        for n in &self.nodes {
            n.start();
        }
        for s in 0..SHARDS {
            self.wait_leader(&format!("shard-{s}"), None).await;
        }
        self.wait_leader("meta", None).await;
    }
}

impl Cluster {
    /// The user's collections as the Hub knows them: name and vectors.
    async fn hub_collections(&self, user: usize) -> BTreeMap<String, Value> {
        let url = format!(
            "http://{}/api/internal/vectorizer/users/{}/collections",
            self.hub_addr, self.users[user].0
        );
        let v: Value = self
            .http
            .get(url)
            .header("x-service-key", SVC)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["collection_name"].as_str().unwrap().to_owned(),
                    c["vector_count"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.hub.kill();
        let _ = self.hub.wait();
    }
}

/// Nodes frozen with SIGSTOP (writers leave them alone).
static FROZEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn freeze(c: &Cluster, i: usize) {
    c.nodes[i].signal("-STOP");
    FROZEN.lock().unwrap().push(i);
}

fn thaw(c: &Cluster, i: usize) {
    c.nodes[i].signal("-CONT");
    FROZEN.lock().unwrap().retain(|f| *f != i);
}

async fn create(c: &Cluster, node: usize, user: usize, name: &str) -> u16 {
    let body = json!({"name": name, "dimension": 4, "metric": "cosine"});
    c.call(node, c.key(user), "POST", "/collections", Some(body))
        .await
        .map_or(0, |(s, _)| s)
}

/// Signs an internal call as a node with `secret` would.
/// Signs a forward with `secret` for node `to` (none: unsigned).
fn signed_call(
    secret: Option<&str>,
    to: u64,
    body: &Value,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let raw = serde_json::to_vec(body).unwrap();
    let Some(secret) = secret else {
        return (raw, Vec::new());
    };
    let s = vectorizer_cluster::sign::Signer::new(secret).unwrap().sign(
        9,
        to,
        "POST",
        "/internal/forward/1",
        &raw,
    );
    let h = vec![
        ("x-vz-node", s.node),
        ("x-vz-to", s.to),
        ("x-vz-time", s.time),
        ("x-vz-nonce", s.nonce),
        ("x-vz-head", s.head),
        ("x-vz-signature", s.signature),
    ];
    (raw, h)
}

/// Sends a forward to node `node`'s internal port; its status.
async fn internal_call(
    c: &Cluster,
    node: usize,
    call: &(Vec<u8>, Vec<(&'static str, String)>),
) -> u16 {
    let mut rb = c
        .http
        .post(format!(
            "http://{}/internal/forward/1",
            c.nodes[node].internal
        ))
        .header("content-type", "application/json");
    for (k, v) in &call.1 {
        rb = rb.header(*k, v);
    }
    rb.body(call.0.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Cross-user reads and writes through every node are 404s; internal
/// calls without the secret are 401s (and one with it is not).
async fn isolation(c: &Cluster) {
    for node in c.live() {
        for (m, path, body) in [
            ("GET", "/collections/secret-a", None),
            (
                "POST",
                "/collections/secret-a/search",
                Some(json!({"vector": [1, 0, 0, 0], "limit": 3})),
            ),
            (
                "POST",
                "/collections/secret-a/points",
                Some(json!({"points": [{"id": 1, "vector": [1, 0, 0, 0]}]})),
            ),
            ("DELETE", "/collections/secret-a", None),
        ] {
            let got = c.call(node, c.key(1), m, path, body).await;
            assert_eq!(
                got.as_ref().map(|g| g.0),
                Some(404),
                "{m} {path} as B through node {}: {got:?}",
                node + 1
            );
            assert_eq!(got.unwrap().1["error"]["code"], "collection_not_found");
        }
        let (s, v) = c
            .call(node, c.key(0), "GET", "/collections/secret-a", None)
            .await
            .unwrap();
        assert_eq!(
            (s, v["name"].clone()),
            (200, json!("secret-a")),
            "A's own collection through node {}",
            node + 1
        );
        // B's own "docs" is B's, not A's, through every node.
        let (s, v) = c
            .call(
                node,
                c.key(1),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        let (_, a) = c
            .call(
                node,
                c.key(0),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        assert_eq!(s, 200);
        assert_ne!(v["count"], a["count"], "A and B see the same `docs`");
        // A forged forward: A's tenant, aimed at A's data.
        let forged = json!({"kind": "read", "cmd": {"owner": c.users[0].0, "caller": {"Tenant": {"user_id": c.users[0].0, "access_key_id": c.users[0].0, "project_id": null, "permissions": ["admin"], "plan": "big"}}, "op": {"op": "list_collections"}, "limits": null}});
        let id = c.nodes[node].id;
        let refused = [
            ("unsigned", signed_call(None, id, &forged)),
            (
                "forged",
                signed_call(Some("another-secret-0123456789abcdef01"), id, &forged),
            ),
            (
                "for another node",
                signed_call(Some(SECRET), id % 3 + 1, &forged),
            ),
        ];
        for (what, call) in &refused {
            assert_eq!(
                internal_call(c, node, call).await,
                401,
                "{what}, node {}",
                node + 1
            );
        }
        let genuine = signed_call(Some(SECRET), id, &forged);
        assert_eq!(
            internal_call(c, node, &genuine).await,
            200,
            "signed, node {}",
            node + 1
        );
        assert_eq!(
            internal_call(c, node, &genuine).await,
            401,
            "replayed, node {}",
            node + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_keeps_every_acknowledged_write() {
    let cluster = Cluster::new();
    for n in &cluster.nodes {
        n.start();
    }
    for s in 0..SHARDS {
        cluster.wait_leader(&format!("shard-{s}"), None).await;
    }
    cluster.wait_leader("meta", None).await;
    let (a, b, cu) = (0, 1, 2);
    for (user, name) in [(a, "docs"), (b, "docs"), (a, "secret-a"), (cu, "tiny")] {
        assert_eq!(
            create(&cluster, user, user, name).await,
            201,
            "create {name}"
        );
    }
    let home_a = cluster.home(a);
    let started = Instant::now();
    let phase = |n: &str| {
        eprintln!(
            "cluster test: {n} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };

    phase("1");
    // 1. SIGKILL the leader of A's shard 20 times under A's and B's writes.
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = cluster.writers(&[(a, "docs"), (b, "docs")], &stop);
    for round in 0..20 {
        let leader = cluster.wait_leader(&home_a, None).await;
        let before = cluster.acked(a);
        cluster.nodes[leader].kill();
        let next = cluster.wait_leader(&home_a, Some(leader)).await;
        assert_ne!(next, leader);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.acked(a) == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no write acknowledged after the kill"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.nodes[leader].start();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    phase("2");
    // 2. Stop every node and start them again (the ledger is checked on
    // every replica's disk meanwhile).
    cluster.verify_offline().await;
    let counted = cluster
        .call(
            0,
            cluster.key(a),
            "POST",
            "/collections/docs/points/count",
            Some(json!({})),
        )
        .await
        .unwrap();
    let acked_points: usize = 5 * cluster.acked(a);
    assert!(counted.1["count"].as_u64().unwrap() as usize >= acked_points);

    phase("3");
    // 3. Freeze A's leader for 10 s: the others elect a leader and go on.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = cluster.writers(&[(a, "docs"), (b, "docs")], &stop);
    let leader = cluster.wait_leader(&home_a, None).await;
    freeze(&cluster, leader);
    let frozen_at = Instant::now();
    let next = cluster.wait_leader(&home_a, Some(leader)).await;
    assert_ne!(next, leader);
    let before = cluster.acked(a);
    while cluster.acked(a) < before + 3 {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(10),
            "writes did not go on while the leader was frozen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(frozen_at.elapsed())).await;
    thaw(&cluster, leader);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    cluster.wait_converged().await;
    // A leader cut off from both followers acknowledges nothing.
    let leader = cluster.wait_leader(&home_a, None).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for o in &others {
        freeze(&cluster, *o);
    }
    let cut_at = Instant::now();
    while cut_at.elapsed() < Duration::from_secs(6) {
        let got = cluster.write(leader, a, "docs", 5).await;
        assert_ne!(
            got,
            Outcome::Acked,
            "a leader without a quorum acknowledged a write"
        );
    }
    for o in &others {
        thaw(&cluster, *o);
    }
    cluster.wait_converged().await;

    phase("4");
    // 4. A quota race: three writers on three nodes for C, with a kill in
    // the middle.
    let racers: Vec<_> = (0..3)
        .map(|node| {
            let c = cluster.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                let started = Instant::now();
                while refused < 3 && started.elapsed() < Duration::from_secs(30) {
                    if !c.nodes[node].up() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    if c.write(node, cu, "tiny", 4).await == Outcome::Refused {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = cluster.wait_leader(&cluster.home(cu), None).await;
    cluster.nodes[victim].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nodes[victim].start();
    let mut refusals = 0;
    for r in racers {
        refusals += r.await.unwrap();
    }
    assert!(refusals > 0, "the small plan never refused a write");
    cluster.wait_converged().await;
    let (_, usage) = cluster
        .call(0, cluster.key(cu), "GET", "/usage", None)
        .await
        .unwrap();
    assert!(usage["vectors"].as_u64().unwrap() <= C_VECTORS, "{usage}");
    assert!(
        usage["vectors"].as_u64().unwrap() > C_VECTORS - 4,
        "the race stopped short of the limit: {usage}"
    );
    // Three creates at once on three nodes: C has room for one more.
    let creates: Vec<_> = (0..3)
        .map(|node| {
            let c = cluster.clone();
            tokio::spawn(async move { create(&c, node, cu, &format!("more-{node}")).await })
        })
        .collect();
    let mut made = 0;
    for cr in creates {
        match cr.await.unwrap() {
            201 => made += 1,
            429 => {}
            s => panic!("a create answered {s}"),
        }
    }
    assert_eq!(made, 1, "exactly one create fits the plan");
    let (_, list) = cluster
        .call(1, cluster.key(cu), "GET", "/collections", None)
        .await
        .unwrap();
    assert_eq!(list["collections"].as_array().unwrap().len(), 2);

    phase("5");
    // 5. Cross-user access and forged internal calls, before and after a
    // failover.
    isolation(&cluster).await;
    let leader = cluster.wait_leader(&home_a, None).await;
    cluster.nodes[leader].kill();
    cluster.wait_leader(&home_a, Some(leader)).await;
    isolation(&cluster).await;
    cluster.nodes[leader].start();
    cluster.wait_converged().await;

    phase("6");
    // 6. A follower kept down past the log the leader keeps catches up
    // from a snapshot.
    let leader = cluster.wait_leader(&home_a, None).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let last = cluster.group(follower, &home_a).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    cluster.nodes[follower].kill();
    for i in 0..150 {
        let node = if i % 2 == 0 {
            leader
        } else {
            3 - leader - follower
        };
        cluster.write(node, a, "docs", 5).await;
    }
    let purged = cluster.group(leader, &home_a).await.unwrap()["purged_index"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        purged > last,
        "the leader still holds the log the follower lacks ({purged} <= {last})"
    );
    cluster.nodes[follower].start();
    cluster.wait_converged().await;
    let g = cluster.group(follower, &home_a).await.unwrap();
    assert!(
        g["snapshot_index"].as_u64().unwrap_or(0) > last,
        "the follower caught up without a snapshot: {g}"
    );

    // 7. Node 3 loses its disk: node 4 takes its place, and holds what
    // the others hold.
    phase("7");
    let mut cluster = Arc::try_unwrap(cluster).ok().expect("every task ended");
    cluster.nodes[2].kill();
    std::fs::remove_dir_all(&cluster.nodes[2].data).unwrap();
    let new_addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(release_binary())
        .args([
            "cluster",
            "replace-node",
            "--url",
            &format!("http://{}", cluster.nodes[0].addr()),
        ])
        .args(["--old", "3", "--new", "4", "--addr", &new_addr])
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = &cluster.nodes[2];
    let config = std::fs::read_to_string(&old.config)
        .unwrap()
        .replace("node_id: 3", "node_id: 4")
        .replace(
            &format!("{{id: 3, addr: \"{}\"}}", old.internal),
            &format!("{{id: 4, addr: \"{new_addr}\"}}"),
        );
    assert!(config.contains("node_id: 4") && config.contains(&new_addr));
    std::fs::write(&old.config, config).unwrap();
    let replacement = Node {
        id: 4,
        config: old.config.clone(),
        data: old.data.clone(),
        log: old.log.clone(),
        internal: new_addr,
        child: Mutex::new(None),
        addr: Mutex::new("127.0.0.1:1".parse().unwrap()),
    };
    cluster.nodes[2] = replacement;
    cluster.nodes[2].start();
    cluster.wait_converged().await;
    let s = cluster.status(0).await.unwrap();
    for g in s["groups"].as_array().unwrap() {
        assert_eq!(g["members"], json!([1, 2, 4]), "{g}");
    }
    let (status, _) = cluster
        .call(2, cluster.key(a), "GET", "/cluster", None)
        .await
        .unwrap();
    assert_eq!(status, 401, "a tenant's key is not the operator's");
    // The operator's views: the CLI's status, and Raft's gauges.
    let out = Command::new(release_binary())
        .args([
            "cluster",
            "status",
            "--json",
            "--url",
            &format!("http://{}", cluster.nodes[2].addr()),
        ])
        .env("VECTORIZER_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["node"], 4);
    assert_eq!(
        shown["groups"].as_array().unwrap().len(),
        SHARDS as usize + 1
    );
    let metrics = cluster
        .http
        .get(format!("http://{}/metrics", cluster.nodes[0].addr()))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "vectorizer_raft_leader",
        "vectorizer_raft_term",
        "vectorizer_raft_applied_index",
    ] {
        assert!(
            metrics.contains(&format!("{family}{{group=\"meta\"}}")),
            "{family} missing from /metrics"
        );
    }

    // The Hub heard each collection's figures (from its shard's leader).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, counted) = cluster
            .call(
                2,
                cluster.key(a),
                "POST",
                "/collections/docs/points/count",
                Some(json!({})),
            )
            .await
            .unwrap();
        let hub = cluster.hub_collections(a).await;
        if hub.get("docs") == Some(&counted["count"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Hub has {hub:?}, the cluster {counted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    phase("end");
    // The end: every replica on disk, against the ledger.
    cluster.verify_offline().await;
    let ledger = cluster.ledger.lock().unwrap().clone();
    let count = |o| ledger.iter().filter(|w| w.outcome == o).count();
    eprintln!(
        "cluster ledger: {} acknowledged, {} refused, {} unknown",
        count(Outcome::Acked),
        count(Outcome::Refused),
        count(Outcome::Unknown)
    );
}
