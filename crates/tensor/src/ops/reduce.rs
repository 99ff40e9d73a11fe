//! Reductions over any set of axes, with or without keeping the reduced axes:
//! sum, mean, max, min, var, logsumexp, and the (non-differentiable)
//! argmax/argmin. Gradient rules: rime-tape `rules/reduce.rs`.

use smallvec::SmallVec;

use crate::kernels::{ARITH, POLY, broadcast, reduce as k};
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor};

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum; ties share the gradient equally (as TensorFlow).
    Max,
    /// Minimum; ties share the gradient equally (as TensorFlow).
    Min,
    /// Population variance (divides by `n`, as `tf.math.reduce_variance`).
    Var,
    /// `ln Σ e^x`, computed stably.
    LogSumExp,
}

impl ReduceKind {
    fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "sum",
            ReduceKind::Mean => "mean",
            ReduceKind::Max => "max",
            ReduceKind::Min => "min",
            ReduceKind::Var => "var",
            ReduceKind::LogSumExp => "logsumexp",
        }
    }
}

/// A recorded reduction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReduceOp {
    /// Which reduction.
    pub kind: ReduceKind,
    /// The reduced axes, sorted and non-negative.
    pub axes: Box<[usize]>,
    /// Whether the output keeps the reduced axes with size 1.
    pub keep_dims: bool,
}

impl ReduceOp {
    /// The input's shape with every reduced axis set to 1: the shape that
    /// broadcasts a reduced value back over the input.
    pub fn kept_shape(&self, input: &Shape) -> Shape {
        k::kept_shape(input, &self.axes)
    }
}

fn output_shape(x: &Shape, axes: &[usize], keep_dims: bool) -> Shape {
    if keep_dims {
        k::kept_shape(x, axes)
    } else {
        Shape(
            x.iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect(),
        )
    }
}

impl<T: Element> Tensor<T> {
    fn reduce(&self, kind: ReduceKind, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        crate::instances::table::<T>().reduce(self, kind, axes, keep_dims)
    }

    pub(crate) fn reduce_native(
        &self,
        kind: ReduceKind,
        axes: &[isize],
        keep_dims: bool,
    ) -> Result<Tensor<T>> {
        let op = kind.name();
        let axes = self.shape().axes(op, axes)?;
        let shape = self.shape();
        let n: usize = axes.iter().map(|&a| shape[a]).product();
        if n == 0 && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("cannot reduce an empty axis of shape {shape} (axes {axes:?})"),
            });
        }
        let x = self.as_slice();
        let count = T::of(n as f64);
        let data = match kind {
            ReduceKind::Sum => k::sum(x, shape, &axes),
            ReduceKind::Mean => {
                let mut s = k::sum(x, shape, &axes);
                s.iter_mut().for_each(|v| *v /= count);
                s
            }
            ReduceKind::Max => k::max(x, shape, &axes),
            ReduceKind::Min => k::min(x, shape, &axes),
            ReduceKind::Var => {
                let kept = k::kept_shape(shape, &axes);
                let mut mean = k::sum(x, shape, &axes);
                mean.iter_mut().for_each(|v| *v /= count);
                // the corrected two-pass algorithm (Chan, Golub & LeVeque):
                // Σ(x - m)² - (Σ(x - m))² / n cancels, to first order, the
                // rounding error of the mean m, which for data far from
                // zero (1e4 ± 1e-3 in f32) is as large as the spread itself
                let dev = broadcast::binary(
                    op,
                    x,
                    shape,
                    &mean,
                    &kept,
                    shape,
                    ARITH,
                    #[inline(always)]
                    |a, m| a - m,
                )?;
                let s1 = k::sum(&dev, shape, &axes);
                let sq = crate::kernels::map(&dev, ARITH, |d| d * d);
                drop(dev);
                let s2 = k::sum(&sq, shape, &axes);
                s2.iter()
                    .zip(&s1)
                    .map(|(&s2, &s1)| {
                        let v = (s2 - s1 * s1 / count) / count;
                        // rounding can leave a tiny negative; NaN stays NaN
                        if v < T::zero() { T::zero() } else { v }
                    })
                    .collect()
            }
            ReduceKind::LogSumExp => {
                let kept = k::kept_shape(shape, &axes);
                // shift by the max (0 where the max is infinite, so that
                // all -inf stays -inf and +inf stays +inf)
                let mut m = k::max(x, shape, &axes);
                m.iter_mut().for_each(|v| {
                    if !v.is_finite() {
                        *v = T::zero()
                    }
                });
                let e = broadcast::binary(
                    op,
                    x,
                    shape,
                    &m,
                    &kept,
                    shape,
                    POLY,
                    #[inline(always)]
                    |a, m| (a - m).exp_v(),
                )?;
                let s = k::sum(&e, shape, &axes);
                s.iter().zip(&m).map(|(&s, &m)| m + s.ln()).collect()
            }
        };
        let out = Tensor::from_parts(data, output_shape(shape, &axes, keep_dims));
        record(
            || {
                Op::Reduce(ReduceOp {
                    kind,
                    axes: axes.as_slice().into(),
                    keep_dims,
                })
            },
            &[self],
            &out,
        );
        Ok(out)
    }

    /// Sum over `axes` (an empty list reduces every axis; negative axes count
    /// from the end).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// assert_eq!(x.sum(&[0], false)?.to_vec(), vec![5.0, 7.0, 9.0]);
    /// assert_eq!(x.sum(&[-1], true)?.shape(), &[2, 1]);
    /// assert_eq!(x.sum(&[], false)?.to_vec(), vec![21.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sum(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::Sum, axes, keep_dims)
    }

    /// Sum of every element, as a rank-0 tensor.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::<f32>::ones([2, 3])?.sum_all().to_scalar()?, 6.0);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sum_all(&self) -> Tensor<T> {
        self.reduce(ReduceKind::Sum, &[], false)
            .unwrap_or_else(|_| unreachable!("summing every axis cannot fail"))
    }

    /// Mean over `axes` (empty: every axis).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// assert_eq!(x.mean(&[1], false)?.to_vec(), vec![1.5, 3.5]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn mean(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::Mean, axes, keep_dims)
    }

    /// Mean of every element, as a rank-0 tensor (NaN if empty).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f64, 3.0]).mean_all().to_scalar()?, 2.0);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn mean_all(&self) -> Tensor<T> {
        self.reduce(ReduceKind::Mean, &[], false)
            .unwrap_or_else(|_| unreachable!("averaging every axis cannot fail"))
    }

    /// Maximum over `axes` (empty: every axis). Errors on an empty axis.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], [2, 2])?;
    /// assert_eq!(x.max(&[0], false)?.to_vec(), vec![3.0, 5.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::Max, axes, keep_dims)
    }

    /// Minimum over `axes` (empty: every axis). Errors on an empty axis.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], [2, 2])?;
    /// assert_eq!(x.min(&[1], false)?.to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn min(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::Min, axes, keep_dims)
    }

    /// Population variance over `axes` (empty: every axis).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f64, 2.0, 3.0, 4.0]);
    /// assert_eq!(x.var(&[0], false)?.to_vec(), vec![1.25]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn var(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::Var, axes, keep_dims)
    }

    /// `ln Σ exp(x)` over `axes`, without overflow for large inputs.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1000.0f64, 1000.0]);
    /// assert!((x.logsumexp(&[0], false)?.to_vec()[0] - (1000.0 + 2f64.ln())).abs() < 1e-9);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn logsumexp(&self, axes: &[isize], keep_dims: bool) -> Result<Tensor<T>> {
        self.reduce(ReduceKind::LogSumExp, axes, keep_dims)
    }

    fn arg_reduce(
        &self,
        op: &'static str,
        axis: isize,
        keep_dims: bool,
        better: fn(T, T) -> bool,
    ) -> Result<Tensor<i64>> {
        crate::instances::table::<T>().arg_reduce(self, op, axis, keep_dims, better)
    }

    pub(crate) fn arg_reduce_native(
        &self,
        op: &'static str,
        axis: isize,
        keep_dims: bool,
        better: fn(T, T) -> bool,
    ) -> Result<Tensor<i64>> {
        let a = self.shape().axis(op, axis)?;
        let (outer, n, inner) = k::axis_view(self.shape(), a);
        if n == 0 {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "cannot take {op} over empty axis {a} of shape {}",
                    self.shape()
                ),
            });
        }
        let x = self.as_slice();
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for j in 0..inner {
                let mut best = 0;
                let mut bv = x[o * n * inner + j];
                for i in 1..n {
                    let v = x[(o * n + i) * inner + j];
                    if better(v, bv) {
                        best = i;
                        bv = v;
                    }
                }
                // an axis length fits in isize, so in i64
                out.push(best as i64);
            }
        }
        Ok(Tensor::from_parts(
            out,
            output_shape(self.shape(), &[a], keep_dims),
        ))
    }

    /// Index of the largest value along `axis` (the first one at ties; NaN
    /// counts as largest), as an `i64` tensor (NumPy's, PyTorch's and
    /// TensorFlow's index type). Not differentiable. For floats use
    /// `.to_dtype::<f32>()`, for a `Vec<usize>` [`Tensor::argmax_indices`].
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 2.0, 0.0, 9.0], [2, 3])?;
    /// let best = x.argmax(-1, false)?;
    /// assert_eq!(best.to_vec(), vec![1i64, 2]);
    /// assert_eq!(x.argmax(-1, true)?.shape(), &[2, 1]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn argmax(&self, axis: isize, keep_dims: bool) -> Result<Tensor<i64>> {
        self.arg_reduce("argmax", axis, keep_dims, |v, best| {
            v > best || (v.is_nan() && !best.is_nan())
        })
    }

    /// Index of the smallest value along `axis` (the first one at ties), as
    /// an `i64` tensor.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![3.0f32, 1.0, 1.0]);
    /// assert_eq!(x.argmin(0, false)?.to_vec(), vec![1i64]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn argmin(&self, axis: isize, keep_dims: bool) -> Result<Tensor<i64>> {
        self.arg_reduce("argmin", axis, keep_dims, |v, best| {
            v < best || (v.is_nan() && !best.is_nan())
        })
    }

    /// The indices `argmax` returns, as `usize` (handy for labels).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0.1f32, 0.9, 0.8, 0.2], [2, 2])?;
    /// assert_eq!(x.argmax_indices(-1)?, vec![1, 0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn argmax_indices(&self, axis: isize) -> Result<Vec<usize>> {
        Ok(self
            .argmax(axis, false)?
            .as_slice()
            .iter()
            .map(|&v| v as usize)
            .collect())
    }

    /// Sums a broadcast result back down to `shape` (the inverse of
    /// broadcasting `shape` up to this tensor's shape): sums over leading
    /// axes `shape` lacks and over axes where `shape` has size 1. Errors if
    /// `shape` does not broadcast to this tensor's shape.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let g = Tensor::<f32>::ones([4, 2, 3])?;
    /// assert_eq!(g.sum_to(&[2, 1].into())?.to_vec(), vec![12.0, 12.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor<T>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let target = crate::broadcast_shapes("sum_to", shape, self.shape())?;
        if &target != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "sum_to",
                lhs: self.shape().clone(),
                rhs: shape.clone(),
                msg: "the target shape must broadcast to the tensor's shape".into(),
            });
        }
        let off = self.rank() - shape.rank();
        let axes: SmallVec<[isize; 4]> = (0..self.rank())
            .filter(|&i| i < off || (shape[i - off] == 1 && self.shape()[i] != 1))
            .map(|i| i as isize)
            .collect();
        let s = if axes.is_empty() {
            self.clone()
        } else {
            self.sum(&axes, true)?
        };
        s.reshape(shape.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
        Tensor::from_slice(v, s).unwrap()
    }

    #[test]
    fn reductions_with_and_without_keep_dims() {
        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        assert_eq!(x.sum(&[1], true).unwrap().shape(), &[2, 1]);
        assert_eq!(x.mean(&[0, 1], false).unwrap().to_vec(), vec![3.5]);
        assert_eq!(x.max(&[-1], false).unwrap().to_vec(), vec![3., 6.]);
        assert_eq!(x.min(&[0], true).unwrap().to_vec(), vec![1., 2., 3.]);
        assert_relative_eq!(
            x.var(&[1], false).unwrap(),
            t(&[2. / 3., 2. / 3.], &[2]),
            epsilon = 1e-12
        );
        let lse = x.logsumexp(&[1], false).unwrap().to_vec();
        assert!((lse[0] - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln()).abs() < 1e-12);
        // rank 0 reduces to itself
        let s = Tensor::scalar(4.0f32);
        assert_eq!(s.sum(&[], false).unwrap().to_vec(), vec![4.0]);
        assert_eq!(x.sum_all().rank(), 0);
    }

    #[test]
    fn logsumexp_extremes() {
        let x = t(&[f64::NEG_INFINITY, f64::NEG_INFINITY], &[2]);
        assert_eq!(
            x.logsumexp(&[0], false).unwrap().to_vec(),
            vec![f64::NEG_INFINITY]
        );
        let y = Tensor::vector(vec![-1000.0f32, -1000.0]);
        assert!(
            (y.logsumexp(&[0], false).unwrap().to_vec()[0] - (-1000.0 + 2f32.ln())).abs() < 1e-3
        );
    }

    #[test]
    fn argmax_first_tie_and_keep_dims() {
        let x = t(&[1., 3., 3., 0., -1., -1.], &[3, 2]);
        assert_eq!(x.argmax(0, false).unwrap().to_vec(), vec![1, 0]);
        assert_eq!(x.argmin(1, true).unwrap().shape(), &[3, 1]);
        assert_eq!(x.argmin(1, true).unwrap().to_vec(), vec![0, 1, 0]);
    }

    #[test]
    fn sum_to_inverts_broadcasting() {
        let g = Tensor::<f64>::ones([2, 3, 4]).unwrap();
        assert_eq!(g.sum_to(&[4].into()).unwrap().to_vec(), vec![6.0; 4]);
        assert_eq!(g.sum_to(&[3, 1].into()).unwrap().shape(), &[3, 1]);
        assert_eq!(g.sum_to(&[].into()).unwrap().to_vec(), vec![24.0]);
        assert!(matches!(
            g.sum_to(&[5].into()),
            Err(Error::Broadcast { op: "sum_to", .. })
        ));
        assert!(matches!(
            Tensor::<f64>::ones([3]).unwrap().sum_to(&[2, 3].into()),
            Err(Error::ShapeMismatch { op: "sum_to", .. })
        ));
    }

    #[test]
    fn bad_axes_are_typed_errors() {
        let x = Tensor::<f32>::zeros([2, 0]).unwrap();
        assert!(matches!(
            x.sum(&[2], false),
            Err(Error::InvalidAxis {
                op: "sum",
                axis: 2,
                rank: 2
            })
        ));
        assert!(matches!(
            x.mean(&[-3], false),
            Err(Error::InvalidAxis { op: "mean", .. })
        ));
        assert!(matches!(
            x.var(&[0, 0], false),
            Err(Error::InvalidArgument { op: "var", .. })
        ));
        assert!(matches!(
            x.logsumexp(&[5], false),
            Err(Error::InvalidAxis {
                op: "logsumexp",
                ..
            })
        ));
        assert!(matches!(
            x.max(&[1], false),
            Err(Error::InvalidArgument { op: "max", .. })
        ));
        assert!(matches!(
            x.min(&[], false),
            Err(Error::InvalidArgument { op: "min", .. })
        ));
        assert!(matches!(
            x.argmax(1, false),
            Err(Error::InvalidArgument { op: "argmax", .. })
        ));
        assert!(matches!(
            x.argmin(2, false),
            Err(Error::InvalidAxis { op: "argmin", .. })
        ));
        // an empty sum is 0
        assert_eq!(x.sum(&[1], false).unwrap().to_vec(), vec![0.0, 0.0]);
    }
}
