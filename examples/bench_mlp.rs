//! MLP training-step throughput, the workload of ../shared/bench (peers:
//! JAX, torch, TensorFlow): MLP 784-256-256-10, ReLU, softmax cross entropy
//! from logits, plain SGD lr 0.01, f32, glorot-uniform init, standard-normal
//! inputs and uniform labels from a fixed seed.
//!
//! ```sh
//! cargo run --release --example bench_mlp -- --batch 128 --steps 200
//! ```
//!
//! Prints `rime mlp batch=<N> <x> steps/s` (the median of 5 timed runs of
//! `--steps` steps, after 2 warm-up runs). The loop is the one a user
//! writes: layers, a `GradientTape`, `trainable_weights`, `apply_gradients`.

use std::time::Instant;

use rand::RngExt;
use rime::prelude::*;

/// `--batch N --steps N`.
fn parse_args() -> Result<(usize, usize), lexopt::Error> {
    use lexopt::prelude::*;
    let (mut batch, mut steps) = (128, 200);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("batch") => batch = parser.value()?.parse()?,
            Long("steps") => steps = parser.value()?.parse()?,
            Short('h') | Long("help") => {
                println!("usage: bench_mlp [--batch N] [--steps N]");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok((batch, steps))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, steps) = parse_args()?;
    let mut rng = seeded_rng(0);
    let x = Tensor::<f32>::rand_normal([batch, 784], 0.0, 1.0, &mut rng)?;
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..10i64)).collect();
    let y = Tensor::vector(labels);

    let glorot = |seed| Initializer::GlorotUniform { seed: Some(seed) };
    let model = Sequential::new()
        .add(
            Dense::new(256)
                .activation(Activation::Relu)
                .kernel_initializer(glorot(1)),
        )
        .add(
            Dense::new(256)
                .activation(Activation::Relu)
                .kernel_initializer(glorot(2)),
        )
        .add(Dense::new(10).kernel_initializer(glorot(3)))
        .with_input_shape([784])?;
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let mut opt = Sgd::new().learning_rate(0.01);
    let vars = model.trainable_weights();

    let mut step = || -> Result<f32, Box<dyn std::error::Error>> {
        let tape = GradientTape::new();
        let loss = loss_fn.call_int(&y, &model.call(&x, true)?)?;
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;
        Ok(loss.to_scalar()?)
    };
    let mut times = Vec::new();
    let mut last = 0.0;
    for rep in 0..7 {
        let start = Instant::now();
        for _ in 0..steps {
            last = step()?;
        }
        if rep >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    assert!(last.is_finite(), "loss diverged: {last}");
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "rime mlp batch={batch} {:.1} steps/s",
        steps as f64 / median
    );
    Ok(())
}
