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
    let embedding = Arc::new(Embedding::<f64>::new(4, 2).unwrap());
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
            Arc::new(Dropout::new(0.5).unwrap().named("f").with_trainable(false)),
            "f",
        ),
        (
            Arc::new(
                Embedding::new(4, 2)
                    .unwrap()
                    .named("g")
                    .with_trainable(false),
            ),
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
            Arc::new(
                Reshape::new(vec![-1])
                    .unwrap()
                    .named("m")
                    .with_trainable(false),
            ),
            "m",
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
