//! The worker pools tenants' storage and search work runs on, off the
//! async runtime. Two pools: short work (searches, point reads) and long
//! work (writes, scans, parsing large bodies, backups). The long pool's
//! threads run at a lower CPU priority, so that short work and the async
//! runtime (quick searches, every request's I/O) get the CPU first when
//! both want it; alone, long work has all of it.
//!
//! Within a pool, tenants take turns: a free worker takes the next job of
//! the next tenant in rotation that is under its cap, so one tenant with
//! a deep queue waits behind itself, never in front of the others. A
//! tenant alone may use every worker; with `k` tenants active (jobs queued
//! or running in either pool), each may use at most
//! `ceil(workers / k)` (and never more than the configured per-tenant
//! cap). Each pool has as many workers as the machine has cores, so a
//! share of workers is a share of the CPU.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use uuid::Uuid;

/// Whose work a job is: a tenant, or the local caller (`None`).
pub(crate) type Key = Option<Uuid>;

type Job = Box<dyn FnOnce() + Send>;

/// Which pool a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Bounded, latency-sensitive work: a search, reading points.
    Short,
    /// Everything else: writes, scans, large bodies, backups.
    Long,
}

#[derive(Default)]
struct State {
    queues: HashMap<Key, VecDeque<Job>>,
    /// Tenants with queued jobs, in turn order.
    turn: VecDeque<Key>,
    running: HashMap<Key, usize>,
    stopping: bool,
}

impl State {
    /// Tenants with work queued or running here.
    fn active(&self) -> usize {
        let mut n = self.running.len();
        n += self
            .queues
            .keys()
            .filter(|k| !self.running.contains_key(*k))
            .count();
        n.max(1)
    }

    /// The next job by turn whose tenant is under its cap, with `elsewhere`
    /// tenants active in the service as a whole.
    fn next(&mut self, workers: usize, per_tenant: usize, elsewhere: usize) -> Option<(Key, Job)> {
        let active = self.active().max(elsewhere);
        let cap = workers.div_ceil(active).min(per_tenant).max(1);
        let at = self
            .turn
            .iter()
            .position(|k| self.running.get(k).copied().unwrap_or(0) < cap)?;
        let key = self.turn.remove(at).expect("position is in range");
        let queue = self.queues.get_mut(&key).expect("a turn has a queue");
        let job = queue.pop_front().expect("a queue in turn is not empty");
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turn.push_back(key);
        }
        *self.running.entry(key).or_default() += 1;
        Some((key, job))
    }

    fn done(&mut self, key: Key) {
        if let Some(n) = self.running.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&key);
            }
        }
    }
}

/// One pool of worker threads.
pub(crate) struct Pool {
    workers: usize,
    per_tenant: usize,
    /// Tenants with jobs queued or running in any pool of the service.
    active: Arc<AtomicUsize>,
    state: Mutex<State>,
    ready: Condvar,
}

impl Pool {
    /// Starts `workers` threads named `name-N`, at `nice` (Linux; 0 keeps
    /// the process's priority). A tenant runs at most `per_tenant` jobs at
    /// once.
    pub(crate) fn start(
        name: &str,
        workers: usize,
        per_tenant: usize,
        nice: i32,
        active: Arc<AtomicUsize>,
    ) -> Arc<Pool> {
        let workers = workers.max(1);
        let pool = Arc::new(Pool {
            workers,
            per_tenant: per_tenant.max(1),
            active,
            state: Mutex::default(),
            ready: Condvar::new(),
        });
        for n in 0..workers {
            let p = pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || p.work(nice));
            if let Err(e) = spawned {
                // Fewer threads serve the same queues.
                tracing::error!(error = %e, pool = name, "could not start a worker thread");
            }
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for tenant `key`.
    pub(crate) fn submit(&self, key: Key, job: Job) {
        let mut st = self.lock();
        let queue = st.queues.entry(key).or_default();
        let first = queue.is_empty();
        queue.push_back(job);
        if first {
            st.turn.push_back(key);
        }
        drop(st);
        self.ready.notify_one();
    }

    fn work(&self, nice: i32) {
        lower_priority(nice);
        let mut st = self.lock();
        loop {
            if st.stopping {
                return;
            }
            let elsewhere = self.active.load(Ordering::Relaxed);
            match st.next(self.workers, self.per_tenant, elsewhere) {
                Some((key, job)) => {
                    drop(st);
                    // A job's panic is its own: the caller sees its result
                    // channel closed, and the worker goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    st = self.lock();
                    st.done(key);
                    // A tenant under its cap again may have jobs waiting.
                    self.ready.notify_one();
                }
                None => st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Jobs queued (not yet running), over every tenant.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queues.values().map(VecDeque::len).sum()
    }
}

impl Pool {
    /// Ends the workers once they are idle; queued jobs are dropped (their
    /// callers see their result channels closed).
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.stopping = true;
        st.queues.clear();
        st.turn.clear();
        drop(st);
        self.ready.notify_all();
    }
}

/// Lowers the calling thread's CPU priority by `nice` (Linux).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // Safety: plain system calls on the calling thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Box::new(|| {})
    }

    #[test]
    fn tenants_take_turns_and_share_the_workers() {
        let (a, b) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        let mut st = State::default();
        for _ in 0..4 {
            st.queues.entry(a).or_default().push_back(job());
        }
        st.turn.push_back(a);
        // Alone, A may take every worker.
        let taken: Vec<Key> = (0..4)
            .map_while(|_| st.next(4, 64, 1).map(|(k, _)| k))
            .collect();
        assert_eq!(taken, vec![a; 4]);
        for _ in 0..4 {
            st.done(a);
        }
        // With B queued too, each gets half, taking turns.
        for _ in 0..4 {
            st.queues.entry(a).or_default().push_back(job());
        }
        st.turn.push_back(a);
        for _ in 0..4 {
            st.queues.entry(b).or_default().push_back(job());
        }
        st.turn.push_back(b);
        let taken: Vec<Key> = (0..4)
            .map_while(|_| st.next(4, 64, 1).map(|(k, _)| k))
            .collect();
        assert_eq!(taken, vec![a, b, a, b]);
        assert!(st.next(4, 64, 1).is_none(), "both at their share");
        st.done(b);
        assert_eq!(st.next(4, 64, 1).map(|(k, _)| k), Some(b));
    }

    #[test]
    fn tenants_active_elsewhere_count_too() {
        let a = Some(Uuid::from_u128(1));
        let mut st = State::default();
        for _ in 0..4 {
            st.queues.entry(a).or_default().push_back(job());
        }
        st.turn.push_back(a);
        // Another tenant has jobs in the other pool: A keeps half the
        // workers free for it.
        assert_eq!((0..4).map_while(|_| st.next(4, 64, 2)).count(), 2);
    }

    #[test]
    fn the_per_tenant_cap_holds_when_alone() {
        let a = Some(Uuid::from_u128(1));
        let mut st = State::default();
        for _ in 0..4 {
            st.queues.entry(a).or_default().push_back(job());
        }
        st.turn.push_back(a);
        assert_eq!((0..4).map_while(|_| st.next(4, 2, 1)).count(), 2);
    }

    #[test]
    fn jobs_run_and_answer() {
        let pool = Pool::start("test", 2, 2, 5, Arc::default());
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            pool.submit(
                Some(Uuid::from_u128(i % 3)),
                Box::new(move || tx.send(i).unwrap()),
            );
        }
        let mut got: Vec<u128> = (0..10).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        pool.stop();
    }
}
