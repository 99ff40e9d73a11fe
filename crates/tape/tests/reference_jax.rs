//! Higher derivatives through nested tapes, and gradients of op families on
//! fixed inputs, against JAX (float64). `reference/gen_tape_fixtures.py`
//! wrote `reference/tape_fixtures.json`; the inputs are in the JSON, so
//! these tests never need Python. The derivatives of sin and tanh are also
//! checked against their hand derivation.

mod common;

use std::sync::OnceLock;

use common::assert_close;
use rime_tape::{GradientOptions, GradientTape, Source, UnconnectedGradients, Variable};
use rime_tensor::Tensor;
use serde_json::Value;

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        serde_json::from_str(include_str!("reference/tape_fixtures.json"))
            .expect("tape_fixtures.json parses")
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn tensor(v: &Value) -> Tensor<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    Tensor::from_vec(floats(&v["data"]), shape).expect("fixture data fits its shape")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an index") as usize)
        .collect()
}

type Elementwise = fn(&Tensor<f64>) -> Tensor<f64>;

/// `n`-th derivative of `f` at every point of `x`, by `n` nested tapes:
/// each tape's gradient is recorded by the tapes outside it.
fn nth_derivative(f: Elementwise, x: &Tensor<f64>, n: usize) -> Tensor<f64> {
    fn go(f: Elementwise, x: &Tensor<f64>, n: usize) -> Tensor<f64> {
        if n == 0 {
            return f(x);
        }
        let tape = GradientTape::new();
        tape.watch(x);
        let y = go(f, x, n - 1);
        // elementwise f: the gradient of the sum is the elementwise derivative
        tape.gradient(&y, &[x]).unwrap().remove(0).unwrap()
    }
    go(f, x, n)
}

#[test]
fn second_and_third_derivatives_of_sin_and_tanh() {
    let fx = &fixtures()["derivatives"];
    let xs = floats(&fx["x"]);
    let x = Tensor::from_vec(xs.clone(), [xs.len()]).unwrap();
    let funcs: [(&str, Elementwise); 2] = [("sin", |x| x.sin()), ("tanh", |x| x.tanh())];
    for (name, f) in funcs {
        for (order, key) in [(1, "d1"), (2, "d2"), (3, "d3")] {
            let got = nth_derivative(f, &x, order);
            assert_close(
                &got.to_vec(),
                &floats(&fx[name][key]),
                1e-13,
                1e-12,
                &format!("{name} {key} vs JAX"),
            );
        }
    }
    // and by hand: sin'' = -sin, tanh'' = -2 tanh (1 - tanh²)
    let d2_sin = nth_derivative(|x| x.sin(), &x, 2).to_vec();
    let d2_tanh = nth_derivative(|x| x.tanh(), &x, 2).to_vec();
    let d3_sin = nth_derivative(|x| x.sin(), &x, 3).to_vec();
    for (i, &v) in xs.iter().enumerate() {
        let th = v.tanh();
        assert!((d2_sin[i] + v.sin()).abs() < 1e-14, "sin'' at {v}");
        assert!(
            (d2_tanh[i] + 2.0 * th * (1.0 - th * th)).abs() < 1e-14,
            "tanh'' at {v}"
        );
        assert!((d3_sin[i] + v.cos()).abs() < 1e-14, "sin''' at {v}");
    }
}

#[test]
fn second_derivative_in_f32() -> rime_tape::Result<()> {
    let x = Tensor::vector(vec![0.3f32, -1.2]);
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    let y = x.mul(&x)?.mul(&x)?; // x³
    let dy = inner.gradient(&y, &[&x])?.remove(0).unwrap(); // 3x²
    let d2y = outer.gradient(&dy, &[&x])?.remove(0).unwrap(); // 6x
    let d1 = dy.to_vec();
    assert!(
        (d1[0] - 0.27).abs() < 1e-6 && (d1[1] - 4.32).abs() < 1e-5,
        "{d1:?}"
    );
    let d2 = d2y.to_vec();
    assert!(
        (d2[0] - 1.8).abs() < 1e-6 && (d2[1] + 7.2).abs() < 1e-5,
        "{d2:?}"
    );
    Ok(())
}

struct Mlp {
    w1: Variable<f64>,
    b1: Variable<f64>,
    w2: Variable<f64>,
    b2: Variable<f64>,
}

impl Mlp {
    fn vars(&self) -> [&Variable<f64>; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    fn loss(&self, x: &Tensor<f64>, labels: &[usize]) -> rime_tape::Result<Tensor<f64>> {
        let h = x.matmul(&self.w1.value())?.add(&self.b1.value())?.tanh();
        let logits = h.matmul(&self.w2.value())?.add(&self.b2.value())?;
        Ok(logits.sparse_softmax_cross_entropy(labels)?.mean_all())
    }
}

const NAMES: [&str; 4] = ["w1", "b1", "w2", "b2"];

#[test]
fn hessian_vector_product_of_an_mlp_loss() -> rime_tape::Result<()> {
    let f = &fixtures()["mlp_hvp"];
    let x = tensor(&f["x"]);
    let labels = usizes(&f["labels"]);
    let p = |n: &str| Variable::new(n, tensor(&f["params"][n]));
    let mlp = Mlp {
        w1: p("w1"),
        b1: p("b1"),
        w2: p("w2"),
        b2: p("b2"),
    };
    let v: Vec<Tensor<f64>> = NAMES.iter().map(|n| tensor(&f["v"][*n])).collect();

    let outer = GradientTape::new();
    let inner = GradientTape::new();
    let loss = mlp.loss(&x, &labels)?;
    let grads = inner.gradient(&loss, &mlp.vars())?;
    drop(inner);
    // <∇L, v>, recorded on the outer tape
    let mut dot = Tensor::scalar(0.0);
    for (g, v) in grads.iter().zip(&v) {
        let g = g.as_ref().expect("every weight is connected");
        dot = dot.add(&g.mul(v)?.sum_all())?;
    }
    let hvp = outer.gradient(&dot, &mlp.vars())?;

    assert!((loss.to_scalar()? - f["loss"].as_f64().unwrap()).abs() < 1e-13);
    for (i, n) in NAMES.iter().enumerate() {
        assert_close(
            &grads[i].as_ref().unwrap().to_vec(),
            &tensor(&f["grad"][*n]).to_vec(),
            1e-13,
            1e-11,
            &format!("grad {n}"),
        );
        assert_close(
            &hvp[i].as_ref().unwrap().to_vec(),
            &tensor(&f["hvp"][*n]).to_vec(),
            1e-12,
            1e-10,
            &format!("hvp {n}"),
        );
    }
    Ok(())
}

struct Critic {
    w1: Variable<f64>,
    b1: Variable<f64>,
    w2: Variable<f64>,
}

impl Critic {
    fn call(&self, x: &Tensor<f64>) -> rime_tape::Result<Tensor<f64>> {
        Ok(x.matmul(&self.w1.value())?
            .add(&self.b1.value())?
            .softplus()
            .matmul(&self.w2.value())?)
    }

    /// d(Σ f)/dx, recorded on every outer tape.
    fn input_grad(&self, x: &Tensor<f64>) -> rime_tape::Result<Tensor<f64>> {
        let tape = GradientTape::new();
        tape.watch(x);
        let y = self.call(x)?.sum_all();
        Ok(tape.gradient(&y, &[x])?.remove(0).expect("connected"))
    }
}

#[test]
fn gradient_penalties_differentiated_with_respect_to_the_weights() -> rime_tape::Result<()> {
    let f = &fixtures()["grad_penalty"];
    let x = tensor(&f["x"]);
    let p = |n: &str| Variable::new(n, tensor(&f["params"][n]));
    let critic = Critic {
        w1: p("w1"),
        b1: p("b1"),
        w2: p("w2"),
    };
    let vars = [&critic.w1, &critic.b1, &critic.w2];
    let batch = x.dims()[0] as f64;

    // ‖∇ₓf‖² / batch
    let tape = GradientTape::new();
    let g = critic.input_grad(&x)?;
    assert_close(
        &g.to_vec(),
        &tensor(&f["input_grad"]).to_vec(),
        1e-14,
        1e-12,
        "input grad",
    );
    let penalty = g.square().sum_all().div_scalar(batch);
    let d = tape.gradient(&penalty, &vars)?;
    assert!((penalty.to_scalar()? - f["penalty_sq"].as_f64().unwrap()).abs() < 1e-13);
    for (i, n) in ["w1", "b1", "w2"].iter().enumerate() {
        assert_close(
            &d[i].as_ref().unwrap().to_vec(),
            &tensor(&f["d_penalty_sq"][*n]).to_vec(),
            1e-13,
            1e-11,
            &format!("d penalty_sq / d {n}"),
        );
    }

    // WGAN-GP: mean((‖∇ₓf‖ - 1)²) per example
    let tape = GradientTape::new();
    let g = critic.input_grad(&x)?;
    let norms = g.square().sum(&[1], false)?.sqrt();
    let penalty = norms.sub_scalar(1.0).square().mean_all();
    let d = tape.gradient(&penalty, &vars)?;
    assert!((penalty.to_scalar()? - f["penalty_gp"].as_f64().unwrap()).abs() < 1e-13);
    for (i, n) in ["w1", "b1", "w2"].iter().enumerate() {
        assert_close(
            &d[i].as_ref().unwrap().to_vec(),
            &tensor(&f["d_penalty_gp"][*n]).to_vec(),
            1e-13,
            1e-11,
            &format!("d penalty_gp / d {n}"),
        );
    }
    Ok(())
}

/// The same penalty with the weights watched explicitly on a tape that
/// does not watch accessed variables, and with x also a source of the
/// outer tape (mixed sources).
#[test]
fn gradient_penalty_with_explicit_watch_and_mixed_sources() -> rime_tape::Result<()> {
    let f = &fixtures()["grad_penalty"];
    let x = tensor(&f["x"]);
    let p = |n: &str| Variable::new(n, tensor(&f["params"][n]));
    let critic = Critic {
        w1: p("w1"),
        b1: p("b1"),
        w2: p("w2"),
    };
    let tape = GradientTape::builder()
        .watch_accessed_variables(false)
        .start();
    tape.watch(&critic.w1);
    tape.watch(&critic.w2);
    let g = critic.input_grad(&x)?;
    let penalty = g.square().sum_all().div_scalar(x.dims()[0] as f64);
    let d = tape.gradient_with(
        &[&penalty],
        &[
            Source::from(&critic.w1),
            Source::from(&critic.b1),
            Source::from(&critic.w2),
        ],
        GradientOptions::default(),
    )?;
    assert_close(
        &d[0].as_ref().unwrap().to_vec(),
        &tensor(&f["d_penalty_sq"]["w1"]).to_vec(),
        1e-13,
        1e-11,
        "w1",
    );
    assert!(d[1].is_none(), "b1 is not watched by the outer tape");
    assert_close(
        &d[2].as_ref().unwrap().to_vec(),
        &tensor(&f["d_penalty_sq"]["w2"]).to_vec(),
        1e-13,
        1e-11,
        "w2",
    );
    Ok(())
}

type Vjp = fn(&[Tensor<f64>]) -> rime_tape::Result<Tensor<f64>>;

fn vjp_fn(name: &str) -> Vjp {
    match name {
        "add_broadcast" => |v| Ok(v[0].add(&v[1])?),
        "mul_rank0" => |v| Ok(v[0].mul(&v[1])?),
        "div_broadcast" => |v| Ok(v[0].div(&v[1])?),
        "pow" => |v| Ok(v[0].pow(&v[1])?),
        "matmul_batched_broadcast" => |v| Ok(v[0].matmul(&v[1])?),
        "matmul_transposed" => |v| Ok(v[0].matmul_t(&v[1], true, true)?),
        "logsumexp_axes" => |v| Ok(v[0].logsumexp(&[0, 2], true)?),
        "var_axis" => |v| Ok(v[0].var(&[1], false)?),
        "softmax_axis0" => |v| Ok(v[0].softmax(0)?),
        "log_softmax_last" => |v| Ok(v[0].log_softmax(-1)?),
        "sparse_softmax_ce" => |v| {
            let labels = usizes(&fixtures()["vjp_meta"]["sparse_softmax_ce_labels"]);
            Ok(v[0].sparse_softmax_cross_entropy(&labels)?)
        },
        "softmax_ce" => |v| Ok(v[0].softmax_cross_entropy(&v[1])?),
        "gelu_erf_softplus" => |v| Ok(v[0].gelu().add(&v[0].erf().mul(&v[0].softplus())?)?),
        "gather" => |v| {
            let m = &fixtures()["vjp_meta"];
            let ids: Vec<i64> = usizes(&m["gather_indices"])
                .iter()
                .map(|&i| i as i64)
                .collect();
            Ok(v[0].gather(1, &Tensor::from_vec(ids, usizes(&m["gather_index_shape"]))?)?)
        },
        "concat_pad_slice" => |v| {
            let c = Tensor::concat(&[&v[0], &v[1]], 1)?;
            let p = c.pad(&[(1, 0), (0, 2)])?;
            let rows = p.dims()[0];
            Ok(p.slice(&[0..rows, 1..5])?)
        },
        other => panic!("no rime function for fixture case {other}"),
    }
}

#[test]
fn vector_jacobian_products_of_op_families() -> rime_tape::Result<()> {
    let cases = fixtures()["vjp"].as_object().expect("cases");
    assert_eq!(cases.len(), 15);
    for (name, case) in cases {
        let f = vjp_fn(name);
        let inputs: Vec<Tensor<f64>> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor)
            .collect();
        let ct = tensor(&case["ct"]);
        let tape = GradientTape::new();
        inputs.iter().for_each(|x| tape.watch(x));
        let y = f(&inputs)?;
        assert_eq!(y.shape(), ct.shape(), "{name}: output shape");
        assert_close(
            &y.to_vec(),
            &tensor(&case["y"]).to_vec(),
            1e-14,
            1e-12,
            name,
        );
        let grads = tape.gradient_with(
            &[&y],
            &inputs,
            GradientOptions {
                output_gradients: Some(std::slice::from_ref(&ct)),
                unconnected: UnconnectedGradients::Zero,
            },
        )?;
        for (i, want) in case["grads"].as_array().unwrap().iter().enumerate() {
            let want = tensor(want);
            let got = grads[i].as_ref().unwrap();
            assert_eq!(got.shape(), want.shape(), "{name}: gradient {i} shape");
            assert_close(
                &got.to_vec(),
                &want.to_vec(),
                1e-13,
                1e-11,
                &format!("{name}: gradient {i}"),
            );
        }
    }
    Ok(())
}
