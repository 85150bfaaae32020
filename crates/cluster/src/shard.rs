//! A shard group's state machine: the engine, through a service of its
//! own over `shards/<s>/`. A replicated write runs through the service's
//! operation like a write on a single node, after its owner is checked
//! against the caller and the shard, and its quota against figures every
//! replica computes alike. The last applied log id is kept durably beside
//! the data after each entry (see `applied.rs`), so a restart re-applies at
//! most the one entry whose mark was not yet written, and every write is
//! idempotent when applied twice in a row.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogId, StorageIOError};
use vectorizer_service::service::HUB_ID_KEY;
use vectorizer_service::{Caller, Service, ServiceError};

use crate::applied::AppliedMark;
use crate::snapshot;
use crate::topology::shard_of;
use crate::types::*;
use crate::wire::WireError;

#[derive(Clone)]
pub struct ShardSm {
    pub shard: u32,
    shards: u32,
    pub service: Arc<Service>,
    dir: PathBuf,
    mark: Arc<std::sync::Mutex<AppliedMark>>,
    /// Held while an entry is applied, and while a snapshot's files are
    /// placed: a snapshot is the state at exactly one log id.
    apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// Why applying stopped, if it did.
    pub failure: crate::group::Failure,
}

pub(crate) fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

/// The error that stops a group at an entry it cannot decode.
/// (Said once, with the reason, where the group's stop is noticed.)
pub(crate) fn undecodable(index: u64, reason: &str) -> StorageError {
    sm_err(
        ErrorVerb::Read,
        format!("log entry {index} cannot be decoded: {reason}"),
    )
}

impl ShardSm {
    pub fn open(
        shard: u32,
        shards: u32,
        service: Arc<Service>,
        dir: PathBuf,
    ) -> Result<ShardSm, String> {
        let path = dir.join("raft-applied");
        if !path.exists() {
            // A replica that claims nothing holds nothing: data without a
            // mark is what a reset cut short by a crash leaves, and the
            // group's state is replayed from its start onto it.
            let db = service.engine();
            for name in db.names().map_err(|e| e.to_string())? {
                tracing::info!(
                    shard,
                    collection = %name,
                    "dropping a collection that this replica's state does not account for"
                );
                db.drop_collection(&name).map_err(|e| e.to_string())?;
            }
        }
        let mark = AppliedMark::open(&path)?;
        Ok(ShardSm {
            shard,
            shards,
            service,
            dir,
            mark: Arc::new(std::sync::Mutex::new(mark)),
            apply_lock: Arc::default(),
            failure: Default::default(),
        })
    }

    fn mark(&self) -> std::sync::MutexGuard<'_, AppliedMark> {
        self.mark.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that the command's owner is its caller's user and lives on
    /// this shard: a replica never applies a write across users.
    fn owner_ok(&self, cmd: &ShardCommand) -> Result<(), WireError> {
        let caller_user = match &cmd.caller {
            Caller::Tenant(t) => t.user_id,
            Caller::Local | Caller::LocalReader => uuid::Uuid::nil(),
        };
        if caller_user != cmd.owner || shard_of(&cmd.owner, self.shards) != self.shard {
            return Err(WireError::from(&ServiceError::Forbidden(
                "the write's owner does not live on this shard".into(),
            )));
        }
        Ok(())
    }

    /// Runs a command against the data (a write while applying, a read on
    /// the leader).
    pub async fn run(&self, cmd: ShardCommand, applying: bool) -> ShardReply {
        let deleted = match &cmd.op {
            vectorizer_service::Op::DeleteCollection { name } if self.owner_ok(&cmd).is_ok() => {
                self.service
                    .metadata_of(&cmd.caller, name)
                    .map(|m| Deleted {
                        hub_id: m.get(HUB_ID_KEY).and_then(|i| i.parse().ok()),
                        token: m.get(TOKEN_KEY).and_then(|t| t.parse().ok()),
                    })
            }
            _ => None,
        };
        let result = self.run_op(cmd, applying).await;
        ShardReply {
            deleted: deleted.filter(|_| result.is_ok()),
            result,
        }
    }

    async fn run_op(
        &self,
        cmd: ShardCommand,
        applying: bool,
    ) -> Result<vectorizer_service::Answer, WireError> {
        self.owner_ok(&cmd)?;
        self.service
            .execute(cmd.caller, cmd.op, cmd.limits, applying, cmd.metadata)
            .await
            .map_err(|e| WireError::from(&e))
    }

    /// Applies entries in order; an entry that cannot be decoded, or a
    /// failure of this replica, stops the group here.
    async fn apply_entries<I>(&self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let _applying = self.apply_lock.lock().await;
        let mut out = Vec::new();
        for e in entries {
            let id = *e.get_log_id();
            let (_, mut membership) = self.mark().get();
            let reply = match e.payload {
                EntryPayload::Blank => Reply::None,
                EntryPayload::Membership(m) => {
                    membership = Membership::new(Some(id), m);
                    Reply::None
                }
                EntryPayload::Normal(Command::Shard(cmd)) => {
                    let reply = self.run(*cmd, true).await;
                    // A refusal is the data's answer, the same on every
                    // replica; a failure of this replica (its disk, say)
                    // is not: the entry must not count as applied here.
                    if let Err(e) = &reply.result
                        && matches!(
                            e.kind.as_str(),
                            "internal" | "unavailable" | "timeout" | "busy"
                        )
                    {
                        return Err(sm_err(
                            ErrorVerb::Write,
                            format!("a replicated write failed on this replica: {}", e.message),
                        ));
                    }
                    Reply::Shard(reply)
                }
                EntryPayload::Normal(Command::Undecodable { index, reason }) => {
                    return Err(undecodable(index, &reason));
                }
                EntryPayload::Normal(Command::Meta(_)) => Reply::Shard(ShardReply {
                    result: Err(WireError::from(&ServiceError::Internal(
                        "a metadata command reached a shard group".into(),
                    ))),
                    deleted: None,
                }),
            };
            let mark = self.mark.clone();
            tokio::task::spawn_blocking(move || {
                mark.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set(Some(id), membership)
            })
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            out.push(reply);
        }
        Ok(out)
    }
}

impl RaftSnapshotBuilder<Tc> for ShardSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let placed = {
            let _applying = self.apply_lock.lock().await;
            let (last, membership) = self.mark().get();
            snapshot::place(&self.service, &self.dir, last, membership).await?
        };
        snapshot::pack(&self.dir, placed).await
    }
}

impl RaftStateMachine<Tc> for ShardSm {
    type SnapshotBuilder = ShardSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok(self.mark().get())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let applied = self.apply_entries(entries).await;
        if let Err(e) = &applied {
            self.failure.set(e);
        }
        applied
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
        data: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let _applying = self.apply_lock.lock().await;
        let (shard, shards) = (self.shard, self.shards);
        let home = move |u: &uuid::Uuid| shard_of(u, shards) == shard;
        snapshot::install(&self.service, &self.dir, meta, data.into_inner(), home).await?;
        let mark = self.mark.clone();
        let (last, membership) = (meta.last_log_id, meta.last_membership.clone());
        tokio::task::spawn_blocking(move || {
            mark.lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(last, membership)
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::current(&self.dir).await
    }
}
