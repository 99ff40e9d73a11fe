//! # rime-tape
//!
//! Reverse-mode autodiff over rime-tensor, with TensorFlow's tape semantics
//! and element-level trainability:
//!
//! - [`GradientTape`] records the ops run on this thread while it is alive
//!   and computes gradients with respect to watched tensors and
//!   [`Variable`]s; tapes nest for higher derivatives.
//! - [`Variable`]: a shared mutable tensor with a `trainable` flag and an
//!   optional [`TrainableMask`] saying which of its elements may train.
//! - `rules/`: the gradient of every differentiable rime-tensor op, one file
//!   per op family.
//! - [`gradcheck`]: tape gradients against finite differences, for your own
//!   property tests.
//!
//! ```
//! use rime_tape::{GradientTape, TrainableMask, Variable};
//! use rime_tensor::Tensor;
//! let w = Variable::new("w", Tensor::<f32>::ones([3, 2])?);
//! w.set_mask(Some(TrainableMask::freeze_rows(0..1)))?; // row 0 frozen
//! let x = Tensor::<f32>::ones([4, 3])?;
//! let tape = GradientTape::new();
//! let loss = x.matmul(&w.value())?.sum_all();
//! let g = tape.gradient_of(&loss, &w)?;
//! assert_eq!(g.to_vec(), vec![0.0, 0.0, 4.0, 4.0, 4.0, 4.0]);
//! # Ok::<(), rime_tape::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod custom;
mod deferred;
mod error;
mod gradcheck;
mod gradients;
mod instances;
mod mask;
mod rules;
mod tape;
mod variable;

pub use custom::{custom_gradient, stop_gradient};
pub use deferred::{DeferredGradient, GradientProduct};
pub use error::{Error, Result};
pub use gradcheck::{GradcheckError, GradcheckOptions, GradcheckReport, gradcheck};
pub use gradients::Gradients;
pub use mask::{IndexRanges, MaskStructure, ResolvedMask, TrainableMask};
pub use tape::{
    AsSource, GradientOptions, GradientTape, RecordingPaused, Source, SourceRef, TapeBuilder,
    UnconnectedGradients, Watchable, live_nodes, no_record,
};
pub use variable::{AnyVariable, Constraint, Variable, VariableElement, WeakVariable};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
