//! Compiled once: the `f32` and `f64` instances of rime's generic code are
//! made inside rime's own crates, not again in every binary that uses them.
//!
//! Release builds do not share generic instances across crates, so a
//! generic function called from a user's crate is compiled there, with
//! everything generic it calls. Each rime crate therefore keeps its heavy
//! generic code behind a table, one `&'static dyn Table<T>` per float type:
//! the public generic functions stay thin (they fetch the table for `T` and
//! call one method), and the table's vtables, so the code behind them, are
//! built here, in a `static`. (A `const` would be evaluated again
//! downstream, vtable and all; a `static` is one symbol.) Integer tensors
//! never reach a table: only float ([`Element`](crate::Element)) code is
//! heavy. docs/design.md ("Compile time for users") has the why.
//!
//! A crate's table is a trait generic over the element type, implemented
//! once for [`Native<T>`] with the generic bodies, and reached through the
//! function that [`float_table!`](crate::float_table) declares:
//!
//! ```
//! use rime_tensor::{Element, Tensor};
//! use rime_tensor::instances::Native;
//!
//! trait Table<T: Element>: Sync {
//!     fn twice(&self, x: &Tensor<T>) -> Tensor<T>;
//! }
//! impl<T: Element> Table<T> for Native<T> {
//!     fn twice(&self, x: &Tensor<T>) -> Tensor<T> {
//!         x.mul_scalar(T::of(2.0)) // the generic body, compiled for f32 and f64 here
//!     }
//! }
//! rime_tensor::float_table!(fn table() -> dyn Table);
//!
//! /// The thin public surface.
//! pub fn twice<T: Element>(x: &Tensor<T>) -> Tensor<T> {
//!     table::<T>().twice(x)
//! }
//! assert_eq!(twice(&Tensor::vector(vec![1.5f32])).to_vec(), vec![3.0]);
//! assert_eq!(twice(&Tensor::vector(vec![0.25f64])).to_vec(), vec![0.5]);
//! ```
//!
//! `pick` finds the table for `T` by a safe `Any` downcast (no `unsafe`),
//! which folds to a constant once `T` is known.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::Range;

use crate::ops::arith::Comparison;
use crate::ops::reduce::ReduceKind;
use crate::{
    BinaryOp, Conv1dOptions, Conv2dGeometry, Conv2dOptions, DenseActivation, Element,
    Pool2dGeometry, Result, Tensor, UnaryOp,
};

/// The implementor of every crate's table: the generic bodies, instantiated
/// for `f32` and `f64` where [`float_table!`](crate::float_table) is used.
pub struct Native<T>(PhantomData<T>);

impl<T> Native<T> {
    /// The (only) value.
    pub const VALUE: Native<T> = Native(PhantomData);
}

/// `for_f32` when `T` is `f32`, `for_f64` when it is `f64`, as an `R` (which
/// names the same type as `R32`, respectively `R64`, for that `T`).
#[doc(hidden)]
#[inline]
pub fn pick<T: Element, R: 'static, R32: 'static, R64: 'static>(for_f32: R32, for_f64: R64) -> R {
    let mut out: Option<R> = None;
    let slot: &mut dyn Any = &mut out;
    if let Some(s) = slot.downcast_mut::<Option<R32>>() {
        *s = Some(for_f32);
    } else if let Some(s) = slot.downcast_mut::<Option<R64>>() {
        *s = Some(for_f64);
    }
    match out {
        Some(r) => r,
        None => unreachable!("Element is sealed: f32 and f64 only"),
    }
}

/// Declares `fn $name<T: Element>() -> &'static dyn $Table<T>`: the table
/// of [`Native<T>`](crate::instances::Native), whose instances for `f32`
/// and `f64` are compiled in the crate that writes this (see the
/// [module docs](crate::instances)).
#[macro_export]
macro_rules! float_table {
    ($vis:vis fn $name:ident() -> dyn $Table:ident) => {
        /// The table of this crate's generic code for `T`, compiled once
        /// here (rime_tensor::instances).
        $vis fn $name<T: $crate::Element>() -> &'static dyn $Table<T> {
            static F32: &dyn $Table<f32> = &$crate::instances::Native::<f32>::VALUE;
            static F64: &dyn $Table<f64> = &$crate::instances::Native::<f64>::VALUE;
            $crate::instances::pick::<T, &'static dyn $Table<T>, _, _>(F32, F64)
        }
    };
}

/// rime-tensor's own table: one entry per op family, or per op where the op
/// holds its own kernel call (the ops in `ops/` call these; the bodies are
/// their `*_native` methods next to them).
pub(crate) trait Table<T: Element>: Sync {
    // ops/arith.rs
    fn binary(&self, x: &Tensor<T>, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>>;
    fn select(
        &self,
        cond: &Tensor<T>,
        on_true: &Tensor<T>,
        on_false: &Tensor<T>,
    ) -> Result<Tensor<T>>;
    fn compare(&self, x: &Tensor<T>, rhs: &Tensor<T>, cmp: Comparison) -> Result<Tensor<T>>;
    fn compare_scalar(&self, x: &Tensor<T>, s: T, cmp: Comparison) -> Tensor<T>;
    // ops/unary.rs
    fn unary(&self, x: &Tensor<T>, op: UnaryOp) -> Tensor<T>;
    // ops/reduce.rs
    fn reduce(
        &self,
        x: &Tensor<T>,
        kind: ReduceKind,
        axes: &[isize],
        keep_dims: bool,
    ) -> Result<Tensor<T>>;
    fn arg_reduce(
        &self,
        x: &Tensor<T>,
        op: &'static str,
        axis: isize,
        keep_dims: bool,
        better: fn(T, T) -> bool,
    ) -> Result<Tensor<i64>>;
    // ops/nn.rs
    fn softmax(&self, x: &Tensor<T>, axis: isize) -> Result<Tensor<T>>;
    fn log_softmax(&self, x: &Tensor<T>, axis: isize) -> Result<Tensor<T>>;
    fn sparse_ce_checked(&self, x: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>>;
    fn softmax_cross_entropy(&self, x: &Tensor<T>, labels: &Tensor<T>) -> Result<Tensor<T>>;
    // ops/matmul.rs
    fn matmul(&self, x: &Tensor<T>, rhs: &Tensor<T>) -> Result<Tensor<T>>;
    fn matmul_t(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor<T>>;
    fn matmul_t_blocks(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Option<&[Range<usize>]>,
        cols: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>>;
    fn matmul_t_rows_into(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Range<usize>,
        out: &mut [T],
    ) -> Result<()>;
    // ops/dense.rs
    fn dense(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        activation: DenseActivation,
    ) -> Result<Tensor<T>>;
    fn dense_grad_z_and_bias(
        &self,
        y: &Tensor<T>,
        dy: &Tensor<T>,
        activation: DenseActivation,
    ) -> Result<Option<(Tensor<T>, Tensor<T>)>>;
    // ops/conv.rs
    fn conv2d_with(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>>;
    fn conv2d_backprop_input(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>>;
    fn backprop_filter(
        &self,
        x: &Tensor<T>,
        dy: &Tensor<T>,
        g: &Conv2dGeometry,
        filters: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>>;
    fn conv2d_transpose(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        output: [usize; 2],
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>>;
    fn conv1d(&self, x: &Tensor<T>, kernel: &Tensor<T>, opts: &Conv1dOptions) -> Result<Tensor<T>>;
    fn depthwise_conv2d(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>>;
    // ops/pool.rs
    fn max_pool2d_with(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>>;
    fn max_pool2d_grad(
        &self,
        x: &Tensor<T>,
        pooled: Option<&Tensor<T>>,
        dy: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>>;
    fn max_pool2d_gradgrad(
        &self,
        x: &Tensor<T>,
        gg: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>>;
    fn avg_pool2d_with(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>>;
    fn avg_pool2d_grad(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>>;
    fn zero_pad2d(
        &self,
        x: &Tensor<T>,
        padding: ((usize, usize), (usize, usize)),
    ) -> Result<Tensor<T>>;
    fn upsample_nearest2d(&self, x: &Tensor<T>, size: [usize; 2]) -> Result<Tensor<T>>;
}

impl<T: Element> Table<T> for Native<T> {
    fn binary(&self, x: &Tensor<T>, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>> {
        x.binary_native(rhs, op)
    }
    fn select(
        &self,
        cond: &Tensor<T>,
        on_true: &Tensor<T>,
        on_false: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        Tensor::select_native(cond, on_true, on_false)
    }
    fn compare(&self, x: &Tensor<T>, rhs: &Tensor<T>, cmp: Comparison) -> Result<Tensor<T>> {
        x.compare_native(rhs, cmp)
    }
    fn compare_scalar(&self, x: &Tensor<T>, s: T, cmp: Comparison) -> Tensor<T> {
        x.compare_scalar_native(s, cmp)
    }
    fn unary(&self, x: &Tensor<T>, op: UnaryOp) -> Tensor<T> {
        x.unary_native(op)
    }
    fn reduce(
        &self,
        x: &Tensor<T>,
        kind: ReduceKind,
        axes: &[isize],
        keep_dims: bool,
    ) -> Result<Tensor<T>> {
        x.reduce_native(kind, axes, keep_dims)
    }
    fn arg_reduce(
        &self,
        x: &Tensor<T>,
        op: &'static str,
        axis: isize,
        keep_dims: bool,
        better: fn(T, T) -> bool,
    ) -> Result<Tensor<i64>> {
        x.arg_reduce_native(op, axis, keep_dims, better)
    }
    fn softmax(&self, x: &Tensor<T>, axis: isize) -> Result<Tensor<T>> {
        x.softmax_native(axis)
    }
    fn log_softmax(&self, x: &Tensor<T>, axis: isize) -> Result<Tensor<T>> {
        x.log_softmax_native(axis)
    }
    fn sparse_ce_checked(&self, x: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        x.sparse_ce_checked_native(labels)
    }
    fn softmax_cross_entropy(&self, x: &Tensor<T>, labels: &Tensor<T>) -> Result<Tensor<T>> {
        x.softmax_cross_entropy_native(labels)
    }
    fn matmul(&self, x: &Tensor<T>, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        x.matmul_native(rhs)
    }
    fn matmul_t(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor<T>> {
        x.matmul_t_native(rhs, transpose_a, transpose_b)
    }
    fn matmul_t_blocks(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Option<&[Range<usize>]>,
        cols: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        x.matmul_t_blocks_native(rhs, transpose_a, transpose_b, rows, cols)
    }
    fn matmul_t_rows_into(
        &self,
        x: &Tensor<T>,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Range<usize>,
        out: &mut [T],
    ) -> Result<()> {
        x.matmul_t_rows_into_native(rhs, transpose_a, transpose_b, rows, out)
    }
    fn dense(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        activation: DenseActivation,
    ) -> Result<Tensor<T>> {
        x.dense_native(kernel, bias, activation)
    }
    fn dense_grad_z_and_bias(
        &self,
        y: &Tensor<T>,
        dy: &Tensor<T>,
        activation: DenseActivation,
    ) -> Result<Option<(Tensor<T>, Tensor<T>)>> {
        y.dense_grad_z_and_bias_native(dy, activation)
    }
    fn conv2d_with(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>> {
        x.conv2d_with_native(kernel, g)
    }
    fn conv2d_backprop_input(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>> {
        x.conv2d_backprop_input_native(kernel, g)
    }
    fn backprop_filter(
        &self,
        x: &Tensor<T>,
        dy: &Tensor<T>,
        g: &Conv2dGeometry,
        filters: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        x.backprop_filter_native(dy, g, filters)
    }
    fn conv2d_transpose(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        output: [usize; 2],
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>> {
        x.conv2d_transpose_native(kernel, output, opts)
    }
    fn conv1d(&self, x: &Tensor<T>, kernel: &Tensor<T>, opts: &Conv1dOptions) -> Result<Tensor<T>> {
        x.conv1d_native(kernel, opts)
    }
    fn depthwise_conv2d(
        &self,
        x: &Tensor<T>,
        kernel: &Tensor<T>,
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>> {
        x.depthwise_conv2d_native(kernel, opts)
    }
    fn max_pool2d_with(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        x.max_pool2d_with_native(g)
    }
    fn max_pool2d_grad(
        &self,
        x: &Tensor<T>,
        pooled: Option<&Tensor<T>>,
        dy: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>> {
        x.max_pool2d_grad_native(pooled, dy, g)
    }
    fn max_pool2d_gradgrad(
        &self,
        x: &Tensor<T>,
        gg: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>> {
        x.max_pool2d_gradgrad_native(gg, g)
    }
    fn avg_pool2d_with(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        x.avg_pool2d_with_native(g)
    }
    fn avg_pool2d_grad(&self, x: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        x.avg_pool2d_grad_native(g)
    }
    fn zero_pad2d(
        &self,
        x: &Tensor<T>,
        padding: ((usize, usize), (usize, usize)),
    ) -> Result<Tensor<T>> {
        x.zero_pad2d_native(padding)
    }
    fn upsample_nearest2d(&self, x: &Tensor<T>, size: [usize; 2]) -> Result<Tensor<T>> {
        x.upsample_nearest2d_native(size)
    }
}

crate::float_table!(pub(crate) fn table() -> dyn Table);
