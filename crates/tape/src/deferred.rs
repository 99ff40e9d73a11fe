//! Weight gradients handed to an optimizer as a product still to compute,
//! so that it can compute and apply them block by block while each block
//! is in cache, with no buffer of the weight's size
//! ([`GradientTape::gradient_deferred`](crate::GradientTape::gradient_deferred)).
//!
//! The backward engine defers a source's gradient when the source has
//! exactly one contribution and it is the weight operand of a 2-D matrix
//! product (a Dense kernel): the gradient is then `op(l)·op(r)` for two
//! tensors the backward pass has anyway (the layer's input and the
//! gradient of its output). Every other source (a weight used twice, a
//! bias, a convolution kernel) gets its computed gradient, as from
//! [`gradient`](crate::GradientTape::gradient).

use std::ops::Range;
use std::sync::Arc;

use rime_tensor::{Element, Shape, Tensor};

use crate::Result;
use crate::mask::ResolvedMask;

/// A source's gradient from
/// [`gradient_deferred`](crate::GradientTape::gradient_deferred): computed,
/// or a product to compute later by row blocks.
///
/// ```
/// use rime_tape::{DeferredGradient, GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f32>::ones([3, 2])?);
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
/// let tape = GradientTape::new();
/// let loss = x.matmul(&w.value())?.sum_all();
/// let g = tape.gradient_deferred(&loss, &[&w])?.pop().flatten().unwrap();
/// let DeferredGradient::Product(p) = &g else { panic!("a single matmul use is deferred") };
/// assert_eq!((p.rows(), p.cols()), (3, 2));
/// let mut row1 = [0.0f32; 2];
/// p.rows_into(1..2, &mut row1); // xᵀ·ones, row 1
/// assert_eq!(row1, [7.0, 7.0]);
/// assert_eq!(g.into_tensor()?.to_vec(), vec![5.0, 5.0, 7.0, 7.0, 9.0, 9.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub enum DeferredGradient<T: Element> {
    /// The gradient, computed (zero at the source mask's frozen elements).
    Dense(Tensor<T>),
    /// The single contribution `op(l)·op(r)`, not computed yet.
    Product(GradientProduct<T>),
}

impl<T: Element> DeferredGradient<T> {
    /// The gradient's shape (the source's).
    pub fn shape(&self) -> Shape {
        match self {
            DeferredGradient::Dense(t) => t.shape().clone(),
            DeferredGradient::Product(p) => Shape::from(&[p.rows, p.cols][..]),
        }
    }

    /// The gradient as a tensor, equal bit for bit to what
    /// [`gradient`](crate::GradientTape::gradient) returns (zero at the
    /// frozen elements of the source's mask).
    pub fn into_tensor(self) -> Result<Tensor<T>> {
        match self {
            DeferredGradient::Dense(t) => Ok(t),
            DeferredGradient::Product(p) => {
                let mut t = Tensor::zeros([p.rows, p.cols])?;
                p.rows_into(0..p.rows, t.make_mut());
                crate::tape::apply_mask(t, false, p.mask.as_deref())
            }
        }
    }
}

/// A weight gradient `op(l)·op(r)` (2-D), computed on request by row
/// blocks; each element has the same bits as in the whole product.
#[derive(Clone)]
pub struct GradientProduct<T: Element> {
    l: Tensor<T>,
    r: Tensor<T>,
    transpose_l: bool,
    transpose_r: bool,
    rows: usize,
    inner: usize,
    cols: usize,
    mask: Option<Arc<ResolvedMask>>,
}

impl<T: Element> GradientProduct<T> {
    /// The product of 2-D `l` and `r` (transposed as flagged) for a source
    /// of shape `shape` with `mask`; `None` unless the shapes agree (the
    /// engine then computes the gradient as usual).
    pub(crate) fn new(
        (l, r, transpose_l, transpose_r): (&Tensor<T>, &Tensor<T>, bool, bool),
        shape: &Shape,
        mask: Option<Arc<ResolvedMask>>,
    ) -> Option<Self> {
        let (ld, rd) = (l.dims(), r.dims());
        if ld.len() != 2 || rd.len() != 2 || shape.rank() != 2 {
            return None;
        }
        let (rows, inner) = if transpose_l {
            (ld[1], ld[0])
        } else {
            (ld[0], ld[1])
        };
        let (inner_r, cols) = if transpose_r {
            (rd[1], rd[0])
        } else {
            (rd[0], rd[1])
        };
        (inner == inner_r && [rows, cols] == shape[..]).then(|| GradientProduct {
            l: l.clone(),
            r: r.clone(),
            transpose_l,
            transpose_r,
            rows,
            inner,
            cols,
            mask,
        })
    }

    /// Rows of the gradient.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the gradient.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The product's inner dimension (the batch size, for a Dense kernel):
    /// the work per element, for choosing a block size.
    pub fn inner(&self) -> usize {
        self.inner
    }

    /// The mask of the source (its frozen elements are not zeroed by
    /// [`rows_into`](GradientProduct::rows_into); a consumer skips them).
    pub fn mask(&self) -> Option<&ResolvedMask> {
        self.mask.as_deref()
    }

    /// The two factors of an outer product: for inner dimension 1 (a batch
    /// of one), the column `a` (`rows` long) and the row `b` (`cols` long)
    /// such that gradient element `(r, c)` is `a[r] * b[c]`, one rounding
    /// in that operand order: the bits [`rows_into`](GradientProduct::rows_into)
    /// writes, so a consumer can compute each element where it uses it,
    /// with no buffer.
    ///
    /// With inner dimension 1 both operands are contiguous whatever their
    /// transposes (a `1×n` or `n×1` matrix has stride 1 along its length).
    /// `None` for inner dimension ≠ 1, and for a gradient with one row or
    /// one column (computed as a matrix-vector product, whose sum
    /// `0 + a·b` differs from `a·b` in the sign of a zero).
    ///
    /// ```
    /// use rime_tape::{DeferredGradient, GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::ones([3, 2])?);
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [1, 3])?; // a batch of one
    /// let tape = GradientTape::new();
    /// let loss = x.matmul(&w.value())?.square().sum_all(); // δ = 2·x·w = [12, 12]
    /// let g = tape.gradient_deferred(&loss, &[&w])?.pop().flatten().unwrap();
    /// let DeferredGradient::Product(p) = &g else { panic!("deferred") };
    /// let (a, b) = p.outer_factors().expect("inner dimension 1");
    /// assert_eq!((a, b), (&[1.0f32, 2.0, 3.0][..], &[12.0f32, 12.0][..]));
    /// let mut all = [0.0f32; 6];
    /// p.rows_into(0..3, &mut all);
    /// assert_eq!(all, [12.0, 12.0, 24.0, 24.0, 36.0, 36.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outer_factors(&self) -> Option<(&[T], &[T])> {
        if self.inner != 1 || self.rows == 1 || self.cols == 1 {
            return None;
        }
        // (the shapes were checked when the product was deferred: `l` holds
        // rows × 1 elements and `r` holds 1 × cols)
        Some((
            &self.l.as_slice()[..self.rows],
            &self.r.as_slice()[..self.cols],
        ))
    }

    /// Writes rows `rows` of the gradient to `out` (`rows.len() × cols`,
    /// row-major), without masking.
    ///
    /// # Panics
    /// If `rows` is not inside `0..self.rows()` or `out` has another length
    /// (like slice indexing: the caller sizes both).
    pub fn rows_into(&self, rows: Range<usize>, out: &mut [T]) {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows && out.len() == rows.len() * self.cols,
            "GradientProduct::rows_into: rows {rows:?} of {}x{} into {} elements",
            self.rows,
            self.cols,
            out.len()
        );
        self.l
            .matmul_t_rows_into(&self.r, self.transpose_l, self.transpose_r, rows, out)
            .expect("shapes checked when the product was deferred, the range just above");
    }
}
