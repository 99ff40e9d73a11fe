//! Elementwise ops and reductions from 10³ to 10⁷ elements.
//!
//! `cargo bench -p rime-tensor --bench elementwise`; throughput is in
//! elements per second. Below the parallel threshold the ops run on the
//! calling thread; compare `RAYON_NUM_THREADS=1` and `=2` to see the split.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rime_tensor::{Tensor, seeded_rng};

const SIZES: [usize; 5] = [1_000, 10_000, 100_000, 1_000_000, 10_000_000];

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn config(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    g.throughput(Throughput::Elements(n as u64));
    if n >= 1_000_000 {
        g.sample_size(20).measurement_time(Duration::from_secs(2));
    } else {
        g.sample_size(50).measurement_time(Duration::from_secs(1));
    }
}

fn binary(c: &mut Criterion) {
    let mut g = c.benchmark_group("add");
    for n in SIZES {
        let (a, b) = (randn(&[n], 1), randn(&[n], 2));
        config(&mut g, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.add(&b).expect("same shape")))
        });
    }
    g.finish();
    // a bias row broadcast over a batch: [n/1000, 1000] + [1000]
    let mut g = c.benchmark_group("add_bias_row");
    for n in SIZES {
        let (a, b) = (randn(&[n / 1000, 1000], 1), randn(&[1000], 2));
        config(&mut g, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.add(&b).expect("broadcast")))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("mul_scalar");
    for n in SIZES {
        let a = randn(&[n], 1);
        config(&mut g, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.mul_scalar(1.5)))
        });
    }
    g.finish();
}

fn unary(c: &mut Criterion) {
    for (name, f) in [
        ("relu", Tensor::relu as fn(&Tensor<f32>) -> Tensor<f32>),
        ("exp", Tensor::exp),
        ("tanh", Tensor::tanh),
        ("sigmoid", Tensor::sigmoid),
    ] {
        let mut g = c.benchmark_group(name);
        for n in SIZES {
            let a = randn(&[n], 3);
            config(&mut g, n);
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
                bch.iter(|| black_box(f(&a)))
            });
        }
        g.finish();
    }
}

fn reductions(c: &mut Criterion) {
    let mut g = c.benchmark_group("sum_all");
    for n in SIZES {
        let a = randn(&[n], 4);
        config(&mut g, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.sum_all()))
        });
    }
    g.finish();
    // rows ([n/1000, 1000] over axis 1) and columns (over axis 0: a bias gradient)
    for (name, axis) in [("sum_rows", 1isize), ("sum_cols", 0)] {
        let mut g = c.benchmark_group(name);
        for n in SIZES {
            let a = randn(&[n / 1000, 1000], 5);
            config(&mut g, n);
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
                bch.iter(|| black_box(a.sum(&[axis], false).expect("valid axis")))
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("max_rows");
    for n in SIZES {
        let a = randn(&[n / 1000, 1000], 6);
        config(&mut g, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.max(&[1], false).expect("valid axis")))
        });
    }
    g.finish();
}

criterion_group!(benches, binary, unary, reductions);
criterion_main!(benches);
