//! A database: collections described by the catalog (`catalog.redb`), each
//! held in its own directory under `collections/`, opened on first use and
//! closed again when idle (see `residency.rs`).
//!
//! Files and the catalog agree after any crash by one rule: a directory is
//! under `collections/` only while the catalog names it. A collection is
//! built in `trash/<dir>`, recorded in the catalog, then moved into
//! `collections/`; it is dropped by moving it back to `trash/` first and
//! then removing it from the catalog. At open, a directory in `trash/` the
//! catalog names is moved (back) into place; the rest of `trash/` is work
//! in progress of a run that ended, and is emptied. Start-up reads neither
//! the collections nor their directory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::catalog::{Catalog, Change, Entry, Stats, Totals};
use crate::collection::{Collection, EngineOptions, Home};
use crate::config::{CollectionConfig, validate_name};
use crate::error::{EngineError, Result};
use crate::fsutil::sync_dir;
use crate::linker::{LinkPool, Linker};

mod legacy;
mod residency;

pub use residency::Residency;

const CATALOG_FILE: &str = "catalog.redb";

pub struct Database {
    root: PathBuf,
    /// Held for the database's lifetime: an exclusive lock on `LOCK`, so
    /// that no second process opens (and recovers) the same files.
    _lock: fs::File,
    options: EngineOptions,
    home: Arc<Home>,
    /// Open (or opening) collections by name; see `residency.rs`.
    slots: Mutex<HashMap<String, Arc<residency::Slot>>>,
    /// Names being created, dropped or renamed: taken while their files
    /// and entries change.
    busy: Mutex<std::collections::HashSet<String>>,
    counters: residency::Counters,
    /// Collections whose last open failed: when, and why.
    failed: Mutex<HashMap<String, (std::time::Instant, String)>>,
}

/// Frees a busy name when dropped.
struct Busy<'a>(&'a Database, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(&self.0.busy).remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A collection built and checked beside the served ones, not yet served.
/// Dropped unpublished, its directory is removed.
pub struct Staged {
    dir: PathBuf,
    /// Its directory's name, under `collections/` once published.
    dir_name: String,
    name: String,
    entry: Entry,
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

/// A collection as the catalog lists it, with its current figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub name: String,
    pub config: CollectionConfig,
    pub created_at_ms: u64,
    pub metadata: BTreeMap<String, String>,
    pub stats: Stats,
    /// Bytes a storage quota counts (see [`Collection::committed_bytes`]).
    pub committed_bytes: u64,
    /// Whether it is open now.
    pub loaded: bool,
    /// Memory it holds (0 when closed).
    pub memory_bytes: u64,
    /// Points waiting to be linked (0 when closed: none is closed with any).
    pub unindexed: u64,
    /// Its last recall measurement (none when closed: measured again once
    /// open).
    pub recall: Option<crate::collection::RecallReport>,
}

/// A namespace's usage now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub collections: u64,
    pub points: u64,
    pub disk_bytes: u64,
    pub logical_bytes: u64,
    pub committed_bytes: u64,
}

impl Usage {
    /// The catalog's totals plus the open collections' changes.
    fn of(t: Totals, d: crate::collection::home::Figures) -> Usage {
        Usage {
            collections: t.collections,
            points: t.points.wrapping_add(d.stats.points),
            disk_bytes: t.disk_bytes.wrapping_add(d.stats.disk_bytes),
            logical_bytes: t.logical_bytes.wrapping_add(d.stats.logical_bytes),
            committed_bytes: t.disk_bytes.wrapping_add(d.committed_bytes),
        }
    }
}

impl Database {
    /// Opens (creating if needed) the database under `root`.
    pub fn open(root: impl AsRef<Path>, mut options: EngineOptions) -> Result<Database> {
        let root = root.as_ref().to_owned();
        // An open collection holds one file (its log) open.
        let allowed = open_files_allowance();
        if options.max_open_collections as u64 > allowed {
            tracing::warn!(
                configured = options.max_open_collections,
                allowed,
                "fewer collections may be open at once than configured: the open-files limit (ulimit -n) leaves room for this many"
            );
            options.max_open_collections = allowed as usize;
        }
        let colls = root.join("collections");
        let trash = root.join("trash");
        let writes = options.background;
        if !writes && !colls.is_dir() {
            // For looking only: a mistyped path is not a new database.
            return Err(EngineError::Io {
                context: format!("{} holds no database", root.display()),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        for d in [&root, &colls, &trash].into_iter().filter(|_| writes) {
            fs::create_dir_all(d).map_err(EngineError::io(format!("creating {}", d.display())))?;
        }
        // Only once the lock is held: the trash of a running process is
        // its work in progress.
        let lock_file = lock_dir(&root)?;
        let catalog = legacy::catalog(&root, &options)?;
        if writes {
            restore_from_trash(&root, &catalog)?;
        }
        let linker = match &options.linker {
            Some(l) => l.0.clone(),
            None => Arc::new(LinkPool::new(options.insert_threads)) as Arc<dyn Linker>,
        };
        let db = Database {
            _lock: lock_file,
            home: Arc::new(Home {
                catalog,
                linker,
                live: Mutex::default(),
                commits: Mutex::default(),
                // One thread, at the linkers' low priority, its work paced
                // to `tuning_cpu_share` (see `collection/recall.rs`).
                tuner: (options.background && options.tuning_cpu_share > 0.0)
                    .then(crate::collection::recall::Tuner::new),
                tunings: Default::default(),
            }),
            root,
            options,
            slots: Mutex::default(),
            busy: Mutex::default(),
            counters: residency::Counters::default(),
            failed: Mutex::default(),
        };
        if writes {
            db.reconcile_dirty()?;
        }
        tracing::info!(root = %db.root.display(), collections = db.len(), "database opened");
        Ok(db)
    }

    /// Takes the figures of collections a crash left dirty, by opening and
    /// closing each: the only collections start-up reads.
    fn reconcile_dirty(&self) -> Result<()> {
        for name in self.home.catalog.dirty()? {
            match self.collection(&name) {
                Ok(c) => {
                    // Its figures count from the open on; closed now if it
                    // has nothing left to link, else once it is idle.
                    drop(c);
                    self.close(&name);
                }
                Err(e) => {
                    tracing::error!(collection = %name, error = %e, "a collection open at a crash could not be opened again; its figures are the last recorded");
                }
            }
        }
        Ok(())
    }

    fn colls(&self) -> PathBuf {
        self.root.join("collections")
    }

    /// Whether collection `name` exists (the catalog only).
    pub fn exists(&self, name: &str) -> bool {
        self.home.catalog.get(name).ok().flatten().is_some()
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
        let dir_name = self.home.catalog.next_dir()?;
        let staging = self.root.join("trash").join(&dir_name);
        let built = Collection::init_dir(&staging, name, &config, metadata)
            .and_then(|()| Collection::open(&staging, self.options.clone()));
        let entry = match built {
            Ok(c) => entry_of(&c, &dir_name),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        // Recorded, then moved into place, while no lookup can open the
        // name: from the record on the collection exists (a crash before
        // the move is completed at the next open).
        self.changing(name, |_| {
            self.home
                .commit(&[Change::Put(name.to_owned(), entry)], true, |_| ())?;
            let moved = fs::rename(&staging, self.colls().join(&dir_name))
                .map_err(EngineError::io("publishing a collection"))
                .and_then(|()| sync_dir(&self.colls()));
            if let Err(e) = moved {
                let _ = self
                    .home
                    .commit(&[Change::Remove(name.to_owned())], true, |_| ());
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
            Ok(())
        })?;
        self.collection(name)
    }

    /// Marks `name` busy while its files change. For a create (`exists`
    /// false) the name must be free; for a drop it must exist.
    fn claim(&self, name: &str, exists: bool) -> Result<Busy<'_>> {
        let mut busy = lock(&self.busy);
        let present = self.exists(name);
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

    /// How many collections there are.
    pub fn len(&self) -> usize {
        self.home.catalog.count().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The listing of `name`, without opening it.
    pub fn listing(&self, name: &str) -> Result<Listing> {
        let entry = self
            .home
            .catalog
            .get(name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_owned()))?;
        Ok(self.list_one(name.to_owned(), entry))
    }

    fn list_one(&self, name: String, entry: Entry) -> Listing {
        let open = self.open_now(&name);
        let mut l = Listing {
            config: entry.config,
            created_at_ms: entry.created_at_ms,
            metadata: entry.metadata,
            committed_bytes: entry.stats.disk_bytes,
            stats: entry.stats,
            loaded: open.is_some(),
            memory_bytes: 0,
            unindexed: 0,
            recall: None,
            name,
        };
        if let Some(c) = open {
            let f = c.figures();
            l.stats = f.stats;
            l.committed_bytes = f.committed_bytes;
            l.memory_bytes = c.memory_estimate();
            l.unindexed = c.unindexed() as u64;
            l.config = c.info_config();
            l.metadata = c.metadata();
            l.recall = c.recall();
        }
        l
    }

    /// Collections whose name starts with `prefix`, by name, without
    /// opening any.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listing>> {
        Ok(self
            .home
            .catalog
            .with_prefix(prefix)?
            .into_iter()
            .map(|(n, e)| self.list_one(n, e))
            .collect())
    }

    /// Every collection's name, by name.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        loop {
            let page = self
                .home
                .catalog
                .page(out.last().map(String::as_str), 4096)?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page.into_iter().map(|(n, _)| n));
        }
    }

    /// A namespace's usage (names before `:`; `""` for names without),
    /// from the catalog and the open collections' changes: no collection
    /// is opened or scanned.
    pub fn usage(&self, ns: &str) -> Result<Usage> {
        let (t, d) = self.home.usage(ns)?;
        Ok(Usage::of(t, d))
    }

    /// Every namespace's usage (the catalog's totals read once).
    pub fn usage_all(&self) -> Result<Vec<(String, Usage)>> {
        Ok(self
            .home
            .usage_all()?
            .into_iter()
            .map(|(ns, t, d)| (ns, Usage::of(t, d)))
            .collect())
    }

    /// Drops a collection and its files; atomic across a crash.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let _busy = self.claim(name, true).map_err(|e| match e {
            // Being created or dropped right now: not there to drop.
            EngineError::CollectionExists(n) => EngineError::CollectionNotFound(n),
            e => e,
        })?;
        let entry = self
            .home
            .catalog
            .get(name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_owned()))?;
        let placed = self.colls().join(&entry.dir);
        let grave = self.root.join("trash").join(&entry.dir);
        // Out of service first (its writer, which a long write may hold,
        // is waited for), then out of `collections/`, then out of the
        // catalog.
        self.changing(name, |held| {
            fs::rename(&placed, &grave)
                .map_err(EngineError::io("dropping a collection"))
                .and_then(|()| sync_dir(&self.colls()))?;
            let removed = self.commit_replacing(&[Change::Remove(name.to_owned())], held);
            if removed.is_err() {
                // Still recorded: the files go back.
                if fs::rename(&grave, &placed).is_ok() {
                    let _ = sync_dir(&self.colls());
                }
            }
            removed
        })?;
        if let Err(e) = fs::remove_dir_all(&grave) {
            tracing::warn!(error = %e, "removing a dropped collection's files failed; retried at next open");
        }
        Ok(())
    }

    /// Commits `changes`, taking `held`'s changes out of the live totals
    /// in the same step.
    fn commit_replacing(&self, changes: &[Change], held: Option<&Arc<Collection>>) -> Result<()> {
        self.home.commit(changes, true, |open| {
            if let Some(c) = held {
                c.forget_live(open);
            }
        })
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
        if !replace && self.exists(name) {
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
        let dir_name = self.home.catalog.next_dir()?;
        let dir = self.root.join("trash").join(&dir_name);
        let mut staged = Staged {
            dir,
            dir_name: dir_name.clone(),
            name: name.to_owned(),
            entry: Entry {
                dir: dir_name,
                config: config.clone(),
                created_at_ms: 0,
                metadata: metadata.clone(),
                stats: Stats::default(),
            },
        };
        Collection::init_dir(&staged.dir, name, &config, metadata)
            .and_then(|()| crate::snapshot::install(&staged.dir, files, seq))?;
        let c = Collection::open(&staged.dir, self.options.clone())?;
        staged.entry = entry_of(&c, &staged.dir_name);
        Ok(staged)
    }

    /// Serves a staged collection. With `replace`, an existing collection
    /// of the name is replaced in one catalog change: after a crash the
    /// name holds the old collection or the new one, never a mix; writes
    /// to the old one are refused from the swap on.
    pub fn publish(&self, staged: Staged, replace: bool) -> Result<Arc<Collection>> {
        let name = staged.name.clone();
        let exists = self.exists(&name);
        if exists && !replace {
            return Err(EngineError::CollectionExists(name));
        }
        let _busy = self.claim(&name, exists)?;
        // Read once the name is held: nothing changes it from here on.
        let old = self.home.catalog.get(&name)?;
        // The old files leave `collections/` before the catalog changes (a
        // crash between puts them back), and are removed after.
        let places = old.as_ref().map(|o| {
            (
                self.colls().join(&o.dir),
                self.root.join("trash").join(&o.dir),
            )
        });
        let mut late = None;
        self.changing(&name, |held| {
            if let Some((placed, grave)) = &places {
                fs::rename(placed, grave)
                    .map_err(EngineError::io("replacing a collection"))
                    .and_then(|()| sync_dir(&self.colls()))?;
            }
            let done =
                self.commit_replacing(&[Change::Put(name.clone(), staged.entry.clone())], held);
            if done.is_err()
                && let Some((placed, grave)) = &places
                && fs::rename(grave, placed).is_ok()
            {
                let _ = sync_dir(&self.colls());
            }
            done?;
            // Recorded: the old collection is gone for good, and a crash
            // from here on completes the move at the next open. (A failure
            // here leaves the name unservable until then.)
            late = fs::rename(&staged.dir, self.colls().join(&staged.dir_name))
                .map_err(EngineError::io("publishing a collection"))
                .and_then(|()| sync_dir(&self.colls()))
                .err();
            Ok(())
        })?;
        if let Some(e) = late {
            return Err(e);
        }
        if let Some((_, grave)) = &places
            && let Err(e) = fs::remove_dir_all(grave)
        {
            tracing::warn!(error = %e, "removing a replaced collection's files failed; retried at next open");
        }
        self.collection(&name)
    }

    /// Renames collection `old` to `new`, with `metadata` in place of its
    /// own; its data is not touched: one catalog change. Handles to the
    /// old name take no writes from the start.
    pub fn rename_collection(
        &self,
        old: &str,
        new: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Arc<Collection>> {
        validate_name(new)?;
        let _old = self.claim(old, true)?;
        let _new = self.claim(new, false)?;
        self.changing(old, |held| {
            // Read once the collection is out of service: no change of its
            // config can fall between this and the commit.
            let mut entry = self
                .home
                .catalog
                .get(old)?
                .ok_or_else(|| EngineError::CollectionNotFound(old.to_owned()))?;
            entry.metadata = metadata.clone();
            // Its figures move with it, recorded: its files do not change
            // until it opens under the new name.
            if let Some(c) = held {
                entry.stats = c.figures().stats;
            }
            // The collection's own copy first: a crash before the commit
            // leaves the catalog naming the old name, and the copy is
            // repaired from it at open.
            Collection::rename_meta_file(&self.colls().join(&entry.dir), new, metadata)?;
            self.commit_replacing(
                &[
                    Change::Remove(old.to_owned()),
                    Change::Put(new.to_owned(), entry.clone()),
                ],
                held,
            )
        })?;
        self.collection(new)
    }

    /// Snapshots every open collection and records its figures, so that
    /// the next open replays nothing and the next start reads none.
    pub fn flush(&self) -> Result<()> {
        for c in self.open_collections() {
            c.flush()?;
            c.record_figures()?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Handles that outlive the database serve no writes, and the
        // catalog's file is released with the lock.
        for c in self.open_collections() {
            c.mark_dropped();
        }
        self.home.catalog.close();
    }
}

/// The catalog entry of a collection just built in `dir_name`.
fn entry_of(c: &Collection, dir_name: &str) -> Entry {
    let info = c.info();
    Entry {
        dir: dir_name.to_owned(),
        config: info.config,
        created_at_ms: info.created_at_ms,
        metadata: info.metadata,
        stats: c.figures().stats,
    }
}

/// Moves directories the catalog names from `trash/` into `collections/`
/// (a create or replace recorded, not yet moved; a drop moved, not yet
/// recorded), and removes the rest of `trash/`.
fn restore_from_trash(root: &Path, catalog: &Catalog) -> Result<()> {
    let colls = root.join("collections");
    let Ok(entries) = fs::read_dir(root.join("trash")) else {
        return Ok(());
    };
    let mut moved = false;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let placed = colls.join(&name);
        if catalog.name_of_dir(&name)?.is_some() && !placed.exists() {
            fs::rename(e.path(), &placed).map_err(EngineError::io("restoring a collection"))?;
            moved = true;
        } else {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    if moved {
        sync_dir(&colls)?;
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one, and returns how many
/// collections may be open within it (room kept for connections and
/// other files).
fn open_files_allowance() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: reads and sets this process's own limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let cur = lim.rlim_cur;
    (cur / 2).max(cur.saturating_sub(4096)).max(16)
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

/// The catalog file of a database under `root`.
pub(crate) fn catalog_path(root: &Path) -> PathBuf {
    root.join(CATALOG_FILE)
}

/// The directory holding collection `name`'s files in the database under
/// `root` (which must not be open): for tools and tests that look at files.
pub fn collection_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let c = Catalog::open(&catalog_path(root))?;
    let e = c
        .get(name)?
        .ok_or_else(|| EngineError::CollectionNotFound(name.to_owned()))?;
    Ok(root.join("collections").join(e.dir))
}
