//! Helpers shared by the engine's integration tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use vectorizer_engine::collection::Collection;
use vectorizer_engine::{Database, Deadline, EngineOptions, PointId, With};
use vectorizer_testkit::Kind;
pub use vectorizer_testkit::TempDir;

/// Opens the database in `dir`. A child process that another test forks
/// holds a copy of the lock's descriptor until it execs, so the lock of a
/// database just closed may take a moment to come free.
pub fn open(dir: &TempDir) -> Database {
    open_with(&dir.0, EngineOptions::default())
}

/// [`open`] with `options`.
pub fn open_with(dir: &std::path::Path, options: EngineOptions) -> Database {
    for _ in 0..100 {
        match Database::open(dir, options.clone()) {
            Err(e)
                if e.to_string().contains("another process")
                    || e.to_string().contains("already open") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the data directory stayed locked")
}

pub type Contents = BTreeMap<PointId, (Vec<f32>, Option<Map<String, Value>>)>;

/// Everything a collection holds, read through scroll.
pub fn contents(c: &Arc<Collection>) -> Contents {
    let mut out = BTreeMap::new();
    let mut from = None;
    loop {
        let (page, next) = c
            .scroll(
                1000,
                from,
                None,
                With {
                    payload: true,
                    vector: true,
                },
                &Deadline::none(),
            )
            .unwrap();
        for r in page {
            out.insert(r.id, (r.vector.unwrap(), r.payload));
        }
        match next {
            Some(n) => from = Some(n),
            None => return out,
        }
    }
}

pub fn kind(m: vectorizer_engine::Metric) -> Kind {
    match m {
        vectorizer_engine::Metric::Cosine => Kind::Cosine,
        vectorizer_engine::Metric::Euclidean => Kind::Euclidean,
        vectorizer_engine::Metric::Manhattan => Kind::Manhattan,
        vectorizer_engine::Metric::Dot => Kind::Dot,
    }
}

/// Runs test `test` of this binary as a child process with `env`, waits
/// until it prints `ready`, kills it (SIGKILL) after a random 5 to
/// `5 + max_ms` milliseconds, and returns the highest `ack N` it printed
/// (`None` if none).
pub fn run_and_kill(
    test: &str,
    env: &[(&str, String)],
    rng: &mut vectorizer_testkit::Rng,
    max_ms: u64,
) -> Option<u64> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ack ") {
                let _ = tx.send(n.parse::<u64>().unwrap());
            } else if line.ends_with("ready") {
                // libtest prints the test's name on the same line.
                let _ = tx.send(u64::MAX);
            }
        }
    });
    // Wait for the child to start writing, then kill it at a random moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(u64::MAX) => break,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("the child exited before it was ready"),
        }
        assert!(Instant::now() < deadline, "the child never became ready");
    }
    std::thread::sleep(Duration::from_millis(5 + rng.below(max_ms)));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().filter(|n| *n != u64::MAX).max()
}

/// Kills child `test` (see [`run_and_kill`]) `kills` times, each run
/// resuming from the operations held so far (passed as `start_env`, the
/// data directory as `dir_env`); after each kill, `held(acked)` must find
/// the acknowledged prefix, or the one after it (the operation in flight
/// whole), and returns which. Returns the operations held at the end.
pub fn kill_rounds(
    test: &str,
    dir_env: (&str, &std::path::Path),
    start_env: &str,
    kills: usize,
    seed: u64,
    held: impl Fn(&[u64]) -> Option<u64>,
) -> u64 {
    let mut rng = vectorizer_testkit::Rng::new(seed);
    let mut done = 0u64;
    for round in 0..kills {
        let env = [
            (dir_env.0, dir_env.1.display().to_string()),
            (start_env, done.to_string()),
        ];
        let acked = run_and_kill(test, &env, &mut rng, 150).unwrap_or(done);
        assert!(acked >= done);
        // Every acknowledged operation is there; the one in flight is there
        // whole or not at all.
        done = held(&[acked, acked + 1]).unwrap_or_else(|| {
            panic!(
                "round {round}: state is not the prefix {acked} or {}",
                acked + 1
            )
        });
    }
    done
}

/// Upserts `base` as points `0..n` (no payloads) in batches of 2,000, then
/// waits until every one is linked into the graph.
pub fn load_all(c: &Collection, base: &[Vec<f32>]) {
    for (b, chunk) in base.chunks(2000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| vectorizer_engine::Point {
                id: PointId::Num((b * 2000 + i) as u64),
                vector: v.clone(),
                payload: None,
            })
            .collect();
        c.upsert(pts).unwrap();
    }
    c.wait_indexed();
}

/// The numeric ids of `hits`, in order.
pub fn hit_ids(hits: &[vectorizer_engine::ScoredPoint]) -> Vec<usize> {
    hits.iter()
        .map(|h| match h.id {
            PointId::Num(n) => n as usize,
            PointId::Uuid(_) => unreachable!("the tests' points have numeric ids"),
        })
        .collect()
}

/// Mean recall@10 of `queries` (exact answers `truth`) searched with `ef`
/// (`None`: the collection's default).
pub fn mean_recall(
    c: &Collection,
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
    ef: Option<usize>,
) -> f64 {
    let total: f64 = queries
        .iter()
        .zip(truth)
        .map(|(q, t)| {
            let req = vectorizer_engine::SearchRequest {
                vector: q.clone(),
                limit: 10,
                ef,
                ..Default::default()
            };
            vectorizer_testkit::recall(t, &hit_ids(&c.search(&req).unwrap()))
        })
        .sum();
    total / queries.len() as f64
}
