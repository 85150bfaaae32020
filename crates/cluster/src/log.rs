//! A group's Raft log and vote, in a redb file of its own
//! (`raft/group-<g>.redb`): entries by index in the format of `codec.rs`
//! (a log id header, then MessagePack), and the vote, the
//! committed id and the last purged id in a small table beside them.
//! redb commits with fsync, so an append is durable before openraft is
//! told it is flushed. Every file access runs on a blocking thread.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogId, StorageIOError, Vote};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::types::{Command, Entry, LogId, NodeId, StorageError, Tc};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

#[derive(Clone)]
pub struct LogStore {
    db: Arc<redb::Database>,
    recent: crate::recent::Recent,
}

fn io(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

fn read_err(e: impl ToString) -> StorageError {
    io(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl ToString) -> StorageError {
    io(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, String> {
        let db = redb::Database::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let w = db.begin_write().map_err(|e| e.to_string())?;
        w.open_table(LOG).map_err(|e| e.to_string())?;
        w.open_table(META).map_err(|e| e.to_string())?;
        w.commit().map_err(|e| e.to_string())?;
        Ok(LogStore {
            db: Arc::new(db),
            recent: Default::default(),
        })
    }

    /// Runs `f` with the database on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(write_err)?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &redb::Database,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let r = db.begin_read().map_err(read_err)?;
        let t = r.open_table(META).map_err(read_err)?;
        match t.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(
        db: &redb::Database,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let w = db.begin_write().map_err(write_err)?;
        {
            let mut t = w.open_table(META).map_err(write_err)?;
            t.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        w.commit().map_err(write_err)
    }

    /// Forgets every entry, the committed id and the purged id, keeping
    /// the vote (a node must never vote twice in one term): the log of a
    /// replica that will be sent the group's state again.
    pub fn reset(&self) -> Result<(), String> {
        let w = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = w.open_table(LOG).map_err(|e| e.to_string())?;
            t.retain(|_, _| false).map_err(|e| e.to_string())?;
            let mut m = w.open_table(META).map_err(|e| e.to_string())?;
            for k in ["committed", "purged"] {
                m.remove(k).map_err(|e| e.to_string())?;
            }
        }
        w.commit().map_err(|e| e.to_string())?;
        self.recent.clear();
        Ok(())
    }

    /// The entries from `start` (before `end`, and, past the first, within
    /// `budget` bytes as stored), decoded or from the cache. A bounded read
    /// is for a follower, and fails on an entry that cannot be decoded.
    async fn read(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
        budget: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let recent = self.recent.clone();
        let replicating = budget != usize::MAX;
        self.blocking(move |db| {
            let r = db.begin_read().map_err(read_err)?;
            let t = r.open_table(LOG).map_err(read_err)?;
            let (mut out, mut bytes) = (Vec::new(), 0usize);
            for item in t.range::<u64>((start, end)).map_err(read_err)? {
                let (k, v) = item.map_err(read_err)?;
                let raw = v.value();
                bytes += raw.len();
                if !out.is_empty() && bytes > budget {
                    break;
                }
                // A cached entry is used only if it is the one stored.
                let cached = recent
                    .get(k.value())
                    .filter(|e| crate::codec::log_id_of(raw).ok() == Some(e.log_id));
                let entry = match cached {
                    Some(e) => e,
                    None => {
                        let e = crate::codec::decode_entry(raw).map_err(read_err)?;
                        // Kept for the next follower or retry; what is
                        // read to be applied is read once.
                        if replicating {
                            recent.put(k.value(), e.clone(), raw.len());
                        }
                        e
                    }
                };
                // Sent to a follower, it would stall the group unseen:
                // this group stops here instead, saying why.
                if replicating
                    && let EntryPayload::Normal(Command::Undecodable { index, reason }) =
                        &entry.payload
                {
                    return Err(read_err(format!(
                        "log entry {index} cannot be decoded: {reason}"
                    )));
                }
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }

    /// Whether this group has ever stored a vote or an entry here.
    pub fn is_pristine(&self) -> Result<bool, String> {
        let r = self.db.begin_read().map_err(|e| e.to_string())?;
        let log = r.open_table(LOG).map_err(|e| e.to_string())?;
        let meta = r.open_table(META).map_err(|e| e.to_string())?;
        Ok(log.is_empty().map_err(|e| e.to_string())?
            && meta.get("vote").map_err(|e| e.to_string())?.is_none()
            && meta.get("purged").map_err(|e| e.to_string())?.is_none())
    }
}

impl RaftLogReader<Tc> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read(start, end, usize::MAX).await
    }

    /// What a leader sends a follower at once: at most
    /// [`crate::replicate::BATCH_BYTES`] of entries as stored, and always
    /// at least one.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        self.read(
            Bound::Included(start),
            Bound::Excluded(end),
            crate::replicate::BATCH_BYTES,
        )
        .await
    }
}

impl RaftLogStorage<Tc> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Tc>, StorageError> {
        self.blocking(|db| {
            let purged: Option<LogId> = Self::get_meta(db, "purged")?;
            let r = db.begin_read().map_err(read_err)?;
            let t = r.open_table(LOG).map_err(read_err)?;
            let last = match t.last().map_err(read_err)? {
                Some((_, v)) => Some(crate::codec::log_id_of(v.value()).map_err(read_err)?),
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db| {
            Self::put_meta(db, "vote", &vote)
                .map_err(|e| io(ErrorSubject::Vote, ErrorVerb::Write, e))
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking(|db| Self::get_meta(db, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking(move |db| Self::put_meta(db, "committed", &committed))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.blocking(|db| Ok(Self::get_meta::<Option<LogId>>(db, "committed")?.flatten()))
            .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Tc>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let done = self
            .blocking(move |db| {
                // Encoded here, off the async runtime: an entry may be large.
                let rows: Vec<(u64, Vec<u8>)> = entries
                    .iter()
                    .map(|e| {
                        let bytes = crate::codec::encode_entry(e).map_err(write_err)?;
                        Ok((e.get_log_id().index, bytes))
                    })
                    .collect::<Result<_, StorageError>>()?;
                let w = db.begin_write().map_err(write_err)?;
                {
                    let mut t = w.open_table(LOG).map_err(write_err)?;
                    for (i, bytes) in &rows {
                        t.insert(*i, bytes.as_slice()).map_err(write_err)?;
                    }
                }
                w.commit().map_err(write_err)
            })
            .await;
        match &done {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        done
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let w = db.begin_write().map_err(write_err)?;
            {
                let mut t = w.open_table(LOG).map_err(write_err)?;
                t.retain_in(log_id.index.., |_, _| false)
                    .map_err(write_err)?;
            }
            w.commit().map_err(write_err)
        })
        .await?;
        self.recent.remove_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let w = db.begin_write().map_err(write_err)?;
            {
                let mut m = w.open_table(META).map_err(write_err)?;
                let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
                m.insert("purged", bytes.as_slice()).map_err(write_err)?;
                let mut t = w.open_table(LOG).map_err(write_err)?;
                t.retain_in(..=log_id.index, |_, _| false)
                    .map_err(write_err)?;
            }
            w.commit().map_err(write_err)
        })
        .await?;
        self.recent.remove_to(log_id.index);
        Ok(())
    }
}
