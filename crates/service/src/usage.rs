//! Usage reporting to the Hub. Figures are absolute (a repeat is harmless)
//! and come from the engine's own accounting. A change queues its
//! collection's figures; the reporter sends them shortly after (debounced)
//! and sends every collection's on a full sync every interval, including
//! one at start, which re-derives the truth after any crash. What cannot be
//! re-derived, a deletion, and any report the Hub did not take, waits in a
//! durable outbox (`usage-outbox.json`, replaced atomically) until it does.

use std::collections::BTreeMap;
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

pub struct Reporter {
    hub: Arc<HubClient>,
    path: PathBuf,
    /// Latest undelivered report per Hub collection id.
    queue: Mutex<BTreeMap<Uuid, Report>>,
    wake: tokio::sync::Notify,
    debounce: Duration,
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
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
            Ok(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
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

    /// Queues a report, replacing an older one for the same collection.
    pub fn record(&self, id: Uuid, report: Report) {
        let durable = report == Report::Deleted;
        self.queue().insert(id, report);
        if durable {
            // A deletion cannot be re-derived from the data: keep it on disk.
            self.persist();
        }
        self.wake.notify_one();
    }

    /// Writes the queue to the outbox (tmp, fsync, rename, fsync dir).
    fn persist(&self) {
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
    pub async fn deliver(&self) -> usize {
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
            match sent {
                // Gone at the Hub: nothing more to tell it.
                Ok(()) | Err(HubError::NotFound(_)) => {
                    let mut q = self.queue();
                    // Only if no newer report arrived meanwhile.
                    if q.get(&id) == Some(&report) {
                        q.remove(&id);
                    }
                    self.delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, hub_collection = %id, "usage report not delivered; kept in the outbox");
                    self.failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    failed = true;
                }
            }
        }
        if failed || self.path.exists() {
            // Undelivered reports survive a crash; a delivered outbox shrinks.
            self.persist();
        }
        self.pending()
    }

    /// Runs the reporter: a full sync (from `figures`) at start and every
    /// `interval`, and queued reports `debounce` after they arrive.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        figures: impl Fn() -> Vec<(Uuid, Report)> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut pending = 0;
            loop {
                // Undelivered reports are tried again every second.
                let retry = if pending > 0 {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(3600)
                };
                tokio::select! {
                    _ = tick.tick() => {
                        let mut q = me.queue();
                        for (id, r) in figures() {
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
            }
        })
    }
}
