//! The database's tuning thread, and the wake-ups that ask a collection
//! again once a spaced-out measurement is allowed: a measurement made
//! stale by the end of a bulk load must not wait for the next search.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::mono_ms;
use crate::collection::Collection;
use crate::linker::{LinkJob, LinkPool};

/// One tuning thread (a [`LinkPool`] at the linkers' low priority, taking
/// namespaces in turn) and one waker thread that sleeps until the next
/// collection asked to be looked at again.
pub(crate) struct Tuner {
    pool: LinkPool,
    later: Arc<Later>,
    /// The waker thread started (else wake-ups are not kept: searches and
    /// linking still ask).
    waking: bool,
}

#[derive(Default)]
struct Waits {
    /// When (on [`mono_ms`]'s clock) to ask which collection again. At
    /// most one per collection and time: see `Recall::wake_at`.
    due: Vec<(u64, Weak<Collection>)>,
    stopping: bool,
}

#[derive(Default)]
struct Later {
    waits: Mutex<Waits>,
    changed: Condvar,
}

impl Tuner {
    pub(crate) fn new() -> Tuner {
        let later = Arc::new(Later::default());
        let waker = later.clone();
        let spawned = std::thread::Builder::new()
            .name("tune-wake".into())
            .spawn(move || waker.run());
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "could not start the tuning waker thread");
        }
        Tuner {
            pool: LinkPool::named(1, "tune"),
            later,
            waking: spawned.is_ok(),
        }
    }

    /// Queues a measurement unless the queue's lock is held this instant
    /// (then the job is handed back, unrun).
    pub(crate) fn try_submit(&self, collection: &str, job: LinkJob) -> Result<(), LinkJob> {
        self.pool.try_submit(collection, job)
    }

    /// Asks `c` again (its `schedule_tuning`) at `at` on [`mono_ms`]'s
    /// clock.
    pub(crate) fn wake(&self, at: u64, c: Weak<Collection>) {
        if !self.waking {
            return;
        }
        let mut w = self.later.lock();
        w.due.push((at, c));
        drop(w);
        self.later.changed.notify_one();
    }
}

impl Drop for Tuner {
    fn drop(&mut self) {
        let mut w = self.later.lock();
        w.stopping = true;
        w.due.clear();
        drop(w);
        self.later.changed.notify_one();
    }
}

impl Later {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut w = self.lock();
        loop {
            if w.stopping {
                return;
            }
            let now = mono_ms();
            let (ready, waiting): (Vec<_>, Vec<_>) =
                w.due.drain(..).partition(|(at, _)| *at <= now);
            w.due = waiting;
            if !ready.is_empty() {
                drop(w);
                for (_, c) in ready {
                    // Dropped or closed collections are skipped.
                    if let Some(c) = c.upgrade() {
                        c.tuning_woken();
                    }
                }
                w = self.lock();
                continue;
            }
            w = match w.due.iter().map(|(at, _)| *at).min() {
                None => self.changed.wait(w).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now));
                    match self.changed.wait_timeout(w, wait) {
                        Ok((w, _)) => w,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
        }
    }
}
