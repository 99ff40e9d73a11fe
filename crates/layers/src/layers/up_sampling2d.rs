//! `UpSampling2D`: nearest-neighbour upsampling (each pixel repeated).

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{at_build, invalid, resize_hw};
use super::flatten::DataFormat;
use crate::{CallContext, Layer, LayerBase, Result};

/// UpSampling2D's constructor arguments (Keras names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpSampling2DConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Repeats along height and width.
    pub size: [usize; 2],
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
    /// Only `"nearest"` is supported.
    pub interpolation: String,
}

impl Default for UpSampling2DConfig {
    fn default() -> Self {
        UpSampling2DConfig {
            name: None,
            size: [2, 2],
            data_format: DataFormat::ChannelsLast,
            interpolation: "nearest".into(),
        }
    }
}

/// Keras' UpSampling2D with `interpolation = "nearest"`.
///
/// ```
/// use rime_layers::{Layer, UpSampling2D};
/// use rime_tensor::Tensor;
/// let up = UpSampling2D::new([2, 3]);
/// assert_eq!(up.call(&Tensor::<f32>::ones([1, 2, 2, 1])?, false)?.shape(), &[1, 4, 6, 1]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct UpSampling2D<T: Element = f32> {
    base: LayerBase<T>,
    config: UpSampling2DConfig,
}

impl<T: Element> UpSampling2D<T> {
    /// Repeats each pixel `size[0]` times down and `size[1]` across (a
    /// zero size is reported when the layer is built).
    pub fn new(size: [usize; 2]) -> Self {
        UpSampling2D {
            base: LayerBase::new("UpSampling2D", None),
            config: UpSampling2DConfig {
                size,
                ..UpSampling2DConfig::default()
            },
        }
    }

    /// From a full config.
    pub fn from_config(config: UpSampling2DConfig) -> Result<Self> {
        Self::validate(&config)?;
        let base = LayerBase::new("UpSampling2D", config.name.clone());
        Ok(UpSampling2D { base, config })
    }

    fn validate(config: &UpSampling2DConfig) -> Result<()> {
        let class = "UpSampling2D";
        if config.data_format != DataFormat::ChannelsLast {
            return Err(invalid(
                class,
                "only data_format = channels_last is supported",
            ));
        }
        if config.interpolation != "nearest" {
            return Err(invalid(
                class,
                format!(
                    "interpolation {:?} is not supported (only \"nearest\")",
                    config.interpolation
                ),
            ));
        }
        if config.size.contains(&0) {
            return Err(invalid(
                class,
                format!("size {:?} must be >= 1", config.size),
            ));
        }
        Ok(())
    }
}

impl<T: Element> Layer<T> for UpSampling2D<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "UpSampling2D"
    }
    fn build(&self, _input_shapes: &[PartialShape]) -> Result<()> {
        Self::validate(&self.config).map_err(|e| at_build(&self.base, e))
    }
    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        self.compute_output_shape(&[x.shape().into()])?;
        Ok(vec![x.upsample_nearest2d(self.config.size)?])
    }
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.build(input_shapes)?;
        let size = self.config.size;
        resize_hw(&self.base, input_shapes, "size", |axis, d| {
            d.checked_mul(size[axis])
        })
    }
    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(UpSampling2D);
