//! Bad input gets a typed error and changes nothing (the tape still answers
//! correctly afterwards, variables keep their values), and everything a tape
//! records is released when it is dropped, reset or used up.

mod common;

use common::t;
use rime_tape::{
    Error, GradientOptions, GradientTape, TrainableMask, UnconnectedGradients, Variable,
    custom_gradient, live_nodes,
};
use rime_tensor::{Shape, Tensor};

type R = rime_tape::Result<()>;

fn only(g: Vec<Option<Tensor<f64>>>) -> Vec<f64> {
    g.into_iter().next().flatten().expect("connected").to_vec()
}

#[test]
fn target_not_recorded_names_the_target() -> R {
    let x = t(&[1.0, 2.0], &[2]);
    let unrelated = t(&[5.0, 6.0, 7.0], &[3]);
    for persistent in [false, true] {
        let tape = GradientTape::builder().persistent(persistent).start();
        tape.watch(&x);
        let y = x.square().sum_all();
        let z = unrelated.exp();
        match tape.gradient_with(&[&y, &z], &[&x], GradientOptions::default()) {
            Err(Error::TargetNotRecorded { call, index, shape }) => {
                assert_eq!(call, "gradient");
                assert_eq!(index, 1);
                assert_eq!(shape, Shape::from([3]));
            }
            other => panic!("expected TargetNotRecorded, got {other:?}"),
        }
        let msg = tape.gradient(&z, &[&x]).unwrap_err().to_string();
        assert!(msg.contains("not recorded") && msg.contains("[3]"), "{msg}");
        assert!(matches!(
            tape.jacobian(&z, &x),
            Err(Error::TargetNotRecorded {
                call: "jacobian",
                ..
            })
        ));
        // the failed calls used nothing up: even a non-persistent tape answers
        assert_eq!(only(tape.gradient(&y, &[&x])?), vec![2.0, 4.0]);
    }
    Ok(())
}

#[test]
fn a_used_up_tape_is_a_typed_error_every_time() -> R {
    let x = t(&[2.0], &[1]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = x.square().sum_all();
    assert_eq!(only(tape.gradient(&y, &[&x])?), vec![4.0]);
    for _ in 0..3 {
        assert!(matches!(
            tape.gradient(&y, &[&x]),
            Err(Error::TapeExhausted { call: "gradient" })
        ));
    }
    assert!(matches!(
        tape.jacobian(&y, &x),
        Err(Error::TapeExhausted { call: "jacobian" })
    ));
    let y2 = t(&[1.0, 2.0], &[2, 1]);
    assert!(matches!(
        tape.batch_jacobian(&y2, &y2),
        Err(Error::TapeExhausted { .. })
    ));
    Ok(())
}

#[test]
fn custom_gradients_of_the_wrong_shape_or_count_are_typed_errors() -> R {
    let x = t(&[1.0, 2.0, 3.0], &[3]);
    let w = Variable::new("w", t(&[0.5, -0.5, 2.0], &[3]));
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let good = x.mul(&w.value())?.sum_all();
    let bad_shape = custom_gradient(
        "bad_shape",
        &[&x],
        |xs| Ok(xs[0].sin()),
        |_, _, _| Ok(vec![Some(Tensor::<f64>::ones([2]).unwrap())]),
    )?
    .sum_all();
    let bad_count = custom_gradient(
        "bad_count",
        &[&x],
        |xs| Ok(xs[0].cos()),
        |_, _, dy| Ok(vec![Some(dy.clone()), None]),
    )?
    .sum_all();
    let failing = custom_gradient(
        "failing",
        &[&x],
        |xs| Ok(xs[0].exp()),
        |_, _, dy| Ok(vec![Some(dy.reshape([7])?)]),
    )?
    .sum_all();
    let values_before = w.to_vec();
    let len_before = tape.len();
    match tape.gradient(&bad_shape, &[&x]) {
        Err(Error::CustomGradient { name, msg }) => {
            assert_eq!(name, "bad_shape");
            assert!(msg.contains("[2]") && msg.contains("[3]"), "{msg}");
        }
        other => panic!("expected CustomGradient, got {other:?}"),
    }
    match tape.gradient(&bad_count, &[&x]) {
        Err(Error::CustomGradient { name, msg }) => {
            assert_eq!(name, "bad_count");
            assert!(msg.contains('2') && msg.contains('1'), "{msg}");
        }
        other => panic!("expected CustomGradient, got {other:?}"),
    }
    // an error inside the user's backward is passed on as it is
    assert!(matches!(
        tape.gradient(&failing, &[&x]),
        Err(Error::Tensor(_))
    ));
    // several targets, one of them bad: an error, nothing half-done
    assert!(
        tape.gradient_with(&[&good, &bad_shape], &[&x], GradientOptions::default())
            .is_err()
    );
    // the tape and the variable are as they were
    assert_eq!(tape.len(), len_before);
    assert_eq!(w.to_vec(), values_before);
    let g = tape.gradient(
        &good,
        &[rime_tape::Source::from(&x), rime_tape::Source::from(&w)],
    )?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![0.5, -0.5, 2.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![1.0, 2.0, 3.0]);

    // a non-persistent tape is not used up by a failing call
    let once = GradientTape::new();
    once.watch(&x);
    let bad = custom_gradient(
        "bad",
        &[&x],
        |xs| Ok(xs[0].clone()),
        |_, _, _| Ok(vec![Some(Tensor::<f64>::ones([1]).unwrap())]),
    )?
    .sum_all();
    let fine = x.square().sum_all();
    assert!(matches!(
        once.gradient(&bad, &[&x]),
        Err(Error::CustomGradient { .. })
    ));
    assert_eq!(only(once.gradient(&fine, &[&x])?), vec![2.0, 4.0, 6.0]);
    Ok(())
}

#[test]
fn bad_masks_and_assignments_leave_the_tape_answering() -> R {
    let w = Variable::new("w", t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let tape = GradientTape::persistent();
    let y = w.value().square().sum_all();
    assert!(matches!(
        w.set_mask(Some(TrainableMask::rows(0..3))),
        Err(Error::Mask { .. })
    ));
    assert!(matches!(
        w.assign(&t(&[0.0; 3], &[3])),
        Err(Error::AssignShape { .. })
    ));
    assert!(matches!(
        w.assign_add(&t(&[0.0; 2], &[2])),
        Err(Error::AssignShape { .. })
    ));
    assert_eq!(w.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    assert!(w.mask().is_none());
    assert_eq!(only(tape.gradient(&y, &[&w])?), vec![2.0, 4.0, 6.0, 8.0]);
    // a seed of the wrong shape, then the right call
    let seed = [t(&[1.0, 1.0], &[2])];
    assert!(matches!(
        tape.gradient_with(
            &[&y],
            &[&w],
            GradientOptions {
                output_gradients: Some(&seed),
                unconnected: UnconnectedGradients::None
            }
        ),
        Err(Error::OutputGradientShape { .. })
    ));
    assert_eq!(only(tape.gradient(&y, &[&w])?), vec![2.0, 4.0, 6.0, 8.0]);
    Ok(())
}

#[test]
fn empty_argument_lists_do_not_panic() -> R {
    let x = t(&[1.0], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = x.exp().sum_all();
    let none: [&Tensor<f64>; 0] = [];
    assert!(tape.gradient(&y, &none)?.is_empty());
    let g = tape.gradient_with(&[], &[&x], GradientOptions::default())?;
    assert_eq!(g.len(), 1);
    assert!(g[0].is_none());
    // an empty target and an empty source
    let e = Tensor::<f64>::zeros([0]).unwrap();
    tape.watch(&e);
    let ye = e.exp();
    assert_eq!(
        tape.gradient(&ye, &[&e])?[0].as_ref().unwrap().shape(),
        &[0]
    );
    assert_eq!(tape.jacobian(&ye, &e)?.unwrap().shape(), &[0, 0]);
    Ok(())
}

// ---- memory ---------------------------------------------------------------------------

#[test]
fn recorded_nodes_are_released_after_1e5_steps() -> R {
    assert_eq!(live_nodes(), 0, "a fresh test thread");
    let w = Variable::new("w", Tensor::<f32>::full([4], 0.5).unwrap());
    let c = Tensor::<f32>::ones([4]).unwrap();
    let mut steps = 0usize;

    // 1. a tape per step, dropped
    for _ in 0..250 {
        let tape = GradientTape::new();
        let mut z = w.value();
        for _ in 0..99 {
            z = z.add(&c)?;
        }
        steps += 100;
        assert_eq!(live_nodes(), 100);
        if steps.is_multiple_of(1000) {
            let g = tape.gradient(&z.sum_all(), &[&w])?;
            assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![1.0; 4]);
            assert_eq!(
                live_nodes(),
                0,
                "a used non-persistent tape releases its nodes"
            );
        }
    }
    assert_eq!(live_nodes(), 0);

    // 2. one persistent tape, reset every 1000 steps
    let tape = GradientTape::persistent();
    for round in 0..25 {
        let mut z = w.value();
        for _ in 0..999 {
            z = z.mul(&c)?;
        }
        steps += 1000;
        assert_eq!(live_nodes(), 1000);
        if round % 5 == 0 {
            let _ = tape.gradient(&z.sum_all(), &[&w])?;
            let _ = tape.gradient(&z.sum_all(), &[&w])?;
        }
        tape.reset();
        assert_eq!(live_nodes(), 0);
    }
    drop(tape);

    // 3. nested tapes (a second derivative per step), dropped in either order
    let x = Tensor::<f64>::full([2], 0.3).unwrap();
    for i in 0..5000 {
        let outer = GradientTape::new();
        outer.watch(&x);
        let inner = GradientTape::new();
        inner.watch(&x);
        let y = x.sin().mul(&x)?.sum_all();
        let g = inner.gradient(&y, &[&x])?.remove(0).unwrap();
        let h = outer.gradient(&g.sum_all(), &[&x])?.remove(0).unwrap();
        // d²/dx² x sin x = 2 cos x - x sin x
        assert!((h.to_vec()[0] - (2.0 * 0.3f64.cos() - 0.3 * 0.3f64.sin())).abs() < 1e-14);
        if i % 2 == 0 {
            drop(outer);
            drop(inner);
        } else {
            drop(inner);
            drop(outer);
        }
        steps += 10;
        assert_eq!(live_nodes(), 0);
    }

    // 4. tapes that recorded and then failed, or were never asked
    for _ in 0..2000 {
        let tape = GradientTape::persistent();
        let a = w.value().exp();
        let b = a.mul(&a)?;
        steps += 3;
        let bad = custom_gradient(
            "bad",
            &[&b],
            |xs| Ok(xs[0].clone()),
            |_, _, _| Ok(vec![Some(Tensor::<f32>::ones([1]).unwrap())]),
        )?;
        assert!(tape.gradient(&bad.sum_all(), &[&w]).is_err());
        assert!(live_nodes() > 0);
    }
    assert_eq!(live_nodes(), 0);
    assert!(steps >= 100_000, "{steps} steps");
    Ok(())
}

/// What a node holds is dropped with it, not only counted: a custom
/// gradient's closure (and what it captures) is released when its tape is
/// dropped, reset or used up.
#[test]
fn recorded_closures_are_released() -> R {
    let sentinel = std::sync::Arc::new(());
    let x = t(&[1.0, 2.0], &[2]);
    let record = |tape: &GradientTape| {
        tape.watch(&x);
        let s = sentinel.clone();
        custom_gradient(
            "holds",
            &[&x],
            |xs| Ok(xs[0].exp()),
            move |_, y, dy| {
                let _keep = &s;
                Ok(vec![Some(dy.mul(y)?)])
            },
        )
    };
    // dropped
    {
        let tape = GradientTape::new();
        let _y = record(&tape)?;
        assert_eq!(std::sync::Arc::strong_count(&sentinel), 2);
    }
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 1);
    // reset
    let tape = GradientTape::persistent();
    let _y = record(&tape)?;
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 2);
    tape.reset();
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 1);
    // used up
    let tape = GradientTape::new();
    let y = record(&tape)?;
    assert_eq!(
        only(tape.gradient(&y.sum_all(), &[&x])?),
        vec![1f64.exp(), 2f64.exp()]
    );
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 1);
    assert_eq!(live_nodes(), 0);
    Ok(())
}
