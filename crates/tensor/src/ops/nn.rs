//! The softmax family along an axis, and cross entropy from logits fused
//! with it (one pass forward, `softmax - onehot` backward). Gradient rules:
//! rime-tape `rules/nn.rs`.

use std::sync::Arc;

use crate::kernels::reduce::axis_view;
use crate::kernels::{
    assume_init_mut, build_rows, init_map, init_zip, max_lanes, max_nan, sum_lanes, sum_map_lanes,
    vectorized,
};
use crate::record::{Op, record};
use crate::{Element, Error, Indices, Result, Shape, Tensor};

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

/// Work per element of a softmax (max, exp, sum, scale), in
/// [`crate::kernels::ARITH`] units.
const SOFTMAX: usize = 8;

/// Softmax (or log-softmax) of `x` along `axis`, shifted by the max (0 where
/// the max is infinite, so that rows of -inf stay well defined). Contiguous
/// rows (the last axis) are processed a row at a time; along an inner axis
/// the `n × inner` slabs are processed column-vectorized, never gathered.
fn softmax_kernel<T: Element>(x: &Tensor<T>, axis: usize, log: bool) -> Vec<T> {
    let (outer, n, inner) = axis_view(x.shape(), axis);
    let src = x.as_slice();
    if src.is_empty() {
        return Vec::new();
    }
    if inner == 1 && n < SHORT_ROW {
        // short rows (a classifier's logits): the exp over the whole chunk
        // of rows at once, so it vectorizes across rows
        return build_rows(outer, n, n * SOFTMAX, |r0, dst| {
            vectorized(
                #[inline(always)]
                || {
                    let sh = shifted_rows(&src[r0 * n..r0 * n + dst.len()], n);
                    let e = init_map(dst, &sh, |v| v.exp_v());
                    for (e, sh) in e.chunks_exact_mut(n).zip(sh.chunks_exact(n)) {
                        let s = e.iter().fold(T::zero(), |a, &b| a + b);
                        if log {
                            let ls = s.ln();
                            for (o, &d) in e.iter_mut().zip(sh) {
                                *o = d - ls;
                            }
                        } else {
                            let r = s.recip();
                            e.iter_mut().for_each(|v| *v *= r);
                        }
                    }
                },
            )
        });
    }
    if inner == 1 {
        return build_rows(outer, n, n * SOFTMAX, |r0, dst| {
            vectorized(
                #[inline(always)]
                || {
                    for (d, xs) in dst.chunks_exact_mut(n).zip(src[r0 * n..].chunks_exact(n)) {
                        let mut m = max_lanes(xs);
                        if !m.is_finite() {
                            m = T::zero();
                        }
                        let e = init_map(d, xs, |v| (v - m).exp_v());
                        let s = sum_lanes(e);
                        if log {
                            // (v - m) - ln s: no rounding of m + ln s at large m
                            let ls = s.ln();
                            for (o, &v) in e.iter_mut().zip(xs) {
                                *o = (v - m) - ls;
                            }
                        } else {
                            let r = s.recip();
                            e.iter_mut().for_each(|v| *v *= r);
                        }
                    }
                },
            )
        });
    }
    let slab = n * inner;
    build_rows(outer, slab, slab * SOFTMAX, |o0, dst| {
        vectorized(
            #[inline(always)]
            || {
                let (mut m, mut s) = (vec![T::zero(); inner], vec![T::zero(); inner]);
                for (d, xs) in dst
                    .chunks_exact_mut(slab)
                    .zip(src[o0 * slab..].chunks_exact(slab))
                {
                    m.copy_from_slice(&xs[..inner]);
                    for row in xs[inner..].chunks_exact(inner) {
                        for (m, &v) in m.iter_mut().zip(row) {
                            *m = max_nan(*m, v);
                        }
                    }
                    for v in m.iter_mut() {
                        if !v.is_finite() {
                            *v = T::zero();
                        }
                    }
                    s.fill(T::zero());
                    for (drow, row) in d.chunks_exact_mut(inner).zip(xs.chunks_exact(inner)) {
                        let e = init_zip(drow, row, &m, |v, m| (v - m).exp_v());
                        for (s, &e) in s.iter_mut().zip(e.iter()) {
                            *s += e;
                        }
                    }
                    // SAFETY: every row of `d` was written just above by
                    // `init_zip` (which asserts the row lengths), and the
                    // rows cover `d` (its length is a multiple of `inner`).
                    let d = unsafe { assume_init_mut(d) };
                    if log {
                        s.iter_mut().for_each(|v| *v = v.ln());
                        for (drow, row) in d.chunks_exact_mut(inner).zip(xs.chunks_exact(inner)) {
                            for (((o, &v), &m), &ls) in drow.iter_mut().zip(row).zip(&m).zip(&s) {
                                *o = (v - m) - ls;
                            }
                        }
                    } else {
                        s.iter_mut().for_each(|v| *v = v.recip());
                        for drow in d.chunks_exact_mut(inner) {
                            for (o, &r) in drow.iter_mut().zip(&s) {
                                *o *= r;
                            }
                        }
                    }
                }
            },
        )
    })
}

/// Rows shorter than this take the across-rows path.
const SHORT_ROW: usize = 32;

/// `x - max(row)` for each row of `n` (the max taken as 0 where it is
/// infinite).
#[inline(always)]
fn shifted_rows<T: Element>(x: &[T], n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let mut m = row.iter().fold(T::neg_infinity(), |a, &b| max_nan(a, b));
        if !m.is_finite() {
            m = T::zero();
        }
        out.extend(row.iter().map(|&v| v - m));
    }
    out
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
        crate::instances::table::<T>().softmax(self, axis)
    }

    pub(crate) fn softmax_native(&self, axis: isize) -> Result<Tensor<T>> {
        let a = self.shape().axis("softmax", axis)?;
        let data = softmax_kernel(self, a, false);
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
        crate::instances::table::<T>().log_softmax(self, axis)
    }

    pub(crate) fn log_softmax_native(&self, axis: isize) -> Result<Tensor<T>> {
        let a = self.shape().axis("log_softmax", axis)?;
        let data = softmax_kernel(self, a, true);
        let out = Tensor::from_parts(data, self.shape().clone());
        record(|| Op::Nn(NnOp::LogSoftmax { axis: a }), &[self], &out);
        Ok(out)
    }

    /// Per-example cross entropy of `labels` (class indices) under the
    /// softmax of these logits over the last axis, in one fused pass:
    /// `logsumexp(x) - x[label]`. The output drops the last axis
    /// (TensorFlow's `sparse_softmax_cross_entropy_with_logits`). The labels
    /// are a `usize` slice or an integer tensor ([`Indices`]) with one entry
    /// per example; negative or too large labels are
    /// [`Error::IndexOutOfBounds`].
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f64, 0.0, 10.0, 0.0], [2, 2])?;
    /// let loss = logits.sparse_softmax_cross_entropy(&[1, 0])?;
    /// let labels = Tensor::vector(vec![1i64, 0]);
    /// assert_eq!(logits.sparse_softmax_cross_entropy(&labels)?, loss);
    /// assert!(logits.sparse_softmax_cross_entropy(&Tensor::vector(vec![-1i64, 0])).is_err());
    /// assert!((loss.to_vec()[0] - 2f64.ln()).abs() < 1e-12);
    /// assert!(loss.to_vec()[1] < 1e-4);
    /// assert!(logits.sparse_softmax_cross_entropy(&[2, 0]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sparse_softmax_cross_entropy(
        &self,
        labels: &(impl Indices + ?Sized),
    ) -> Result<Tensor<T>> {
        const OP: &str = "sparse_softmax_cross_entropy";
        if self.rank() == 0 {
            return Err(Error::Rank {
                op: OP,
                expected: "rank >= 1 (classes on the last axis)",
                shape: self.shape().clone(),
            });
        }
        let c = self.dims()[self.rank() - 1];
        let (labels, _) = labels.resolve(OP, self.rank() - 1, c)?;
        self.sparse_ce_checked(&labels)
    }

    /// The fused loss for labels already checked against the class count
    /// (one body per float type, whatever form the labels came in).
    fn sparse_ce_checked(&self, labels: &[usize]) -> Result<Tensor<T>> {
        crate::instances::table::<T>().sparse_ce_checked(self, labels)
    }

    pub(crate) fn sparse_ce_checked_native(&self, labels: &[usize]) -> Result<Tensor<T>> {
        const OP: &str = "sparse_softmax_cross_entropy";
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
        let x = self.as_slice();
        let data: Vec<T> = if c < SHORT_ROW && c > 0 {
            build_rows(labels.len(), 1, c * SOFTMAX, |r0, dst| {
                vectorized(
                    #[inline(always)]
                    || {
                        let sh = shifted_rows(&x[r0 * c..(r0 + dst.len()) * c], c);
                        let e: Vec<T> = sh.iter().map(|&v| v.exp_v()).collect();
                        for (j, d) in dst.iter_mut().enumerate() {
                            let es = &e[j * c..(j + 1) * c];
                            let s = es.iter().fold(T::zero(), |a, &b| a + b);
                            d.write(s.ln() - sh[j * c + labels[r0 + j]]);
                        }
                    },
                )
            })
        } else {
            build_rows(labels.len(), 1, c * SOFTMAX, |r0, dst| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let (i, l) = (r0 + j, labels[r0 + j]);
                            let row = &x[i * c..(i + 1) * c];
                            let mut m = max_lanes(row);
                            if !m.is_finite() {
                                m = T::zero();
                            }
                            let s = sum_map_lanes(row, |v| (v - m).exp_v());
                            d.write((m - row[l]) + s.ln());
                        }
                    },
                )
            })
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
        crate::instances::table::<T>().softmax_cross_entropy(self, labels)
    }

    pub(crate) fn softmax_cross_entropy_native(&self, labels: &Tensor<T>) -> Result<Tensor<T>> {
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
            assert_relative_eq!(
                sums,
                Tensor::ones(sums.shape().clone()).unwrap(),
                epsilon = 1e-12
            );
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
        let x = Tensor::<f32>::zeros([2, 3]).unwrap();
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
            x.softmax_cross_entropy(&Tensor::zeros([3, 2]).unwrap()),
            Err(Error::ShapeMismatch {
                op: "softmax_cross_entropy",
                ..
            })
        ));
    }
}
