//! Data-parallel `fit` over MPI on the 8×8 digits: every process trains a
//! replica of the model on its shard of the training data; gradients are
//! averaged across processes each step (rime-distributed), so the replicas
//! stay identical; the logs, `EarlyStopping` and the checkpoint are global.
//!
//! ```sh
//! cargo build --release --features distributed --example ddp_digits
//! mpirun -n 2 target/release/examples/ddp_digits           # full run
//! mpirun -n 2 target/release/examples/ddp_digits --quick   # fewer epochs (CI)
//! ```
//!
//! (as root, mpirun also needs `--allow-run-as-root`; with fewer cores than
//! processes, `--oversubscribe`.)
//!
//! Checks its claims and exits non-zero if one fails: test accuracy ≥ 95%
//! and no more than 2 points below one process trained alone on all the
//! data with the same global batch (rank 0 trains that reference after the
//! distributed run), the replicas bit-identical at the end, and the best
//! model file written by rank 0 alone.

use std::process::ExitCode;

use rime::distributed::Mpi;
use rime::layers::collective::Collective;
use rime::layers::data::read_csv;
use rime::layers::fit::Mode;
use rime::prelude::*;

const PER_PROCESS_BATCH: usize = 32;

fn main() -> rime::Result<ExitCode> {
    let mpi = Mpi::init()?;
    let (rank, size) = (mpi.rank(), mpi.size());
    let quick = std::env::args().any(|a| a == "--quick");
    let max_epochs = if quick { 40 } else { 100 };

    // the same data, split and test set on every process (fit_digits' recipe)
    let table = read_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"),
        false,
    )?;
    let data = Dataset::from_tensors(table.columns::<f32>(0..64)?, table.column::<f32>(64)?)?
        .permuted(0)
        .map(|mut b| {
            b.inputs[0] = b.inputs[0].to_float()?.mul_scalar(1.0 / 16.0).into();
            Ok(b)
        });
    let (train, test) = data.split(0.2)?;
    let test = test.batch(256)?;
    // this process's shard: every size-th sample from `rank`
    let shard = train
        .clone()
        .shard(rank, size)?
        .batch(PER_PROCESS_BATCH)?
        .shuffle(1);

    let build = || -> rime::Result<Sequential<f32>> {
        Ok(Sequential::new()
            .add(Dense::new(64).activation(Activation::Relu).named("hidden"))
            .add(Dense::new(10).named("logits"))
            .with_input_shape([64])?)
    };
    let loss = || SparseCategoricalCrossentropy::new().with_from_logits(true);
    let model = build()?;
    let step = TrainStep::new(&model, Adam::new().learning_rate(3e-3), loss())
        .with_collective(mpi.data_parallel::<f32>());
    let mut trainer = Trainer::from_step(step).metric(SparseCategoricalAccuracy::new());

    // one path for all processes; only rank 0 writes it
    let best_path = std::env::temp_dir().join("rime_ddp_digits_best.safetensors");
    if rank == 0 {
        std::fs::remove_file(&best_path).ok();
    }
    let mut early = EarlyStopping::new("val_loss")
        .patience(3)
        .restore_best_weights(true);
    let mut checkpoint = ModelCheckpoint::new(best_path.to_string_lossy())
        .monitor("val_loss")
        .mode(Mode::Min)
        .save_best_only(true);
    let start = std::time::Instant::now();
    let history = trainer.fit(
        &shard,
        FitOptions::new()
            .epochs(max_epochs)
            .validation_split(0.2)
            .verbose(Verbose::Line)
            .callback(&mut early)
            .callback(&mut checkpoint),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let test_acc = trainer
        .evaluate(&test)?
        .get("sparse_categorical_accuracy")
        .unwrap_or(0.0);
    let mut dp = mpi.data_parallel::<f32>();
    let replicas = dp.verify_replicas(&model);
    // each process counts whether it sees the file it was told not to write
    let mut wrote = [f64::from(u8::from(best_path.exists()))];
    dp.reduce_f64(&mut wrote, rime::layers::collective::ReduceOp::Sum)?;

    let mut ok = true;
    if let Err(e) = &replicas {
        eprintln!("FAILED on rank {rank}: {e}");
        ok = false;
    }
    if rank == 0 {
        println!(
            "{size} processes × batch {PER_PROCESS_BATCH}: {} epochs in {seconds:.2} s, test accuracy {:.2}%{}",
            history.epochs.len(),
            100.0 * test_acc,
            match early.stopped_epoch() {
                Some(e) => format!(" (early stop at epoch {}, best restored)", e + 1),
                None => String::new(),
            }
        );
        println!(
            "replicas bit-identical on all {size} processes: {}",
            replicas.is_ok()
        );
        // the best-model file: written once, by rank 0 (a shared temp dir
        // is seen by every process on one machine)
        if checkpoint.saved().is_empty() || !best_path.exists() {
            eprintln!("FAILED: rank 0 wrote no best-model file");
            ok = false;
        }
        std::fs::remove_file(&best_path).ok();

        // the reference: one process, all the training data, the same global batch
        let alone = build()?;
        let mut reference = Trainer::new(&alone, Adam::new().learning_rate(3e-3), loss())
            .metric(SparseCategoricalAccuracy::new());
        let mut early_alone = EarlyStopping::new("val_loss")
            .patience(3)
            .restore_best_weights(true);
        let whole = train.batch(PER_PROCESS_BATCH * size)?.shuffle(1);
        let start = std::time::Instant::now();
        let h = reference.fit(
            &whole,
            FitOptions::new()
                .epochs(max_epochs)
                .validation_split(0.2)
                .verbose(Verbose::Silent)
                .callback(&mut early_alone),
        )?;
        let alone_acc = reference
            .evaluate(&test)?
            .get("sparse_categorical_accuracy")
            .unwrap_or(0.0);
        println!(
            "1 process × batch {}: {} epochs in {:.2} s, test accuracy {:.2}%",
            PER_PROCESS_BATCH * size,
            h.epochs.len(),
            start.elapsed().as_secs_f64(),
            100.0 * alone_acc
        );
        if test_acc < 0.95 {
            eprintln!("FAILED: test accuracy {:.2}% < 95%", 100.0 * test_acc);
            ok = false;
        }
        if test_acc < alone_acc - 0.02 {
            eprintln!(
                "FAILED: test accuracy {:.2}% is more than 2 points below one process's {:.2}%",
                100.0 * test_acc,
                100.0 * alone_acc
            );
            ok = false;
        }
    }
    // every process exits with the same status
    let mut failures = [f64::from(u8::from(!ok))];
    dp.reduce_f64(&mut failures, rime::layers::collective::ReduceOp::Sum)?;
    Ok(if failures[0] == 0.0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
