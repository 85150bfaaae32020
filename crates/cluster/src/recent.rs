//! The entries a group's leader read lately to send to its followers,
//! decoded, by index. A leader reads the same entries again for every
//! follower and every retry; decoding a large write each time would cost
//! more than sending it. An entry is used only while the log holds the
//! same log id at its index; a truncation, a purge or a reset removes
//! entries, and the cache holds at most [`RECENT_BYTES`] of encoded
//! entries (the oldest go first).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::types::Entry;

/// The most the cache holds, counted as the entries' encoded size.
pub const RECENT_BYTES: usize = 32 << 20;

#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry at `index`, if cached.
    pub fn get(&self, index: u64) -> Option<Entry> {
        self.inner().entries.get(&index).map(|(e, _)| e.clone())
    }

    /// Caches `entry`, `bytes` long once encoded, at `index`.
    pub fn put(&self, index: u64, entry: Entry, bytes: usize) {
        if bytes > RECENT_BYTES {
            return;
        }
        let mut i = self.inner();
        if let Some((_, old)) = i.entries.insert(index, (entry, bytes)) {
            i.bytes -= old;
        }
        i.bytes += bytes;
        while i.bytes > RECENT_BYTES {
            let Some((_, (_, b))) = i.entries.pop_first() else {
                break;
            };
            i.bytes -= b;
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    pub fn remove_from(&self, index: u64) {
        let mut i = self.inner();
        let gone = i.entries.split_off(&index);
        i.bytes -= gone.values().map(|(_, b)| b).sum::<usize>();
    }

    /// Forgets the entries up to `index` (a purge).
    pub fn remove_to(&self, index: u64) {
        let mut i = self.inner();
        let kept = i.entries.split_off(&(index + 1));
        let gone = std::mem::replace(&mut i.entries, kept);
        i.bytes -= gone.values().map(|(_, b)| b).sum::<usize>();
    }

    pub fn clear(&self) {
        *self.inner() = Inner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn e(i: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn the_cache_follows_the_log_and_its_budget() {
        let r = Recent::default();
        for i in 1..=10 {
            r.put(i, e(i), 10);
        }
        r.remove_from(8);
        assert!(r.get(8).is_none() && r.get(7).is_some());
        r.remove_to(3);
        assert!(r.get(3).is_none() && r.get(4).is_some());
        assert_eq!(r.inner().bytes, 40);
        r.put(5, e(5), 20);
        assert_eq!(r.inner().bytes, 50);
        // Over the budget: the oldest go.
        r.put(100, e(100), RECENT_BYTES - 30);
        assert!(r.get(4).is_none() && r.get(100).is_some());
        assert!(r.inner().bytes <= RECENT_BYTES);
        r.put(200, e(200), RECENT_BYTES + 1);
        assert!(r.get(200).is_none());
        r.clear();
        assert!(r.get(100).is_none());
    }
}
