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
    for _ in 0..100 {
        match Database::open(&dir.0, EngineOptions::default()) {
            Err(e) if e.to_string().contains("another process") => {
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
        vectorizer_engine::Metric::Dot => Kind::Dot,
    }
}
