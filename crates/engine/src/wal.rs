//! The write-ahead log: one append-only file per collection of checksummed
//! records, fsynced before a write is acknowledged.
//!
//! File: the 8-byte magic `VZWAL\0\0\x01`, then records
//! `[u32 body_len][u32 crc32(body)][body]`, body = `[u64 seq][u8 kind][...]`.
//! Opening reads every record; the first one that is short, fails its
//! checksum, does not decode, or breaks the sequence order ends the log, and
//! the file is cut there (a torn tail from a crash, or a damaged one).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::codec::{Dec, Enc};
use crate::error::{EngineError, Result};
use crate::fsutil::sync_dir;
use crate::id::PointId;

/// Version 2 added the payload record (kind 3): a binary that knows only
/// version 1 refuses such a log instead of cutting it at the first record
/// it does not know.
const MAGIC: &[u8; 8] = b"VZWAL\0\0\x02";
const MAGIC_V1: &[u8; 8] = b"VZWAL\0\0\x01";
/// The largest record a write may append (well under what opening reads).
pub const MAX_WRITE: usize = 256 << 20;
const HEADER: u64 = MAGIC.len() as u64;
/// No record is larger than this; a bigger length field is damage.
const MAX_RECORD: usize = 1 << 30;

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_PAYLOAD: u8 = 3;

/// A point as the log and the engine carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Option<Map<String, Value>>,
}

/// One logged change; each record is applied whole or not at all.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    Upsert(Vec<Point>),
    Delete(Vec<PointId>),
    /// New payloads (the whole payload, or none) of existing points.
    SetPayload(Vec<(PointId, Option<Map<String, Value>>)>),
}

#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub op: WalOp,
}

/// What opening found at the end of the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub records: usize,
    /// Bytes cut from the tail because they did not form a good record.
    pub truncated_bytes: u64,
}

pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Wal {
    /// Opens (creating if missing) the log and returns its good records.
    pub fn open(path: &Path) -> Result<(Wal, Vec<WalRecord>, Recovery)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(EngineError::io("opening the write-ahead log"))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(EngineError::io("reading the write-ahead log"))?;
        let mut recovery = Recovery::default();
        if data.len() < MAGIC.len() {
            // Creation was torn (or this is a new file): start it afresh.
            file.set_len(0)
                .map_err(EngineError::io("resetting the write-ahead log"))?;
            file.write_all(MAGIC)
                .map_err(EngineError::io("writing the log header"))?;
            file.sync_all()
                .map_err(EngineError::io("syncing the write-ahead log"))?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            recovery.truncated_bytes = data.len() as u64;
            let wal = Wal {
                file,
                path: path.to_owned(),
                len: HEADER,
            };
            return Ok((wal, Vec::new(), recovery));
        }
        if &data[..MAGIC.len()] != MAGIC && &data[..MAGIC.len()] != MAGIC_V1 {
            return Err(EngineError::Corrupt(format!(
                "{} is not a write-ahead log",
                path.display()
            )));
        }
        let mut records = Vec::new();
        let mut pos = MAGIC.len();
        let mut last_seq = 0;
        while let Some((rec, next)) = read_record(&data, pos)? {
            if rec.seq <= last_seq {
                break;
            }
            last_seq = rec.seq;
            records.push(rec);
            pos = next;
        }
        if pos < data.len() {
            recovery.truncated_bytes = (data.len() - pos) as u64;
            tracing::warn!(
                log = %path.display(),
                cut_bytes = recovery.truncated_bytes,
                "write-ahead log tail did not form a good record; cutting it"
            );
            file.set_len(pos as u64)
                .map_err(EngineError::io("cutting the log tail"))?;
            file.sync_all()
                .map_err(EngineError::io("syncing the write-ahead log"))?;
        }
        recovery.records = records.len();
        Ok((
            Wal {
                file,
                path: path.to_owned(),
                len: pos as u64,
            },
            records,
            recovery,
        ))
    }

    /// Appends one record and makes it durable before returning.
    pub fn append(&mut self, seq: u64, op: &WalOp) -> Result<u64> {
        let body = encode_body(seq, op);
        if body.len() > MAX_WRITE {
            return Err(EngineError::InvalidRequest(format!(
                "the write would take {} bytes in the log, at most {MAX_WRITE}: write less at once",
                body.len()
            )));
        }
        let mut rec = Vec::with_capacity(body.len() + 8);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        let written = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Leave no half record behind for a later append to follow.
            let _ = self.file.set_len(self.len);
            return Err(EngineError::Io {
                context: "appending to the write-ahead log".into(),
                source: e,
            });
        }
        self.len += rec.len() as u64;
        Ok(rec.len() as u64)
    }

    /// Bytes in the file, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER
    }

    /// Replaces the log with an empty one (after a snapshot made its records
    /// redundant). Atomic: a crash leaves either the old or the new file.
    pub fn reset(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("log.new");
        {
            let mut f = File::create(&tmp).map_err(EngineError::io("creating a new log"))?;
            f.write_all(MAGIC)
                .map_err(EngineError::io("writing the log header"))?;
            f.sync_all()
                .map_err(EngineError::io("syncing the new log"))?;
        }
        fs::rename(&tmp, &self.path).map_err(EngineError::io("replacing the log"))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(EngineError::io("reopening the log"))?;
        self.len = HEADER;
        Ok(())
    }
}

/// The record at `pos`, `None` where the log's good part ends (short, bad
/// checksum, undecodable), or an error for a whole record of a kind this
/// binary does not know (cutting there would lose every later write).
fn read_record(data: &[u8], pos: usize) -> Result<Option<(WalRecord, usize)>> {
    let body = (|| {
        let mut d = Dec::new(data.get(pos..)?);
        let len = d.u32()? as usize;
        let crc = d.u32()?;
        if len > MAX_RECORD {
            return None;
        }
        let body = d.take(len)?;
        (crc32fast::hash(body) == crc).then_some(body)
    })();
    let Some(body) = body else { return Ok(None) };
    if let Some(kind) = body.get(8)
        && ![KIND_UPSERT, KIND_DELETE, KIND_PAYLOAD].contains(kind)
    {
        return Err(EngineError::Corrupt(format!(
            "the write-ahead log holds a record of kind {kind}, which this version does not know"
        )));
    }
    Ok(decode_body(body).map(|rec| (rec, pos + 8 + body.len())))
}

fn encode_body(seq: u64, op: &WalOp) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(seq);
    match op {
        WalOp::Upsert(points) => {
            e.u8(KIND_UPSERT);
            e.u32(points.len() as u32);
            for p in points {
                e.id(&p.id);
                e.f32s(&p.vector);
                e.payload(p.payload.as_ref());
            }
        }
        WalOp::Delete(ids) => {
            e.u8(KIND_DELETE);
            e.u32(ids.len() as u32);
            ids.iter().for_each(|id| e.id(id));
        }
        WalOp::SetPayload(changes) => {
            e.u8(KIND_PAYLOAD);
            e.u32(changes.len() as u32);
            for (id, payload) in changes {
                e.id(id);
                e.payload(payload.as_ref());
            }
        }
    }
    e.buf
}

fn decode_body(body: &[u8]) -> Option<WalRecord> {
    let mut d = Dec::new(body);
    let seq = d.u64()?;
    let op = match d.u8()? {
        KIND_UPSERT => {
            let n = d.u32()? as usize;
            let mut points = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let id = d.id()?;
                let vector = d.f32s()?;
                let payload = d.payload()?;
                points.push(Point {
                    id,
                    vector,
                    payload,
                });
            }
            WalOp::Upsert(points)
        }
        KIND_DELETE => {
            let n = d.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                ids.push(d.id()?);
            }
            WalOp::Delete(ids)
        }
        KIND_PAYLOAD => {
            let n = d.u32()? as usize;
            let mut changes = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let id = d.id()?;
                changes.push((id, d.payload()?));
            }
            WalOp::SetPayload(changes)
        }
        _ => return None,
    };
    d.is_empty().then_some(WalRecord { seq, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(i: u64) -> Point {
        let mut m = Map::new();
        m.insert("i".into(), Value::from(i));
        Point {
            id: PointId::Num(i),
            vector: vec![i as f32, 1.0],
            payload: Some(m),
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("vz-wal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal.log");
        let (mut wal, recs, _) = Wal::open(&path).unwrap();
        assert!(recs.is_empty());
        wal.append(1, &WalOp::Upsert(vec![pt(1), pt(2)])).unwrap();
        wal.append(2, &WalOp::Delete(vec![PointId::Num(1)]))
            .unwrap();
        let good_len = wal.len();
        wal.append(3, &WalOp::Upsert(vec![pt(3)])).unwrap();
        drop(wal);
        let (mut wal, recs, _) = Wal::open(&path).unwrap();
        assert_eq!(recs.len(), 3);
        // A payload change round-trips too.
        let change = WalOp::SetPayload(vec![
            (PointId::Num(2), pt(9).payload),
            (PointId::Num(3), None),
        ]);
        wal.append(4, &change).unwrap();
        drop(wal);
        let (_, recs, _) = Wal::open(&path).unwrap();
        assert_eq!(recs[3].op, change);
        // Cut the last record in half.
        let full = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        let (wal, recs, rec) = Wal::open(&path).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].op, WalOp::Delete(vec![PointId::Num(1)]));
        assert!(wal.len() > good_len);
        assert!(rec.truncated_bytes > 0);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A whole record of a kind this version does not know stops the open
    /// (a cut there would lose every later write); a version-1 log opens.
    #[test]
    fn unknown_kinds_refuse_and_old_logs_open() {
        let dir = std::env::temp_dir().join(format!("vz-wal-kind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal.log");
        let mut body = 7u64.to_le_bytes().to_vec();
        body.push(9);
        let mut file = MAGIC.to_vec();
        file.extend((body.len() as u32).to_le_bytes());
        file.extend(crc32fast::hash(&body).to_le_bytes());
        file.extend(&body);
        fs::write(&path, &file).unwrap();
        assert!(matches!(Wal::open(&path), Err(EngineError::Corrupt(_))));
        fs::write(&path, MAGIC_V1).unwrap();
        let (_, recs, _) = Wal::open(&path).unwrap();
        assert!(recs.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
