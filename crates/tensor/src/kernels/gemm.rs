//! Matrix products on matrixmultiply's packed SIMD kernels.
//!
//! Operands are described by strides, so a transposed operand is read in
//! place and never copied. One large product is split into row (or
//! column) blocks of C, one per thread of rayon's pool (measured
//! on a 2-core AVX-512 machine: two row blocks reach ~195 GFLOP/s at n ≥ 1024,
//! where matrixmultiply's own `threading` feature reaches ~175 and four
//! blocks per thread ~180); a batch of products is split across the pool by
//! batch entry; small products stay on the calling thread, where waking the
//! pool costs more than the product.
//!
//! Products with one row or one column of output (a batch-1 layer and its
//! gradients) and with an inner dimension of 1 (an outer product) skip
//! matrixmultiply, which would pack a whole operand for a single pass over
//! it: they are vectorized dot products, `y += s * row` updates or scaled
//! rows, several times faster at the MLP's batch-1 shapes.

use std::mem::MaybeUninit;

use super::{SendPtr, init_fill, vectorized, write_fill};
use crate::Element;

/// Multiply-adds below which a product stays on one thread (measured: a
/// 96³ product, 0.9M multiply-adds, breaks even on two threads; 128³ runs
/// 2.2x faster on two).
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

/// Whether a `rows×cols` matrix with strides `(rs, cs)` lies inside a
/// buffer of `len` elements: its last element, `(rows-1)·rs + (cols-1)·cs`,
/// computed with checked arithmetic (a wrapped product would pass a plain
/// comparison) and below `len`, and both strides representable as `isize`
/// (matrixmultiply takes them signed). Empty matrices always fit.
pub(crate) fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    last.is_some_and(|l| l < len) && isize::try_from(rs.max(cs)).is_ok()
}

/// Whether [`own_gemm`] may run (see `rime_tensor::use_own_gemm`).
pub(crate) static OWN_GEMM: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// The own blocked kernels ([`super::blocked`]) for `C = A·B` or
/// `C += A·B` when they apply — `alpha` 1, `beta` 0 or 1, non-negative
/// strides, C's rows contiguous, a CPU with AVX2+FMA — returning `false`
/// (having done nothing) otherwise, for the caller to use matrixmultiply.
///
/// # Safety
/// As matrixmultiply's `sgemm`: the pointers and strides describe valid
/// `m×k`, `k×n` and `m×n` matrices, and `c` aliases neither `a` nor `b`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn own_gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let strides = [rsa, csa, rsb, csb, rsc];
        if OWN_GEMM.load(std::sync::atomic::Ordering::Relaxed)
            && alpha == T::one()
            && (beta == T::zero() || beta == T::one())
            && csc == 1
            && strides.iter().all(|&s| s >= 0)
        {
            let u = |s: isize| s as usize;
            // SAFETY: the caller's contract is the kernel's (strides
            // checked non-negative just above, C's columns contiguous).
            return unsafe {
                super::blocked::gemm(
                    m,
                    k,
                    n,
                    a,
                    u(rsa),
                    u(csa),
                    b,
                    u(rsb),
                    u(csb),
                    c,
                    u(rsc),
                    beta == T::one(),
                    None,
                )
            };
        }
    }
    let _ = (m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    false
}

/// What a product does to each finished piece of its output while it is
/// still in cache (a layer's bias add and activation): called once for
/// every row segment `C[i, j0..j0 + len]` as `epilogue(i, j0, segment)`,
/// after every element of the segment holds its final product. Segments
/// are disjoint and cover C; which segments, in which order and on which
/// thread is up to the product, so an epilogue must depend only on its
/// arguments.
pub(crate) type Epilogue<'a, T> = &'a (dyn Fn(usize, usize, &mut [T]) + Sync);

/// `C[m×n] (row stride ldc) = A[m×k] · B[k×n]`, overwriting C.
#[allow(clippy::too_many_arguments)] // BLAS-style signature: dims, operands with strides
pub(crate) fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
) {
    gemm_part(m == 1 || n == 1, m, k, n, a, b, c, ldc, parallel)
}

/// [`gemm`], handing every finished row segment of C to `epilogue` (see
/// [`Epilogue`]): inside the own kernels' tasks, block by block while each
/// is in cache; after the product on the other paths.
#[allow(clippy::too_many_arguments)] // BLAS-style signature: dims, operands with strides
pub(crate) fn gemm_epilogue<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
    epilogue: Epilogue<'_, T>,
) {
    let vector = m == 1 || n == 1;
    gemm_part_with(vector, m, k, n, a, b, c, ldc, parallel, Some(epilogue))
}

/// A block of a product (all of it, or some rows and columns), computed so
/// that each element gets the same value as in the whole product: by the
/// matrix-vector kernels when the whole product is one row or column
/// (`vector`), by the blocked kernels or matrixmultiply otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_part<T: Element>(
    vector: bool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
) {
    gemm_part_with(vector, m, k, n, a, b, c, ldc, parallel, None)
}

/// Whether a product is split across the pool.
fn split(parallel: bool, m: usize, k: usize, n: usize) -> bool {
    parallel && super::threads() > 1 && m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS
}

/// [`gemm_part`] with an optional epilogue.
#[allow(clippy::too_many_arguments)]
fn gemm_part_with<T: Element>(
    vector: bool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
    epilogue: Option<Epilogue<'_, T>>,
) {
    if m == 0 || n == 0 {
        return;
    }
    // the own kernels, which run the epilogue inside their tasks
    #[cfg(target_arch = "x86_64")]
    let is_split = split(parallel, m, k, n);
    #[cfg(target_arch = "x86_64")]
    if !vector
        && k >= 2
        && OWN_GEMM.load(std::sync::atomic::Ordering::Relaxed)
        && (epilogue.is_some() || is_split)
    {
        assert!(fits(a.data.len(), m, k, a.rs, a.cs));
        assert!(fits(b.data.len(), k, n, b.rs, b.cs));
        assert!(fits(c.len(), m, n, ldc, 1));
        let (pa, pb, pc) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr().cast::<T>());
        // SAFETY: A, B and C hold the matrices their strides describe
        // (asserted above with checked arithmetic, offsets below isize::MAX
        // as slices' are); C is exclusively borrowed, so it aliases neither
        // operand, and the kernels write every element before any read.
        let done = unsafe {
            if is_split {
                super::blocked::gemm_par(m, k, n, pa, a.rs, a.cs, pb, b.rs, b.cs, pc, ldc, epilogue)
            } else {
                super::blocked::gemm(
                    m, k, n, pa, a.rs, a.cs, pb, b.rs, b.cs, pc, ldc, false, epilogue,
                )
            }
        };
        if done {
            return;
        }
    }
    gemm_elsewhere(vector, m, k, n, a, b, c, ldc, parallel);
    if let Some(epilogue) = epilogue {
        let c = &mut c[..(m - 1) * ldc + n];
        // SAFETY: the product wrote every element of the m rows' first n
        // columns, and the segments below are exactly those (the gaps
        // between rows, never handed out, stay as they were).
        let row = |i: usize, row: &mut [MaybeUninit<T>]| {
            epilogue(i, 0, unsafe { super::assume_init_mut(&mut row[..n]) })
        };
        if parallel && super::parallel(m * n) {
            let per = m.div_ceil(4 * super::threads());
            super::par_chunks(c, per * ldc, |t, rows| {
                for (r, chunk) in rows.chunks_mut(ldc).enumerate() {
                    row(t * per + r, chunk);
                }
            });
        } else {
            for (i, chunk) in c.chunks_mut(ldc).enumerate() {
                row(i, chunk);
            }
        }
    }
}

/// A product on the paths other than the own split kernels: the
/// matrix-vector kernels, outer products, matrixmultiply (whose kernel call
/// is the own serial kernel where it applies, see [`own_gemm`]).
#[allow(clippy::too_many_arguments)]
fn gemm_elsewhere<T: Element>(
    vector: bool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
) {
    if k == 0 {
        for i in 0..m {
            write_fill(&mut c[i * ldc..i * ldc + n], T::zero());
        }
        return;
    }
    if vector {
        gemv(m, k, n, a, b, c, ldc, parallel);
        return;
    }
    if k == 1 {
        outer(m, n, a, b, c, ldc, parallel);
        return;
    }
    let threads = super::threads();
    if !split(parallel, m, k, n) {
        gemm_serial(m, k, n, a, b, c, ldc);
    } else if m >= n {
        // row blocks of C, multiples of 16 rows so kernels stay full
        let per = m.div_ceil(threads).div_ceil(16) * 16;
        super::par_chunks(&mut c[..(m - 1) * ldc + n], per * ldc, |t, cb| {
            let r0 = t * per;
            let rows = per.min(m - r0);
            gemm_serial(rows, k, n, a.rows_from(r0), b, cb, ldc);
        });
    } else {
        // column blocks of C: each task writes a disjoint column range
        let per = n.div_ceil(threads).div_ceil(16) * 16;
        assert!(fits(c.len(), m, n, ldc, 1));
        let cptr = SendPtr(c.as_mut_ptr().cast::<T>());
        super::par_tasks(n.div_ceil(per), |t| {
            let c0 = t * per;
            let cols = per.min(n - c0);
            let cptr = &cptr;
            // SAFETY: C holds m rows of stride ldc (asserted above) and
            // the tasks write disjoint column ranges of it.
            unsafe { gemm_raw(m, k, cols, a, b.cols_from(c0), cptr.0.add(c0), ldc) };
        });
    }
}

/// One row (`m == 1`) or one column (`n == 1`) of output: a matrix-vector
/// product. matrixmultiply would pack the whole matrix for one pass over it
/// (a batch-1 layer is then several times slower than reading the weights);
/// here the matrix is read once, in place, by dot products over its
/// contiguous rows or by `y += s * row` updates, whichever its layout gives.
/// Large ones split their output across the pool.
#[allow(clippy::too_many_arguments)]
fn gemv<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
) {
    let par = parallel && super::threads() > 1 && m * n * k >= PAR_FLOPS;
    // the vector operand, gathered if it is strided (a row of a transposed
    // matrix, or a column of a row-major one)
    if m == 1 {
        // y[j] = Σ_p a[p] B[p, j]
        let x = gather(a.data, a.cs, k);
        let y = &mut c[..n];
        if b.cs == 1 {
            axpy_rows(&x, b.data, b.rs, y, par);
        } else {
            dot_rows(&x, b.data, b.cs, y, par);
        }
    } else {
        // y[i] = Σ_p A[i, p] b[p]
        let x = gather(b.data, b.rs, k);
        let x = &x[..];
        let mut y: Vec<MaybeUninit<T>> = vec![MaybeUninit::new(T::zero()); m];
        if a.cs == 1 {
            dot_rows(x, a.data, a.rs, &mut y, par);
        } else {
            axpy_rows(x, a.data, a.cs, &mut y, par);
        }
        for (i, v) in y.into_iter().enumerate() {
            c[i * ldc] = v;
        }
    }
}

/// `C = a bᵀ` for a column `a` (m×1) and a row `b` (1×n): `C[i, :] = a[i] b`,
/// written row by row (the same values matrixmultiply computes for k = 1,
/// without packing). Large ones split their rows across the pool.
fn outer<T: Element>(
    m: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    parallel: bool,
) {
    let (col, row) = (gather(a.data, a.rs, m), gather(b.data, b.cs, n));
    assert!(fits(c.len(), m, n, ldc, 1));
    let run = |i0: usize, c: &mut [MaybeUninit<T>]| {
        vectorized(
            #[inline(always)]
            || {
                for (i, out) in c.chunks_mut(ldc).enumerate() {
                    let s = col[i0 + i];
                    for (o, &v) in out[..n].iter_mut().zip(row.iter()) {
                        o.write(s * v);
                    }
                }
            },
        )
    };
    let c = &mut c[..(m - 1) * ldc + n];
    if parallel && super::threads() > 1 && m * n >= super::PAR_THRESHOLD {
        let per = (super::chunk_len(m * n, 1) / n).max(1);
        super::par_chunks(c, per * ldc, |t, c| run(t * per, c));
    } else {
        run(0, c);
    }
}

/// The `k` elements `data[p * stride]`, borrowed when contiguous.
fn gather<T: Element>(data: &[T], stride: usize, k: usize) -> std::borrow::Cow<'_, [T]> {
    if stride == 1 {
        std::borrow::Cow::Borrowed(&data[..k])
    } else {
        std::borrow::Cow::Owned((0..k).map(|p| data[p * stride]).collect())
    }
}

/// `y[j] = Σ_p x[p] M[p * ld + j]`: `y += x[p] * row p` over the rows of M.
fn axpy_rows<T: Element>(x: &[T], mat: &[T], ld: usize, y: &mut [MaybeUninit<T>], par: bool) {
    let (k, n) = (x.len(), y.len());
    assert!(k == 0 || fits(mat.len(), k, n, ld, 1));
    let run = |c0: usize, y: &mut [MaybeUninit<T>]| {
        vectorized(
            #[inline(always)]
            || {
                let y = init_fill(y, T::zero());
                let w = y.len();
                for (p, &s) in x.iter().enumerate() {
                    let row = &mat[p * ld + c0..p * ld + c0 + w];
                    for (o, &v) in y.iter_mut().zip(row) {
                        *o += s * v;
                    }
                }
            },
        )
    };
    if par {
        let width = n.div_ceil(super::threads() * 4).next_multiple_of(64);
        super::par_chunks(y, width, |t, y| run(t * width, y));
    } else {
        run(0, y);
    }
}

/// Four dot products `x · rows[r]` with 16 accumulator lanes each (folded
/// pairwise), sharing the loads of `x`.
#[inline(always)]
fn dot16x4<T: Element>(x: &[T], rows: [&[T]; 4]) -> [T; 4] {
    const L: usize = 16;
    let k = x.len();
    let full = k / L * L;
    let (mut a0, mut a1, mut a2, mut a3) = (
        [T::zero(); L],
        [T::zero(); L],
        [T::zero(); L],
        [T::zero(); L],
    );
    let chunks = x[..full]
        .chunks_exact(L)
        .zip(rows[0][..full].chunks_exact(L))
        .zip(rows[1][..full].chunks_exact(L))
        .zip(rows[2][..full].chunks_exact(L))
        .zip(rows[3][..full].chunks_exact(L));
    for ((((xs, r0), r1), r2), r3) in chunks {
        for i in 0..L {
            a0[i] += xs[i] * r0[i];
            a1[i] += xs[i] * r1[i];
            a2[i] += xs[i] * r2[i];
            a3[i] += xs[i] * r3[i];
        }
    }
    let finish = |a: [T; L], row: &[T]| {
        let mut s = T::zero();
        for (&xv, &rv) in x[full..].iter().zip(&row[full..k]) {
            s += xv * rv;
        }
        super::fold_pairwise(a) + s
    };
    [
        finish(a0, rows[0]),
        finish(a1, rows[1]),
        finish(a2, rows[2]),
        finish(a3, rows[3]),
    ]
}

/// `y[j] = Σ_p x[p] M[j * ld + p]`: dot products of x with the rows of M.
fn dot_rows<T: Element>(x: &[T], mat: &[T], ld: usize, y: &mut [MaybeUninit<T>], par: bool) {
    let (k, n) = (x.len(), y.len());
    assert!(n == 0 || fits(mat.len(), n, k, ld, 1));
    let run = |j0: usize, y: &mut [MaybeUninit<T>]| {
        vectorized(
            #[inline(always)]
            || {
                let row = |j: usize| &mat[(j0 + j) * ld..(j0 + j) * ld + k];
                // four rows at a time share the loads of x; each row's sum
                // has the same lanes and order as `dot16`, so a row's value
                // does not depend on its group
                let quads = y.len() / 4;
                for q in 0..quads {
                    let j = 4 * q;
                    let d = dot16x4(x, [row(j), row(j + 1), row(j + 2), row(j + 3)]);
                    for (o, v) in y[j..j + 4].iter_mut().zip(d) {
                        o.write(v);
                    }
                }
                for (j, o) in y.iter_mut().enumerate().skip(4 * quads) {
                    o.write(dot16x4(x, [row(j); 4])[0]);
                }
            },
        )
    };
    if par {
        let per = n.div_ceil(super::threads() * 4).max(1);
        super::par_chunks(y, per, |t, y| run(t * per, y));
    } else {
        run(0, y);
    }
}

fn gemm_serial<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(fits(c.len(), m, n, ldc, 1));
    // SAFETY: C is exclusively borrowed and holds m rows of stride ldc with
    // n elements each (asserted with checked arithmetic just above);
    // matrixmultiply does not read C when beta is 0.
    unsafe { gemm_raw(m, k, n, a, b, c.as_mut_ptr().cast::<T>(), ldc) }
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
    assert!(fits(a.data.len(), m, k, a.rs, a.cs));
    assert!(fits(b.data.len(), k, n, b.rs, b.cs));
    assert!(isize::try_from(ldc).is_ok());
    // SAFETY: every element matrixmultiply reads of A and B lies inside
    // their slices, and the strides fit in isize (asserted above with
    // checked arithmetic); C's extent is the caller's contract (# Safety).
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

/// `C[m×n] (row stride ldc) += A[m×k] · B[k×n]` on one thread, C already
/// initialized: how convolution kernels accumulate a weight gradient over
/// blocks of im2col rows without a buffer per block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_acc<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n);
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    // SAFETY: A, B and C bounds are asserted above; C is exclusively
    // borrowed, so it aliases neither operand.
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
            T::one(),
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// A batch of products: `c[e] = a[a_off[e]] · b[b_off[e]]` for each entry,
/// C entries contiguous `m×n` blocks. Every element of `c` is written (it
/// may start uninitialized).
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
    c: &mut [MaybeUninit<T>],
) {
    let mn = m * n;
    let entry = |(cb, &(oa, ob)): (&mut [MaybeUninit<T>], &(usize, usize)), parallel: bool| {
        let am = MatRef::new(&a[oa..], m, k, ta);
        let bm = MatRef::new(&b[ob..], k, n, tb);
        gemm(m, k, n, am, bm, cb, n, parallel);
    };
    if mn == 0 {
        return;
    }
    let total = m * n * k * offsets.len();
    let threads = super::threads();
    // across entries when there are enough of them to keep every thread
    // busy, or when each is too small to split; otherwise entry by entry,
    // each split across the pool
    let across = offsets.len() >= 2 * threads || m * n * k < PAR_FLOPS;
    if offsets.len() > 1 && total >= PAR_FLOPS && threads > 1 && across {
        super::par_chunks(c, mn, |e, cb| entry((cb, &offsets[e]), false));
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
        for &(m, k, n) in &[
            (300, 70, 200),
            (20, 300, 600),
            (1, 5, 3),
            (7, 0, 2),
            (1, 3000, 1000),
            (2000, 1500, 1),
            (1, 40, 1),
            (5, 1, 7),
            (900, 1, 700),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f64> = (0..m * k).map(|i| ((i * 31) % 17) as f64 - 8.0).collect();
                let b: Vec<f64> = (0..k * n).map(|i| ((i * 7) % 13) as f64 - 6.0).collect();
                let mut c = vec![MaybeUninit::new(f64::NAN); m * n];
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
                // SAFETY: initialized above (and written by gemm)
                let c: Vec<f64> = c.into_iter().map(|v| unsafe { v.assume_init() }).collect();
                assert_eq!(c, naive(m, k, n, &a, ta, &b, tb), "{m}x{k}x{n} {ta} {tb}");
            }
        }
    }

    /// The epilogue sees every element of C exactly once, after its
    /// product is final, with its row and column (serial and split products,
    /// C with a row stride wider than n).
    #[test]
    fn epilogue_visits_each_finished_element_once() {
        for &(m, k, n, parallel) in &[
            (300, 70, 200, true),
            (128, 784, 256, true),
            (20, 300, 600, true),
            (33, 17, 9, false),
            (1, 40, 30, true),
            (5, 0, 7, true),
        ] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 31) % 17) as f64 - 8.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 7) % 13) as f64 - 6.0).collect();
            let ldc = n + 3;
            let mut c = vec![MaybeUninit::new(f64::NAN); m * ldc];
            let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.5).collect();
            // C + bias, then 10⁶ × (the element's index in C) added to
            // prove which element it ran on
            let epilogue = |i: usize, j0: usize, seg: &mut [f64]| {
                for (j, v) in seg.iter_mut().enumerate() {
                    *v = (*v + bias[j0 + j]).max(0.0) + 1e6 * (i * n + j0 + j) as f64;
                }
            };
            let (ma, mb) = (MatRef::new(&a, m, k, false), MatRef::new(&b, k, n, false));
            gemm_epilogue(m, k, n, ma, mb, &mut c, ldc, parallel, &epilogue);
            let want = naive(m, k, n, &a, false, &b, false);
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: initialized above (and written by gemm)
                    let got = unsafe { c[i * ldc + j].assume_init() };
                    let product = (want[i * n + j] + bias[j]).max(0.0);
                    assert_eq!(
                        got,
                        product + 1e6 * (i * n + j) as f64,
                        "{m}x{k}x{n} ({i}, {j})"
                    );
                }
                for j in n..ldc.min(m * ldc - i * ldc) {
                    // SAFETY: initialized above
                    assert!(
                        unsafe { c[i * ldc + j].assume_init() }.is_nan(),
                        "gap touched"
                    );
                }
            }
        }
    }

    /// Small-integer matrices (every product and sum is exact in f32).
    fn ints<T: Element>(len: usize, seed: u64) -> Vec<T> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                T::of((x % 17) as f64 - 8.0)
            })
            .collect()
    }

    /// `gemm` (serial and split) and `gemm_acc` against the naive loop, for
    /// one shape and transposition, in `T`; C has a row stride wider than n.
    fn check_shape<T: Element>(m: usize, k: usize, n: usize, ta: bool, tb: bool, seed: u64) {
        let to = |v: &[T]| v.iter().map(|x| x.to_f64().unwrap()).collect::<Vec<_>>();
        let (a, b) = (ints::<T>(m * k, seed), ints::<T>(k * n, seed + 1));
        let want = naive(m, k, n, &to(&a), ta, &to(&b), tb);
        let ldc = n + 3;
        for parallel in [false, true] {
            let mut c = vec![MaybeUninit::new(T::nan()); m * ldc];
            let (am, bm) = (MatRef::new(&a, m, k, ta), MatRef::new(&b, k, n, tb));
            gemm(m, k, n, am, bm, &mut c, ldc, parallel);
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: gemm wrote every (i, j) with i < m, j < n
                    let got = unsafe { c[i * ldc + j].assume_init() }.to_f64().unwrap();
                    assert_eq!(got, want[i * n + j], "{m}x{k}x{n} {ta} {tb} ({i}, {j})");
                }
            }
        }
        // accumulate onto C = 1
        let mut c = vec![T::one(); m * ldc];
        gemm_acc(
            m,
            k,
            n,
            MatRef::new(&a, m, k, ta),
            MatRef::new(&b, k, n, tb),
            &mut c,
            ldc,
        );
        for i in 0..m {
            for j in 0..n {
                let got = c[i * ldc + j].to_f64().unwrap();
                assert_eq!(
                    got,
                    want[i * n + j] + 1.0,
                    "acc {m}x{k}x{n} {ta} {tb} ({i}, {j})"
                );
            }
            for j in n..ldc.min(c.len() - i * ldc) {
                assert_eq!(c[i * ldc + j], T::one(), "acc wrote past row {i}");
            }
        }
    }

    #[test]
    fn blocked_kernel_crosses_block_edges() {
        // sizes past MC (144/72), KC (256) and a few tiles, with ragged edges
        for &(m, k, n) in &[(150, 520, 37), (73, 257, 130), (7, 300, 4100), (145, 1, 17)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check_shape::<f32>(m, k, n, ta, tb, 1);
                check_shape::<f64>(m, k, n, ta, tb, 2);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn blocked_kernel_matches_naive(
            m in 1usize..70, k in 1usize..70, n in 1usize..70,
            ta: bool, tb: bool, seed in 0u64..1000,
        ) {
            check_shape::<f32>(m, k, n, ta, tb, seed);
            check_shape::<f64>(m, k, n, ta, tb, seed);
        }
    }
}
