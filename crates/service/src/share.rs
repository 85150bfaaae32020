//! Fair share between tenants. Each tenant may have a bounded number of
//! requests in flight (more are refused with 429 at once) and runs its
//! storage and search work on a bounded number of blocking threads at a
//! time (more wait in that tenant's own queue). One tenant at its limits
//! therefore slows only itself, and no work ever runs on the async
//! runtime's threads except what is known to be short (a quick search)
//! and can start without waiting for a lock.
//!
//! Work handed to a thread stops early once its request is gone: the
//! request's future, dropped by a timeout or a client that hung up, sets
//! the flag the engine's scans check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use vectorizer_engine::Deadline;

use crate::caller::Caller;
use crate::error::{Result, ServiceError};

/// The fair-share settings.
#[derive(Debug, Clone, Copy)]
pub struct ShareOptions {
    /// Requests one tenant may have in flight.
    pub max_in_flight: usize,
    /// Blocking tasks one tenant (of the Hub) may run at once.
    pub tenant_workers: usize,
    /// Blocking tasks the local caller (Hub off) may run at once.
    pub local_workers: usize,
}

impl Default for ShareOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ShareOptions {
            max_in_flight: 64,
            tenant_workers: (cores / 2).max(1),
            local_workers: (cores * 2).max(4),
        }
    }
}

/// One tenant's share: its requests in flight and its worker permits.
struct Gate {
    in_flight: AtomicUsize,
    workers: Arc<Semaphore>,
}

pub struct FairShare {
    options: ShareOptions,
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
        Arc::new(FairShare {
            options,
            gates: Mutex::default(),
        })
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
        let (key, workers) = match caller {
            Caller::Local | Caller::LocalReader => (None, self.options.local_workers),
            Caller::Tenant(t) => (Some(t.user_id), self.options.tenant_workers),
        };
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Gate {
                    in_flight: AtomicUsize::new(0),
                    workers: Arc::new(Semaphore::new(workers.max(1))),
                })
            })
            .clone();
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
            // task of the tenant holds a worker permit of this gate.
            if Arc::strong_count(&self.gate) == 2 && self.gate.in_flight.load(Ordering::SeqCst) == 0
            {
                gates.remove(&self.key);
            }
        }
    }
}

impl Ticket {
    /// Runs `f` on a blocking thread once one of the tenant's worker
    /// permits is free. If this future is dropped, `f`'s deadline expires,
    /// and its scans stop at their next check.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Deadline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .gate
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::Unavailable("shutting down".into()))?;
        self.spawn(permit, f).await
    }

    async fn spawn<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        f: impl FnOnce(&Deadline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let deadline = Deadline::new(None, cancelled);
        // The gate stays alive (and counted) until the task ends, even if
        // the request is gone by then.
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let out = f(&deadline);
            drop(permit);
            drop(gate);
            out
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("a storage task failed: {e}")))?
    }
}
