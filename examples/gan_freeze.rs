//! A small GAN on 1-D data. The discriminator's layers sit in two models:
//! `discriminator` (trainable, trained on its own step) and a frozen view
//! inside the `combined` generator→discriminator model. Freezing the view
//! at model level leaves the layers trainable in `discriminator` (docs/design.md,
//! rule 3) — the Keras GAN recipe without its ordering pitfalls.
//!
//! ```sh
//! cargo run --release --example gan_freeze
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use rime::prelude::*;

fn bits(model: &dyn Layer<f32>) -> Vec<Vec<u32>> {
    model
        .weights()
        .iter()
        .map(|v| v.to_vec().iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn main() -> rime::Result<ExitCode> {
    let (batch, noise_dim) = (64, 4);
    let (real_mean, real_std) = (3.0f32, 0.5f32);
    let mut rng = seeded_rng(7);

    let generator = Arc::new(
        Sequential::new()
            .add(Dense::new(16).activation(Activation::Relu))
            .add(Dense::new(1))
            .with_input_shape([noise_dim])?,
    );
    let d1 = Arc::new(Dense::new(16).activation(Activation::Relu));
    let d2 = Arc::new(Dense::new(1));
    let discriminator = Sequential::new()
        .add(d1.clone())
        .add(d2.clone())
        .with_input_shape([1])?;
    let frozen_view = Sequential::new().add(d1.clone()).add(d2.clone());
    frozen_view.set_trainable(false);
    let combined = Sequential::new().add(generator.clone()).add(frozen_view);
    println!(
        "discriminator trainable weights: {}",
        discriminator.trainable_weights().len()
    );
    println!(
        "combined trainable weights: {} (the generator's only)",
        combined.trainable_weights().len()
    );

    let bce = || BinaryCrossentropy::new().with_from_logits(true);
    let mut d_step = TrainStep::new(
        &discriminator,
        Adam::new().learning_rate(0.005).beta_1(0.5),
        bce(),
    );
    let mut g_step = TrainStep::new(
        &combined,
        Adam::new().learning_rate(0.005).beta_1(0.5),
        bce(),
    );
    let (ones, zeros) = (
        Tensor::<f32>::ones([batch, 1])?,
        Tensor::<f32>::zeros([batch, 1])?,
    );

    let (mut d_left_g_alone, mut g_left_d_alone) = (true, true);
    for it in 0..3000 {
        let noise = Tensor::<f32>::rand_normal([batch, noise_dim], 0.0, 1.0, &mut rng)?;
        let real =
            Tensor::<f32>::rand_normal([batch, 1], real_mean as f64, real_std as f64, &mut rng)?;
        let fake = generator.call(&noise, false)?;

        let g_before = bits(&*generator);
        let d_loss = d_step.run(&real, &ones)? + d_step.run(&fake, &zeros)?;
        d_left_g_alone &= bits(&*generator) == g_before;

        let d_before = bits(&discriminator);
        let g_loss = g_step.run(&noise, &ones)?;
        g_left_d_alone &= bits(&discriminator) == d_before;
        if it % 500 == 0 {
            println!("iteration {it:>4}: d_loss {d_loss:.4}  g_loss {g_loss:.4}");
        }
    }
    let samples = generator.call(
        &Tensor::<f32>::rand_normal([2000, noise_dim], 0.0, 1.0, &mut rng)?,
        false,
    )?;
    let mean = samples.mean_all().to_scalar()?;
    println!("generated mean {mean:.3} (real data: {real_mean})");
    println!("discriminator steps left the generator unchanged: {d_left_g_alone}");
    println!(
        "generator steps left the (frozen-in-combined) discriminator unchanged: {g_left_d_alone}"
    );
    if !(d_left_g_alone && g_left_d_alone && (mean - real_mean).abs() < 0.5) {
        eprintln!("FAILED");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
