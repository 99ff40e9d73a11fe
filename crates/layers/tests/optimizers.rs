//! Optimizers: each formula against a scalar re-derivation of Keras 3's
//! update (written out here step by step from Keras' source), masks,
//! clipping, schedules, constraints and bad input. Trajectories against
//! Keras itself are in the facade's parity tests (tests/parity.rs).

use std::sync::Arc;

use rime_layers::Error;
use rime_layers::constraints::WeightConstraint;
use rime_layers::optimizers::{
    Adam, AdamW, CosineDecay, ExponentialDecay, Optimizer, PiecewiseConstantDecay, RmsProp, Sgd,
};
use rime_tape::{Constraint, TrainableMask, Variable};
use rime_tensor::Tensor;

/// A fixed sequence of gradients for a 3-element variable.
fn grads(step: usize) -> Vec<f64> {
    let s = step as f64;
    vec![
        0.5 - 0.1 * s,
        -1.0 + 0.3 * s,
        2.0 * (-0.5f64).powi(step as i32),
    ]
}

const W0: [f64; 3] = [1.0, -2.0, 0.5];

/// Runs `steps` updates with `grads(k)` and returns the variable's values.
fn run(opt: &mut dyn Optimizer<f64>, steps: usize) -> Vec<f64> {
    let w = Variable::new("w", Tensor::from_vec(W0.to_vec(), [3]).unwrap());
    for k in 0..steps {
        let g = Tensor::from_vec(grads(k), [3]).unwrap();
        opt.apply_gradients(&[Some(g)], std::slice::from_ref(&w))
            .unwrap();
    }
    w.to_vec()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Keras 3 formulas, one element at a time.
fn reference(steps: usize, mut update: impl FnMut(usize, f64, &mut f64, usize)) -> Vec<f64> {
    let mut w = W0.to_vec();
    for k in 0..steps {
        for (i, g) in grads(k).into_iter().enumerate() {
            update(k, g, &mut w[i], i);
        }
    }
    w
}

#[test]
fn sgd_plain_momentum_and_nesterov() {
    let lr = 0.1;
    let plain = reference(5, |_, g, w, _| *w -= lr * g);
    assert_close(
        &run(&mut Sgd::new().learning_rate(lr), 5),
        &plain,
        1e-14,
        "sgd",
    );

    for nesterov in [false, true] {
        let mut m = [0.0; 3];
        let expected = reference(5, |_, g, w, i| {
            m[i] = m[i] * 0.9 - g * lr;
            *w += if nesterov { m[i] * 0.9 - g * lr } else { m[i] };
        });
        let mut opt = Sgd::new()
            .learning_rate(lr)
            .momentum(0.9)
            .nesterov(nesterov);
        assert_close(&run(&mut opt, 5), &expected, 1e-14, "sgd momentum");
    }
}

#[test]
fn rmsprop_plain_centered_and_momentum() {
    let (lr, rho, eps) = (0.01, 0.9, 1e-7);
    for (centered, momentum) in [(false, 0.0), (true, 0.0), (false, 0.5), (true, 0.5)] {
        let (mut v, mut a, mut m) = ([0.0; 3], [0.0; 3], [0.0; 3]);
        let expected = reference(6, |_, g, w, i| {
            v[i] = rho * v[i] + (1.0 - rho) * g * g;
            let denominator = if centered {
                a[i] = rho * a[i] + (1.0 - rho) * g;
                v[i] - a[i] * a[i] + eps
            } else {
                v[i] + eps
            };
            let increment = lr * g / denominator.sqrt();
            if momentum > 0.0 {
                m[i] = momentum * m[i] + increment;
                *w -= m[i];
            } else {
                *w -= increment;
            }
        });
        let mut opt = RmsProp::new()
            .learning_rate(lr)
            .centered(centered)
            .momentum(momentum);
        let what = format!("rmsprop centered={centered} momentum={momentum}");
        assert_close(&run(&mut opt, 6), &expected, 1e-12, &what);
    }
}

fn adam_reference(steps: usize, lr: f64, amsgrad: bool, weight_decay: f64) -> Vec<f64> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7);
    let (mut m, mut v, mut vh) = ([0.0f64; 3], [0.0f64; 3], [0.0f64; 3]);
    reference(steps, |k, g, w, i| {
        *w -= *w * weight_decay * lr;
        let t = (k + 1) as f64;
        let alpha = lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
        m[i] += (g - m[i]) * (1.0 - b1);
        v[i] += (g * g - v[i]) * (1.0 - b2);
        let vv = if amsgrad {
            vh[i] = vh[i].max(v[i]);
            vh[i]
        } else {
            v[i]
        };
        *w -= m[i] * alpha / (vv.sqrt() + eps);
    })
}

#[test]
fn adam_amsgrad_and_adamw() {
    let lr = 0.05;
    for amsgrad in [false, true] {
        let expected = adam_reference(7, lr, amsgrad, 0.0);
        let mut opt = Adam::new().learning_rate(lr).amsgrad(amsgrad);
        assert_close(&run(&mut opt, 7), &expected, 1e-12, "adam");
    }
    let expected = adam_reference(7, lr, false, 0.1);
    let mut opt = AdamW::new().learning_rate(lr).weight_decay(0.1);
    assert_close(&run(&mut opt, 7), &expected, 1e-12, "adamw");
    // AdamW's default decay is Keras' 0.004
    let expected = adam_reference(3, 0.001, false, 0.004);
    assert_close(
        &run(&mut AdamW::new(), 3),
        &expected,
        1e-12,
        "adamw defaults",
    );
}

#[test]
fn keras_defaults_in_config() {
    let c = Optimizer::<f32>::get_config(&Sgd::new());
    assert_eq!(c["learning_rate"], 0.01);
    assert_eq!(c["momentum"], 0.0);
    let c = Optimizer::<f32>::get_config(&RmsProp::new());
    assert_eq!(
        (c["learning_rate"].as_f64(), c["rho"].as_f64()),
        (Some(0.001), Some(0.9))
    );
    assert_eq!(c["epsilon"], 1e-7);
    let c = Optimizer::<f32>::get_config(&Adam::new());
    assert_eq!(
        (c["beta_1"].as_f64(), c["beta_2"].as_f64()),
        (Some(0.9), Some(0.999))
    );
    let c = Optimizer::<f32>::get_config(&AdamW::new());
    assert_eq!(c["weight_decay"], 0.004);
    assert_eq!(c["name"], "AdamW");
}

#[test]
fn clipping_by_value_norm_and_global_norm() {
    let w = || Variable::new("w", Tensor::<f64>::zeros([2]).unwrap());
    let g = || Some(Tensor::from_vec(vec![3.0, -4.0], [2]).unwrap()); // norm 5

    let v = w();
    Sgd::new()
        .learning_rate(1.0)
        .clipvalue(1.0)
        .apply_gradients(&[g()], std::slice::from_ref(&v))
        .unwrap();
    assert_eq!(v.to_vec(), vec![-1.0, 1.0]);

    let v = w();
    Sgd::new()
        .learning_rate(1.0)
        .clipnorm(1.0)
        .apply_gradients(&[g()], std::slice::from_ref(&v))
        .unwrap();
    assert_close(&v.to_vec(), &[-0.6, 0.8], 1e-15, "clipnorm");

    // below the threshold: untouched
    let v = w();
    Sgd::new()
        .learning_rate(1.0)
        .clipnorm(10.0)
        .apply_gradients(&[g()], std::slice::from_ref(&v))
        .unwrap();
    assert_eq!(v.to_vec(), vec![-3.0, 4.0]);

    // two variables, joint norm sqrt(25 + 144) = 13
    let (a, b) = (w(), Variable::new("b", Tensor::<f64>::zeros([1]).unwrap()));
    let gb = Some(Tensor::from_vec(vec![12.0], [1]).unwrap());
    Sgd::new()
        .learning_rate(1.0)
        .global_clipnorm(1.0)
        .apply_gradients(&[g(), gb], &[a.clone(), b.clone()])
        .unwrap();
    assert_close(&a.to_vec(), &[-3.0 / 13.0, 4.0 / 13.0], 1e-15, "global a");
    assert_close(&b.to_vec(), &[-12.0 / 13.0], 1e-15, "global b");
}

#[test]
fn schedules_drive_the_learning_rate() {
    // plain SGD with a gradient of 1: each step moves w by exactly lr(step)
    let w = Variable::new("w", Tensor::<f64>::zeros([1]).unwrap());
    let one = || vec![Some(Tensor::<f64>::ones([1]).unwrap())];
    let mut opt = Sgd::new().learning_rate_schedule(
        PiecewiseConstantDecay::new(vec![1, 2], vec![1.0, 0.5, 0.25]).unwrap(),
    );
    let mut moved = Vec::new();
    for _ in 0..4 {
        let before = w.to_vec()[0];
        opt.apply_gradients(&one(), std::slice::from_ref(&w))
            .unwrap();
        moved.push(before - w.to_vec()[0]);
    }
    // steps 0, 1 use 1.0 (step <= 1), step 2 uses 0.5, step 3 uses 0.25
    assert_eq!(moved, vec![1.0, 1.0, 0.5, 0.25]);

    let exp = ExponentialDecay::new(0.1, 2, 0.5).unwrap();
    let opt = Sgd::new().learning_rate_schedule(exp);
    assert_eq!(Optimizer::<f64>::current_learning_rate(&opt), 0.1);

    let mut opt = Sgd::new().learning_rate_schedule(CosineDecay::new(1.0, 2).unwrap());
    let w = Variable::new("w", Tensor::<f64>::zeros([1]).unwrap());
    for _ in 0..3 {
        opt.apply_gradients(&one(), std::slice::from_ref(&w))
            .unwrap();
    }
    // cosine at steps 0, 1, 2 of 2: 1, 0.5, 0
    assert_close(&w.to_vec(), &[-1.5], 1e-15, "cosine");
    assert_eq!(Optimizer::<f64>::iterations(&opt), 3);
}

fn frozen_first_row() -> (Variable<f64>, Vec<f64>) {
    let w0: Vec<f64> = (0..6).map(|i| 0.25 * i as f64 - 0.4).collect();
    let w = Variable::new("kernel", Tensor::from_vec(w0.clone(), [2, 3]).unwrap());
    (w, w0)
}

fn every_optimizer() -> Vec<Box<dyn Optimizer<f64>>> {
    vec![
        Box::new(Sgd::new().learning_rate(0.1).momentum(0.9).nesterov(true)),
        Box::new(
            RmsProp::new()
                .learning_rate(0.01)
                .momentum(0.9)
                .centered(true),
        ),
        Box::new(Adam::new().learning_rate(0.01).amsgrad(true)),
        Box::new(AdamW::new().learning_rate(0.01).weight_decay(0.3)),
        Box::new(
            Sgd::new()
                .learning_rate(0.1)
                .weight_decay(0.2)
                .clipnorm(0.5),
        ),
    ]
}

/// Gradients that are *not* zero at frozen elements (a user's own
/// gradients), so the optimizer itself must honour the mask.
fn dense_grad(step: usize) -> Tensor<f64> {
    Tensor::from_vec(
        (0..6).map(|i| ((i + step) as f64 * 0.7).sin()).collect(),
        [2, 3],
    )
    .unwrap()
}

#[test]
fn masks_keep_frozen_values_and_their_state_untouched() {
    for mut opt in every_optimizer() {
        let name = opt.name();
        let (w, w0) = frozen_first_row();
        // unmasked warm-up: every slot becomes non-zero
        for k in 0..5 {
            opt.apply_gradients(&[Some(dense_grad(k))], std::slice::from_ref(&w))
                .unwrap();
        }
        let before_w = w.to_vec();
        let before_slots = opt.slots(&w);
        assert!(
            before_slots
                .iter()
                .all(|(_, s)| s.as_slice()[..3].iter().all(|x| *x != 0.0))
                || before_slots.is_empty()
        );
        w.set_mask(Some(TrainableMask::freeze_rows(0..1))).unwrap();
        for k in 5..25 {
            opt.apply_gradients(&[Some(dense_grad(k))], std::slice::from_ref(&w))
                .unwrap();
        }
        let after = w.to_vec();
        for j in 0..3 {
            assert_eq!(
                after[j].to_bits(),
                before_w[j].to_bits(),
                "{name}: frozen element {j} moved"
            );
        }
        for j in 3..6 {
            assert_ne!(
                after[j], before_w[j],
                "{name}: trainable element {j} did not move"
            );
        }
        for ((slot, b), (_, a)) in before_slots.iter().zip(opt.slots(&w)) {
            for j in 0..3 {
                assert_eq!(
                    a.as_slice()[j].to_bits(),
                    b.as_slice()[j].to_bits(),
                    "{name}: slot {slot} of frozen element {j} changed"
                );
            }
        }
        assert_ne!(w0, after);
    }
}

#[test]
fn a_mask_from_the_start_leaves_frozen_state_at_zero() {
    let (w, w0) = frozen_first_row();
    w.set_mask(Some(TrainableMask::cols(1..3))).unwrap();
    let mut opt = Adam::new().learning_rate(0.1);
    for k in 0..4 {
        opt.apply_gradients(&[Some(dense_grad(k))], std::slice::from_ref(&w))
            .unwrap();
    }
    let after = w.to_vec();
    for (j, (a, b)) in after.iter().zip(&w0).enumerate() {
        assert_eq!(j % 3 == 0, a == b, "element {j}");
    }
    for (name, slot) in opt.slots(&w) {
        for j in [0, 3] {
            assert_eq!(slot.as_slice()[j], 0.0, "{name} of frozen element {j}");
        }
    }
}

#[derive(Debug)]
struct WrongShape;
impl Constraint<f64> for WrongShape {
    fn apply(&self, _: &Tensor<f64>) -> rime_tensor::Result<Tensor<f64>> {
        Tensor::zeros([1])
    }
}

#[test]
fn constraints_apply_after_the_update_but_never_to_frozen_elements() {
    let w = Variable::new(
        "w",
        Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]).unwrap(),
    );
    w.set_constraint(Some(Arc::new(WeightConstraint::NonNeg)));
    let g = Tensor::from_vec(vec![2.0, 1.0, 5.0, 1.0], [2, 2]).unwrap();
    Sgd::new()
        .learning_rate(1.0)
        .apply_gradients(&[Some(g.clone())], std::slice::from_ref(&w))
        .unwrap();
    assert_eq!(w.to_vec(), vec![0.0, 1.0, 0.0, 3.0]);

    // a max-norm over each column would rescale the frozen first row too
    let w = Variable::new(
        "w",
        Tensor::from_vec(vec![3.0, 0.0, 4.0, 0.0], [2, 2]).unwrap(),
    );
    w.set_constraint(Some(Arc::new(WeightConstraint::MaxNorm {
        max_value: 1.0,
        axis: 0,
    })));
    w.set_mask(Some(TrainableMask::freeze_rows(0..1))).unwrap();
    let zero = Tensor::<f64>::zeros([2, 2]).unwrap();
    Sgd::new()
        .apply_gradients(&[Some(zero)], std::slice::from_ref(&w))
        .unwrap();
    let v = w.to_vec();
    assert_eq!(v[0], 3.0, "frozen element kept");
    assert!(
        (v[2] - 0.8).abs() < 1e-6,
        "trainable element projected: {}",
        v[2]
    );
}

#[test]
fn bad_calls_change_nothing() {
    let a = Variable::new("a", Tensor::<f64>::ones([2]).unwrap());
    let b = Variable::new("b", Tensor::<f64>::ones([3]).unwrap());
    let ok = Some(Tensor::<f64>::ones([2]).unwrap());
    let bad = Some(Tensor::<f64>::ones([2]).unwrap()); // b is [3]
    let vars = [a.clone(), b.clone()];
    let mut opt = Adam::new();

    let err = opt.apply_gradients(&[ok.clone(), bad], &vars).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Adam") && msg.contains("`b`") && msg.contains("[3]"),
        "{msg}"
    );
    assert!(matches!(err, Error::InvalidArgument { .. }));

    assert!(
        opt.apply_gradients(&[None, None], &vars)
            .unwrap_err()
            .to_string()
            .contains("no gradients")
    );
    assert!(
        opt.apply_gradients(std::slice::from_ref(&ok), &vars)
            .is_err()
    );
    assert!(
        opt.apply_gradients(&[ok.clone(), ok.clone()], &[a.clone(), a.clone()])
            .is_err()
    );

    // a constraint that fails after a good variable: nothing is written
    b.set_constraint(Some(Arc::new(WrongShape)));
    let gb = Some(Tensor::<f64>::ones([3]).unwrap());
    let err = opt.apply_gradients(&[ok.clone(), gb], &vars).unwrap_err();
    assert!(err.to_string().contains("constraint"), "{err}");

    assert_eq!(a.to_vec(), vec![1.0, 1.0]);
    assert_eq!(b.to_vec(), vec![1.0, 1.0, 1.0]);
    assert_eq!(Optimizer::<f64>::iterations(&opt), 0);
    assert!(opt.slots(&a).is_empty());

    // bad hyperparameters are reported at the first update
    for mut o in [
        Box::new(Sgd::new().momentum(1.5)) as Box<dyn Optimizer<f64>>,
        Box::new(Sgd::new().clipnorm(1.0).clipvalue(1.0)),
        Box::new(RmsProp::new().rho(-0.1)),
        Box::new(Adam::new().beta_1(f64::NAN)),
        Box::new(Sgd::new().learning_rate(-1.0)),
    ] {
        assert!(
            o.apply_gradients(std::slice::from_ref(&ok), std::slice::from_ref(&a))
                .is_err(),
            "{}",
            o.name()
        );
    }
    assert_eq!(a.to_vec(), vec![1.0, 1.0]);
}

#[test]
fn none_gradients_skip_their_variables() {
    let a = Variable::new("a", Tensor::<f32>::ones([2]).unwrap());
    let b = Variable::new("b", Tensor::<f32>::ones([2]).unwrap());
    let mut opt = Sgd::new().learning_rate(0.5).weight_decay(0.1);
    opt.apply_gradients(
        &[None, Some(Tensor::ones([2]).unwrap())],
        &[a.clone(), b.clone()],
    )
    .unwrap();
    assert_eq!(
        a.to_vec(),
        vec![1.0, 1.0],
        "no gradient: no update and no decay"
    );
    assert_eq!(b.to_vec(), vec![1.0 - 0.05 - 0.5; 2]);
}

/// A long-lived optimizer fed a fresh variable every step keeps state only
/// for variables that are still alive (it held all 10^4 before).
#[test]
fn state_of_dropped_variables_is_released() {
    let mut opt = Adam::new().learning_rate(0.01);
    let keep = Variable::new("kept", Tensor::<f32>::ones([4]).unwrap());
    let g = Some(Tensor::<f32>::ones([4]).unwrap());
    let mut most = 0;
    for i in 0..10_000 {
        let fresh = Variable::new("fresh", Tensor::<f32>::full([4], i as f32).unwrap());
        opt.apply_gradients(&[g.clone(), g.clone()], &[keep.clone(), fresh])
            .unwrap();
        most = most.max(Optimizer::<f32>::tracked_variables(&opt));
    }
    assert!(most <= 2, "state held for {most} variables");
    // the last fresh variable is gone too: released at the next update
    opt.apply_gradients(std::slice::from_ref(&g), std::slice::from_ref(&keep))
        .unwrap();
    assert_eq!(
        Optimizer::<f32>::tracked_variables(&opt),
        1,
        "only the kept variable's"
    );
    assert_eq!(opt.slots(&keep).len(), 2, "its m and v survive");
    assert_eq!(Optimizer::<f32>::iterations(&opt), 10_001);
}

// ---- fused updates (gradient_deferred + apply_deferred) against unfused ----

mod fused {
    use std::sync::Arc;

    use rime_layers::constraints::WeightConstraint;
    use rime_layers::initializers::Initializer;
    use rime_layers::losses::MeanSquaredError;
    use rime_layers::optimizers::{Adam, AdamW, Optimizer, RmsProp, Sgd};
    use rime_layers::{BatchNormalization, Conv2D, Dense, Flatten, Layer, Sequential, TrainStep};
    use rime_tape::{Constraint, TrainableMask};
    use rime_tensor::{Element, Tensor};

    /// The optimizers under test, each built by `base` options.
    macro_rules! all_optimizers {
        ($opts:expr) => {{
            let o = $opts;
            let v: Vec<(&str, Box<dyn Optimizer<T>>)> = vec![
                ("sgd", Box::new(o.apply_sgd(Sgd::new().learning_rate(0.05)))),
                (
                    "sgd momentum",
                    Box::new(o.apply_sgd(Sgd::new().learning_rate(0.05).momentum(0.9))),
                ),
                (
                    "sgd nesterov",
                    Box::new(
                        o.apply_sgd(Sgd::new().learning_rate(0.05).momentum(0.8).nesterov(true)),
                    ),
                ),
                (
                    "adam",
                    Box::new(o.apply_adam(Adam::new().learning_rate(0.01))),
                ),
                (
                    "adam amsgrad",
                    Box::new(o.apply_adam(Adam::new().learning_rate(0.01).amsgrad(true))),
                ),
                (
                    "adamw",
                    Box::new(o.apply_adamw(AdamW::new().learning_rate(0.01))),
                ),
                (
                    "rmsprop",
                    Box::new(o.apply_rms(RmsProp::new().learning_rate(0.01))),
                ),
                (
                    "rmsprop momentum",
                    Box::new(o.apply_rms(RmsProp::new().learning_rate(0.01).momentum(0.5))),
                ),
                (
                    "rmsprop centered",
                    Box::new(o.apply_rms(RmsProp::new().learning_rate(0.01).centered(true))),
                ),
                (
                    "rmsprop centered momentum",
                    Box::new(
                        o.apply_rms(
                            RmsProp::new()
                                .learning_rate(0.01)
                                .centered(true)
                                .momentum(0.5),
                        ),
                    ),
                ),
            ];
            v
        }};
    }

    /// Base options applied to every optimizer.
    #[derive(Clone, Copy, Default, Debug)]
    struct Opts {
        weight_decay: Option<f64>,
        clipvalue: Option<f64>,
        clipnorm: Option<f64>,
        global_clipnorm: Option<f64>,
    }

    macro_rules! base {
        ($name:ident, $ty:ty) => {
            fn $name(&self, mut o: $ty) -> $ty {
                if let Some(w) = self.weight_decay {
                    o = o.weight_decay(w);
                }
                if let Some(c) = self.clipvalue {
                    o = o.clipvalue(c);
                }
                if let Some(c) = self.clipnorm {
                    o = o.clipnorm(c);
                }
                if let Some(c) = self.global_clipnorm {
                    o = o.global_clipnorm(c);
                }
                o
            }
        };
    }

    impl Opts {
        base!(apply_sgd, Sgd);
        base!(apply_adam, Adam);
        base!(apply_adamw, AdamW);
        base!(apply_rms, RmsProp);
    }

    fn glorot(seed: u64) -> Initializer {
        Initializer::GlorotUniform { seed: Some(seed) }
    }

    /// A Dense model whose first kernel (300×64) spans two gradient
    /// blocks, or a Conv2D model (a fused Dense head).
    fn model<T: Element>(conv: bool, constrained: bool) -> Sequential<T> {
        let head = |d: Dense<T>| {
            if constrained {
                d.kernel_constraint(WeightConstraint::MaxNorm {
                    max_value: 0.5,
                    axis: 0,
                })
            } else {
                d
            }
        };
        let m = if conv {
            Sequential::new()
                .add(Conv2D::new(3, [3, 3]).kernel_initializer(glorot(1)))
                .add(BatchNormalization::new())
                .add(Flatten::new())
                .add(head(Dense::new(4).kernel_initializer(glorot(2))))
                .with_input_shape([6, 6, 2])
        } else {
            Sequential::new()
                .add(Dense::new(64).kernel_initializer(glorot(1)))
                .add(head(Dense::new(4).kernel_initializer(glorot(2))))
                .with_input_shape([300])
        };
        m.unwrap()
    }

    fn data<T: Element>(conv: bool, batch: usize, seed: u64) -> (Tensor<T>, Tensor<T>) {
        let mut rng = rime_tensor::seeded_rng(seed);
        let shape: Vec<usize> = if conv {
            vec![batch, 6, 6, 2]
        } else {
            vec![batch, 300]
        };
        let x = Tensor::rand_normal(shape.as_slice(), 0.0, 1.0, &mut rng).unwrap();
        let y = Tensor::rand_normal([batch, 4], 0.0, 1.0, &mut rng).unwrap();
        (x, y)
    }

    fn bits<T: Element>(ts: &[Tensor<T>]) -> Vec<u64> {
        ts.iter()
            .flat_map(|t| t.to_vec())
            .map(|x| x.to_f64().unwrap().to_bits())
            .collect()
    }

    /// Trains two copies of one model, fused and unfused, one step per
    /// batch size in `batches` with each optimizer, and asserts the same
    /// weights and optimizer state bit for bit. (A batch of one makes the
    /// kernel gradients outer products, which the fused path computes
    /// element by element inside the update.)
    fn same_as_unfused<T: Element>(
        conv: bool,
        opts: Opts,
        mask: Option<TrainableMask>,
        batches: &[usize],
    ) {
        let n = all_optimizers!(opts).len();
        for k in 0..n {
            let (name, opt_a) = all_optimizers!(opts).swap_remove(k);
            let (_, opt_b) = all_optimizers!(opts).swap_remove(k);
            let (a, b) = (model::<T>(conv, false), model::<T>(conv, false));
            b.set_weights(&a.get_weights()).unwrap();
            for m in [&a, &b] {
                if let Some(mask) = &mask {
                    // the fused Dense kernel (after the conv kernel and
                    // bias and BatchNorm's gamma and beta)
                    let k = if conv { 4 } else { 0 };
                    m.trainable_weights()[k]
                        .set_mask(Some(mask.clone()))
                        .unwrap();
                }
            }
            let frozen_before = a.get_weights();
            let mut fused = TrainStep::new(&a, opt_a, MeanSquaredError::new());
            let mut plain =
                TrainStep::new(&b, opt_b, MeanSquaredError::new()).with_fused_updates(false);
            assert!(fused.fused_updates() && !plain.fused_updates());
            for (s, &batch) in batches.iter().enumerate() {
                let (x, y) = data::<T>(conv, batch, s as u64);
                let la = fused.run(&x, &y).unwrap();
                let lb = plain.run(&x, &y).unwrap();
                assert_eq!(
                    la.to_f64().unwrap().to_bits(),
                    lb.to_f64().unwrap().to_bits()
                );
            }
            let what = format!(
                "{name} {opts:?} conv={conv} mask={} batches={batches:?}",
                mask.is_some()
            );
            assert_eq!(
                bits(&a.get_weights()),
                bits(&b.get_weights()),
                "weights: {what}"
            );
            assert_ne!(
                bits(&a.get_weights()),
                bits(&frozen_before),
                "trained: {what}"
            );
            for (va, vb) in a.trainable_weights().iter().zip(b.trainable_weights()) {
                let slots = |o: &dyn Optimizer<T>, v| {
                    o.slots(v).into_iter().map(|(_, t)| t).collect::<Vec<_>>()
                };
                assert_eq!(
                    bits(&slots(fused.optimizer(), va)),
                    bits(&slots(plain.optimizer(), &vb)),
                    "slots of {}: {what}",
                    va.name()
                );
            }
        }
    }

    fn all_cases<T: Element>() {
        let none = Opts::default();
        let cases = [
            none,
            Opts {
                weight_decay: Some(0.01),
                ..none
            },
            Opts {
                clipvalue: Some(0.01),
                ..none
            },
            Opts {
                clipnorm: Some(0.1),
                ..none
            },
            Opts {
                global_clipnorm: Some(0.1),
                ..none
            },
        ];
        for conv in [false, true] {
            for opts in cases {
                for batches in [&[1][..], &[1, 3, 5], &[4, 1, 1]] {
                    same_as_unfused::<T>(conv, opts, None, batches);
                }
            }
        }
        // masks on the first kernel (300×64): row blocks (skipped blocks,
        // a frozen leading block), columns (runs starting and ending
        // mid-row), an irregular one, and one flat range starting mid-row
        // and ending mid-row 78 rows on, across both gradient blocks
        let irregular = || TrainableMask::predicate(|ix| (ix[0] * 7 + ix[1]) % 3 == 0);
        let flat = || TrainableMask::predicate(|ix| (100..5_100).contains(&(ix[0] * 64 + ix[1])));
        for mask in [
            TrainableMask::freeze_rows(0..260),
            TrainableMask::cols(3..9),
            irregular(),
            flat(),
        ] {
            let decay = Opts {
                weight_decay: Some(0.01),
                ..none
            };
            // batch 1 (outer products) after batch 3 and twice in a row,
            // so the outer path also meets slots it wrote itself
            same_as_unfused::<T>(false, decay, Some(mask.clone()), &[3, 1, 1]);
            let clip = Opts {
                clipvalue: Some(0.01),
                ..none
            };
            same_as_unfused::<T>(false, clip, Some(mask), &[1]);
        }
        // the head of the conv model: 48×4
        for mask in [
            TrainableMask::freeze_rows(5..30),
            TrainableMask::cols(1..3),
            irregular(),
        ] {
            same_as_unfused::<T>(true, none, Some(mask), &[1, 2]);
        }
    }

    #[test]
    fn fused_steps_match_unfused_bit_for_bit_f32() {
        all_cases::<f32>();
    }

    #[test]
    fn fused_steps_match_unfused_bit_for_bit_f64() {
        all_cases::<f64>();
    }

    #[test]
    fn constrained_kernels_take_the_unfused_path_with_the_same_result() {
        let (a, b) = (model::<f32>(false, true), model::<f32>(false, true));
        b.set_weights(&a.get_weights()).unwrap();
        let mut fused = TrainStep::new(&a, Adam::new(), MeanSquaredError::new());
        let mut plain =
            TrainStep::new(&b, Adam::new(), MeanSquaredError::new()).with_fused_updates(false);
        for s in 0..3 {
            let (x, y) = data::<f32>(false, 4, s);
            fused.run(&x, &y).unwrap();
            plain.run(&x, &y).unwrap();
        }
        assert_eq!(bits(&a.get_weights()), bits(&b.get_weights()));
    }

    /// A constraint that always fails.
    #[derive(Debug)]
    struct Fails;
    impl Constraint<f32> for Fails {
        fn apply(&self, w: &Tensor<f32>) -> rime_tensor::Result<Tensor<f32>> {
            Err(rime_tensor::Error::InvalidArgument {
                op: "Fails",
                msg: format!("refuses {}", w.shape()),
            })
        }
    }

    #[test]
    fn a_failing_fused_step_changes_nothing() {
        let m = model::<f32>(false, false);
        let (x, y) = data::<f32>(false, 3, 0);
        // the second kernel's constraint fails after the backward pass: the
        // first kernel's fused update must not have happened
        let vars = m.trainable_weights();
        vars[2].set_constraint(Some(Arc::new(Fails)));
        let before = m.get_weights();
        let mut step = TrainStep::new(&m, Sgd::new().momentum(0.9), MeanSquaredError::new());
        assert!(step.run(&x, &y).is_err());
        assert_eq!(bits(&m.get_weights()), bits(&before));
        assert_eq!(step.optimizer().iterations(), 0);
        assert!(step.optimizer().slots(&vars[0]).is_empty());
        // a learning rate that fails validation
        vars[2].set_constraint(None);
        let mut step = TrainStep::new(&m, Sgd::new().learning_rate(-1.0), MeanSquaredError::new());
        assert!(step.run(&x, &y).is_err());
        assert_eq!(bits(&m.get_weights()), bits(&before));
        // targets of the wrong shape fail in the loss
        let mut step = TrainStep::new(&m, Sgd::new(), MeanSquaredError::new());
        assert!(step.run(&x, &Tensor::zeros([3, 5]).unwrap()).is_err());
        assert_eq!(bits(&m.get_weights()), bits(&before));
        assert!(step.run(&x, &y).is_ok());
        assert_ne!(bits(&m.get_weights()), bits(&before));
    }

    /// A collective whose "other process" cancels every gradient: the
    /// mean it hands back is zero.
    struct Cancels(usize);
    impl rime_layers::collective::Collective for Cancels {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn broadcast_state(
            &mut self,
            _: &dyn Layer,
            _: &[rime_tape::Variable<f32>],
            _: &mut dyn Optimizer,
        ) -> rime_layers::Result<()> {
            Ok(())
        }
        fn exchange_step(
            &mut self,
            step: rime_layers::collective::StepExchange<'_>,
        ) -> rime_layers::Result<()> {
            self.0 += 1;
            for g in step.gradients.iter_mut().flatten() {
                *g = g.mul_scalar(0.0);
            }
            Ok(())
        }
        fn reduce_f64(
            &mut self,
            _: &mut [f64],
            _: rime_layers::collective::ReduceOp,
        ) -> rime_layers::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_step_with_a_collective_averages_before_updating_so_never_fuses() {
        let m = model::<f32>(false, false);
        let before = m.get_weights();
        let mut step =
            TrainStep::new(&m, Sgd::new(), MeanSquaredError::new()).with_collective(Cancels(0));
        assert!(!step.fused_updates());
        let (x, y) = data::<f32>(false, 3, 0);
        step.run(&x, &y).unwrap();
        // every gradient went through the exchange (which zeroed it)
        assert_eq!(bits(&m.get_weights()), bits(&before));
    }

    #[test]
    fn a_custom_loop_opts_in_with_the_same_result() {
        use rime_tape::GradientTape;
        let (a, b) = (model::<f64>(false, false), model::<f64>(false, false));
        b.set_weights(&a.get_weights()).unwrap();
        let (mut oa, mut ob) = (RmsProp::new().momentum(0.5), RmsProp::new().momentum(0.5));
        for s in 0..3 {
            let (x, y) = data::<f64>(false, 2, s);
            for (m, fused) in [(&a, true), (&b, false)] {
                let vars = m.trainable_weights();
                let tape = GradientTape::new();
                let loss = m
                    .call(&x, true)
                    .unwrap()
                    .sub(&y)
                    .unwrap()
                    .square()
                    .mean_all();
                if fused {
                    let g = tape.gradient_deferred(&loss, &vars).unwrap();
                    // kernels deferred, biases computed
                    assert!(matches!(
                        g[0],
                        Some(rime_tape::DeferredGradient::Product(_))
                    ));
                    assert!(matches!(g[1], Some(rime_tape::DeferredGradient::Dense(_))));
                    oa.apply_deferred(g, &vars).unwrap();
                } else {
                    let g = tape.gradient(&loss, &vars).unwrap();
                    ob.apply_gradients(&g, &vars).unwrap();
                }
            }
        }
        assert_eq!(bits(&a.get_weights()), bits(&b.get_weights()));
    }
}
