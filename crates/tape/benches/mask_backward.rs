//! The mask-aware weight gradient: `y = x W` with a 1024×1024 kernel and a
//! batch of 256, the gradient of `W` only, for a kernel whose trainable part
//! is 100%, 50% or 10% of its rows. With a row mask the matmul rule
//! computes only the trainable rows of `xᵀ G`, so the time should shrink
//! with the trainable fraction (target: 10% of rows in at most 15% of the
//! unmasked time). An irregular mask of 10% (no row structure) is shown for
//! comparison: it computes the full product and zeros the frozen elements.
//!
//! `cargo bench -p rime-tape --bench mask_backward`
//!
//! The forward product is recorded once on a persistent tape; each
//! iteration times one `gradient` call (the backward pass alone).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rime_tape::{GradientOptions, GradientTape, TrainableMask, UnconnectedGradients, Variable};
use rime_tensor::{Tensor, seeded_rng};

const N: usize = 1024;
const BATCH: usize = 256;

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn weight_gradient(c: &mut Criterion) {
    let x = randn(&[BATCH, N], 1);
    let seed = [randn(&[BATCH, N], 2)];
    let cases: Vec<(&str, Option<TrainableMask>)> = vec![
        ("unmasked", None),
        ("rows_100pct", Some(TrainableMask::rows(0..N))),
        ("rows_50pct", Some(TrainableMask::rows(0..N / 2))),
        ("rows_10pct", Some(TrainableMask::rows(0..N / 10))),
        (
            "irregular_10pct",
            Some(TrainableMask::predicate(|ix| {
                (ix[0] * 7 + ix[1] * 13) % 10 == 0
            })),
        ),
    ];
    let mut g = c.benchmark_group("mask_backward_1024x1024_batch256");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, mask) in cases {
        let w = Variable::new("kernel", randn(&[N, N], 3));
        w.set_mask(mask).expect("masks fit the kernel");
        let tape = GradientTape::persistent();
        let y = x.matmul(&w.value()).expect("shapes");
        tape.stop();
        let opts = || GradientOptions {
            output_gradients: Some(&seed[..]),
            unconnected: UnconnectedGradients::None,
        };
        g.bench_function(BenchmarkId::new("weight_grad", name), |b| {
            b.iter(|| black_box(tape.gradient_with(&[&y], &[&w], opts()).expect("recorded")))
        });
    }
    g.finish();
}

criterion_group!(benches, weight_gradient);
criterion_main!(benches);
