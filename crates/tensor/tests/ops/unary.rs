//! The unary functions (`ops/unary.rs`), against hand-written values and
//! naive loops.

use rime_tensor::{Element, Tensor};

use crate::{assert_close, both, f64s, t};

type UnFn<T> = Box<dyn Fn(&Tensor<T>) -> Tensor<T>>;
type UnCase<T> = (&'static str, UnFn<T>, fn(f64) -> f64);

fn unary_table<T: Element>() -> Vec<UnCase<T>> {
    vec![
        ("neg", Box::new(|x| x.neg()), |v| -v),
        ("abs", Box::new(|x| x.abs()), f64::abs),
        ("exp", Box::new(|x| x.exp()), f64::exp),
        (
            "ln",
            Box::new(|x| x.abs().add_scalar(T::of(0.01)).ln()),
            |v| (v.abs() + 0.01).ln(),
        ),
        ("sqrt", Box::new(|x| x.abs().sqrt()), |v| v.abs().sqrt()),
        ("square", Box::new(|x| x.square()), |v| v * v),
        (
            "recip",
            Box::new(|x| x.add_scalar(T::of(9.0)).recip()),
            |v| 1.0 / (v + 9.0),
        ),
        ("sin", Box::new(|x| x.sin()), f64::sin),
        ("cos", Box::new(|x| x.cos()), f64::cos),
        ("tanh", Box::new(|x| x.tanh()), f64::tanh),
        ("sigmoid", Box::new(|x| x.sigmoid()), |v| {
            1.0 / (1.0 + (-v).exp())
        }),
        ("relu", Box::new(|x| x.relu()), |v| v.max(0.0)),
        ("leaky_relu", Box::new(|x| x.leaky_relu(T::of(0.3))), |v| {
            if v > 0.0 { v } else { 0.3 * v }
        }),
        ("gelu", Box::new(|x| x.gelu()), |v| {
            0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()))
        }),
        ("erf", Box::new(|x| x.erf()), libm::erf),
        ("softplus", Box::new(|x| x.softplus()), |v| v.exp().ln_1p()),
        (
            "clamp",
            Box::new(|x| x.clamp(T::of(-0.5), T::of(1.25)).unwrap()),
            |v| v.clamp(-0.5, 1.25),
        ),
        ("sign", Box::new(|x| x.sign()), |v| {
            if v == 0.0 { 0.0 } else { v.signum() }
        }),
    ]
}

fn unary<T: Element>() {
    // a grid over [-8, 8], and sizes above the parallel threshold
    for n in [1usize, 7, 33, 1001, 300_001] {
        let xs: Vec<f64> = (0..n).map(|i| -8.0 + 16.0 * i as f64 / n as f64).collect();
        let x: Tensor<T> = t(&xs, &[n]);
        let xr = f64s(&x);
        for (name, f, r) in unary_table::<T>() {
            let y = f(&x);
            assert_eq!(y.dims(), &[n], "{name}");
            let ys = f64s(&y);
            // f32 transcendental functions: a few ulp of the result
            let rel = if T::DTYPE == rime_tensor::DType::F32 {
                1e-6
            } else {
                1e-14
            };
            let abs = if T::DTYPE == rime_tensor::DType::F32 {
                1e-7
            } else {
                1e-15
            };
            for i in (0..n).step_by((n / 97).max(1)) {
                let want = r(xr[i]);
                assert!(
                    (ys[i] - want).abs() <= abs + rel * want.abs(),
                    "{name}({}) = {} want {want} (n = {n})",
                    xr[i],
                    ys[i]
                );
            }
        }
    }
}
both!(unary_functions_match_f64_references, unary);

fn unary_edges<T: Element>() {
    let x: Tensor<T> = t(
        &[-1000., -0.0, 0.0, 1000., f64::INFINITY, f64::NEG_INFINITY],
        &[6],
    );
    assert_eq!(f64s(&x.sigmoid()), vec![0.0, 0.5, 0.5, 1.0, 1.0, 0.0]);
    assert_eq!(f64s(&x.tanh()), vec![-1.0, 0.0, 0.0, 1.0, 1.0, -1.0]);
    assert_eq!(
        f64s(&x.relu()),
        vec![0.0, 0.0, 0.0, 1000.0, f64::INFINITY, 0.0]
    );
    let sp = f64s(&x.softplus());
    assert_eq!(
        &sp[..4],
        &[0.0, 2f64.ln(), 2f64.ln(), 1000.0].map(|v| T::of(v).to_f64().unwrap())[..]
    );
    assert_eq!(sp[4], f64::INFINITY);
    let e = f64s(&x.exp());
    assert_eq!(e[0], 0.0);
    assert_eq!(e[3], f64::INFINITY);
    assert_eq!((e[1], e[2], e[4], e[5]), (1.0, 1.0, f64::INFINITY, 0.0));
    // NaN in, NaN out, for the functions defined everywhere
    let n: Tensor<T> = t(&[f64::NAN], &[1]);
    for (name, f, _) in unary_table::<T>() {
        if name == "relu" || name == "clamp" || name == "leaky_relu" {
            continue;
        }
        assert!(f64s(&f(&n))[0].is_nan(), "{name}(NaN)");
    }
    // sign keeps zeros (and their sign)
    let s = x.sign();
    assert_eq!(f64s(&s)[..3], [-1.0, 0.0, 0.0]);
    assert!(s.as_slice()[1].is_sign_negative());
    // shape and rank 0 are kept
    let sc = Tensor::scalar(T::of(0.5));
    assert_eq!(sc.exp().rank(), 0);
    assert_eq!(Tensor::<T>::zeros([2, 0]).unwrap().tanh().dims(), &[2, 0]);
    // clamp with equal bounds
    assert_close(
        &t::<T>(&[-3., 3.], &[2]).clamp(T::one(), T::one()).unwrap(),
        &[2],
        &[1., 1.],
        0.0,
    );
}
both!(unary_special_values, unary_edges);

#[test]
fn f32_exp_and_tanh_are_within_a_few_ulp_everywhere() {
    // dense scan of the f32 range where exp is finite and non-zero
    let xs: Vec<f32> = (0..200_000)
        .map(|i| -103.0 + 191.7 * i as f32 / 200_000.0)
        .collect();
    let x = Tensor::vector(xs.clone());
    let (e, th, sg) = (x.exp(), x.tanh(), x.sigmoid());
    for (i, &v) in xs.iter().enumerate() {
        let want = (v as f64).exp();
        let got = e.as_slice()[i] as f64;
        let err = (got - want).abs() / want.max(f32::MIN_POSITIVE as f64);
        assert!(
            err < 2.5e-7 || (got - want).abs() < 2e-45,
            "exp({v}) = {got}, want {want}"
        );
        let want = (v as f64).tanh();
        let got = th.as_slice()[i] as f64;
        assert!(
            (got - want).abs() <= 3.6e-7 * want.abs(),
            "tanh({v}) = {got}, want {want}"
        );
        let want = 1.0 / (1.0 + (-(v as f64)).exp());
        let got = sg.as_slice()[i] as f64;
        assert!(
            (got - want).abs() <= 5e-7 * want + 1e-44,
            "sigmoid({v}) = {got}, want {want}"
        );
    }
}
