//! Weight regularizers (Keras 3): penalties added to the loss through a
//! layer's [`losses`](crate::Layer::losses).

use rime_tensor::{Element, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A penalty on a weight tensor, Keras 3's formulas (no factor ½).
///
/// ```
/// use rime_layers::regularizers::Regularizer;
/// use rime_tensor::Tensor;
/// let w = Tensor::vector(vec![1.0f32, -2.0]);
/// assert_eq!(Regularizer::L1 { l1: 0.1 }.penalty(&w)?.to_scalar()?, 0.3);
/// assert_eq!(Regularizer::L2 { l2: 0.1 }.penalty(&w)?.to_scalar()?, 0.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name")]
pub enum Regularizer {
    /// `l1 · Σ|w|`
    L1 {
        /// Factor.
        l1: f64,
    },
    /// `l2 · Σw²`
    L2 {
        /// Factor.
        l2: f64,
    },
    /// `l1 · Σ|w| + l2 · Σw²`
    L1L2 {
        /// L1 factor.
        l1: f64,
        /// L2 factor.
        l2: f64,
    },
}

impl Regularizer {
    /// Checks the factors are finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let (l1, l2) = self.factors();
        if !(l1.is_finite() && l2.is_finite() && l1 >= 0.0 && l2 >= 0.0) {
            return Err(Error::InvalidArgument {
                what: "regularizer".into(),
                msg: format!("factors must be finite and >= 0, got {self:?}"),
            });
        }
        Ok(())
    }

    fn factors(&self) -> (f64, f64) {
        match *self {
            Regularizer::L1 { l1 } => (l1, 0.0),
            Regularizer::L2 { l2 } => (0.0, l2),
            Regularizer::L1L2 { l1, l2 } => (l1, l2),
        }
    }

    /// The penalty for `w`, as a scalar tensor (recorded on active tapes).
    pub fn penalty<T: Element>(&self, w: &Tensor<T>) -> Result<Tensor<T>> {
        let (l1, l2) = self.factors();
        let mut total = Tensor::scalar(T::zero());
        if l1 != 0.0 {
            total = total.add(&w.abs().sum_all().mul_scalar(T::of(l1)))?;
        }
        if l2 != 0.0 {
            total = total.add(&w.square().sum_all().mul_scalar(T::of(l2)))?;
        }
        Ok(total)
    }
}
