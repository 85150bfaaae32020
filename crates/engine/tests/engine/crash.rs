//! Crash safety: a child process writing batches is killed with SIGKILL at
//! random moments; every acknowledged write must read back exactly and no
//! partial batch may be visible. Damaged log tails recover to the last good
//! record.

use std::collections::BTreeMap;
use std::path::Path;

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
    let db = crate::common::open_with(std::path::Path::new(&dir), options());
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
    let db = crate::common::open_with(dir, options());
    let Ok(c) = db.collection("c") else {
        return candidates.contains(&0).then_some(0);
    };
    let got = contents(&c);
    candidates.iter().copied().find(|n| got == expected(*n))
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let dir = TempDir::new("crash");
    let kills = 24;
    let held = crate::common::kill_rounds(
        "crash::crash_child",
        (CHILD_ENV, &dir.0),
        "VZ_CRASH_START",
        kills,
        42,
        |candidates| prefix_held(&dir.0, candidates),
    );
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
    drop(db);
    vectorizer_engine::database::collection_dir(dir, "c")
        .unwrap()
        .join("wal.log")
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
        let log = vectorizer_engine::database::collection_dir(&dir.0, "c")
            .unwrap()
            .join("wal.log");
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
        let db = crate::common::open_with(&dir.0, EngineOptions::default());
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
