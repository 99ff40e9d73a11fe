//! The softmax family along an axis, and cross entropy from logits fused
//! with it (one pass forward, `softmax - onehot` backward). Gradient rules:
//! rime-tape `rules/nn.rs`.

use std::sync::Arc;

use rayon::prelude::*;

use crate::kernels::reduce::axis_view;
use crate::kernels::{PAR_THRESHOLD, max_slice, sum_slice};
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor};

/// The recorded ops of this family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NnOp {
    /// `softmax` along `axis`.
    Softmax {
        /// The normalized axis.
        axis: usize,
    },
    /// `log_softmax` along `axis`.
    LogSoftmax {
        /// The normalized axis.
        axis: usize,
    },
    /// Per-example `-log softmax(logits)[label]` over the last axis: input
    /// `[logits]`, output the logits' shape without its last axis.
    SparseSoftmaxCrossEntropy {
        /// One class index per example.
        labels: Arc<[usize]>,
    },
}

/// Applies `row(x_row, out_row)` to every slice along `axis`, contiguous
/// rows in parallel when large; strided ones are gathered into a scratch row.
fn along_axis<T: Element>(
    x: &Tensor<T>,
    axis: usize,
    row: impl Fn(&[T], &mut [T]) + Sync,
) -> Vec<T> {
    let (outer, n, inner) = axis_view(x.shape(), axis);
    let src = x.as_slice();
    let mut out = vec![T::zero(); src.len()];
    if n == 0 || src.is_empty() {
        return out;
    }
    if inner == 1 {
        if src.len() >= PAR_THRESHOLD && outer > 1 {
            out.par_chunks_mut(n)
                .zip(src.par_chunks(n))
                .for_each(|(o, x)| row(x, o));
        } else {
            out.chunks_mut(n)
                .zip(src.chunks(n))
                .for_each(|(o, x)| row(x, o));
        }
    } else {
        let (mut xs, mut ys) = (vec![T::zero(); n], vec![T::zero(); n]);
        for o in 0..outer {
            for j in 0..inner {
                for i in 0..n {
                    xs[i] = src[(o * n + i) * inner + j];
                }
                row(&xs, &mut ys);
                for i in 0..n {
                    out[(o * n + i) * inner + j] = ys[i];
                }
            }
        }
    }
    out
}

/// `out = exp(x - max)`, returning the sum of `out` and the max (0 if the
/// max is infinite, so rows of -inf stay well defined).
#[inline]
fn shifted_exp<T: Element>(x: &[T], out: &mut [T]) -> (T, T) {
    let mut m = max_slice(x);
    if !m.is_finite() {
        m = T::zero();
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
    }
    (sum_slice(out), m)
}

impl<T: Element> Tensor<T> {
    /// `exp(x) / Σ exp(x)` along `axis`, computed stably (shifted by the max).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![1000.0f64, 1000.0]).softmax(-1)?;
    /// assert_eq!(y.to_vec(), vec![0.5, 0.5]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn softmax(&self, axis: isize) -> Result<Tensor<T>> {
        let a = self.shape().axis("softmax", axis)?;
        let data = along_axis(self, a, |x, o| {
            let (s, _) = shifted_exp(x, o);
            let r = s.recip();
            o.iter_mut().for_each(|v| *v *= r);
        });
        let out = Tensor::from_parts(data, self.shape().clone());
        record(|| Op::Nn(NnOp::Softmax { axis: a }), &[self], &out);
        Ok(out)
    }

    /// `x - logsumexp(x)` along `axis`, computed stably.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![0.0f64, 0.0]).log_softmax(0)?;
    /// assert_eq!(y.to_vec(), vec![-(2f64.ln()), -(2f64.ln())]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor<T>> {
        let a = self.shape().axis("log_softmax", axis)?;
        let data = along_axis(self, a, |x, o| {
            let (s, m) = shifted_exp(x, o);
            let lse = m + s.ln();
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v - lse;
            }
        });
        let out = Tensor::from_parts(data, self.shape().clone());
        record(|| Op::Nn(NnOp::LogSoftmax { axis: a }), &[self], &out);
        Ok(out)
    }

    /// Per-example cross entropy of `labels` (class indices) under the
    /// softmax of these logits over the last axis, in one fused pass:
    /// `logsumexp(x) - x[label]`. The output drops the last axis
    /// (TensorFlow's `sparse_softmax_cross_entropy_with_logits`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f64, 0.0, 10.0, 0.0], [2, 2])?;
    /// let loss = logits.sparse_softmax_cross_entropy(&[1, 0])?;
    /// assert!((loss.to_vec()[0] - 2f64.ln()).abs() < 1e-12);
    /// assert!(loss.to_vec()[1] < 1e-4);
    /// assert!(logits.sparse_softmax_cross_entropy(&[2, 0]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sparse_softmax_cross_entropy(&self, labels: &[usize]) -> Result<Tensor<T>> {
        const OP: &str = "sparse_softmax_cross_entropy";
        if self.rank() == 0 {
            return Err(Error::Rank {
                op: OP,
                expected: "rank >= 1 (classes on the last axis)",
                shape: self.shape().clone(),
            });
        }
        let c = self.dims()[self.rank() - 1];
        let rows = self.len().checked_div(c).unwrap_or(0);
        let out_shape = Shape::from(&self.dims()[..self.rank() - 1]);
        if labels.len() != out_shape.numel() {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "{} labels for logits of shape {}",
                    labels.len(),
                    self.shape()
                ),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= c) {
            return Err(Error::IndexOutOfBounds {
                op: OP,
                index: bad,
                axis: self.rank() - 1,
                size: c,
            });
        }
        let x = self.as_slice();
        let loss = |(i, &l): (usize, &usize)| {
            let row = &x[i * c..(i + 1) * c];
            let mut m = max_slice(row);
            if !m.is_finite() {
                m = T::zero();
            }
            let mut s = T::zero();
            for &v in row {
                s += (v - m).exp();
            }
            m + s.ln() - row[l]
        };
        let data: Vec<T> = if x.len() >= PAR_THRESHOLD {
            labels.par_iter().enumerate().map(loss).collect()
        } else {
            labels.iter().enumerate().map(loss).collect()
        };
        debug_assert_eq!(data.len(), rows.max(labels.len()));
        let out = Tensor::from_parts(data, out_shape);
        record(
            || {
                Op::Nn(NnOp::SparseSoftmaxCrossEntropy {
                    labels: labels.into(),
                })
            },
            &[self],
            &out,
        );
        Ok(out)
    }

    /// Per-example cross entropy of a probability distribution `labels`
    /// (same shape as the logits) under the softmax of these logits over the
    /// last axis: `-Σ labels · log_softmax(x)`. Differentiable in both.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f64, 0.0], [1, 2])?;
    /// let labels = Tensor::from_vec(vec![0.5f64, 0.5], [1, 2])?;
    /// let loss = logits.softmax_cross_entropy(&labels)?;
    /// assert!((loss.to_vec()[0] - 2f64.ln()).abs() < 1e-12);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn softmax_cross_entropy(&self, labels: &Tensor<T>) -> Result<Tensor<T>> {
        if labels.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "softmax_cross_entropy",
                lhs: self.shape().clone(),
                rhs: labels.shape().clone(),
                msg: "labels must have the logits' shape".into(),
            });
        }
        if self.rank() == 0 {
            return Err(Error::Rank {
                op: "softmax_cross_entropy",
                expected: "rank >= 1 (classes on the last axis)",
                shape: self.shape().clone(),
            });
        }
        labels
            .mul(&self.log_softmax(-1)?)?
            .sum(&[-1], false)
            .map(|t| t.neg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn softmax_along_inner_and_outer_axes() {
        let x = Tensor::from_vec((0..6).map(|v| v as f64 * 0.3).collect(), [2, 3]).unwrap();
        for axis in [0isize, 1] {
            let y = x.softmax(axis).unwrap();
            let sums = y.sum(&[axis], false).unwrap();
            assert_relative_eq!(sums, Tensor::ones(sums.shape().clone()), epsilon = 1e-12);
            let ls = x.log_softmax(axis).unwrap();
            assert_relative_eq!(ls.exp(), y, epsilon = 1e-12);
            let lse = x.logsumexp(&[axis], true).unwrap();
            assert_relative_eq!(ls, x.sub(&lse).unwrap(), epsilon = 1e-12);
        }
    }

    #[test]
    fn sparse_cross_entropy_matches_log_softmax() {
        let x = Tensor::from_vec(
            (0..12).map(|v| ((v * 5) % 7) as f64 - 3.0).collect(),
            [2, 2, 3],
        )
        .unwrap();
        let labels = [2, 0, 1, 1];
        let got = x.sparse_softmax_cross_entropy(&labels).unwrap();
        assert_eq!(got.shape(), &[2, 2]);
        let ls = x.log_softmax(-1).unwrap();
        for (i, &l) in labels.iter().enumerate() {
            assert!((got.as_slice()[i] + ls.as_slice()[i * 3 + l]).abs() < 1e-12);
        }
        let dense = x
            .softmax_cross_entropy(
                &Tensor::one_hot(&labels, 3)
                    .unwrap()
                    .reshape([2, 2, 3])
                    .unwrap(),
            )
            .unwrap();
        assert_relative_eq!(dense, got, epsilon = 1e-12);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let x = Tensor::<f32>::zeros([2, 3]);
        assert!(matches!(
            x.softmax(2),
            Err(Error::InvalidAxis { op: "softmax", .. })
        ));
        assert!(matches!(
            x.log_softmax(-3),
            Err(Error::InvalidAxis {
                op: "log_softmax",
                ..
            })
        ));
        assert!(matches!(
            x.sparse_softmax_cross_entropy(&[0]),
            Err(Error::InvalidArgument {
                op: "sparse_softmax_cross_entropy",
                ..
            })
        ));
        assert!(matches!(
            x.sparse_softmax_cross_entropy(&[0, 3]),
            Err(Error::IndexOutOfBounds {
                op: "sparse_softmax_cross_entropy",
                index: 3,
                ..
            })
        ));
        assert!(matches!(
            x.softmax_cross_entropy(&Tensor::zeros([3, 2])),
            Err(Error::ShapeMismatch {
                op: "softmax_cross_entropy",
                ..
            })
        ));
    }
}
