//! Seeded data for tests and benchmarks: a small PRNG, Gaussian-mixture
//! vectors, exact nearest neighbours to measure recall against, temporary
//! directories, and a small HTTP client.

pub mod http;

use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vz-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temporary directory");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SplitMix64: tiny, fast, and the same on every platform.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// `n` vectors of `dim` drawn from a mixture of `clusters` Gaussians with
/// random centres (spread 1.0) and per-cluster spread `sigma`. Returns the
/// vectors and each one's cluster.
pub fn gaussian_mixture(
    n: usize,
    dim: usize,
    clusters: usize,
    sigma: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect();
    let mut labels = Vec::with_capacity(n);
    let vectors = (0..n)
        .map(|_| {
            let c = rng.below(clusters as u64) as usize;
            labels.push(c);
            centres[c]
                .iter()
                .map(|x| x + sigma * rng.normal())
                .collect()
        })
        .collect();
    (vectors, labels)
}

/// Hard data for graph search: `clusters` anisotropic Gaussian clusters of
/// very different sizes (weights falling as 1/rank), each stretched along
/// its own axes with its own spectrum, the whole under one random rotation
/// (so no axis is special). `shape` fixes the clusters; `draw` the sample:
/// the same `shape` with another `draw` gives fresh points of the same
/// distribution (queries apart from the stored points).
pub fn hard_mixture(n: usize, dim: usize, clusters: usize, shape: u64, draw: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(shape);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| 0.25 * rng.normal()).collect())
        .collect();
    // Per cluster: a spread per axis, decaying at a cluster's own rate over
    // a cluster's own order of the axes.
    let spreads: Vec<Vec<f32>> = (0..clusters)
        .map(|_| {
            let tau = dim as f64 * (0.3 + 0.7 * rng.unit());
            let scale = 0.3 + 0.7 * rng.unit();
            let mut s: Vec<f32> = (0..dim)
                .map(|j| (scale * (-(j as f64) / tau).exp()) as f32)
                .collect();
            for i in (1..dim).rev() {
                s.swap(i, rng.below(i as u64 + 1) as usize);
            }
            s
        })
        .collect();
    let weights: Vec<f64> = (0..clusters).map(|c| 1.0 / (c + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    // A random rotation: Gram-Schmidt over Gaussian rows.
    let mut rot: Vec<Vec<f64>> = Vec::with_capacity(dim);
    while rot.len() < dim {
        let mut v: Vec<f64> = (0..dim).map(|_| rng.normal() as f64).collect();
        for r in &rot {
            let d: f64 = v.iter().zip(r).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(r).for_each(|(a, b)| *a -= d * b);
        }
        let n: f64 = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-6 {
            rot.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    let mut rng = Rng::new(draw ^ 0x0123_4567_89AB_CDEF);
    (0..n)
        .map(|_| {
            let mut u = rng.unit() * total;
            let mut c = 0;
            while c + 1 < clusters && u >= weights[c] {
                u -= weights[c];
                c += 1;
            }
            let x: Vec<f64> = (0..dim)
                .map(|j| (centres[c][j] + spreads[c][j] * rng.normal()) as f64)
                .collect();
            rot.iter()
                .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>() as f32)
                .collect()
        })
        .collect()
}

/// Distance kinds for the reference search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cosine,
    Euclidean,
    Manhattan,
    Dot,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The reference score: higher is closer for cosine and dot; for euclidean
/// and manhattan the distance, lower is closer.
pub fn score(kind: Kind, a: &[f32], b: &[f32]) -> f32 {
    match kind {
        Kind::Cosine => dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt()),
        Kind::Dot => dot(a, b),
        Kind::Euclidean => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
        Kind::Manhattan => a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum(),
    }
}

/// Exact top-k indices into `base` (optionally only those `allowed`).
pub fn exact_top_k(
    kind: Kind,
    base: &[Vec<f32>],
    q: &[f32],
    k: usize,
    allowed: Option<&dyn Fn(usize) -> bool>,
) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = base
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed.is_none_or(|f| f(*i)))
        .map(|(i, v)| (score(kind, q, v), i))
        .collect();
    if matches!(kind, Kind::Euclidean | Kind::Manhattan) {
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    scored.truncate(k);
    scored.into_iter().map(|(_, i)| i).collect()
}

/// Share of `truth` found in `got`.
pub fn recall(truth: &[usize], got: &[usize]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hit = truth.iter().filter(|t| got.contains(t)).count();
    hit as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let (a, _) = gaussian_mixture(10, 4, 3, 0.1, 7);
        let (b, _) = gaussian_mixture(10, 4, 3, 0.1, 7);
        assert_eq!(a, b);
        let top = exact_top_k(Kind::Euclidean, &a, &a[3], 1, None);
        assert_eq!(top, vec![3]);
    }
}
