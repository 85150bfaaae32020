//! Linking published points into the graph, as jobs on the database's
//! shared [`Linker`](crate::linker::Linker): each job claims a slice of the
//! backlog, links it, and hands the CPU back; a collection runs at most
//! `insert_threads` jobs at once, and none once it is dropped.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Collection, lock};

/// Keys one job links before it hands its thread back.
const JOB_KEYS: usize = 256;
/// Keys linked per acquisition of the read lock.
const SLICE: usize = 32;
/// Linked keys leave the backlog (and its exact scan) this many at a time,
/// or all at once when the backlog is linked: a node just linked is not
/// yet well reachable in the graph while its neighbourhood is still being
/// built, and the exact scan keeps finding it meanwhile.
const DRAIN: usize = 4096;

impl Collection {
    /// Queues linking jobs while keys wait unclaimed, up to the
    /// collection's thread count.
    pub(crate) fn schedule_linking(&self) {
        let (Some(home), Some(me)) = (self.home.as_ref(), self.this.get()) else {
            return;
        };
        if !self.options.background {
            return;
        }
        let most = self.options.insert_threads.max(1);
        loop {
            if self.dropped.load(Ordering::SeqCst) {
                return;
            }
            let unclaimed = {
                let mut st = self.write_quiet();
                if self.linking.load(Ordering::SeqCst) == 0 {
                    // No job runs: anything claimed and not linked was
                    // abandoned (a job that failed), and is claimable again.
                    st.claimed = 0;
                }
                st.unindexed.len() - st.claimed.min(st.unindexed.len())
            };
            let running = self.linking.load(Ordering::SeqCst);
            let want = unclaimed.div_ceil(JOB_KEYS).min(most);
            if running >= want {
                return;
            }
            if self
                .linking
                .compare_exchange(running, running + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let job = Job(me.clone());
            home.linker.submit(&self.name, Box::new(move || job.run()));
        }
    }

    /// The state's write lock without announcing a writer (for the short
    /// bookkeeping of linking jobs).
    fn write_quiet(&self) -> std::sync::RwLockWriteGuard<'_, super::State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the next [`SLICE`] keys of the backlog; `None` if none is
    /// left to claim.
    fn claim(&self) -> Option<(Vec<u32>, u64)> {
        let mut st = self.write_quiet();
        let from = st.claimed.min(st.unindexed.len());
        let to = (from + SLICE).min(st.unindexed.len());
        if from == to {
            return None;
        }
        st.claimed = to;
        Some((st.unindexed[from..to].to_vec(), st.generation))
    }

    /// Links up to [`JOB_KEYS`] keys, claiming a slice at a time (so that
    /// concurrent jobs of a collection link neighbouring keys, in the order
    /// they were written); false if none was left to claim.
    pub(super) fn link_some(&self) -> bool {
        let mut linked = 0;
        while linked < JOB_KEYS {
            // Stepping aside for a writer waiting to publish.
            while self.writers_waiting.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            let Some((keys, generation)) = self.claim() else {
                break;
            };
            let st = self.read();
            if st.generation != generation {
                break;
            }
            for k in &keys {
                st.index.link(*k);
            }
            linked += keys.len();
        }
        if linked == 0 {
            return false;
        }
        let mut st = self.write_quiet();
        let done = st
            .unindexed
            .iter()
            .take_while(|k| st.index.is_linked(**k) || !st.index.contains(**k))
            .count();
        if done >= DRAIN || done == st.unindexed.len() {
            st.unindexed.drain(..done);
            st.claimed = st.claimed.saturating_sub(done);
        }
        let complete = st.unindexed.is_empty();
        drop(st);
        {
            let _g = lock(&self.signal.m);
            self.signal.progress.notify_all();
        }
        // Whoever links the last key (a job, or a thread waiting for the
        // backlog) asks for a recall measurement: the one place that does.
        if complete {
            self.schedule_tuning();
        }
        true
    }

    /// Linking jobs queued or running.
    pub(crate) fn linking(&self) -> usize {
        self.linking.load(Ordering::SeqCst)
    }
}

/// One queued job. It counts in `linking` until it is dropped, run or not
/// (a pool that stops drops its queue), so that a lost job never leaves
/// keys claimed.
struct Job(Weak<Collection>);

impl Job {
    /// A slice of linking, then more jobs if more waits.
    fn run(self) {
        let Some(c) = self.0.upgrade() else { return };
        if !c.dropped.load(Ordering::SeqCst) {
            c.link_some();
        }
        drop(self);
        c.schedule_linking();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(c) = self.0.upgrade() {
            c.linking.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Lowers the calling thread's scheduling priority, so that linking yields
/// the CPU to requests (which acknowledge writes and answer searches)
/// whenever both want it.
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    // Safety: plain system calls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
