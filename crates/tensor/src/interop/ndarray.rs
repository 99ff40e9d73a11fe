//! `Tensor` <-> `ndarray::ArrayD` (feature `ndarray`). Both are row-major
//! n-d arrays, so a conversion is one copy of the elements in logical
//! order (any ndarray layout or view is accepted).

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::{Scalar, Tensor};

impl<T: Scalar> Tensor<T> {
    /// A copy as an `ndarray::ArrayD` of the same shape (feature `ndarray`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// let a = t.to_ndarray();
    /// assert_eq!(a.shape(), &[2, 3]);
    /// assert_eq!(a[[1, 0]], 4.0);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn to_ndarray(&self) -> ArrayD<T> {
        match ArrayD::from_shape_vec(IxDyn(self.dims()), self.to_vec()) {
            Ok(a) => a,
            Err(_) => unreachable!("a tensor's length is the product of its shape"),
        }
    }

    /// A tensor copied from any ndarray array or view, in logical
    /// (row-major) order whatever its memory layout (feature `ndarray`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = ndarray::arr2(&[[1.0f64, 2.0], [3.0, 4.0]]);
    /// let t = Tensor::from_ndarray(&a.t()); // a transposed view
    /// assert_eq!(t.shape(), &[2, 2]);
    /// assert_eq!(t.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    pub fn from_ndarray<S, D>(array: &ArrayBase<S, D>) -> Tensor<T>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        let data: Vec<T> = array.iter().copied().collect();
        match Tensor::from_vec(data, array.shape()) {
            Ok(t) => t,
            Err(_) => unreachable!("an ndarray's length is the product of its shape"),
        }
    }
}

impl<T: Scalar> From<&Tensor<T>> for ArrayD<T> {
    fn from(t: &Tensor<T>) -> Self {
        t.to_ndarray()
    }
}

impl<T: Scalar> From<Tensor<T>> for ArrayD<T> {
    fn from(t: Tensor<T>) -> Self {
        t.to_ndarray()
    }
}

impl<T: Scalar, D: Dimension> From<ndarray::Array<T, D>> for Tensor<T> {
    fn from(a: ndarray::Array<T, D>) -> Self {
        Tensor::from_ndarray(&a)
    }
}
