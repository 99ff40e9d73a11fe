//! `gradient_of` and `Gradients` (src/gradients.rs): the same numbers as
//! the list form `gradient`, typed errors, lookups by source.

use rime_tape::{Error, GradientTape, TrainableMask, UnconnectedGradients, Variable};
use rime_tensor::Tensor;

fn var(name: &str, data: Vec<f64>, shape: &[usize]) -> Variable<f64> {
    Variable::new(name, Tensor::from_vec(data, shape).unwrap())
}

#[test]
fn gradient_of_matches_the_list_form_and_the_analytic_value() {
    // loss = sum((x·w)²), d/dw = 2 xᵀ(x·w)
    let w = var("w", vec![0.5, -1.0, 2.0, 0.25], &[2, 2]);
    let x = Tensor::from_vec(vec![1.0, 2.0, -3.0, 0.5], [2, 2]).unwrap();
    let tape = GradientTape::persistent();
    let loss = x.matmul(&w.value()).unwrap().square().sum_all();
    let single = tape.gradient_of(&loss, &w).unwrap();
    let list = tape.gradient(&loss, &[&w]).unwrap().remove(0).unwrap();
    assert_eq!(single.to_vec(), list.to_vec());
    // x·w = [[4.5, -0.5], [-0.5, 3.125]]; 2 xᵀ(x·w)
    let expected = [
        2.0 * (1.0 * 4.5 + -3.0 * -0.5),
        2.0 * (1.0 * -0.5 + -3.0 * 3.125),
        2.0 * (2.0 * 4.5 + 0.5 * -0.5),
        2.0 * (2.0 * -0.5 + 0.5 * 3.125),
    ];
    for (g, e) in single.to_vec().iter().zip(expected) {
        assert!((g - e).abs() < 1e-12, "{g} vs {e}");
    }
}

#[test]
fn unconnected_is_a_typed_error_or_zeros_as_asked() {
    let w = var("w", vec![1.0, 2.0], &[2]);
    let unused = var("unused", vec![1.0, 2.0, 3.0], &[3]);
    let tape = GradientTape::persistent();
    let loss = w.value().square().sum_all();
    let err = tape.gradient_of(&loss, &unused).unwrap_err();
    assert!(matches!(err, Error::Unconnected { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("gradient_of") && msg.contains("[3]"), "{msg}");
    let zeros = tape
        .gradient_of_with(&loss, &unused, UnconnectedGradients::Zero)
        .unwrap();
    assert_eq!(zeros.to_vec(), vec![0.0; 3]);
    // the failed call did not use up anything: the tape still answers
    assert_eq!(
        tape.gradient_of(&loss, &w).unwrap().to_vec(),
        vec![2.0, 4.0]
    );
}

#[test]
fn gradient_of_honours_the_mask_and_a_non_persistent_tape_answers_once() {
    let w = var("w", vec![1.0; 6], &[3, 2]);
    w.set_mask(Some(TrainableMask::freeze_rows(0..1))).unwrap();
    let x = Tensor::from_vec(vec![1.0; 12], [4, 3]).unwrap();
    let tape = GradientTape::new();
    let loss = x.matmul(&w.value()).unwrap().sum_all();
    let g = tape.gradient_of(&loss, &w).unwrap();
    assert_eq!(g.to_vec(), vec![0.0, 0.0, 4.0, 4.0, 4.0, 4.0]);
    assert!(matches!(
        tape.gradient_of(&loss, &w),
        Err(Error::TapeExhausted { .. })
    ));
}

#[test]
fn gradients_are_looked_up_by_variable_and_tensor() {
    let w = var("w", vec![1.0, -2.0], &[2]);
    let b = var("b", vec![0.5], &[1]);
    let unused = var("unused", vec![0.0], &[1]);
    let x = Tensor::from_vec(vec![3.0, 4.0], [2]).unwrap();
    let tape = GradientTape::new();
    tape.watch(&x);
    // loss = Σ w·x + 3b
    let loss = w
        .value()
        .mul(&x)
        .unwrap()
        .sum_all()
        .add(&b.value().sum_all().mul_scalar(3.0))
        .unwrap();
    let grads = tape
        .gradients(
            &loss,
            &[(&w).into(), (&unused).into(), (&x).into(), (&b).into()]
                as &[rime_tape::Source<'_, f64>],
        )
        .unwrap();
    assert_eq!(grads.len(), 4);
    assert_eq!(grads[&w].to_vec(), vec![3.0, 4.0]);
    assert_eq!(grads[&b].to_vec(), vec![3.0]);
    assert_eq!(grads[&x].to_vec(), vec![1.0, -2.0]);
    assert!(grads.get(&unused).is_none());
    assert!(grads.contains(&unused));
    let stranger = var("stranger", vec![0.0], &[1]);
    assert!(!grads.contains(&stranger) && grads.get(&stranger).is_none());
    // positional view, as optimizers take it
    assert!(grads[1].is_none());
    assert_eq!(grads[3].as_ref().unwrap().to_vec(), vec![3.0]);
    let as_vec: Vec<Option<Tensor<f64>>> = grads.into();
    assert_eq!(as_vec.len(), 4);
}

#[test]
#[should_panic(expected = "was not among the gradient's sources")]
fn indexing_with_a_stranger_panics_with_a_message() {
    let w = var("w", vec![1.0], &[1]);
    let tape = GradientTape::new();
    let grads = tape.gradients(&w.value().sum_all(), &[&w]).unwrap();
    let stranger = var("stranger", vec![0.0], &[1]);
    let _ = &grads[&stranger];
}

#[test]
fn operators_are_recorded_like_the_methods() {
    // f = Σ (2·x·x − x/4 + 1 − 3/(1+x) ) ; df/dx = 4x − 1/4 + 3/(1+x)²
    let x = var("x", vec![0.5, -0.25, 2.0], &[3]);
    let tape = GradientTape::new();
    let xv = x.value();
    let f = (2.0 * &xv * &xv - &xv / 4.0 + 1.0 - 3.0 / (1.0 + xv.clone())).sum_all();
    let g = tape.gradient_of(&f, &x).unwrap();
    for (gi, xi) in g.to_vec().iter().zip([0.5f64, -0.25, 2.0]) {
        let want = 4.0 * xi - 0.25 + 3.0 / ((1.0 + xi) * (1.0 + xi));
        assert!((gi - want).abs() < 1e-12, "{gi} vs {want}");
    }
}
