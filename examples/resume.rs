//! Interrupt and resume: train, save a checkpoint mid-run, "crash", restore
//! it into a freshly built model and optimizer, finish — and compare with
//! an uninterrupted run. The final weights are bit-identical: the
//! checkpoint holds the weights, BatchNormalization's moving statistics,
//! Adam's slots and iteration count (the learning-rate schedule's
//! position), Dropout's random stream (the masks still to come), and the
//! epoch counter that selects the next shuffle order.
//!
//! ```sh
//! cargo run --release --example resume            # full run
//! cargo run --release --example resume -- --quick # fewer epochs (CI)
//! ```

use std::process::ExitCode;

use rime::layers::data::read_csv;
use rime::layers::initializers::set_global_seed;
use rime::layers::optimizers::ExponentialDecay;
use rime::prelude::*;

fn build() -> rime::Result<Sequential<f32>> {
    // same seed, same initial weights
    set_global_seed(7);
    Ok(Sequential::new()
        .add(Dense::new(32).activation(Activation::Relu))
        .add(BatchNormalization::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(10))
        .with_input_shape([64])?)
}

fn trainer(model: &dyn Layer<f32>) -> rime::Result<Trainer<'_, f32>> {
    let schedule = ExponentialDecay::new(3e-3, 50, 0.8)?;
    Ok(Trainer::new(
        model,
        Adam::new().learning_rate_schedule(schedule),
        SparseCategoricalCrossentropy::new().with_from_logits(true),
    )
    .metric(SparseCategoricalAccuracy::new()))
}

fn bits(model: &dyn Layer<f32>) -> Vec<u32> {
    model
        .weights()
        .iter()
        .flat_map(|v| v.to_vec())
        .map(f32::to_bits)
        .collect()
}

fn main() -> rime::Result<ExitCode> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (epochs, interrupt_at) = if quick { (6, 3) } else { (20, 8) };
    let table = read_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"),
        false,
    )?;
    let data = Dataset::from_tensors(
        table.columns::<f32>(0..64)?.mul_scalar(1.0 / 16.0),
        table.int_column(64)?,
    )?
    .batch(64)?
    .shuffle(42);
    let quiet = || FitOptions::new().verbose(Verbose::Line);

    println!("uninterrupted: {epochs} epochs");
    let reference = build()?;
    trainer(&reference)?.fit(&data, quiet().epochs(epochs))?;

    let path = std::env::temp_dir().join(format!("rime_resume_{}.ckpt", std::process::id()));
    println!("interrupted: {interrupt_at} epochs, checkpoint, stop");
    {
        let model = build()?;
        let mut t = trainer(&model)?;
        t.fit(&data, quiet().epochs(interrupt_at))?;
        t.save_checkpoint(&path)?;
    } // model and optimizer dropped: the "crash"

    println!("resumed from `{}`", path.display());
    set_global_seed(99); // a different fresh model: the checkpoint decides
    let model = Sequential::new()
        .add(Dense::new(32).activation(Activation::Relu))
        .add(BatchNormalization::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(10))
        .with_input_shape([64])?;
    let mut t = trainer(&model)?;
    let counters = t.load_checkpoint(&path)?;
    println!(
        "  at epoch {}, step {}, optimizer iteration {}, learning rate {:.6}",
        counters.epoch,
        counters.global_step,
        t.step().optimizer().iterations(),
        t.step().optimizer().current_learning_rate()
    );
    t.fit(
        &data,
        quiet()
            .epochs(epochs)
            .initial_epoch(counters.epoch as usize),
    )?;
    std::fs::remove_file(&path).ok();

    let (a, b) = (bits(&reference), bits(&model));
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    println!(
        "final weights bit-identical to the uninterrupted run: {} ({} numbers, {differing} differ)",
        if differing == 0 { "yes" } else { "NO" },
        a.len()
    );
    Ok(if differing == 0 && a.len() == b.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
