//! # rime-layers
//!
//! Layers, models, optimizers and losses with Keras' trainability rules.

#![warn(missing_docs)]

mod error;
pub mod losses;
pub mod metrics;
pub mod optimizers;

pub use error::{Error, Result};
