//! The std::ops operators (src/ops/operators.rs): every owned/borrowed
//! combination gives the method's values, scalars on either side, and a
//! shape mismatch panics with the method's error message.

use proptest::prelude::*;
use rime_tensor::{Element, Tensor};

use crate::{assert_close, both, f64s, iota, t, tol};

/// Every combination of `a op b` against a naive elementwise reference.
fn binary_combinations<T: Element>() {
    let a: Tensor<T> = iota(&[2, 3], 1);
    let b: Tensor<T> = iota(&[3], 2).add_scalar(T::of(3.0)); // no zeros: it divides
    let (av, bv) = (f64s(&a), f64s(&b));
    let reference =
        |f: fn(f64, f64) -> f64| -> Vec<f64> { (0..6).map(|i| f(av[i], bv[i % 3])).collect() };
    type Combo<T> = Vec<Tensor<T>>;
    let adds: Combo<T> = vec![
        &a + &b,
        a.clone() + &b,
        &a + b.clone(),
        a.clone() + b.clone(),
    ];
    let subs: Combo<T> = vec![
        &a - &b,
        a.clone() - &b,
        &a - b.clone(),
        a.clone() - b.clone(),
    ];
    let muls: Combo<T> = vec![
        &a * &b,
        a.clone() * &b,
        &a * b.clone(),
        a.clone() * b.clone(),
    ];
    let divs: Combo<T> = vec![
        &a / &b,
        a.clone() / &b,
        &a / b.clone(),
        a.clone() / b.clone(),
    ];
    for (results, f, method) in [
        (
            adds,
            (|x, y| x + y) as fn(f64, f64) -> f64,
            a.add(&b).unwrap(),
        ),
        (subs, |x, y| x - y, a.sub(&b).unwrap()),
        (muls, |x, y| x * y, a.mul(&b).unwrap()),
        (divs, |x, y| x / y, a.div(&b).unwrap()),
    ] {
        let want = reference(f);
        for r in &results {
            assert_close(r, &[2, 3], &want, tol::<T>());
            assert_eq!(r.to_vec(), method.to_vec(), "bit-identical to the method");
        }
    }
}
both!(binary_operators_all_combinations, binary_combinations);

fn scalar_operands<T: Element>() {
    let a: Tensor<T> = t(&[1.0, -2.0, 4.0], &[3]);
    let two = T::of(2.0);
    assert_close(&(&a + two), &[3], &[3.0, 0.0, 6.0], 0.0);
    assert_close(&(a.clone() - two), &[3], &[-1.0, -4.0, 2.0], 0.0);
    assert_close(&(&a * two), &[3], &[2.0, -4.0, 8.0], 0.0);
    assert_close(&(a.clone() / two), &[3], &[0.5, -1.0, 2.0], 0.0);
    assert_close(&-&a, &[3], &[-1.0, 2.0, -4.0], 0.0);
    assert_close(&-a.clone(), &[3], &[-1.0, 2.0, -4.0], 0.0);
}
both!(tensor_with_scalar_operands, scalar_operands);

#[test]
fn scalar_on_the_left_f32_and_f64() {
    let a = Tensor::from_vec(vec![1.0f32, -2.0, 4.0], [3]).unwrap();
    assert_eq!((2.0 * &a).to_vec(), vec![2.0, -4.0, 8.0]);
    assert_eq!((1.0 - &a).to_vec(), vec![0.0, 3.0, -3.0]);
    assert_eq!((8.0 / a.clone()).to_vec(), vec![8.0, -4.0, 2.0]);
    assert_eq!((0.5 + a.clone()).to_vec(), vec![1.5, -1.5, 4.5]);
    let b = Tensor::from_vec(vec![0.5f64, 4.0], [2]).unwrap();
    assert_eq!((3.0 * b.clone()).to_vec(), vec![1.5, 12.0]);
    assert_eq!((1.0 / &b).to_vec(), vec![2.0, 0.25]);
    assert_eq!((1.0 - b.clone()).to_vec(), vec![0.5, -3.0]);
    assert_eq!((1.0 + &b).to_vec(), vec![1.5, 5.0]);
}

#[test]
fn compound_assignment_makes_a_new_value_and_leaves_clones_alone() {
    let a = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
    let mut acc = a.clone();
    acc += &a;
    acc += a.clone();
    acc -= 1.0;
    acc *= &a;
    acc /= 2.0;
    // ((3a - 1) * a) / 2 = [1, 5]
    assert_eq!(acc.to_vec(), vec![1.0, 5.0]);
    assert_eq!(a.to_vec(), vec![1.0, 2.0], "the clone kept its value");
}

#[test]
fn a_shape_mismatch_panics_with_the_methods_message() {
    let a = Tensor::from_vec(vec![1.0f32; 6], [2, 3]).unwrap();
    let b = Tensor::from_vec(vec![1.0f32; 2], [2]).unwrap();
    let expected = a.mul(&b).unwrap_err().to_string();
    assert!(
        expected.contains("[2, 3]") && expected.contains("[2]"),
        "{expected}"
    );
    let cases: Vec<Box<dyn Fn() -> Tensor<f32>>> = vec![
        Box::new(|| &a * &b),
        Box::new(|| a.clone() * &b),
        Box::new(|| &a * b.clone()),
        Box::new(|| a.clone() * b.clone()),
        Box::new(|| {
            let mut c = a.clone();
            c *= &b;
            c
        }),
    ];
    for case in cases {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).unwrap_err();
        assert_eq!(payload.downcast_ref::<String>(), Some(&expected));
    }
}

#[test]
fn operators_broadcast_like_the_methods() {
    // (their gradients: rime-tape tests/gradients.rs)
    let a: Tensor<f64> = iota(&[4, 1], 3);
    let b: Tensor<f64> = iota(&[1, 5], 4);
    let r = &a * &b + 1.0;
    assert_eq!(r.dims(), &[4, 5]);
    assert_eq!(r.to_vec(), a.mul(&b).unwrap().add_scalar(1.0).to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random broadcastable shapes: operators and methods agree bit for bit.
    #[test]
    fn operators_equal_methods_on_random_shapes(
        dims in prop::collection::vec(1usize..4, 0..4),
        drop_mask in prop::collection::vec(any::<bool>(), 4),
        seed in 0u64..1000,
        s in -3.0f64..3.0,
    ) {
        let a: Tensor<f64> = iota(&dims, seed);
        // b: the same rank with some axes of size 1
        let bdims: Vec<usize> = dims.iter().zip(&drop_mask).map(|(&d, &m)| if m { 1 } else { d }).collect();
        let b: Tensor<f64> = iota(&bdims, seed + 1);
        prop_assert_eq!((&a + &b).to_vec(), a.add(&b).unwrap().to_vec());
        prop_assert_eq!((&b - &a).to_vec(), b.sub(&a).unwrap().to_vec());
        prop_assert_eq!((a.clone() * b.clone()).to_vec(), a.mul(&b).unwrap().to_vec());
        prop_assert_eq!((&a / &b).to_vec(), a.div(&b).unwrap().to_vec());
        prop_assert_eq!((s * &a).to_vec(), a.mul_scalar(s).to_vec());
        prop_assert_eq!((s - &a).to_vec(), a.rsub_scalar(s).to_vec());
        prop_assert_eq!((-&a).to_vec(), a.neg().to_vec());
    }
}
