//! Payload indexes on the fields a collection declares: every scalar value
//! at a field's path (keywords, bools, numbers; list elements one by one)
//! maps to the keys of the points holding it. A filter's conditions on
//! indexed fields then yield a set of candidate keys without the filter
//! being evaluated on every point.
//!
//! The candidates are a superset of the matches, never a subset: keys of
//! points since deleted or replaced stay in the postings until the index
//! is rebuilt (at open and at compaction, which renumbers keys), integer
//! matches are looked up by their value as `f64`, and conditions on fields
//! without an index do not narrow the set. Callers check every candidate
//! against the filter itself.
//!
//! Held in memory only, rebuilt from the payloads when a collection opens.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::filter::{Condition, FieldTest, Filter, MatchValue};
use crate::id::PointId;
use crate::payload::{PayloadView, Scalar};

/// A set of keys, one bit each.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBits {
    words: Vec<u64>,
}

impl KeyBits {
    /// An empty set for keys below `n`.
    pub fn new(n: usize) -> KeyBits {
        KeyBits {
            words: vec![0; n.div_ceil(64)],
        }
    }

    #[inline]
    pub fn insert(&mut self, key: u32) {
        if let Some(w) = self.words.get_mut(key as usize / 64) {
            *w |= 1 << (key % 64);
        }
    }

    #[inline]
    pub fn contains(&self, key: u32) -> bool {
        self.words
            .get(key as usize / 64)
            .is_some_and(|w| w & (1 << (key % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn and(&mut self, o: &KeyBits) {
        self.words
            .iter_mut()
            .zip(&o.words)
            .for_each(|(a, b)| *a &= b);
    }

    fn or(&mut self, o: &KeyBits) {
        self.words
            .iter_mut()
            .zip(&o.words)
            .for_each(|(a, b)| *a |= b);
    }

    /// The keys in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some(i as u32 * 64 + bit)
            })
        })
    }
}

/// An `f64` ordered totally, with `-0.0` folded into `0.0` (filters treat
/// them as equal).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Num(f64);

impl Num {
    fn new(x: f64) -> Num {
        Num(x + 0.0)
    }
}

impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Num {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(Debug, Default)]
struct FieldIndex {
    keywords: HashMap<Box<str>, Vec<u32>>,
    bools: [Vec<u32>; 2],
    numbers: BTreeMap<Num, Vec<u32>>,
}

/// Appends `key` unless it was the last one added (a list holding one value
/// twice).
fn push(posting: &mut Vec<u32>, key: u32) {
    if posting.last() != Some(&key) {
        posting.push(key);
    }
}

fn heap_of(v: &Vec<u32>) -> usize {
    v.capacity() * 4
}

impl FieldIndex {
    fn add(&mut self, key: u32, v: Scalar<'_>) {
        match v {
            Scalar::Str(s) => match self.keywords.get_mut(s) {
                Some(p) => push(p, key),
                None => {
                    self.keywords.insert(s.into(), vec![key]);
                }
            },
            Scalar::Bool(b) => push(&mut self.bools[b as usize], key),
            Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) => {
                let x = v.as_f64().expect("a number");
                push(self.numbers.entry(Num::new(x)).or_default(), key);
            }
            Scalar::Null => {}
        }
    }

    fn bits_of<'a>(postings: impl Iterator<Item = &'a Vec<u32>>, n: usize) -> KeyBits {
        let mut b = KeyBits::new(n);
        postings.flatten().for_each(|k| b.insert(*k));
        b
    }

    fn matching(&self, m: &MatchValue) -> Vec<&Vec<u32>> {
        match m {
            MatchValue::Keyword(s) => self.keywords.get(s.as_str()).into_iter().collect(),
            MatchValue::Bool(b) => vec![&self.bools[*b as usize]],
            MatchValue::Integer(i) => self.numbers.get(&Num::new(*i as f64)).into_iter().collect(),
            MatchValue::Float(f) => self.numbers.get(&Num::new(f.get())).into_iter().collect(),
        }
    }

    /// The keys the test can hold for, or `None` when the index cannot
    /// tell (a test on what is missing, negated, or on text).
    fn test_bits(&self, test: &FieldTest, n: usize) -> Option<KeyBits> {
        Some(match test {
            FieldTest::Match(m) => Self::bits_of(self.matching(m).into_iter(), n),
            FieldTest::Any(set) => {
                Self::bits_of(set.values().iter().flat_map(|m| self.matching(m)), n)
            }
            FieldTest::Except(_) | FieldTest::Text(_) | FieldTest::ValuesCount(_) => return None,
            FieldTest::Range(r) => {
                let lo = match (r.gt, r.gte) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let hi = match (r.lt, r.lte) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let (Some(l), Some(h)) = (lo, hi)
                    && l > h
                {
                    return Some(KeyBits::new(n));
                }
                let bound =
                    |x: Option<f64>| x.map_or(Bound::Unbounded, |x| Bound::Included(Num::new(x)));
                let inside = self
                    .numbers
                    .range((bound(lo), bound(hi)))
                    .filter(|(x, _)| r.contains(x.0))
                    .map(|(_, p)| p);
                Self::bits_of(inside, n)
            }
        })
    }

    fn heap_bytes(&self) -> usize {
        self.keywords
            .iter()
            .map(|(k, p)| k.len() + heap_of(p) + 48)
            .sum::<usize>()
            + self.bools.iter().map(heap_of).sum::<usize>()
            + self
                .numbers
                .values()
                .map(|p| heap_of(p) + 48)
                .sum::<usize>()
    }
}

/// The indexes of one collection.
#[derive(Debug, Default)]
pub struct PayloadIndex {
    fields: Vec<(Vec<String>, FieldIndex)>,
}

impl PayloadIndex {
    /// Indexes on these dotted paths, empty.
    pub fn new(paths: &[String]) -> PayloadIndex {
        PayloadIndex {
            fields: paths
                .iter()
                .map(|p| {
                    (
                        p.split('.').map(str::to_owned).collect(),
                        FieldIndex::default(),
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Records the payload of a new key. Keys must come in ascending order
    /// (as the collection hands them out).
    pub fn add<P: PayloadView + ?Sized>(&mut self, key: u32, payload: &P) {
        for (path, idx) in &mut self.fields {
            payload.visit(path, &mut |v| idx.add(key, v));
        }
    }

    /// Bytes the index holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.fields.iter().map(|(_, f)| f.heap_bytes()).sum()
    }

    /// A superset of the keys below `n` that match `filter`, or `None` when
    /// no indexed condition narrows it. `key_of` resolves `has_id`.
    pub fn candidates(
        &self,
        filter: &Filter,
        n: usize,
        key_of: &dyn Fn(&PointId) -> Option<u32>,
    ) -> Option<KeyBits> {
        let mut acc: Option<KeyBits> = None;
        let mut narrow = |b: KeyBits| match &mut acc {
            Some(a) => a.and(&b),
            None => acc = Some(b),
        };
        for c in &filter.must {
            if let Some(b) = self.condition(c, n, key_of) {
                narrow(b);
            }
        }
        // `should` narrows only if every alternative is indexed.
        if !filter.should.is_empty() {
            let mut any = KeyBits::new(n);
            let all = filter
                .should
                .iter()
                .all(|c| match self.condition(c, n, key_of) {
                    Some(b) => {
                        any.or(&b);
                        true
                    }
                    None => false,
                });
            if all {
                narrow(any);
            }
        }
        acc
    }

    /// Whether the candidates of `filter` are its matches exactly (but for
    /// stale keys): every condition is an exact match or range on an
    /// indexed field, or `has_id`, and none is negated.
    pub fn covers(&self, filter: &Filter) -> bool {
        let indexed = |c: &Condition| match c {
            Condition::HasId(_) => true,
            Condition::Nested(f) => self.covers(f),
            Condition::Field { key, test } => {
                matches!(
                    test,
                    FieldTest::Match(_) | FieldTest::Any(_) | FieldTest::Range(_)
                ) && self.fields.iter().any(|(path, _)| path == key)
            }
            Condition::IsEmpty(_) | Condition::IsNull(_) | Condition::Within { .. } => false,
        };
        filter.must_not.is_empty()
            && filter.min_should.is_none()
            && filter.must.iter().all(indexed)
            && filter.should.iter().all(indexed)
    }

    fn condition(
        &self,
        c: &Condition,
        n: usize,
        key_of: &dyn Fn(&PointId) -> Option<u32>,
    ) -> Option<KeyBits> {
        match c {
            Condition::HasId(ids) => {
                let mut b = KeyBits::new(n);
                ids.iter().filter_map(key_of).for_each(|k| b.insert(k));
                Some(b)
            }
            Condition::Nested(f) => self.candidates(f, n, key_of),
            Condition::Field { key, test } => self
                .fields
                .iter()
                .find(|(path, _)| path == key)
                .and_then(|(_, idx)| idx.test_bits(test, n)),
            Condition::IsEmpty(_) | Condition::IsNull(_) | Condition::Within { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Every point a filter matches is among the candidates, and the
    /// candidates of indexed exact conditions are exactly the matches.
    #[test]
    fn candidates_cover_every_match() {
        let docs: Vec<Map<String, Value>> = (0..500)
            .map(|i| {
                doc(json!({
                    "n": i % 17,
                    "f": (i % 9) as f64 * 0.5 - 2.0,
                    "neg0": if i % 5 == 0 { json!(-0.0) } else { json!(1) },
                    "tag": [format!("t{}", i % 4), "all"],
                    "flag": i % 2 == 0,
                    "deep": {"k": format!("k{}", i % 3)},
                    "free": i % 7,
                }))
            })
            .collect();
        let fields: Vec<String> = ["n", "f", "neg0", "tag", "flag", "deep.k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut idx = PayloadIndex::new(&fields);
        for (k, d) in docs.iter().enumerate() {
            idx.add(k as u32, d);
        }
        let key_of = |id: &PointId| match id {
            PointId::Num(n) if (*n as usize) < docs.len() => Some(*n as u32),
            _ => None,
        };
        let filters = [
            json!({"must": [{"key": "n", "match": {"value": 3}}]}),
            json!({"must": [{"key": "f", "range": {"gt": -1.0, "lte": 1.0}}]}),
            json!({"must": [{"key": "f", "range": {"gte": 1.0, "gt": 0.5, "lt": 2.0, "lte": 1.5}}]}),
            json!({"must": [{"key": "f", "range": {"gt": 2.0, "lt": 1.0}}]}),
            json!({"must": [{"key": "neg0", "match": {"value": 0}}]}),
            json!({"must": [{"key": "tag", "match": {"any": ["t1", "t3"]}}, {"key": "flag", "match": {"value": true}}]}),
            json!({"should": [{"key": "deep.k", "match": {"value": "k2"}}, {"has_id": [1, 4, 9999]}]}),
            json!({"should": [{"key": "n", "match": {"value": 1}}, {"key": "free", "match": {"value": 2}}]}),
            json!({"must": [{"key": "free", "match": {"value": 2}}, {"key": "n", "range": {"lt": 5}}], "must_not": [{"key": "flag", "match": {"value": false}}]}),
            json!({"must": [{"must": [{"key": "n", "match": {"value": 16}}]}]}),
        ];
        for fj in filters {
            let f = Filter::from_json(&fj).unwrap();
            let matching: Vec<u32> = docs
                .iter()
                .enumerate()
                .filter(|(k, d)| f.matches(&PointId::Num(*k as u64), Some(*d)))
                .map(|(k, _)| k as u32)
                .collect();
            match idx.candidates(&f, docs.len(), &key_of) {
                Some(c) => {
                    for k in &matching {
                        assert!(c.contains(*k), "{fj}: match {k} missing");
                    }
                    let only_indexed = f.must_not.is_empty() && !fj.to_string().contains("free");
                    assert_eq!(idx.covers(&f), only_indexed, "{fj}");
                    if only_indexed {
                        assert_eq!(c.iter().collect::<Vec<_>>(), matching, "{fj}");
                    }
                }
                None => assert!(fj.to_string().contains("free"), "{fj}: not narrowed"),
            }
        }
    }

    #[test]
    fn key_bits_iterate_in_order() {
        let mut b = KeyBits::new(200);
        for k in [199, 0, 64, 63, 130] {
            b.insert(k);
        }
        b.insert(500); // beyond the set: ignored
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 130, 199]);
        assert_eq!(b.len(), 5);
        assert!(b.contains(130) && !b.contains(131) && !b.contains(500));
    }
}
