//! `gradient_of` and `Gradients` (src/gradients.rs): the same numbers as
//! the list form `gradient`, typed errors, lookups by source.

use rime_tape::{Error, GradientTape, TrainableMask, UnconnectedGradients, Variable};
use rime_tensor::Tensor;

fn var(name: &str, data: Vec<f64>, shape: &[usize]) -> Variable<f64> {
    Variable::new(name, Tensor::from_vec(data, shape).unwrap())
}

#[test]
fn gradient_of_matches_the_list_form_and_the_analytic_value() {
    // loss = sum((x·w)²), d/dw = 2 xᵀ(x·w)
    let w = var("w", vec![0.5, -1.0, 2.0, 0.25], &[2, 2]);
    let x = Tensor::from_vec(vec![1.0, 2.0, -3.0, 0.5], [2, 2]).unwrap();
    let tape = GradientTape::persistent();
    let loss = x.matmul(&w.value()).unwrap().square().sum_all();
    let single = tape.gradient_of(&loss, &w).unwrap();
    let list = tape.gradient(&loss, &[&w]).unwrap().remove(0).unwrap();
    assert_eq!(single.to_vec(), list.to_vec());
    // x·w = [[4.5, -0.5], [-0.5, 3.125]]; 2 xᵀ(x·w)
    let expected = [
        2.0 * (1.0 * 4.5 + -3.0 * -0.5),
        2.0 * (1.0 * -0.5 + -3.0 * 3.125),
        2.0 * (2.0 * 4.5 + 0.5 * -0.5),
        2.0 * (2.0 * -0.5 + 0.5 * 3.125),
    ];
    for (g, e) in single.to_vec().iter().zip(expected) {
        assert!((g - e).abs() < 1e-12, "{g} vs {e}");
    }
}

#[test]
fn unconnected_is_a_typed_error_or_zeros_as_asked() {
    let w = var("w", vec![1.0, 2.0], &[2]);
    let unused = var("unused", vec![1.0, 2.0, 3.0], &[3]);
    let tape = GradientTape::persistent();
    let loss = w.value().square().sum_all();
    let err = tape.gradient_of(&loss, &unused).unwrap_err();
    assert!(matches!(err, Error::Unconnected { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("gradient_of") && msg.contains("[3]"), "{msg}");
    let zeros = tape
        .gradient_of_with(&loss, &unused, UnconnectedGradients::Zero)
        .unwrap();
    assert_eq!(zeros.to_vec(), vec![0.0; 3]);
    // the failed call did not use up anything: the tape still answers
    assert_eq!(
        tape.gradient_of(&loss, &w).unwrap().to_vec(),
        vec![2.0, 4.0]
    );
}

#[test]
fn gradient_of_honours_the_mask_and_a_non_persistent_tape_answers_once() {
    let w = var("w", vec![1.0; 6], &[3, 2]);
    w.set_mask(Some(TrainableMask::freeze_rows(0..1))).unwrap();
    let x = Tensor::from_vec(vec![1.0; 12], [4, 3]).unwrap();
    let tape = GradientTape::new();
    let loss = x.matmul(&w.value()).unwrap().sum_all();
    let g = tape.gradient_of(&loss, &w).unwrap();
    assert_eq!(g.to_vec(), vec![0.0, 0.0, 4.0, 4.0, 4.0, 4.0]);
    assert!(matches!(
        tape.gradient_of(&loss, &w),
        Err(Error::TapeExhausted { .. })
    ));
}

#[test]
fn gradients_are_looked_up_by_variable_and_tensor() {
    let w = var("w", vec![1.0, -2.0], &[2]);
    let b = var("b", vec![0.5], &[1]);
    let unused = var("unused", vec![0.0], &[1]);
    let x = Tensor::from_vec(vec![3.0, 4.0], [2]).unwrap();
    let tape = GradientTape::new();
    tape.watch(&x);
    // loss = Σ w·x + 3b
    let loss = w
        .value()
        .mul(&x)
        .unwrap()
        .sum_all()
        .add(&b.value().sum_all().mul_scalar(3.0))
        .unwrap();
    let grads = tape
        .gradients(
            &loss,
            &[(&w).into(), (&unused).into(), (&x).into(), (&b).into()]
                as &[rime_tape::Source<'_, f64>],
        )
        .unwrap();
    assert_eq!(grads.len(), 4);
    assert_eq!(grads[&w].to_vec(), vec![3.0, 4.0]);
    assert_eq!(grads[&b].to_vec(), vec![3.0]);
    assert_eq!(grads[&x].to_vec(), vec![1.0, -2.0]);
    assert!(grads.get(&unused).is_none());
    assert!(grads.contains(&unused));
    let stranger = var("stranger", vec![0.0], &[1]);
    assert!(!grads.contains(&stranger) && grads.get(&stranger).is_none());
    // positional view, as optimizers take it
    assert!(grads[1].is_none());
    assert_eq!(grads[3].as_ref().unwrap().to_vec(), vec![3.0]);
    let as_vec: Vec<Option<Tensor<f64>>> = grads.into();
    assert_eq!(as_vec.len(), 4);
}

#[test]
#[should_panic(expected = "was not among the gradient's sources")]
fn indexing_with_a_stranger_panics_with_a_message() {
    let w = var("w", vec![1.0], &[1]);
    let tape = GradientTape::new();
    let grads = tape.gradients(&w.value().sum_all(), &[&w]).unwrap();
    let stranger = var("stranger", vec![0.0], &[1]);
    let _ = &grads[&stranger];
}

#[test]
fn operators_are_recorded_like_the_methods() {
    // f = Σ (2·x·x − x/4 + 1 − 3/(1+x) ) ; df/dx = 4x − 1/4 + 3/(1+x)²
    let x = var("x", vec![0.5, -0.25, 2.0], &[3]);
    let tape = GradientTape::new();
    let xv = x.value();
    let f = (2.0 * &xv * &xv - &xv / 4.0 + 1.0 - 3.0 / (1.0 + xv.clone())).sum_all();
    let g = tape.gradient_of(&f, &x).unwrap();
    for (gi, xi) in g.to_vec().iter().zip([0.5f64, -0.25, 2.0]) {
        let want = 4.0 * xi - 0.25 + 3.0 / ((1.0 + xi) * (1.0 + xi));
        assert!((gi - want).abs() < 1e-12, "{gi} vs {want}");
    }
}

// ---- gradient_deferred: which gradients are deferred, and their values ----

mod deferred {
    use rime_tape::{DeferredGradient, GradientTape, Source, TrainableMask, Variable};
    use rime_tensor::Tensor;

    fn iota(shape: [usize; 2], scale: f64) -> Tensor<f64> {
        let n = shape[0] * shape[1];
        Tensor::from_vec((0..n).map(|i| (i as f64 * scale).sin()).collect(), shape).unwrap()
    }

    fn bits(t: &Tensor<f64>) -> Vec<u64> {
        t.to_vec().iter().map(|x| x.to_bits()).collect()
    }

    fn is_product(g: &Option<DeferredGradient<f64>>) -> bool {
        matches!(g, Some(DeferredGradient::Product(_)))
    }

    /// The deferred gradients, computed, against `gradient`'s on a second
    /// tape over the same computation.
    fn check(f: impl Fn() -> Tensor<f64>, sources: &[Source<'_, f64>], deferred: &[bool]) {
        let tape = GradientTape::new();
        let loss = f();
        let got = tape.gradient_deferred(&loss, sources).unwrap();
        let tape = GradientTape::new();
        let loss = f();
        let want = tape.gradient(&loss, sources).unwrap();
        for (k, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert_eq!(is_product(&g), deferred[k], "source {k}");
            match (g, w) {
                (Some(g), Some(w)) => {
                    assert_eq!(g.shape(), *w.shape());
                    assert_eq!(bits(&g.into_tensor().unwrap()), bits(&w), "source {k}");
                }
                (None, None) => {}
                _ => panic!("source {k}: connected in one form only"),
            }
        }
    }

    #[test]
    fn a_single_matmul_use_is_deferred_with_the_same_bits() {
        let w = Variable::new("w", iota([37, 5], 0.3));
        let v = Variable::new("v", iota([5, 3], 0.7));
        let b = Variable::new("b", iota([1, 3], 0.1));
        let x = iota([9, 37], 0.11);
        let f = || {
            let h = x.matmul(&w.value()).unwrap().relu();
            h.matmul(&v.value())
                .unwrap()
                .add(&b.value())
                .unwrap()
                .square()
                .sum_all()
        };
        check(
            f,
            &[(&w).into(), (&v).into(), (&b).into()],
            &[true, true, false],
        );
        // transposed operands: y = x·wᵀ and y = wᵀ·x
        let wt = Variable::new("wt", iota([5, 37], 0.3));
        check(
            || {
                x.matmul_t(&wt.value(), false, true)
                    .unwrap()
                    .square()
                    .sum_all()
            },
            &[(&wt).into()],
            &[true],
        );
        let xt = iota([37, 4], 0.2);
        check(
            || {
                w.value()
                    .matmul_t(&xt, true, false)
                    .unwrap()
                    .sin()
                    .sum_all()
            },
            &[(&w).into()],
            &[true],
        );
    }

    /// For a batch of one the product is an outer product: its factors
    /// give each element with `gradient`'s bits, whatever the transposes.
    #[test]
    fn outer_factors_give_the_gradient_bits_for_a_batch_of_one() {
        let factors_match = |f: &dyn Fn() -> Tensor<f64>, w: &Variable<f64>, some: bool| {
            let tape = GradientTape::new();
            let loss = f();
            let got = tape.gradient_deferred(&loss, &[w]).unwrap();
            let Some(DeferredGradient::Product(p)) = &got[0] else {
                panic!("deferred")
            };
            let Some((a, b)) = p.outer_factors() else {
                assert!(!some, "factors of a {}x{} product", p.rows(), p.cols());
                return;
            };
            assert!(some);
            assert_eq!((a.len(), b.len()), (p.rows(), p.cols()));
            let elements: Vec<f64> = a
                .iter()
                .flat_map(|&s| b.iter().map(move |&v| s * v))
                .collect();
            let tape = GradientTape::new();
            let loss = f();
            let want = tape.gradient(&loss, &[w]).unwrap().pop().flatten().unwrap();
            let elements = Tensor::from_vec(elements, want.shape().clone()).unwrap();
            assert_eq!(bits(&elements), bits(&want));
        };
        let w = Variable::new("w", iota([37, 5], 0.3));
        let x = iota([1, 37], 0.11);
        factors_match(&|| x.matmul(&w.value()).unwrap().sin().sum_all(), &w, true);
        let wt = Variable::new("wt", iota([5, 37], 0.3));
        let f = || {
            x.matmul_t(&wt.value(), false, true)
                .unwrap()
                .sin()
                .sum_all()
        };
        factors_match(&f, &wt, true);
        let xt = iota([37, 1], 0.2);
        let f = || {
            w.value()
                .matmul_t(&xt, true, false)
                .unwrap()
                .sin()
                .sum_all()
        };
        factors_match(&f, &w, true);
        // a batch of two, and a one-column weight (a matrix-vector product)
        let x2 = iota([2, 37], 0.11);
        factors_match(
            &|| x2.matmul(&w.value()).unwrap().sin().sum_all(),
            &w,
            false,
        );
        let w1 = Variable::new("w1", iota([37, 1], 0.3));
        factors_match(
            &|| x.matmul(&w1.value()).unwrap().sin().sum_all(),
            &w1,
            false,
        );
    }

    #[test]
    fn a_second_contribution_falls_back_to_the_computed_gradient() {
        let w = Variable::new("w", iota([4, 4], 0.3));
        let x = iota([3, 4], 0.5);
        // used twice (a shared layer)
        check(
            || {
                let h = x.matmul(&w.value()).unwrap().tanh();
                h.matmul(&w.value()).unwrap().sum_all()
            },
            &[(&w).into()],
            &[false],
        );
        // a weight penalty on top of the product
        check(
            || {
                let wv = w.value();
                x.matmul(&wv)
                    .unwrap()
                    .sum_all()
                    .add(&wv.square().sum_all())
                    .unwrap()
            },
            &[(&w).into()],
            &[false],
        );
        // listed twice
        check(
            || x.matmul(&w.value()).unwrap().sum_all(),
            &[(&w).into(), (&w).into()],
            &[false, false],
        );
        // not a matmul use
        check(|| w.value().exp().sum_all(), &[(&w).into()], &[false]);
    }

    #[test]
    fn masks_are_honoured_by_the_computed_product() {
        let x = iota([6, 8], 0.5);
        for mask in [
            TrainableMask::freeze_rows(2..5),
            TrainableMask::cols(1..3),
            TrainableMask::predicate(|ix| (ix[0] + ix[1]) % 2 == 0),
        ] {
            let w = Variable::new("w", iota([8, 3], 0.3));
            w.set_mask(Some(mask)).unwrap();
            check(
                || x.matmul(&w.value()).unwrap().square().sum_all(),
                &[(&w).into()],
                &[true],
            );
        }
    }

    #[test]
    fn nothing_is_deferred_while_another_tape_records() {
        let w = Variable::new("w", iota([4, 2], 0.3));
        let x = iota([3, 4], 0.5);
        let outer = GradientTape::new();
        let inner = GradientTape::new();
        let loss = x.matmul(&w.value()).unwrap().square().sum_all();
        let g = inner.gradient_deferred(&loss, &[&w]).unwrap();
        assert!(matches!(g[0], Some(DeferredGradient::Dense(_))));
        // the outer tape recorded the gradient computation
        let g = match g[0].clone().unwrap() {
            DeferredGradient::Dense(t) => t,
            DeferredGradient::Product(_) => unreachable!(),
        };
        let second = outer.gradient(&g.sum_all(), &[&w]).unwrap();
        assert!(second[0].is_some());
    }

    #[test]
    fn product_blocks_and_panics_on_bad_ranges() {
        let w = Variable::new("w", iota([5, 3], 0.3));
        let x = iota([2, 5], 0.5);
        let tape = GradientTape::new();
        let loss = x.matmul(&w.value()).unwrap().sum_all();
        let g = tape
            .gradient_deferred(&loss, &[&w])
            .unwrap()
            .remove(0)
            .unwrap();
        let DeferredGradient::Product(p) = &g else {
            panic!("deferred")
        };
        assert_eq!((p.rows(), p.cols(), p.inner()), (5, 3, 2));
        let full = g.clone().into_tensor().unwrap().to_vec();
        let mut rows = vec![0.0; 6];
        p.rows_into(3..5, &mut rows);
        assert_eq!(rows, full[9..15]);
        let bad = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.rows_into(4..6, &mut [0.0; 6]);
        }));
        assert!(bad.is_err());
    }
}

// ---- the fused dense op against the unfused op chain, bit for bit ----

mod dense {
    use proptest::prelude::*;
    use rime_tape::{
        DeferredGradient, GradientOptions, GradientTape, TrainableMask, UnconnectedGradients,
        Variable,
    };
    use rime_tensor::{DenseActivation, Element, Error as TensorError, Tensor};

    const ACTIVATIONS: [DenseActivation; 4] = [
        DenseActivation::Linear,
        DenseActivation::Relu,
        DenseActivation::Sigmoid,
        DenseActivation::Tanh,
    ];

    /// Bit patterns, every NaN as one value: Rust leaves the sign and
    /// payload of a NaN result unspecified (LLVM may swap the operands of
    /// an add, and x86 returns the first operand's NaN), so the same
    /// formula may give either NaN; every other value (-0 included) is
    /// compared bit for bit.
    trait Bits: Element {
        fn bits(t: &Tensor<Self>) -> Vec<u64>;
    }
    impl Bits for f32 {
        fn bits(t: &Tensor<f32>) -> Vec<u64> {
            let canonical = |v: &f32| {
                if v.is_nan() {
                    u64::MAX
                } else {
                    v.to_bits() as u64
                }
            };
            t.to_vec().iter().map(canonical).collect()
        }
    }
    impl Bits for f64 {
        fn bits(t: &Tensor<f64>) -> Vec<u64> {
            let canonical = |v: &f64| if v.is_nan() { u64::MAX } else { v.to_bits() };
            t.to_vec().iter().map(canonical).collect()
        }
    }

    fn unfused<T: Element>(
        x: &Tensor<T>,
        w: &Tensor<T>,
        b: Option<&Tensor<T>>,
        act: DenseActivation,
    ) -> Tensor<T> {
        let mut z = x.matmul(w).unwrap();
        if let Some(b) = b {
            z = z.add(b).unwrap();
        }
        match act {
            DenseActivation::Linear => z,
            DenseActivation::Relu => z.relu(),
            DenseActivation::Sigmoid => z.sigmoid(),
            DenseActivation::Tanh => z.tanh(),
            other => unreachable!("{other:?}"),
        }
    }

    /// The output and the gradients (x, kernel, bias) of `<f(x, w, b), ct>`.
    fn forward_backward<T: Element>(
        f: impl Fn(&Tensor<T>, &Tensor<T>, Option<&Tensor<T>>) -> Tensor<T>,
        x: &Tensor<T>,
        w: &Tensor<T>,
        b: Option<&Tensor<T>>,
        ct: &Tensor<T>,
    ) -> Vec<Tensor<T>> {
        let tape = GradientTape::new();
        let mut sources = vec![x, w];
        sources.extend(b);
        for s in &sources {
            tape.watch(*s);
        }
        let y = f(x, w, b);
        let grads = tape
            .gradient_with(
                &[&y],
                &sources,
                GradientOptions {
                    output_gradients: Some(std::slice::from_ref(ct)),
                    unconnected: UnconnectedGradients::Zero,
                },
            )
            .unwrap();
        let mut out = vec![y];
        out.extend(grads.into_iter().map(|g| g.unwrap()));
        out
    }

    fn compare<T: Bits>(m: usize, k: usize, n: usize, values: &[f64]) {
        let mut v = values.iter().cycle().map(|&v| T::of(v));
        let mut take = |shape: &[usize]| {
            let len = shape.iter().product();
            Tensor::from_vec(v.by_ref().take(len).collect(), shape).unwrap()
        };
        let (x, w, b, ct) = (take(&[m, k]), take(&[k, n]), take(&[n]), take(&[m, n]));
        for act in ACTIVATIONS {
            for bias in [Some(&b), None] {
                let fused =
                    forward_backward(|x, w, b| x.dense(w, b, act).unwrap(), &x, &w, bias, &ct);
                let want = forward_backward(|x, w, b| unfused(x, w, b, act), &x, &w, bias, &ct);
                for (i, (g, w)) in fused.iter().zip(&want).enumerate() {
                    assert_eq!(
                        T::bits(g),
                        T::bits(w),
                        "{} {act:?} bias {} {m}x{k}x{n}: {}",
                        T::DTYPE,
                        bias.is_some(),
                        ["y", "dx", "dkernel", "dbias"][i]
                    );
                }
            }
        }
    }

    /// Mostly ordinary values, with signed zeros, NaN and infinities.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            40 => -2.0..2.0f64,
            2 => Just(0.0),
            2 => Just(-0.0),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn fused_matches_the_op_chain_bit_for_bit(
            (m, k, n, values) in (1usize..=24, 0usize..=20, 1usize..=40)
                .prop_flat_map(|(m, k, n)| (Just(m), Just(k), Just(n), prop::collection::vec(value(), 64)))
        ) {
            compare::<f32>(m, k, n, &values);
            compare::<f64>(m, k, n, &values);
        }
    }

    /// Products large enough for the parallel kernels, and relu's edge
    /// values (-0 and NaN after the bias add, 0 · inf).
    #[test]
    fn fused_matches_at_large_shapes_and_relu_edges() {
        let values: Vec<f64> = (0..997)
            .map(|i| (i * 37 % 101) as f64 / 50.0 - 1.0)
            .collect();
        compare::<f32>(150, 130, 140, &values);
        compare::<f64>(1, 300, 257, &values);
        compare::<f64>(129, 64, 1, &values);
        // the bias gradient's one-pass form at its limit (256 rows, enough
        // elements for `sum_to`'s parallel path) and the ops beyond it
        compare::<f32>(256, 3, 2100, &values);
        compare::<f64>(300, 5, 7, &values);
        let edges = [0.0, -0.0, 1.0, f64::NAN, -1.0, f64::INFINITY, -0.0, 0.5];
        compare::<f32>(3, 2, 4, &edges);
        compare::<f64>(5, 1, 3, &edges);
    }

    #[test]
    fn bad_shapes_are_typed_errors_and_record_nothing() {
        let w = Variable::new("w", Tensor::<f64>::ones([3, 2]).unwrap());
        let x = Tensor::<f64>::ones([4, 3]).unwrap();
        let tape = GradientTape::new();
        let wv = w.value(); // one read, used by every call below
        let e = x
            .dense(
                &wv,
                Some(&Tensor::ones([3]).unwrap()),
                DenseActivation::Relu,
            )
            .unwrap_err();
        assert!(
            matches!(e, TensorError::ShapeMismatch { op: "dense", .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("[3, 2]") && e.to_string().contains("[3]"),
            "{e}"
        );
        let e = x.dense(&x, None, DenseActivation::Tanh).unwrap_err();
        assert!(
            matches!(e, TensorError::ShapeMismatch { op: "dense", .. }),
            "{e}"
        );
        let e = wv.dense(&wv, None, DenseActivation::Tanh).unwrap_err();
        assert!(
            matches!(e, TensorError::ShapeMismatch { op: "dense", .. }),
            "{e}"
        );
        // the failed ops left no node: the read's only use is the one below
        // (a second use would make its gradient a computed one)
        let y = x.dense(&wv, None, DenseActivation::Tanh).unwrap();
        let g = tape.gradient_deferred(&y.sum_all(), &[&w]).unwrap();
        assert!(matches!(g[0], Some(DeferredGradient::Product(_))));
    }

    /// The kernel's gradient stays a deferred product (the optimizer's
    /// fused path), with the bits of the computed gradient; the bias and
    /// the input get theirs; masks are honoured.
    #[test]
    fn the_kernel_gradient_is_deferred() {
        let iota = |shape: [usize; 2], s: f64| {
            Tensor::<f64>::from_vec(
                (0..shape[0] * shape[1])
                    .map(|i| (i as f64 * s).sin())
                    .collect(),
                shape,
            )
            .unwrap()
        };
        for act in ACTIVATIONS {
            for mask in [
                None,
                Some(TrainableMask::freeze_rows(1..3)),
                Some(TrainableMask::cols(0..1)),
            ] {
                let w = Variable::new("w", iota([5, 3], 0.3));
                w.set_mask(mask).unwrap();
                let b = Variable::new("b", Tensor::vector(vec![0.1, -0.2, 0.3]));
                let xv = Variable::new("x", iota([7, 5], 0.7));
                let loss = || {
                    xv.value()
                        .dense(&w.value(), Some(&b.value()), act)
                        .unwrap()
                        .square()
                        .sum_all()
                };
                let tape = GradientTape::new();
                let got = tape.gradient_deferred(&loss(), &[&w, &b, &xv]).unwrap();
                let tape = GradientTape::new();
                let want = tape.gradient(&loss(), &[&w, &b, &xv]).unwrap();
                for (k, (g, want)) in got.into_iter().zip(want).enumerate() {
                    let g = g.unwrap();
                    // the kernel and the input are products, the bias is not
                    assert_eq!(
                        matches!(g, DeferredGradient::Product(_)),
                        k != 1,
                        "{act:?} {k}"
                    );
                    let g = g.into_tensor().unwrap();
                    assert_eq!(
                        f64::bits(&g),
                        f64::bits(&want.unwrap()),
                        "{act:?} source {k}"
                    );
                }
            }
        }
    }
}
