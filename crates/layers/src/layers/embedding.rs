//! `Embedding`: rows of an `[input_dim, output_dim]` table, looked up by index.

use std::sync::OnceLock;

use rime_tape::Variable;
use rime_tensor::{Element, IntElement, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{at_build, check_size, constraint, single_shape, validate_regularizers};
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Error, Layer, LayerBase, ModelData, Result, WeightSpec};

/// Embedding's constructor arguments (Keras names and defaults).
///
/// ```
/// use rime_layers::EmbeddingConfig;
/// let c: EmbeddingConfig = serde_json::from_str(r#"{"input_dim": 10, "output_dim": 4}"#).unwrap();
/// assert_eq!(c, EmbeddingConfig::new(10, 4));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingConfig {
    /// Layer name (None: automatic).
    #[serde(default)]
    pub name: Option<String>,
    /// Number of rows: indices lie in `0..input_dim`.
    pub input_dim: usize,
    /// Length of each row.
    pub output_dim: usize,
    /// Initializer of the table (Keras' `"uniform"`: `RandomUniform(-0.05, 0.05)`).
    #[serde(default = "Initializer::random_uniform")]
    pub embeddings_initializer: Initializer,
    /// Penalty on the table.
    #[serde(default)]
    pub embeddings_regularizer: Option<Regularizer>,
    /// Projection of the table after each update.
    #[serde(default)]
    pub embeddings_constraint: Option<WeightConstraint>,
}

impl EmbeddingConfig {
    /// `input_dim` rows of length `output_dim`, Keras' defaults otherwise.
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        EmbeddingConfig {
            name: None,
            input_dim,
            output_dim,
            embeddings_initializer: Initializer::random_uniform(),
            embeddings_regularizer: None,
            embeddings_constraint: None,
        }
    }
}

/// Looks up rows of a trainable `[input_dim, output_dim]` table: ids of any
/// shape give an output of that shape plus `[output_dim]`. Ids must lie in
/// `0..input_dim`; anything else is an error naming the layer.
///
/// Integer ids (`i32`, `i64`) go through [`lookup`](Embedding::lookup),
/// the natural call in a custom loop. Inside a model, whose inputs are all
/// of the model's float type, [`call`](Layer::call) takes the ids as floats
/// (whole numbers, exact up to 2^24 in `f32`): convert integer ids for a
/// model with [`Tensor::to_dtype`].
///
/// The table is [`embeddings`](Embedding::embeddings); an output layer can
/// reuse it, transposed, with [`EmbeddingTranspose`](crate::EmbeddingTranspose)
/// (weight tying).
///
/// ```
/// use rime_layers::{Embedding, Layer};
/// use rime_tensor::Tensor;
/// let emb = Embedding::<f32>::new(10, 4);
/// let ids = Tensor::from_vec(vec![1.0, 2.0, 9.0, 0.0, 0.0, 3.0], [2, 3])?;
/// let y = emb.call(&ids, false)?;
/// assert_eq!(y.shape(), &[2, 3, 4]);
/// let table = emb.embeddings().unwrap().value();
/// assert_eq!(y.to_vec()[8..12], table.to_vec()[36..40]); // row 9
/// assert!(emb.call(&Tensor::vector(vec![10.0]), false).is_err());
/// // integer ids: the same rows
/// let int_ids = Tensor::from_vec(vec![1i64, 2, 9, 0, 0, 3], [2, 3])?;
/// assert_eq!(emb.lookup(&int_ids)?, y);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Embedding<T: Element = f32> {
    base: LayerBase<T>,
    config: EmbeddingConfig,
    embeddings: OnceLock<Variable<T>>,
}

impl<T: Element> Embedding<T> {
    /// A table of `input_dim` rows of length `output_dim` (a size of 0 is
    /// reported when the layer is built).
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding {
            base: LayerBase::new("Embedding", None),
            config: EmbeddingConfig::new(input_dim, output_dim),
            embeddings: OnceLock::new(),
        }
    }

    fn validate(config: &EmbeddingConfig) -> Result<()> {
        check_size("Embedding", "input_dim", config.input_dim)?;
        check_size("Embedding", "output_dim", config.output_dim)?;
        validate_regularizers([&config.embeddings_regularizer])
    }

    /// From a full config; errors if a size is 0 or the regularizer is invalid.
    pub fn from_config(config: EmbeddingConfig) -> Result<Self> {
        Self::validate(&config)?;
        Ok(Embedding {
            base: LayerBase::new("Embedding", config.name.clone()),
            config,
            embeddings: OnceLock::new(),
        })
    }

    fn with(self, f: impl FnOnce(&mut EmbeddingConfig)) -> Self {
        let mut config = self.config.clone();
        f(&mut config);
        Embedding { config, ..self }
    }

    /// Sets the table's initializer.
    pub fn embeddings_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.embeddings_initializer = i)
    }

    /// Sets the table's regularizer (checked when the layer builds).
    pub fn embeddings_regularizer(self, r: Regularizer) -> Self {
        self.with(|c| c.embeddings_regularizer = Some(r))
    }

    /// Sets the table's constraint.
    pub fn embeddings_constraint(self, k: WeightConstraint) -> Self {
        self.with(|c| c.embeddings_constraint = Some(k))
    }

    /// The config.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.config
    }

    /// The `[input_dim, output_dim]` table, once built. The table's shape
    /// does not depend on the input, so `ensure_built(&[])` builds it
    /// before any call.
    pub fn embeddings(&self) -> Option<&Variable<T>> {
        self.embeddings.get()
    }

    /// Looks up integer ids (`i32` or `i64`) of any shape: the output has
    /// their shape plus `[output_dim]`, and is differentiable in the table
    /// (ids are not differentiable). Builds the table on first use. A
    /// negative or too large id is an error naming the layer, the id and
    /// the ids' shape.
    ///
    /// ```
    /// use rime_layers::{Embedding, Error};
    /// use rime_tensor::Tensor;
    /// let emb = Embedding::<f32>::new(5, 2);
    /// let ids = Tensor::from_vec(vec![4i32, 0, 4], [3])?;
    /// let rows = emb.lookup(&ids)?;
    /// assert_eq!(rows.shape(), &[3, 2]);
    /// assert_eq!(rows.to_vec()[..2], rows.to_vec()[4..]);
    /// let err = emb.lookup(&Tensor::vector(vec![0i64, -1])).unwrap_err();
    /// assert!(err.to_string().contains("-1"), "{err}");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn lookup<I: IntElement>(&self, ids: &Tensor<I>) -> Result<Tensor<T>> {
        self.ensure_built(&[ids.shape().into()])?;
        self.gather_rows(ids)
    }

    /// The rows of the built table at `ids`, each checked to be in
    /// `0..input_dim` first (an error changes nothing).
    fn gather_rows<I: IntElement>(&self, ids: &Tensor<I>) -> Result<Tensor<T>> {
        let table = self.embeddings.get().ok_or_else(|| self.base.not_built())?;
        let n = self.config.input_dim;
        if let Some((position, bad)) = ids
            .as_slice()
            .iter()
            .enumerate()
            .find(|(_, v)| v.to_usize().is_none_or(|i| i >= n))
        {
            return Err(Error::IndexOutOfBounds {
                layer: self.base.name().to_string(),
                index: bad.to_i64().unwrap_or(i64::MAX),
                position,
                bound: n,
                shape: ids.shape().clone(),
            });
        }
        Ok(table.value().gather(0, ids)?)
    }

    /// The indices in `x`, each checked to be a whole number in `0..input_dim`.
    fn indices(&self, x: &Tensor<T>) -> Result<Vec<usize>> {
        let n = self.config.input_dim;
        x.as_slice()
            .iter()
            .enumerate()
            .map(|(pos, &v)| {
                let f = v.to_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    Err(self.base.bad_input(
                        &[x.shape().clone()],
                        format!("index {f} at flat position {pos} is not a whole number"),
                    ))
                } else if f < 0.0 || f >= n as f64 {
                    Err(Error::IndexOutOfBounds {
                        layer: self.base.name().to_string(),
                        // a whole number: saturating, exact below 2^63
                        index: f as i64,
                        position: pos,
                        bound: n,
                        shape: x.shape().clone(),
                    })
                } else {
                    Ok(f as usize)
                }
            })
            .collect()
    }
}

impl<T: Element> Layer<T> for Embedding<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Embedding"
    }

    fn build(&self, _input_shapes: &[PartialShape]) -> Result<()> {
        Self::validate(&self.config).map_err(|e| at_build(&self.base, e))?;
        let c = &self.config;
        let table = self.base.add_weight(
            WeightSpec::new("embeddings", [c.input_dim, c.output_dim])
                .initializer(c.embeddings_initializer.clone())
                .regularizer(c.embeddings_regularizer)
                .constraint(constraint(c.embeddings_constraint)),
        )?;
        let _ = self.embeddings.set(table);
        Ok(())
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let table = self.embeddings.get().ok_or_else(|| self.base.not_built())?;
        let ids = self.indices(x)?;
        let mut dims = x.dims().to_vec();
        dims.push(self.config.output_dim);
        Ok(vec![table.value().index_select(0, &ids)?.reshape(dims)?])
    }

    /// Integer ids are looked up as they are: they never pass through
    /// floats.
    fn call_data_with(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        match inputs {
            [ModelData::Int(ids)] => Ok(vec![self.gather_rows(ids)?]),
            [ModelData::Float(x)] => self.call_with(std::slice::from_ref(x), ctx),
            _ => Err(self.base.bad_input(
                &inputs.iter().map(|d| d.shape().clone()).collect::<Vec<_>>(),
                format!("expects one input, got {}", inputs.len()),
            )),
        }
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        let s = single_shape(&self.base, input_shapes, 0)?;
        let mut d = s.dims().to_vec();
        d.push(Some(self.config.output_dim));
        Ok(vec![PartialShape::from(d)])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Embedding);
