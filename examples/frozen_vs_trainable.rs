//! A training step takes the trainable set when it is built (Keras'
//! `compile` moment): a step built while a layer is frozen never trains it,
//! even after the layer is unfrozen; a step built afterwards does.
//!
//! ```sh
//! cargo run --release --example frozen_vs_trainable
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use rime::prelude::*;

fn main() -> rime::Result<ExitCode> {
    let mut rng = seeded_rng(2);
    let x = Tensor::<f32>::rand_normal([32, 4], 0.0, 1.0, &mut rng)?;
    let y = Tensor::<f32>::rand_normal([32, 1], 0.0, 1.0, &mut rng)?;
    let layer = Arc::new(Dense::new(8).activation(Activation::Tanh).named("layer"));
    let frozen_model = Sequential::new()
        .add(layer.clone())
        .add(Dense::new(1))
        .with_input_shape([4])?;
    let trainable_model = Sequential::new()
        .add(layer.clone())
        .add(Dense::new(1))
        .with_input_shape([4])?;

    layer.set_trainable(false);
    let mut frozen_step = TrainStep::new(
        &frozen_model,
        Adam::new().learning_rate(0.01),
        MeanSquaredError::new(),
    );
    layer.set_trainable(true);
    let mut trainable_step = TrainStep::new(
        &trainable_model,
        Adam::new().learning_rate(0.01),
        MeanSquaredError::new(),
    );
    println!(
        "step built while frozen trains {} variables",
        frozen_step.variables().len()
    );
    println!(
        "step built while trainable trains {} variables",
        trainable_step.variables().len()
    );

    let before: Vec<Vec<f32>> = layer.weights().iter().map(|v| v.to_vec()).collect();
    for _ in 0..10 {
        frozen_step.run(&x, &y)?;
    }
    let after_frozen: Vec<Vec<f32>> = layer.weights().iter().map(|v| v.to_vec()).collect();
    for _ in 0..10 {
        trainable_step.run(&x, &y)?;
    }
    let after_trainable: Vec<Vec<f32>> = layer.weights().iter().map(|v| v.to_vec()).collect();
    let a = after_frozen == before;
    let b = after_trainable != after_frozen;
    println!("10 steps of the frozen-time step: layer unchanged: {a}");
    println!("10 steps of the trainable-time step: layer changed: {b}");
    if !(a && b) {
        eprintln!("FAILED");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
