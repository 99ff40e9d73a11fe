//! Freeze part of one tensor: the first rows W1 of a Dense kernel W = [W1; W2]
//! are frozen by a `TrainableMask` while the model trains with AdamW (weight
//! decay on). W1 stays bit-for-bit unchanged — no moment estimate, no weight
//! decay touches it — and the backward pass computes only W2's gradient block.
//!
//! ```sh
//! cargo run --release --example partial_freeze
//! ```

use std::process::ExitCode;

use rime::prelude::*;

fn main() -> rime::Result<ExitCode> {
    let (n, m, frozen_rows) = (32, 16, 24);
    let mut rng = seeded_rng(42);
    // a regression target the model can fit: y = tanh(x A) B
    let a = Tensor::<f32>::rand_normal([n, m], 0.0, 0.3, &mut rng)?;
    let b = Tensor::<f32>::rand_normal([m, 1], 0.0, 0.3, &mut rng)?;
    let x = Tensor::<f32>::rand_normal([256, n], 0.0, 1.0, &mut rng)?;
    let y = x.matmul(&a)?.tanh().matmul(&b)?;

    let hidden = Dense::new(m).activation(Activation::Tanh).named("hidden");
    let model = Sequential::new()
        .add(hidden)
        .add(Dense::new(1))
        .with_input_shape([n])?;
    let kernel = model.layers()[0].weights()[0].clone(); // W, [n, m]
    kernel.set_mask(Some(TrainableMask::freeze_rows(0..frozen_rows)))?;
    println!(
        "kernel {} of shape {}: rows 0..{frozen_rows} (W1) frozen, rows {frozen_rows}..{n} (W2) trainable",
        kernel.name(),
        kernel.shape()
    );

    let before = kernel.to_vec();
    let mut opt = AdamW::new().learning_rate(0.01).weight_decay(0.05);
    let loss_fn = MeanSquaredError::new();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..300 {
        let tape = GradientTape::new();
        let loss = loss_fn.call(&y, &model.call(&x, true)?)?;
        let vars = model.trainable_weights();
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;
        last = loss.to_scalar()?;
        first.get_or_insert(last);
        if step % 100 == 0 {
            println!("step {step:>3}: loss {last:.5}");
        }
    }
    let after = kernel.to_vec();
    let split = frozen_rows * m;
    let max_abs_diff = |r: std::ops::Range<usize>| {
        before[r.clone()]
            .iter()
            .zip(&after[r])
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    let (d1, d2) = (max_abs_diff(0..split), max_abs_diff(split..n * m));
    let w1_bits_same = before[..split]
        .iter()
        .zip(&after[..split])
        .all(|(p, q)| p.to_bits() == q.to_bits());
    println!("loss {:.5} -> {last:.5}", first.unwrap_or(last));
    println!("max |ΔW1| = {d1:e}  (bit-identical: {w1_bits_same})");
    println!("max |ΔW2| = {d2:e}");
    if !w1_bits_same || d1 != 0.0 || d2 <= 0.0 || last >= first.unwrap_or(0.0) {
        eprintln!("FAILED: expected W1 unchanged, W2 changed and the loss to fall");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
