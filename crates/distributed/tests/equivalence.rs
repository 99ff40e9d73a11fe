//! Data-parallel equivalence, run by `.ci/run` as
//! `mpirun -n 2 --allow-run-as-root --oversubscribe --mca btl self,vader <this binary>`.
//!
//! A plain program (`harness = false`): MPI is initialized once per
//! process, and every process runs every check in the same order. Each
//! check asserts values; the program exits non-zero on any process's
//! failure. Run alone (`cargo test -p rime-distributed --features mpi`) it
//! is a world of one process and checks that path (bit-identical to
//! training without a collective); the cross-process checks need
//! `mpirun -n 2` or more.
//!
//! Checks, with p processes:
//! 1. p processes × batch 32 train to the same weights as one process ×
//!    batch 32·p on the same data order, within 1e-6 relative, after 20
//!    SGD (momentum) steps and after 20 Adam steps, with a partly masked
//!    kernel and a frozen layer that stay bit-identical, starting from
//!    different weights on every process (rank 0's are broadcast).
//! 2. `fit` across processes reports the global loss and accuracy of the
//!    one-process `fit` and ends with the same weights.
//! 3. BatchNormalization's moving statistics are the mean of what each
//!    process's shard would give.
//! 4. `average_gradients` through each path of the exchange (in place,
//!    packed, masked, a gradient some processes lack) gives the means.
//! 5. Bad input: models that differ between processes, and a step that
//!    fails on one process, fail with typed errors on all and change
//!    nothing.

use std::process::ExitCode;

use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives};
use rime_distributed::{DataParallel, Mpi};
use rime_layers::activations::Activation;
use rime_layers::collective::Collective;
use rime_layers::data::Dataset;
use rime_layers::fit::{FitOptions, Trainer, Verbose};
use rime_layers::losses::SparseCategoricalCrossentropy;
use rime_layers::metrics::SparseCategoricalAccuracy;
use rime_layers::optimizers::{Adam, Optimizer, Sgd};
use rime_layers::{BatchNormalization, Dense, Error, Layer, Sequential, TrainStep};
use rime_tape::{TrainableMask, Variable};
use rime_tensor::{Tensor, seeded_rng};

const PER_RANK_BATCH: usize = 32;
const STEPS: usize = 20;
const TOL: f64 = 1e-6;

type Check = Result<(), String>;

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(msg()) }
}

/// `STEPS` global batches of 3-class data; the same on every process.
fn data(p: usize, seed: u64) -> rime_layers::Result<(Tensor<f32>, Tensor<f32>)> {
    let n = STEPS * PER_RANK_BATCH * p;
    let mut rng = seeded_rng(seed);
    let x = Tensor::<f32>::rand_normal([n, 8], 0.0, 1.0, &mut rng)?;
    let w = Tensor::<f32>::rand_normal([8, 3], 0.0, 1.0, &mut rng)?;
    let scores = x.matmul(&w)?.to_vec();
    let labels = scores
        .chunks(3)
        .map(|s| {
            let best = (0..3).fold(0, |b, i| if s[i] > s[b] { i } else { b });
            best as f32
        })
        .collect();
    Ok((x, Tensor::vector(labels)))
}

/// Dense(16, tanh) with rows 0..2 of its kernel frozen by a mask, a frozen
/// Dense(8, tanh), and a Dense(3) head. `jitter` moves the initial
/// weights (to see that the root's are broadcast).
fn model(jitter: f32) -> rime_layers::Result<Sequential<f32>> {
    let model = Sequential::new()
        .add(Dense::new(16).activation(Activation::Tanh).named("masked"))
        .add(Dense::new(8).activation(Activation::Tanh).named("frozen"))
        .add(Dense::new(3).named("head"))
        .with_input_shape([8])?;
    model.layers()[1].set_trainable(false);
    model.layers()[0].weights()[0].set_mask(Some(TrainableMask::freeze_rows(0..2)))?;
    let moved: Vec<Tensor<f32>> = model
        .get_weights()
        .iter()
        .map(|w| w.add_scalar(jitter))
        .collect();
    model.set_weights(&moved)?;
    Ok(model)
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max(f64::from((x - y).abs())));
    diff / scale.max(1e-30)
}

/// Fails when a weight differs by more than `TOL`; prints the largest
/// relative difference (rank 0).
fn compare_weights(what: &str, dist: &dyn Layer<f32>, reference: &dyn Layer<f32>) -> Check {
    let mut largest = 0.0f64;
    for (d, r) in dist.weights().iter().zip(reference.weights()) {
        let rel = rel_diff(&d.to_vec(), &r.to_vec());
        largest = largest.max(rel);
        ensure(rel <= TOL, || {
            format!(
                "{what}: `{}` differs from the one-process run by {rel:.3e} (relative)",
                d.name()
            )
        })?;
    }
    if mpi::topology::SimpleCommunicator::world().rank() == 0 {
        println!("     {what}: largest relative difference {largest:.2e}");
    }
    Ok(())
}

fn equivalence(mpi: &Mpi, optimizer: &str) -> rime_layers::Result<Check> {
    let (rank, p) = (mpi.rank(), mpi.size());
    let (x, y) = data(p, 7)?;
    let make_opt = || -> Box<dyn Optimizer<f32>> {
        match optimizer {
            "SGD" => Box::new(Sgd::new().learning_rate(0.1).momentum(0.9)),
            _ => Box::new(Adam::new().learning_rate(0.01)),
        }
    };
    let loss = || SparseCategoricalCrossentropy::new().with_from_logits(true);

    let dist_model = model(0.01 * rank as f32)?;
    let mut dist =
        TrainStep::new(&dist_model, make_opt(), loss()).with_collective(mpi.data_parallel::<f32>());
    dist.broadcast_state()?;
    let start = dist_model.get_weights();
    // creation order (kernel, bias, frozen kernel, frozen bias): the
    // indices below; `get_weights` lists trainable weights first
    let creation_order = |m: &dyn Layer<f32>| -> Vec<Tensor<f32>> {
        m.variables().iter().map(|v| v.value_untracked()).collect()
    };
    let start_fixed = creation_order(&dist_model);
    let reference_model = model(0.0)?;
    reference_model.set_weights(&start)?;
    let mut reference = TrainStep::new(&reference_model, make_opt(), loss());

    let shard = Dataset::from_tensors(x.clone(), y.clone())?
        .shard(rank, p)?
        .batch(PER_RANK_BATCH)?;
    let whole = Dataset::from_tensors(x, y)?.batch(PER_RANK_BATCH * p)?;
    let mut steps = 0;
    for (local, global) in shard.iter().zip(whole.iter()) {
        let (local, global) = (local?, global?);
        dist.run_batch(&local)?;
        reference.run_batch(&global)?;
        steps += 1;
    }
    if steps != STEPS {
        return Ok(Err(format!("{optimizer}: {steps} steps, expected {STEPS}")));
    }
    let what = format!("{optimizer}, {p} process(es) × batch {PER_RANK_BATCH}");
    if let Err(e) = compare_weights(&what, &dist_model, &reference_model) {
        return Ok(Err(e));
    }
    // masked rows and the frozen layer: bit-identical to the start
    let end = creation_order(&dist_model);
    let kernel_width = 16;
    if end[0].as_slice()[..2 * kernel_width] != start_fixed[0].as_slice()[..2 * kernel_width] {
        return Ok(Err(format!(
            "{what}: frozen rows of the masked kernel moved"
        )));
    }
    if end[2] != start_fixed[2] || end[3] != start_fixed[3] {
        return Ok(Err(format!("{what}: the frozen layer moved")));
    }
    if p == 1 && end != creation_order(&reference_model) {
        return Ok(Err(format!(
            "{what}: one process through DataParallel is not bit-identical"
        )));
    }
    // the trained weights are bit-identical on every process
    let mut dp = mpi.data_parallel::<f32>();
    if let Err(e) = dp.verify_replicas(&dist_model) {
        return Ok(Err(format!("{what}: {e}")));
    }
    Ok(Ok(()))
}

fn fit_is_global(mpi: &Mpi) -> rime_layers::Result<Check> {
    let (rank, p) = (mpi.rank(), mpi.size());
    let (x, y) = data(p, 11)?;
    let loss = || SparseCategoricalCrossentropy::new().with_from_logits(true);
    let dist_model = model(0.02 * rank as f32)?;
    let step = TrainStep::new(&dist_model, Adam::new().learning_rate(0.01), loss())
        .with_collective(mpi.data_parallel::<f32>());
    let mut dist = Trainer::from_step(step).metric(SparseCategoricalAccuracy::new());
    // fit broadcasts rank 0's start first thing; so does this, to copy it
    dist.step_mut().broadcast_state()?;
    let reference_model = model(0.0)?;
    reference_model.set_weights(&dist_model.get_weights())?;
    let mut reference = Trainer::new(&reference_model, Adam::new().learning_rate(0.01), loss())
        .metric(SparseCategoricalAccuracy::new());
    let shard = Dataset::from_tensors(x.clone(), y.clone())?
        .shard(rank, p)?
        .batch(PER_RANK_BATCH)?;
    let whole = Dataset::from_tensors(x, y)?.batch(PER_RANK_BATCH * p)?;
    // validation data: 50 samples (shards of unequal size for p = 3, 4)
    let (vx, vy) = data(1, 13)?;
    let (vx, vy) = (vx.narrow(0, 0, 50)?, vy.narrow(0, 0, 50)?);
    let val_shard = Dataset::from_tensors(vx.clone(), vy.clone())?
        .shard(rank, p)?
        .batch(8)?;
    let val_whole = Dataset::from_tensors(vx, vy)?.batch(8)?;
    let opts = || FitOptions::new().epochs(2).verbose(Verbose::Silent);
    let h_dist = dist.fit(&shard, opts().validation_data(val_shard.clone()))?;
    let h_ref = reference.fit(&whole, opts().validation_data(val_whole.clone()))?;
    // evaluate: global over the shards, as one process over all of it
    let e_dist = dist.evaluate(&val_shard)?;
    let e_ref = reference.evaluate(&val_whole)?;
    for key in ["loss", "sparse_categorical_accuracy"] {
        let (Some(d), Some(r)) = (e_dist.get(key), e_ref.get(key)) else {
            return Ok(Err(format!("evaluate: `{key}` missing")));
        };
        if (d - r).abs() > 1e-5 * r.abs().max(1.0) {
            return Ok(Err(format!(
                "evaluate: global `{key}` {d} differs from the one-process {r}"
            )));
        }
    }
    for key in [
        "loss",
        "sparse_categorical_accuracy",
        "val_loss",
        "val_sparse_categorical_accuracy",
    ] {
        let (d, r) = (h_dist.get(key), h_ref.get(key));
        let (Some(d), Some(r)) = (d, r) else {
            return Ok(Err(format!("fit: `{key}` missing from a history")));
        };
        for (a, b) in d.iter().zip(r) {
            if (a - b).abs() > 1e-5 * b.abs().max(1.0) {
                return Ok(Err(format!(
                    "fit: global `{key}` {a} differs from the one-process {b}"
                )));
            }
        }
    }
    if let Err(e) = compare_weights("fit", &dist_model, &reference_model) {
        return Ok(Err(e));
    }
    Ok(Ok(()))
}

fn batch_norm_moving_mean(mpi: &Mpi) -> rime_layers::Result<Check> {
    let (rank, p) = (mpi.rank(), mpi.size());
    let mut rng = seeded_rng(5);
    let x = Tensor::<f32>::rand_normal([PER_RANK_BATCH * p, 4], 1.0, 2.0, &mut rng)?;
    let y = Tensor::<f32>::zeros([PER_RANK_BATCH * p])?;
    let build = || -> rime_layers::Result<Sequential<f32>> {
        Sequential::new()
            .add(BatchNormalization::new())
            .add(Dense::new(2))
            .with_input_shape([4])
    };
    let loss = || SparseCategoricalCrossentropy::new().with_from_logits(true);
    let local = Dataset::from_tensors(x, y)?
        .shard(rank, p)?
        .batch(PER_RANK_BATCH)?;
    let batch = local.iter().next().ok_or_else(|| Error::InvalidArgument {
        what: "test".into(),
        msg: "no batch".into(),
    })??;
    let dist_model = build()?;
    let mut dist =
        TrainStep::new(&dist_model, Sgd::new(), loss()).with_collective(mpi.data_parallel::<f32>());
    dist.broadcast_state()?;
    // what this shard alone gives, from the same start
    let alone_model = build()?;
    alone_model.set_weights(&dist_model.get_weights())?;
    TrainStep::new(&alone_model, Sgd::new(), loss()).run_batch(&batch)?;
    dist.run_batch(&batch)?;
    let names: Vec<String> = dist_model
        .weights()
        .iter()
        .map(|w| w.name().to_string())
        .collect();
    let mut dp = mpi.data_parallel::<f32>();
    for (i, name) in names.iter().enumerate() {
        if !name.contains("moving") {
            continue;
        }
        let alone: Vec<f64> = alone_model.weights()[i]
            .to_vec()
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let mut mean = alone.clone();
        dp.reduce_f64(&mut mean, rime_layers::collective::ReduceOp::Sum)?;
        let got = dist_model.weights()[i].to_vec();
        for (g, m) in got.iter().zip(&mean) {
            let m = m / p as f64;
            if (f64::from(*g) - m).abs() > 1e-6 * m.abs().max(1.0) {
                return Ok(Err(format!(
                    "batch norm: `{name}` is {g}, the mean over processes is {m}"
                )));
            }
        }
        if p > 1 && alone == got.iter().map(|v| f64::from(*v)).collect::<Vec<_>>() {
            return Ok(Err(format!(
                "batch norm: `{name}` was not averaged (equals this shard's own)"
            )));
        }
    }
    Ok(Ok(()))
}

/// `average_gradients` through every path of the exchange, with 40 000-byte
/// buckets: a long gradient reduced in place in several bucket-sized calls,
/// short ones packed into a bucket, a long masked one (its frozen rows come
/// back zero though this process's gradient is not zero there), one only
/// rank 0 has (the others take part with zeros), one no process has (stays
/// `None`), and one whose buffer another handle shares (that handle keeps
/// its values). Twice: the second step reuses the first one's plan.
fn average_gradients_paths(mpi: &Mpi) -> rime_layers::Result<Check> {
    let (rank, p) = (mpi.rank(), mpi.size());
    let shapes: [&[usize]; 5] = [&[40_000], &[3, 5], &[200, 200], &[7], &[11]];
    let vars: Vec<Variable<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Ok(Variable::new(format!("g{i}"), Tensor::zeros(*s)?)))
        .collect::<rime_layers::Result<_>>()?;
    vars[2].set_mask(Some(TrainableMask::freeze_rows(0..10)))?;
    // element j of gradient i on rank r: base(i, j) + r, so the mean is
    // base(i, j) + (p - 1) / 2 (exact in f32 for these small integers)
    let base = |i: usize, j: usize| (i * 7 + j % 13) as f32;
    let local = |i: usize| -> rime_layers::Result<Tensor<f32>> {
        let n = vars[i].len();
        let data = (0..n).map(|j| base(i, j) + rank as f32).collect();
        Ok(Tensor::from_vec(data, vars[i].shape())?)
    };
    let mut dp = mpi.data_parallel::<f32>().bucket_bytes(40_000)?;
    for round in 0..2 {
        let mut grads = vec![
            Some(local(0)?),
            Some(local(1)?),
            Some(local(2)?),
            (rank == 0).then(|| local(3)).transpose()?,
            None,
        ];
        let shared = grads[1].clone();
        dp.average_gradients(&mut grads, &vars)?;
        let what = |i: usize| format!("average_gradients round {round}, gradient {i}");
        let mean_offset = (p as f32 - 1.0) / 2.0;
        for (i, g) in grads.iter().take(3).enumerate() {
            let Some(g) = g else {
                return Ok(Err(format!("{}: None", what(i))));
            };
            for (j, got) in g.as_slice().iter().enumerate() {
                // rows 0..10 of gradient 2 (200 wide) are frozen
                let expected = if i == 2 && j < 2_000 {
                    0.0
                } else {
                    base(i, j) + mean_offset
                };
                if (got - expected).abs() > 1e-6 * expected.abs().max(1.0) {
                    return Ok(Err(format!(
                        "{}: element {j} is {got}, expected {expected}",
                        what(i)
                    )));
                }
            }
        }
        let only_root: Vec<f32> = (0..7).map(|j| base(3, j) / p as f32).collect();
        let got = grads[3].as_ref().map(Tensor::to_vec);
        if rel_diff(got.as_deref().unwrap_or(&[]), &only_root) > TOL || got.is_none() {
            return Ok(Err(format!("{}: {got:?}, expected {only_root:?}", what(3))));
        }
        if grads[4].is_some() {
            return Ok(Err(format!("{}: no process had it, got one", what(4))));
        }
        if shared != Some(local(1)?) {
            return Ok(Err(format!("{}: a shared handle changed", what(1))));
        }
    }
    Ok(Ok(()))
}

fn bad_input(mpi: &Mpi) -> rime_layers::Result<Check> {
    let (rank, p) = (mpi.rank(), mpi.size());
    if p < 2 {
        return Ok(Ok(()));
    }
    let loss = || SparseCategoricalCrossentropy::new().with_from_logits(true);
    // 1. models that differ: rank 1's hidden layer is wider
    let width = if rank == 1 { 5 } else { 4 };
    let odd = Sequential::<f32>::new()
        .add(Dense::new(width))
        .add(Dense::new(3))
        .with_input_shape([8])?;
    let before = odd.get_weights();
    let mut step = TrainStep::new(&odd, Sgd::new(), loss()).with_collective(mpi.data_parallel());
    match step.broadcast_state() {
        Err(Error::Distributed { msg, .. }) if msg.contains("do not match") => {}
        other => {
            return Ok(Err(format!(
                "mismatched models: expected a typed error, got {other:?}"
            )));
        }
    }
    if odd.get_weights() != before {
        return Ok(Err(
            "mismatched models: a failed broadcast changed weights".into()
        ));
    }
    let x = Tensor::<f32>::ones([4, 8])?;
    let y = Tensor::<f32>::zeros([4])?;
    match step.run(&x, &y) {
        Err(Error::Distributed { .. }) => {}
        other => return Ok(Err(format!("mismatched models: a step gave {other:?}"))),
    }
    if odd.get_weights() != before {
        return Ok(Err(
            "mismatched models: a failed step changed weights".into()
        ));
    }
    // 2. a step that fails on rank 1 only (no targets): every rank fails, nothing moves
    let same = model(0.0)?;
    let mut step = TrainStep::new(&same, Sgd::new(), loss()).with_collective(mpi.data_parallel());
    step.broadcast_state()?;
    let before = same.get_weights();
    let targets: Vec<Tensor<f32>> = if rank == 1 { vec![] } else { vec![y.clone()] };
    let got = step.run_many(std::slice::from_ref(&x), &targets);
    let expected = if rank == 1 {
        matches!(got, Err(Error::InvalidArgument { .. }))
    } else {
        matches!(got, Err(Error::Distributed { .. }))
    };
    if !expected {
        return Ok(Err(format!(
            "a step failing on rank 1: rank {rank} got {got:?}"
        )));
    }
    if same.get_weights() != before {
        return Ok(Err("a failed step changed weights".into()));
    }
    // and the processes go on together afterwards
    step.run(&x, &y)?;
    let mut dp: DataParallel<'_, f32> = mpi.data_parallel();
    dp.verify_replicas(&same)?;
    // 3. evaluate failing on rank 1 only (inputs of the wrong width): every
    // rank fails (none waits forever), then they evaluate together again
    let mut trainer = Trainer::from_step(step).metric(SparseCategoricalAccuracy::new());
    let width = if rank == 1 { 9 } else { 8 };
    let bad = Dataset::from_tensors(Tensor::<f32>::ones([4, width])?, y.clone())?.batch(2)?;
    let got = trainer.evaluate(&bad);
    let expected = match &got {
        Err(Error::Distributed { .. }) => rank != 1,
        Err(_) => rank == 1,
        Ok(_) => false,
    };
    if !expected {
        return Ok(Err(format!(
            "evaluate failing on rank 1: rank {rank} got {got:?}"
        )));
    }
    let good = Dataset::from_tensors(x.clone(), y.clone())?.batch(2)?;
    trainer.evaluate(&good)?;
    // 4. a bucket size that cannot hold one element is refused
    if mpi.data_parallel::<f32>().bucket_bytes(2).is_ok() {
        return Ok(Err("bucket_bytes(2) was accepted for f32".into()));
    }
    Ok(Ok(()))
}

fn main() -> ExitCode {
    let mpi = match Mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("MPI init failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (rank, p) = (mpi.rank(), mpi.size());
    let checks: Vec<(&str, rime_layers::Result<Check>)> = vec![
        ("equivalence SGD", equivalence(&mpi, "SGD")),
        ("equivalence Adam", equivalence(&mpi, "Adam")),
        ("fit reports global values", fit_is_global(&mpi)),
        (
            "BatchNormalization moving statistics",
            batch_norm_moving_mean(&mpi),
        ),
        (
            "average_gradients: in place, packed, masked, missing",
            average_gradients_paths(&mpi),
        ),
        ("bad input across processes", bad_input(&mpi)),
    ];
    let mut failed = 0u32;
    for (name, result) in checks {
        let outcome = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(msg),
            Err(e) => Err(format!("error: {e}")),
        };
        match outcome {
            Ok(()) => {
                if rank == 0 {
                    println!("ok   {name} ({p} processes)");
                }
            }
            Err(msg) => {
                failed += 1;
                eprintln!("FAIL {name} on rank {rank}: {msg}");
            }
        }
    }
    let mut any = 0u32;
    mpi.world()
        .all_reduce_into(&failed, &mut any, SystemOperation::sum());
    if p == 1 && rank == 0 {
        println!("(one process: run under `mpirun -n 2` for the cross-process checks)");
    }
    if any == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
