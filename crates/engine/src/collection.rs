//! A collection: points in an HNSW index, payloads in memory, every change
//! in the write-ahead log before it is acknowledged.
//!
//! Locks, always taken in this order: `writer` (one writer at a time, owns
//! the log and slot allocation), then `state` (the point table and the
//! index). Searches take only `state` for reading. A write adds its vectors
//! to the index under the *read* lock, under keys no reader can resolve yet,
//! and then publishes the whole batch under a short write lock: a search
//! never waits for a batch's graph insertion, and never sees half a batch.

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{CollectionConfig, Limits, MAX_EF, Metric};
use crate::deadline::{CHECK_EVERY, Deadline};
use crate::distance::better;
use crate::error::{EngineError, Result};
use crate::filter::Filter;
use crate::fsutil::{sync_dir, write_atomic};
use crate::id::PointId;
use crate::index::VectorIndex;
use crate::payload::Payload;
use crate::payload_index::{KeyBits, PayloadIndex};
use crate::snapshot;
use crate::wal::{Point, Wal, WalOp};

mod checkpoint;
pub(crate) mod home;
mod link;
pub(crate) mod recall;
mod rename;

pub use checkpoint::Checkpoint;
pub(crate) use home::Home;
pub(crate) use link::background_priority;
pub use recall::{RecallReport, RecallSource};

const META_FILE: &str = "collection.json";
const WAL_FILE: &str = "wal.log";
const META_VERSION: u32 = 1;

use crate::distance::MAX_SQUARED_LENGTH;
/// Collections at most this large are always searched exactly.
const EXACT_BELOW: usize = 256;
/// Points sampled to estimate a filter's selectivity.
const SAMPLE: usize = 512;
/// The largest beam or limit of a search [`Collection::search_is_quick`]
/// calls quick.
pub const QUICK_EF: usize = 256;
/// The most unlinked points a quick search scans exactly.
const QUICK_BACKLOG: usize = 2048;
/// The most vector components a quick search may compare, roughly: the
/// graph walk's `beam × 2m` nodes and the backlog, times the dimension
/// (4M multiply-adds are about a millisecond).
const QUICK_COST: usize = 4 << 20;
/// The most a search may cost, in the same units, and still be short work
/// for another thread (a few milliseconds).
const LIGHT_COST: usize = 4 * QUICK_COST;
/// Batches at least this large are inserted into the graph on several threads.
const PARALLEL_ADD_MIN: usize = 64;
/// A snapshot first compacts the graph once deleted nodes exceed this and a
/// quarter of the live ones.
const COMPACT_MIN_DELETED: usize = 1024;

/// Tuning shared by the collections of one database.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads inserting one large batch into the graph.
    pub insert_threads: usize,
    /// A snapshot is taken once the log exceeds this many bytes and half the
    /// size of the previous snapshot (bounding both replay time on open and
    /// write amplification).
    pub min_snapshot_log_bytes: u64,
    /// Most published points waiting to be linked into the graph; a write
    /// that finds more links keys itself first. Until linked, points are
    /// found by an exact scan, so a larger backlog acknowledges bulk loads
    /// sooner but slows searches while it lasts.
    pub max_unindexed: usize,
    pub limits: Limits,
    /// Whether collections link points and take snapshots in the
    /// background. Off (for looking only), opening a database takes no
    /// action of its own: no linking, snapshot, emptying of the trash or
    /// completion of a rename, and a missing database is an error; what
    /// any open recovers after a crash (a torn log tail) is still recovered.
    pub background: bool,
    /// Most collections held open at once; idle ones beyond it are closed,
    /// least recently used first.
    pub max_open_collections: usize,
    /// Memory the open collections may hold together before idle ones are
    /// closed, least recently used first.
    pub memory_budget_bytes: u64,
    /// Where linking runs (by default a pool of `insert_threads` threads
    /// per database).
    pub linker: Option<LinkerHandle>,
    /// Share of one core the database's recall tuning may use (0: none;
    /// searches then use each collection's `hnsw.ef_search`).
    pub tuning_cpu_share: f64,
}

/// A shared [`Linker`](crate::linker::Linker) in [`EngineOptions`].
#[derive(Clone)]
pub struct LinkerHandle(pub Arc<dyn crate::linker::Linker>);

impl std::fmt::Debug for LinkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Linker")
    }
}

/// Half the machine's memory (the default memory budget).
fn half_the_memory() -> u64 {
    // Safety: sysconf reads system figures only.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        (pages as u64).saturating_mul(size as u64) / 2
    } else {
        4 << 30
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineOptions {
            insert_threads: cores,
            min_snapshot_log_bytes: 32 << 20,
            max_unindexed: 200_000,
            limits: Limits::default(),
            background: true,
            max_open_collections: 1024,
            memory_budget_bytes: half_the_memory(),
            linker: None,
            tuning_cpu_share: 0.25,
        }
    }
}

/// What is persisted in `collection.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    version: u32,
    name: String,
    config: CollectionConfig,
    created_at_ms: u64,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// A collection's description and exact figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub config: CollectionConfig,
    pub created_at_ms: u64,
    /// Opaque strings owned by the layers above (owner, external ids).
    pub metadata: BTreeMap<String, String>,
    pub points: u64,
    /// Bytes of the collection's files on disk.
    pub disk_bytes: u64,
    /// Bytes held in memory: the index's own figure, payload text, and the
    /// per-point bookkeeping.
    pub memory_bytes: u64,
    /// Points not yet linked into the graph (found by exact scan meanwhile).
    pub unindexed: u64,
    /// The last measurement of its recall (none yet, or no target).
    pub recall: Option<RecallReport>,
}

/// A point as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: PointId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    /// At most how many bytes of JSON this record takes in an answer.
    #[serde(skip)]
    pub json_bytes: usize,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// At most how many bytes of JSON this hit takes in an answer.
    #[serde(skip)]
    pub json_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub ef: Option<usize>,
    /// Cosine and dot: keep scores >= threshold; euclidean: distances <=.
    pub score_threshold: Option<f32>,
    pub with_payload: bool,
    pub with_vector: bool,
    /// When to give up (a scan stops with [`EngineError::Cancelled`]).
    pub deadline: Deadline,
    /// Score every matching point instead of walking the graph.
    pub exact: bool,
}

/// What a write will add, decided under the writer lock (so no other
/// write or delete of the collection can change it before it lands).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCost {
    /// Points whose id the collection does not hold yet.
    pub new_points: u64,
    /// Bytes the write adds on disk: its log record, and the snapshot rows
    /// (vector, graph links, payload) its points will take.
    pub bytes: u64,
}

/// What to return with each point.
#[derive(Debug, Clone, Copy, Default)]
pub struct With {
    pub payload: bool,
    pub vector: bool,
}

struct Entry {
    id: PointId,
    payload: Option<Payload>,
}

struct State {
    index: VectorIndex,
    /// Index key -> point; `None` for free or not yet published keys.
    slots: Vec<Option<Entry>>,
    ids: BTreeMap<PointId, u32>,
    payload_bytes: u64,
    /// Published keys not yet linked into the graph, oldest first. Searches
    /// scan them exactly; linking jobs link them in the background.
    unindexed: Vec<u32>,
    /// Keys by the values of the declared payload fields.
    payload_index: PayloadIndex,
    /// Bumped when compaction replaces the graph (and renumbers keys), so
    /// that linking keys taken before it are abandoned.
    generation: u64,
    /// Keys at the front of `unindexed` handed to a linking job.
    claimed: usize,
    /// Payload changes since the payload index was last built (each leaves
    /// its old values' postings behind).
    stale_postings: usize,
}

struct Writer {
    wal: Wal,
    next_seq: u64,
    /// Keys below this have been handed out.
    next_key: u32,
    snapshot_bytes: u64,
    /// Set after a failure that left memory behind the log; writes are then
    /// refused until the collection is reopened (which replays the log).
    failed: bool,
}

pub struct Collection {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    meta: RwLock<Meta>,
    options: EngineOptions,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Bytes of the files other than the log (metadata and snapshot).
    fixed_disk_bytes: AtomicU64,
    log_bytes: AtomicU64,
    dropped: AtomicBool,
    signal: Arc<Signal>,
    /// Threads waiting for the write lock (see [`Collection::write`]).
    writers_waiting: AtomicUsize,
    /// The number of points, readable without any lock.
    live: AtomicUsize,
    /// Snapshot rows (vectors, graph links, payloads) that writes since the
    /// last snapshot will add to disk: owed, though not on disk yet.
    owed_rows: AtomicU64,
    /// The default beam width of searches (changeable; see
    /// [`Collection::set_ef_search`]).
    ef_search: AtomicUsize,
    /// The database serving it (none for a collection opened only to be
    /// checked or read).
    home: Option<Arc<Home>>,
    /// Itself, for the linking jobs it queues.
    this: std::sync::OnceLock<Weak<Collection>>,
    /// Linking jobs queued or running.
    linking: AtomicUsize,
    /// Marked dirty in the catalog since it was opened or last recorded.
    dirty: AtomicBool,
    /// Its figures in the catalog, and as last added to the live totals.
    recorded: Mutex<home::Figures>,
    settled: Mutex<home::Figures>,
    /// Memory held, as of the last change.
    memory: AtomicU64,
    /// Its measured recall and the search breadth chosen from it.
    recall: recall::Recall,
}

/// Which points an operation acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// A change to points' payloads.
#[derive(Debug, Clone)]
pub enum PayloadChange {
    /// Sets these top-level keys, keeping the others.
    Set(Map<String, Value>),
    /// Replaces the whole payload.
    Overwrite(Map<String, Value>),
    /// Removes these top-level keys.
    DeleteKeys(Vec<String>),
}

impl PayloadChange {
    fn apply(&self, old: Option<Map<String, Value>>) -> Option<Map<String, Value>> {
        let mut m = old.unwrap_or_default();
        match self {
            PayloadChange::Set(kv) => m.extend(kv.iter().map(|(k, v)| (k.clone(), v.clone()))),
            PayloadChange::Overwrite(kv) => m = kv.clone(),
            PayloadChange::DeleteKeys(keys) => keys.iter().for_each(|k| {
                m.remove(k);
            }),
        }
        (!m.is_empty()).then_some(m)
    }
}

/// Wakes writers waiting for the backlog to shrink.
#[derive(Default)]
struct Signal {
    m: Mutex<()>,
    progress: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Heap bytes of a stored payload (memory accounting).
fn held(p: Option<&Payload>) -> u64 {
    p.map_or(0, |p| p.heap_bytes() as u64)
}

fn payload_len(p: Option<&Map<String, Value>>) -> u64 {
    p.map_or(0, |m| serde_json::to_vec(m).map_or(0, |v| v.len() as u64))
}

impl Collection {
    /// Writes a new collection's files into `dir` (which must not exist).
    pub(crate) fn init_dir(
        dir: &Path,
        name: &str,
        config: &CollectionConfig,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        fs::create_dir(dir).map_err(EngineError::io("creating a collection directory"))?;
        let meta = Meta {
            version: META_VERSION,
            name: name.to_owned(),
            config: config.clone(),
            created_at_ms: now_ms(),
            metadata,
        };
        write_atomic(
            &dir.join(META_FILE),
            &serde_json::to_vec_pretty(&meta).expect("serializable"),
        )?;
        Wal::open(&dir.join(WAL_FILE))?;
        sync_dir(dir)
    }

    /// Opens a collection: loads its snapshot and replays newer log records.
    pub(crate) fn open(dir: &Path, options: EngineOptions) -> Result<Collection> {
        let meta_raw =
            fs::read(dir.join(META_FILE)).map_err(EngineError::io("reading collection.json"))?;
        let meta: Meta = serde_json::from_slice(&meta_raw)
            .map_err(|e| EngineError::Corrupt(format!("{}/{META_FILE}: {e}", dir.display())))?;
        if meta.version != META_VERSION {
            return Err(EngineError::Corrupt(format!(
                "unsupported collection format {}",
                meta.version
            )));
        }
        let config = meta.config.clone();
        let loaded = snapshot::load(dir)?;
        let (index, snap_seq, snapshot_bytes, slots, ids, payload_bytes) = match loaded {
            Some(l) => {
                let index = VectorIndex::load(&config, &l.index_path, dir)?;
                // Every key names a node of the graph, once; every id is
                // one point's. Checked before the slot table is sized by
                // the keys, so a damaged table cannot size it.
                let high = index.high() as u64;
                let bad = |what: &str| {
                    EngineError::Corrupt(format!("the point table of `{}` {what}", meta.name))
                };
                if l.points
                    .iter()
                    .any(|p| p.0 >= high || !index.is_live(p.0 as u32))
                {
                    return Err(bad("names a key that is no live node of its graph"));
                }
                let max_key = l
                    .points
                    .iter()
                    .map(|p| p.0)
                    .max()
                    .map_or(0, |k| k as usize + 1);
                let mut slots: Vec<Option<Entry>> = Vec::with_capacity(max_key);
                slots.resize_with(max_key, || None);
                let mut ids = BTreeMap::new();
                let mut bytes = 0;
                for (key, id, payload) in l.points {
                    bytes += held(payload.as_ref());
                    if ids.insert(id, key as u32).is_some() || slots[key as usize].is_some() {
                        return Err(bad("holds a key or an id twice"));
                    }
                    slots[key as usize] = Some(Entry { id, payload });
                }
                (index, l.seq, l.bytes, slots, ids, bytes)
            }
            None => (
                VectorIndex::new(&config, dir)?,
                0,
                0,
                Vec::new(),
                BTreeMap::new(),
                0,
            ),
        };
        if index.size() != ids.len() {
            return Err(EngineError::Corrupt(format!(
                "snapshot of `{}` holds {} vectors for {} points",
                meta.name,
                index.size(),
                ids.len()
            )));
        }
        let (wal, records, recovery) = Wal::open(&dir.join(WAL_FILE))?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(collection = %meta.name, bytes = recovery.truncated_bytes, "recovered a torn log tail");
        }
        // Keys are never reused (a removed key stays in the graph as a
        // waypoint), so allocation resumes above every key the graph holds.
        let next_key = index.high() as u32;
        let last_seq = records.last().map_or(snap_seq, |r| r.seq.max(snap_seq));
        // Points published but not linked when the snapshot was taken.
        let unindexed = index.unlinked();
        let payload_index = index_payloads(&config.payload_index, &slots);
        let state = State {
            index,
            slots,
            ids,
            payload_bytes,
            unindexed,
            payload_index,
            generation: 0,
            claimed: 0,
            stale_postings: 0,
        };
        let log_len = wal.len();
        let recall = recall::Recall::new(meta.config.target_recall, config.dimension);
        let coll = Collection {
            name: meta.name.clone(),
            dir: dir.to_owned(),
            config,
            meta: RwLock::new(meta),
            options,
            writer: Mutex::new(Writer {
                wal,
                next_seq: last_seq + 1,
                next_key,
                snapshot_bytes,
                failed: false,
            }),
            state: RwLock::new(state),
            fixed_disk_bytes: AtomicU64::new(
                meta_raw.len() as u64 + snapshot_bytes + current_len(dir),
            ),
            log_bytes: AtomicU64::new(log_len),
            dropped: AtomicBool::new(false),
            signal: Arc::new(Signal::default()),
            writers_waiting: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            owed_rows: AtomicU64::new(0),
            ef_search: AtomicUsize::new(0),
            home: None,
            this: std::sync::OnceLock::new(),
            linking: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            recorded: Mutex::default(),
            settled: Mutex::default(),
            memory: AtomicU64::new(0),
            recall,
        };
        coll.ef_search
            .store(coll.config.hnsw.ef_search, Ordering::Relaxed);
        {
            let mut w = lock(&coll.writer);
            for rec in records.into_iter().filter(|r| r.seq > snap_seq) {
                coll.apply(&mut w, rec.op)?;
            }
        }
        coll.live.store(coll.read().ids.len(), Ordering::SeqCst);
        coll.memory
            .store(coll.memory_bytes_now(), Ordering::Relaxed);
        Ok(coll)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current config: as created, with the payload fields indexed
    /// since.
    pub(crate) fn info_config(&self) -> CollectionConfig {
        self.meta
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }

    /// The config the collection was opened with. Its dimension, metric and
    /// HNSW parameters never change; `info().config` also lists payload
    /// fields indexed since.
    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The write lock. Announces itself first, so that linking (which
    /// runs at low priority under the read lock) steps aside before its
    /// next slice instead of making a writer wait through its work.
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.writers_waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.writers_waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    pub fn info(&self) -> CollectionInfo {
        let meta = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        let st = self.read();
        CollectionInfo {
            name: meta.name,
            config: meta.config,
            created_at_ms: meta.created_at_ms,
            metadata: meta.metadata,
            points: st.ids.len() as u64,
            disk_bytes: self.disk_bytes(),
            memory_bytes: self.memory_bytes(&st),
            unindexed: st.unindexed.len() as u64,
            recall: self.recall.report(),
        }
    }

    /// The last measurement of its recall (none yet, or no target).
    pub fn recall(&self) -> Option<RecallReport> {
        self.recall.report()
    }

    /// Exact number of points (no lock taken: safe to call from anywhere).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of this collection's files on disk, exactly.
    pub fn disk_bytes(&self) -> u64 {
        self.fixed_disk_bytes.load(Ordering::Relaxed) + self.log_bytes.load(Ordering::Relaxed)
    }

    /// Bytes a snapshot row of one point takes, payload aside: a figure of
    /// the config alone (see `write_parts`).
    pub fn row_bytes(&self) -> u64 {
        let dim = self.config.dimension as u64;
        let m = self.config.hnsw.m as u64;
        (2 + 4 + dim * 4 + 4 + 2 * m * 4 + 4 + m * 4) + (8 + 17 + 4)
    }

    /// The collection's size as a function of its points alone (rows and
    /// payload text), whatever its files look like: copies that hold the
    /// same points agree on it, where their log and snapshot sizes differ.
    pub fn logical_bytes(&self) -> u64 {
        let payload = self.read().payload_bytes;
        self.len() as u64 * self.row_bytes() + payload
    }

    /// Of the memory the collection holds, the bytes that hold vectors
    /// (a quantized collection's codes; its full vectors are on disk).
    pub fn vector_memory_bytes(&self) -> u64 {
        self.read().index.vector_bytes() as u64
    }

    fn memory_bytes_now(&self) -> u64 {
        self.memory_bytes(&self.read())
    }

    fn memory_bytes(&self, st: &State) -> u64 {
        let per_point =
            std::mem::size_of::<Option<Entry>>() + std::mem::size_of::<(PointId, u32)>() + 16;
        // The query ring counts at its most, from the start.
        self.recall.ring_bytes(self.config.dimension)
            + st.index.memory_usage() as u64
            + st.payload_bytes
            + st.payload_index.heap_bytes() as u64
            + (st.slots.len() * per_point) as u64
    }

    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.meta
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .metadata
            .clone()
    }

    /// Replaces the metadata map, durably.
    pub fn set_metadata(&self, metadata: BTreeMap<String, String>) -> Result<()> {
        // A dropped collection's handle must not write over the files of
        // a collection made since under the same name.
        let _w = self.lock_writer()?;
        let mut next = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        next.metadata = metadata;
        self.replace_meta(next)?;
        self.sync_entry()
    }

    /// Indexes one more payload field: the declaration is written to
    /// `collection.json`, the postings are built from the points held now,
    /// and later writes keep them. False if the field was indexed already.
    pub fn create_payload_index(&self, field: &str) -> Result<bool> {
        // No write runs meanwhile, so no payload misses the new postings.
        let _w = self.lock_writer()?;
        let mut next = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        if next.config.payload_index.iter().any(|f| f == field) {
            return Ok(false);
        }
        next.config.payload_index.push(field.to_owned());
        next.config.validate()?;
        // Built under the read lock: searches go on meanwhile.
        let index = index_payloads(&next.config.payload_index, &self.read().slots);
        self.replace_meta(next)?;
        self.write().payload_index = index;
        self.sync_entry()?;
        tracing::info!(collection = %self.name, field, "payload index created");
        Ok(true)
    }

    /// Stops indexing a payload field; filters on it then scan. Returns
    /// whether the field was indexed.
    pub fn drop_payload_index(&self, field: &str) -> Result<bool> {
        crate::config::validate_field_path(field)?;
        let _w = self.lock_writer()?;
        let mut next = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        let before = next.config.payload_index.len();
        next.config.payload_index.retain(|f| f != field);
        if next.config.payload_index.len() == before {
            return Ok(false);
        }
        let index = index_payloads(&next.config.payload_index, &self.read().slots);
        self.replace_meta(next)?;
        self.write().payload_index = index;
        self.sync_entry()?;
        tracing::info!(collection = %self.name, field, "payload index dropped");
        Ok(true)
    }

    /// Writes `next` to `collection.json` atomically, then holds it. The
    /// caller holds the writer lock (one metadata change at a time); the
    /// metadata lock is held only for the swap, never across file work.
    fn replace_meta(&self, next: Meta) -> Result<()> {
        let raw = serde_json::to_vec_pretty(&next).expect("serializable");
        write_atomic(&self.dir.join(META_FILE), &raw)?;
        let mut meta = self.meta.write().unwrap_or_else(|e| e.into_inner());
        let old = serde_json::to_vec_pretty(&*meta)
            .expect("serializable")
            .len() as u64;
        self.fixed_disk_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.fixed_disk_bytes.fetch_sub(old, Ordering::Relaxed);
        *meta = next;
        drop(meta);
        self.settle();
        Ok(())
    }

    pub(crate) fn mark_dropped(&self) {
        let _w = lock(&self.writer);
        self.dropped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn unmark_dropped(&self) {
        {
            let _w = lock(&self.writer);
            self.dropped.store(false, Ordering::SeqCst);
        }
        // Linking stopped while it was marked.
        self.schedule_linking();
    }

    fn check_vector(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.config.dimension {
            return Err(EngineError::DimensionMismatch {
                expected: self.config.dimension,
                got: v.len(),
            });
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(EngineError::InvalidVector(format!(
                "component {i} is not a finite 32-bit number (NaN, infinite, or beyond ±3.4e38)"
            )));
        }
        if self.config.metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
            return Err(EngineError::InvalidVector(
                "a zero vector has no direction under cosine".into(),
            ));
        }
        // Scores must stay finite: with every squared length at most a
        // quarter of f32's range, a dot product (at most the product of the
        // lengths) and a squared distance (at most the square of their sum)
        // both fit.
        let squared: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        if squared > MAX_SQUARED_LENGTH {
            return Err(EngineError::InvalidVector(format!(
                "the vector is too long: its squared length {squared:.3e} exceeds {MAX_SQUARED_LENGTH:.3e}"
            )));
        }
        Ok(())
    }

    fn check_batch_len(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(EngineError::EmptyBatch);
        }
        let max = self.options.limits.max_batch;
        if n > max {
            return Err(EngineError::BatchTooLarge { got: n, max });
        }
        Ok(())
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = lock(&self.writer);
        if self.dropped.load(Ordering::SeqCst) {
            return Err(EngineError::CollectionNotFound(self.name.clone()));
        }
        if w.failed {
            return Err(EngineError::Index(
                "collection needs reopening after a failed write".into(),
            ));
        }
        self.mark_dirty()?;
        Ok(w)
    }

    /// Inserts or replaces points. The batch is validated whole first; an
    /// id may appear only once in a batch. Durable when this returns.
    pub fn upsert(&self, points: Vec<Point>) -> Result<usize> {
        self.upsert_admitted(points, |_| Ok::<_, EngineError>(()))
            .map(|(n, ())| n)
    }

    /// [`upsert`](Self::upsert), asking `admit` first with what the batch
    /// adds. `admit` runs under the writer lock, so what counts as new
    /// cannot change before the write lands; its value (a quota
    /// reservation, say) is handed back once the write is applied.
    pub fn upsert_admitted<R, E: From<EngineError>>(
        &self,
        points: Vec<Point>,
        admit: impl FnOnce(WriteCost) -> std::result::Result<R, E>,
    ) -> std::result::Result<(usize, R), E> {
        self.check_batch_len(points.len())?;
        let mut seen = HashSet::with_capacity(points.len());
        for p in &points {
            self.check_vector(&p.vector)?;
            if !seen.insert(p.id) {
                return Err(EngineError::DuplicateId(p.id).into());
            }
            let len = payload_len(p.payload.as_ref()) as usize;
            if len > self.options.limits.max_payload_bytes {
                return Err(EngineError::InvalidPayload(format!(
                    "payload of point {} is {len} bytes, at most {} allowed",
                    p.id, self.options.limits.max_payload_bytes
                ))
                .into());
            }
        }
        let n = points.len();
        let mut w = self.lock_writer()?;
        let new_points = {
            let st = self.read();
            points
                .iter()
                .filter(|p| !st.ids.contains_key(&p.id))
                .count() as u64
        };
        let (log, rows) = self.write_parts(&points);
        let granted = admit(WriteCost {
            new_points,
            bytes: log + rows,
        })?;
        self.log_locked(&mut w, WalOp::Upsert(points))?;
        // Unless a snapshot taken by this write holds its rows already.
        if !w.wal.is_empty() {
            self.owed_rows.fetch_add(rows, Ordering::Relaxed);
        }
        self.settle();
        Ok((n, granted))
    }

    /// Bytes on disk now, plus the snapshot rows that writes since the last
    /// snapshot owe: what a storage quota must count, so that a snapshot
    /// never takes a collection past what was allowed.
    pub fn committed_bytes(&self) -> u64 {
        self.disk_bytes() + self.owed_rows.load(Ordering::Relaxed)
    }

    /// Bytes on disk a batch of points costs: its log record now, and a
    /// snapshot row per point later (a replaced point takes a new row too,
    /// until compaction drops the old one).
    pub fn write_bytes(&self, points: &[Point]) -> u64 {
        let (log, rows) = self.write_parts(points);
        log + rows
    }

    /// (log record, snapshot rows) of a batch.
    fn write_parts(&self, points: &[Point]) -> (u64, u64) {
        let dim = self.config.dimension as u64;
        let m = self.config.hnsw.m as u64;
        // Log: record header, seq, kind, count; per point id, dim, floats,
        // payload length and text.
        let mut log = 8 + 8 + 1 + 4;
        let mut rows = 0;
        for p in points {
            let payload = payload_len(p.payload.as_ref());
            let id = 17;
            // Snapshot: state and level, 1/norm and floats, the layer-0
            // list of 2m links and one upper layer of m (more than the
            // expected share of upper layers); key, id, payload.
            let graph = 2 + 4 + dim * 4 + 4 + 2 * m * 4 + 4 + m * 4;
            let points_row = 8 + id + 4 + payload;
            log += id + 4 + dim * 4 + 4 + payload;
            rows += graph + points_row;
        }
        (log, rows)
    }

    /// Deletes points by id; returns how many existed.
    pub fn delete(&self, ids: Vec<PointId>) -> Result<usize> {
        self.check_batch_len(ids.len())?;
        let mut w = self.lock_writer()?;
        let ids: Vec<PointId> = {
            let st = self.read();
            let mut seen = HashSet::new();
            ids.into_iter()
                .filter(|id| st.ids.contains_key(id) && seen.insert(*id))
                .collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len();
        self.log_locked(&mut w, WalOp::Delete(ids))?;
        Ok(n)
    }

    /// Live ids among `ids` (each once), or matching `filter`.
    fn select(&self, sel: &Selection, deadline: &Deadline) -> Result<Vec<PointId>> {
        let st = self.read();
        match sel {
            Selection::Ids(ids) => {
                let mut seen = HashSet::new();
                Ok(ids
                    .iter()
                    .filter(|id| st.ids.contains_key(id) && seen.insert(**id))
                    .copied()
                    .collect())
            }
            Selection::Filter(f) => {
                let cands = candidates(&st, f);
                let mut out = Vec::new();
                for (i, (id, key)) in st.ids.iter().enumerate() {
                    if i % CHECK_EVERY == CHECK_EVERY - 1 {
                        deadline.check()?;
                    }
                    if cands.as_ref().is_some_and(|c| !c.contains(*key)) {
                        continue;
                    }
                    let e = st.slots[*key as usize].as_ref().expect("published key");
                    if f.matches(id, e.payload.as_ref()) {
                        out.push(*id);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Deletes the points selected; returns how many there were. Selected
    /// and deleted under the writer lock: one consistent set.
    pub fn delete_selected(&self, sel: &Selection, deadline: &Deadline) -> Result<usize> {
        if let Selection::Ids(ids) = sel {
            self.check_batch_len(ids.len())?;
        }
        let mut w = self.lock_writer()?;
        let ids = self.select(sel, deadline)?;
        let n = ids.len();
        // Many matches are logged in several records (each within what one
        // write may log), all under this one writer lock.
        for chunk in ids.chunks(1 << 20) {
            self.log_locked(&mut w, WalOp::Delete(chunk.to_vec()))?;
        }
        Ok(n)
    }

    /// Changes the payloads of the points selected, under the writer lock;
    /// `admit` is asked first with what the change adds on disk (its log
    /// record and the growth of the payloads' snapshot rows). Returns how
    /// many points changed.
    pub fn update_payloads<R, E: From<EngineError>>(
        &self,
        sel: &Selection,
        change: &PayloadChange,
        deadline: &Deadline,
        admit: impl FnOnce(WriteCost) -> std::result::Result<R, E>,
    ) -> std::result::Result<(usize, R), E> {
        if let Selection::Ids(ids) = sel {
            self.check_batch_len(ids.len())?;
        }
        let mut w = self.lock_writer()?;
        let ids = self.select(sel, deadline)?;
        let max = self.options.limits.max_payload_bytes;
        let mut changes = Vec::with_capacity(ids.len());
        let (mut log, mut grown) = (8 + 8 + 1 + 4, 0u64);
        // The record is built in memory: bounded before it grows past what
        // one write may log.
        let cap = crate::wal::MAX_WRITE as u64 / 2;
        {
            let st = self.read();
            for id in ids {
                let key = st.ids[&id];
                let old = st.slots[key as usize]
                    .as_ref()
                    .and_then(|e| e.payload.as_ref())
                    .map(Payload::to_map);
                let old_len = payload_len(old.as_ref());
                let new = change.apply(old);
                let len = payload_len(new.as_ref());
                if len as usize > max {
                    return Err(EngineError::InvalidPayload(format!(
                        "the payload of point {id} would be {len} bytes, at most {max} allowed"
                    ))
                    .into());
                }
                log += 17 + 4 + len;
                grown += len.saturating_sub(old_len);
                if log > cap {
                    return Err(EngineError::InvalidRequest(format!(
                        "the change would log more than {cap} bytes: select fewer points"
                    ))
                    .into());
                }
                changes.push((id, new));
            }
        }
        if changes.is_empty() {
            return admit(WriteCost::default()).map(|r| (0, r));
        }
        let granted = admit(WriteCost {
            new_points: 0,
            bytes: log + grown,
        })?;
        let n = changes.len();
        self.log_locked(&mut w, WalOp::SetPayload(changes))?;
        if !w.wal.is_empty() {
            self.owed_rows.fetch_add(grown, Ordering::Relaxed);
        }
        self.settle();
        Ok((n, granted))
    }

    /// The beam width searches use by default from now on (validated like
    /// the config's), kept in `collection.json`.
    pub fn set_ef_search(&self, ef: usize) -> Result<()> {
        self.change_config(
            |c| c.hnsw.ef_search = ef,
            || self.ef_search.store(ef, Ordering::Relaxed),
        )
    }

    /// The recall target searches without `ef` aim for from now on (`None`:
    /// they use `hnsw.ef_search`), kept in `collection.json`. A new target
    /// is measured for again.
    pub fn set_target_recall(&self, target: Option<f64>) -> Result<()> {
        if self.info_config().target_recall == target {
            return Ok(());
        }
        self.change_config(
            |c| c.target_recall = target,
            || self.recall.set_target(target),
        )?;
        self.schedule_tuning();
        Ok(())
    }

    /// Applies `change` to the config under the writer lock, validated and
    /// kept in `collection.json` and the catalog; `then` makes it take
    /// effect in memory once it is on disk.
    fn change_config(
        &self,
        change: impl FnOnce(&mut CollectionConfig),
        then: impl FnOnce(),
    ) -> Result<()> {
        let _w = self.lock_writer()?;
        let mut next = self.meta.read().unwrap_or_else(|e| e.into_inner()).clone();
        change(&mut next.config);
        next.config.validate()?;
        self.replace_meta(next)?;
        then();
        self.sync_entry()
    }

    fn log_locked(&self, w: &mut Writer, op: WalOp) -> Result<()> {
        let seq = w.next_seq;
        w.wal.append(seq, &op)?;
        w.next_seq += 1;
        self.log_bytes.store(w.wal.len(), Ordering::Relaxed);
        if let Err(e) = self.apply(w, op) {
            // The record is durable, memory is behind it: refuse writes until
            // a reopen replays the log.
            w.failed = true;
            tracing::error!(collection = %self.name, error = %e, "applying a logged write failed");
            return Err(e);
        }
        self.wait_backlog(self.options.max_unindexed);
        let threshold = self
            .options
            .min_snapshot_log_bytes
            .max(w.snapshot_bytes / 2);
        if w.wal.len() > threshold
            && let Err(e) = self.snapshot_locked(w)
        {
            // The write itself is durable in the log; the snapshot is retried later.
            tracing::warn!(collection = %self.name, error = %e, "snapshot failed");
        }
        self.settle();
        Ok(())
    }

    /// Applies a logged operation to memory.
    fn apply(&self, w: &mut Writer, op: WalOp) -> Result<()> {
        match op {
            WalOp::Upsert(points) => self.apply_upsert(w, points),
            WalOp::SetPayload(changes) => {
                let mut st = self.write();
                for (id, payload) in changes {
                    let Some(&key) = st.ids.get(&id) else {
                        continue;
                    };
                    let payload = payload.as_ref().map(Payload::from_map);
                    // Postings of the old values stay until compaction:
                    // candidates are a superset, checked against the payload.
                    if let Some(p) = &payload {
                        st.payload_index.add(key, p);
                    }
                    let added = held(payload.as_ref());
                    let e = st.slots[key as usize].as_mut().expect("published key");
                    let old = held(e.payload.as_ref());
                    e.payload = payload;
                    st.payload_bytes = st.payload_bytes - old + added;
                    st.stale_postings += 1;
                }
                // Old values' postings pile up with changes: rebuilt once
                // they outnumber the points.
                if !st.payload_index.is_empty() && st.stale_postings > st.ids.len().max(4096) {
                    let fields = self.info_config().payload_index;
                    st.payload_index = index_payloads(&fields, &st.slots);
                    st.stale_postings = 0;
                }
                Ok(())
            }
            WalOp::Delete(ids) => {
                let mut st = self.write();
                for id in ids {
                    if let Some(key) = st.ids.remove(&id) {
                        let e = st.slots[key as usize].take();
                        st.payload_bytes -= held(e.and_then(|e| e.payload).as_ref());
                        st.index.remove(key);
                        self.recall.changed(1);
                    }
                }
                self.live.store(st.ids.len(), Ordering::SeqCst);
                Ok(())
            }
        }
    }

    fn apply_upsert(&self, w: &mut Writer, points: Vec<Point>) -> Result<()> {
        let first = w.next_key;
        let end = u32::try_from(first as usize + points.len())
            .map_err(|_| EngineError::Index("collection key space exhausted".into()))?;
        w.next_key = end;
        self.recall.changed(points.len());
        let keys: Vec<u32> = (first..end).collect();
        if end as usize > self.read().index.capacity() {
            self.write().index.reserve(end as usize)?;
        }
        // Vectors are stored under keys no search resolves yet; linking
        // them into the graph is linking's work.
        {
            let st = self.read();
            for (k, p) in keys.iter().zip(&points) {
                st.index.store(*k, &p.vector)?;
            }
        }
        // Publication: the whole batch at once.
        let mut st = self.write();
        for (p, key) in points.into_iter().zip(keys) {
            if let Some(old) = st.ids.insert(p.id, key) {
                let e = st.slots[old as usize].take();
                st.payload_bytes -= held(e.and_then(|e| e.payload).as_ref());
                st.index.remove(old);
            }
            st.index.publish(key);
            let k = key as usize;
            if st.slots.len() <= k {
                st.slots.resize_with(k + 1, || None);
            }
            let payload = p.payload.as_ref().map(Payload::from_map);
            st.payload_bytes += held(payload.as_ref());
            if let Some(p) = &payload {
                st.payload_index.add(key, p);
            }
            st.slots[k] = Some(Entry { id: p.id, payload });
            st.unindexed.push(key);
        }
        self.live.store(st.ids.len(), Ordering::SeqCst);
        drop(st);
        self.schedule_linking();
        Ok(())
    }

    /// Writes a snapshot if the log holds anything, then empties the log.
    pub fn flush(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.wal.is_empty() || self.dropped.load(Ordering::SeqCst) || w.failed {
            return Ok(());
        }
        self.mark_dirty()?;
        let done = self.snapshot_locked(&mut w);
        self.settle();
        done
    }

    fn snapshot_locked(&self, w: &mut Writer) -> Result<()> {
        let (live, deleted) = {
            let st = self.read();
            (st.index.size(), st.index.deleted())
        };
        if deleted > COMPACT_MIN_DELETED.max(live / 4) {
            self.compact(w)?;
        }
        let seq = w.next_seq - 1;
        let bytes = {
            let st = self.read();
            let points = st.slots.iter().enumerate().filter_map(|(k, e)| {
                e.as_ref()
                    .map(|e| (k as u64, &e.id, e.payload.as_ref().map(Payload::to_map)))
            });
            snapshot::write(&self.dir, seq, &st.index, points, st.ids.len())?
        };
        let meta_len = fs::metadata(self.dir.join(META_FILE)).map_or(0, |m| m.len());
        self.fixed_disk_bytes
            .store(meta_len + bytes + current_len(&self.dir), Ordering::Relaxed);
        w.snapshot_bytes = bytes;
        // The rows owed are on disk now. (A write runs only under `writer`,
        // which the caller holds, so none is counted in between.)
        self.owed_rows.store(0, Ordering::Relaxed);
        w.wal.reset()?;
        self.log_bytes.store(w.wal.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Rebuilds the graph from the live points only, dropping the deleted
    /// nodes that removals and updates leave behind. Searches go on against
    /// the old graph meanwhile; the swap takes the write lock briefly.
    /// Writes wait (the caller holds `writer`).
    fn compact(&self, w: &mut Writer) -> Result<()> {
        let started = std::time::Instant::now();
        let fields = self.info_config().payload_index;
        let (index, order, postings) = {
            let st = self.read();
            let order: Vec<u32> = st
                .slots
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_some())
                .map(|(k, _)| k as u32)
                .collect();
            let mut index = VectorIndex::new(&self.config, &self.dir)?;
            index.reserve(order.len())?;
            let work: Vec<(u32, &[f32])> = order
                .iter()
                .enumerate()
                .map(|(new, old)| {
                    (
                        new as u32,
                        st.index.get(*old).expect("a live point has a vector"),
                    )
                })
                .collect();
            add_batch(&index, &work, self.options.insert_threads)?;
            (0..order.len() as u32).for_each(|k| index.publish(k));
            // Postings under the new keys, rid of removed ones, built here
            // so that the write lock below stays short.
            let mut postings = PayloadIndex::new(&fields);
            if !postings.is_empty() {
                for (new, old) in order.iter().enumerate() {
                    if let Some(p) = st.slots[*old as usize]
                        .as_ref()
                        .and_then(|e| e.payload.as_ref())
                    {
                        postings.add(new as u32, p);
                    }
                }
            }
            (index, order, postings)
        };
        let mut st = self.write();
        let mut slots = Vec::with_capacity(order.len());
        for (new, old) in order.iter().enumerate() {
            let e = st.slots[*old as usize]
                .take()
                .expect("no write ran during compaction");
            st.ids.insert(e.id, new as u32);
            slots.push(Some(e));
        }
        let dropped = st.index.deleted();
        st.payload_index = postings;
        st.stale_postings = 0;
        st.slots = slots;
        st.index = index;
        // The new graph holds every point linked.
        st.unindexed.clear();
        st.claimed = 0;
        st.generation += 1;
        w.next_key = order.len() as u32;
        tracing::info!(collection = %self.name, points = order.len(), dropped, ms = started.elapsed().as_millis() as u64, "graph compacted");
        Ok(())
    }

    /// Points published but not yet linked into the graph.
    pub fn unindexed(&self) -> usize {
        self.read().unindexed.len()
    }

    /// Blocks until every published point is linked into the graph.
    pub fn wait_indexed(&self) {
        self.wait_backlog(0);
    }

    /// Blocks until at most `max` points wait to be linked.
    fn wait_backlog(&self, max: usize) {
        loop {
            if self.read().unindexed.len() <= max {
                return;
            }
            // The waiting thread links too, rather than wait for a linking
            // job that the same tenant's waiting writes may keep from a
            // worker; it waits only while jobs hold every unlinked key.
            if self.options.background && self.link_some() {
                continue;
            }
            self.schedule_linking();
            let g = lock(&self.signal.m);
            let _ = self
                .signal
                .progress
                .wait_timeout(g, Duration::from_millis(20));
        }
    }

    /// Points in the graph and deleted nodes still in it.
    pub fn graph_nodes(&self) -> (usize, usize) {
        let st = self.read();
        (st.index.size(), st.index.deleted())
    }

    fn record(&self, st: &State, key: u32, with: With) -> Record {
        let e = st.slots[key as usize].as_ref().expect("published key");
        Record {
            id: e.id,
            vector: with.vector.then(|| self.vector_of(st, key)),
            payload: if with.payload {
                e.payload.as_ref().map(Payload::to_map)
            } else {
                None
            },
            json_bytes: self.answer_bytes(st, key, with),
        }
    }

    fn vector_of(&self, st: &State, key: u32) -> Vec<f32> {
        st.index.get(key).map(<[f32]>::to_vec).unwrap_or_default()
    }

    /// At most how many bytes of JSON the record of `key` takes in an
    /// answer: id, score and punctuation; 16 characters a float; and the
    /// payload's text, which was at most `max_payload_bytes` when written
    /// and prints at most 6 bytes per byte held (escapes).
    fn answer_bytes(&self, st: &State, key: u32, with: With) -> usize {
        let mut n = 64;
        if with.vector {
            n += self.config.dimension * 16;
        }
        if with.payload {
            n += st.slots[key as usize].as_ref().map_or(0, |e| {
                (held(e.payload.as_ref()) as usize * 6).min(self.options.limits.max_payload_bytes)
            });
        }
        n
    }

    /// Refuses an answer of these keys that would exceed the answer limit,
    /// before any of it is built.
    fn check_answer(&self, st: &State, keys: impl Iterator<Item = u32>, with: With) -> Result<()> {
        let max = self.options.limits.max_answer_bytes;
        let mut total = 0usize;
        for k in keys {
            total += self.answer_bytes(st, k, with);
            if total > max {
                return Err(EngineError::AnswerTooLarge { max });
            }
        }
        Ok(())
    }

    /// Points by id, in the order asked, each once; missing ids are left out.
    pub fn get(&self, ids: &[PointId], with: With) -> Result<Vec<Record>> {
        self.check_batch_len(ids.len())?;
        let st = self.read();
        let mut seen = HashSet::with_capacity(ids.len());
        let keys: Vec<u32> = ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| st.ids.get(id).copied())
            .collect();
        self.check_answer(&st, keys.iter().copied(), with)?;
        Ok(keys
            .into_iter()
            .map(|k| self.record(&st, k, with))
            .collect())
    }

    /// Up to `limit` points in id order starting at `from` (inclusive), with
    /// the id to continue from.
    pub fn scroll(
        &self,
        limit: usize,
        from: Option<PointId>,
        filter: Option<&Filter>,
        with: With,
        deadline: &Deadline,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        self.check_limit(limit)?;
        let st = self.read();
        let range = match from {
            Some(f) => st.ids.range(f..),
            None => st.ids.range(..),
        };
        let cands = filter.and_then(|f| candidates(&st, f));
        let mut keys = Vec::with_capacity(limit.min(1024));
        let mut next = None;
        for (i, (id, key)) in range.enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                deadline.check()?;
            }
            if cands.as_ref().is_some_and(|c| !c.contains(*key)) {
                continue;
            }
            let e = st.slots[*key as usize].as_ref().expect("published key");
            if filter.is_some_and(|f| !f.matches(id, e.payload.as_ref())) {
                continue;
            }
            if keys.len() == limit {
                next = Some(*id);
                break;
            }
            keys.push(*key);
        }
        self.check_answer(&st, keys.iter().copied(), with)?;
        let out = keys
            .into_iter()
            .map(|k| self.record(&st, k, with))
            .collect();
        Ok((out, next))
    }

    /// Points matching the filter (all points without one).
    pub fn count(&self, filter: Option<&Filter>, deadline: &Deadline) -> Result<usize> {
        let Some(filter) = filter else {
            return Ok(self.len());
        };
        let st = self.read();
        let mut n = 0;
        let mut visit = |i: usize, e: &Entry| -> Result<()> {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                deadline.check()?;
            }
            n += filter.matches(&e.id, e.payload.as_ref()) as usize;
            Ok(())
        };
        match candidates(&st, filter) {
            Some(c) => c
                .iter()
                .filter_map(|k| st.slots.get(k as usize).and_then(Option::as_ref))
                .enumerate()
                .try_for_each(|(i, e)| visit(i, e))?,
            None => st
                .slots
                .iter()
                .flatten()
                .enumerate()
                .try_for_each(|(i, e)| visit(i, e))?,
        }
        Ok(n)
    }

    fn check_limit(&self, limit: usize) -> Result<()> {
        let max = self.options.limits.max_limit;
        if limit == 0 || limit > max {
            return Err(EngineError::InvalidRequest(format!(
                "limit must be between 1 and {max}"
            )));
        }
        Ok(())
    }

    /// Validates a search without running it.
    pub fn check_search(&self, req: &SearchRequest) -> Result<()> {
        self.check_vector(&req.vector)?;
        self.check_limit(req.limit)?;
        if let Some(ef) = req.ef
            && !(1..=MAX_EF).contains(&ef)
        {
            return Err(EngineError::InvalidRequest(format!(
                "ef must be between 1 and {MAX_EF}"
            )));
        }
        if req.score_threshold.is_some_and(|t| !t.is_finite()) {
            return Err(EngineError::InvalidRequest(
                "score_threshold must be a finite number".into(),
            ));
        }
        // Vectors alone would exceed the answer limit: refused before the
        // search runs.
        let max = self.options.limits.max_answer_bytes;
        if req.with_vector && req.limit.saturating_mul(64 + self.config.dimension * 16) > max {
            return Err(EngineError::AnswerTooLarge { max });
        }
        Ok(())
    }

    /// Whether `req` is a short graph walk (well under a millisecond on
    /// today's hardware): no filter, a beam and a limit of at most
    /// [`QUICK_EF`], and a backlog of unlinked points small enough that its
    /// exact scan is cheap. A caller on an async runtime may run such a
    /// search in place rather than hand it to another thread.
    pub fn search_is_quick(&self, req: &SearchRequest) -> bool {
        self.state
            .try_read()
            .is_ok_and(|st| self.quick_in(&st, req))
    }

    fn quick_in(&self, st: &State, req: &SearchRequest) -> bool {
        let ef = req.ef.unwrap_or_else(|| self.default_ef(req));
        let beam = ef.max(req.limit);
        let cost = (beam * 2 * self.config.hnsw.m + st.unindexed.len()) * self.config.dimension;
        self.light_shape(req)
            // Payloads are converted for the answer: only a few in place.
            && (!req.with_payload || req.limit <= 16)
            && st.unindexed.len() <= QUICK_BACKLOG
            && cost <= QUICK_COST
    }

    /// Whether `req` is a short walk by its shape (no filter, no vectors
    /// back, a beam and a limit of at most [`QUICK_EF`]) and by its cost
    /// (the graph walk and the exact scan of the unlinked backlog, within
    /// [`LIGHT_COST`] comparisons' worth): work a caller waits on, as
    /// opposed to a scan. Without the lock this instant, the backlog is
    /// taken as empty.
    pub fn search_is_light(&self, req: &SearchRequest) -> bool {
        let ef = req.ef.unwrap_or_else(|| self.default_ef(req));
        let beam = ef.max(req.limit);
        let backlog = self.state.try_read().map_or(0, |st| st.unindexed.len());
        let cost = (beam * 2 * self.config.hnsw.m + backlog) * self.config.dimension;
        self.light_shape(req) && cost <= LIGHT_COST
    }

    /// No filter, no vectors back, a beam and a limit of at most
    /// [`QUICK_EF`], and vectors in memory (a quantized collection reads
    /// full vectors from disk, which an async runtime must not wait on).
    fn light_shape(&self, req: &SearchRequest) -> bool {
        let ef = req.ef.unwrap_or_else(|| self.default_ef(req));
        self.config.quantization.is_none()
            && !req.exact
            && req.filter.as_ref().is_none_or(Filter::is_empty)
            && !req.with_vector
            && ef.max(req.limit) <= QUICK_EF
    }

    /// Runs `req` at once if it is quick (see [`search_is_quick`]) and the
    /// collection's lock is free this instant; `None` otherwise. It never
    /// waits for a lock, so an async runtime may call it in place.
    ///
    /// [`search_is_quick`]: Self::search_is_quick
    pub fn try_search_quick(&self, req: &SearchRequest) -> Option<Result<Vec<ScoredPoint>>> {
        let st = self.state.try_read().ok()?;
        if !self.quick_in(&st, req) {
            return None;
        }
        Some(
            self.check_search(req)
                .and_then(|()| self.search_in(&st, req)),
        )
    }

    /// Top-`limit` points for the query, best first.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.check_search(req)?;
        let st = self.read();
        self.search_in(&st, req)
    }

    fn search_in(&self, st: &State, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        let mut budget = self.options.limits.max_answer_bytes;
        self.search_within(st, req, &mut budget)
    }

    /// Searches, refusing if the answer would take more than `budget`
    /// bytes, and takes what it uses from `budget`.
    fn search_within(
        &self,
        st: &State,
        req: &SearchRequest,
        budget: &mut usize,
    ) -> Result<Vec<ScoredPoint>> {
        let hits = self.search_keys(st, req)?;
        req.deadline.check()?;
        let metric = self.config.metric;
        let with = With {
            payload: req.with_payload,
            vector: req.with_vector,
        };
        let hits: Vec<(u32, f32)> = hits
            .into_iter()
            .filter(|(_, s)| match req.score_threshold {
                None => true,
                Some(t) if metric.higher_is_better() => *s >= t,
                Some(t) => *s <= t,
            })
            .collect();
        let bytes: usize = hits
            .iter()
            .map(|(k, _)| self.answer_bytes(st, *k, with))
            .sum();
        if bytes > *budget {
            return Err(EngineError::AnswerTooLarge {
                max: self.options.limits.max_answer_bytes,
            });
        }
        *budget -= bytes;
        Ok(hits
            .into_iter()
            .map(|(key, score)| {
                let r = self.record(st, key, with);
                ScoredPoint {
                    id: r.id,
                    score,
                    payload: r.payload,
                    vector: r.vector,
                    json_bytes: r.json_bytes,
                }
            })
            .collect())
    }

    /// Several searches against one consistent view of the collection,
    /// their answers together within the answer limit.
    pub fn search_batch(&self, reqs: &[SearchRequest]) -> Result<Vec<Vec<ScoredPoint>>> {
        reqs.iter().try_for_each(|r| self.check_search(r))?;
        let st = self.read();
        let mut budget = self.options.limits.max_answer_bytes;
        reqs.iter()
            .map(|r| self.search_within(&st, r, &mut budget))
            .collect()
    }

    fn search_keys(&self, st: &State, req: &SearchRequest) -> Result<Vec<(u32, f32)>> {
        let live = st.ids.len();
        let k = req.limit;
        if live == 0 {
            return Ok(Vec::new());
        }
        let ef = req.ef.unwrap_or_else(|| self.default_ef(req)).max(k);
        let filter = req.filter.as_ref().filter(|f| !f.is_empty());
        // Candidates from the payload indexes (and `has_id`): a superset of
        // the matches, known exactly in number.
        let cands = filter.and_then(|f| candidates(st, f));
        let cands = cands.as_ref();
        let everything = || -> Box<dyn Iterator<Item = u32> + '_> {
            match cands {
                Some(c) => Box::new(c.iter()),
                None => Box::new(0..st.slots.len() as u32),
            }
        };
        let deadline = &req.deadline;
        if live <= EXACT_BELOW || req.exact {
            return self.exact(st, everything(), &req.vector, k, filter, deadline);
        }
        // A selective filter makes graph traversal wander; scanning the
        // matches exactly is then both cheaper and complete.
        if let Some(f) = filter {
            let matches = match cands {
                Some(c) if st.payload_index.covers(f) => c.len(),
                // Conditions the index cannot answer thin the candidates out.
                Some(c) => estimate_among(c, f, st),
                None => self.estimate_matches(st, f),
            };
            if matches <= (ef * 4).max(live / 100) {
                return self.exact(st, everything(), &req.vector, k, filter, deadline);
            }
        }
        // Points not linked yet are scanned exactly and merged in.
        let backlog = st
            .unindexed
            .iter()
            .copied()
            .filter(|k| cands.is_none_or(|c| c.contains(*k)));
        let pending = self.exact(st, backlog, &req.vector, k, filter, deadline)?;
        // The backlog may still hold keys deleted before they were linked.
        let pending_live = st
            .unindexed
            .iter()
            .filter(|k| st.slots.get(**k as usize).is_some_and(Option::is_some))
            .count();
        let in_graph = live.saturating_sub(pending_live);
        let graph = match filter {
            _ if in_graph == 0 => Vec::new(),
            None => {
                self.recall.record(&req.vector);
                st.index.search(&req.vector, k, ef, None)
            }
            Some(f) => {
                // A walk through sparse matches can visit much of the
                // graph: once the deadline passes, every node fails the
                // predicate, the walk ends, and the check below refuses.
                let calls = std::cell::Cell::new(0usize);
                let pred = |key: u32| {
                    let n = calls.get() + 1;
                    calls.set(n);
                    if n.is_multiple_of(1024) && deadline.expired() {
                        return false;
                    }
                    cands.is_none_or(|c| c.contains(key))
                        && st
                            .slots
                            .get(key as usize)
                            .and_then(Option::as_ref)
                            .is_some_and(|e| f.matches(&e.id, e.payload.as_ref()))
                };
                st.index.search(&req.vector, k, ef, Some(&pred))
            }
        };
        // A graph walk that comes back short (a graph cut apart by
        // deletions, or few matches) cannot tell whether more exist.
        let short = match filter {
            None => graph.len() < k.min(in_graph),
            Some(_) => graph.len() + pending.len() < k,
        };
        deadline.check()?;
        if short {
            return self.exact(st, everything(), &req.vector, k, filter, deadline);
        }
        self.schedule_tuning();
        Ok(self.merge(graph, pending, k))
    }

    /// Best `k` of two hit lists (a key may be in both while it is linked).
    fn merge(&self, a: Vec<(u32, f32)>, b: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
        if b.is_empty() {
            return a;
        }
        let mut all = a;
        all.extend(b);
        let metric = self.config.metric;
        all.sort_by(|x, y| better(metric, x.1, y.1).then(x.0.cmp(&y.0)));
        let mut seen = HashSet::with_capacity(all.len());
        all.retain(|h| seen.insert(h.0));
        all.truncate(k);
        all
    }

    /// Estimated number of points matching `filter`, from a fixed sample.
    fn estimate_matches(&self, st: &State, filter: &Filter) -> usize {
        let n = st.slots.len();
        let live = st.ids.len();
        if n <= SAMPLE * 2 {
            return st
                .slots
                .iter()
                .flatten()
                .filter(|e| filter.matches(&e.id, e.payload.as_ref()))
                .count();
        }
        // Deterministic spread over the key space (Weyl sequence).
        let (mut seen, mut hit) = (0usize, 0usize);
        let step = 0x9E37_79B9_7F4A_7C15u64;
        let mut x = 0u64;
        for _ in 0..SAMPLE * 2 {
            x = x.wrapping_add(step);
            if let Some(e) = &st.slots[(x % n as u64) as usize] {
                seen += 1;
                hit += filter.matches(&e.id, e.payload.as_ref()) as usize;
                if seen == SAMPLE {
                    break;
                }
            }
        }
        if seen == 0 {
            return live;
        }
        hit * live / seen
    }

    /// Exact top-k over the points among `keys` that match `filter`.
    fn exact(
        &self,
        st: &State,
        keys: impl Iterator<Item = u32>,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        deadline: &Deadline,
    ) -> Result<Vec<(u32, f32)>> {
        let metric = self.config.metric;
        let prepared = st.index.prepare_query(query);
        // Max-heap on "worse first", so the root is the one to evict.
        #[derive(PartialEq)]
        struct Hit(f32, u32, bool);
        impl Eq for Hit {}
        impl PartialOrd for Hit {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Hit {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                let by_score = if self.2 {
                    o.0.total_cmp(&self.0)
                } else {
                    self.0.total_cmp(&o.0)
                };
                by_score.then(self.1.cmp(&o.1))
            }
        }
        let hib = metric.higher_is_better();
        let mut heap = BinaryHeap::with_capacity(k + 1);
        for (i, key) in keys.enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                deadline.check()?;
            }
            let Some(Some(e)) = st.slots.get(key as usize) else {
                continue;
            };
            if filter.is_some_and(|f| !f.matches(&e.id, e.payload.as_ref())) {
                continue;
            }
            if !st.index.contains(key) {
                continue;
            }
            heap.push(Hit(st.index.score_key(&prepared, key), key, hib));
            if heap.len() > k {
                heap.pop();
            }
        }
        let mut out: Vec<(u32, f32)> = heap.into_iter().map(|h| (h.1, h.0)).collect();
        out.sort_by(|a, b| better(metric, a.1, b.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

/// Payload indexes on `fields`, over the live points.
fn index_payloads(fields: &[String], slots: &[Option<Entry>]) -> PayloadIndex {
    let mut idx = PayloadIndex::new(fields);
    if !idx.is_empty() {
        for (k, e) in slots.iter().enumerate() {
            if let Some(p) = e.as_ref().and_then(|e| e.payload.as_ref()) {
                idx.add(k as u32, p);
            }
        }
    }
    idx
}

/// Estimated number of `cands` that match `filter`, from an even sample.
fn estimate_among(cands: &KeyBits, filter: &Filter, st: &State) -> usize {
    let n = cands.len();
    let step = n.div_ceil(SAMPLE).max(1);
    let (mut seen, mut hit) = (0usize, 0usize);
    for key in cands.iter().step_by(step) {
        if let Some(e) = st.slots.get(key as usize).and_then(Option::as_ref) {
            seen += 1;
            hit += filter.matches(&e.id, e.payload.as_ref()) as usize;
        }
    }
    (hit * n).checked_div(seen).unwrap_or(0)
}

/// Keys that may match `filter`, from the payload indexes and `has_id`;
/// `None` when neither narrows it.
fn candidates(st: &State, filter: &Filter) -> Option<KeyBits> {
    st.payload_index
        .candidates(filter, st.slots.len(), &|id| st.ids.get(id).copied())
}

fn current_len(dir: &Path) -> u64 {
    fs::metadata(dir.join("CURRENT")).map_or(0, |m| m.len())
}

/// Inserts `(key, vector)` pairs into the graph, on several threads when
/// there are enough of them.
fn add_batch(index: &VectorIndex, work: &[(u32, &[f32])], threads: usize) -> Result<()> {
    let threads = threads.max(1);
    if work.len() < PARALLEL_ADD_MIN || threads == 1 {
        return work.iter().try_for_each(|(k, v)| index.add(*k, v));
    }
    let chunk = work.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().try_for_each(|(k, v)| index.add(*k, v))))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("graph insertion panicked"))
    })
}
