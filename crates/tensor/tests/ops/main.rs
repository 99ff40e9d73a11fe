//! Value tests for every op of rime-tensor, in f32 and f64, and a bad-input
//! test for every fallible op asserting the error variant. Expected values
//! are written out by hand or computed by naive loops over indices here, never
//! by the op under test.

mod arith;
#[path = "../common/mod.rs"]
mod common;
mod display;
mod element;
mod errors;
mod layout;
mod matmul;
mod operators;
mod reduce;
mod tensor;
mod unary;

pub use common::{naive_broadcast, naive_matmul, naive_reduce, strides, unravel};
use rime_tensor::{Element, Scalar, Shape, Tensor};

/// A tensor from f64 literals, in either element type.
pub fn t<T: Element>(v: &[f64], shape: &[usize]) -> Tensor<T> {
    Tensor::from_vec(v.iter().map(|&x| T::of(x)).collect(), shape).expect("test data fits")
}

/// `n` deterministic values in about [-2, 2] (not all distinct in sign).
pub fn vals(n: usize, seed: u64) -> Vec<f64> {
    (0..n)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1009) as f64 / 250.0 - 2.0)
        .collect()
}

/// A tensor of `vals` with the given shape.
pub fn iota<T: Element>(shape: &[usize], seed: u64) -> Tensor<T> {
    let n = Shape::from(shape).numel();
    t(&vals(n, seed), shape)
}

/// The elements as f64.
pub fn f64s<T: Scalar>(x: &Tensor<T>) -> Vec<f64> {
    x.as_slice().iter().map(|v| v.to_f64().unwrap()).collect()
}

/// Asserts shape and values, with a tolerance relative to the magnitude
/// (`tol` of about 1e-6 for f32, 1e-12 for f64 is what `tol::<T>()` gives).
#[track_caller]
pub fn assert_close<T: Scalar>(got: &Tensor<T>, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.dims(), shape, "shape");
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in f64s(got).iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
        assert!(ok, "element {i}: got {g}, want {w} (tol {tol})");
    }
}

/// The tolerance for values computed in `T`.
pub fn tol<T: Element>() -> f64 {
    if T::DTYPE == rime_tensor::DType::F32 {
        2e-6
    } else {
        1e-12
    }
}

/// Runs a generic test body for f32 and f64.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        #[test]
        fn $name() {
            $body::<f32>();
            $body::<f64>();
        }
    };
}
