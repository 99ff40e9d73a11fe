//! One layer in two models. Freezing `model1` at model level leaves the
//! shared layer's own flag alone, so `model2` still trains it; freezing the
//! layer itself freezes it in both (docs/design.md, rules 2 and 3).
//!
//! ```sh
//! cargo run --release --example shared_layers
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use rime::prelude::*;

fn snapshot(layer: &dyn Layer<f32>) -> Vec<Vec<f32>> {
    layer.weights().iter().map(|v| v.to_vec()).collect()
}

fn main() -> rime::Result<ExitCode> {
    let mut rng = seeded_rng(1);
    let x = Tensor::<f32>::rand_normal([64, 8], 0.0, 1.0, &mut rng)?;
    let y = Tensor::<f32>::rand_normal([64, 2], 0.0, 1.0, &mut rng)?;

    let shared = Arc::new(Dense::new(16).activation(Activation::Relu).named("shared"));
    let model1 = Sequential::new()
        .add(shared.clone())
        .add(Dense::new(2).named("head1"))
        .with_input_shape([8])?;
    let model2 = Sequential::new()
        .add(shared.clone())
        .add(Dense::new(2).named("head2"))
        .with_input_shape([8])?;

    model1.set_trainable(false);
    println!("model1.set_trainable(false)");
    println!(
        "  model1 trainable weights: {}",
        model1.trainable_weights().len()
    );
    println!(
        "  model2 trainable weights: {}",
        model2.trainable_weights().len()
    );
    println!("  shared layer's own flag:  {}", shared.trainable());

    let mut step1 = TrainStep::new(
        &model1,
        Sgd::new().learning_rate(0.05),
        MeanSquaredError::new(),
    );
    let mut step2 = TrainStep::new(
        &model2,
        Sgd::new().learning_rate(0.05),
        MeanSquaredError::new(),
    );
    let before = snapshot(&*shared);
    let model1_before = snapshot(&model1);
    for _ in 0..20 {
        step1.run(&x, &y)?;
    }
    let unchanged_by_model1 = snapshot(&model1) == model1_before;
    println!("20 steps of model1: its weights unchanged: {unchanged_by_model1}");
    let (mut first, mut last) = (0.0, 0.0);
    for i in 0..20 {
        last = step2.run(&x, &y)?;
        if i == 0 {
            first = last;
        }
    }
    let trained_by_model2 = snapshot(&*shared) != before;
    println!(
        "20 steps of model2: loss {first:.4} -> {last:.4}; shared layer changed: {trained_by_model2}"
    );

    shared.set_trainable(false);
    println!(
        "shared.set_trainable(false): model2 trainable weights: {}",
        model2.trainable_weights().len()
    );
    let frozen_both =
        model2.trainable_weights().len() == 2 && model1.trainable_weights().is_empty();

    let ok = unchanged_by_model1
        && trained_by_model2
        && frozen_both
        && model1.trainable_weights().is_empty();
    if !ok {
        eprintln!("FAILED: the rules did not hold");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
