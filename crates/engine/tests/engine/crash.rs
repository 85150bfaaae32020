//! Crash safety: a child process writing batches is killed with SIGKILL at
//! random moments; every acknowledged write must read back exactly and no
//! partial batch may be visible. Damaged log tails recover to the last good
//! record.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use vectorizer_engine::{CollectionConfig, Database, EngineOptions, Metric, Point, PointId};
use vectorizer_testkit::Rng;

use crate::common::{Contents, TempDir, contents};

const DIM: usize = 16;
const BATCH: u64 = 40;
const CHILD_ENV: &str = "VZ_CRASH_CHILD_DIR";

/// Operation `n` of the deterministic workload.
enum Op {
    Upsert(Vec<Point>),
    Delete(Vec<PointId>),
}

fn op(n: u64) -> Op {
    let mut rng = Rng::new(n);
    if n % 7 == 6 && n >= 3 {
        // Delete the first half of batch n-3.
        return Op::Delete(
            (0..BATCH / 2)
                .map(|i| PointId::Num((n - 3) * BATCH + i))
                .collect(),
        );
    }
    // Every fifth batch overwrites batch n-2 instead of adding new ids.
    let base = if n % 5 == 4 && n >= 2 { n - 2 } else { n };
    Op::Upsert(
        (0..BATCH)
            .map(|i| Point {
                id: PointId::Num(base * BATCH + i),
                vector: (0..DIM).map(|_| rng.normal()).collect(),
                payload: Some(json!({"op": n, "i": i}).as_object().unwrap().clone()),
            })
            .collect(),
    )
}

/// The state after operations `0..n`.
fn expected(n: u64) -> Contents {
    let mut m = BTreeMap::new();
    for k in 0..n {
        match op(k) {
            Op::Upsert(pts) => {
                for p in pts {
                    m.insert(p.id, (p.vector, p.payload));
                }
            }
            Op::Delete(ids) => {
                for id in ids {
                    m.remove(&id);
                }
            }
        }
    }
    m
}

fn options() -> EngineOptions {
    // A small threshold, so that snapshots happen (and are interrupted) too.
    EngineOptions {
        min_snapshot_log_bytes: 64 << 10,
        ..EngineOptions::default()
    }
}

fn apply(db: &Database, n: u64) {
    let c = db.collection("c").unwrap();
    match op(n) {
        Op::Upsert(pts) => {
            c.upsert(pts).unwrap();
        }
        Op::Delete(ids) => {
            c.delete(ids).unwrap();
        }
    }
}

/// The child: opens the database, writes operations from `start` on, and
/// prints `ack N` after each one returns. Runs until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var("VZ_CRASH_START").unwrap().parse().unwrap();
    let db = Database::open(&dir, options()).unwrap();
    if db.collection("c").is_err() {
        db.create_collection(
            "c",
            CollectionConfig::new(DIM, Metric::Euclidean),
            BTreeMap::new(),
        )
        .unwrap();
    }
    println!("ready");
    for n in start.. {
        apply(&db, n);
        println!("ack {}", n + 1);
    }
}

/// Which prefix of the workload the database holds, if it holds one exactly.
fn prefix_held(dir: &Path, candidates: &[u64]) -> Option<u64> {
    let db = Database::open(dir, options()).unwrap();
    let Ok(c) = db.collection("c") else {
        return candidates.contains(&0).then_some(0);
    };
    let got = contents(&c);
    candidates.iter().copied().find(|n| got == expected(*n))
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(42);
    let mut held = 0u64;
    let kills = 24;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir.0)
            .env("VZ_CRASH_START", held.to_string())
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
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("round {round}: child exited before it was ready")
                }
            }
            assert!(Instant::now() < deadline, "child never became ready");
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(120)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = rx
            .try_iter()
            .filter(|n| *n != u64::MAX)
            .max()
            .unwrap_or(held);
        assert!(acked >= held);
        // Every acknowledged operation is there; the one in flight is there
        // whole or not at all.
        held = prefix_held(&dir.0, &[acked, acked + 1]).unwrap_or_else(|| {
            panic!(
                "round {round}: state is not the prefix {acked} or {}",
                acked + 1
            )
        });
    }
    eprintln!("{kills} kills; the database ended holding {held} operations");
    assert!(
        held > kills as u64,
        "the child wrote too little to test anything"
    );
}

/// Writes `n` operations with no snapshot and returns the log's path.
fn write_log(dir: &Path, n: u64) -> std::path::PathBuf {
    let opts = EngineOptions {
        min_snapshot_log_bytes: u64::MAX,
        ..EngineOptions::default()
    };
    let db = Database::open(dir, opts).unwrap();
    db.create_collection(
        "c",
        CollectionConfig::new(DIM, Metric::Euclidean),
        BTreeMap::new(),
    )
    .unwrap();
    for k in 0..n {
        apply(&db, k);
    }
    dir.join("collections/c/wal.log")
}

/// Byte offsets where each record ends.
fn record_ends(log: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 8;
    while pos + 8 <= log.len() {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
        ends.push(pos);
    }
    ends
}

#[test]
fn damaged_log_tail_recovers_to_last_good_record() {
    let n = 12;
    let all: Vec<u64> = (0..=n).collect();
    let src = TempDir::new("tail-src");
    let log_path = write_log(&src.0, n);
    let original = std::fs::read(&log_path).unwrap();
    let ends = record_ends(&original);
    assert_eq!(ends.len(), n as usize);
    assert_eq!(*ends.last().unwrap(), original.len());

    let mut rng = Rng::new(9);
    for trial in 0..30 {
        let dir = TempDir::new("tail");
        copy_dir(&src.0, &dir.0);
        let log = dir.0.join("collections/c/wal.log");
        let mut data = original.clone();
        // Damage one place: a cut or a flipped byte somewhere in the last
        // few records. Everything before the damaged record must survive.
        let at =
            original.len() - 1 - rng.below((original.len() - ends[n as usize - 4]) as u64) as usize;
        if trial % 2 == 0 {
            data.truncate(at);
        } else {
            data[at] ^= 1 << rng.below(8);
        }
        std::fs::write(&log, &data).unwrap();
        let good = ends.iter().take_while(|e| **e <= at).count() as u64;
        let held =
            prefix_held(&dir.0, &all).unwrap_or_else(|| panic!("trial {trial}: not a prefix"));
        assert_eq!(held, good, "trial {trial}: damage at {at}");
        // The collection stays writable after the cut.
        let db = Database::open(&dir.0, EngineOptions::default()).unwrap();
        apply(&db, held);
        drop(db);
        assert_eq!(prefix_held(&dir.0, &[held + 1]), Some(held + 1));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
