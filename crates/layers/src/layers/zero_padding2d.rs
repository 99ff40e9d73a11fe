//! `ZeroPadding2D`: rows and columns of zeros around each image.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{invalid, resize_hw};
use super::flatten::DataFormat;
use crate::{CallContext, Layer, LayerBase, Result};

/// ZeroPadding2D's constructor arguments: `((top, bottom), (left, right))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZeroPadding2DConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// `[[top, bottom], [left, right]]`.
    pub padding: [[usize; 2]; 2],
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
}

impl Default for ZeroPadding2DConfig {
    fn default() -> Self {
        ZeroPadding2DConfig {
            name: None,
            padding: [[1, 1], [1, 1]],
            data_format: DataFormat::ChannelsLast,
        }
    }
}

/// Keras' ZeroPadding2D over `[batch, height, width, channels]`.
///
/// ```
/// use rime_layers::{Layer, ZeroPadding2D};
/// use rime_tensor::Tensor;
/// let pad = ZeroPadding2D::new([[1, 0], [2, 2]]);
/// assert_eq!(pad.call(&Tensor::<f32>::ones([1, 3, 3, 2])?, false)?.shape(), &[1, 4, 7, 2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct ZeroPadding2D<T: Element = f32> {
    base: LayerBase<T>,
    config: ZeroPadding2DConfig,
}

impl<T: Element> ZeroPadding2D<T> {
    /// `[[top, bottom], [left, right]]` rows and columns of zeros.
    pub fn new(padding: [[usize; 2]; 2]) -> Self {
        Self::from_config(ZeroPadding2DConfig {
            padding,
            ..ZeroPadding2DConfig::default()
        })
        .expect("channels_last config is valid")
    }

    /// From a full config.
    pub fn from_config(config: ZeroPadding2DConfig) -> Result<Self> {
        if config.data_format != DataFormat::ChannelsLast {
            return Err(invalid(
                "ZeroPadding2D",
                "only data_format = channels_last is supported",
            ));
        }
        let base = LayerBase::new("ZeroPadding2D", config.name.clone());
        base.mark_built();
        Ok(ZeroPadding2D { base, config })
    }
}

impl<T: Element> Layer<T> for ZeroPadding2D<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }
    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        self.compute_output_shape(&[x.shape().into()])?;
        let [[t, b], [l, r]] = self.config.padding;
        Ok(vec![x.zero_pad2d(((t, b), (l, r)))?])
    }
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        let [[t, b], [l, r]] = self.config.padding;
        let pad = [(t, b), (l, r)];
        resize_hw(&self.base, input_shapes, "padding", |axis, d| {
            d.checked_add(pad[axis].0)?.checked_add(pad[axis].1)
        })
    }
    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(ZeroPadding2D);
