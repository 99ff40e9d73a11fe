//! An output projection tied to an Embedding's matrix (one variable, used
//! twice: lookup at the input, transposed matmul at the output). The
//! gradients of both uses add up in the one variable, which appears once in
//! `weights()`. The toy task: predict the next token of a cyclic sequence.
//!
//! ```sh
//! cargo run --release --example tied_embeddings
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use rime::prelude::*;

const VOCAB: usize = 12;
const V: i64 = VOCAB as i64;

fn main() -> rime::Result<ExitCode> {
    let embedding = Arc::new(Embedding::<f32>::new(VOCAB, 16));
    let model = Sequential::new()
        .add(embedding.clone())
        .add(Dense::new(16).activation(Activation::Tanh))
        .add(EmbeddingTranspose::new(embedding.clone()));
    // next token of the cycle 0, 1, ..., VOCAB-1, 0, ...
    // token ids and next-token labels are integers, and stay integers: the
    // Embedding reads the ids as they are
    let ids = Tensor::vector((0..V).collect());
    let tokens = ModelData::from(&ids);
    let targets = Tensor::vector((0..V).map(|t| (t + 1) % V).collect());
    model.call_data(&tokens, false)?;

    let matrix = embedding.embeddings().expect("built").clone();
    let uses = model
        .weights()
        .iter()
        .filter(|v| v.id() == matrix.id())
        .count();
    println!(
        "variables: {} ({}), the embedding matrix listed {uses} time(s)",
        model.weights().len(),
        model
            .weights()
            .iter()
            .map(|v| format!("{} {}", v.name(), v.shape()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // both uses contribute: a batch of even tokens still gives odd tokens' rows
    // a gradient, through the output projection
    let even_ids = Tensor::vector((0..V).step_by(2).collect());
    let evens = ModelData::from(&even_ids);
    let even_targets = targets.index_select(0, &even_ids)?;
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let tape = GradientTape::new();
    let loss = loss_fn.call_int(&even_targets, &model.call_data(&evens, true)?)?;
    let g = tape.gradient_of(&loss, &matrix)?;
    let row_norm = |r: usize| {
        g.to_vec()[r * 16..(r + 1) * 16]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
    };
    println!(
        "gradient row norms from a batch of even tokens: row 0 {:.4}, row 1 {:.4} (output use only)",
        row_norm(0),
        row_norm(1)
    );

    let mut opt = Adam::new().learning_rate(0.05);
    let mut last = 0.0;
    for epoch in 0..200 {
        let tape = GradientTape::new();
        let loss = loss_fn.call_int(&targets, &model.call_data(&tokens, true)?)?;
        let vars = model.trainable_weights();
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;
        last = loss.to_scalar()?;
        if epoch % 50 == 0 {
            println!("epoch {epoch:>3}: loss {last:.4}");
        }
    }
    let mut acc = SparseCategoricalAccuracy::new();
    acc.update_state_int(&targets, &model.call_data(&tokens, false)?)?;
    println!(
        "final loss {last:.4}, next-token accuracy {:.0}%",
        100.0 * acc.result()
    );
    if uses != 1 || row_norm(1) == 0.0 || acc.result() < 1.0 {
        eprintln!(
            "FAILED: expected one listed variable, gradient from both uses, and a learned cycle"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
