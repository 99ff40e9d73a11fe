//! Slice-level kernels shared by the ops: elementwise maps, broadcasting,
//! axis reductions and matmul. Everything here works on contiguous buffers
//! and knows nothing of recording.
//!
//! Loops are written over contiguous slices with independent iterations (and
//! several accumulators for reductions) so the compiler vectorizes them.
//! Work above [`PAR_THRESHOLD`] elements is split across rayon's pool; below
//! it stays on the calling thread, where waking the pool costs more than the
//! work.

pub(crate) mod broadcast;
pub(crate) mod gemm;
pub(crate) mod reduce;

use rayon::prelude::*;

use crate::Element;

/// Elements below which elementwise work stays on one thread.
pub const PAR_THRESHOLD: usize = 1 << 15;

/// Elements per rayon task for elementwise work.
pub(crate) const PAR_CHUNK: usize = 1 << 13;

/// `out[i] = f(x[i])`.
#[inline]
pub(crate) fn map<T: Element, F>(x: &[T], f: F) -> Vec<T>
where
    F: Fn(T) -> T + Sync + Send,
{
    let mut out = vec![T::zero(); x.len()];
    map_into(x, &mut out, f);
    out
}

/// `out[i] = f(x[i])` into an existing buffer.
#[inline]
pub(crate) fn map_into<T: Element, F>(x: &[T], out: &mut [T], f: F)
where
    F: Fn(T) -> T + Sync + Send,
{
    debug_assert_eq!(x.len(), out.len());
    if x.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    } else {
        out.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x));
    }
}

/// `out[i] = f(a[i], b[i])` for equal-length slices.
#[inline]
pub(crate) fn zip_map<T: Element, F>(a: &[T], b: &[T], f: F) -> Vec<T>
where
    F: Fn(T, T) -> T + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![T::zero(); a.len()];
    if a.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (a, b))| {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = f(a, b);
                }
            });
    } else {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    }
    out
}

/// Sum of a slice with 16 independent accumulators (vectorizes, and keeps
/// the rounding error of long f32 sums near pairwise summation).
#[inline]
pub(crate) fn sum_slice<T: Element>(x: &[T]) -> T {
    const L: usize = 16;
    let mut acc = [T::zero(); L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] += c[i];
        }
    }
    let mut s = T::zero();
    for &r in rest {
        s += r;
    }
    // pairwise fold of the lanes
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            let hi = acc[i + w];
            acc[i] += hi;
        }
    }
    acc[0] + s
}

/// Maximum of a non-empty slice (NaN propagates).
#[inline]
pub(crate) fn max_slice<T: Element>(x: &[T]) -> T {
    fold_lanes(x, T::neg_infinity(), |a, b| {
        if a >= b || a.is_nan() { a } else { b }
    })
}

/// Minimum of a non-empty slice (NaN propagates).
#[inline]
pub(crate) fn min_slice<T: Element>(x: &[T]) -> T {
    fold_lanes(
        x,
        T::infinity(),
        |a, b| if a <= b || a.is_nan() { a } else { b },
    )
}

#[inline]
fn fold_lanes<T: Element>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    const L: usize = 16;
    let mut acc = [init; L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let mut m = init;
    for &v in acc.iter().chain(rest) {
        m = f(m, v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_naive() {
        let x: Vec<f64> = (0..1000).map(|i| (i as f64).sin()).collect();
        for n in [0, 1, 15, 16, 17, 999, 1000] {
            let naive: f64 = x[..n].iter().sum();
            assert!((sum_slice(&x[..n]) - naive).abs() < 1e-12);
        }
        assert_eq!(max_slice(&[1.0f32, 5.0, -2.0]), 5.0);
        assert_eq!(min_slice(&[1.0f32, 5.0, -2.0]), -2.0);
        assert!(max_slice(&[1.0f32, f32::NAN, 3.0]).is_nan());
    }

    #[test]
    fn maps_cover_parallel_path() {
        let n = PAR_THRESHOLD * 2 + 7;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y = map(&x, |v| v * 2.0);
        assert!(y.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32));
        let z = zip_map(&x, &y, |a, b| b - a);
        assert_eq!(z, x);
    }
}
