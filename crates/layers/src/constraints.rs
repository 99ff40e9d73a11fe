//! Weight constraints (Keras 3): projections optimizers apply after each
//! update (they never move elements frozen by a mask).

use rime_tape::Constraint;
use rime_tensor::{Element, Tensor};
use serde::{Deserialize, Serialize};

/// Keras' `backend.epsilon()`.
const EPSILON: f64 = 1e-7;

/// The built-in constraints, with Keras 3's formulas and defaults.
///
/// ```
/// use rime_layers::constraints::WeightConstraint;
/// use rime_tape::Constraint;
/// use rime_tensor::Tensor;
/// let w = Tensor::from_vec(vec![3.0f32, -4.0], [2, 1])?;
/// let c = WeightConstraint::MaxNorm { max_value: 1.0, axis: 0 };
/// let p = c.apply(&w)?.to_vec();
/// assert!((p[0] - 0.6).abs() < 1e-6 && (p[1] + 0.8).abs() < 1e-6);
/// assert_eq!(WeightConstraint::NonNeg.apply(&w)?.to_vec(), vec![3.0, 0.0]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name")]
pub enum WeightConstraint {
    /// `max(w, 0)`
    NonNeg,
    /// Rescales slices along `axis` whose L2 norm exceeds `max_value`.
    MaxNorm {
        /// Largest norm (Keras default 2).
        max_value: f64,
        /// Axis of the norm (Keras default 0: per output unit of a kernel).
        axis: isize,
    },
    /// Rescales slices along `axis` to unit L2 norm.
    UnitNorm {
        /// Axis of the norm (default 0).
        axis: isize,
    },
    /// Rescales norms into `[min_value, max_value]`, by `rate`.
    MinMaxNorm {
        /// Smallest norm (default 0).
        min_value: f64,
        /// Largest norm (default 1).
        max_value: f64,
        /// 1 projects fully, 0 not at all (default 1).
        rate: f64,
        /// Axis of the norm (default 0).
        axis: isize,
    },
}

impl<T: Element> Constraint<T> for WeightConstraint {
    fn apply(&self, w: &Tensor<T>) -> rime_tensor::Result<Tensor<T>> {
        let of = T::of;
        let norms = |axis: isize| w.square().sum(&[axis], true).map(|s| s.sqrt());
        match *self {
            WeightConstraint::NonNeg => Ok(w.maximum_scalar(T::zero())),
            WeightConstraint::MaxNorm { max_value, axis } => {
                let n = norms(axis)?;
                let desired = n.clamp(T::zero(), of(max_value))?;
                w.mul(&desired.div(&n.add_scalar(of(EPSILON)))?)
            }
            WeightConstraint::UnitNorm { axis } => w.div(&norms(axis)?.add_scalar(of(EPSILON))),
            WeightConstraint::MinMaxNorm {
                min_value,
                max_value,
                rate,
                axis,
            } => {
                let n = norms(axis)?;
                let clipped = n.clamp(of(min_value.min(max_value)), of(max_value))?;
                let desired = clipped
                    .mul_scalar(of(rate))
                    .add(&n.mul_scalar(of(1.0 - rate)))?;
                w.mul(&desired.div(&n.add_scalar(of(EPSILON)))?)
            }
        }
    }
}
