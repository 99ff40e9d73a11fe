//! `std::ops` operators for [`Tensor`], for code that reads like math.
//!
//! | expression | same as |
//! |---|---|
//! | `a + b`, `&a + b`, `a + &b`, `&a + &b` (and `-`, `*`, `/`) | [`a.add(&b)`](Tensor::add) … (broadcasting) |
//! | `&a + 2.0`, `a * 2.0`, … | [`a.add_scalar(2.0)`](Tensor::add_scalar), [`a.mul_scalar(2.0)`](Tensor::mul_scalar), … |
//! | `2.0 * &a`, `1.0 - a`, `1.0 / &a` (f32 and f64) | [`a.mul_scalar(2.0)`](Tensor::mul_scalar), [`a.rsub_scalar(1.0)`](Tensor::rsub_scalar), [`a.rdiv_scalar(1.0)`](Tensor::rdiv_scalar) |
//! | `-a`, `-&a` | [`a.neg()`](Tensor::neg) |
//! | `a += &b`, `a += b`, `a *= 2.0`, … | `a = &a + &b`, … (a new value; tensors are immutable, other clones keep the old one) |
//!
//! Each operator computes exactly what the method computes (same values, and
//! recorded on an active gradient tape the same way). Owned operands are
//! only borrowed: a tensor is a shared, immutable value, so taking it by
//! value saves a `&`, not a copy.
//!
//! # Panics
//!
//! A binary operator between two tensors panics where the method returns
//! an error: when the shapes do not broadcast. The panic message is the
//! error's message (it names the op and both shapes). Operators with a
//! scalar, and negation, never panic. Library code, and code that handles
//! user-given shapes, uses the fallible methods.
//!
//! ```
//! use rime_tensor::Tensor;
//! let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
//! let b = Tensor::from_vec(vec![10.0f32, 20.0], [2])?; // broadcasts over rows
//! let y = 2.0 * &a + &b - 1.0;
//! assert_eq!(y.to_vec(), vec![11.0, 23.0, 15.0, 27.0]);
//! assert_eq!((-&a / 2.0).to_vec(), vec![-0.5, -1.0, -1.5, -2.0]);
//! let mut acc = a.clone();
//! acc += &a;
//! acc *= 0.5;
//! assert_eq!(acc.to_vec(), a.to_vec());
//!
//! // shapes that do not broadcast: the method is an error, the operator panics
//! let c = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3])?;
//! let err = a.add(&c).unwrap_err();
//! let panic = std::panic::catch_unwind(|| &a + &c).unwrap_err();
//! assert_eq!(panic.downcast_ref::<String>(), Some(&err.to_string()));
//! # Ok::<(), rime_tensor::Error>(())
//! ```

use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::{Element, Tensor};

/// The method's result, or a panic with its error's message.
#[track_caller]
fn or_panic<T: Element>(r: crate::Result<Tensor<T>>) -> Tensor<T> {
    match r {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// Tensor ⊕ tensor in the four owned/borrowed combinations, tensor ⊕
/// scalar, and the compound assignments, for one operator.
macro_rules! binary_operator {
    ($trait:ident, $method:ident, $assign_trait:ident, $assign_method:ident, $scalar_method:ident) => {
        impl<T: Element> $trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                or_panic(Tensor::$method(self, rhs))
            }
        }
        impl<T: Element> $trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                or_panic(Tensor::$method(self, &rhs))
            }
        }
        impl<T: Element> $trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                or_panic(Tensor::$method(&self, rhs))
            }
        }
        impl<T: Element> $trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                or_panic(Tensor::$method(&self, &rhs))
            }
        }
        impl<T: Element> $trait<T> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                self.$scalar_method(rhs)
            }
        }
        impl<T: Element> $trait<T> for Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                self.$scalar_method(rhs)
            }
        }
        impl<T: Element> $assign_trait<&Tensor<T>> for Tensor<T> {
            #[track_caller]
            fn $assign_method(&mut self, rhs: &Tensor<T>) {
                *self = or_panic(Tensor::$method(self, rhs));
            }
        }
        impl<T: Element> $assign_trait<Tensor<T>> for Tensor<T> {
            #[track_caller]
            fn $assign_method(&mut self, rhs: Tensor<T>) {
                *self = or_panic(Tensor::$method(self, &rhs));
            }
        }
        impl<T: Element> $assign_trait<T> for Tensor<T> {
            fn $assign_method(&mut self, rhs: T) {
                *self = self.$scalar_method(rhs);
            }
        }
    };
}

binary_operator!(Add, add, AddAssign, add_assign, add_scalar);
binary_operator!(Sub, sub, SubAssign, sub_assign, sub_scalar);
binary_operator!(Mul, mul, MulAssign, mul_assign, mul_scalar);
binary_operator!(Div, div, DivAssign, div_assign, div_scalar);

/// Scalar ⊕ tensor, for each element type (a generic `impl<T> Add<Tensor<T>>
/// for T` is not allowed by the orphan rules).
macro_rules! scalar_left {
    ($($scalar:ty),*) => {$(
        impl Add<&Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn add(self, rhs: &Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.add_scalar(self)
            }
        }
        impl Add<Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn add(self, rhs: Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.add_scalar(self)
            }
        }
        impl Sub<&Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn sub(self, rhs: &Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.rsub_scalar(self)
            }
        }
        impl Sub<Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn sub(self, rhs: Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.rsub_scalar(self)
            }
        }
        impl Mul<&Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn mul(self, rhs: &Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.mul_scalar(self)
            }
        }
        impl Mul<Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn mul(self, rhs: Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.mul_scalar(self)
            }
        }
        impl Div<&Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn div(self, rhs: &Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.rdiv_scalar(self)
            }
        }
        impl Div<Tensor<$scalar>> for $scalar {
            type Output = Tensor<$scalar>;
            fn div(self, rhs: Tensor<$scalar>) -> Tensor<$scalar> {
                rhs.rdiv_scalar(self)
            }
        }
    )*};
}

scalar_left!(f32, f64);

impl<T: Element> Neg for &Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

impl<T: Element> Neg for Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}
