//! # rime-layers
//!
//! Layers, models, optimizers and losses with Keras' trainability rules.
//!
//! ```
//! use rime_layers::{activations::Activation, Dense, Layer};
//! use rime_tensor::Tensor;
//! let hidden = Dense::new(8).activation(Activation::Relu);
//! let out = Dense::new(1);
//! let x = Tensor::<f32>::ones([4, 3])?;
//! let y = out.call(&hidden.call(&x, true)?, true)?;
//! assert_eq!(y.shape(), &[4, 1]);
//! assert_eq!(hidden.trainable_weights().len() + out.trainable_weights().len(), 4);
//! # Ok::<(), rime_layers::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activations;
pub mod collective;
pub mod config;
pub mod constraints;
pub mod data;
mod error;
pub mod fit;
pub mod initializers;
mod instances;
mod layer;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod models;
pub mod optimizers;
pub mod regularizers;
pub mod saving;
mod staging;
mod target;
mod train;

pub use error::{Error, Result};
pub use layer::{
    CallContext, Layer, LayerBase, LayerRef, PROBE_SIZES, Weight, WeightSpec, unique_name,
};
pub use layers::{
    ActivationConfig, ActivationLayer, Add, AddConfig, BatchNormalization,
    BatchNormalizationConfig, Concatenate, ConcatenateConfig, DataFormat, Dense, DenseConfig,
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, EmbeddingTranspose,
    EmbeddingTransposeConfig, Flatten, FlattenConfig, Lambda, LambdaConfig, LambdaFn,
    LayerNormalization, LayerNormalizationConfig, Multiply, MultiplyConfig, Reshape, ReshapeConfig,
};
pub use layers::{
    AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D,
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
    MaxPooling1D, MaxPooling2D, UpSampling2D, ZeroPadding2D,
};
pub use models::{
    Input, IntoLayerRef, Model, Sequential, SymbolicTensor, call_symbolic, clone_model,
};
pub use staging::{assign_state, current_state};
pub use target::{ModelData, Target};
pub use train::TrainStep;
