//! Matrix products: 2-D, vectors, batched with broadcast batch axes,
//! transposed operands, row/column blocks, against a naive triple loop.

#![allow(clippy::single_range_in_vec_init)]

use rime_tensor::{Element, Tensor};

use crate::{assert_close, both, f64s, iota, naive_matmul, t, tol};

fn check<T: Element>(a: &Tensor<T>, b: &Tensor<T>, ta: bool, tb: bool) {
    let got = a.matmul_t(b, ta, tb).unwrap();
    let (shape, want) = naive_matmul(&f64s(a), a.dims(), &f64s(b), b.dims(), ta, tb);
    let k = if ta {
        a.dims()[a.rank() - 2]
    } else {
        a.dims()[a.rank() - 1]
    };
    // f32 products accumulate rounding over k terms of magnitude <= 4
    assert_close(&got, &shape, &want, tol::<T>() * (k as f64 + 1.0) * 4.0);
}

fn two_d<T: Element>() {
    let a: Tensor<T> = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let b: Tensor<T> = t(&[7., 8., 9., 10., 11., 12.], &[3, 2]);
    assert_close(
        &a.matmul(&b).unwrap(),
        &[2, 2],
        &[58., 64., 139., 154.],
        0.0,
    );
    assert_close(
        &b.matmul(&a).unwrap(),
        &[3, 3],
        &[39., 54., 69., 49., 68., 87., 59., 82., 105.],
        0.0,
    );
    // transposes read as strides: aᵀ aᵀ... every combination
    assert_close(
        &a.matmul_t(&a, false, true).unwrap(),
        &[2, 2],
        &[14., 32., 32., 77.],
        0.0,
    );
    assert_close(
        &a.matmul_t(&a, true, false).unwrap(),
        &[3, 3],
        &[17., 22., 27., 22., 29., 36., 27., 36., 45.],
        0.0,
    );
    assert_close(
        &a.matmul_t(&b, true, true).unwrap(),
        &[3, 3],
        &[39., 49., 59., 54., 68., 82., 69., 87., 105.],
        0.0,
    );
    for (m, k, n) in [(1, 1, 1), (5, 7, 3), (17, 33, 9), (64, 16, 65), (3, 200, 2)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            check::<T>(&iota(&sa, 1), &iota(&sb, 2), ta, tb);
        }
    }
}
both!(two_d_products_and_transposes, two_d);

fn vectors<T: Element>() {
    let v: Tensor<T> = t(&[1., 2., 3.], &[3]);
    let m: Tensor<T> = t(&[1., 0., 0., 1., 1., 1.], &[3, 2]);
    assert_close(&v.matmul(&v).unwrap(), &[], &[14.], 0.0);
    assert_close(&v.matmul(&m).unwrap(), &[2], &[4., 5.], 0.0);
    assert_close(&m.t().unwrap().matmul(&v).unwrap(), &[2], &[4., 5.], 0.0);
    // a vector against a batch of matrices
    let bm: Tensor<T> = iota(&[4, 3, 2], 3);
    let got = v.matmul(&bm).unwrap();
    assert_eq!(got.dims(), &[4, 2]);
    let (_, want) = naive_matmul(&f64s(&v), &[1, 3], &f64s(&bm), &[4, 3, 2], false, false);
    assert_close(&got, &[4, 2], &want, 8.0 * tol::<T>());
    let got = bm.t().unwrap().matmul(&v).unwrap();
    assert_close(&got, &[4, 2], &want, 8.0 * tol::<T>());
}
both!(vector_operands_follow_numpy, vectors);

fn batched<T: Element>() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[4, 3, 5], &[4, 5, 2]),
        (&[4, 3, 5], &[5, 2]),
        (&[3, 5], &[4, 5, 2]),
        (&[2, 1, 3, 5], &[6, 5, 2]),
        (&[1, 3, 5], &[4, 5, 2]),
        (&[2, 1, 3, 5], &[1, 3, 5, 2]),
        (&[0, 3, 5], &[5, 2]),
    ];
    for &(sa, sb) in cases {
        let (a, b) = (iota::<T>(sa, 4), iota::<T>(sb, 5));
        check(&a, &b, false, false);
        assert_eq!(a.matmul(&b).unwrap(), a.matmul_t(&b, false, false).unwrap());
        // the same products with both operands stored transposed
        let (at, bt) = (a.t().unwrap(), b.t().unwrap());
        check(&at, &bt, true, true);
        assert_close(
            &at.matmul_t(&bt, true, true).unwrap(),
            a.matmul(&b).unwrap().dims(),
            &f64s(&a.matmul(&b).unwrap()),
            tol::<T>() * 24.0,
        );
    }
}
both!(batched_products_broadcast_batch_axes, batched);

fn degenerate<T: Element>() {
    // k = 0: a zero matrix; m or n = 0: empty
    let a = Tensor::<T>::zeros([3, 0]).unwrap();
    let b = Tensor::<T>::zeros([0, 2]).unwrap();
    assert_close(&a.matmul(&b).unwrap(), &[3, 2], &[0.0; 6], 0.0);
    assert_eq!(
        b.matmul(&Tensor::zeros([2, 4]).unwrap()).unwrap().dims(),
        &[0, 4]
    );
    assert_eq!(
        Tensor::<T>::zeros([2, 3])
            .unwrap()
            .matmul(&Tensor::zeros([3, 0]).unwrap())
            .unwrap()
            .dims(),
        &[2, 0]
    );
    assert_close(
        &Tensor::<T>::zeros([0])
            .unwrap()
            .matmul(&Tensor::zeros([0]).unwrap())
            .unwrap(),
        &[],
        &[0.0],
        0.0,
    );
    // NaN and infinity propagate
    let n: Tensor<T> = t(&[f64::NAN, 1., 1., 1.], &[2, 2]);
    let r = f64s(&n.matmul(&Tensor::eye(2).unwrap()).unwrap());
    assert!(r[0].is_nan() && r[1].is_nan() && r[2] == 1.0 && r[3] == 1.0);
}
both!(degenerate_shapes, degenerate);

fn large<T: Element>() {
    // above the threshold for splitting across threads: row blocks (m >= n),
    // column blocks (m < n), and a batch split by entry
    check::<T>(&iota(&[300, 70], 6), &iota(&[70, 200], 7), false, false);
    check::<T>(&iota(&[40, 130], 8), &iota(&[500, 130], 9), false, true);
    check::<T>(&iota(&[128, 100], 10), &iota(&[128, 256], 11), true, false);
    check::<T>(&iota(&[6, 40, 64], 12), &iota(&[64, 90], 13), false, false);
}
both!(products_above_the_parallel_threshold, large);

#[test]
fn products_do_not_depend_on_the_thread_count() {
    let mut rng = rime_tensor::seeded_rng(4);
    let a = Tensor::<f32>::rand_normal([257, 300], 0.0, 1.0, &mut rng).unwrap();
    let b = Tensor::<f32>::rand_normal([300, 190], 0.0, 1.0, &mut rng).unwrap();
    let c = Tensor::<f32>::rand_normal([8, 190, 33], 0.0, 1.0, &mut rng).unwrap();
    let row = Tensor::<f32>::rand_normal([1, 3000], 0.0, 1.0, &mut rng).unwrap();
    let w = Tensor::<f32>::rand_normal([3000, 1000], 0.0, 1.0, &mut rng).unwrap();
    let a17 = Tensor::<f32>::rand_normal([17, 300], 0.0, 1.0, &mut rng).unwrap();
    let run = || {
        (
            row.matmul(&w).unwrap(),
            w.matmul_t(&row, true, true).unwrap(),
            a17.matmul(&b).unwrap(),
            a.matmul(&b).unwrap(),
            b.matmul_t(&b, true, false).unwrap(),
            a.matmul(&b).unwrap().matmul(&c).unwrap(),
        )
    };
    let many = run();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(many, one);
}

fn blocks<T: Element>() {
    let a: Tensor<T> = iota(&[7, 6], 14);
    let b: Tensor<T> = iota(&[7, 5], 15);
    let full = a.matmul_t(&b, true, false).unwrap();
    let fv = f64s(&full);
    let rows = [0..2, 4..6];
    let cols = [1..2, 3..5];
    let part = a
        .matmul_t_blocks(&b, true, false, Some(&rows), Some(&cols))
        .unwrap();
    assert_eq!(part.dims(), &[6, 5]);
    for i in 0..6 {
        for j in 0..5 {
            let inside = rows.iter().any(|r| r.contains(&i)) && cols.iter().any(|c| c.contains(&j));
            let want = if inside { fv[i * 5 + j] } else { 0.0 };
            assert_eq!(
                part.get(&[i, j]).unwrap().to_f64().unwrap(),
                want,
                "({i}, {j})"
            );
        }
    }
    // None means all; empty lists compute nothing
    assert_eq!(
        a.matmul_t_blocks(&b, true, false, None, None).unwrap(),
        full
    );
    let none = a.matmul_t_blocks(&b, true, false, Some(&[]), None).unwrap();
    assert_close(&none, &[6, 5], &[0.0; 30], 0.0);
    let r = a
        .matmul_t_blocks(&b, true, false, Some(&[2..3]), None)
        .unwrap();
    assert_close(&r.narrow(0, 2, 1).unwrap(), &[1, 5], &fv[10..15], 0.0);
}
both!(row_and_column_blocks, blocks);

fn vector_products<T: Element>() {
    // one row or one column of output, every layout, small and large (the
    // matrix-vector kernels, split across threads when large)
    for (m, k, n) in [
        (1, 7, 5),
        (6, 9, 1),
        (1, 1, 1),
        (1, 2000, 1100),
        (1500, 1400, 1),
        (1, 3, 200),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            let (a, b) = (iota::<T>(&sa, 16), iota::<T>(&sb, 17));
            check(&a, &b, ta, tb);
            // a block of a vector product equals that part of the product
            let full = f64s(&a.matmul_t(&b, ta, tb).unwrap());
            let (r, c) = (m / 2..m, n / 3..n);
            let part = a
                .matmul_t_blocks(
                    &b,
                    ta,
                    tb,
                    Some(std::slice::from_ref(&r)),
                    Some(std::slice::from_ref(&c)),
                )
                .unwrap();
            let pv = f64s(&part);
            for i in 0..m {
                for j in 0..n {
                    let want = if r.contains(&i) && c.contains(&j) {
                        full[i * n + j]
                    } else {
                        0.0
                    };
                    assert_eq!(pv[i * n + j], want, "{m}x{k}x{n} ({i}, {j})");
                }
            }
        }
    }
    // batched vector products, and a batch of row vectors against one matrix
    check::<T>(&iota(&[5, 1, 30], 18), &iota(&[30, 20], 19), false, false);
    check::<T>(&iota(&[5, 30, 20], 20), &iota(&[5, 30, 1], 21), true, false);
}
both!(matrix_vector_products, vector_products);
