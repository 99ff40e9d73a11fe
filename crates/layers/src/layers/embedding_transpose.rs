//! `EmbeddingTranspose`: an output projection tied to an [`Embedding`]'s
//! table, `activation(x · embeddingsᵀ + bias)`.

use std::sync::{Arc, OnceLock};

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{invalid, single_shape};
use super::embedding::Embedding;
use crate::activations::Activation;
use crate::config::{LayerConfig, parse, scoped_layer};
use crate::initializers::Initializer;
use crate::{CallContext, Layer, LayerBase, Result, WeightSpec};

/// The Embedding called `name` rebuilt earlier in the current model, if any.
fn scoped_embedding<T: Element>(name: &str) -> Option<Arc<Embedding<T>>> {
    let layer: Arc<dyn std::any::Any + Send + Sync> = scoped_layer::<T>(name)?;
    layer.downcast::<Embedding<T>>().ok()
}

fn zeros() -> Initializer {
    Initializer::Zeros
}

/// EmbeddingTranspose's constructor arguments. `embedding` is the config of
/// the tied [`Embedding`]. Rebuilt as part of a model (a model file,
/// `clone_model`), the layer ties to the model's rebuilt Embedding named
/// `tied_to`; rebuilt alone, it makes a new embedding of that config (fresh
/// weights), tied to the new layer only.
///
/// ```
/// use rime_layers::{config::LayerConfig, Embedding, EmbeddingTransposeConfig};
/// let emb = Embedding::<f32>::new(100, 8);
/// let c = EmbeddingTransposeConfig::new(LayerConfig::of(&emb));
/// assert!(!c.use_bias);
/// assert_eq!(c.embedding.config["input_dim"], 100);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingTransposeConfig {
    /// Layer name (None: automatic).
    #[serde(default)]
    pub name: Option<String>,
    /// The tied embedding's class and config.
    pub embedding: LayerConfig,
    /// The tied Embedding's name: within a model rebuilt from its config,
    /// the layer ties to the rebuilt Embedding of this name.
    #[serde(default)]
    pub tied_to: Option<String>,
    /// Whether to add a bias of `input_dim` (the vocabulary size). Default false.
    #[serde(default)]
    pub use_bias: bool,
    /// Bias initializer (zeros).
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    /// Applied to the output (linear: logits).
    #[serde(default)]
    pub activation: Activation,
}

impl EmbeddingTransposeConfig {
    /// Tied to an embedding of this config; no bias, linear output.
    pub fn new(embedding: LayerConfig) -> Self {
        EmbeddingTransposeConfig {
            name: None,
            tied_to: embedding.config["name"].as_str().map(str::to_string),
            embedding,
            use_bias: false,
            bias_initializer: zeros(),
            activation: Activation::Linear,
        }
    }
}

/// An output projection that reuses an [`Embedding`]'s table, transposed
/// (weight tying, as in language models whose output layer shares the input
/// embedding): `x` of shape `[.., output_dim]` gives logits
/// `x · embeddingsᵀ (+ bias)` of shape `[.., input_dim]`.
///
/// The table is the *same variable* as the embedding's: this layer
/// registers it with [`LayerBase::track_weight`], so gradients from both
/// uses add up in one variable, and a model holding both layers lists it
/// once in `weights()`. Freezing either layer freezes the shared variable
/// (its `trainable` flag is the variable's, as in Keras 3).
///
/// `fresh()`/`layer_from_config` rebuild the layer with a new embedding of
/// the same config, tied to the new layer only; a model that holds both
/// layers is re-tied by rebuilding it in code.
///
/// ```
/// use std::sync::Arc;
/// use rime_layers::{Embedding, EmbeddingTranspose, Layer};
/// use rime_tape::GradientTape;
/// use rime_tensor::Tensor;
/// let emb = Arc::new(Embedding::<f32>::new(10, 4));
/// let logits = EmbeddingTranspose::new(emb.clone());
/// let ids = Tensor::vector(vec![3.0, 7.0]);
/// let tape = GradientTape::new();
/// let y = logits.call(&emb.call(&ids, true)?, true)?; // [2, 10]
/// assert_eq!(y.shape(), &[2, 10]);
/// let table = emb.embeddings().unwrap();
/// assert!(logits.weights()[0].ptr_eq(table));
/// // one gradient for the table, from the lookup and the projection together
/// let g = tape.gradient(&y.sum_all(), &[table])?.remove(0).unwrap();
/// assert_eq!(g.shape(), &[10, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EmbeddingTranspose<T: Element = f32> {
    base: LayerBase<T>,
    config: EmbeddingTransposeConfig,
    embedding: Arc<Embedding<T>>,
    bias: OnceLock<Variable<T>>,
}

impl<T: Element> EmbeddingTranspose<T> {
    /// Tied to `embedding`'s table; no bias, linear output.
    pub fn new(embedding: Arc<Embedding<T>>) -> Self {
        let config = EmbeddingTransposeConfig::new(LayerConfig::of(&*embedding));
        EmbeddingTranspose {
            base: LayerBase::new("EmbeddingTranspose", None),
            config,
            embedding,
            bias: OnceLock::new(),
        }
    }

    /// From a config: tied to the Embedding `config.tied_to` rebuilt earlier
    /// in the same model (model files, `clone_model`), otherwise to a new
    /// [`Embedding`] of `config.embedding`. Errors if the class is not
    /// `Embedding` or its config is invalid.
    pub fn from_config(config: EmbeddingTransposeConfig) -> Result<Self> {
        if config.embedding.class_name != "Embedding" {
            return Err(invalid(
                "EmbeddingTranspose",
                format!(
                    "the tied layer must be an Embedding, got `{}`",
                    config.embedding.class_name
                ),
            ));
        }
        let embedding = match config.tied_to.as_deref().and_then(scoped_embedding::<T>) {
            Some(e) => e,
            None => Arc::new(Embedding::from_config(parse(
                "Embedding",
                &config.embedding.config,
            )?)?),
        };
        Ok(EmbeddingTranspose {
            base: LayerBase::new("EmbeddingTranspose", config.name.clone()),
            config,
            embedding,
            bias: OnceLock::new(),
        })
    }

    fn with(self, f: impl FnOnce(&mut EmbeddingTransposeConfig)) -> Self {
        let mut config = self.config.clone();
        f(&mut config);
        EmbeddingTranspose { config, ..self }
    }

    /// Whether to add a bias (one per row of the table).
    pub fn use_bias(self, b: bool) -> Self {
        self.with(|c| c.use_bias = b)
    }

    /// Sets the bias initializer.
    pub fn bias_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.bias_initializer = i)
    }

    /// Sets the activation.
    pub fn activation(self, a: Activation) -> Self {
        self.with(|c| c.activation = a)
    }

    /// The config.
    pub fn config(&self) -> &EmbeddingTransposeConfig {
        &self.config
    }

    /// The tied embedding layer.
    pub fn embedding(&self) -> &Arc<Embedding<T>> {
        &self.embedding
    }

    /// The bias, once built (None without `use_bias`).
    pub fn bias(&self) -> Option<&Variable<T>> {
        self.bias.get()
    }

    /// The last axis must be the tied embedding's `output_dim` (or not yet
    /// known).
    fn check(&self, input_shapes: &[PartialShape]) -> Result<()> {
        let s = single_shape(&self.base, input_shapes, 1)?;
        let want = self.embedding.config().output_dim;
        match s[s.rank() - 1] {
            Some(got) if got != want => Err(self.base.bad_input(
                input_shapes,
                format!("the last axis must be the tied embedding's output_dim {want}, got {got}"),
            )),
            _ => Ok(()),
        }
    }
}

impl<T: Element> Layer<T> for EmbeddingTranspose<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "EmbeddingTranspose"
    }

    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        self.check(input_shapes)?;
        // the table's shape does not depend on the input: build it if the
        // embedding has not been called yet
        self.embedding.ensure_built(&[])?;
        let table = self
            .embedding
            .embeddings()
            .ok_or_else(|| self.embedding.base().not_built())?;
        self.base.track_weight(table.clone());
        if self.config.use_bias {
            let bias = self.base.add_weight(
                WeightSpec::new("bias", [self.embedding.config().input_dim])
                    .initializer(self.config.bias_initializer.clone()),
            )?;
            let _ = self.bias.set(bias);
        }
        Ok(())
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        self.check(&[x.shape().into()])?;
        let table = self
            .embedding
            .embeddings()
            .ok_or_else(|| self.base.not_built())?
            .value();
        let mut y = if x.rank() == 1 {
            x.unsqueeze(0)?
                .matmul_t(&table, false, true)?
                .squeeze(&[0])?
        } else {
            x.matmul_t(&table, false, true)?
        };
        if let Some(bias) = self.bias.get() {
            y = y.add(&bias.value())?;
        }
        Ok(vec![self.config.activation.apply(&y)?])
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.check(input_shapes)?;
        let s = &input_shapes[0];
        Ok(vec![s.with_dim(
            s.rank() - 1,
            Some(self.embedding.config().input_dim),
        )])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        c.embedding = LayerConfig::of(&*self.embedding);
        c.tied_to = Some(self.embedding.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(EmbeddingTranspose);
