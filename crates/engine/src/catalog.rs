//! The catalog: one small embedded store (`catalog.redb`) describing every
//! collection, so that nothing needs to open a collection, or list a
//! directory, to know what there is.
//!
//! What is the truth for each fact:
//! - The catalog, for what a collection *is*: that it exists, its name,
//!   config, creation time, metadata, and which directory holds its files.
//!   A collection's own `collection.json` is a copy, rewritten from the
//!   catalog when they differ at open.
//! - The collection's files, for what it *holds*: points and bytes. The
//!   catalog records them when a collection closes; a collection open for
//!   writing is marked dirty (durably, before its first change), and a dirty
//!   one is opened again at start to record its figures: only those, never
//!   every collection.
//!
//! Totals per namespace (the part of a name before its first `:`, or the
//! empty string) are kept in the same transactions, so that a namespace's
//! usage is one lookup.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::CollectionConfig;
use crate::error::{EngineError, Result};

/// Name -> [`Entry`] as JSON.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
/// Directory -> name: which directories hold a collection.
const DIRS: TableDefinition<&str, &str> = TableDefinition::new("dirs");
/// Namespace -> [`Totals`] as JSON.
const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
/// Names of collections whose recorded figures may be behind their files.
const DIRTY: TableDefinition<&str, ()> = TableDefinition::new("dirty");
/// `next_dir`: the number in the next directory name handed out.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// What the catalog knows of one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The directory under `collections/` holding its files.
    pub dir: String,
    pub config: CollectionConfig,
    pub created_at_ms: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Figures as of the last record (exact unless the entry is dirty).
    #[serde(default)]
    pub stats: Stats,
}

/// A collection's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub points: u64,
    /// Bytes of its files.
    pub disk_bytes: u64,
    /// Bytes as a function of its points alone (see
    /// [`Collection::logical_bytes`](crate::collection::Collection::logical_bytes)).
    pub logical_bytes: u64,
}

/// A namespace's collections and their figures summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub collections: u64,
    pub points: u64,
    pub disk_bytes: u64,
    pub logical_bytes: u64,
}

impl Totals {
    /// `self + (after - before)`, field by field (wrapping: the result is
    /// exact once every change is applied).
    pub fn moved(self, before: Totals, after: Totals) -> Totals {
        let f = |a: u64, b: u64, c: u64| a.wrapping_add(c.wrapping_sub(b));
        Totals {
            collections: f(self.collections, before.collections, after.collections),
            points: f(self.points, before.points, after.points),
            disk_bytes: f(self.disk_bytes, before.disk_bytes, after.disk_bytes),
            logical_bytes: f(
                self.logical_bytes,
                before.logical_bytes,
                after.logical_bytes,
            ),
        }
    }

    fn add(&mut self, s: &Stats, sign: i64) {
        let f = |a: u64, b: u64| {
            if sign >= 0 {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            }
        };
        self.collections = f(self.collections, 1);
        self.points = f(self.points, s.points);
        self.disk_bytes = f(self.disk_bytes, s.disk_bytes);
        self.logical_bytes = f(self.logical_bytes, s.logical_bytes);
    }
}

/// The namespace of a collection name: the part before its first `:`.
pub fn namespace(name: &str) -> &str {
    name.split_once(':').map_or("", |(ns, _)| ns)
}

/// One change in a catalog transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Adds or replaces the entry under a name. A replaced entry's
    /// directory no longer holds the collection.
    Put(String, Entry),
    Remove(String),
    /// Marks a name's figures as possibly behind its files, or not.
    Dirty(String, bool),
}

pub struct Catalog {
    /// `None` once closed (its database was closed while handles to its
    /// collections live on): every call then fails.
    db: std::sync::RwLock<Option<Store>>,
    /// A copy this catalog reads from, removed when it closes.
    copy: Option<std::path::PathBuf>,
}

/// The file, open for changes or for reading only (which leaves it
/// byte for byte as it was).
enum Store {
    Writable(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Drop for Catalog {
    fn drop(&mut self) {
        if let Some(copy) = &self.copy {
            let _ = std::fs::remove_file(copy);
        }
    }
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(format!("catalog: {e}"))
}

fn decode<T: for<'a> Deserialize<'a>>(raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(err)
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        Catalog::init(redb::Database::create(path).map_err(err)?)
    }

    fn init(db: redb::Database) -> Result<Catalog> {
        let w = db.begin_write().map_err(err)?;
        w.open_table(ENTRIES).map_err(err)?;
        w.open_table(DIRS).map_err(err)?;
        w.open_table(NAMESPACES).map_err(err)?;
        w.open_table(DIRTY).map_err(err)?;
        w.open_table(COUNTERS).map_err(err)?;
        w.commit().map_err(err)?;
        Ok(Catalog {
            db: std::sync::RwLock::new(Some(Store::Writable(db))),
            copy: None,
        })
    }

    /// Opens an existing catalog for reading only: nothing is written to
    /// it, and every change fails.
    /// A catalog a crash left needing repair is read from a repaired copy
    /// in the system's temporary directory (the original is repaired by
    /// the next open for changes).
    pub fn open_read_only(path: &Path) -> Result<Catalog> {
        match redb::ReadOnlyDatabase::open(path) {
            Ok(db) => Ok(Catalog {
                db: std::sync::RwLock::new(Some(Store::ReadOnly(db))),
                copy: None,
            }),
            Err(redb::DatabaseError::RepairAborted) => {
                static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let copy = std::env::temp_dir().join(format!(
                    "vectorizer-catalog-{}-{}.redb",
                    std::process::id(),
                    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::copy(path, &copy).map_err(err)?;
                let mut c = Catalog::open(&copy)?;
                c.copy = Some(copy);
                Ok(c)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Closes the file; every later call fails.
    pub fn close(&self) {
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(copy) = &self.copy {
            let _ = std::fs::remove_file(copy);
        }
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        let g = self.db.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref().ok_or_else(|| err("closed"))? {
            Store::Writable(db) => db.begin_read(),
            Store::ReadOnly(db) => db.begin_read(),
        }
        .map_err(err)
    }

    fn write(&self) -> Result<redb::WriteTransaction> {
        let g = self.db.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref().ok_or_else(|| err("closed"))? {
            Store::Writable(db) => db.begin_write().map_err(err),
            Store::ReadOnly(_) => Err(err("opened for reading only")),
        }
    }

    /// A catalog held in memory only (for a database opened for looking
    /// only, whose directory has no catalog file yet).
    pub fn in_memory() -> Result<Catalog> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?;
        Catalog::init(db)
    }

    /// Whether a catalog file exists at `path`.
    pub fn exists(path: &Path) -> bool {
        path.is_file()
    }

    pub fn get(&self, name: &str) -> Result<Option<Entry>> {
        let r = self.read()?;
        let t = r.open_table(ENTRIES).map_err(err)?;
        t.get(name)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Entries whose name starts with `prefix`, by name.
    pub fn with_prefix(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let r = self.read()?;
        let t = r.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Number of collections.
    pub fn count(&self) -> Result<u64> {
        let r = self.read()?;
        r.open_table(ENTRIES).map_err(err)?.len().map_err(err)
    }

    /// The name whose files `dir` holds.
    pub fn name_of_dir(&self, dir: &str) -> Result<Option<String>> {
        let r = self.read()?;
        let t = r.open_table(DIRS).map_err(err)?;
        Ok(t.get(dir).map_err(err)?.map(|v| v.value().to_owned()))
    }

    /// A namespace's recorded totals.
    pub fn totals(&self, ns: &str) -> Result<Totals> {
        let r = self.read()?;
        let t = r.open_table(NAMESPACES).map_err(err)?;
        t.get(ns)
            .map_err(err)?
            .map_or(Ok(Totals::default()), |v| decode(v.value()))
    }

    /// Every namespace's recorded totals.
    pub fn all_totals(&self) -> Result<Vec<(String, Totals)>> {
        let r = self.read()?;
        let t = r.open_table(NAMESPACES).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Names marked dirty.
    pub fn dirty(&self) -> Result<Vec<String>> {
        let r = self.read()?;
        let t = r.open_table(DIRTY).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            out.push(item.map_err(err)?.0.value().to_owned());
        }
        Ok(out)
    }

    /// Hands out a fresh directory name, durably (never handed out again).
    pub fn next_dir(&self) -> Result<String> {
        let w = self.write()?;
        let n = {
            let mut t = w.open_table(COUNTERS).map_err(err)?;
            let n = t.get("next_dir").map_err(err)?.map_or(0, |v| v.value());
            t.insert("next_dir", n + 1).map_err(err)?;
            n
        };
        w.commit().map_err(err)?;
        Ok(format!("@{n}"))
    }

    /// Applies `changes` in one transaction: all or none, after a crash
    /// too. Durable when this returns unless `durable` is false (then it
    /// is made durable by the next durable commit, or lost by a crash).
    /// Returns each changed namespace's totals before and after.
    pub fn commit(
        &self,
        changes: &[Change],
        durable: bool,
    ) -> Result<BTreeMap<String, (Totals, Totals)>> {
        let mut w = self.write()?;
        if !durable {
            w.set_durability(Durability::None).map_err(err)?;
        }
        let moved = {
            let mut entries = w.open_table(ENTRIES).map_err(err)?;
            let mut dirs = w.open_table(DIRS).map_err(err)?;
            let mut spaces = w.open_table(NAMESPACES).map_err(err)?;
            let mut dirty = w.open_table(DIRTY).map_err(err)?;
            let total = |spaces: &redb::Table<&str, &[u8]>, ns: &str| -> Result<Totals> {
                spaces
                    .get(ns)
                    .map_err(err)?
                    .map_or(Ok(Totals::default()), |v| decode(v.value()))
            };
            let mut changed: BTreeMap<String, Totals> = BTreeMap::new();
            let mut before: BTreeMap<String, Totals> = BTreeMap::new();
            for c in changes {
                let (name, new) = match c {
                    Change::Put(n, e) => (n, Some(e)),
                    Change::Remove(n) => (n, None),
                    Change::Dirty(n, on) => {
                        if *on {
                            dirty.insert(n.as_str(), ()).map_err(err)?;
                        } else {
                            dirty.remove(n.as_str()).map_err(err)?;
                        }
                        continue;
                    }
                };
                let ns = namespace(name).to_owned();
                let mut t = match changed.get(&ns) {
                    Some(t) => *t,
                    None => {
                        let t = total(&spaces, &ns)?;
                        before.insert(ns.clone(), t);
                        t
                    }
                };
                let old: Option<Entry> = entries
                    .get(name.as_str())
                    .map_err(err)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                if let Some(old) = &old {
                    t.add(&old.stats, -1);
                    dirs.remove(old.dir.as_str()).map_err(err)?;
                }
                match new {
                    Some(e) => {
                        t.add(&e.stats, 1);
                        let raw = serde_json::to_vec(e).expect("serializable");
                        entries.insert(name.as_str(), raw.as_slice()).map_err(err)?;
                        dirs.insert(e.dir.as_str(), name.as_str()).map_err(err)?;
                    }
                    None => {
                        entries.remove(name.as_str()).map_err(err)?;
                        dirty.remove(name.as_str()).map_err(err)?;
                    }
                }
                changed.insert(ns, t);
            }
            for (ns, t) in &changed {
                if t.collections == 0 {
                    spaces.remove(ns.as_str()).map_err(err)?;
                } else {
                    let raw = serde_json::to_vec(t).expect("serializable");
                    spaces.insert(ns.as_str(), raw.as_slice()).map_err(err)?;
                }
            }
            changed
                .into_iter()
                .map(|(ns, after)| {
                    let b = before.get(&ns).copied().unwrap_or_default();
                    (ns, (b, after))
                })
                .collect()
        };
        w.commit().map_err(err)?;
        Ok(moved)
    }

    /// Whether `name` is marked dirty.
    pub fn is_dirty(&self, name: &str) -> Result<bool> {
        let r = self.read()?;
        let t = r.open_table(DIRTY).map_err(err)?;
        Ok(t.get(name).map_err(err)?.is_some())
    }

    /// Every entry, by name, a page at a time: `after` is the last name of
    /// the previous page.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Entry)>> {
        let r = self.read()?;
        let t = r.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        let range = match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        }
        .map_err(err)?;
        for item in range.take(limit) {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CollectionConfig, Metric};

    fn entry(dir: &str, points: u64) -> Entry {
        Entry {
            dir: dir.into(),
            config: CollectionConfig::new(3, Metric::Manhattan),
            created_at_ms: 7,
            metadata: BTreeMap::from([("owner_id".into(), "u".into())]),
            stats: Stats {
                points,
                disk_bytes: points * 10,
                logical_bytes: points * 9,
            },
        }
    }

    #[test]
    fn changes_keep_namespace_totals_and_survive_reopening() {
        let dir = vectorizer_testkit::TempDir::new("catalog");
        let path = dir.path().join("catalog.redb");
        {
            let c = Catalog::open(&path).unwrap();
            assert_eq!(c.next_dir().unwrap(), "@0");
            c.commit(
                &[
                    Change::Put("u1:a".into(), entry("@0", 5)),
                    Change::Put("u1:b".into(), entry("@1", 2)),
                    Change::Put("plain".into(), entry("plain", 1)),
                    Change::Dirty("u1:a".into(), true),
                ],
                true,
            )
            .unwrap();
            // Replacing an entry moves its figures, and frees its old directory.
            c.commit(&[Change::Put("u1:b".into(), entry("@2", 4))], true)
                .unwrap();
            c.commit(&[Change::Remove("u1:a".into())], false).unwrap();
            c.commit(&[], true).unwrap();
        }
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.next_dir().unwrap(), "@1");
        assert_eq!(c.count().unwrap(), 2);
        assert_eq!(c.get("u1:b").unwrap(), Some(entry("@2", 4)));
        assert_eq!(c.name_of_dir("@1").unwrap(), None);
        assert_eq!(c.name_of_dir("@2").unwrap().as_deref(), Some("u1:b"));
        assert_eq!(
            c.totals("u1").unwrap(),
            Totals {
                collections: 1,
                points: 4,
                disk_bytes: 40,
                logical_bytes: 36
            }
        );
        assert_eq!(c.totals("").unwrap().collections, 1);
        assert!(c.dirty().unwrap().is_empty(), "a removed name is not dirty");
        assert_eq!(
            c.with_prefix("u1:").unwrap(),
            vec![("u1:b".to_owned(), entry("@2", 4))]
        );
        let names: Vec<String> = c
            .page(Some("plain"), 10)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["u1:b"]);
    }

    #[test]
    fn an_entry_round_trips_with_every_field() {
        let e = entry("@9", 3);
        let raw = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<Entry>(&raw).unwrap(), e);
        assert_eq!(
            serde_json::to_vec(&serde_json::from_slice::<Entry>(&raw).unwrap()).unwrap(),
            raw
        );
    }
}
