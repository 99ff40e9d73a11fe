//! # rime-tensor
//!
//! A fast n-d array for `f32` and `f64` (and `i32`/`i64` for ids and labels): NumPy broadcasting, reductions over
//! any axes, the softmax family, gather/scatter, and matrix products on
//! matrixmultiply's SIMD kernels split across rayon's pool.
//!
//! A [`Tensor`] is an immutable value with cheap `clone`. Every op whose
//! validity depends on shapes or arguments returns [`Result`], and the
//! [`Error`] names the op and the shapes involved.
//!
//! ```
//! use rime_tensor::Tensor;
//! let x = Tensor::<f32>::from_vec(vec![1.0, -2.0, 3.0, -4.0], [2, 2])?;
//! let w = Tensor::<f32>::eye(2)?;
//! let y = x.matmul(&w)?.relu().sum(&[1], false)?;
//! assert_eq!(y.to_vec(), vec![1.0, 3.0]);
//! # Ok::<(), rime_tensor::Error>(())
//! ```
//!
//! Ops report themselves to a gradient tape through [`record`]; rime-tape
//! supplies the tape. With no tape active that costs one thread-local check.
//!
//! ## Performance
//!
//! - Elementwise ops, broadcasting, reductions and the softmax family are
//!   contiguous loops compiled for AVX-512 or AVX2 when the CPU has them
//!   (detected at run time; the crate itself builds for the baseline
//!   target). `f32` `exp`, `tanh` and `sigmoid` use vectorized polynomials.
//! - Large work is split across rayon's pool ([`num_threads`], set with
//!   `RAYON_NUM_THREADS`); small work (below about 2^18 adds, less for
//!   costlier functions) stays on the calling thread. Results do not depend
//!   on the thread count.
//! - Matrix products use matrixmultiply's packed kernels (AVX-512 where
//!   available); products above 2^21 multiply-adds are split into row or
//!   column blocks across the pool, batches across their entries.
//!   Transposed operands are read through strides, never copied.

#![warn(missing_docs)]

mod display;
mod element;
mod error;
pub mod instances;
mod interop;
mod kernels;
pub mod memory;
pub mod ops;
mod partial_shape;
mod random;
pub mod record;
mod shape;
mod tensor;

pub use element::{DType, DynTensor, Element, IntElement, Scalar};
pub use error::{Error, Result};
pub use kernels::simd::{VectorLoop, vectorized, vectorized_loop};
pub use ops::arith::BinaryOp;
pub use ops::conv::{Conv1dOptions, Conv2dGeometry, Conv2dOptions, ConvOp, Padding};
pub use ops::dense::DenseActivation;
pub use ops::index::{IndexOp, Indices};
pub use ops::layout::LayoutOp;
pub use ops::nn::NnOp;
pub use ops::pool::{Pool2dGeometry, Pool2dOptions, PoolOp};
pub use ops::reduce::{ReduceKind, ReduceOp};
pub use ops::unary::UnaryOp;
pub use partial_shape::PartialShape;
pub use random::{Rng, seeded_rng};
pub use record::Op;
pub use shape::{Shape, broadcast_shapes};
pub use tensor::{Tensor, TensorId};

/// How many threads the kernels split large work across: the size of the
/// current rayon pool (the global one unless called inside another), which
/// `RAYON_NUM_THREADS` sets.
///
/// ```
/// assert!(rime_tensor::num_threads() >= 1);
/// ```
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Whether matrix products use rime's own blocked AVX2+FMA kernels (`true`,
/// the default on CPUs that have them) or matrixmultiply's (`false`): for
/// benchmarks that compare the two in one process. Returns the previous
/// setting. Both compute the same products (to rounding).
///
/// ```
/// let before = rime_tensor::use_own_gemm(false);
/// let c = rime_tensor::Tensor::<f32>::eye(3)?.matmul(&rime_tensor::Tensor::ones([3, 2])?)?;
/// assert_eq!(c.as_slice(), &[1.0; 6]);
/// rime_tensor::use_own_gemm(before);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
#[doc(hidden)]
pub fn use_own_gemm(on: bool) -> bool {
    kernels::gemm::OWN_GEMM.swap(on, std::sync::atomic::Ordering::Relaxed)
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
