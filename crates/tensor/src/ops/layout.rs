//! Shape and layout: reshape (and squeeze/unsqueeze/flatten), permute and
//! transpose, broadcast_to, concat/stack/split, slice/narrow, pad, and cast
//! between `f32` and `f64`. Gradient rules: rime-tape `rules/layout.rs`.

use std::ops::Range;

use smallvec::SmallVec;

use crate::kernels::{self, broadcast};
use crate::record::{Op, record, record_dyn};
use crate::{DType, Element, Error, Result, Scalar, Shape, Tensor, broadcast_shapes};

/// The recorded layout ops.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LayoutOp {
    /// Same elements, new shape.
    Reshape,
    /// Axes reordered: output axis `j` is input axis `perm[j]`.
    Permute {
        /// The permutation.
        perm: Box<[usize]>,
    },
    /// Broadcast up to the output's shape.
    BroadcastTo,
    /// Inputs joined along `axis`.
    Concat {
        /// The joined axis.
        axis: usize,
    },
    /// The sub-block `ranges` (one per axis) of the input.
    Slice {
        /// One range per axis.
        ranges: Box<[Range<usize>]>,
    },
    /// The input placed in a zero tensor with `widths[i] = (before, after)`.
    Pad {
        /// Zeros added before and after, per axis.
        widths: Box<[(usize, usize)]>,
    },
}

/// Copies the block `src_ranges` of `src` into the block `dst_ranges` of
/// `dst` (blocks of equal extent), a contiguous run at a time.
fn copy_block<T: Copy>(
    src: &[T],
    src_shape: &Shape,
    src_ranges: &[Range<usize>],
    dst: &mut [T],
    dst_shape: &Shape,
    dst_ranges: &[Range<usize>],
) {
    let rank = src_shape.rank();
    let extent: SmallVec<[usize; 4]> = src_ranges.iter().map(|r| r.len()).collect();
    if extent.contains(&0) {
        return;
    }
    if rank == 0 {
        dst[0] = src[0];
        return;
    }
    // axes after `split` are copied whole in both tensors: one contiguous run
    let mut split = rank;
    while split > 0 {
        let a = split - 1;
        let whole = src_ranges[a].len() == src_shape[a] && dst_ranges[a].len() == dst_shape[a];
        if !whole {
            break;
        }
        split -= 1;
    }
    let (ss, ds) = (src_shape.strides(), dst_shape.strides());
    let run_axis = split.saturating_sub(1);
    let run: usize = extent[run_axis..].iter().product();
    let outer: SmallVec<[usize; 4]> = extent[..run_axis].into();
    let total: usize = outer.iter().product();
    let mut idx: SmallVec<[usize; 4]> = SmallVec::from_elem(0, outer.len());
    for _ in 0..total {
        let (mut so, mut d) = (
            src_ranges[run_axis].start * ss[run_axis],
            dst_ranges[run_axis].start * ds[run_axis],
        );
        for (j, &i) in idx.iter().enumerate() {
            so += (src_ranges[j].start + i) * ss[j];
            d += (dst_ranges[j].start + i) * ds[j];
        }
        dst[d..d + run].copy_from_slice(&src[so..so + run]);
        for j in (0..outer.len()).rev() {
            idx[j] += 1;
            if idx[j] < outer[j] {
                break;
            }
            idx[j] = 0;
        }
    }
}

fn full_ranges(shape: &Shape) -> SmallVec<[Range<usize>; 4]> {
    shape.iter().map(|&d| 0..d).collect()
}

impl<T: Scalar> Tensor<T> {
    /// The same elements under a new shape with the same element count.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros([2, 6])?;
    /// assert_eq!(x.reshape([3, 4])?.shape(), &[3, 4]);
    /// assert!(x.reshape([5]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor<T>> {
        let shape = shape.into();
        if shape.checked_len::<T>("reshape")? != self.len() {
            return Err(Error::Reshape {
                op: "reshape",
                from: self.shape().clone(),
                to: shape,
            });
        }
        let out = self.share_with_shape(shape);
        record(|| Op::Layout(LayoutOp::Reshape), &[self], &out);
        Ok(out)
    }

    /// Flattens axes `axis..` into one (`flatten_from(1)` is Keras' Flatten
    /// for a batch).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros([2, 3, 4])?.flatten_from(1)?.shape(), &[2, 12]);
    /// assert_eq!(Tensor::<f32>::zeros([2, 3])?.flatten_from(0)?.shape(), &[6]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn flatten_from(&self, axis: usize) -> Result<Tensor<T>> {
        if axis > self.rank() {
            return Err(Error::InvalidAxis {
                op: "flatten_from",
                axis: axis as isize,
                rank: self.rank(),
            });
        }
        let mut dims: SmallVec<[usize; 4]> = self.dims()[..axis].into();
        dims.push(self.dims()[axis..].iter().product());
        self.reshape(Shape(dims))
    }

    /// Inserts a size-1 axis at `axis` (`-1` appends).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros([2, 3])?;
    /// assert_eq!(x.unsqueeze(0)?.shape(), &[1, 2, 3]);
    /// assert_eq!(x.unsqueeze(-1)?.shape(), &[2, 3, 1]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor<T>> {
        let a = crate::shape::normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut dims = self.shape().0.clone();
        dims.insert(a, 1);
        self.reshape(Shape(dims))
    }

    /// Removes size-1 axes: those listed, or all of them if `axes` is empty.
    /// Errors if a listed axis is not of size 1.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros([1, 3, 1])?;
    /// assert_eq!(x.squeeze(&[])?.shape(), &[3]);
    /// assert_eq!(x.squeeze(&[-1])?.shape(), &[1, 3]);
    /// assert!(x.squeeze(&[1]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn squeeze(&self, axes: &[isize]) -> Result<Tensor<T>> {
        let drop: SmallVec<[usize; 4]> = if axes.is_empty() {
            (0..self.rank()).filter(|&i| self.dims()[i] == 1).collect()
        } else {
            let a = self.shape().axes("squeeze", axes)?;
            if let Some(&bad) = a.iter().find(|&&i| self.dims()[i] != 1) {
                return Err(Error::InvalidArgument {
                    op: "squeeze",
                    msg: format!(
                        "axis {bad} of shape {} has size {}, not 1",
                        self.shape(),
                        self.dims()[bad]
                    ),
                });
            }
            a
        };
        let dims: SmallVec<[usize; 4]> = (0..self.rank())
            .filter(|i| !drop.contains(i))
            .map(|i| self.dims()[i])
            .collect();
        self.reshape(Shape(dims))
    }

    /// Reorders axes: output axis `j` is input axis `perm[j]`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [2, 3])?;
    /// let y = x.permute(&[1, 0])?;
    /// assert_eq!(y.shape(), &[3, 2]);
    /// assert_eq!(y.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor<T>> {
        let rank = self.rank();
        let mut seen: SmallVec<[bool; 4]> = SmallVec::from_elem(false, rank);
        let valid = perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::InvalidArgument {
                op: "permute",
                msg: format!(
                    "{perm:?} is not a permutation of the axes of shape {}",
                    self.shape()
                ),
            });
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            let out = self.share_with_shape(self.shape().clone());
            record(
                || Op::Layout(LayoutOp::Permute { perm: perm.into() }),
                &[self],
                &out,
            );
            return Ok(out);
        }
        let in_strides = self.shape().strides();
        let dims: SmallVec<[usize; 4]> = perm.iter().map(|&p| self.dims()[p]).collect();
        let strides: SmallVec<[usize; 4]> = perm.iter().map(|&p| in_strides[p]).collect();
        let x = self.as_slice();
        let mut out = Vec::with_capacity(self.len());
        if !x.is_empty() {
            let last = rank - 1;
            let (n, s) = (dims[last], strides[last]);
            let outer: usize = dims[..last].iter().product();
            let mut idx: SmallVec<[usize; 4]> = SmallVec::from_elem(0, last);
            let mut base = 0usize;
            for _ in 0..outer {
                out.extend((0..n).map(|i| x[base + i * s]));
                for j in (0..last).rev() {
                    idx[j] += 1;
                    base += strides[j];
                    if idx[j] < dims[j] {
                        break;
                    }
                    base -= strides[j] * dims[j];
                    idx[j] = 0;
                }
            }
        }
        let out = Tensor::from_parts(out, Shape(dims));
        record(
            || Op::Layout(LayoutOp::Permute { perm: perm.into() }),
            &[self],
            &out,
        );
        Ok(out)
    }

    /// Swaps two axes.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros([2, 3, 4])?.transpose(0, -1)?.shape(), &[4, 3, 2]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor<T>> {
        let a = self.shape().axis("transpose", a)?;
        let b = self.shape().axis("transpose", b)?;
        let mut perm: SmallVec<[usize; 4]> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swaps the last two axes (a matrix transpose; copies). To multiply by
    /// a transpose without copying use [`Tensor::matmul_t`].
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// assert_eq!(x.t()?.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn t(&self) -> Result<Tensor<T>> {
        if self.rank() < 2 {
            return Err(Error::Rank {
                op: "t",
                expected: "rank >= 2",
                shape: self.shape().clone(),
            });
        }
        self.transpose(-2, -1)
    }

    /// Materializes this tensor broadcast to `shape` (NumPy rules).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f32, 2.0]);
    /// assert_eq!(x.broadcast_to([2, 2])?.to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
    /// assert!(x.broadcast_to([3]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor<T>> {
        let shape = shape.into();
        let b = broadcast_shapes("broadcast_to", self.shape(), &shape)?;
        if b != shape {
            return Err(Error::Broadcast {
                op: "broadcast_to",
                lhs: self.shape().clone(),
                rhs: shape,
            });
        }
        let data = broadcast::expand("broadcast_to", self.as_slice(), self.shape(), &shape)?;
        let out = Tensor::from_parts(data, shape);
        record(|| Op::Layout(LayoutOp::BroadcastTo), &[self], &out);
        Ok(out)
    }

    /// Joins tensors along `axis`; every other axis must match.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::<f32>::ones([2, 1])?;
    /// let b = Tensor::<f32>::zeros([2, 2])?;
    /// let c = Tensor::concat(&[&a, &b], 1)?;
    /// assert_eq!(c.to_vec(), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn concat(tensors: &[&Tensor<T>], axis: isize) -> Result<Tensor<T>> {
        let Some(first) = tensors.first() else {
            return Err(Error::InvalidArgument {
                op: "concat",
                msg: "needs at least one tensor".into(),
            });
        };
        let a = first.shape().axis("concat", axis)?;
        let mut dims = first.shape().0.clone();
        dims[a] = 0;
        for t in tensors {
            let same_rank = t.rank() == first.rank();
            if !same_rank || (0..first.rank()).any(|i| i != a && t.dims()[i] != first.dims()[i]) {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                    msg: format!("every axis but {a} must match"),
                });
            }
            dims[a] = match dims[a].checked_add(t.dims()[a]) {
                Some(d) => d,
                None => {
                    return Err(Error::ShapeOverflow {
                        op: "concat",
                        shape: t.shape().clone(),
                    });
                }
            };
        }
        let shape = Shape(dims);
        let len = shape.checked_len::<T>("concat")?;
        let mut out = kernels::try_filled("concat", len, T::zero())?;
        let mut dst = full_ranges(&shape);
        let mut start = 0;
        for t in tensors {
            let n = t.dims()[a];
            dst[a] = start..start + n;
            copy_block(
                t.as_slice(),
                t.shape(),
                &full_ranges(t.shape()),
                &mut out,
                &shape,
                &dst,
            );
            start += n;
        }
        let out = Tensor::from_parts(out, shape);
        record(|| Op::Layout(LayoutOp::Concat { axis: a }), tensors, &out);
        Ok(out)
    }

    /// Stacks equal-shaped tensors along a new axis `axis`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::<f32>::ones([3])?;
    /// assert_eq!(Tensor::stack(&[&a, &a], 0)?.shape(), &[2, 3]);
    /// assert_eq!(Tensor::stack(&[&a, &a], -1)?.shape(), &[3, 2]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn stack(tensors: &[&Tensor<T>], axis: isize) -> Result<Tensor<T>> {
        let Some(first) = tensors.first() else {
            return Err(Error::InvalidArgument {
                op: "stack",
                msg: "needs at least one tensor".into(),
            });
        };
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            return Err(Error::ShapeMismatch {
                op: "stack",
                lhs: first.shape().clone(),
                rhs: t.shape().clone(),
                msg: "stacked tensors must have equal shapes".into(),
            });
        }
        let a = crate::shape::normalize_axis("stack", axis, first.rank() + 1)?;
        let parts = tensors
            .iter()
            .map(|t| t.unsqueeze(a as isize))
            .collect::<Result<Vec<_>>>()?;
        Tensor::concat(&parts.iter().collect::<Vec<_>>(), a as isize)
    }

    /// Splits along `axis` into pieces of the given sizes (which must add up
    /// to the axis length).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::arange(0.0f32, 5.0, 1.0)?;
    /// let parts = x.split(&[2, 3], 0)?;
    /// assert_eq!(parts[1].to_vec(), vec![2.0, 3.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn split(&self, sizes: &[usize], axis: isize) -> Result<Vec<Tensor<T>>> {
        let a = self.shape().axis("split", axis)?;
        let total = sizes.iter().try_fold(0usize, |acc, &n| acc.checked_add(n));
        if total != Some(self.dims()[a]) {
            return Err(Error::InvalidArgument {
                op: "split",
                msg: format!(
                    "sizes {sizes:?} do not add up to axis {a} of shape {}",
                    self.shape()
                ),
            });
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let part = self.narrow(a as isize, start, n);
                start += n;
                part
            })
            .collect()
    }

    /// The sub-block given by one range per leading axis (missing trailing
    /// axes are taken whole).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), [3, 4])?;
    /// let y = x.slice(&[1..3, 1..2])?;
    /// assert_eq!(y.shape(), &[2, 1]);
    /// assert_eq!(y.to_vec(), vec![5.0, 9.0]);
    /// assert!(x.slice(&[0..4]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn slice(&self, ranges: &[Range<usize>]) -> Result<Tensor<T>> {
        if ranges.len() > self.rank() {
            return Err(Error::InvalidArgument {
                op: "slice",
                msg: format!("{} ranges for shape {}", ranges.len(), self.shape()),
            });
        }
        let mut full = full_ranges(self.shape());
        for (axis, r) in ranges.iter().enumerate() {
            if r.start > r.end || r.end > self.dims()[axis] {
                return Err(Error::InvalidArgument {
                    op: "slice",
                    msg: format!(
                        "range {r:?} is out of bounds for axis {axis} of shape {}",
                        self.shape()
                    ),
                });
            }
            full[axis] = r.clone();
        }
        let shape = Shape(full.iter().map(|r| r.len()).collect());
        let mut out = vec![T::zero(); shape.numel()];
        copy_block(
            self.as_slice(),
            self.shape(),
            &full,
            &mut out,
            &shape,
            &full_ranges(&shape),
        );
        let out = Tensor::from_parts(out, shape);
        record(
            || {
                Op::Layout(LayoutOp::Slice {
                    ranges: full.as_slice().into(),
                })
            },
            &[self],
            &out,
        );
        Ok(out)
    }

    /// `len` entries of `axis` from `start`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros([4, 5])?;
    /// assert_eq!(x.narrow(-1, 1, 3)?.shape(), &[4, 3]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor<T>> {
        let a = self.shape().axis("narrow", axis)?;
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.dims()[a])
        {
            return Err(Error::InvalidArgument {
                op: "narrow",
                msg: format!(
                    "{len} entries from {start} exceed axis {a} of shape {}",
                    self.shape()
                ),
            });
        }
        let mut ranges = full_ranges(self.shape());
        ranges[a] = start..start.saturating_add(len);
        self.slice(&ranges)
    }

    /// Surrounds the tensor with zeros: `widths[i] = (before, after)` for
    /// each leading axis (missing axes get none).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::ones([1, 2])?;
    /// let y = x.pad(&[(1, 0), (0, 1)])?;
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn pad(&self, widths: &[(usize, usize)]) -> Result<Tensor<T>> {
        if widths.len() > self.rank() {
            return Err(Error::InvalidArgument {
                op: "pad",
                msg: format!("{} widths for shape {}", widths.len(), self.shape()),
            });
        }
        let mut w: SmallVec<[(usize, usize); 4]> = widths.into();
        w.resize(self.rank(), (0, 0));
        let dims: Option<SmallVec<[usize; 4]>> = self
            .dims()
            .iter()
            .zip(&w)
            .map(|(&d, &(b, a))| b.checked_add(d)?.checked_add(a))
            .collect();
        let Some(shape) = dims.map(Shape) else {
            return Err(Error::InvalidArgument {
                op: "pad",
                msg: format!("widths {widths:?} make shape {} too large", self.shape()),
            });
        };
        let len = shape.checked_len::<T>("pad")?;
        let dst: SmallVec<[Range<usize>; 4]> = self
            .dims()
            .iter()
            .zip(&w)
            .map(|(&d, &(b, _))| b..b + d)
            .collect();
        let mut out = kernels::try_filled("pad", len, T::zero())?;
        copy_block(
            self.as_slice(),
            self.shape(),
            &full_ranges(self.shape()),
            &mut out,
            &shape,
            &dst,
        );
        let out = Tensor::from_parts(out, shape);
        record(
            || {
                Op::Layout(LayoutOp::Pad {
                    widths: w.as_slice().into(),
                })
            },
            &[self],
            &out,
        );
        Ok(out)
    }

    /// The dtype tag of `T`.
    ///
    /// ```
    /// use rime_tensor::{DType, Tensor};
    /// assert_eq!(Tensor::vector(vec![1i32]).dtype(), DType::I32);
    /// ```
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Converts to element type `U`, checked where the conversion could
    /// lose the value: float to integer truncates toward zero (as PyTorch's
    /// `.long()` and NumPy's `astype`) and fails on NaN, infinities and
    /// values outside `U`'s range, and `i64` to `i32` fails out of range,
    /// all with [`Error::InvalidArgument`] naming the value and the shape.
    /// Integer to float rounds to nearest; between floats this is
    /// [`Tensor::cast`], recorded on a gradient tape. Conversions involving
    /// an integer type are not differentiable.
    ///
    /// ```
    /// use rime_tensor::{Error, Tensor};
    /// let labels = Tensor::vector(vec![2.0f32, 0.0, 1.0]);
    /// let ids = labels.to_dtype::<i64>()?;
    /// assert_eq!(ids.to_vec(), vec![2, 0, 1]);
    /// assert_eq!(ids.to_dtype::<f64>()?.to_vec(), vec![2.0, 0.0, 1.0]);
    /// assert_eq!(Tensor::vector(vec![-1.7f64]).to_dtype::<i32>()?.to_vec(), vec![-1]);
    /// let huge = Tensor::vector(vec![1e10f32]);
    /// assert!(matches!(huge.to_dtype::<i32>(), Err(Error::InvalidArgument { op: "to_dtype", .. })));
    /// assert!(Tensor::vector(vec![f32::NAN]).to_dtype::<i64>().is_err());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn to_dtype<U: Scalar>(&self) -> Result<Tensor<U>> {
        if let Some(same) = (self as &dyn std::any::Any).downcast_ref::<Tensor<U>>() {
            return Ok(same.clone());
        }
        if let Some(cast) = float_cast::<T, U>(self) {
            // f32 <-> f64: the recorded, differentiable cast
            return Ok(cast);
        }
        let x = self.as_slice();
        let mut out = kernels::try_buffer("to_dtype", x.len())?;
        for &v in x {
            // NumCast: float -> int truncates and is None out of range
            // (NaN and infinities included); int -> float rounds
            match U::from(v) {
                Some(u) => out.push(u),
                None => {
                    return Err(Error::InvalidArgument {
                        op: "to_dtype",
                        msg: format!(
                            "{v} (in a {} tensor of shape {}) is out of the range of {}",
                            T::DTYPE,
                            self.shape(),
                            U::DTYPE
                        ),
                    });
                }
            }
        }
        Ok(Tensor::from_parts(out, self.shape().clone()))
    }
}

/// [`Tensor::cast`] between `f32` and `f64` given as `Scalar`s; `None`
/// when `T` or `U` is not a float.
fn float_cast<T: Scalar, U: Scalar>(x: &Tensor<T>) -> Option<Tensor<U>> {
    let any: &dyn std::any::Any = x;
    let out: Box<dyn std::any::Any> = if let Some(x) = any.downcast_ref::<Tensor<f32>>() {
        Box::new(x.cast::<f64>())
    } else if let Some(x) = any.downcast_ref::<Tensor<f64>>() {
        Box::new(x.cast::<f32>())
    } else {
        return None;
    };
    out.downcast::<Tensor<U>>().ok().map(|t| *t)
}

impl<T: Element> Tensor<T> {
    /// Converts to another element type (rounding to nearest for `f64` to
    /// `f32`). Differentiable: the gradient is cast back.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![0.1f64]);
    /// assert_eq!(x.cast::<f32>().to_vec(), vec![0.1f32]);
    /// ```
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        let data: Vec<U> = self
            .as_slice()
            .iter()
            .map(|&v| U::of(v.to_f64().unwrap_or(f64::NAN)))
            .collect();
        let out = Tensor::from_parts(data, self.shape().clone());
        if crate::record::is_recording() {
            record_dyn(
                Op::Cast {
                    from: T::DTYPE,
                    to: U::DTYPE,
                },
                &[T::as_dyn_ref(self)],
                U::as_dyn_ref(&out),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor<f64> {
        let n = Shape::from(shape).numel();
        Tensor::from_vec((0..n).map(|v| v as f64).collect(), shape).unwrap()
    }

    #[test]
    fn permute_matches_index_arithmetic() {
        let x = iota(&[2, 3, 4]);
        let y = x.permute(&[2, 0, 1]).unwrap();
        assert_eq!(y.shape(), &[4, 2, 3]);
        for i in 0..4 {
            for j in 0..2 {
                for k in 0..3 {
                    assert_eq!(y.get(&[i, j, k]).unwrap(), x.get(&[j, k, i]).unwrap());
                }
            }
        }
        assert!(matches!(
            x.permute(&[0, 0, 1]),
            Err(Error::InvalidArgument { op: "permute", .. })
        ));
        assert!(matches!(
            x.permute(&[0, 1]),
            Err(Error::InvalidArgument { op: "permute", .. })
        ));
    }

    #[test]
    fn slice_pad_concat_round_trip() {
        let x = iota(&[3, 4, 2]);
        let s = x.slice(&[1..3, 0..4, 1..2]).unwrap();
        assert_eq!(s.shape(), &[2, 4, 1]);
        assert_eq!(s.get(&[1, 3, 0]).unwrap(), x.get(&[2, 3, 1]).unwrap());
        let p = s.pad(&[(1, 0), (0, 0), (1, 0)]).unwrap();
        assert_eq!(p.shape(), &[3, 4, 2]);
        assert_eq!(p.get(&[2, 3, 1]).unwrap(), x.get(&[2, 3, 1]).unwrap());
        assert_eq!(p.get(&[0, 3, 1]).unwrap(), 0.0);
        let parts = x.split(&[1, 3], 1).unwrap();
        let back = Tensor::concat(&[&parts[0], &parts[1]], 1).unwrap();
        assert_eq!(back, x);
        let empty = x.narrow(0, 1, 0).unwrap();
        assert_eq!(empty.shape(), &[0, 4, 2]);
    }

    #[test]
    fn stack_squeeze_unsqueeze() {
        let a = iota(&[2]);
        let s = Tensor::stack(&[&a, &a, &a], 1).unwrap();
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(s.to_vec(), vec![0., 0., 0., 1., 1., 1.]);
        assert_eq!(
            s.unsqueeze(1).unwrap().squeeze(&[1]).unwrap().shape(),
            &[2, 3]
        );
        let sc = Tensor::scalar(1.0f32);
        assert_eq!(sc.unsqueeze(0).unwrap().shape(), &[1]);
    }

    #[test]
    fn cast_round_trips() {
        let x = Tensor::from_vec(vec![1.5f32, -2.25], [2]).unwrap();
        let y: Tensor<f64> = x.cast();
        assert_eq!(y.to_vec(), vec![1.5, -2.25]);
        assert_eq!(y.cast::<f32>(), x);
    }

    #[test]
    fn bad_layout_calls_are_typed_errors() {
        let x = iota(&[2, 3]);
        assert!(matches!(
            x.reshape([4]),
            Err(Error::Reshape { op: "reshape", .. })
        ));
        assert!(matches!(
            x.transpose(0, 2),
            Err(Error::InvalidAxis {
                op: "transpose",
                ..
            })
        ));
        assert!(matches!(
            Tensor::vector(vec![1.0f32]).t(),
            Err(Error::Rank { op: "t", .. })
        ));
        assert!(matches!(
            x.broadcast_to([3, 3]),
            Err(Error::Broadcast {
                op: "broadcast_to",
                ..
            })
        ));
        assert!(matches!(
            x.broadcast_to([3]),
            Err(Error::Broadcast {
                op: "broadcast_to",
                ..
            })
        ));
        assert!(matches!(
            Tensor::concat(&[&x, &iota(&[3, 3])], 1),
            Err(Error::ShapeMismatch { op: "concat", .. })
        ));
        assert!(matches!(
            Tensor::<f32>::concat(&[], 0),
            Err(Error::InvalidArgument { op: "concat", .. })
        ));
        assert!(matches!(
            Tensor::stack(&[&x, &iota(&[3, 2])], 0),
            Err(Error::ShapeMismatch { op: "stack", .. })
        ));
        assert!(matches!(
            x.split(&[1, 1], 1),
            Err(Error::InvalidArgument { op: "split", .. })
        ));
        assert!(matches!(
            x.slice(&[0..1, 2..4]),
            Err(Error::InvalidArgument { op: "slice", .. })
        ));
        assert!(matches!(
            x.narrow(1, 2, 2),
            Err(Error::InvalidArgument { op: "narrow", .. })
        ));
        assert!(matches!(
            x.pad(&[(0, 0); 3]),
            Err(Error::InvalidArgument { op: "pad", .. })
        ));
        assert!(matches!(
            x.squeeze(&[0]),
            Err(Error::InvalidArgument { op: "squeeze", .. })
        ));
        assert!(matches!(
            x.unsqueeze(4),
            Err(Error::InvalidAxis {
                op: "unsqueeze",
                ..
            })
        ));
        assert!(matches!(
            x.flatten_from(3),
            Err(Error::InvalidAxis {
                op: "flatten_from",
                ..
            })
        ));
    }
}
