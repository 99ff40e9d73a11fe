//! GradientTape's TensorFlow semantics: what is recorded where, persistence,
//! pausing and resetting, watching, several targets and seeds, Jacobians,
//! stop_gradient and custom gradients. Expected values are derived by hand
//! (or by finite differences where a hand derivation would be long).

#![allow(clippy::single_range_in_vec_init)] // one-range slices are the point

mod common;

use common::{assert_close, t};
use rime_tape::{
    Error, GradientOptions, GradientTape, Source, UnconnectedGradients, Variable, custom_gradient,
    live_nodes, no_record, stop_gradient,
};
use rime_tensor::Tensor;

type R = rime_tape::Result<()>;

fn grad1(tape: &GradientTape, y: &Tensor<f64>, x: &Tensor<f64>) -> Vec<f64> {
    tape.gradient(y, &[x]).unwrap()[0]
        .as_ref()
        .expect("connected")
        .to_vec()
}

/// Central differences of every element of `f(x)` with respect to every
/// element of `x`: the Jacobian, row-major `[f.len(), x.len()]`.
fn numeric_jacobian(f: impl Fn(&Tensor<f64>) -> Tensor<f64>, x: &Tensor<f64>) -> Vec<f64> {
    let eps = 1e-6;
    let m = f(x).len();
    let n = x.len();
    let mut j = vec![0.0; m * n];
    for c in 0..n {
        let at = |d: f64| {
            let mut v = x.to_vec();
            v[c] += d;
            f(&Tensor::from_vec(v, x.shape().clone()).unwrap()).to_vec()
        };
        let (p, q) = (at(eps), at(-eps));
        for r in 0..m {
            j[r * n + c] = (p[r] - q[r]) / (2.0 * eps);
        }
    }
    j
}

// ---- jacobian and batch_jacobian ---------------------------------------------

#[test]
fn jacobian_of_a_vector_function() -> R {
    let x = t(&[0.5, -1.5], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    // y = [x0², x0 x1, sin x1]
    let x0 = x.slice(&[0..1])?;
    let x1 = x.slice(&[1..2])?;
    let y = Tensor::concat(&[&x0.square(), &x0.mul(&x1)?, &x1.sin()], 0)?;
    let j = tape.jacobian(&y, &x)?.expect("connected");
    assert_eq!(j.shape(), &[3, 2]);
    let want = [2.0 * 0.5, 0.0, -1.5, 0.5, 0.0, (-1.5f64).cos()];
    assert_close(&j.to_vec(), &want, 1e-15, 0.0, "jacobian");
    // a non-persistent tape answered its one call
    assert!(matches!(
        tape.jacobian(&y, &x),
        Err(Error::TapeExhausted { call: "jacobian" })
    ));
    Ok(())
}

#[test]
fn jacobian_of_matrices_matches_finite_differences() -> R {
    let x = t(&[0.3, -0.8, 1.1, 0.4, -0.2, 0.9], &[2, 3]);
    let w = t(&[0.5, -1.0, 0.25, 2.0, -0.7, 0.1], &[3, 2]);
    let f = |x: &Tensor<f64>| x.matmul(&w).unwrap().tanh().softmax(0).unwrap();
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = f(&x);
    let j = tape.jacobian(&y, &x)?.unwrap();
    assert_eq!(j.shape(), &[2, 2, 2, 3]);
    assert_close(
        &j.to_vec(),
        &numeric_jacobian(f, &x),
        1e-8,
        1e-6,
        "jacobian",
    );
    // a persistent tape keeps answering, and a variable is a source too
    let v = Variable::new("v", w.clone());
    let y2 = x.matmul(&v.value())?;
    let jv = tape.jacobian(&y2, &v)?.unwrap();
    assert_eq!(jv.shape(), &[2, 2, 3, 2]);
    // d y2[i, j] / d v[k, l] = x[i, k] δ(j, l)
    let xv = x.to_vec();
    for i in 0..2 {
        for jj in 0..2 {
            for k in 0..3 {
                for l in 0..2 {
                    let want = if jj == l { xv[i * 3 + k] } else { 0.0 };
                    assert_eq!(jv.get(&[i, jj, k, l])?, want);
                }
            }
        }
    }
    // unconnected: None
    let other = t(&[1.0], &[1]);
    tape.watch(&other);
    assert!(tape.jacobian(&y, &other)?.is_none());
    Ok(())
}

#[test]
fn batch_jacobian_per_example() -> R {
    // y[b] = tanh(x[b] W): dy[b, h] / dx[b, d] = (1 - y[b, h]²) W[d, h]
    let x = t(&[0.1, -0.4, 0.7, 0.2, 0.5, -0.6, 0.3, 0.9, -1.0], &[3, 3]);
    let w = t(&[0.5, -1.0, 0.25, 2.0, -0.7, 0.1], &[3, 2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = x.matmul(&w)?.tanh();
    let bj = tape.batch_jacobian(&y, &x)?.unwrap();
    assert_eq!(bj.shape(), &[3, 2, 3]);
    let (yv, wv) = (y.to_vec(), w.to_vec());
    for b in 0..3 {
        for h in 0..2 {
            for d in 0..3 {
                let want = (1.0 - yv[b * 2 + h].powi(2)) * wv[d * 2 + h];
                assert!((bj.get(&[b, h, d])? - want).abs() < 1e-15);
            }
        }
    }
    // the full Jacobian agrees on the diagonal blocks and is 0 elsewhere
    let j = tape.jacobian(&y, &x)?.unwrap();
    for b in 0..3 {
        for h in 0..2 {
            for b2 in 0..3 {
                for d in 0..3 {
                    let want = if b == b2 { bj.get(&[b, h, d])? } else { 0.0 };
                    assert_eq!(j.get(&[b, h, b2, d])?, want);
                }
            }
        }
    }
    // batch axes that differ: a typed error, and the tape still answers
    let z = t(&[1.0, 2.0], &[2, 1]);
    tape.watch(&z);
    assert!(matches!(
        tape.batch_jacobian(&y, &z),
        Err(Error::InvalidArgument {
            call: "batch_jacobian",
            ..
        })
    ));
    assert!(matches!(
        tape.batch_jacobian(&y.sum_all(), &x),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(tape.batch_jacobian(&y, &x)?.unwrap().to_vec(), bj.to_vec());
    Ok(())
}

// ---- stop_gradient, custom gradients -----------------------------------------

#[test]
fn stop_gradient_blocks_one_path() -> R {
    let x = t(&[1.5, -2.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    // d/dx [x² · stop(x)] = 2x · x
    let y = x.square().mul(&stop_gradient(&x))?.sum_all();
    assert_eq!(grad1(&tape, &y, &x), vec![2.0 * 1.5 * 1.5, 2.0 * 2.0 * 2.0]);
    // stop_gradient alone: unconnected
    let s = stop_gradient(&x.square()).sum_all();
    assert!(matches!(
        tape.gradient(&s, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    // of a variable read
    let v = Variable::new("v", t(&[3.0], &[1]));
    let z = v.value().mul(&stop_gradient(&v.value()))?.sum_all();
    assert_eq!(
        tape.gradient(&z, &[&v])?[0].as_ref().unwrap().to_vec(),
        vec![3.0]
    );
    Ok(())
}

#[test]
fn custom_gradient_uses_the_user_backward() -> R {
    // forward: softplus computed by hand; backward: sigmoid(x) · dy, and a
    // scaled gradient for the second input
    let x = t(&[-1.0, 0.0, 2.0], &[3]);
    let s = t(&[2.0], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    tape.watch(&s);
    let y = custom_gradient(
        "softplus_times",
        &[&x, &s],
        |xs| Ok(xs[0].exp().add_scalar(1.0).ln().mul(&xs[1])?),
        |xs, _y, dy| {
            Ok(vec![
                Some(dy.mul(&xs[0].sigmoid())?.mul(&xs[1])?),
                Some(
                    dy.mul(&xs[0].exp().add_scalar(1.0).ln())?
                        .sum_all()
                        .reshape([1])?
                        .mul_scalar(10.0),
                ),
            ])
        },
    )?;
    let yv = y.to_vec();
    for (i, &xi) in [-1.0f64, 0.0, 2.0].iter().enumerate() {
        assert!((yv[i] - 2.0 * (1.0 + xi.exp()).ln()).abs() < 1e-15);
    }
    let loss = y.sum_all();
    let g = tape.gradient(&loss, &[&x, &s])?;
    let gx = g[0].as_ref().unwrap().to_vec();
    for (i, &xi) in [-1.0f64, 0.0, 2.0].iter().enumerate() {
        assert!((gx[i] - 2.0 / (1.0 + (-xi).exp())).abs() < 1e-15);
    }
    let sp: f64 = [-1.0f64, 0.0, 2.0]
        .iter()
        .map(|v| (1.0 + v.exp()).ln())
        .sum();
    assert!((g[1].as_ref().unwrap().to_vec()[0] - 10.0 * sp).abs() < 1e-12);
    // the forward itself is not recorded: only the custom node is
    let before = tape.len();
    let _ = custom_gradient(
        "id",
        &[&x],
        |xs| Ok(xs[0].exp().sin()),
        |_, _, dy| Ok(vec![Some(dy.clone())]),
    )?;
    assert_eq!(tape.len(), before + 1);
    Ok(())
}

#[test]
fn custom_gradient_with_none_and_higher_order() -> R {
    let x = t(&[0.7], &[1]);
    let c = t(&[5.0], &[1]);
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    inner.watch(&c);
    // cube with a hand-written backward 3x² dy, no gradient for c
    let y = custom_gradient(
        "cube",
        &[&x, &c],
        |xs| Ok(xs[0].powf(3.0).add(&xs[1])?),
        |xs, _, dy| Ok(vec![Some(dy.mul(&xs[0].square().mul_scalar(3.0))?), None]),
    )?;
    let g = inner.gradient_with(
        &[&y],
        &[&x, &c],
        GradientOptions {
            output_gradients: None,
            unconnected: UnconnectedGradients::Zero,
        },
    )?;
    assert!((g[0].as_ref().unwrap().to_vec()[0] - 3.0 * 0.49).abs() < 1e-15);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![0.0]);
    // the backward's ops were recorded on the outer tape: d/dx 3x² = 6x
    let d2 = outer.gradient(g[0].as_ref().unwrap(), &[&x])?;
    assert!((d2[0].as_ref().unwrap().to_vec()[0] - 6.0 * 0.7).abs() < 1e-15);
    // with no tape active nothing is recorded and the value is right
    let before = live_nodes();
    let z = custom_gradient(
        "cube",
        &[&x],
        |xs| Ok(xs[0].powf(3.0)),
        |_, _, dy| Ok(vec![Some(dy.clone())]),
    )?;
    assert_eq!(live_nodes(), before);
    assert!((z.to_vec()[0] - 0.343).abs() < 1e-15);
    Ok(())
}

/// The compact record (48-byte nodes, boxed per-axis attributes, a
/// constant stored once) under load: a chain of 1000 ops with a constant
/// operand, layout ops carrying per-axis lists, and a reduction over an
/// axis, recorded on two nested persistent tapes; both record the same
/// nodes, the inner one answers twice, and the outer one differentiates the
/// inner one's gradient computation.
#[test]
fn long_chain_on_nested_persistent_tapes() -> R {
    let x = t(&[0.5, -1.0, 2.0, 3.0, 0.0, 1.5], &[2, 3]);
    let c = t(&[1.0; 6], &[2, 3]);
    let outer = GradientTape::persistent();
    outer.watch(&x);
    let inner = GradientTape::persistent();
    inner.watch(&x);
    let mut z = x.clone();
    for _ in 0..1000 {
        z = z.add(&c)?;
    }
    // a round trip through permute, pad and slice is the identity
    let w = z
        .permute(&[1, 0])?
        .pad(&[(1, 0), (0, 2)])?
        .slice(&[1..4, 0..2])?
        .permute(&[1, 0])?;
    let y = w.square().sum(&[1], false)?.sum_all();
    assert!(inner.len() > 1000);
    assert_eq!(outer.len(), inner.len(), "both tapes record every op");
    // y = Σ (x + 1000)², dy/dx = 2 (x + 1000)
    let want: Vec<f64> = x.to_vec().iter().map(|v| 2.0 * (v + 1000.0)).collect();
    let dx = inner.gradient(&y, &[&x])?[0].clone().expect("connected");
    assert_close(&dx.to_vec(), &want, 0.0, 1e-15, "dy/dx");
    let again = inner.gradient(&y, &[&x])?[0].clone().expect("connected");
    assert_eq!(
        again.to_vec(),
        dx.to_vec(),
        "a persistent tape answers again"
    );
    // the first gradient was recorded on the outer tape: d/dx Σ 2 (x + 1000) = 2
    let d2 = outer.gradient(&dx.sum_all(), &[&x])?[0]
        .clone()
        .expect("connected");
    assert_close(&d2.to_vec(), &[2.0; 6], 0.0, 1e-15, "d2y/dx2");
    Ok(())
}

// ---- options: unconnected, seeds, several targets ------------------------------

#[test]
fn unconnected_sources_are_none_or_zeros() -> R {
    let x = t(&[1.0, 2.0], &[2]);
    let u = t(&[3.0, 4.0, 5.0], &[3]);
    let never_watched = t(&[1.0], &[1]);
    let v = Variable::new("unused", t(&[0.0; 4], &[2, 2]));
    let tape = GradientTape::persistent();
    tape.watch(&x);
    tape.watch(&u);
    tape.watch(&v);
    let y = x.exp().sum_all();
    let g = tape.gradient(&y, &[&x, &u, &never_watched])?;
    assert_eq!(
        g[0].as_ref().unwrap().to_vec(),
        vec![1f64.exp(), 2f64.exp()]
    );
    assert!(g[1].is_none() && g[2].is_none());
    let opts = GradientOptions {
        output_gradients: None,
        unconnected: UnconnectedGradients::Zero,
    };
    let g = tape.gradient_with(
        &[&y],
        &[
            Source::from(&u),
            Source::from(&v),
            Source::from(&never_watched),
        ],
        opts,
    )?;
    assert_eq!(g[0].as_ref().unwrap().shape(), &[3]);
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![0.0; 3]);
    assert_eq!(g[1].as_ref().unwrap().shape(), &[2, 2]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![0.0; 4]);
    assert_eq!(g[2].as_ref().unwrap().to_vec(), vec![0.0]);
    Ok(())
}

#[test]
fn output_gradients_seed_a_vector_jacobian_product() -> R {
    let x = t(&[0.2, -0.5, 1.3], &[3]);
    let w = t(&[1.0, 2.0, -1.0, 0.5, 0.0, 3.0], &[3, 2]);
    let f = |x: &Tensor<f64>| x.matmul(&w).unwrap().sin();
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = f(&x);
    let seed = t(&[0.7, -2.0], &[2]);
    let g = tape.gradient_with(
        &[&y],
        &[&x],
        GradientOptions {
            output_gradients: Some(std::slice::from_ref(&seed)),
            unconnected: UnconnectedGradients::None,
        },
    )?;
    // Jᵀ seed
    let j = numeric_jacobian(f, &x);
    let want: Vec<f64> = (0..3).map(|c| 0.7 * j[c] + -2.0 * j[3 + c]).collect();
    assert_close(&g[0].as_ref().unwrap().to_vec(), &want, 1e-9, 1e-7, "vjp");
    // a seed of the wrong shape is a typed error, the tape still answers
    let bad = t(&[1.0; 3], &[3]);
    assert!(matches!(
        tape.gradient_with(
            &[&y],
            &[&x],
            GradientOptions {
                output_gradients: Some(std::slice::from_ref(&bad)),
                unconnected: UnconnectedGradients::None
            }
        ),
        Err(Error::OutputGradientShape { index: 0, .. })
    ));
    let two = [seed.clone(), seed.clone()];
    assert!(matches!(
        tape.gradient_with(
            &[&y],
            &[&x],
            GradientOptions {
                output_gradients: Some(&two),
                unconnected: UnconnectedGradients::None
            }
        ),
        Err(Error::InvalidArgument { .. })
    ));
    let again = tape.gradient_with(
        &[&y],
        &[&x],
        GradientOptions {
            output_gradients: Some(std::slice::from_ref(&seed)),
            unconnected: UnconnectedGradients::None,
        },
    )?;
    assert_eq!(
        again[0].as_ref().unwrap().to_vec(),
        g[0].as_ref().unwrap().to_vec()
    );
    Ok(())
}

#[test]
fn several_targets_add_their_gradients() -> R {
    let x = t(&[0.4, 1.1], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y1 = x.square().sum_all(); // 2x
    let y2 = x.sin(); // cos x (a vector target: its sum)
    let y3 = x.mul_scalar(3.0).sum_all(); // 3
    let g = tape.gradient_with(&[&y1, &y2, &y3], &[&x], GradientOptions::default())?;
    let want: Vec<f64> = [0.4f64, 1.1]
        .iter()
        .map(|v| 2.0 * v + v.cos() + 3.0)
        .collect();
    assert_close(
        &g[0].as_ref().unwrap().to_vec(),
        &want,
        1e-15,
        0.0,
        "sum of targets",
    );
    // seeds per target
    let seeds = [t(&[2.0], &[]), t(&[1.0, -1.0], &[2]), t(&[0.0], &[])];
    let g = tape.gradient_with(
        &[&y1, &y2, &y3],
        &[&x],
        GradientOptions {
            output_gradients: Some(&seeds),
            unconnected: UnconnectedGradients::None,
        },
    )?;
    let want = [2.0 * 0.8 + 0.4f64.cos(), 2.0 * 2.2 - 1.1f64.cos()];
    assert_close(
        &g[0].as_ref().unwrap().to_vec(),
        &want,
        1e-15,
        0.0,
        "seeded targets",
    );
    // one target is another's intermediate: both paths count
    let a = x.exp();
    let b = a.sum_all().square();
    let g = tape.gradient_with(&[&a, &b], &[&x], GradientOptions::default())?;
    let s: f64 = [0.4f64, 1.1].iter().map(|v| v.exp()).sum();
    let want: Vec<f64> = [0.4f64, 1.1]
        .iter()
        .map(|v| v.exp() + 2.0 * s * v.exp())
        .collect();
    assert_close(
        &g[0].as_ref().unwrap().to_vec(),
        &want,
        1e-13,
        1e-15,
        "nested targets",
    );
    Ok(())
}

#[test]
fn gradients_with_respect_to_intermediates_targets_and_repeats() -> R {
    let x = t(&[0.5, 2.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let h = x.square();
    let y = h.sin().sum_all();
    // intermediate source: dy/dh = cos h
    let g = tape.gradient(&y, &[&h, &x])?;
    let want_h: Vec<f64> = [0.25f64, 4.0].iter().map(|v| v.cos()).collect();
    assert_close(
        &g[0].as_ref().unwrap().to_vec(),
        &want_h,
        1e-15,
        0.0,
        "dy/dh",
    );
    let want_x: Vec<f64> = [0.5f64, 2.0]
        .iter()
        .map(|v| (v * v).cos() * 2.0 * v)
        .collect();
    assert_close(
        &g[1].as_ref().unwrap().to_vec(),
        &want_x,
        1e-15,
        0.0,
        "dy/dx",
    );
    // the target is the source
    assert_eq!(grad1(&tape, &x, &x), vec![1.0, 1.0]);
    // the same source twice: the gradient both times
    let g = tape.gradient(&y, &[&x, &x, &h, &h])?;
    assert_close(
        &g[0].as_ref().unwrap().to_vec(),
        &want_x,
        1e-15,
        0.0,
        "x first",
    );
    assert_close(
        &g[1].as_ref().unwrap().to_vec(),
        &want_x,
        1e-15,
        0.0,
        "x again",
    );
    assert_close(
        &g[2].as_ref().unwrap().to_vec(),
        &want_h,
        1e-15,
        0.0,
        "h first",
    );
    assert_close(
        &g[3].as_ref().unwrap().to_vec(),
        &want_h,
        1e-15,
        0.0,
        "h again",
    );
    // a variable twice (two handles to one variable)
    let v = Variable::new("v", t(&[1.5], &[1]));
    let z = v.value().square().sum_all();
    let v2 = v.clone();
    let g = tape.gradient(&z, &[&v, &v2])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![3.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![3.0]);
    Ok(())
}

// ---- persistence, pausing, resetting -------------------------------------------

#[test]
fn persistent_and_non_persistent_tapes() -> R {
    let x = t(&[3.0], &[1]);
    let tape = GradientTape::new();
    assert!(!tape.is_persistent());
    tape.watch(&x);
    let y = x.square().sum_all();
    assert_eq!(grad1(&tape, &y, &x), vec![6.0]);
    let e = tape.gradient(&y, &[&x]).unwrap_err();
    assert!(
        matches!(e, Error::TapeExhausted { call: "gradient" }),
        "{e}"
    );
    assert!(e.to_string().contains("persistent"));
    assert!(matches!(
        tape.jacobian(&y, &x),
        Err(Error::TapeExhausted { .. })
    ));
    assert!(matches!(
        tape.batch_jacobian(&y, &x),
        Err(Error::TapeExhausted { .. }) | Err(Error::InvalidArgument { .. })
    ));
    // a used tape no longer records or holds nodes
    assert!(!tape.is_recording());
    assert_eq!(tape.len(), 0);

    let p = GradientTape::persistent();
    assert!(p.is_persistent());
    p.watch(&x);
    let y = x.powf(3.0).sum_all();
    for _ in 0..3 {
        assert_eq!(grad1(&p, &y, &x), vec![27.0]);
    }
    // it keeps recording after a gradient call
    let z = x.exp().sum_all();
    assert_eq!(grad1(&p, &z, &x), vec![3f64.exp()]);
    Ok(())
}

#[test]
fn stop_recording_pauses_and_resumes() -> R {
    let x = t(&[2.0], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    assert!(tape.is_recording());
    let a = x.square();
    let n = tape.len();
    let b = {
        let _pause = tape.stop_recording();
        assert!(!tape.is_recording());
        let b = a.exp();
        {
            let _again = tape.stop_recording(); // nested guards
        }
        assert!(!tape.is_recording(), "the outer guard still pauses");
        b.mul(&a)?
    };
    assert_eq!(tape.len(), n, "nothing recorded while paused");
    assert!(tape.is_recording());
    assert!(matches!(
        tape.gradient(&b, &[&x]),
        Err(Error::TargetNotRecorded { index: 0, .. })
    ));
    // after the pause, ops on recorded tensors are recorded again; the
    // paused computation is a constant
    let c = a.mul(&b)?.sum_all(); // d/dx = b · 2x
    let bv = b.to_vec()[0];
    assert_eq!(grad1(&tape, &c, &x), vec![bv * 4.0]);
    // stop(): for good
    tape.stop();
    let d = a.sin();
    assert!(matches!(
        tape.gradient(&d, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    assert_eq!(
        grad1(&tape, &c, &x),
        vec![bv * 4.0],
        "what was recorded stays"
    );
    // no_record pauses every tape
    let t2 = GradientTape::persistent();
    t2.watch(&x);
    let e = no_record(|| x.exp());
    assert!(matches!(
        t2.gradient(&e, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    assert!(t2.is_recording());
    Ok(())
}

#[test]
fn reset_forgets_and_keeps_recording() -> R {
    let x = t(&[1.5], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = x.square().sum_all();
    assert!(!tape.is_empty());
    tape.reset();
    assert_eq!(tape.len(), 0);
    assert!(matches!(
        tape.gradient(&y, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    // watches are forgotten too: x must be watched again
    let z = x.exp().sum_all();
    assert!(matches!(
        tape.gradient(&z, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    tape.watch(&x);
    let z = x.exp().sum_all();
    assert_eq!(grad1(&tape, &z, &x), vec![1.5f64.exp()]);

    // a used non-persistent tape is usable again after reset
    let once = GradientTape::new();
    once.watch(&x);
    let y = x.square().sum_all();
    assert_eq!(grad1(&once, &y, &x), vec![3.0]);
    once.reset();
    assert!(once.is_recording());
    once.watch(&x);
    let y = x.powf(3.0).sum_all();
    assert_eq!(grad1(&once, &y, &x), vec![3.0 * 2.25]);
    assert!(matches!(
        once.gradient(&y, &[&x]),
        Err(Error::TapeExhausted { .. })
    ));
    // reset while paused: recording resumes when the guard goes
    let p = GradientTape::persistent();
    {
        let _g = p.stop_recording();
        p.reset();
        p.watch(&x);
        let _ = x.exp();
        assert_eq!(p.len(), 0);
    }
    let w = x.exp().sum_all();
    assert_eq!(grad1(&p, &w, &x), vec![1.5f64.exp()]);
    Ok(())
}

// ---- watching ---------------------------------------------------------------------

#[test]
fn watch_accessed_variables_on_and_off() -> R {
    let a = Variable::new("a", t(&[2.0], &[1]));
    let frozen = Variable::non_trainable("frozen", t(&[5.0], &[1]));
    let b = Variable::new("b", t(&[3.0], &[1]));

    // on (default): trainable reads are watched, in order of first access
    let tape = GradientTape::persistent();
    let y = b.value().mul(&a.value())?.mul(&frozen.value())?.sum_all();
    let _ = a.value(); // a second read does not watch twice
    assert_eq!(tape.watched_variables::<f64>(), vec![b.clone(), a.clone()]);
    assert!(tape.watched_variables::<f32>().is_empty());
    let g = tape.gradient(&y, &[&a, &b, &frozen])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![15.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![10.0]);
    assert!(g[2].is_none(), "a non-trainable variable is not watched");

    // explicitly watching a non-trainable variable connects it
    let tape = GradientTape::new();
    tape.watch(&frozen);
    let y = a.value().mul(&frozen.value())?.sum_all();
    let g = tape.gradient(&y, &[&a, &frozen])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![5.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![2.0]);

    // off: only what is watched explicitly
    let tape = GradientTape::builder()
        .watch_accessed_variables(false)
        .persistent(true)
        .start();
    let y = a.value().mul(&b.value())?.sum_all();
    assert!(tape.watched_variables::<f64>().is_empty());
    assert!(matches!(
        tape.gradient(&y, &[&a]),
        Err(Error::TargetNotRecorded { .. })
    ));
    tape.watch(&b);
    let y = a.value().mul(&b.value())?.sum_all();
    let g = tape.gradient(&y, &[&a, &b])?;
    assert!(g[0].is_none());
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![2.0]);
    assert_eq!(tape.watched_variables::<f64>(), vec![b.clone()]);

    // a trainable flag flipped later changes later tapes
    a.set_trainable(false);
    let tape = GradientTape::new();
    let y = a.value().mul(&b.value())?.sum_all();
    let g = tape.gradient(&y, &[&a, &b])?;
    assert!(g[0].is_none());
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![2.0]);
    Ok(())
}

#[test]
fn variable_reads_add_up_and_track_the_value_read() -> R {
    let v = Variable::new("v", t(&[2.0, -1.0], &[2]));
    let tape = GradientTape::persistent();
    let r1 = v.value();
    v.assign(&t(&[10.0, 20.0], &[2]))?;
    let r2 = v.value();
    // y = Σ r1 · r2: dy/dv = r2 + r1 (both reads are of v)
    let y = r1.mul(&r2)?.sum_all();
    assert_eq!(
        r1.to_vec(),
        vec![2.0, -1.0],
        "an earlier read keeps its value"
    );
    let g = tape.gradient(&y, &[&v])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![12.0, 19.0]);
    Ok(())
}

// ---- nesting and threads -------------------------------------------------------------

#[test]
fn ops_are_recorded_only_on_tapes_that_track_their_inputs() -> R {
    let x = t(&[1.0, 2.0], &[2]);
    let y = t(&[3.0, 4.0], &[2]);
    let ta = GradientTape::persistent();
    let tb = GradientTape::persistent();
    ta.watch(&x);
    tb.watch(&y);
    let xa = x.exp(); // ta only
    assert_eq!((ta.len(), tb.len()), (1, 0));
    let yb = y.sin(); // tb only
    assert_eq!((ta.len(), tb.len()), (1, 1));
    let both = xa.mul(&yb)?; // both
    assert_eq!((ta.len(), tb.len()), (2, 2));
    let c = t(&[7.0], &[1]);
    let _ = c.exp().add(&c)?; // neither
    assert_eq!((ta.len(), tb.len()), (2, 2));
    let s = both.sum_all();
    // each tape differentiates through what it recorded
    let gx = ta.gradient(&s, &[&x])?;
    assert_eq!(
        gx[0].as_ref().unwrap().to_vec(),
        vec![1f64.exp() * 3f64.sin(), 2f64.exp() * 4f64.sin()]
    );
    let gy = tb.gradient(&s, &[&y, &x])?;
    assert_eq!(
        gy[0].as_ref().unwrap().to_vec(),
        vec![1f64.exp() * 3f64.cos(), 2f64.exp() * 4f64.cos()]
    );
    assert!(gy[1].is_none(), "tb never watched x");
    // a tape created later does not see earlier ops
    let tc = GradientTape::new();
    tc.watch(&x);
    assert!(matches!(
        tc.gradient(&s, &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    // the inner tape computing a gradient does not record its own rules,
    // the outer one does
    let outer = GradientTape::persistent();
    let inner = GradientTape::persistent();
    outer.watch(&x);
    inner.watch(&x);
    let z = x.sin().sum_all();
    let (no, ni) = (outer.len(), inner.len());
    let dz = inner.gradient(&z, &[&x])?.remove(0).unwrap();
    assert_eq!(inner.len(), ni);
    assert!(outer.len() > no);
    let d2 = outer.gradient(&dz, &[&x])?.remove(0).unwrap();
    assert_eq!(d2.to_vec(), vec![-(1f64.sin()), -(2f64.sin())]);
    Ok(())
}

#[test]
fn recording_is_per_thread() -> R {
    let x = t(&[1.0, 2.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    // ops on x in another thread are not recorded on this thread's tape
    let x2 = x.clone();
    let y_other = std::thread::spawn(move || {
        assert!(!rime_tensor::record::is_recording());
        x2.exp()
    })
    .join()
    .unwrap();
    assert_eq!(tape.len(), 0);
    assert!(matches!(
        tape.gradient(&y_other.sum_all(), &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    // a tape on another thread works on its own while this one is active
    let v = Variable::new("shared", t(&[3.0], &[1]));
    let v2 = v.clone();
    let g_other = std::thread::spawn(move || {
        let tape = GradientTape::new();
        let y = v2.value().square().sum_all();
        let g = tape
            .gradient(&y, &[&v2])
            .unwrap()
            .remove(0)
            .unwrap()
            .to_vec();
        (g, live_nodes())
    })
    .join()
    .unwrap();
    assert_eq!(g_other.0, vec![6.0]);
    assert_eq!(g_other.1, 0, "the other thread's tape released its nodes");
    // that thread's read of v was not recorded here
    assert_eq!(tape.len(), 0);
    assert!(tape.watched_variables::<f64>().is_empty());
    let y = x.square().sum_all();
    assert_eq!(grad1(&tape, &y, &x), vec![2.0, 4.0]);
    Ok(())
}

#[test]
fn constants_reused_then_watched_and_outputs_used_much_later() -> R {
    let x = t(&[0.5, -1.0], &[2]);
    let c = t(&[2.0, 3.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    // c is a constant in a chain of ops...
    let mut z = x.clone();
    for _ in 0..3 {
        z = z.mul(&c)?;
    }
    let early = x.exp(); // an output used again much later
    for _ in 0..50 {
        let _ = z.sin();
    }
    // ...then becomes a watched source
    tape.watch(&c);
    let w = z.mul(&c)?.add(&early)?.sum_all();
    let g = tape.gradient(&w, &[&x, &c])?;
    // w = x c⁴ + eˣ (only the last multiplication by c is seen as c's)
    let gx: Vec<f64> = [0.5f64, -1.0]
        .iter()
        .zip([2.0f64, 3.0])
        .map(|(x, c)| c.powi(4) + x.exp())
        .collect();
    assert_close(&g[0].as_ref().unwrap().to_vec(), &gx, 1e-12, 0.0, "d/dx");
    let gc: Vec<f64> = [0.5f64, -1.0]
        .iter()
        .zip([2.0f64, 3.0])
        .map(|(x, c)| x * c.powi(3))
        .collect();
    assert_close(
        &g[1].as_ref().unwrap().to_vec(),
        &gc,
        1e-12,
        0.0,
        "d/dc after watching",
    );
    Ok(())
}

#[test]
fn documented_rules_at_ties_and_kinks() -> R {
    let tape = GradientTape::persistent();
    let g = |y: &Tensor<f64>, x: &Tensor<f64>| grad1(&tape, &y.sum_all(), x);
    let x = t(&[-1.0, 0.0, 2.0], &[3]);
    tape.watch(&x);
    // relu and abs: 0 at the kink
    assert_eq!(g(&x.relu(), &x), vec![0.0, 0.0, 1.0]);
    assert_eq!(g(&x.abs(), &x), vec![-1.0, 0.0, 1.0]);
    // clamp: the gradient passes at the bounds
    assert_eq!(g(&x.clamp(0.0, 2.0)?, &x), vec![0.0, 1.0, 1.0]);
    // maximum / minimum: a tie sends the gradient to the first operand
    let a = t(&[1.0, 5.0], &[2]);
    let b = t(&[1.0, 3.0], &[2]);
    tape.watch(&a);
    tape.watch(&b);
    let m = a.maximum(&b)?.sum_all();
    let gm = tape.gradient(&m, &[&a, &b])?;
    assert_eq!(gm[0].as_ref().unwrap().to_vec(), vec![1.0, 1.0]);
    assert_eq!(gm[1].as_ref().unwrap().to_vec(), vec![0.0, 0.0]);
    let m = a.minimum(&b)?.sum_all();
    let gm = tape.gradient(&m, &[&a, &b])?;
    assert_eq!(gm[0].as_ref().unwrap().to_vec(), vec![1.0, 0.0]);
    assert_eq!(gm[1].as_ref().unwrap().to_vec(), vec![0.0, 1.0]);
    // max / min reductions: tied maxima share the gradient equally
    let r = t(&[1.0, 3.0, 3.0, 0.0, 0.0, 0.0], &[2, 3]);
    tape.watch(&r);
    assert_eq!(
        g(&r.max(&[1], false)?, &r),
        vec![0.0, 0.5, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]
    );
    assert_eq!(
        g(&r.min(&[0], false)?, &r),
        vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
    // pow: d/db a^b = a^b ln a, taken as 0 where a <= 0
    let base = t(&[0.0, -2.0, 2.0], &[3]);
    let e = t(&[2.0, 2.0, 3.0], &[3]);
    tape.watch(&base);
    tape.watch(&e);
    let p = base.pow(&e)?.sum_all();
    let gp = tape.gradient(&p, &[&base, &e])?;
    assert_eq!(gp[0].as_ref().unwrap().to_vec(), vec![0.0, -4.0, 12.0]);
    assert_eq!(
        gp[1].as_ref().unwrap().to_vec(),
        vec![0.0, 0.0, 8.0 * 2f64.ln()]
    );
    Ok(())
}

#[test]
fn gradients_across_dtypes() -> R {
    // an f32 variable computed on in f64 and brought back
    let w = Variable::new("w", Tensor::<f32>::from_vec(vec![1.5, -0.5], [2])?);
    let tape = GradientTape::new();
    let y64 = w.value().cast::<f64>().powf(3.0).sum_all();
    let y = y64.cast::<f32>().add(&w.value().sum_all())?;
    let g = tape.gradient(&y, &[&w])?.remove(0).unwrap();
    // 3w² + 1
    assert_eq!(g.to_vec(), vec![3.0 * 2.25 + 1.0, 3.0 * 0.25 + 1.0]);
    Ok(())
}

#[test]
fn hessian_as_the_jacobian_of_a_gradient() -> R {
    // f = x0² x1 + sin x1: H = [[2 x1, 2 x0], [2 x0, -sin x1]]
    let x = t(&[0.7, -1.3], &[2]);
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    let x0 = x.slice(&[0..1])?;
    let x1 = x.slice(&[1..2])?;
    let f = x0.square().mul(&x1)?.add(&x1.sin())?.sum_all();
    let g = inner.gradient(&f, &[&x])?.remove(0).unwrap();
    let h = outer.jacobian(&g, &x)?.unwrap();
    assert_eq!(h.shape(), &[2, 2]);
    let want = [2.0 * -1.3, 2.0 * 0.7, 2.0 * 0.7, -(-1.3f64).sin()];
    assert_close(&h.to_vec(), &want, 1e-15, 0.0, "hessian");
    Ok(())
}

/// Integer tensors are never differentiable: ops on them are not recorded,
/// a value that passes through an integer type is cut from its source
/// (`gradient` gives `None`, zeros when asked, and `gradient_of` a typed
/// `Unconnected` error, never a panic), while integer ids still route the
/// gradient of the float values they select. (Watching an integer tensor
/// or asking for a gradient with respect to one does not compile: see
/// rime-layers' `Target`.)
#[test]
fn integer_tensors_are_never_differentiable() {
    let x = t(&[1.5, -2.5, 3.0], &[3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let before = tape.len();
    let ids = Tensor::from_vec(vec![2i64, 0, 2, 1], [2, 2]).unwrap();
    let moved = ids.t().unwrap().reshape([4]).unwrap();
    let _ = Tensor::concat(&[&moved, &moved], 0)
        .unwrap()
        .gather(0, &ids)
        .unwrap();
    assert_eq!(tape.len(), before, "integer ops record nothing");

    // through an integer type and back: a constant
    let rounded = x.to_dtype::<i64>().unwrap().to_dtype::<f64>().unwrap();
    assert_eq!(rounded.to_vec(), vec![1.0, -2.0, 3.0]);
    let y = rounded.mul(&x).unwrap().sum_all();
    assert_eq!(
        grad1(&tape, &y, &x),
        vec![1.0, -2.0, 3.0],
        "only the float factor"
    );
    // a target reached from `x` only through the integers is not recorded
    assert!(matches!(
        tape.gradient(&rounded.sum_all(), &[&x]),
        Err(Error::TargetNotRecorded { .. })
    ));
    // recorded through another source, it has no gradient for `x`
    let w = t(&[2.0], &[1]);
    tape.watch(&w);
    let cut = rounded.mul(&w).unwrap().sum_all();
    assert!(tape.gradient(&cut, &[&x]).unwrap()[0].is_none());
    let zeros = tape
        .gradient_of_with(&cut, &x, UnconnectedGradients::Zero)
        .unwrap();
    assert_eq!(zeros.to_vec(), vec![0.0; 3]);
    assert!(matches!(
        tape.gradient_of(&cut, &x),
        Err(Error::Unconnected { .. })
    ));

    // integer ids select rows: the gradient reaches the selected values
    let picked = x.gather(0, &ids).unwrap().square().sum_all();
    assert_eq!(
        grad1(&tape, &picked, &x),
        vec![2.0 * 1.5, 2.0 * -2.5, 4.0 * 3.0]
    );
    // and ids converted to floats are an ordinary (unwatched) constant
    let scale = ids.to_dtype::<f64>().unwrap().sum_all();
    let z = x.sum_all().mul(&scale).unwrap();
    assert_eq!(grad1(&tape, &z, &x), vec![5.0; 3]);
}
