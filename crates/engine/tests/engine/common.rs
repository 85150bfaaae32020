//! Helpers shared by the engine's integration tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use vectorizer_engine::collection::Collection;
use vectorizer_engine::{Database, EngineOptions, PointId, With};
use vectorizer_testkit::Kind;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vz-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn open(dir: &TempDir) -> Database {
    Database::open(&dir.0, EngineOptions::default()).unwrap()
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
