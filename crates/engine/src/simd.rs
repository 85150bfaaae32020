//! Distance kernels with runtime CPU dispatch: AVX-512 or AVX2+FMA where
//! the CPU has them, portable code elsewhere. The kernel is chosen once per
//! index, not per call.

/// `fn(a, b) -> f32` over equal-length slices.
pub type Kernel = fn(&[f32], &[f32]) -> f32;

/// Dot product and squared L2 kernels for this CPU.
pub fn kernels() -> (Kernel, Kernel) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return (x86::dot_avx512_safe, x86::l2_avx512_safe);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return (x86::dot_avx2_safe, x86::l2_avx2_safe);
        }
    }
    (crate::distance::dot, crate::distance::l2_squared)
}

/// Most bytes of one vector fetched ahead: all of a 128-dimensional one;
/// of longer ones the start, while the hardware streams in the rest.
const PREFETCH_CAP: usize = 512;

/// Hints the CPU to fetch the cache lines at `p` ahead of use.
#[inline(always)]
pub fn prefetch(p: *const f32, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = p as *const i8;
        let mut off = 0;
        while off < bytes.min(PREFETCH_CAP) {
            _mm_prefetch(p.add(off), _MM_HINT_T0);
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // The `_safe` wrappers are only handed out by `kernels()` after the
    // features were detected, which is what makes the calls sound.
    pub fn dot_avx512_safe(a: &[f32], b: &[f32]) -> f32 {
        unsafe { dot_avx512(a, b) }
    }
    pub fn l2_avx512_safe(a: &[f32], b: &[f32]) -> f32 {
        unsafe { l2_avx512(a, b) }
    }
    pub fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
        unsafe { dot_avx2(a, b) }
    }
    pub fn l2_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
        unsafe { l2_avx2(a, b) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        unsafe {
            while i + 32 <= n {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                    acc1,
                );
                i += 32;
            }
            if i + 16 <= n {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                let x = _mm512_maskz_loadu_ps(mask, pa.add(i));
                let y = _mm512_maskz_loadu_ps(mask, pb.add(i));
                acc1 = _mm512_fmadd_ps(x, y, acc1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn l2_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        unsafe {
            while i + 32 <= n {
                let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                let d1 = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                );
                acc0 = _mm512_fmadd_ps(d0, d0, acc0);
                acc1 = _mm512_fmadd_ps(d1, d1, acc1);
                i += 32;
            }
            if i + 16 <= n {
                let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                acc0 = _mm512_fmadd_ps(d, d, acc0);
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                let d = _mm512_sub_ps(
                    _mm512_maskz_loadu_ps(mask, pa.add(i)),
                    _mm512_maskz_loadu_ps(mask, pb.add(i)),
                );
                acc1 = _mm512_fmadd_ps(d, d, acc1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        let mut tail = 0.0;
        unsafe {
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            while i < n {
                tail += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            hsum256(_mm256_add_ps(acc0, acc1)) + tail
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        let mut tail = 0.0;
        unsafe {
            while i + 16 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                );
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                acc1 = _mm256_fmadd_ps(d1, d1, acc1);
                i += 16;
            }
            while i < n {
                let d = *pa.add(i) - *pb.add(i);
                tail += d * d;
                i += 1;
            }
            hsum256(_mm256_add_ps(acc0, acc1)) + tail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::{dot, l2_squared};

    #[test]
    fn kernels_agree_with_portable_code() {
        let (kd, kl) = kernels();
        for n in [1, 3, 8, 15, 16, 17, 31, 32, 33, 100, 128, 384, 1000] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 11) as f32 * 0.25 - 1.0)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53) % 7) as f32 * 0.5 - 1.5).collect();
            let (d0, d1) = (dot(&a, &b), kd(&a, &b));
            assert!(
                (d0 - d1).abs() <= 1e-4 * (1.0 + d0.abs()),
                "dot n={n}: {d0} vs {d1}"
            );
            let (l0, l1) = (l2_squared(&a, &b), kl(&a, &b));
            assert!(
                (l0 - l1).abs() <= 1e-4 * (1.0 + l0.abs()),
                "l2 n={n}: {l0} vs {l1}"
            );
        }
    }
}
