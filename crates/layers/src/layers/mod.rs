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
mod merge;
mod pooling;
mod reshape;
mod up_sampling2d;
mod zero_padding2d;

pub use activation::{ActivationConfig, ActivationLayer};
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
pub use merge::{Add, AddConfig, MergeConfig, Multiply, MultiplyConfig};
pub use pooling::{AveragePooling1D, AveragePooling2D, MaxPooling1D, MaxPooling2D, PoolingConfig};
pub use reshape::{Reshape, ReshapeConfig};
pub use up_sampling2d::{UpSampling2D, UpSampling2DConfig};
pub use zero_padding2d::{ZeroPadding2D, ZeroPadding2DConfig};
