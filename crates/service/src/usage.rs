//! Usage reporting to the Hub. Figures are absolute (a repeat is harmless)
//! and come from the engine's own accounting. A change queues its
//! collection's figures; the reporter sends them shortly after (debounced)
//! and, on a sync every interval, every collection's figures that differ from
//! what the Hub last took (all of them at the first, at start, which
//! re-derives the truth after any crash). What cannot be
//! re-derived, a deletion, and any report the Hub did not take, waits in a
//! durable outbox (`usage-outbox.json`, replaced atomically) until it does.
//!
//! A usage report the Hub answers 404 is not delivered: the Hub lost a
//! collection that lives here (drift). Its id is handed to the service,
//! which registers the collection again and reports under the new id.
//! While the Hub is down, attempts back off (1 s doubling to 60 s) and the
//! log says when delivery stops and starts again, not every attempt.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vectorizer_hub::{HubClient, HubError};

/// What to tell the Hub about one of its collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    Usage {
        vector_count: u64,
        storage_bytes: u64,
    },
    Deleted,
}

/// The first wait before a failed registration is tried again; it doubles
/// with each failure up to [`DRIFT_RETRY_MAX`].
const DRIFT_RETRY: Duration = Duration::from_secs(2);
const DRIFT_RETRY_MAX: Duration = Duration::from_secs(600);

pub struct Reporter {
    hub: Arc<HubClient>,
    path: PathBuf,
    /// Latest undelivered report per Hub collection id.
    queue: Mutex<BTreeMap<Uuid, Report>>,
    wake: tokio::sync::Notify,
    debounce: Duration,
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    drift: std::sync::atomic::AtomicU64,
    /// Hub ids the Hub answered 404 for, waiting to be registered again.
    drifted: Mutex<BTreeSet<Uuid>>,
    /// Registrations that failed, by Hub id: how often in a row, and the
    /// last reason (to back off, and to log changes only).
    retrying: Mutex<BTreeMap<Uuid, (u32, String)>>,
    drift_wake: tokio::sync::Notify,
    /// Whether the last delivery attempt failed (to log changes only).
    failing: std::sync::atomic::AtomicBool,
    /// Held while the outbox file is written: one writer at a time.
    writing: Mutex<()>,
    /// The last figures the Hub took, by Hub collection id: a periodic
    /// sync after the first sends only what differs.
    taken: Mutex<std::collections::HashMap<Uuid, Report>>,
}

/// Report counts for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportCounts {
    pub delivered: u64,
    pub failed: u64,
    pub pending: usize,
    /// Reports the Hub answered 404 for a collection that lives here.
    pub drift: u64,
}

impl Reporter {
    /// Opens the reporter, with the outbox left by a previous run.
    pub fn open(
        hub: Arc<HubClient>,
        data_dir: &std::path::Path,
        debounce: Duration,
    ) -> std::io::Result<Arc<Reporter>> {
        let path = data_dir.join("usage-outbox.json");
        let queue = match std::fs::read(&path) {
            Ok(raw) => match serde_json::from_slice(&raw) {
                Ok(q) => q,
                Err(e) => {
                    // Kept aside for the operator, never silently lost.
                    let aside = path.with_extension(format!(
                        "corrupt-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    ));
                    std::fs::rename(&path, &aside)?;
                    tracing::error!(error = %e, kept = %aside.display(), "the usage outbox could not be read; it was set aside and usage is derived again from the data (owed deletions in it need replaying by hand)");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Arc::new(Reporter {
            hub,
            path,
            queue: Mutex::new(queue),
            wake: tokio::sync::Notify::new(),
            debounce,
            delivered: Default::default(),
            failed: Default::default(),
            drift: Default::default(),
            drifted: Mutex::default(),
            retrying: Mutex::default(),
            drift_wake: tokio::sync::Notify::new(),
            failing: Default::default(),
            writing: Mutex::default(),
            taken: Mutex::default(),
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, Report>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reports that failed to go out so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reports waiting.
    pub fn pending(&self) -> usize {
        self.queue().len()
    }

    pub fn counts(&self) -> ReportCounts {
        use std::sync::atomic::Ordering::Relaxed;
        ReportCounts {
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            pending: self.pending(),
            drift: self.drift.load(Relaxed),
        }
    }

    /// Waits until some collection needs registering again.
    pub async fn drifted(&self) {
        if self
            .drifted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.drift_wake.notified().await;
        }
    }

    /// The Hub ids that need registering again, taken.
    pub fn take_drifted(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.drifted.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect()
    }

    /// Asks for `id` to be registered again after a failed attempt for
    /// `reason`: 2 s after the first failure, twice as long after each
    /// one after it, at most 10 minutes. True when this is news (the first
    /// failure, or another reason than the last): what deserves a WARN.
    pub fn mark_drifted(self: &Arc<Self>, id: Uuid, reason: &str) -> bool {
        let (attempts, news) = {
            let mut r = self.retrying.lock().unwrap_or_else(|e| e.into_inner());
            let e = r.entry(id).or_insert((0, String::new()));
            let news = e.0 == 0 || e.1 != reason;
            e.0 = e.0.saturating_add(1);
            e.1 = reason.to_owned();
            (e.0, news)
        };
        let wait = DRIFT_RETRY
            .saturating_mul(1u32 << (attempts - 1).min(16))
            .min(DRIFT_RETRY_MAX);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            me.drifted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
            me.drift_wake.notify_one();
        });
        news
    }

    /// `id` was registered again: its next failure is news again. Whether
    /// it had failed before.
    pub fn registered_again(&self, id: &Uuid) -> bool {
        self.retrying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// Whether registering `id` again has failed and is being retried.
    fn retrying(&self, id: &Uuid) -> bool {
        self.retrying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Whether a deletion of `id` is still owed to the Hub.
    pub fn owes_deletion(&self, id: &Uuid) -> bool {
        self.queue().get(id) == Some(&Report::Deleted)
    }

    /// Delivers the deletion of `id` now, for a create that needs the Hub
    /// to have seen it first (its create is idempotent by name: it would
    /// hand back the deleted id, and the late deletion would then remove
    /// the live collection).
    pub async fn deliver_deletion(self: &Arc<Self>, id: &Uuid) -> Result<(), HubError> {
        match self.hub.delete_collection(id).await {
            Ok(()) | Err(HubError::NotFound(_)) => {
                {
                    let mut q = self.queue();
                    if q.get(id) == Some(&Report::Deleted) {
                        q.remove(id);
                    }
                }
                self.delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.persist_async().await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Queues a report, replacing an older one for the same collection. A
    /// deletion, which cannot be re-derived from the data, is on disk when
    /// this returns: call it from a blocking thread.
    pub fn record(&self, id: Uuid, report: Report) {
        let durable = report == Report::Deleted;
        {
            let mut q = self.queue();
            // A deletion stands: a late usage report of the same collection
            // (a write that finished as it was dropped) must not undo it.
            if q.get(&id) == Some(&Report::Deleted) {
                return;
            }
            q.insert(id, report);
        }
        if durable {
            self.persist();
        }
        self.wake.notify_one();
    }

    /// [`persist`](Self::persist) from async code, on a blocking thread.
    async fn persist_async(self: &Arc<Self>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.persist()).await;
    }

    /// Writes the queue to the outbox (tmp, fsync, rename, fsync dir).
    fn persist(&self) {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let raw = serde_json::to_vec(&*self.queue()).expect("serializable");
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&raw)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(error = %e, "could not write the usage outbox");
        }
    }

    /// Sends every queued report once; returns how many are still waiting.
    pub async fn deliver(self: &Arc<Self>) -> usize {
        let batch: Vec<(Uuid, Report)> = self.queue().iter().map(|(k, v)| (*k, *v)).collect();
        let mut failed = false;
        for (id, report) in batch {
            let sent = match report {
                Report::Usage {
                    vector_count,
                    storage_bytes,
                } => self
                    .hub
                    .update_usage(&id, vector_count, storage_bytes)
                    .await
                    .map(|_| ()),
                Report::Deleted => self.hub.delete_collection(&id).await,
            };
            let take = |q: &mut BTreeMap<Uuid, Report>| {
                // Only if no newer report arrived meanwhile.
                if q.get(&id) == Some(&report) {
                    q.remove(&id);
                }
            };
            match sent {
                // A deletion the Hub has no record of: nothing more to tell.
                Ok(()) | Err(HubError::NotFound(_)) if report == Report::Deleted => {
                    take(&mut self.queue());
                    self.delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(()) => {
                    take(&mut self.queue());
                    self.taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, report);
                    self.delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // Usage for a collection the Hub does not know: drift. The
                // service registers it again and reports under the new id.
                Err(HubError::NotFound(_)) => {
                    take(&mut self.queue());
                    self.taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    self.drift
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Said once: while its registration is retried, the
                    // next full sync finds the same.
                    if self.retrying(&id) {
                        tracing::debug!(hub_collection = %id, "the hub still does not know a collection that lives here");
                    } else {
                        tracing::warn!(hub_collection = %id, "the hub does not know a collection that lives here; registering it again");
                    }
                    self.drifted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                    self.drift_wake.notify_one();
                }
                // A final refusal of one report (not of our service key):
                // a usage report is dropped (the next full sync derives it
                // again), a deletion kept; the other reports go on.
                Err(e) if !e.is_transient() && !matches!(e, HubError::Refused(_)) => {
                    tracing::warn!(error = %e, hub_collection = %id, "the hub refused a usage report");
                    self.failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if report != Report::Deleted {
                        take(&mut self.queue());
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, hub_collection = %id, "usage report not delivered; kept in the outbox");
                    self.failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    failed = true;
                    if !self
                        .failing
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(error = %e, "usage reports are not reaching the hub; they wait in the outbox and are retried with backoff");
                    }
                    // The Hub is unwell (or refuses our key): the rest waits
                    // for the next round.
                    break;
                }
            }
        }
        if !failed
            && self
                .failing
                .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!("usage reports reach the hub again");
        }
        if failed || self.path.exists() {
            // Undelivered reports survive a crash; a delivered outbox shrinks.
            self.persist_async().await;
        }
        self.pending()
    }

    /// Runs the reporter: a full sync (from `figures`) at start and every
    /// `interval`, and queued reports `debounce` after they arrive.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        figures: impl Fn() -> Vec<(Uuid, Report)> + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let figures = Arc::new(figures);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut pending = 0;
            let mut backoff = Duration::from_secs(1);
            loop {
                // Undelivered reports are tried again, backing off while
                // the Hub stays unreachable.
                let retry = if pending > 0 {
                    backoff
                } else {
                    Duration::from_secs(3600)
                };
                tokio::select! {
                    _ = tick.tick() => {
                        // Read from the whole catalog: off the runtime.
                        let f = figures.clone();
                        let all = tokio::task::spawn_blocking(move || f())
                            .await
                            .unwrap_or_default();
                        let taken = me.taken.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let mut q = me.queue();
                        for (id, r) in all {
                            // What the Hub took already is not sent again
                            // (the first sync after start sends it all).
                            if taken.get(&id) == Some(&r) {
                                continue;
                            }
                            // The engine's figures are the truth, but a
                            // queued deletion stands.
                            if q.get(&id) != Some(&Report::Deleted) {
                                q.insert(id, r);
                            }
                        }
                    }
                    _ = me.wake.notified() => tokio::time::sleep(me.debounce).await,
                    _ = tokio::time::sleep(retry) => {}
                }
                pending = me.deliver().await;
                backoff = if me.failing.load(std::sync::atomic::Ordering::Relaxed) {
                    (backoff * 2).min(Duration::from_secs(60))
                } else {
                    Duration::from_secs(1)
                };
            }
        })
    }
}
