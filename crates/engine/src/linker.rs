//! Where graph linking runs: one bounded pool shared by every collection of
//! a database, instead of threads per collection, so that threads do not
//! grow with the number of collections. The layer above may supply its own
//! [`Linker`] (to run linking in each tenant's share); the default pool
//! takes turns between namespaces (the part of a name before `:`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

/// A slice of linking work for one collection.
pub type LinkJob = Box<dyn FnOnce() + Send>;

/// Runs collections' linking work on a bounded set of threads.
pub trait Linker: Send + Sync {
    /// Queues `job`, linking points of collection `collection`.
    fn submit(&self, collection: &str, job: LinkJob);
    /// Jobs waiting for a thread.
    fn queued(&self) -> usize;
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<LinkJob>>,
    turn: VecDeque<String>,
    stopping: bool,
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
}

/// The default [`Linker`]: `threads` workers at a lower CPU priority,
/// taking jobs by namespace in turn. Its threads end when it is dropped.
pub struct LinkPool {
    inner: Arc<Inner>,
}

impl LinkPool {
    pub fn new(threads: usize) -> LinkPool {
        LinkPool::named(threads, "link")
    }

    /// A pool whose threads are named `{name}-{n}`.
    pub fn named(threads: usize, name: &str) -> LinkPool {
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            ready: Condvar::new(),
        });
        for n in 0..threads.max(1) {
            let inner = inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || inner.work());
            if let Err(e) = spawned {
                tracing::error!(error = %e, pool = name, "could not start a background thread");
            }
        }
        LinkPool { inner }
    }
}

impl LinkPool {
    /// [`Linker::submit`] unless the queue's lock is held this instant:
    /// then the job is handed back, unrun.
    pub fn try_submit(&self, collection: &str, job: LinkJob) -> Result<(), LinkJob> {
        let Ok(st) = self.inner.state.try_lock() else {
            return Err(job);
        };
        self.push(st, collection, job);
        Ok(())
    }

    fn push(&self, mut st: std::sync::MutexGuard<'_, State>, collection: &str, job: LinkJob) {
        let ns = crate::catalog::namespace(collection).to_owned();
        let q = st.queues.entry(ns.clone()).or_default();
        let first = q.is_empty();
        q.push_back(job);
        if first {
            st.turn.push_back(ns);
        }
        drop(st);
        self.inner.ready.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        crate::collection::background_priority();
        let mut st = self.lock();
        loop {
            if st.stopping {
                return;
            }
            let Some(ns) = st.turn.pop_front() else {
                st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let q = st.queues.get_mut(&ns).expect("a turn has a queue");
            let job = q.pop_front().expect("a queue in turn is not empty");
            if q.is_empty() {
                st.queues.remove(&ns);
            } else {
                st.turn.push_back(ns);
            }
            drop(st);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            st = self.lock();
        }
    }
}

impl Linker for LinkPool {
    fn submit(&self, collection: &str, job: LinkJob) {
        self.push(self.inner.lock(), collection, job);
    }

    fn queued(&self) -> usize {
        self.inner.lock().queues.values().map(VecDeque::len).sum()
    }
}

impl Drop for LinkPool {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.stopping = true;
        st.queues.clear();
        st.turn.clear();
        drop(st);
        self.inner.ready.notify_all();
    }
}
