//! Convolution kernels: im2col blocks feeding the gemm.
//!
//! The output of a channels-last convolution is a `[P, c_out]` matrix with
//! one row per output position (`P = batch · out_h · out_w`), so the forward
//! pass is `cols · W` where `cols` holds, for each output position, the
//! input patch under the kernel (`[P, kh · kw · c_in]`). It is never built
//! whole: rows are processed in blocks sized to stay in cache, each block's
//! patch matrix built into one buffer per task and multiplied at once.
//! Blocks are independent, so they run across rayon's pool (batch and
//! output rows alike: a batch-1 call splits its rows just as well).
//!
//! - forward: `Y[block] = cols[block] · W` per group;
//! - input gradient (also `conv2d_transpose`): `dcols = dY[block] · Wᵀ`,
//!   added back into the input positions it came from (col2im); tasks own
//!   whole images so their writes never overlap;
//! - kernel gradient: `dW = Σ_blocks cols[block]ᵀ · dY[block]`, accumulated
//!   in place by the gemm (beta = 1) into a fixed number of partial sums
//!   that depends only on the shapes, summed in order, so results do not
//!   depend on the thread count.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::gemm::{self, MatRef, PAR_FLOPS};
use super::{par_chunks, threads, vectorized};
use crate::ops::conv::Conv2dGeometry;
use crate::{Element, memory};

/// Elements of one im2col block (≈128 KiB of f32: stays in L2 next to the
/// packed kernel).
const BLOCK_ELEMS: usize = 1 << 15;

/// The most partial sums a kernel gradient is split into.
const MAX_PARTIALS: usize = 16;

/// Whether one im2col block's product may split itself across threads:
/// only when it is several times the gemm's own threshold. A batch-1 conv
/// of the bench CNN (2.2M multiply-adds) ran slower on 2 threads than on 1
/// when its products split.
fn split(allowed: bool, work: usize) -> bool {
    allowed && work >= 4 * PAR_FLOPS
}

/// Rows of an im2col block with `width` columns: at least 32 (full gemm
/// panels), at most `total`, and all of them when that is at most half a
/// block more (a short last block would pack the kernel once more for a
/// few rows: a batch-1 conv2 of the bench CNN has 121 rows, blocks of 113).
fn block_rows(width: usize, total: usize) -> usize {
    let rows = (BLOCK_ELEMS / width.max(1)).max(32);
    if total <= rows + rows / 2 {
        total.max(1)
    } else {
        rows
    }
}

/// Writes rows `p0..p0 + rows` (global output positions) of group `grp`'s
/// patch matrix into `dst` (`rows × kh·kw·cg`, zero where the kernel hangs
/// over the padding).
fn im2col<T: Element>(
    x: &[T],
    g: &Conv2dGeometry,
    grp: usize,
    p0: usize,
    rows: usize,
    dst: &mut [T],
) {
    let [_, ih, iw, cin] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let cg = cin / g.groups;
    let width = kh * kw * cg;
    let c0 = grp * cg;
    // one group and undilated columns: a kernel row's kw·cin taps are one
    // contiguous run of the input row (one copy, not kw)
    let runs = g.groups == 1 && g.dilations[1] == 1;
    for (r, row) in dst[..rows * width].chunks_exact_mut(width).enumerate() {
        let p = p0 + r;
        let (b, rem) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        let ix0 = (ox * g.strides[1]).wrapping_sub(g.pads[1]);
        let inside = ix0 < iw && iw - ix0 >= kw;
        for ky in 0..kh {
            let iy = (oy * g.strides[0] + ky * g.dilations[0]).wrapping_sub(g.pads[0]);
            let taps = &mut row[ky * kw * cg..(ky + 1) * kw * cg];
            if iy >= ih {
                taps.fill(T::zero());
                continue;
            }
            let line = (b * ih + iy) * iw;
            if runs && inside {
                let at = (line + ix0) * cin;
                copy(taps, &x[at..at + kw * cin]);
                continue;
            }
            for kx in 0..kw {
                let ix = (ox * g.strides[1] + kx * g.dilations[1]).wrapping_sub(g.pads[1]);
                let seg = &mut taps[kx * cg..(kx + 1) * cg];
                if ix >= iw {
                    seg.fill(T::zero());
                } else {
                    let at = (line + ix) * cin + c0;
                    copy(seg, &x[at..at + cg]);
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for the short runs
/// of few-channel inputs (one channel: runs of 1 to 3 elements).
#[inline(always)]
fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    if dst.len() <= 16 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Adds rows `p0..p0 + rows` of group `grp`'s patch-gradient matrix `src`
/// back into the input gradient `dx` (the adjoint of [`im2col`]). `dx` is
/// the gradient of the images that hold those rows, starting at image
/// `b0`.
#[allow(clippy::too_many_arguments)]
fn col2im<T: Element>(
    src: &[T],
    g: &Conv2dGeometry,
    grp: usize,
    p0: usize,
    rows: usize,
    b0: usize,
    dx: &mut [T],
) {
    let [_, ih, iw, cin] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let cg = cin / g.groups;
    let width = kh * kw * cg;
    let c0 = grp * cg;
    // as in `im2col`: a kernel row's taps as one contiguous run
    let runs = g.groups == 1 && g.dilations[1] == 1;
    for (r, row) in src[..rows * width].chunks_exact(width).enumerate() {
        let p = p0 + r;
        let (b, rem) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        let ix0 = (ox * g.strides[1]).wrapping_sub(g.pads[1]);
        let inside = ix0 < iw && iw - ix0 >= kw;
        for ky in 0..kh {
            let iy = (oy * g.strides[0] + ky * g.dilations[0]).wrapping_sub(g.pads[0]);
            if iy >= ih {
                continue;
            }
            let line = ((b - b0) * ih + iy) * iw;
            if runs && inside {
                let at = (line + ix0) * cin;
                let taps = &row[ky * kw * cg..(ky + 1) * kw * cg];
                for (d, &s) in dx[at..at + kw * cin].iter_mut().zip(taps) {
                    *d += s;
                }
                continue;
            }
            for kx in 0..kw {
                let ix = (ox * g.strides[1] + kx * g.dilations[1]).wrapping_sub(g.pads[1]);
                if ix >= iw {
                    continue;
                }
                let seg = &row[(ky * kw + kx) * cg..(ky * kw + kx + 1) * cg];
                let at = (line + ix) * cin + c0;
                for (d, &s) in dx[at..at + cg].iter_mut().zip(seg) {
                    *d += s;
                }
            }
        }
    }
}

/// Whether a 1×1, stride-1, unpadded, ungrouped convolution: its patch
/// matrix is the input itself, read in place.
fn pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel == [1, 1] && g.strides == [1, 1] && g.pads == [0, 0] && g.groups == 1
}

/// `y = conv2d(x, w)`: `x` is `[n, ih, iw, cin]`, `w` `[kh, kw, cin/groups,
/// cout]`, the result `[n, oh, ow, cout]`.
pub(crate) fn conv2d_forward<T: Element>(x: &[T], w: &[T], g: &Conv2dGeometry) -> Vec<T> {
    let p_total = g.positions();
    let cout = g.out_c;
    let groups = g.groups;
    let (cg, og) = (g.input[3] / groups, cout / groups);
    let width = g.kernel[0] * g.kernel[1] * cg;
    let len = p_total * cout;
    let mut out: Vec<T> = memory::take(len);
    let dst = &mut out.spare_capacity_mut()[..len];
    if len > 0 {
        if width == 0 {
            super::write_fill(dst, T::zero());
        } else {
            let rows = block_rows(width, p_total);
            let work = p_total * width * cout;
            let par = work >= PAR_FLOPS && threads() > 1 && p_total > rows;
            let block = |i: usize, c: &mut [MaybeUninit<T>]| {
                let p0 = i * rows;
                let m = c.len() / cout;
                let mut buf = memory::take(if pointwise(g) { 0 } else { m * width });
                for grp in 0..groups {
                    let a = if pointwise(g) {
                        MatRef {
                            data: &x[p0 * width..],
                            rs: width,
                            cs: 1,
                        }
                    } else {
                        buf.resize(m * width, T::zero());
                        vectorized(
                            #[inline(always)]
                            || im2col(x, g, grp, p0, m, &mut buf),
                        );
                        MatRef {
                            data: &buf[..],
                            rs: width,
                            cs: 1,
                        }
                    };
                    let b = MatRef {
                        data: &w[grp * og..],
                        rs: cout,
                        cs: 1,
                    };
                    gemm::gemm(
                        m,
                        width,
                        og,
                        a,
                        b,
                        &mut c[grp * og..],
                        cout,
                        split(!par, m * width * og),
                    );
                }
                memory::recycle(buf);
            };
            if par {
                par_chunks(dst, rows * cout, block);
            } else {
                // block by block (one patch buffer at a time); each gemm
                // splits itself across the pool if it is large
                for (i, c) in dst.chunks_mut(rows * cout).enumerate() {
                    block(i, c);
                }
            }
        }
    }
    // SAFETY: the groups' column blocks cover every column of every row,
    // and each gemm writes every element of its block.
    unsafe { out.set_len(len) };
    out
}

/// The input gradient `dx` of `y = conv2d(x, w)` given `dy` (the transpose
/// convolution of `dy` with `w`): `[n, ih, iw, cin]`.
pub(crate) fn conv2d_backprop_input<T: Element>(dy: &[T], w: &[T], g: &Conv2dGeometry) -> Vec<T> {
    let [n, ih, iw, cin] = g.input;
    let cout = g.out_c;
    let groups = g.groups;
    let (cg, og) = (cin / groups, cout / groups);
    let width = g.kernel[0] * g.kernel[1] * cg;
    let per_image = g.output[0] * g.output[1];
    let image = ih * iw * cin;
    let mut dx = memory::filled(n * image, T::zero());
    if dx.is_empty() || per_image == 0 || og == 0 || width == 0 {
        return dx;
    }
    let work = n * per_image * width * cout;
    let par_images = work >= PAR_FLOPS && threads() > 1 && n > 1;
    let rows = block_rows(width, per_image);
    let one_image = |b: usize, dx: &mut [T]| {
        let mut buf = memory::filled(rows * width, T::zero());
        let mut p = b * per_image;
        let end = p + per_image;
        while p < end {
            let m = rows.min(end - p);
            for grp in 0..groups {
                // dcols[m × width] = dY[p.., group cols] · W_gᵀ
                let a = MatRef {
                    data: &dy[p * cout + grp * og..],
                    rs: cout,
                    cs: 1,
                };
                let wt = MatRef {
                    data: &w[grp * og..],
                    rs: 1,
                    cs: cout,
                };
                gemm::gemm(
                    m,
                    og,
                    width,
                    a,
                    wt,
                    super::as_uninit_mut(&mut buf[..m * width]),
                    width,
                    split(!par_images, m * og * width),
                );
                vectorized(
                    #[inline(always)]
                    || col2im(&buf, g, grp, p, m, b, dx),
                );
            }
            p += m;
        }
        memory::recycle(buf);
    };
    if par_images {
        par_chunks(&mut dx, image, one_image);
    } else {
        for (b, d) in dx.chunks_mut(image).enumerate() {
            one_image(b, d);
        }
    }
    dx
}

/// The kernel gradient `dw` of `y = conv2d(x, w)` given `dy`:
/// `[kh, kw, cin/groups, cout]`. With `cols`, only those output filters
/// (ranges of the last axis) are computed; the others are zero.
pub(crate) fn conv2d_backprop_filter<T: Element>(
    x: &[T],
    dy: &[T],
    g: &Conv2dGeometry,
    cols: Option<&[Range<usize>]>,
) -> Vec<T> {
    let cout = g.out_c;
    let groups = g.groups;
    let (cg, og) = (g.input[3] / groups, cout / groups);
    let width = g.kernel[0] * g.kernel[1] * cg;
    let p_total = g.positions();
    let size = width * cout;
    let all = 0..cout;
    let cols = cols.unwrap_or(std::slice::from_ref(&all));
    // per group, the filter ranges to compute
    let spans: Vec<(usize, Range<usize>)> = (0..groups)
        .flat_map(|grp| {
            let (lo, hi) = (grp * og, (grp + 1) * og);
            cols.iter().filter_map(move |r| {
                let (s, e) = (r.start.max(lo), r.end.min(hi));
                (s < e).then_some((grp, s..e))
            })
        })
        .collect();
    if size == 0 || p_total == 0 || spans.is_empty() {
        return memory::filled(size, T::zero());
    }
    let rows = block_rows(width, p_total);
    let blocks = p_total.div_ceil(rows);
    let work = p_total * width * spans.iter().map(|(_, r)| r.len()).sum::<usize>();
    let partials = if work >= PAR_FLOPS {
        blocks.min(MAX_PARTIALS)
    } else {
        1
    };
    let per = blocks.div_ceil(partials);
    let partials = blocks.div_ceil(per);
    // partial sum `q` over blocks `q·per .. (q+1)·per`
    let accumulate = |q: usize, dw: &mut [T]| {
        let mut buf = memory::take(if pointwise(g) { 0 } else { rows * width });
        for blk in q * per..((q + 1) * per).min(blocks) {
            let p0 = blk * rows;
            let m = rows.min(p_total - p0);
            for grp in 0..groups {
                let a = if pointwise(g) {
                    // colsᵀ read in place: element (r, p) at p·width + r
                    MatRef {
                        data: &x[p0 * width..],
                        rs: 1,
                        cs: width,
                    }
                } else {
                    buf.resize(m * width, T::zero());
                    vectorized(
                        #[inline(always)]
                        || im2col(x, g, grp, p0, m, &mut buf),
                    );
                    MatRef {
                        data: &buf[..],
                        rs: 1,
                        cs: width,
                    }
                };
                for (_, span) in spans.iter().filter(|(s, _)| *s == grp) {
                    let b = MatRef {
                        data: &dy[p0 * cout + span.start..],
                        rs: cout,
                        cs: 1,
                    };
                    gemm::gemm_acc(width, m, span.len(), a, b, &mut dw[span.start..], cout);
                }
            }
        }
        memory::recycle(buf);
    };
    let mut acc = memory::filled(partials * size, T::zero());
    if partials > 1 {
        par_chunks(&mut acc, size, accumulate);
    } else {
        accumulate(0, &mut acc);
    }
    let (first, rest) = acc.split_at_mut(size);
    for part in rest.chunks_exact(size) {
        vectorized(
            #[inline(always)]
            || {
                for (d, &s) in first.iter_mut().zip(part) {
                    *d += s;
                }
            },
        );
    }
    acc.truncate(size);
    acc
}
