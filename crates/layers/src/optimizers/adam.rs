//! [`Adam`] and [`AdamW`]: adaptive moment estimation, and its variant with
//! decoupled weight decay.

use std::ops::Range;

use rime_tensor::Element;
use serde_json::{Value, json};

use super::{AnyRule, Common, GradientSource, Rule, check_decay, check_positive, optimizer_common};
use crate::Result;

/// Adam (Keras 3's `Adam`; defaults: learning rate 0.001, β₁ 0.9, β₂ 0.999,
/// epsilon 1e-7, no amsgrad).
///
/// With `t` the step number (from 1): `α = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`,
/// `m ← m + (g−m)(1−β₁)`, `v ← v + (g²−v)(1−β₂)`, with amsgrad
/// `v̂ ← max(v̂, v)` used for `v`, and `w ← w − α·m/(√v + ε)` (Keras'
/// epsilon form: ε outside the root, added to the un-corrected `√v`).
///
/// ```
/// use rime_layers::optimizers::{Adam, Optimizer};
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f64>::full([1], 1.0)?);
/// let mut opt = Adam::new().learning_rate(0.1);
/// opt.apply_gradients(&[Some(Tensor::full([1], 3.0)?)], &[w.clone()])?;
/// // the first Adam step moves every element by about lr
/// assert!((w.to_vec()[0] - 0.9).abs() < 1e-6);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Debug)]
pub struct Adam {
    common: Common,
    rule: AdamRule,
}

/// AdamW: [`Adam`] with decoupled weight decay (Keras 3's `AdamW`; default
/// weight decay 0.004): before each update `w ← w − w·wd·lr`.
///
/// ```
/// use rime_layers::optimizers::{AdamW, Optimizer};
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f64>::full([1], 2.0)?);
/// let mut opt = AdamW::new().learning_rate(0.1).weight_decay(0.5);
/// // a zero gradient: only the decay moves the weight
/// opt.apply_gradients(&[Some(Tensor::zeros([1])?)], &[w.clone()])?;
/// assert!((w.to_vec()[0] - (2.0 - 2.0 * 0.5 * 0.1)).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Debug)]
pub struct AdamW {
    common: Common,
    rule: AdamWRule,
}

#[derive(Debug)]
pub(crate) struct AdamRule {
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    amsgrad: bool,
}

/// The same formula under AdamW's name.
#[derive(Debug)]
pub(crate) struct AdamWRule(AdamRule);

impl AdamRule {
    fn keras_defaults() -> Self {
        AdamRule {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            amsgrad: false,
        }
    }
}

impl Default for Adam {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for AdamW {
    fn default() -> Self {
        Self::new()
    }
}

/// β₁, β₂, epsilon and amsgrad builders, shared by Adam and AdamW.
macro_rules! adam_builders {
    ($ty:ident, $($rule:tt)+) => {
        impl $ty {
            /// Decay of the first-moment estimate (default 0.9).
            pub fn beta_1(mut self, beta_1: f64) -> Self {
                self.$($rule)+.beta_1 = beta_1;
                self
            }

            /// Decay of the second-moment estimate (default 0.999).
            pub fn beta_2(mut self, beta_2: f64) -> Self {
                self.$($rule)+.beta_2 = beta_2;
                self
            }

            /// Added to `√v` (default 1e-7).
            pub fn epsilon(mut self, epsilon: f64) -> Self {
                self.$($rule)+.epsilon = epsilon;
                self
            }

            /// Uses the maximum of past second moments (AMSGrad).
            pub fn amsgrad(mut self, amsgrad: bool) -> Self {
                self.$($rule)+.amsgrad = amsgrad;
                self
            }
        }
    };
}

impl Adam {
    /// Keras' defaults.
    pub fn new() -> Self {
        Adam {
            common: Common::new(0.001),
            rule: AdamRule::keras_defaults(),
        }
    }
}

impl AdamW {
    /// Keras' defaults: Adam's, and weight decay 0.004.
    pub fn new() -> Self {
        let mut common = Common::new(0.001);
        common.weight_decay = Some(0.004);
        AdamW {
            common,
            rule: AdamWRule(AdamRule::keras_defaults()),
        }
    }
}

adam_builders!(Adam, rule);
adam_builders!(AdamW, rule.0);
optimizer_common!(Adam, AdamRule);
optimizer_common!(AdamW, AdamWRule);

impl Rule for AdamRule {
    const NAME: &'static str = "Adam";

    fn any(&self) -> AnyRule<'_> {
        AnyRule::Adam(self)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        if self.amsgrad {
            &["momentum", "velocity", "velocity_hat"]
        } else {
            &["momentum", "velocity"]
        }
    }

    fn validate(&self, name: &str) -> Result<()> {
        check_decay(name, "beta_1", self.beta_1)?;
        check_decay(name, "beta_2", self.beta_2)?;
        check_positive(name, "epsilon", self.epsilon)
    }

    type Step<T: Element> = AdamStep<T>;

    fn step<T: Element>(&self, lr: T, iteration: u64) -> AdamStep<T> {
        let (b1, b2) = (T::of(self.beta_1), T::of(self.beta_2));
        let t = T::of((iteration + 1) as f64);
        AdamStep {
            alpha: lr * (T::one() - b2.powf(t)).sqrt() / (T::one() - b1.powf(t)),
            // Keras computes `1 - beta` on the Python float, then rounds: with
            // the default beta_2 = 0.999, `1 - (beta_2 as f32)` is 1.3e-5 off
            one_minus_b1: T::of(1.0 - self.beta_1),
            one_minus_b2: T::of(1.0 - self.beta_2),
            eps: T::of(self.epsilon),
        }
    }

    #[inline(always)] // into the caller's vectorized (AVX2/AVX-512) code
    fn update<T: Element, G: GradientSource<T>>(
        s: AdamStep<T>,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        let AdamStep {
            alpha,
            one_minus_b1,
            one_minus_b2,
            eps,
        } = s;
        let w = &mut w[run.clone()];
        // every slice exactly `n` long: the indexing below is then
        // check-free and the loops vectorize
        let n = w.len();
        let g = g.first(n);
        match slots {
            [m, v] => {
                let (m, v) = (&mut m[run.clone()][..n], &mut v[run][..n]);
                for i in 0..n {
                    let gi = g.at(i);
                    m[i] += (gi - m[i]) * one_minus_b1;
                    v[i] += (gi * gi - v[i]) * one_minus_b2;
                    w[i] -= (m[i] * alpha) / (v[i].sqrt() + eps);
                }
            }
            [m, v, v_hat] => {
                let (m, v, v_hat) = (
                    &mut m[run.clone()][..n],
                    &mut v[run.clone()][..n],
                    &mut v_hat[run][..n],
                );
                for i in 0..n {
                    let gi = g.at(i);
                    m[i] += (gi - m[i]) * one_minus_b1;
                    v[i] += (gi * gi - v[i]) * one_minus_b2;
                    v_hat[i] = v_hat[i].max(v[i]);
                    w[i] -= (m[i] * alpha) / (v_hat[i].sqrt() + eps);
                }
            }
            _ => unreachable!("Adam keeps two or three slots"),
        }
    }

    fn config(&self) -> Value {
        json!({
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        })
    }
}

impl Rule for AdamWRule {
    const NAME: &'static str = "AdamW";

    fn any(&self) -> AnyRule<'_> {
        AnyRule::AdamW(self)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        self.0.slot_names()
    }

    fn validate(&self, name: &str) -> Result<()> {
        self.0.validate(name)
    }

    type Step<T: Element> = AdamStep<T>;

    fn step<T: Element>(&self, lr: T, iteration: u64) -> AdamStep<T> {
        self.0.step(lr, iteration)
    }

    #[inline(always)] // into the caller's vectorized (AVX2/AVX-512) code
    fn update<T: Element, G: GradientSource<T>>(
        s: AdamStep<T>,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        AdamRule::update(s, w, g, slots, run)
    }

    fn config(&self) -> Value {
        self.0.config()
    }
}

/// Adam's constants for one step (its bias correction folded into the
/// step size `alpha`, as Keras does).
#[derive(Clone, Copy)]
pub(crate) struct AdamStep<T> {
    alpha: T,
    one_minus_b1: T,
    one_minus_b2: T,
    eps: T,
}
