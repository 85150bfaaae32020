//! The catalog: a directory of collections, created and dropped atomically.
//!
//! Layout under the root: `collections/<name>/` per collection and `trash/`
//! for directories being built or removed. A collection is built inside
//! `trash/` and renamed into place, and dropped by renaming it back into
//! `trash/`; each rename is atomic, so after a crash a collection either
//! exists whole or not at all. `trash/` is emptied at open.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::collection::{Collection, EngineOptions};
use crate::config::{CollectionConfig, validate_name};
use crate::error::{EngineError, Result};
use crate::fsutil::sync_dir;

pub struct Database {
    root: PathBuf,
    /// Held for the database's lifetime: an exclusive lock on `LOCK`, so
    /// that no second process opens (and recovers) the same files.
    _lock: fs::File,
    options: EngineOptions,
    /// Held only for map lookups and updates, never across file work, so
    /// that finding a collection never waits on a create or drop.
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    /// Names being created or dropped: taken while their files change.
    busy: std::sync::Mutex<std::collections::HashSet<String>>,
    trash_seq: AtomicU64,
}

/// Frees a busy name when dropped.
struct Busy<'a>(&'a Database, String);

/// A collection built and checked beside the served ones, not yet served.
/// Dropped unpublished (or once it holds a replaced collection's files),
/// its directory is removed.
pub struct Staged {
    dir: PathBuf,
    name: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(error = %e, "removing a staged collection failed; retried at next open");
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl Database {
    /// Opens (creating if needed) the database under `root`.
    pub fn open(root: impl AsRef<Path>, options: EngineOptions) -> Result<Database> {
        let root = root.as_ref().to_owned();
        let colls = root.join("collections");
        let trash = root.join("trash");
        if !options.background && !colls.is_dir() {
            // For looking only: a mistyped path is not a new database.
            return Err(EngineError::Io {
                context: format!("{} holds no database", root.display()),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        for d in [&root, &colls, &trash]
            .into_iter()
            .filter(|_| options.background)
        {
            fs::create_dir_all(d).map_err(EngineError::io(format!("creating {}", d.display())))?;
        }
        // Only once the lock is held: the trash of a running process is
        // its work in progress.
        let lock = lock_dir(&root)?;
        let writes = options.background;
        if let Ok(entries) = fs::read_dir(&trash).map(|e| e.filter(|_| writes)) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let mut map = HashMap::new();
        let mut dirs = Vec::new();
        for e in fs::read_dir(&colls).map_err(EngineError::io("listing collections"))? {
            let e = e.map_err(EngineError::io("listing collections"))?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(e.path());
            }
        }
        for dir in dirs {
            let mut c = Collection::open(&dir, options.clone())?;
            validate_name(c.name()).map_err(|_| {
                EngineError::Corrupt(format!("{} names no valid collection", dir.display()))
            })?;
            if map.contains_key(c.name()) {
                return Err(EngineError::Corrupt(format!(
                    "two directories hold collection `{}`",
                    c.name()
                )));
            }
            let named = colls.join(c.name());
            if named != dir && writes {
                // A rename cut short after its metadata named the new name.
                if named.exists() {
                    return Err(EngineError::Corrupt(format!(
                        "two directories hold collection `{}`",
                        c.name()
                    )));
                }
                drop(c);
                fs::rename(&dir, &named)
                    .map_err(EngineError::io("completing a rename"))
                    .and_then(|()| sync_dir(&colls))?;
                c = Collection::open(&named, options.clone())?;
            }
            let c = Arc::new(c);
            if writes {
                c.start_indexer();
            }
            map.insert(c.name().to_owned(), c);
        }
        tracing::info!(root = %root.display(), collections = map.len(), "database opened");
        Ok(Database {
            _lock: lock,
            root,
            options,
            collections: RwLock::new(map),
            busy: Default::default(),
            trash_seq: AtomicU64::new(0),
        })
    }

    fn trash_path(&self) -> PathBuf {
        let n = self.trash_seq.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.root.join("trash").join(format!("{t}-{n}"))
    }

    /// Creates a collection; fails if the name is taken.
    pub fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: BTreeMap<String, String>,
    ) -> Result<Arc<Collection>> {
        validate_name(name)?;
        config.validate()?;
        let _busy = self.claim(name, false)?;
        let staging = self.trash_path();
        let target = self.root.join("collections").join(name);
        let built = Collection::init_dir(&staging, name, &config, metadata)
            .and_then(|_| {
                fs::rename(&staging, &target).map_err(EngineError::io("publishing a collection"))
            })
            .and_then(|_| sync_dir(&self.root.join("collections")));
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(self.serve(Collection::open(&target, self.options.clone())?))
    }

    /// Serves an opened collection under its name, its indexer started.
    fn serve(&self, c: Collection) -> Arc<Collection> {
        let c = Arc::new(c);
        c.start_indexer();
        self.map_mut().insert(c.name().to_owned(), c.clone());
        c
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Collection>>> {
        self.collections.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `name` busy while its files change. For a create (`exists`
    /// false) the name must be free; for a drop it must exist.
    fn claim(&self, name: &str, exists: bool) -> Result<Busy<'_>> {
        let map = self.collections.read().unwrap_or_else(|e| e.into_inner());
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let present = map.contains_key(name);
        if busy.contains(name) || present != exists {
            return Err(if present || busy.contains(name) {
                EngineError::CollectionExists(name.to_owned())
            } else {
                EngineError::CollectionNotFound(name.to_owned())
            });
        }
        busy.insert(name.to_owned());
        Ok(Busy(self, name.to_owned()))
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_owned()))
    }

    /// How many collections there are.
    pub fn len(&self) -> usize {
        self.collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All collections, in no order (cheaper than [`collections`] where
    /// the order does not matter).
    ///
    /// [`collections`]: Self::collections
    pub fn collections_unordered(&self) -> Vec<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// All collections, sorted by name.
    pub fn collections(&self) -> Vec<Arc<Collection>> {
        let mut v: Vec<_> = self
            .collections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Drops a collection and its files; atomic across a crash.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let _busy = self.claim(name, true).map_err(|e| match e {
            // Being created or dropped right now: not there to drop.
            EngineError::CollectionExists(n) => EngineError::CollectionNotFound(n),
            e => e,
        })?;
        // Out of the map first: from here on nothing finds it, and its
        // writer (which a long write may hold) is waited for below without
        // holding up lookups of other collections.
        let c = self
            .map_mut()
            .remove(name)
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_owned()))?;
        c.mark_dropped();
        let grave = self.trash_path();
        let moved = fs::rename(c.dir(), &grave)
            .map_err(EngineError::io("dropping a collection"))
            .and_then(|()| sync_dir(&self.root.join("collections")));
        if let Err(e) = moved {
            // Still on disk: serve it again.
            c.unmark_dropped();
            self.map_mut().insert(name.to_owned(), c);
            return Err(e);
        }
        if let Err(e) = fs::remove_dir_all(&grave) {
            tracing::warn!(error = %e, "removing a dropped collection's files failed; retried at next open");
        }
        Ok(())
    }

    /// Makes the snapshot files in `files` (`index.hnsw`, `points.bin`, as
    /// a [`Collection::checkpoint`] wrote them; on this file system, as
    /// they are moved) a collection `name` with `config` and `metadata`:
    /// [`stage_import`](Self::stage_import), then [`publish`](Self::publish).
    pub fn import_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: BTreeMap<String, String>,
        files: &Path,
        seq: u64,
        replace: bool,
    ) -> Result<Arc<Collection>> {
        // Refused before the files are moved, when it must be.
        if !replace && self.collection(name).is_ok() {
            return Err(EngineError::CollectionExists(name.to_owned()));
        }
        let staged = self.stage_import(name, config, metadata, files, seq)?;
        self.publish(staged, replace)
    }

    /// Builds collection `name` from snapshot files beside the served ones,
    /// and checks it by opening it (every file decoded, every bound
    /// checked): nothing is served yet, and dropping the [`Staged`]
    /// removes it. Files from outside are refused as [`EngineError::Corrupt`].
    pub fn stage_import(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: BTreeMap<String, String>,
        files: &Path,
        seq: u64,
    ) -> Result<Staged> {
        validate_name(name)?;
        config.validate()?;
        let staged = Staged {
            dir: self.trash_path(),
            name: name.to_owned(),
        };
        Collection::init_dir(&staged.dir, name, &config, metadata)
            .and_then(|()| crate::snapshot::install(&staged.dir, files, seq))
            .and_then(|()| Collection::open(&staged.dir, self.options.clone()).map(drop))?;
        Ok(staged)
    }

    /// Serves a staged collection. With `replace`, an existing collection
    /// of the name is swapped for the new one in one rename: after a crash
    /// the name holds the old collection or the new one, never a mix;
    /// writes to the old one are refused from the swap on.
    pub fn publish(&self, staged: Staged, replace: bool) -> Result<Arc<Collection>> {
        let name = staged.name.clone();
        let staging = staged.dir.clone();
        let old = self.collection(&name).ok();
        if old.is_some() && !replace {
            return Err(EngineError::CollectionExists(name));
        }
        let _busy = self.claim(&name, old.is_some())?;
        let colls = self.root.join("collections");
        let target = colls.join(&name);
        let Some(old) = old else {
            fs::rename(&staging, &target).map_err(EngineError::io("publishing a collection"))?;
            let opened =
                sync_dir(&colls).and_then(|()| Collection::open(&target, self.options.clone()));
            return match opened {
                Ok(c) => Ok(self.serve(c)),
                Err(e) => {
                    // Back into the trash, so that the name stays free.
                    if fs::rename(&target, &staging).is_ok() {
                        let _ = sync_dir(&colls);
                    }
                    Err(e)
                }
            };
        };
        old.mark_dropped();
        if let Err(e) = exchange(&staging, &target) {
            old.unmark_dropped();
            return Err(e);
        }
        // Swapped: `staging` holds the old collection's files, removed with
        // it once the new one is served.
        let opened = sync_dir(&colls)
            .and_then(|()| sync_dir(&self.root.join("trash")))
            .and_then(|()| Collection::open(&target, self.options.clone()));
        match opened {
            Ok(c) => Ok(self.serve(c)),
            Err(e) => {
                // Put the old one back: the new one goes with the staging.
                if exchange(&staging, &target)
                    .and_then(|()| sync_dir(&colls))
                    .is_ok()
                {
                    old.unmark_dropped();
                } else {
                    // Neither is where it belongs: keep the old files out of
                    // the trash (emptied at open) for the operator.
                    let kept = self.root.join(format!(
                        "recovered-{}",
                        staged
                            .dir
                            .file_name()
                            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
                    ));
                    let _ = fs::rename(&staging, &kept);
                    tracing::error!(collection = %name, kept = %kept.display(), "a swap could not be undone: the replaced collection's files are kept aside");
                }
                Err(e)
            }
        }
    }

    /// Renames collection `old` to `new`, with `metadata` in place of its
    /// own; its data is not touched. Its metadata file is rewritten naming
    /// `new`, then its directory renamed: a crash between the two leaves a
    /// directory whose metadata names `new`, and the next open completes
    /// the rename. Handles to the old name take no writes from the start.
    pub fn rename_collection(
        &self,
        old: &str,
        new: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Arc<Collection>> {
        validate_name(new)?;
        let c = self.collection(old)?;
        let _old = self.claim(old, true)?;
        let _new = self.claim(new, false)?;
        let before = c.metadata();
        c.mark_dropped();
        let colls = self.root.join("collections");
        let moved = c.write_meta_named(new, metadata).and_then(|()| {
            fs::rename(colls.join(old), colls.join(new))
                .map_err(EngineError::io("renaming a collection"))
                .and_then(|()| sync_dir(&colls))
        });
        if let Err(e) = moved {
            if colls.join(old).exists() {
                let _ = c.write_meta_named(old, before);
                c.unmark_dropped();
            }
            return Err(e);
        }
        let renamed = Collection::open(&colls.join(new), self.options.clone())?;
        self.map_mut().remove(old);
        Ok(self.serve(renamed))
    }

    /// Snapshots every collection, so that the next open replays nothing.
    pub fn flush(&self) -> Result<()> {
        for c in self.collections() {
            c.flush()?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Swaps two directories in one atomic rename (`RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| EngineError::Corrupt(format!("{} holds a NUL byte", p.display())))
    };
    let (a, b) = (c(a)?, c(b)?);
    // Safety: two valid NUL-terminated paths; the call reads them only.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(EngineError::Io {
            context: "swapping a collection's directory".into(),
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Takes the exclusive lock on `root/LOCK`, or says the directory is in use.
fn lock_dir(root: &Path) -> Result<fs::File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("LOCK"))
        .map_err(EngineError::io("opening the lock file"))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // Safety: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(EngineError::InUse(root.display().to_string()));
        }
    }
    Ok(f)
}

/// Names and metadata of the collections under `root`, read from their
/// metadata files only: safe while another process has the database open
/// (the files are replaced atomically), and no recovery runs.
pub fn read_catalog(root: impl AsRef<Path>) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let colls = root.as_ref().join("collections");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&colls) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(EngineError::Io {
                context: "listing collections".into(),
                source: e,
            });
        }
    };
    for e in entries.flatten() {
        let Ok(raw) = fs::read(e.path().join("collection.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|err| EngineError::Corrupt(format!("{}: {err}", e.path().display())))?;
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let metadata = serde_json::from_value(v["metadata"].clone()).unwrap_or_default();
        out.push((name, metadata));
    }
    out.sort();
    Ok(out)
}
