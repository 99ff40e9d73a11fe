//! `BatchNormalization`: normalizes each feature with the batch's
//! statistics in training, with moving averages of them in inference.

use std::sync::OnceLock;

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{constraint, invalid, resolve_axis, single_shape, validate_regularizers};
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result, Weight, WeightSpec};

/// BatchNormalization's constructor arguments (Keras names and defaults).
///
/// ```
/// use rime_layers::BatchNormalizationConfig;
/// let c: BatchNormalizationConfig = serde_json::from_str(r#"{"momentum": 0.9}"#).unwrap();
/// assert_eq!((c.axis, c.momentum, c.epsilon), (-1, 0.9, 1e-3));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchNormalizationConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// The feature axis, kept; the statistics are taken over every other
    /// axis (default -1).
    pub axis: isize,
    /// Weight of the old value in the moving averages (default 0.99).
    pub momentum: f64,
    /// Added to the variance before the square root (default 1e-3).
    pub epsilon: f64,
    /// Whether to add the offset `beta`.
    pub center: bool,
    /// Whether to multiply by `gamma`.
    pub scale: bool,
    /// Initializer of `beta` (zeros).
    pub beta_initializer: Initializer,
    /// Initializer of `gamma` (ones).
    pub gamma_initializer: Initializer,
    /// Initializer of the moving mean (zeros).
    pub moving_mean_initializer: Initializer,
    /// Initializer of the moving variance (ones).
    pub moving_variance_initializer: Initializer,
    /// Penalty on `beta`.
    pub beta_regularizer: Option<Regularizer>,
    /// Penalty on `gamma`.
    pub gamma_regularizer: Option<Regularizer>,
    /// Projection of `beta` after each update.
    pub beta_constraint: Option<WeightConstraint>,
    /// Projection of `gamma` after each update.
    pub gamma_constraint: Option<WeightConstraint>,
}

impl Default for BatchNormalizationConfig {
    fn default() -> Self {
        BatchNormalizationConfig {
            name: None,
            axis: -1,
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            beta_initializer: Initializer::Zeros,
            gamma_initializer: Initializer::Ones,
            moving_mean_initializer: Initializer::Zeros,
            moving_variance_initializer: Initializer::Ones,
            beta_regularizer: None,
            gamma_regularizer: None,
            beta_constraint: None,
            gamma_constraint: None,
        }
    }
}

impl BatchNormalizationConfig {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(invalid(
                "BatchNormalization",
                format!("momentum must be in [0, 1], got {}", self.momentum),
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(invalid(
                "BatchNormalization",
                format!("epsilon must be finite and >= 0, got {}", self.epsilon),
            ));
        }
        validate_regularizers([&self.beta_regularizer, &self.gamma_regularizer])
    }
}

/// Keras 3's batch normalization over the feature axis `axis`:
/// `gamma · (x - mean) / √(variance + epsilon) + beta`.
///
/// - **Training** ([`LayerBase::is_training`]: `training` is true, the layer
///   is trainable, and the call does not come through a frozen model):
///   `mean` and the biased `variance` are the batch's, over every axis but
///   `axis` (gradients flow through them), and the moving statistics move
///   towards them, unrecorded:
///   `moving = moving · momentum + batch · (1 - momentum)`.
/// - **Otherwise** the moving statistics normalize and stay as they are.
///   A frozen layer (`set_trainable(false)`) therefore runs in inference
///   mode even with `training = true` (docs/design.md rule 6, as in Keras).
///
/// Weights, in order: `gamma` (if `scale`), `beta` (if `center`), then the
/// non-trainable `moving_mean` and `moving_variance`.
///
/// ```
/// use rime_layers::{BatchNormalization, Layer};
/// use rime_tensor::Tensor;
/// let bn = BatchNormalization::<f32>::new();
/// let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], [2, 2])?;
/// let y = bn.call(&x, true)?; // batch statistics: mean [2, 20], variance [1, 100]
/// assert!((y.get(&[0, 0])? + 1.0 / 1.001f32.sqrt()).abs() < 1e-6);
/// let moved = bn.moving_mean().unwrap().to_vec(); // 0.99 · 0 + 0.01 · batch mean
/// assert!((moved[0] - 0.02).abs() < 1e-7 && (moved[1] - 0.2).abs() < 1e-7);
/// assert_eq!(bn.trainable_weights().len(), 2); // gamma, beta
/// bn.set_trainable(false);
/// let frozen = bn.call(&x, true)?; // moving statistics, which stay
/// assert_eq!(bn.moving_mean().unwrap().to_vec(), moved);
/// assert!((frozen.get(&[0, 0])? - (1.0 - 0.02) / (0.99f32 + 0.01 + 0.001).sqrt()).abs() < 1e-5);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct BatchNormalization<T: Element = f32> {
    base: LayerBase<T>,
    config: BatchNormalizationConfig,
    /// (input rank, resolved axis, features) at build
    built: OnceLock<(usize, usize, usize)>,
    gamma: Weight<T>,
    beta: Weight<T>,
    moving_mean: Weight<T>,
    moving_variance: Weight<T>,
}

impl<T: Element> Default for BatchNormalization<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> BatchNormalization<T> {
    /// Keras' defaults: last axis, momentum 0.99, epsilon 1e-3, with
    /// `gamma` and `beta`.
    pub fn new() -> Self {
        Self::with_config(BatchNormalizationConfig::default())
    }

    fn with_config(config: BatchNormalizationConfig) -> Self {
        BatchNormalization {
            base: LayerBase::new("BatchNormalization", config.name.clone()),
            config,
            built: OnceLock::new(),
            gamma: Weight::new(),
            beta: Weight::new(),
            moving_mean: Weight::new(),
            moving_variance: Weight::new(),
        }
    }

    /// From a full config; errors if momentum is outside [0, 1], epsilon is
    /// negative or not finite, or a regularizer is invalid.
    pub fn from_config(config: BatchNormalizationConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_config(config))
    }

    fn with(self, f: impl FnOnce(&mut BatchNormalizationConfig)) -> Self {
        let mut config = self.config.clone();
        f(&mut config);
        BatchNormalization { config, ..self }
    }

    /// Sets the feature axis.
    pub fn axis(self, axis: isize) -> Self {
        self.with(|c| c.axis = axis)
    }

    /// Sets the momentum of the moving averages (checked when the layer builds).
    pub fn momentum(self, m: f64) -> Self {
        self.with(|c| c.momentum = m)
    }

    /// Sets epsilon (checked when the layer builds).
    pub fn epsilon(self, e: f64) -> Self {
        self.with(|c| c.epsilon = e)
    }

    /// Whether to add `beta`.
    pub fn center(self, b: bool) -> Self {
        self.with(|c| c.center = b)
    }

    /// Whether to multiply by `gamma`.
    pub fn scale(self, b: bool) -> Self {
        self.with(|c| c.scale = b)
    }

    /// Sets `gamma`'s initializer.
    pub fn gamma_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.gamma_initializer = i)
    }

    /// Sets `beta`'s initializer.
    pub fn beta_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.beta_initializer = i)
    }

    /// Sets the moving mean's initializer.
    pub fn moving_mean_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.moving_mean_initializer = i)
    }

    /// Sets the moving variance's initializer.
    pub fn moving_variance_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.moving_variance_initializer = i)
    }

    /// The config.
    pub fn config(&self) -> &BatchNormalizationConfig {
        &self.config
    }

    /// The scale, once built (None without `scale`).
    pub fn gamma(&self) -> Option<Variable<T>> {
        self.gamma.get()
    }

    /// The offset, once built (None without `center`).
    pub fn beta(&self) -> Option<Variable<T>> {
        self.beta.get()
    }

    /// The moving mean (non-trainable), once built.
    pub fn moving_mean(&self) -> Option<Variable<T>> {
        self.moving_mean.get()
    }

    /// The moving variance (non-trainable), once built.
    pub fn moving_variance(&self) -> Option<Variable<T>> {
        self.moving_variance.get()
    }

    /// The axis for an input of this shape, checked against the shape the
    /// layer was built for (Keras' input spec; an unknown size fits).
    fn check(&self, shapes: &[PartialShape]) -> Result<usize> {
        let s = single_shape(&self.base, shapes, 1)?;
        let axis = resolve_axis(&self.base, shapes, self.config.axis, s.rank())?;
        if let Some(&(rank, a, n)) = self.built.get()
            && (s.rank() != rank || s[a].is_some_and(|d| d != n))
        {
            return Err(self.base.bad_input(
                shapes,
                format!(
                    "the layer was built for inputs of rank {rank} with {n} features on axis {a}"
                ),
            ));
        }
        Ok(axis)
    }

    /// `moving = moving · momentum + batch · (1 - momentum)` for both
    /// statistics, unrecorded; both new values are computed before either
    /// is assigned.
    fn update_moving(&self, stats: [(&Variable<T>, &Tensor<T>); 2]) -> Result<()> {
        let m = self.config.momentum;
        rime_tape::no_record(|| {
            let mut new = Vec::with_capacity(2);
            for (var, batch) in stats {
                new.push(
                    crate::current_state(var)
                        .mul_scalar(T::of(m))
                        .add(&batch.reshape(var.shape())?.mul_scalar(T::of(1.0 - m)))?,
                );
            }
            // staged inside a training step: committed when it succeeds
            for ((var, _), value) in stats.iter().zip(new) {
                crate::assign_state(var, value)?;
            }
            Ok(())
        })
    }
}

impl<T: Element> Layer<T> for BatchNormalization<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let axis = self.check(input_shapes)?;
        let n = self
            .base
            .known_dim(input_shapes, 0, axis, "to size its statistics")?;
        if c.scale {
            let gamma = self.base.add_weight(
                WeightSpec::new("gamma", [n])
                    .initializer(c.gamma_initializer.clone())
                    .regularizer(c.gamma_regularizer)
                    .constraint(constraint(c.gamma_constraint)),
            )?;
            self.gamma.set(gamma);
        }
        if c.center {
            let beta = self.base.add_weight(
                WeightSpec::new("beta", [n])
                    .initializer(c.beta_initializer.clone())
                    .regularizer(c.beta_regularizer)
                    .constraint(constraint(c.beta_constraint)),
            )?;
            self.beta.set(beta);
        }
        let stat = |name: &str, init: &Initializer| {
            self.base.add_weight(
                WeightSpec::new(name, [n])
                    .initializer(init.clone())
                    .trainable(false),
            )
        };
        let mean = stat("moving_mean", &c.moving_mean_initializer)?;
        let variance = stat("moving_variance", &c.moving_variance_initializer)?;
        self.moving_mean.set(mean);
        self.moving_variance.set(variance);
        let _ = self.built.set((input_shapes[0].rank(), axis, n));
        Ok(())
    }

    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let axis = self.check(&[x.shape().into()])?;
        let n = x.dims()[axis];
        let (moving_mean, moving_variance) =
            match (self.moving_mean.get(), self.moving_variance.get()) {
                (Some(m), Some(v)) => (m, v),
                _ => return Err(self.base.not_built()),
            };
        let mut bshape = vec![1; x.rank()];
        bshape[axis] = n;
        let training = self.base.is_training(ctx);
        let (mean, variance) = if training {
            if x.is_empty() {
                return Err(self
                    .base
                    .bad_input(&[x.shape().clone()], "an empty batch has no statistics"));
            }
            let reduce: Vec<isize> = (0..x.rank())
                .filter(|&a| a != axis)
                .map(|a| a as isize)
                .collect();
            let mean = x.mean(&reduce, true)?;
            let variance = x.var(&reduce, true)?;
            (mean, variance)
        } else {
            (
                crate::current_state(&moving_mean).reshape(bshape.clone())?,
                crate::current_state(&moving_variance).reshape(bshape.clone())?,
            )
        };
        // tf.nn.batch_normalization's arithmetic: x · inv + (beta - mean · inv)
        let mut inv = variance
            .add_scalar(T::of(self.config.epsilon))
            .sqrt()
            .recip();
        if let Some(gamma) = self.gamma.get() {
            inv = inv.mul(&gamma.value().reshape(bshape.clone())?)?;
        }
        let shift = match self.beta.get() {
            Some(beta) => beta.value().reshape(bshape)?.sub(&mean.mul(&inv)?)?,
            None => mean.mul(&inv)?.neg(),
        };
        let y = x.mul(&inv)?.add(&shift)?;
        if training {
            // last, so a call that fails leaves the statistics as they were
            self.update_moving([(&moving_mean, &mean), (&moving_variance, &variance)])?;
        }
        Ok(vec![y])
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.check(input_shapes)?;
        Ok(input_shapes.to_vec())
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(BatchNormalization);
