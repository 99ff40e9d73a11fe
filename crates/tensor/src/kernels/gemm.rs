//! Matrix products on matrixmultiply's packed SIMD kernels.
//!
//! Operands are described by strides, so a transposed operand is read in
//! place and never copied. One large product is split into row (or column)
//! blocks of C across rayon's pool; a batch of products is split across the
//! pool by batch entry; small products stay on the calling thread, where
//! waking the pool costs more than the product.

use rayon::prelude::*;

use crate::Element;

/// Multiply-adds below which a product stays on one thread.
pub const PAR_FLOPS: usize = 1 << 21;

/// A strided read-only matrix: element `(i, j)` is at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A `rows×cols` matrix stored row-major, read transposed if `transposed`
    /// (then it is stored `cols×rows`).
    pub fn new(data: &'a [T], rows: usize, cols: usize, transposed: bool) -> Self {
        if transposed {
            MatRef {
                data,
                rs: 1,
                cs: rows,
            }
        } else {
            MatRef {
                data,
                rs: cols,
                cs: 1,
            }
        }
    }

    /// The sub-matrix starting at row `r0` (same strides).
    pub fn rows_from(self, r0: usize) -> Self {
        MatRef {
            data: &self.data[(r0 * self.rs).min(self.data.len())..],
            ..self
        }
    }

    /// The sub-matrix starting at column `c0` (same strides).
    pub fn cols_from(self, c0: usize) -> Self {
        MatRef {
            data: &self.data[(c0 * self.cs).min(self.data.len())..],
            ..self
        }
    }
}

/// `C[m×n] (row stride ldc) = A[m×k] · B[k×n]`, overwriting C.
#[allow(clippy::too_many_arguments)] // BLAS-style signature: dims, operands with strides
pub(crate) fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            c[i * ldc..i * ldc + n].fill(T::zero());
        }
        return;
    }
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 && m * n * k >= PAR_FLOPS {
        if m >= 64 * threads.min(4) || m >= n {
            // row blocks of C, multiples of 16 rows so kernels stay full
            let per = m.div_ceil(threads).div_ceil(16) * 16;
            c[..(m - 1) * ldc + n]
                .par_chunks_mut(per * ldc)
                .enumerate()
                .for_each(|(t, cb)| {
                    let r0 = t * per;
                    let rows = per.min(m - r0);
                    gemm_serial(rows, k, n, a.rows_from(r0), b, cb, ldc);
                });
        } else {
            // column blocks of C: each task writes a disjoint column range
            let per = n.div_ceil(threads).div_ceil(16) * 16;
            assert!(c.len() >= (m - 1) * ldc + n);
            let cptr = SendPtr(c.as_mut_ptr());
            (0..n.div_ceil(per)).into_par_iter().for_each(|t| {
                let c0 = t * per;
                let cols = per.min(n - c0);
                let cptr = &cptr;
                // SAFETY: C holds m rows of stride ldc (asserted above) and
                // the tasks write disjoint column ranges of it.
                unsafe { gemm_raw(m, k, cols, a, b.cols_from(c0), cptr.0.add(c0), ldc) };
            });
        }
    } else {
        gemm_serial(m, k, n, a, b, c, ldc);
    }
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn gemm_serial<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n);
    // SAFETY: C is exclusively borrowed and large enough (asserted).
    unsafe { gemm_raw(m, k, n, a, b, c.as_mut_ptr(), ldc) }
}

/// # Safety
/// `c` must point to `m` rows of stride `ldc` holding at least `n` writable
/// elements each, not aliasing A or B, and not written by anyone else.
unsafe fn gemm_raw<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: *mut T,
    ldc: usize,
) {
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    // SAFETY: A and B bounds are asserted above; C's is the caller's contract.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            T::one(),
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            T::zero(),
            c,
            ldc as isize,
            1,
        );
    }
}

/// A batch of products: `c[e] = a[a_off[e]] · b[b_off[e]]` for each entry,
/// C entries contiguous `m×n` blocks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_batched<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    ta: bool,
    b: &[T],
    tb: bool,
    offsets: &[(usize, usize)],
    c: &mut [T],
) {
    let mn = m * n;
    let entry = |(cb, &(oa, ob)): (&mut [T], &(usize, usize)), parallel: bool| {
        let am = MatRef::new(&a[oa..], m, k, ta);
        let bm = MatRef::new(&b[ob..], k, n, tb);
        gemm(m, k, n, am, bm, cb, n, parallel);
    };
    if mn == 0 {
        return;
    }
    let total = m * n * k * offsets.len();
    if offsets.len() > 1 && total >= PAR_FLOPS && rayon::current_num_threads() > 1 {
        c.par_chunks_mut(mn)
            .zip(offsets.par_iter())
            .for_each(|e| entry(e, false));
    } else {
        c.chunks_mut(mn)
            .zip(offsets.iter())
            .for_each(|e| entry(e, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f64], ta: bool, b: &[f64], tb: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += x * y;
                }
            }
        }
        c
    }

    #[test]
    fn parallel_splits_match_naive() {
        for &(m, k, n) in &[(300, 70, 200), (20, 300, 600), (1, 5, 3), (7, 0, 2)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f64> = (0..m * k).map(|i| ((i * 31) % 17) as f64 - 8.0).collect();
                let b: Vec<f64> = (0..k * n).map(|i| ((i * 7) % 13) as f64 - 6.0).collect();
                let mut c = vec![f64::NAN; m * n];
                gemm(
                    m,
                    k,
                    n,
                    MatRef::new(&a, m, k, ta),
                    MatRef::new(&b, k, n, tb),
                    &mut c,
                    n,
                    true,
                );
                assert_eq!(c, naive(m, k, n, &a, ta, &b, tb), "{m}x{k}x{n} {ta} {tb}");
            }
        }
    }
}
