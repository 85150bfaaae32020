//! Snapshots: the index file and the point table at one log sequence number,
//! so that opening a collection loads them and replays only newer records.
//!
//! Layout inside a collection directory:
//! - `snap-<seq>/index.hnsw`: the graph and the vectors (see `index`);
//! - `snap-<seq>/points.bin`: magic `VZPTS\0\0\x01`, `u64 seq`, `u64 count`,
//!   then per point `u64 key`, id, payload (see `codec`);
//! - `CURRENT`: JSON naming the live snapshot with both files' CRC32s.
//!   It is replaced atomically only after both files are durable, so a crash
//!   mid-snapshot leaves the previous snapshot in force.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::{Dec, Enc};
use crate::error::{EngineError, Result};
use crate::fsutil::{sync_dir, write_atomic};
use crate::id::PointId;
use crate::index::VectorIndex;
use crate::payload::Payload;

const MAGIC: &[u8; 8] = b"VZPTS\0\0\x01";
const CURRENT: &str = "CURRENT";
const INDEX_FILE: &str = "index.hnsw";
const POINTS_FILE: &str = "points.bin";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    dir: String,
    seq: u64,
    index_crc: u32,
    points_crc: u32,
}

/// One row of the point table: index key, id, payload.
pub type PointRow = (u64, PointId, Option<Payload>);

/// A snapshot read back from disk.
pub struct Loaded {
    pub seq: u64,
    pub index_path: PathBuf,
    pub points: Vec<PointRow>,
    /// Bytes of the snapshot's files.
    pub bytes: u64,
}

fn file_crc(path: &Path) -> Result<(u32, u64)> {
    let mut f = File::open(path).map_err(EngineError::io("opening a snapshot file"))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(EngineError::io("reading a snapshot file"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize(), total))
}

/// Writes a snapshot at `seq` and makes it the live one. Returns its size.
/// The caller guarantees that nothing changes the index meanwhile.
pub fn write<'a>(
    dir: &Path,
    seq: u64,
    index: &VectorIndex,
    points: impl Iterator<Item = (u64, &'a PointId, Option<Map<String, Value>>)>,
    count: usize,
) -> Result<u64> {
    let name = format!("snap-{seq:020}");
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(EngineError::io("creating a snapshot directory"))?;

    let index_path = tmp.join(INDEX_FILE);
    index.save(&index_path)?;

    let points_path = tmp.join(POINTS_FILE);
    {
        let f = File::create(&points_path).map_err(EngineError::io("creating the point table"))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut e = Enc::default();
        e.buf.extend_from_slice(MAGIC);
        e.u64(seq);
        e.u64(count as u64);
        for (key, id, payload) in points {
            e.u64(key);
            e.id(id);
            e.payload(payload.as_ref());
            if e.buf.len() > 1 << 20 {
                w.write_all(&e.buf)
                    .map_err(EngineError::io("writing the point table"))?;
                e.buf.clear();
            }
        }
        w.write_all(&e.buf)
            .map_err(EngineError::io("writing the point table"))?;
        let f = w.into_inner().map_err(|e| EngineError::Io {
            context: "writing the point table".into(),
            source: e.into_error(),
        })?;
        f.sync_all()
            .map_err(EngineError::io("syncing the point table"))?;
    }
    sync_dir(&tmp)?;
    let (index_crc, index_len) = file_crc(&index_path)?;
    let (points_crc, points_len) = file_crc(&points_path)?;

    let final_dir = dir.join(&name);
    let _ = fs::remove_dir_all(&final_dir);
    fs::rename(&tmp, &final_dir).map_err(EngineError::io("publishing a snapshot"))?;
    sync_dir(dir)?;
    publish(dir, &name, seq, index_crc, points_crc)?;
    remove_stale(dir, Some(&name));
    Ok(index_len + points_len)
}

/// Removes snapshot directories other than `keep` (older ones and torn
/// temporaries). Best effort: leftovers are retried at the next open.
fn remove_stale(dir: &Path, keep: Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap-") && Some(name.as_ref()) != keep {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Reads the live snapshot, if any, checking both files' checksums.
pub fn load(dir: &Path) -> Result<Option<Loaded>> {
    let cur_path = dir.join(CURRENT);
    let raw = match fs::read(&cur_path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            remove_stale(dir, None);
            return Ok(None);
        }
        Err(e) => {
            return Err(EngineError::Io {
                context: "reading CURRENT".into(),
                source: e,
            });
        }
    };
    let cur: Current = serde_json::from_slice(&raw)
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", cur_path.display())))?;
    remove_stale(dir, Some(&cur.dir));
    let snap = dir.join(&cur.dir);
    let index_path = snap.join(INDEX_FILE);
    let points_path = snap.join(POINTS_FILE);
    let (index_crc, index_len) = file_crc(&index_path)?;
    if index_crc != cur.index_crc {
        return Err(EngineError::Corrupt(format!(
            "{} fails its checksum",
            index_path.display()
        )));
    }
    let data = fs::read(&points_path).map_err(EngineError::io("reading the point table"))?;
    if crc32fast::hash(&data) != cur.points_crc {
        return Err(EngineError::Corrupt(format!(
            "{} fails its checksum",
            points_path.display()
        )));
    }
    let corrupt = || EngineError::Corrupt(format!("{} does not decode", points_path.display()));
    let mut d = Dec::new(&data);
    if d.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(corrupt());
    }
    let seq = d.u64().ok_or_else(corrupt)?;
    let count = d.u64().ok_or_else(corrupt)? as usize;
    // A row takes at least 14 bytes (key, id tag and number... or UUID,
    // payload length): the count claimed cannot reserve more than the file
    // can hold.
    let mut points = Vec::with_capacity(count.min(data.len() / 14));
    for _ in 0..count {
        let key = d.u64().ok_or_else(corrupt)?;
        let id = d.id().ok_or_else(corrupt)?;
        // Converted as decoded, so the JSON form of every payload is never
        // in memory at once.
        let payload = d
            .payload()
            .ok_or_else(corrupt)?
            .as_ref()
            .map(Payload::from_map);
        points.push((key, id, payload));
    }
    if seq != cur.seq || !d.is_empty() {
        return Err(corrupt());
    }
    Ok(Some(Loaded {
        seq,
        index_path,
        points,
        bytes: index_len + data.len() as u64,
    }))
}

/// The point count a `points.bin` file's header states (its rows are
/// checked against it when the collection is opened).
pub fn points_in(path: &Path) -> Result<u64> {
    let corrupt = || EngineError::Corrupt(format!("{} does not decode", path.display()));
    let mut head = [0u8; 24];
    File::open(path)
        .map_err(EngineError::io("opening the point table"))?
        .read_exact(&mut head)
        .map_err(|_| corrupt())?;
    if &head[..8] != MAGIC {
        return Err(corrupt());
    }
    Ok(u64::from_le_bytes(
        head[16..24].try_into().expect("8 bytes"),
    ))
}

/// The files of a snapshot, as a checkpoint or an import sees them.
pub const FILES: [&str; 2] = [INDEX_FILE, POINTS_FILE];

/// The live snapshot's directory and sequence number, if there is one.
pub fn current(dir: &Path) -> Result<Option<(PathBuf, u64)>> {
    match fs::read(dir.join(CURRENT)) {
        Ok(raw) => {
            let cur: Current = serde_json::from_slice(&raw)
                .map_err(|e| EngineError::Corrupt(format!("{}: {e}", dir.display())))?;
            Ok(Some((dir.join(cur.dir), cur.seq)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::Io {
            context: "reading CURRENT".into(),
            source: e,
        }),
    }
}

/// Makes the files in `from` (`index.hnsw`, `points.bin`, moved, so `from`
/// must be on the same file system) the live snapshot of the collection
/// directory `dir`, at `seq`. Nothing is checked here beyond the files'
/// presence: opening the collection checks and decodes them.
pub fn install(dir: &Path, from: &Path, seq: u64) -> Result<()> {
    let name = format!("snap-{seq:020}");
    let snap = dir.join(&name);
    fs::create_dir(&snap).map_err(EngineError::io("creating a snapshot directory"))?;
    for f in FILES {
        fs::rename(from.join(f), snap.join(f))
            .map_err(EngineError::io("placing a snapshot file"))?;
        File::open(snap.join(f))
            .and_then(|f| f.sync_all())
            .map_err(EngineError::io("syncing a snapshot file"))?;
    }
    sync_dir(&snap)?;
    sync_dir(dir)?;
    let (index_crc, _) = file_crc(&snap.join(INDEX_FILE))?;
    let (points_crc, _) = file_crc(&snap.join(POINTS_FILE))?;
    publish(dir, &name, seq, index_crc, points_crc)
}

/// Makes snapshot directory `name` the live one: `CURRENT` replaced
/// atomically with its sequence number and its files' CRC32s.
fn publish(dir: &Path, name: &str, seq: u64, index_crc: u32, points_crc: u32) -> Result<()> {
    let current = Current {
        dir: name.to_owned(),
        seq,
        index_crc,
        points_crc,
    };
    write_atomic(
        &dir.join(CURRENT),
        &serde_json::to_vec(&current).expect("serializable"),
    )
}
