//! Reductions over any set of axes.
//!
//! The input's axes are grouped into alternating runs of kept and reduced
//! axes. The two shapes that matter most get vectorized, parallel paths:
//! `[keep, reduce]` (rows folded horizontally, e.g. a softmax denominator)
//! and `[reduce, keep]` (rows accumulated vertically, e.g. a bias gradient
//! summed over the batch). Any other grouping runs a serial strided loop.

use rayon::prelude::*;
use smallvec::SmallVec;

use super::broadcast::Plan;
use super::{PAR_CHUNK, PAR_THRESHOLD};
use crate::{Element, Shape};

/// How to fold values: identity, a binary combine, and a fast fold of a
/// contiguous slice (which must agree with folding `combine` over it).
pub(crate) struct Fold<T, C, S> {
    pub init: T,
    pub combine: C,
    pub fold_slice: S,
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
    let mut runs: SmallVec<[(usize, bool); 4]> = SmallVec::new();
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
    match runs.as_slice() {
        [] => vec![x[0]],
        [(_, true)] => vec![fold_all(x, &fold)],
        [(_, false)] => x.to_vec(),
        &[(k, false), (r, true)] => {
            let mut out = vec![fold.init; k];
            let row = |(o, xr): (&mut T, &[T])| *o = (fold.fold_slice)(xr);
            if x.len() >= PAR_THRESHOLD && k > 1 {
                out.par_iter_mut().zip(x.par_chunks(r)).for_each(row);
            } else {
                out.iter_mut().zip(x.chunks(r)).for_each(row);
            }
            out
        }
        &[(r, true), (k, false)] => {
            let mut out = vec![fold.init; k];
            let cols = |c0: usize, o: &mut [T]| {
                for i in 0..r {
                    let xr = &x[i * k + c0..i * k + c0 + o.len()];
                    for (o, &v) in o.iter_mut().zip(xr) {
                        *o = (fold.combine)(*o, v);
                    }
                }
            };
            if x.len() >= PAR_THRESHOLD && k >= 64 {
                // column blocks of whole cache lines, each accumulating every row
                let block = ((PAR_CHUNK / r).max(64)).min(k);
                out.par_chunks_mut(block)
                    .enumerate()
                    .for_each(|(b, o)| cols(b * block, o));
            } else {
                cols(0, &mut out);
            }
            out
        }
        _ => {
            let mut out = vec![fold.init; n_out];
            let plan = Plan::new([x_shape, &out_shape], x_shape);
            let inner = plan.inner;
            let [_, so] = plan.inner_stride;
            plan.for_rows(0, plan.outer(), |_, [ox, oo]| {
                let xr = &x[ox..ox + inner];
                if so == 0 {
                    out[oo] = (fold.combine)(out[oo], (fold.fold_slice)(xr));
                } else {
                    for (o, &v) in out[oo..oo + inner].iter_mut().zip(xr) {
                        *o = (fold.combine)(*o, v);
                    }
                }
            });
            out
        }
    }
}

fn fold_all<T, C, S>(x: &[T], fold: &Fold<T, C, S>) -> T
where
    T: Element,
    C: Fn(T, T) -> T + Sync + Send,
    S: Fn(&[T]) -> T + Sync + Send,
{
    if x.len() >= PAR_THRESHOLD {
        x.par_chunks(PAR_CHUNK * 4)
            .map(|c| (fold.fold_slice)(c))
            .collect::<Vec<_>>()
            .into_iter()
            .fold(fold.init, |a, b| (fold.combine)(a, b))
    } else {
        (fold.fold_slice)(x)
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
        Fold {
            init: T::zero(),
            combine: |a, b| a + b,
            fold_slice: super::sum_slice,
        },
    )
}

/// Maximum over `axes` (NaN propagates).
pub(crate) fn max<T: Element>(x: &[T], x_shape: &Shape, axes: &[usize]) -> Vec<T> {
    reduce(
        x,
        x_shape,
        axes,
        Fold {
            init: T::neg_infinity(),
            combine: |a: T, b: T| if a >= b || a.is_nan() { a } else { b },
            fold_slice: super::max_slice,
        },
    )
}

/// Minimum over `axes` (NaN propagates).
pub(crate) fn min<T: Element>(x: &[T], x_shape: &Shape, axes: &[usize]) -> Vec<T> {
    reduce(
        x,
        x_shape,
        axes,
        Fold {
            init: T::infinity(),
            combine: |a: T, b: T| if a <= b || a.is_nan() { a } else { b },
            fold_slice: super::min_slice,
        },
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
        let (r, k) = (700, 300);
        let x: Vec<f64> = (0..r * k).map(|i| (i % 13) as f64).collect();
        let cols = sum(&x, &Shape::from([r, k]), &[0]);
        let rows = sum(&x, &Shape::from([r, k]), &[1]);
        assert_eq!(cols, naive_sum(&x, &[r, k], &[0]));
        assert_eq!(rows, naive_sum(&x, &[r, k], &[1]));
        assert_eq!(max(&x, &Shape::from([r, k]), &[0, 1]), vec![12.0]);
    }
}
