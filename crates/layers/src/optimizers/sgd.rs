//! [`Sgd`]: gradient descent with optional momentum and Nesterov momentum.

use std::ops::Range;

use rime_tensor::Element;
use serde_json::{Value, json};

use super::{AnyRule, Common, GradientSource, Rule, check_range, optimizer_common};
use crate::Result;

/// Stochastic gradient descent (Keras 3's `SGD`; defaults: learning rate
/// 0.01, momentum 0, no Nesterov).
///
/// - without momentum: `w ← w − lr·g`;
/// - with momentum `μ`: `m ← μ·m − lr·g`, then `w ← w + m`, or with
///   Nesterov `w ← w + μ·m − lr·g` (with the updated `m`).
///
/// ```
/// use rime_layers::optimizers::{Optimizer, Sgd};
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f64>::full([1], 1.0)?);
/// let mut opt = Sgd::new().learning_rate(0.1).momentum(0.9);
/// for _ in 0..2 {
///     opt.apply_gradients(&[Some(Tensor::full([1], 1.0)?)], &[w.clone()])?;
/// }
/// // m₁ = −0.1, m₂ = 0.9·(−0.1) − 0.1 = −0.19: w = 1 − 0.1 − 0.19
/// assert!((w.to_vec()[0] - 0.71).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Debug)]
pub struct Sgd {
    common: Common,
    rule: SgdRule,
}

#[derive(Debug)]
pub(crate) struct SgdRule {
    momentum: f64,
    nesterov: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Self::new()
    }
}

impl Sgd {
    /// Keras' defaults: learning rate 0.01, no momentum.
    pub fn new() -> Self {
        Sgd {
            common: Common::new(0.01),
            rule: SgdRule {
                momentum: 0.0,
                nesterov: false,
            },
        }
    }

    /// Momentum `μ` in `[0, 1]` (0: plain gradient descent).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.rule.momentum = momentum;
        self
    }

    /// Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.rule.nesterov = nesterov;
        self
    }
}

optimizer_common!(Sgd, SgdRule);

impl Rule for SgdRule {
    const NAME: &'static str = "SGD";

    fn any(&self) -> AnyRule<'_> {
        AnyRule::Sgd(self)
    }

    fn slot_names(&self) -> &'static [&'static str] {
        if self.momentum != 0.0 {
            &["momentum"]
        } else {
            &[]
        }
    }

    fn validate(&self, name: &str) -> Result<()> {
        check_range(name, "momentum", self.momentum, 0.0, 1.0)
    }

    type Step<T: Element> = SgdStep<T>;

    fn step<T: Element>(&self, lr: T, _iteration: u64) -> SgdStep<T> {
        SgdStep {
            lr,
            mu: T::of(self.momentum),
            nesterov: self.nesterov,
        }
    }

    #[inline(always)] // into the caller's vectorized (AVX2/AVX-512) code
    fn update<T: Element, G: GradientSource<T>>(
        s: SgdStep<T>,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        let SgdStep { lr, mu, nesterov } = s;
        let w = &mut w[run.clone()];
        // every slice exactly `n` long: the indexing below is then
        // check-free and the loops vectorize
        let n = w.len();
        let g = g.first(n);
        match slots {
            [] => {
                for (i, w) in w.iter_mut().enumerate() {
                    *w -= g.at(i) * lr;
                }
            }
            [m, ..] => {
                let m = &mut m[run][..n];
                // one loop per form, each branch-free (vectorized)
                if nesterov {
                    for i in 0..n {
                        let gi = g.at(i);
                        m[i] = m[i] * mu - gi * lr;
                        w[i] += m[i] * mu - gi * lr;
                    }
                } else {
                    for i in 0..n {
                        m[i] = m[i] * mu - g.at(i) * lr;
                        w[i] += m[i];
                    }
                }
            }
        }
    }

    fn config(&self) -> Value {
        json!({ "momentum": self.momentum, "nesterov": self.nesterov })
    }
}

/// SGD's constants for one step.
#[derive(Clone, Copy)]
pub(crate) struct SgdStep<T> {
    lr: T,
    mu: T,
    nesterov: bool,
}
