//! Global average and max pooling, 1-D and 2-D: one value per channel.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::invalid;
use super::flatten::DataFormat;
use crate::{CallContext, Layer, LayerBase, Result};

/// The constructor arguments of the global pooling layers (Keras names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalPoolingConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
    /// Keep the spatial axes with size 1.
    pub keepdims: bool,
}

macro_rules! global_pooling_layer {
    ($ty:ident, $max:expr, $spatial:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty<T: Element = f32> {
            base: LayerBase<T>,
            config: GlobalPoolingConfig,
        }

        impl<T: Element> Default for $ty<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T: Element> $ty<T> {
            /// Keras' defaults (`keepdims = false`).
            pub fn new() -> Self {
                Self::from_config(GlobalPoolingConfig::default())
                    .expect("the default config is valid")
            }

            /// From a full config.
            pub fn from_config(config: GlobalPoolingConfig) -> Result<Self> {
                if config.data_format != DataFormat::ChannelsLast {
                    return Err(invalid(
                        stringify!($ty),
                        "only data_format = channels_last is supported",
                    ));
                }
                let base = LayerBase::new(stringify!($ty), config.name.clone());
                base.mark_built();
                Ok($ty { base, config })
            }

            /// Keeps the spatial axes (size 1).
            pub fn keepdims(mut self, keep: bool) -> Self {
                self.config.keepdims = keep;
                self
            }
        }

        layer_builders!($ty);

        impl<T: Element> Layer<T> for $ty<T> {
            fn base(&self) -> &LayerBase<T> {
                &self.base
            }
            fn class_name(&self) -> &'static str {
                stringify!($ty)
            }
            fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
                let x = self.base.single(inputs)?;
                self.compute_output_shape(&[x.shape().into()])?;
                let keep = self.config.keepdims;
                Ok(vec![if $max {
                    x.global_max_pool(keep)?
                } else {
                    x.global_avg_pool(keep)?
                }])
            }
            fn compute_output_shape(
                &self,
                input_shapes: &[PartialShape],
            ) -> Result<Vec<PartialShape>> {
                let rank = $spatial + 2;
                match input_shapes {
                    [s] if s.rank() == rank => {
                        let mut d = vec![s[0]];
                        if self.config.keepdims {
                            d.extend(std::iter::repeat_n(Some(1), $spatial));
                        }
                        d.push(s[rank - 1]);
                        Ok(vec![PartialShape::from(d)])
                    }
                    _ => Err(self.base.bad_input(
                        input_shapes,
                        format!("expects one input of rank {rank} (batch, spatial axes, channels)"),
                    )),
                }
            }
            fn get_config(&self) -> serde_json::Value {
                let mut c = self.config.clone();
                c.name = Some(self.base.name().to_string());
                serde_json::to_value(c).expect("configs serialize")
            }
        }
    };
}

global_pooling_layer!(
    GlobalAveragePooling2D,
    false,
    2,
    "Keras' GlobalAveragePooling2D: `[batch, h, w, c]` → `[batch, c]`.\n\n```\nuse rime_layers::{GlobalAveragePooling2D, Layer};\nuse rime_tensor::Tensor;\nlet y = GlobalAveragePooling2D::new().call(&Tensor::<f32>::ones([2, 3, 3, 4]).unwrap(), false)?;\nassert_eq!(y.shape(), &[2, 4]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
global_pooling_layer!(
    GlobalMaxPooling2D,
    true,
    2,
    "Keras' GlobalMaxPooling2D: `[batch, h, w, c]` → `[batch, c]`.\n\n```\nuse rime_layers::{GlobalMaxPooling2D, Layer};\nuse rime_tensor::Tensor;\nlet y = GlobalMaxPooling2D::new().keepdims(true).call(&Tensor::<f32>::ones([2, 3, 3, 4]).unwrap(), false)?;\nassert_eq!(y.shape(), &[2, 1, 1, 4]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
global_pooling_layer!(
    GlobalAveragePooling1D,
    false,
    1,
    "Keras' GlobalAveragePooling1D: `[batch, steps, c]` → `[batch, c]`.\n\n```\nuse rime_layers::{GlobalAveragePooling1D, Layer};\nuse rime_tensor::Tensor;\nlet y = GlobalAveragePooling1D::new().call(&Tensor::<f32>::ones([2, 5, 4]).unwrap(), false)?;\nassert_eq!(y.shape(), &[2, 4]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
global_pooling_layer!(
    GlobalMaxPooling1D,
    true,
    1,
    "Keras' GlobalMaxPooling1D: `[batch, steps, c]` → `[batch, c]`.\n\n```\nuse rime_layers::{GlobalMaxPooling1D, Layer};\nuse rime_tensor::Tensor;\nlet y = GlobalMaxPooling1D::new().call(&Tensor::<f32>::ones([2, 5, 4]).unwrap(), false)?;\nassert_eq!(y.shape(), &[2, 4]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
