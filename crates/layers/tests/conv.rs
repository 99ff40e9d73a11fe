//! Convolution and pooling layers: shapes, configs, bad input, and masks on
//! conv kernels (frozen filters, input channels and taps stay bit-identical
//! under every optimizer; the filter-mask backward computes only the
//! trainable filters).

use rime_layers::activations::Activation;
use rime_layers::config::{LayerConfig, layer_from_config};
use rime_layers::layers::Padding;
use rime_layers::optimizers::{Adam, AdamW, Optimizer, RmsProp, Sgd};
use rime_layers::{
    AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D,
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, Layer,
    MaxPooling1D, MaxPooling2D, UpSampling2D, ZeroPadding2D,
};
use rime_tape::{GradientTape, TrainableMask, Variable};
use rime_tensor::{PartialShape, Tensor, seeded_rng};

fn normal(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).unwrap()
}

#[test]
fn output_shapes_follow_keras() {
    type Case = (Box<dyn Layer<f32>>, Vec<usize>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (
            Box::new(Conv2D::new(32, [3, 3])),
            vec![2, 28, 28, 1],
            vec![2, 26, 26, 32],
        ),
        (
            Box::new(Conv2D::new(4, [3, 3]).strides(&[2]).padding(Padding::Same)),
            vec![1, 7, 8, 3],
            vec![1, 4, 4, 4],
        ),
        (
            Box::new(Conv2D::new(4, [3, 3]).dilation_rate(&[2, 2])),
            vec![1, 7, 8, 2],
            vec![1, 3, 4, 4],
        ),
        (
            Box::new(Conv2D::new(6, [1, 1]).groups(3)),
            vec![1, 2, 2, 3],
            vec![1, 2, 2, 6],
        ),
        (
            Box::new(Conv1D::new(5, 3).strides(&[2])),
            vec![2, 9, 3],
            vec![2, 4, 5],
        ),
        (
            Box::new(
                DepthwiseConv2D::new([3, 3])
                    .depth_multiplier(2)
                    .padding(Padding::Same),
            ),
            vec![1, 5, 5, 3],
            vec![1, 5, 5, 6],
        ),
        (
            Box::new(Conv2DTranspose::new(2, [3, 3]).strides(&[2, 2])),
            vec![1, 4, 5, 3],
            vec![1, 9, 11, 2],
        ),
        (
            Box::new(MaxPooling2D::new(&[2, 2])),
            vec![1, 5, 5, 2],
            vec![1, 2, 2, 2],
        ),
        (
            Box::new(
                AveragePooling2D::new(&[3])
                    .strides(&[2])
                    .padding(Padding::Same),
            ),
            vec![1, 5, 6, 2],
            vec![1, 3, 3, 2],
        ),
        (
            Box::new(MaxPooling1D::new(&[2])),
            vec![1, 5, 2],
            vec![1, 2, 2],
        ),
        (
            Box::new(AveragePooling1D::new(&[2]).padding(Padding::Same)),
            vec![1, 5, 2],
            vec![1, 3, 2],
        ),
        (
            Box::new(GlobalAveragePooling2D::new()),
            vec![3, 5, 5, 2],
            vec![3, 2],
        ),
        (
            Box::new(GlobalMaxPooling2D::new()),
            vec![3, 5, 5, 2],
            vec![3, 2],
        ),
        (
            Box::new(GlobalAveragePooling1D::new().keepdims(true)),
            vec![3, 5, 2],
            vec![3, 1, 2],
        ),
        (
            Box::new(GlobalMaxPooling1D::new()),
            vec![3, 5, 2],
            vec![3, 2],
        ),
        (
            Box::new(ZeroPadding2D::new([[1, 2], [0, 3]])),
            vec![1, 2, 2, 1],
            vec![1, 5, 5, 1],
        ),
        (
            Box::new(UpSampling2D::new([2, 3])),
            vec![1, 2, 2, 1],
            vec![1, 4, 6, 1],
        ),
    ];
    for (layer, input, want) in cases {
        let s = PartialShape::from(input.clone());
        assert_eq!(
            layer
                .compute_output_shape(std::slice::from_ref(&s))
                .unwrap(),
            vec![PartialShape::from(want.clone())],
            "{}",
            layer.class_name()
        );
        let y = layer.call(&normal(&input, 1), false).unwrap();
        assert_eq!(y.dims(), &want[..], "{}", layer.class_name());
        // the config round-trips through the registry
        let cfg = LayerConfig::of(layer.as_ref());
        let again = layer_from_config::<f32>(&cfg).unwrap();
        assert_eq!(
            again.get_config(),
            layer.get_config(),
            "{}",
            layer.class_name()
        );
        assert_eq!(again.class_name(), layer.class_name());
    }
}

#[test]
fn configs_use_keras_names() {
    let conv = Conv2D::<f32>::new(8, [3, 3])
        .strides(&[2, 2])
        .padding(Padding::Same)
        .activation(Activation::Relu)
        .named("c1");
    let c = conv.get_config();
    assert_eq!(c["filters"], 8);
    assert_eq!(c["kernel_size"], serde_json::json!([3, 3]));
    assert_eq!(c["strides"], serde_json::json!([2, 2]));
    assert_eq!(c["padding"], "same");
    assert_eq!(c["dilation_rate"], serde_json::json!([1, 1]));
    assert_eq!(c["name"], "c1");
    let d = DepthwiseConv2D::<f32>::new([3, 3])
        .depth_multiplier(2)
        .get_config();
    assert_eq!(d["depth_multiplier"], 2);
    assert!(d.get("depthwise_initializer").is_some());
    let p = MaxPooling2D::<f32>::new(&[2, 2]).get_config();
    assert_eq!(p["pool_size"], serde_json::json!([2, 2]));
    assert_eq!(p["strides"], serde_json::Value::Null);
}

#[test]
fn bad_arguments_and_inputs_are_errors() {
    // invalid constructor arguments surface at build or from_config
    assert!(
        Conv2D::<f32>::new(0, [3, 3])
            .call(&normal(&[1, 5, 5, 1], 0), false)
            .is_err()
    );
    assert!(
        Conv2D::<f32>::new(4, [3, 3])
            .strides(&[0, 1])
            .call(&normal(&[1, 5, 5, 1], 0), false)
            .is_err()
    );
    assert!(
        Conv2D::<f32>::new(4, [3, 3])
            .groups(3)
            .call(&normal(&[1, 5, 5, 2], 0), false)
            .is_err()
    );
    // constructors do not fail; the first call reports the argument and
    // names the layer
    let x = normal(&[1, 4, 4, 1], 0);
    let err = MaxPooling2D::<f32>::new(&[2, 3, 2])
        .named("p3")
        .call(&x, false);
    let err = err.unwrap_err().to_string();
    assert!(err.contains("p3") && err.contains("pool_size"), "{err}");
    let err = UpSampling2D::<f32>::new([0, 1]).named("u0").call(&x, false);
    let err = err.unwrap_err().to_string();
    assert!(err.contains("u0") && err.contains("size"), "{err}");
    let err = rime_layers::Embedding::<f32>::new(0, 3)
        .named("e0")
        .call(&x, false);
    let err = err.unwrap_err().to_string();
    assert!(err.contains("e0") && err.contains("input_dim"), "{err}");
    // wrong rank, a kernel that does not fit, and channels that change
    let conv = Conv2D::<f32>::new(4, [3, 3]);
    let err = conv
        .call(&normal(&[5, 5, 1], 0), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 4"), "{err}");
    assert!(conv.call(&normal(&[1, 2, 5, 1], 0), false).is_err());
    let conv = Conv2D::<f32>::new(4, [3, 3]);
    conv.call(&normal(&[1, 5, 5, 2], 0), false).unwrap();
    let err = conv
        .call(&normal(&[1, 5, 5, 3], 0), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 channels"), "{err}");
}

/// A small CNN's loss and the gradient of its conv kernel.
fn cnn_step(conv: &Conv2D<f32>, x: &Tensor<f32>) -> (Tensor<f32>, Vec<Option<Tensor<f32>>>) {
    let tape = GradientTape::new();
    let h = conv.call(x, true).unwrap().relu();
    let loss = h.square().mean_all();
    let vars = conv.trainable_weights();
    let g = tape.gradient(&loss, &vars).unwrap();
    (loss, g)
}

#[test]
fn filter_mask_backward_computes_only_trainable_filters() {
    let x = normal(&[4, 9, 9, 3], 2);
    let conv = Conv2D::<f32>::new(8, [3, 3]);
    conv.call(&x, false).unwrap();
    let kernel = conv.kernel().unwrap().clone();
    let (_, full) = cnn_step(&conv, &x);
    let full = full[0].clone().unwrap();
    kernel
        .set_mask(Some(TrainableMask::axis_ranges(-1, [2..5, 7..8])))
        .unwrap();
    let (_, part) = cnn_step(&conv, &x);
    let part = part[0].clone().unwrap();
    for (i, (&p, &f)) in part.as_slice().iter().zip(full.as_slice()).enumerate() {
        let o = i % 8;
        if (2..5).contains(&o) || o == 7 {
            assert!((p - f).abs() <= 1e-6 * (1.0 + f.abs()), "{i}: {p} vs {f}");
        } else {
            assert_eq!(p, 0.0, "frozen filter {o} got a gradient");
        }
    }
}

fn optimizers() -> Vec<Box<dyn Optimizer<f32>>> {
    vec![
        Box::new(Adam::new().learning_rate(0.01)),
        Box::new(AdamW::new().learning_rate(0.01).weight_decay(0.1)),
        Box::new(Sgd::new().learning_rate(0.05).momentum(0.9)),
        Box::new(Sgd::new().learning_rate(0.05).momentum(0.9).nesterov(true)),
        Box::new(RmsProp::new().learning_rate(0.01).momentum(0.5)),
    ]
}

#[test]
fn masked_kernel_numbers_stay_bit_identical() {
    let x = normal(&[4, 8, 8, 4], 3);
    let masks = [
        (
            "output filters 0..3 frozen",
            TrainableMask::axis_ranges(-1, 3..6),
        ),
        (
            "input channels 1..2 frozen",
            TrainableMask::axis_ranges(2, [0..1, 2..4]),
        ),
        (
            "centre tap frozen",
            TrainableMask::axis_ranges(0, 1..2)
                .intersection(TrainableMask::axis_ranges(1, 1..2))
                .complement(),
        ),
    ];
    for (what, mask) in masks {
        for mut opt in optimizers() {
            let conv = Conv2D::<f32>::new(6, [3, 3]).kernel_initializer(
                rime_layers::initializers::Initializer::GlorotUniform { seed: Some(5) },
            );
            conv.call(&x, false).unwrap();
            let kernel: Variable<f32> = conv.kernel().unwrap().clone();
            kernel.set_mask(Some(mask.clone())).unwrap();
            let resolved = kernel.mask().unwrap();
            let before = kernel.to_vec();
            for _ in 0..5 {
                let (_, grads) = cnn_step(&conv, &x);
                opt.apply_gradients(&grads, &conv.trainable_weights())
                    .unwrap();
            }
            let after = kernel.to_vec();
            let mut moved = 0;
            for (i, (a, b)) in after.iter().zip(&before).enumerate() {
                if resolved.is_trainable(i) {
                    moved += usize::from(a != b);
                } else {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{what}, {}: element {i} moved",
                        opt.name()
                    );
                }
            }
            assert!(moved > 0, "{what}, {}: nothing trained", opt.name());
        }
    }
}

/// The layer `which` picks (a few shape-changing layers, with random
/// strides and padding), fresh; `needs_channels` when it sizes weights by
/// the last axis.
fn shape_case(
    which: usize,
    stride: usize,
    same: bool,
    channels: usize,
) -> (Box<dyn Layer<f32>>, bool) {
    use rime_layers::{Concatenate, Dense, Embedding, Flatten, Reshape};
    let padding = if same { Padding::Same } else { Padding::Valid };
    match which {
        0 => (
            Box::new(Conv2D::new(3, [2, 2]).strides(&[stride]).padding(padding)),
            true,
        ),
        1 => (
            Box::new(
                MaxPooling2D::new(&[2, 2])
                    .strides(&[stride, stride])
                    .padding(padding),
            ),
            false,
        ),
        2 => (
            Box::new(AveragePooling2D::new(&[3]).padding(padding)),
            false,
        ),
        3 => (Box::new(Flatten::new()), false),
        4 => (Box::new(Reshape::new(vec![-1, channels as isize])), false),
        5 => (Box::new(UpSampling2D::new([2, stride])), false),
        6 => (Box::new(ZeroPadding2D::new([[1, 0], [0, 2]])), false),
        7 => (
            Box::new(
                DepthwiseConv2D::new([2, 2])
                    .strides(&[stride])
                    .padding(padding),
            ),
            true,
        ),
        8 => (Box::new(GlobalMaxPooling2D::new()), false),
        9 => (Box::new(Dense::new(2)), true),
        10 => (Box::new(Embedding::new(3, 2)), false),
        _ => (
            Box::new(Concatenate::new().axis(if same { 1 } else { -1 })),
            false,
        ),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// `compute_output_shape` on a shape with random unknown dimensions
    /// agrees with a real call: every dimension it reports known equals the
    /// real one (all of them when every input dimension is known); a layer
    /// that needs an unknown size fails with `UnknownDimension` instead.
    #[test]
    fn partial_output_shapes_agree_with_real_calls(
        dims in proptest::collection::vec(1usize..7, 4),
        known in proptest::collection::vec(proptest::bool::ANY, 4),
        other in 1usize..5,
        other_known in proptest::bool::ANY,
        which in 0usize..12,
        stride in 1usize..3,
        same in proptest::bool::ANY,
    ) {
        let (layer, needs_channels) = shape_case(which, stride, same, dims[3]);
        let partial = PartialShape::new(dims.iter().zip(&known).map(|(&d, &k)| k.then_some(d)));
        let mut real_shapes = vec![dims.clone()];
        let mut partials = vec![partial.clone()];
        if which >= 11 {
            // a second input, differing on the concatenation axis
            let axis = if same { 1 } else { 3 };
            let mut second = dims.clone();
            second[axis] = other;
            partials.push(partial.with_dim(axis, other_known.then_some(other)));
            real_shapes.push(second);
        }
        let built = layer.ensure_built(&partials);
        if needs_channels && !known[3] {
            let e = built.unwrap_err();
            proptest::prop_assert!(matches!(e, rime_layers::Error::UnknownDimension { axis: 3, .. }), "{e:?}");
            return Ok(());
        }
        built.unwrap();
        let predicted = layer.compute_output_shape(&partials);
        let inputs: Vec<Tensor<f32>> = real_shapes.iter().map(|s| Tensor::zeros(&s[..]).unwrap()).collect();
        let real = layer.call_many(&inputs, false);
        let fully_known = partials.iter().all(|p| p.is_fully_known());
        match (predicted, real) {
            (Ok(p), Ok(y)) => {
                proptest::prop_assert_eq!(p.len(), 1);
                proptest::prop_assert!(p[0].matches(y[0].shape()), "{} vs {}", p[0], y[0].shape());
                if fully_known {
                    proptest::prop_assert_eq!(&p[0], y[0].shape());
                }
            }
            // a size that turns out too small fails at the call, as in Keras
            (Ok(_), Err(_)) => proptest::prop_assert!(!fully_known),
            (Err(e), real) => proptest::prop_assert!(real.is_err(), "predicted {e:?}, but the call worked"),
        }
    }
}
