//! Elementwise loops over rayon's pool for code outside this crate (an
//! optimizer's in-place update), run the way rime's own kernels run: one
//! piece per thread above a size threshold, the calling thread taking a
//! piece itself, each piece compiled for the widest vector unit of the CPU.

use crate::kernels;

/// How many pieces `len` elements costing `cost` each are worth splitting
/// into: 1 below the threshold where handing work to the pool pays (about
/// 2^18 additions), otherwise one per thread of rayon's pool.
///
/// ```
/// use rime_tensor::parallel;
/// assert_eq!(parallel::pieces(100, 1), 1);
/// assert!(parallel::pieces(1 << 22, 4) >= 1);
/// ```
pub fn pieces(len: usize, cost: usize) -> usize {
    if kernels::parallel(len.saturating_mul(cost.max(1))) {
        kernels::threads().min(len.max(1))
    } else {
        1
    }
}

/// Calls `f` on every item, the items spread over the pool (each thread
/// takes a contiguous group; one item runs on the calling thread). Each call
/// runs through [`vectorized`], so `f`'s loops use AVX2 or AVX-512 when the
/// CPU has them.
///
/// ```
/// use rime_tensor::parallel;
/// let mut halves = [vec![1.0f32; 4], vec![2.0; 4]];
/// parallel::for_each_mut(&mut halves, |h| h.iter_mut().for_each(|x| *x *= 10.0));
/// assert_eq!(halves[1], [20.0; 4]);
/// ```
pub fn for_each_mut<I: Send>(items: &mut [I], f: impl Fn(&mut I) + Sync) {
    kernels::par_chunks(items, 1, |_, group| {
        for item in group {
            kernels::vectorized(|| f(item));
        }
    });
}

/// Runs `f` compiled for the widest vector unit this CPU has (AVX-512 or
/// AVX2+FMA on x86-64, detected once; elsewhere `f` as it is). Loops in `f`
/// over slices, and the `#[inline]` code they call, are vectorized for it.
/// The results are the ones the plain loop gives: no operation is fused or
/// reordered.
///
/// ```
/// use rime_tensor::parallel;
/// let (x, mut y) = (vec![1.0f32; 100], vec![2.0f32; 100]);
/// parallel::vectorized(|| y.iter_mut().zip(&x).for_each(|(y, x)| *y += 3.0 * x));
/// assert_eq!(y[99], 5.0);
/// ```
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    kernels::vectorized(f)
}
