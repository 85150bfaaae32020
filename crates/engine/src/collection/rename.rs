//! Renaming a collection: its metadata file names the new name, then its
//! directory is renamed (see `Database::rename_collection`).

use std::collections::BTreeMap;

use super::{Collection, lock};
use crate::error::Result;

impl Collection {
    /// Writes `collection.json` naming `name`, with `metadata`: the first
    /// step of a rename, taken once the collection is marked dropped (no
    /// write, snapshot or link runs on it from then on).
    pub(crate) fn write_meta_named(
        &self,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        let _w = lock(&self.writer);
        let mut next = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        next.name = name.to_owned();
        next.metadata = metadata;
        self.replace_meta(next)
    }
}
