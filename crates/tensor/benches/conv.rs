//! conv2d forward, input gradient and kernel gradient at the shapes of the
//! bench `cnn` workload (the Keras MNIST convnet) at batch 64 and 1, and its
//! 2×2 max pooling (throughput in bytes of input).
//!
//! `cargo bench -p rime-tensor --bench conv`; the throughput column reads as
//! FLOP/s (2 per multiply-add).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rime_tensor::{
    Conv2dGeometry, Conv2dOptions, Pool2dGeometry, Pool2dOptions, Tensor, seeded_rng,
};

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn conv2d(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    // (name, input, kernel): conv1 28x28x1 -> 32, conv2 13x13x32 -> 64
    for batch in [64usize, 1] {
        for (name, input, kernel) in [
            ("conv1", [batch, 28, 28, 1], [3, 3, 1, 32]),
            ("conv2", [batch, 13, 13, 32], [3, 3, 32, 64]),
        ] {
            let (x, k) = (randn(&input, 1), randn(&kernel, 2));
            let geom =
                Conv2dGeometry::new("bench", x.shape(), k.shape(), &Conv2dOptions::default())
                    .expect("valid geometry");
            let dy = randn(geom.output_shape().dims(), 3);
            let flops = 2 * geom.positions() * kernel.iter().product::<usize>();
            g.throughput(Throughput::Elements(flops as u64));
            let id = |what: &str| BenchmarkId::new(format!("{name}_{what}"), batch);
            g.bench_function(id("forward"), |b| {
                b.iter(|| black_box(x.conv2d_with(&k, &geom).expect("shapes")))
            });
            g.bench_function(id("backprop_input"), |b| {
                b.iter(|| black_box(dy.conv2d_backprop_input(&k, &geom).expect("shapes")))
            });
            g.bench_function(id("backprop_filter"), |b| {
                b.iter(|| black_box(x.conv2d_backprop_filter(&dy, &geom).expect("shapes")))
            });
        }
    }
    g.finish();
}

/// Max pooling 2×2 forward and input gradient after the two convolutions.
fn max_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("max_pool2d");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    for (name, input) in [("pool1", [64, 26, 26, 32]), ("pool2", [64, 11, 11, 64])] {
        let x = randn(&input, 4);
        let geom = Pool2dGeometry::new("bench", x.shape(), &Pool2dOptions::new([2, 2]))
            .expect("valid geometry");
        let dy = randn(geom.output_shape().dims(), 5);
        g.throughput(Throughput::Bytes((x.len() * 4) as u64));
        g.bench_function(BenchmarkId::new(format!("{name}_forward"), 64), |b| {
            b.iter(|| black_box(x.max_pool2d(&Pool2dOptions::new([2, 2])).expect("shapes")))
        });
        g.bench_function(BenchmarkId::new(format!("{name}_grad"), 64), |b| {
            b.iter(|| black_box(x.max_pool2d_grad(&dy, &geom).expect("shapes")))
        });
        // as the gradient rule runs it: the window maxima read from the output
        let pooled = x.max_pool2d_with(&geom).expect("shapes");
        g.bench_function(BenchmarkId::new(format!("{name}_grad_pooled"), 64), |b| {
            b.iter(|| {
                black_box(
                    x.max_pool2d_grad_pooled(&pooled, &dy, &geom)
                        .expect("shapes"),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, conv2d, max_pool);
criterion_main!(benches);
