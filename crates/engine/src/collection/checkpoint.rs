//! Checkpoints: a collection's whole state at one log sequence number, as
//! the files of a snapshot placed in a directory of the caller's (for a
//! backup). Writes wait while it is taken; the files are hard links to the
//! live snapshot's (copies where the file system has no links), so taking
//! one costs a snapshot at most.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{Collection, lock};
use crate::error::{EngineError, Result};
use crate::snapshot;

/// What a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The log sequence number it stands at.
    pub seq: u64,
    pub points: usize,
    /// The config at that point (payload fields indexed so far included).
    pub config: crate::CollectionConfig,
    /// Bytes of its files.
    pub bytes: u64,
}

impl Collection {
    /// Writes the collection's state into `dest` (an empty directory):
    /// `index.hnsw` and `points.bin`, exactly as a snapshot holds them. No
    /// write is half in it: writes wait until the files are placed.
    pub fn checkpoint(&self, dest: &Path) -> Result<Checkpoint> {
        let mut w = lock(&self.writer);
        if self.dropped.load(Ordering::SeqCst) {
            return Err(EngineError::CollectionNotFound(self.name.clone()));
        }
        if w.failed {
            return Err(EngineError::Corrupt(format!(
                "`{}` refuses writes after a storage failure; reopen it first",
                self.name
            )));
        }
        let live = snapshot::current(&self.dir)?;
        if !w.wal.is_empty() || live.is_none() {
            self.snapshot_locked(&mut w)?;
        }
        let (snap, seq) = snapshot::current(&self.dir)?
            .ok_or_else(|| EngineError::Corrupt(format!("`{}` has no snapshot", self.name)))?;
        let mut bytes = 0;
        for f in snapshot::FILES {
            let (from, to) = (snap.join(f), dest.join(f));
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(EngineError::io("copying a snapshot file"))?;
            }
            bytes += fs::metadata(&to).map_or(0, |m| m.len());
        }
        let points = self.read().ids.len();
        Ok(Checkpoint {
            seq,
            points,
            config: self.info_config(),
            bytes,
        })
    }
}
