//! Pooling kernels over NHWC tensors. The inner loops run over the channels
//! of one pixel (contiguous), so they vectorize; output rows (forward) and
//! images (backward, whose writes overlap within an image when windows do)
//! are split across the pool.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::{build_rows, par_chunks, parallel, vectorized};
use crate::Element;
use crate::ops::pool::Pool2dGeometry;

/// The input rows and columns under output `(oy, ox)`'s window, clipped to
/// the input (padding is never read).
#[inline(always)]
fn window(g: &Pool2dGeometry, oy: usize, ox: usize) -> (Range<usize>, Range<usize>) {
    let span = |o: usize, i: usize, n: usize| {
        let start = (o * g.strides[i]) as isize - g.pads[i] as isize;
        let end = start + g.pool[i] as isize;
        (start.max(0) as usize)..(end.min(n as isize).max(0) as usize)
    };
    (span(oy, 0, g.input[1]), span(ox, 1, g.input[2]))
}

/// `max(a, b)` with NaN from either side propagating, written as a choice
/// between two fresh values: the usual `if a >= b { a } else { b }` keeps
/// the accumulator on one side, which compiles to a masked store — slow on
/// AMD, where it made max pooling several times slower.
#[inline(always)]
fn window_max<T: Element>(a: T, b: T) -> T {
    if a.is_nan() | b.is_nan() {
        a + b
    } else {
        a.max(b)
    }
}

/// Runs `f(b, oy, dst_row)` over the output rows, `dst_row` holding
/// `ow · c` elements, in parallel when large.
fn per_row<T: Element>(
    g: &Pool2dGeometry,
    f: impl Fn(usize, usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let [n, _, _, c] = g.input;
    let [oh, ow] = g.output;
    let width = ow * c;
    let cost = width * g.pool[0] * g.pool[1];
    build_rows(n * oh, width, cost, |r0, dst| {
        if width == 0 {
            return;
        }
        for (i, row) in dst.chunks_exact_mut(width).enumerate() {
            let r = r0 + i;
            f(r / oh, r % oh, row);
        }
    })
}

/// Max pooling forward: the max of each window (NaN propagates).
pub(crate) fn max_pool2d<T: Element>(x: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [_, ih, iw, c] = g.input;
    per_row(g, |b, oy, row| {
        vectorized(
            #[inline(always)]
            || {
                let mut acc = vec![T::neg_infinity(); c];
                for (ox, out) in row.chunks_exact_mut(c).enumerate() {
                    let (ys, xs) = window(g, oy, ox);
                    acc.fill(T::neg_infinity());
                    for iy in ys {
                        for ix in xs.clone() {
                            let at = ((b * ih + iy) * iw + ix) * c;
                            for (a, &v) in acc.iter_mut().zip(&x[at..at + c]) {
                                *a = window_max(*a, v);
                            }
                        }
                    }
                    for (o, &a) in out.iter_mut().zip(&acc) {
                        o.write(a);
                    }
                }
            },
        )
    })
}

/// For each output element, the flat input index of its window's first
/// maximum (a NaN counts as the maximum): what the max-pool gradients route
/// through. Calls `f(out_index, in_index)` for one image's outputs.
#[inline(always)]
fn argmax_image<T: Element>(
    x: &[T],
    g: &Pool2dGeometry,
    b: usize,
    mut f: impl FnMut(usize, usize),
) {
    let [_, ih, iw, c] = g.input;
    let [oh, ow] = g.output;
    let mut best = vec![T::zero(); c];
    let mut at = vec![0usize; c];
    for oy in 0..oh {
        for ox in 0..ow {
            let (ys, xs) = window(g, oy, ox);
            let mut first = true;
            for iy in ys {
                for ix in xs.clone() {
                    let base = ((b * ih + iy) * iw + ix) * c;
                    let px = &x[base..base + c];
                    if first {
                        best.copy_from_slice(px);
                        for (k, a) in at.iter_mut().enumerate() {
                            *a = base + k;
                        }
                        first = false;
                        continue;
                    }
                    for k in 0..c {
                        let v = px[k];
                        if v > best[k] || (v.is_nan() && !best[k].is_nan()) {
                            best[k] = v;
                            at[k] = base + k;
                        }
                    }
                }
            }
            let o = ((b * oh + oy) * ow + ox) * c;
            for (k, &a) in at.iter().enumerate() {
                f(o + k, a);
            }
        }
    }
}

/// Max pooling's input gradient: each output gradient goes to its
/// window's first maximum (a NaN counts as the maximum, as in
/// [`argmax_image`]). Branch-free per channel so it vectorizes: the
/// window's max first, then the first element equal to it (or the first
/// NaN when the max is NaN) takes the gradient.
pub(crate) fn max_pool2d_grad<T: Element>(
    x: &[T],
    pooled: Option<&[T]>,
    dy: &[T],
    g: &Pool2dGeometry,
) -> Vec<T> {
    let [n, ih, iw, c] = g.input;
    let [oh, ow] = g.output;
    let image = ih * iw * c;
    let disjoint = g.strides[0] >= g.pool[0] && g.strides[1] >= g.pool[1];
    // disjoint windows write each element they cover once; the others
    // (gaps between windows, edges no window reaches) are zeroed
    let mut rows = vec![false; ih];
    let mut cols = vec![false; iw];
    if ow > 0 {
        for oy in 0..oh {
            rows[window(g, oy, 0).0].fill(true);
        }
    }
    if oh > 0 {
        for ox in 0..ow {
            cols[window(g, 0, ox).1].fill(true);
        }
    }
    let fill = |b: usize, dx: &mut [MaybeUninit<T>]| {
        if disjoint {
            for (iy, row) in dx.chunks_mut(iw * c).enumerate() {
                for (ix, px) in row.chunks_mut(c).enumerate() {
                    if !(rows[iy] && cols[ix]) {
                        zeroed(px);
                    }
                }
            }
        } else {
            zeroed(dx);
        }
        vectorized(
            #[inline(always)]
            || {
                let mut top = vec![T::zero(); c];
                // 1 while channel k's gradient is still to route, else 0
                // (floats, not bools: same-width lanes vectorize)
                let mut open = vec![T::one(); c];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (ys, xs) = window(g, oy, ox);
                        let o = ((b * oh + oy) * ow + ox) * c;
                        let d = &dy[o..o + c];
                        let top = match pooled {
                            Some(p) => &p[o..o + c],
                            None => {
                                top.fill(T::neg_infinity());
                                for iy in ys.clone() {
                                    for ix in xs.clone() {
                                        let at = ((b * ih + iy) * iw + ix) * c;
                                        for (t, &v) in top.iter_mut().zip(&x[at..at + c]) {
                                            *t = window_max(*t, v);
                                        }
                                    }
                                }
                                &top[..]
                            }
                        };
                        open.fill(T::one());
                        for iy in ys {
                            for ix in xs.clone() {
                                let at = (iy * iw + ix) * c;
                                let px = &x[b * image + at..b * image + at + c];
                                let t = &mut dx[at..at + c];
                                // SAFETY: with overlapping windows dx was
                                // zeroed above (ADD reads it).
                                unsafe {
                                    if disjoint {
                                        route::<T, false>(t, px, top, d, &mut open);
                                    } else {
                                        route::<T, true>(t, px, top, d, &mut open);
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    };
    // SAFETY: `fill` zeroes what no window covers (everything, when windows
    // overlap), and `route` writes every element a window covers: a covered
    // (iy, ix) lies in the window of the oy covering iy and the ox covering ix.
    unsafe { per_image(n, image, g, fill) }
}

/// One window element's share of the max-pool gradient, per channel:
/// `t += d` (or `t = d` when windows are disjoint, `ADD = false`, so every
/// element is written once) where the element equals the window's max `top`
/// and no earlier element did (`open`).
///
/// Selects only between fresh values: a select that keeps the old value
/// compiles to a masked load/store, which is microcoded and slow on AMD.
///
/// # Safety
/// With `ADD`, every element of `t` is initialized.
#[inline(always)]
unsafe fn route<T: Element, const ADD: bool>(
    t: &mut [MaybeUninit<T>],
    px: &[T],
    top: &[T],
    d: &[T],
    open: &mut [T],
) {
    let c = t.len();
    let (px, top, d, open) = (&px[..c], &top[..c], &d[..c], &mut open[..c]);
    for k in 0..c {
        let (v, m) = (px[k], top[k]);
        #[allow(clippy::eq_op)] // v != v: v is NaN
        let eq = (v == m) | ((v != v) & (m != m));
        let was_open = open[k] > T::zero();
        let add = if was_open & eq { d[k] } else { T::zero() };
        // SAFETY: read only with ADD, when t is initialized (the contract).
        t[k].write(if ADD {
            (unsafe { t[k].assume_init() }) + add
        } else {
            add
        });
        open[k] = if was_open & !eq { T::one() } else { T::zero() };
    }
}

/// The gradient of [`max_pool2d_grad`] with respect to its `dy`: `gg`
/// (input-shaped) read at each window's maximum (output-shaped).
pub(crate) fn max_pool2d_gradgrad<T: Element>(x: &[T], gg: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [n, _, _, c] = g.input;
    let [oh, ow] = g.output;
    let mut out = crate::memory::filled(n * oh * ow * c, T::zero());
    let image = oh * ow * c;
    let run = |b: usize, o: &mut [T]| argmax_image(x, g, b, |k, i| o[k - b * image] = gg[i]);
    if parallel(x.len()) && n > 1 {
        par_chunks(&mut out, image, run);
    } else {
        for (b, o) in out.chunks_mut(image.max(1)).enumerate() {
            run(b, o);
        }
    }
    out
}

/// Elements of output `(oy, ox)`'s window that lie inside the input.
#[inline(always)]
fn count(g: &Pool2dGeometry, oy: usize, ox: usize) -> usize {
    let (ys, xs) = window(g, oy, ox);
    ys.len() * xs.len()
}

/// Average pooling forward: each window's sum over its real elements
/// divided by their number (TF's `same` padding rule).
pub(crate) fn avg_pool2d<T: Element>(x: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [_, ih, iw, c] = g.input;
    per_row(g, |b, oy, row| {
        vectorized(
            #[inline(always)]
            || {
                let mut acc = vec![T::zero(); c];
                for (ox, out) in row.chunks_exact_mut(c).enumerate() {
                    let (ys, xs) = window(g, oy, ox);
                    let cnt = T::of(count(g, oy, ox).max(1) as f64);
                    acc.fill(T::zero());
                    for iy in ys {
                        for ix in xs.clone() {
                            let at = ((b * ih + iy) * iw + ix) * c;
                            for (a, &v) in acc.iter_mut().zip(&x[at..at + c]) {
                                *a += v;
                            }
                        }
                    }
                    for (o, &a) in out.iter_mut().zip(&acc) {
                        o.write(a / cnt);
                    }
                }
            },
        )
    })
}

/// Average pooling's input gradient: each output gradient spread evenly
/// over its window's real elements.
pub(crate) fn avg_pool2d_grad<T: Element>(dy: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [n, ih, iw, c] = g.input;
    let [oh, ow] = g.output;
    let fill = |b: usize, dx: &mut [MaybeUninit<T>]| {
        let dx = zeroed(dx);
        vectorized(
            #[inline(always)]
            || {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (ys, xs) = window(g, oy, ox);
                        let cnt = T::of(count(g, oy, ox).max(1) as f64);
                        let o = ((b * oh + oy) * ow + ox) * c;
                        let d = &dy[o..o + c];
                        for iy in ys {
                            for ix in xs.clone() {
                                let at = (iy * iw + ix) * c;
                                for (t, &v) in dx[at..at + c].iter_mut().zip(d) {
                                    *t += v / cnt;
                                }
                            }
                        }
                    }
                }
            },
        )
    };
    // SAFETY: `fill` zeroes its whole image first.
    unsafe { per_image(n, ih * iw * c, g, fill) }
}

/// An input-shaped buffer filled image by image by `f(b, image)` (images
/// in parallel when the work is large).
///
/// # Safety
/// `f` initializes every element of the image it is given ([`zeroed`]
/// first when it accumulates).
unsafe fn per_image<T: Element>(
    n: usize,
    image: usize,
    g: &Pool2dGeometry,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut dx: Vec<T> = crate::memory::take(n * image);
    let spare = &mut dx.spare_capacity_mut()[..n * image];
    let work = n * g.output[0] * g.output[1] * g.input[3] * g.pool[0] * g.pool[1];
    if parallel(work) && n > 1 {
        par_chunks(spare, image, f);
    } else {
        for (b, d) in spare.chunks_mut(image.max(1)).enumerate() {
            f(b, d);
        }
    }
    // SAFETY: `f` initialized every element of each of the n images (the
    // contract).
    unsafe { dx.set_len(n * image) };
    dx
}

/// `d` set to zeros, as initialized elements. Done per image by the task
/// that accumulates into it, just before (in cache, on every thread), not
/// as one cold pass over the batch.
#[inline(always)]
fn zeroed<T: Element>(d: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: all-zero bytes are a valid `T` (`Scalar: Pod`), so after the
    // memset the elements are initialized; the slice keeps `d`'s borrow.
    unsafe {
        d.as_mut_ptr().write_bytes(0, d.len());
        std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<T>(), d.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;
    use crate::ops::conv::Padding;
    use crate::ops::pool::Pool2dOptions;

    /// The gradient routed through [`argmax_image`] (the scalar first-max
    /// search the gradgrad uses): the reference for the vectorized form.
    fn routed(x: &[f64], dy: &[f64], g: &Pool2dGeometry) -> Vec<f64> {
        let [n, ih, iw, c] = g.input;
        let mut dx = vec![0.0; n * ih * iw * c];
        for b in 0..n {
            argmax_image(x, g, b, |o, i| dx[i] += dy[o]);
        }
        dx
    }

    #[test]
    fn max_pool_grad_routes_to_the_first_maximum_with_ties_and_nans() {
        // few distinct values, so windows tie; some NaNs and infinities
        let values = [0.0, 1.0, -1.0, 2.0, f64::NAN, f64::NEG_INFINITY, -0.0, 1.0];
        for (pool, strides, padding) in [
            ([2, 2], [2, 2], Padding::Valid),
            ([3, 3], [1, 1], Padding::Same),
            ([2, 3], [1, 2], Padding::Same),
            ([3, 2], [2, 1], Padding::Valid),
            // disjoint windows with gaps between them, and edges no window
            // reaches or windows past the edge
            ([2, 2], [3, 3], Padding::Valid),
            ([2, 1], [3, 2], Padding::Same),
            ([2, 2], [2, 2], Padding::Same),
        ] {
            let input = Shape::from([2, 5, 6, 3]);
            let opts = Pool2dOptions::new(pool).strides(strides).padding(padding);
            let g = Pool2dGeometry::new("max_pool2d", &input, &opts).unwrap();
            let x: Vec<f64> = (0..input.numel())
                .map(|i| values[(i * 7 + i / 5) % 8])
                .collect();
            let outs = g.input[0] * g.output[0] * g.output[1] * g.input[3];
            let dy: Vec<f64> = (0..outs).map(|i| 1.0 + i as f64 * 0.25).collect();
            let want = routed(&x, &dy, &g);
            let got = max_pool2d_grad(&x, None, &dy, &g);
            assert_eq!(got, want, "pool {pool:?} strides {strides:?} {padding:?}");
            // the same from the forward output (its maxima read, not searched)
            let pooled = max_pool2d(&x, &g);
            let got = max_pool2d_grad(&x, Some(&pooled), &dy, &g);
            assert_eq!(
                got, want,
                "pooled: pool {pool:?} strides {strides:?} {padding:?}"
            );
        }
    }

    #[test]
    fn max_pool_grad_zeroes_what_no_window_covers_in_a_reused_buffer() {
        // large enough for the buffer cache, which is primed with NaNs of
        // the output's size: every element must be written
        let input = Shape::from([2, 41, 43, 16]);
        for (pool, strides) in [([2, 2], [2, 2]), ([2, 2], [3, 4]), ([3, 3], [2, 2])] {
            let opts = Pool2dOptions::new(pool).strides(strides);
            let g = Pool2dGeometry::new("max_pool2d", &input, &opts).unwrap();
            let x: Vec<f64> = (0..input.numel())
                .map(|i| ((i * 37) % 101) as f64)
                .collect();
            let outs = g.input[0] * g.output[0] * g.output[1] * g.input[3];
            let dy: Vec<f64> = (0..outs).map(|i| 1.0 + (i % 13) as f64).collect();
            crate::memory::recycle(vec![f64::NAN; input.numel()]);
            let got = max_pool2d_grad(&x, None, &dy, &g);
            assert_eq!(
                got,
                routed(&x, &dy, &g),
                "pool {pool:?} strides {strides:?}"
            );
            crate::memory::recycle(vec![f64::NAN; input.numel()]);
            let got = avg_pool2d_grad(&dy, &g);
            assert!(
                got.iter().all(|v| v.is_finite()),
                "avg pool {pool:?} {strides:?}"
            );
        }
    }
}
