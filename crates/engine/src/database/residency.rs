//! Which collections are open: each opens on first use (once, however many
//! ask at once) and closes again when idle, least recently used first,
//! once more are open than `max_open_collections` or they hold more than
//! `memory_budget_bytes`. A collection in use (a handle held by a request)
//! or with points still to link is never closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Database, lock};
use crate::collection::Collection;
use crate::error::{EngineError, Result};

/// How long a collection that failed to open is refused before its files
/// are read again.
const RETRY_OPEN: std::time::Duration = std::time::Duration::from_secs(10);

/// One name's place among the open collections. Opening, closing and
/// replacing a collection happen under `coll`, so they never overlap.
#[derive(Default)]
pub(crate) struct Slot {
    coll: Mutex<Option<Arc<Collection>>>,
    /// When it was last used, on the database's clock.
    used: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Counters {
    clock: AtomicU64,
    opens: AtomicU64,
    open_failures: AtomicU64,
    evictions: AtomicU64,
    open_micros: AtomicU64,
    open: AtomicUsize,
}

/// Figures of the open collections, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Residency {
    pub open: usize,
    pub opens: u64,
    pub open_failures: u64,
    pub evictions: u64,
    /// Time spent opening collections, in total.
    pub open_seconds: f64,
    /// Linking jobs waiting for a thread.
    pub link_queue: usize,
    /// Memory the open collections hold.
    pub memory_bytes: u64,
    /// Recall tunings done since the database opened.
    pub tunings: u64,
}

impl Database {
    fn slot(&self, name: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Whether `slot` is still the one serving `name`.
    fn current(&self, name: &str, slot: &Arc<Slot>) -> bool {
        lock(&self.slots)
            .get(name)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Collection `name`, opened if it is not open. An open that fails
    /// fails this collection only, as [`EngineError::Damaged`].
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        loop {
            let slot = self.slot(name);
            let mut g = lock(&slot.coll);
            if let Some(c) = g.as_ref() {
                slot.used.store(self.tick(), Ordering::Relaxed);
                return Ok(c.clone());
            }
            if !self.current(name, &slot) {
                // Closed or replaced while this waited: look again.
                continue;
            }
            let Some(entry) = self.home.catalog.get(name)? else {
                drop(g);
                self.forget_slot(name, &slot);
                return Err(EngineError::CollectionNotFound(name.to_owned()));
            };
            // A collection that failed to open a moment ago fails again
            // without its files being read again.
            if lock(&self.failed)
                .get(name)
                .is_some_and(|(at, _)| at.elapsed() < RETRY_OPEN)
            {
                drop(g);
                self.forget_slot(name, &slot);
                return Err(EngineError::Damaged(name.to_owned()));
            }
            let started = Instant::now();
            let opened = Collection::open_in(
                &self.colls().join(&entry.dir),
                name,
                &entry,
                self.home.clone(),
                self.options.clone(),
            );
            let c = match opened {
                Ok(c) => {
                    lock(&self.failed).remove(name);
                    c
                }
                Err(e) => {
                    self.counters.open_failures.fetch_add(1, Ordering::Relaxed);
                    drop(g);
                    self.forget_slot(name, &slot);
                    let damaged = match &e {
                        EngineError::Corrupt(_) => true,
                        EngineError::Io { source, .. } => matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound
                                | std::io::ErrorKind::InvalidData
                                | std::io::ErrorKind::UnexpectedEof
                        ),
                        _ => false,
                    };
                    if !damaged {
                        // Out of files, out of space: not the collection's
                        // fault, and tried again at the next request.
                        tracing::warn!(collection = %name, error = %e, "a collection could not be opened");
                        return Err(e);
                    }
                    let reason = e.to_string();
                    let before = lock(&self.failed)
                        .insert(name.to_owned(), (Instant::now(), reason.clone()));
                    // Said once per reason: an operator must act on it, and
                    // a tenant asking again must not flood the log.
                    if before.is_none_or(|(_, r)| r != reason) {
                        tracing::error!(collection = %name, error = %reason, "a collection could not be opened: its files need repair or restoring from a backup");
                    }
                    return Err(EngineError::Damaged(name.to_owned()));
                }
            };
            self.counters.opens.fetch_add(1, Ordering::Relaxed);
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            self.counters
                .open_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            slot.used.store(self.tick(), Ordering::Relaxed);
            *g = Some(c.clone());
            drop(g);
            self.evict();
            return Ok(c);
        }
    }

    fn tick(&self) -> u64 {
        self.counters.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The collection if it is open now (opens nothing).
    pub fn open_now(&self, name: &str) -> Option<Arc<Collection>> {
        let slot = lock(&self.slots).get(name).cloned()?;
        let c = slot.coll.try_lock().ok()?.clone()?;
        slot.used.store(self.tick(), Ordering::Relaxed);
        Some(c)
    }

    /// The open collections.
    pub fn open_collections(&self) -> Vec<Arc<Collection>> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        slots.iter().filter_map(|s| lock(&s.coll).clone()).collect()
    }

    /// Removes `slot` from the map if it still serves `name` and nobody
    /// waits on it.
    fn forget_slot(&self, name: &str, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        if slots.get(name).is_some_and(|s| Arc::ptr_eq(s, slot)) && Arc::strong_count(slot) <= 2 {
            slots.remove(name);
        }
    }

    /// Takes `name`'s collection out of service for a drop, rename or
    /// replace, its writer waited for and its writes refused from now on,
    /// and runs `f` with it while no lookup can open the name. Lookups
    /// waiting meanwhile look again once `f` is done.
    pub(super) fn changing<T>(
        &self,
        name: &str,
        f: impl FnOnce(Option<&Arc<Collection>>) -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(name);
        let mut g = lock(&slot.coll);
        let held = g.take();
        if let Some(c) = &held {
            c.mark_dropped();
            self.counters.open.fetch_sub(1, Ordering::Relaxed);
        }
        let out = f(held.as_ref());
        if out.is_err()
            && let Some(c) = &held
        {
            // Not changed after all: served again.
            c.unmark_dropped();
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            *g = held.clone();
        }
        drop(g);
        self.forget_slot(name, &slot);
        out
    }

    /// Closes `name` if it is open and idle.
    pub(crate) fn close(&self, name: &str) -> bool {
        let Some(slot) = lock(&self.slots).get(name).cloned() else {
            return false;
        };
        self.close_slot(name, &slot)
    }

    fn close_slot(&self, name: &str, slot: &Arc<Slot>) -> bool {
        let Ok(mut g) = slot.coll.try_lock() else {
            return false;
        };
        let Some(c) = g.as_ref() else { return false };
        // The slot's only: no request holds it.
        if Arc::strong_count(c) > 1 || !c.is_idle() {
            return false;
        }
        // Written so that the next open replays no log, then recorded
        // (not when opened for looking only: nothing is written then).
        let written = if self.options.background {
            c.flush().and_then(|()| c.record_figures())
        } else {
            Ok(())
        };
        if let Err(e) = written {
            tracing::warn!(collection = %name, error = %e, "closing a collection failed; it stays open");
            return false;
        }
        if Arc::strong_count(c) > 1 {
            return false;
        }
        // What it still counts beyond its recorded figures (rows owed by
        // writes whose snapshot is on disk now) leaves with it.
        c.forget_live(&mut self.home.live().open);
        *g = None;
        drop(g);
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        self.forget_slot(name, slot);
        true
    }

    /// Closes idle collections, least recently used first, while more are
    /// open than the cap allows or they hold more than the budget. A
    /// namespace holding more than its share of either (the cap or budget
    /// over the namespaces with open collections) gives up its own first,
    /// so that one tenant cycling through many collections closes its own
    /// rather than everyone's.
    pub fn evict(&self) {
        let cap = self.options.max_open_collections.max(1);
        let budget = self.options.memory_budget_bytes;
        let mut open: Vec<(String, Arc<Slot>, u64, u64)> = {
            let slots = lock(&self.slots);
            slots
                .iter()
                .filter_map(|(n, s)| {
                    let g = s.coll.try_lock().ok()?;
                    let mem = g.as_ref()?.memory_estimate();
                    Some((n.clone(), s.clone(), s.used.load(Ordering::Relaxed), mem))
                })
                .collect()
        };
        let mut count = open.len();
        let mut memory: u64 = open.iter().map(|o| o.3).sum();
        if count <= cap && memory <= budget {
            return;
        }
        // Per namespace: collections and memory held.
        let mut held: HashMap<&str, (usize, u64)> = HashMap::new();
        for o in &open {
            let e = held.entry(crate::catalog::namespace(&o.0)).or_default();
            e.0 += 1;
            e.1 += o.3;
        }
        let k = held.len().max(1);
        let (count_share, memory_share) = (cap.div_ceil(k), budget / k as u64);
        let over: std::collections::HashSet<String> = held
            .iter()
            .filter(|(_, (n, m))| *n > count_share || *m > memory_share)
            .map(|(ns, _)| (*ns).to_owned())
            .collect();
        // Namespaces over their share first, then by age.
        open.sort_by_key(|o| (!over.contains(crate::catalog::namespace(&o.0)), o.2));
        for (name, slot, _, mem) in open {
            if count <= cap && memory <= budget {
                break;
            }
            if self.close_slot(&name, &slot) {
                count -= 1;
                memory = memory.saturating_sub(mem);
            }
        }
    }

    /// Figures of the open collections.
    pub fn residency(&self) -> Residency {
        // Slots being opened or closed are skipped, not waited for.
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let open: Vec<Arc<Collection>> = slots
            .iter()
            .filter_map(|s| s.coll.try_lock().ok()?.clone())
            .collect();
        Residency {
            open: open.len(),
            opens: self.counters.opens.load(Ordering::Relaxed),
            open_failures: self.counters.open_failures.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            open_seconds: self.counters.open_micros.load(Ordering::Relaxed) as f64 / 1e6,
            link_queue: self.home.linker.queued(),
            memory_bytes: open.iter().map(|c| c.memory_estimate()).sum(),
            tunings: self.home.tunings.load(Ordering::Relaxed),
        }
    }

    /// The open collections' last recall measurements, by name (skipping
    /// any being opened or closed this instant).
    pub fn recall_reports(&self) -> Vec<(String, crate::collection::RecallReport)> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        slots
            .iter()
            .filter_map(|s| s.coll.try_lock().ok()?.clone())
            .filter_map(|c| Some((c.name().to_owned(), c.recall()?)))
            .collect()
    }
}
