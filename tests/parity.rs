//! Reference parity with Keras 3 (TensorFlow backend): op gradients, second
//! derivatives, losses, bare optimizer updates and 20-step optimizer
//! trajectories, compared with the numbers Keras gives for the same
//! problems. tests/reference/gen_parity_fixtures.py wrote
//! parity_fixtures.json (every input is in the JSON, so these tests never
//! need Python; the script's docstring describes each section).
//!
//! Tolerances, all of the form `tol · max(|keras|, 1)`:
//! - op gradients, second and third derivatives, losses (float64): 1e-10
//!   (the observed agreement is ~1e-15);
//! - bare optimizer updates (float32, no forward pass): 1e-6 (most agree
//!   bit for bit; clipping norms and schedules differ by an ulp or two);
//! - trajectories of a 6-8-3 ReLU MLP (float32, like Keras' default): 1e-5.
//!
//! The frozen-row runs freeze `W1[0..k, :]` with a `TrainableMask` (the
//! Keras side masks the gradient and restores the rows with a constraint)
//! and also check that the frozen rows stay bit-identical.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rime::layers::losses::Reduction;
use rime::layers::optimizers::{
    CosineDecay, ExponentialDecay, LearningRateSchedule, PiecewiseConstantDecay,
};
use rime::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------- helpers

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let text = include_str!("reference/parity_fixtures.json");
        serde_json::from_str(text).expect("parity_fixtures.json parses")
    })
}

const F64_TOL: f64 = 1e-10;
const F32_TOL: f64 = 1e-5;

fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("not an array fixture: {v}"))
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect()
}

fn data_of(v: &Value) -> Vec<f64> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not an array fixture: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A `{"shape", "data"}` fixture as an f64 tensor.
fn t64(v: &Value) -> Tensor<f64> {
    Tensor::from_vec(data_of(v), shape_of(v)).expect("fixture shape")
}

/// A `{"shape", "data"}` fixture as an f32 tensor (the data are f32 values).
fn t32(v: &Value) -> Tensor<f32> {
    let data = data_of(v).into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(data, shape_of(v)).expect("fixture shape")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("index") as usize)
        .collect()
}

fn isizes(v: &Value) -> Vec<isize> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_i64().expect("axis") as isize)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Collects mismatches, so one run reports every failing value at once.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    /// `|actual − expected| <= tol · max(|expected|, 1)` element-wise, and
    /// equal shapes.
    fn values(&mut self, what: &str, shape: &[usize], actual: &[f64], expected: &Value, tol: f64) {
        let (eshape, edata) = (shape_of(expected), data_of(expected));
        if shape != eshape.as_slice() {
            self.0.push(format!(
                "{what}: rime shape {shape:?}, keras shape {eshape:?}"
            ));
            return;
        }
        self.slice(what, actual, &edata, tol);
    }

    fn slice(&mut self, what: &str, actual: &[f64], expected: &[f64], tol: f64) {
        if actual.len() != expected.len() {
            self.0.push(format!(
                "{what}: rime has {} values, keras {}",
                actual.len(),
                expected.len()
            ));
            return;
        }
        let mut worst: Option<(usize, f64)> = None;
        let mut bad = 0;
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            let err = (a - e).abs() / e.abs().max(1.0);
            if err.is_nan() || err > tol {
                bad += 1;
                if worst.is_none_or(|(_, w)| err > w || err.is_nan()) {
                    worst = Some((i, err));
                }
            }
        }
        if let Some((i, err)) = worst {
            self.0.push(format!(
                "{what}: {bad} of {} values off; worst [{i}]: rime {:e} vs keras {:e} (scaled error {err:.2e}, tolerance {tol:e})",
                actual.len(),
                actual[i],
                expected[i]
            ));
        }
    }

    fn t64(&mut self, what: &str, actual: &Tensor<f64>, expected: &Value, tol: f64) {
        self.values(what, actual.dims(), actual.as_slice(), expected, tol);
    }

    fn t32(&mut self, what: &str, actual: &Tensor<f32>, expected: &Value, tol: f64) {
        let a: Vec<f64> = actual.as_slice().iter().map(|&x| x as f64).collect();
        self.values(what, actual.dims(), &a, expected, tol);
    }

    fn scalar(&mut self, what: &str, actual: f64, expected: f64, tol: f64) {
        self.slice(what, &[actual], &[expected], tol);
    }

    fn fail(&mut self, what: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{what}: {msg}"));
    }

    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} mismatches with Keras:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

fn grad_or_zeros(g: Option<Tensor<f64>>, like: &Tensor<f64>) -> Tensor<f64> {
    g.unwrap_or_else(|| Tensor::zeros(like.shape().clone()).unwrap())
}

// ---------------------------------------------------------------- op gradients

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;
type OpResult = Fallible<Tensor<f64>>;

/// The rime op a fixture case names, on its inputs.
fn eval_op(name: &str, args: &Value, inp: &BTreeMap<String, Tensor<f64>>) -> OpResult {
    let x = || &inp["x"];
    let (a, b) = (|| &inp["a"], || &inp["b"]);
    let y = || &inp["y"];
    let axis = || args["axis"].as_i64().expect("axis") as isize;
    let unary = |f: fn(&Tensor<f64>) -> Tensor<f64>| -> OpResult { Ok(f(x())) };
    Ok(match name {
        "add" => x().add(y())?,
        "sub" => x().sub(y())?,
        "mul" => x().mul(y())?,
        "div" => x().div(y())?,
        "pow" | "pow_zero_base" => x().pow(y())?,
        "maximum" => x().maximum(y())?,
        "minimum" => x().minimum(y())?,
        "square_diff_chain" => x().sub(y())?.square().mul(x())?,
        "add_scalar" => x().add_scalar(f(&args["s"])),
        "mul_scalar" => x().mul_scalar(f(&args["s"])),
        "rsub_scalar" => x().rsub_scalar(f(&args["s"])),
        "rdiv_scalar" => x().rdiv_scalar(f(&args["s"])),
        "powf" => x().powf(f(&args["p"])),
        "maximum_scalar" => x().maximum_scalar(f(&args["s"])),
        "neg" => unary(Tensor::neg)?,
        "abs" | "abs_at_zero" => unary(Tensor::abs)?,
        "exp" => unary(Tensor::exp)?,
        "ln" => unary(Tensor::ln)?,
        "sqrt" => unary(Tensor::sqrt)?,
        "square" => unary(Tensor::square)?,
        "recip" => unary(Tensor::recip)?,
        "sin" => unary(Tensor::sin)?,
        "cos" => unary(Tensor::cos)?,
        "tanh" => unary(Tensor::tanh)?,
        "sigmoid" | "sigmoid_large" => unary(Tensor::sigmoid)?,
        "relu" | "relu_at_zero" => unary(Tensor::relu)?,
        "gelu" => unary(Tensor::gelu)?,
        "erf" => unary(Tensor::erf)?,
        "softplus" | "softplus_large" => unary(Tensor::softplus)?,
        "sign" => unary(Tensor::sign)?,
        "leaky_relu" => x().leaky_relu(f(&args["alpha"])),
        "clamp" => x().clamp(f(&args["min"]), f(&args["max"]))?,
        _ if args.get("reduce").is_some() => {
            let axes = isizes(&args["axes"]);
            let keep = args["keep_dims"].as_bool().expect("keep_dims");
            let x = x();
            match (args["reduce"].as_str().expect("reduce"), axes.is_empty()) {
                ("sum", true) => x.sum_all(),
                ("mean", true) => x.mean_all(),
                ("sum", false) => x.sum(&axes, keep)?,
                ("mean", false) => x.mean(&axes, keep)?,
                ("max", false) => x.max(&axes, keep)?,
                ("min", false) => x.min(&axes, keep)?,
                ("var", false) => x.var(&axes, keep)?,
                ("logsumexp", false) => x.logsumexp(&axes, keep)?,
                (other, _) => panic!("unknown reduction {other}"),
            }
        }
        "softmax_last" | "softmax_axis0" | "softmax_large" => x().softmax(axis())?,
        "log_softmax_last" | "log_softmax_axis1_3d" | "log_softmax_large" => {
            x().log_softmax(axis())?
        }
        "softmax_cross_entropy" => x().softmax_cross_entropy(&inp["labels"])?,
        "sparse_softmax_cross_entropy" => {
            x().sparse_softmax_cross_entropy(&usizes(&args["labels"]))?
        }
        _ if name.starts_with("matmul") => {
            let ta = args["transpose_a"].as_bool().expect("transpose_a");
            let tb = args["transpose_b"].as_bool().expect("transpose_b");
            if !ta && !tb {
                a().matmul(b())?
            } else {
                a().matmul_t(b(), ta, tb)?
            }
        }
        "concat_axis1" => Tensor::concat(&[a(), b(), &inp["c"]], axis())?,
        "concat_axis_last" => Tensor::concat(&[a(), b()], axis())?,
        "stack_axis1" => Tensor::stack(&[a(), b()], axis())?,
        "slice" => {
            let ranges: Vec<std::ops::Range<usize>> = args["ranges"]
                .as_array()
                .expect("ranges")
                .iter()
                .map(|r| {
                    let r = usizes(r);
                    r[0]..r[1]
                })
                .collect();
            x().slice(&ranges)?
        }
        "narrow" => {
            let start = args["start"].as_u64().expect("start") as usize;
            let len = args["len"].as_u64().expect("len") as usize;
            x().narrow(axis(), start, len)?
        }
        "split_second" => {
            let pick = args["pick"].as_u64().expect("pick") as usize;
            x().split(&usizes(&args["sizes"]), axis())?.remove(pick)
        }
        "reshape" => x().reshape(usizes(&args["shape"]))?,
        "permute" => x().permute(&usizes(&args["perm"]))?,
        "transpose_2d" => x().t()?,
        "broadcast_to" => x().broadcast_to(usizes(&args["shape"]))?,
        "unsqueeze_squeeze" => x().unsqueeze(1)?.mul_scalar(2.0).squeeze(&[1])?,
        "pad" => {
            let widths: Vec<(usize, usize)> = args["widths"]
                .as_array()
                .expect("widths")
                .iter()
                .map(|w| {
                    let w = usizes(w);
                    (w[0], w[1])
                })
                .collect();
            x().pad(&widths)?
        }
        "gather_axis0" => {
            let ids: Vec<i64> = usizes(&args["indices"]).iter().map(|&i| i as i64).collect();
            x().gather(
                axis(),
                &Tensor::from_vec(ids, usizes(&args["index_shape"]))?,
            )?
        }
        "index_select_axis1" => x().index_select(axis(), &usizes(&args["indices"]))?,
        "select" => Tensor::select(&t64(&args["cond"]), a(), b())?,
        other => panic!("no rime op for fixture case `{other}`"),
    })
}

fn check_op_case(case: &Value, report: &mut Report) {
    let name = case["name"].as_str().expect("name");
    let inputs: BTreeMap<String, Tensor<f64>> = case["inputs"]
        .as_object()
        .expect("inputs")
        .iter()
        .map(|(k, v)| (k.clone(), t64(v)))
        .collect();
    let tape = GradientTape::new();
    for t in inputs.values() {
        tape.watch(t);
    }
    let value = match eval_op(name, &case["args"], &inputs) {
        Ok(v) => v,
        Err(e) => return report.fail(name, format!("rime op failed: {e}")),
    };
    let target = match value.mul(&t64(&case["w"])) {
        Ok(t) => t.sum_all(),
        Err(e) => return report.fail(name, format!("rime value has shape {}: {e}", value.shape())),
    };
    report.t64(&format!("{name} value"), &value, &case["value"], F64_TOL);
    let sources: Vec<&Tensor<f64>> = inputs.values().collect();
    let grads = match tape.gradient(&target, &sources) {
        Ok(g) => g,
        Err(e) => return report.fail(name, format!("gradient failed: {e}")),
    };
    for ((key, x), g) in inputs.iter().zip(grads) {
        let g = grad_or_zeros(g, x);
        report.t64(
            &format!("{name} d/d{key}"),
            &g,
            &case["grads"][key.as_str()],
            F64_TOL,
        );
    }
}

fn op_cases() -> &'static [Value] {
    fixtures()["op_grads"].as_array().expect("op_grads")
}

#[test]
fn op_gradients_match_keras() {
    let mut report = Report::default();
    let mut n = 0;
    for case in op_cases() {
        check_op_case(case, &mut report);
        n += 1;
    }
    assert!(n >= 80, "only {n} op cases ran");
    report.finish("op gradients");
}

// ---------------------------------------------------------------- second order

#[test]
fn nested_tapes_give_keras_second_derivatives() {
    let so = &fixtures()["second_order"];
    let mut report = Report::default();
    for case in so["nested"].as_array().expect("nested") {
        let name = case["name"].as_str().expect("name");
        let x = t64(&case["x"]);
        let (w1, w2) = (t64(&case["w1"]), t64(&case["w2"]));
        let a = case.get("a").map(t64);
        let fun = |x: &Tensor<f64>| -> OpResult {
            Ok(match name {
                "tanh" => x.tanh(),
                "sigmoid" => x.sigmoid(),
                "softplus" => x.softplus(),
                "sin_exp" => x.sin().mul(&x.exp())?,
                "cube" => x.mul(x)?.mul(x)?,
                "recip_1px2" => x.square().add_scalar(1.0).recip(),
                "gelu" => x.gelu(),
                "sqrt" => x.sqrt(),
                "softmax" => x.softmax(-1)?,
                "log_softmax" => x.log_softmax(-1)?,
                "logsumexp" => x.logsumexp(&[-1], false)?,
                "tanh_matmul" => x.matmul(a.as_ref().expect("a"))?.tanh(),
                "div_self" => x.div(&x.neg().exp().add_scalar(1.0))?,
                other => panic!("no rime function for `{other}`"),
            })
        };
        let run = || -> Fallible<(Tensor<f64>, Tensor<f64>, Tensor<f64>)> {
            let outer = GradientTape::new();
            outer.watch(&x);
            let inner = GradientTape::new();
            inner.watch(&x);
            let y = fun(&x)?;
            let g = inner.gradient(&y.mul(&w1)?.sum_all(), &[&x])?[0]
                .clone()
                .ok_or("first derivative unconnected")?;
            drop(inner);
            let h = outer.gradient(&g.mul(&w2)?.sum_all(), &[&x])?[0]
                .clone()
                .ok_or("second derivative unconnected")?;
            Ok((y, g, h))
        };
        match run() {
            Ok((y, g, h)) => {
                report.t64(&format!("{name} y"), &y, &case["y"], F64_TOL);
                report.t64(&format!("{name} grad"), &g, &case["grad"], F64_TOL);
                report.t64(&format!("{name} grad2"), &h, &case["grad2"], F64_TOL);
            }
            Err(e) => report.fail(name, e),
        }
    }
    report.finish("nested second derivatives");
}

#[test]
fn three_nested_tapes_give_the_third_derivative_of_tanh() {
    let c = &fixtures()["second_order"]["third_tanh"];
    let x = t64(&c["x"]);
    let t3 = GradientTape::new();
    t3.watch(&x);
    let t2 = GradientTape::new();
    t2.watch(&x);
    let t1 = GradientTape::new();
    t1.watch(&x);
    let y = x.tanh().sum_all();
    let d1 = t1.gradient(&y, &[&x]).unwrap()[0].clone().unwrap();
    drop(t1);
    let d2 = t2.gradient(&d1.sum_all(), &[&x]).unwrap()[0]
        .clone()
        .unwrap();
    drop(t2);
    let d3 = t3.gradient(&d2.sum_all(), &[&x]).unwrap()[0]
        .clone()
        .unwrap();
    let mut report = Report::default();
    report.t64("d1", &d1, &c["d1"], F64_TOL);
    report.t64("d2", &d2, &c["d2"], F64_TOL);
    report.t64("d3", &d3, &c["d3"], F64_TOL);
    report.finish("third derivative");
}

const PARAMS: [&str; 4] = ["w1", "b1", "w2", "b2"];

fn param_vars(params: &Value) -> Vec<Variable<f64>> {
    PARAMS
        .iter()
        .map(|k| Variable::new(*k, t64(&params[*k])))
        .collect()
}

#[test]
fn hessian_vector_product_of_an_mlp_loss_matches_keras() {
    let c = &fixtures()["second_order"]["mlp_hvp"];
    let (x, y) = (t64(&c["x"]), t64(&c["y"]));
    let vars = param_vars(&c["params"]);
    let vs: Vec<Tensor<f64>> = PARAMS.iter().map(|k| t64(&c["v"][*k])).collect();

    let outer = GradientTape::new();
    let inner = GradientTape::new();
    let h = x
        .matmul(&vars[0].value())
        .unwrap()
        .add(&vars[1].value())
        .unwrap()
        .tanh();
    let pred = h
        .matmul(&vars[2].value())
        .unwrap()
        .add(&vars[3].value())
        .unwrap();
    let loss = pred.sub(&y).unwrap().square().mean_all();
    let grads = inner.gradient(&loss, &vars).unwrap();
    drop(inner);
    let mut gv = Tensor::scalar(0.0);
    for (g, v) in grads.iter().zip(&vs) {
        let g = g.as_ref().expect("every parameter is connected");
        gv = gv.add(&g.mul(v).unwrap().sum_all()).unwrap();
    }
    let hvp = outer.gradient(&gv, &vars).unwrap();

    let mut report = Report::default();
    report.scalar("loss", loss.to_scalar().unwrap(), f(&c["loss"]), F64_TOL);
    for (i, k) in PARAMS.iter().enumerate() {
        let g = grads[i].clone().unwrap();
        report.t64(&format!("grad {k}"), &g, &c["grads"][*k], F64_TOL);
        match &hvp[i] {
            Some(h) => report.t64(&format!("hvp {k}"), h, &c["hvp"][*k], F64_TOL),
            None => report.fail(&format!("hvp {k}"), "unconnected"),
        }
    }
    report.finish("Hessian-vector product");
}

#[test]
fn gradient_penalty_gradient_matches_keras() {
    let c = &fixtures()["second_order"]["grad_penalty"];
    let x = t64(&c["x"]);
    let lambda = f(&c["lambda"]);
    let vars = param_vars(&c["params"]);

    let outer = GradientTape::new();
    let inner = GradientTape::new();
    inner.watch(&x);
    let d = x
        .matmul(&vars[0].value())
        .unwrap()
        .add(&vars[1].value())
        .unwrap()
        .softplus()
        .matmul(&vars[2].value())
        .unwrap()
        .add(&vars[3].value())
        .unwrap();
    let gx = inner.gradient(&d.sum_all(), &[&x]).unwrap()[0]
        .clone()
        .unwrap();
    drop(inner);
    let norm = gx.square().sum(&[1], false).unwrap().sqrt();
    let gp = norm.sub_scalar(1.0).square().mean_all();
    let loss = d.mean_all().add(&gp.mul_scalar(lambda)).unwrap();
    let grads = outer.gradient(&loss, &vars).unwrap();

    let mut report = Report::default();
    report.t64("grad_x", &gx, &c["grad_x"], F64_TOL);
    report.scalar("gp", gp.to_scalar().unwrap(), f(&c["gp"]), F64_TOL);
    report.scalar("loss", loss.to_scalar().unwrap(), f(&c["loss"]), F64_TOL);
    for (k, g) in PARAMS.iter().zip(&grads) {
        match g {
            Some(g) => report.t64(&format!("d loss/d {k}"), g, &c["grads"][*k], F64_TOL),
            None => report.fail(&format!("d loss/d {k}"), "unconnected"),
        }
    }
    report.finish("gradient penalty");
}

// ---------------------------------------------------------------- losses

fn reduction(config: &Value) -> Reduction {
    match config.get("reduction") {
        None => Reduction::Mean,
        Some(Value::Null) => Reduction::None,
        Some(Value::String(s)) if s == "sum" => Reduction::Sum,
        Some(Value::String(s)) if s == "sum_over_batch_size" => Reduction::Mean,
        Some(other) => panic!("unknown reduction {other}"),
    }
}

fn keras_loss(class: &str, config: &Value) -> Box<dyn Loss<f64>> {
    let logits = config["from_logits"].as_bool().unwrap_or(false);
    let smoothing = config["label_smoothing"].as_f64().unwrap_or(0.0);
    let r = reduction(config);
    match class {
        "MeanSquaredError" => Box::new(MeanSquaredError::new().with_reduction(r)),
        "MeanAbsoluteError" => Box::new(MeanAbsoluteError::new().with_reduction(r)),
        "Huber" => Box::new(
            Huber::new()
                .with_delta(config["delta"].as_f64().unwrap_or(1.0))
                .with_reduction(r),
        ),
        "BinaryCrossentropy" => Box::new(
            BinaryCrossentropy::new()
                .with_from_logits(logits)
                .with_label_smoothing(smoothing)
                .with_reduction(r),
        ),
        "CategoricalCrossentropy" => Box::new(
            CategoricalCrossentropy::new()
                .with_from_logits(logits)
                .with_label_smoothing(smoothing)
                .with_reduction(r),
        ),
        "SparseCategoricalCrossentropy" => {
            assert_eq!(smoothing, 0.0);
            Box::new(
                SparseCategoricalCrossentropy::new()
                    .with_from_logits(logits)
                    .with_reduction(r),
            )
        }
        other => panic!("no rime loss for Keras' {other}"),
    }
}

#[test]
fn losses_and_their_gradients_match_keras() {
    let mut report = Report::default();
    let cases = fixtures()["losses"].as_array().expect("losses");
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let loss = keras_loss(case["class"].as_str().expect("class"), &case["config"]);
        let (y_true, y_pred) = (t64(&case["y_true"]), t64(&case["y_pred"]));
        let tape = GradientTape::new();
        tape.watch(&y_pred);
        let value = match case.get("sample_weight") {
            Some(sw) => loss.call_weighted(&y_true, &y_pred, &t64(sw)),
            None => loss.call(&y_true, &y_pred),
        };
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                report.fail(name, format!("rime loss failed: {e}"));
                continue;
            }
        };
        report.t64(&format!("{name} value"), &value, &case["value"], F64_TOL);
        match tape.gradient(&value.sum_all(), &[&y_pred]) {
            Ok(g) => {
                let g = grad_or_zeros(g.into_iter().next().flatten(), &y_pred);
                report.t64(&format!("{name} d/dy_pred"), &g, &case["grad"], F64_TOL);
            }
            Err(e) => report.fail(name, format!("gradient failed: {e}")),
        }
        // the sparse loss with integer labels: the same Keras value and
        // gradient (Keras' own labels here are the float form)
        let class = case["class"].as_str().expect("class");
        if class == "SparseCategoricalCrossentropy" && case.get("sample_weight").is_none() {
            let labels = y_true.to_dtype::<i64>().expect("whole-number labels");
            let tape = GradientTape::new();
            tape.watch(&y_pred);
            match loss.call_int(&labels, &y_pred) {
                Ok(v) => {
                    report.t64(
                        &format!("{name} (i64 labels) value"),
                        &v,
                        &case["value"],
                        F64_TOL,
                    );
                    let g = tape.gradient(&v.sum_all(), &[&y_pred]).expect("gradient");
                    let g = grad_or_zeros(g.into_iter().next().flatten(), &y_pred);
                    report.t64(
                        &format!("{name} (i64 labels) d/dy_pred"),
                        &g,
                        &case["grad"],
                        F64_TOL,
                    );
                }
                Err(e) => report.fail(name, format!("rime loss with i64 labels failed: {e}")),
            }
        }
    }
    report.finish("losses");
}

/// Keras' probability cross entropies on the output of its own softmax or
/// sigmoid: with the TensorFlow backend Keras tags those outputs with their
/// logits and computes the loss from the logits (no clipping), so saturated
/// predictions keep their gradient. rime's losses see only what they are
/// given, so a probability loss clips to `[1e-7, 1 − 1e-7]` (as Keras does
/// for probabilities of any other origin, and on its other backends); the
/// documented way to Keras' numbers is a linear output and
/// `from_logits(true)`, which this test pins: it gives exactly the values
/// and logit gradients Keras reports for softmax/sigmoid + probability loss.
#[test]
fn from_logits_gives_what_keras_computes_for_its_softmax_or_sigmoid_outputs() {
    let mut report = Report::default();
    for case in fixtures()["losses_after_activation"]
        .as_array()
        .expect("losses_after_activation")
    {
        let name = case["name"].as_str().expect("name");
        let (y_true, logits) = (t64(&case["y_true"]), t64(&case["logits"]));
        let config = serde_json::json!({ "from_logits": true });
        let loss = keras_loss(case["class"].as_str().expect("class"), &config);
        let tape = GradientTape::new();
        tape.watch(&logits);
        let value = loss.call(&y_true, &logits).unwrap();
        let g = tape.gradient(&value, &[&logits]).unwrap()[0]
            .clone()
            .unwrap();
        report.scalar(
            &format!("{name} value"),
            value.to_scalar().unwrap(),
            f(&case["value"]),
            F64_TOL,
        );
        report.t64(
            &format!("{name} d/dlogits"),
            &g,
            &case["grad_logits"],
            F64_TOL,
        );
        // and the probability path clips where Keras' TF backend would not
        let probs = match case["activation"].as_str().expect("activation") {
            "softmax" => logits.softmax(-1).unwrap(),
            "sigmoid" => logits.sigmoid(),
            other => panic!("activation {other}"),
        };
        let clipped = keras_loss(case["class"].as_str().expect("class"), &Value::Null)
            .call(&y_true, &probs)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            clipped < f(&case["value"]),
            "{name}: the clipped probability loss {clipped} is below the logits loss"
        );
    }
    report.finish("from_logits losses against Keras' softmax/sigmoid outputs");
}

// ---------------------------------------------------------------- trajectories

/// A boxed schedule as a schedule (`learning_rate_schedule` takes one by
/// value).
#[derive(Debug)]
struct DynSchedule(Box<dyn LearningRateSchedule>);

impl LearningRateSchedule for DynSchedule {
    fn at(&self, step: u64) -> f64 {
        self.0.at(step)
    }
    fn get_config(&self) -> Value {
        self.0.get_config()
    }
}

fn schedule(spec: &Value) -> DynSchedule {
    let init = || f(&spec["initial_learning_rate"]);
    let steps = || spec["decay_steps"].as_u64().expect("decay_steps");
    DynSchedule(match spec["schedule"].as_str().expect("schedule") {
        "ExponentialDecay" => Box::new(
            ExponentialDecay::new(init(), steps(), f(&spec["decay_rate"]))
                .unwrap()
                .staircase(spec["staircase"].as_bool().unwrap_or(false)),
        ),
        "CosineDecay" => {
            let mut s = CosineDecay::new(init(), steps())
                .unwrap()
                .alpha(spec["alpha"].as_f64().unwrap_or(0.0));
            if let Some(target) = spec["warmup_target"].as_f64() {
                s = s.warmup(spec["warmup_steps"].as_u64().expect("warmup_steps"), target);
            }
            Box::new(s)
        }
        "PiecewiseConstantDecay" => Box::new(
            PiecewiseConstantDecay::new(
                usizes(&spec["boundaries"])
                    .into_iter()
                    .map(|b| b as u64)
                    .collect(),
                spec["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(f)
                    .collect(),
            )
            .unwrap(),
        ),
        other => panic!("no rime schedule {other}"),
    })
}

/// The base-optimizer arguments every optimizer takes.
macro_rules! with_common {
    ($opt:expr, $spec:expr) => {{
        let spec = $spec;
        let mut o = $opt;
        o = match &spec["learning_rate"] {
            Value::Object(_) => o.learning_rate_schedule(schedule(&spec["learning_rate"])),
            lr => o.learning_rate(f(lr)),
        };
        if let Some(wd) = spec["weight_decay"].as_f64() {
            o = o.weight_decay(wd);
        }
        if let Some(names) = spec["exclude_from_weight_decay"].as_array() {
            o = o.exclude_from_weight_decay(names.iter().map(|n| n.as_str().expect("name")));
        }
        if let Some(c) = spec["clipnorm"].as_f64() {
            o = o.clipnorm(c);
        }
        if let Some(c) = spec["clipvalue"].as_f64() {
            o = o.clipvalue(c);
        }
        if let Some(c) = spec["global_clipnorm"].as_f64() {
            o = o.global_clipnorm(c);
        }
        Box::new(o) as Box<dyn Optimizer<f32>>
    }};
}

/// The rime optimizer for a Keras optimizer spec of the fixture.
fn optimizer(spec: &Value) -> Box<dyn Optimizer<f32>> {
    let known = [
        "class",
        "learning_rate",
        "momentum",
        "nesterov",
        "rho",
        "centered",
        "beta_2",
        "amsgrad",
        "weight_decay",
        "exclude_from_weight_decay",
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
    ];
    for key in spec.as_object().expect("optimizer spec").keys() {
        assert!(
            known.contains(&key.as_str()),
            "unhandled optimizer argument {key}"
        );
    }
    let opt_f = |k: &str| spec[k].as_f64();
    let opt_b = |k: &str| spec[k].as_bool().unwrap_or(false);
    match spec["class"].as_str().expect("class") {
        "SGD" => with_common!(
            Sgd::new()
                .momentum(opt_f("momentum").unwrap_or(0.0))
                .nesterov(opt_b("nesterov")),
            spec
        ),
        "RMSprop" => with_common!(
            RmsProp::new()
                .rho(opt_f("rho").unwrap_or(0.9))
                .momentum(opt_f("momentum").unwrap_or(0.0))
                .centered(opt_b("centered")),
            spec
        ),
        "Adam" => with_common!(
            Adam::new()
                .beta_2(opt_f("beta_2").unwrap_or(0.999))
                .amsgrad(opt_b("amsgrad")),
            spec
        ),
        "AdamW" => with_common!(
            AdamW::new()
                .beta_2(opt_f("beta_2").unwrap_or(0.999))
                .amsgrad(opt_b("amsgrad")),
            spec
        ),
        other => panic!("no rime optimizer for Keras' {other}"),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// An optimizer chosen at run time, for `TrainStep::new` (which takes one
/// by value).
struct Boxed(Box<dyn Optimizer<f32>>);

impl Optimizer<f32> for Boxed {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn iterations(&self) -> u64 {
        self.0.iterations()
    }
    fn current_learning_rate(&self) -> f64 {
        self.0.current_learning_rate()
    }
    fn apply_gradients_masked(
        &mut self,
        grads: &[Option<Tensor<f32>>],
        vars: &[Variable<f32>],
        masks: &[Option<std::sync::Arc<rime::tape::ResolvedMask>>],
    ) -> rime::layers::Result<()> {
        self.0.apply_gradients_masked(grads, vars, masks)
    }
    fn slots(&self, var: &Variable<f32>) -> Vec<(&'static str, Tensor<f32>)> {
        self.0.slots(var)
    }
    fn get_config(&self) -> Value {
        self.0.get_config()
    }
    fn tracked_variables(&self) -> usize {
        self.0.tracked_variables()
    }
    fn set_learning_rate(&mut self, lr: f64) -> rime::layers::Result<()> {
        self.0.set_learning_rate(lr)
    }
    fn state(
        &self,
        vars: &[Variable<f32>],
    ) -> rime::layers::Result<rime::layers::optimizers::OptimizerState<f32>> {
        self.0.state(vars)
    }
    fn set_state(
        &mut self,
        vars: &[Variable<f32>],
        state: &rime::layers::optimizers::OptimizerState<f32>,
    ) -> rime::layers::Result<()> {
        self.0.set_state(vars, state)
    }
}

/// How a trajectory is driven on the rime side.
#[derive(Clone, Copy, PartialEq)]
enum Driver {
    /// The first-class path: tape, `trainable_weights`, `apply_gradients`.
    CustomLoop,
    /// A `TrainStep` built after the mask was set (it snapshots it).
    TrainStep,
}

/// Runs one fixture trajectory and compares it with Keras'.
fn check_trajectory(run: &Value, report: &mut Report, driver: Driver) {
    let name = run["name"].as_str().expect("name");
    let mlp = &fixtures()["mlp"];
    let steps = mlp["steps"].as_u64().expect("steps") as usize;
    let x = t32(&mlp["x"]);
    let model = Sequential::<f32>::new()
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dense::new(3))
        .with_input_shape([6])
        .unwrap();
    let init: Vec<Tensor<f32>> = mlp["init"]
        .as_array()
        .expect("init")
        .iter()
        .map(t32)
        .collect();
    model.set_weights(&init).unwrap();
    let kernel = model.trainable_weights()[0].clone();
    assert_eq!(kernel.shape(), init[0].shape().clone());
    let frozen_rows = run["frozen_rows"].as_u64().expect("frozen_rows") as usize;
    if frozen_rows > 0 {
        kernel
            .set_mask(Some(TrainableMask::freeze_rows(0..frozen_rows)))
            .unwrap();
    }
    let frozen_len = frozen_rows * kernel.shape()[1];
    let frozen_before = bits(&kernel.to_vec()[..frozen_len]);

    let sparse = match run["loss"].as_str().expect("loss") {
        "sparse_categorical_crossentropy_logits" => true,
        "mean_squared_error" => false,
        other => panic!("unknown loss {other}"),
    };
    let y = if sparse {
        t32(&mlp["labels"])
    } else {
        t32(&mlp["y"])
    };
    let scce = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let mse = MeanSquaredError::new();
    let mut opt = optimizer(&run["optimizer"]);

    let (mut losses, mut lrs) = (Vec::new(), Vec::new());
    match driver {
        Driver::CustomLoop => {
            let loss_fn: &dyn Loss<f32> = if sparse { &scce } else { &mse };
            for step in 0..steps {
                lrs.push(opt.current_learning_rate());
                let tape = GradientTape::new();
                let loss = loss_fn.call(&y, &model.call(&x, true).unwrap()).unwrap();
                let vars = model.trainable_weights();
                let grads = tape.gradient(&loss, &vars).unwrap();
                if let Err(e) = opt.apply_gradients(&grads, &vars) {
                    return report.fail(name, format!("apply_gradients at step {step}: {e}"));
                }
                losses.push(loss.to_scalar().unwrap() as f64);
            }
        }
        Driver::TrainStep => {
            let mut train_step = if sparse {
                TrainStep::new(&model, Boxed(opt), scce)
            } else {
                TrainStep::new(&model, Boxed(opt), mse)
            };
            for step in 0..steps {
                lrs.push(train_step.optimizer().current_learning_rate());
                match train_step.run(&x, &y) {
                    Ok(loss) => losses.push(loss as f64),
                    Err(e) => return report.fail(name, format!("train step {step}: {e}")),
                }
            }
        }
    }
    let expected_lrs: Vec<f64> = run["learning_rates"]
        .as_array()
        .expect("learning_rates")
        .iter()
        .map(f)
        .collect();
    // Keras evaluates schedules in float32
    report.slice(&format!("{name} learning rates"), &lrs, &expected_lrs, 1e-6);
    let expected_losses: Vec<f64> = run["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .map(f)
        .collect();
    report.slice(
        &format!("{name} losses"),
        &losses,
        &expected_losses,
        F32_TOL,
    );
    let finals = run["final_weights"].as_array().expect("final_weights");
    let weights = model.trainable_weights();
    assert_eq!(weights.len(), finals.len());
    for (i, (w, e)) in weights.iter().zip(finals).enumerate() {
        report.t32(
            &format!("{name} final weight {i}"),
            &w.value_untracked(),
            e,
            F32_TOL,
        );
    }
    if frozen_rows > 0 {
        let after = bits(&kernel.to_vec()[..frozen_len]);
        if after != frozen_before {
            report.fail(name, "the frozen rows of W1 changed");
        }
        // and Keras' frozen rows (restored by its constraint) are the start
        let keras_frozen: Vec<f32> = data_of(&finals[0])[..frozen_len]
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(
            bits(&keras_frozen),
            frozen_before,
            "{name}: fixture's frozen rows"
        );
    }
}

const TRAJECTORY_GROUPS: &[(&str, &[&str])] = &[
    ("sgd", &["sgd", "sgd_momentum", "sgd_nesterov", "sgd_mse"]),
    (
        "rmsprop",
        &[
            "rmsprop",
            "rmsprop_centered",
            "rmsprop_momentum",
            "rmsprop_centered_momentum",
        ],
    ),
    (
        "adam",
        &[
            "adam",
            "adamw",
            "adamw_exclude_bias",
            "adam_amsgrad",
            "adam_mse",
        ],
    ),
    (
        "clipping and weight decay",
        &[
            "sgd_clipnorm",
            "sgd_clipvalue",
            "sgd_global_clipnorm",
            "adam_clipvalue",
            "rmsprop_global_clipnorm",
            "sgd_weight_decay",
            "adam_weight_decay",
        ],
    ),
    (
        "schedules",
        &[
            "sgd_exponential_decay",
            "sgd_exponential_decay_staircase",
            "sgd_cosine_decay",
            "sgd_cosine_decay_warmup",
            "sgd_piecewise_constant",
            "adamw_cosine_decay",
        ],
    ),
];

fn trajectories() -> &'static [Value] {
    fixtures()["trajectories"].as_array().expect("trajectories")
}

/// The fixture runs of a group: each base name, with and without `_frozen`.
fn check_group(group: &str) {
    let (_, names) = TRAJECTORY_GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .expect("group");
    let mut report = Report::default();
    let mut n = 0;
    for run in trajectories() {
        let name = run["name"].as_str().expect("name");
        if names.contains(&name.trim_end_matches("_frozen")) {
            check_trajectory(run, &mut report, Driver::CustomLoop);
            n += 1;
        }
    }
    assert!(
        n >= names.len(),
        "group {group}: only {n} runs in the fixture"
    );
    report.finish(&format!("{group} trajectories"));
}

#[test]
fn every_fixture_trajectory_belongs_to_a_group() {
    let all: Vec<&str> = TRAJECTORY_GROUPS
        .iter()
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let runs = trajectories();
    assert!(runs.len() >= 30);
    let frozen = runs
        .iter()
        .filter(|r| r["frozen_rows"].as_u64() > Some(0))
        .count();
    assert!(frozen >= 10, "{frozen} frozen runs");
    for run in runs {
        let name = run["name"].as_str().expect("name");
        assert!(
            all.contains(&name.trim_end_matches("_frozen")),
            "fixture trajectory {name} is in no group"
        );
    }
}

/// The frozen runs once more through `TrainStep`, which snapshots the mask
/// when it is built and passes it to the tape and the optimizer itself.
#[test]
fn train_step_reproduces_the_frozen_keras_trajectories() {
    let mut report = Report::default();
    let mut n = 0;
    for run in trajectories() {
        if run["frozen_rows"].as_u64() > Some(0) {
            check_trajectory(run, &mut report, Driver::TrainStep);
            n += 1;
        }
    }
    assert!(n >= 10);
    report.finish("frozen trajectories through TrainStep");
}

#[test]
fn sgd_trajectories_match_keras() {
    check_group("sgd");
}

#[test]
fn rmsprop_trajectories_match_keras() {
    check_group("rmsprop");
}

#[test]
fn adam_and_adamw_trajectories_match_keras() {
    check_group("adam");
}

#[test]
fn clipped_and_decayed_trajectories_match_keras() {
    check_group("clipping and weight decay");
}

#[test]
fn scheduled_trajectories_match_keras() {
    check_group("schedules");
}

// ---------------------------------------------------------------- bare optimizer steps

/// Bare updates differ from Keras' only by the rounding of the update
/// formulas (no matmul), so they are compared much tighter than the
/// trajectories: a few float32 ulps.
const STEP_TOL: f64 = 1e-6;

#[test]
fn optimizer_updates_on_explicit_gradients_match_keras() {
    let s = &fixtures()["optimizer_steps"];
    let w0: Vec<Tensor<f32>> = s["w0"].as_array().expect("w0").iter().map(t32).collect();
    let grads: Vec<Vec<Option<Tensor<f32>>>> = s["grads"]
        .as_array()
        .expect("grads")
        .iter()
        .map(|g| {
            g.as_array()
                .expect("step")
                .iter()
                .map(|x| Some(t32(x)))
                .collect()
        })
        .collect();
    let mut report = Report::default();
    let runs = s["runs"].as_array().expect("runs");
    assert!(runs.len() >= 10);
    for run in runs {
        let name = run["name"].as_str().expect("name");
        let vars = vec![
            Variable::new("a", w0[0].clone()),
            Variable::new("b", w0[1].clone()),
        ];
        let mut opt = optimizer(&run["optimizer"]);
        for (step, (g, after)) in grads
            .iter()
            .zip(run["after"].as_array().expect("after"))
            .enumerate()
        {
            opt.apply_gradients(g, &vars).unwrap();
            for (i, v) in vars.iter().enumerate() {
                report.t32(
                    &format!("{name} step {} var {i}", step + 1),
                    &v.value_untracked(),
                    &after[i],
                    STEP_TOL,
                );
            }
        }
    }
    report.finish("optimizer steps");
}
