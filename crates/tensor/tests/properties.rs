//! Property tests: matmul against a naive triple loop (random shapes,
//! transposed and batched operands with broadcast batch axes, sizes above
//! the parallel threshold), reductions against naive loops over random axes,
//! and broadcasting identities. Case counts are kept modest so the crate's
//! tests stay fast.

mod common;

use common::{naive_broadcast, naive_matmul, naive_reduce};
use proptest::prelude::*;
use rime_tensor::{Element, Scalar, Shape, Tensor, seeded_rng};

fn rand<T: Element>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::rand_uniform(shape, -2.0, 2.0, &mut seeded_rng(seed)).unwrap()
}

type RedCase = (
    &'static str,
    fn(&Tensor<f64>, &[isize], bool) -> rime_tensor::Result<Tensor<f64>>,
    fn(&[f64]) -> f64,
);

fn f64s<T: Scalar>(x: &Tensor<T>) -> Vec<f64> {
    x.as_slice().iter().map(|v| v.to_f64().unwrap()).collect()
}

fn close(got: &[f64], want: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            g == w || (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()),
            "element {}: got {}, want {}",
            i,
            g,
            w
        );
    }
    Ok(())
}

/// Leading (batch) axes for two operands that broadcast together: each
/// axis is shared, or 1 on one side, or missing on one side.
fn batch_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec((1usize..4, 0u8..3), 0..3).prop_flat_map(|axes| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (d, how) in axes {
            match how {
                0 => {
                    a.push(d);
                    b.push(d);
                }
                1 => {
                    a.push(d);
                    b.push(1);
                }
                _ => {
                    a.push(1);
                    b.push(d);
                }
            }
        }
        (0..=a.len(), 0..=b.len()).prop_map(move |(da, db)| {
            // drop some leading axes of either side (missing axes broadcast)
            let da = if da == a.len() { 0 } else { da.min(1) };
            let db = if db == b.len() { 0 } else { db.min(1) };
            (a[da..].to_vec(), b[db..].to_vec())
        })
    })
}

fn with_matrix(batch: &[usize], rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    if transposed {
        s.extend([cols, rows]);
    } else {
        s.extend([rows, cols]);
    }
    s
}

fn check_matmul<T: Element>(
    sa: &[usize],
    sb: &[usize],
    ta: bool,
    tb: bool,
    k: usize,
    seed: u64,
    tol: f64,
) -> Result<(), TestCaseError> {
    let (a, b) = (rand::<T>(sa, seed), rand::<T>(sb, seed + 1));
    let got = a.matmul_t(&b, ta, tb).unwrap();
    let (shape, want) = naive_matmul(&f64s(&a), sa, &f64s(&b), sb, ta, tb);
    prop_assert_eq!(got.dims(), &shape[..]);
    close(&f64s(&got), &want, tol * (k as f64 + 1.0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_naive(
        m in 0usize..24, k in 0usize..24, n in 0usize..24,
        ta: bool, tb: bool, (ba, bb) in batch_pair(), seed in 0u64..1000,
    ) {
        let sa = with_matrix(&ba, m, k, ta);
        let sb = with_matrix(&bb, k, n, tb);
        check_matmul::<f64>(&sa, &sb, ta, tb, k, seed, 1e-13)?;
        check_matmul::<f32>(&sa, &sb, ta, tb, k, seed, 4e-7)?;
    }

    #[test]
    fn vector_matmul_matches_naive(k in 1usize..40, n in 1usize..20, seed in 0u64..1000) {
        let v = rand::<f64>(&[k], seed);
        let w = rand::<f64>(&[k, n], seed + 1);
        let (_, want) = naive_matmul(&f64s(&v), &[1, k], &f64s(&w), &[k, n], false, false);
        let got = v.matmul(&w).unwrap();
        prop_assert_eq!(got.dims(), &[n]);
        close(&f64s(&got), &want, 1e-13)?;
        let back = w.t().unwrap().matmul(&v).unwrap();
        close(&f64s(&back), &want, 1e-13)?;
    }
}

proptest! {
    // big products are slow to check naively: few cases
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn large_matmul_matches_naive(
        m in 130usize..260, k in 130usize..200, n in 130usize..260,
        ta: bool, tb: bool, batched: bool, seed in 0u64..1000,
    ) {
        // above the parallel threshold (2^21 multiply-adds) in every case
        let (ba, bb): (Vec<usize>, Vec<usize>) = if batched { (vec![2], vec![1]) } else { (vec![], vec![]) };
        let sa = with_matrix(&ba, m, k, ta);
        let sb = with_matrix(&bb, k, n, tb);
        check_matmul::<f32>(&sa, &sb, ta, tb, k, seed, 4e-7)?;
    }
}

/// A shape of rank 0..=4 with dims 0..5 (mostly non-empty) and a subset of
/// its axes.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(prop_oneof![9 => 1usize..6, 1 => Just(0usize)], 0..5).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), prop::collection::vec(any::<bool>(), r)).prop_map(|(s, pick)| {
            let axes = (0..s.len()).filter(|&i| pick[i]).collect();
            (s, axes)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn reductions_match_naive((shape, axes) in shape_and_axes(), keep: bool, neg: bool, seed in 0u64..1000) {
        let x = rand::<f64>(&shape, seed);
        let xv = f64s(&x);
        let r = shape.len() as isize;
        let spelled: Vec<isize> = axes.iter().map(|&a| if neg { a as isize - r } else { a as isize }).collect();
        let red_axes: Vec<usize> = if axes.is_empty() { (0..shape.len()).collect() } else { axes.clone() };
        let empty = red_axes.iter().any(|&a| shape[a] == 0);
        let ops: [RedCase; 5] = [
            ("sum", Tensor::sum, |g| g.iter().sum()),
            ("mean", Tensor::mean, |g| g.iter().sum::<f64>() / g.len() as f64),
            ("max", Tensor::max, |g| g.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            ("min", Tensor::min, |g| g.iter().copied().fold(f64::INFINITY, f64::min)),
            ("logsumexp", Tensor::logsumexp, |g| {
                let m = g.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let m0 = if m.is_finite() { m } else { 0.0 };
                m0 + g.iter().map(|v| (v - m0).exp()).sum::<f64>().ln()
            }),
        ];
        for (name, op, f) in ops {
            let got = op(&x, &spelled, keep);
            if empty && (name == "max" || name == "min") {
                prop_assert!(got.is_err(), "{} over an empty axis", name);
                continue;
            }
            let got = got.unwrap();
            let (s, want) = naive_reduce(&xv, &shape, &red_axes, keep, f);
            prop_assert_eq!(got.dims(), &s[..], "{}", name);
            close(&f64s(&got), &want, 1e-12)?;
        }
        // argmax along each single axis
        for a in 0..shape.len() {
            if shape[a] == 0 { continue; }
            let got = x.argmax(a as isize, keep).unwrap();
            let (_, want) = naive_reduce(&xv, &shape, &[a], keep, |g| {
                (0..g.len()).fold(0, |b, i| if g[i] > g[b] { i } else { b }) as f64
            });
            prop_assert_eq!(f64s(&got), want);
        }
    }

    #[test]
    fn f32_reductions_track_f64((shape, axes) in shape_and_axes(), seed in 0u64..1000) {
        let x = rand::<f64>(&shape, seed);
        let xf: Tensor<f32> = x.cast();
        let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let (s64, s32) = (x.sum(&ax, false).unwrap(), xf.sum(&ax, false).unwrap());
        close(&f64s(&s32), &f64s(&s64), 1e-5)?;
        let (v64, v32) = (x.var(&ax, true).unwrap(), xf.var(&ax, true).unwrap());
        close(&f64s(&v32), &f64s(&v64), 1e-5)?;
    }
}

/// Two shapes that broadcast together (with size-1 and missing axes).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec((0usize..5, 0u8..4), 0..4).prop_flat_map(|axes| {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (d, how) in axes {
            match how {
                0 => {
                    a.push(d);
                    b.push(d);
                }
                1 => {
                    a.push(d);
                    b.push(1);
                }
                2 => {
                    a.push(1);
                    b.push(d);
                }
                _ => {
                    a.push(1);
                    b.push(1);
                }
            }
        }
        let (la, lb) = (a.len(), b.len());
        (0..=la, 0..=lb).prop_map(move |(da, db)| (a[da..].to_vec(), b[db..].to_vec()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn broadcast_identities((sa, sb) in broadcast_pair(), seed in 0u64..1000) {
        let (a, b) = (rand::<f64>(&sa, seed), rand::<f64>(&sb, seed + 7));
        let sum = a.add(&b).unwrap();
        // against the naive index arithmetic
        let (shape, want) = naive_broadcast(&f64s(&a), &sa, &f64s(&b), &sb, |x, y| x + y);
        prop_assert_eq!(sum.dims(), &shape[..]);
        prop_assert_eq!(f64s(&sum), want);
        // commutes, and equals the op on the materialized broadcasts
        prop_assert_eq!(&b.add(&a).unwrap(), &sum);
        let out = Shape::from(&shape[..]);
        let (ea, eb) = (a.broadcast_to(out.clone()).unwrap(), b.broadcast_to(out.clone()).unwrap());
        prop_assert_eq!(&ea.add(&eb).unwrap(), &sum);
        prop_assert_eq!(a.mul(&b).unwrap(), ea.mul(&eb).unwrap());
        prop_assert_eq!(a.sub(&b).unwrap(), ea.sub(&eb).unwrap());
        prop_assert_eq!(b.div(&a).unwrap(), eb.div(&ea).unwrap());
        prop_assert_eq!(a.maximum(&b).unwrap(), ea.maximum(&eb).unwrap());
        prop_assert_eq!(a.lt(&b).unwrap(), ea.lt(&eb).unwrap());
        prop_assert_eq!(
            Tensor::select(&a.gt_scalar(0.0), &b, &a).unwrap(),
            Tensor::select(&ea.gt_scalar(0.0), &eb, &ea).unwrap()
        );
        // sum_to undoes broadcasting: the broadcast of `a` sums back to
        // `a` times the number of copies
        let copies = out.numel() / Shape::from(&sa[..]).numel().max(1);
        if out.numel() > 0 {
            let back = ea.sum_to(a.shape()).unwrap();
            let want: Vec<f64> = f64s(&a).iter().map(|v| v * copies as f64).collect();
            close(&f64s(&back), &want, 1e-12)?;
        }
        // a - a = 0 and a * 1 = a, at any shape
        prop_assert!(f64s(&a.sub(&a).unwrap()).iter().all(|&v| v == 0.0));
        prop_assert_eq!(&a.mul(&Tensor::ones(a.shape().clone()).unwrap()).unwrap(), &a);
    }

    #[test]
    fn layout_round_trips(shape in prop::collection::vec(1usize..5, 1..5), seed in 0u64..1000, cut in 0usize..100) {
        let x = rand::<f32>(&shape, seed);
        let r = shape.len();
        // permute then the inverse permutation
        let mut perm: Vec<usize> = (0..r).collect();
        perm.rotate_left(cut % r);
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        prop_assert_eq!(&x.permute(&perm).unwrap().permute(&inv).unwrap(), &x);
        // split then concat along an axis
        let axis = cut % r;
        let first = cut % (shape[axis] + 1);
        let parts = x.split(&[first, shape[axis] - first], axis as isize).unwrap();
        prop_assert_eq!(&Tensor::concat(&[&parts[0], &parts[1]], axis as isize).unwrap(), &x);
        // pad then slice back
        let widths: Vec<(usize, usize)> = (0..r).map(|i| ((cut + i) % 3, (cut * 7 + i) % 2)).collect();
        let ranges: Vec<_> = widths.iter().zip(&shape).map(|(&(b, _), &d)| b..b + d).collect();
        prop_assert_eq!(&x.pad(&widths).unwrap().slice(&ranges).unwrap(), &x);
        // stack of unstacked slices
        let rows: Vec<Tensor<f32>> = (0..shape[0]).map(|i| x.narrow(0, i, 1).unwrap().squeeze(&[0]).unwrap()).collect();
        let refs: Vec<&Tensor<f32>> = rows.iter().collect();
        prop_assert_eq!(&Tensor::stack(&refs, 0).unwrap(), &x);
    }

    #[test]
    fn softmax_is_a_distribution(shape in prop::collection::vec(1usize..6, 1..4), seed in 0u64..1000, ax in 0usize..3, scale in 0.1f64..50.0) {
        let x = rand::<f32>(&shape, seed).mul_scalar(scale as f32);
        let axis = (ax % shape.len()) as isize;
        let p = x.softmax(axis).unwrap();
        prop_assert!(p.as_slice().iter().all(|&v| (0.0..=1.0).contains(&v)));
        let sums = p.sum(&[axis], false).unwrap();
        prop_assert!(sums.as_slice().iter().all(|&s| (s - 1.0).abs() < 1e-5), "{:?}", sums);
        let lp = x.log_softmax(axis).unwrap();
        close(&f64s(&lp.exp()), &f64s(&p), 1e-5)?;
        // invariant to shifting the logits
        let shifted = x.add_scalar(100.0).softmax(axis).unwrap();
        close(&f64s(&shifted), &f64s(&p), 1e-4)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn large_elementwise_ops_match_scalar_loops(n in 100_000usize..400_000, seed in 0u64..1000) {
        // sizes around and above the parallel threshold
        let x = rand::<f32>(&[n], seed);
        let y = rand::<f32>(&[n], seed + 1);
        let (xs, ys) = (x.as_slice(), y.as_slice());
        let sum = x.add(&y).unwrap();
        prop_assert!(sum.as_slice().iter().enumerate().all(|(i, &v)| v == xs[i] + ys[i]));
        let relu = x.relu();
        prop_assert!(relu.as_slice().iter().enumerate().all(|(i, &v)| v == xs[i].max(0.0)));
        let scaled = x.mul_scalar(3.0);
        prop_assert!(scaled.as_slice().iter().enumerate().all(|(i, &v)| v == xs[i] * 3.0));
        let ex = x.exp();
        prop_assert!(ex.as_slice().iter().enumerate().all(|(i, &v)| ((v as f64) - (xs[i] as f64).exp()).abs() <= 3e-7 * (xs[i] as f64).exp()));
        let total = x.sum_all().to_scalar().unwrap() as f64;
        let naive: f64 = xs.iter().map(|&v| v as f64).sum();
        let mass: f64 = xs.iter().map(|&v| (v as f64).abs()).sum();
        // f32 accumulation error, relative to the sum of magnitudes
        prop_assert!((total - naive).abs() < 1e-6 * mass, "{} vs {}", total, naive);
        // a column broadcast over rows of 1000
        let rows = n / 1000;
        let m = x.narrow(0, 0, rows * 1000).unwrap().reshape([rows, 1000]).unwrap();
        let c = y.narrow(0, 0, rows).unwrap().reshape([rows, 1]).unwrap();
        let got = m.sub(&c).unwrap();
        prop_assert!(got.as_slice().iter().enumerate().all(|(i, &v)| v == xs[i] - ys[i / 1000]));
    }
}

/// A random shape, an axis of it, and random ids for that axis (some out of
/// range or negative when `bad`), as `i64`.
fn gather_case() -> impl Strategy<Value = (Vec<usize>, usize, Vec<usize>, Vec<i64>)> {
    (
        prop::collection::vec(1usize..5, 1..4),
        0usize..3,
        prop::collection::vec(1usize..4, 0..3),
    )
        .prop_flat_map(|(shape, ax, index_shape)| {
            let axis = ax % shape.len();
            let n: usize = index_shape.iter().product();
            let d = shape[axis] as i64;
            (
                Just(shape),
                Just(axis),
                Just(index_shape),
                prop::collection::vec(0..d, n),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// `gather` with an integer index tensor of any shape against index
    /// arithmetic; `index_select` with a 1-d one and `one_hot` against the
    /// `usize` forms; `i32` and `i64` ids alike; any bad id is a typed
    /// error naming it.
    #[test]
    fn index_ops_take_integer_tensors((shape, axis, index_shape, ids) in gather_case(), seed in 0u64..1000, bad in -3i64..3) {
        let x = rand::<f64>(&shape, seed);
        let idx = Tensor::from_vec(ids.clone(), index_shape.clone()).unwrap();
        let got = x.gather(axis as isize, &idx).unwrap();
        let mut want_shape = shape[..axis].to_vec();
        want_shape.extend_from_slice(&index_shape);
        want_shape.extend_from_slice(&shape[axis + 1..]);
        prop_assert_eq!(got.dims(), &want_shape[..]);
        let xv = f64s(&x);
        let (outer, n, inner) = (shape[..axis].iter().product::<usize>(), shape[axis], shape[axis + 1..].iter().product::<usize>());
        let mut want = Vec::new();
        for o in 0..outer {
            for &i in &ids {
                let s = (o * n + i as usize) * inner;
                want.extend_from_slice(&xv[s..s + inner]);
            }
        }
        prop_assert_eq!(f64s(&got), want);
        let small: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let idx32 = Tensor::from_vec(small, index_shape.clone()).unwrap();
        prop_assert_eq!(&x.gather(axis as isize, &idx32).unwrap(), &got);

        let flat = idx.reshape([ids.len()]).unwrap();
        let usizes: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        prop_assert_eq!(x.index_select(axis as isize, &flat).unwrap(), x.index_select(axis as isize, &usizes).unwrap());
        let hot = Tensor::<f32>::one_hot(&idx, n).unwrap();
        let mut hot_shape = index_shape.clone();
        hot_shape.push(n);
        prop_assert_eq!(hot.dims(), &hot_shape[..]);
        prop_assert_eq!(hot.reshape([ids.len(), n]).unwrap(), Tensor::<f32>::one_hot(&usizes, n).unwrap());

        // one bad id anywhere: negative or past the axis
        if !ids.is_empty() {
            let mut wrong = ids.clone();
            let at = seed as usize % ids.len();
            wrong[at] = if bad < 0 { bad } else { n as i64 + bad };
            let wrong = Tensor::from_vec(wrong, index_shape.clone()).unwrap();
            match x.gather(axis as isize, &wrong) {
                Err(rime_tensor::Error::IndexOutOfBounds { op: "gather", index, axis: a, size }) => {
                    prop_assert!(index < 0 || index >= n as i64);
                    prop_assert_eq!((a, size), (axis, n));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    /// Integer tensors take the layout ops (values move, never change) and
    /// round-trip through floats exactly.
    #[test]
    fn integer_layout_round_trips(shape in prop::collection::vec(1usize..5, 1..5), cut in 0usize..100) {
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec((0..n as i64).map(|v| v * 7 - 40).collect(), shape.clone()).unwrap();
        let r = shape.len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.rotate_left(cut % r);
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let y = x.permute(&perm).unwrap();
        prop_assert_eq!(&y.permute(&inv).unwrap(), &x);
        // the same permutation as the float tensor's
        let xf = x.to_dtype::<f64>().unwrap();
        prop_assert_eq!(&xf.permute(&perm).unwrap().to_dtype::<i64>().unwrap(), &y);
        prop_assert_eq!(&xf.to_dtype::<i64>().unwrap(), &x);
        prop_assert_eq!(&x.to_dtype::<i32>().unwrap().to_dtype::<i64>().unwrap(), &x);
        let axis = cut % r;
        let first = cut % (shape[axis] + 1);
        let parts = x.split(&[first, shape[axis] - first], axis as isize).unwrap();
        prop_assert_eq!(&Tensor::concat(&[&parts[0], &parts[1]], axis as isize).unwrap(), &x);
        let widths: Vec<(usize, usize)> = (0..r).map(|i| ((cut + i) % 3, (cut * 7 + i) % 2)).collect();
        let ranges: Vec<_> = widths.iter().zip(&shape).map(|(&(b, _), &d)| b..b + d).collect();
        let padded = x.pad(&widths).unwrap();
        prop_assert_eq!(padded.as_slice().iter().filter(|&&v| v != 0).count(), x.as_slice().iter().filter(|&&v| v != 0).count());
        prop_assert_eq!(&padded.slice(&ranges).unwrap(), &x);
        let b = x.reshape([n]).unwrap().unsqueeze(0).unwrap().broadcast_to([2, n]).unwrap();
        prop_assert_eq!(&b.narrow(0, 1, 1).unwrap().reshape(shape.clone()).unwrap(), &x);
        prop_assert!(x.reshape([n + 1]).is_err());
    }
}
