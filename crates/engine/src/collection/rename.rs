//! Renaming a collection: the catalog names it anew (see
//! `Database::rename_collection`), and its own metadata file follows.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Collection, META_FILE, Meta};
use crate::error::{EngineError, Result};
use crate::fsutil::write_atomic;

impl Collection {
    /// Rewrites `collection.json` in `dir` naming `name`, with `metadata`.
    /// The collection must not be served (it was taken out of service for
    /// the rename).
    pub(crate) fn rename_meta_file(
        dir: &Path,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        let path = dir.join(META_FILE);
        let raw = std::fs::read(&path).map_err(EngineError::io("reading collection.json"))?;
        let mut meta: Meta = serde_json::from_slice(&raw)
            .map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))?;
        meta.name = name.to_owned();
        meta.metadata = metadata;
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&meta).expect("serializable"),
        )
    }
}
