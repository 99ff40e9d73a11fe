//! Recording overhead on small ops: a chain of 1000 recorded adds of two
//! 16-element tensors, forward and backward. Criterion's throughput column
//! counts ops, so the time per op is 1 / (elements per second); the target
//! is at most 0.2 µs per op. `examples/bench_tape.rs` (root package) prints
//! the same figure as `rime chain1000 fwd+bwd <x> us/op`.
//!
//! `cargo bench -p rime-tape --bench tape_overhead`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rime_tape::GradientTape;
use rime_tensor::Tensor;

const OPS: usize = 1000;

fn chain(v: &Tensor<f32>, c: &Tensor<f32>) -> Tensor<f32> {
    let tape = GradientTape::new();
    tape.watch(v);
    let mut z = v.clone();
    for _ in 0..OPS {
        z = z.add(c).expect("same shapes");
    }
    let s = z.sum_all();
    tape.gradient(&s, &[v])
        .expect("recorded")
        .remove(0)
        .expect("connected")
}

/// The same chain with no tape: the cost of the ops themselves plus one
/// thread-local check each.
fn chain_untaped(v: &Tensor<f32>, c: &Tensor<f32>) -> Tensor<f32> {
    let mut z = v.clone();
    for _ in 0..OPS {
        z = z.add(c).expect("same shapes");
    }
    z
}

fn overhead(c: &mut Criterion) {
    let v = Tensor::<f32>::ones([16]).unwrap();
    let k = Tensor::<f32>::ones([16]).unwrap();
    assert_eq!(chain(&v, &k).to_vec(), vec![1.0; 16]);
    let mut g = c.benchmark_group("tape_overhead");
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(OPS as u64));
    g.bench_function("chain1000_fwd_bwd", |b| b.iter(|| black_box(chain(&v, &k))));
    g.bench_function("chain1000_no_tape", |b| {
        b.iter(|| black_box(chain_untaped(&v, &k)))
    });
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
