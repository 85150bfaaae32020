//! A collection's own measure of its search recall, and the default search
//! breadth (`ef`) chosen from it to meet the collection's `target_recall`.
//!
//! Searches record their query vectors in a small ring (a copy into a
//! buffer reused in place; skipped when another search holds it). Once the
//! graph holds every point, a job on the database's tuning thread measures
//! (see `recall/measure.rs`) and the breadth it picks becomes the default
//! of unfiltered searches of at most [`K`] hits. It is measured again once
//! a tenth of the points changed (or enough changed while it ran that it
//! describes a graph still being loaded), or the ring filled with queries
//! the last measurement did not see. Past the first few after opening
//! (which take the sample from stored points to a full ring of real
//! queries), a measurement asked for by queries comes no sooner than ten
//! times the last one's duration after it, so that however hard a tenant
//! searches, measuring takes at most a tenth of the tuning thread's time;
//! one asked for by changes comes after the last one's duration (its cost
//! is of the order of the linking the changes took). A measurement that
//! must wait is asked for again when it may run (`recall/tuner.rs`), not
//! only by the next search.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Collection, EXACT_BELOW, SearchRequest, lock};
use crate::filter::Filter;

mod measure;
mod tuner;

pub(crate) use tuner::Tuner;

/// Queries a measurement takes at most (fewer for long vectors or large
/// collections: see [`RING_BYTES`] and `measure.rs`).
pub const SAMPLE: usize = 256;
/// Distinct recorded queries needed before they replace stored points.
pub const MIN_REAL: usize = 64;
/// Recall is measured at this many hits (a search's usual `limit`).
pub const K: usize = 10;
/// Most bytes of queries a collection keeps: 256 queries up to 1,024
/// dimensions, fewer beyond (one open collection's ring stays small
/// whatever dimension a tenant picks).
const RING_BYTES: usize = 1 << 20;
/// A measurement is redone after this many points changed, or a tenth.
const MIN_CHANGES: u64 = 100;
/// Least time between two measurements asked for by queries, as a
/// multiple of the last one's duration.
const SPACING: u32 = 10;
/// The same for one asked for by changed points (or before any completed).
const CHANGES_SPACING: u32 = 1;
/// Least time between two measurements, whatever asks.
const MIN_SPACING: Duration = Duration::from_secs(1);
/// Points changed within this long (milliseconds) mean writes are going
/// on: a measurement asked for by changes then waits as one asked for by
/// queries does, or until they stop (a bulk load is measured once, at its
/// end, not at every tenth of its growth).
const QUIET_MS: u64 = 1000;
/// Measurements after opening that are not spaced out: stored points, the
/// first real queries, a full ring of them.
const QUICK: u8 = 3;

/// Where a measurement's queries came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallSource {
    /// Searches the collection answered.
    Queries,
    /// Stored points, each held out of its own answer (before enough
    /// searches were seen).
    StoredPoints,
}

/// The last measurement of a collection's recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallReport {
    /// The target the breadth was chosen for.
    pub target: f64,
    /// Mean recall@10 of the sample at `ef`.
    pub estimate: f64,
    /// The breadth searches without `ef` use.
    pub ef: usize,
    /// Queries measured.
    pub queries: usize,
    pub source: RecallSource,
    /// Points in the collection when measured.
    pub points: u64,
    /// When, in milliseconds since the Unix epoch.
    pub measured_at_ms: u64,
    /// How long the measurement took, in milliseconds (paced work included).
    pub took_ms: u64,
}

#[derive(Default)]
struct Ring {
    queries: Vec<Vec<f32>>,
    next: usize,
}

/// Queries of `dim` floats that fit in `bytes`, at most [`SAMPLE`].
fn fitting(bytes: usize, dim: usize) -> usize {
    (bytes / (dim.max(1) * 4)).clamp(1, SAMPLE)
}

/// Milliseconds on a monotonic clock (since first asked).
fn mono_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// A collection's recall state.
pub(crate) struct Recall {
    /// `target_recall` as f64 bits; 0 when tuning is off.
    target: AtomicU64,
    /// Queries the ring holds at most.
    ring_len: usize,
    ring: Mutex<Ring>,
    /// Queries recorded since the collection opened.
    recorded: AtomicU64,
    /// Points added or removed since the collection opened.
    changes: AtomicU64,
    /// A measurement is queued or running.
    queued: AtomicBool,
    /// The breadth chosen by the last measurement (0: none yet).
    tuned_ef: AtomicUsize,
    /// Measurements left that need not wait for `not_before`.
    quick: AtomicU8,
    report: Mutex<Option<RecallReport>>,
    /// `changes` and `recorded` past which the last measurement is stale.
    stale_changes: AtomicU64,
    stale_recorded: AtomicU64,
    /// [`mono_ms`] before which no measurement is redone for queries
    /// ([`SPACING`]), and for changes ([`CHANGES_SPACING`]).
    not_before: AtomicU64,
    not_before_changes: AtomicU64,
    /// The last measurement saw enough points change while it ran that
    /// the graph it measured is gone: measured again (for changes).
    provisional: AtomicBool,
    /// The [`mono_ms`] time a wake-up is registered for (0: none), so that
    /// searches asking again register it once.
    wake_at: AtomicU64,
    /// [`mono_ms`] of the last change.
    last_change: AtomicU64,
}

/// Whether a measurement may be queued.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Now,
    /// Stale, but too soon: at this [`mono_ms`] time.
    At(u64),
    No,
}

impl Recall {
    pub(crate) fn new(target: Option<f64>, dim: usize) -> Recall {
        Recall {
            target: AtomicU64::new(target.map_or(0, f64::to_bits)),
            ring_len: fitting(RING_BYTES, dim),
            ring: Mutex::default(),
            recorded: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            tuned_ef: AtomicUsize::new(0),
            quick: AtomicU8::new(QUICK),
            report: Mutex::new(None),
            stale_changes: AtomicU64::new(0),
            stale_recorded: AtomicU64::new(MIN_REAL as u64),
            not_before: AtomicU64::new(0),
            not_before_changes: AtomicU64::new(0),
            provisional: AtomicBool::new(false),
            wake_at: AtomicU64::new(0),
            last_change: AtomicU64::new(0),
        }
    }

    pub(crate) fn target(&self) -> Option<f64> {
        let bits = self.target.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// A new target: the last measurement no longer applies (one running
    /// now is thrown away when it ends).
    pub(crate) fn set_target(&self, target: Option<f64>) {
        // Under the report's lock, which a measurement holds to apply its
        // result: one for the old target is then seen as such.
        let mut report = lock(&self.report);
        self.target
            .store(target.map_or(0, f64::to_bits), Ordering::Relaxed);
        self.tuned_ef.store(0, Ordering::Relaxed);
        self.quick.store(1, Ordering::Relaxed);
        self.not_before.store(0, Ordering::Relaxed);
        self.not_before_changes.store(0, Ordering::Relaxed);
        self.provisional.store(false, Ordering::Relaxed);
        *report = None;
        drop(report);
        if target.is_none() {
            *self.ring.lock().unwrap_or_else(|e| e.into_inner()) = Ring::default();
        }
    }

    /// The measured breadth, if any.
    fn ef(&self) -> Option<usize> {
        self.target()?;
        Some(self.tuned_ef.load(Ordering::Relaxed)).filter(|e| *e > 0)
    }

    pub(crate) fn report(&self) -> Option<RecallReport> {
        self.target().and(lock(&self.report).clone())
    }

    /// Keeps a copy of a search's query (unless another search is doing
    /// the same this instant).
    pub(crate) fn record(&self, q: &[f32]) {
        if self.target().is_none() {
            return;
        }
        let mut ring = match self.ring.try_lock() {
            Ok(ring) => ring,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let at = ring.next;
        ring.next = (at + 1) % self.ring_len;
        if ring.queries.len() <= at {
            ring.queries.push(q.to_vec());
        } else {
            let slot = &mut ring.queries[at];
            slot.clear();
            slot.extend_from_slice(q);
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes the ring may hold (counted in the collection's memory while
    /// it has a target).
    pub(crate) fn ring_bytes(&self, dim: usize) -> u64 {
        if self.target().is_none() {
            return 0;
        }
        (self.ring_len * dim * 4) as u64
    }

    pub(crate) fn changed(&self, points: usize) {
        self.changes.fetch_add(points as u64, Ordering::Relaxed);
        self.last_change.store(mono_ms(), Ordering::Relaxed);
    }

    /// Whether a measurement is missing or stale, and when it may run;
    /// [`Due::No`] while one is queued. Atomic loads only (searches ask).
    fn due(&self) -> Due {
        if self.target().is_none() || self.queued.load(Ordering::Relaxed) {
            return Due::No;
        }
        let when = |at: u64| {
            if mono_ms() >= at {
                Due::Now
            } else {
                Due::At(at)
            }
        };
        let for_changes = self.not_before_changes.load(Ordering::Relaxed);
        if self.tuned_ef.load(Ordering::Relaxed) == 0 {
            // (An abandoned measurement spaces out the next try too.)
            return when(for_changes);
        }
        let changed = self.provisional.load(Ordering::Relaxed)
            || self.changes.load(Ordering::Relaxed) >= self.stale_changes.load(Ordering::Relaxed);
        let searched =
            self.recorded.load(Ordering::Relaxed) >= self.stale_recorded.load(Ordering::Relaxed);
        match (changed, searched) {
            // (The first few after opening are for queries: see QUICK.)
            (_, true) if self.quick.load(Ordering::Relaxed) > 0 => Due::Now,
            (true, _) => {
                let quiet = self.last_change.load(Ordering::Relaxed) + QUIET_MS;
                if mono_ms() >= quiet {
                    when(for_changes)
                } else {
                    // Writes going on: spaced as for queries, or asked
                    // again once they stop.
                    when(
                        self.not_before
                            .load(Ordering::Relaxed)
                            .min(quiet.max(for_changes)),
                    )
                }
            }
            (false, true) => when(self.not_before.load(Ordering::Relaxed)),
            (false, false) => Due::No,
        }
    }

    /// After a measurement that took `took` (completed, or abandoned after
    /// real work), the next waits.
    fn space(&self, took: Duration) {
        let after = |n: u32| mono_ms() + (took * n).max(MIN_SPACING).as_millis() as u64;
        self.not_before.store(after(SPACING), Ordering::Relaxed);
        self.not_before_changes
            .store(after(CHANGES_SPACING), Ordering::Relaxed);
    }
}

/// Spends at most `share` of one core: after each slice of work, rests in
/// proportion to it.
pub(crate) struct Pace {
    share: f64,
}

impl Pace {
    fn rest(&self, worked: Duration) {
        let share = self.share.clamp(0.01, 1.0);
        if share < 1.0 {
            std::thread::sleep(worked.mul_f64((1.0 - share) / share));
        }
    }
}

impl Collection {
    /// The breadth of a search that names none. The measured one serves
    /// unfiltered searches of at most [`K`] hits (what it was measured
    /// for); others take the larger of it and `hnsw.ef_search`. Without a
    /// measurement (or a target), `hnsw.ef_search`.
    pub fn default_ef(&self, req: &SearchRequest) -> usize {
        let fixed = self.ef_search.load(Ordering::Relaxed);
        match self.recall.ef() {
            Some(ef) if req.limit <= K && req.filter.as_ref().is_none_or(Filter::is_empty) => ef,
            Some(ef) => ef.max(fixed),
            None => fixed,
        }
    }

    /// Queues a measurement if the collection has a target, is large
    /// enough for graph search, has every point linked, and its last
    /// measurement is missing or stale. Never waits for a lock: if the
    /// tuning queue is busy this instant, a later search asks again.
    pub(crate) fn schedule_tuning(&self) {
        self.ask_tuning();
    }

    /// [`schedule_tuning`](Self::schedule_tuning) at a wake-up it asked
    /// for: if a lock or the queue was busy this instant, asked again a
    /// second later (no search may come to ask).
    pub(crate) fn tuning_woken(&self) {
        self.recall.wake_at.store(0, Ordering::Relaxed);
        if self.ask_tuning() == Asked::Busy
            && let (Some(home), Some(me)) = (self.home.as_ref(), self.this.get())
            && let Some(tuner) = home.tuner.as_ref()
        {
            let at = mono_ms() + MIN_SPACING.as_millis() as u64;
            self.recall.wake_at.store(at, Ordering::Relaxed);
            tuner.wake(at, me.clone());
        }
    }

    fn ask_tuning(&self) -> Asked {
        let due = self.recall.due();
        if due == Due::No {
            return Asked::NotNow;
        }
        let (Some(home), Some(me)) = (self.home.as_ref(), self.this.get()) else {
            return Asked::NotNow;
        };
        let Some(tuner) = home.tuner.as_ref() else {
            return Asked::NotNow;
        };
        if !self.options.background
            || self.len() <= EXACT_BELOW
            || self.dropped.load(Ordering::SeqCst)
        {
            return Asked::NotNow;
        }
        if let Due::At(at) = due {
            // Asked again then (once for each time: searches ask often).
            if self.recall.wake_at.swap(at, Ordering::Relaxed) != at {
                tuner.wake(at, me.clone());
            }
            return Asked::NotNow;
        }
        // (A try: a search never waits here. Points still to link ask
        // again when the last is linked.)
        match self.state.try_read() {
            Err(_) => return Asked::Busy,
            Ok(st) if !st.unindexed.is_empty() => return Asked::NotNow,
            Ok(_) => {}
        }
        if self.recall.queued.swap(true, Ordering::SeqCst) {
            return Asked::NotNow;
        }
        let job = Job(me.clone());
        let share = self.options.tuning_cpu_share;
        // Handed back when the queue is busy: dropped unrun, which clears
        // `queued`.
        match tuner.try_submit(&self.name, Box::new(move || job.run(&Pace { share }))) {
            Ok(()) => Asked::Queued,
            Err(_) => Asked::Busy,
        }
    }
}

/// What asking for a measurement did.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Queued,
    /// Not due, not yet (a wake-up is registered), or someone else will
    /// ask (the linker, when points wait to be linked).
    NotNow,
    /// A lock or the queue was busy this instant.
    Busy,
}

/// A queued measurement. `queued` is cleared when it is dropped, run or
/// not (a pool that stops drops its queue; a panic unwinds through it).
struct Job(Weak<Collection>);

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(c) = self.0.upgrade() {
            c.recall.queued.store(false, Ordering::SeqCst);
        }
    }
}

impl Job {
    fn run(self, pace: &Pace) {
        let measured = self.measure(pace);
        let me = self.0.clone();
        drop(self);
        // Queries or writes that came while it ran may call for another.
        if measured && let Some(c) = me.upgrade() {
            c.schedule_tuning();
        }
    }

    /// One measurement, applied unless the target changed meanwhile;
    /// whether it completed.
    fn measure(&self, pace: &Pace) -> bool {
        let started = Instant::now();
        let Some((recorded, changes)) = self.0.upgrade().map(|c| {
            (
                c.recall.recorded.load(Ordering::Relaxed),
                c.recall.changes.load(Ordering::Relaxed),
            )
        }) else {
            return false;
        };
        let outcome = measure::run(&self.0, pace);
        let Some(c) = self.0.upgrade() else {
            return false;
        };
        let r = &c.recall;
        let took = started.elapsed();
        // Measured or abandoned after real work, the next waits (one
        // abandoned at once, for points still waiting to be linked, is
        // asked for again when they are).
        if outcome.is_some() || took > Duration::from_millis(50) {
            r.space(took);
        }
        let Some(report) = outcome else {
            return false;
        };
        let mut current = lock(&r.report);
        if r.target() != Some(report.target) {
            return true;
        }
        // Points changed while it ran: enough, and it measured a graph that
        // is gone (a bulk load's last batches came meanwhile). Redone once:
        // under steady writes, a redo that is provisional too waits for
        // the tenth that makes any measurement stale.
        let moved = r.changes.load(Ordering::Relaxed) - changes;
        let provisional =
            moved >= MIN_CHANGES.max(report.points / 100) && !r.provisional.load(Ordering::Relaxed);
        r.provisional.store(provisional, Ordering::Relaxed);
        let report = RecallReport {
            took_ms: took.as_millis() as u64,
            ..report
        };
        tracing::debug!(
            collection = %c.name,
            ef = report.ef,
            estimate = report.estimate,
            queries = report.queries,
            took_ms = report.took_ms,
            "search breadth chosen for the recall target"
        );
        r.tuned_ef.store(report.ef, Ordering::Relaxed);
        r.stale_changes.store(
            changes + MIN_CHANGES.max(report.points / 10),
            Ordering::Relaxed,
        );
        let ring = r.ring_len as u64;
        // Measured again once the ring holds queries this measurement did
        // not see: enough of them to replace stored points, then enough to
        // fill the ring, then a full ring.
        r.stale_recorded.store(
            match report.source {
                // Enough to switch; or, if that many were seen and were not
                // distinct enough, a ring of new ones.
                RecallSource::StoredPoints if recorded < ring.min(MIN_REAL as u64) => {
                    ring.min(MIN_REAL as u64)
                }
                RecallSource::StoredPoints => recorded + ring,
                RecallSource::Queries if report.queries as u64 >= ring => recorded + ring,
                RecallSource::Queries => recorded + (ring - report.queries as u64),
            },
            Ordering::Relaxed,
        );
        let _ = r
            .quick
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
        *current = Some(report);
        drop(current);
        if let Some(home) = &c.home {
            home.tunings.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}
