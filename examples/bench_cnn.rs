//! CNN training-step throughput, the workload `cnn` of ../shared/bench
//! (peers: JAX, torch, TensorFlow): the Keras MNIST convnet without dropout
//! — 28×28×1 → Conv2D(32, 3×3, valid, ReLU) → MaxPool 2×2 → Conv2D(64, 3×3,
//! valid, ReLU) → MaxPool 2×2 → Flatten(1600) → Dense(10); softmax cross
//! entropy from logits, plain SGD lr 0.01, f32, glorot-uniform kernels,
//! standard-normal inputs and uniform labels from a fixed seed.
//!
//! ```sh
//! cargo run --release --example bench_cnn -- --batch 64 --steps 50
//! WORKLOAD=cnn ../shared/bench/compare.sh
//! ```
//!
//! Prints `rime cnn batch=<N> <x> steps/s` (the median of 5 timed runs of
//! `--steps` steps, after 2 warm-up runs), then the step's conv GFLOP/s
//! (forward and both gradients: 3 × 2 × the multiply-adds of the two
//! convolutions, over the whole step's time).

use std::time::Instant;

use rand::RngExt;
use rime::prelude::*;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, steps) = (arg("--batch", 64), arg("--steps", 50));
    let mut rng = seeded_rng(0);
    let x = Tensor::<f32>::rand_normal([batch, 28, 28, 1], 0.0, 1.0, &mut rng)?;
    let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10usize)).collect();

    let glorot = |seed| Initializer::GlorotUniform { seed: Some(seed) };
    let model = Sequential::new()
        .add(
            Conv2D::new(32, [3, 3])
                .activation(Activation::Relu)
                .kernel_initializer(glorot(1)),
        )
        .add(MaxPooling2D::new(&[2, 2]))
        .add(
            Conv2D::new(64, [3, 3])
                .activation(Activation::Relu)
                .kernel_initializer(glorot(2)),
        )
        .add(MaxPooling2D::new(&[2, 2]))
        .add(Flatten::new())
        .add(Dense::new(10).kernel_initializer(glorot(3)))
        .with_input_shape([28, 28, 1])?;
    let mut opt = Sgd::new().learning_rate(0.01);
    let vars = model.trainable_weights();

    let mut step = || -> Result<f32, Box<dyn std::error::Error>> {
        let tape = GradientTape::new();
        let logits = model.call(&x, true)?;
        let loss = logits.sparse_softmax_cross_entropy(&labels)?.mean_all();
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
        "rime cnn batch={batch} {:.1} steps/s",
        steps as f64 / median
    );
    // multiply-adds per image: conv1 26·26·9·32, conv2 11·11·288·64; the
    // first conv's input gradient is not needed (the input is not watched)
    let (c1, c2) = (26.0 * 26.0 * 9.0 * 32.0, 11.0 * 11.0 * 288.0 * 64.0);
    let flops = 2.0 * batch as f64 * (2.0 * c1 + 3.0 * c2);
    println!(
        "conv work {:.1} MFLOP/step, {:.1} GFLOP/s over the whole step",
        flops / 1e6,
        flops * steps as f64 / median / 1e9
    );
    Ok(())
}
