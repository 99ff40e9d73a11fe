//! Sub-models of a functional model: take an inner layer's output as the
//! output of a feature extractor, and cut the model in the middle to feed it
//! from there. Both share the original's weights (no copies).
//!
//! The graph: inputs → h1 → h2 → h3 → h4 → outputs, with residual additions.
//!
//! ```sh
//! cargo run --release --example submodel
//! ```

use std::process::ExitCode;

use rime::prelude::*;

fn main() -> rime::Result<ExitCode> {
    let inputs = Input::<f32>::named("inputs", [6]);
    let h1 = inputs.apply(Dense::new(8).activation(Activation::Relu).named("h1"))?;
    let h2 = h1.apply(Dense::new(8).activation(Activation::Relu).named("h2"))?;
    let r2 = call_symbolic(Add::new(), &[&h1, &h2])?.remove(0);
    let h3 = r2.apply(Dense::new(8).activation(Activation::Relu).named("h3"))?;
    let h4 = h3.apply(Dense::new(8).activation(Activation::Relu).named("h4"))?;
    let r4 = call_symbolic(Add::new(), &[&h3, &h4])?.remove(0);
    let outputs = r4.apply(Dense::new(2).named("outputs"))?;
    let model = Model::named(Some("full".into()), &[&inputs], &[&outputs])?;
    println!("{}", rime::layers::models::summary(&model));

    // feature extraction: the output of h2 (and of the residual sum) as outputs
    let features = Model::named(
        Some("features".into()),
        &[&inputs],
        &[&model.layer_output("h2")?, &r2],
    )?;
    // the second half, fed from the residual sum r2
    let tail = Model::named(Some("tail".into()), &[&r2], &[&outputs])?;

    let x = Tensor::<f32>::rand_normal([4, 6], 0.0, 1.0, &mut seeded_rng(3))?;
    let full = model.call(&x, false)?;
    let feats = features.call_many(std::slice::from_ref(&x), false)?;
    let through_parts = tail.call(&feats[1], false)?;
    let same = full.to_vec() == through_parts.to_vec();
    println!("tail(features(x)) == model(x): {same}");

    let shared = |sub: &Model<f32>| {
        sub.weights()
            .iter()
            .all(|w| model.weights().iter().any(|m| m.id() == w.id()))
    };
    println!(
        "features: {} variables, all the model's own: {}",
        features.weights().len(),
        shared(&features)
    );
    println!(
        "tail:     {} variables, all the model's own: {}",
        tail.weights().len(),
        shared(&tail)
    );

    // train the full model one step: the sub-models see the new weights
    let y = Tensor::<f32>::zeros([4, 2])?;
    let mut step = TrainStep::new(
        &model,
        Sgd::new().learning_rate(0.1),
        MeanSquaredError::new(),
    );
    let before = tail.call(&feats[1], false)?.to_vec();
    step.run(&x, &y)?;
    let after_tail = tail.call(
        &features.call_many(std::slice::from_ref(&x), false)?[1],
        false,
    )?;
    let follows =
        after_tail.to_vec() == model.call(&x, false)?.to_vec() && after_tail.to_vec() != before;
    println!("after a step on the full model, the parts still compose to it: {follows}");

    if !(same && shared(&features) && shared(&tail) && follows && tail.weights().len() == 3 * 2) {
        eprintln!("FAILED");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
