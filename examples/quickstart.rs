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

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::Instant;

use rand::seq::SliceRandom;
use rime::prelude::*;

const CLASSES: usize = 10;

struct Split {
    x: Tensor<f32>,
    y: Tensor<f32>,
}

/// The UCI digits as scikit-learn ships them: 64 pixels (0..16) and a label per line.
/// Images (pixels scaled to [0, 1]) and their labels.
type Digits = (Vec<[f32; 64]>, Vec<u8>);

fn load_digits() -> Result<Digits, Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");
    let reader = BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(path)?));
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for line in reader.lines() {
        let line = line?;
        let values: Vec<f32> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let (pixels, label) = values.split_at(64);
        let mut image = [0.0; 64];
        image
            .iter_mut()
            .zip(pixels)
            .for_each(|(d, p)| *d = p / 16.0);
        images.push(image);
        labels.push(label[0] as u8);
    }
    Ok((images, labels))
}

fn split(images: &[[f32; 64]], labels: &[u8], idx: &[usize]) -> Split {
    let x: Vec<f32> = idx.iter().flat_map(|&i| images[i]).collect();
    let y: Vec<f32> = idx.iter().map(|&i| labels[i] as f32).collect();
    Split {
        x: Tensor::from_vec(x, [idx.len(), 64]).unwrap(),
        y: Tensor::vector(y),
    }
}

fn accuracy(model: &dyn Layer<f32>, data: &Split) -> rime::layers::Result<f64> {
    let mut acc = SparseCategoricalAccuracy::new();
    acc.update_state(&data.y, &model.call(&data.x, false)?)?;
    Ok(acc.result())
}

/// One epoch of the custom loop; prints a Keras-style progress line.
fn train_epoch(
    model: &dyn Layer<f32>,
    opt: &mut dyn Optimizer<f32>,
    train: &Split,
    batch: usize,
    rng: &mut rime::tensor::Rng,
    label: &str,
) -> rime::layers::Result<usize> {
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let n = train.x.dims()[0];
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let (mut mean_loss, mut acc) = (Mean::new(), SparseCategoricalAccuracy::new());
    let steps = n.div_ceil(batch);
    let start = Instant::now();
    for (step, chunk) in order.chunks(batch).enumerate() {
        let (x, y) = (
            train.x.index_select(0, chunk)?,
            train.y.index_select(0, chunk)?,
        );

        let tape = GradientTape::new();
        let logits = model.call(&x, true)?;
        let loss = loss_fn.call(&y, &logits)?;
        let vars = model.trainable_weights();
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;

        mean_loss.update_state(&loss)?;
        acc.update_state(&y, &logits)?;
        let done = (step + 1) * 30 / steps;
        print!(
            "\r{label} {:>3}/{steps} [{}{}] loss: {:.4} - accuracy: {:.4}",
            step + 1,
            "=".repeat(done),
            ".".repeat(30 - done),
            mean_loss.result(),
            acc.result()
        );
        let _ = std::io::stdout().flush();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(" - {ms:.2} ms/step");
    Ok(steps)
}

fn param_counts(model: &dyn Layer<f32>) -> (usize, usize) {
    let count = |vs: Vec<Variable<f32>>| vs.iter().map(|v| v.shape().numel()).sum::<usize>();
    (
        count(model.trainable_weights()),
        count(model.non_trainable_weights()),
    )
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (epochs, head_epochs) = if quick { (12, 3) } else { (30, 5) };
    let (images, labels) = load_digits()?;
    let mut rng = seeded_rng(0);
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.shuffle(&mut rng);
    let (test_idx, train_idx) = order.split_at(images.len() / 5);
    let (train, test) = (
        split(&images, &labels, train_idx),
        split(&images, &labels, test_idx),
    );
    println!(
        "digits: {} train, {} test, 64 features, {CLASSES} classes",
        train_idx.len(),
        test_idx.len()
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
            32,
            &mut rng,
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
            32,
            &mut rng,
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
