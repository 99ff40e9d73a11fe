//! Helpers shared by rime-tape's integration tests: proptest strategies for
//! shapes and values that keep away from points where an op is not
//! differentiable, and a `gradcheck` wrapper for property tests.

#![allow(dead_code)] // each test binary uses its own subset

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rime_tape::{GradcheckOptions, gradcheck};
use rime_tensor::Tensor;

/// Proptest settings: few cases (the suite runs in seconds) and no
/// regression files written into the repository.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

/// An f64 tensor from values and a shape.
pub fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_slice(data, shape).expect("data fits shape")
}

/// A tensor of `shape` with values uniform in `[lo, hi)`.
pub fn filled(shape: Vec<usize>, lo: f64, hi: f64) -> BoxedStrategy<Tensor<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..hi, n)
        .prop_map(move |v| t(&v, &shape))
        .boxed()
}

/// Values with `lo <= |x| < hi`, either sign (never near 0).
pub fn away_from_zero(shape: Vec<usize>, lo: f64, hi: f64) -> BoxedStrategy<Tensor<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec((lo..hi, any::<bool>()), n)
        .prop_map(move |v| {
            let v: Vec<f64> = v.into_iter().map(|(m, s)| if s { m } else { -m }).collect();
            t(&v, &shape)
        })
        .boxed()
}

/// Pairwise distinct values (at least 0.3 apart, in random order), so
/// max/min have no ties.
pub fn distinct(shape: Vec<usize>) -> BoxedStrategy<Tensor<f64>> {
    let n: usize = shape.iter().product();
    (
        Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        -1.0..1.0f64,
    )
        .prop_map(move |(perm, off)| {
            let v: Vec<f64> = perm.iter().map(|&i| i as f64 * 0.3 + off).collect();
            t(&v, &shape)
        })
        .boxed()
}

/// Values on the grid `k/4 + phase` for integer `k` in `[-8, 8)`: two
/// tensors with phases 0 and 1/8 never come closer than 1/8 (no ties for
/// maximum/minimum).
pub fn grid(shape: Vec<usize>, phase: f64) -> BoxedStrategy<Tensor<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(-8i32..8, n)
        .prop_map(move |k| {
            let v: Vec<f64> = k.iter().map(|&k| k as f64 * 0.25 + phase).collect();
            t(&v, &shape)
        })
        .boxed()
}

/// A shape of rank in `rank` with dims in `1..=max_dim`.
pub fn shape(rank: std::ops::RangeInclusive<usize>, max_dim: usize) -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(1..=max_dim, rank).boxed()
}

/// `out` and `k` operand shapes that broadcast to it: each operand drops
/// some leading axes and sets some of the others to 1 (rank 0 included).
pub fn broadcast_shapes(k: usize, max_rank: usize) -> BoxedStrategy<(Vec<usize>, Vec<Vec<usize>>)> {
    shape(0..=max_rank, 3)
        .prop_flat_map(move |out| {
            let r = out.len();
            let operand = (0..=r, prop::collection::vec(any::<bool>(), r));
            (Just(out), prop::collection::vec(operand, k))
        })
        .prop_map(|(out, ops)| {
            let shapes = ops
                .into_iter()
                .map(|(drop, ones)| {
                    (drop..out.len())
                        .map(|i| if ones[i] { 1 } else { out[i] })
                        .collect()
                })
                .collect();
            (out, shapes)
        })
        .boxed()
}

/// Axes to reduce over for a tensor of rank `rank`: a subset (empty means
/// "every axis"), written with negative numbers when `negative`.
pub fn axes(rank: usize) -> BoxedStrategy<Vec<isize>> {
    (prop::collection::vec(any::<bool>(), rank), any::<bool>())
        .prop_map(move |(pick, negative)| {
            (0..rank)
                .filter(|&i| pick[i])
                .map(|i| {
                    if negative {
                        i as isize - rank as isize
                    } else {
                        i as isize
                    }
                })
                .collect()
        })
        .boxed()
}

/// The tolerances used by the op property tests.
pub fn options() -> GradcheckOptions {
    GradcheckOptions::default()
}

/// Runs `gradcheck` and turns a mismatch into a proptest failure naming
/// `what`; also checks every input element was compared.
pub fn check<F>(what: &str, f: F, inputs: &[Tensor<f64>]) -> Result<(), TestCaseError>
where
    F: Fn(&[Tensor<f64>]) -> rime_tape::Result<Tensor<f64>>,
{
    check_with(what, f, inputs, &options())
}

/// [`check`] with explicit tolerances.
pub fn check_with<F>(
    what: &str,
    f: F,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), TestCaseError>
where
    F: Fn(&[Tensor<f64>]) -> rime_tape::Result<Tensor<f64>>,
{
    let shapes: Vec<_> = inputs.iter().map(|x| x.shape().clone()).collect();
    match gradcheck(f, inputs, options) {
        Ok(report) => {
            let n: usize = inputs.iter().map(|x| x.len()).sum();
            prop_assert_eq!(report.checked, n, "{}: every element checked", what);
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "{what} (inputs {shapes:?}): {e}"
        ))),
    }
}

/// Asserts two slices agree elementwise within `atol + rtol * |want|`.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (all: {got:?} vs {want:?})"
        );
    }
}
