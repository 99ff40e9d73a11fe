//! Learning-rate schedules (Keras 3's `optimizers.schedules`): the learning
//! rate as a function of the optimizer's iteration count.
//!
//! ```
//! use rime_layers::optimizers::{ExponentialDecay, Optimizer, Sgd};
//! let schedule = ExponentialDecay::new(0.1, 10, 0.5)?;
//! let opt = Sgd::new().learning_rate_schedule(schedule);
//! assert_eq!(Optimizer::<f32>::current_learning_rate(&opt), 0.1);
//! # Ok::<(), rime_layers::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::{Error, Result};

/// A learning rate that depends on the step (the number of updates applied
/// so far).
pub trait LearningRateSchedule: Send + Sync + fmt::Debug {
    /// The learning rate at `step`.
    fn at(&self, step: u64) -> f64;

    /// Keras-style configuration.
    fn get_config(&self) -> Value;
}

/// An optimizer's learning rate: a constant or a schedule.
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// The same rate at every step.
    Constant(f64),
    /// A schedule evaluated at the iteration count.
    Schedule(Arc<dyn LearningRateSchedule>),
}

impl LearningRate {
    /// The rate at `step`.
    ///
    /// ```
    /// use rime_layers::optimizers::LearningRate;
    /// assert_eq!(LearningRate::Constant(0.5).at(100), 0.5);
    /// ```
    pub fn at(&self, step: u64) -> f64 {
        match self {
            LearningRate::Constant(lr) => *lr,
            LearningRate::Schedule(s) => s.at(step),
        }
    }

    pub(crate) fn config(&self) -> Value {
        match self {
            LearningRate::Constant(lr) => json!(lr),
            LearningRate::Schedule(s) => s.get_config(),
        }
    }
}

fn invalid(schedule: &str, msg: String) -> Error {
    Error::InvalidArgument {
        what: format!("learning-rate schedule {schedule}"),
        msg,
    }
}

/// `initial · decay_rate^(step / decay_steps)`, the exponent floored when
/// `staircase`.
///
/// ```
/// use rime_layers::optimizers::{ExponentialDecay, LearningRateSchedule};
/// let s = ExponentialDecay::new(1.0, 10, 0.5)?;
/// assert!((s.at(5) - 0.5f64.sqrt()).abs() < 1e-12);
/// assert_eq!(s.staircase(true).at(15), 0.5);
/// assert!(ExponentialDecay::new(1.0, 0, 0.5).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialDecay {
    initial_learning_rate: f64,
    decay_steps: u64,
    decay_rate: f64,
    staircase: bool,
}

impl ExponentialDecay {
    /// A continuous decay; `decay_steps` must be positive.
    pub fn new(initial_learning_rate: f64, decay_steps: u64, decay_rate: f64) -> Result<Self> {
        if decay_steps == 0 {
            return Err(invalid(
                "ExponentialDecay",
                "decay_steps must be > 0".into(),
            ));
        }
        if !(initial_learning_rate.is_finite() && decay_rate.is_finite() && decay_rate >= 0.0) {
            return Err(invalid(
                "ExponentialDecay",
                format!(
                    "initial_learning_rate {initial_learning_rate} and decay_rate {decay_rate} must be finite, decay_rate >= 0"
                ),
            ));
        }
        Ok(ExponentialDecay {
            initial_learning_rate,
            decay_steps,
            decay_rate,
            staircase: false,
        })
    }

    /// Decays in discrete steps every `decay_steps`.
    pub fn staircase(mut self, staircase: bool) -> Self {
        self.staircase = staircase;
        self
    }
}

impl LearningRateSchedule for ExponentialDecay {
    fn at(&self, step: u64) -> f64 {
        let mut p = step as f64 / self.decay_steps as f64;
        if self.staircase {
            p = p.floor();
        }
        self.initial_learning_rate * self.decay_rate.powf(p)
    }

    fn get_config(&self) -> Value {
        json!({
            "class_name": "ExponentialDecay",
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        })
    }
}

/// Cosine decay from `initial` to `alpha · initial` over `decay_steps`,
/// optionally after a linear warmup to `warmup_target` over `warmup_steps`
/// (then the decay starts from `warmup_target`), as Keras 3.
///
/// ```
/// use rime_layers::optimizers::{CosineDecay, LearningRateSchedule};
/// let s = CosineDecay::new(1.0, 100)?;
/// assert_eq!(s.at(0), 1.0);
/// assert!((s.at(50) - 0.5).abs() < 1e-12);
/// assert!(s.at(100).abs() < 1e-12);
/// assert!(s.at(1000).abs() < 1e-12); // stays at the end value
/// let w = CosineDecay::new(0.0, 100)?.warmup(10, 1.0);
/// assert!((w.at(5) - 0.5).abs() < 1e-12);
/// assert_eq!(w.at(10), 1.0);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CosineDecay {
    initial_learning_rate: f64,
    decay_steps: u64,
    alpha: f64,
    warmup: Option<(u64, f64)>,
}

impl CosineDecay {
    /// Decay to 0 over `decay_steps` (must be positive).
    pub fn new(initial_learning_rate: f64, decay_steps: u64) -> Result<Self> {
        if decay_steps == 0 {
            return Err(invalid("CosineDecay", "decay_steps must be > 0".into()));
        }
        if !initial_learning_rate.is_finite() {
            return Err(invalid(
                "CosineDecay",
                format!("initial_learning_rate must be finite, got {initial_learning_rate}"),
            ));
        }
        Ok(CosineDecay {
            initial_learning_rate,
            decay_steps,
            alpha: 0.0,
            warmup: None,
        })
    }

    /// The end value as a fraction of the start (default 0).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// A linear warmup from the initial rate to `target` over `steps`.
    pub fn warmup(mut self, steps: u64, target: f64) -> Self {
        self.warmup = Some((steps, target));
        self
    }

    fn decay(&self, step: f64, from: f64) -> f64 {
        let fraction = step / self.decay_steps as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * fraction).cos());
        from * ((1.0 - self.alpha) * cosine + self.alpha)
    }
}

impl LearningRateSchedule for CosineDecay {
    fn at(&self, step: u64) -> f64 {
        let decay_steps = self.decay_steps as f64;
        match self.warmup {
            None => self.decay((step as f64).min(decay_steps), self.initial_learning_rate),
            Some((warmup_steps, target)) => {
                let w = warmup_steps as f64;
                let s = (step as f64).min(decay_steps + w);
                if s < w {
                    (target - self.initial_learning_rate) * (s / w) + self.initial_learning_rate
                } else {
                    self.decay(s - w, target)
                }
            }
        }
    }

    fn get_config(&self) -> Value {
        json!({
            "class_name": "CosineDecay",
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_steps": self.warmup.map_or(0, |w| w.0),
            "warmup_target": self.warmup.map(|w| w.1),
        })
    }
}

/// `values[0]` while `step <= boundaries[0]`, `values[1]` while
/// `step <= boundaries[1]`, ..., `values[n]` after the last boundary.
///
/// ```
/// use rime_layers::optimizers::{LearningRateSchedule, PiecewiseConstantDecay};
/// let s = PiecewiseConstantDecay::new(vec![10, 20], vec![1.0, 0.5, 0.1])?;
/// assert_eq!((s.at(10), s.at(11), s.at(21)), (1.0, 0.5, 0.1));
/// assert!(PiecewiseConstantDecay::new(vec![10], vec![1.0]).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseConstantDecay {
    boundaries: Vec<u64>,
    values: Vec<f64>,
}

impl PiecewiseConstantDecay {
    /// `values` has one more entry than `boundaries`, which increase.
    pub fn new(boundaries: Vec<u64>, values: Vec<f64>) -> Result<Self> {
        if values.len() != boundaries.len() + 1 {
            return Err(invalid(
                "PiecewiseConstantDecay",
                format!(
                    "{} values for {} boundaries (need one more value than boundaries)",
                    values.len(),
                    boundaries.len()
                ),
            ));
        }
        if boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "PiecewiseConstantDecay",
                format!("boundaries must increase, got {boundaries:?}"),
            ));
        }
        Ok(PiecewiseConstantDecay { boundaries, values })
    }
}

impl LearningRateSchedule for PiecewiseConstantDecay {
    fn at(&self, step: u64) -> f64 {
        let i = self.boundaries.iter().take_while(|&&b| step > b).count();
        self.values[i]
    }

    fn get_config(&self) -> Value {
        json!({
            "class_name": "PiecewiseConstantDecay",
            "boundaries": self.boundaries,
            "values": self.values,
        })
    }
}
