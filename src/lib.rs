//! # rime
//!
//! Training neural networks in Rust with an explicit gradient tape, and
//! control over exactly which numbers a training step may change.
//!
//! `use rime::prelude::*;` brings in everything a training loop needs. The
//! first-class path is the custom loop:
//!
//! ```
//! use rime::prelude::*;
//!
//! let model = Sequential::new()
//!     .add(Dense::new(16).activation(Activation::Relu))
//!     .add(Dense::new(3))
//!     .with_input_shape([4])?;
//! let x = Tensor::<f32>::rand_normal([8, 4], 0.0, 1.0, &mut seeded_rng(0))?;
//! let y = Tensor::vector(vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]);
//! let loss_fn = SparseCategoricalCrossentropy::new().with_from_logits(true);
//! let mut opt = Adam::new().learning_rate(0.01);
//!
//! // freeze the first rows of the first kernel: they stay bit-identical
//! let kernel = model.layers()[0].weights()[0].clone();
//! kernel.set_mask(Some(TrainableMask::freeze_rows(0..2)))?;
//! let frozen_before = kernel.to_vec()[..32].to_vec();
//!
//! for _ in 0..10 {
//!     let tape = GradientTape::new();
//!     let loss = loss_fn.call(&y, &model.call(&x, true)?)?;
//!     let vars = model.trainable_weights();
//!     let grads = tape.gradient(&loss, &vars)?;
//!     opt.apply_gradients(&grads, &vars)?;
//! }
//! assert_eq!(kernel.to_vec()[..32], frozen_before[..]);
//! # Ok::<(), rime::Error>(())
//! ```

mod error;

/// Guides: longer worked examples, compiled and run as doctests.
pub mod guide {
    #[doc = include_str!("../docs/writing_a_layer.md")]
    pub mod writing_a_layer {}
}

pub use error::{Error, Result};
/// Data-parallel training over MPI (the `distributed` feature).
#[cfg(feature = "distributed")]
pub use rime_distributed as distributed;
pub use rime_layers as layers;
pub use rime_tape as tape;
pub use rime_tensor as tensor;

/// Everything a training loop needs.
pub mod prelude {
    pub use rime_layers::activations::Activation;
    pub use rime_layers::data::{Batch, Dataset};
    pub use rime_layers::fit::{
        Callback, CallbackContext, EarlyStopping, FitOptions, History, Logs, ModelCheckpoint,
        Trainer, Verbose,
    };
    pub use rime_layers::initializers::Initializer;
    pub use rime_layers::layers::Padding;
    pub use rime_layers::losses::{
        BinaryCrossentropy, CategoricalCrossentropy, Huber, Loss, MeanAbsoluteError,
        MeanSquaredError, SparseCategoricalCrossentropy,
    };
    pub use rime_layers::metrics::{
        Accuracy, BinaryAccuracy, CategoricalAccuracy, Mean, Metric, SparseCategoricalAccuracy,
        UpdateState,
    };
    pub use rime_layers::optimizers::{Adam, AdamW, Optimizer, RmsProp, Sgd};
    pub use rime_layers::saving::{load_model, save_model};
    pub use rime_layers::{
        Add, BatchNormalization, CallContext, Concatenate, Dense, Dropout, Embedding,
        EmbeddingTranspose, Flatten, Input, Lambda, Layer, LayerBase, LayerNormalization, LayerRef,
        Model, ModelData, Multiply, Reshape, Sequential, SymbolicTensor, Target, TrainStep, Weight,
        WeightSpec, call_symbolic, clone_model,
    };
    pub use rime_layers::{
        AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D,
        GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
        MaxPooling1D, MaxPooling2D, UpSampling2D, ZeroPadding2D,
    };
    pub use rime_tape::{
        AsSource, DeferredGradient, GradcheckOptions, GradientOptions, GradientTape, Gradients,
        Source, TrainableMask, UnconnectedGradients, Variable, custom_gradient, gradcheck,
        no_record, stop_gradient,
    };
    pub use rime_tensor::{DType, Element, PartialShape, Shape, Tensor, seeded_rng};

    pub use crate::{Error, Result};
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
