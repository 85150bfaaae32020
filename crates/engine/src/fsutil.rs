//! File-system helpers for crash-safe updates: directory fsync and
//! write-then-rename replacement.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{EngineError, Result};

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(EngineError::io(format!(
            "syncing directory {}",
            dir.display()
        )))
}

/// Replaces `path` with `bytes` atomically and durably: a crash leaves
/// either the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(EngineError::io("creating a temporary file"))?;
        f.write_all(bytes)
            .map_err(EngineError::io("writing a temporary file"))?;
        f.sync_all()
            .map_err(EngineError::io("syncing a temporary file"))?;
    }
    fs::rename(&tmp, path).map_err(EngineError::io("renaming a temporary file"))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
