//! Pooling kernels over NHWC tensors. The inner loops run over the channels
//! of one pixel (contiguous), so they vectorize; output rows (forward) and
//! images (backward, whose writes overlap within an image when windows do)
//! are split across the pool.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::{build_rows, max_nan, par_chunks, parallel, vectorized};
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
                                *a = max_nan(*a, v);
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
/// window's maximum.
pub(crate) fn max_pool2d_grad<T: Element>(x: &[T], dy: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [n, ih, iw, c] = g.input;
    let image = ih * iw * c;
    per_image(n, image, g, |b, dx| {
        argmax_image(x, g, b, |o, i| dx[i - b * image] += dy[o]);
    })
}

/// The gradient of [`max_pool2d_grad`] with respect to its `dy`: `gg`
/// (input-shaped) read at each window's maximum (output-shaped).
pub(crate) fn max_pool2d_gradgrad<T: Element>(x: &[T], gg: &[T], g: &Pool2dGeometry) -> Vec<T> {
    let [n, _, _, c] = g.input;
    let [oh, ow] = g.output;
    let mut out = vec![T::zero(); n * oh * ow * c];
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
    per_image(n, ih * iw * c, g, |b, dx| {
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
    })
}

/// A zeroed input-shaped buffer filled image by image by `f(b, image)`
/// (images in parallel when the work is large).
fn per_image<T: Element>(
    n: usize,
    image: usize,
    g: &Pool2dGeometry,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut dx = vec![T::zero(); n * image];
    if image == 0 {
        return dx;
    }
    let work = n * g.output[0] * g.output[1] * g.input[3] * g.pool[0] * g.pool[1];
    if parallel(work) && n > 1 {
        par_chunks(&mut dx, image, f);
    } else {
        for (b, d) in dx.chunks_mut(image).enumerate() {
            f(b, d);
        }
    }
    dx
}
