//! The MCP operation log: one JSON line per tool call, written by a thread
//! of its own to a size-rotated file. A record never holds vectors,
//! payloads or keys. A tool call never waits for the disk: when the queue
//! is full or a write fails, the record is dropped and counted.

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

/// The log's file name in the data directory.
pub const FILE: &str = "mcp-ops.log";

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
    tx: Option<SyncSender<String>>,
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

    pub fn record(&self, r: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(r) else {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        line.push('\n');
        match tx.try_send(line) {
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

struct Current {
    file: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> std::io::Result<Current> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(Current {
        file: BufWriter::new(file),
        size,
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

fn writer(rx: Receiver<String>, opts: OpLogOptions, counts: Arc<Counts>) {
    let path = opts.dir.join(FILE);
    let mut current: Option<Current> = None;
    let mut pending = 0u64;
    // Lines written since the last flush are counted once flushed: a line
    // only buffered is not yet on disk.
    let flush = |cur: &mut Option<Current>, pending: &mut u64| {
        if let Some(c) = cur {
            match c.file.flush() {
                Ok(()) => {
                    counts.written.fetch_add(*pending, Ordering::Relaxed);
                }
                Err(_) => {
                    counts.dropped.fetch_add(*pending, Ordering::Relaxed);
                    *cur = None;
                }
            }
        }
        *pending = 0;
    };
    loop {
        // Wait for a line; with nothing more queued, what is buffered goes
        // to the file.
        let line = match rx.try_recv() {
            Ok(l) => l,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                flush(&mut current, &mut pending);
                std::thread::sleep(PAUSE);
                match rx.recv() {
                    Ok(l) => l,
                    Err(_) => return,
                }
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                flush(&mut current, &mut pending);
                return;
            }
        };
        let len = line.len() as u64;
        if current
            .as_ref()
            .is_some_and(|c| c.size > 0 && c.size + len > opts.max_file_bytes)
        {
            flush(&mut current, &mut pending);
            current = None;
            rotate(&path, opts.max_files);
        }
        if current.is_none() {
            current = open(&path).ok();
        }
        let Some(c) = current.as_mut() else {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match c.file.write_all(line.as_bytes()) {
            Ok(()) => {
                c.size += len;
                pending += 1;
            }
            Err(_) => {
                counts.dropped.fetch_add(1 + pending, Ordering::Relaxed);
                pending = 0;
                current = None;
            }
        }
    }
}
