//! The MCP operation log: one JSON line per tool call, written by a thread
//! of its own to a size-rotated file per caller (`mcp-ops/<user id>.log`),
//! so that no tenant's calls can rotate another's records away. A record
//! holds only bounded, validated fields: never vectors, payloads, keys or
//! an unchecked name. A tool call never waits for the disk: when the queue
//! is full or a write fails, the record is dropped and counted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::Serialize;

/// Records waiting for the writer; more are dropped.
const QUEUE: usize = 4096;
/// The writer's pause after each batch. While it pauses, a tool call's
/// record is a queue push with no thread to wake; the queue holds far
/// more than a pause's worth of calls.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The log's directory in the data directory.
pub const DIR: &str = "mcp-ops";
/// What a record says of a collection argument that is not a valid name.
pub const INVALID_NAME: &str = "(invalid name)";
/// Longest record written; a longer one is dropped.
const MAX_LINE: usize = 1024;
/// Files the writer keeps open at once.
const MAX_OPEN: usize = 64;

/// Whose calls a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    /// A tenant, by user id.
    Tenant(uuid::Uuid),
    /// The one local user (the Hub off, or stdio).
    Local,
    /// A call whose caller could not be identified.
    Unidentified,
}

impl Who {
    fn file_stem(self) -> String {
        match self {
            Who::Tenant(u) => u.to_string(),
            Who::Local => "local".into(),
            Who::Unidentified => "unidentified".into(),
        }
    }
}

/// The current log file of `who` under data directory `data_dir`.
pub fn path(data_dir: &Path, who: Who) -> PathBuf {
    data_dir.join(DIR).join(format!("{}.log", who.file_stem()))
}

/// One tool call.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub request_id: Option<&'a str>,
    pub user_id: Option<uuid::Uuid>,
    pub access_key_id: Option<uuid::Uuid>,
    pub tool: &'a str,
    pub collection: Option<&'a str>,
    /// `ok`, or the error's stable code.
    pub outcome: &'a str,
    pub latency_ms: f64,
    /// Points, hits or collections in the result, where it has them.
    pub results: Option<usize>,
}

#[derive(Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The log's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct OpLog {
    tx: Option<SyncSender<(Who, String)>>,
    counts: Arc<Counts>,
}

/// Where and how large.
#[derive(Debug, Clone)]
pub struct OpLogOptions {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub max_files: usize,
}

impl OpLog {
    /// A log that writes nothing (and counts nothing as dropped).
    pub fn disabled() -> OpLog {
        OpLog {
            tx: None,
            counts: Arc::default(),
        }
    }

    /// Starts the writer thread. The file is opened lazily, so a disk that
    /// refuses does not stop the server: its records are counted dropped.
    pub fn start(opts: OpLogOptions) -> OpLog {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let spawned = std::thread::Builder::new()
            .name("mcp-oplog".into())
            .spawn(move || writer(rx, opts, c));
        if spawned.is_err() {
            tracing::warn!("the MCP operation log could not start; its records are dropped");
            return OpLog { tx: None, counts };
        }
        OpLog {
            tx: Some(tx),
            counts,
        }
    }

    /// Queues `r` for the file of `who`.
    pub fn record(&self, who: Who, r: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = match serde_json::to_string(r).map(escape_controls) {
            Ok(l) if l.len() < MAX_LINE => l,
            _ => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match tx.try_send((who, line + "\n")) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records written to disk so far.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Records lost (queue full, or the disk refused them).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }
}

/// Line and paragraph separators and bidirectional controls, written as
/// JSON escapes: a viewer shows the record as it is, not reordered or cut.
fn escape_controls(line: String) -> String {
    let hidden = |c: char| {
        matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}'
        ) || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !line.chars().any(hidden) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

struct Current {
    file: BufWriter<File>,
    size: u64,
    /// Lines written since the last flush: counted once flushed, as a line
    /// only buffered is not yet on disk.
    pending: u64,
}

fn open(path: &Path) -> std::io::Result<Current> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(Current {
        file: BufWriter::new(file),
        size,
        pending: 0,
    })
}

/// Shifts `log.N-1` to `log.N` ... `log` to `log.1`; the oldest goes.
fn rotate(path: &Path, keep: usize) {
    let nth = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = std::fs::remove_file(nth(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(nth(n), nth(n + 1));
    }
    let _ = std::fs::rename(path, nth(1));
}

/// Flushes `c`, counting its pending lines written or dropped; false when
/// the file failed.
fn flush(c: &mut Current, counts: &Counts) -> bool {
    let ok = c.file.flush().is_ok();
    let n = std::mem::take(&mut c.pending);
    let counter = if ok { &counts.written } else { &counts.dropped };
    counter.fetch_add(n, Ordering::Relaxed);
    ok
}

fn writer(rx: Receiver<(Who, String)>, opts: OpLogOptions, counts: Arc<Counts>) {
    let mut files: HashMap<Who, Current> = HashMap::new();
    let flush_all = |files: &mut HashMap<Who, Current>| {
        files.retain(|_, c| flush(c, &counts));
    };
    loop {
        // Wait for a line; with nothing more queued, what is buffered goes
        // to the files.
        let (who, line) = match rx.try_recv() {
            Ok(l) => l,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                flush_all(&mut files);
                std::thread::sleep(PAUSE);
                match rx.recv() {
                    Ok(l) => l,
                    Err(_) => return,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                flush_all(&mut files);
                return;
            }
        };
        let path = path(&opts.dir, who);
        let len = line.len() as u64;
        if files
            .get(&who)
            .is_some_and(|c| c.size > 0 && c.size + len > opts.max_file_bytes)
        {
            if let Some(mut c) = files.remove(&who) {
                flush(&mut c, &counts);
            }
            rotate(&path, opts.max_files);
        }
        if !files.contains_key(&who) {
            if files.len() >= MAX_OPEN {
                flush_all(&mut files);
                files.clear();
            }
            if let Ok(c) = open(&path) {
                files.insert(who, c);
            }
        }
        let Some(c) = files.get_mut(&who) else {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match c.file.write_all(line.as_bytes()) {
            Ok(()) => {
                c.size += len;
                c.pending += 1;
            }
            Err(_) => {
                counts.dropped.fetch_add(1 + c.pending, Ordering::Relaxed);
                files.remove(&who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_escaped() {
        let line = serde_json::to_string(&"a\u{2028}b\u{202E}c\u{2067}d").unwrap();
        let escaped = escape_controls(line);
        assert_eq!(escaped, r#""a\u2028b\u202ec\u2067d""#);
        let back: String = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, "a\u{2028}b\u{202E}c\u{2067}d");
    }
}
