//! The HNSW graph, on usearch: f32 storage, explicit capacity, and a bound
//! on concurrent calls matching the thread slots usearch was given.
//!
//! usearch needs one "thread slot" per concurrent add/search; asking with
//! none free fails. Every call here takes a permit first, so callers may use
//! the index from any number of threads.

use std::sync::{Condvar, Mutex};

use usearch::ffi::{IndexOptions, MetricKind, ScalarKind};

use crate::config::{CollectionConfig, Metric};
use crate::distance::score_from_distance;
use crate::error::{EngineError, Result};

/// A counting semaphore.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }
    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

pub struct VectorIndex {
    inner: usearch::Index,
    metric: Metric,
    dim: usize,
    threads: usize,
    permits: Permits,
}

fn index_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Index(e.to_string())
}

impl VectorIndex {
    pub fn new(config: &CollectionConfig, threads: usize) -> Result<Self> {
        let options = IndexOptions {
            dimensions: config.dimension,
            metric: match config.metric {
                Metric::Cosine => MetricKind::Cos,
                Metric::Euclidean => MetricKind::L2sq,
                Metric::Dot => MetricKind::IP,
            },
            // usearch defaults to BF16; vectors are stored exactly as given.
            quantization: ScalarKind::F32,
            connectivity: config.hnsw.m,
            expansion_add: config.hnsw.ef_construction,
            // The beam is max(expansion_search, count), and every search asks
            // for max(k, ef) results, so a query's own ef always applies.
            expansion_search: 1,
            multi: false,
        };
        let inner = usearch::Index::new(&options).map_err(index_err)?;
        let threads = threads.max(1);
        let index = VectorIndex {
            inner,
            metric: config.metric,
            dim: config.dimension,
            threads,
            permits: Permits::new(threads),
        };
        index.reserve(64)?;
        Ok(index)
    }

    /// Creates an index and fills it from a file written by [`save`].
    pub fn load(config: &CollectionConfig, threads: usize, path: &str) -> Result<Self> {
        let index = VectorIndex::new(config, threads)?;
        index.inner.load(path).map_err(index_err)?;
        index.inner.change_expansion_search(1);
        index
            .inner
            .change_expansion_add(config.hnsw.ef_construction);
        index.reserve(index.inner.size().max(64))?;
        Ok(index)
    }

    pub fn save(&self, path: &str) -> Result<()> {
        self.inner.save(path).map_err(index_err)
    }

    /// Grows capacity. Must not run concurrently with any other call.
    pub fn reserve(&self, capacity: usize) -> Result<()> {
        self.inner
            .reserve_capacity_and_threads(capacity, self.threads)
            .map_err(index_err)
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// Vectors present (not removed).
    pub fn size(&self) -> usize {
        self.inner.size()
    }

    pub fn add(&self, key: u64, vector: &[f32]) -> Result<()> {
        let _p = self.permits.acquire();
        self.inner.add(key, vector).map_err(index_err)
    }

    pub fn remove(&self, key: u64) -> Result<()> {
        self.inner.remove(key).map(|_| ()).map_err(index_err)
    }

    /// Copies the stored vector of `key` into `buf`; false if absent.
    pub fn get(&self, key: u64, buf: &mut [f32]) -> bool {
        debug_assert_eq!(buf.len(), self.dim);
        matches!(self.inner.get(key, buf), Ok(n) if n > 0)
    }

    /// Approximate top-`count` as (key, score), best first.
    pub fn search(&self, query: &[f32], count: usize) -> Result<Vec<(u64, f32)>> {
        let _p = self.permits.acquire();
        let m = self.inner.search(query, count).map_err(index_err)?;
        Ok(self.scored(m))
    }

    /// Like [`search`], visiting only keys for which `pred` holds.
    pub fn filtered_search(
        &self,
        query: &[f32],
        count: usize,
        pred: impl Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        let _p = self.permits.acquire();
        let m = self
            .inner
            .filtered_search(query, count, pred)
            .map_err(index_err)?;
        Ok(self.scored(m))
    }

    fn scored(&self, m: usearch::ffi::Matches) -> Vec<(u64, f32)> {
        m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(k, d)| (k, score_from_distance(self.metric, d)))
            .collect()
    }

    /// Bytes usearch holds for the graph and the vectors.
    pub fn memory_usage(&self) -> usize {
        self.inner.memory_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_readd_and_capacity() {
        let cfg = CollectionConfig::new(4, Metric::Euclidean);
        let idx = VectorIndex::new(&cfg, 2).unwrap();
        idx.reserve(10).unwrap();
        let cap = idx.capacity();
        for k in 0..cap as u64 {
            idx.add(k, &[k as f32, 0.0, 0.0, 1.0]).unwrap();
        }
        for k in 0..5 {
            idx.remove(k).unwrap();
        }
        assert_eq!(idx.size(), cap - 5);
        // Removed keys come back; their slots are reused without a reserve.
        for k in 0..5 {
            idx.add(k, &[k as f32, 1.0, 0.0, 1.0]).unwrap();
        }
        assert_eq!(idx.size(), cap);
        // Slots freed by a removal also take new keys.
        idx.remove(4).unwrap();
        idx.add(1000, &[9.0, 9.0, 9.0, 9.0]).unwrap();
        assert_eq!(idx.size(), cap);
        let mut buf = [0.0; 4];
        assert!(idx.get(3, &mut buf));
        assert_eq!(buf, [3.0, 1.0, 0.0, 1.0]);
        let hits = idx.search(&[2.0, 1.0, 0.0, 1.0], 1).unwrap();
        assert_eq!(hits[0].0, 2);
        assert!(hits[0].1.abs() < 1e-6);
    }

    #[test]
    fn cosine_keeps_raw_vectors() {
        let cfg = CollectionConfig::new(3, Metric::Cosine);
        let idx = VectorIndex::new(&cfg, 2).unwrap();
        idx.add(1, &[3.0, 4.0, 0.0]).unwrap();
        let mut buf = [0.0; 3];
        assert!(idx.get(1, &mut buf));
        assert_eq!(buf, [3.0, 4.0, 0.0]);
        let hits = idx.search(&[6.0, 8.0, 0.0], 1).unwrap();
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
    }
}
