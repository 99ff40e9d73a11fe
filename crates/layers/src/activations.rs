//! Activation functions by name, as Keras' `activation="relu"` arguments.

use rime_tensor::{DenseActivation, Element, Tensor};
use serde::{Deserialize, Serialize};

use crate::Result;

/// An elementwise (or, for softmax, last-axis) activation.
///
/// ```
/// use rime_layers::activations::Activation;
/// use rime_tensor::Tensor;
/// let x = Tensor::vector(vec![-1.0f32, 2.0]);
/// assert_eq!(Activation::Relu.apply(&x)?.to_vec(), vec![0.0, 2.0]);
/// assert_eq!(serde_json::to_string(&Activation::Relu).unwrap(), "\"relu\"");
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Identity (Keras' `None` / "linear").
    #[default]
    Linear,
    /// `max(x, 0)`
    Relu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
    /// Log-softmax over the last axis.
    LogSoftmax,
    /// Exact GELU.
    Gelu,
    /// `ln(1 + e^x)`
    Softplus,
    /// `x · sigmoid(x)` (also called swish).
    Silu,
    /// Leaky ReLU with Keras' default slope 0.2.
    LeakyRelu,
}

impl Activation {
    /// The form in which [`Tensor::dense`] applies this activation inside
    /// the product (`None`: it is applied as a separate op).
    ///
    /// ```
    /// use rime_layers::activations::Activation;
    /// use rime_tensor::DenseActivation;
    /// assert_eq!(Activation::Relu.fused(), Some(DenseActivation::Relu));
    /// assert_eq!(Activation::Softmax.fused(), None);
    /// ```
    pub fn fused(&self) -> Option<DenseActivation> {
        match self {
            Activation::Linear => Some(DenseActivation::Linear),
            Activation::Relu => Some(DenseActivation::Relu),
            Activation::Sigmoid => Some(DenseActivation::Sigmoid),
            Activation::Tanh => Some(DenseActivation::Tanh),
            _ => None,
        }
    }

    /// Applies the activation (recorded on active tapes).
    pub fn apply<T: Element>(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(match self {
            Activation::Linear => x.clone(),
            Activation::Relu => x.relu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Softmax => x.softmax(-1)?,
            Activation::LogSoftmax => x.log_softmax(-1)?,
            Activation::Gelu => x.gelu(),
            Activation::Softplus => x.softplus(),
            Activation::Silu => x.mul(&x.sigmoid())?,
            Activation::LeakyRelu => x.leaky_relu(T::of(0.2)),
        })
    }
}
