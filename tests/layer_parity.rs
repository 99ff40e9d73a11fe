//! Layer parity with Keras 3 (TensorFlow backend): BatchNormalization (in
//! training and inference, its moving-statistics update, and frozen),
//! LayerNormalization, Embedding, and the merge and reshape layers, compared
//! with the values tests/reference/gen_layer_fixtures.py wrote to
//! layer_fixtures.json. Everything is float64 and compared at
//! `1e-10 · max(|keras|, 1)`.
//!
//! Each layer is called on the fixture's `x`; the gradients are those of
//! `sum(y · w)` for the fixture's `w`, with respect to `x` and the layer's
//! trainable weights (Keras' `trainable_weights` at that moment).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rime::layers::DataFormat;
use rime::prelude::*;
use serde_json::Value;

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let text = include_str!("reference/layer_fixtures.json");
        serde_json::from_str(text).expect("layer_fixtures.json parses")
    })
}

const TOL: f64 = 1e-10;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// Gradients by source name (`"x"`, `"gamma"`, ...).
type Grads = BTreeMap<String, Tensor<f64>>;

/// A `{"shape", "data"}` fixture as an f64 tensor.
fn t64(v: &Value) -> Tensor<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("not an array fixture: {v}"))
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    Tensor::from_vec(data, shape).expect("fixture shape")
}

/// Collects mismatches, so one run reports all of them.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, what: &str, actual: &Tensor<f64>, expected: &Value) {
        let e = t64(expected);
        if actual.shape() != e.shape() {
            self.0.push(format!(
                "{what}: rime shape {}, keras shape {}",
                actual.shape(),
                e.shape()
            ));
            return;
        }
        let mut worst: Option<(usize, f64)> = None;
        for (i, (a, e)) in actual.as_slice().iter().zip(e.as_slice()).enumerate() {
            let err = (a - e).abs() / e.abs().max(1.0);
            if (err.is_nan() || err > TOL) && worst.is_none_or(|(_, w)| err > w || err.is_nan()) {
                worst = Some((i, err));
            }
        }
        if let Some((i, err)) = worst {
            self.0.push(format!(
                "{what}[{i}]: rime {:e} vs keras {:e} (scaled error {err:.2e})",
                actual.as_slice()[i],
                e.as_slice()[i]
            ));
        }
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

/// `y = layer(x)` and the gradients of `sum(y · w)` with respect to `x` and
/// the named weights (`"x"` is the input).
fn call_and_grads(
    layer: &dyn Layer<f64>,
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    training: bool,
    weights: &BTreeMap<String, Variable<f64>>,
    names: &[String],
) -> Fallible<(Tensor<f64>, Grads)> {
    let tape = GradientTape::new();
    tape.watch(x);
    let y = layer.call(x, training)?;
    let target = y.mul(w)?.sum_all();
    let sources: Vec<Source<'_, f64>> = names
        .iter()
        .map(|n| match n.as_str() {
            "x" => Source::from(x),
            other => Source::from(&weights[other]),
        })
        .collect();
    let grads = tape.gradient(&target, &sources)?;
    let mut out = BTreeMap::new();
    for (n, g) in names.iter().zip(grads) {
        out.insert(n.clone(), g.ok_or_else(|| format!("d/d{n} unconnected"))?);
    }
    Ok((y, out))
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

/// The layer's trainable weights must be exactly the ones Keras reports
/// (the gradient keys other than `x`).
fn check_trainable_set(
    report: &mut Report,
    what: &str,
    layer: &dyn Layer<f64>,
    weights: &BTreeMap<String, Variable<f64>>,
    grad_keys: &[String],
) {
    let mut expected: Vec<_> = grad_keys
        .iter()
        .filter(|k| *k != "x")
        .map(|k| weights[k.as_str()].id())
        .collect();
    let mut actual: Vec<_> = layer.trainable_weights().iter().map(|v| v.id()).collect();
    expected.sort();
    actual.sort();
    if actual != expected {
        report.fail(
            what,
            format!(
                "trainable weights {:?}, keras trains {:?}",
                layer
                    .trainable_weights()
                    .iter()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>(),
                grad_keys
            ),
        );
    }
}

#[test]
fn batch_normalization_matches_keras() {
    let cases = fixtures()["batch_normalization"]
        .as_array()
        .expect("batch_normalization");
    assert!(cases.len() >= 4);
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let cfg = &case["config"];
        let (x, w) = (t64(&case["x"]), t64(&case["w"]));
        let mut layer = BatchNormalization::<f64>::new();
        if let Some(axis) = cfg["axis"].as_i64() {
            layer = layer.axis(axis as isize);
        }
        if let Some(m) = cfg["momentum"].as_f64() {
            layer = layer.momentum(m);
        }
        if let Some(e) = cfg["epsilon"].as_f64() {
            layer = layer.epsilon(e);
        }
        if let Some(c) = cfg["center"].as_bool() {
            layer = layer.center(c);
        }
        if let Some(s) = cfg["scale"].as_bool() {
            layer = layer.scale(s);
        }
        layer.ensure_built(&[x.shape().into()]).unwrap();
        let mut weights = BTreeMap::new();
        for (key, var) in [
            ("gamma", layer.gamma()),
            ("beta", layer.beta()),
            ("moving_mean", layer.moving_mean()),
            ("moving_variance", layer.moving_variance()),
        ] {
            match (var, case["weights"].get(key)) {
                (Some(v), Some(value)) => {
                    v.assign(&t64(value)).unwrap();
                    weights.insert(key.to_string(), v.clone());
                }
                (None, None) => {}
                (v, value) => report.fail(
                    name,
                    format!(
                        "{key}: rime has it: {}, keras has it: {}",
                        v.is_some(),
                        value.is_some()
                    ),
                ),
            }
        }
        if case["frozen"].as_bool().expect("frozen") {
            layer.set_trainable(false);
        }
        let train_keys = keys(&case["grads_train"]);
        check_trainable_set(&mut report, name, &layer, &weights, &train_keys);

        match call_and_grads(&layer, &x, &w, true, &weights, &train_keys) {
            Ok((y, grads)) => {
                report.check(&format!("{name} y_train"), &y, &case["y_train"]);
                for (k, g) in &grads {
                    report.check(&format!("{name} train d/d{k}"), g, &case["grads_train"][k]);
                }
            }
            Err(e) => report.fail(name, format!("training call: {e}")),
        }
        for k in ["moving_mean", "moving_variance"] {
            report.check(
                &format!("{name} {k} after the training call"),
                &weights[k].value_untracked(),
                &case["after_step"][k],
            );
        }
        let infer_keys = keys(&case["grads_infer"]);
        match call_and_grads(&layer, &x, &w, false, &weights, &infer_keys) {
            Ok((y, grads)) => {
                report.check(&format!("{name} y_infer"), &y, &case["y_infer"]);
                for (k, g) in &grads {
                    report.check(&format!("{name} infer d/d{k}"), g, &case["grads_infer"][k]);
                }
            }
            Err(e) => report.fail(name, format!("inference call: {e}")),
        }
    }
    report.finish("BatchNormalization");
}

#[test]
fn layer_normalization_matches_keras() {
    let cases = fixtures()["layer_normalization"]
        .as_array()
        .expect("layer_normalization");
    assert!(cases.len() >= 4);
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let cfg = &case["config"];
        let (x, w) = (t64(&case["x"]), t64(&case["w"]));
        let mut layer = LayerNormalization::<f64>::new();
        match &cfg["axis"] {
            Value::Null => {}
            Value::Array(axes) => {
                layer = layer.axes(axes.iter().map(|a| a.as_i64().unwrap() as isize).collect())
            }
            a => layer = layer.axis(a.as_i64().expect("axis") as isize),
        }
        if let Some(e) = cfg["epsilon"].as_f64() {
            layer = layer.epsilon(e);
        }
        if let Some(c) = cfg["center"].as_bool() {
            layer = layer.center(c);
        }
        if let Some(s) = cfg["scale"].as_bool() {
            layer = layer.scale(s);
        }
        layer.ensure_built(&[x.shape().into()]).unwrap();
        let mut weights = BTreeMap::new();
        for (key, var) in [("gamma", layer.gamma()), ("beta", layer.beta())] {
            match (var, case["weights"].get(key)) {
                (Some(v), Some(value)) => {
                    v.assign(&t64(value)).unwrap();
                    weights.insert(key.to_string(), v.clone());
                }
                (None, None) => {}
                (v, value) => report.fail(
                    name,
                    format!(
                        "{key}: rime has it: {}, keras has it: {}",
                        v.is_some(),
                        value.is_some()
                    ),
                ),
            }
        }
        let grad_keys = keys(&case["grads"]);
        check_trainable_set(&mut report, name, &layer, &weights, &grad_keys);
        match call_and_grads(&layer, &x, &w, false, &weights, &grad_keys) {
            Ok((y, grads)) => {
                report.check(&format!("{name} y"), &y, &case["y"]);
                for (k, g) in &grads {
                    report.check(&format!("{name} d/d{k}"), g, &case["grads"][k]);
                }
            }
            Err(e) => report.fail(name, e),
        }
    }
    report.finish("LayerNormalization");
}

#[test]
fn embedding_lookup_and_its_gradient_match_keras() {
    let c = &fixtures()["embedding"];
    let layer = Embedding::<f64>::new(
        c["input_dim"].as_u64().unwrap() as usize,
        c["output_dim"].as_u64().unwrap() as usize,
    );
    let ids = t64(&c["ids"]);
    layer.ensure_built(&[ids.shape().into()]).unwrap();
    let table = layer.embeddings().unwrap().clone();
    table.assign(&t64(&c["table"])).unwrap();
    let tape = GradientTape::new();
    let y = layer.call(&ids, true).unwrap();
    let target = y.mul(&t64(&c["w"])).unwrap().sum_all();
    let g = tape.gradient(&target, &[&table]).unwrap()[0]
        .clone()
        .expect("the table is connected");
    let mut report = Report::default();
    report.check("embedding y", &y, &c["y"]);
    // repeated ids accumulate (Keras' IndexedSlices, densified)
    report.check("embedding d/dtable", &g, &c["grad_table"]);
    report.finish("Embedding");
}

#[test]
fn merge_and_reshape_layers_match_keras() {
    let cases = fixtures()["merge_and_reshape"]
        .as_array()
        .expect("merge_and_reshape");
    assert!(cases.len() >= 14);
    let mut report = Report::default();
    for (i, case) in cases.iter().enumerate() {
        let class = case["class"].as_str().expect("class");
        let cfg = &case["config"];
        let inputs: Vec<Tensor<f64>> = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(t64)
            .collect();
        let layer: Box<dyn Layer<f64>> = match class {
            "Add" => Box::new(Add::new()),
            "Multiply" => Box::new(Multiply::new()),
            "Concatenate" => {
                Box::new(Concatenate::new().axis(cfg["axis"].as_i64().unwrap() as isize))
            }
            "Flatten" => Box::new(Flatten::new().data_format(
                match cfg["data_format"].as_str().expect("data_format") {
                    "channels_last" => DataFormat::ChannelsLast,
                    "channels_first" => DataFormat::ChannelsFirst,
                    other => panic!("data_format {other}"),
                },
            )),
            "Reshape" => Box::new(Reshape::new(
                cfg["target_shape"]
                    .as_array()
                    .expect("target_shape")
                    .iter()
                    .map(|d| d.as_i64().unwrap() as isize)
                    .collect(),
            )),
            other => panic!("no rime layer for Keras' {other}"),
        };
        let shapes: Vec<String> = inputs.iter().map(|t| t.shape().to_string()).collect();
        let what = format!("case {i}: {class} {cfg} on {}", shapes.join(", "));
        match layer.call_many(&inputs, false) {
            Ok(mut out) if out.len() == 1 => report.check(&what, &out.remove(0), &case["y"]),
            Ok(out) => report.fail(&what, format!("{} outputs", out.len())),
            Err(e) => report.fail(&what, e),
        }
    }
    report.finish("merge and reshape layers");
}
