//! Binary ops (`ops/arith.rs`) with NumPy broadcasting, comparisons,
//! select and scalar variants, against hand-written values and naive loops.

use rime_tensor::{Element, Tensor};

use crate::{assert_close, both, f64s, iota, naive_broadcast, t, tol, vals};

/// Every pair of shapes the broadcasting rules distinguish: equal, rank 0 on
/// either side, missing leading axes, size-1 axes on one or both sides, and
/// empty axes.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[2, 3], &[2, 3]),
    (&[], &[]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
    (&[3], &[2, 3]),
    (&[2, 3], &[3]),
    (&[2, 1], &[1, 3]),
    (&[2, 1], &[3]),
    (&[1], &[4]),
    (&[4, 1, 3], &[5, 1]),
    (&[1, 5, 1], &[4, 1, 3]),
    (&[2, 3, 4], &[3, 1]),
    (&[2, 1, 4], &[2, 3, 4]),
    (&[1, 1], &[1]),
    (&[0, 3], &[3]),
    (&[0], &[1]),
    (&[2, 0], &[2, 1]),
];

type BinFn<T> = fn(&Tensor<T>, &Tensor<T>) -> rime_tensor::Result<Tensor<T>>;
type BinCase<T> = (&'static str, BinFn<T>, fn(f64, f64) -> f64);

fn binary_ops<T: Element>() -> Vec<BinCase<T>> {
    vec![
        ("add", Tensor::add, |a, b| a + b),
        ("sub", Tensor::sub, |a, b| a - b),
        ("mul", Tensor::mul, |a, b| a * b),
        ("div", Tensor::div, |a, b| a / b),
        ("maximum", Tensor::maximum, f64::max),
        ("minimum", Tensor::minimum, f64::min),
        (
            "pow",
            |a, b| a.abs().add_scalar(T::of(0.5)).pow(b),
            |a, b| (a.abs() + 0.5).powf(b),
        ),
    ]
}

fn broadcasting<T: Element>() {
    for &(sa, sb) in PAIRS {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let (va, vb) = (
            vals(na, 1),
            vals(nb, 2).iter().map(|v| v + 0.01).collect::<Vec<_>>(),
        );
        let (a, b): (Tensor<T>, Tensor<T>) = (t(&va, sa), t(&vb, sb));
        for (name, op, f) in binary_ops::<T>() {
            let got = op(&a, &b).unwrap_or_else(|e| panic!("{name} {sa:?} {sb:?}: {e}"));
            // the reference works on the T-rounded inputs, in f64
            let (shape, want_t) = naive_broadcast(&f64s(&a), sa, &f64s(&b), sb, f);
            assert_close(&got, &shape, &want_t, 4.0 * tol::<T>());
        }
    }
}
both!(binary_ops_broadcast_like_numpy, broadcasting);

fn hand_values<T: Element>() {
    let a: Tensor<T> = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let col: Tensor<T> = t(&[10., 20.], &[2, 1]);
    let row: Tensor<T> = t(&[1., 0., -1.], &[3]);
    assert_close(
        &a.add(&col).unwrap(),
        &[2, 3],
        &[11., 12., 13., 24., 25., 26.],
        0.0,
    );
    assert_close(
        &a.mul(&row).unwrap(),
        &[2, 3],
        &[1., 0., -3., 4., 0., -6.],
        0.0,
    );
    assert_close(
        &col.sub(&row).unwrap(),
        &[2, 3],
        &[9., 10., 11., 19., 20., 21.],
        0.0,
    );
    assert_close(
        &a.div(&col).unwrap(),
        &[2, 3],
        &[0.1, 0.2, 0.3, 0.2, 0.25, 0.3],
        tol::<T>(),
    );
    assert_close(
        &row.maximum(&Tensor::scalar(T::zero())).unwrap(),
        &[3],
        &[1., 0., 0.],
        0.0,
    );
    assert_close(
        &row.minimum(&Tensor::scalar(T::zero())).unwrap(),
        &[3],
        &[0., 0., -1.],
        0.0,
    );
    let two = Tensor::scalar(T::of(2.0));
    assert_close(
        &a.pow(&two).unwrap(),
        &[2, 3],
        &[1., 4., 9., 16., 25., 36.],
        tol::<T>(),
    );
    assert_close(&two.pow(&row).unwrap(), &[3], &[2., 1., 0.5], tol::<T>());
    // rank 0 with rank 0 stays rank 0
    let s = Tensor::scalar(T::of(3.0))
        .mul(&Tensor::scalar(T::of(-2.0)))
        .unwrap();
    assert_close(&s, &[], &[-6.0], 0.0);
    // [1] with [] is [1]; [1, 1] with [1] is [1, 1]
    assert_eq!(t::<T>(&[1.0], &[1]).add(&two).unwrap().dims(), &[1]);
    assert_eq!(
        t::<T>(&[1.0], &[1, 1])
            .add(&t(&[1.0], &[1]))
            .unwrap()
            .dims(),
        &[1, 1]
    );
    // IEEE semantics
    let z: Tensor<T> = t(&[1.0, -1.0, 0.0], &[3]);
    let q = z.div(&Tensor::scalar(T::zero())).unwrap();
    let q = f64s(&q);
    assert!(q[0] == f64::INFINITY && q[1] == f64::NEG_INFINITY && q[2].is_nan());
    // NaN propagates through maximum and minimum from either side
    let n: Tensor<T> = t(&[f64::NAN, 1.0], &[2]);
    let m = f64s(&n.maximum(&t(&[0.0, f64::NAN], &[2])).unwrap());
    assert!(m[0].is_nan() && m[1].is_nan());
    let m = f64s(&t::<T>(&[0.0, 5.0], &[2]).minimum(&n).unwrap());
    assert!(m[0].is_nan() && m[1] == 1.0);
}
both!(binary_hand_values, hand_values);

fn scalar_variants<T: Element>() {
    let x: Tensor<T> = t(&[-2., 0.5, 4.], &[3]);
    let tl = tol::<T>();
    assert_close(&x.add_scalar(T::of(1.0)), &[3], &[-1., 1.5, 5.], 0.0);
    assert_close(&x.sub_scalar(T::of(1.0)), &[3], &[-3., -0.5, 3.], 0.0);
    assert_close(&x.rsub_scalar(T::of(1.0)), &[3], &[3., 0.5, -3.], 0.0);
    assert_close(&x.mul_scalar(T::of(-2.0)), &[3], &[4., -1., -8.], 0.0);
    assert_close(&x.div_scalar(T::of(4.0)), &[3], &[-0.5, 0.125, 1.], 0.0);
    assert_close(&x.rdiv_scalar(T::of(2.0)), &[3], &[-1., 4., 0.5], 0.0);
    assert_close(&x.powf(T::of(2.0)), &[3], &[4., 0.25, 16.], tl);
    assert_close(
        &x.abs().powf(T::of(0.5)),
        &[3],
        &[2f64.sqrt(), 0.5f64.sqrt(), 2.],
        tl,
    );
    assert_close(&x.maximum_scalar(T::of(0.0)), &[3], &[0., 0.5, 4.], 0.0);
    assert_close(&x.minimum_scalar(T::of(0.0)), &[3], &[-2., 0., 0.], 0.0);
    // std operators
    assert_close(&(&x + &x), &[3], &[-4., 1., 8.], 0.0);
    assert_close(&(&x - T::of(1.0)), &[3], &[-3., -0.5, 3.], 0.0);
    assert_close(&(&x * T::of(2.0)), &[3], &[-4., 1., 8.], 0.0);
    let y = x.add_scalar(T::of(4.0));
    assert_close(&(&y / &x), &[3], &[-1., 9., 2.], 0.0);
    assert_close(&(-&x), &[3], &[2., -0.5, -4.], 0.0);
    // scalar variants keep rank 0
    assert_eq!(Tensor::scalar(T::one()).mul_scalar(T::of(3.0)).rank(), 0);
}
both!(scalar_variants_f32_f64, scalar_variants);

fn comparisons<T: Element>() {
    let a: Tensor<T> = t(&[1., 2., 3., f64::NAN], &[4]);
    let b: Tensor<T> = t(&[2., 2., 2., 2.], &[4]);
    let cases: Vec<(&str, Tensor<T>, [f64; 4])> = vec![
        ("eq", a.eq(&b).unwrap(), [0., 1., 0., 0.]),
        ("ne", a.ne(&b).unwrap(), [1., 0., 1., 1.]),
        ("lt", a.lt(&b).unwrap(), [1., 0., 0., 0.]),
        ("le", a.le(&b).unwrap(), [1., 1., 0., 0.]),
        ("gt", a.gt(&b).unwrap(), [0., 0., 1., 0.]),
        ("ge", a.ge(&b).unwrap(), [0., 1., 1., 0.]),
        ("eq_scalar", a.eq_scalar(T::of(2.0)), [0., 1., 0., 0.]),
        ("ne_scalar", a.ne_scalar(T::of(2.0)), [1., 0., 1., 1.]),
        ("lt_scalar", a.lt_scalar(T::of(2.0)), [1., 0., 0., 0.]),
        ("le_scalar", a.le_scalar(T::of(2.0)), [1., 1., 0., 0.]),
        ("gt_scalar", a.gt_scalar(T::of(2.0)), [0., 0., 1., 0.]),
        ("ge_scalar", a.ge_scalar(T::of(2.0)), [0., 1., 1., 0.]),
    ];
    for (name, got, want) in cases {
        assert_eq!(f64s(&got), want.to_vec(), "{name}");
        assert_eq!(got.dims(), &[4], "{name}");
    }
    // comparisons broadcast: [3, 1] against [2]
    let c: Tensor<T> = t(&[0., 1., 2.], &[3, 1]);
    let d: Tensor<T> = t(&[1., 2.], &[2]);
    assert_close(&c.lt(&d).unwrap(), &[3, 2], &[1., 1., 0., 1., 0., 0.], 0.0);
    assert_close(
        &c.ge(&Tensor::scalar(T::one())).unwrap(),
        &[3, 1],
        &[0., 1., 1.],
        0.0,
    );
}
both!(comparisons_give_zero_one, comparisons);

fn select<T: Element>() {
    let cond: Tensor<T> = t(&[1., 0., 0.5, -1.], &[4]);
    let a: Tensor<T> = t(&[1., 2., 3., 4.], &[4]);
    let b: Tensor<T> = t(&[-1., -2., -3., -4.], &[4]);
    assert_close(
        &Tensor::select(&cond, &a, &b).unwrap(),
        &[4],
        &[1., -2., 3., 4.],
        0.0,
    );
    // three-way broadcast: [2, 1] x [3] x []
    let c2: Tensor<T> = t(&[0., 1.], &[2, 1]);
    let r: Tensor<T> = t(&[7., 8., 9.], &[3]);
    let s = Tensor::select(&c2, &r, &Tensor::scalar(T::zero())).unwrap();
    assert_close(&s, &[2, 3], &[0., 0., 0., 7., 8., 9.], 0.0);
    // condition broadcast over the values
    let s = Tensor::select(&Tensor::scalar(T::one()), &a, &b).unwrap();
    assert_close(&s, &[4], &[1., 2., 3., 4.], 0.0);
    // relu through select
    let x: Tensor<T> = iota(&[3, 5], 3);
    let y = Tensor::select(&x.gt_scalar(T::zero()), &x, &Tensor::scalar(T::zero())).unwrap();
    assert_eq!(y, x.relu());
    // NaN counts as true (non-zero)
    let n: Tensor<T> = t(&[f64::NAN], &[1]);
    assert_close(
        &Tensor::select(&n, &a.narrow(0, 0, 1).unwrap(), &b.narrow(0, 0, 1).unwrap()).unwrap(),
        &[1],
        &[1.0],
        0.0,
    );
}
both!(select_is_numpy_where, select);

#[test]
fn large_broadcasts_split_across_threads_match_naive() {
    // above the parallel threshold: a bias row, a column, and a scalar
    let (r, c) = (1000, 301);
    let a: Tensor<f64> = iota(&[r, c], 4);
    let row: Tensor<f64> = iota(&[c], 5);
    let col: Tensor<f64> = iota(&[r, 1], 6);
    let (shape, want) = naive_broadcast(&f64s(&a), &[r, c], &f64s(&row), &[c], |x, y| x - y);
    assert_close(&a.sub(&row).unwrap(), &shape, &want, 0.0);
    let (shape, want) = naive_broadcast(&f64s(&col), &[r, 1], &f64s(&row), &[c], |x, y| x * y);
    assert_close(&col.mul(&row).unwrap(), &shape, &want, 0.0);
    let got = a.mul_scalar(3.0);
    assert_close(
        &got,
        &[r, c],
        &f64s(&a).iter().map(|v| v * 3.0).collect::<Vec<_>>(),
        0.0,
    );
    let s = Tensor::select(&a.gt_scalar(0.0), &a, &col).unwrap();
    let (_, want) = naive_broadcast(&f64s(&a), &[r, c], &f64s(&col), &[r, 1], |x, y| {
        if x > 0.0 { x } else { y }
    });
    assert_close(&s, &[r, c], &want, 0.0);
}
