//! Reductions over any set of axes.
//!
//! The input's axes are grouped into alternating runs of kept and reduced
//! axes. The two shapes that matter most get vectorized, parallel paths:
//! `[keep, reduce]` (rows folded horizontally, e.g. a softmax denominator)
//! and `[reduce, keep]` (rows accumulated vertically, e.g. a bias gradient
//! summed over the batch). Other groupings recurse over the outermost run
//! down to one of those. Large inputs split across rayon's pool along output
//! elements.

use smallvec::SmallVec;

use super::{Cascade, parallel, vectorized};
use crate::{Element, Shape};

/// How to fold values: identity, a binary combine, and a fast fold of a
/// contiguous slice (which must agree with folding `combine` over it).
pub(crate) struct Fold<T, C, S> {
    pub init: T,
    pub combine: C,
    pub fold_slice: S,
}

impl<T, C, S> Fold<T, C, S>
where
    C: Fn(T, T) -> T,
    S: Fn(&[T]) -> T,
{
    /// A fold; pass `#[inline(always)]` closures, so that they are inlined
    /// into the vectorized loops.
    pub fn new(init: T, combine: C, fold_slice: S) -> Self {
        Fold {
            init,
            combine,
            fold_slice,
        }
    }
}

/// The shape `x_shape` with every axis in `axes` set to 1.
pub(crate) fn kept_shape(x_shape: &Shape, axes: &[usize]) -> Shape {
    let mut s = x_shape.clone();
    for &a in axes {
        s.0[a] = 1;
    }
    s
}

/// Folds `x` over `axes` (sorted, unique). Returns values in the kept shape
/// (reduced axes of size 1) order, which equals the squeezed order.
///
/// The result does not depend on the number of threads: every split is
/// along output elements, or (for a full reduction) into fixed-size chunks.
pub(crate) fn reduce<T, C, S>(
    x: &[T],
    x_shape: &Shape,
    axes: &[usize],
    fold: Fold<T, C, S>,
) -> Vec<T>
where
    T: Element,
    C: Fn(T, T) -> T + Sync + Send,
    S: Fn(&[T]) -> T + Sync + Send,
{
    let out_shape = kept_shape(x_shape, axes);
    let n_out = out_shape.numel();
    if x.is_empty() {
        return vec![fold.init; n_out];
    }
    // runs of (size, reduced), size-1 axes dropped
    let mut runs: Runs = SmallVec::new();
    for (i, &d) in x_shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let red = axes.contains(&i);
        match runs.last_mut() {
            Some((size, r)) if *r == red => *size *= d,
            _ => runs.push((d, red)),
        }
    }
    let mut out = crate::memory::filled(n_out, fold.init);
    // a reduction reads one buffer and writes little: about half an add's
    // work per element (measured: the split pays from 2^19 elements)
    if parallel(x.len() / 2) {
        reduce_runs_par(x, &runs, &fold, &mut out);
    } else {
        vectorized(
            #[inline(always)]
            || reduce_runs(x, &runs, &fold, &mut out),
        );
    }
    out
}

type Runs = SmallVec<[(usize, bool); 4]>;

/// Rows of a column reduction accumulated before they are combined into the
/// output: a two-level sum, so f32 error grows with `256 + rows / 256`
/// rather than with `rows`.
const COL_BLOCK: usize = 256;

/// Elements per partial result of a full reduction (fixed, so the result
/// does not depend on how many threads computed the partials).
const FOLD_CHUNK: usize = 1 << 16;

/// The fold of a contiguous slice, in [`FOLD_CHUNK`] pieces combined in
/// order (the parallel full reduction computes the same pieces).
#[inline(always)]
fn fold_chunked<T, C, S>(x: &[T], fold: &Fold<T, C, S>) -> T
where
    T: Element,
    C: Fn(T, T) -> T + Sync + Send,
    S: Fn(&[T]) -> T + Sync + Send,
{
    if x.len() <= FOLD_CHUNK {
        return (fold.fold_slice)(x);
    }
    // chunk results combined pairwise (the parallel path builds the same
    // tree over the same chunks)
    let mut cascade = Cascade::new();
    for c in x.chunks(FOLD_CHUNK) {
        cascade.push((fold.fold_slice)(c), &fold.combine);
    }
    cascade.finish(fold.init, &fold.combine)
}

/// Folds whole rows `part` of a column reduction into a pairwise tree of
/// rows (the row analogue of [`Cascade`]), so that the error of summing
/// many blocks of rows grows with their logarithm.
struct RowCascade<T> {
    stack: Vec<Vec<T>>,
    count: u64,
}

impl<T: Copy> RowCascade<T> {
    fn new() -> Self {
        RowCascade {
            stack: Vec::new(),
            count: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, part: &[T], combine: impl Fn(T, T) -> T) {
        let mut v = part.to_vec();
        let mut c = self.count;
        while c & 1 == 1 {
            let left = self.stack.pop().expect("a stacked row per one bit");
            for (v, &l) in v.iter_mut().zip(&left) {
                *v = combine(l, *v);
            }
            c >>= 1;
        }
        self.stack.push(v);
        self.count += 1;
    }

    /// Combines the tree into `out` (`out = combine(out, total)`).
    #[inline(always)]
    fn finish_into(mut self, out: &mut [T], combine: impl Fn(T, T) -> T) {
        let Some(mut acc) = self.stack.pop() else {
            return;
        };
        while let Some(left) = self.stack.pop() {
            for (a, &l) in acc.iter_mut().zip(&left) {
                *a = combine(l, *a);
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = combine(*o, a);
        }
    }
}

/// Serial kernel: combines the fold of `x` (alternating runs) into `out`
/// (initialized to `fold.init`).
#[inline(always)]
fn reduce_runs<T, C, S>(x: &[T], runs: &[(usize, bool)], fold: &Fold<T, C, S>, out: &mut [T])
where
    T: Element,
    C: Fn(T, T) -> T + Sync + Send,
    S: Fn(&[T]) -> T + Sync + Send,
{
    match *runs {
        [] => out[0] = (fold.combine)(out[0], x[0]),
        [(_, true)] => out[0] = (fold.combine)(out[0], fold_chunked(x, fold)),
        [(_, false)] => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (fold.combine)(*o, v);
            }
        }
        [(_, false), (r, true)] => {
            for (o, row) in out.iter_mut().zip(x.chunks_exact(r)) {
                *o = (fold.combine)(*o, fold_chunked(row, fold));
            }
        }
        [(r, true), (k, false)] => {
            // blocks of COL_BLOCK rows folded into a partial row, then into out
            let mut part = vec![fold.init; k];
            let mut tree = RowCascade::new();
            for block in x.chunks(COL_BLOCK * k) {
                part.copy_from_slice(&block[..k]);
                for row in block[k..].chunks_exact(k) {
                    for (p, &v) in part.iter_mut().zip(row) {
                        *p = (fold.combine)(*p, v);
                    }
                }
                tree.push(&part, &fold.combine);
            }
            tree.finish_into(out, &fold.combine);
            debug_assert_eq!(x.len(), r * k);
        }
        [(r, true), ref rest @ ..] => {
            // fold each slab of the outer reduced run into out
            let slab = x.len() / r;
            // (recursion goes through the dispatcher: a recursive call is
            // not inlined, so it needs its own vectorized instance)
            for s in x.chunks_exact(slab) {
                vectorized(
                    #[inline(always)]
                    || reduce_runs(s, rest, fold, out),
                );
            }
        }
        [(k, false), ref rest @ ..] => {
            let (slab, o_slab) = (x.len() / k, out.len() / k);
            for (s, o) in x.chunks_exact(slab).zip(out.chunks_exact_mut(o_slab)) {
                vectorized(
                    #[inline(always)]
                    || reduce_runs(s, rest, fold, o),
                );
            }
        }
    }
}

/// Parallel kernel: splits along output elements (or fixed chunks of a full
/// reduction) and runs [`reduce_runs`] on each piece.
fn reduce_runs_par<T, C, S>(x: &[T], runs: &[(usize, bool)], fold: &Fold<T, C, S>, out: &mut [T])
where
    T: Element,
    C: Fn(T, T) -> T + Sync + Send,
    S: Fn(&[T]) -> T + Sync + Send,
{
    match *runs {
        [(_, true)] => {
            let mut parts = vec![fold.init; x.len().div_ceil(FOLD_CHUNK)];
            super::par_chunks(&mut parts, 1, |i, p| {
                let c = &x[i * FOLD_CHUNK..((i + 1) * FOLD_CHUNK).min(x.len())];
                p[0] = vectorized(
                    #[inline(always)]
                    || (fold.fold_slice)(c),
                );
            });
            let mut cascade = Cascade::new();
            for p in parts {
                cascade.push(p, &fold.combine);
            }
            out[0] = (fold.combine)(out[0], cascade.finish(fold.init, &fold.combine));
        }
        [(r, true), (k, false)] if r.div_ceil(COL_BLOCK) >= 2 * super::threads() => {
            // the serial kernel's blocks of COL_BLOCK rows, folded into
            // partial rows in parallel, then combined in the same order
            let mut parts = vec![fold.init; r.div_ceil(COL_BLOCK) * k];
            super::par_chunks(&mut parts, k, |b, part| {
                let block = &x[b * COL_BLOCK * k..((b + 1) * COL_BLOCK * k).min(x.len())];
                vectorized(
                    #[inline(always)]
                    || {
                        part.copy_from_slice(&block[..k]);
                        for row in block[k..].chunks_exact(k) {
                            for (p, &v) in part.iter_mut().zip(row) {
                                *p = (fold.combine)(*p, v);
                            }
                        }
                    },
                )
            });
            vectorized(
                #[inline(always)]
                || {
                    let mut tree = RowCascade::new();
                    for part in parts.chunks_exact(k) {
                        tree.push(part, &fold.combine);
                    }
                    tree.finish_into(out, &fold.combine);
                },
            );
        }
        [(r, true), (k, false)] if k >= 256 => {
            // few rows of many columns: column blocks, each task folding
            // every row of its columns
            let tasks = super::threads() * 4;
            let width = k.div_ceil(tasks).max(64).next_multiple_of(16).min(k);
            super::par_chunks(out, width, |b, o| {
                let c0 = b * width;
                let w = o.len();
                vectorized(
                    #[inline(always)]
                    || {
                        let mut part = vec![fold.init; w];
                        for i0 in (0..r).step_by(COL_BLOCK) {
                            let rows = COL_BLOCK.min(r - i0);
                            part.copy_from_slice(&x[i0 * k + c0..i0 * k + c0 + w]);
                            for i in i0 + 1..i0 + rows {
                                let row = &x[i * k + c0..i * k + c0 + w];
                                for (p, &v) in part.iter_mut().zip(row) {
                                    *p = (fold.combine)(*p, v);
                                }
                            }
                            for (o, &p) in o.iter_mut().zip(&part) {
                                *o = (fold.combine)(*o, p);
                            }
                        }
                    },
                )
            });
        }
        [(k, false), ref rest @ ..] if k > 1 => {
            // split the outer kept run: tasks own disjoint output slabs
            let (slab, o_slab) = (x.len() / k, out.len() / k);
            let per = (super::chunk_len(x.len(), 1) / slab).max(1);
            super::par_chunks(out, per * o_slab, |t, o| {
                let s = &x[t * per * slab..((t + 1) * per * slab).min(x.len())];
                vectorized(
                    #[inline(always)]
                    || {
                        for (s, o) in s.chunks_exact(slab).zip(o.chunks_exact_mut(o_slab)) {
                            reduce_runs(s, rest, fold, o);
                        }
                    },
                )
            });
        }
        _ => vectorized(
            #[inline(always)]
            || reduce_runs(x, runs, fold, out),
        ),
    }
}

/// Views `shape` around `axis` as `(outer, n, inner)`: element `(o, i, j)`
/// sits at `(o * n + i) * inner + j`.
pub(crate) fn axis_view(shape: &Shape, axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Sum over `axes`.
pub(crate) fn sum<T: Element>(x: &[T], x_shape: &Shape, axes: &[usize]) -> Vec<T> {
    reduce(
        x,
        x_shape,
        axes,
        Fold::new(
            T::zero(),
            #[inline(always)]
            |a, b| a + b,
            #[inline(always)]
            |s| super::sum_lanes(s),
        ),
    )
}

/// Maximum over `axes` (NaN propagates).
pub(crate) fn max<T: Element>(x: &[T], x_shape: &Shape, axes: &[usize]) -> Vec<T> {
    reduce(
        x,
        x_shape,
        axes,
        Fold::new(
            T::neg_infinity(),
            #[inline(always)]
            |a, b| super::max_nan(a, b),
            #[inline(always)]
            |s| super::max_lanes(s),
        ),
    )
}

/// Minimum over `axes` (NaN propagates).
pub(crate) fn min<T: Element>(x: &[T], x_shape: &Shape, axes: &[usize]) -> Vec<T> {
    reduce(
        x,
        x_shape,
        axes,
        Fold::new(
            T::infinity(),
            #[inline(always)]
            |a, b| super::min_nan(a, b),
            #[inline(always)]
            |s| super::min_lanes(s),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference: accumulate each element into its output slot.
    fn naive_sum(x: &[f64], shape: &[usize], axes: &[usize]) -> Vec<f64> {
        let s = Shape::from(shape);
        let o = kept_shape(&s, axes);
        let (xs, os) = (s.strides(), o.strides());
        let mut out = vec![0.0; o.numel()];
        for (i, &v) in x.iter().enumerate() {
            let mut oi = 0;
            for d in 0..s.rank() {
                let c = (i / xs[d]) % s[d];
                if !axes.contains(&d) {
                    oi += c * os[d];
                }
            }
            out[oi] += v;
        }
        out
    }

    #[test]
    fn every_axis_grouping_matches_naive() {
        let shape = [3, 4, 5, 2];
        let x: Vec<f64> = (0..120).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
        let mut sets: Vec<Vec<usize>> = vec![];
        for mask in 0u32..16 {
            sets.push((0..4).filter(|b| mask & (1 << b) != 0).collect());
        }
        for axes in sets {
            let got = sum(&x, &Shape::from(shape), &axes);
            let want = naive_sum(&x, &shape, &axes);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "axes {axes:?}");
            }
        }
    }

    #[test]
    fn large_parallel_paths() {
        let (r, k) = (2000, 300);
        assert!(r * k > 2 * crate::kernels::PAR_THRESHOLD);
        let x: Vec<f64> = (0..r * k).map(|i| (i % 13) as f64).collect();
        let cols = sum(&x, &Shape::from([r, k]), &[0]);
        let rows = sum(&x, &Shape::from([r, k]), &[1]);
        assert_eq!(cols, naive_sum(&x, &[r, k], &[0]));
        assert_eq!(rows, naive_sum(&x, &[r, k], &[1]));
        assert_eq!(max(&x, &Shape::from([r, k]), &[0, 1]), vec![12.0]);
        // few rows of many columns: split by columns
        let (r, k) = (400, 1500);
        let x: Vec<f64> = (0..r * k).map(|i| (i % 17) as f64).collect();
        assert_eq!(
            sum(&x, &Shape::from([r, k]), &[0]),
            naive_sum(&x, &[r, k], &[0])
        );
    }
}
