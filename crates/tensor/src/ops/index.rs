//! Gathering and scattering along an axis: `index_select` (an embedding
//! lookup), `gather` with an index array of any shape, `scatter_add` (their
//! gradient), and `one_hot`. Gradient rules: rime-tape `rules/index.rs`.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::kernels::reduce::axis_view;
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor, kernels};

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
            index,
            axis,
            size,
        }),
        None => Ok(()),
    }
}

impl<T: Element> Tensor<T> {
    /// Picks entries along `axis` by index (repeats allowed): the output has
    /// `indices.len()` entries on that axis.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let table = Tensor::from_vec(vec![0.0f32, 0.1, 1.0, 1.1, 2.0, 2.1], [3, 2])?;
    /// let rows = table.index_select(0, &[2, 0, 2])?;
    /// assert_eq!(rows.to_vec(), vec![2.0, 2.1, 0.0, 0.1, 2.0, 2.1]);
    /// assert!(table.index_select(0, &[3]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor<T>> {
        let a = self.shape().axis("index_select", axis)?;
        let (outer, n, inner) = axis_view(self.shape(), a);
        check_indices("index_select", indices, a, n)?;
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

    /// TensorFlow's `gather`: indices of any shape replace `axis`, so the
    /// output shape is `shape[..axis] + index_shape + shape[axis+1..]`.
    /// With a `[batch, seq]` index array on a `[vocab, dim]` table this is an
    /// embedding lookup giving `[batch, seq, dim]`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let table = Tensor::<f32>::ones([10, 4])?;
    /// let emb = table.gather(0, &[1, 2, 3, 4, 5, 6], [2, 3])?;
    /// assert_eq!(emb.shape(), &[2, 3, 4]);
    /// assert!(table.gather(0, &[1, 2], [3]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn gather(
        &self,
        axis: isize,
        indices: &[usize],
        index_shape: impl Into<Shape>,
    ) -> Result<Tensor<T>> {
        let index_shape = index_shape.into();
        if index_shape.checked_len::<u8>("gather")? != indices.len() {
            return Err(Error::DataLength {
                op: "gather",
                shape: index_shape,
                len: indices.len(),
            });
        }
        let a = self.shape().axis("gather", axis)?;
        check_indices("gather", indices, a, self.dims()[a])?;
        let picked = self.index_select(a as isize, indices)?;
        let mut dims: SmallVec<[usize; 4]> = self.dims()[..a].into();
        dims.extend_from_slice(&index_shape);
        dims.extend_from_slice(&self.dims()[a + 1..]);
        picked.reshape(Shape(dims))
    }

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
        indices: &[usize],
        src: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let a = self.shape().axis("scatter_add", axis)?;
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
        check_indices("scatter_add", indices, a, n)?;
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

    /// A `[indices.len(), depth]` matrix with a 1 at `(i, indices[i])`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::<f32>::one_hot(&[2, 0], 3)?;
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// assert!(Tensor::<f32>::one_hot(&[3], 3).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn one_hot(indices: &[usize], depth: usize) -> Result<Tensor<T>> {
        check_indices("one_hot", indices, 1, depth)?;
        let shape = Shape::from([indices.len(), depth]);
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
            x.gather(0, &[0], [2]),
            Err(Error::DataLength { op: "gather", .. })
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
