//! The hook through which a gradient tape observes tensor ops.
//!
//! rime-tensor knows nothing of tapes. Every differentiable op, after it has
//! computed its output, checks one thread-local flag; when a tape is active
//! on this thread (rime-tape sets the flag and installs the hook) the op
//! reports what it did: its [`Op`] (with the attributes a gradient rule
//! needs), its inputs and its output. This is TensorFlow's split between
//! eager execution and `record_gradient`. With no tape active the cost of
//! recording is that one check.

use std::cell::Cell;
use std::sync::OnceLock;

use smallvec::SmallVec;

use crate::ops::arith::BinaryOp;
use crate::ops::index::IndexOp;
use crate::ops::layout::LayoutOp;
use crate::ops::nn::NnOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use crate::{DType, DynTensor, Element, Tensor};

/// A recorded op: which computation produced a tensor, with the attributes
/// its gradient rule needs. The families match the files in `ops/` (and the
/// rule files in rime-tape).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// Broadcasting binary arithmetic: inputs `[a, b]`.
    Binary(BinaryOp),
    /// `select(cond, a, b)` (NumPy's `where`): inputs `[cond, a, b]`.
    Select,
    /// Elementwise unary functions: input `[x]`.
    Unary(UnaryOp),
    /// Reductions over axes: input `[x]`.
    Reduce(ReduceOp),
    /// Softmax family and fused losses.
    Nn(NnOp),
    /// Shape and layout: reshape, permute, broadcast, concat, slice, pad.
    Layout(LayoutOp),
    /// Gather and scatter along an axis.
    Index(IndexOp),
    /// `op(a) · op(b)` with optional transposes of the last two axes:
    /// inputs `[a, b]`.
    MatMul {
        /// Whether `a` is used transposed.
        transpose_a: bool,
        /// Whether `b` is used transposed.
        transpose_b: bool,
    },
    /// Element type conversion: input `[x]` of dtype `from`.
    Cast {
        /// Input dtype.
        from: DType,
        /// Output dtype.
        to: DType,
    },
}

/// The inputs of one recorded op (inline for up to 3).
pub type OpInputs = SmallVec<[DynTensor; 3]>;

/// What rime-tape installs: called for every op while recording is on.
pub type RecordHook = fn(Op, OpInputs, DynTensor);

static HOOK: OnceLock<RecordHook> = OnceLock::new();

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Installs the recording hook (rime-tape does this once). A second call
/// with another function is ignored: there is one tape implementation.
#[doc(hidden)]
pub fn install_hook(hook: RecordHook) {
    let _ = HOOK.set(hook);
}

/// Turns recording on or off for this thread (rime-tape does this as tapes
/// start, pause and stop).
#[doc(hidden)]
#[inline]
pub fn set_recording(on: bool) {
    RECORDING.with(|r| r.set(on));
}

/// Whether ops on this thread are being reported to a tape right now.
///
/// ```
/// assert!(!rime_tensor::record::is_recording());
/// ```
#[inline]
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.get())
}

/// Reports a same-dtype op if recording is on. `op` is built only then.
#[inline]
pub(crate) fn record<T: Element>(
    op: impl FnOnce() -> Op,
    inputs: &[&Tensor<T>],
    output: &Tensor<T>,
) {
    if is_recording() {
        let inputs = inputs.iter().map(|t| T::into_dyn((*t).clone())).collect();
        record_dyn(op(), inputs, T::into_dyn(output.clone()));
    }
}

/// Reports an op whose inputs may differ in dtype (cast).
#[cold]
pub(crate) fn record_dyn(op: Op, inputs: OpInputs, output: DynTensor) {
    if let Some(hook) = HOOK.get() {
        hook(op, inputs, output);
    }
}
