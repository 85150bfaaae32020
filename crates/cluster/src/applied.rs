//! The last log id a shard replica applied, and the membership then, kept
//! durably in `raft-applied`: two slots of 4 KiB written in turn, each
//! `[u32 crc32][u32 len][JSON]`, made durable with `fdatasync`. A write
//! torn by a crash damages only the slot being written, and the other
//! still holds the previous mark, so opening takes the valid slot with the
//! higher log id.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::types::{LogId, Membership};

const SLOT: usize = 4096;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Mark {
    last: Option<LogId>,
    membership: Membership,
}

pub struct AppliedMark {
    file: File,
    mark: Mark,
    /// The slot the next write goes to.
    next: u64,
}

fn decode(slot: &[u8]) -> Option<Mark> {
    let crc = u32::from_le_bytes(slot.get(0..4)?.try_into().ok()?);
    let len = u32::from_le_bytes(slot.get(4..8)?.try_into().ok()?) as usize;
    let body = slot.get(8..8 + len)?;
    (len > 0 && crc32fast::hash(body) == crc)
        .then(|| serde_json::from_slice(body).ok())
        .flatten()
}

impl AppliedMark {
    pub fn open(path: &Path) -> Result<AppliedMark, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut buf = vec![0u8; 2 * SLOT];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        buf.truncate(n);
        let slots = [
            buf.get(..SLOT.min(buf.len())).and_then(decode),
            buf.get(SLOT..).and_then(decode),
        ];
        let index = |m: &Option<Mark>| m.as_ref().and_then(|m| m.last.map(|l| l.index));
        let newer = usize::from(index(&slots[1]) > index(&slots[0]));
        let mark = slots[newer].clone().unwrap_or_default();
        Ok(AppliedMark {
            file,
            mark,
            next: 1 - newer as u64,
        })
    }

    pub fn get(&self) -> (Option<LogId>, Membership) {
        (self.mark.last, self.mark.membership.clone())
    }

    /// Records a new mark, durably (blocking: call off the async runtime).
    pub fn set(&mut self, last: Option<LogId>, membership: Membership) -> std::io::Result<()> {
        let mark = Mark { last, membership };
        let body = serde_json::to_vec(&mark).map_err(std::io::Error::other)?;
        if body.len() + 8 > SLOT {
            return Err(std::io::Error::other("a membership too large to record"));
        }
        let mut slot = Vec::with_capacity(SLOT);
        slot.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
        slot.extend_from_slice(&body);
        slot.resize(SLOT, 0);
        self.file.write_all_at(&slot, self.next * SLOT as u64)?;
        self.file.sync_data()?;
        self.next = 1 - self.next;
        self.mark = mark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64) -> Option<LogId> {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            index,
        ))
    }

    #[test]
    fn the_newer_valid_slot_wins() {
        let dir = std::env::temp_dir().join(format!("vz-mark-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("raft-applied");
        let mut m = AppliedMark::open(&path).unwrap();
        assert_eq!(m.get().0, None);
        for i in 1..=5 {
            m.set(id(i), Membership::default()).unwrap();
        }
        drop(m);
        assert_eq!(AppliedMark::open(&path).unwrap().get().0, id(5));
        // Index 5 went to slot 1; tear it: slot 0 (index 4) is kept.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"garbage", SLOT as u64 + 10).unwrap();
        drop(f);
        let mut m = AppliedMark::open(&path).unwrap();
        assert_eq!(m.get().0, id(4));
        m.set(id(6), Membership::default()).unwrap();
        assert_eq!(AppliedMark::open(&path).unwrap().get().0, id(6));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
