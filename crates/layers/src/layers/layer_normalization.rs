//! `LayerNormalization`: normalizes each example over its feature axes.

use std::sync::OnceLock;

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Deserializer, Serialize};

use super::common::{constraint, invalid, resolve_axis, single_shape, validate_regularizers};
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result, Weight, WeightSpec};

/// Keras' `axis` argument: an integer or a list of integers.
fn int_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<isize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Axis {
        One(isize),
        Many(Vec<isize>),
    }
    Ok(match Axis::deserialize(d)? {
        Axis::One(a) => vec![a],
        Axis::Many(v) => v,
    })
}

/// LayerNormalization's constructor arguments (Keras names and defaults).
/// `axis` reads as an integer or a list (Keras accepts both) and is written
/// as a list.
///
/// ```
/// use rime_layers::LayerNormalizationConfig;
/// let c: LayerNormalizationConfig = serde_json::from_str(r#"{"axis": 1}"#).unwrap();
/// assert_eq!(c.axis, vec![1]);
/// let c: LayerNormalizationConfig = serde_json::from_str(r#"{"axis": [1, 2]}"#).unwrap();
/// assert_eq!((c.axis, c.epsilon), (vec![1, 2], 1e-3));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerNormalizationConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// The axes normalized over (default `[-1]`).
    #[serde(deserialize_with = "int_or_list")]
    pub axis: Vec<isize>,
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
    /// Penalty on `beta`.
    pub beta_regularizer: Option<Regularizer>,
    /// Penalty on `gamma`.
    pub gamma_regularizer: Option<Regularizer>,
    /// Projection of `beta` after each update.
    pub beta_constraint: Option<WeightConstraint>,
    /// Projection of `gamma` after each update.
    pub gamma_constraint: Option<WeightConstraint>,
}

impl Default for LayerNormalizationConfig {
    fn default() -> Self {
        LayerNormalizationConfig {
            name: None,
            axis: vec![-1],
            epsilon: 1e-3,
            center: true,
            scale: true,
            beta_initializer: Initializer::Zeros,
            gamma_initializer: Initializer::Ones,
            beta_regularizer: None,
            gamma_regularizer: None,
            beta_constraint: None,
            gamma_constraint: None,
        }
    }
}

impl LayerNormalizationConfig {
    fn validate(&self) -> Result<()> {
        if self.axis.is_empty() {
            return Err(invalid(
                "LayerNormalization",
                "axis needs at least one axis",
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(invalid(
                "LayerNormalization",
                format!("epsilon must be finite and >= 0, got {}", self.epsilon),
            ));
        }
        validate_regularizers([&self.beta_regularizer, &self.gamma_regularizer])
    }
}

/// Keras 3's layer normalization: each example is normalized by the mean
/// and (biased) variance over `axis`, then scaled by `gamma` and offset by
/// `beta`, which have the shape of the input on `axis`:
/// `x · inv + (beta - mean · inv)` with `inv = gamma / √(variance + epsilon)`.
/// It behaves the same in training and inference.
///
/// ```
/// use rime_layers::{Layer, LayerNormalization};
/// use rime_tensor::Tensor;
/// let ln = LayerNormalization::<f32>::new();
/// let x = Tensor::from_vec(vec![1.0, 3.0, 10.0, 30.0], [2, 2])?;
/// let y = ln.call(&x, false)?; // rows: mean 2 and 20, variance 1 and 100
/// let want = [-1.0 / 1.001f32.sqrt(), 1.0 / 1.001f32.sqrt()];
/// assert!((y.get(&[0, 0])? - want[0]).abs() < 1e-6 && (y.get(&[0, 1])? - want[1]).abs() < 1e-6);
/// assert_eq!(ln.gamma().unwrap().shape(), [2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct LayerNormalization<T: Element = f32> {
    base: LayerBase<T>,
    config: LayerNormalizationConfig,
    /// (input rank, resolved sorted axes, their sizes) at build
    built: OnceLock<(usize, Vec<usize>, Vec<usize>)>,
    gamma: Weight<T>,
    beta: Weight<T>,
}

impl<T: Element> Default for LayerNormalization<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> LayerNormalization<T> {
    /// Keras' defaults: last axis, epsilon 1e-3, with `gamma` and `beta`.
    pub fn new() -> Self {
        Self::with_config(LayerNormalizationConfig::default())
    }

    fn with_config(config: LayerNormalizationConfig) -> Self {
        LayerNormalization {
            base: LayerBase::new("LayerNormalization", config.name.clone()),
            config,
            built: OnceLock::new(),
            gamma: Weight::new(),
            beta: Weight::new(),
        }
    }

    /// From a full config; errors if `axis` is empty, epsilon is negative or
    /// not finite, or a regularizer is invalid.
    pub fn from_config(config: LayerNormalizationConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_config(config))
    }

    fn with(self, f: impl FnOnce(&mut LayerNormalizationConfig)) -> Self {
        let mut config = self.config.clone();
        f(&mut config);
        LayerNormalization { config, ..self }
    }

    /// Normalizes over one axis.
    pub fn axis(self, axis: isize) -> Self {
        self.with(|c| c.axis = vec![axis])
    }

    /// Normalizes over several axes (checked when the layer builds).
    pub fn axes(self, axes: Vec<isize>) -> Self {
        self.with(|c| c.axis = axes)
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

    /// The config.
    pub fn config(&self) -> &LayerNormalizationConfig {
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

    /// The resolved, sorted axes for an input of this shape, checked against
    /// the shape the layer was built for.
    fn check(&self, shapes: &[PartialShape]) -> Result<Vec<usize>> {
        let s = single_shape(&self.base, shapes, 1)?;
        let mut axes = Vec::with_capacity(self.config.axis.len());
        for &a in &self.config.axis {
            let a = resolve_axis(&self.base, shapes, a, s.rank())?;
            if axes.contains(&a) {
                return Err(self.base.bad_input(
                    shapes,
                    format!("axis {:?} names axis {a} twice", self.config.axis),
                ));
            }
            axes.push(a);
        }
        axes.sort_unstable();
        if let Some((rank, built_axes, sizes)) = self.built.get() {
            let fits = axes
                .iter()
                .zip(sizes)
                .all(|(&a, &n)| s[a].is_none_or(|d| d == n));
            if s.rank() != *rank || !fits {
                return Err(self.base.bad_input(
                    shapes,
                    format!(
                        "the layer was built for inputs of rank {rank} with sizes {sizes:?} on axes {built_axes:?}"
                    ),
                ));
            }
        }
        Ok(axes)
    }
}

impl<T: Element> Layer<T> for LayerNormalization<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "LayerNormalization"
    }

    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let axes = self.check(input_shapes)?;
        let s = &input_shapes[0];
        let sizes: Vec<usize> = axes
            .iter()
            .map(|&a| {
                self.base
                    .known_dim(input_shapes, 0, a, "to size its scale and offset")
            })
            .collect::<Result<_>>()?;
        if c.scale {
            let gamma = self.base.add_weight(
                WeightSpec::new("gamma", sizes.clone())
                    .initializer(c.gamma_initializer.clone())
                    .regularizer(c.gamma_regularizer)
                    .constraint(constraint(c.gamma_constraint)),
            )?;
            self.gamma.set(gamma);
        }
        if c.center {
            let beta = self.base.add_weight(
                WeightSpec::new("beta", sizes.clone())
                    .initializer(c.beta_initializer.clone())
                    .regularizer(c.beta_regularizer)
                    .constraint(constraint(c.beta_constraint)),
            )?;
            self.beta.set(beta);
        }
        let _ = self.built.set((s.rank(), axes, sizes));
        Ok(())
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let axes = self.check(&[x.shape().into()])?;
        let mut bshape = vec![1; x.rank()];
        for &a in &axes {
            bshape[a] = x.dims()[a];
        }
        let reduce: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let mean = x.mean(&reduce, true)?;
        let variance = x.var(&reduce, true)?;
        // Keras 3's ops.layer_normalization arithmetic
        let mut inv = variance
            .add_scalar(T::of(self.config.epsilon))
            .sqrt()
            .recip();
        if let Some(gamma) = self.gamma.get() {
            inv = inv.mul(&gamma.value().reshape(bshape.clone())?)?;
        }
        let mut shift = mean.mul(&inv)?.neg();
        if let Some(beta) = self.beta.get() {
            shift = shift.add(&beta.value().reshape(bshape)?)?;
        }
        Ok(vec![x.mul(&inv)?.add(&shift)?])
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

layer_builders!(LayerNormalization);
