//! Quickstart: an MLP on the 8×8 handwritten digits, trained with a custom
//! `GradientTape` loop; then the base is frozen and the head fine-tuned.
//!
//! ```sh
//! cargo run --release --example quickstart            # full run
//! cargo run --release --example quickstart -- --quick # fewer epochs (CI)
//! ```
//!
//! Checks its own claims and exits non-zero if one fails: held-out accuracy
//! ≥ 95%, and fine-tuning the head leaves every base weight bit-identical.

use std::process::ExitCode;
use std::time::Instant;

use rime::layers::data::read_csv;
use rime::prelude::*;

const CLASSES: usize = 10;

/// The UCI digits as scikit-learn ships them: 64 pixels (0..16) and a label
/// per line. Returns (train, test): a fixed random fifth of the rows is the
/// test set; pixels are scaled to [0, 1] by a dataset `map`; the labels stay
/// integers (`i64`).
fn load_digits() -> rime::Result<(Dataset<f32>, Dataset<f32>)> {
    let table = read_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"),
        false,
    )?;
    let (x, y) = (table.columns::<f32>(0..64)?, table.int_column(64)?);
    let data = Dataset::from_tensors(x, y)?
        .permuted(0)
        .map(|mut b| {
            b.inputs[0] = b.inputs[0].to_float()?.mul_scalar(1.0 / 16.0).into();
            Ok(b)
        })
        .batch(32)?
        .shuffle(1);
    data.split(0.2).map_err(Into::into)
}

fn accuracy(model: &dyn Layer<f32>, data: &Dataset<f32>) -> rime::Result<f64> {
    let all = data.to_batch()?;
    let mut acc = SparseCategoricalAccuracy::new();
    acc.update_state_target(
        &all.targets[0],
        &model.call(&all.inputs[0].to_float()?, false)?,
    )?;
    Ok(acc.result())
}

/// One epoch of the custom loop over the dataset's shuffled batches; prints
/// one Keras-style line.
fn train_epoch(
    model: &dyn Layer<f32>,
    opt: &mut dyn Optimizer<f32>,
    train: &Dataset<f32>,
    epoch: u64,
    label: &str,
) -> rime::Result<usize> {
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let (mut mean_loss, mut acc) = (Mean::new(), SparseCategoricalAccuracy::new());
    let start = Instant::now();
    let mut steps = 0;
    for batch in train.epoch(epoch) {
        let Batch { inputs, targets } = batch?;
        let (x, y) = (&inputs[0].to_float()?, &targets[0]);

        let tape = GradientTape::new();
        let logits = model.call(x, true)?;
        let loss = loss_fn.call_target(y, &logits)?; // integer labels
        let vars = model.trainable_weights();
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;

        mean_loss.update_state(&loss)?;
        acc.update_state_target(y, &logits)?;
        steps += 1;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(
        "{label} {steps}/{steps} - loss: {:.4} - accuracy: {:.4} - {ms:.2} ms/step",
        mean_loss.result(),
        acc.result()
    );
    Ok(steps)
}

fn param_counts(model: &dyn Layer<f32>) -> (usize, usize) {
    let count = |vs: Vec<Variable<f32>>| vs.iter().map(|v| v.shape().numel()).sum::<usize>();
    (
        count(model.trainable_weights()),
        count(model.non_trainable_weights()),
    )
}

fn main() -> rime::Result<ExitCode> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (epochs, head_epochs) = if quick { (12, 3) } else { (30, 5) };
    let (train, test) = load_digits()?;
    println!(
        "digits: {} train, {} test, 64 features, {CLASSES} classes",
        train.len(),
        test.len()
    );

    let model = Sequential::new()
        .add(Dense::new(128).activation(Activation::Relu).named("base_1"))
        .add(Dense::new(64).activation(Activation::Relu).named("base_2"))
        .add(Dense::new(CLASSES).named("head"))
        .with_input_shape([64])?;
    println!("{}", rime::layers::models::summary(&model));

    let mut opt = Adam::new().learning_rate(1e-3);
    let (mut steps, start) = (0, Instant::now());
    for epoch in 1..=epochs {
        steps += train_epoch(
            &model,
            &mut opt,
            &train,
            epoch as u64,
            &format!("epoch {epoch:>2}/{epochs}"),
        )?;
    }
    let steps_per_s = steps as f64 / start.elapsed().as_secs_f64();
    let test_acc = accuracy(&model, &test)?;
    println!(
        "test accuracy after training: {:.2}%  ({steps_per_s:.0} steps/s at batch 32)",
        100.0 * test_acc
    );

    // freeze the base, fine-tune the head
    for name in ["base_1", "base_2"] {
        model
            .get_layer(name)
            .expect("named layer")
            .set_trainable(false);
    }
    let (trainable, frozen) = param_counts(&model);
    println!("base frozen: {trainable} trainable parameters, {frozen} non-trainable");
    let base_before: Vec<Vec<u32>> = model.layers()[..2]
        .iter()
        .flat_map(|l| l.weights())
        .map(|v| v.to_vec().iter().map(|x| x.to_bits()).collect())
        .collect();
    let mut head_opt = Sgd::new().learning_rate(0.01).momentum(0.9);
    for epoch in 1..=head_epochs {
        train_epoch(
            &model,
            &mut head_opt,
            &train,
            (epochs + epoch) as u64,
            &format!("head  {epoch:>2}/{head_epochs}"),
        )?;
    }
    let base_after: Vec<Vec<u32>> = model.layers()[..2]
        .iter()
        .flat_map(|l| l.weights())
        .map(|v| v.to_vec().iter().map(|x| x.to_bits()).collect())
        .collect();
    let final_acc = accuracy(&model, &test)?;
    println!(
        "test accuracy after fine-tuning the head: {:.2}%",
        100.0 * final_acc
    );

    let mut ok = true;
    if final_acc < 0.95 {
        eprintln!("FAILED: test accuracy {:.2}% < 95%", 100.0 * final_acc);
        ok = false;
    }
    if base_before != base_after {
        eprintln!("FAILED: a frozen base weight changed during fine-tuning");
        ok = false;
    } else {
        println!("frozen base weights bit-identical after fine-tuning: yes");
    }
    if trainable != 64 * CLASSES + CLASSES {
        eprintln!(
            "FAILED: expected only the head's {} parameters to train, got {trainable}",
            64 * CLASSES + CLASSES
        );
        ok = false;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
