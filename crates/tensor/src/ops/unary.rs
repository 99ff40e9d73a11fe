//! Elementwise unary functions and activations. Gradient rules: rime-tape
//! `rules/unary.rs`.

use crate::kernels::{self, ARITH, LIBM, POLY};
use crate::record::{Op, record};
use crate::{Element, Error, Result, Tensor};

/// The recorded unary ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `|x|` (gradient `sign(x)`, 0 at 0)
    Abs,
    /// `e^x`
    Exp,
    /// natural logarithm
    Ln,
    /// square root
    Sqrt,
    /// `x²`
    Square,
    /// `1/x`
    Recip,
    /// sine
    Sin,
    /// cosine
    Cos,
    /// hyperbolic tangent
    Tanh,
    /// logistic sigmoid
    Sigmoid,
    /// `max(x, 0)` (gradient 0 at 0)
    Relu,
    /// `x` for `x > 0`, else `alpha x`
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f64,
    },
    /// exact GELU, `x Φ(x)`
    Gelu,
    /// Gauss error function
    Erf,
    /// `ln(1 + e^x)`
    Softplus,
    /// `x` limited to `[min, max]` (gradient passes inside, boundaries included)
    Clamp {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// `-1`, `0` or `1` (gradient 0)
    Sign,
}

/// `1 / (1 + e^-x)` without overflow: with `e = exp(-|x|)`, `1 / (1 + e)`
/// for `x >= 0` and `e / (1 + e)` below (branch-free, so it vectorizes).
#[inline(always)]
pub(crate) fn sigmoid<T: Element>(x: T) -> T {
    let e = (-x.abs()).exp_v();
    let r = T::one() / (T::one() + e);
    if x >= T::zero() { r } else { e * r }
}

#[inline(always)]
fn sign<T: Element>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        x // keeps 0, -0 and NaN
    }
}

impl<T: Element> Tensor<T> {
    fn unary(&self, op: UnaryOp) -> Tensor<T> {
        crate::instances::table::<T>().unary(self, op)
    }

    pub(crate) fn unary_native(&self, op: UnaryOp) -> Tensor<T> {
        let x = self.as_slice();
        let data = match op {
            UnaryOp::Neg => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| -v,
            ),
            UnaryOp::Abs => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| v.abs(),
            ),
            UnaryOp::Exp => kernels::map(
                x,
                POLY,
                #[inline(always)]
                |v| v.exp_v(),
            ),
            UnaryOp::Ln => kernels::map(
                x,
                LIBM,
                #[inline(always)]
                |v| v.ln(),
            ),
            UnaryOp::Sqrt => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| v.sqrt(),
            ),
            UnaryOp::Square => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| v * v,
            ),
            UnaryOp::Recip => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| v.recip(),
            ),
            UnaryOp::Sin => kernels::map(
                x,
                LIBM,
                #[inline(always)]
                |v| v.sin(),
            ),
            UnaryOp::Cos => kernels::map(
                x,
                LIBM,
                #[inline(always)]
                |v| v.cos(),
            ),
            UnaryOp::Tanh => kernels::map(
                x,
                POLY,
                #[inline(always)]
                |v| v.tanh_v(),
            ),
            UnaryOp::Sigmoid => kernels::map(x, POLY, sigmoid),
            UnaryOp::Relu => kernels::map(
                x,
                ARITH,
                #[inline(always)]
                |v| if v > T::zero() { v } else { T::zero() },
            ),
            UnaryOp::LeakyRelu { alpha } => {
                let a = T::of(alpha);
                kernels::map(
                    x,
                    ARITH,
                    #[inline(always)]
                    move |v| if v > T::zero() { v } else { a * v },
                )
            }
            UnaryOp::Gelu => {
                let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
                kernels::map(
                    x,
                    LIBM,
                    #[inline(always)]
                    move |v| half * v * (T::one() + (v * r2).erf()),
                )
            }
            UnaryOp::Erf => kernels::map(
                x,
                LIBM,
                #[inline(always)]
                |v| v.erf(),
            ),
            UnaryOp::Softplus => kernels::map(
                x,
                LIBM,
                #[inline(always)]
                |v| v.max(T::zero()) + (-v.abs()).exp_v().ln_1p(),
            ),
            UnaryOp::Clamp { min, max } => {
                let (lo, hi) = (T::of(min), T::of(max));
                kernels::map(
                    x,
                    ARITH,
                    #[inline(always)]
                    move |v| v.max(lo).min(hi),
                )
            }
            UnaryOp::Sign => kernels::map(x, ARITH, sign),
        };
        let out = Tensor::from_parts(data, self.shape().clone());
        record(|| Op::Unary(op), &[self], &out);
        out
    }

    /// `-x`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f32, -2.0]).neg().to_vec(), vec![-1.0, 2.0]);
    /// ```
    pub fn neg(&self) -> Tensor<T> {
        self.unary(UnaryOp::Neg)
    }

    /// `|x|`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f32, -2.0]).abs().to_vec(), vec![1.0, 2.0]);
    /// ```
    pub fn abs(&self) -> Tensor<T> {
        self.unary(UnaryOp::Abs)
    }

    /// `e^x`. For `f32` a vectorized polynomial within 2 ulp of the exact
    /// value (0 below -104, inf above 88.7); for `f64` libm's `exp`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![0.0f64]).exp().to_vec(), vec![1.0]);
    /// ```
    pub fn exp(&self) -> Tensor<T> {
        self.unary(UnaryOp::Exp)
    }

    /// Natural logarithm.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![1.0f64]).ln().to_vec(), vec![0.0]);
    /// ```
    pub fn ln(&self) -> Tensor<T> {
        self.unary(UnaryOp::Ln)
    }

    /// Square root.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![9.0f32]).sqrt().to_vec(), vec![3.0]);
    /// ```
    pub fn sqrt(&self) -> Tensor<T> {
        self.unary(UnaryOp::Sqrt)
    }

    /// `x²`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![-3.0f32]).square().to_vec(), vec![9.0]);
    /// ```
    pub fn square(&self) -> Tensor<T> {
        self.unary(UnaryOp::Square)
    }

    /// `1/x`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![4.0f32]).recip().to_vec(), vec![0.25]);
    /// ```
    pub fn recip(&self) -> Tensor<T> {
        self.unary(UnaryOp::Recip)
    }

    /// Sine.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![0.0f64]).sin().to_vec(), vec![0.0]);
    /// ```
    pub fn sin(&self) -> Tensor<T> {
        self.unary(UnaryOp::Sin)
    }

    /// Cosine.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![0.0f64]).cos().to_vec(), vec![1.0]);
    /// ```
    pub fn cos(&self) -> Tensor<T> {
        self.unary(UnaryOp::Cos)
    }

    /// Hyperbolic tangent. For `f32` a vectorized polynomial within 3 ulp;
    /// for `f64` libm's `tanh`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![0.0f32]).tanh().to_vec(), vec![0.0]);
    /// ```
    pub fn tanh(&self) -> Tensor<T> {
        self.unary(UnaryOp::Tanh)
    }

    /// Logistic sigmoid `1 / (1 + e^-x)`, stable for large `|x|`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![0.0f32, -1000.0, 1000.0]).sigmoid();
    /// assert_eq!(y.to_vec(), vec![0.5, 0.0, 1.0]);
    /// ```
    pub fn sigmoid(&self) -> Tensor<T> {
        self.unary(UnaryOp::Sigmoid)
    }

    /// `max(x, 0)`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![-1.0f32, 2.0]).relu().to_vec(), vec![0.0, 2.0]);
    /// ```
    pub fn relu(&self) -> Tensor<T> {
        self.unary(UnaryOp::Relu)
    }

    /// `x` for positive inputs, `alpha x` otherwise.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![-2.0f32, 3.0]).leaky_relu(0.1);
    /// assert_eq!(y.to_vec(), vec![-0.2, 3.0]);
    /// ```
    pub fn leaky_relu(&self, alpha: T) -> Tensor<T> {
        self.unary(UnaryOp::LeakyRelu {
            alpha: alpha.to_f64().unwrap_or(0.0),
        })
    }

    /// Exact GELU, `x Φ(x) = x (1 + erf(x/√2)) / 2` (Keras' and PyTorch's
    /// default).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![0.0f64, 1.0]).gelu().to_vec();
    /// assert_eq!(y[0], 0.0);
    /// assert!((y[1] - 0.8413447460685429).abs() < 1e-12);
    /// ```
    pub fn gelu(&self) -> Tensor<T> {
        self.unary(UnaryOp::Gelu)
    }

    /// Gauss error function.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert!((Tensor::vector(vec![1.0f64]).erf().to_vec()[0] - 0.8427007929497149).abs() < 1e-12);
    /// ```
    pub fn erf(&self) -> Tensor<T> {
        self.unary(UnaryOp::Erf)
    }

    /// `ln(1 + e^x)`, stable for large `|x|`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![0.0f64, 1000.0]).softplus().to_vec();
    /// assert!((y[0] - 2f64.ln()).abs() < 1e-15);
    /// assert_eq!(y[1], 1000.0);
    /// ```
    pub fn softplus(&self) -> Tensor<T> {
        self.unary(UnaryOp::Softplus)
    }

    /// Limits values to `[min, max]`; errors if `min > max` or either is NaN.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let y = Tensor::vector(vec![-2.0f32, 0.5, 2.0]).clamp(-1.0, 1.0)?;
    /// assert_eq!(y.to_vec(), vec![-1.0, 0.5, 1.0]);
    /// assert!(Tensor::vector(vec![0.0f32]).clamp(1.0, -1.0).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn clamp(&self, min: T, max: T) -> Result<Tensor<T>> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(Error::InvalidArgument {
                op: "clamp",
                msg: format!("needs min <= max, got min {min} and max {max}"),
            });
        }
        Ok(self.unary(UnaryOp::Clamp {
            min: min.to_f64().unwrap_or(f64::NAN),
            max: max.to_f64().unwrap_or(f64::NAN),
        }))
    }

    /// `-1`, `0` or `1` by the sign of each element (0 stays 0).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// assert_eq!(Tensor::vector(vec![-3.0f32, 0.0, 2.0]).sign().to_vec(), vec![-1.0, 0.0, 1.0]);
    /// ```
    pub fn sign(&self) -> Tensor<T> {
        self.unary(UnaryOp::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn check<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, r: impl Fn(f64) -> f64, tol: f64) {
        let xs = [-3.0, -1.5, -0.3, 0.0, 0.4, 1.0, 2.5];
        let x = Tensor::vector(xs.iter().map(|&v| T::of(v)).collect());
        let y = f(&x);
        assert_eq!(y.shape(), x.shape());
        for (&v, &got) in xs.iter().zip(y.as_slice()) {
            let want = r(v);
            let got = got.to_f64().unwrap();
            assert!(
                (got - want).abs() <= tol * (1.0 + want.abs()),
                "at {v}: {got} vs {want}"
            );
        }
    }

    fn all_ops<T: Element>(tol: f64) {
        check::<T>(|x| x.neg(), |v| -v, tol);
        check::<T>(|x| x.abs(), f64::abs, tol);
        check::<T>(|x| x.exp(), f64::exp, tol);
        check::<T>(
            |x| x.abs().add_scalar(T::of(0.1)).ln(),
            |v| (v.abs() + 0.1).ln(),
            tol,
        );
        check::<T>(|x| x.abs().sqrt(), |v| v.abs().sqrt(), tol);
        check::<T>(|x| x.square(), |v| v * v, tol);
        check::<T>(
            |x| x.add_scalar(T::of(10.0)).recip(),
            |v| 1.0 / (v + 10.0),
            tol,
        );
        check::<T>(|x| x.sin(), f64::sin, tol);
        check::<T>(|x| x.cos(), f64::cos, tol);
        check::<T>(|x| x.tanh(), f64::tanh, tol);
        check::<T>(|x| x.sigmoid(), |v| 1.0 / (1.0 + (-v).exp()), tol);
        check::<T>(|x| x.relu(), |v| v.max(0.0), tol);
        check::<T>(
            |x| x.leaky_relu(T::of(0.2)),
            |v| if v > 0.0 { v } else { 0.2 * v },
            tol,
        );
        check::<T>(
            |x| x.gelu(),
            |v| 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt())),
            tol,
        );
        check::<T>(|x| x.erf(), libm::erf, tol);
        check::<T>(|x| x.softplus(), |v| (1.0 + v.exp()).ln(), tol);
        check::<T>(
            |x| x.clamp(T::of(-1.0), T::of(0.5)).unwrap(),
            |v| v.clamp(-1.0, 0.5),
            tol,
        );
        check::<T>(
            |x| x.sign(),
            |v| if v == 0.0 { 0.0 } else { v.signum() },
            tol,
        );
    }

    #[test]
    fn values_match_f64_reference() {
        all_ops::<f64>(1e-14);
        all_ops::<f32>(1e-6);
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        let x = Tensor::vector(vec![-100.0f32, 100.0]);
        assert_relative_eq!(x.sigmoid(), Tensor::vector(vec![0.0, 1.0]));
        assert_relative_eq!(x.softplus(), Tensor::vector(vec![0.0, 100.0]));
        assert!(Tensor::vector(vec![-0.0f32]).sign().as_slice()[0] == 0.0);
    }

    #[test]
    fn clamp_rejects_bad_bounds() {
        let x = Tensor::<f64>::zeros([2]).unwrap();
        assert!(matches!(
            x.clamp(1.0, 0.0),
            Err(Error::InvalidArgument { op: "clamp", .. })
        ));
        assert!(matches!(
            x.clamp(f64::NAN, 0.0),
            Err(Error::InvalidArgument { op: "clamp", .. })
        ));
    }
}
