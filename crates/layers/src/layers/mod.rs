//! The built-in layers, one file each.

mod dense;

pub use dense::{Dense, DenseConfig};

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
        _ => return crate::models::model_from_config::<T>(name, c),
    }))
}
