//! The HNSW graph: vectors and links in fixed-size chunks, searched without
//! locks and extended by several threads at once.
//!
//! Concurrency model. A node's vector, norm, level and upper link arrays are
//! written once, by the thread inserting it, before any link to it is
//! stored; links are stored with `Release` and loaded with `Acquire`, so a
//! reader that reaches a node through a link sees it whole. Link lists are
//! changed under a per-node spin lock; readers never lock and may see a
//! list mid-rewrite, which holds only valid node ids. Growing the chunk
//! table needs `&mut self` (the caller's write lock).
//!
//! Removal marks a node deleted: it stays in the graph as a waypoint and
//! leaves results. Keys are never reused; the collection rebuilds the graph
//! when deleted nodes pile up.
//!
//! A quantized graph (`quantization` in the config) holds 8-bit codes in
//! its rows instead of the floats, and keeps the floats in a file (see
//! `index/quant.rs`); its snapshot file is the same as an unquantized one.

use std::cell::RefCell;
use std::cmp::{Ordering as Cmp, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::{CollectionConfig, Metric};
use crate::error::{EngineError, Result};
use crate::simd::{Kernel, kernels, prefetch};

mod quant;

use quant::{CodeKernel, FullStore};

/// Nodes per chunk (a power of two).
const CHUNK_SHIFT: u32 = 10;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const MAX_LEVEL: usize = 16;

// A node's state is a set of flags. A key goes EMPTY -> STORED (vector
// written) -> VISIBLE (published: searches may return it), and separately
// CLAIMED -> LINKED (being, then fully, linked into the graph); DELETED
// clears VISIBLE for good. Linking may come long after publication: the
// collection scans visible-but-unlinked keys exactly meanwhile.
const EMPTY: u8 = 0;
const STORED: u8 = 1;
const VISIBLE: u8 = 2;
const LINKED: u8 = 4;
const DELETED: u8 = 8;
const CLAIMED: u8 = 16;

const FILE_MAGIC: &[u8; 8] = b"VZHNSW02";

/// Storage for CHUNK nodes.
struct Chunk {
    /// Per node a row of `m0 + 1 + dim + 1` words: the layer-0 link list
    /// `[count, neighbours; m0]`, then the vector's floats, then 1/norm.
    /// A node's links sit next to its vector, so expanding a node whose
    /// distance was just computed mostly reads lines already fetched (and
    /// cosine reads its norm with the vector's last line). Quantized: the
    /// links, then `dim` code bytes (padded to a word), the scale and one
    /// more float (see [`VectorIndex::code_aux`]).
    rows: Box<[AtomicU32]>,
    /// Per node with level > 0: `[count, neighbours; m]` for each upper layer.
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
    /// Links pointing at each node on layer 0 (kept above zero by pruning).
    indeg: Box<[AtomicU32]>,
    levels: Box<[AtomicU8]>,
    states: Box<[AtomicU8]>,
    locks: Box<[AtomicBool]>,
}

impl Chunk {
    fn new(row_words: usize) -> Chunk {
        fn boxed<T>(n: usize, f: impl Fn() -> T) -> Box<[T]> {
            (0..n).map(|_| f()).collect()
        }
        Chunk {
            rows: boxed(CHUNK * row_words, || AtomicU32::new(0)),
            upper: boxed(CHUNK, OnceLock::new),
            indeg: boxed(CHUNK, || AtomicU32::new(0)),
            levels: boxed(CHUNK, || AtomicU8::new(0)),
            states: boxed(CHUNK, || AtomicU8::new(EMPTY)),
            locks: boxed(CHUNK, || AtomicBool::new(false)),
        }
    }

    fn bytes(row_words: usize) -> usize {
        CHUNK * (row_words * 4 + 4 + std::mem::size_of::<OnceLock<Box<[AtomicU32]>>>() + 3)
    }
}

/// Words in a node's row: the layer-0 list, the vector, its 1/norm; or
/// quantized, the list, the codes, their scale and one more float.
fn row_words(dim: usize, m0: usize, quantized: bool) -> usize {
    if quantized {
        m0 + 1 + dim.div_ceil(4) + 2
    } else {
        m0 + 1 + dim + 1
    }
}

/// A quantized graph's parts.
struct Quant {
    full: FullStore,
    dot: CodeKernel,
    rescore: bool,
    oversampling: f64,
}

/// A query as the graph compares it: its floats (normalised for cosine)
/// and, for a quantized graph, their codes.
struct Query {
    f: Vec<f32>,
    c: Vec<i8>,
    s: f32,
    /// Euclidean: the squared length; dot while building: 1/length.
    aux: f32,
}

/// A candidate: distance (smaller is closer) and node; ordered by
/// distance, then node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub(crate) d: f32,
    pub(crate) id: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Cmp::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Cmp> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Cmp {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// Per-thread visited marks: a generation number per node, so that a search
/// starts with a fresh set without clearing it.
struct Visited {
    tags: Vec<u16>,
    epoch: u16,
    /// Scratch: the unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited { tags: Vec::new(), epoch: 0, fresh: Vec::new() })
    };
}

fn with_visited<R>(cap: usize, f: impl FnOnce(&mut Visited) -> R) -> R {
    VISITED.with(|v| {
        let mut v = v.borrow_mut();
        if v.tags.len() < cap {
            v.tags.resize(cap, 0);
        }
        v.epoch = v.epoch.wrapping_add(1);
        if v.epoch == 0 {
            v.tags.fill(0);
            v.epoch = 1;
        }
        f(&mut v)
    })
}

impl Visited {
    /// Marks `id`; true if it was not marked yet in this search.
    #[inline(always)]
    fn first(&mut self, id: u32) -> bool {
        let t = &mut self.tags[id as usize];
        if *t == self.epoch {
            false
        } else {
            *t = self.epoch;
            true
        }
    }
}

pub struct VectorIndex {
    dim: usize,
    metric: Metric,
    /// Bytes of a node's vector (or codes) in its row: what is prefetched.
    vec_bytes: usize,
    quant: Option<Quant>,
    m: usize,
    m0: usize,
    /// Words per node row in a chunk (see [`Chunk`]).
    row_words: usize,
    ef_construction: usize,
    level_mult: f64,
    chunks: Vec<Chunk>,
    /// `(max_level << 32) | entry`, or `u64::MAX` when empty.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    live: AtomicUsize,
    deleted: AtomicUsize,
    /// One past the highest key ever added.
    high: AtomicUsize,
    upper_bytes: AtomicUsize,
    seed: AtomicU64,
    dot: Kernel,
    l2: Kernel,
}

// Safety: a node's vector words are written (through raw pointers) only by
// the one thread inserting it, before the node is published (see the module
// docs), and read only after.
unsafe impl Sync for VectorIndex {}
unsafe impl Send for VectorIndex {}

fn index_err(msg: impl Into<String>) -> EngineError {
    EngineError::Index(msg.into())
}

struct SpinGuard<'a>(&'a AtomicBool);

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl VectorIndex {
    /// An empty graph for `config`; a quantized one keeps its full vectors
    /// in an unnamed file in `dir`.
    pub fn new(config: &CollectionConfig, dir: &std::path::Path) -> Result<VectorIndex> {
        let (dot, l2) = kernels();
        let m = config.hnsw.m;
        let quant = match &config.quantization {
            None => None,
            Some(q) => Some(Quant {
                full: FullStore::create(dir, config.dimension)?,
                dot: quant::kernel(),
                rescore: q.rescore,
                oversampling: q.oversampling,
            }),
        };
        Ok(VectorIndex {
            dim: config.dimension,
            metric: config.metric,
            vec_bytes: config.dimension * if quant.is_some() { 1 } else { 4 },
            row_words: row_words(config.dimension, m * 2, quant.is_some()),
            quant,
            m,
            m0: m * 2,
            ef_construction: config.hnsw.ef_construction,
            level_mult: 1.0 / (m as f64).ln(),
            chunks: Vec::new(),
            entry: AtomicU64::new(u64::MAX),
            entry_lock: Mutex::new(()),
            live: AtomicUsize::new(0),
            deleted: AtomicUsize::new(0),
            high: AtomicUsize::new(0),
            upper_bytes: AtomicUsize::new(0),
            seed: AtomicU64::new(0x2545_F491_4F6C_DD1D),
            dot,
            l2,
        })
    }

    /// Room for keys below `capacity`. Needs exclusive access.
    pub fn reserve(&mut self, capacity: usize) -> Result<()> {
        while self.chunks.len() * CHUNK < capacity {
            self.chunks.push(Chunk::new(self.row_words));
        }
        if let Some(q) = &mut self.quant {
            q.full.reserve(self.chunks.len() * CHUNK)?;
        }
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Vectors present (added and not removed).
    pub fn size(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Visible keys not (fully) linked into the graph, e.g. after a restart.
    pub fn unlinked(&self) -> Vec<u32> {
        (0..self.high() as u32)
            .filter(|k| {
                let s = self.state(*k);
                s & VISIBLE != 0 && s & LINKED == 0
            })
            .collect()
    }

    /// One past the highest key ever added.
    pub fn high(&self) -> usize {
        self.high.load(Ordering::Relaxed)
    }

    /// Removed vectors still in the graph as waypoints.
    pub fn deleted(&self) -> usize {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Of [`memory_usage`](Self::memory_usage), the bytes that hold vectors
    /// (floats and norms, or codes and scales).
    pub fn vector_bytes(&self) -> usize {
        self.capacity() * (self.row_words - self.m0 - 1) * 4
    }

    pub fn memory_usage(&self) -> usize {
        self.chunks.len() * Chunk::bytes(self.row_words) + self.upper_bytes.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn chunk(&self, id: u32) -> (&Chunk, usize) {
        (
            &self.chunks[(id >> CHUNK_SHIFT) as usize],
            id as usize & (CHUNK - 1),
        )
    }

    /// The start of `id`'s row.
    #[inline(always)]
    fn row(&self, id: u32) -> &AtomicU32 {
        let (c, i) = self.chunk(id);
        debug_assert!((i + 1) * self.row_words <= c.rows.len());
        // Safety: `i < CHUNK` and each chunk holds CHUNK rows.
        unsafe { c.rows.get_unchecked(i * self.row_words) }
    }

    /// `id`'s vector (then its 1/norm), as floats.
    #[inline(always)]
    fn vec_ptr(&self, id: u32) -> *const f32 {
        // Safety: the row holds m0 + 1 link words before the vector; an
        // `AtomicU32` has the size and alignment of an `f32`.
        unsafe { (self.row(id).as_ptr() as *const f32).add(self.m0 + 1) }
    }

    /// `id`'s floats (an unquantized graph only).
    #[inline(always)]
    fn vector(&self, id: u32) -> &[f32] {
        debug_assert!(self.quant.is_none());
        // Safety: written before publication, immutable afterwards.
        unsafe { std::slice::from_raw_parts(self.vec_ptr(id), self.dim) }
    }

    #[inline(always)]
    fn inv_norm(&self, id: u32) -> f32 {
        debug_assert!(self.quant.is_none());
        // Safety: the row holds dim + 1 floats.
        unsafe { *self.vec_ptr(id).add(self.dim) }
    }

    /// `id`'s codes (a quantized graph only).
    #[inline(always)]
    fn codes(&self, id: u32) -> &[i8] {
        // Safety: the row holds `dim` code bytes after the link list,
        // written before publication and immutable afterwards.
        unsafe { std::slice::from_raw_parts(self.vec_ptr(id) as *const i8, self.dim) }
    }

    /// The words after `id`'s codes: their scale, then [`code_aux`].
    #[inline(always)]
    fn code_tail(&self, id: u32) -> *const f32 {
        // Safety: the row holds dim.div_ceil(4) code words, then 2 floats.
        unsafe { self.vec_ptr(id).add(self.dim.div_ceil(4)) }
    }

    #[inline(always)]
    fn code_scale(&self, id: u32) -> f32 {
        // Safety: see `code_tail`.
        unsafe { *self.code_tail(id) }
    }

    /// Euclidean: the vector's squared length; cosine and dot: 1/length.
    #[inline(always)]
    fn code_aux(&self, id: u32) -> f32 {
        // Safety: see `code_tail`.
        unsafe { *self.code_tail(id).add(1) }
    }

    /// `id`'s full vector and 1/length (as cosine and dot use it),
    /// wherever they are kept.
    #[inline(always)]
    fn full(&self, id: u32) -> (&[f32], f32) {
        let Some(q) = &self.quant else {
            return (self.vector(id), self.inv_norm(id));
        };
        let inv = match self.metric {
            Metric::Cosine | Metric::Dot => self.code_aux(id),
            _ => 0.0,
        };
        (q.full.vector(id), inv)
    }

    #[inline(always)]
    fn state(&self, id: u32) -> u8 {
        let (c, i) = self.chunk(id);
        // Safety: `i < CHUNK`, the length of `states`.
        unsafe { c.states.get_unchecked(i).load(Ordering::Acquire) }
    }

    fn level(&self, id: u32) -> usize {
        let (c, i) = self.chunk(id);
        c.levels[i].load(Ordering::Acquire) as usize
    }

    /// The link list of `id` on `layer`: `[count, neighbours...]`.
    #[inline(always)]
    fn links(&self, id: u32, layer: usize) -> &[AtomicU32] {
        let (c, i) = self.chunk(id);
        if layer == 0 {
            let start = i * self.row_words;
            &c.rows[start..start + self.m0 + 1]
        } else {
            let up = c.upper[i]
                .get()
                .expect("upper links exist up to the node's level");
            &up[(layer - 1) * (self.m + 1)..layer * (self.m + 1)]
        }
    }

    fn indeg(&self, id: u32) -> &AtomicU32 {
        let (c, i) = self.chunk(id);
        &c.indeg[i]
    }

    /// Counts a new layer-0 link to `id` (upper layers are not tracked).
    fn linked(&self, id: u32, layer: usize) {
        if layer == 0 {
            self.indeg(id).fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self, id: u32) -> SpinGuard<'_> {
        let (c, i) = self.chunk(id);
        let l = &c.locks[i];
        let mut spins = 0u32;
        while l
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        SpinGuard(l)
    }

    /// Distance between two stored nodes (smaller is closer), as the graph
    /// is built. Inner product is not a metric, and a graph pruned by it
    /// navigates poorly; `dot` collections are linked by angle instead
    /// (whose neighbourhoods track inner-product ones) and only searched by
    /// inner product.
    fn node_dist(&self, a: u32, b: u32) -> f32 {
        if let Some(q) = &self.quant {
            let (sa, sb) = (self.code_scale(a), self.code_scale(b));
            if self.metric == Metric::Manhattan {
                return quant::l1(self.codes(a), sa, self.codes(b), sb);
            }
            let dot = (q.dot)(self.codes(a), self.codes(b)) as f32 * sa * sb;
            let (xa, xb) = (self.code_aux(a), self.code_aux(b));
            return match self.metric {
                Metric::Euclidean => xa + xb - 2.0 * dot,
                Metric::Dot => 1.0 - dot * xa * xb,
                _ => 1.0 - dot,
            };
        }
        let (va, vb) = (self.vector(a), self.vector(b));
        match self.metric {
            Metric::Euclidean => (self.l2)(va, vb),
            Metric::Manhattan => crate::distance::l1(va, vb),
            Metric::Dot => 1.0 - (self.dot)(va, vb) * self.inv_norm(a) * self.inv_norm(b),
            Metric::Cosine => 1.0 - (self.dot)(va, vb) * self.inv_norm(a) * self.inv_norm(b),
        }
    }

    /// Distance from a prepared query (normalised for cosine) to a node;
    /// `BUILD` selects the construction distance (see [`node_dist`]).
    #[inline(always)]
    fn query_dist<const BUILD: bool>(&self, q: &Query, id: u32) -> f32 {
        match &self.quant {
            None => self.full_dist::<BUILD>(&q.f, self.vector(id), self.inv_norm(id)),
            Some(qt) => {
                let s = self.code_scale(id);
                if self.metric == Metric::Manhattan {
                    return quant::l1(&q.c, q.s, self.codes(id), s);
                }
                let dot = (qt.dot)(&q.c, self.codes(id)) as f32 * q.s * s;
                match self.metric {
                    Metric::Euclidean => q.aux + self.code_aux(id) - 2.0 * dot,
                    Metric::Dot if BUILD => 1.0 - dot * q.aux * self.code_aux(id),
                    Metric::Dot => -dot,
                    _ => 1.0 - dot,
                }
            }
        }
    }

    /// Distance from prepared query floats to a full vector `v` with
    /// 1/length `inv`; `BUILD` selects the construction distance.
    #[inline(always)]
    fn full_dist<const BUILD: bool>(&self, q: &[f32], v: &[f32], inv: f32) -> f32 {
        match self.metric {
            Metric::Euclidean => (self.l2)(q, v),
            Metric::Manhattan => crate::distance::l1(q, v),
            Metric::Dot if BUILD => 1.0 - (self.dot)(q, v) * inv,
            Metric::Dot => -(self.dot)(q, v),
            Metric::Cosine => 1.0 - (self.dot)(q, v) * inv,
        }
    }

    /// Normalised for cosine.
    fn prepare(&self, q: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => normalised(self.dot, q),
            _ => q.to_vec(),
        }
    }

    /// A search query as the graph compares it.
    fn query(&self, q: &[f32]) -> Query {
        let f = self.prepare(q);
        let mut c = Vec::new();
        let (mut s, mut aux) = (0.0, 0.0);
        if self.quant.is_some() {
            c = vec![0; self.dim];
            s = quant::encode(&f, &mut c);
            aux = (self.dot)(&f, &f);
        }
        Query { f, c, s, aux }
    }

    /// A stored node as a construction query: normalised for cosine and
    /// for dot (whose graph is built by angle); quantized, its own codes.
    fn build_query(&self, key: u32) -> Query {
        if self.quant.is_some() {
            return Query {
                f: Vec::new(),
                c: self.codes(key).to_vec(),
                s: self.code_scale(key),
                aux: self.code_aux(key),
            };
        }
        let v = self.vector(key);
        let f = match self.metric {
            Metric::Dot | Metric::Cosine => normalised(self.dot, v),
            _ => v.to_vec(),
        };
        Query {
            f,
            c: Vec::new(),
            s: 0.0,
            aux: 0.0,
        }
    }

    /// Prepares a query for [`score_key`].
    pub fn prepare_query(&self, q: &[f32]) -> Vec<f32> {
        self.prepare(q)
    }

    /// The score of a stored key for a prepared query, computed exactly as
    /// graph search computes it (with full vectors, as a quantized graph
    /// rescores), so both paths agree to the last bit.
    pub fn score_key(&self, prepared: &[f32], key: u32) -> f32 {
        self.score(self.distance_key(prepared, key))
    }

    /// The internal distance (smaller is closer) of a stored key from a
    /// prepared query, as graph search orders candidates.
    pub fn distance_key(&self, prepared: &[f32], key: u32) -> f32 {
        let (v, inv) = self.full(key);
        self.full_dist::<false>(prepared, v, inv)
    }

    /// Whether a quantized graph rescores, and how many candidates for `k`
    /// hits: `None` when scores come from the graph as found.
    /// (At most [`MAX_EF`] beyond `k`: oversampling never widens a walk
    /// past what a search may ask for.)
    fn rescored(&self, k: usize) -> Option<usize> {
        let q = self.quant.as_ref().filter(|q| q.rescore)?;
        let want = (k as f64 * q.oversampling).ceil() as usize;
        Some(want.min(crate::config::MAX_EF).max(k))
    }

    /// The score the API reports for an internal distance.
    fn score(&self, d: f32) -> f32 {
        match self.metric {
            Metric::Euclidean => d.max(0.0).sqrt(),
            Metric::Manhattan => d,
            Metric::Dot => -d,
            Metric::Cosine => 1.0 - d,
        }
    }

    fn random_level(&self) -> usize {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    /// Whether `key` holds a published vector (deleted or not).
    pub fn contains(&self, key: u32) -> bool {
        (key as usize) < self.capacity() && self.state(key) & VISIBLE != 0
    }

    /// The stored vector of `key`, if present (a quantized graph's from
    /// its file's mapping).
    pub fn get(&self, key: u32) -> Option<&[f32]> {
        self.contains(key).then(|| self.full(key).0)
    }

    /// Stores and links `vector` under `key` (see [`store`] and [`link`]).
    pub fn add(&self, key: u32, vector: &[f32]) -> Result<()> {
        self.store(key, vector)?;
        self.link(key);
        Ok(())
    }

    /// Writes `vector` under `key` (below the capacity, never used before)
    /// without linking it into the graph. Safe from several threads at once.
    pub fn store(&self, key: u32, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim {
            return Err(index_err("vector length does not match the index"));
        }
        if key as usize >= self.capacity() {
            return Err(index_err("key beyond reserved capacity"));
        }
        let level = self.random_level();
        {
            let (c, i) = self.chunk(key);
            if c.states[i].load(Ordering::Acquire) != EMPTY {
                return Err(index_err("key already used"));
            }
            if let Some(q) = &self.quant {
                q.full.write(key, vector)?;
            }
            // Safety: the slot is EMPTY, so no reader can reach it, and the
            // caller hands each key to one thread only.
            unsafe { self.write_row(c, i, vector) };
            c.levels[i].store(level as u8, Ordering::Relaxed);
            if level > 0 {
                let up: Box<[AtomicU32]> = (0..level * (self.m + 1))
                    .map(|_| AtomicU32::new(0))
                    .collect();
                self.upper_bytes
                    .fetch_add(up.len() * 4 + 16, Ordering::Relaxed);
                let _ = c.upper[i].set(up);
            }
            c.states[i].store(STORED, Ordering::Release);
        }
        self.high.fetch_max(key as usize + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `vector` into slot `i` of chunk `c`: the floats and 1/length,
    /// or quantized, the codes (of the normalised vector, for cosine), their
    /// scale and [`code_aux`].
    ///
    /// # Safety
    /// No reader may reach the slot yet, and no other writer touch it.
    unsafe fn write_row(&self, c: &Chunk, i: usize, vector: &[f32]) {
        let n = (self.dot)(vector, vector).sqrt();
        let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
        let start = c.rows[i * self.row_words..].as_ptr() as *mut f32;
        // Safety (all writes): the row holds m0 + 1 link words, then the
        // vector's words (see `row_words`).
        unsafe {
            let dst = start.add(self.m0 + 1);
            if self.quant.is_none() {
                std::ptr::copy_nonoverlapping(vector.as_ptr(), dst, self.dim);
                *dst.add(self.dim) = inv;
                return;
            }
            let codes = std::slice::from_raw_parts_mut(dst as *mut i8, self.dim);
            let scale = match self.metric {
                Metric::Cosine => quant::encode(&normalised(self.dot, vector), codes),
                _ => quant::encode(vector, codes),
            };
            let tail = dst.add(self.dim.div_ceil(4));
            *tail = scale;
            *tail.add(1) = match self.metric {
                Metric::Euclidean => n * n,
                Metric::Manhattan => 0.0,
                Metric::Cosine | Metric::Dot => inv,
            };
        }
    }

    /// Links a stored key into the graph. Returns false if another thread
    /// claimed it first (or it is not stored); at most one thread links a key.
    pub fn link(&self, key: u32) -> bool {
        let (c, i) = self.chunk(key);
        let prev = c.states[i].fetch_or(CLAIMED, Ordering::AcqRel);
        // A key deleted before it was linked never needs to be.
        if prev & (CLAIMED | DELETED) != 0 || prev & STORED == 0 {
            return false;
        }
        self.link_in(key, c.levels[i].load(Ordering::Acquire) as usize);
        c.states[i].fetch_or(LINKED, Ordering::AcqRel);
        true
    }

    /// Whether `key` names a published, not deleted node: one a point
    /// of the table must name.
    pub fn is_live(&self, key: u32) -> bool {
        (key as usize) < self.high() && {
            let s = self.state(key);
            s & VISIBLE != 0 && s & DELETED == 0
        }
    }

    /// Whether `key` is fully linked into the graph.
    pub fn is_linked(&self, key: u32) -> bool {
        (key as usize) < self.capacity() && self.state(key) & LINKED != 0
    }

    /// Makes a stored key visible to searches.
    pub fn publish(&self, key: u32) {
        let (c, i) = self.chunk(key);
        let prev = c.states[i].fetch_or(VISIBLE, Ordering::AcqRel);
        if prev & (VISIBLE | DELETED) == 0 {
            self.live.fetch_add(1, Ordering::Relaxed);
        } else if prev & DELETED != 0 {
            c.states[i].fetch_and(!VISIBLE, Ordering::AcqRel);
        }
    }

    fn link_in(&self, key: u32, level: usize) {
        let mut entry = self.entry.load(Ordering::Acquire);
        // A node that raises the top level holds the entry lock throughout,
        // so that the entry point moves only to a fully linked node.
        let mut guard = None;
        if entry == u64::MAX || level > (entry >> 32) as usize {
            guard = Some(self.entry_lock.lock().unwrap_or_else(|e| e.into_inner()));
            entry = self.entry.load(Ordering::Acquire);
            if entry == u64::MAX {
                self.entry
                    .store(((level as u64) << 32) | key as u64, Ordering::Release);
                return;
            }
            if level <= (entry >> 32) as usize {
                guard = None;
            }
        }
        let top = (entry >> 32) as usize;
        let q = self.build_query(key);
        let mut cur = Cand {
            d: self.query_dist::<true>(&q, entry as u32),
            id: entry as u32,
        };
        for layer in (level + 1..=top).rev() {
            cur = self.greedy::<true>(&q, cur, layer, u32::MAX);
        }
        for layer in (0..=level.min(top)).rev() {
            let found = with_visited(self.capacity(), |vis| {
                self.search_layer::<true, _>(&q, &[cur], self.ef_construction, layer, vis, |n| {
                    n != key && self.state(n) & (STORED | DELETED) == STORED
                })
            });
            if found.is_empty() {
                continue;
            }
            let chosen = self.select(&found, self.m);
            // Merged, not overwritten: another thread may already have
            // linked itself here (it can reach this node from a higher layer).
            self.add_links(key, layer, &chosen);
            let mut kept = false;
            for c in &chosen {
                kept |= self.connect(c.id, key, c.d, layer);
            }
            if !kept && let Some(c) = chosen.first() {
                // Every neighbour pruned the new node away: without an
                // incoming link no search could ever reach it.
                self.force_connect(c.id, key, c.d, layer);
            }
            cur = found[0];
        }
        if guard.is_some() {
            self.entry
                .store(((level as u64) << 32) | key as u64, Ordering::Release);
        }
    }

    /// Adds `new` to `node`'s links on `layer`, pruning with the heuristic
    /// when the list is full. Returns whether `new` is among the links.
    fn connect(&self, node: u32, new: u32, d: f32, layer: usize) -> bool {
        self.add_links(node, layer, &[Cand { d, id: new }])
            .contains(&new)
    }

    /// Adds `add` (distances to `node`) to `node`'s links on `layer`; when
    /// the list would overflow, the heuristic picks the links to keep, and
    /// on layer 0 no target loses its last incoming link. Returns the ids of
    /// `add` that are in the list afterwards.
    fn add_links(&self, node: u32, layer: usize, add: &[Cand]) -> Vec<u32> {
        let max = if layer == 0 { self.m0 } else { self.m };
        let _g = self.lock(node);
        let list = self.links(node, layer);
        let n = list[0].load(Ordering::Acquire) as usize;
        let existing: Vec<u32> = list[1..=n]
            .iter()
            .map(|x| x.load(Ordering::Relaxed))
            .collect();
        let mut fresh: Vec<Cand> = Vec::with_capacity(add.len());
        for c in add {
            if c.id != node && !existing.contains(&c.id) && !fresh.iter().any(|f| f.id == c.id) {
                fresh.push(*c);
            }
        }
        if n + fresh.len() <= max {
            for (j, c) in fresh.iter().enumerate() {
                list[1 + n + j].store(c.id, Ordering::Release);
                self.linked(c.id, layer);
            }
            list[0].store((n + fresh.len()) as u32, Ordering::Release);
            return add.iter().map(|c| c.id).filter(|id| *id != node).collect();
        }
        let fresh_ids: Vec<u32> = fresh.iter().map(|c| c.id).collect();
        let mut cands: Vec<Cand> = existing
            .iter()
            .map(|id| Cand {
                d: self.node_dist(node, *id),
                id: *id,
            })
            .collect();
        cands.extend_from_slice(&fresh);
        cands.sort_unstable();
        let mut kept = self.select(&cands, max);
        if layer == 0 {
            self.keep_last_links(&cands, &mut kept, &fresh_ids, max);
        }
        for (slot, c) in list[1..].iter().zip(&kept) {
            slot.store(c.id, Ordering::Release);
        }
        list[0].store(kept.len() as u32, Ordering::Release);
        add.iter()
            .map(|c| c.id)
            .filter(|id| kept.iter().any(|k| k.id == *id))
            .collect()
    }

    /// Puts `new` into `node`'s links, in place of the farthest if full.
    fn force_connect(&self, node: u32, new: u32, d: f32, layer: usize) {
        let _g = self.lock(node);
        let list = self.links(node, layer);
        let n = list[0].load(Ordering::Acquire) as usize;
        if n < list.len() - 1 {
            list[1 + n].store(new, Ordering::Release);
            list[0].store(n as u32 + 1, Ordering::Release);
            self.linked(new, layer);
            return;
        }
        // Evict the farthest link farther than `new` whose target has
        // another way in (released atomically, see `release`).
        let mut by_distance: Vec<(f32, usize)> = (1..=n)
            .map(|j| (self.node_dist(node, list[j].load(Ordering::Relaxed)), j))
            .filter(|(fd, _)| *fd > d)
            .collect();
        by_distance.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, j) in by_distance {
            let old = list[j].load(Ordering::Relaxed);
            if layer > 0 || self.release(old) {
                list[j].store(new, Ordering::Release);
                self.linked(new, layer);
                return;
            }
        }
    }

    /// Drops one layer-0 link to `id` unless it is the last one; atomic, so
    /// two threads pruning different lists cannot both drop the last two.
    fn release(&self, id: u32) -> bool {
        self.indeg(id)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d > 1).then(|| d - 1)
            })
            .is_ok()
    }

    /// Settles a pruned layer-0 list: every old link dropped from `cands`
    /// is released, except a target's last one, which stays (in place of a
    /// kept link that can be released, if the list is full). Kept `fresh`
    /// links are counted.
    fn keep_last_links(&self, cands: &[Cand], kept: &mut Vec<Cand>, fresh: &[u32], max: usize) {
        for c in cands {
            if fresh.contains(&c.id) || kept.iter().any(|k| k.id == c.id) || self.release(c.id) {
                continue;
            }
            // `c` would lose its last incoming link.
            if kept.len() < max {
                kept.push(*c);
                continue;
            }
            let mut order: Vec<usize> = (0..kept.len()).collect();
            order.sort_by(|a, b| kept[*b].d.total_cmp(&kept[*a].d));
            let swap = order.into_iter().find(|j| {
                let k = kept[*j].id;
                // Fresh links are not counted yet: dropping one releases nothing.
                fresh.contains(&k) || self.release(k)
            });
            match swap {
                Some(j) => kept[j] = *c,
                // Every kept link is someone's last: `c` loses its link.
                None => {
                    self.indeg(c.id).fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        for k in kept.iter().filter(|k| fresh.contains(&k.id)) {
            self.indeg(k.id).fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is
    /// closer to the base than to every one kept so far. `cands` ascending.
    fn select(&self, cands: &[Cand], max: usize) -> Vec<Cand> {
        let mut kept: Vec<Cand> = Vec::with_capacity(max);
        for c in cands {
            if kept.len() >= max {
                break;
            }
            // Rejected only if strictly closer to a kept one: with `>=`
            // exact duplicates (distance 0) would keep only each other.
            if kept.iter().all(|k| self.node_dist(c.id, k.id) >= c.d) {
                kept.push(*c);
            }
        }
        kept
    }

    /// Greedy descent on one layer, never moving to `avoid`.
    fn greedy<const BUILD: bool>(
        &self,
        q: &Query,
        mut cur: Cand,
        layer: usize,
        avoid: u32,
    ) -> Cand {
        loop {
            let mut changed = false;
            let list = self.links(cur.id, layer);
            let n = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
            let nbrs = &list[1..=n];
            for x in nbrs {
                prefetch(self.vec_ptr(x.load(Ordering::Relaxed)), self.vec_bytes);
            }
            for x in nbrs {
                let id = x.load(Ordering::Acquire);
                let d = self.query_dist::<BUILD>(q, id);
                if d < cur.d && id != avoid {
                    cur = Cand { d, id };
                    changed = true;
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// Beam search on one layer; returns up to `ef` accepted nodes, closest
    /// first. Rejected nodes are still walked through.
    #[inline]
    fn search_layer<const BUILD: bool, F: Fn(u32) -> bool>(
        &self,
        q: &Query,
        entry: &[Cand],
        ef: usize,
        layer: usize,
        vis: &mut Visited,
        accept: F,
    ) -> Vec<Cand> {
        let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
        let mut next: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef * 2);
        for e in entry {
            vis.first(e.id);
            next.push(Reverse(*e));
            if accept(e.id) {
                top.push(*e);
            }
        }
        let mut bound = if top.len() >= ef {
            top.peek().map_or(f32::INFINITY, |c| c.d)
        } else {
            f32::INFINITY
        };
        let bytes = self.vec_bytes;
        let mut fresh = std::mem::take(&mut vis.fresh);
        while let Some(Reverse(c)) = next.pop() {
            if c.d > bound {
                break;
            }
            let list = self.links(c.id, layer);
            let n = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
            // Unvisited neighbours first, each vector's fetch started at
            // once: the loads overlap instead of waiting one by one.
            fresh.clear();
            for x in &list[1..=n] {
                let id = x.load(Ordering::Acquire);
                if vis.first(id) {
                    prefetch(self.vec_ptr(id), bytes);
                    fresh.push(id);
                }
            }
            for &id in &fresh {
                let d = self.query_dist::<BUILD>(q, id);
                if d < bound || top.len() < ef {
                    next.push(Reverse(Cand { d, id }));
                    if let Some(Reverse(best)) = next.peek() {
                        // Its link list is read next: fetch it now.
                        prefetch(self.links(best.id, layer).as_ptr() as *const f32, 64);
                    }
                    if accept(id) {
                        top.push(Cand { d, id });
                        if top.len() > ef {
                            top.pop();
                        }
                        if top.len() >= ef {
                            bound = top.peek().map_or(f32::INFINITY, |c| c.d);
                        }
                    }
                }
            }
        }
        vis.fresh = fresh;
        top.into_sorted_vec()
    }

    /// Approximate nearest live keys as (key, score), best first. `accept`
    /// further restricts which keys may be returned.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(u32, f32)> {
        self.search_avoiding(query, k, ef, accept, None)
    }

    /// [`search`](Self::search) as if `avoid` were not in the graph: it is
    /// neither returned nor walked through (a stored point held out of its
    /// own query, when measuring recall).
    pub fn search_avoiding(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
        avoid: Option<u32>,
    ) -> Vec<(u32, f32)> {
        let avoid = avoid.unwrap_or(u32::MAX);
        let entry = self.entry.load(Ordering::Acquire);
        if entry == u64::MAX {
            return Vec::new();
        }
        let q = self.query(query);
        let mut cur = Cand {
            d: self.query_dist::<false>(&q, entry as u32),
            id: entry as u32,
        };
        for layer in (1..=(entry >> 32) as usize).rev() {
            cur = self.greedy::<false>(&q, cur, layer, avoid);
        }
        let rescored = self.rescored(k);
        let ef = ef.max(rescored.unwrap_or(k));
        let live = |id: u32| self.state(id) & VISIBLE != 0;
        let found = with_visited(self.capacity(), |vis| {
            if avoid != u32::MAX && cur.id != avoid {
                vis.first(avoid);
            }
            match accept {
                Some(f) => {
                    self.search_layer::<false, _>(&q, &[cur], ef, 0, vis, |id| live(id) && f(id))
                }
                None => self.search_layer::<false, _>(&q, &[cur], ef, 0, vis, live),
            }
        });
        let Some(n) = rescored else {
            return found
                .into_iter()
                .take(k)
                .map(|c| (c.id, self.score(c.d)))
                .collect();
        };
        // The best candidates by their codes, ordered by their full vectors.
        let mut best: Vec<Cand> = found
            .into_iter()
            .take(n)
            .map(|c| Cand {
                d: self.distance_key(&q.f, c.id),
                id: c.id,
            })
            .collect();
        best.sort_unstable();
        best.into_iter()
            .take(k)
            .map(|c| (c.id, self.score(c.d)))
            .collect()
    }

    /// Marks `key` deleted; it keeps routing searches but leaves results.
    pub fn remove(&self, key: u32) -> bool {
        if key as usize >= self.capacity() {
            return false;
        }
        let (c, i) = self.chunk(key);
        let prev = c.states[i].fetch_or(DELETED, Ordering::AcqRel);
        if prev & DELETED != 0 || prev & STORED == 0 {
            return false;
        }
        if c.states[i].fetch_and(!VISIBLE, Ordering::AcqRel) & VISIBLE != 0 {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
        self.deleted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Writes the graph to `path`: a header, then per-node arrays, then
    /// fsyncs the file.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let f = File::create(path).map_err(EngineError::io("creating the index file"))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        self.write_to(&mut w)
            .and_then(|_| w.flush())
            .and_then(|_| w.get_ref().sync_all())
            .map_err(EngineError::io("writing the index file"))
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let n = self.high.load(Ordering::Acquire);
        w.write_all(FILE_MAGIC)?;
        for v in [
            self.dim as u64,
            self.m as u64,
            n as u64,
            self.entry.load(Ordering::Acquire),
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        for id in 0..n as u32 {
            let (c, i) = self.chunk(id);
            // A node whose linking has not finished is saved unlinked, and
            // linked again after a restart.
            let state = c.states[i].load(Ordering::Acquire) & !CLAIMED;
            w.write_all(&[state, c.levels[i].load(Ordering::Acquire)])?;
        }
        let zeros = vec![0f32; self.dim];
        for id in 0..n as u32 {
            // (An empty slot of a quantized graph has nothing in its file.
            // The 1/length is recomputed at load: a float graph's is
            // written as kept, a quantized one's as zero.)
            let (v, inv) = match &self.quant {
                None => (self.vector(id), self.inv_norm(id)),
                Some(_) if self.state(id) == EMPTY => (&zeros[..], 0.0),
                Some(_) => (self.full(id).0, 0.0),
            };
            w.write_all(&inv.to_le_bytes())?;
            for x in v {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        let empty = vec![0u8; (self.m0 + 1) * 4];
        for id in 0..n as u32 {
            if self.state(id) == EMPTY {
                // Empty slots keep an empty list so every node's offset is fixed.
                w.write_all(&empty)?;
                continue;
            }
            for layer in 0..=self.level(id) {
                for x in self.links(id, layer) {
                    w.write_all(&x.load(Ordering::Acquire).to_le_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Reads a graph written by [`save`] for the same configuration.
    pub fn load(
        config: &CollectionConfig,
        path: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<VectorIndex> {
        let corrupt = || EngineError::Corrupt(format!("{} does not decode", path.display()));
        let f = File::open(path).map_err(EngineError::io("opening the index file"))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut hdr = [0u8; 40];
        r.read_exact(&mut hdr).map_err(|_| corrupt())?;
        if &hdr[..8] != FILE_MAGIC {
            return Err(corrupt());
        }
        let word = |k: usize| u64::from_le_bytes(hdr[8 + k * 8..16 + k * 8].try_into().unwrap());
        let (dim, m, n, entry) = (
            word(0) as usize,
            word(1) as usize,
            word(2) as usize,
            word(3),
        );
        if dim != config.dimension || m != config.hnsw.m {
            return Err(corrupt());
        }
        // Every node takes at least its state, level, norm, vector and its
        // whole layer-0 link list on disk (an empty one too): a header
        // claiming more nodes than the file can hold is refused before
        // anything is allocated for them, so memory stays within a small
        // multiple of the file's size whatever the file says.
        let file_len = r.get_ref().metadata().map_or(0, |md| md.len());
        let least = 2 + 4 + dim * 4 + (2 * m + 1) * 4;
        if (n as u64).saturating_mul(least as u64) > file_len || n > u32::MAX as usize {
            return Err(corrupt());
        }
        let mut idx = VectorIndex::new(config, dir)?;
        idx.reserve(n.max(1))?;
        // Into a buffer kept between reads (one per node below).
        let mut read = |b: &mut Vec<u8>, len: usize| -> Result<()> {
            b.resize(len, 0);
            r.read_exact(b).map_err(|_| corrupt())
        };
        let mut meta = Vec::new();
        read(&mut meta, n * 2)?;
        let (mut live, mut deleted) = (0, 0);
        for id in 0..n {
            let (c, i) = idx.chunk(id as u32);
            let (state, level) = (meta[id * 2], meta[id * 2 + 1]);
            let known = STORED | VISIBLE | LINKED | DELETED;
            if state & !known != 0
                || (state != EMPTY && state & STORED == 0)
                || level as usize > MAX_LEVEL
            {
                return Err(corrupt());
            }
            // Stored but never published: a write that never completed.
            let state = if state != EMPTY && state & (VISIBLE | DELETED) == 0 {
                state | DELETED
            } else {
                state
            };
            c.states[i].store(state, Ordering::Relaxed);
            c.levels[i].store(level, Ordering::Relaxed);
            live += (state & VISIBLE != 0) as usize;
            deleted += (state & DELETED != 0) as usize;
        }
        // Node by node: a quantized graph never holds all the floats.
        let row = 4 + dim * 4;
        let mut v = vec![0f32; dim];
        let mut b = Vec::new();
        let mut run = quant::FullRun::default();
        for id in 0..n {
            let (c, i) = idx.chunk(id as u32);
            read(&mut b, row)?;
            let f = |k: usize| f32::from_le_bytes(b[k * 4..k * 4 + 4].try_into().unwrap());
            if (1..=dim).any(|k| !f(k).is_finite()) {
                return Err(corrupt());
            }
            let stored = meta[id * 2] != EMPTY;
            // A stored vector is held to what a write accepts, and its
            // norm is computed here, not taken from the file: a file from
            // outside (a restored backup) cannot make scores infinite or
            // null.
            let squared: f64 = (1..=dim).map(|k| f64::from(f(k)) * f64::from(f(k))).sum();
            let zero = (1..=dim).all(|k| f(k) == 0.0);
            if stored
                && (squared > crate::distance::MAX_SQUARED_LENGTH
                    || (zero && config.metric == crate::config::Metric::Cosine))
            {
                return Err(corrupt());
            }
            for (j, x) in v.iter_mut().enumerate() {
                *x = f(1 + j);
            }
            // Safety: nothing else can see the index yet.
            unsafe { idx.write_row(c, i, &v) };
            if let Some(q) = &idx.quant
                && stored
            {
                run.push(&q.full, id as u32, &v)?;
            }
        }
        if let Some(q) = &idx.quant {
            run.flush(&q.full)?;
        }
        let list = idx.m0 + 1;
        let up_list = m + 1;
        let mut upper_bytes = 0;
        for id in 0..n as u32 {
            let (c, i) = idx.chunk(id);
            let state = c.states[i].load(Ordering::Relaxed);
            let level = if state == EMPTY {
                0
            } else {
                c.levels[i].load(Ordering::Relaxed) as usize
            };
            read(&mut b, list * 4 + level * up_list * 4)?;
            let word = |k: usize| u32::from_le_bytes(b[k * 4..k * 4 + 4].try_into().unwrap());
            for k in 0..list {
                c.rows[i * idx.row_words + k].store(word(k), Ordering::Relaxed);
            }
            if level > 0 {
                let up: Box<[AtomicU32]> = (0..level * up_list)
                    .map(|k| AtomicU32::new(word(list + k)))
                    .collect();
                upper_bytes += up.len() * 4 + 16;
                let _ = c.upper[i].set(up);
            }
        }
        // Every stored link must name a stored node that reaches its layer.
        let reaches = |x: u32, layer: usize| {
            (x as usize) < n && idx.state(x) != EMPTY && idx.level(x) >= layer
        };
        for id in 0..n as u32 {
            if idx.state(id) == EMPTY {
                continue;
            }
            for layer in 0..=idx.level(id) {
                let l = idx.links(id, layer);
                let cnt = l[0].load(Ordering::Relaxed) as usize;
                if cnt >= l.len()
                    || l[1..=cnt]
                        .iter()
                        .any(|x| !reaches(x.load(Ordering::Relaxed), layer))
                {
                    return Err(corrupt());
                }
            }
        }
        for id in 0..n as u32 {
            let l = idx.links(id, 0);
            for x in &l[1..=l[0].load(Ordering::Relaxed) as usize] {
                idx.indeg(x.load(Ordering::Relaxed))
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        // The entry point is a stored node at the level it is entered at.
        if entry != u64::MAX
            && (!reaches(entry as u32, 0) || idx.level(entry as u32) as u64 != entry >> 32)
        {
            return Err(corrupt());
        }
        idx.entry.store(entry, Ordering::Release);
        idx.live.store(live, Ordering::Relaxed);
        idx.deleted.store(deleted, Ordering::Relaxed);
        idx.high.store(n, Ordering::Relaxed);
        idx.upper_bytes.store(upper_bytes, Ordering::Relaxed);
        Ok(idx)
    }
}

/// `v` scaled to length 1 (zero stays zero).
fn normalised(dot: Kernel, v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
    v.iter().map(|x| x * inv).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph whose full vectors (if quantized) live under the temporary
    /// directory.
    pub(super) fn fresh(cfg: &CollectionConfig) -> VectorIndex {
        VectorIndex::new(cfg, &std::env::temp_dir()).unwrap()
    }

    #[test]
    fn add_search_remove_save_load() {
        add_search_remove_save_load_as(None);
    }

    #[test]
    fn quantized_add_search_remove_save_load() {
        add_search_remove_save_load_as(Some(crate::config::Quantization::int8()));
    }

    fn add_search_remove_save_load_as(quantization: Option<crate::config::Quantization>) {
        let cfg = CollectionConfig {
            quantization,
            ..CollectionConfig::new(4, Metric::Euclidean)
        };
        let mut idx = fresh(&cfg);
        idx.reserve(3000).unwrap();
        for k in 0..3000u32 {
            let f = k as f32;
            idx.add(k, &[f, (f * 0.37).sin(), (f * 0.11).cos(), 1.0])
                .unwrap();
            idx.publish(k);
        }
        assert!(idx.add(5, &[0.0; 4]).is_err());
        let hits = idx.search(
            &[
                1234.0,
                (1234.0f32 * 0.37).sin(),
                (1234.0f32 * 0.11).cos(),
                1.0,
            ],
            3,
            32,
            None,
        );
        assert_eq!(hits[0].0, 1234);
        assert!(hits[0].1.abs() < 1e-3);
        assert!(idx.remove(1234));
        assert!(!idx.remove(1234));
        let hits = idx.search(&[1234.0, 0.0, 0.0, 1.0], 3, 32, None);
        assert!(hits.iter().all(|h| h.0 != 1234));
        assert_eq!(idx.size(), 2999);
        let dir = std::env::temp_dir().join(format!(
            "vz-idx-{}-{}",
            std::process::id(),
            cfg.quantization.is_some()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("i.bin");
        idx.save(&path).unwrap();
        let back = VectorIndex::load(&cfg, &path, &dir).unwrap();
        // The snapshot holds the full vectors, whichever way they are kept.
        assert_eq!(back.get(1234 - 1).unwrap(), idx.get(1234 - 1).unwrap());
        assert_eq!(back.size(), 2999);
        assert_eq!(back.deleted(), 1);
        assert_eq!(back.get(7), idx.get(7));
        assert_eq!(
            back.search(&[77.0, 0.0, 0.0, 1.0], 5, 32, None),
            idx.search(&[77.0, 0.0, 0.0, 1.0], 5, 32, None)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cosine_keeps_raw_vectors() {
        let cfg = CollectionConfig::new(3, Metric::Cosine);
        let mut idx = fresh(&cfg);
        idx.reserve(1).unwrap();
        idx.add(0, &[3.0, 4.0, 0.0]).unwrap();
        assert!(idx.search(&[6.0, 8.0, 0.0], 1, 8, None).is_empty());
        idx.publish(0);
        assert_eq!(idx.get(0).unwrap(), &[3.0, 4.0, 0.0]);
        let hits = idx.search(&[6.0, 8.0, 0.0], 1, 8, None);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
    }
}

#[cfg(test)]
mod reach_tests {
    use super::tests::fresh;
    use super::*;

    /// Nodes nobody links to on layer 0, and nodes a search for their own
    /// vector (ef 64) does not find.
    fn reach(idx: &VectorIndex, base: &[Vec<f32>]) -> (Vec<u32>, Vec<u32>) {
        let n = base.len() as u32;
        let mut indeg = vec![0u32; n as usize];
        for id in 0..n {
            let l = idx.links(id, 0);
            let c = l[0].load(Ordering::Relaxed) as usize;
            for x in &l[1..=c] {
                indeg[x.load(Ordering::Relaxed) as usize] += 1;
            }
        }
        let zero = (0..n).filter(|i| indeg[*i as usize] == 0).collect();
        let missed = (0..n)
            .filter(|i| idx.search(&base[*i as usize], 1, 64, None)[0].0 != *i)
            .collect();
        (zero, missed)
    }

    #[test]
    fn nodes_stay_reachable_when_linked_in_parallel() {
        let n = 10_000u32;
        let (base, _) = vectorizer_testkit::gaussian_mixture(n as usize, 128, 100, 0.5, 1);
        let cfg = CollectionConfig::new(128, Metric::Euclidean);
        let mut idx = fresh(&cfg);
        idx.reserve(n as usize).unwrap();
        for k in 0..n {
            idx.store(k, &base[k as usize]).unwrap();
            idx.publish(k);
        }
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let idx = &idx;
                s.spawn(move || {
                    for k in (t..n).step_by(2) {
                        idx.link(k);
                    }
                });
            }
        });
        let (zero, missed) = reach(&idx, &base);
        // Linking in parallel is nondeterministic; on this data it leaves
        // 0-1 nodes unlinked and 0-3 unfound per 10,000 (single-threaded: 1).
        assert!(zero.len() <= 2, "nodes nobody links to: {zero:?}");
        assert!(
            missed.len() <= 5,
            "nodes a search for their own vector misses: {missed:?}"
        );
    }

    #[test]
    fn duplicates_do_not_wall_off_the_graph() {
        // Every vector twice: twins must not end up linked only to each other.
        let (base, _) = vectorizer_testkit::gaussian_mixture(3_000, 32, 30, 0.5, 4);
        let cfg = CollectionConfig::new(32, Metric::Euclidean);
        let mut idx = fresh(&cfg);
        idx.reserve(6_000).unwrap();
        for (k, v) in base.iter().chain(base.iter()).enumerate() {
            idx.add(k as u32, v).unwrap();
            idx.publish(k as u32);
        }
        let missed = (0..3_000)
            .filter(|i| {
                let hits = idx.search(&base[*i], 2, 64, None);
                let mut got: Vec<u32> = hits.iter().filter(|h| h.1 == 0.0).map(|h| h.0).collect();
                got.sort();
                got != vec![*i as u32, *i as u32 + 3_000]
            })
            .count();
        assert!(missed <= 3, "{missed} of 3,000 twins not both found");
    }

    /// Every node should be reachable: searching for its own vector finds it.
    #[test]
    fn nodes_stay_reachable() {
        let n = 10_000u32;
        let (base, _) = vectorizer_testkit::gaussian_mixture(n as usize, 128, 100, 0.5, 1);
        let cfg = CollectionConfig::new(128, Metric::Euclidean);
        let mut idx = fresh(&cfg);
        idx.reserve(n as usize).unwrap();
        for k in 0..n {
            idx.add(k, &base[k as usize]).unwrap();
            idx.publish(k);
        }
        let (zero, missed) = reach(&idx, &base);
        // Pruning keeps every node's last incoming link where the list
        // allows; a node whose every in-neighbour is saturated can still be
        // lost, which on this data is at most one in 10,000.
        assert!(zero.len() <= 1, "nodes nobody links to: {zero:?}");
        assert!(
            missed.len() <= 3,
            "nodes a search for their own vector misses: {missed:?}"
        );
    }
}
