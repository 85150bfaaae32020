//! Exact scores for the scan path, in the same units as the HNSW results.

use crate::config::Metric;

/// The largest squared length a vector may have: with every squared
/// length at most this, dot products and squared distances stay finite
/// (see `Collection::check_vector`, and the index's load, which holds
/// stored vectors to the same bound).
pub(crate) const MAX_SQUARED_LENGTH: f64 = f32::MAX as f64 / 8.0;

/// Dot product, written in eight independent lanes so the compiler
/// vectorises it without target-specific code.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Sum of absolute differences, in eight lanes like the others.
pub fn l1(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += (x[i] - y[i]).abs();
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).sum();
    acc.iter().sum::<f32>() + tail
}

pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Orders scores best first for the metric.
pub fn better(metric: Metric, a: f32, b: f32) -> std::cmp::Ordering {
    if metric.higher_is_better() {
        b.total_cmp(&a)
    } else {
        a.total_cmp(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        let a = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0];
        let b = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0];
        assert_eq!(dot(&a, &b), 4.0);
        assert_eq!(l2_squared(&a, &b), 2.0);
        assert_eq!(l1(&a, &b), 2.0);
        assert_eq!(l1(&a, &[0.5; 9]), 0.5 * 7.0 + 0.5 + 1.5);
        assert!((norm(&a) - 5f32.sqrt()).abs() < 1e-6);
    }
}
