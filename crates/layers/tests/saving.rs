//! Re-snapshot keeping optimizer state, checkpoints that resume exactly,
//! whole-model files.

use std::sync::Arc;

use rime_layers::data::Dataset;
use rime_layers::losses::{Loss, MeanSquaredError, SparseCategoricalCrossentropy};
use rime_layers::optimizers::{Adam, ExponentialDecay, Optimizer, Sgd};
use rime_layers::saving::{
    Counters, load_checkpoint, load_model, load_weights_by_name, save_checkpoint, save_model,
};
use rime_layers::{
    BatchNormalization, Dense, Dropout, Error, Input, Layer, LayerRef, Model, Sequential,
    TrainStep, activations::Activation, clone_model,
};
use rime_tape::{GradientTape, TrainableMask, Variable};
use rime_tensor::{Tensor, seeded_rng};

fn bits(vars: &[Variable<f32>]) -> Vec<Vec<u32>> {
    vars.iter()
        .map(|v| v.to_vec().iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rime_saving_{}_{name}", std::process::id()))
}

/// Dense, BatchNormalization, Dropout (unseeded: each model draws its own
/// stream, so only a restored stream repeats a run's masks), Dense.
fn mlp() -> Sequential<f32> {
    mlp_with_dropout(true)
}

fn mlp_with_dropout(dropout: bool) -> Sequential<f32> {
    let model = Sequential::new()
        .add(Dense::new(6).activation(Activation::Tanh).named("hidden"))
        .add(BatchNormalization::new());
    let model = if dropout {
        model.add(Dropout::new(0.3).named("drop"))
    } else {
        model
    };
    model
        .add(Dense::new(3).named("out"))
        .with_input_shape([4])
        .unwrap()
}

fn data() -> (Tensor<f32>, Tensor<f32>) {
    let x = Tensor::rand_normal([40, 4], 0.0, 1.0, &mut seeded_rng(5)).unwrap();
    let y = Tensor::vector((0..40).map(|i| (i % 3) as f32).collect());
    (x, y)
}

#[test]
fn rebuilt_step_keeps_optimizer_state_and_matches_the_custom_loop() {
    let (x, y) = data();
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let custom = mlp_with_dropout(false);
    let stepped = mlp_with_dropout(false);
    stepped.set_weights(&custom.get_weights()).unwrap();

    // the custom loop with one optimizer throughout
    let mut opt = Adam::new().learning_rate(0.05);
    let custom_step = |opt: &mut Adam| {
        let tape = GradientTape::new();
        let loss = loss_fn.call(&y, &custom.call(&x, true).unwrap()).unwrap();
        let vars = custom.trainable_weights();
        let grads = tape.gradient(&loss, &vars).unwrap();
        opt.apply_gradients(&grads, &vars).unwrap();
    };
    for _ in 0..5 {
        custom_step(&mut opt);
    }
    custom.weights()[0]
        .set_mask(Some(TrainableMask::freeze_rows(0..2)))
        .unwrap();
    let frozen = custom.weights()[0].to_vec()[..12].to_vec();
    for _ in 0..5 {
        custom_step(&mut opt);
    }
    assert_eq!(custom.weights()[0].to_vec()[..12], frozen[..]);

    // TrainStep, rebuilt after the mask change (Keras: compile again with
    // the same optimizer)
    let mut step = TrainStep::new(&stepped, Adam::new().learning_rate(0.05), loss_fn);
    for _ in 0..5 {
        step.run(&x, &y).unwrap();
    }
    stepped.weights()[0]
        .set_mask(Some(TrainableMask::freeze_rows(0..2)))
        .unwrap();
    step.rebuild();
    for _ in 0..5 {
        step.run(&x, &y).unwrap();
    }
    assert_eq!(step.optimizer().iterations(), 10);
    assert_eq!(bits(&stepped.weights()), bits(&custom.weights()));
}

/// Trains `n` steps from `counters` through the shuffled dataset.
fn train(step: &mut TrainStep<'_, f32>, data: &Dataset<f32>, counters: &mut Counters, n: u64) {
    let mut left = n;
    while left > 0 {
        let batches = data
            .epoch(counters.epoch)
            .skip(counters.step_in_epoch as usize);
        for batch in batches {
            let b = batch.unwrap();
            step.run_batch(&b).unwrap();
            counters.step_in_epoch += 1;
            counters.global_step += 1;
            left -= 1;
            if left == 0 {
                break;
            }
        }
        if counters.step_in_epoch as usize == data.num_batches() {
            counters.epoch += 1;
            counters.step_in_epoch = 0;
        }
    }
}

#[test]
fn checkpoint_resumes_bit_identically() {
    let (x, y) = data();
    let dataset = Dataset::from_tensors(x, y)
        .unwrap()
        .batch(8)
        .unwrap()
        .shuffle(9);
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let optimizer =
        || Adam::new().learning_rate_schedule(ExponentialDecay::new(0.05, 3, 0.7).unwrap());
    let path = tmp("resume.ckpt");

    // uninterrupted: 7 + 6 steps (crossing an epoch boundary mid-way)
    let model = mlp();
    let start = model.get_weights();
    let mut step = TrainStep::new(&model, optimizer(), loss_fn);
    let mut counters = Counters {
        shuffle_seed: dataset.shuffle_seed(),
        ..Default::default()
    };
    train(&mut step, &dataset, &mut counters, 7);
    save_checkpoint(&path, &model, step.optimizer(), &counters).unwrap();
    train(&mut step, &dataset, &mut counters, 6);
    let reference = bits(&model.weights());

    // a fresh model and optimizer restored from the checkpoint
    let fresh = mlp();
    fresh.set_weights(&start).unwrap(); // any values: the checkpoint overwrites them
    let mut opt = optimizer();
    let mut restored = load_checkpoint(&path, &fresh, &mut opt).unwrap();
    assert_eq!(
        restored,
        Counters {
            epoch: 1,
            step_in_epoch: 2,
            global_step: 7,
            shuffle_seed: Some(9)
        }
    );
    assert_eq!(Optimizer::<f32>::iterations(&opt), 7);
    let mut step = TrainStep::new(&fresh, opt, loss_fn);
    train(&mut step, &dataset, &mut restored, 6);
    assert_eq!(bits(&fresh.weights()), reference, "resumed run differs");
    // non-trainable state (moving statistics) moved and was restored too
    assert_ne!(
        bits(&fresh.non_trainable_weights()),
        bits(&mlp().non_trainable_weights())
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() {
    let (x, y) = data();
    let model = mlp();
    let mut step = TrainStep::new(&model, Adam::new(), MeanSquaredError::new());
    let y1 = Tensor::zeros([40, 3]).unwrap();
    step.run(&x, &y1).unwrap();
    let path = tmp("mismatch.ckpt");
    save_checkpoint(&path, &model, step.optimizer(), &Counters::default()).unwrap();
    let _ = y;

    // wrong optimizer class
    let other = mlp();
    let before = bits(&other.weights());
    let mut sgd = Sgd::new().momentum(0.9);
    assert!(load_checkpoint(&path, &other, &mut sgd).is_err());
    assert_eq!(bits(&other.weights()), before);
    assert_eq!(Optimizer::<f32>::iterations(&sgd), 0);
    // the same weights, but no Dropout whose stream the file holds
    let no_dropout = mlp_with_dropout(false);
    let mut adam = Adam::new();
    let err = load_checkpoint(&path, &no_dropout, &mut adam).unwrap_err();
    assert!(err.to_string().contains("random streams"), "{err}");
    assert_eq!(Optimizer::<f32>::iterations(&adam), 0);
    // wrong structure
    let small = Sequential::<f32>::new()
        .add(Dense::new(3))
        .with_input_shape([4])
        .unwrap();
    let mut adam = Adam::new();
    assert!(load_checkpoint(&path, &small, &mut adam).is_err());
    // corrupt bytes
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_checkpoint(&path, &other, &mut adam).unwrap_err();
    assert!(matches!(err, Error::ModelFile { .. }), "{err}");
    assert_eq!(bits(&other.weights()), before);
    std::fs::remove_file(&path).ok();
}

fn shared_functional() -> Model<f32> {
    let input = Input::new([4]);
    let shared: LayerRef<f32> =
        Arc::new(Dense::new(4).activation(Activation::Relu).named("shared"));
    let a = input.apply(shared.clone()).unwrap();
    let b = a.apply(shared).unwrap(); // the same layer twice: one tied kernel
    let out = b.apply(Dense::new(2).named("head")).unwrap();
    Model::new(&[&input], &[&out]).unwrap()
}

#[test]
fn model_files_round_trip_weights_flags_masks_and_ties() {
    let model = shared_functional();
    assert_eq!(model.weights().len(), 4);
    model.get_layer("head").unwrap().set_trainable(false);
    let kernel = model.weights()[0].clone();
    kernel.set_mask(Some(TrainableMask::rows(1..3))).unwrap();
    let bias = model.weights()[1].clone();
    bias.set_trainable(false);
    let path = tmp("model.safetensors");
    save_model(&model, &path).unwrap();

    let loaded = load_model::<f32>(&path).unwrap();
    assert_eq!(bits(&loaded.weights()), bits(&model.weights()));
    let names =
        |vs: Vec<Variable<f32>>| vs.iter().map(|v| v.name().to_string()).collect::<Vec<_>>();
    assert_eq!(names(loaded.weights()), names(model.weights()));
    assert_eq!(
        names(loaded.trainable_weights()),
        names(model.trainable_weights())
    );
    assert_eq!(loaded.trainable_weights().len(), 1);
    let m = loaded.weights()[0].mask().expect("mask kept");
    assert_eq!(m.bits(), kernel.mask().unwrap().bits());
    let x = Tensor::rand_normal([3, 4], 0.0, 1.0, &mut seeded_rng(1)).unwrap();
    assert_eq!(
        loaded.call(&x, false).unwrap(),
        model.call(&x, false).unwrap()
    );

    // the loaded model trains like the saved one, frozen parts included
    let y = Tensor::zeros([3, 2]).unwrap();
    let mut s1 = TrainStep::new(
        &model,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    let mut s2 = TrainStep::new(
        &*loaded,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    for _ in 0..3 {
        s1.run(&x, &y).unwrap();
        s2.run(&x, &y).unwrap();
    }
    assert_eq!(bits(&loaded.weights()), bits(&model.weights()));

    // model-level flag
    model.set_trainable(false);
    save_model(&model, &path).unwrap();
    let frozen = load_model::<f32>(&path).unwrap();
    assert!(frozen.trainable_weights().is_empty());
    assert!(frozen.get_config()["layers"].is_array());
    std::fs::remove_file(&path).ok();
}

#[test]
fn clone_model_keeps_flags_masks_and_ties() {
    let model = shared_functional();
    model.get_layer("head").unwrap().set_trainable(false);
    model.weights()[0]
        .set_mask(Some(TrainableMask::freeze_cols(0..1)))
        .unwrap();
    let copy = clone_model(&model).unwrap();
    assert_eq!(copy.weights().len(), 4, "the tie is kept");
    assert_eq!(copy.trainable_weights().len(), 2);
    assert_eq!(
        copy.weights()[0].mask().unwrap().bits(),
        model.weights()[0].mask().unwrap().bits()
    );
    assert_ne!(
        bits(&copy.weights()),
        bits(&model.weights()),
        "fresh weights"
    );
}

#[test]
fn bad_model_files_are_typed_errors() {
    let model = mlp();
    let path = tmp("bad_model.safetensors");
    save_model(&model, &path).unwrap();
    let good = std::fs::read(&path).unwrap();

    // another format version
    let file = safetensors::SafeTensors::deserialize(&good).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert("version".into(), "99".into());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = file.tensors();
    let bytes = safetensors::serialize(views, Some(meta)).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = load_model::<f32>(&path) else {
        panic!("loaded a file of another version")
    };
    assert!(matches!(err, Error::FormatVersion { .. }), "{err}");
    assert!(err.to_string().contains("99"));

    // truncated, flipped, empty, not a model file, wrong dtype
    let cases: Vec<Vec<u8>> = vec![
        good[..good.len() / 2].to_vec(),
        {
            let mut b = good.clone();
            b[12] ^= 0x55;
            b
        },
        Vec::new(),
        b"not a safetensors file at all".to_vec(),
    ];
    for bytes in cases {
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            load_model::<f32>(&path),
            Err(Error::ModelFile { .. }) | Err(Error::FormatVersion { .. })
        ));
    }
    std::fs::write(&path, &good).unwrap();
    assert!(matches!(
        load_model::<f64>(&path),
        Err(Error::ModelFile { .. })
    ));
    // a weights file is not a model file
    rime_layers::models::save_weights(&model, &path).unwrap();
    assert!(matches!(
        load_model::<f32>(&path),
        Err(Error::ModelFile { .. })
    ));
    std::fs::remove_file(&path).ok();
}

#[test]
fn weights_load_by_name_with_skip_mismatch() {
    let source = mlp();
    let path = tmp("by_name.safetensors");
    save_model(&source, &path).unwrap();
    // shares `hidden` (same shape) and `out` (other width)
    let target = Sequential::<f32>::new()
        .add(Dense::new(6).activation(Activation::Tanh).named("hidden"))
        .add(Dense::new(5).named("out"))
        .with_input_shape([4])
        .unwrap();
    let before = bits(&target.weights());
    let err = load_weights_by_name(&target, &path, false).unwrap_err();
    assert!(err.to_string().contains("out/kernel"), "{err}");
    assert_eq!(bits(&target.weights()), before, "an error changes nothing");
    let loaded = load_weights_by_name(&target, &path, true).unwrap();
    assert_eq!(loaded, ["hidden/kernel", "hidden/bias"]);
    assert_eq!(bits(&target.weights()[..2]), bits(&source.weights()[..2]));
    assert_eq!(bits(&target.weights()[2..]), before[2..]);
    std::fs::remove_file(&path).ok();
}

#[test]
fn ties_in_a_sequential_survive_the_file_and_the_clone() {
    use rime_layers::{Embedding, EmbeddingTranspose};
    // a Dense used twice: its config refers back to the first use
    let d: LayerRef<f32> = Arc::new(Dense::new(3).named("twice"));
    let seq = Sequential::new()
        .add(d.clone())
        .add(d)
        .with_input_shape([3])
        .unwrap();
    assert_eq!(seq.weights().len(), 2);
    let path = tmp("tied_seq.safetensors");
    save_model(&seq, &path).unwrap();
    let loaded = load_model::<f32>(&path).unwrap();
    assert_eq!(loaded.weights().len(), 2, "still tied");
    let x = Tensor::rand_normal([2, 3], 0.0, 1.0, &mut seeded_rng(4)).unwrap();
    assert_eq!(
        loaded.call(&x, false).unwrap(),
        seq.call(&x, false).unwrap()
    );

    // EmbeddingTranspose refers to its Embedding by name: the rebuilt model
    // is tied again (one table, trained by both uses)
    let emb = Arc::new(Embedding::<f32>::new(6, 4).named("tokens"));
    let lm = Sequential::new()
        .add(emb.clone())
        .add(EmbeddingTranspose::new(emb).named("logits"))
        .with_input_shape(Vec::<usize>::new())
        .unwrap();
    assert_eq!(lm.weights().len(), 1);
    save_model(&lm, &path).unwrap();
    let loaded = load_model::<f32>(&path).unwrap();
    assert_eq!(loaded.weights().len(), 1, "still tied");
    assert_eq!(bits(&loaded.weights()), bits(&lm.weights()));
    let ids = Tensor::vector(vec![1.0, 5.0]);
    assert_eq!(
        loaded.call(&ids, false).unwrap(),
        lm.call(&ids, false).unwrap()
    );
    // and so is a clone
    let copy = clone_model(&lm).unwrap();
    assert_eq!(copy.weights().len(), 1, "the clone is tied");
    // alone, the layer rebuilds with its own new embedding
    let alone = lm.layers()[1].fresh().unwrap();
    alone.ensure_built(&[[2, 4].into()]).unwrap();
    assert_eq!(alone.weights().len(), 1);
    assert!(!alone.weights()[0].ptr_eq(&lm.weights()[0]));
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_sequential_built_by_calling_it_reloads_with_its_weights() {
    // no input shape declared: the first call builds it (Keras records the
    // shape as `build_input_shape`, and so does the config here)
    let model = Sequential::<f32>::new()
        .add(Dense::new(3).activation(Activation::Relu).named("a"))
        .add(Dense::new(2).named("b"));
    let x = Tensor::rand_normal([5, 4], 0.0, 1.0, &mut seeded_rng(8)).unwrap();
    let y = model.call(&x, false).unwrap();
    let path = tmp("called_seq.safetensors");
    save_model(&model, &path).unwrap();
    let loaded = load_model::<f32>(&path).unwrap();
    assert_eq!(bits(&loaded.weights()), bits(&model.weights()));
    assert_eq!(loaded.call(&x, false).unwrap(), y);
    // clone_model builds the copy for the same shape (fresh weights)
    let copy = clone_model(&model).unwrap();
    assert_eq!(copy.weights().len(), 4);
    assert_eq!(copy.weights()[0].shape().dims(), &[4, 3]);
    std::fs::remove_file(&path).ok();

    // never called, never declared: nothing to save weights for, a typed error
    let unbuilt = Sequential::<f32>::new().add(Dense::new(3));
    save_model(&unbuilt, &path).unwrap();
    let loaded = load_model::<f32>(&path).unwrap();
    assert!(loaded.weights().is_empty());
    std::fs::remove_file(&path).ok();
}

#[test]
fn configs_with_plain_shapes_still_load_and_unknown_dims_write_null() {
    use rime_layers::config::{LayerConfig, layer_from_config};
    use rime_tensor::PartialShape;
    // the shape fields as files written before unknown dimensions hold
    // them: plain sizes (the layer configs themselves did not change)
    let dense = |name: &str, units: usize| {
        serde_json::to_value(LayerConfig::of(&Dense::<f32>::new(units).named(name))).unwrap()
    };
    let old_sequential = |input_shape: serde_json::Value, build: serde_json::Value| LayerConfig {
        class_name: "Sequential".into(),
        config: serde_json::json!({
            "name": "old_seq",
            "input_shape": input_shape,
            "build_input_shape": build,
            "layers": [dense("a", 3), dense("b", 2)],
        }),
    };
    for cfg in [
        old_sequential(serde_json::json!([4]), serde_json::Value::Null),
        old_sequential(serde_json::Value::Null, serde_json::json!([4])),
    ] {
        let model = layer_from_config::<f32>(&cfg).unwrap();
        assert_eq!(model.weights()[0].shape(), [4, 3]);
        assert_eq!(
            model
                .compute_output_shape(&[PartialShape::batched([4])])
                .unwrap(),
            vec![PartialShape::from([None, Some(2)])]
        );
        assert_eq!(
            model
                .call(&Tensor::ones([3, 4]).unwrap(), false)
                .unwrap()
                .shape(),
            &[3, 2]
        );
    }
    let old_functional = LayerConfig {
        class_name: "Functional".into(),
        config: serde_json::json!({
            "name": "old_fun",
            "inputs": [{"name": "x", "shape": [4]}],
            "layers": [["a", dense("a", 3)]],
            "nodes": [{"layer": "a", "inbound": [{"node": null, "index": 0}]}],
            "outputs": [{"node": 0, "index": 0}],
        }),
    };
    let model = layer_from_config::<f32>(&old_functional).unwrap();
    assert_eq!(
        model
            .call(&Tensor::ones([2, 4]).unwrap(), false)
            .unwrap()
            .shape(),
        &[2, 3]
    );

    // unknown dimensions are written as Keras' `null` and read back
    let x = Input::<f32>::named("tokens", [None, Some(3)]);
    let y = x.apply(Dense::new(2).named("proj")).unwrap();
    let model = Model::new(&[&x], &[&y]).unwrap();
    let cfg = LayerConfig::of(&model);
    assert_eq!(
        cfg.config["inputs"][0]["shape"],
        serde_json::json!([null, 3])
    );
    let again = layer_from_config::<f32>(&cfg).unwrap();
    assert_eq!(again.get_config(), model.get_config());
    assert_eq!(
        again
            .call(&Tensor::ones([2, 5, 3]).unwrap(), false)
            .unwrap()
            .shape(),
        &[2, 5, 2]
    );
    let seq = Sequential::<f32>::new()
        .add(Dense::new(2).named("proj"))
        .with_input_shape([None, Some(3)])
        .unwrap();
    let cfg = LayerConfig::of(&seq);
    assert_eq!(cfg.config["input_shape"], serde_json::json!([null, 3]));
    let again = layer_from_config::<f32>(&cfg).unwrap();
    assert_eq!(
        again
            .call(&Tensor::ones([1, 7, 3]).unwrap(), false)
            .unwrap()
            .shape(),
        &[1, 7, 2]
    );
}
