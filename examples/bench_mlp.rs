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
//!
//! A sweep: `--batch` and `--width` take comma lists (784-W-W-10 for each
//! width W, at each batch), e.g. `--batch 1,32,128,512,2048 --width
//! 256,1024`; with `--width` each line names it, `rime mlp batch=<N>
//! width=<W> <x> steps/s`, as `py_peers_sweep.py` prints its peers' (see
//! `scripts/bench_sweep.sh`, which runs both and prints the ratios).
//! Without `--steps` a run is 200 steps (2000 at batch ≤ 8), fewer for the
//! large shapes.
//!
//! The step fuses each kernel's gradient into the SGD update
//! (`gradient_deferred` + `apply_deferred`, no gradient buffer of the
//! kernel's size); `--unfused` takes `gradient` + `apply_gradients`
//! instead, for comparing the two (the weights are the same bit for bit).

use std::time::Instant;

use rand::RngExt;
use rime::prelude::*;

struct Args {
    batches: Vec<usize>,
    widths: Vec<usize>,
    named_width: bool,
    steps: Option<usize>,
    unfused: bool,
}

/// A comma list of positive numbers.
fn list(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| match x.trim().parse() {
            Ok(0) | Err(_) => Err(format!("not a positive number: {x}")),
            Ok(n) => Ok(n),
        })
        .collect()
}

/// `--batch N[,N..] --width W[,W..] --steps N`.
fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut a = Args {
        batches: vec![128],
        widths: vec![256],
        named_width: false,
        steps: None,
        unfused: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("batch") => a.batches = list(&parser.value()?.string()?)?,
            Long("width") => {
                a.widths = list(&parser.value()?.string()?)?;
                a.named_width = true;
            }
            Long("steps") => a.steps = Some(parser.value()?.parse()?),
            Long("unfused") => a.unfused = true,
            Short('h') | Long("help") => {
                println!(
                    "usage: bench_mlp [--batch N[,N..]] [--width W[,W..]] [--steps N] [--unfused]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    for &width in &args.widths {
        for &batch in &args.batches {
            let steps = args.steps.unwrap_or_else(|| {
                let base = if batch <= 8 { 2000 } else { 200 };
                // about 6·batch·params FLOP per step: keep a run near 0.5 s
                let params = 784 * width + width * width + 10 * width;
                let flop = 6.0 * batch as f64 * params as f64;
                base.min(((5e10 / flop) as usize).max(5))
            });
            let rate = run(batch, width, steps, !args.unfused)?;
            if args.named_width {
                println!("rime mlp batch={batch} width={width} {rate:.1} steps/s");
            } else {
                println!("rime mlp batch={batch} {rate:.1} steps/s");
            }
        }
    }
    Ok(())
}

/// Steps per second of the 784-`width`-`width`-10 MLP at `batch`.
fn run(
    batch: usize,
    width: usize,
    steps: usize,
    fused: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut rng = seeded_rng(0);
    let x = Tensor::<f32>::rand_normal([batch, 784], 0.0, 1.0, &mut rng)?;
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..10i64)).collect();
    let y = Tensor::vector(labels);

    let glorot = |seed| Initializer::GlorotUniform { seed: Some(seed) };
    let model = Sequential::new()
        .add(
            Dense::new(width)
                .activation(Activation::Relu)
                .kernel_initializer(glorot(1)),
        )
        .add(
            Dense::new(width)
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
        if fused {
            let grads = tape.gradient_deferred(&loss, &vars)?;
            opt.apply_deferred(grads, &vars)?;
        } else {
            let grads = tape.gradient(&loss, &vars)?;
            opt.apply_gradients(&grads, &vars)?;
        }
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
    Ok(steps as f64 / median)
}
