//! Softmax and log-softmax along the last axis: the MLP's logits
//! ([128, 10]), wide rows ([n/1000, 1000]) up to 10⁷ elements, and a softmax
//! over a non-last axis (strided rows).
//!
//! `cargo bench -p rime-tensor --bench softmax`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rime_tensor::{Tensor, seeded_rng};

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax");
    g.sample_size(30).measurement_time(Duration::from_secs(1));
    let logits = randn(&[128, 10], 1);
    g.throughput(Throughput::Elements(1280));
    g.bench_function("128x10", |b| {
        b.iter(|| black_box(logits.softmax(-1).expect("valid axis")))
    });
    g.bench_function("log_softmax_128x10", |b| {
        b.iter(|| black_box(logits.log_softmax(-1).expect("valid axis")))
    });
    let labels: Vec<usize> = (0..128).map(|i| i % 10).collect();
    g.bench_function("sparse_xent_128x10", |b| {
        b.iter(|| {
            black_box(
                logits
                    .sparse_softmax_cross_entropy(&labels)
                    .expect("valid labels"),
            )
        })
    });
    for n in [10_000usize, 100_000, 1_000_000, 10_000_000] {
        let x = randn(&[n / 1000, 1000], 2);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("rows_of_1000", n), &n, |b, _| {
            b.iter(|| black_box(x.softmax(-1).expect("valid axis")))
        });
    }
    let x = randn(&[1000, 1000], 3);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("axis0_1000x1000", |b| {
        b.iter(|| black_box(x.softmax(0).expect("valid axis")))
    });
    g.finish();
}

criterion_group!(benches, softmax);
criterion_main!(benches);
