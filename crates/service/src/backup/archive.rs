//! The backup archive: a gzip-compressed tar holding `manifest.json` first,
//! then each collection's snapshot files under `collections/<name>/`. The
//! writer hashes every byte it emits; the reader treats the archive as
//! hostile input: only the files the manifest names are taken, each
//! checked for size and SHA-256, and every cap is enforced while reading,
//! before anything is trusted.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vectorizer_engine::CollectionConfig;

use crate::error::{Result, ServiceError};

/// The version of the archive layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first entry of every archive.
pub const MANIFEST: &str = "manifest.json";
/// The files of one collection, as its snapshot holds them.
pub const FILES: [&str; 2] = ["index.hnsw", "points.bin"];
/// The largest manifest read (a few hundred bytes per collection).
const MAX_MANIFEST: u64 = 4 << 20;

/// What an archive says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The user whose collections these were (`null`: a local deployment).
    /// Restores ignore it: they write into the caller's namespace only.
    pub user_id: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_ms: u64,
    pub label: Option<String>,
    pub collections: Vec<ManifestCollection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestCollection {
    /// The name its owner used (never the engine's prefixed name).
    pub name: String,
    pub config: CollectionConfig,
    pub points: u64,
    /// The log sequence number the state stands at.
    pub seq: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// `index.hnsw` or `points.bin`.
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Caps on what reading an archive may cost.
#[derive(Debug, Clone, Copy)]
pub struct ReadCaps {
    pub max_entries: u64,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    /// Most decompressed bytes per compressed byte.
    pub max_ratio: u64,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` is a SHA-256 in hex (either case).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn corrupt(what: impl Into<String>) -> ServiceError {
    ServiceError::unprocessable("backup_corrupt", what)
}

fn ours(what: &'static str) -> impl Fn(io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the bytes written and their SHA-256 in hex.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex(&self.hash.finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The SHA-256 and size of everything `r` yields; `tick` hears of each
/// chunk's length.
pub fn sha256_of(mut r: impl Read, tick: &dyn Fn(u64)) -> io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..k]);
        n += k as u64;
        tick(k as u64);
    }
    Ok((hex(&hash.finalize()), n))
}

/// Writes the archive for `manifest` to `out`, taking each collection's
/// files from `dirs[i]` (in manifest order); returns its size and SHA-256.
/// `tick` hears of every file byte written.
pub fn write(
    out: File,
    manifest: &Manifest,
    dirs: &[PathBuf],
    tick: &dyn Fn(u64),
) -> Result<(u64, String)> {
    let hashing = Hashing::new(BufWriter::with_capacity(1 << 20, out));
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let body = serde_json::to_vec_pretty(manifest).expect("serializable");
    let mut head = header(body.len() as u64, manifest.created_at_ms / 1000);
    tar.append_data(&mut head, MANIFEST, body.as_slice())
        .map_err(ours("writing a backup"))?;
    for (c, dir) in manifest.collections.iter().zip(dirs) {
        for f in &c.files {
            let file = File::open(dir.join(&f.name)).map_err(ours("reading a checkpoint"))?;
            let mut head = header(f.size, manifest.created_at_ms / 1000);
            let path = format!("collections/{}/{}", c.name, f.name);
            let reader = Ticking {
                inner: file.take(f.size),
                tick,
            };
            tar.append_data(&mut head, path, reader)
                .map_err(ours("writing a backup"))?;
        }
    }
    let gz = tar.into_inner().map_err(ours("writing a backup"))?;
    let hashing = gz.finish().map_err(ours("writing a backup"))?;
    let (buffered, size, sha) = hashing.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| ServiceError::Internal(format!("writing a backup: {e}")))?;
    file.sync_all().map_err(ours("syncing a backup"))?;
    Ok((size, sha))
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

struct Ticking<'a, R> {
    inner: R,
    tick: &'a dyn Fn(u64),
}

impl<R: Read> Read for Ticking<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.tick)(n as u64);
        Ok(n)
    }
}

/// A buffered reader that counts the bytes its reader has consumed: what
/// the gzip decoder actually read, however far the buffer reads ahead.
struct Consumed<R> {
    inner: R,
    n: u64,
}

impl<R: BufRead> Read for Consumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Consumed<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.n += amt as u64;
        self.inner.consume(amt);
    }
}

/// Which cap a decompression passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Total,
    Ratio,
}

/// Decompresses one gzip member, counting what comes out against the
/// total cap and against `max_ratio` times the compressed bytes read so
/// far; the read stops once either is passed.
struct Capped<R: BufRead> {
    inner: flate2::bufread::GzDecoder<Consumed<R>>,
    seen: u64,
    caps: ReadCaps,
    over: Option<Over>,
}

impl<R: BufRead> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        // Room for a tiny archive's headers.
        let ratio_cap = self
            .inner
            .get_ref()
            .n
            .saturating_mul(self.caps.max_ratio)
            .max(1 << 20);
        if self.seen > self.caps.max_total_bytes {
            self.over = Some(Over::Total);
        } else if self.seen > ratio_cap {
            self.over = Some(Over::Ratio);
        }
        if self.over.is_some() {
            return Err(io::Error::other("decompressed size cap passed"));
        }
        Ok(n)
    }
}

/// Reads the archive at `path` whole, checking it against every cap and
/// against its own manifest. The files of the collections in `keep` (all,
/// when `None`) are written under `dest/<name>/`; the others are only
/// checked. `dest` is the caller's to remove on failure.
pub fn read(
    path: &Path,
    dest: Option<&Path>,
    keep: Option<&HashSet<String>>,
    caps: ReadCaps,
    tick: &dyn Fn(u64),
) -> Result<Manifest> {
    let mut file = File::open(path).map_err(ours("opening a backup"))?;
    let compressed = file.metadata().map_err(ours("opening a backup"))?.len();
    let mut magic = [0u8; 2];
    if compressed == 0 {
        return Err(ServiceError::invalid("empty_body", "the archive is empty"));
    }
    if file.read_exact(&mut magic).is_err() || magic != [0x1f, 0x8b] {
        return Err(ServiceError::unprocessable(
            "not_gzip",
            "the archive is not gzip-compressed (a .tar.gz is expected)",
        ));
    }
    let file = File::open(path).map_err(ours("opening a backup"))?;
    let mut capped = Capped {
        inner: flate2::bufread::GzDecoder::new(Consumed {
            inner: BufReader::with_capacity(1 << 20, file),
            n: 0,
        }),
        seen: 0,
        caps,
        over: None,
    };
    let result = read_entries(&mut capped, dest, keep, caps, tick);
    let result = result.and_then(|m| {
        // The rest of the gzip stream, so that its length and CRC are checked.
        io::copy(&mut capped, &mut io::sink())
            .map_err(|e| corrupt(format!("the archive's compression stream is damaged: {e}")))?;
        // One gzip member, and nothing after it: bytes there would be
        // stored and served unchecked.
        let rest = capped.inner.get_mut().fill_buf().map_err(ours("reading a backup"))?;
        if !rest.is_empty() {
            return Err(ServiceError::unprocessable(
                "trailing_data",
                "the archive has bytes after its gzip stream (one .tar.gz member, nothing after it)",
            ));
        }
        Ok(m)
    });
    match (result, capped.over) {
        (_, Some(Over::Total)) => Err(ServiceError::unprocessable(
            "archive_too_large",
            format!(
                "the archive decompresses to more than {} bytes",
                caps.max_total_bytes
            ),
        )),
        (_, Some(Over::Ratio)) => Err(ServiceError::unprocessable(
            "compression_ratio",
            format!(
                "the archive decompresses to more than {} times its size",
                caps.max_ratio
            ),
        )),
        (r, None) => r,
    }
}

fn read_entries(
    r: &mut impl Read,
    dest: Option<&Path>,
    keep: Option<&HashSet<String>>,
    caps: ReadCaps,
    tick: &dyn Fn(u64),
) -> Result<Manifest> {
    let mut archive = tar::Archive::new(r);
    // Raw: long-name and PAX extension entries come as entries of their
    // own (refused below), never read whole into memory by the parser.
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar archive: {e}")))?
        .raw(true);
    let mut manifest: Option<Manifest> = None;
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("reading the archive: {e}")))?;
        count += 1;
        if count > caps.max_entries {
            return Err(ServiceError::unprocessable(
                "too_many_entries",
                format!("the archive holds more than {} entries", caps.max_entries),
            ));
        }
        let kind = entry.header().entry_type();
        if !matches!(
            kind,
            tar::EntryType::Directory | tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            return Err(ServiceError::unprocessable(
                "unsupported_entry",
                format!("an entry is a {kind:?}: only regular files and directories are accepted"),
            ));
        }
        let path = entry
            .path()
            .map_err(|_| {
                ServiceError::unprocessable("unsafe_path", "an entry's path is not UTF-8")
            })?
            .into_owned();
        let parts = safe_parts(&path)?;
        // Nothing comes before the manifest; directories may come after.
        if kind == tar::EntryType::Directory && manifest.is_some() {
            continue;
        }
        let size = entry.size();
        if size > caps.max_file_bytes {
            return Err(ServiceError::unprocessable(
                "entry_too_large",
                format!(
                    "entry `{}` is larger than {} bytes",
                    path.display(),
                    caps.max_file_bytes
                ),
            ));
        }
        let Some(m) = &manifest else {
            if parts != [MANIFEST] || kind == tar::EntryType::Directory {
                return Err(ServiceError::unprocessable(
                    "invalid_manifest",
                    "the archive's first file must be manifest.json",
                ));
            }
            if size > MAX_MANIFEST {
                return Err(ServiceError::unprocessable(
                    "invalid_manifest",
                    "manifest.json is too large",
                ));
            }
            let mut body = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut body)
                .map_err(|e| corrupt(format!("reading manifest.json: {e}")))?;
            let m = parse_manifest(&body, caps)?;
            for c in &m.collections {
                for f in &c.files {
                    expected.insert((c.name.clone(), f.name.clone()));
                }
            }
            manifest = Some(m);
            continue;
        };
        let (name, file) = match parts.as_slice() {
            ["collections", name, file] => ((*name).to_owned(), (*file).to_owned()),
            _ => {
                return Err(ServiceError::unprocessable(
                    "unexpected_entry",
                    format!("entry `{}` is not part of a backup", path.display()),
                ));
            }
        };
        if !expected.remove(&(name.clone(), file.clone())) {
            return Err(ServiceError::unprocessable(
                "unexpected_entry",
                format!(
                    "entry `{}` is not named by the manifest (or appears twice)",
                    path.display()
                ),
            ));
        }
        let want = m
            .collections
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.files.iter().find(|f| f.name == file))
            .expect("expected entries come from the manifest");
        if want.size != size {
            return Err(corrupt(format!(
                "`{}` is {size} bytes; the manifest says {}",
                path.display(),
                want.size
            )));
        }
        let target = match (dest, keep.is_none_or(|k| k.contains(&name))) {
            (Some(d), true) => {
                let dir = d.join(&name);
                fs::create_dir_all(&dir).map_err(ours("extracting a backup"))?;
                Some(dir.join(&file))
            }
            _ => None,
        };
        let sha = copy_checked(&mut entry, target.as_deref(), tick)?;
        if !sha.eq_ignore_ascii_case(&want.sha256) {
            return Err(corrupt(format!(
                "`{}` does not match its SHA-256 in the manifest",
                path.display()
            )));
        }
    }
    let Some(m) = manifest else {
        return Err(corrupt("the archive holds no manifest.json"));
    };
    if let Some((c, f)) = expected.into_iter().next() {
        return Err(corrupt(format!(
            "`collections/{c}/{f}` is named by the manifest but missing"
        )));
    }
    Ok(m)
}

/// An entry's path as its parts: relative, with no `..`, `.`, root or
/// prefix anywhere.
fn safe_parts(path: &Path) -> Result<Vec<&str>> {
    // As written, not as `components` normalizes it (`a/./b`, `a//b`): a
    // backup's paths hold neither.
    let raw = path.to_str().unwrap_or_default();
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if trimmed.split('/').any(|p| p.is_empty() || p == ".") {
        return Err(ServiceError::unprocessable(
            "unsafe_path",
            format!(
                "entry `{}`: a path without `.` or empty parts is expected",
                path.display()
            ),
        ));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| {
                ServiceError::unprocessable("unsafe_path", "an entry's path is not UTF-8")
            })?),
            _ => {
                return Err(ServiceError::unprocessable(
                    "unsafe_path",
                    format!(
                        "entry `{}`: paths must be relative, inside the archive, without `..`",
                        path.display()
                    ),
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err(ServiceError::unprocessable(
            "unsafe_path",
            "an entry has an empty path",
        ));
    }
    Ok(parts)
}

/// Copies an entry to `target` (or nowhere), returning its SHA-256.
fn copy_checked(r: &mut impl Read, target: Option<&Path>, tick: &dyn Fn(u64)) -> Result<String> {
    let mut hash = Sha256::new();
    let mut out = match target {
        Some(t) => Some(BufWriter::new(
            File::create_new(t).map_err(ours("extracting a backup"))?,
        )),
        None => None,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(format!("reading the archive: {e}"))),
        };
        hash.update(&buf[..n]);
        tick(n as u64);
        if let Some(o) = &mut out {
            o.write_all(&buf[..n])
                .map_err(ours("extracting a backup"))?;
        }
    }
    if let Some(o) = out {
        o.into_inner()
            .map_err(|e| ServiceError::Internal(format!("extracting a backup: {e}")))?;
    }
    Ok(hex(&hash.finalize()))
}

/// The manifest, checked: a known version, valid names and configs, each
/// collection once with exactly its snapshot files, sizes within the caps.
fn parse_manifest(body: &[u8], caps: ReadCaps) -> Result<Manifest> {
    let bad = |m: String| ServiceError::unprocessable("invalid_manifest", m);
    let mut m: Manifest =
        serde_json::from_slice(body).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if m.format_version != FORMAT_VERSION {
        return Err(ServiceError::unprocessable(
            "unsupported_format",
            format!(
                "backup format {} is not supported (this server reads {FORMAT_VERSION})",
                m.format_version
            ),
        ));
    }
    check_fields(&m)?;
    let mut names = HashSet::new();
    let mut total = 0u64;
    for c in &m.collections {
        crate::service::validate_short_name(&c.name)
            .map_err(|_| bad(format!("collection name {:?} is not valid", c.name)))?;
        if !names.insert(c.name.as_str()) {
            return Err(bad(format!("collection `{}` is listed twice", c.name)));
        }
        c.config
            .validate()
            .map_err(|e| bad(format!("collection `{}`: {e}", c.name)))?;
        let mut files: Vec<&str> = c.files.iter().map(|f| f.name.as_str()).collect();
        files.sort_unstable();
        if files != FILES {
            return Err(bad(format!(
                "collection `{}` must list exactly {FILES:?}",
                c.name
            )));
        }
        for f in &c.files {
            if !is_sha256(&f.sha256) {
                return Err(bad(format!("`{}/{}`: sha256 is not hex", c.name, f.name)));
            }
            if f.size > caps.max_file_bytes {
                return Err(ServiceError::unprocessable(
                    "entry_too_large",
                    format!(
                        "`{}/{}` is larger than {} bytes",
                        c.name, f.name, caps.max_file_bytes
                    ),
                ));
            }
            total = total.saturating_add(f.size);
        }
    }
    if m.collections.is_empty() {
        return Err(bad("the manifest lists no collections".into()));
    }
    if total > caps.max_total_bytes {
        return Err(ServiceError::unprocessable(
            "archive_too_large",
            format!(
                "the archive's files add up to more than {} bytes",
                caps.max_total_bytes
            ),
        ));
    }
    // The time's text is ours, from the number.
    m.created_at = crate::backup::store::rfc3339(m.created_at_ms);
    Ok(m)
}

/// The manifest's own fields within what this server writes: a label as
/// a create takes it, a known count of collections, a creation time not
/// in the future, and log positions far from overflowing.
fn check_fields(m: &Manifest) -> Result<()> {
    let bad = |what: &str| {
        ServiceError::unprocessable("invalid_manifest", format!("manifest.json: {what}"))
    };
    if m.label
        .as_ref()
        .is_some_and(|l| !crate::backup::label_ok(l))
    {
        return Err(bad("the label is too long or holds control characters"));
    }
    if m.collections.len() > crate::backup::MAX_COLLECTIONS {
        return Err(bad("too many collections"));
    }
    if m.user_id.as_ref().is_some_and(|u| u.len() > 64) {
        return Err(bad("user_id is too long"));
    }
    // A day of clock skew between nodes is tolerated.
    if m.created_at_ms > crate::backup::store::now_ms() + 86_400_000 {
        return Err(bad("created_at_ms is in the future"));
    }
    if m.collections.iter().any(|c| c.seq >= MAX_SEQ) {
        return Err(bad("a log position is out of range"));
    }
    Ok(())
}

/// The largest log position a manifest may state: writes after a restore
/// continue above it.
const MAX_SEQ: u64 = 1 << 62;

/// The manifest of the archive at `path` (its first entry), checked, with
/// nothing else read: what a restore reserves quota by before extracting.
pub fn read_manifest(path: &Path, caps: ReadCaps) -> Result<Manifest> {
    let file = File::open(path).map_err(ours("opening a backup"))?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(gz.take(MAX_MANIFEST + 1024));
    let mut entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar archive: {e}")))?
        .raw(true);
    let mut first = entries
        .next()
        .ok_or_else(|| corrupt("the archive is empty"))?
        .map_err(|e| corrupt(format!("reading the archive: {e}")))?;
    let named = first
        .path()
        .is_ok_and(|p| p.as_ref() == Path::new(MANIFEST));
    let regular = matches!(
        first.header().entry_type(),
        tar::EntryType::Regular | tar::EntryType::Continuous
    );
    if !named || !regular || first.size() > MAX_MANIFEST {
        return Err(ServiceError::unprocessable(
            "invalid_manifest",
            "the archive's first file must be manifest.json",
        ));
    }
    let mut body = Vec::new();
    first
        .read_to_end(&mut body)
        .map_err(|e| corrupt(format!("reading manifest.json: {e}")))?;
    parse_manifest(&body, caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> ReadCaps {
        ReadCaps {
            max_entries: 100,
            max_file_bytes: 1 << 30,
            max_total_bytes: 1 << 31,
            max_ratio: 1000,
        }
    }

    /// A manifest with every optional field present reads back as written,
    /// and one written before `target_recall` and `quantization` existed
    /// still reads (with the defaults a config file without them takes).
    #[test]
    fn manifests_round_trip_with_every_field() {
        let hex = "ab".repeat(32);
        let full = serde_json::json!({
            "format_version": FORMAT_VERSION,
            "user_id": "user-1",
            // (As written: with milliseconds.)
            "created_at": "2026-12-07T23:00:00.000Z",
            "created_at_ms": 1_796_684_400_000u64,
            "label": "nightly",
            "collections": [{
                "name": "docs",
                "config": {
                    "dimension": 8, "metric": "manhattan",
                    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 100},
                    "payload_index": ["color", "meta.lang"],
                    "target_recall": 0.97,
                    "quantization": {"type": "int8", "rescore": false, "oversampling": 2.5}
                },
                "points": 12, "seq": 34,
                "files": [
                    {"name": "index.hnsw", "size": 1, "sha256": hex},
                    {"name": "points.bin", "size": 2, "sha256": hex}
                ]
            }]
        });
        let m = parse_manifest(&serde_json::to_vec(&full).unwrap(), caps()).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), full);
        let config = &m.collections[0].config;
        assert_eq!(config.target_recall, Some(0.97));
        assert_eq!(
            config.quantization.map(|q| (q.rescore, q.oversampling)),
            Some((false, 2.5))
        );
        let mut old = full.clone();
        let c = old["collections"][0]["config"].as_object_mut().unwrap();
        c.remove("target_recall");
        c.remove("quantization");
        let m = parse_manifest(&serde_json::to_vec(&old).unwrap(), caps()).unwrap();
        let config = &m.collections[0].config;
        assert_eq!(
            (config.target_recall, config.quantization),
            (Some(vectorizer_engine::config::DEFAULT_TARGET_RECALL), None)
        );
    }

    /// Settings no collection may have are refused in a manifest too.
    #[test]
    fn a_manifest_with_bad_quantization_is_refused() {
        let hex = "ab".repeat(32);
        for q in [
            serde_json::json!({"type": "int8", "oversampling": 0.5}),
            serde_json::json!({"type": "int4"}),
        ] {
            let body = serde_json::json!({
                "format_version": FORMAT_VERSION, "user_id": null,
                "created_at": "2026-12-07T23:00:00Z", "created_at_ms": 0, "label": null,
                "collections": [{"name": "docs",
                    "config": {"dimension": 8, "metric": "dot", "quantization": q},
                    "points": 0, "seq": 0,
                    "files": [{"name": "index.hnsw", "size": 1, "sha256": hex},
                              {"name": "points.bin", "size": 2, "sha256": hex}]}]
            });
            assert!(parse_manifest(&serde_json::to_vec(&body).unwrap(), caps()).is_err());
        }
    }
}
