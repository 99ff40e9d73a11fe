//! The Layer defaults (src/layer.rs): frozen-context propagation done once
//! in `apply`, add_loss over one forward pass, the default get_config.

use std::sync::Arc;

use rime_layers::regularizers::Regularizer;
use rime_layers::{BatchNormalization, CallContext, Dense, Layer, LayerBase, LayerRef, Sequential};
use rime_tensor::Tensor;

/// A user struct that forwards `ctx` to its sublayer unchanged (it does not
/// call `ctx.within` itself).
struct Wrapper {
    base: LayerBase<f64>,
    inner: LayerRef<f64>,
}

impl Layer<f64> for Wrapper {
    fn base(&self) -> &LayerBase<f64> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Wrapper"
    }
    fn call_with(
        &self,
        inputs: &[Tensor<f64>],
        ctx: CallContext,
    ) -> rime_layers::Result<Vec<Tensor<f64>>> {
        self.inner.apply(inputs, ctx)
    }
    fn sublayers(&self) -> Vec<LayerRef<f64>> {
        vec![self.inner.clone()]
    }
}

#[test]
fn a_frozen_struct_layer_freezes_the_batch_norm_inside_it() {
    let bn = Arc::new(BatchNormalization::<f64>::new());
    let wrapper = Wrapper {
        base: LayerBase::new("Wrapper", None),
        inner: bn.clone(),
    };
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 5.0, 7.0, 11.0], [3, 2]).unwrap();
    wrapper.call(&x, true).unwrap(); // trainable: the statistics move
    let moving_mean = bn.moving_mean().unwrap().clone();
    let after_first = moving_mean.to_vec();
    // Keras' update with momentum 0.99 from 0: 0.01 · batch mean
    assert!(
        (after_first[0] - 0.01 * 11.0 / 3.0).abs() < 1e-12,
        "{after_first:?}"
    );
    assert!(
        (after_first[1] - 0.01 * 6.0).abs() < 1e-12,
        "{after_first:?}"
    );

    wrapper.set_trainable(false);
    assert!(bn.trainable(), "the inner layer's own flag is untouched");
    let y = wrapper.call(&x, true).unwrap();
    assert_eq!(
        moving_mean.to_vec(),
        after_first,
        "frozen: statistics unchanged"
    );
    // and inference mode: normalized with the moving statistics
    let var = bn.moving_variance().unwrap().to_vec();
    let eps = 1e-3;
    let want0 = (1.0 - after_first[0]) / (var[0] + eps).sqrt();
    assert!((y.to_vec()[0] - want0).abs() < 1e-12);
}

#[test]
fn a_layer_called_twice_in_one_pass_keeps_both_losses() {
    // Keras 3: a Dense with an activity regularizer applied twice in one
    // model call has two losses, cleared when the next call starts
    let dense = Arc::new(Dense::<f64>::new(2).activity_regularizer(Regularizer::L2 { l2: 0.5 }));
    let model = Sequential::new()
        .add(dense.clone())
        .add(dense.clone())
        .with_input_shape([2])
        .unwrap();
    let x = Tensor::from_vec(vec![1.0, -1.0], [1, 2]).unwrap();
    for _ in 0..2 {
        let first = dense.call(&x, false).unwrap();
        let second = dense.call(&first, false).unwrap();
        model.call(&x, true).unwrap();
        let losses: Vec<f64> = model
            .losses()
            .unwrap()
            .iter()
            .map(|l| l.to_scalar().unwrap())
            .collect();
        let penalty = |t: &Tensor<f64>| 0.5 * t.to_vec().iter().map(|v| v * v).sum::<f64>();
        assert_eq!(losses.len(), 2, "{losses:?}");
        assert!((losses[0] - penalty(&first)).abs() < 1e-12);
        assert!((losses[1] - penalty(&second)).abs() < 1e-12);
    }
}

#[test]
fn the_default_config_is_name_and_trainable() {
    let w = Wrapper {
        base: LayerBase::new("Wrapper", Some("w".into())),
        inner: Arc::new(Dense::<f64>::new(1)),
    };
    w.set_trainable(false);
    assert_eq!(
        w.get_config(),
        serde_json::json!({ "name": "w", "trainable": false })
    );
}

#[test]
fn every_built_in_layer_has_named_and_with_trainable_builders() {
    use rime_layers::activations::Activation;
    use rime_layers::{
        ActivationLayer, Add, Concatenate, Dropout, Embedding, EmbeddingTranspose, Flatten, Lambda,
        LayerNormalization, Multiply, Reshape,
    };
    use rime_layers::{
        AveragePooling1D, Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, GlobalAveragePooling2D,
        GlobalMaxPooling1D, MaxPooling2D, UpSampling2D, ZeroPadding2D,
    };
    let embedding = Arc::new(Embedding::<f64>::new(4, 2));
    let layers: Vec<(LayerRef<f64>, &str)> = vec![
        (
            Arc::new(
                ActivationLayer::new(Activation::Relu)
                    .named("a")
                    .with_trainable(false),
            ),
            "a",
        ),
        (Arc::new(Add::new().named("b").with_trainable(false)), "b"),
        (
            Arc::new(BatchNormalization::new().named("c").with_trainable(false)),
            "c",
        ),
        (
            Arc::new(Concatenate::new().named("d").with_trainable(false)),
            "d",
        ),
        (
            Arc::new(Dense::new(2).named("e").with_trainable(false)),
            "e",
        ),
        (
            Arc::new(Dropout::new(0.5).named("f").with_trainable(false)),
            "f",
        ),
        (
            Arc::new(Embedding::new(4, 2).named("g").with_trainable(false)),
            "g",
        ),
        (
            Arc::new(
                EmbeddingTranspose::new(embedding)
                    .named("h")
                    .with_trainable(false),
            ),
            "h",
        ),
        (
            Arc::new(Flatten::new().named("i").with_trainable(false)),
            "i",
        ),
        (
            Arc::new(
                Lambda::new("id", |xs: &[Tensor<f64>]| Ok(xs.to_vec()))
                    .named("j")
                    .with_trainable(false),
            ),
            "j",
        ),
        (
            Arc::new(LayerNormalization::new().named("k").with_trainable(false)),
            "k",
        ),
        (
            Arc::new(Multiply::new().named("l").with_trainable(false)),
            "l",
        ),
        (
            Arc::new(Reshape::new(vec![-1]).named("m").with_trainable(false)),
            "m",
        ),
        (
            Arc::new(Conv1D::new(2, 3).named("n").with_trainable(false)),
            "n",
        ),
        (
            Arc::new(Conv2D::new(2, [3, 3]).named("o").with_trainable(false)),
            "o",
        ),
        (
            Arc::new(
                Conv2DTranspose::new(2, [3, 3])
                    .named("p")
                    .with_trainable(false),
            ),
            "p",
        ),
        (
            Arc::new(
                DepthwiseConv2D::new([3, 3])
                    .named("q")
                    .with_trainable(false),
            ),
            "q",
        ),
        (
            Arc::new(MaxPooling2D::new(&[2]).named("r").with_trainable(false)),
            "r",
        ),
        (
            Arc::new(AveragePooling1D::new(&[2]).named("s").with_trainable(false)),
            "s",
        ),
        (
            Arc::new(
                GlobalAveragePooling2D::new()
                    .named("t")
                    .with_trainable(false),
            ),
            "t",
        ),
        (
            Arc::new(GlobalMaxPooling1D::new().named("u").with_trainable(false)),
            "u",
        ),
        (
            Arc::new(UpSampling2D::new([2, 2]).named("v").with_trainable(false)),
            "v",
        ),
        (
            Arc::new(
                ZeroPadding2D::new([[1, 1], [1, 1]])
                    .named("w")
                    .with_trainable(false),
            ),
            "w",
        ),
    ];
    for (layer, name) in layers {
        assert_eq!(layer.name(), name);
        assert!(!layer.trainable(), "{name}");
        assert_eq!(
            layer.get_config()["name"],
            name,
            "{name}: the config carries the name"
        );
    }
}

/// A user struct that calls its (tracked) BatchNormalization afresh with
/// `call(x, true)`: it neither forwards `ctx` nor lists `sublayers`.
struct Forgetful {
    base: LayerBase<f64>,
    bn: Arc<BatchNormalization<f64>>,
}

impl Forgetful {
    fn new(bn: BatchNormalization<f64>) -> Self {
        let base = LayerBase::new("Forgetful", None);
        let bn = base.track(bn);
        Forgetful { base, bn }
    }
}

impl Layer<f64> for Forgetful {
    fn base(&self) -> &LayerBase<f64> {
        &self.base
    }
    fn call_with(
        &self,
        inputs: &[Tensor<f64>],
        _: CallContext,
    ) -> rime_layers::Result<Vec<Tensor<f64>>> {
        Ok(vec![self.bn.call(&inputs[0], true)?])
    }
}

fn bn_input() -> Tensor<f64> {
    Tensor::from_vec(vec![1.0, 2.0, 3.0, 5.0, 7.0, 11.0], [3, 2]).unwrap()
}

/// The BatchNormalization's inference output, computed by hand from its
/// moving statistics (gamma 1, beta 0, epsilon 1e-3).
fn bn_inference(bn: &BatchNormalization<f64>, x: &Tensor<f64>) -> Vec<f64> {
    let (m, v) = (
        bn.moving_mean().unwrap().to_vec(),
        bn.moving_variance().unwrap().to_vec(),
    );
    x.to_vec()
        .iter()
        .enumerate()
        .map(|(i, x)| (x - m[i % 2]) / (v[i % 2] + 1e-3).sqrt())
        .collect()
}

#[test]
fn a_frozen_batch_norm_in_a_struct_layer_runs_in_inference_mode() {
    let layer = Forgetful::new(BatchNormalization::new());
    let x = bn_input();
    layer.call(&x, true).unwrap(); // trainable: the statistics move
    let moved = layer.bn.moving_mean().unwrap().to_vec();
    assert!((moved[0] - 0.01 * 11.0 / 3.0).abs() < 1e-12, "{moved:?}");
    assert_eq!(layer.weights().len(), 4, "tracked without `sublayers`");

    layer.bn.set_trainable(false); // the BatchNormalization itself frozen
    let y = layer.call(&x, true).unwrap();
    assert_eq!(layer.bn.moving_mean().unwrap().to_vec(), moved);
    let want = bn_inference(&layer.bn, &x);
    for (a, b) in y.to_vec().iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{y:?} vs {want:?}");
    }
}

#[test]
fn a_frozen_struct_layer_freezes_a_sublayer_called_afresh() {
    // the struct is frozen, the BatchNormalization's own flag is not, and
    // the struct calls it with a fresh `call(x, true)`: `apply` carries
    // the frozen state down anyway
    let layer = Forgetful::new(BatchNormalization::new());
    let x = bn_input();
    layer.call(&x, true).unwrap();
    let moved = layer.bn.moving_mean().unwrap().to_vec();
    layer.set_trainable(false);
    assert!(layer.bn.trainable());
    let y = layer.call(&x, true).unwrap();
    assert_eq!(layer.bn.moving_mean().unwrap().to_vec(), moved);
    let want = bn_inference(&layer.bn, &x);
    for (a, b) in y.to_vec().iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{y:?} vs {want:?}");
    }
    // called on its own again, outside the frozen struct, it trains
    layer.bn.call(&x, true).unwrap();
    assert_ne!(layer.bn.moving_mean().unwrap().to_vec(), moved);
    assert_eq!(layer.class_name(), "Forgetful", "the default class name");
}

#[test]
fn weights_are_trainable_then_non_trainable_and_files_keep_a_fixed_order() {
    use rime_layers::models::{load_weights, save_weights};
    let build = || {
        Sequential::<f64>::new()
            .add(Dense::new(3).named("first"))
            .add(BatchNormalization::new().named("norm"))
            .add(Dense::new(1).named("last"))
            .with_input_shape([2])
            .unwrap()
    };
    let model = build();
    let names = |vs: Vec<rime_tape::Variable<f64>>| -> Vec<String> {
        vs.iter().map(|v| v.name().to_string()).collect()
    };
    // Keras: trainable weights first, then the non-trainable ones
    assert_eq!(
        names(model.weights()),
        [
            "first/kernel",
            "first/bias",
            "norm/gamma",
            "norm/beta",
            "last/kernel",
            "last/bias",
            "norm/moving_mean",
            "norm/moving_variance"
        ]
    );
    model.get_layer("first").unwrap().set_trainable(false);
    assert_eq!(names(model.weights())[..2], ["norm/gamma", "norm/beta"]);
    assert_eq!(names(model.weights())[4..6], ["first/kernel", "first/bias"]);
    // the fixed order: creation order, whatever the flags
    assert_eq!(
        names(model.variables())[..3],
        ["first/kernel", "first/bias", "norm/gamma"]
    );

    // a file written with a frozen layer loads into a fresh model
    let path = std::env::temp_dir().join(format!("rime_order_{}.safetensors", std::process::id()));
    save_weights(&model, &path).unwrap();
    let fresh = build();
    load_weights(&fresh, &path).unwrap();
    std::fs::remove_file(&path).ok();
    for (a, b) in model.variables().iter().zip(fresh.variables()) {
        assert_eq!(a.to_vec(), b.to_vec(), "{}", a.name());
    }
    // get/set_weights use the Keras order on both sides
    let values = model.get_weights();
    fresh.get_layer("first").unwrap().set_trainable(false);
    fresh.set_weights(&values).unwrap();
    assert_eq!(fresh.get_weights(), values);
}
