//! Benchmarks of data-parallel training over MPI (not tests).
//!
//! ```sh
//! cargo build --release --features distributed --example bench_allreduce
//! # allreduce throughput, 1-64 MB of f32: rime's fused path against a raw MPI_Allreduce
//! mpirun -n 2 target/release/examples/bench_allreduce
//! # the bench MLP (784-256-256-10, SGD), global batch 128 split over the processes
//! mpirun -n 2 -x RAYON_NUM_THREADS=1 target/release/examples/bench_allreduce --mlp --batch 128
//! ```
//!
//! Allreduce mode prints, per size, the algorithm bandwidth (bytes / time)
//! of: `raw` — one `MPI_Allreduce` of the buffer into a preallocated one
//! (not in place);
//! `fused` — rime's path (`DataParallel::average_gradients` on one gradient
//! tensor of that size, owned by the caller alone as a backward pass's are:
//! the handshake, the allreduce in place in the gradient's storage and the
//! scaling to the mean); `fused 32K` — the same bytes as 32 KiB tensors,
//! packed into fusion buckets. They run interleaved, repetition by
//! repetition, after two warm-up rounds (so that load on the machine hits
//! them alike); each figure is the median of its repetitions. `--reps N`
//! sets the repetitions per size, `--bucket-kib K` the bucket (default
//! 16 MiB); `raw bucketed` is the raw call cut into calls of a bucket.
//!
//! MLP mode prints global samples/s and, per step, the compute time
//! (forward, backward, update) and the time in the gradient exchange.

use std::time::Instant;

use rand::RngExt;
use rime::distributed::mpi::collective::SystemOperation;
use rime::distributed::mpi::traits::CommunicatorCollectives;
use rime::distributed::{DataParallel, Mpi};
use rime::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs each of `fs` `reps` times, interleaved, after two warm-up rounds;
/// the median and the fastest seconds of each.
fn time_interleaved<const N: usize>(
    reps: usize,
    fs: &mut [&mut dyn FnMut() -> rime::Result<()>; N],
) -> rime::Result<[(f64, f64); N]> {
    let mut times = vec![Vec::with_capacity(reps); N];
    for rep in 0..reps + 2 {
        for (f, t) in fs.iter_mut().zip(&mut times) {
            let start = Instant::now();
            f()?;
            if rep >= 2 {
                t.push(start.elapsed().as_secs_f64());
            }
        }
    }
    let mut out = [(0.0, 0.0); N];
    for (o, t) in out.iter_mut().zip(times) {
        let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
        *o = (median(t), fastest);
    }
    Ok(out)
}

fn allreduce(
    mpi: &Mpi,
    sizes_mb: &[usize],
    reps: Option<usize>,
    bucket_bytes: usize,
) -> rime::Result<()> {
    let world = mpi.world();
    // the checksum check is a debugging aid (on by default in debug builds)
    let mut dp: DataParallel<'_, f32> = mpi
        .data_parallel::<f32>()
        .verify_every(0)
        .bucket_bytes(bucket_bytes)?;
    let bucket_mib = bucket_bytes as f64 / f64::from(1 << 20);
    // a step that exchanges nothing: the handshake alone
    let [(handshake, _)] = time_interleaved(
        reps.unwrap_or(201),
        &mut [&mut || Ok(dp.average_gradients(&mut [], &[])?)],
    )?;
    if mpi.rank() == 0 {
        println!(
            "{} processes, {bucket_mib} MiB buckets; the per-step handshake alone (an empty \
             step): {:.1} µs\nGB/s = bytes / time (median); ratio = GB/s / raw GB/s; \
             best = the same of the fastest repetitions\n\
             {:>6} {:>8} {:>12} {:>8} {:>6} {:>6} {:>10} {:>6} {:>6}",
            mpi.size(),
            handshake * 1e6,
            "MB",
            "raw",
            "raw bucketed",
            "fused",
            "ratio",
            "best",
            "fused 32K",
            "ratio",
            "best"
        );
    }
    for &mb in sizes_mb {
        let n = mb * (1 << 20) / 4;
        let reps = reps.unwrap_or((512 / mb).clamp(9, 51));
        // the same values on every process: the mean of x and x is x, so the
        // gradients keep their values from one repetition to the next
        let data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let mut recv = vec![0.0f32; n];
        let mut recv2 = vec![0.0f32; n];
        let var = Variable::new("w", Tensor::from_vec(data.clone(), [n])?);
        let mut grad = [Some(Tensor::from_vec(data.clone(), [n])?)];
        let piece = (32 << 10) / 4;
        let vars: Vec<Variable<f32>> = data
            .chunks(piece)
            .map(|c| Variable::new("p", Tensor::from_vec(c.to_vec(), [c.len()]).expect("sized")))
            .collect();
        let mut grads: Vec<Option<Tensor<f32>>> = data
            .chunks(piece)
            .map(|c| Some(Tensor::from_vec(c.to_vec(), [c.len()]).expect("sized")))
            .collect();
        let bucket = (bucket_bytes / 4).max(1);
        let [raw, raw_bucketed, fused, fused_small] = {
            let dp = std::cell::RefCell::new(&mut dp);
            time_interleaved(
                reps,
                &mut [
                    &mut || {
                        world.all_reduce_into(&data[..], &mut recv[..], SystemOperation::sum());
                        Ok(())
                    },
                    // the raw call in rime's call sizes, for comparison
                    &mut || {
                        for (d, r) in data.chunks(bucket).zip(recv2.chunks_mut(bucket)) {
                            world.all_reduce_into(d, r, SystemOperation::sum());
                        }
                        Ok(())
                    },
                    &mut || {
                        Ok(dp
                            .borrow_mut()
                            .average_gradients(&mut grad, std::slice::from_ref(&var))?)
                    },
                    &mut || Ok(dp.borrow_mut().average_gradients(&mut grads, &vars)?),
                ],
            )?
        };
        if mpi.rank() == 0 {
            let bytes = (n * 4) as f64;
            let gbs = |t: f64| bytes / t / 1e9;
            println!(
                "{mb:>6} {:>8.2} {:>12.2} {:>8.2} {:>6.2} {:>6.2} {:>10.2} {:>6.2} {:>6.2}",
                gbs(raw.0),
                gbs(raw_bucketed.0),
                gbs(fused.0),
                raw.0 / fused.0,
                raw.1 / fused.1,
                gbs(fused_small.0),
                raw.0 / fused_small.0,
                raw.1 / fused_small.1,
            );
        }
    }
    Ok(())
}

fn mlp(mpi: &Mpi, global_batch: usize, steps: usize) -> rime::Result<()> {
    let (rank, size) = (mpi.rank(), mpi.size());
    let batch = global_batch / size;
    let mut rng = seeded_rng(rank as u64);
    let x = Tensor::<f32>::rand_normal([batch, 784], 0.0, 1.0, &mut rng)?;
    let labels: Vec<f32> = (0..batch)
        .map(|_| rng.random_range(0..10u32) as f32)
        .collect();
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
    let mut dp: DataParallel<'_, f32> = mpi.data_parallel::<f32>().verify_every(0);
    use rime::layers::collective::Collective;
    dp.broadcast_state(&model, &vars, &mut opt)?;
    let (mut compute, mut exchange) = (0.0f64, 0.0f64);
    let mut run = |timed: bool| -> rime::Result<()> {
        for _ in 0..steps {
            let t0 = Instant::now();
            let tape = GradientTape::new();
            let loss = loss_fn.call(&y, &model.call(&x, true)?)?;
            let mut grads = tape.gradient(&loss, &vars)?;
            let t1 = Instant::now();
            dp.average_gradients(&mut grads, &vars)?;
            let t2 = Instant::now();
            opt.apply_gradients(&grads, &vars)?;
            if timed {
                compute += (t1 - t0 + t2.elapsed()).as_secs_f64();
                exchange += (t2 - t1).as_secs_f64();
            }
        }
        Ok(())
    };
    run(false)?;
    let start = Instant::now();
    run(true)?;
    let total = start.elapsed().as_secs_f64();
    if rank == 0 {
        let params: usize = vars.iter().map(Variable::len).sum();
        println!(
            "rime mlp ddp {size} processes × batch {batch} (global {}): {:.0} samples/s, \
             {:.1} steps/s; per step: compute {:.3} ms, gradient exchange {:.3} ms ({} params, {:.2} MB)",
            batch * size,
            (batch * size * steps) as f64 / total,
            steps as f64 / total,
            1e3 * compute / steps as f64,
            1e3 * exchange / steps as f64,
            params,
            (params * 4) as f64 / 1e6
        );
    }
    Ok(())
}

fn main() -> rime::Result<()> {
    let mpi = Mpi::init()?;
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if args.iter().any(|a| a == "--mlp") {
        mlp(&mpi, value("--batch", 128), value("--steps", 200))
    } else {
        let reps = args
            .iter()
            .position(|a| a == "--reps")
            .map(|_| value("--reps", 9));
        let bucket = match value("--bucket-kib", 0) {
            0 => rime::distributed::DEFAULT_BUCKET_BYTES,
            kib => kib << 10,
        };
        if args.iter().any(|a| a == "--quick") {
            allreduce(&mpi, &[1], Some(3), bucket)
        } else {
            allreduce(&mpi, &[1, 2, 4, 8, 16, 32, 64], reps, bucket)
        }
    }
}
