//! Models: Sequential, the functional Model (multi-input/output, shared
//! layers, nested models, sub-models and cut models), summary, clone_model,
//! configs and weights files.

use std::sync::Arc;

use approx::assert_relative_eq;
use rime_layers::activations::Activation;
use rime_layers::initializers::Initializer;
use rime_layers::models::{load_weights, save_weights, summary};
use rime_layers::{
    Dense, Error, Input, Layer, LayerRef, Model, Sequential, call_symbolic, clone_model,
};
use rime_tensor::Tensor;

fn t(v: &[f32], s: &[usize]) -> Tensor<f32> {
    Tensor::from_vec(v.to_vec(), s).unwrap()
}

/// A Dense layer with fixed weights, so outputs can be checked by hand.
fn fixed_dense(units: usize, value: f64) -> Dense {
    Dense::new(units)
        .kernel_initializer(Initializer::Constant { value })
        .bias_initializer(Initializer::Constant { value: 0.5 })
}

#[test]
fn sequential_computes_the_composition() {
    let model = Sequential::new()
        .add(fixed_dense(2, 1.0))
        .add(fixed_dense(1, 2.0).activation(Activation::Relu));
    // x = [1, 2, 3]: h = 6 + 0.5 = 6.5 (twice); y = relu(2 * 13 + 0.5) = 26.5
    let y = model.call(&t(&[1.0, 2.0, 3.0], &[1, 3]), false).unwrap();
    assert_eq!(y.to_vec(), vec![26.5]);
    assert_eq!(model.weights().len(), 4);
    assert_eq!(
        model.get_layer(model.layers()[1].name()).unwrap().name(),
        model.layers()[1].name()
    );
}

#[test]
fn functional_multi_input_output_and_shared_layers() {
    let a = Input::<f32>::new([2]);
    let b = Input::<f32>::new([2]);
    let shared = Arc::new(fixed_dense(3, 1.0));
    let ha = a.apply(shared.clone()).unwrap();
    let hb = b.apply(shared.clone()).unwrap();
    let model = Model::new(&[&a, &b], &[&ha, &hb]).unwrap();
    assert_eq!(model.layers().len(), 1, "a layer called twice is one layer");
    assert_eq!(model.weights().len(), 2);
    let out = model
        .call_many(&[t(&[1.0, 1.0], &[1, 2]), t(&[2.0, 3.0], &[1, 2])], false)
        .unwrap();
    assert_eq!(out[0].to_vec(), vec![2.5; 3]);
    assert_eq!(out[1].to_vec(), vec![5.5; 3]);
    // wrong number of inputs, wrong example shape
    assert!(matches!(
        model.call_many(&[t(&[1.0, 1.0], &[1, 2])], false),
        Err(Error::Input { .. })
    ));
    assert!(matches!(
        model.call_many(&[t(&[1.0; 3], &[1, 3]), t(&[1.0; 2], &[1, 2])], false),
        Err(Error::Input { .. })
    ));
}

/// inputs → h1 → h2 → h3 → h4 → out, with residual adds inside the h2..out
/// stretch only, so the graph can be cut at h2.
fn residual_graph() -> (Vec<rime_layers::SymbolicTensor>, Model) {
    let x = Input::<f32>::new([3]);
    let h1 = x.apply(Dense::new(4).activation(Activation::Tanh)).unwrap();
    let h2 = h1
        .apply(Dense::new(4).activation(Activation::Tanh))
        .unwrap();
    let h3 = h2
        .apply(Dense::new(4).activation(Activation::Tanh))
        .unwrap();
    let sum = call_symbolic(rime_layers::layers::Add::new(), &[&h2, &h3])
        .unwrap()
        .remove(0);
    let h4 = sum
        .apply(Dense::new(4).activation(Activation::Tanh))
        .unwrap();
    let out = h4.apply(Dense::new(2)).unwrap();
    let model = Model::new(&[&x], &[&out]).unwrap();
    (vec![x, h1, h2, h3, h4, out], model)
}

#[test]
fn sub_models_share_weights_with_the_original() {
    let (ts, model) = residual_graph();
    let (x, h2, out) = (&ts[0], &ts[2], &ts[5]);
    let input =
        Tensor::<f32>::rand_uniform([5, 3], -1.0, 1.0, &mut rime_tensor::seeded_rng(1)).unwrap();

    // feature extraction: the same inputs, an inner output
    let features = Model::new(&[x], &[h2]).unwrap();
    let also = Model::new(
        &[x],
        &[&model.layer_output(model.layers()[1].name()).unwrap()],
    )
    .unwrap();
    let f = features.call(&input, false).unwrap();
    assert_eq!(f, also.call(&input, false).unwrap());
    assert_eq!(f.shape(), &[5, 4]);

    // a model cut at h2 and fed from there reproduces the full model
    let tail = Model::new(&[h2], &[out]).unwrap();
    let full = model.call(&input, false).unwrap();
    assert_relative_eq!(tail.call(&f, false).unwrap(), full, epsilon = 1e-6);
    // the tail holds the original layers: changing a weight changes both
    let last = tail.layers().last().unwrap().clone();
    let w = last.weights()[0].clone();
    w.assign(&w.value_untracked().mul_scalar(3.0)).unwrap();
    assert_relative_eq!(
        tail.call(&f, false).unwrap(),
        model.call(&input, false).unwrap(),
        epsilon = 1e-6
    );
    assert_ne!(model.call(&input, false).unwrap(), full);

    // cutting where the graph still needs an earlier input is an error
    let h3 = &ts[3];
    let err = Model::new(&[h3], &[out])
        .err()
        .expect("h2 feeds the residual add");
    assert!(
        matches!(&err, Error::Graph { msg, .. } if msg.contains("disconnected")),
        "{err}"
    );
}

#[test]
fn a_model_used_as_a_layer() {
    let inner_in = Input::<f32>::new([2]);
    let inner_out = inner_in.apply(fixed_dense(2, 1.0)).unwrap();
    let inner = Arc::new(Model::new(&[&inner_in], &[&inner_out]).unwrap());
    let x = Input::<f32>::new([2]);
    let y = x
        .apply(inner.clone())
        .unwrap()
        .apply(inner.clone())
        .unwrap();
    let outer = Model::new(&[&x], &[&y]).unwrap();
    // [1, 1] → [2.5, 2.5] → [5.5, 5.5]
    assert_eq!(
        outer
            .call(&t(&[1.0, 1.0], &[1, 2]), false)
            .unwrap()
            .to_vec(),
        vec![5.5, 5.5]
    );
    assert_eq!(outer.weights(), inner.weights());
    // inside a Sequential too
    let seq = Sequential::new()
        .add(inner.clone())
        .add(fixed_dense(1, 1.0));
    assert_eq!(
        seq.call(&t(&[1.0, 1.0], &[1, 2]), false).unwrap().to_vec(),
        vec![5.5]
    );
}

#[test]
fn duplicate_layer_names_are_rejected() {
    let x = Input::<f32>::new([2]);
    let cfg = rime_layers::DenseConfig {
        name: Some("same".into()),
        units: 2,
        ..Default::default()
    };
    let a = x.apply(Dense::from_config(cfg.clone()).unwrap()).unwrap();
    let b = a.apply(Dense::from_config(cfg).unwrap()).unwrap();
    assert!(matches!(Model::new(&[&x], &[&b]), Err(Error::Graph { .. })));
}

#[test]
fn clone_model_copies_structure_with_fresh_weights() {
    let (_, model) = residual_graph();
    let copy = clone_model(&model).unwrap();
    let input =
        Tensor::<f32>::rand_uniform([4, 3], -1.0, 1.0, &mut rime_tensor::seeded_rng(2)).unwrap();
    let a = model.call(&input, false).unwrap();
    let b = copy.call(&input, false).unwrap();
    assert_eq!(a.shape(), b.shape());
    assert_ne!(a, b, "fresh weights give different outputs");
    assert_eq!(copy.count_params(), model.count_params());
    copy.set_weights(&model.get_weights()).unwrap();
    assert_eq!(copy.call(&input, false).unwrap(), a);
    // the copy's weights are its own
    assert!(copy.weights().iter().all(|w| !model.weights().contains(w)));

    // a Sequential with a layer used twice keeps it shared in the copy
    let d = Arc::new(Dense::<f32>::new(3));
    let seq = Sequential::new()
        .add(d.clone())
        .add(d.clone())
        .with_input_shape([3])
        .unwrap();
    let seq_copy = clone_model(&seq).unwrap();
    assert_eq!(seq_copy.weights().len(), 2);
}

#[test]
fn configs_round_trip() {
    let (_, model) = residual_graph();
    let cfg = rime_layers::config::LayerConfig::of(&model);
    let text = serde_json::to_string(&cfg).unwrap();
    let back: rime_layers::config::LayerConfig = serde_json::from_str(&text).unwrap();
    let rebuilt = rime_layers::config::layer_from_config::<f32>(&back).unwrap();
    rebuilt.set_weights(&model.get_weights()).unwrap();
    let input = Tensor::<f32>::ones([2, 3]).unwrap();
    assert_eq!(
        rebuilt.call(&input, false).unwrap(),
        model.call(&input, false).unwrap()
    );
    assert_eq!(
        rime_layers::config::LayerConfig::of(&*rebuilt).config["nodes"],
        cfg.config["nodes"]
    );

    let seq = Sequential::<f32>::new()
        .add(Dense::new(2).activation(Activation::Sigmoid))
        .with_input_shape([5])
        .unwrap();
    let c = rime_layers::config::LayerConfig::of(&seq);
    assert_eq!(c.config["layers"][0]["config"]["activation"], "sigmoid");
    let s2 = rime_layers::config::layer_from_config::<f32>(&c).unwrap();
    assert_eq!(s2.count_params(), 12);

    let unknown = rime_layers::config::LayerConfig {
        class_name: "Nope".into(),
        config: serde_json::json!({}),
    };
    assert!(matches!(
        rime_layers::config::layer_from_config::<f32>(&unknown),
        Err(Error::Config { .. })
    ));
}

#[test]
fn weights_files_round_trip_and_bad_files_change_nothing() {
    let dir = std::env::temp_dir().join(format!("rime_models_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Sequential::<f32>::new()
        .add(Dense::new(3))
        .add(Dense::new(2))
        .with_input_shape([4])
        .unwrap();
    let b = clone_model(&a).unwrap();
    let path = dir.join("a.safetensors");
    save_weights(&a, &path).unwrap();
    load_weights(&*b, &path).unwrap();
    assert_eq!(a.get_weights(), b.get_weights());

    // a file for another structure: error, and nothing assigned
    let other = Sequential::<f32>::new()
        .add(Dense::new(3))
        .add(Dense::new(5))
        .with_input_shape([4])
        .unwrap();
    let before = other.get_weights();
    let err = load_weights(&other, &path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { msg, .. } if msg.contains("shape")),
        "{err}"
    );
    assert_eq!(other.get_weights(), before);
    // another dtype
    let f64_model = Sequential::<f64>::new()
        .add(Dense::new(3))
        .add(Dense::new(2))
        .with_input_shape([4])
        .unwrap();
    assert!(matches!(
        load_weights(&f64_model, &path),
        Err(Error::Io { .. })
    ));
    // a missing file
    assert!(matches!(
        load_weights(&a, dir.join("missing")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn set_weights_checks_everything_first() {
    let model = Sequential::<f32>::new()
        .add(Dense::new(2))
        .add(Dense::new(1))
        .with_input_shape([3])
        .unwrap();
    let good = model.get_weights();
    let mut bad = good.clone();
    bad[3] = Tensor::zeros([2]).unwrap(); // last bias is [1]
    let zeros: Vec<Tensor<f32>> = good.iter().map(Tensor::zeros_like).collect();
    let mut partly = zeros.clone();
    partly[3] = Tensor::zeros([2]).unwrap();
    let err = model.set_weights(&partly).unwrap_err();
    assert!(
        matches!(&err, Error::SetWeights { msg, .. } if msg.contains("[1]") && msg.contains("[2]")),
        "{err}"
    );
    assert_eq!(model.get_weights(), good, "nothing assigned");
    assert!(matches!(
        model.set_weights(&good[..3]),
        Err(Error::SetWeights { .. })
    ));
    model.set_weights(&zeros).unwrap();
    assert!(
        model
            .get_weights()
            .iter()
            .all(|w| w.as_slice().iter().all(|&v| v == 0.0))
    );
}

#[test]
fn summary_lists_layers_shapes_and_counts() {
    let model = Sequential::<f32>::new()
        .add(Dense::new(64).activation(Activation::Relu))
        .add(Dense::new(10))
        .with_input_shape([784])
        .unwrap();
    let first: LayerRef = model.layers()[0].clone();
    first.set_trainable(false);
    let s = summary(&model);
    assert!(
        s.starts_with(&format!("Model: \"{}\"", model.name())),
        "{s}"
    );
    assert!(s.contains(&format!("{} (Dense)", first.name())));
    assert!(s.contains("(None, 64)") && s.contains("(None, 10)"));
    assert!(s.contains("50,240") && s.contains("650"));
    assert!(s.contains("Total params: 50,890 (198.79 KB)"), "{s}");
    assert!(s.contains("Trainable params: 650 (2.54 KB)"), "{s}");
    assert!(
        s.contains("Non-trainable params: 50,240 (196.25 KB)"),
        "{s}"
    );
}

/// `x · W + b` row by row, from the layer's current weights (the reference
/// a model's output is checked against, batch size by batch size).
fn dense_by_hand(layer: &dyn Layer<f32>, x: &Tensor<f32>, relu: bool) -> Tensor<f32> {
    let w = layer.get_weights();
    let (kernel, bias) = (w[0].to_vec(), w[1].to_vec());
    let (n, d_in, d_out) = (x.dims()[0], w[0].dims()[0], w[0].dims()[1]);
    let xs = x.to_vec();
    let mut out = Vec::with_capacity(n * d_out);
    for r in 0..n {
        for c in 0..d_out {
            let mut acc = bias[c];
            for k in 0..d_in {
                acc += xs[r * d_in + k] * kernel[k * d_out + c];
            }
            out.push(if relu { acc.max(0.0) } else { acc });
        }
    }
    Tensor::from_vec(out, [n, d_out]).unwrap()
}

fn batch(n: usize, seed: u64) -> Tensor<f32> {
    Tensor::rand_normal([n, 4], 0.0, 1.0, &mut rime_tensor::seeded_rng(seed)).unwrap()
}

#[test]
fn models_build_for_an_unknown_batch_size() {
    use rime_tensor::PartialShape;
    // Sequential: built by the declared example shape, before any call
    let seq = Sequential::<f32>::new()
        .add(Dense::new(8).activation(Activation::Relu).named("hidden"))
        .add(Dense::new(3).named("out"))
        .with_input_shape([4])
        .unwrap();
    assert!(seq.layers().iter().all(|l| l.built()));
    let text = summary(&seq);
    assert!(
        text.contains("(None, 8)") && text.contains("(None, 3)"),
        "{text}"
    );
    assert_eq!(
        seq.compute_output_shape(&[PartialShape::batched([4])])
            .unwrap(),
        vec![PartialShape::from([None, Some(3)])]
    );
    // functional: the same, through symbolic tensors
    let x = Input::<f32>::new([4]);
    let h = x.apply(Dense::new(8).activation(Activation::Relu)).unwrap();
    let y = h.apply(Dense::new(3)).unwrap();
    assert_eq!(x.shape().to_string(), "(None, 4)");
    assert_eq!(y.shape().to_string(), "(None, 3)");
    assert_eq!(y.example_shape(), [3]);
    let fun = Model::new(&[&x], &[&y]).unwrap();
    let text = summary(&fun);
    assert!(
        text.contains("(None, 8)") && text.contains("(None, 3)"),
        "{text}"
    );
    // then batches of any size run, with the right values
    for n in [1, 3, 7] {
        let xs = batch(n, n as u64);
        let seq_out = seq.call(&xs, false).unwrap();
        let l = seq.layers();
        let want = dense_by_hand(&*l[1], &dense_by_hand(&*l[0], &xs, true), false);
        assert_eq!(seq_out.shape(), &[n, 3]);
        assert_relative_eq!(seq_out, want, epsilon = 1e-5);
        let fun_out = fun.call(&xs, false).unwrap();
        let l = fun.layers();
        let want = dense_by_hand(&*l[1], &dense_by_hand(&*l[0], &xs, true), false);
        assert_eq!(fun_out.shape(), &[n, 3]);
        assert_relative_eq!(fun_out, want, epsilon = 1e-5);
    }
    // a wrong example shape is still rejected
    assert!(matches!(
        fun.call(&Tensor::ones([2, 5]).unwrap(), false),
        Err(Error::Input { .. })
    ));
}

#[test]
fn a_layer_that_needs_an_unknown_dimension_is_a_typed_error() {
    use rime_layers::{BatchNormalization, Conv2D, Flatten};
    use rime_tensor::PartialShape;
    // Dense sizes its kernel by the last axis
    let err = Sequential::<f32>::new()
        .add(Dense::new(3).named("needs_last"))
        .with_input_shape([None])
        .err()
        .unwrap();
    match &err {
        Error::UnknownDimension {
            layer,
            shapes,
            axis,
            ..
        } => {
            assert_eq!((layer.as_str(), *axis), ("needs_last", 1));
            assert_eq!(shapes, &[PartialShape::from([None, None])]);
        }
        e => panic!("{e:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("needs_last") && msg.contains("(None, None)"),
        "{msg}"
    );
    // functional: a variable length is fine until a layer needs it
    let x = Input::<f32>::new([None, Some(6)]);
    let h = x.apply(Dense::new(2)).unwrap();
    assert_eq!(h.shape().to_string(), "(None, None, 2)");
    let flat = h.apply(Flatten::new()).unwrap();
    assert_eq!(flat.shape().to_string(), "(None, None)");
    let dense = Dense::<f32>::new(1).named("after_flatten");
    let err = flat.apply(dense).err().unwrap();
    assert!(
        matches!(&err, Error::UnknownDimension { layer, .. } if layer == "after_flatten"),
        "{err:?}"
    );
    // a failed build leaves the layer unbuilt, with no weights
    let conv = Arc::new(Conv2D::<f32>::new(4, [3, 3]).named("conv_channels"));
    let img = Input::<f32>::new([None, None, None]);
    let err = img.apply(conv.clone()).err().unwrap();
    assert!(
        err.to_string().contains("conv_channels") && err.to_string().contains("axis 3"),
        "{err}"
    );
    assert!(!conv.built() && conv.weights().is_empty());
    // the same layer builds later, for known channels
    let img = Input::<f32>::new([None, None, Some(2)]);
    let out = img.apply(conv.clone()).unwrap();
    assert_eq!(out.shape().to_string(), "(None, None, None, 4)");
    assert_eq!(conv.weights()[0].shape(), [3, 3, 2, 4]);
    let bn = BatchNormalization::<f32>::new().named("bn_axis");
    assert!(matches!(
        Input::<f32>::new([Some(3), None]).apply(bn),
        Err(Error::UnknownDimension { axis: 2, .. })
    ));
}

#[test]
fn shapes_with_unknown_dimensions_propagate() {
    use rime_layers::layers::Padding;
    use rime_layers::{
        Concatenate, Conv2D, Embedding, Flatten, GlobalAveragePooling1D, MaxPooling2D, Reshape,
    };
    use rime_tensor::PartialShape;
    let out = |l: &dyn Layer<f32>, ins: &[PartialShape]| {
        let o = l.compute_output_shape(ins).unwrap();
        o.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let p = |d: &[Option<usize>]| PartialShape::from(d.to_vec());
    let (n, s) = (None, Some);
    assert_eq!(
        out(&Flatten::new(), &[p(&[n, s(7), s(7), s(64)])]),
        "(None, 3136)"
    );
    assert_eq!(
        out(&Flatten::new(), &[p(&[n, s(7), n, s(64)])]),
        "(None, None)"
    );
    assert_eq!(out(&Flatten::new(), &[p(&[s(2), s(3)])]), "(2, 3)");
    let reshape = Reshape::new(vec![-1, 4]);
    assert_eq!(out(&reshape, &[p(&[n, s(8)])]), "(None, 2, 4)");
    assert_eq!(out(&reshape, &[p(&[n, n])]), "(None, None, 4)");
    assert!(reshape.compute_output_shape(&[p(&[n, s(6)])]).is_err());
    assert_eq!(
        out(&Reshape::new(vec![2, 3]), &[p(&[n, n, s(3)])]),
        "(None, 2, 3)"
    );
    let cat = Concatenate::new().axis(-1);
    assert_eq!(out(&cat, &[p(&[n, s(3)]), p(&[n, s(5)])]), "(None, 8)");
    assert_eq!(out(&cat, &[p(&[n, s(3)]), p(&[n, n])]), "(None, None)");
    let cat1 = Concatenate::new().axis(1);
    assert_eq!(
        out(&cat1, &[p(&[n, s(2), n]), p(&[n, s(4), s(3)])]),
        "(None, 6, 3)"
    );
    assert!(
        cat1.compute_output_shape(&[p(&[n, s(2), s(4)]), p(&[n, s(4), s(3)])])
            .is_err()
    );
    let conv = Conv2D::new(8, [3, 3]).strides(&[2]).padding(Padding::Same);
    assert_eq!(out(&conv, &[p(&[n, n, s(9), s(3)])]), "(None, None, 5, 8)");
    let pool = MaxPooling2D::new(&[2, 2]);
    assert_eq!(out(&pool, &[p(&[n, s(7), n, s(3)])]), "(None, 3, None, 3)");
    assert_eq!(
        out(&Embedding::new(10, 4), &[p(&[n, n])]),
        "(None, None, 4)"
    );
    assert_eq!(
        out(&GlobalAveragePooling1D::new(), &[p(&[n, n, s(4)])]),
        "(None, 4)"
    );
    assert_eq!(
        out(&rime_layers::Add::new(), &[p(&[n, s(3)]), p(&[s(2), s(1)])]),
        "(2, 3)"
    );
}

#[test]
fn an_integer_input_converts_whole_floats_and_keeps_its_dtype_in_the_config() {
    use rime_layers::config::{LayerConfig, layer_from_config};
    use rime_layers::{CallContext, Embedding, Flatten, ModelData};
    use rime_tensor::DType;
    let x = Input::<f32>::with_dtype([2], DType::I64);
    assert_eq!(x.dtype(), DType::I64);
    let y = x
        .apply(Embedding::new(5, 3))
        .unwrap()
        .apply(Flatten::new())
        .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let model = Model::new(&[&x], &[&y]).unwrap();
    let ids = Tensor::from_vec(vec![4i64, 0, 2, 2], [2, 2]).unwrap();
    let by_ids = model
        .apply_data(&[ModelData::from(&ids)], CallContext::INFERENCE)
        .unwrap();
    // whole floats given for the integer input are converted exactly
    let as_floats = model.call(&ids.to_dtype::<f32>().unwrap(), false).unwrap();
    assert_eq!(by_ids[0], as_floats);
    assert_eq!(by_ids[0].shape(), &[2, 6]);
    let err = model.call(&t(&[1.5, 0.0], &[1, 2]), false).unwrap_err();
    assert!(
        matches!(&err, Error::Input { msg, .. } if msg.contains("i64") && msg.contains("1.5")),
        "{err:?}"
    );
    // the dtype survives the config (Keras' name)
    let cfg = LayerConfig::of(&model);
    assert_eq!(cfg.config["inputs"][0]["dtype"], "int64");
    let again = layer_from_config::<f32>(&cfg).unwrap();
    again.set_weights(&model.get_weights()).unwrap();
    assert_eq!(
        again
            .apply_data(&[ModelData::from(&ids)], CallContext::INFERENCE)
            .unwrap(),
        by_ids
    );
}
