//! End-to-end training steps through the facade, the workload of
//! `examples/bench_mlp` (MLP 784-256-256-10, ReLU, sparse softmax cross
//! entropy from logits, plain SGD): one custom-loop step at batch 128 and
//! batch 1, and the same step with the first kernel's rows 10% trainable.
//!
//! `cargo bench --bench train_step`

use criterion::{Criterion, criterion_group, criterion_main};
use rand::RngExt;
use rime::prelude::*;

struct Mlp {
    model: Sequential<f32>,
    x: Tensor<f32>,
    y: Tensor<f32>,
}

fn mlp(batch: usize) -> Mlp {
    let mut rng = seeded_rng(0);
    let x = Tensor::<f32>::rand_normal([batch, 784], 0.0, 1.0, &mut rng).unwrap();
    let y = Tensor::vector(
        (0..batch)
            .map(|_| rng.random_range(0..10u32) as f32)
            .collect(),
    );
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
        .with_input_shape([784])
        .unwrap();
    Mlp { model, x, y }
}

fn step(m: &Mlp, opt: &mut Sgd, vars: &[Variable<f32>]) -> f32 {
    let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
    let tape = GradientTape::new();
    let loss = loss_fn
        .call(&m.y, &m.model.call(&m.x, true).unwrap())
        .unwrap();
    let grads = tape.gradient(&loss, vars).unwrap();
    opt.apply_gradients(&grads, vars).unwrap();
    loss.to_scalar().unwrap()
}

fn train_step(c: &mut Criterion) {
    for batch in [128, 1] {
        let m = mlp(batch);
        let vars = m.model.trainable_weights();
        let mut opt = Sgd::new().learning_rate(0.01);
        c.bench_function(&format!("mlp step batch={batch}"), |b| {
            b.iter(|| step(&m, &mut opt, &vars))
        });
    }
    // W1 frozen but for 10% of its rows: the first kernel's gradient costs
    // a tenth of the full one
    let m = mlp(128);
    let kernel = m.model.layers()[0].weights()[0].clone();
    kernel
        .set_mask(Some(TrainableMask::rows(0..78)))
        .expect("mask fits [784, 256]");
    let vars = m.model.trainable_weights();
    let mut opt = Sgd::new().learning_rate(0.01);
    c.bench_function("mlp step batch=128 first kernel 10% trainable", |b| {
        b.iter(|| step(&m, &mut opt, &vars))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = train_step
}
criterion_main!(benches);
