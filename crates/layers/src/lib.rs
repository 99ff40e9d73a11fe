//! # rime-layers
//!
//! Layers, models, optimizers and losses with Keras' trainability rules.

#![warn(missing_docs)]

mod error;

pub use error::{Error, Result};
