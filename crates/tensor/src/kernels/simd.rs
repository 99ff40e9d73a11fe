//! Runtime dispatch to the widest vector unit of this CPU.
//!
//! The crate is built for the baseline target (SSE2 on x86-64), so a loop
//! the compiler vectorizes uses 128-bit registers unless it is compiled with
//! more target features. [`vectorized`] runs a closure through a function
//! compiled with AVX2+FMA or AVX-512, whichever the CPU has (detected once);
//! the closure and the `#[inline(always)]` loops it calls are inlined into
//! that function and vectorized for it. Elsewhere it just calls the closure.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction set levels the kernels are compiled for.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Base = 1,
    Avx2 = 2,
    Avx512 = 3,
}

#[cfg(target_arch = "x86_64")]
static LEVEL: AtomicU8 = AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
#[inline]
fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Base,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => detect(),
    }
}

#[cfg(target_arch = "x86_64")]
#[cold]
fn detect() -> Level {
    let l = if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Base
    };
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Runs `f` compiled for the widest vector unit this CPU has (AVX-512 or
/// AVX2+FMA on x86-64, detected once; elsewhere `f` as it is). `f` should be
/// a loop over slices (calling only `#[inline(always)]` helpers), so that it
/// is inlined into, and vectorized for, the feature-enabled function.
/// Results are those of `f`: the compiler does not contract or reorder
/// floating-point operations for wider registers.
///
/// ```
/// let (mut w, g) = (vec![1.0f32; 1000], vec![0.5f32; 1000]);
/// rime_tensor::vectorized(|| w.iter_mut().zip(&g).for_each(|(w, g)| *w -= 0.1 * g));
/// assert!(w.iter().all(|&w| w == 1.0 - 0.1 * 0.5));
/// ```
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports the features these functions enable
            // (detected above).
            Level::Avx512 => return unsafe { x86::avx512(f) },
            Level::Avx2 => return unsafe { x86::avx2(f) },
            Level::Base => {}
        }
    }
    f()
}

/// A loop for [`vectorized_loop`]: its `run` is `#[inline(always)]`, which
/// makes sure it is compiled inside the feature-enabled function. A
/// closure passed to [`vectorized`] is inlined there only when the
/// compiler finds it small enough; a larger one (an optimizer's update
/// with several loop forms) stays a separate function compiled for the
/// baseline (4-wide SSE).
pub trait VectorLoop {
    /// What the loop returns.
    type Output;
    /// The loop; implementations are `#[inline(always)]`.
    fn run(self) -> Self::Output;
}

/// [`vectorized`] for a [`VectorLoop`]: `l.run()` compiled for the widest
/// vector unit this CPU has, whatever its size. Results are those of
/// `l.run()` (no contraction or reordering of floating-point operations).
///
/// ```
/// struct Axpy<'a>(&'a mut [f32], &'a [f32]);
/// impl rime_tensor::VectorLoop for Axpy<'_> {
///     type Output = ();
///     #[inline(always)]
///     fn run(self) {
///         self.0.iter_mut().zip(self.1).for_each(|(w, g)| *w -= 0.1 * g);
///     }
/// }
/// let (mut w, g) = (vec![1.0f32; 1000], vec![0.5f32; 1000]);
/// rime_tensor::vectorized_loop(Axpy(&mut w, &g));
/// assert!(w.iter().all(|&w| w == 1.0 - 0.1 * 0.5));
/// ```
#[inline(always)]
pub fn vectorized_loop<L: VectorLoop>(l: L) -> L::Output {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports the features these functions enable
            // (detected above).
            Level::Avx512 => return unsafe { x86::avx512_loop(l) },
            Level::Avx2 => return unsafe { x86::avx2_loop(l) },
            Level::Base => {}
        }
    }
    l.run()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::VectorLoop;

    /// # Safety
    /// The CPU must support AVX-512 F/BW/DQ/VL, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,avx,sse4.1,sse4.2")]
    pub(super) unsafe fn avx512_loop<L: VectorLoop>(l: L) -> L::Output {
        l.run()
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,avx,sse4.1,sse4.2")]
    pub(super) unsafe fn avx2_loop<L: VectorLoop>(l: L) -> L::Output {
        l.run()
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/DQ/VL, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,avx,sse4.1,sse4.2")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,avx,sse4.1,sse4.2")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
