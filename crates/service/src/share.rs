//! Fair share between tenants. Each tenant may have a bounded number of
//! requests in flight (more are refused with 429 at once), and its storage
//! and search work runs on the service's worker pools, where tenants take
//! turns (see `scheduler`): alone, a tenant may use every worker; under
//! contention, each active tenant gets its share, and long work yields the
//! CPU to short work. One tenant at its limits therefore slows only
//! itself, and no work ever runs on the async runtime's threads except
//! what is known to be short (a quick search) and can start without
//! waiting for a lock.
//!
//! Work handed to a thread stops early once its request is gone: the
//! request's future, dropped by a timeout or a client that hung up, sets
//! the flag the engine's scans check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;
use vectorizer_engine::Deadline;

use crate::caller::Caller;
use crate::error::{Result, ServiceError};
use crate::scheduler::{Class, Pool};

/// How much lower the long-work pool's CPU priority is (Linux `nice`):
/// against a thread at normal priority it gets about a tenth of a
/// contended core, and all of an idle one.
const LONG_WORK_NICE: i32 = 10;

/// The fair-share settings.
#[derive(Debug, Clone, Copy)]
pub struct ShareOptions {
    /// Requests one tenant may have in flight.
    pub max_in_flight: usize,
    /// Jobs one tenant may run at once in each pool, however idle the
    /// others are (0: no cap but its share).
    pub tenant_workers: usize,
    /// Workers of the short-work pool (searches, point reads).
    pub short_workers: usize,
    /// Workers of the long-work pool (writes, scans, bodies, backups).
    pub long_workers: usize,
}

impl Default for ShareOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ShareOptions {
            max_in_flight: 64,
            tenant_workers: 0,
            short_workers: cores.max(2),
            long_workers: cores.max(2),
        }
    }
}

/// One tenant's share: its requests in flight, and its jobs queued or
/// running.
struct Gate {
    in_flight: AtomicUsize,
    jobs: AtomicUsize,
}

/// A job of one tenant, counted while it is queued or running.
struct Counted {
    gate: Arc<Gate>,
    active: Arc<AtomicUsize>,
}

impl Counted {
    fn new(gate: Arc<Gate>, active: Arc<AtomicUsize>) -> Counted {
        if gate.jobs.fetch_add(1, Ordering::SeqCst) == 0 {
            active.fetch_add(1, Ordering::SeqCst);
        }
        Counted { gate, active }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.gate.jobs.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub struct FairShare {
    options: ShareOptions,
    short: Arc<Pool>,
    long: Arc<Pool>,
    /// Tenants with jobs queued or running in either pool, for the pools'
    /// shares (a tenant whose requests wait on nothing of ours, such as
    /// a body trickling in, takes no share from the others).
    active: Arc<AtomicUsize>,
    /// By tenant (`None` for the local caller); a gate leaves the map when
    /// its tenant has nothing in flight, so the map holds only active ones.
    gates: Mutex<HashMap<Option<Uuid>, Arc<Gate>>>,
}

/// A request admitted for its tenant; its slot is freed when dropped.
pub struct Ticket {
    share: Arc<FairShare>,
    key: Option<Uuid>,
    gate: Arc<Gate>,
}

/// Sets the cancel flag when the request's future is dropped before its
/// work ended.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl FairShare {
    pub fn new(options: ShareOptions) -> Arc<FairShare> {
        let cap = match options.tenant_workers {
            0 => usize::MAX,
            n => n,
        };
        let active = Arc::new(AtomicUsize::new(0));
        Arc::new(FairShare {
            options,
            short: Pool::start("short", options.short_workers, cap, 0, active.clone()),
            long: Pool::start(
                "long",
                options.long_workers,
                cap,
                LONG_WORK_NICE,
                active.clone(),
            ),
            active,
            gates: Mutex::default(),
        })
    }

    /// Jobs waiting for a worker, (short, long).
    pub fn queued(&self) -> (usize, usize) {
        (self.short.queued(), self.long.queued())
    }

    pub fn options(&self) -> ShareOptions {
        self.options
    }

    /// Tenants with requests in flight now.
    pub fn active_tenants(&self) -> usize {
        self.gates.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn busy(&self) -> ServiceError {
        ServiceError::Busy(format!(
            "more than {} requests in flight for this tenant",
            self.options.max_in_flight
        ))
    }

    /// Admits one request of `caller`, or refuses it (429) when the caller
    /// already has its share in flight.
    pub fn admit(self: &Arc<Self>, caller: &Caller) -> Result<Ticket> {
        let key = match caller {
            Caller::Local | Caller::LocalReader => None,
            Caller::Tenant(t) => Some(t.user_id),
        };
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            gates
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Gate {
                        in_flight: AtomicUsize::new(0),
                        jobs: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        let before = gate.in_flight.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket {
            share: self.clone(),
            key,
            gate,
        };
        if before >= self.options.max_in_flight {
            // The ticket's drop gives the slot back.
            return Err(self.busy());
        }
        Ok(ticket)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.gate.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut gates = self.share.gates.lock().unwrap_or_else(|e| e.into_inner());
            // Held by the map and this ticket only, and still idle: no
            // job of the tenant is queued or running.
            if Arc::strong_count(&self.gate) == 2 && self.gate.in_flight.load(Ordering::SeqCst) == 0
            {
                gates.remove(&self.key);
            }
        }
    }
}

/// Collections' graph linking, run on the long-work pool in the turn of
/// the collection's owner (the local caller's for names in no user's
/// namespace): charged to the tenant whose writes it follows.
pub(crate) struct ShareLinker(pub(crate) std::sync::Weak<FairShare>);

impl vectorizer_engine::linker::Linker for ShareLinker {
    fn submit(&self, collection: &str, job: vectorizer_engine::linker::LinkJob) {
        let Some(share) = self.0.upgrade() else {
            return;
        };
        let key = crate::caller::split_stored(collection).map(|(user, _)| user);
        share.long.submit(key, job);
    }

    fn queued(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.long.queued())
    }
}

impl Drop for FairShare {
    fn drop(&mut self) {
        self.short.stop();
        self.long.stop();
    }
}

impl Ticket {
    /// Runs `f` on the long-work pool, in the tenant's turn. If this
    /// future is dropped, `f`'s deadline expires and its scans stop at
    /// their next check (or it never starts).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Deadline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_as(Class::Long, f).await
    }

    /// Runs `f` on the short-work pool: for bounded work a caller waits
    /// on (a search, reading points by id).
    pub async fn run_short<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Deadline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_as(Class::Short, f).await
    }

    async fn run_as<T: Send + 'static>(
        &self,
        class: Class,
        f: impl FnOnce(&Deadline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let deadline = Deadline::new(None, cancelled.clone());
        // The gate stays alive (and counted) until the job ends, even if
        // the request is gone by then.
        let gate = Counted::new(self.gate.clone(), self.share.active.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            if !cancelled.load(Ordering::Relaxed) {
                let _ = tx.send(f(&deadline));
            }
            drop(gate);
        });
        let pool = match class {
            Class::Short => &self.share.short,
            Class::Long => &self.share.long,
        };
        pool.submit(self.key, job);
        rx.await
            .map_err(|_| ServiceError::Internal("a storage task failed".into()))?
    }
}
