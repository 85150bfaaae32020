//! Three release processes on 127.0.0.1 (and, where a test compares, one
//! standalone process) with the local Hub over HTTP: starting, stopping,
//! killing and freezing nodes, calls through any node, the groups' state
//! as each node sees it, and a ledger of writes checked against every
//! replica read from disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::TempDir;

pub(crate) const SVC: &str = "svc-cluster-0123456789";
pub(crate) const SECRET: &str = "cluster-secret-0123456789abcdef-0123";
pub(crate) const OPERATOR: &str = "operator-token-cluster-0123";
pub(crate) const SHARDS: u32 = 2;
/// User C's plan: few vectors, two collections.
pub(crate) const C_VECTORS: u64 = 60;

/// The optimised binary: Raft's timings are those of a deployment, not of
/// an unoptimised build on a loaded machine. Built here if missing or stale
/// (a no-op when `.ci/run` built it first).
pub(crate) fn release_binary() -> &'static Path {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and reads the address its first line gives.
pub(crate) fn spawn(args: &[&str], prefix: &str, log: &Path) -> (Child, SocketAddr) {
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
        // Collections closed and reopened all the time.
        .env("VECTORIZER_STORAGE__MAX_OPEN_COLLECTIONS", "2")
        // MCP bodies up to the most that may be configured, so that a tool
        // call can reach the cluster's entry bound (`large`).
        .env("VECTORIZER_MCP__MAX_BODY_BYTES", "16777216")
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

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) config: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) internal: String,
    pub(crate) child: Mutex<Option<Child>>,
    pub(crate) addr: Mutex<SocketAddr>,
}

impl Node {
    pub(crate) fn start(&self) {
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
    pub(crate) fn kill(&self) {
        let mut c = self.child.lock().unwrap().take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub(crate) fn signal(&self, sig: &str) {
        signal(self.child.lock().unwrap().as_ref().expect("running"), sig);
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap()
    }

    /// SIGTERM, and a clean exit.
    pub(crate) fn stop(&self) {
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

    pub(crate) fn up(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }
}

impl Node {
    /// Kills the process if it runs (thawed first, if frozen).
    pub(crate) fn halt(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acked,
    Refused,
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) user: usize,
    pub(crate) collection: String,
    pub(crate) ids: Vec<u64>,
    pub(crate) outcome: Outcome,
}

pub(crate) struct Cluster {
    pub(crate) shards: u32,
    /// Whether the nodes use the Hub.
    pub(crate) hub_on: bool,
    pub(crate) nodes: Vec<Node>,
    pub(crate) hub: Child,
    pub(crate) hub_addr: SocketAddr,
    pub(crate) dir: TempDir,
    pub(crate) users: Vec<(uuid::Uuid, String)>,
    pub(crate) http: reqwest::Client,
    pub(crate) ledger: Mutex<Vec<Write>>,
    pub(crate) next_id: AtomicU64,
}

/// An HTTP answer, or none (timeout, refused connection).
pub(crate) type Answer = Option<(u16, Value)>;

impl Cluster {
    pub(crate) fn new() -> Cluster {
        Cluster::with(SHARDS, true)
    }

    /// A cluster of `shards` shards, its nodes using the local Hub (`hub`)
    /// or not (then every request is the deployment's own).
    pub(crate) fn with(shards: u32, hub_on: bool) -> Cluster {
        // One cluster at a time: each runs several processes on the same
        // cores, and Raft's timers are a deployment's, not a crowd's.
        while ONE_AT_A_TIME
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
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
        let users: Vec<(uuid::Uuid, String)> = [
            ("a@x.io", "big"),
            ("b@x.io", "big"),
            ("c@x.io", "small"),
            ("d@x.io", "big"),
        ]
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
                        "server: {{port: 0}}\nstorage: {{data_dir: \"{}\"}}\nhub: {{enabled: {hub_on}, api_url: \"http://{hub_addr}\"}}\ncluster:\n  node_id: {}\n  shards: {shards}\n  heartbeat_ms: 100\n  election_timeout_ms: 600\n  snapshot_entries: 40\n  keep_entries: 10\n  request_timeout_seconds: 4\n  nodes:\n{nodes_yaml}",
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
            shards,
            hub_on,
            dir,
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

    /// Starts every node and waits for a leader of every group.
    pub(crate) async fn start(&self) {
        for n in &self.nodes {
            n.start();
        }
        for s in 0..self.shards {
            self.wait_leader(&format!("shard-{s}"), None).await;
        }
        self.wait_leader("meta", None).await;
    }

    /// The WARN and ERROR lines the nodes logged (the last 30), for a
    /// failing assertion to show.
    pub(crate) fn warnings(&self) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                out.push(format!("node {}: {line}", n.id));
            }
        }
        let skip = out.len().saturating_sub(30);
        out[skip..].join("\n")
    }

    /// A standalone node (no `cluster:` section) on the same Hub, with a
    /// data directory of its own; not started.
    pub(crate) fn standalone(&self) -> Node {
        let dir = self.dir.path();
        let data = dir.join("single");
        let config = dir.join("single.yml");
        std::fs::write(
            &config,
            format!(
                "server: {{port: 0}}\nstorage: {{data_dir: \"{}\"}}\nhub: {{enabled: {}, api_url: \"http://{}\"}}\n",
                data.display(),
                self.hub_on,
                self.hub_addr
            ),
        )
        .unwrap();
        Node {
            id: 0,
            config,
            data,
            log: dir.join("single.log"),
            internal: String::new(),
            child: Mutex::new(None),
            addr: Mutex::new("127.0.0.1:1".parse().unwrap()),
        }
    }

    pub(crate) async fn call(
        &self,
        node: usize,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        self.call_at(self.nodes[node].addr(), key, method, path, body)
            .await
    }

    /// A REST call to the server at `addr`.
    pub(crate) async fn call_at(
        &self,
        addr: SocketAddr,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
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

    pub(crate) fn key(&self, user: usize) -> &str {
        &self.users[user].1
    }

    pub(crate) async fn status(&self, node: usize) -> Option<Value> {
        match self.call(node, OPERATOR, "GET", "/cluster", None).await {
            Some((200, v)) => Some(v),
            _ => None,
        }
    }

    /// The group holding `user`'s data (with the Hub off, every request
    /// is the deployment's, whose id is nil).
    pub(crate) fn home(&self, user: usize) -> String {
        let owner = if self.hub_on {
            self.users[user].0
        } else {
            uuid::Uuid::nil()
        };
        format!(
            "shard-{}",
            vectorizer_cluster::topology::shard_of(&owner, self.shards)
        )
    }

    /// The group `group` as node `node` sees it.
    pub(crate) async fn group(&self, node: usize, group: &str) -> Option<Value> {
        let s = self.status(node).await?;
        s["groups"]
            .as_array()?
            .iter()
            .find(|g| g["group"] == group)
            .cloned()
    }

    /// The index of the node that leads `group`, as a live node that
    /// leads it says.
    pub(crate) async fn leader(&self, group: &str) -> Option<usize> {
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

    pub(crate) async fn wait_leader(&self, group: &str, not: Option<usize>) -> usize {
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
    pub(crate) async fn wait_converged(&self) {
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
    pub(crate) async fn write(
        &self,
        node: usize,
        user: usize,
        collection: &str,
        n: u64,
    ) -> Outcome {
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

    pub(crate) fn acked(&self, user: usize) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.user == user && w.outcome == Outcome::Acked)
            .count()
    }

    /// Writers for `users`, each through a random live node, until
    /// `stop` is set.
    pub(crate) fn writers(
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
    pub(crate) fn live(&self) -> Vec<usize> {
        let frozen = FROZEN.lock().unwrap();
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up() && !frozen.contains(i))
            .collect()
    }

    /// Stops every node, reads every replica from disk and checks the
    /// ledger against it, then starts the nodes again.
    pub(crate) async fn verify_offline(&self) {
        self.wait_converged().await;
        for n in &self.nodes {
            n.stop();
        }
        let mut shard_states: Vec<BTreeMap<String, Value>> = Vec::new();
        for s in 0..self.shards {
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
        for s in 0..self.shards {
            self.wait_leader(&format!("shard-{s}"), None).await;
        }
        self.wait_leader("meta", None).await;
    }
}

impl Cluster {
    /// The user's collections as the Hub knows them: name and vectors.
    pub(crate) async fn hub_collections(&self, user: usize) -> BTreeMap<String, Value> {
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
        for n in &self.nodes {
            n.halt();
        }
        FROZEN.lock().unwrap().clear();
        ONE_AT_A_TIME.store(false, Ordering::SeqCst);
    }
}

/// Whether a cluster of this test binary is up (see `Cluster::with`).
static ONE_AT_A_TIME: AtomicBool = AtomicBool::new(false);

/// Nodes frozen with SIGSTOP (writers leave them alone).
pub(crate) static FROZEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

pub(crate) fn freeze(c: &Cluster, i: usize) {
    c.nodes[i].signal("-STOP");
    FROZEN.lock().unwrap().push(i);
}

pub(crate) fn thaw(c: &Cluster, i: usize) {
    c.nodes[i].signal("-CONT");
    FROZEN.lock().unwrap().retain(|f| *f != i);
}

pub(crate) async fn create(c: &Cluster, node: usize, user: usize, name: &str) -> u16 {
    let body = json!({"name": name, "dimension": 4, "metric": "cosine"});
    c.call(node, c.key(user), "POST", "/collections", Some(body))
        .await
        .map_or(0, |(s, _)| s)
}
