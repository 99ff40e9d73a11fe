//! [`Sgd`]: gradient descent with optional momentum and Nesterov momentum.

use std::ops::Range;

use rime_tensor::Element;
use serde_json::{Value, json};

use super::{AnyRule, Common, Rule, check_range, optimizer_common};
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

    #[inline(always)] // into the caller's vectorized (AVX2/AVX-512) code
    fn update<T: Element>(
        &self,
        lr: T,
        _iteration: u64,
        w: &mut [T],
        g: &[T],
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        let (w, g) = (&mut w[run.clone()], &g[..run.len()]);
        match slots {
            [] => w.iter_mut().zip(g).for_each(|(w, &g)| *w -= g * lr),
            [m, ..] => {
                let mu = T::of(self.momentum);
                let m = &mut m[run];
                let moments = w.iter_mut().zip(g).zip(m.iter_mut());
                // one loop per form, each branch-free (vectorized)
                if self.nesterov {
                    for ((w, &g), m) in moments {
                        *m = *m * mu - g * lr;
                        *w += *m * mu - g * lr;
                    }
                } else {
                    for ((w, &g), m) in moments {
                        *m = *m * mu - g * lr;
                        *w += *m;
                    }
                }
            }
        }
    }

    fn config(&self) -> Value {
        json!({ "momentum": self.momentum, "nesterov": self.nesterov })
    }
}
