//! Reductions over axes (with and without keep_dims), arg-reductions,
//! sum_to, and the softmax family, against naive loops.

use rime_tensor::{Element, Tensor};

use crate::{assert_close, both, f64s, iota, naive_reduce, t, tol, unravel};

pub fn sum(g: &[f64]) -> f64 {
    g.iter().sum()
}
pub fn mean(g: &[f64]) -> f64 {
    g.iter().sum::<f64>() / g.len() as f64
}
pub fn max(g: &[f64]) -> f64 {
    g.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
pub fn min(g: &[f64]) -> f64 {
    g.iter().copied().fold(f64::INFINITY, f64::min)
}
pub fn var(g: &[f64]) -> f64 {
    let m = mean(g);
    g.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / g.len() as f64
}
pub fn logsumexp(g: &[f64]) -> f64 {
    let m = max(g);
    m + g.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

type RedFn<T> = fn(&Tensor<T>, &[isize], bool) -> rime_tensor::Result<Tensor<T>>;
type RedCase<T> = (&'static str, RedFn<T>, fn(&[f64]) -> f64);

pub fn reductions<T: Element>() -> Vec<RedCase<T>> {
    vec![
        ("sum", Tensor::sum, sum),
        ("mean", Tensor::mean, mean),
        ("max", Tensor::max, max),
        ("min", Tensor::min, min),
        ("var", Tensor::var, var),
        ("logsumexp", Tensor::logsumexp, logsumexp),
    ]
}

fn every_axis_set<T: Element>() {
    let shape = [3, 4, 2, 5];
    let x: Tensor<T> = iota(&shape, 7);
    let xv = f64s(&x);
    for mask in 0u32..16 {
        let axes: Vec<usize> = (0..4).filter(|b| mask & (1 << b) != 0).collect();
        // negative spellings of the same axes
        let neg: Vec<isize> = axes.iter().map(|&a| a as isize - 4).collect();
        for keep in [false, true] {
            for (name, op, f) in reductions::<T>() {
                let (s, want) = if axes.is_empty() {
                    // an empty list reduces every axis
                    naive_reduce(&xv, &shape, &[0, 1, 2, 3], keep, f)
                } else {
                    naive_reduce(&xv, &shape, &axes, keep, f)
                };
                let got = op(&x, &neg, keep).unwrap();
                assert_close(&got, &s, &want, 8.0 * tol::<T>());
                let pos: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                assert_eq!(op(&x, &pos, keep).unwrap(), got, "{name} {axes:?}");
            }
        }
    }
}
both!(reductions_over_every_axis_set, every_axis_set);

fn hand_values<T: Element>() {
    let x: Tensor<T> = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_close(&x.sum(&[0], false).unwrap(), &[3], &[5., 7., 9.], 0.0);
    assert_close(&x.sum(&[1], true).unwrap(), &[2, 1], &[6., 15.], 0.0);
    assert_close(&x.sum(&[], false).unwrap(), &[], &[21.], 0.0);
    assert_close(&x.sum(&[], true).unwrap(), &[1, 1], &[21.], 0.0);
    assert_close(&x.sum_all(), &[], &[21.], 0.0);
    assert_close(&x.mean_all(), &[], &[3.5], 0.0);
    assert_close(&x.mean(&[0], false).unwrap(), &[3], &[2.5, 3.5, 4.5], 0.0);
    assert_close(&x.max(&[1], false).unwrap(), &[2], &[3., 6.], 0.0);
    assert_close(&x.min(&[0, 1], false).unwrap(), &[], &[1.], 0.0);
    assert_close(
        &x.var(&[1], false).unwrap(),
        &[2],
        &[2. / 3., 2. / 3.],
        tol::<T>(),
    );
    assert_close(&x.var(&[0], true).unwrap(), &[1, 3], &[2.25; 3], tol::<T>());
    let lse = (1f64.exp() + 4f64.exp()).ln();
    assert_close(
        &x.logsumexp(&[0], false).unwrap().narrow(0, 0, 1).unwrap(),
        &[1],
        &[lse],
        tol::<T>(),
    );
    // rank 0: reducing every (no) axis gives the value back
    let s = Tensor::scalar(T::of(-4.0));
    for (name, op, _) in reductions::<T>() {
        let r = op(&s, &[], false).unwrap();
        let want = if name == "var" { 0.0 } else { -4.0 };
        assert_close(&r, &[], &[want], tol::<T>());
        assert_eq!(op(&s, &[], true).unwrap().rank(), 0);
    }
    // size-1 axes
    let c: Tensor<T> = t(&[1., 2.], &[2, 1]);
    assert_close(&c.sum(&[1], false).unwrap(), &[2], &[1., 2.], 0.0);
    assert_close(&c.max(&[0], true).unwrap(), &[1, 1], &[2.], 0.0);
    // empty reductions: sum 0, mean NaN, logsumexp -inf
    let e = Tensor::<T>::zeros([2, 0]).unwrap();
    assert_close(&e.sum(&[1], false).unwrap(), &[2], &[0., 0.], 0.0);
    assert!(
        f64s(&e.mean(&[1], false).unwrap())
            .iter()
            .all(|v| v.is_nan())
    );
    assert_eq!(
        f64s(&e.logsumexp(&[1], false).unwrap()),
        vec![f64::NEG_INFINITY; 2]
    );
    assert_eq!(e.sum(&[0], false).unwrap().dims(), &[0]);
}
both!(reduction_hand_values, hand_values);

fn special_values<T: Element>() {
    let x: Tensor<T> = t(&[1., f64::NAN, 3., -1., 0., 2.], &[2, 3]);
    let m = f64s(&x.max(&[1], false).unwrap());
    assert!(m[0].is_nan() && m[1] == 2.0);
    let m = f64s(&x.min(&[0], false).unwrap());
    assert!(m[0] == -1.0 && m[1].is_nan() && m[2] == 2.0);
    assert!(f64s(&x.sum_all())[0].is_nan());
    // logsumexp is stable and keeps infinities
    let big: Tensor<T> = t(&[1000., 1000., -1000.], &[3]);
    let l = f64s(&big.logsumexp(&[0], false).unwrap())[0];
    assert!((l - (1000.0 + 2f64.ln())).abs() < 1e-3, "{l}");
    let inf: Tensor<T> = t(&[f64::INFINITY, 0.0], &[2]);
    assert_eq!(
        f64s(&inf.logsumexp(&[0], false).unwrap()),
        vec![f64::INFINITY]
    );
    let ninf: Tensor<T> = t(&[f64::NEG_INFINITY; 2], &[2]);
    assert_eq!(
        f64s(&ninf.logsumexp(&[0], false).unwrap()),
        vec![f64::NEG_INFINITY]
    );
    assert_eq!(
        f64s(&ninf.max(&[0], false).unwrap()),
        vec![f64::NEG_INFINITY]
    );
}
both!(reductions_with_nan_and_infinity, special_values);

fn arg_reductions<T: Element>() {
    let x: Tensor<T> = t(&[3., 1., 4., 1., 5., 9., 2., 6., 5., 3., 5., 9.], &[3, 4]);
    assert_close(&x.argmax(1, false).unwrap(), &[3], &[2., 1., 3.], 0.0);
    assert_close(&x.argmax(0, false).unwrap(), &[4], &[1., 1., 2., 2.], 0.0);
    assert_close(&x.argmin(-1, true).unwrap(), &[3, 1], &[1., 2., 1.], 0.0);
    assert_close(&x.argmin(0, true).unwrap(), &[1, 4], &[0., 0., 1., 0.], 0.0);
    assert_eq!(x.argmax_indices(-1).unwrap(), vec![2, 1, 3]);
    // the first of tied values; NaN counts as the largest (and smallest)
    let ties: Tensor<T> = t(&[2., 7., 7., 2.], &[4]);
    assert_close(&ties.argmax(0, false).unwrap(), &[], &[1.], 0.0);
    assert_close(&ties.argmin(0, false).unwrap(), &[], &[0.], 0.0);
    let n: Tensor<T> = t(&[1., f64::NAN, 5.], &[3]);
    assert_eq!(n.argmax_indices(0).unwrap(), vec![1]);
    assert_close(&n.argmin(0, false).unwrap(), &[], &[1.], 0.0);
    // a middle axis of a rank-3 tensor
    let y: Tensor<T> = iota(&[2, 5, 3], 9);
    let yv = f64s(&y);
    let got = y.argmax(1, false).unwrap();
    for o in 0..2 {
        for j in 0..3 {
            let col: Vec<f64> = (0..5).map(|i| yv[(o * 5 + i) * 3 + j]).collect();
            let best = (0..5).fold(0, |b, i| if col[i] > col[b] { i } else { b });
            assert_eq!(got.get(&[o, j]).unwrap(), best as i64);
        }
    }
}
both!(argmax_and_argmin, arg_reductions);

fn sum_to<T: Element>() {
    let g: Tensor<T> = iota(&[2, 3, 4], 2);
    let gv = f64s(&g);
    for target in [
        &[2usize, 3, 4][..],
        &[4],
        &[3, 1],
        &[1, 4],
        &[2, 1, 1],
        &[1, 1, 1],
        &[],
        &[3, 4],
        &[1],
    ] {
        let got = g.sum_to(&target.into()).unwrap();
        // naive: add each element into the target position it broadcasts from
        let off = 3 - target.len();
        let n: usize = target.iter().product();
        let mut want = vec![0.0; n];
        let ts = crate::strides(target);
        for (i, &v) in gv.iter().enumerate() {
            let idx = unravel(i, &[2, 3, 4]);
            let o: usize = (0..target.len())
                .map(|d| {
                    if target[d] == 1 {
                        0
                    } else {
                        idx[d + off] * ts[d]
                    }
                })
                .sum();
            want[o] += v;
        }
        assert_close(&got, target, &want, 4.0 * tol::<T>());
    }
}
both!(sum_to_inverts_broadcasting, sum_to);

fn softmax<T: Element>() {
    let tl = 4.0 * tol::<T>();
    let x: Tensor<T> = t(&[1., 2., 3., 0., 0., 0.], &[2, 3]);
    let e: [f64; 3] = [1f64.exp(), 2f64.exp(), 3f64.exp()];
    let z: f64 = e.iter().sum();
    let want = [e[0] / z, e[1] / z, e[2] / z, 1. / 3., 1. / 3., 1. / 3.];
    assert_close(&x.softmax(-1).unwrap(), &[2, 3], &want, tl);
    assert_close(&x.softmax(1).unwrap(), &[2, 3], &want, tl);
    let lw: Vec<f64> = want.iter().map(|v| v.ln()).collect();
    assert_close(&x.log_softmax(-1).unwrap(), &[2, 3], &lw, tl);
    // along axis 0
    let s0 = x.softmax(0).unwrap();
    let col = |a: f64, b: f64| [a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp())];
    let c0 = col(1., 0.);
    let c2 = col(3., 0.);
    assert_close(&s0.narrow(1, 0, 1).unwrap(), &[2, 1], &c0, tl);
    assert_close(&s0.narrow(1, 2, 1).unwrap(), &[2, 1], &c2, tl);
    // large logits do not overflow; -inf entries get probability 0
    let big: Tensor<T> = t(&[1000., 1000., f64::NEG_INFINITY], &[3]);
    assert_close(&big.softmax(0).unwrap(), &[3], &[0.5, 0.5, 0.0], tl);
    let lb = f64s(&big.log_softmax(0).unwrap());
    assert!(
        (lb[0] + 2f64.ln()).abs() < tl && lb[2] == f64::NEG_INFINITY,
        "{lb:?}"
    );
    // a row of only -inf has no distribution: NaN, as in NumPy and TensorFlow
    let allinf: Tensor<T> = t(&[f64::NEG_INFINITY; 2], &[2]);
    assert!(f64s(&allinf.softmax(0).unwrap()).iter().all(|v| v.is_nan()));
    // size-1 axes
    assert_close(
        &t::<T>(&[3., -3.], &[2, 1]).softmax(1).unwrap(),
        &[2, 1],
        &[1., 1.],
        0.0,
    );
    assert_close(
        &t::<T>(&[3., -3.], &[2, 1]).log_softmax(1).unwrap(),
        &[2, 1],
        &[0., 0.],
        0.0,
    );
    assert_eq!(
        Tensor::<T>::zeros([0, 4])
            .unwrap()
            .softmax(-1)
            .unwrap()
            .dims(),
        &[0, 4]
    );
}
both!(softmax_and_log_softmax_values, softmax);

fn softmax_naive<T: Element>() {
    // every axis of a rank-3 tensor, and large row and column cases that
    // take the parallel paths
    for (shape, seed) in [
        (&[3usize, 4, 5][..], 1u64),
        (&[300, 600], 2),
        (&[600, 3, 200], 3),
        (&[30000, 10], 4),
    ] {
        let x: Tensor<T> = iota(shape, seed);
        let xv = f64s(&x);
        for axis in 0..shape.len() {
            let (outer, n, inner): (usize, usize, usize) = (
                shape[..axis].iter().product(),
                shape[axis],
                shape[axis + 1..].iter().product(),
            );
            let mut want = vec![0.0; xv.len()];
            let mut lwant = vec![0.0; xv.len()];
            for o in 0..outer {
                for j in 0..inner {
                    let at = |i: usize| (o * n + i) * inner + j;
                    let lse = logsumexp(&(0..n).map(|i| xv[at(i)]).collect::<Vec<_>>());
                    for i in 0..n {
                        want[at(i)] = (xv[at(i)] - lse).exp();
                        lwant[at(i)] = xv[at(i)] - lse;
                    }
                }
            }
            assert_close(
                &x.softmax(axis as isize).unwrap(),
                shape,
                &want,
                8.0 * tol::<T>(),
            );
            assert_close(
                &x.log_softmax(axis as isize).unwrap(),
                shape,
                &lwant,
                8.0 * tol::<T>(),
            );
        }
    }
}
both!(softmax_matches_naive_on_every_axis, softmax_naive);

fn cross_entropy<T: Element>() {
    let tl = 4.0 * tol::<T>();
    let logits: Tensor<T> = t(&[2., 1., 0.1, 0., 0., 0., -1., 3., 1.], &[3, 3]);
    let lv = f64s(&logits);
    let labels = [0usize, 2, 1];
    let want: Vec<f64> = (0..3)
        .map(|r| logsumexp(&lv[r * 3..r * 3 + 3]) - lv[r * 3 + labels[r]])
        .collect();
    assert_close(
        &logits.sparse_softmax_cross_entropy(&labels).unwrap(),
        &[3],
        &want,
        tl,
    );
    let onehot = Tensor::<T>::one_hot(&labels, 3).unwrap();
    assert_close(
        &logits.softmax_cross_entropy(&onehot).unwrap(),
        &[3],
        &want,
        tl,
    );
    // soft labels
    let soft: Tensor<T> = t(&[0.5, 0.5, 0., 0.2, 0.3, 0.5, 1., 0., 0.], &[3, 3]);
    let sv = f64s(&soft);
    let want: Vec<f64> = (0..3)
        .map(|r| {
            let lse = logsumexp(&lv[r * 3..r * 3 + 3]);
            -(0..3)
                .map(|c| sv[r * 3 + c] * (lv[r * 3 + c] - lse))
                .sum::<f64>()
        })
        .collect();
    assert_close(
        &logits.softmax_cross_entropy(&soft).unwrap(),
        &[3],
        &want,
        tl,
    );
    // leading batch axes, and a rank-1 (single example) input
    let b: Tensor<T> = iota(&[2, 2, 5], 4);
    let l = b.sparse_softmax_cross_entropy(&[4, 0, 1, 3]).unwrap();
    assert_eq!(l.dims(), &[2, 2]);
    let one: Tensor<T> = t(&[0., 0.], &[2]);
    assert_close(
        &one.sparse_softmax_cross_entropy(&[1]).unwrap(),
        &[],
        &[2f64.ln()],
        tl,
    );
    // stable for huge logits
    let huge: Tensor<T> = t(&[1e4, 0.], &[1, 2]);
    assert_close(
        &huge.sparse_softmax_cross_entropy(&[1]).unwrap(),
        &[1],
        &[1e4],
        tl,
    );
    // large batches take the parallel paths (short and long rows)
    for (rows, c) in [(4000usize, 50usize), (40000, 10)] {
        let big: Tensor<T> = iota(&[rows, c], 8);
        let bv = f64s(&big);
        let lab: Vec<usize> = (0..rows).map(|i| (i * 7) % c).collect();
        let got = f64s(&big.sparse_softmax_cross_entropy(&lab).unwrap());
        for r in (0..rows).step_by(37) {
            let w = logsumexp(&bv[r * c..r * c + c]) - bv[r * c + lab[r]];
            assert!((got[r] - w).abs() <= tl * (1.0 + w.abs()), "row {r}");
        }
    }
}
both!(cross_entropy_from_logits, cross_entropy);

#[test]
fn large_reductions_take_the_parallel_paths() {
    // column sums (a bias gradient), row sums, a middle axis, everything
    let (r, c) = (3000, 257);
    let x: Tensor<f64> = iota(&[r, c], 5);
    let xv = f64s(&x);
    for (axes, keep) in [(vec![0usize], false), (vec![1], true), (vec![0, 1], false)] {
        let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        for (name, op, f) in reductions::<f64>() {
            let (s, want) = naive_reduce(&xv, &[r, c], &axes, keep, f);
            assert_close(&op(&x, &ax, keep).unwrap(), &s, &want, 1e-9);
            let _ = name;
        }
    }
    // few rows of many columns
    let w: Tensor<f64> = iota(&[400, 1500], 7);
    let (s, want) = naive_reduce(&f64s(&w), &[400, 1500], &[0], false, sum);
    assert_close(&w.sum(&[0], false).unwrap(), &s, &want, 1e-9);
    let (s, want) = naive_reduce(&f64s(&w), &[400, 1500], &[0], true, min);
    assert_close(&w.min(&[0], true).unwrap(), &s, &want, 0.0);
    let y: Tensor<f64> = iota(&[60, 300, 30], 6);
    let yv = f64s(&y);
    for axes in [vec![1usize], vec![0, 2], vec![2]] {
        let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let (s, want) = naive_reduce(&yv, &[60, 300, 30], &axes, false, sum);
        assert_close(&y.sum(&ax, false).unwrap(), &s, &want, 1e-9);
        let (s, want) = naive_reduce(&yv, &[60, 300, 30], &axes, true, max);
        assert_close(&y.max(&ax, true).unwrap(), &s, &want, 0.0);
    }
    // a long f32 sum stays accurate (lanes and blocks, not one accumulator)
    let ones = Tensor::<f32>::ones([1 << 24]).unwrap();
    assert_eq!(ones.sum_all().to_scalar().unwrap(), (1 << 24) as f32);
    let col = Tensor::<f32>::full([100_000, 3], 0.1).unwrap();
    let s = col.sum(&[0], false).unwrap();
    for v in s.as_slice() {
        assert!((*v as f64 - 10_000.0).abs() < 0.05, "{v}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let x =
        Tensor::<f32>::rand_normal([1500, 700], 0.0, 1.0, &mut rime_tensor::seeded_rng(1)).unwrap();
    // rows longer than the chunk a full reduction is cut into
    let long = Tensor::<f32>::rand_normal([6, 100_000], 0.0, 1.0, &mut rime_tensor::seeded_rng(2))
        .unwrap();
    let wide =
        Tensor::<f32>::rand_normal([400, 1500], 0.0, 1.0, &mut rime_tensor::seeded_rng(3)).unwrap();
    let run = || {
        (
            wide.sum(&[0], true).unwrap(),
            long.sum(&[1], false).unwrap(),
            long.sum_all(),
            x.sum_all(),
            x.sum(&[0], false).unwrap(),
            x.mean(&[1], false).unwrap(),
            x.softmax(-1).unwrap(),
            x.softmax(0).unwrap(),
            x.exp().add(&x).unwrap(),
        )
    };
    let many = run();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(many, one);
}

/// Long f32 sums and means are blocked pairwise: within 1e-6 relative of an
/// f64 reference up to 2^25 elements (32 sequential lanes gave 6e-6), on
/// every path (one thread's fold, the pool's chunks, column blocks).
#[test]
fn long_f32_sums_are_accurate() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Uniform};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(25);
    let dist = Uniform::new(0.0f64, 1.0).unwrap();
    let n = 1usize << 25;
    let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng) as f32).collect();
    let exact: f64 = data.iter().map(|&v| v as f64).sum();
    let x = Tensor::from_vec(data, [n]).unwrap();
    let rel = |got: f32, want: f64| ((got as f64 - want) / want).abs();
    let sum = x.sum_all().to_scalar().unwrap();
    assert!(rel(sum, exact) <= 1e-6, "sum: {}", rel(sum, exact));
    let mean = x.mean_all().to_scalar().unwrap();
    assert!(
        rel(mean, exact / n as f64) <= 1e-6,
        "mean: {}",
        rel(mean, exact / n as f64)
    );
    // shorter prefixes (one fold, a few chunks) and a column reduction
    for len in [1000, 1 << 16, (1 << 20) + 7] {
        let part = x.narrow(0, 0, len).unwrap();
        let want: f64 = part.as_slice().iter().map(|&v| v as f64).sum();
        let got = part.sum_all().to_scalar().unwrap();
        assert!(rel(got, want) <= 1e-6, "{len}: {}", rel(got, want));
    }
    let cols = x.reshape([n / 4, 4]).unwrap().sum(&[0], false).unwrap();
    for (j, &got) in cols.as_slice().iter().enumerate() {
        let want: f64 = x
            .as_slice()
            .iter()
            .skip(j)
            .step_by(4)
            .map(|&v| v as f64)
            .sum();
        assert!(rel(got, want) <= 1e-6, "column {j}: {}", rel(got, want));
    }
}

/// `var` of data with a spread of 1e-3 around 1e4 (2^20 elements) matches
/// an f64 two-pass reference over the same f32 values (it was off 1e5x).
#[test]
fn var_is_accurate_on_offset_data() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Uniform};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(26);
    let dist = Uniform::new(-1e-3f64, 1e-3).unwrap();
    let n = 1usize << 20;
    let data: Vec<f32> = (0..n)
        .map(|_| (1e4 + dist.sample(&mut rng)) as f32)
        .collect();
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let want = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(want > 1e-8, "the f32 data keeps a spread: {want}");
    let x = Tensor::from_vec(data, [n]).unwrap();
    let got = x.var(&[], false).unwrap().to_scalar().unwrap() as f64;
    assert!(((got - want) / want).abs() < 1e-3, "var {got} vs {want}");
    // and per column of a matrix
    let m = x.reshape([n / 8, 8]).unwrap().var(&[0], false).unwrap();
    for (j, &got) in m.as_slice().iter().enumerate() {
        let col: Vec<f64> = x
            .as_slice()
            .iter()
            .skip(j)
            .step_by(8)
            .map(|&v| v as f64)
            .collect();
        let mu = col.iter().sum::<f64>() / col.len() as f64;
        let want = col.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(
            ((got as f64 - want) / want).abs() < 1e-3,
            "column {j}: {got} vs {want}"
        );
    }
}
