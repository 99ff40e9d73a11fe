//! `Flatten`: one feature axis per example.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{example_numel, known_output, single_shape};
use crate::{CallContext, Layer, LayerBase, Result};

/// Where the channels axis of an image-like input is (Keras' `data_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `[batch, ..., channels]` (Keras' default).
    #[default]
    ChannelsLast,
    /// `[batch, channels, ...]`.
    ChannelsFirst,
}

/// Flatten's constructor arguments (Keras names and defaults).
///
/// ```
/// use rime_layers::{DataFormat, FlattenConfig};
/// let c: FlattenConfig = serde_json::from_str(r#"{"data_format": "channels_first"}"#).unwrap();
/// assert_eq!(c.data_format, DataFormat::ChannelsFirst);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlattenConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// With `ChannelsFirst` the channels axis moves last before flattening,
    /// so the element order matches a channels-last model's.
    pub data_format: DataFormat,
}

/// Keras' Flatten: `[batch, d1, d2, ...]` → `[batch, d1 · d2 · ...]`,
/// keeping the batch axis; a `[batch]` input becomes `[batch, 1]`.
///
/// ```
/// use rime_layers::{Flatten, Layer};
/// use rime_tensor::{PartialShape, Tensor};
/// let flat = Flatten::<f32>::new();
/// assert_eq!(flat.call(&Tensor::zeros([2, 3, 4])?, false)?.shape(), &[2, 12]);
/// assert_eq!(flat.compute_output_shape(&[PartialShape::from([5])])?, vec![PartialShape::from([5, 1])]);
/// // before any batch is seen (Keras' `(None, 7, 7, 64)` → `(None, 3136)`)
/// let out = flat.compute_output_shape(&[PartialShape::batched([7, 7, 64])])?;
/// assert_eq!(out[0].to_string(), "(None, 3136)");
/// // an unknown axis makes the product unknown
/// let out = flat.compute_output_shape(&[PartialShape::from([None, None, Some(4)])])?;
/// assert_eq!(out[0].to_string(), "(None, None)");
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Flatten<T: Element = f32> {
    base: LayerBase<T>,
    config: FlattenConfig,
}

impl<T: Element> Default for Flatten<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Flatten<T> {
    /// Channels-last flattening.
    pub fn new() -> Self {
        Self::from_config(FlattenConfig::default())
    }

    /// From a config (always valid).
    pub fn from_config(config: FlattenConfig) -> Self {
        let base = LayerBase::new("Flatten", config.name.clone());
        base.mark_built();
        Flatten { base, config }
    }

    /// Sets the data format.
    pub fn data_format(mut self, f: DataFormat) -> Self {
        self.config.data_format = f;
        self
    }

    /// The config.
    pub fn config(&self) -> &FlattenConfig {
        &self.config
    }
}

impl<T: Element> Layer<T> for Flatten<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let out = self.compute_output_shape(&[x.shape().into()])?.remove(0);
        let out = known_output(&self.base, &[x.shape().clone()], out)?;
        let rank = x.rank();
        let x = if self.config.data_format == DataFormat::ChannelsFirst && rank > 2 {
            let mut perm: Vec<usize> = vec![0];
            perm.extend(2..rank);
            perm.push(1);
            x.permute(&perm)?
        } else {
            x.clone()
        };
        Ok(vec![x.reshape(out)?])
    }

    /// `(batch, product of the other axes)`: Flatten of `(None, 7, 7, 64)`
    /// is `(None, 3136)`; the product is unknown if one of its axes is.
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        let s = single_shape(&self.base, input_shapes, 1)?;
        let n = example_numel(&self.base, input_shapes, s)?;
        Ok(vec![PartialShape::from([s[0], n])])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Flatten);
