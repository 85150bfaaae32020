//! The migration journal: `<data>/migration/journal.jsonl`, one JSON
//! record a line, appended and fsynced before the step it announces and
//! after the step it confirms. Read back, it tells where a run stands; a
//! torn last line (a crash mid-append) is ignored, as its step had not
//! been confirmed.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, ServiceError};

/// One collection of a run, as planned when it began.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub name: String,
    pub user: Uuid,
    /// The engine's name it gets: `user_{user}:{name}`.
    pub target: String,
    /// Its metadata before the run, restored exactly by a rollback.
    pub metadata: std::collections::BTreeMap<String, String>,
    pub dimension: usize,
    /// The Hub had a collection of this name for this user before the run:
    /// a rollback leaves that registration alone.
    pub hub_had: bool,
    /// When the collection was created: a rollback moves back only this
    /// collection, not one made under the name since.
    #[serde(default)]
    pub created_at_ms: u64,
    /// Its aliases before the run (stored names), moved with it.
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Record {
    Begin {
        run: String,
        at_ms: u64,
        items: Vec<Item>,
    },
    BackingUp {
        backup: String,
    },
    BackedUp {
        backup: String,
    },
    Renaming {
        name: String,
    },
    Renamed {
        name: String,
    },
    Registering {
        name: String,
    },
    Registered {
        name: String,
        hub_id: Uuid,
    },
    Reported {
        name: String,
    },
    Done,
    RollbackBegin,
    Unregistered {
        name: String,
    },
    Restored {
        name: String,
    },
    RolledBack,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("migration")
}

fn path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("journal.jsonl")
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// The records of the current journal, oldest first (none without one).
pub fn load(data_dir: &Path) -> Result<Vec<Record>> {
    let raw = match fs::read(path(data_dir)) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading the migration journal")(e)),
    };
    parse(&raw).map(|(records, _)| records)
}

/// The records of `raw`, and the length of the part they fill. The last
/// line may be torn (a crash mid-append: its step was never confirmed) and
/// is left out; any other line that does not parse is damage.
fn parse(raw: &[u8]) -> Result<(Vec<Record>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    let lines: Vec<&[u8]> = raw.split_inclusive(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let whole = line.ends_with(b"\n");
        match serde_json::from_slice::<Record>(line) {
            Ok(r) if whole => {
                out.push(r);
                at += line.len();
            }
            _ if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(ServiceError::Internal(format!(
                    "the migration journal is damaged at line {}: {e}",
                    i + 1
                )));
            }
            Ok(_) => unreachable!("only the last line can lack its newline"),
        }
    }
    Ok((out, at))
}

fn sync(dir: &Path) -> Result<()> {
    Ok(vectorizer_engine::fsutil::sync_dir(dir)?)
}

/// Appends `r` durably.
pub fn append(data_dir: &Path, r: &Record) -> Result<()> {
    let d = dir(data_dir);
    if !d.exists() {
        fs::create_dir_all(&d).map_err(io("creating the migration directory"))?;
        sync(data_dir)?;
    }
    let p = path(data_dir);
    // A torn last record is cut before the next one goes after it.
    let raw = fs::read(&p).unwrap_or_default();
    let (_, keep) = parse(&raw)?;
    if keep < raw.len() {
        let f = OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io("repairing the migration journal"))?;
        f.set_len(keep as u64)
            .and_then(|()| f.sync_all())
            .map_err(io("repairing the migration journal"))?;
    }
    let mut line = serde_json::to_vec(r).expect("serializable");
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(io("writing the migration journal"))?;
    f.write_all(&line)
        .and_then(|()| f.sync_data())
        .map_err(io("writing the migration journal"))?;
    sync(&d)
}

/// Sets a finished journal aside (`journal-<run>.jsonl`), so that the next
/// run starts a journal of its own.
pub fn archive(data_dir: &Path, run: &str) -> Result<()> {
    let to = dir(data_dir).join(format!("journal-{run}.jsonl"));
    fs::rename(path(data_dir), to).map_err(io("setting the finished journal aside"))?;
    sync(&dir(data_dir))
}
