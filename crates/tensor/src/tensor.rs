//! [`Tensor`]: an immutable n-d value with cheap clone, its constructors and
//! accessors. The ops live in `ops/`, one file per family.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Element, Error, Result, Scalar, Shape, kernels};

/// The identity of a tensor value: two handles with the same id are clones
/// of one value. A gradient tape tracks tensors by id.
///
/// ```
/// use rime_tensor::Tensor;
/// let a = Tensor::<f32>::ones([2]).unwrap();
/// let b = a.clone();
/// assert_eq!(a.id(), b.id());
/// assert_ne!(a.id(), a.detach().id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Ids a thread takes from [`NEXT_ID`] at once.
const ID_BLOCK: u64 = 1024;

thread_local! {
    /// The rest of this thread's block of ids: `(next, end)`.
    static THREAD_IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl TensorId {
    /// A fresh, process-unique id. rime-tape also uses these to name variables.
    ///
    /// Each thread takes ids from the global counter a block at a time (an
    /// atomic add, a full barrier, on every small op cost more than the
    /// op's recording), so the ids one thread makes grow in the order it
    /// makes them.
    #[inline]
    pub fn fresh() -> TensorId {
        THREAD_IDS.with(|ids| {
            let (next, end) = ids.get();
            let (id, end) = if next < end {
                (next, end)
            } else {
                let start = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
                (start, start + ID_BLOCK)
            };
            ids.set((id + 1, end));
            TensorId(id)
        })
    }

    /// The id as an integer (for hashing and display).
    #[inline]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// An n-d array of `f32` (the default), `f64`, `i32` or `i64`, row-major
/// and contiguous. Integer tensors (ids, labels) take the construction,
/// layout and indexing ops; arithmetic is for floats ([`Element`]).
///
/// A `Tensor` is an immutable value: ops return new tensors, and `clone` is
/// cheap (the buffer is shared). Ops whose validity depends on shapes or
/// arguments return [`Result`]; the error names the op and the shapes.
///
/// ```
/// use rime_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
/// let y = x.matmul(&x)?.add(&Tensor::scalar(1.0))?.relu();
/// assert_eq!(y.to_vec(), vec![8.0, 11.0, 16.0, 23.0]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub struct Tensor<T: Scalar = f32> {
    inner: Arc<Inner<T>>,
}

/// One pointer per handle: cloning a tensor is one reference-count
/// increment, and the tape's records of tensors stay small.
struct Inner<T: Scalar> {
    id: TensorId,
    shape: Shape,
    data: Data<T>,
}

// Buffers go back to the cache of large buffers (see `memory`).
impl<T: Scalar> Drop for Inner<T> {
    fn drop(&mut self) {
        if let Data::Owned(v) = &mut self.data {
            crate::memory::recycle(std::mem::take(v));
        }
    }
}

enum Data<T: Scalar> {
    /// The tensor's own buffer.
    Owned(Vec<T>),
    /// Another tensor's buffer (reshape, detach). That tensor always owns
    /// its buffer, so views are never more than one level deep.
    View(Tensor<T>),
}

impl<T: Scalar> Clone for Tensor<T> {
    #[inline]
    fn clone(&self) -> Self {
        Tensor {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Scalar> Tensor<T> {
    /// Builds a tensor from a buffer whose length the caller guarantees.
    #[inline]
    pub(crate) fn from_parts(data: Vec<T>, shape: Shape) -> Self {
        debug_assert_eq!(data.len(), shape.numel(), "from_parts: {shape}");
        Tensor {
            inner: Arc::new(Inner {
                id: TensorId::fresh(),
                shape,
                data: Data::Owned(data),
            }),
        }
    }

    /// A new tensor (new id) sharing this one's buffer under another shape.
    #[inline]
    pub(crate) fn share_with_shape(&self, shape: Shape) -> Self {
        debug_assert_eq!(self.len(), shape.numel());
        let owner = match &self.inner.data {
            Data::Owned(_) => self.clone(),
            Data::View(owner) => owner.clone(),
        };
        Tensor {
            inner: Arc::new(Inner {
                id: TensorId::fresh(),
                shape,
                data: Data::View(owner),
            }),
        }
    }

    /// A tensor from a row-major buffer and a shape.
    ///
    /// ```
    /// use rime_tensor::{Error, Tensor};
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert!(matches!(Tensor::from_vec(vec![1.0f32; 5], [2, 3]), Err(Error::DataLength { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_vec(data: Vec<T>, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.checked_len::<T>("from_vec")? != data.len() {
            return Err(Error::DataLength {
                op: "from_vec",
                shape,
                len: data.len(),
            });
        }
        Ok(Self::from_parts(data, shape))
    }

    /// A tensor copied from a slice and a shape.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let t = Tensor::from_slice(&[1.0f64, 2.0], [2, 1])?;
    /// assert_eq!(t.to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn from_slice(data: &[T], shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.checked_len::<T>("from_slice")? != data.len() {
            return Err(Error::DataLength {
                op: "from_slice",
                shape,
                len: data.len(),
            });
        }
        Ok(Self::from_parts(data.to_vec(), shape))
    }

    /// A rank-0 tensor.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let s = Tensor::scalar(2.5f32);
    /// assert_eq!(s.rank(), 0);
    /// assert_eq!(s.to_scalar().unwrap(), 2.5);
    /// ```
    pub fn scalar(value: T) -> Self {
        Self::from_parts(vec![value], Shape::scalar())
    }

    /// A 1-D tensor holding `data`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f32, 2.0]).shape(), &[2]);
    /// ```
    pub fn vector(data: Vec<T>) -> Self {
        let n = data.len();
        Self::from_parts(data, Shape::from([n]))
    }

    /// A tensor filled with `value`. The shape is validated
    /// ([`Shape::checked_len`]) and the buffer reserved fallibly, so a shape
    /// too large for memory is an error, not an abort.
    ///
    /// ```
    /// use rime_tensor::{Error, Tensor};
    /// assert_eq!(Tensor::full([2], 7.0f32)?.to_vec(), vec![7.0, 7.0]);
    /// assert!(matches!(Tensor::full([usize::MAX, 2], 0.0f32), Err(Error::ShapeOverflow { op: "full", .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn full(shape: impl Into<Shape>, value: T) -> Result<Self> {
        Self::filled("full", shape.into(), value)
    }

    /// A tensor of zeros (see [`Tensor::full`] for the errors).
    ///
    /// ```
    /// use rime_tensor::{Error, Tensor};
    /// assert_eq!(Tensor::<f32>::zeros([3])?.to_vec(), vec![0.0; 3]);
    /// // 2^42 floats: more than any allocator gives
    /// assert!(matches!(Tensor::<f32>::zeros([1 << 42]), Err(Error::Alloc { op: "zeros", .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn zeros(shape: impl Into<Shape>) -> Result<Self> {
        Self::filled("zeros", shape.into(), T::zero())
    }

    /// A tensor of ones (see [`Tensor::full`] for the errors).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::<f64>::ones([2, 2])?.to_vec(), vec![1.0; 4]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn ones(shape: impl Into<Shape>) -> Result<Self> {
        Self::filled("ones", shape.into(), T::one())
    }

    fn filled(op: &'static str, shape: Shape, value: T) -> Result<Self> {
        let n = shape.checked_len::<T>(op)?;
        Ok(Self::from_parts(kernels::try_filled(op, n, value)?, shape))
    }

    /// Zeros with the shape of `other` (its buffer exists, so this size
    /// does too).
    pub fn zeros_like(other: &Tensor<T>) -> Self {
        Self::from_parts(
            crate::memory::filled(other.len(), T::zero()),
            other.shape().clone(),
        )
    }

    /// Ones with the shape of `other`.
    pub fn ones_like(other: &Tensor<T>) -> Self {
        Self::from_parts(
            crate::memory::filled(other.len(), T::one()),
            other.shape().clone(),
        )
    }

    /// The `n×n` identity matrix (see [`Tensor::full`] for the errors).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::<f32>::eye(2)?.to_vec(), vec![1.0, 0.0, 0.0, 1.0]);
    /// assert!(Tensor::<f32>::eye(1 << 33).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn eye(n: usize) -> Result<Self> {
        let shape = Shape::from([n, n]);
        let len = shape.checked_len::<T>("eye")?;
        let mut v = kernels::try_filled("eye", len, T::zero())?;
        for i in 0..n {
            v[i * n + i] = T::one();
        }
        Ok(Self::from_parts(v, shape))
    }

    /// Identity of this value (see [`TensorId`]).
    #[inline]
    pub fn id(&self) -> TensorId {
        self.inner.id
    }

    /// The same values under a new identity: a gradient tape does not see
    /// through it (this is `stop_gradient`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::<f32>::ones([2]).unwrap();
    /// assert_eq!(a.detach().to_vec(), a.to_vec());
    /// ```
    pub fn detach(&self) -> Self {
        self.share_with_shape(self.shape().clone())
    }

    /// The shape.
    #[inline]
    pub fn shape(&self) -> &Shape {
        &self.inner.shape
    }

    /// The dimensions as a slice.
    #[inline]
    pub fn dims(&self) -> &[usize] {
        &self.inner.shape
    }

    /// Number of axes.
    #[inline]
    pub fn rank(&self) -> usize {
        self.inner.shape.rank()
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the tensor has no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in row-major order.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        match &self.inner.data {
            Data::Owned(v) => v,
            Data::View(owner) => match &owner.inner.data {
                Data::Owned(v) => v,
                Data::View(_) => unreachable!("views point at owners"),
            },
        }
    }

    /// The elements in row-major order, copied.
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }

    /// Mutable access to the elements, copying the buffer first if another
    /// handle shares it (copy-on-write). The tensor gets a new identity,
    /// because its value changes.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::<f32>::zeros([2]).unwrap();
    /// let mut b = a.clone();
    /// b.make_mut()[0] = 1.0;
    /// assert_eq!(a.to_vec(), vec![0.0, 0.0]);
    /// assert_eq!(b.to_vec(), vec![1.0, 0.0]);
    /// ```
    pub fn make_mut(&mut self) -> &mut [T] {
        let owns_alone = matches!(
            Arc::get_mut(&mut self.inner),
            Some(Inner {
                data: Data::Owned(_),
                ..
            })
        );
        if !owns_alone {
            *self = Self::from_parts(self.to_vec(), self.shape().clone());
        }
        let inner = Arc::get_mut(&mut self.inner).expect("unique after the copy above");
        inner.id = TensorId::fresh();
        match &mut inner.data {
            Data::Owned(v) => v,
            Data::View(_) => unreachable!("replaced by an owned copy above"),
        }
    }

    /// Takes the buffer out (without copying when this is the only handle).
    pub fn into_vec(self) -> Vec<T> {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => match &mut inner.data {
                Data::Owned(v) => std::mem::take(v),
                Data::View(owner) => owner.to_vec(),
            },
            Err(shared) => Tensor { inner: shared }.to_vec(),
        }
    }

    /// The single value of a one-element tensor (any rank).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::from_vec(vec![3.0f32], [1, 1])?.to_scalar()?, 3.0);
    /// assert!(Tensor::<f32>::zeros([2])?.to_scalar().is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn to_scalar(&self) -> Result<T> {
        if self.len() != 1 {
            return Err(Error::InvalidArgument {
                op: "to_scalar",
                msg: format!("needs exactly one element, got shape {}", self.shape()),
            });
        }
        Ok(self.as_slice()[0])
    }

    /// The element at a multi-index.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// assert_eq!(t.get(&[1, 0])?, 3.0);
    /// assert!(t.get(&[2, 0]).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn get(&self, index: &[usize]) -> Result<T> {
        if index.len() != self.rank() {
            return Err(Error::InvalidArgument {
                op: "get",
                msg: format!(
                    "index {index:?} has {} entries for shape {}",
                    index.len(),
                    self.shape()
                ),
            });
        }
        let mut off = 0;
        for (axis, (&i, &d)) in index.iter().zip(self.shape().iter()).enumerate() {
            if i >= d {
                return Err(Error::IndexOutOfBounds {
                    op: "get",
                    index: i64::try_from(i).unwrap_or(i64::MAX),
                    axis,
                    size: d,
                });
            }
            off = off * d + i;
        }
        Ok(self.as_slice()[off])
    }
}

impl<T: Element> Tensor<T> {
    /// `start, start + step, ...` up to but excluding `end`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::arange(0.0f32, 1.0, 0.25)?.to_vec(), vec![0.0, 0.25, 0.5, 0.75]);
    /// assert!(Tensor::arange(0.0f32, 1.0, 0.0).is_err());
    /// assert!(Tensor::arange(0.0f64, 1e300, 1e-300).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn arange(start: T, end: T, step: T) -> Result<Self> {
        if step == T::zero() || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!(
                    "needs finite start, end and a non-zero step, got {start}, {end}, {step}"
                ),
            });
        }
        let count = ((end - start) / step).ceil();
        let n = if count <= T::zero() {
            0
        } else {
            match count.to_usize() {
                Some(n) if n < isize::MAX as usize / std::mem::size_of::<T>() => n,
                _ => {
                    return Err(Error::InvalidArgument {
                        op: "arange",
                        msg: format!("{start}..{end} by {step} has too many elements ({count})"),
                    });
                }
            }
        };
        let mut v = kernels::try_buffer("arange", n)?;
        v.extend((0..n).map(|i| start + step * T::of(i as f64)));
        Ok(Self::vector(v))
    }

    /// `n` evenly spaced values from `start` to `end` inclusive (the
    /// buffer reserved fallibly, as in [`Tensor::full`]).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::linspace(0.0f64, 1.0, 3)?.to_vec(), vec![0.0, 0.5, 1.0]);
    /// assert!(Tensor::<f32>::linspace(0.0, 1.0, usize::MAX).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn linspace(start: T, end: T, n: usize) -> Result<Self> {
        let len = Shape::from([n]).checked_len::<T>("linspace")?;
        let mut v = kernels::try_buffer("linspace", len)?;
        match n {
            0 => {}
            1 => v.push(start),
            _ => {
                let step = (end - start) / T::of((n - 1) as f64);
                v.extend((0..n).map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + step * T::of(i as f64)
                    }
                }));
            }
        }
        Ok(Self::vector(v))
    }

    /// Whether every element is finite.
    pub fn all_finite(&self) -> bool {
        self.as_slice().iter().all(|v| v.is_finite())
    }
}

impl<T: Element> approx::AbsDiffEq for Tensor<T> {
    type Epsilon = T;
    fn default_epsilon() -> T {
        T::epsilon()
    }
    fn abs_diff_eq(&self, other: &Self, epsilon: T) -> bool {
        self.shape() == other.shape()
            && self
                .as_slice()
                .iter()
                .zip(other.as_slice())
                .all(|(a, b)| a == b || (*a - *b).abs() <= epsilon)
    }
}

impl<T: Element> approx::RelativeEq for Tensor<T> {
    fn default_max_relative() -> T {
        T::epsilon()
    }
    fn relative_eq(&self, other: &Self, epsilon: T, max_relative: T) -> bool {
        self.shape() == other.shape()
            && self.as_slice().iter().zip(other.as_slice()).all(|(a, b)| {
                if a == b {
                    return true;
                }
                let diff = (*a - *b).abs();
                diff <= epsilon || diff <= a.abs().max(b.abs()) * max_relative
            })
    }
}

impl<T: Element> approx::UlpsEq for Tensor<T>
where
    T: approx::UlpsEq<Epsilon = T>,
{
    fn default_max_ulps() -> u32 {
        4
    }
    fn ulps_eq(&self, other: &Self, epsilon: T, max_ulps: u32) -> bool {
        self.shape() == other.shape()
            && self
                .as_slice()
                .iter()
                .zip(other.as_slice())
                .all(|(a, b)| a.ulps_eq(b, epsilon, max_ulps))
    }
}

/// Tensors compare by shape and values (not identity).
impl<T: Scalar> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape() == other.shape() && self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// Ids taken a block per thread stay unique across threads, and grow
    /// in creation order within a thread (across block boundaries).
    #[test]
    fn ids_unique_across_threads_and_ordered_within_one() {
        let per_thread = 3 * ID_BLOCK as usize + 5;
        let runs: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..per_thread)
                            .map(|_| TensorId::fresh().as_u64())
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for run in &runs {
            assert!(run.windows(2).all(|w| w[0] < w[1]), "ordered in a thread");
        }
        let mut all: Vec<u64> = runs.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4 * per_thread, "unique across threads");
    }

    #[test]
    fn constructors() {
        let t = Tensor::<f64>::eye(3).unwrap();
        assert_eq!(t.get(&[2, 2]).unwrap(), 1.0);
        assert_eq!(t.get(&[2, 1]).unwrap(), 0.0);
        assert_eq!(
            Tensor::arange(1.0f32, 2.0, 0.5).unwrap().to_vec(),
            vec![1.0, 1.5]
        );
        assert_eq!(
            Tensor::arange(2.0f32, 1.0, -0.5).unwrap().to_vec(),
            vec![2.0, 1.5]
        );
        assert!(Tensor::arange(1.0f32, 2.0, -1.0).unwrap().is_empty());
        assert_eq!(Tensor::<f32>::linspace(0.0, 1.0, 0).unwrap().len(), 0);
        assert_eq!(
            Tensor::from_vec(Vec::<f32>::new(), [0, 3]).unwrap().shape(),
            &[0, 3]
        );
        assert!(matches!(
            Tensor::from_vec(vec![1.0f32; 5], [2, 3]),
            Err(Error::DataLength {
                op: "from_vec",
                len: 5,
                ..
            })
        ));
        assert!(matches!(
            Tensor::<f32>::zeros([2]).unwrap().get(&[0, 0]),
            Err(Error::InvalidArgument { op: "get", .. })
        ));
    }

    #[test]
    fn approx_requires_same_shape() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, 2.0 + 1e-7], [2]).unwrap();
        assert_relative_eq!(a, b, epsilon = 1e-6);
        let c = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]).unwrap();
        assert!(!approx::relative_eq!(a, c, epsilon = 1.0));
    }

    #[test]
    fn make_mut_is_copy_on_write() {
        let a = Tensor::<f32>::zeros([2]).unwrap();
        let mut b = a.clone();
        let old = b.id();
        b.make_mut()[1] = 2.0;
        assert_ne!(b.id(), old);
        assert_eq!(a.to_vec(), vec![0.0, 0.0]);
        assert_eq!(b.into_vec(), vec![0.0, 2.0]);
        // a view copies out of the shared buffer
        let c = a.reshape([2, 1]).unwrap().reshape([1, 2]).unwrap();
        let mut d = c.clone();
        d.make_mut()[0] = 5.0;
        assert_eq!(a.to_vec(), vec![0.0, 0.0]);
        assert_eq!(d.to_vec(), vec![5.0, 0.0]);
        assert_eq!(c.into_vec(), vec![0.0, 0.0]);
    }
}
