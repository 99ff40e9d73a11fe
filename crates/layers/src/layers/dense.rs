//! `Dense`: `activation(x · kernel + bias)` over the last axis.

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{check_size, constraint};
use crate::activations::Activation;
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result, Weight, WeightSpec};

/// Dense's constructor arguments (Keras names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenseConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Output size.
    pub units: usize,
    /// Applied to the output.
    pub activation: Activation,
    /// Whether to add a bias.
    pub use_bias: bool,
    /// Kernel initializer (Glorot uniform).
    pub kernel_initializer: Initializer,
    /// Bias initializer (zeros).
    pub bias_initializer: Initializer,
    /// Penalty on the kernel.
    pub kernel_regularizer: Option<Regularizer>,
    /// Penalty on the bias.
    pub bias_regularizer: Option<Regularizer>,
    /// Penalty on the output (added to `losses()` each call).
    pub activity_regularizer: Option<Regularizer>,
    /// Projection of the kernel after each update.
    pub kernel_constraint: Option<WeightConstraint>,
    /// Projection of the bias after each update.
    pub bias_constraint: Option<WeightConstraint>,
}

impl Default for DenseConfig {
    fn default() -> Self {
        DenseConfig {
            name: None,
            units: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::glorot_uniform(),
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
            activity_regularizer: None,
            kernel_constraint: None,
            bias_constraint: None,
        }
    }
}

/// A densely connected layer: `activation(x · kernel + bias)`, with the
/// kernel `[input_dim, units]` applied to the last axis of `x`.
///
/// ```
/// use rime_layers::{activations::Activation, Dense, Layer};
/// use rime_tensor::Tensor;
/// let layer = Dense::new(2).activation(Activation::Relu);
/// let y = layer.call(&Tensor::<f32>::ones([5, 3])?, true)?;
/// assert_eq!(y.shape(), &[5, 2]);
/// assert_eq!(layer.kernel().unwrap().shape(), [3, 2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Dense<T: Element = f32> {
    base: LayerBase<T>,
    config: DenseConfig,
    kernel: Weight<T>,
    bias: Weight<T>,
}

impl<T: Element> Dense<T> {
    /// `units` outputs, no activation, with bias; Keras' defaults.
    /// (`units == 0` is reported when the layer is built.)
    pub fn new(units: usize) -> Self {
        let config = DenseConfig {
            units,
            ..DenseConfig::default()
        };
        Dense {
            base: LayerBase::new("Dense", None),
            config,
            kernel: Weight::new(),
            bias: Weight::new(),
        }
    }

    /// From a full config; errors if `units` is 0 or a regularizer is invalid.
    pub fn from_config(config: DenseConfig) -> Result<Self> {
        check_size("Dense", "units", config.units)?;
        for r in [
            &config.kernel_regularizer,
            &config.bias_regularizer,
            &config.activity_regularizer,
        ]
        .into_iter()
        .flatten()
        {
            r.validate()?;
        }
        Ok(Dense {
            base: LayerBase::new("Dense", config.name.clone()),
            config,
            kernel: Weight::new(),
            bias: Weight::new(),
        })
    }

    fn with(self, f: impl FnOnce(&mut DenseConfig)) -> Self {
        let mut config = self.config.clone();
        f(&mut config);
        Dense { config, ..self }
    }

    /// Sets the activation.
    pub fn activation(self, a: Activation) -> Self {
        self.with(|c| c.activation = a)
    }

    /// Whether to add a bias.
    pub fn use_bias(self, b: bool) -> Self {
        self.with(|c| c.use_bias = b)
    }

    /// Sets the kernel initializer.
    pub fn kernel_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.kernel_initializer = i)
    }

    /// Sets the bias initializer.
    pub fn bias_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.bias_initializer = i)
    }

    /// Sets the kernel regularizer.
    pub fn kernel_regularizer(self, r: Regularizer) -> Self {
        self.with(|c| c.kernel_regularizer = Some(r))
    }

    /// Sets the bias regularizer.
    pub fn bias_regularizer(self, r: Regularizer) -> Self {
        self.with(|c| c.bias_regularizer = Some(r))
    }

    /// Sets the activity regularizer: a penalty on the output, divided by
    /// the batch size (Keras), added to `losses()` at each call.
    pub fn activity_regularizer(self, r: Regularizer) -> Self {
        self.with(|c| c.activity_regularizer = Some(r))
    }

    /// Sets the kernel constraint.
    pub fn kernel_constraint(self, k: WeightConstraint) -> Self {
        self.with(|c| c.kernel_constraint = Some(k))
    }

    /// Sets the bias constraint.
    pub fn bias_constraint(self, k: WeightConstraint) -> Self {
        self.with(|c| c.bias_constraint = Some(k))
    }

    /// The config.
    pub fn config(&self) -> &DenseConfig {
        &self.config
    }

    /// The kernel, once built.
    pub fn kernel(&self) -> Option<Variable<T>> {
        self.kernel.get()
    }

    /// The bias, once built (None without `use_bias`).
    pub fn bias(&self) -> Option<Variable<T>> {
        self.bias.get()
    }
}

impl<T: Element> Layer<T> for Dense<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Dense"
    }

    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        if self.config.units == 0 || self.config.units > super::common::MAX_SIZE {
            return Err(self.base.bad_input(
                input_shapes,
                format!(
                    "units must be in 1..={}, got {}",
                    super::common::MAX_SIZE,
                    self.config.units
                ),
            ));
        }
        let input_dim = self.base.last_dim(input_shapes)?;
        let c = &self.config;
        let kernel = self.base.add_weight(
            WeightSpec::new("kernel", [input_dim, c.units])
                .initializer(c.kernel_initializer.clone())
                .regularizer(c.kernel_regularizer)
                .constraint(constraint(c.kernel_constraint)),
        )?;
        self.kernel.set(kernel);
        if c.use_bias {
            let bias = self.base.add_weight(
                WeightSpec::new("bias", [c.units])
                    .initializer(c.bias_initializer.clone())
                    .regularizer(c.bias_regularizer)
                    .constraint(constraint(c.bias_constraint)),
            )?;
            self.bias.set(bias);
        }
        Ok(())
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let kernel = self.kernel.get().ok_or_else(|| self.base.not_built())?;
        let input_dim = kernel.shape()[0];
        if x.rank() == 0 || x.dims()[x.rank() - 1] != input_dim {
            return Err(self.base.bad_input(
                &[x.shape().clone()],
                format!("was built for inputs with last axis {input_dim}"),
            ));
        }
        // read in the unfused order: kernel, then bias
        let kernel = kernel.value();
        let bias = self.bias.get().map(|b| b.value());
        let y = match self.config.activation.fused() {
            // one op: the bias add and activation run in the product's epilogue
            Some(act) if x.rank() == 2 => x.dense(&kernel, bias.as_ref(), act)?,
            _ => {
                let mut y = x.matmul(&kernel)?;
                if let Some(bias) = &bias {
                    y = y.add(bias)?;
                }
                self.config.activation.apply(&y)?
            }
        };
        if let Some(r) = &self.config.activity_regularizer {
            // Keras divides the activity penalty by the batch size
            let batch = T::of(y.dims().first().copied().unwrap_or(1).max(1) as f64);
            self.base.add_loss(r.penalty(&y)?.div_scalar(batch));
        }
        Ok(vec![y])
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        match input_shapes {
            [s] if s.rank() >= 1 => Ok(vec![s.with_dim(s.rank() - 1, Some(self.config.units))]),
            _ => Err(self
                .base
                .bad_input(input_shapes, "expects one input of rank >= 1")),
        }
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Dense);
