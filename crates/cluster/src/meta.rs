//! The metadata group's state machine: the topology, users' home shards,
//! the collection catalog and users' plan limits. Small, so it lives in
//! memory; a snapshot is its JSON, kept in `raft/meta-snapshot.json`, and
//! a restart loads that and re-applies the committed log after it.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vectorizer_service::quota::PlanLimits;

use crate::topology::{Topology, shard_of};
use crate::types::*;
use crate::wire::WireError;

/// A collection in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub shard: u32,
    /// The log index of the create that made it.
    pub token: u64,
}

/// The replicated metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaState {
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    /// Set by the first `Init` applied.
    pub topology: Option<Topology>,
    /// Users' home shards, recorded at their first collection.
    pub placement: BTreeMap<Uuid, u32>,
    /// Each user's collections (short names): their shard and token.
    pub catalog: BTreeMap<Uuid, BTreeMap<String, CatalogEntry>>,
    /// The plan limits a user's last create was held to.
    pub limits: BTreeMap<Uuid, PlanLimits>,
}

impl MetaState {
    /// Applies one command; the reply is what the proposer is told.
    fn apply(&mut self, index: u64, cmd: MetaCommand) -> Result<MetaReply, WireError> {
        match cmd {
            MetaCommand::Init(t) => {
                if self.topology.is_none() {
                    self.topology = Some(t);
                }
                Ok(MetaReply::Done)
            }
            MetaCommand::CreateCollection {
                owner,
                name,
                shard,
                limits,
            } => {
                let shard = *self.placement.entry(owner).or_insert(shard);
                let mine = self.catalog.entry(owner).or_default();
                if let Some(e) = mine.get(&name) {
                    return Ok(MetaReply::Exists { token: e.token });
                }
                if let Some(l) = limits {
                    self.limits.insert(owner, l);
                    let current = mine.len() as u64;
                    if current >= l.max_collections {
                        return Err(WireError::from(
                            &vectorizer_service::ServiceError::QuotaExceeded {
                                quota: "collections",
                                limit: l.max_collections,
                                current,
                                requested: 1,
                            },
                        ));
                    }
                }
                mine.insert(
                    name,
                    CatalogEntry {
                        shard,
                        token: index,
                    },
                );
                Ok(MetaReply::Created { token: index })
            }
            MetaCommand::DropCollection { owner, name, token } => {
                if let Some(mine) = self.catalog.get_mut(&owner) {
                    if token.is_none() || mine.get(&name).map(|e| e.token) == token {
                        mine.remove(&name);
                    }
                    if mine.is_empty() {
                        self.catalog.remove(&owner);
                    }
                }
                Ok(MetaReply::Done)
            }
            MetaCommand::ReplaceNode { old, new, addr } => {
                let replaced = self
                    .topology
                    .as_mut()
                    .is_some_and(|t| t.replace(old, new, &addr));
                match replaced {
                    true => Ok(MetaReply::Done),
                    false => Err(WireError::from(&vectorizer_service::ServiceError::invalid(
                        "invalid_request",
                        format!("node {old} is not a member, or node {new} already is"),
                    ))),
                }
            }
        }
    }

    /// The home shard of `user` among `shards` (recorded, or as it will
    /// be recorded).
    pub fn home_of(&self, user: &Uuid, shards: u32) -> u32 {
        self.placement
            .get(user)
            .copied()
            .unwrap_or_else(|| shard_of(user, shards))
    }
}

/// The metadata state machine; the state is shared with the router.
#[derive(Clone)]
pub struct MetaSm {
    pub state: Arc<RwLock<MetaState>>,
    path: PathBuf,
    /// Why applying stopped, if it did.
    pub failure: crate::group::Failure,
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

/// The snapshot file: its meta and the state.
#[derive(Serialize, Deserialize)]
struct SavedSnapshot {
    meta: SnapshotMeta,
    state: MetaState,
}

impl MetaSm {
    /// Opens the state from the last snapshot saved at `path`, if any.
    pub fn open(path: PathBuf) -> Result<MetaSm, String> {
        let state = match std::fs::read(&path) {
            Ok(raw) => {
                let saved: SavedSnapshot =
                    serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
                saved.state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaState::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(MetaSm {
            state: Arc::new(RwLock::new(state)),
            path,
            failure: Default::default(),
        })
    }

    /// Forgets the state and its snapshot (a replica that will be sent
    /// the group's state again).
    pub fn reset(&self) -> Result<(), String> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", self.path.display()));
            }
            _ => {}
        }
        *self.write() = MetaState::default();
        self.failure.clear();
        Ok(())
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, MetaState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MetaState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn save(&self, saved: &SavedSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(saved).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || vectorizer_engine::fsutil::write_atomic(&path, &bytes))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn saved(&self) -> Result<Option<SavedSnapshot>, StorageError> {
        match std::fs::read(&self.path) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| sm_err(ErrorVerb::Read, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(sm_err(ErrorVerb::Read, e)),
        }
    }
}

impl RaftSnapshotBuilder<Tc> for MetaSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = self.read().clone();
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!("meta-{}", state.last_applied.map_or(0, |l| l.index)),
        };
        let saved = SavedSnapshot { meta, state };
        self.save(&saved).await?;
        let data = serde_json::to_vec(&saved.state).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: saved.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<Tc> for MetaSm {
    type SnapshotBuilder = MetaSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let s = self.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.write();
        let mut out = Vec::new();
        for e in entries {
            let id = *e.get_log_id();
            if let EntryPayload::Normal(Command::Undecodable { index, reason }) = &e.payload {
                let e = crate::shard::undecodable(*index, reason);
                self.failure.set(&e);
                return Err(e);
            }
            st.last_applied = Some(id);
            out.push(match e.payload {
                EntryPayload::Blank => Reply::None,
                EntryPayload::Membership(m) => {
                    st.membership = Membership::new(Some(id), m);
                    Reply::None
                }
                EntryPayload::Normal(Command::Meta(cmd)) => Reply::Meta(st.apply(id.index, cmd)),
                EntryPayload::Normal(Command::Shard(_) | Command::Undecodable { .. }) => {
                    Reply::Meta(Err(WireError::from(
                        &vectorizer_service::ServiceError::Internal(
                            "a shard command reached the metadata group".into(),
                        ),
                    )))
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let mut state: MetaState =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let saved = SavedSnapshot {
            meta: meta.clone(),
            state,
        };
        self.save(&saved).await?;
        *self.write() = saved.state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.saved()?.map(|s| Snapshot {
            snapshot: Box::new(Cursor::new(
                serde_json::to_vec(&s.state).unwrap_or_default(),
            )),
            meta: s.meta,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_counts_collections_and_drops_only_its_own_entries() {
        let mut m = MetaState::default();
        let u = Uuid::from_u128(1);
        let limits = PlanLimits {
            max_collections: 2,
            max_vectors: 10,
            max_storage_bytes: 10,
        };
        let create = |name: &str| MetaCommand::CreateCollection {
            owner: u,
            name: name.into(),
            shard: 1,
            limits: Some(limits),
        };
        let drop = |name: &str, token| MetaCommand::DropCollection {
            owner: u,
            name: name.into(),
            token,
        };
        assert_eq!(m.apply(5, create("a")), Ok(MetaReply::Created { token: 5 }));
        assert_eq!(m.apply(6, create("a")), Ok(MetaReply::Exists { token: 5 }));
        assert_eq!(m.apply(7, create("b")), Ok(MetaReply::Created { token: 7 }));
        let refused = m.apply(8, create("c")).unwrap_err();
        assert_eq!(
            (refused.kind.as_str(), refused.code.as_str()),
            ("quota", "collections")
        );
        assert_eq!(refused.figures, [2, 2, 1]);
        // A drop naming another create's token leaves the entry alone.
        m.apply(9, drop("a", Some(4))).unwrap();
        assert_eq!(m.apply(10, create("c")).unwrap_err().kind, "quota");
        m.apply(11, drop("a", Some(5))).unwrap();
        assert_eq!(
            m.apply(12, create("c")),
            Ok(MetaReply::Created { token: 12 })
        );
        // The home recorded at the first create wins over the hash.
        assert_eq!(m.home_of(&u, 64), 1);
        assert_eq!(m.catalog[&u].len(), 2);
    }

    #[test]
    fn the_topology_is_recorded_once_and_a_replacement_can_run_again() {
        let mut m = MetaState::default();
        let t = |n: u64| Topology {
            nodes: (1..=n).map(|i| (i, format!("h:{i}"))).collect(),
            shards: 2,
            replication: 3,
        };
        m.apply(1, MetaCommand::Init(t(3))).unwrap();
        m.apply(2, MetaCommand::Init(t(5))).unwrap();
        assert_eq!(m.topology, Some(t(3)));
        let replace = MetaCommand::ReplaceNode {
            old: 3,
            new: 4,
            addr: "h:4".into(),
        };
        assert_eq!(m.apply(3, replace.clone()), Ok(MetaReply::Done));
        assert_eq!(m.apply(4, replace), Ok(MetaReply::Done));
        let bad = MetaCommand::ReplaceNode {
            old: 9,
            new: 10,
            addr: "h:10".into(),
        };
        assert!(m.apply(5, bad).is_err());
        assert_eq!(m.topology.unwrap().members(1), vec![1, 2, 4]);
    }
}
