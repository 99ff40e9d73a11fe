//! # rime
//!
//! Training neural networks in Rust with an explicit gradient tape, and
//! control over exactly which numbers a training step may change.
//!
//! `use rime::prelude::*;` brings in everything a training loop needs.

pub use rime_layers as layers;
pub use rime_tape as tape;
pub use rime_tensor as tensor;

/// Everything a training loop needs.
pub mod prelude {
    pub use rime_tape::{
        AsSource, GradientOptions, GradientTape, Source, TrainableMask, UnconnectedGradients,
        Variable, custom_gradient, gradcheck, no_record, stop_gradient,
    };
    pub use rime_tensor::{DType, Element, Shape, Tensor, seeded_rng};
}
