//! Gathering and scattering along an axis: `index_select` (an embedding
//! lookup), `gather` with an index array of any shape, `scatter_add` (their
//! gradient), and `one_hot`. Indices are `usize` slices or integer tensors
//! ([`Indices`]). Gradient rules: rime-tape `rules/index.rs`.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::kernels::reduce::axis_view;
use crate::record::{Op, record};
use crate::{Element, Error, IntElement, Result, Scalar, Shape, Tensor, kernels};

/// Positions along an axis, as the index ops take them: a `usize` slice,
/// array or `Vec` (shape `[len]`), or an integer tensor ([`IntElement`]:
/// `i32`, `i64`) whose shape [`Tensor::gather`] and [`Tensor::one_hot`]
/// keep. Negative or too large entries are [`Error::IndexOutOfBounds`].
///
/// ```
/// use rime_tensor::{Error, Tensor};
/// let table = Tensor::from_vec(vec![10.0f32, 20.0, 30.0], [3])?;
/// // a slice and an integer tensor select alike
/// let a = table.index_select(0, &[2, 0])?;
/// let b = table.index_select(0, &Tensor::vector(vec![2i64, 0]))?;
/// assert_eq!(a, b);
/// let bad = table.index_select(0, &Tensor::vector(vec![1i32, -1])).unwrap_err();
/// assert!(matches!(bad, Error::IndexOutOfBounds { index: -1, size: 3, .. }));
/// # Ok::<(), Error>(())
/// ```
pub trait Indices {
    /// The positions, each checked to lie in `0..size` (`op` and `axis`
    /// name the op and axis in the error), and their shape.
    fn resolve(
        &self,
        op: &'static str,
        axis: usize,
        size: usize,
    ) -> Result<(Cow<'_, [usize]>, Shape)>;
}

impl Indices for [usize] {
    fn resolve(
        &self,
        op: &'static str,
        axis: usize,
        size: usize,
    ) -> Result<(Cow<'_, [usize]>, Shape)> {
        check_indices(op, self, axis, size)?;
        Ok((Cow::Borrowed(self), Shape::from([self.len()])))
    }
}

impl<const N: usize> Indices for [usize; N] {
    fn resolve(
        &self,
        op: &'static str,
        axis: usize,
        size: usize,
    ) -> Result<(Cow<'_, [usize]>, Shape)> {
        self[..].resolve(op, axis, size)
    }
}

impl Indices for Vec<usize> {
    fn resolve(
        &self,
        op: &'static str,
        axis: usize,
        size: usize,
    ) -> Result<(Cow<'_, [usize]>, Shape)> {
        self[..].resolve(op, axis, size)
    }
}

impl<I: IntElement> Indices for Tensor<I> {
    fn resolve(
        &self,
        op: &'static str,
        axis: usize,
        size: usize,
    ) -> Result<(Cow<'_, [usize]>, Shape)> {
        let mut out = kernels::try_vec(op, self.len())?;
        for &v in self.as_slice() {
            match v.to_usize() {
                Some(i) if i < size => out.push(i),
                _ => {
                    return Err(Error::IndexOutOfBounds {
                        op,
                        index: v.to_i64().unwrap_or(i64::MAX),
                        axis,
                        size,
                    });
                }
            }
        }
        Ok((Cow::Owned(out), self.shape().clone()))
    }
}

/// The recorded index ops.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IndexOp {
    /// `out[.., i, ..] = x[.., indices[i], ..]` along `axis`: input `[x]`.
    IndexSelect {
        /// The indexed axis.
        axis: usize,
        /// The selected positions.
        indices: Arc<[usize]>,
    },
    /// `out = base; out[.., indices[i], ..] += src[.., i, ..]`: inputs
    /// `[base, src]`.
    ScatterAdd {
        /// The indexed axis.
        axis: usize,
        /// Target positions (repeats accumulate).
        indices: Arc<[usize]>,
    },
}

fn check_indices(op: &'static str, indices: &[usize], axis: usize, size: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= size) {
        Some(&index) => Err(Error::IndexOutOfBounds {
            op,
            index: i64::try_from(index).unwrap_or(i64::MAX),
            axis,
            size,
        }),
        None => Ok(()),
    }
}

impl<T: Scalar> Tensor<T> {
    /// Picks entries along `axis` by index (repeats allowed): the output has
    /// as many entries on that axis as there are indices. The indices are a
    /// `usize` slice or a 0-d or 1-d integer tensor (PyTorch's
    /// `index_select`); for index arrays of any shape use
    /// [`Tensor::gather`]. Differentiable in `self` (float tensors).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let table = Tensor::from_vec(vec![0.0f32, 0.1, 1.0, 1.1, 2.0, 2.1], [3, 2])?;
    /// let rows = table.index_select(0, &[2, 0, 2])?;
    /// assert_eq!(rows.to_vec(), vec![2.0, 2.1, 0.0, 0.1, 2.0, 2.1]);
    /// let ids = Tensor::vector(vec![2i64, 0, 2]);
    /// assert_eq!(table.index_select(0, &ids)?, rows);
    /// assert!(table.index_select(0, &[3]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn index_select(
        &self,
        axis: isize,
        indices: &(impl Indices + ?Sized),
    ) -> Result<Tensor<T>> {
        const OP: &str = "index_select";
        let a = self.shape().axis(OP, axis)?;
        let (picked, index_shape) = indices.resolve(OP, a, self.dims()[a])?;
        if index_shape.rank() > 1 {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: index_shape,
                msg: "indices must have rank 0 or 1 (gather takes any shape)".into(),
            });
        }
        self.select_checked(a, &picked)
    }

    /// `index_select` with indices already checked against axis `a`.
    fn select_checked(&self, a: usize, indices: &[usize]) -> Result<Tensor<T>> {
        let (outer, n, inner) = axis_view(self.shape(), a);
        let mut dims = self.shape().0.clone();
        dims[a] = indices.len();
        let shape = Shape(dims);
        let len = shape.checked_len::<T>("index_select")?;
        let x = self.as_slice();
        let mut out = kernels::try_buffer("index_select", len)?;
        for o in 0..outer {
            for &i in indices {
                let s = (o * n + i) * inner;
                out.extend_from_slice(&x[s..s + inner]);
            }
        }
        let out = Tensor::from_parts(out, shape);
        record(
            || {
                Op::Index(IndexOp::IndexSelect {
                    axis: a,
                    indices: indices.into(),
                })
            },
            &[self],
            &out,
        );
        Ok(out)
    }

    /// TensorFlow's `gather`: an index tensor of any shape replaces `axis`,
    /// so the output shape is `shape[..axis] + index_shape +
    /// shape[axis+1..]`. With `[batch, seq]` integer ids on a `[vocab, dim]`
    /// table this is an embedding lookup giving `[batch, seq, dim]`
    /// (PyTorch's `embedding`; not PyTorch's elementwise `gather`). A
    /// `usize` slice counts as a 1-d index tensor. Differentiable in `self`.
    ///
    /// ```
    /// use rime_tensor::{Error, Tensor};
    /// let table = Tensor::from_vec((0..40).map(|v| v as f32).collect(), [10, 4])?;
    /// let ids = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], [2, 3])?;
    /// let emb = table.gather(0, &ids)?;
    /// assert_eq!(emb.shape(), &[2, 3, 4]);
    /// assert_eq!(emb.get(&[1, 2, 0])?, 24.0); // row 6
    /// let bad = Tensor::from_vec(vec![1i64, 10], [2])?;
    /// assert!(matches!(table.gather(0, &bad), Err(Error::IndexOutOfBounds { index: 10, .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn gather(&self, axis: isize, indices: &(impl Indices + ?Sized)) -> Result<Tensor<T>> {
        let a = self.shape().axis("gather", axis)?;
        let (picked, index_shape) = indices.resolve("gather", a, self.dims()[a])?;
        let mut dims: SmallVec<[usize; 4]> = self.dims()[..a].into();
        dims.extend_from_slice(&index_shape);
        dims.extend_from_slice(&self.dims()[a + 1..]);
        let shape = Shape(dims);
        shape.checked_len::<T>("gather")?;
        self.select_checked(a, &picked)?.reshape(shape)
    }
}

impl<T: Element> Tensor<T> {
    /// Adds the entries of `src` into a copy of `self` at `indices` along
    /// `axis` (repeated indices accumulate). `src` has `self`'s shape except
    /// `indices.len()` entries on `axis`. This is the gradient of
    /// `index_select`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let base = Tensor::<f32>::zeros([3])?;
    /// let src = Tensor::vector(vec![1.0f32, 2.0, 4.0]);
    /// assert_eq!(base.scatter_add(0, &[2, 0, 2], &src)?.to_vec(), vec![2.0, 0.0, 5.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn scatter_add(
        &self,
        axis: isize,
        indices: &(impl Indices + ?Sized),
        src: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let a = self.shape().axis("scatter_add", axis)?;
        let (indices, index_shape) = indices.resolve("scatter_add", a, self.dims()[a])?;
        if index_shape.rank() > 1 {
            return Err(Error::ShapeMismatch {
                op: "scatter_add",
                lhs: self.shape().clone(),
                rhs: index_shape,
                msg: "indices must have rank 0 or 1".into(),
            });
        }
        let indices = &indices[..];
        let (outer, n, inner) = axis_view(self.shape(), a);
        let mut want = self.shape().0.clone();
        want[a] = indices.len();
        if src.dims() != &want[..] {
            return Err(Error::ShapeMismatch {
                op: "scatter_add",
                lhs: self.shape().clone(),
                rhs: src.shape().clone(),
                msg: format!(
                    "src must have shape {} for {} indices on axis {a}",
                    Shape(want),
                    indices.len()
                ),
            });
        }
        let mut out = self.to_vec();
        let s = src.as_slice();
        let k = indices.len();
        for o in 0..outer {
            for (j, &i) in indices.iter().enumerate() {
                let dst = (o * n + i) * inner;
                let from = (o * k + j) * inner;
                for (d, &v) in out[dst..dst + inner].iter_mut().zip(&s[from..from + inner]) {
                    *d += v;
                }
            }
        }
        let out = Tensor::from_parts(out, self.shape().clone());
        record(
            || {
                Op::Index(IndexOp::ScatterAdd {
                    axis: a,
                    indices: indices.into(),
                })
            },
            &[self, src],
            &out,
        );
        Ok(out)
    }

    /// One-hot rows: for indices of shape `s` a tensor of shape
    /// `s + [depth]` with a 1 at `[.., indices[..]]` (a `usize` slice has
    /// shape `[len]`, giving a `[len, depth]` matrix). Indices outside
    /// `0..depth` are [`Error::IndexOutOfBounds`].
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::<f32>::one_hot(&[2, 0], 3)?;
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// let labels = Tensor::from_vec(vec![2i64, 0], [2, 1])?;
    /// assert_eq!(Tensor::<f32>::one_hot(&labels, 3)?.shape(), &[2, 1, 3]);
    /// assert!(Tensor::<f32>::one_hot(&[3], 3).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn one_hot(indices: &(impl Indices + ?Sized), depth: usize) -> Result<Tensor<T>> {
        // errors name axis 1: the class axis of the common 1-d labels
        let (indices, index_shape) = indices.resolve("one_hot", 1, depth)?;
        Self::one_hot_checked(&indices, index_shape, depth)
    }

    /// `one_hot` of checked indices (one body per element type).
    fn one_hot_checked(indices: &[usize], index_shape: Shape, depth: usize) -> Result<Tensor<T>> {
        let mut dims = index_shape.0;
        dims.push(depth);
        let shape = Shape(dims);
        let len = shape.checked_len::<T>("one_hot")?;
        let mut v = kernels::try_filled("one_hot", len, T::zero())?;
        for (r, &i) in indices.iter().enumerate() {
            v[r * depth + i] = T::one();
        }
        Ok(Tensor::from_parts(v, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_along_inner_axis() {
        let x = Tensor::from_vec((0..12).map(|v| v as f64).collect(), [2, 3, 2]).unwrap();
        let y = x.index_select(1, &[2, 2, 0]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(y.get(&[1, 0, 1]).unwrap(), x.get(&[1, 2, 1]).unwrap());
        assert_eq!(y.get(&[0, 2, 0]).unwrap(), x.get(&[0, 0, 0]).unwrap());
        let none = x.index_select(1, &[]).unwrap();
        assert_eq!(none.shape(), &[2, 0, 2]);
    }

    #[test]
    fn scatter_add_is_the_adjoint_of_index_select() {
        // <select(x), g> == <x, scatter(g)> for any x and g
        let x = Tensor::from_vec((0..12).map(|v| (v as f64).sin()).collect(), [3, 4]).unwrap();
        let idx = [3, 1, 3, 0, 0];
        let g = Tensor::from_vec((0..15).map(|v| (v as f64).cos()).collect(), [3, 5]).unwrap();
        let lhs: f64 = x
            .index_select(1, &idx)
            .unwrap()
            .as_slice()
            .iter()
            .zip(g.as_slice())
            .map(|(a, b)| a * b)
            .sum();
        let s = Tensor::zeros([3, 4])
            .unwrap()
            .scatter_add(1, &idx, &g)
            .unwrap();
        let rhs: f64 = x
            .as_slice()
            .iter()
            .zip(s.as_slice())
            .map(|(a, b)| a * b)
            .sum();
        assert!((lhs - rhs).abs() < 1e-12);
    }

    #[test]
    fn bad_indices_are_typed_errors() {
        let x = Tensor::<f32>::zeros([3, 2]).unwrap();
        assert!(matches!(
            x.index_select(1, &[0, 2]),
            Err(Error::IndexOutOfBounds {
                op: "index_select",
                index: 2,
                axis: 1,
                size: 2
            })
        ));
        assert!(matches!(
            x.index_select(2, &[0]),
            Err(Error::InvalidAxis {
                op: "index_select",
                ..
            })
        ));
        assert!(matches!(
            x.gather(0, &Tensor::from_vec(vec![0i32, -2], [1, 2]).unwrap()),
            Err(Error::IndexOutOfBounds {
                op: "gather",
                index: -2,
                axis: 0,
                size: 3
            })
        ));
        assert!(matches!(
            x.index_select(0, &Tensor::from_vec(vec![0i64, 1], [1, 2]).unwrap()),
            Err(Error::ShapeMismatch {
                op: "index_select",
                ..
            })
        ));
        assert!(matches!(
            x.scatter_add(0, &[0, 1], &Tensor::zeros([3, 2]).unwrap()),
            Err(Error::ShapeMismatch {
                op: "scatter_add",
                ..
            })
        ));
        assert!(matches!(
            x.scatter_add(0, &[5], &Tensor::zeros([1, 2]).unwrap()),
            Err(Error::IndexOutOfBounds {
                op: "scatter_add",
                index: 5,
                ..
            })
        ));
        assert!(matches!(
            Tensor::<f32>::one_hot(&[4], 2),
            Err(Error::IndexOutOfBounds { op: "one_hot", .. })
        ));
    }
}
