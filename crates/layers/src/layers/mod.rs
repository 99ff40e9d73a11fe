//! The built-in layers, one file each.

mod activation;
mod add;
mod batch_normalization;
mod common;
mod concatenate;
mod dense;
mod dropout;
mod embedding;
mod embedding_transpose;
mod flatten;
mod lambda;
mod layer_normalization;
mod multiply;
mod reshape;

pub use activation::{ActivationConfig, ActivationLayer};
pub use add::{Add, AddConfig};
pub use batch_normalization::{BatchNormalization, BatchNormalizationConfig};
pub use concatenate::{Concatenate, ConcatenateConfig};
pub use dense::{Dense, DenseConfig};
pub use dropout::{Dropout, DropoutConfig};
pub use embedding::{Embedding, EmbeddingConfig};
pub use embedding_transpose::{EmbeddingTranspose, EmbeddingTransposeConfig};
pub use flatten::{DataFormat, Flatten, FlattenConfig};
pub use lambda::{Lambda, LambdaConfig, LambdaFn};
pub use layer_normalization::{LayerNormalization, LayerNormalizationConfig};
pub use multiply::{Multiply, MultiplyConfig};
pub use reshape::{Reshape, ReshapeConfig};

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
        _ => return crate::models::model_from_config::<T>(name, c),
    }))
}
