//! `Multiply`: multiplies its inputs elementwise.

use rime_tensor::{Element, Shape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{merge, merge_output_shape};
use crate::{CallContext, Layer, LayerBase, Result};

/// Multiply's constructor arguments (only the name).
///
/// ```
/// use rime_layers::MultiplyConfig;
/// let c: MultiplyConfig = serde_json::from_str(r#"{"name": "m"}"#).unwrap();
/// assert_eq!(c.name.as_deref(), Some("m"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MultiplyConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
}

/// Keras' `Multiply` merge layer: `x1 · x2 · ...` over one or more inputs.
/// The inputs share a batch size; their other axes, aligned on the right,
/// must be equal or 1 (broadcast), and a lower-rank input gets size-1 axes
/// after its batch axis, as in Keras.
///
/// ```
/// use rime_layers::{Multiply, Layer};
/// use rime_tensor::Tensor;
/// let merge = Multiply::<f32>::new();
/// let a = Tensor::from_vec(vec![1.0, 2.0], [2, 1])?;
/// let b = Tensor::from_vec(vec![3.0, 5.0], [2, 1])?;
/// assert_eq!(merge.call_many(&[a.clone(), b], false)?[0].to_vec(), vec![3.0, 10.0]);
/// // [2, 1] and [2, 3, 1] broadcast to [2, 3, 1]
/// assert_eq!(merge.call_many(&[a.clone(), Tensor::ones([2, 3, 1])?], false)?[0].shape(), &[2, 3, 1]);
/// assert!(merge.call_many(&[a, Tensor::ones([3, 1])?], false).is_err()); // batch sizes differ
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Multiply<T: Element = f32> {
    base: LayerBase<T>,
    config: MultiplyConfig,
}

impl<T: Element> Default for Multiply<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Multiply<T> {
    /// A Multiply layer with an automatic name.
    pub fn new() -> Self {
        Self::from_config(MultiplyConfig::default())
    }

    /// From a config (always valid).
    pub fn from_config(config: MultiplyConfig) -> Self {
        let base = LayerBase::new("Multiply", config.name.clone());
        base.mark_built();
        Multiply { base, config }
    }

    /// The config.
    pub fn config(&self) -> &MultiplyConfig {
        &self.config
    }
}

impl<T: Element> Layer<T> for Multiply<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Multiply"
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        Ok(vec![merge(&self.base, inputs, |a, b| a.mul(b))?])
    }

    fn compute_output_shape(&self, input_shapes: &[Shape]) -> Result<Vec<Shape>> {
        Ok(vec![merge_output_shape(&self.base, input_shapes)?])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Multiply);
