//! End-to-end training steps through the facade, the workload of
//! `examples/bench_mlp` (MLP 784-256-256-10, ReLU, sparse softmax cross
//! entropy from logits, plain SGD): one custom-loop step at batch 128 and
//! batch 1, and the same step with the first kernel's rows 10% trainable;
//! and the optimizers' update loops alone (`update/...`), with their
//! throughput in bytes moved (SGD reads w and g and writes w: 12 bytes per
//! f32 element; momentum 20; Adam 28) next to a copy of the same size
//! (`update/copy`, 8 bytes per element), to see whether they run at
//! memory bandwidth.
//!
//! `cargo bench --bench train_step`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

/// The update loops alone on a 1 MB (L3-resident, the bench MLP's kernels)
/// and a 64 MB (DRAM) f32 variable.
fn update_loops(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    for n in [1usize << 18, 1 << 24] {
        let mb = (n * 4) >> 20;
        let g = Tensor::<f32>::full([n], 1e-3).unwrap();
        let grads = [Some(g.clone())];
        let optimizers: [(&str, u64, Box<dyn Optimizer<f32>>); 3] = [
            ("sgd", 12, Box::new(Sgd::new().learning_rate(1e-3))),
            ("sgd momentum", 20, Box::new(Sgd::new().momentum(0.9))),
            ("adam", 28, Box::new(Adam::new())),
        ];
        for (name, bytes, mut opt) in optimizers {
            let w = [Variable::new("w", Tensor::<f32>::zeros([n]).unwrap())];
            group.throughput(Throughput::Bytes(bytes * n as u64));
            group.bench_function(format!("{name} {mb} MB"), |b| {
                b.iter(|| opt.apply_gradients(&grads, &w).unwrap())
            });
        }
        let mut dst = vec![0.0f32; n];
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_function(format!("copy {mb} MB"), |b| {
            b.iter(|| dst.copy_from_slice(g.as_slice()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = train_step, update_loops
}
criterion_main!(benches);
