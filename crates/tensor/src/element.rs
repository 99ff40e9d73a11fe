//! The element types a [`Tensor`] can hold: `f32` (the default) and `f64`.

use std::fmt::{Debug, Display};
use std::iter::Sum;

use num_traits::{Float, FromPrimitive, NumAssign, ToPrimitive};

use crate::Tensor;

/// The runtime tag of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only.
///
/// Besides `num_traits::Float` it carries what the kernels need per type
/// (the matrixmultiply entry point, `erf`) and the conversion to the
/// dtype-erased [`DynTensor`] through which a gradient tape sees tensors of
/// either type.
///
/// ```
/// use rime_tensor::{DType, Element};
/// assert_eq!(<f64 as Element>::DTYPE, DType::F64);
/// assert_eq!(f32::of(0.5), 0.5f32);
/// ```
pub trait Element:
    Float
    + FromPrimitive
    + ToPrimitive
    + NumAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + bytemuck::Pod
    + 'static
    + sealed::Sealed
{
    /// The runtime tag of this type.
    const DTYPE: DType;

    /// Converts an `f64` constant (exactly for `f64`, rounded for `f32`).
    fn of(v: f64) -> Self;

    /// The Gauss error function.
    fn erf(self) -> Self;

    /// `e^x` in a form whose loops vectorize: for `f32` a polynomial within
    /// 2 ulp of the exact value ([`Tensor::exp`] uses it), for `f64` `exp`.
    #[doc(hidden)]
    fn exp_v(self) -> Self;

    /// `tanh(x)` in a form whose loops vectorize (as [`Element::exp_v`]).
    #[doc(hidden)]
    fn tanh_v(self) -> Self;

    /// Wraps a tensor of this type into a [`DynTensor`].
    fn into_dyn(t: Tensor<Self>) -> DynTensor;

    /// Borrows a tensor of this type out of a [`DynTensor`], if it holds one.
    fn from_dyn(t: &DynTensor) -> Option<&Tensor<Self>>;

    /// A dtype-tagged reference, as the recording hook sees tensors.
    fn as_dyn_ref(t: &Tensor<Self>) -> crate::record::DynRef<'_>;

    /// `C = alpha * A B + beta * C` over strided operands (matrixmultiply).
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m×k`, `k×n` and `m×n`
    /// matrices; `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        crate::kernels::math::exp_f32(self)
    }
    #[inline(always)]
    fn tanh_v(self) -> Self {
        crate::kernels::math::tanh_f32(self)
    }
    fn into_dyn(t: Tensor<Self>) -> DynTensor {
        DynTensor::F32(t)
    }
    fn from_dyn(t: &DynTensor) -> Option<&Tensor<Self>> {
        match t {
            DynTensor::F32(t) => Some(t),
            DynTensor::F64(_) => None,
        }
    }
    fn as_dyn_ref(t: &Tensor<Self>) -> crate::record::DynRef<'_> {
        crate::record::DynRef::F32(t)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: the caller upholds this function's contract (gemm_raw
        // checks the A and B extents and its caller the C extent); the own
        // kernels take the same contract.
        unsafe {
            if crate::kernels::gemm::own_gemm(
                m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc,
            ) {
                return;
            }
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    #[inline(always)]
    fn exp_v(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn tanh_v(self) -> Self {
        self.tanh()
    }
    fn into_dyn(t: Tensor<Self>) -> DynTensor {
        DynTensor::F64(t)
    }
    fn from_dyn(t: &DynTensor) -> Option<&Tensor<Self>> {
        match t {
            DynTensor::F64(t) => Some(t),
            DynTensor::F32(_) => None,
        }
    }
    fn as_dyn_ref(t: &Tensor<Self>) -> crate::record::DynRef<'_> {
        crate::record::DynRef::F64(t)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: the caller upholds this function's contract (gemm_raw
        // checks the A and B extents and its caller the C extent); the own
        // kernels take the same contract.
        unsafe {
            if crate::kernels::gemm::own_gemm(
                m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc,
            ) {
                return;
            }
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

/// A tensor of either element type, for code that handles both at runtime
/// (a gradient tape records `f32` and `f64` ops, and `cast` between them).
#[derive(Clone, Debug)]
pub enum DynTensor {
    /// An `f32` tensor.
    F32(Tensor<f32>),
    /// An `f64` tensor.
    F64(Tensor<f64>),
}

impl DynTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            DynTensor::F32(_) => DType::F32,
            DynTensor::F64(_) => DType::F64,
        }
    }

    /// The identity of the wrapped tensor.
    pub fn id(&self) -> crate::TensorId {
        match self {
            DynTensor::F32(t) => t.id(),
            DynTensor::F64(t) => t.id(),
        }
    }

    /// The shape of the wrapped tensor.
    pub fn shape(&self) -> &crate::Shape {
        match self {
            DynTensor::F32(t) => t.shape(),
            DynTensor::F64(t) => t.shape(),
        }
    }

    /// Borrows the tensor as element type `T`, if it is one.
    pub fn get<T: Element>(&self) -> Option<&Tensor<T>> {
        T::from_dyn(self)
    }
}

impl<T: Element> From<Tensor<T>> for DynTensor {
    fn from(t: Tensor<T>) -> Self {
        T::into_dyn(t)
    }
}
