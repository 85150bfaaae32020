//! One Raft group on this node, and what happens when it fails. A group
//! whose storage or state machine fails (an entry it cannot decode or
//! apply, a disk error) stops alone: the node keeps serving its other
//! groups, `vectorizer cluster status` shows the group as failed with the
//! reason, and an operator's repair drops this node's copy of the group
//! (log and data, keeping its vote) and has the group's leader send it the
//! group's state again.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use vectorizer_service::{Service, ServiceOptions};

use crate::barrier::ReadBarrier;
use crate::log::LogStore;
use crate::meta::MetaSm;
use crate::net::{Network, Peers};
use crate::shard::ShardSm;
use crate::types::*;

/// Why a group's state machine stopped, as it said (openraft reports it
/// to the group only as a closed channel).
#[derive(Clone, Default)]
pub struct Failure(Arc<std::sync::Mutex<Option<String>>>);

impl Failure {
    /// Records the first reason.
    pub fn set(&self, why: &impl std::fmt::Display) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(why.to_string());
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Why a group whose Raft stopped with `fatal` stopped: what its state
    /// machine said, if it said anything.
    fn reason(&self, fatal: &openraft::error::Fatal<NodeId>) -> String {
        self.get().unwrap_or_else(|| fatal.to_string())
    }
}

/// A running group.
pub struct Group {
    pub raft: Raft,
    pub shard: Option<ShardSm>,
    /// Reads on this node as the group's leader wait here.
    pub reads: ReadBarrier,
    pub log: LogStore,
    /// What its state machine said when it stopped.
    pub failure: Failure,
}

enum State {
    Running(Arc<Group>),
    /// It could not even start (its reason).
    Failed(String),
}

/// A group's place on this node: the group as it runs now.
pub struct Slot(RwLock<State>);

impl Slot {
    pub fn running(group: Group) -> Slot {
        Slot(RwLock::new(State::Running(Arc::new(group))))
    }

    pub fn failed(reason: String) -> Slot {
        Slot(RwLock::new(State::Failed(reason)))
    }

    /// The group, unless it could not start. (Its Raft may have stopped
    /// since: its calls then fail, and [`Slot::failure`] says why.)
    pub fn get(&self) -> Option<Arc<Group>> {
        match &*self.0.read().unwrap_or_else(|e| e.into_inner()) {
            State::Running(g) => Some(g.clone()),
            State::Failed(_) => None,
        }
    }

    /// Why the group stopped on this node, if it did.
    pub fn failure(&self) -> Option<String> {
        match &*self.0.read().unwrap_or_else(|e| e.into_inner()) {
            State::Failed(r) => Some(r.clone()),
            State::Running(g) => {
                let stopped = g.raft.metrics().borrow().running_state.clone();
                match stopped {
                    Ok(()) => None,
                    Err(e) => Some(g.failure.reason(&e)),
                }
            }
        }
    }

    pub fn replace(&self, group: Group) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = State::Running(Arc::new(group));
    }
}

/// What opening a group needs.
pub struct Opener<'a> {
    pub node: NodeId,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub config: Arc<openraft::Config>,
    pub peers: &'a Arc<Peers>,
    pub meta: &'a MetaSm,
}

impl Opener<'_> {
    pub fn log_path(&self, g: u32) -> PathBuf {
        self.data_dir.join(format!("raft/group-{g}.redb"))
    }

    pub fn shard_dir(&self, g: u32) -> PathBuf {
        self.data_dir.join(format!("shards/{}", g - 1))
    }

    /// Opens group `g` over its files; a shard over `service` (opened
    /// here from `main`'s options when none is given).
    pub async fn open(
        &self,
        g: u32,
        main: &Service,
        service: Option<Arc<Service>>,
        log: Option<LogStore>,
    ) -> Result<Group, String> {
        let log = match log {
            Some(l) => l,
            None => LogStore::open(&self.log_path(g))?,
        };
        let network = Network {
            group: g,
            peers: self.peers.clone(),
        };
        let (raft, shard, failure) = if g == META_GROUP {
            let raft = Raft::new(
                self.node,
                self.config.clone(),
                network,
                log.clone(),
                self.meta.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
            (raft, None, self.meta.failure.clone())
        } else {
            let dir = self.shard_dir(g);
            let service = match service {
                Some(s) => s,
                None => {
                    let mut so: ServiceOptions = main.options().clone();
                    so.data_dir = dir.clone();
                    // A replica applies what its leader admitted: no second
                    // admission limit that could refuse on one replica only.
                    so.share.max_in_flight = usize::MAX / 2;
                    Arc::new(
                        Service::open(so).map_err(|e| format!("opening shard {}: {e}", g - 1))?,
                    )
                }
            };
            let sm = ShardSm::open(g - 1, self.shards, service, dir)?;
            let raft = Raft::new(
                self.node,
                self.config.clone(),
                network,
                log.clone(),
                sm.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let failure = sm.failure.clone();
            (raft, Some(sm), failure)
        };
        watch(g, &raft, failure.clone());
        Ok(Group {
            raft,
            shard,
            reads: ReadBarrier::default(),
            log,
            failure,
        })
    }

    /// Drops this node's copy of group `g` (its entries and its data; the
    /// vote stays) and opens it again, empty, to be sent the group's state
    /// by its leader.
    pub async fn reset(
        &self,
        g: u32,
        old: Option<Arc<Group>>,
        main: &Service,
    ) -> Result<Group, String> {
        let (mut service, mut log) = (None, None);
        if let Some(old) = old {
            let _ = old.raft.shutdown().await;
            service = old.shard.as_ref().map(|s| s.service.clone());
            log = Some(old.log.clone());
        }
        let log = match log {
            Some(l) => l,
            None => LogStore::open(&self.log_path(g)).map_err(|e| {
                format!("{e}: the group's log cannot be opened, so its vote cannot be kept: replace the node instead (`vectorizer cluster replace-node`)")
            })?,
        };
        // In an order a crash cannot make unsafe: the log first (a log
        // behind the applied mark is purged up to it at the next start),
        // then the mark and the snapshot (the state machine then claims
        // nothing), then the data (a replica that claims nothing and holds
        // stale data is sent the group's state, which replaces it).
        tokio::task::spawn_blocking({
            let log = log.clone();
            move || log.reset()
        })
        .await
        .map_err(|e| e.to_string())??;
        if g == META_GROUP {
            self.meta.reset()?;
            return self.open(g, main, None, Some(log)).await;
        }
        let dir = self.shard_dir(g);
        for f in ["raft-applied", crate::snapshot::FILE] {
            match std::fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: {e}", dir.join(f).display()));
                }
                _ => {}
            }
        }
        if dir.exists() {
            vectorizer_engine::fsutil::sync_dir(&dir).map_err(|e| e.to_string())?;
        }
        match &service {
            Some(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || {
                    let db = s.engine();
                    for name in db.names().map_err(|e| e.to_string())? {
                        db.drop_collection(&name).map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
                .await
                .map_err(|e| e.to_string())??;
            }
            // The group never opened (its data may be what is damaged):
            // its directory goes whole.
            None => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: {e}", dir.display()));
                }
                _ => std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?,
            },
        }
        self.open(g, main, service, Some(log)).await
    }
}

/// Says when group `g` changes leader, and, once, that it stopped on this
/// node and why (the one ERROR line of a failed group; openraft's own
/// lines are not shown at the usual levels).
fn watch(g: u32, raft: &Raft, failure: Failure) {
    let mut m = raft.metrics();
    tokio::spawn(async move {
        let mut leader = None;
        while m.changed().await.is_ok() {
            let (stopped, now, term) = {
                let x = m.borrow();
                (x.running_state.clone(), x.current_leader, x.current_term)
            };
            if now != leader && now.is_some() {
                tracing::info!(group = %crate::status::group_name(g), leader = now, term, "the group has a leader");
            }
            leader = now;
            match stopped {
                Ok(()) => continue,
                Err(openraft::error::Fatal::Stopped) => return,
                Err(e) => {
                    tracing::error!(
                        group = %crate::status::group_name(g),
                        error = %failure.reason(&e),
                        "a raft group stopped on this node; the node serves its other groups (repair it with `vectorizer cluster repair-group`)"
                    );
                    return;
                }
            }
        }
    });
}
