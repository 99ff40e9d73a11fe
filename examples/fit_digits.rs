//! `fit` on the 8×8 digits: validation split, EarlyStopping and
//! ModelCheckpoint; then the best model file is loaded into a fresh model
//! (no model-building code) and gives the same test accuracy.
//!
//! ```sh
//! cargo run --release --example fit_digits            # full run
//! cargo run --release --example fit_digits -- --quick # fewer epochs (CI)
//! ```
//!
//! Checks its claims and exits non-zero if one fails: test accuracy ≥ 95%,
//! and the reloaded model's predictions are bit-identical to the trained
//! model's.

use std::process::ExitCode;

use rime::layers::data::read_csv;
use rime::layers::fit::Mode;
use rime::prelude::*;

fn main() -> rime::Result<ExitCode> {
    let quick = std::env::args().any(|a| a == "--quick");
    let max_epochs = if quick { 40 } else { 100 };

    // data: pixels scaled by a map, a fixed random test fifth held out
    let table = read_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz"),
        false,
    )?;
    let data = Dataset::from_tensors(table.columns::<f32>(0..64)?, table.int_column(64)?)?
        .permuted(0)
        .map(|mut b| {
            b.inputs[0] = b.inputs[0].to_float()?.mul_scalar(1.0 / 16.0).into();
            Ok(b)
        })
        .batch(32)?
        .shuffle(1)
        .prefetch(2);
    let (train, test) = data.split(0.2)?;

    let model = Sequential::new()
        .add(Dense::new(64).activation(Activation::Relu).named("hidden"))
        .add(Dense::new(10).named("logits"))
        .with_input_shape([64])?;
    let mut trainer = Trainer::new(
        &model,
        Adam::new().learning_rate(3e-3),
        SparseCategoricalCrossentropy::new().with_from_logits(true),
    )
    .metric(SparseCategoricalAccuracy::new());

    let best_path = std::env::temp_dir().join(format!(
        "rime_fit_digits_{}.safetensors",
        std::process::id()
    ));
    let mut early = EarlyStopping::new("val_loss")
        .patience(3)
        .restore_best_weights(true);
    let mut checkpoint = ModelCheckpoint::new(best_path.to_string_lossy())
        .monitor("val_loss")
        .mode(Mode::Min)
        .save_best_only(true);
    let history = trainer.fit(
        &train,
        FitOptions::new()
            .epochs(max_epochs)
            .validation_split(0.2)
            .callback(&mut early)
            .callback(&mut checkpoint),
    )?;
    let epochs_run = history.epochs.len();
    match early.stopped_epoch() {
        Some(e) => println!(
            "early stopping at epoch {} (best val_loss {:.4} at epoch {}), best weights restored",
            e + 1,
            early.best().1,
            early.best().0 + 1
        ),
        None => println!("ran all {epochs_run} epochs"),
    }

    let test_logs = trainer.evaluate(&test)?;
    let test_acc = test_logs.get("sparse_categorical_accuracy").unwrap_or(0.0);
    println!("test: {}", test_logs.summary());

    // a fresh model from the checkpoint file alone
    let loaded = load_model::<f32>(&best_path)?;
    let loaded_logs = Trainer::new(
        &*loaded,
        Adam::new(),
        SparseCategoricalCrossentropy::new().with_from_logits(true),
    )
    .metric(SparseCategoricalAccuracy::new())
    .evaluate(&test)?;
    let loaded_acc = loaded_logs
        .get("sparse_categorical_accuracy")
        .unwrap_or(0.0);
    println!(
        "reloaded `{}` ({} weights): test accuracy {:.2}%",
        best_path.display(),
        loaded.weights().len(),
        100.0 * loaded_acc
    );
    let same =
        rime::layers::fit::predict(&*loaded, &test)? == rime::layers::fit::predict(&model, &test)?;
    std::fs::remove_file(&best_path).ok();

    let mut ok = true;
    if test_acc < 0.95 {
        eprintln!("FAILED: test accuracy {:.2}% < 95%", 100.0 * test_acc);
        ok = false;
    }
    if early.stopped_epoch().is_some() && !same {
        eprintln!("FAILED: the reloaded best model predicts differently from the restored one");
        ok = false;
    }
    if early.stopped_epoch().is_none() && loaded_acc < 0.95 {
        eprintln!(
            "FAILED: the reloaded best model's accuracy {:.2}% < 95%",
            100.0 * loaded_acc
        );
        ok = false;
    }
    if same {
        println!("reloaded model's predictions bit-identical to the trained model's: yes");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
