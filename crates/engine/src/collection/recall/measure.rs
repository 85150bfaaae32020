//! One measurement of a collection's recall, on the tuning thread.
//!
//! The queries are the ring's (distinct ones) once it holds [`MIN_REAL`],
//! otherwise stored points taken at an even stride, each held out of its
//! own answer (and of the walk: its node is never expanded). At most
//! [`WORK`] multiply-adds go into exact answers, so a large collection
//! measures with fewer queries (never under [`MIN_QUERIES`]). The exact
//! top [`K`] of each is computed over the keys present when the pass starts,
//! a slice at a time under the read lock; a graph walk at a breadth counts
//! a hit for every key it returns no farther than the 10th exact answer
//! (so that ties count). The ladder of breadths is binary-searched for the
//! smallest whose mean recall, less [`Z`] standard errors, meets the
//! target. A compaction (which renumbers keys) or the collection closing
//! abandons the measurement.

use std::collections::{BinaryHeap, HashSet};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{K, MIN_REAL, Pace, RecallReport, RecallSource, SAMPLE, fitting};
use crate::collection::{Collection, State, now_ms};
use crate::index::Cand;

/// The breadths tried, in order. The largest is where a measurement stops
/// even when the target is out of reach (searches stay affordable).
const LADDER: [usize; 28] = [
    10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    448, 512, 640, 768, 896, 1024,
];
/// Vector components compared per read-lock acquisition in the exact pass
/// (a fraction of a millisecond).
const SLICE_COMPONENTS: usize = 1 << 20;
/// Most multiply-adds the exact answers of one measurement take.
const WORK: usize = 1 << 34;
/// Fewest queries a measurement takes, whatever [`WORK`] allows.
const MIN_QUERIES: usize = 32;
/// Most bytes of stored points one measurement copies out.
const SAMPLE_BYTES: usize = 4 << 20;
/// Standard errors of the sample's mean recall kept below the estimate:
/// the breadth chosen meets the target on other queries of the same kind
/// with about 98% confidence.
const Z: f64 = 2.0;
/// How long a slice waits for writers and linking to finish before the
/// measurement is abandoned (a later search or link asks again).
const PATIENCE: Duration = Duration::from_secs(2);

/// The queries of one measurement: vectors, and for held-out stored points
/// the key left out of its own answer.
struct Sample {
    queries: Vec<(Vec<f32>, Option<u32>)>,
    source: RecallSource,
    /// The graph's generation: a compaction bumps it.
    generation: u64,
}

/// Runs `f` with the collection's read lock if it is still open, not
/// dropped and of `generation`, timing the work and resting after it. It
/// first waits (holding no reference) while a writer waits, and gives up
/// after [`PATIENCE`]. (Linking may run meanwhile: keys it adds are above
/// the measurement's `high` mark.)
fn slice<R>(
    me: &Weak<Collection>,
    pace: &Pace,
    generation: Option<u64>,
    f: impl FnOnce(&Collection, &State) -> R,
) -> Option<R> {
    let waited = Instant::now();
    loop {
        let c = me.upgrade()?;
        if c.dropped.load(Ordering::SeqCst) {
            return None;
        }
        if c.writers_waiting.load(Ordering::SeqCst) == 0 {
            let t = Instant::now();
            let st = c.read();
            if generation.is_some_and(|g| g != st.generation) {
                return None;
            }
            let r = f(&c, &st);
            drop(st);
            drop(c);
            pace.rest(t.elapsed());
            return Some(r);
        }
        drop(c);
        if waited.elapsed() > PATIENCE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Queries a collection of `points` × `dim` measures with.
fn affordable(points: usize, dim: usize) -> usize {
    (WORK / (points.max(1) * dim.max(1))).clamp(MIN_QUERIES, SAMPLE)
}

/// The sample, or `None` while points wait to be linked (the graph is not
/// what searches will walk).
fn sample(c: &Collection, st: &State) -> Option<Sample> {
    if !st.unindexed.is_empty() {
        return None;
    }
    let dim = c.config.dimension;
    let want = affordable(st.ids.len(), dim).min(fitting(SAMPLE_BYTES, dim));
    // The ring's distinct queries, newest first.
    let mut real: Vec<Vec<f32>> = {
        let ring = super::lock(&c.recall.ring);
        let n = ring.queries.len();
        let mut seen = HashSet::new();
        (0..n)
            .map(|i| &ring.queries[(ring.next + n - 1 - i) % n])
            .filter(|q| seen.insert(q.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()))
            .cloned()
            .collect()
    };
    if real.len() >= MIN_REAL.min(c.recall.ring_len) {
        real.truncate(want);
        return Some(Sample {
            queries: real.into_iter().map(|q| (q, None)).collect(),
            source: RecallSource::Queries,
            generation: st.generation,
        });
    }
    // Stored points at an even stride over the ids (each measurement of
    // the same data asks the same).
    let step = (st.ids.len() / want).max(1);
    let queries = st
        .ids
        .values()
        .step_by(step)
        .take(want)
        .filter_map(|k| st.index.get(*k).map(|v| (v.to_vec(), Some(*k))))
        .collect();
    Some(Sample {
        queries,
        source: RecallSource::StoredPoints,
        generation: st.generation,
    })
}

/// For each query, the distance of its `K`-th exact answer among keys
/// below `high` (fewer answers: the farthest; none: `None`).
fn exact_bounds(
    me: &Weak<Collection>,
    pace: &Pace,
    s: &Sample,
    prepared: &[Vec<f32>],
    high: usize,
    dim: usize,
) -> Option<Vec<Option<f32>>> {
    // Per query a bounded best-K set: the worst on top.
    let mut best: Vec<BinaryHeap<Cand>> = (0..prepared.len()).map(|_| BinaryHeap::new()).collect();
    let per_slice = (SLICE_COMPONENTS / (dim.max(1) * prepared.len().max(1))).max(1);
    let mut from = 0;
    while from < high {
        let to = (from + per_slice).min(high);
        slice(me, pace, Some(s.generation), |_, st| {
            for key in from as u32..to as u32 {
                if !st.index.is_live(key) {
                    continue;
                }
                for (i, q) in prepared.iter().enumerate() {
                    if s.queries[i].1 == Some(key) {
                        continue;
                    }
                    let near = Cand {
                        d: st.index.distance_key(q, key),
                        id: key,
                    };
                    let heap = &mut best[i];
                    if heap.len() < K {
                        heap.push(near);
                    } else if heap.peek().is_some_and(|w| near < *w) {
                        heap.pop();
                        heap.push(near);
                    }
                }
            }
        })?;
        from = to;
    }
    Some(best.iter().map(|h| h.peek().map(|n| n.d)).collect())
}

/// Mean recall of the sample at breadth `ef`, and its standard error.
fn recall_at(
    me: &Weak<Collection>,
    pace: &Pace,
    s: &Sample,
    prepared: &[Vec<f32>],
    bounds: &[Option<f32>],
    high: u32,
    ef: usize,
) -> Option<(f64, f64)> {
    let mut per_query = Vec::with_capacity(s.queries.len());
    for (i, (q, own)) in s.queries.iter().enumerate() {
        let Some(bound) = bounds[i] else { continue };
        // Ties with the K-th answer count; a float's last bits aside.
        let bound = bound + bound.abs() * 1e-6;
        let found = slice(me, pace, Some(s.generation), |_, st| {
            let accept = |key: u32| key < high && Some(key) != *own;
            st.index
                .search_avoiding(q, K, ef, Some(&accept), *own)
                .iter()
                .filter(|(key, _)| st.index.distance_key(&prepared[i], *key) <= bound)
                .count()
        })?;
        per_query.push(found.min(K) as f64 / K as f64);
    }
    let n = per_query.len().max(1) as f64;
    let mean = per_query.iter().sum::<f64>() / n;
    let var = per_query.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Some((mean, (var / n).sqrt()))
}

/// One measurement; `None` if it was abandoned.
pub(super) fn run(me: &Weak<Collection>, pace: &Pace) -> Option<RecallReport> {
    let (target, s, points, dim, high) = slice(me, pace, None, |c, st| {
        Some((
            c.recall.target()?,
            sample(c, st)?,
            st.ids.len() as u64,
            c.config.dimension,
            st.index.high(),
        ))
    })??;
    if s.queries.is_empty() {
        return None;
    }
    let prepared: Vec<Vec<f32>> = slice(me, pace, Some(s.generation), |_, st| {
        s.queries
            .iter()
            .map(|(q, _)| st.index.prepare_query(q))
            .collect()
    })?;
    let bounds = exact_bounds(me, pace, &s, &prepared, high, dim)?;
    // Recall grows with the breadth: a binary search over the ladder.
    let at = |ef| recall_at(me, pace, &s, &prepared, &bounds, high as u32, ef);
    let meets = |(mean, se): (f64, f64)| mean - Z * se >= target;
    let (mut lo, mut hi) = (0, LADDER.len() - 1);
    let mut best = at(LADDER[hi])?;
    if meets(best) {
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = at(LADDER[mid])?;
            if meets(r) {
                (hi, best) = (mid, r);
            } else {
                lo = mid + 1;
            }
        }
    }
    Some(RecallReport {
        target,
        estimate: best.0,
        ef: LADDER[hi],
        queries: bounds.iter().filter(|b| b.is_some()).count(),
        source: s.source,
        points,
        measured_at_ms: now_ms(),
        took_ms: 0,
    })
}
