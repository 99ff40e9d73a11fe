//! The built-in layers, one file each.

/// The builders every built-in layer has: `named(..)` (Keras' `name=`) and
/// `with_trainable(..)` (Keras' `trainable=`; not `trainable(..)`, which
/// would hide the [`Layer::trainable`](crate::Layer::trainable) getter).
/// Invoked in each layer's file, where its private fields are visible;
/// the second argument is the path of the layer's `LayerBase` field
/// (`base` unless given). `get_config` reports the base's name, so renaming
/// the base is all `named` needs.
macro_rules! layer_builders {
    ($layer:ident) => {
        layer_builders!($layer, base);
    };
    ($layer:ident, $($base:ident).+) => {
        impl<T: rime_tensor::Element> $layer<T> {
            /// The layer's name (Keras' `name=`), instead of an automatic one.
            pub fn named(mut self, name: impl Into<String>) -> Self {
                self.$($base).+.rename(name);
                self
            }

            /// Builds the layer frozen (`false`) or trainable (Keras'
            /// `trainable=`), as [`Layer::set_trainable`](crate::Layer::set_trainable)
            /// right after construction.
            pub fn with_trainable(self, trainable: bool) -> Self {
                crate::Layer::set_trainable(&self, trainable);
                self
            }
        }
    };
}

mod activation;
mod add;
mod batch_normalization;
mod common;
mod concatenate;
mod conv;
mod conv2d_transpose;
mod dense;
mod depthwise_conv2d;
mod dropout;
mod embedding;
mod embedding_transpose;
mod flatten;
mod global_pooling;
mod lambda;
mod layer_normalization;
mod multiply;
mod pooling;
mod reshape;
mod up_sampling2d;
mod zero_padding2d;

pub use activation::{ActivationConfig, ActivationLayer};
pub use add::{Add, AddConfig};
pub use batch_normalization::{BatchNormalization, BatchNormalizationConfig};
pub use concatenate::{Concatenate, ConcatenateConfig};
pub use conv::{Conv1D, Conv2D, ConvConfig, Padding};
pub use conv2d_transpose::Conv2DTranspose;
pub use dense::{Dense, DenseConfig};
pub use depthwise_conv2d::{DepthwiseConv2D, DepthwiseConv2DConfig};
pub use dropout::{Dropout, DropoutConfig};
pub use embedding::{Embedding, EmbeddingConfig};
pub use embedding_transpose::{EmbeddingTranspose, EmbeddingTransposeConfig};
pub use flatten::{DataFormat, Flatten, FlattenConfig};
pub use global_pooling::{
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
    GlobalPoolingConfig,
};
pub use lambda::{Lambda, LambdaConfig, LambdaFn};
pub use layer_normalization::{LayerNormalization, LayerNormalizationConfig};
pub use multiply::{Multiply, MultiplyConfig};
pub use pooling::{AveragePooling1D, AveragePooling2D, MaxPooling1D, MaxPooling2D, PoolingConfig};
pub use reshape::{Reshape, ReshapeConfig};
pub use up_sampling2d::{UpSampling2D, UpSampling2DConfig};
pub use zero_padding2d::{ZeroPadding2D, ZeroPadding2DConfig};

use rime_tensor::Element;

use crate::Result;
use crate::config::{LayerConfig, arc, parse};
use crate::layer::LayerRef;

/// The built-in classes by name (None: not built-in).
pub(crate) fn builtin_from_config<T: Element>(cfg: &LayerConfig) -> Result<Option<LayerRef<T>>> {
    let c = &cfg.config;
    let name = cfg.class_name.as_str();
    Ok(Some(match name {
        "Dense" => arc(Dense::<T>::from_config(parse(name, c)?)?),
        "Embedding" => arc(Embedding::<T>::from_config(parse(name, c)?)?),
        "EmbeddingTranspose" => arc(EmbeddingTranspose::<T>::from_config(parse(name, c)?)?),
        "BatchNormalization" => arc(BatchNormalization::<T>::from_config(parse(name, c)?)?),
        "LayerNormalization" => arc(LayerNormalization::<T>::from_config(parse(name, c)?)?),
        "Dropout" => arc(Dropout::<T>::from_config(parse(name, c)?)?),
        "Activation" => arc(ActivationLayer::<T>::from_config(parse(name, c)?)),
        "Flatten" => arc(Flatten::<T>::from_config(parse(name, c)?)),
        "Reshape" => arc(Reshape::<T>::from_config(parse(name, c)?)?),
        "Concatenate" => arc(Concatenate::<T>::from_config(parse(name, c)?)),
        "Add" => arc(Add::<T>::from_config(parse(name, c)?)),
        "Multiply" => arc(Multiply::<T>::from_config(parse(name, c)?)),
        "Lambda" => arc(Lambda::<T>::from_config(parse(name, c)?)?),
        "Conv1D" => arc(Conv1D::<T>::from_config(parse(name, c)?)?),
        "Conv2D" => arc(Conv2D::<T>::from_config(parse(name, c)?)?),
        "Conv2DTranspose" => arc(Conv2DTranspose::<T>::from_config(parse(name, c)?)?),
        "DepthwiseConv2D" => arc(DepthwiseConv2D::<T>::from_config(parse(name, c)?)?),
        "MaxPooling1D" => arc(MaxPooling1D::<T>::from_config(parse(name, c)?)?),
        "MaxPooling2D" => arc(MaxPooling2D::<T>::from_config(parse(name, c)?)?),
        "AveragePooling1D" => arc(AveragePooling1D::<T>::from_config(parse(name, c)?)?),
        "AveragePooling2D" => arc(AveragePooling2D::<T>::from_config(parse(name, c)?)?),
        "GlobalAveragePooling1D" => arc(GlobalAveragePooling1D::<T>::from_config(parse(name, c)?)?),
        "GlobalAveragePooling2D" => arc(GlobalAveragePooling2D::<T>::from_config(parse(name, c)?)?),
        "GlobalMaxPooling1D" => arc(GlobalMaxPooling1D::<T>::from_config(parse(name, c)?)?),
        "GlobalMaxPooling2D" => arc(GlobalMaxPooling2D::<T>::from_config(parse(name, c)?)?),
        "ZeroPadding2D" => arc(ZeroPadding2D::<T>::from_config(parse(name, c)?)?),
        "UpSampling2D" => arc(UpSampling2D::<T>::from_config(parse(name, c)?)?),
        _ => return crate::models::model_from_config::<T>(name, c),
    }))
}
