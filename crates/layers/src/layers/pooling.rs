//! Max and average pooling layers, 1-D and 2-D (Keras' `BasePooling`).

use rime_tensor::ops::conv::conv_output_size;
use rime_tensor::{Element, PartialShape, Pool2dOptions, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{at_build, invalid};
use super::conv::Padding;
use super::flatten::DataFormat;
use crate::{CallContext, Layer, LayerBase, Result};

/// The constructor arguments of the pooling layers (Keras names and
/// defaults: strides `None` means the pool size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolingConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Window size per spatial axis.
    pub pool_size: Vec<usize>,
    /// Window step per spatial axis (None: the pool size).
    pub strides: Option<Vec<usize>>,
    /// Border handling.
    pub padding: Padding,
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            name: None,
            pool_size: vec![2, 2],
            strides: None,
            padding: Padding::Valid,
            data_format: DataFormat::ChannelsLast,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduce {
    Max,
    Avg,
}

/// One pooling layer: the config, and which reduction over how many axes.
struct PoolCore<T: Element> {
    base: LayerBase<T>,
    config: PoolingConfig,
    class: &'static str,
    reduce: Reduce,
    spatial: usize,
}

impl<T: Element> PoolCore<T> {
    /// A core for `config`; an invalid config is kept as given and
    /// reported when the layer is built (constructors do not fail).
    fn new(class: &'static str, reduce: Reduce, spatial: usize, config: PoolingConfig) -> Self {
        let config = Self::checked(class, spatial, config.clone()).unwrap_or(config);
        PoolCore {
            base: LayerBase::new(class, config.name.clone()),
            config,
            class,
            reduce,
            spatial,
        }
    }

    /// The config validated, with one-entry tuples repeated per axis.
    fn checked(class: &str, spatial: usize, config: PoolingConfig) -> Result<PoolingConfig> {
        let n = spatial;
        let fix = |v: &[usize]| match v {
            v if v.len() == n => Some(v.to_vec()),
            [first, rest @ ..] if rest.iter().all(|r| r == first) => Some(vec![*first; n]),
            _ => None,
        };
        let pool = fix(&config.pool_size).ok_or_else(|| {
            invalid(
                class,
                format!("pool_size {:?} needs {n} entries", config.pool_size),
            )
        })?;
        let strides = match &config.strides {
            None => None,
            Some(s) => Some(
                fix(s).ok_or_else(|| invalid(class, format!("strides {s:?} needs {n} entries")))?,
            ),
        };
        if pool.contains(&0) || strides.as_ref().is_some_and(|s| s.contains(&0)) {
            return Err(invalid(class, "pool_size and strides must be >= 1"));
        }
        if config.data_format != DataFormat::ChannelsLast {
            return Err(invalid(
                class,
                "only data_format = channels_last is supported",
            ));
        }
        Ok(PoolingConfig {
            pool_size: pool,
            strides,
            ..config
        })
    }

    /// The error of an invalid config, naming the layer.
    fn check(&self) -> Result<()> {
        Self::checked(self.class, self.spatial, self.config.clone())
            .map(|_| ())
            .map_err(|e| at_build(&self.base, e))
    }

    fn options(&self) -> Pool2dOptions {
        let two = |v: &[usize]| {
            if self.spatial == 1 {
                [1, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let pool = two(&self.config.pool_size);
        Pool2dOptions {
            pool_size: pool,
            strides: self.config.strides.as_deref().map_or(pool, two),
            padding: self.config.padding.into(),
        }
    }

    /// An unknown spatial size gives an unknown output size.
    fn output_shape(&self, shapes: &[PartialShape]) -> Result<PartialShape> {
        self.check()?;
        let rank = self.spatial + 2;
        let s = match shapes {
            [s] if s.rank() == rank => s,
            _ => {
                return Err(self.base.bad_input(
                    shapes,
                    format!("expects one input of rank {rank} (batch, spatial axes, channels)"),
                ));
            }
        };
        let o = self.options();
        let mut dims = vec![s[0]];
        for i in 0..self.spatial {
            let j = i + 2 - self.spatial;
            let out = match s[i + 1] {
                None => None,
                Some(n) => Some(
                    conv_output_size(n, o.pool_size[j], o.strides[j], 1, o.padding)
                        .ok_or_else(|| {
                            self.base
                                .bad_input(shapes, "pool_size does not fit the input")
                        })?
                        .0,
                ),
            };
            dims.push(out);
        }
        dims.push(s[rank - 1]);
        Ok(PartialShape::from(dims))
    }

    fn call(&self, inputs: &[Tensor<T>]) -> Result<Tensor<T>> {
        let x = self.base.single(inputs)?;
        self.output_shape(&[x.shape().into()])?;
        let o = self.options();
        let y = if self.spatial == 1 {
            let (p, s) = (o.pool_size[1], o.strides[1]);
            match self.reduce {
                Reduce::Max => x.max_pool1d(p, s, o.padding)?,
                Reduce::Avg => x.avg_pool1d(p, s, o.padding)?,
            }
        } else {
            match self.reduce {
                Reduce::Max => x.max_pool2d(&o)?,
                Reduce::Avg => x.avg_pool2d(&o)?,
            }
        };
        Ok(y)
    }
}

macro_rules! pooling_layer {
    ($ty:ident, $reduce:expr, $spatial:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty<T: Element = f32> {
            core: PoolCore<T>,
        }

        impl<T: Element> $ty<T> {
            /// Windows of `pool_size` (one entry per spatial axis, or one
            /// for all), strides equal to it, `valid` padding. Invalid
            /// arguments are reported when the layer is built.
            pub fn new(pool_size: &[usize]) -> Self {
                $ty {
                    core: PoolCore::new(
                        stringify!($ty),
                        $reduce,
                        $spatial,
                        PoolingConfig {
                            pool_size: pool_size.to_vec(),
                            ..PoolingConfig::default()
                        },
                    ),
                }
            }

            /// From a full config; errors name the argument at fault.
            pub fn from_config(config: PoolingConfig) -> Result<Self> {
                let config = PoolCore::<T>::checked(stringify!($ty), $spatial, config)?;
                Ok($ty {
                    core: PoolCore::new(stringify!($ty), $reduce, $spatial, config),
                })
            }

            fn with(mut self, f: impl FnOnce(&mut PoolingConfig)) -> Self {
                let mut config = self.core.config.clone();
                f(&mut config);
                self.core.config =
                    PoolCore::<T>::checked(self.core.class, $spatial, config.clone())
                        .unwrap_or(config);
                self
            }

            /// Sets the strides.
            pub fn strides(self, s: &[usize]) -> Self {
                let s = s.to_vec();
                self.with(|c| c.strides = Some(s))
            }

            /// Sets the padding.
            pub fn padding(self, p: Padding) -> Self {
                self.with(|c| c.padding = p)
            }

            /// The config.
            pub fn config(&self) -> &PoolingConfig {
                &self.core.config
            }
        }

        impl<T: Element> Layer<T> for $ty<T> {
            fn base(&self) -> &LayerBase<T> {
                &self.core.base
            }
            fn class_name(&self) -> &'static str {
                self.core.class
            }
            fn build(&self, _input_shapes: &[PartialShape]) -> Result<()> {
                self.core.check()
            }
            fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
                Ok(vec![self.core.call(inputs)?])
            }
            fn compute_output_shape(
                &self,
                input_shapes: &[PartialShape],
            ) -> Result<Vec<PartialShape>> {
                Ok(vec![self.core.output_shape(input_shapes)?])
            }
            fn get_config(&self) -> serde_json::Value {
                let mut c = self.core.config.clone();
                c.name = Some(self.core.base.name().to_string());
                serde_json::to_value(c).expect("configs serialize")
            }
        }

        layer_builders!($ty, core.base);
    };
}

pooling_layer!(
    MaxPooling2D,
    Reduce::Max,
    2,
    "Keras' MaxPooling2D over `[batch, height, width, channels]`.\n\n```\nuse rime_layers::{Layer, MaxPooling2D, layers::Padding};\nuse rime_tensor::Tensor;\nlet pool = MaxPooling2D::new(&[2, 2]).padding(Padding::Same);\nassert_eq!(pool.call(&Tensor::<f32>::ones([1, 5, 4, 3]).unwrap(), false)?.shape(), &[1, 3, 2, 3]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
pooling_layer!(
    AveragePooling2D,
    Reduce::Avg,
    2,
    "Keras' AveragePooling2D (with `same` padding each window is divided by its real elements).\n\n```\nuse rime_layers::{AveragePooling2D, Layer};\nuse rime_tensor::Tensor;\nlet pool = AveragePooling2D::new(&[2]).strides(&[1, 1]);\nassert_eq!(pool.call(&Tensor::<f32>::ones([1, 3, 3, 1]).unwrap(), false)?.to_vec(), vec![1.0; 4]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
pooling_layer!(
    MaxPooling1D,
    Reduce::Max,
    1,
    "Keras' MaxPooling1D over `[batch, steps, channels]`.\n\n```\nuse rime_layers::{Layer, MaxPooling1D};\nuse rime_tensor::Tensor;\nlet x = Tensor::<f32>::from_vec(vec![1.0, 3.0, 2.0, 0.0], [1, 4, 1])?;\nassert_eq!(MaxPooling1D::new(&[2]).call(&x, false)?.to_vec(), vec![3.0, 2.0]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
pooling_layer!(
    AveragePooling1D,
    Reduce::Avg,
    1,
    "Keras' AveragePooling1D over `[batch, steps, channels]`.\n\n```\nuse rime_layers::{AveragePooling1D, Layer};\nuse rime_tensor::Tensor;\nlet x = Tensor::<f32>::from_vec(vec![1.0, 3.0, 2.0, 0.0], [1, 4, 1])?;\nassert_eq!(AveragePooling1D::new(&[2]).call(&x, false)?.to_vec(), vec![2.0, 1.0]);\n# Ok::<(), rime_layers::Error>(())\n```"
);
