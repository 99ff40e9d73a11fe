//! `fit`/`evaluate`/`predict` against Keras 3 histories, callbacks, output.

use rime_layers::data::Dataset;
use rime_layers::fit::{
    Callback, CallbackContext, CsvLogger, EarlyStopping, FitOptions, LearningRateScheduler, Logs,
    ModelCheckpoint, ReduceLROnPlateau, Trainer, Verbose, predict,
};
use rime_layers::losses::SparseCategoricalCrossentropy;
use rime_layers::metrics::SparseCategoricalAccuracy;
use rime_layers::optimizers::{Adam, Sgd};
use rime_layers::saving::load_model;
use rime_layers::{Dense, Layer, Result, Sequential, activations::Activation};
use rime_tensor::{Tensor, seeded_rng};
use serde_json::Value;

fn fixtures() -> Value {
    let text = include_str!("reference/fit_fixtures.json");
    serde_json::from_str(text).unwrap()
}

fn tensor(v: &Value) -> Tensor<f32> {
    fn walk(v: &Value, dims: &mut Vec<usize>, out: &mut Vec<f32>, depth: usize) {
        match v {
            Value::Array(a) => {
                if dims.len() == depth {
                    dims.push(a.len());
                }
                a.iter().for_each(|x| walk(x, dims, out, depth + 1));
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut dims, mut out) = (Vec::new(), Vec::new());
    walk(v, &mut dims, &mut out, 0);
    Tensor::from_vec(out, dims).unwrap()
}

fn mlp() -> Sequential<f32> {
    Sequential::new()
        .add(Dense::new(5).activation(Activation::Tanh))
        .add(Dense::new(3))
        .with_input_shape([4])
        .unwrap()
}

fn loss() -> SparseCategoricalCrossentropy {
    SparseCategoricalCrossentropy::new().with_from_logits(true)
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
        "{what}: rime {a} vs keras {b}"
    );
}

/// Keras' labels as rime's datasets read them from files: `i64`.
fn int_labels(v: &Value) -> Tensor<i64> {
    tensor(v).to_dtype::<i64>().unwrap()
}

#[test]
fn fit_history_matches_keras() {
    fit_history_matches_keras_with(false);
}

/// The same Keras histories, weights and evaluation with the labels held
/// as integers (Keras' `fit` takes either).
#[test]
fn fit_with_integer_labels_matches_keras() {
    fit_history_matches_keras_with(true);
}

fn fit_history_matches_keras_with(integer: bool) {
    let fx = fixtures();
    let dataset = |x: &Value, y: &Value| {
        if integer {
            Dataset::from_tensors(tensor(x), int_labels(y))
        } else {
            Dataset::from_tensors(tensor(x), tensor(y))
        }
    };
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let model = mlp();
        let init: Vec<Tensor<f32>> = case["initial_weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor)
            .collect();
        model.set_weights(&init).unwrap();
        let data = dataset(&case["x"], &case["y"])
            .unwrap()
            .batch(case["batch_size"].as_u64().unwrap() as usize)
            .unwrap();
        let epochs = case["epochs"].as_u64().unwrap() as usize;
        let mut options = FitOptions::new().epochs(epochs).verbose(Verbose::Silent);
        let val = if let Some(f) = case["validation_split"].as_f64() {
            options = options.validation_split(f);
            None
        } else {
            let v = dataset(&case["x_val"], &case["y_val"])
                .unwrap()
                .batch(4)
                .unwrap();
            options = options.validation_data(v.clone());
            Some(v)
        };
        let mut trainer = if name.starts_with("sgd") {
            Trainer::new(&model, Sgd::new().learning_rate(0.1).momentum(0.9), loss())
        } else {
            Trainer::new(&model, Adam::new().learning_rate(0.05), loss())
        }
        .metric(SparseCategoricalAccuracy::new());
        let history = trainer.fit(&data, options).unwrap();
        let keras = case["history"].as_object().unwrap();
        assert_eq!(history.keys().count(), keras.len(), "{name}: keys");
        for (key, values) in keras {
            let ours = history
                .get(key)
                .unwrap_or_else(|| panic!("{name}: no `{key}`"));
            let theirs: Vec<f64> = values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(ours.len(), theirs.len());
            for (e, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                close(*a, *b, &format!("{name} {key} epoch {e}"));
            }
        }
        for (w, k) in model
            .weights()
            .iter()
            .zip(case["final_weights"].as_array().unwrap())
        {
            for (a, b) in w.to_vec().iter().zip(tensor(k).to_vec()) {
                close(*a as f64, b as f64, &format!("{name} final {}", w.name()));
            }
        }
        let val = val.unwrap_or_else(|| data.clone().split(0.25).unwrap().1.batch(4).unwrap());
        let logs = trainer.evaluate(&val).unwrap();
        for (key, v) in case["evaluate"].as_object().unwrap() {
            close(
                logs.get(key).unwrap(),
                v.as_f64().unwrap(),
                &format!("{name} evaluate {key}"),
            );
        }
    }
}

/// Writes a scripted `score` into the logs and records the weights.
struct Script {
    scores: Vec<f64>,
    weights: Vec<Vec<Tensor<f32>>>,
}

impl Callback for Script {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_>,
    ) -> Result<()> {
        logs.insert("score", self.scores[epoch]);
        self.weights.push(ctx.model().get_weights());
        Ok(())
    }
}

fn toy() -> (Sequential<f32>, Dataset<f32>) {
    let x = Tensor::rand_normal([24, 4], 0.0, 1.0, &mut seeded_rng(3)).unwrap();
    let y = Tensor::vector((0..24).map(|i| (i % 3) as f32).collect());
    (
        mlp(),
        Dataset::from_tensors(x, y)
            .unwrap()
            .batch(8)
            .unwrap()
            .shuffle(4),
    )
}

#[test]
fn early_stopping_stops_after_patience_and_restores_the_best_weights() {
    let (model, data) = toy();
    let mut script = Script {
        scores: vec![1.0, 0.5, 0.6, 0.7, 0.4, 0.3],
        weights: vec![],
    };
    let mut early = EarlyStopping::new("score")
        .patience(2)
        .restore_best_weights(true);
    let mut trainer = Trainer::new(&model, Sgd::new().learning_rate(0.1), loss());
    let history = trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(6)
                .verbose(Verbose::Silent)
                .callback(&mut script)
                .callback(&mut early),
        )
        .unwrap();
    assert_eq!(history.epochs, vec![0, 1, 2, 3]);
    assert_eq!(early.stopped_epoch(), Some(3));
    assert_eq!(early.best(), (1, 0.5));
    assert_eq!(model.get_weights(), script.weights[1]);
    assert_eq!(trainer.counters().epoch, 4);
    assert_eq!(trainer.counters().global_step, 12);
}

#[test]
fn model_checkpoint_saves_only_improvements() {
    let (model, data) = toy();
    let dir = std::env::temp_dir();
    let pattern = dir.join(format!(
        "rime_fit_ckpt_{}_{{epoch}}.safetensors",
        std::process::id()
    ));
    let mut script = Script {
        scores: vec![0.9, 0.95, 0.8, 0.85, 0.7],
        weights: vec![],
    };
    let mut ckpt = ModelCheckpoint::new(pattern.to_str().unwrap())
        .monitor("score")
        .save_best_only(true);
    let mut trainer = Trainer::new(&model, Adam::new().learning_rate(0.01), loss());
    trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(5)
                .verbose(Verbose::Silent)
                .callback(&mut script)
                .callback(&mut ckpt),
        )
        .unwrap();
    let epochs: Vec<usize> = ckpt.saved().iter().map(|(e, _)| *e).collect();
    assert_eq!(epochs, vec![0, 2, 4]);
    assert_eq!(ckpt.best(), Some(0.7));
    let (_, second) = &ckpt.saved()[1];
    assert!(second.to_str().unwrap().ends_with("_3.safetensors"));
    let loaded = load_model::<f32>(second).unwrap();
    assert_eq!(loaded.get_weights(), script.weights[2]);
    for (_, p) in ckpt.saved() {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn learning_rate_callbacks_follow_keras() {
    let (model, data) = toy();
    let mut sched = LearningRateScheduler::new(|epoch, _| 0.1 * 0.5f64.powi(epoch as i32));
    let mut trainer = Trainer::new(&model, Sgd::new().learning_rate(1.0), loss());
    let h = trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(3)
                .verbose(Verbose::Silent)
                .callback(&mut sched),
        )
        .unwrap();
    assert_eq!(h.get("learning_rate").unwrap(), &[0.1, 0.05, 0.025]);

    let (model, data) = toy();
    let mut script = Script {
        scores: vec![1.0; 5],
        weights: vec![],
    };
    let mut plateau = ReduceLROnPlateau::new("score")
        .patience(1)
        .factor(0.5)
        .min_lr(0.02);
    let mut trainer = Trainer::new(&model, Sgd::new().learning_rate(0.1), loss());
    let h = trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(5)
                .verbose(Verbose::Silent)
                .callback(&mut script)
                .callback(&mut plateau),
        )
        .unwrap();
    // logged before each epoch's reduction (Keras' order); floored at min_lr
    assert_eq!(
        h.get("learning_rate").unwrap(),
        &[0.1, 0.1, 0.05, 0.025, 0.02]
    );
    assert_eq!(trainer.step().optimizer().current_learning_rate(), 0.02);
    let mut bad = ReduceLROnPlateau::new("loss").factor(1.5);
    assert!(
        trainer
            .fit(&data, FitOptions::new().callback(&mut bad))
            .is_err()
    );
}

#[test]
fn csv_logger_writes_a_row_per_epoch() {
    let (model, data) = toy();
    let path = std::env::temp_dir().join(format!("rime_fit_log_{}.csv", std::process::id()));
    let mut logger = CsvLogger::new(&path);
    let mut trainer =
        Trainer::new(&model, Sgd::new(), loss()).metric(SparseCategoricalAccuracy::new());
    let (train, val) = data.split(0.25).unwrap();
    let h = trainer
        .fit(
            &train,
            FitOptions::new()
                .epochs(3)
                .validation_data(val)
                .verbose(Verbose::Silent)
                .callback(&mut logger),
        )
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,loss,sparse_categorical_accuracy,val_loss,val_sparse_categorical_accuracy"
    );
    assert_eq!(lines.len(), 4);
    let row: Vec<f64> = lines[3].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(row[0], 2.0);
    assert_eq!(row[1], h.get("loss").unwrap()[2]);
    std::fs::remove_file(&path).ok();
}

struct StopAfter(usize, Vec<f64>);

impl Callback for StopAfter {
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, '_>,
    ) -> Result<()> {
        self.1.push(logs.get("loss").unwrap());
        if batch + 1 == self.0 {
            ctx.stop_training();
        }
        Ok(())
    }
}

#[test]
fn a_user_callback_reads_logs_and_stops_training() {
    let (model, data) = toy();
    let mut stop = StopAfter(2, vec![]);
    let mut trainer = Trainer::new(&model, Sgd::new(), loss());
    let h = trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(10)
                .verbose(Verbose::Silent)
                .callback(&mut stop),
        )
        .unwrap();
    assert_eq!(stop.1.len(), 2);
    assert_eq!(h.epochs, vec![0]);
    assert_eq!(h.get("loss").unwrap(), &[stop.1[1]]);
    assert_eq!(trainer.counters().global_step, 2);
}

#[test]
fn output_is_one_line_per_epoch_without_carriage_returns() {
    let (model, data) = toy();
    let mut buf = Vec::new();
    let mut trainer =
        Trainer::new(&model, Sgd::new(), loss()).metric(SparseCategoricalAccuracy::new());
    trainer
        .fit(
            &data,
            FitOptions::new()
                .epochs(3)
                .validation_split(0.25)
                .output(&mut buf),
        )
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(!text.contains('\r'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].starts_with("Epoch 3/3 - 3/3 - "), "{}", lines[2]);
    assert!(
        lines[0].contains("val_sparse_categorical_accuracy: "),
        "{}",
        lines[0]
    );
}

#[test]
fn fit_resumes_from_a_checkpoint_bit_identically() {
    let bits = |m: &dyn Layer<f32>| -> Vec<u32> {
        m.weights()
            .iter()
            .flat_map(|v| v.to_vec())
            .map(f32::to_bits)
            .collect()
    };
    let (model, data) = toy();
    let path = std::env::temp_dir().join(format!("rime_fit_resume_{}.ckpt", std::process::id()));
    let quiet = || FitOptions::new().verbose(Verbose::Silent);
    let mut trainer = Trainer::new(&model, Adam::new().learning_rate(0.01), loss());
    trainer.fit(&data, quiet().epochs(2)).unwrap();
    trainer.save_checkpoint(&path).unwrap();
    trainer
        .fit(&data, quiet().epochs(5).initial_epoch(2))
        .unwrap();

    let fresh = mlp();
    let mut resumed = Trainer::new(&fresh, Adam::new().learning_rate(0.01), loss());
    let counters = resumed.load_checkpoint(&path).unwrap();
    assert_eq!((counters.epoch, counters.global_step), (2, 6));
    resumed
        .fit(
            &data,
            quiet().epochs(5).initial_epoch(counters.epoch as usize),
        )
        .unwrap();
    assert_eq!(bits(&fresh), bits(&model));
    std::fs::remove_file(&path).ok();
}

#[test]
fn predict_and_bad_arguments() {
    let (model, data) = toy();
    let out = predict(&model, &data).unwrap();
    let all = data.to_batch().unwrap();
    assert_eq!(
        out[0],
        model
            .call(&all.inputs[0].to_float().unwrap(), false)
            .unwrap()
    );
    let mut trainer = Trainer::new(&model, Sgd::new(), loss());
    let v = data.clone();
    assert!(
        trainer
            .fit(
                &data,
                FitOptions::new().validation_split(0.5).validation_data(v)
            )
            .is_err()
    );
    assert!(
        trainer
            .fit(&data, FitOptions::new().validation_split(1.5))
            .is_err()
    );
    assert!(
        trainer
            .fit(
                &data.clone().take(3).batch(8).unwrap().drop_remainder(true),
                FitOptions::new()
            )
            .is_err()
    );
    let mut early = EarlyStopping::new("val_missing");
    let err = trainer
        .fit(
            &data,
            FitOptions::new()
                .verbose(Verbose::Silent)
                .callback(&mut early),
        )
        .unwrap_err();
    assert!(err.to_string().contains("val_missing"), "{err}");
    assert_eq!(trainer.step().optimizer().name(), "SGD");
}

/// A stand-in for `size` identical processes in one: means of identical
/// gradients are the gradients, sums are `size` times the value. Counts
/// the calls `fit` makes.
struct Mirror {
    rank: usize,
    size: usize,
    broadcasts: usize,
    exchanges: usize,
    /// Report that another process failed at the `n`-th exchange.
    peer_fails_at: Option<usize>,
}

impl Mirror {
    fn new(rank: usize, size: usize) -> Self {
        Mirror {
            rank,
            size,
            broadcasts: 0,
            exchanges: 0,
            peer_fails_at: None,
        }
    }
}

impl rime_layers::collective::Collective for &mut Mirror {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn broadcast_state(
        &mut self,
        _: &dyn Layer<f32>,
        _: &[rime_tape::Variable<f32>],
        _: &mut dyn rime_layers::optimizers::Optimizer<f32>,
    ) -> Result<()> {
        self.broadcasts += 1;
        Ok(())
    }
    fn exchange_step(&mut self, step: rime_layers::collective::StepExchange<'_>) -> Result<()> {
        self.exchanges += 1;
        if self.peer_fails_at == Some(self.exchanges) {
            return Err(rime_layers::Error::Distributed {
                what: "train step".into(),
                msg: "another process failed".into(),
            });
        }
        assert!(!step.failed);
        assert_eq!(step.gradients.len(), step.variables.len());
        Ok(())
    }
    fn reduce_f64(
        &mut self,
        values: &mut [f64],
        op: rime_layers::collective::ReduceOp,
    ) -> Result<()> {
        if op == rime_layers::collective::ReduceOp::Sum {
            values.iter_mut().for_each(|v| *v *= self.size as f64);
        }
        Ok(())
    }
}

fn toy_data() -> Dataset<f32> {
    let x = Tensor::rand_normal([40, 4], 0.0, 1.0, &mut seeded_rng(3)).unwrap();
    let y = Tensor::vector((0..40).map(|i| (i % 3) as f32).collect());
    Dataset::from_tensors(x, y).unwrap().batch(8).unwrap()
}

#[test]
fn fit_through_a_collective_of_identical_processes_matches_one_process() {
    let (alone, together) = (mlp(), mlp());
    together.set_weights(&alone.get_weights()).unwrap();
    let opts = || {
        FitOptions::new()
            .epochs(3)
            .validation_split(0.25)
            .verbose(Verbose::Silent)
    };
    let h1 = Trainer::new(&alone, Adam::new(), loss())
        .metric(SparseCategoricalAccuracy::new())
        .fit(&toy_data(), opts())
        .unwrap();
    let mut mirror = Mirror::new(0, 2);
    let step =
        rime_layers::TrainStep::new(&together, Adam::new(), loss()).with_collective(&mut mirror);
    let h2 = Trainer::from_step(step)
        .metric(SparseCategoricalAccuracy::new())
        .fit(&toy_data(), opts())
        .unwrap();
    assert_eq!(mirror.broadcasts, 1);
    assert_eq!(
        mirror.exchanges,
        3 * 4,
        "3 epochs of 4 batches (30 samples by 8)"
    );
    for key in ["loss", "sparse_categorical_accuracy", "val_loss"] {
        let (a, b) = (h1.get(key).unwrap(), h2.get(key).unwrap());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                "{key}: {x} vs {y}"
            );
        }
    }
    assert_eq!(alone.get_weights(), together.get_weights());
}

#[test]
fn only_the_root_process_writes_files_and_prints() {
    let dir = std::env::temp_dir().join(format!("rime_fit_nonroot_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for rank in [1, 0] {
        let model = mlp();
        let mut mirror = Mirror::new(rank, 2);
        let step =
            rime_layers::TrainStep::new(&model, Sgd::new(), loss()).with_collective(&mut mirror);
        let mut trainer = Trainer::from_step(step);
        let ckpt_path = dir.join(format!("model_{rank}.safetensors"));
        let csv_path = dir.join(format!("log_{rank}.csv"));
        let mut ckpt = ModelCheckpoint::new(ckpt_path.to_string_lossy()).monitor("loss");
        let mut csv = CsvLogger::new(&csv_path);
        let mut out = Vec::new();
        trainer
            .fit(
                &toy_data(),
                FitOptions::new()
                    .epochs(2)
                    .verbose(Verbose::Line)
                    .output(&mut out)
                    .callback(&mut ckpt)
                    .callback(&mut csv),
            )
            .unwrap();
        trainer
            .save_checkpoint(dir.join(format!("ckpt_{rank}")))
            .unwrap();
        let root = rank == 0;
        assert_eq!(ckpt_path.exists(), root, "rank {rank}: model file");
        assert_eq!(csv_path.exists(), root, "rank {rank}: csv log");
        assert_eq!(
            dir.join(format!("ckpt_{rank}")).exists(),
            root,
            "rank {rank}: checkpoint"
        );
        assert_eq!(!out.is_empty(), root, "rank {rank}: progress lines");
        assert_eq!(ckpt.saved().len(), 2, "every rank records the same saves");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failure_on_another_process_fails_fit_and_the_step_changes_nothing() {
    let model = Sequential::new()
        .add(rime_layers::BatchNormalization::new())
        .add(Dense::new(3))
        .with_input_shape([4])
        .unwrap();
    let mut mirror = Mirror::new(0, 2);
    mirror.peer_fails_at = Some(2);
    let step =
        rime_layers::TrainStep::new(&model, Adam::new(), loss()).with_collective(&mut mirror);
    let mut trainer = Trainer::from_step(step);
    let err = trainer
        .fit(
            &toy_data(),
            FitOptions::new().epochs(1).verbose(Verbose::Silent),
        )
        .unwrap_err();
    assert!(
        matches!(err, rime_layers::Error::Distributed { .. }),
        "{err}"
    );
    // one step ran; the second, failed elsewhere, left weights and moving statistics alone
    let after_one = model.get_weights();
    let mut mirror = Mirror::new(0, 2);
    mirror.peer_fails_at = Some(1);
    let mut step =
        rime_layers::TrainStep::new(&model, Adam::new(), loss()).with_collective(&mut mirror);
    let batch = toy_data().iter().next().unwrap().unwrap();
    assert!(step.run_batch(&batch).is_err());
    assert_eq!(model.get_weights(), after_one);
}

/// `Input(shape=(5,), dtype="int32")` → Embedding → GlobalAveragePooling1D
/// → Dense, `fit` on integer ids and labels: Keras 3's history, final
/// weights and `predict` (reference/gen_embedding_fit_fixtures.py), for a
/// Sequential and a functional model with an integer `Input`.
#[test]
fn embedding_model_fit_on_integer_ids_matches_keras() {
    use rime_layers::{Embedding, GlobalAveragePooling1D, Input, Model};
    use rime_tensor::DType;
    let fx: Value =
        serde_json::from_str(include_str!("reference/embedding_fit_fixtures.json")).unwrap();
    let ids: Tensor<i32> = tensor(&fx["ids"]).to_dtype::<i32>().unwrap();
    let labels = int_labels(&fx["labels"]);
    let (vocab, dim) = (
        fx["vocab"].as_u64().unwrap() as usize,
        fx["dim"].as_u64().unwrap() as usize,
    );
    let classes = fx["classes"].as_u64().unwrap() as usize;
    let init: Vec<Tensor<f32>> = fx["initial_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(tensor)
        .collect();
    let sequential = Sequential::<f32>::new()
        .add(Embedding::new(vocab, dim))
        .add(GlobalAveragePooling1D::new())
        .add(Dense::new(classes))
        .with_input_shape([5])
        .unwrap();
    let x = Input::<f32>::with_dtype([5], DType::I32);
    let y = x
        .apply(Embedding::new(vocab, dim))
        .unwrap()
        .apply(GlobalAveragePooling1D::new())
        .unwrap()
        .apply(Dense::new(classes))
        .unwrap();
    let functional = Model::new(&[&x], &[&y]).unwrap();
    for model in [&sequential as &dyn Layer<f32>, &functional] {
        model.set_weights(&init).unwrap();
        let data = Dataset::from_data(ids.clone(), labels.clone())
            .unwrap()
            .batch(4)
            .unwrap();
        let mut trainer = Trainer::new(model, Sgd::new().learning_rate(0.5).momentum(0.9), loss())
            .metric(SparseCategoricalAccuracy::new());
        let options = FitOptions::new().epochs(3).verbose(Verbose::Silent);
        let history = trainer.fit(&data, options).unwrap();
        for (key, values) in fx["history"].as_object().unwrap() {
            for (e, (a, b)) in history
                .get(key)
                .unwrap()
                .iter()
                .zip(values.as_array().unwrap())
                .enumerate()
            {
                close(
                    *a,
                    b.as_f64().unwrap(),
                    &format!("{} {key} epoch {e}", model.name()),
                );
            }
        }
        for (w, k) in model
            .weights()
            .iter()
            .zip(fx["final_weights"].as_array().unwrap())
        {
            for (a, b) in w.to_vec().iter().zip(tensor(k).to_vec()) {
                close(*a as f64, b as f64, &format!("final {}", w.name()));
            }
        }
        let first =
            Dataset::<f32>::from_features(ids.index_select(0, &[0, 1, 2, 3]).unwrap()).unwrap();
        let out = trainer.predict(&first).unwrap();
        for (a, b) in out[0].to_vec().iter().zip(tensor(&fx["predict"]).to_vec()) {
            close(*a as f64, b as f64, "predict");
        }
        let logs = trainer.evaluate(&data).unwrap();
        assert!(logs.get("loss").unwrap() < history.get("loss").unwrap()[0]);
    }
}

/// The same steps with the ids as integers and as floats give bit-identical
/// weights and optimizer state (same init); bad ids are an error naming the
/// layer and change nothing; an id beyond 2^24 is seen exactly (as an f32
/// it would be 16777216).
#[test]
fn integer_ids_train_like_float_ids_and_bad_ids_change_nothing() {
    use rime_layers::{Embedding, Error, Flatten, ModelData, TrainStep};
    let make = || {
        Sequential::<f32>::new()
            .add(Embedding::new(30, 3).named("emb"))
            .add(Flatten::new())
            .add(Dense::new(2))
            .with_input_shape([4])
            .unwrap()
    };
    let (a, b) = (make(), make());
    b.set_weights(&a.get_weights()).unwrap();
    let ids = Tensor::from_vec((0..24).map(|i| (i * 7 % 30) as i64).collect(), [6, 4]).unwrap();
    let float_ids = ids.to_dtype::<f32>().unwrap();
    let labels = Tensor::vector(vec![0i64, 1, 1, 0, 1, 0]);
    let mut sa = TrainStep::new(&a, Adam::new().learning_rate(0.05), loss());
    let mut sb = TrainStep::new(&b, Adam::new().learning_rate(0.05), loss());
    for _ in 0..4 {
        let la = sa.run_data(&ids, &labels).unwrap();
        let lb = sb.run_data(&float_ids, &labels).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits());
    }
    let bits = |m: &Sequential<f32>| -> Vec<Vec<u32>> {
        m.weights()
            .iter()
            .map(|w| w.to_vec().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    let slots = |s: &TrainStep<'_, f32>| -> Vec<Vec<u32>> {
        let state = s.optimizer().state(s.variables()).unwrap();
        state
            .slots
            .iter()
            .flatten()
            .map(|(_, t)| t.to_vec().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    assert_eq!(slots(&sa), slots(&sb));

    // bad ids: typed error naming the layer; weights, slots and the step
    // counter unchanged (also i32 ids, and one beyond 2^24)
    let (before, state, iterations) = (bits(&a), slots(&sa), sa.optimizer().iterations());
    let bad_i64 = |v: i64| {
        let mut x = ids.to_vec();
        x[5] = v;
        Tensor::from_vec(x, [6, 4]).unwrap()
    };
    for bad in [
        ModelData::from(bad_i64(-1)),
        bad_i64(30).into(),
        bad_i64(16_777_217).into(),
    ] {
        let expected = bad.as_int().unwrap().to_vec()[5];
        match sa.run_data(bad, &labels) {
            Err(Error::IndexOutOfBounds {
                layer,
                index,
                position,
                bound,
                ..
            }) => {
                assert_eq!(
                    (layer.as_str(), index, position, bound),
                    ("emb", expected, 5, 30)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let bad_i32 = Tensor::from_vec(vec![0i32, 1, 2, 31], [1, 4]).unwrap();
    assert!(matches!(
        sa.run_data(&bad_i32, Tensor::vector(vec![0i64])),
        Err(Error::IndexOutOfBounds { index: 31, .. })
    ));
    assert_eq!(bits(&a), before);
    assert_eq!(slots(&sa), state);
    assert_eq!(sa.optimizer().iterations(), iterations);
    // i32 ids train like i64 ones
    let ids32 = ids.to_dtype::<i32>().unwrap();
    let (c, d) = (make(), make());
    d.set_weights(&c.get_weights()).unwrap();
    let mut sc = TrainStep::new(&c, Sgd::new().learning_rate(0.1), loss());
    let mut sd = TrainStep::new(&d, Sgd::new().learning_rate(0.1), loss());
    sc.run_data(&ids32, &labels).unwrap();
    sd.run_data(&ids, &labels).unwrap();
    assert_eq!(bits(&c), bits(&d));
    // predict and evaluate from integer features
    let out = predict(&c, &Dataset::from_features(ids.clone()).unwrap()).unwrap();
    assert_eq!(out[0], c.call(&float_ids, false).unwrap());
}
