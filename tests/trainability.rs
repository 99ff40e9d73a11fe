//! The trainability rules of docs/design.md, each pinned through the
//! facade by tests named `ruleN_..` after the rule they check. Rules 1, 3
//! and 6 are compared with the numbers Keras 3 gives for the same problem
//! (tests/reference/gen_rule_fixtures.py wrote rule_fixtures.json).

use std::sync::{Arc, OnceLock};

use rime::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------- helpers

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let text = include_str!("reference/rule_fixtures.json");
        serde_json::from_str(text).expect("rule_fixtures.json parses")
    })
}

/// A nested JSON list as a tensor (shape from the nesting).
fn tensor(v: &Value) -> Tensor<f32> {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for item in items {
                    walk(item, depth + 1, shape, out);
                }
            }
            Value::Number(n) => out.push(n.as_f64().expect("number") as f32),
            other => panic!("not a number: {other}"),
        }
    }
    let (mut shape, mut data) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut data);
    Tensor::from_vec(data, shape).expect("fixture shape")
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = 1e-5 * e.abs().max(1.0);
        assert!((a - e).abs() <= tol, "{what}[{i}]: rime {a} vs keras {e}");
    }
}

fn bits(v: &Variable<f32>) -> Vec<u32> {
    v.to_vec().iter().map(|x| x.to_bits()).collect()
}

fn mse_step(
    model: &dyn Layer<f32>,
    opt: &mut dyn Optimizer<f32>,
    x: &Tensor<f32>,
    y: &Tensor<f32>,
) -> f32 {
    // the first-class path: tape + trainable_weights + apply_gradients
    let tape = GradientTape::new();
    let pred = model.call(x, true).unwrap();
    let loss = MeanSquaredError::new().call(y, &pred).unwrap();
    let vars = model.trainable_weights();
    let grads = tape.gradient(&loss, &vars).unwrap();
    if !vars.is_empty() {
        opt.apply_gradients(&grads, &vars).unwrap();
    }
    loss.to_scalar().unwrap()
}

fn data(seed: u64, rows: usize, cols: usize) -> Tensor<f32> {
    Tensor::rand_normal([rows, cols], 0.0, 1.0, &mut seeded_rng(seed)).unwrap()
}

// ---------------------------------------------------------------- rules 2 and 4: a frozen layer, a step snapshots when built

/// Rules 2 and 4. One Dense instance in two models; a step built from `frozen_model`
/// while the layer is frozen never trains it, even after the layer is
/// unfrozen; a step built later from `trainable_model` does.
#[test]
fn rule4_step_snapshots_the_trainable_set_when_built() {
    let shared = Arc::new(Dense::<f32>::new(4));
    let frozen_model = Sequential::new()
        .add(shared.clone())
        .add(Dense::new(2))
        .with_input_shape([3])
        .unwrap();
    let trainable_model = Sequential::new()
        .add(shared.clone())
        .add(Dense::new(2))
        .with_input_shape([3])
        .unwrap();
    let (x, y) = (data(1, 8, 3), data(2, 8, 2));

    shared.set_trainable(false);
    let mut frozen_step = TrainStep::new(
        &frozen_model,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    assert_eq!(
        frozen_step.variables().len(),
        2,
        "only the head's kernel and bias"
    );
    shared.set_trainable(true);
    let mut trainable_step = TrainStep::new(
        &trainable_model,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    assert_eq!(trainable_step.variables().len(), 4);

    let before: Vec<Vec<u32>> = shared.weights().iter().map(bits).collect();
    for _ in 0..3 {
        frozen_step.run(&x, &y).unwrap();
    }
    let after_frozen: Vec<Vec<u32>> = shared.weights().iter().map(bits).collect();
    assert_eq!(
        before, after_frozen,
        "the step built while frozen left the layer unchanged"
    );

    trainable_step.run(&x, &y).unwrap();
    let after: Vec<Vec<u32>> = shared.weights().iter().map(bits).collect();
    assert_ne!(
        before[0], after[0],
        "the step built while trainable changed the kernel"
    );
    assert_ne!(before[1], after[1], "and the bias");
}

// ---------------------------------------------------------------- rule 1: a non-trainable weight of a custom layer

/// A custom layer: `w` trainable, `b` added with `trainable(false)`.
struct Affine {
    base: LayerBase<f32>,
    w0: Tensor<f32>,
    b0: Tensor<f32>,
    w: OnceLock<Variable<f32>>,
    b: OnceLock<Variable<f32>>,
}

impl Affine {
    fn new(w0: Tensor<f32>, b0: Tensor<f32>) -> Self {
        Affine {
            base: LayerBase::new("Affine", None),
            w0,
            b0,
            w: OnceLock::new(),
            b: OnceLock::new(),
        }
    }
}

impl Layer<f32> for Affine {
    fn base(&self) -> &LayerBase<f32> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Affine"
    }
    fn build(&self, _input_shapes: &[PartialShape]) -> rime::layers::Result<()> {
        let w = self
            .base
            .add_weight(WeightSpec::new("w", self.w0.shape().clone()))?;
        w.assign(&self.w0)?;
        let b = self
            .base
            .add_weight(WeightSpec::new("b", self.b0.shape().clone()).trainable(false))?;
        b.assign(&self.b0)?;
        let _ = (self.w.set(w), self.b.set(b));
        Ok(())
    }
    fn call_with(
        &self,
        inputs: &[Tensor<f32>],
        _ctx: CallContext,
    ) -> rime::layers::Result<Vec<Tensor<f32>>> {
        let x = self.base.single(inputs)?;
        let (w, b) = (self.w.get().expect("built"), self.b.get().expect("built"));
        Ok(vec![x.matmul(&w.value())?.add(&b.value())?])
    }
    fn get_config(&self) -> Value {
        serde_json::json!({ "name": self.base.name() })
    }
}

#[test]
fn rule1_non_trainable_weight_of_a_custom_layer_stays_bit_identical() {
    let f = &fixtures()["rule1"];
    let layer = Affine::new(tensor(&f["w0"]), tensor(&f["b0"]));
    let (x, y) = (tensor(&f["x"]), tensor(&f["y"]));
    layer.call(&x, false).unwrap();
    let names: Vec<String> = layer
        .trainable_weights()
        .iter()
        .map(|v| v.name().to_string())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with('w'), "{names:?}");
    assert_eq!(layer.non_trainable_weights().len(), 1);

    let b = layer.b.get().unwrap().clone();
    let b_before = bits(&b);
    let mut opt = Sgd::new().learning_rate(0.1);
    let mut losses = Vec::new();
    for _ in 0..3 {
        losses.push(mse_step(&layer, &mut opt, &x, &y));
    }
    assert_close(&losses, &tensor(&f["losses"]).to_vec(), "B loss per step");
    assert_close(
        &layer.w.get().unwrap().to_vec(),
        &tensor(&f["w"]).to_vec(),
        "B w after 3 steps",
    );
    assert_eq!(bits(&b), b_before, "b is bit-identical");
    assert_close(&b.to_vec(), &tensor(&f["b"]).to_vec(), "B b");
}

// ---------------------------------------------------------------- rule 5: element masks

/// A Dense(m) kernel [n, m] under a Dense(2) head; returns the kernel.
fn dense_kernel_model(n: usize, m: usize) -> (Sequential<f32>, Variable<f32>) {
    let dense = Dense::new(m).kernel_initializer(Initializer::GlorotUniform { seed: Some(3) });
    let model = Sequential::new()
        .add(dense)
        .add(Dense::new(2))
        .with_input_shape([n])
        .unwrap();
    let kernel = model.layers()[0].weights()[0].clone();
    (model, kernel)
}

fn optimizers() -> Vec<(&'static str, Box<dyn Optimizer<f32>>)> {
    vec![
        (
            "sgd momentum nesterov",
            Box::new(Sgd::new().learning_rate(0.05).momentum(0.9).nesterov(true)),
        ),
        (
            "rmsprop momentum",
            Box::new(RmsProp::new().learning_rate(0.01).momentum(0.9)),
        ),
        ("adam", Box::new(Adam::new().learning_rate(0.01))),
        (
            "adamw",
            Box::new(AdamW::new().learning_rate(0.01).weight_decay(0.1)),
        ),
    ]
}

/// Rule 5. W1, the first row block of a Dense kernel, frozen by a mask: after 100
/// steps of each optimizer W1 is bit-identical and W2 has changed — also when
/// the mask is set after unmasked steps (momentum already non-zero).
#[test]
fn rule5_masked_row_block_is_bit_identical_under_every_optimizer() {
    let (n, m, frozen) = (6, 5, 2);
    let (x, y) = (data(4, 16, n), data(5, 16, 2));
    for warmup in [0usize, 10] {
        for (name, mut opt) in optimizers() {
            let (model, kernel) = dense_kernel_model(n, m);
            for _ in 0..warmup {
                mse_step(&model, opt.as_mut(), &x, &y);
            }
            kernel
                .set_mask(Some(TrainableMask::freeze_rows(0..frozen)))
                .unwrap();
            let before = kernel.to_vec();
            for _ in 0..100 {
                mse_step(&model, opt.as_mut(), &x, &y);
            }
            let after = kernel.to_vec();
            let split = frozen * m;
            let w1_same = before[..split]
                .iter()
                .zip(&after[..split])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(w1_same, "{name} (warmup {warmup}): W1 moved");
            let w2_moved = before[split..]
                .iter()
                .zip(&after[split..])
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                w2_moved,
                (n - frozen) * m,
                "{name} (warmup {warmup}): every W2 element moved"
            );
        }
    }
}

/// C through a training step: the step uses the mask it snapshotted.
#[test]
fn rule5_train_step_honours_the_mask_it_snapshotted() {
    let (n, m) = (4, 3);
    let (x, y) = (data(6, 8, n), data(7, 8, 2));
    let (model, kernel) = dense_kernel_model(n, m);
    kernel
        .set_mask(Some(TrainableMask::freeze_rows(0..1)))
        .unwrap();
    let mut step = TrainStep::new(
        &model,
        AdamW::new().learning_rate(0.01).weight_decay(0.5),
        MeanSquaredError::new(),
    );
    kernel.set_mask(None).unwrap(); // later changes do not reach the built step
    let before = kernel.to_vec();
    for _ in 0..20 {
        step.run(&x, &y).unwrap();
    }
    let after = kernel.to_vec();
    assert!(
        before[..m]
            .iter()
            .zip(&after[..m])
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    assert!(before[m..].iter().zip(&after[m..]).all(|(a, b)| a != b));
}

// ---------------------------------------------------------------- rule 3: a frozen model

fn dense_with(units: usize, kernel: &Value, bias: &Value, activation: Activation) -> Dense<f32> {
    let d = Dense::new(units).activation(activation);
    let k = tensor(kernel);
    d.call(&Tensor::zeros([1, k.dims()[0]]).unwrap(), false)
        .unwrap();
    d.set_weights(&[k, tensor(bias)]).unwrap();
    d
}

#[test]
fn rule3_freezing_a_model_leaves_a_shared_layer_trainable_elsewhere() {
    let f = &fixtures()["rule3"];
    let shared = Arc::new(dense_with(
        3,
        &f["shared"][0],
        &f["shared"][1],
        Activation::Tanh,
    ));
    let head1 = Arc::new(dense_with(
        2,
        &f["head1"][0],
        &f["head1"][1],
        Activation::Linear,
    ));
    let head2 = Arc::new(dense_with(
        2,
        &f["head2"][0],
        &f["head2"][1],
        Activation::Linear,
    ));
    let model1 = Sequential::new().add(shared.clone()).add(head1.clone());
    let model2 = Sequential::new().add(shared.clone()).add(head2.clone());
    let (x, y) = (tensor(&f["x"]), tensor(&f["y"]));

    model1.set_trainable(false);
    assert!(
        model1.trainable_weights().is_empty(),
        "model1 reports no trainable weights"
    );
    assert_eq!(model1.non_trainable_weights().len(), 4);
    assert!(
        shared.trainable(),
        "the shared layer's own flag is untouched"
    );
    assert_eq!(model2.trainable_weights().len(), 4);

    // training model1 changes nothing
    let all_before: Vec<Vec<u32>> = model1
        .weights()
        .iter()
        .chain(&model2.weights())
        .map(bits)
        .collect();
    let mut opt1 = Sgd::new().learning_rate(0.05);
    mse_step(&model1, &mut opt1, &x, &y);
    let mut step1 = TrainStep::new(
        &model1,
        Sgd::new().learning_rate(0.05),
        MeanSquaredError::new(),
    );
    step1.run(&x, &y).unwrap();
    let all_after: Vec<Vec<u32>> = model1
        .weights()
        .iter()
        .chain(&model2.weights())
        .map(bits)
        .collect();
    assert_eq!(
        all_before, all_after,
        "training the frozen model1 changed nothing"
    );

    // training model2 trains the shared layer, with Keras' numbers
    let mut opt2 = Sgd::new().learning_rate(0.05);
    let losses: Vec<f32> = (0..3)
        .map(|_| mse_step(&model2, &mut opt2, &x, &y))
        .collect();
    assert_close(
        &losses,
        &tensor(&f["losses_model2"]).to_vec(),
        "D model2 losses",
    );
    for (i, w) in shared.get_weights().iter().enumerate() {
        assert_close(
            &w.to_vec(),
            &tensor(&f["shared_after"][i]).to_vec(),
            "D shared after",
        );
    }
    for (i, w) in head2.get_weights().iter().enumerate() {
        assert_close(
            &w.to_vec(),
            &tensor(&f["head2_after"][i]).to_vec(),
            "D head2 after",
        );
    }
    let out1 = model1.call(&x, false).unwrap();
    assert_close(
        &out1.to_vec(),
        &tensor(&f["model1_out_after"]).to_vec(),
        "D model1 sees the trained shared layer",
    );

    // layer.set_trainable(false) on the shared layer freezes it in both
    shared.set_trainable(false);
    assert_eq!(model2.trainable_weights().len(), 2, "only head2 left");
    let shared_before: Vec<Vec<u32>> = shared.weights().iter().map(bits).collect();
    mse_step(&model2, &mut opt2, &x, &y);
    let shared_after: Vec<Vec<u32>> = shared.weights().iter().map(bits).collect();
    assert_eq!(shared_before, shared_after);
    model1.set_trainable(true);
    assert_eq!(
        model1.trainable_weights().len(),
        2,
        "model1 unfrozen: head1 only, the shared layer is frozen"
    );
}

// ---------------------------------------------------------------- rule 6: a frozen BatchNormalization

fn bn_from(f: &Value) -> BatchNormalization<f32> {
    let bn = BatchNormalization::new();
    bn.call(&Tensor::zeros([1, 3]).unwrap(), false).unwrap();
    bn.set_weights(&[
        tensor(&f["gamma"]),
        tensor(&f["beta"]),
        tensor(&f["moving_mean"]),
        tensor(&f["moving_variance"]),
    ])
    .unwrap();
    bn
}

#[test]
fn rule6_frozen_batch_norm_runs_in_inference_mode() {
    let f = &fixtures()["rule6"];
    let x = tensor(&f["x"]);

    let frozen = bn_from(f);
    frozen.set_trainable(false);
    assert!(frozen.trainable_weights().is_empty());
    let out = frozen.call(&x, true).unwrap();
    assert_close(
        &out.to_vec(),
        &tensor(&f["frozen_training_out"]).to_vec(),
        "E frozen, training=true",
    );
    assert_close(
        &out.to_vec(),
        &tensor(&f["frozen_inference_out"]).to_vec(),
        "E frozen = inference",
    );
    let mm = frozen.moving_mean().unwrap();
    let mv = frozen.moving_variance().unwrap();
    assert_eq!(
        mm.to_vec(),
        tensor(&f["moving_mean"]).to_vec(),
        "moving mean kept"
    );
    assert_eq!(
        mv.to_vec(),
        tensor(&f["moving_variance"]).to_vec(),
        "moving variance kept"
    );

    let trainable = bn_from(f);
    let names: Vec<String> = trainable
        .trainable_weights()
        .iter()
        .map(|v| v.name().to_string())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names[0].ends_with("gamma") && names[1].ends_with("beta"),
        "{names:?}"
    );
    assert_eq!(
        trainable.non_trainable_weights().len(),
        2,
        "moving statistics are non-trainable weights"
    );
    let tape = GradientTape::new();
    let out = trainable.call(&x, true).unwrap();
    let s = out.mul(&tensor(&f["c"])).unwrap().sum_all();
    let grads = tape.gradient(&s, &trainable.trainable_weights()).unwrap();
    assert_close(
        &out.to_vec(),
        &tensor(&f["trainable_training_out"]).to_vec(),
        "E trainable, training",
    );
    let (mm, mv) = (
        trainable.moving_mean().unwrap(),
        trainable.moving_variance().unwrap(),
    );
    assert_close(
        &mm.to_vec(),
        &tensor(&f["trainable_moving_mean_after"]).to_vec(),
        "E moving mean updated",
    );
    assert_close(
        &mv.to_vec(),
        &tensor(&f["trainable_moving_variance_after"]).to_vec(),
        "E moving var updated",
    );
    assert_close(
        &grads[0].as_ref().unwrap().to_vec(),
        &tensor(&f["grad_gamma"]).to_vec(),
        "E dgamma",
    );
    assert_close(
        &grads[1].as_ref().unwrap().to_vec(),
        &tensor(&f["grad_beta"]).to_vec(),
        "E dbeta",
    );

    // never trained by gradient: a step over all weights leaves them to the layer
    let model = Sequential::new().add(Arc::new(bn_from(f)));
    let mut step = TrainStep::new(
        &model,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    assert_eq!(step.variables().len(), 2);
    step.run(&x, &Tensor::zeros([5, 3]).unwrap()).unwrap();
}

// ---------------------------------------------------------------- rule 7: ties

#[test]
fn rule7_tied_embedding_gradients_add_up_and_the_variable_appears_once() {
    let embedding = Arc::new(Embedding::<f64>::new(5, 3).embeddings_initializer(
        Initializer::RandomNormal {
            mean: 0.0,
            stddev: 0.5,
            seed: Some(11),
        },
    ));
    let projection = EmbeddingTranspose::new(embedding.clone()).use_bias(false);
    let tokens = Tensor::<f64>::from_vec(vec![0.0, 3.0, 3.0, 1.0], [4]).unwrap();
    let input = Input::<f64>::new([4]);
    let logits = input
        .apply(embedding.clone())
        .unwrap()
        .apply(projection)
        .unwrap();
    let model = Model::new(&[&input], &[&logits]).unwrap();
    model.call(&tokens.unsqueeze(0).unwrap(), false).unwrap();
    let weights = model.weights();
    assert_eq!(weights.len(), 1, "one variable, listed once");
    let e = weights[0].clone();

    // the loss through both uses, as a function of the matrix alone
    let c = Tensor::<f64>::rand_normal([1, 4, 5], 0.0, 1.0, &mut seeded_rng(12)).unwrap();
    let loss_of = |matrix: &Tensor<f64>| -> Tensor<f64> {
        let rows = matrix.index_select(0, &[0, 3, 3, 1]).unwrap(); // [4, 3]
        let logits = rows.matmul_t(matrix, false, true).unwrap(); // [4, 5]
        logits.unsqueeze(0).unwrap().mul(&c).unwrap().sum_all()
    };
    let tape = GradientTape::new();
    let out = model.call(&tokens.unsqueeze(0).unwrap(), true).unwrap();
    let loss = out.mul(&c).unwrap().sum_all();
    let grad = tape.gradient(&loss, &[&e]).unwrap().remove(0).unwrap();
    assert!((loss.to_scalar().unwrap() - loss_of(&e.value()).to_scalar().unwrap()).abs() < 1e-12);
    // central differences of the whole function: both uses' contributions
    let base = e.value().to_vec();
    for j in 0..base.len() {
        let at = |d: f64| {
            let mut p = base.clone();
            p[j] += d;
            loss_of(&Tensor::from_vec(p, [5, 3]).unwrap())
                .to_scalar()
                .unwrap()
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        let analytic = grad.to_vec()[j];
        assert!(
            (numeric - analytic).abs() < 1e-6 * analytic.abs().max(1.0),
            "dE[{j}]: {analytic} vs {numeric}"
        );
    }
    // and the lookup alone gives only part of it (both uses contribute)
    let lookup_only = {
        let t = GradientTape::new();
        let rows = embedding.call(&tokens.unsqueeze(0).unwrap(), true).unwrap();
        let l = rows.sum_all();
        t.gradient(&l, &[&e]).unwrap().remove(0).unwrap()
    };
    assert_ne!(lookup_only.to_vec(), grad.to_vec());
}

// ---------------------------------------------------------------- rule 8: copies are not ties

#[test]
fn rule8_clone_model_has_fresh_weights_until_they_are_copied() {
    let input = Input::<f32>::new([4]);
    let h = input
        .apply(Dense::new(8).activation(Activation::Relu))
        .unwrap();
    let out = h.apply(Dense::new(3)).unwrap();
    let model = Model::new(&[&input], &[&out]).unwrap();
    let x = data(9, 5, 4);
    let y = model.call(&x, false).unwrap();
    let clone = clone_model(&model).unwrap();
    let yc = clone.call(&x, false).unwrap();
    assert_eq!(yc.shape(), y.shape());
    assert_ne!(
        yc.to_vec(),
        y.to_vec(),
        "fresh weights give different outputs"
    );
    clone.set_weights(&model.get_weights()).unwrap();
    assert_eq!(
        clone.call(&x, false).unwrap().to_vec(),
        y.to_vec(),
        "copied weights give identical outputs"
    );
    // and they are copies, not shared variables
    let w0 = model.weights()[0].clone();
    w0.assign(&w0.value().add_scalar(1.0)).unwrap();
    assert_ne!(
        clone.call(&x, false).unwrap().to_vec(),
        model.call(&x, false).unwrap().to_vec()
    );
}

// ---------------------------------------------------------------- rule 1: a weight updated in call

/// Counts the rows it has seen in a non-trainable weight, updated in `call`.
struct RunningSum {
    base: LayerBase<f32>,
    total: OnceLock<Variable<f32>>,
}

impl Layer<f32> for RunningSum {
    fn base(&self) -> &LayerBase<f32> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "RunningSum"
    }
    fn build(&self, input_shapes: &[PartialShape]) -> rime::layers::Result<()> {
        let width = self
            .base
            .known_dim(input_shapes, 0, 1, "to size its total")?;
        let total = self.base.add_weight(
            WeightSpec::new("total", [width])
                .initializer(Initializer::Zeros)
                .trainable(false),
        )?;
        let _ = self.total.set(total);
        Ok(())
    }
    fn call_with(
        &self,
        inputs: &[Tensor<f32>],
        ctx: CallContext,
    ) -> rime::layers::Result<Vec<Tensor<f32>>> {
        let x = self.base.single(inputs)?;
        let total = self.total.get().expect("built");
        if self.base.is_training(ctx) {
            let batch_sum = no_record(|| x.sum(&[0], false))?;
            total.assign_add(&batch_sum)?;
        }
        Ok(vec![x.clone()])
    }
    fn get_config(&self) -> Value {
        serde_json::json!({ "name": self.base.name() })
    }
}

#[test]
fn rule1_a_weight_updated_in_call_is_never_trained() {
    let counter = Arc::new(RunningSum {
        base: LayerBase::new("RunningSum", None),
        total: OnceLock::new(),
    });
    let model = Sequential::new()
        .add(Dense::new(3))
        .add(counter.clone())
        .add(Dense::new(1))
        .with_input_shape([2])
        .unwrap();
    assert_eq!(model.trainable_weights().len(), 4);
    assert_eq!(model.non_trainable_weights().len(), 1);
    let (x, y) = (data(13, 6, 2), data(14, 6, 1));
    let mut step = TrainStep::new(
        &model,
        Adam::new().learning_rate(0.05),
        MeanSquaredError::new(),
    );
    assert!(
        !step
            .variables()
            .iter()
            .any(|v| v.id() == counter.total.get().unwrap().id())
    );
    let mut expected = vec![0.0f32; 3];
    for _ in 0..4 {
        // what the layer will add: the first Dense's output on this batch, before the update
        let h = model.layers()[0]
            .call(&x, false)
            .unwrap()
            .sum(&[0], false)
            .unwrap()
            .to_vec();
        expected.iter_mut().zip(&h).for_each(|(e, h)| *e += h);
        step.run(&x, &y).unwrap();
    }
    assert_close(
        &counter.total.get().unwrap().to_vec(),
        &expected,
        "H running sum",
    );
}

/// A node with more inputs than the old 32-bit "needs gradient" mask held:
/// a functional model concatenating 40 branches trains end to end, every
/// branch gets its own gradient (checked against the product rule), and
/// the loss falls.
#[test]
fn forty_way_concatenate_trains_end_to_end() {
    let x = Input::<f32>::new([3]);
    let branches: Vec<SymbolicTensor<f32>> =
        (0..40).map(|_| x.apply(Dense::new(1)).unwrap()).collect();
    let refs: Vec<&SymbolicTensor<f32>> = branches.iter().collect();
    let joined = call_symbolic(Concatenate::new(), &refs).unwrap().remove(0);
    let out = joined.apply(Dense::new(1)).unwrap();
    let model = Model::new(&[&x], &[&out]).unwrap();
    let xs = Tensor::rand_normal([16, 3], 0.0, 1.0, &mut seeded_rng(40)).unwrap();
    let ys = Tensor::rand_normal([16, 1], 0.0, 1.0, &mut seeded_rng(41)).unwrap();
    // every branch kernel gets d loss / d w_b = x^T (dL/dy * v_b), with v_b
    // the head's weight on branch b
    let tape = GradientTape::new();
    let pred = model.call(&xs, true).unwrap();
    let loss = pred.sub(&ys).unwrap().square().mean_all();
    let weights = model.trainable_weights();
    let grads = tape.gradient(&loss, &weights).unwrap();
    assert!(
        grads.iter().all(Option::is_some),
        "every weight gets a gradient"
    );
    let head = &weights[weights.len() - 2];
    let dy = pred.sub(&ys).unwrap().mul_scalar(2.0 / 16.0);
    for b in [0, 17, 31, 32, 33, 39] {
        let v_b = head.value_untracked().get(&[b, 0]).unwrap();
        let want = xs.matmul_t(&dy.mul_scalar(v_b), true, false).unwrap();
        let got = grads[2 * b].as_ref().unwrap();
        approx::assert_relative_eq!(*got, want, epsilon = 1e-5, max_relative = 1e-4);
    }
    let mut step = TrainStep::new(
        &model,
        Sgd::new().learning_rate(0.01),
        MeanSquaredError::new(),
    );
    let first = step.run(&xs, &ys).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = step.run(&xs, &ys).unwrap();
    }
    assert!(last < first * 0.9, "{first} -> {last}");
}
