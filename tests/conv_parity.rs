//! Convolution and pooling layers against Keras 3 (TensorFlow backend) in
//! float32: every layer's output and the gradients of `sum(y · w)` with
//! respect to its input and weights (same padding at stride 2 on odd and
//! even sizes, dilation, groups, depthwise, transpose, every pooling), and
//! four Adam steps of a small CNN whose first two conv filters are frozen
//! by a mask. Values come from tests/reference/gen_conv_fixtures.py
//! (conv_fixtures.json) and are compared at `1e-5 · max(|keras|, 1)`.

use std::sync::OnceLock;

use rime::layers::config::{LayerConfig, layer_from_config};
use rime::prelude::*;
use rime::tape::Source;
use serde_json::Value;

const TOL: f32 = 1e-5;

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        serde_json::from_str(include_str!("reference/conv_fixtures.json"))
            .expect("conv_fixtures.json parses")
    })
}

fn t32(v: &Value) -> Tensor<f32> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    Tensor::from_vec(data, shape).expect("fixture shape")
}

/// The mismatches of `actual` against a fixture, if any.
fn compare(what: &str, actual: &Tensor<f32>, expected: &Value, errors: &mut Vec<String>) {
    let e = t32(expected);
    if actual.shape() != e.shape() {
        errors.push(format!(
            "{what}: rime shape {}, keras {}",
            actual.shape(),
            e.shape()
        ));
        return;
    }
    let worst = actual
        .as_slice()
        .iter()
        .zip(e.as_slice())
        .enumerate()
        .map(|(i, (a, b))| (i, (a - b).abs() / b.abs().max(1.0)))
        .fold(None, |w: Option<(usize, f32)>, (i, err)| match w {
            Some((_, we)) if !(err > we || err.is_nan()) => w,
            _ => Some((i, err)),
        });
    if let Some((i, err)) = worst
        && (err > TOL || err.is_nan())
    {
        errors.push(format!(
            "{what}[{i}]: rime {:e} vs keras {:e} (scaled error {err:.1e})",
            actual.as_slice()[i],
            e.as_slice()[i]
        ));
    }
}

#[test]
fn layers_match_keras() {
    let mut errors = Vec::new();
    let cases = fixtures()["layers"].as_array().expect("cases");
    assert_eq!(cases.len(), 26);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let layer = layer_from_config::<f32>(&LayerConfig {
            class_name: c["class_name"].as_str().unwrap().to_string(),
            config: c["config"].clone(),
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = t32(&c["x"]);
        layer.ensure_built(&[x.shape().into()]).unwrap();
        let weights: Vec<Tensor<f32>> = c["weights"].as_array().unwrap().iter().map(t32).collect();
        layer
            .set_weights(&weights)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let tape = GradientTape::new();
        tape.watch(&x);
        let y = layer.call(&x, false).unwrap();
        let target = y.mul(&t32(&c["w"])).unwrap().sum_all();
        let vars = layer.trainable_weights();
        let mut sources = vec![Source::from(&x)];
        sources.extend(vars.iter().map(Source::from));
        let grads = tape.gradient(&target, &sources).unwrap();
        compare(&format!("{name}: y"), &y, &c["y"], &mut errors);
        let expected = c["grads"].as_array().unwrap();
        assert_eq!(grads.len(), expected.len(), "{name}: gradient count");
        for (k, (g, e)) in grads.iter().zip(expected).enumerate() {
            let g = g
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: gradient {k} unconnected"));
            compare(&format!("{name}: gradient {k}"), g, e, &mut errors);
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches with Keras:\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
}

#[test]
fn adam_steps_with_frozen_filters_match_keras() {
    let f = &fixtures()["training"];
    let conv = std::sync::Arc::new(Conv2D::new(4, [3, 3]).activation(Activation::Relu));
    let model = Sequential::new()
        .add(conv.clone())
        .add(MaxPooling2D::new(&[2, 2]))
        .add(Flatten::new())
        .add(Dense::new(3))
        .with_input_shape([8, 8, 1])
        .unwrap();
    let init: Vec<Tensor<f32>> = f["init"].as_array().unwrap().iter().map(t32).collect();
    model.set_weights(&init).unwrap();
    let (kernel, bias) = (conv.kernel().unwrap(), conv.bias().unwrap());
    kernel
        .set_mask(Some(TrainableMask::axis_ranges(-1, 2..4)))
        .unwrap();
    bias.set_mask(Some(TrainableMask::axis_ranges(0, 2..4)))
        .unwrap();
    let frozen_before: Vec<u32> = kernel.to_vec().iter().map(|v| v.to_bits()).collect();
    let x = t32(&f["x"]);
    let labels: Vec<usize> = f["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut opt = Adam::new().learning_rate(0.01);
    let vars = model.trainable_weights();
    let mut errors = Vec::new();
    for (step, (want_loss, want_weights)) in f["losses"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f["steps"].as_array().unwrap())
        .enumerate()
    {
        let tape = GradientTape::new();
        let logits = model.call(&x, true).unwrap();
        let loss = logits
            .sparse_softmax_cross_entropy(&labels)
            .unwrap()
            .mean_all();
        let grads = tape.gradient(&loss, &vars).unwrap();
        opt.apply_gradients(&grads, &vars).unwrap();
        let l = loss.to_scalar().unwrap();
        let wl = want_loss.as_f64().unwrap() as f32;
        if (l - wl).abs() > TOL * wl.abs().max(1.0) {
            errors.push(format!("step {step}: loss {l} vs keras {wl}"));
        }
        for (k, (w, e)) in model
            .weights()
            .iter()
            .zip(want_weights.as_array().unwrap())
            .enumerate()
        {
            compare(
                &format!("step {step}: weight {k}"),
                &w.value(),
                e,
                &mut errors,
            );
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches with Keras:\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
    // the frozen filters are bit-identical
    let after = kernel.to_vec();
    for (i, (a, b)) in after.iter().zip(&frozen_before).enumerate() {
        if i % 4 < 2 {
            assert_eq!(a.to_bits(), *b, "frozen kernel element {i} moved");
        } else {
            assert_ne!(a.to_bits(), *b, "trainable kernel element {i} did not move");
        }
    }
}
