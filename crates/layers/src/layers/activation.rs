//! `Activation` (`ActivationLayer` in Rust): applies an activation function.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::single_shape;
use crate::activations::Activation;
use crate::{CallContext, Layer, LayerBase, Result};

/// ActivationLayer's constructor arguments (Keras' `Activation` layer).
///
/// ```
/// use rime_layers::{activations::Activation, ActivationConfig};
/// let c: ActivationConfig = serde_json::from_str(r#"{"activation": "relu"}"#).unwrap();
/// assert_eq!(c.activation, Activation::Relu);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationConfig {
    /// Layer name (None: automatic).
    #[serde(default)]
    pub name: Option<String>,
    /// The function applied.
    pub activation: Activation,
}

/// Keras' `Activation` layer: applies an [`Activation`] to its input. Its
/// class name is `"Activation"`; the Rust name keeps it apart from the
/// [`activations::Activation`](crate::activations::Activation) enum.
///
/// ```
/// use rime_layers::{activations::Activation, ActivationLayer, Layer};
/// use rime_tensor::Tensor;
/// let relu = ActivationLayer::new(Activation::Relu);
/// let y = relu.call(&Tensor::vector(vec![-1.0f32, 2.0]), false)?;
/// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
/// assert_eq!(relu.class_name(), "Activation");
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct ActivationLayer<T: Element = f32> {
    base: LayerBase<T>,
    config: ActivationConfig,
}

impl<T: Element> ActivationLayer<T> {
    /// Applies `activation`.
    pub fn new(activation: Activation) -> Self {
        Self::from_config(ActivationConfig {
            name: None,
            activation,
        })
    }

    /// From a config (always valid).
    pub fn from_config(config: ActivationConfig) -> Self {
        let base = LayerBase::new("Activation", config.name.clone());
        base.mark_built();
        ActivationLayer { base, config }
    }

    /// The config.
    pub fn config(&self) -> &ActivationConfig {
        &self.config
    }
}

impl<T: Element> Layer<T> for ActivationLayer<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Activation"
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        Ok(vec![self.config.activation.apply(x)?])
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        Ok(vec![single_shape(&self.base, input_shapes, 0)?.clone()])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(ActivationLayer);
