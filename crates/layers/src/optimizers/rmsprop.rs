//! [`RmsProp`]: gradients scaled by a running RMS, optionally centered and
//! with momentum.

use std::ops::Range;

use rime_tensor::Element;
use serde_json::{Value, json};

use super::{
    AnyRule, Common, GradientSource, Rule, check_decay, check_positive, check_range,
    optimizer_common,
};
use crate::Result;

/// RMSprop (Keras 3's `RMSprop`; defaults: learning rate 0.001, rho 0.9,
/// momentum 0, epsilon 1e-7, not centered).
///
/// `v ← ρ·v + (1−ρ)·g²`; centered also keeps `ḡ ← ρ·ḡ + (1−ρ)·g` and uses
/// `v − ḡ²`; the increment is `lr·g / √(v + ε)` (epsilon inside the square
/// root, as Keras); with momentum `μ`: `m ← μ·m + increment`, `w ← w − m`,
/// else `w ← w − increment`.
///
/// ```
/// use rime_layers::optimizers::{Optimizer, RmsProp};
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f64>::full([1], 1.0)?);
/// let mut opt = RmsProp::new().learning_rate(0.01);
/// opt.apply_gradients(&[Some(Tensor::full([1], 2.0)?)], &[w.clone()])?;
/// // v = 0.1·4 = 0.4; w = 1 − 0.01·2/√(0.4 + 1e-7)
/// let expected = 1.0 - 0.02 / (0.4f64 + 1e-7).sqrt();
/// assert!((w.to_vec()[0] - expected).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Debug)]
pub struct RmsProp {
    common: Common,
    rule: RmsPropRule,
}

#[derive(Debug)]
pub(crate) struct RmsPropRule {
    rho: f64,
    momentum: f64,
    epsilon: f64,
    centered: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        Self::new()
    }
}

impl RmsProp {
    /// Keras' defaults.
    pub fn new() -> Self {
        RmsProp {
            common: Common::new(0.001),
            rule: RmsPropRule {
                rho: 0.9,
                momentum: 0.0,
                epsilon: 1e-7,
                centered: false,
            },
        }
    }

    /// Discount of the running average of squared gradients (default 0.9).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rule.rho = rho;
        self
    }

    /// Momentum `μ` in `[0, 1]` (default 0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.rule.momentum = momentum;
        self
    }

    /// Added inside the square root (default 1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.rule.epsilon = epsilon;
        self
    }

    /// Normalizes by the estimated variance instead of the second moment.
    pub fn centered(mut self, centered: bool) -> Self {
        self.rule.centered = centered;
        self
    }
}

optimizer_common!(RmsProp, RmsPropRule);

impl Rule for RmsPropRule {
    const NAME: &'static str = "RMSprop";

    fn any(&self) -> AnyRule<'_> {
        AnyRule::RmsProp(self)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        match (self.momentum > 0.0, self.centered) {
            (false, false) => &["velocity"],
            (true, false) => &["velocity", "momentum"],
            (false, true) => &["velocity", "average_gradient"],
            (true, true) => &["velocity", "momentum", "average_gradient"],
        }
    }

    fn validate(&self, name: &str) -> Result<()> {
        check_decay(name, "rho", self.rho)?;
        check_range(name, "momentum", self.momentum, 0.0, 1.0)?;
        check_positive(name, "epsilon", self.epsilon)
    }

    type Step<T: Element> = RmsPropStep<T>;

    fn step<T: Element>(&self, lr: T, _iteration: u64) -> RmsPropStep<T> {
        RmsPropStep {
            lr,
            rho: T::of(self.rho),
            // as Keras: `1 - rho` on the f64 value, then rounded
            one_minus_rho: T::of(1.0 - self.rho),
            eps: T::of(self.epsilon),
            mu: T::of(self.momentum),
            momentum: self.momentum > 0.0,
            centered: self.centered,
        }
    }

    #[inline(always)] // into the caller's vectorized (AVX2/AVX-512) code
    fn update<T: Element, G: GradientSource<T>>(
        s: RmsPropStep<T>,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        let RmsPropStep {
            lr,
            rho,
            one_minus_rho,
            eps,
            mu,
            momentum,
            centered,
        } = s;
        let w = &mut w[run.clone()];
        let n = w.len();
        let (v, rest) = slots.split_first_mut().expect("velocity slot");
        // every slice exactly `n` long: the indexing below is then
        // check-free and the loops vectorize
        let (g, v) = (g.first(n), &mut v[run.clone()][..n]);
        let mean_sq = |v: &mut T, gi: T| *v = rho * *v + one_minus_rho * (gi * gi);
        match (momentum, centered, rest) {
            (false, false, []) => {
                for i in 0..n {
                    let gi = g.at(i);
                    mean_sq(&mut v[i], gi);
                    w[i] -= lr * gi / (v[i] + eps).sqrt();
                }
            }
            (true, false, [m]) => {
                let m = &mut m[run][..n];
                for i in 0..n {
                    let gi = g.at(i);
                    mean_sq(&mut v[i], gi);
                    m[i] = mu * m[i] + lr * gi / (v[i] + eps).sqrt();
                    w[i] -= m[i];
                }
            }
            (false, true, [a]) => {
                let a = &mut a[run][..n];
                for i in 0..n {
                    let gi = g.at(i);
                    mean_sq(&mut v[i], gi);
                    a[i] = rho * a[i] + one_minus_rho * gi;
                    w[i] -= lr * gi / (v[i] - a[i] * a[i] + eps).sqrt();
                }
            }
            (true, true, [m, a]) => {
                let (m, a) = (&mut m[run.clone()][..n], &mut a[run][..n]);
                for i in 0..n {
                    let gi = g.at(i);
                    mean_sq(&mut v[i], gi);
                    a[i] = rho * a[i] + one_minus_rho * gi;
                    m[i] = mu * m[i] + lr * gi / (v[i] - a[i] * a[i] + eps).sqrt();
                    w[i] -= m[i];
                }
            }
            _ => unreachable!("RMSprop's slots follow its momentum and centered flags"),
        }
    }

    fn config(&self) -> Value {
        json!({
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        })
    }
}

/// RMSprop's constants for one step.
#[derive(Clone, Copy)]
pub(crate) struct RmsPropStep<T> {
    lr: T,
    rho: T,
    one_minus_rho: T,
    eps: T,
    mu: T,
    momentum: bool,
    centered: bool,
}
