//! Matrix products: square sizes 64..2048 and the MLP's shapes.
//!
//! `cargo bench -p rime-tensor --bench matmul`; the throughput column reads
//! as FLOP/s (one "element" is one floating-point operation, 2mnk per
//! product). Set `RAYON_NUM_THREADS` to pin the thread count.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rime_tensor::{Tensor, seeded_rng};

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn square(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm_square");
    for n in [64usize, 128, 256, 512, 1024, 2048] {
        let (a, b) = (randn(&[n, n], 1), randn(&[n, n], 2));
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        if n >= 1024 {
            g.sample_size(10).measurement_time(Duration::from_secs(4));
        } else {
            g.sample_size(30).measurement_time(Duration::from_secs(2));
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.matmul(&b).expect("square shapes")))
        });
    }
    g.finish();
}

fn mlp_shapes(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm_mlp");
    g.sample_size(50).measurement_time(Duration::from_secs(2));
    // forward: x[128, 784] · W[784, 256]
    let (x, w) = (randn(&[128, 784], 3), randn(&[784, 256], 4));
    g.throughput(Throughput::Elements(2 * 128 * 784 * 256));
    g.bench_function("128x784_784x256", |b| {
        b.iter(|| black_box(x.matmul(&w).expect("mlp shapes")))
    });
    // weight gradient: x[128, 784]ᵀ · dy[128, 256], the transpose read as strides
    let dy = randn(&[128, 256], 5);
    g.bench_function("t(128x784)_128x256", |b| {
        b.iter(|| black_box(x.matmul_t(&dy, true, false).expect("mlp shapes")))
    });
    // input gradient: dy[128, 256] · W[784, 256]ᵀ
    g.bench_function("128x256_t(784x256)", |b| {
        b.iter(|| black_box(dy.matmul_t(&w, false, true).expect("mlp shapes")))
    });
    // the hidden and output layers, and batch 1
    let (h, w2, w3) = (
        randn(&[128, 256], 6),
        randn(&[256, 256], 7),
        randn(&[256, 10], 8),
    );
    g.throughput(Throughput::Elements(2 * 128 * 256 * 256));
    g.bench_function("128x256_256x256", |b| {
        b.iter(|| black_box(h.matmul(&w2).expect("mlp shapes")))
    });
    g.throughput(Throughput::Elements(2 * 128 * 256 * 10));
    g.bench_function("128x256_256x10", |b| {
        b.iter(|| black_box(h.matmul(&w3).expect("mlp shapes")))
    });
    // batch 1: forward, input gradient, weight gradient (an outer product)
    let (x1, dy1) = (randn(&[1, 784], 9), randn(&[1, 256], 10));
    g.throughput(Throughput::Elements(2 * 784 * 256));
    g.bench_function("1x784_784x256", |b| {
        b.iter(|| black_box(x1.matmul(&w).expect("mlp shapes")))
    });
    g.bench_function("1x256_t(784x256)", |b| {
        b.iter(|| black_box(dy1.matmul_t(&w, false, true).expect("mlp shapes")))
    });
    g.bench_function("t(1x784)_1x256", |b| {
        b.iter(|| black_box(x1.matmul_t(&dy1, true, false).expect("mlp shapes")))
    });
    g.finish();
}

fn batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm_batched");
    g.sample_size(30).measurement_time(Duration::from_secs(2));
    // 32 products of 64×64, and one weight broadcast over the batch
    let (a, b) = (randn(&[32, 64, 64], 10), randn(&[32, 64, 64], 11));
    let w = randn(&[64, 64], 12);
    g.throughput(Throughput::Elements(2 * 32 * 64 * 64 * 64));
    g.bench_function("32x64x64x64", |bch| {
        bch.iter(|| black_box(a.matmul(&b).expect("batched shapes")))
    });
    g.bench_function("32x64x64_broadcast_64x64", |bch| {
        bch.iter(|| black_box(a.matmul(&w).expect("batched shapes")))
    });
    g.finish();
}

criterion_group!(benches, square, mlp_shapes, batched);
criterion_main!(benches);
