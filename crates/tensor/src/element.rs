//! The element types a [`Tensor`] can hold: the floats `f32` (the default)
//! and `f64`, which every op takes, and the integers `i32` and `i64` (ids,
//! labels, `argmax` results), which the layout and indexing ops take.
//!
//! [`Scalar`] is what storage needs (a plain `Pod` value with a dtype tag);
//! [`Element`] adds float math; [`IntElement`] marks the integer types that
//! index ops accept as index tensors.

use crate::memory::BufferPool;
use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::iter::Sum;

use num_traits::{
    Float, FromPrimitive, NumAssign, NumCast, One, PrimInt, Signed, ToPrimitive, Zero,
};

use crate::Tensor;
use crate::record::DynRef;

/// The runtime tag of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer (the type of `argmax` results and of the
    /// labels rime-layers' datasets read from files).
    I64,
}

impl DType {
    /// Whether the type is a float (differentiable, takes every op).
    ///
    /// ```
    /// use rime_tensor::DType;
    /// assert!(DType::F32.is_float() && !DType::I64.is_float());
    /// ```
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
        })
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// Any element type a [`Tensor`] can store: `f32`, `f64`, `i32`, `i64`.
///
/// Construction, layout and indexing ops (`from_vec`, `reshape`,
/// `permute`, `concat`, `slice`, `index_select`, `gather`, `Display`, ...)
/// take any `Scalar`; arithmetic needs the float trait [`Element`].
/// [`Tensor::to_dtype`] converts between any two.
///
/// ```
/// use rime_tensor::{DType, Scalar, Tensor};
/// assert_eq!(<i64 as Scalar>::DTYPE, DType::I64);
/// let ids = Tensor::from_vec(vec![3i64, 1, 4, 1, 5, 9], [2, 3])?;
/// assert_eq!(ids.t()?.to_vec(), vec![3, 1, 1, 5, 4, 9]);
/// assert_eq!(ids.dtype(), DType::I64);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub trait Scalar:
    Copy
    + PartialEq
    + PartialOrd
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + Zero
    + One
    + NumCast
    + ToPrimitive
    + bytemuck::Pod
    + 'static
    + sealed::Sealed
{
    /// The runtime tag of this type.
    const DTYPE: DType;

    /// What a gradient tape sees of a tensor of this type: floats only
    /// (integer tensors are never differentiable, so never recorded).
    #[doc(hidden)]
    fn recorded(t: &Tensor<Self>) -> Option<DynRef<'_>>;

    /// `Display` for a tensor of this type (floats in NumPy's float
    /// layout, integers right-aligned).
    #[doc(hidden)]
    fn fmt_tensor(t: &Tensor<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// This type's cache of freed large buffers ([`crate::memory`]).
    #[doc(hidden)]
    fn buffer_pool() -> &'static BufferPool<Self>;
}

/// An integer element type: `i32` or `i64`. Tensors of these are accepted
/// as index tensors by [`Tensor::index_select`], [`Tensor::gather`] and
/// [`Tensor::one_hot`]; they take the layout ops but no arithmetic and are
/// never differentiable (a gradient tape cannot watch them).
///
/// ```
/// use rime_tensor::Tensor;
/// let table = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 1.5], [2, 2])?;
/// let ids = Tensor::from_vec(vec![1i32, 0, 1], [3])?;
/// assert_eq!(table.gather(0, &ids)?.to_vec(), vec![1.0, 1.5, 0.0, 0.5, 1.0, 1.5]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub trait IntElement: Scalar + Eq + Ord + Hash + PrimInt + Signed {}

impl IntElement for i32 {}
impl IntElement for i64 {}

macro_rules! int_scalar {
    ($t:ty, $tag:ident) => {
        impl Scalar for $t {
            const DTYPE: DType = DType::$tag;
            #[inline]
            fn recorded(_: &Tensor<Self>) -> Option<DynRef<'_>> {
                None
            }
            fn fmt_tensor(t: &Tensor<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::display::fmt_int(t, f)
            }
            fn buffer_pool() -> &'static BufferPool<Self> {
                static POOL: BufferPool<$t> = BufferPool::new();
                &POOL
            }
        }
    };
}
int_scalar!(i32, I32);
int_scalar!(i64, I64);

macro_rules! float_scalar {
    ($t:ty, $tag:ident) => {
        impl Scalar for $t {
            const DTYPE: DType = DType::$tag;
            #[inline]
            fn recorded(t: &Tensor<Self>) -> Option<DynRef<'_>> {
                Some(DynRef::$tag(t))
            }
            fn fmt_tensor(t: &Tensor<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::display::fmt_float(t, f)
            }
            fn buffer_pool() -> &'static BufferPool<Self> {
                static POOL: BufferPool<$t> = BufferPool::new();
                &POOL
            }
        }
    };
}
float_scalar!(f32, F32);
float_scalar!(f64, F64);

/// A floating-point element type: implemented for `f32` and `f64` only.
///
/// Besides `num_traits::Float` it carries what the kernels need per type
/// (the matrixmultiply entry point, `erf`) and the conversion to the
/// dtype-erased [`DynTensor`] through which a gradient tape sees tensors of
/// either type.
///
/// ```
/// use rime_tensor::{DType, Element, Scalar};
/// assert_eq!(<f64 as Scalar>::DTYPE, DType::F64);
/// assert_eq!(f32::of(0.5), 0.5f32);
/// ```
pub trait Element: Scalar + Float + FromPrimitive + NumAssign + Sum {
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
