//! A served collection's ties to its database: the catalog entry it keeps
//! current (figures when it closes, what it is when that changes), the
//! dirty mark set before its files first change, and its share of the
//! live totals of its namespace.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Collection, META_FILE, Meta, lock};
use crate::catalog::{Catalog, Change, Entry, Stats, namespace};
use crate::error::{EngineError, Result};
use crate::fsutil::write_atomic;
use crate::linker::Linker;

/// What a database shares with its served collections.
pub(crate) struct Home {
    pub(crate) catalog: Catalog,
    pub(crate) linker: Arc<dyn Linker>,
    /// Namespace figures in memory; never held across file work.
    pub(crate) live: Mutex<Live>,
    /// Held across a catalog commit that changes figures and the update of
    /// `live` that follows it, so that `known` takes each change once.
    /// Lock order: a collection's writer, then `commits`, then `live`.
    pub(crate) commits: Mutex<()>,
    /// Where recall measurements run (none: not at all).
    pub(crate) tuner: Option<super::recall::Tuner>,
    /// Tunings done since the database opened.
    pub(crate) tunings: std::sync::atomic::AtomicU64,
}

/// Namespace figures in memory.
#[derive(Default)]
pub(crate) struct Live {
    /// By namespace: what its open collections hold beyond their recorded
    /// figures.
    pub(crate) open: HashMap<String, Figures>,
    /// By namespace: the catalog's totals, for namespaces read since start
    /// (kept current with every commit).
    pub(crate) known: HashMap<String, crate::catalog::Totals>,
}

/// A collection's figures, with the bytes a quota counts (see
/// [`Collection::committed_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub stats: Stats,
    pub committed_bytes: u64,
}

impl Figures {
    /// Figures as the catalog records them (nothing owed beyond the disk).
    pub(crate) fn recorded(stats: Stats) -> Figures {
        Figures {
            stats,
            committed_bytes: stats.disk_bytes,
        }
    }

    fn diff(a: u64, b: u64) -> u64 {
        a.wrapping_sub(b)
    }

    /// `self - o`, wrapping (deltas are added back with wrapping too).
    pub(crate) fn minus(self, o: Figures) -> Figures {
        Figures {
            stats: Stats {
                points: Self::diff(self.stats.points, o.stats.points),
                disk_bytes: Self::diff(self.stats.disk_bytes, o.stats.disk_bytes),
                logical_bytes: Self::diff(self.stats.logical_bytes, o.stats.logical_bytes),
            },
            committed_bytes: Self::diff(self.committed_bytes, o.committed_bytes),
        }
    }

    pub(crate) fn plus(self, o: Figures) -> Figures {
        Figures {
            stats: Stats {
                points: self.stats.points.wrapping_add(o.stats.points),
                disk_bytes: self.stats.disk_bytes.wrapping_add(o.stats.disk_bytes),
                logical_bytes: self.stats.logical_bytes.wrapping_add(o.stats.logical_bytes),
            },
            committed_bytes: self.committed_bytes.wrapping_add(o.committed_bytes),
        }
    }
}

impl Home {
    pub(crate) fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        lock(&self.live)
    }

    /// Commits `changes` to the catalog, then, with `live` held, takes the
    /// totals' changes into `known` and runs `after` on the open figures:
    /// a reader sees both or neither. `live` is not held during the commit.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        durable: bool,
        after: impl FnOnce(&mut HashMap<String, Figures>),
    ) -> Result<()> {
        let _c = lock(&self.commits);
        let moved = self.catalog.commit(changes, durable)?;
        let mut l = self.live();
        for (ns, (before, now)) in moved {
            if let Some(k) = l.known.get_mut(&ns) {
                *k = k.moved(before, now);
            }
        }
        after(&mut l.open);
        Ok(())
    }

    /// Every namespace's catalog totals and its open collections' changes.
    pub(crate) fn usage_all(&self) -> Result<Vec<(String, crate::catalog::Totals, Figures)>> {
        // Under `commits`, as a first read in `usage`: no commit falls
        // between the read and what is kept of it.
        let _c = lock(&self.commits);
        let all = self.catalog.all_totals()?;
        let mut l = self.live();
        Ok(all
            .into_iter()
            .map(|(ns, t)| {
                let k = *l.known.entry(ns.clone()).or_insert(t);
                let d = l.open.get(&ns).copied().unwrap_or_default();
                (ns, k, d)
            })
            .collect())
    }

    /// A namespace's catalog totals and its open collections' changes.
    pub(crate) fn usage(&self, ns: &str) -> Result<(crate::catalog::Totals, Figures)> {
        {
            let l = self.live();
            if let Some(k) = l.known.get(ns) {
                return Ok((*k, l.open.get(ns).copied().unwrap_or_default()));
            }
        }
        // First read of the namespace: no commit may fall between reading
        // the catalog and keeping what was read.
        let _c = lock(&self.commits);
        let t = self.catalog.totals(ns)?;
        let mut l = self.live();
        let k = *l.known.entry(ns.to_owned()).or_insert(t);
        Ok((k, l.open.get(ns).copied().unwrap_or_default()))
    }

    pub(crate) fn add_live(live: &mut HashMap<String, Figures>, ns: &str, delta: Figures) {
        if delta == Figures::default() {
            return;
        }
        let e = live.entry(ns.to_owned()).or_default();
        *e = e.plus(delta);
        if *e == Figures::default() {
            live.remove(ns);
        }
    }
}

impl Collection {
    /// Opens the collection in `dir` as the catalog describes it, served
    /// from `home`: `collection.json` is rewritten first if it says
    /// otherwise (the catalog is the truth for what a collection is).
    pub(crate) fn open_in(
        dir: &Path,
        name: &str,
        entry: &Entry,
        home: Arc<Home>,
        options: super::EngineOptions,
    ) -> Result<Arc<Collection>> {
        if options.background {
            let raw = std::fs::read(dir.join(META_FILE))
                .map_err(EngineError::io("reading collection.json"))?;
            let mut meta: Meta = serde_json::from_slice(&raw)
                .map_err(|e| EngineError::Corrupt(format!("{}/{META_FILE}: {e}", dir.display())))?;
            if meta.name != name || meta.config != entry.config || meta.metadata != entry.metadata {
                meta.name = name.to_owned();
                meta.config = entry.config.clone();
                meta.metadata = entry.metadata.clone();
                write_atomic(
                    &dir.join(META_FILE),
                    &serde_json::to_vec_pretty(&meta).expect("serializable"),
                )?;
            }
        }
        let mut c = Collection::open(dir, options)?;
        c.home = Some(home);
        let recorded = Figures::recorded(entry.stats);
        *lock(&c.recorded) = recorded;
        *lock(&c.settled) = recorded;
        // A mark a crash left (or a change that never came) is cleared
        // when this instance closes.
        if c.options.background
            && c.home
                .as_ref()
                .is_some_and(|h| h.catalog.is_dirty(name).unwrap_or(false))
        {
            c.dirty.store(true, Ordering::SeqCst);
        }
        let c = Arc::new(c);
        let _ = c.this.set(Arc::downgrade(&c));
        // Figures that differ from the catalog's (a crash left it behind)
        // count from here on, and are recorded when it closes.
        c.settle();
        if lock(&c.settled).stats != entry.stats && c.options.background {
            c.mark_dirty()?;
        }
        c.schedule_linking();
        Ok(c)
    }

    /// The collection's figures now.
    pub fn figures(&self) -> Figures {
        Figures {
            stats: Stats {
                points: self.len() as u64,
                disk_bytes: self.disk_bytes(),
                logical_bytes: self.logical_bytes(),
            },
            committed_bytes: self.committed_bytes(),
        }
    }

    /// Marks the collection dirty in the catalog, durably, before its
    /// files first change while it is open. Called under the writer lock.
    pub(crate) fn mark_dirty(&self) -> Result<()> {
        let Some(home) = &self.home else {
            return Ok(());
        };
        if !self.dirty.load(Ordering::SeqCst) {
            // No figure changes: the catalog alone.
            home.catalog
                .commit(&[Change::Dirty(self.name.clone(), true)], true)?;
            self.dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Adds what changed since the last call to the namespace's live
    /// totals, and refreshes the memory figure.
    pub(crate) fn settle(&self) {
        let Some(home) = &self.home else {
            return;
        };
        let now = self.figures();
        self.memory
            .store(self.memory_bytes_now(), Ordering::Relaxed);
        // `settled` is released before `live` is taken: deltas commute.
        let delta = {
            let mut settled = lock(&self.settled);
            let d = now.minus(*settled);
            *settled = now;
            d
        };
        Home::add_live(&mut home.live().open, namespace(&self.name), delta);
    }

    /// Records the collection's figures in the catalog and clears its dirty
    /// mark (the record need not be durable: lost in a crash, the mark
    /// stays and the figures are taken again at the next start). Taken
    /// under the writer lock, so no write falls between.
    pub(crate) fn record_figures(&self) -> Result<()> {
        let Some(home) = &self.home else {
            return Ok(());
        };
        let _w = lock(&self.writer);
        if self.dropped.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.settle();
        let Some(mut entry) = home.catalog.get(&self.name)? else {
            return Ok(());
        };
        let now = *lock(&self.settled);
        let was = *lock(&self.recorded);
        let changed = entry.stats != now.stats;
        if !changed && !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        entry.stats = now.stats;
        let next = Figures::recorded(now.stats);
        let ns = namespace(&self.name);
        home.commit(
            &[
                Change::Put(self.name.clone(), entry),
                Change::Dirty(self.name.clone(), false),
            ],
            false,
            |open| Home::add_live(open, ns, was.minus(next)),
        )?;
        *lock(&self.recorded) = next;
        self.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the collection's share out of the live totals (it is being
    /// dropped or replaced: the caller changes the catalog under `live`).
    pub(crate) fn forget_live(&self, live: &mut HashMap<String, Figures>) {
        let settled = *lock(&self.settled);
        let recorded = *lock(&self.recorded);
        Home::add_live(live, namespace(&self.name), recorded.minus(settled));
        *lock(&self.settled) = recorded;
    }

    /// Writes what this collection is (config and metadata) into its
    /// catalog entry, durably. Called under the writer lock after
    /// `collection.json` changed.
    pub(crate) fn sync_entry(&self) -> Result<()> {
        let Some(home) = &self.home else {
            return Ok(());
        };
        let meta = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        // Under the writer lock: no other change of this entry (a close's
        // record, a rename, a drop) falls between the read and the commit.
        let Some(mut entry) = home.catalog.get(&self.name)? else {
            return Ok(());
        };
        entry.config = meta.config;
        entry.metadata = meta.metadata;
        home.commit(&[Change::Put(self.name.clone(), entry)], true, |_| ())
    }

    /// Whether the collection may be closed: no linking left to do.
    pub(crate) fn is_idle(&self) -> bool {
        self.linking() == 0 && self.unindexed() == 0
    }

    /// Memory held, as of the last change.
    pub(crate) fn memory_estimate(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }
}
