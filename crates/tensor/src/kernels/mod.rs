//! Slice-level kernels shared by the ops: elementwise maps, broadcasting,
//! axis reductions and matmul. Everything here works on contiguous buffers
//! and knows nothing of recording.
//!
//! Loops are written over contiguous slices with independent iterations (and
//! several accumulators for reductions) so the compiler vectorizes them, and
//! they run through [`simd::vectorized`], which compiles them for AVX2 or
//! AVX-512 when the CPU has it. Outputs are written once, into uninitialized
//! buffers (no zero-fill pass). Work above [`PAR_THRESHOLD`] (elements times a
//! per-element cost: 1 for an add, more for exp or a libm call) is split into
//! a few chunks per thread of rayon's pool; below it stays on the calling
//! thread, where waking the pool costs more than the work.

#[cfg(target_arch = "x86_64")]
pub(crate) mod blocked;
pub(crate) mod broadcast;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod math;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod simd;
mod team;

use std::mem::MaybeUninit;

pub(crate) use simd::vectorized;
pub(crate) use team::par_tasks;

use crate::{Element, Result, Scalar};

/// Work (in [`ARITH`] units: elements times cost per element) below which a
/// kernel stays on one thread. Measured on a 2-core machine
/// (`benches/elementwise.rs` and `softmax.rs`): handing work to the pool
/// costs about 6-15 µs (waking a parked thread), which an add over 2^18 f32
/// (~35 µs on one thread) repays; below it the split loses.
pub(crate) const PAR_THRESHOLD: usize = 1 << 18;

/// The least work handed to one rayon task.
const MIN_TASK_WORK: usize = 1 << 15;

/// Cost per element of an add, a compare, relu...: the unit of work.
pub(crate) const ARITH: usize = 1;
/// Cost per element of the vectorized exp/tanh/sigmoid polynomials.
pub(crate) const POLY: usize = 4;
/// Cost per element of a libm call (ln, sin, erf, pow...).
pub(crate) const LIBM: usize = 8;

/// Threads that share a split: the pool's (the calling thread, when it is
/// not one of them, takes one piece and the pool the others).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f(i, chunk)` over the `size`-element chunks of `data` (chunk `i`
/// starts at element `i * size`) across the pool, as tasks of [`par_tasks`].
pub(crate) fn par_chunks<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let size = size.max(1);
    let len = data.len();
    // each task's chunk, handed out through a pointer: the chunks are
    // disjoint ranges of `data`
    let base = SendPtr(data.as_mut_ptr());
    par_tasks(len.div_ceil(size), |i| {
        let base = &base;
        let (start, end) = (i * size, ((i + 1) * size).min(len));
        // SAFETY: chunk `i` is `start..end`, disjoint from every other
        // task's, and `data` is exclusively borrowed for the whole call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
        f(i, chunk);
    });
}

/// A pointer to hand disjoint parts of one buffer to parallel pieces.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used to give disjoint sub-slices to pieces running at once.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Whether `work` units of work should be split across the pool.
#[inline]
pub(crate) fn parallel(work: usize) -> bool {
    work >= PAR_THRESHOLD && threads() > 1
}

/// Elements per task when `n` elements of `cost` each are split: a few
/// tasks per thread (so a thread descheduled on a busy machine is covered by
/// the others), none with less than [`MIN_TASK_WORK`], a multiple of 64
/// elements (whole cache lines).
#[inline]
pub(crate) fn chunk_len(n: usize, cost: usize) -> usize {
    let tasks = threads() * 4;
    n.div_ceil(tasks)
        .max(MIN_TASK_WORK.div_ceil(cost.max(1)))
        .next_multiple_of(64)
}

/// A new buffer of `n` elements, filled by `fill(start, dst)` for chunks
/// `dst` covering elements `start..start + dst.len()` (in parallel when
/// `n * cost` is large). `fill` must write every element of `dst`; the helpers
/// [`write_map`] and [`write_zip`] do, and assert the lengths that makes so.
pub(crate) fn build<T, F>(n: usize, cost: usize, fill: F) -> Vec<T>
where
    T: Scalar,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    build_in(crate::memory::take(n), n, cost, fill)
}

/// As [`build`] for an output whose size the op's inputs do not bound (a
/// broadcast, a new shape): the buffer is reserved fallibly, and a failed
/// reservation is [`Error::Alloc`] naming `op`.
pub(crate) fn try_build<T, F>(op: &'static str, n: usize, cost: usize, fill: F) -> Result<Vec<T>>
where
    T: Scalar,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    Ok(build_in(try_buffer(op, n)?, n, cost, fill))
}

/// An empty buffer with room for exactly `n` elements, reserved fallibly:
/// user-sized allocations fail with [`Error::Alloc`] (naming `op` and the
/// bytes) instead of aborting the process.
pub(crate) fn try_buffer<T: Scalar>(op: &'static str, n: usize) -> Result<Vec<T>> {
    crate::memory::try_take(op, n)
}

/// As [`try_buffer`] for buffers of other types (index tables), which the
/// cache of large buffers does not hold.
pub(crate) fn try_vec<T>(op: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| crate::Error::Alloc {
        op,
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

/// `n` copies of `value` in a fallibly reserved buffer (see [`try_buffer`]).
pub(crate) fn try_filled<T: Scalar>(op: &'static str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = try_buffer(op, n)?;
    v.resize(n, value);
    Ok(v)
}

/// The body of [`build`], filling `out` (capacity at least `n`).
fn build_in<T, F>(mut out: Vec<T>, n: usize, cost: usize, fill: F) -> Vec<T>
where
    T: Scalar,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    let dst = &mut out.spare_capacity_mut()[..n];
    if parallel(n.saturating_mul(cost)) {
        let c = chunk_len(n, cost);
        par_chunks(dst, c, |i, d| fill(i * c, d));
    } else {
        fill(0, dst);
    }
    // SAFETY: the chunks cover `0..n` and `fill` writes each element of its
    // chunk (the contract above). If `fill` panics, `out` still has length 0.
    unsafe { out.set_len(n) };
    out
}

/// As [`build`] for `rows` rows of `width` elements, each row costing about
/// `cost` elements of work: `fill(first_row, dst)` gets chunks of whole rows.
pub(crate) fn build_rows<T, F>(rows: usize, width: usize, cost: usize, fill: F) -> Vec<T>
where
    T: Scalar,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    let n = rows * width;
    let mut out = crate::memory::take(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    let work = rows.saturating_mul(cost);
    if width > 0 && rows > 1 && parallel(work) {
        let per = (chunk_len(work, 1) / cost.max(1)).max(1);
        par_chunks(dst, per * width, |i, d| fill(i * per, d));
    } else {
        fill(0, dst);
    }
    // SAFETY: as in `build`.
    unsafe { out.set_len(n) };
    out
}

/// Writes `dst[i] = f(x[i])` and returns `dst`, now initialized.
#[inline(always)]
pub(crate) fn init_map<'a, T: Copy, F: Fn(T) -> T>(
    dst: &'a mut [MaybeUninit<T>],
    x: &[T],
    f: F,
) -> &'a mut [T] {
    write_map(dst, x, f);
    // SAFETY: `write_map` wrote every element of `dst` (it asserts the
    // lengths).
    unsafe { assume_init_mut(dst) }
}

/// Writes `dst[i] = f(a[i], b[i])` and returns `dst`, now initialized.
#[inline(always)]
pub(crate) fn init_zip<'a, T: Copy, F: Fn(T, T) -> T>(
    dst: &'a mut [MaybeUninit<T>],
    a: &[T],
    b: &[T],
    f: F,
) -> &'a mut [T] {
    write_zip(dst, a, b, f);
    // SAFETY: as in `init_map`.
    unsafe { assume_init_mut(dst) }
}

/// Writes `v` to every element of `dst` and returns it, now initialized.
#[inline(always)]
pub(crate) fn init_fill<T: Copy>(dst: &mut [MaybeUninit<T>], v: T) -> &mut [T] {
    write_fill(dst, v);
    // SAFETY: every element was just written.
    unsafe { assume_init_mut(dst) }
}

/// Views a buffer whose elements have all been written as initialized.
///
/// # Safety
/// Every element of `x` is initialized.
#[inline(always)]
pub(crate) unsafe fn assume_init_mut<T>(x: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; initialized (the contract).
    unsafe { &mut *(x as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Views an initialized buffer as one that may be written with anything a
/// kernel writes (only initialized values: this never de-initializes).
#[inline(always)]
pub(crate) fn as_uninit_mut<T>(x: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the kernels write only
    // initialized values through the result, so `x` stays initialized.
    unsafe { &mut *(x as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `dst[i] = f(x[i])`, writing every element of `dst`.
#[inline(always)]
pub(crate) fn write_map<T: Copy, F: Fn(T) -> T>(dst: &mut [MaybeUninit<T>], x: &[T], f: F) {
    assert_eq!(dst.len(), x.len());
    for (o, &v) in dst.iter_mut().zip(x) {
        o.write(f(v));
    }
}

/// `dst[i] = f(a[i], b[i])`, writing every element of `dst`.
#[inline(always)]
pub(crate) fn write_zip<T: Copy, F: Fn(T, T) -> T>(
    dst: &mut [MaybeUninit<T>],
    a: &[T],
    b: &[T],
    f: F,
) {
    assert!(dst.len() == a.len() && dst.len() == b.len());
    for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        o.write(f(x, y));
    }
}

/// `dst[i] = v`, writing every element of `dst`.
#[inline(always)]
pub(crate) fn write_fill<T: Copy>(dst: &mut [MaybeUninit<T>], v: T) {
    for o in dst.iter_mut() {
        o.write(v);
    }
}

/// `out[i] = f(x[i])`, `f` costing `cost` units per element.
#[inline]
pub(crate) fn map<T: Element, F>(x: &[T], cost: usize, f: F) -> Vec<T>
where
    F: Fn(T) -> T + Sync + Send,
{
    build(x.len(), cost, |s, d| {
        vectorized(
            #[inline(always)]
            || write_map(d, &x[s..s + d.len()], &f),
        )
    })
}

/// `out[i] = f(a[i], b[i])` for equal-length slices.
#[inline]
pub(crate) fn zip_map<T: Element, F>(a: &[T], b: &[T], cost: usize, f: F) -> Vec<T>
where
    F: Fn(T, T) -> T + Sync + Send,
{
    assert_eq!(a.len(), b.len());
    build(a.len(), cost, |s, d| {
        let e = s + d.len();
        vectorized(
            #[inline(always)]
            || write_zip(d, &a[s..e], &b[s..e], &f),
        )
    })
}

/// Lanes of the accumulators in slice folds: two AVX-512 registers of f32.
const LANES: usize = 32;

/// Sum of a slice, blocked pairwise: blocks of [`PAIRWISE_BLOCK`] elements
/// summed in 32 independent accumulators (folded pairwise), and the block
/// sums combined pairwise ([`Cascade`]). The rounding error grows with
/// `32 + log2(n / 1024)` rather than with `n / 32`: an f32 sum of 2^25
/// elements stays within about 1e-7 relative of the exact one. Call it
/// inside [`vectorized`].
#[inline(always)]
pub(crate) fn sum_lanes<T: Element>(x: &[T]) -> T {
    sum_map_lanes(x, |v| v)
}

/// Elements summed by the lanes before a partial joins the pairwise tree:
/// 32 adds per lane, a negligible share of the work for the cascade.
pub(crate) const PAIRWISE_BLOCK: usize = 1024;

/// `Σ f(x[i])` with the blocking of [`sum_lanes`] (no buffer for the mapped
/// values).
#[inline(always)]
pub(crate) fn sum_map_lanes<T: Element>(x: &[T], f: impl Fn(T) -> T) -> T {
    if x.len() <= PAIRWISE_BLOCK {
        return sum_block(x, &f);
    }
    let mut cascade = Cascade::new();
    for block in x.chunks(PAIRWISE_BLOCK) {
        cascade.push(sum_block(block, &f), |a, b| a + b);
    }
    cascade.finish(T::zero(), |a, b| a + b)
}

/// One block of [`sum_map_lanes`]: 32 lanes folded pairwise, plus the tail.
#[inline(always)]
fn sum_block<T: Element>(x: &[T], f: &impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    let mut s = T::zero();
    for &r in rest {
        s += f(r);
    }
    fold_pairwise(acc) + s
}

/// Combines a stream of partial results pairwise, as a binary counter: the
/// `i`-th partial merges with as many stacked ones as `i` has trailing one
/// bits, so `n` partials form a balanced tree of depth `log2(n)` — the
/// same tree however the partials were computed (serially or by a pool).
pub(crate) struct Cascade<T> {
    stack: [Option<T>; 64],
    len: usize,
    count: u64,
}

impl<T: Copy> Cascade<T> {
    /// An empty cascade.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Cascade {
            stack: [None; 64],
            len: 0,
            count: 0,
        }
    }

    /// Adds the next partial.
    #[inline(always)]
    pub(crate) fn push(&mut self, mut v: T, combine: impl Fn(T, T) -> T) {
        let mut c = self.count;
        while c & 1 == 1 {
            self.len -= 1;
            if let Some(left) = self.stack[self.len].take() {
                v = combine(left, v);
            }
            c >>= 1;
        }
        self.stack[self.len] = Some(v);
        self.len += 1;
        self.count += 1;
    }

    /// The combination of every partial (`empty` if there were none).
    #[inline(always)]
    pub(crate) fn finish(self, empty: T, combine: impl Fn(T, T) -> T) -> T {
        let mut parts = self.stack[..self.len].iter().rev().flatten();
        let Some(&first) = parts.next() else {
            return empty;
        };
        parts.fold(first, |acc, &left| combine(left, acc))
    }
}

/// Folds accumulator lanes pairwise (lane `i` takes lane `i + L/2`, then
/// `i + L/4`...) and returns lane 0; `L` is a power of two.
#[inline(always)]
pub(crate) fn fold_pairwise<T: Element, const L: usize>(mut acc: [T; L]) -> T {
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            let hi = acc[i + w];
            acc[i] += hi;
        }
    }
    acc[0]
}

/// `max(a, b)`, NaN from either side propagating.
#[inline(always)]
pub(crate) fn max_nan<T: Element>(a: T, b: T) -> T {
    if a >= b || a.is_nan() { a } else { b }
}

/// `min(a, b)`, NaN from either side propagating.
#[inline(always)]
pub(crate) fn min_nan<T: Element>(a: T, b: T) -> T {
    if a <= b || a.is_nan() { a } else { b }
}

/// Maximum of a slice (NaN propagates; -inf if empty). Call it inside
/// [`vectorized`].
#[inline(always)]
pub(crate) fn max_lanes<T: Element>(x: &[T]) -> T {
    fold_lanes(x, T::neg_infinity(), max_nan)
}

/// Minimum of a slice (NaN propagates; +inf if empty).
#[inline(always)]
pub(crate) fn min_lanes<T: Element>(x: &[T]) -> T {
    fold_lanes(x, T::infinity(), min_nan)
}

#[inline(always)]
fn fold_lanes<T: Element>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
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
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 999, 1000] {
            let naive: f64 = x[..n].iter().sum();
            assert!(
                (vectorized(
                    #[inline(always)]
                    || sum_lanes(&x[..n])
                ) - naive)
                    .abs()
                    < 1e-12
            );
        }
        assert_eq!(max_lanes(&[1.0f32, 5.0, -2.0]), 5.0);
        assert_eq!(min_lanes(&[1.0f32, 5.0, -2.0]), -2.0);
        assert!(max_lanes(&[1.0f32, f32::NAN, 3.0]).is_nan());
        let mut long = vec![0.0f32; 100];
        long[70] = f32::NAN;
        assert!(max_lanes(&long).is_nan() && min_lanes(&long).is_nan());
        assert_eq!(max_lanes::<f32>(&[]), f32::NEG_INFINITY);
        let e = sum_map_lanes(&x[..77], |v| v * v);
        assert!((e - x[..77].iter().map(|v| v * v).sum::<f64>()).abs() < 1e-12);
    }

    #[test]
    fn maps_cover_parallel_path() {
        for n in [0, 1, 63, PAR_THRESHOLD - 1, PAR_THRESHOLD * 2 + 7] {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let y = map(&x, ARITH, |v| v * 2.0);
            assert_eq!(y.len(), n);
            assert!(y.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32));
            let z = zip_map(&x, &y, ARITH, |a, b| b - a);
            assert_eq!(z, x);
        }
    }

    #[test]
    fn chunks_are_large_and_aligned() {
        let n = PAR_THRESHOLD * 3 + 5;
        let c = chunk_len(n, ARITH);
        assert!(c >= MIN_TASK_WORK && c.is_multiple_of(64));
        assert!(chunk_len(n, LIBM) >= MIN_TASK_WORK / LIBM);
        assert!(n.div_ceil(c) <= rayon::current_num_threads().max(1) * 4 + 1);
    }
}
