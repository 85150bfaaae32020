//! The bytes of what the cluster stores and sends. A log entry is a fixed
//! header (format version, then its log id: term, leader node and index,
//! little-endian u64s, then its kind) followed by its payload in
//! MessagePack (maps with field names, so every optional field and every
//! self-describing value crosses unchanged; vectors as 32-bit floats).
//! Internal calls' bodies are MessagePack of the same kind. Entries written
//! as JSON by earlier builds (they start with `{`) are still read.
//!
//! Reading a command it cannot decode does not fail: the entry keeps its
//! log id (from the header) and carries [`Command::Undecodable`], which
//! the group's state machine refuses to apply (and a leader refuses to
//! send). A membership change it cannot decode is a storage error. Either
//! way one bad entry stops its group on this node, with the reason, and
//! nothing else.

use openraft::{CommittedLeaderId, EntryPayload, RaftLogId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Command, Entry, LogId, NodeId};

/// The entry format written now.
pub const VERSION: u8 = 2;
/// Version, term, node, index, kind.
pub const HEADER: usize = 1 + 8 + 8 + 8 + 1;

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// `value` in MessagePack, as internal calls and entry payloads carry it.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = rmp_serde::Serializer::new(&mut out)
        .with_struct_map()
        .with_human_readable();
    value.serialize(&mut s).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The value `bytes` hold (all of them).
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut rest = bytes;
    let mut d = rmp_serde::Deserializer::new(&mut rest).with_human_readable();
    let v = T::deserialize(&mut d).map_err(|e| e.to_string())?;
    drop(d);
    if rest.is_empty() {
        Ok(v)
    } else {
        Err("bytes after the value".into())
    }
}

/// An entry as the log stores it.
pub fn encode_entry(e: &Entry) -> Result<Vec<u8>, String> {
    let id = e.get_log_id();
    let mut out = Vec::with_capacity(HEADER + 64);
    out.push(VERSION);
    out.extend_from_slice(&id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&id.leader_id.node_id.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
    let body = match &e.payload {
        EntryPayload::Blank => {
            out.push(BLANK);
            return Ok(out);
        }
        EntryPayload::Normal(c) => {
            out.push(NORMAL);
            to_bytes(c)?
        }
        EntryPayload::Membership(m) => {
            out.push(MEMBERSHIP);
            to_bytes(m)?
        }
    };
    out.extend_from_slice(&body);
    Ok(out)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

/// The log id of a stored entry, from its header alone (or, for a JSON
/// entry, from its `log_id` field alone).
pub fn log_id_of(bytes: &[u8]) -> Result<LogId, String> {
    match bytes.first() {
        Some(&VERSION) if bytes.len() >= HEADER => Ok(LogId::new(
            CommittedLeaderId::new(u64_at(bytes, 1), u64_at(bytes, 9) as NodeId),
            u64_at(bytes, 17),
        )),
        Some(b'{') => {
            #[derive(serde::Deserialize)]
            struct Head {
                log_id: LogId,
            }
            serde_json::from_slice::<Head>(bytes)
                .map(|h| h.log_id)
                .map_err(|e| format!("a JSON entry without a readable log id: {e}"))
        }
        Some(v) => Err(format!(
            "an entry of unknown format {v} or a short header ({} bytes)",
            bytes.len()
        )),
        None => Err("an empty entry".into()),
    }
}

/// A stored entry. Fails where not even its log id can be read, or where a
/// membership change cannot be decoded; a command that cannot be decoded
/// comes back as [`Command::Undecodable`].
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    let log_id = log_id_of(bytes)?;
    let undecodable = |reason: String| Entry {
        log_id,
        payload: EntryPayload::Normal(Command::Undecodable {
            index: log_id.index,
            reason,
        }),
    };
    if bytes[0] == b'{' {
        return match serde_json::from_slice::<Entry>(bytes) {
            Ok(e) => Ok(e),
            Err(e) => {
                let membership = serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .is_some_and(|v| v["payload"].get("Membership").is_some());
                if membership {
                    Err(format!(
                        "log entry {} (a membership change) cannot be decoded: {e}",
                        log_id.index
                    ))
                } else {
                    Ok(undecodable(format!("JSON entry: {e}")))
                }
            }
        };
    }
    let body = &bytes[HEADER..];
    let payload = match bytes[HEADER - 1] {
        BLANK if body.is_empty() => EntryPayload::Blank,
        NORMAL => match from_bytes(body) {
            Ok(c) => EntryPayload::Normal(c),
            Err(e) => return Ok(undecodable(e)),
        },
        // A membership entry is read by openraft itself: one it cannot
        // have is a storage error (the group stops), never another entry.
        MEMBERSHIP => EntryPayload::Membership(from_bytes(body).map_err(|e| {
            format!(
                "log entry {} (a membership change) cannot be decoded: {e}",
                log_id.index
            )
        })?),
        k => return Ok(undecodable(format!("unknown entry kind {k}"))),
    };
    Ok(Entry { log_id, payload })
}

/// Why a command may not be proposed.
#[derive(Debug)]
pub enum Unfit {
    /// Its encoded size, over the bound.
    TooLarge(usize),
    /// It does not survive its own encoding (why).
    Unencodable(String),
}

/// Checks that `cmd` is at most `max` bytes once encoded (checked before
/// anything else is done with it) and survives its own encoding (encoded,
/// decoded and encoded again, it gives the same bytes); its encoded size.
/// A command that would not is never proposed, so no replica meets it.
pub fn round_trip(cmd: &Command, max: usize) -> Result<usize, Unfit> {
    if matches!(cmd, Command::Undecodable { .. }) {
        return Err(Unfit::Unencodable(
            "an undecodable entry is never proposed".into(),
        ));
    }
    let bytes = to_bytes(cmd).map_err(Unfit::Unencodable)?;
    if bytes.len() > max {
        return Err(Unfit::TooLarge(bytes.len()));
    }
    let back: Command =
        from_bytes(&bytes).map_err(|e| Unfit::Unencodable(format!("it does not decode: {e}")))?;
    let again = to_bytes(&back).map_err(Unfit::Unencodable)?;
    if again != bytes {
        return Err(Unfit::Unencodable(
            "it does not decode to the same value".into(),
        ));
    }
    Ok(bytes.len())
}
