//! Collections open on first use and close again when idle: start-up,
//! listing and usage open none; a damaged collection fails alone; figures
//! left behind by a crash are taken again at start; and a process killed
//! while collections are being opened and closed loses nothing it
//! acknowledged, with the catalog and the files agreeing afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vectorizer_engine::{CollectionConfig, EngineError, EngineOptions, Metric, Point, PointId};
use vectorizer_testkit::Rng;

use crate::common::{Contents, TempDir, contents, open_with};

const DIM: usize = 8;

fn capped(n: usize) -> EngineOptions {
    EngineOptions {
        max_open_collections: n,
        min_snapshot_log_bytes: 16 << 10,
        ..EngineOptions::default()
    }
}

fn points(from: u64, n: u64, seed: u64) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    (from..from + n)
        .map(|i| Point {
            id: PointId::Num(i),
            vector: (0..DIM).map(|_| rng.normal()).collect(),
            payload: Some(json!({"i": i}).as_object().unwrap().clone()),
        })
        .collect()
}

fn config() -> CollectionConfig {
    CollectionConfig::new(DIM, Metric::Cosine)
}

#[test]
fn collections_open_on_use_and_close_under_the_cap() {
    let dir = TempDir::new("resident");
    let mut want = BTreeMap::new();
    {
        let db = open_with(&dir.0, capped(3));
        for i in 0..10u64 {
            let name = format!("user_{}:c{i}", i % 2);
            let c = db
                .create_collection(&name, config(), BTreeMap::new())
                .unwrap();
            c.upsert(points(0, 20 + i, i)).unwrap();
            c.wait_indexed();
            drop(c);
            want.insert(name.clone(), 20 + i);
        }
        // A collection closes once its last linking job has ended.
        let until = Instant::now() + Duration::from_secs(10);
        while db.residency().open > 3 && Instant::now() < until {
            db.evict();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(db.residency().open <= 3, "{:?}", db.residency());
        assert!(db.residency().evictions >= 7);
        db.flush().unwrap();
    }
    let db = open_with(&dir.0, capped(3));
    // Start-up, listing and usage open nothing.
    let listed = db.list("").unwrap();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|l| !l.loaded));
    for l in &listed {
        assert_eq!(l.stats.points, want[&l.name]);
    }
    let u = db.usage("user_1").unwrap();
    assert_eq!(u.collections, 5);
    assert_eq!(u.points, (1..10).step_by(2).map(|i| 20 + i).sum::<u64>());
    assert_eq!(db.residency().opens, 0);
    // Many threads asking for one closed collection open it once.
    let db = Arc::new(db);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || db.collection("user_0:c4").unwrap().len())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 24);
    }
    assert_eq!(db.residency().opens, 1);
    assert!(db.listing("user_0:c4").unwrap().loaded);
    // A held collection is never closed, whatever the cap.
    let held: Vec<_> = (0..5)
        .map(|i| db.collection(&format!("user_1:c{}", 2 * i + 1)).unwrap())
        .collect();
    assert_eq!(db.residency().open, 5);
    drop(held);
    db.evict();
    assert_eq!(db.residency().open, 3);
    // Writes through a reopened collection count in the usage at once.
    db.collection("user_1:c1")
        .unwrap()
        .upsert(points(1000, 5, 99))
        .unwrap();
    assert_eq!(db.usage("user_1").unwrap().points, u.points + 5);
}

/// A tenant cycling through more collections than the cap closes its own,
/// not another tenant's that is in use.
#[test]
fn a_namespace_over_its_share_gives_up_its_own_first() {
    let dir = TempDir::new("share");
    let db = open_with(&dir.0, capped(4));
    db.create_collection("user_b:hot", config(), BTreeMap::new())
        .unwrap();
    for i in 0..40 {
        let c = db
            .create_collection(&format!("user_a:c{i}"), config(), BTreeMap::new())
            .unwrap();
        drop(c);
        // B's collection is older in use than most of A's: a plain
        // least-recently-used order would close it.
        if i == 0 {
            db.collection("user_b:hot").unwrap();
        }
    }
    assert!(db.listing("user_b:hot").unwrap().loaded);
    assert!(db.residency().open <= 4, "{:?}", db.residency());
}

#[test]
fn a_damaged_collection_fails_alone() {
    let dir = TempDir::new("damaged");
    {
        let db = open_with(&dir.0, capped(8));
        for name in ["good", "bad"] {
            let c = db
                .create_collection(name, config(), BTreeMap::new())
                .unwrap();
            c.upsert(points(0, 10, 1)).unwrap();
        }
        db.flush().unwrap();
    }
    let bad = vectorizer_engine::database::collection_dir(&dir.0, "bad").unwrap();
    std::fs::write(bad.join("collection.json"), b"{ not json").unwrap();
    let db = open_with(&dir.0, capped(8));
    assert_eq!(db.len(), 2);
    assert!(matches!(db.collection("bad"), Err(EngineError::Damaged(n)) if n == "bad"));
    // Asked again, it fails again, the same way, without its files being
    // read again; the rest is served.
    assert!(matches!(db.collection("bad"), Err(EngineError::Damaged(_))));
    assert_eq!(db.collection("good").unwrap().len(), 10);
    assert_eq!(db.residency().open_failures, 1);
    assert_eq!(db.list("").unwrap().len(), 2);
}

#[test]
fn figures_a_crash_left_behind_are_taken_again_at_start() {
    let dir = TempDir::new("dirty");
    {
        let db = open_with(&dir.0, capped(8));
        let c = db
            .create_collection("c", config(), BTreeMap::new())
            .unwrap();
        c.upsert(points(0, 30, 1)).unwrap();
        c.delete(vec![PointId::Num(0)]).unwrap();
        // Dropped without closing: the catalog still has the figures of
        // the create, and the collection marked dirty.
    }
    let db = open_with(&dir.0, capped(8));
    // Opened and closed again at start: the only collection read.
    assert_eq!(db.residency().opens, 1);
    let l = db.listing("c").unwrap();
    assert_eq!(l.stats.points, 29);
    assert_eq!(db.usage("").unwrap().points, 29);
    let disk = l.stats.disk_bytes;
    assert_eq!(db.collection("c").unwrap().disk_bytes(), disk);
}

// ---- SIGKILL while collections are opened and closed ----

const CHILD_ENV: &str = "VZ_RESIDENCY_CHILD_DIR";
const COLLS: u64 = 6;
const BATCH: u64 = 8;

/// Operation `n`: a batch into collection `n % COLLS` (with a single
/// collection open at a time, each one closes another and opens its own).
fn op(n: u64) -> (String, Vec<Point>) {
    let coll = n % COLLS;
    let round = n / COLLS;
    // Every third round overwrites the previous round's ids.
    let base = if round % 3 == 2 { round - 1 } else { round };
    (format!("c{coll}"), points(base * BATCH, BATCH, n))
}

fn expected(n: u64) -> BTreeMap<String, Contents> {
    let mut all: BTreeMap<String, Contents> = (0..COLLS)
        .map(|c| (format!("c{c}"), Contents::new()))
        .collect();
    for k in 0..n {
        let (name, pts) = op(k);
        let m = all.get_mut(&name).unwrap();
        for p in pts {
            m.insert(p.id, (p.vector, p.payload));
        }
    }
    all
}

#[test]
fn residency_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var("VZ_RESIDENCY_START")
        .unwrap()
        .parse()
        .unwrap();
    let db = open_with(std::path::Path::new(&dir), capped(1));
    for c in 0..COLLS {
        let name = format!("c{c}");
        if !db.exists(&name) {
            db.create_collection(&name, config(), BTreeMap::new())
                .unwrap();
        }
    }
    println!("ready");
    for n in start.. {
        let (name, pts) = op(n);
        db.collection(&name).unwrap().upsert(pts).unwrap();
        println!("ack {}", n + 1);
    }
}

/// Which prefix of the workload the database holds, if one exactly; the
/// catalog's figures must be the collections' own.
fn prefix_held(dir: &std::path::Path, candidates: &[u64]) -> Option<u64> {
    let db = open_with(dir, capped(2));
    let names = db.names().unwrap();
    if names.len() < COLLS as usize {
        return candidates.contains(&0).then_some(0);
    }
    let mut got = BTreeMap::new();
    let mut points = 0;
    for name in &names {
        let c = db.collection(name).unwrap();
        points += c.len() as u64;
        got.insert(name.clone(), contents(&c));
    }
    assert_eq!(db.usage("").unwrap().points, points, "usage = contents");
    for l in db.list("").unwrap() {
        let c = db.collection(&l.name).unwrap();
        assert_eq!(c.len() as u64, l.stats.points);
    }
    // Every directory under collections/ is one the catalog names.
    let dirs = std::fs::read_dir(dir.join("collections")).unwrap().count();
    assert_eq!(dirs, COLLS as usize, "no directory outside the catalog");
    candidates.iter().copied().find(|n| got == expected(*n))
}

#[test]
fn sigkill_while_collections_open_and_close_loses_nothing() {
    let dir = TempDir::new("resident-crash");
    let kills = 20;
    let held = crate::common::kill_rounds(
        "residency::residency_child",
        (CHILD_ENV, &dir.0),
        "VZ_RESIDENCY_START",
        kills,
        7,
        |candidates| prefix_held(&dir.0, candidates),
    );
    eprintln!("{kills} kills while collections opened and closed; {held} operations held");
    assert!(
        held > kills as u64 * 2,
        "the child wrote too little to test anything"
    );
}

/// A data directory written before there was a catalog (collections in
/// `collections/<name>/`) gets one built at open, and serves the same.
#[test]
fn a_directory_without_a_catalog_gets_one() {
    let dir = TempDir::new("legacy");
    let mut want = BTreeMap::new();
    {
        let db = open_with(&dir.0, capped(8));
        for name in ["plain", "user_u:docs"] {
            let c = db
                .create_collection(name, config(), BTreeMap::from([("k".into(), name.into())]))
                .unwrap();
            c.upsert(points(0, 12, 3)).unwrap();
            want.insert(name.to_owned(), contents(&c));
        }
        db.flush().unwrap();
    }
    // The layout of before: directories named by their collections.
    for name in ["plain", "user_u:docs"] {
        let d = vectorizer_engine::database::collection_dir(&dir.0, name).unwrap();
        std::fs::rename(&d, dir.0.join("collections").join(name)).unwrap();
    }
    std::fs::remove_file(dir.0.join("catalog.redb")).unwrap();
    // Looking only, nothing is written (the catalog is built in memory).
    let looking = EngineOptions {
        background: false,
        ..EngineOptions::default()
    };
    drop(open_with(&dir.0, looking));
    assert!(!dir.0.join("catalog.redb").exists());
    let db = open_with(&dir.0, capped(8));
    assert!(dir.0.join("catalog.redb").exists());
    assert_eq!(db.names().unwrap(), vec!["plain", "user_u:docs"]);
    assert_eq!(db.usage("user_u").unwrap().points, 12);
    for (name, held) in &want {
        let l = db.listing(name).unwrap();
        assert_eq!(l.metadata["k"], *name);
        assert_eq!(contents(&db.collection(name).unwrap()), *held);
    }
    // New collections take directories no name can.
    db.create_collection("fresh", config(), BTreeMap::new())
        .unwrap();
    drop(db);
    assert!(
        vectorizer_engine::database::collection_dir(&dir.0, "fresh")
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with('@')
    );
}
