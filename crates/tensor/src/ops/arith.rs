//! Elementwise binary arithmetic with NumPy broadcasting, comparisons and
//! `select` (NumPy's `where`). Gradient rules: rime-tape `rules/arith.rs`.

use crate::kernels::{ARITH, LIBM, broadcast};
use crate::record::{Op, record};
use crate::{Element, Result, Tensor, broadcast_shapes};

/// The recorded binary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `a ^ b`
    Pow,
    /// `max(a, b)`; at ties the gradient goes to `a` (as TensorFlow).
    Maximum,
    /// `min(a, b)`; at ties the gradient goes to `a` (as TensorFlow).
    Minimum,
    /// `a · (b > 0)`: ReLU's gradient `dy` passed where the input `b` is
    /// positive, in one pass (TensorFlow's `ReluGrad`).
    ReluGrad,
}

impl BinaryOp {
    /// The op's name, as errors print it.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::ReluGrad => "relu_grad",
        }
    }
}

/// The elementwise comparisons (`eq`, `lt`, ...): not differentiable, so
/// not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    fn name(self) -> &'static str {
        match self {
            Comparison::Eq => "eq",
            Comparison::Ne => "ne",
            Comparison::Lt => "lt",
            Comparison::Le => "le",
            Comparison::Gt => "gt",
            Comparison::Ge => "ge",
        }
    }
}

#[inline(always)]
fn maximum<T: Element>(a: T, b: T) -> T {
    if a >= b || a.is_nan() { a } else { b }
}

#[inline(always)]
fn minimum<T: Element>(a: T, b: T) -> T {
    if a <= b || a.is_nan() { a } else { b }
}

#[inline(always)]
fn flag<T: Element>(b: bool) -> T {
    if b { T::one() } else { T::zero() }
}

impl<T: Element> Tensor<T> {
    fn binary(&self, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>> {
        crate::instances::table::<T>().binary(self, rhs, op)
    }

    pub(crate) fn binary_native(&self, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>> {
        let shape = if self.shape() == rhs.shape() {
            self.shape().clone()
        } else {
            broadcast_shapes(op.name(), self.shape(), rhs.shape())?
        };
        let (a, sa, b, sb) = (self.as_slice(), self.shape(), rhs.as_slice(), rhs.shape());
        let name = op.name();
        // one kernel per op, each with its own inlined closure
        macro_rules! kernel {
            ($cost:expr, $f:expr) => {
                broadcast::binary(
                    name,
                    a,
                    sa,
                    b,
                    sb,
                    &shape,
                    $cost,
                    #[inline(always)]
                    $f,
                )
            };
        }
        let data = match op {
            BinaryOp::Add => kernel!(ARITH, |x, y| x + y),
            BinaryOp::Sub => kernel!(ARITH, |x, y| x - y),
            BinaryOp::Mul => kernel!(ARITH, |x, y| x * y),
            BinaryOp::Div => kernel!(ARITH, |x, y| x / y),
            BinaryOp::Pow => kernel!(LIBM, |x: T, y| x.powf(y)),
            BinaryOp::Maximum => kernel!(ARITH, |x, y| maximum(x, y)),
            BinaryOp::Minimum => kernel!(ARITH, |x, y| minimum(x, y)),
            // times 0 or 1, as `dy * (x > 0)`: an infinite dy at x <= 0
            // gives NaN, as in TensorFlow
            BinaryOp::ReluGrad => kernel!(ARITH, |d: T, x: T| d * flag::<T>(x > T::zero())),
        }?;
        let out = Tensor::from_parts(data, shape);
        record(|| Op::Binary(op), &[self, rhs], &out);
        Ok(out)
    }

    /// With a scalar operand the shapes always broadcast.
    fn binary_scalar(&self, s: T, op: BinaryOp) -> Tensor<T> {
        match self.binary(&Tensor::scalar(s), op) {
            Ok(t) => t,
            Err(_) => unreachable!("a rank-0 operand broadcasts against any shape"),
        }
    }

    /// `self + rhs`, broadcasting.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// let b = Tensor::from_vec(vec![10.0f32, 20.0], [2])?;
    /// assert_eq!(a.add(&b)?.to_vec(), vec![11.0, 22.0, 13.0, 24.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn add(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `self - rhs`, broadcasting.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [2, 1])?;
    /// let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3])?;
    /// assert_eq!(a.sub(&b)?.to_vec(), vec![0.0, -1.0, -2.0, 1.0, 0.0, -1.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn sub(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// `self * rhs` elementwise, broadcasting.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [2])?;
    /// assert_eq!(a.mul(&a)?.to_vec(), vec![1.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn mul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Mul)
    }

    /// `self / rhs` elementwise, broadcasting.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 3.0], [2])?;
    /// assert_eq!(a.div(&Tensor::scalar(2.0))?.to_vec(), vec![0.5, 1.5]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn div(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Div)
    }

    /// `self ^ rhs` elementwise, broadcasting (NaN for a negative base with a
    /// non-integer exponent, as in NumPy).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![2.0f64, 3.0], [2])?;
    /// let e = Tensor::from_vec(vec![3.0f64, 2.0], [2])?;
    /// assert_eq!(a.pow(&e)?.to_vec(), vec![8.0, 9.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn pow(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Pow)
    }

    /// Elementwise maximum, broadcasting. NaN propagates from `self`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 5.0], [2])?;
    /// assert_eq!(a.maximum(&Tensor::scalar(2.0))?.to_vec(), vec![2.0, 5.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn maximum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Maximum)
    }

    /// ReLU's gradient: `self · (x > 0)` in one pass, with `self` the
    /// gradient of `relu(x)` (broadcasting as [`Tensor::add`]).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let dy = Tensor::vector(vec![1.0f32, 2.0, 3.0]);
    /// let x = Tensor::vector(vec![-1.0f32, 0.0, 0.5]);
    /// assert_eq!(dy.relu_grad(&x)?.to_vec(), vec![0.0, 0.0, 3.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn relu_grad(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(x, BinaryOp::ReluGrad)
    }

    /// Elementwise minimum, broadcasting. NaN propagates from `self`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 5.0], [2])?;
    /// assert_eq!(a.minimum(&Tensor::scalar(2.0))?.to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn minimum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Minimum)
    }

    /// `self + s`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::from_vec(vec![1.0f32], [1])?.add_scalar(1.0).to_vec(), vec![2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn add_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Add)
    }

    /// `self - s`.
    pub fn sub_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Sub)
    }

    /// `s - self`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![0.25f32]).rsub_scalar(1.0).to_vec(), vec![0.75]);
    /// ```
    pub fn rsub_scalar(&self, s: T) -> Tensor<T> {
        match Tensor::scalar(s).binary(self, BinaryOp::Sub) {
            Ok(t) => t,
            Err(_) => unreachable!("a rank-0 operand broadcasts against any shape"),
        }
    }

    /// `self * s`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.5f32]).mul_scalar(2.0).to_vec(), vec![3.0]);
    /// ```
    pub fn mul_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Mul)
    }

    /// `self / s`.
    pub fn div_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Div)
    }

    /// `s / self`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![4.0f32, 0.5]).rdiv_scalar(2.0).to_vec(), vec![0.5, 4.0]);
    /// ```
    pub fn rdiv_scalar(&self, s: T) -> Tensor<T> {
        match Tensor::scalar(s).binary(self, BinaryOp::Div) {
            Ok(t) => t,
            Err(_) => unreachable!("a rank-0 operand broadcasts against any shape"),
        }
    }

    /// `self ^ p` for a scalar exponent.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![4.0f64]).powf(0.5).to_vec(), vec![2.0]);
    /// ```
    pub fn powf(&self, p: T) -> Tensor<T> {
        self.binary_scalar(p, BinaryOp::Pow)
    }

    /// `max(self, s)` elementwise.
    pub fn maximum_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Maximum)
    }

    /// `min(self, s)` elementwise.
    pub fn minimum_scalar(&self, s: T) -> Tensor<T> {
        self.binary_scalar(s, BinaryOp::Minimum)
    }

    /// `1` where `cmp` holds elementwise, else `0`, broadcasting.
    fn compare(&self, rhs: &Tensor<T>, cmp: Comparison) -> Result<Tensor<T>> {
        crate::instances::table::<T>().compare(self, rhs, cmp)
    }

    pub(crate) fn compare_native(&self, rhs: &Tensor<T>, cmp: Comparison) -> Result<Tensor<T>> {
        let shape = broadcast_shapes(cmp.name(), self.shape(), rhs.shape())?;
        let (a, sa, b, sb) = (self.as_slice(), self.shape(), rhs.as_slice(), rhs.shape());
        let name = cmp.name();
        // one kernel per comparison, each with its own inlined closure
        macro_rules! kernel {
            ($f:expr) => {
                broadcast::binary(
                    name,
                    a,
                    sa,
                    b,
                    sb,
                    &shape,
                    ARITH,
                    #[inline(always)]
                    $f,
                )
            };
        }
        let data = match cmp {
            Comparison::Eq => kernel!(|x, y| flag(x == y)),
            Comparison::Ne => kernel!(|x, y| flag(x != y)),
            Comparison::Lt => kernel!(|x, y| flag(x < y)),
            Comparison::Le => kernel!(|x, y| flag(x <= y)),
            Comparison::Gt => kernel!(|x, y| flag(x > y)),
            Comparison::Ge => kernel!(|x, y| flag(x >= y)),
        }?;
        // comparisons are not differentiable and are not recorded
        Ok(Tensor::from_parts(data, shape))
    }

    /// `1` where `self cmp s` holds, else `0`.
    fn compare_scalar(&self, s: T, cmp: Comparison) -> Tensor<T> {
        crate::instances::table::<T>().compare_scalar(self, s, cmp)
    }

    pub(crate) fn compare_scalar_native(&self, s: T, cmp: Comparison) -> Tensor<T> {
        let x = self.as_slice();
        macro_rules! kernel {
            ($f:expr) => {
                crate::kernels::map(
                    x,
                    ARITH,
                    #[inline(always)]
                    $f,
                )
            };
        }
        let data = match cmp {
            Comparison::Eq => kernel!(|v| flag(v == s)),
            Comparison::Ne => kernel!(|v| flag(v != s)),
            Comparison::Lt => kernel!(|v| flag(v < s)),
            Comparison::Le => kernel!(|v| flag(v <= s)),
            Comparison::Gt => kernel!(|v| flag(v > s)),
            Comparison::Ge => kernel!(|v| flag(v >= s)),
        };
        Tensor::from_parts(data, self.shape().clone())
    }

    /// `1` where `self == rhs`, else `0` (broadcasting; not differentiable).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::vector(vec![1.0f32, 2.0]);
    /// assert_eq!(a.eq(&Tensor::scalar(2.0))?.to_vec(), vec![0.0, 1.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn eq(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Eq)
    }

    /// `1` where `self != rhs`, else `0`.
    pub fn ne(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Ne)
    }

    /// `1` where `self < rhs`, else `0`.
    pub fn lt(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Lt)
    }

    /// `1` where `self <= rhs`, else `0`.
    pub fn le(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Le)
    }

    /// `1` where `self > rhs`, else `0`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::vector(vec![-1.0f32, 3.0]);
    /// assert_eq!(a.gt(&Tensor::scalar(0.0))?.to_vec(), vec![0.0, 1.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn gt(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Gt)
    }

    /// `1` where `self >= rhs`, else `0`.
    pub fn ge(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, Comparison::Ge)
    }

    /// `1` where `self > s`, else `0`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![-1.0f32, 3.0]).gt_scalar(0.0).to_vec(), vec![0.0, 1.0]);
    /// ```
    pub fn gt_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Gt)
    }

    /// `1` where `self == s`, else `0`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f32, 2.0]).eq_scalar(2.0).to_vec(), vec![0.0, 1.0]);
    /// ```
    pub fn eq_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Eq)
    }

    /// `1` where `self != s`, else `0` (NaN is unequal to everything).
    pub fn ne_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Ne)
    }

    /// `1` where `self >= s`, else `0`.
    pub fn ge_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Ge)
    }

    /// `1` where `self < s`, else `0`.
    pub fn lt_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Lt)
    }

    /// `1` where `self <= s`, else `0`.
    pub fn le_scalar(&self, s: T) -> Tensor<T> {
        self.compare_scalar(s, Comparison::Le)
    }

    /// `on_true` where `cond` is non-zero, else `on_false`; all three
    /// broadcast together (NumPy's `where`). Gradients flow to `on_true` and
    /// `on_false`, never to `cond`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![-2.0f32, 3.0]);
    /// let y = Tensor::select(&x.gt_scalar(0.0), &x, &Tensor::scalar(0.0))?;
    /// assert_eq!(y.to_vec(), vec![0.0, 3.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    #[doc(alias = "where")]
    pub fn select(
        cond: &Tensor<T>,
        on_true: &Tensor<T>,
        on_false: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().select(cond, on_true, on_false)
    }

    pub(crate) fn select_native(
        cond: &Tensor<T>,
        on_true: &Tensor<T>,
        on_false: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let s = broadcast_shapes("select", cond.shape(), on_true.shape())?;
        let shape = broadcast_shapes("select", &s, on_false.shape())?;
        let data = broadcast::ternary(
            "select",
            [
                (cond.as_slice(), cond.shape()),
                (on_true.as_slice(), on_true.shape()),
                (on_false.as_slice(), on_false.shape()),
            ],
            &shape,
            #[inline(always)]
            |c, a, b| if c != T::zero() { a } else { b },
        )?;
        let out = Tensor::from_parts(data, shape);
        record(|| Op::Select, &[cond, on_true, on_false], &out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn t(v: &[f64], s: &[usize]) -> Tensor<f64> {
        Tensor::from_slice(v, s).unwrap()
    }

    #[test]
    fn broadcasting_edge_cases() {
        // rank 0 with rank 2
        let a = t(&[1., 2., 3., 4.], &[2, 2]);
        assert_eq!(
            a.add(&Tensor::scalar(1.0)).unwrap().to_vec(),
            vec![2., 3., 4., 5.]
        );
        // missing leading axes and size-1 axes on both sides
        let col = t(&[1., 2.], &[2, 1]);
        let row = t(&[10., 20., 30.], &[3]);
        let s = col.mul(&row).unwrap();
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(s.to_vec(), vec![10., 20., 30., 20., 40., 60.]);
        // size-0 axis
        let e = Tensor::<f64>::zeros([0, 3]).unwrap();
        assert_eq!(e.add(&row).unwrap().shape(), &[0, 3]);
        // rank 0 with rank 0
        assert_eq!(
            Tensor::scalar(2.0f32)
                .sub(&Tensor::scalar(3.0))
                .unwrap()
                .to_vec(),
            vec![-1.0]
        );
    }

    #[test]
    fn every_binary_op_f32_and_f64() {
        let a = t(&[1., 4., -2.], &[3]);
        let b = t(&[2., 2., 3.], &[3]);
        assert_eq!(a.div(&b).unwrap().to_vec(), vec![0.5, 2.0, -2.0 / 3.0]);
        assert_eq!(a.pow(&b).unwrap().to_vec(), vec![1., 16., -8.]);
        assert_eq!(a.maximum(&b).unwrap().to_vec(), vec![2., 4., 3.]);
        assert_eq!(a.minimum(&b).unwrap().to_vec(), vec![1., 2., -2.]);
        let af = Tensor::from_vec(vec![1.0f32, 4.0], [2]).unwrap();
        assert_eq!(af.sub_scalar(1.0).to_vec(), vec![0.0, 3.0]);
        assert_eq!(af.div_scalar(2.0).to_vec(), vec![0.5, 2.0]);
        assert_eq!(af.powf(2.0).to_vec(), vec![1.0, 16.0]);
        assert_eq!(af.maximum_scalar(2.0).to_vec(), vec![2.0, 4.0]);
        assert_eq!(af.minimum_scalar(2.0).to_vec(), vec![1.0, 2.0]);
        assert_eq!((&af + 1.0).to_vec(), vec![2.0, 5.0]);
        assert_eq!((&af * &af).to_vec(), vec![1.0, 16.0]);
        assert_eq!((-&af).to_vec(), vec![-1.0, -4.0]);
    }

    #[test]
    fn comparisons_give_zero_one() {
        let a = t(&[1., 2., 3.], &[3]);
        let two = Tensor::scalar(2.0);
        assert_eq!(a.eq(&two).unwrap().to_vec(), vec![0., 1., 0.]);
        assert_eq!(a.ne(&two).unwrap().to_vec(), vec![1., 0., 1.]);
        assert_eq!(a.lt(&two).unwrap().to_vec(), vec![1., 0., 0.]);
        assert_eq!(a.le(&two).unwrap().to_vec(), vec![1., 1., 0.]);
        assert_eq!(a.ge(&two).unwrap().to_vec(), vec![0., 1., 1.]);
        assert_eq!(a.ge_scalar(2.0).to_vec(), vec![0., 1., 1.]);
        assert_eq!(a.lt_scalar(2.0).to_vec(), vec![1., 0., 0.]);
        assert_eq!(a.le_scalar(2.0).to_vec(), vec![1., 1., 0.]);
    }

    #[test]
    fn select_broadcasts_three_ways() {
        let cond = t(&[1., 0.], &[2, 1]);
        let a = t(&[1., 2., 3.], &[3]);
        let b = Tensor::scalar(-1.0);
        let s = Tensor::select(&cond, &a, &b).unwrap();
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(s.to_vec(), vec![1., 2., 3., -1., -1., -1.]);
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let a = Tensor::<f32>::zeros([2, 3]).unwrap();
        let b = Tensor::<f32>::zeros([2]).unwrap();
        for (name, r) in [
            ("add", a.add(&b)),
            ("sub", a.sub(&b)),
            ("mul", a.mul(&b)),
            ("div", a.div(&b)),
            ("pow", a.pow(&b)),
            ("maximum", a.maximum(&b)),
            ("minimum", a.minimum(&b)),
            ("eq", a.eq(&b)),
            ("ne", a.ne(&b)),
            ("lt", a.lt(&b)),
            ("le", a.le(&b)),
            ("gt", a.gt(&b)),
            ("ge", a.ge(&b)),
            ("select", Tensor::select(&a, &a, &b)),
        ] {
            match r {
                Err(Error::Broadcast { op, lhs, .. }) => {
                    assert_eq!(op, name);
                    assert_eq!(lhs.dims(), &[2, 3]);
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    #[should_panic(expected = "add: shapes [2, 3] and [2] cannot be broadcast together")]
    fn operator_panics_with_the_error_message() {
        let _ = &Tensor::<f32>::zeros([2, 3]).unwrap() + &Tensor::<f32>::zeros([2]).unwrap();
    }
}
