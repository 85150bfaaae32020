//! Quantized vectors: each stored vector kept in memory as 8-bit codes with
//! one scale (`v ≈ scale · codes`, the largest component mapped to ±127),
//! searched by integer dot products; the full vectors kept in a file the
//! graph reads from only to rescore its best candidates and to answer
//! what needs them whole (reads, exact scans, snapshots).
//!
//! The file is a cache of what the collection's snapshot and log hold: it
//! is created unlinked when the graph is built or loaded, written as
//! vectors are stored, and gone with the process. So it needs no recovery
//! of its own, and nothing of it ever reaches a snapshot, an archive or
//! another node. It is read through a shared read-only mapping (no system
//! call per vector; the pages read are the page cache's, which the kernel
//! may drop and read again), advised as randomly accessed.

use std::fs::File;
use std::path::Path;

use crate::error::{EngineError, Result};

/// `fn(a, b) -> Σ a·b` over equal-length code slices.
pub(crate) type CodeKernel = fn(&[i8], &[i8]) -> i32;

/// Encodes `v` into `out` (as long as `v`); returns the scale.
pub(crate) fn encode(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|c| *c = 0);
        return 0.0;
    }
    // (Divided first: `127 / max` overflows for the tiniest vectors.)
    for (c, x) in out.iter_mut().zip(v) {
        *c = (x / max * 127.0).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// `Σ |a_i·sa − b_i·sb|` (Manhattan distance of two code vectors).
pub(crate) fn l1(a: &[i8], sa: f32, b: &[i8], sb: f32) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f32::from(*x) * sa - f32::from(*y) * sb).abs())
        .sum()
}

fn dot_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// The code dot-product kernel for this CPU. (Sums stay within `i32`: at
/// most 127² · 65,536 dimensions.)
pub(crate) fn kernel() -> CodeKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return dot_avx2_safe;
        }
    }
    dot_portable
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_safe(a: &[i8], b: &[i8]) -> i32 {
    // Safety: handed out by `kernel()` only once AVX2 was detected.
    unsafe { dot_avx2(a, b) }
}

/// The portable loop, compiled for AVX2 (where the compiler turns it into
/// widening multiply-adds over 16 codes at a time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..16 {
            acc[j] += i32::from(x[j]) * i32::from(y[j]);
        }
    }
    let tail = dot_portable(ca.remainder(), cb.remainder());
    acc.iter().sum::<i32>() + tail
}

/// The full vectors of a quantized graph, by key, in an unlinked file,
/// mapped for reading.
pub(crate) struct FullStore {
    file: File,
    dim: usize,
    /// The mapping of the file's first `len` bytes (null while empty).
    map: *const u8,
    len: usize,
}

// Safety: the mapping is read-only and only replaced through `&mut self`
// (the graph's exclusive access while it grows); vectors are written with
// `pwrite` before their key is published, and read only after.
unsafe impl Send for FullStore {}
unsafe impl Sync for FullStore {}

impl Drop for FullStore {
    fn drop(&mut self) {
        if !self.map.is_null() {
            // Safety: `map` and `len` are what `mmap` returned and mapped.
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
        }
    }
}

impl FullStore {
    /// A new, empty store in `dir` (the collection's directory: the file
    /// must not live in memory, as a temporary directory may).
    pub(crate) fn create(dir: &Path, dim: usize) -> Result<FullStore> {
        let file = unlinked(dir).map_err(EngineError::io("creating the full-vector file"))?;
        Ok(FullStore {
            file,
            dim,
            map: std::ptr::null(),
            len: 0,
        })
    }

    /// Room for keys below `keys`: the file is extended (sparse) and mapped
    /// anew. Needs exclusive access: no vector borrowed from the old
    /// mapping may outlive this.
    pub(crate) fn reserve(&mut self, keys: usize) -> Result<()> {
        use std::os::fd::AsRawFd;
        let needed = keys * self.dim * 4;
        if needed <= self.len {
            return Ok(());
        }
        // Doubled at least (the file is sparse, and the mapping costs
        // address space only): a graph growing a chunk at a time maps
        // anew a logarithmic number of times.
        let len = needed.max(self.len * 2);
        const WHAT: &str = "mapping the full-vector file";
        self.file
            .set_len(len as u64)
            .map_err(EngineError::io(WHAT))?;
        // Safety: a fresh shared read-only mapping of the file's first
        // `len` bytes, which the file now has.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(EngineError::io(WHAT)(std::io::Error::last_os_error()));
        }
        // Safety: advice on the mapping just made. (Without it the kernel
        // reads ahead around every vector touched.)
        unsafe { libc::madvise(map, len, libc::MADV_RANDOM) };
        if !self.map.is_null() {
            // Safety: the old mapping; `&mut self` means nothing borrows it.
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
        }
        self.map = map as *const u8;
        self.len = len;
        Ok(())
    }

    /// `key`'s vector (a key below the reserved room, written before).
    pub(crate) fn vector(&self, key: u32) -> &[f32] {
        let at = self.at(key) as usize;
        assert!(at + self.dim * 4 <= self.len, "a key within the mapping");
        // Safety: within the mapping (checked), 4-byte aligned (the mapping
        // is page-aligned and every offset a multiple of 4); any bits are
        // a valid f32; the pages stay mapped while `&self` is held.
        unsafe { std::slice::from_raw_parts(self.map.add(at) as *const f32, self.dim) }
    }

    fn at(&self, key: u32) -> u64 {
        key as u64 * self.dim as u64 * 4
    }

    /// Writes `key`'s vector (once, before the key is published).
    pub(crate) fn write(&self, key: u32, v: &[f32]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(as_bytes(v), self.at(key))
            .map_err(EngineError::io("writing the full-vector file"))
    }
}

/// `v`'s bytes in native order (as the file holds them).
fn as_bytes(v: &[f32]) -> &[u8] {
    // Safety: a `u8` view of the same memory, of its exact size; `u8` has
    // no alignment to keep.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Vectors of consecutive keys gathered for one write (while loading).
#[derive(Default)]
pub(crate) struct FullRun {
    first: u32,
    bytes: Vec<u8>,
}

impl FullRun {
    pub(crate) fn push(&mut self, store: &FullStore, key: u32, v: &[f32]) -> Result<()> {
        let next = self.first as u64 + (self.bytes.len() / (store.dim * 4).max(1)) as u64;
        if !self.bytes.is_empty() && key as u64 != next {
            self.flush(store)?;
        }
        if self.bytes.is_empty() {
            self.first = key;
        }
        self.bytes.extend_from_slice(as_bytes(v));
        if self.bytes.len() >= 1 << 20 {
            self.flush(store)?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, store: &FullStore) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.bytes.is_empty() {
            store
                .file
                .write_all_at(&self.bytes, store.at(self.first))
                .map_err(EngineError::io("writing the full-vector file"))?;
            self.bytes.clear();
        }
        Ok(())
    }
}

/// A file in `dir` with no name: `O_TMPFILE` where the file system has it,
/// else created and removed at once.
fn unlinked(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    {
        let tmp = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir);
        if let Ok(f) = tmp {
            return Ok(f);
        }
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".vectors-{}-{n}.tmp", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_within_half_a_step() {
        let v: Vec<f32> = (0..100)
            .map(|i| ((i * 37) % 23) as f32 * 0.1 - 1.1)
            .collect();
        let mut c = vec![0i8; v.len()];
        let s = encode(&v, &mut c);
        for (x, q) in v.iter().zip(&c) {
            assert!(
                (x - f32::from(*q) * s).abs() <= s / 2.0 + 1e-6,
                "{x} vs {q}·{s}"
            );
        }
        assert_eq!(encode(&[0.0; 4], &mut [1; 4]), 0.0);
        // The tiniest vectors encode too.
        let mut c = [0i8; 2];
        let s = encode(&[1e-38, -5e-39], &mut c);
        assert!(c[0] == 127 && (-64..=-63).contains(&c[1]), "{c:?}");
        assert!(s > 0.0);
    }

    #[test]
    fn the_kernel_agrees_with_the_portable_loop() {
        let k = kernel();
        for n in [1, 15, 16, 17, 100, 128, 384, 1000] {
            let a: Vec<i8> = (0..n).map(|i: i32| ((i * 37) % 255) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i: i32| (127 - (i * 53) % 255) as i8).collect();
            assert_eq!(k(&a, &b), dot_portable(&a, &b), "n={n}");
        }
    }

    #[test]
    fn the_store_reads_back_what_it_wrote() {
        let dir = std::env::temp_dir().join(format!("vz-fullstore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = FullStore::create(&dir, 3).unwrap();
        s.reserve(3).unwrap();
        s.write(2, &[1.0, 2.0, 3.0]).unwrap();
        s.write(0, &[-1.0, 0.5, 9.0]).unwrap();
        assert_eq!(s.vector(2), &[1.0, 2.0, 3.0]);
        // Never written: zeros.
        assert_eq!(s.vector(1), &[0.0; 3]);
        // Growing maps anew; what was written stays.
        s.reserve(5000).unwrap();
        s.write(4999, &[7.0, 8.0, 9.0]).unwrap();
        assert_eq!(s.vector(0), &[-1.0, 0.5, 9.0]);
        assert_eq!(s.vector(4999), &[7.0, 8.0, 9.0]);
        // Nothing is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
