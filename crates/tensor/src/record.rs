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
use crate::ops::conv::ConvOp;
use crate::ops::dense::DenseActivation;
use crate::ops::index::IndexOp;
use crate::ops::layout::LayoutOp;
use crate::ops::nn::NnOp;
use crate::ops::pool::PoolOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use crate::{DType, DynTensor, Scalar, Tensor};

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
    /// `activation(x · kernel + bias)` for 2-D `x` (`ops/dense.rs`):
    /// inputs `[x, kernel, bias]`, or `[x, kernel]` without a bias.
    Dense {
        /// The activation applied after the bias add.
        activation: DenseActivation,
    },
    /// Convolutions and their gradients (`ops/conv.rs`); boxed, as the
    /// geometry is large and every recorded op moves an `Op`.
    Conv(Box<ConvOp>),
    /// Pooling and its gradients (`ops/pool.rs`); boxed like `Conv`.
    Pool(Box<PoolOp>),
    /// Element type conversion: input `[x]` of dtype `from`.
    Cast {
        /// Input dtype.
        from: DType,
        /// Output dtype.
        to: DType,
    },
}

// Every recorded op moves its `Op` through the hook into a tape node: its
// large attributes (geometries, per-axis lists) are boxed to keep it small.
const _: () = assert!(std::mem::size_of::<Op>() <= 32);

/// A borrowed tensor of either element type: what the hook sees of an op's
/// inputs and output (a tape clones only what it keeps).
#[derive(Clone, Copy, Debug)]
pub enum DynRef<'a> {
    /// An `f32` tensor.
    F32(&'a Tensor<f32>),
    /// An `f64` tensor.
    F64(&'a Tensor<f64>),
}

impl DynRef<'_> {
    /// The tensor's identity.
    #[inline]
    pub fn id(&self) -> crate::TensorId {
        match self {
            DynRef::F32(t) => t.id(),
            DynRef::F64(t) => t.id(),
        }
    }

    /// An owned handle (cheap: shares the buffer).
    pub fn to_owned(&self) -> DynTensor {
        match self {
            DynRef::F32(t) => DynTensor::F32((*t).clone()),
            DynRef::F64(t) => DynTensor::F64((*t).clone()),
        }
    }
}

/// What rime-tape installs: called for every op while recording is on,
/// with the op, its inputs and its output.
pub type RecordHook = fn(Op, &[DynRef<'_>], DynRef<'_>);

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
/// Ops on integer tensors are never reported: they are not differentiable.
#[inline]
pub(crate) fn record<T: Scalar>(
    op: impl FnOnce() -> Op,
    inputs: &[&Tensor<T>],
    output: &Tensor<T>,
) {
    if is_recording() {
        // a float type's tensors are all recorded, an integer type's none
        let Some(out) = T::recorded(output) else {
            return;
        };
        // the usual one or two inputs on the stack, without a collect
        match inputs {
            [a] => {
                if let Some(a) = T::recorded(a) {
                    record_dyn(op(), &[a], out);
                }
            }
            [a, b] => {
                if let (Some(a), Some(b)) = (T::recorded(a), T::recorded(b)) {
                    record_dyn(op(), &[a, b], out);
                }
            }
            _ => {
                let refs: SmallVec<[DynRef<'_>; 4]> =
                    inputs.iter().filter_map(|t| T::recorded(t)).collect();
                record_dyn(op(), &refs, out);
            }
        }
    }
}

/// Reports an op whose inputs may differ in dtype (cast).
#[inline(never)]
pub(crate) fn record_dyn(op: Op, inputs: &[DynRef<'_>], output: DynRef<'_>) {
    if let Some(hook) = HOOK.get() {
        hook(op, inputs, output);
    }
}
