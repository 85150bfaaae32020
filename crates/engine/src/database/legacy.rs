//! Opening the catalog, and building it once for a data directory written
//! before there was one (collections in `collections/<name>/`): each
//! collection is read once, and the catalog is written whole beside the
//! data and renamed into place, so a crash leaves no half-built catalog.

use std::fs;
use std::path::Path;

use super::{catalog_path, entry_of};
use crate::catalog::{Catalog, Change};
use crate::collection::{Collection, EngineOptions};
use crate::config::validate_name;
use crate::error::{EngineError, Result};
use crate::fsutil::sync_dir;

/// The database's catalog, built from the collections' files if it does
/// not exist yet (in memory only when opening for looking only).
pub(super) fn catalog(root: &Path, options: &EngineOptions) -> Result<Catalog> {
    let path = catalog_path(root);
    if Catalog::exists(&path) {
        return if options.background {
            Catalog::open(&path)
        } else {
            Catalog::open_read_only(&path)
        };
    }
    let changes = scan(root, options)?;
    if !options.background {
        let c = Catalog::in_memory()?;
        c.commit(&changes, false)?;
        return Ok(c);
    }
    let building = root.join("catalog.redb.building");
    let _ = fs::remove_file(&building);
    {
        let c = Catalog::open(&building)?;
        c.commit(&changes, true)?;
    }
    fs::rename(&building, &path).map_err(EngineError::io("installing the catalog"))?;
    sync_dir(root)?;
    if !changes.is_empty() {
        tracing::info!(
            collections = changes.len(),
            "catalog built from the collections' own files"
        );
    }
    Catalog::open(&path)
}

/// A catalog entry for every collection directory.
fn scan(root: &Path, options: &EngineOptions) -> Result<Vec<Change>> {
    let colls = root.join("collections");
    let mut out: Vec<Change> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let Ok(entries) = fs::read_dir(&colls) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(EngineError::io("listing collections"))?;
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let dir_name = e.file_name().to_string_lossy().into_owned();
        let looking = EngineOptions {
            background: false,
            ..options.clone()
        };
        let c = Collection::open(&e.path(), looking)?;
        validate_name(c.name()).map_err(|_| {
            EngineError::Corrupt(format!("{} names no valid collection", e.path().display()))
        })?;
        if !names.insert(c.name().to_owned()) {
            return Err(EngineError::Corrupt(format!(
                "two directories hold collection `{}`",
                c.name()
            )));
        }
        out.push(Change::Put(c.name().to_owned(), entry_of(&c, &dir_name)));
    }
    Ok(out)
}
