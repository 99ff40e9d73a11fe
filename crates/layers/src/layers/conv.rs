//! The convolution layers' shared core and `Conv1D`, `Conv2D`:
//! `activation(conv(x, kernel) + bias)`, channels last, like Keras' base
//! `BaseConv` (build, call, compute_output_shape, get_config). The
//! depthwise and transposed variants (`depthwise_conv2d.rs`,
//! `conv2d_transpose.rs`) reuse it with their own kernel layout.

use rime_tape::Variable;
use rime_tensor::ops::conv::{conv_output_size, conv_transpose_output_size};
use rime_tensor::{Conv1dOptions, Conv2dOptions, Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{at_build, constraint, invalid, known_output, validate_regularizers};
use super::depthwise_conv2d::DepthwiseConv2DConfig;
use super::flatten::DataFormat;
use crate::activations::Activation;
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result, Weight, WeightSpec};

/// Keras' `padding` argument of convolution and pooling layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// Output size `ceil(n / stride)` (TensorFlow's rule).
    Same,
}

impl From<Padding> for rime_tensor::Padding {
    fn from(p: Padding) -> Self {
        match p {
            Padding::Valid => rime_tensor::Padding::Valid,
            Padding::Same => rime_tensor::Padding::Same,
        }
    }
}

/// The constructor arguments of `Conv1D`, `Conv2D` and `Conv2DTranspose`
/// (Keras names and defaults; tuples have one entry per spatial axis).
///
/// ```
/// use rime_layers::layers::ConvConfig;
/// let c: ConvConfig = serde_json::from_str(
///     r#"{"filters": 8, "kernel_size": [3, 3], "padding": "same", "activation": "relu"}"#,
/// ).unwrap();
/// assert_eq!((c.filters, c.strides.clone(), c.use_bias), (8, vec![1, 1], true));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Output channels.
    pub filters: usize,
    /// Window size per spatial axis.
    pub kernel_size: Vec<usize>,
    /// Window step per spatial axis.
    pub strides: Vec<usize>,
    /// Border handling.
    pub padding: Padding,
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
    /// Spacing of the kernel taps per spatial axis.
    pub dilation_rate: Vec<usize>,
    /// Channel groups.
    pub groups: usize,
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
    /// Penalty on the output.
    pub activity_regularizer: Option<Regularizer>,
    /// Projection of the kernel after each update.
    pub kernel_constraint: Option<WeightConstraint>,
    /// Projection of the bias after each update.
    pub bias_constraint: Option<WeightConstraint>,
}

impl Default for ConvConfig {
    fn default() -> Self {
        ConvConfig {
            name: None,
            filters: 1,
            kernel_size: vec![1, 1],
            strides: vec![1, 1],
            padding: Padding::Valid,
            data_format: DataFormat::ChannelsLast,
            dilation_rate: vec![1, 1],
            groups: 1,
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

/// Which convolution a [`ConvCore`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvKind {
    Conv1D,
    Conv2D,
    /// kernel `[kh, kw, c_in, depth_multiplier]`; `filters` holds the
    /// depth multiplier
    Depthwise,
    /// kernel `[kh, kw, filters, c_in]`
    Transpose,
}

impl ConvKind {
    pub(crate) fn class(self) -> &'static str {
        match self {
            ConvKind::Conv1D => "Conv1D",
            ConvKind::Conv2D => "Conv2D",
            ConvKind::Depthwise => "DepthwiseConv2D",
            ConvKind::Transpose => "Conv2DTranspose",
        }
    }

    fn spatial(self) -> usize {
        if self == ConvKind::Conv1D { 1 } else { 2 }
    }
}

/// What the convolution layers share: config checks, weights, the call.
pub(crate) struct ConvCore<T: Element> {
    pub(crate) base: LayerBase<T>,
    pub(crate) config: ConvConfig,
    pub(crate) kind: ConvKind,
    kernel: Weight<T>,
    bias: Weight<T>,
}

/// `v` with one entry per spatial axis: as given, or one number repeated
/// (Keras accepts an int for a tuple; a 2-D default `[1, 1]` serves 1-D).
fn per_axis(v: &[usize], n: usize) -> Option<Vec<usize>> {
    match v {
        v if v.len() == n => Some(v.to_vec()),
        [first, rest @ ..] if rest.iter().all(|r| r == first) => Some(vec![*first; n]),
        _ => None,
    }
}

impl<T: Element> ConvCore<T> {
    pub(crate) fn new(kind: ConvKind, config: ConvConfig) -> Result<Self> {
        let config = Self::checked(kind, config)?;
        Ok(Self::unchecked(kind, config))
    }

    /// The config validated, with one-entry tuples repeated per axis.
    pub(crate) fn checked(kind: ConvKind, mut config: ConvConfig) -> Result<ConvConfig> {
        let class = kind.class();
        let n = kind.spatial();
        let fix = |v: &[usize], what: &str| {
            per_axis(v, n)
                .ok_or_else(|| invalid(class, format!("{what} {v:?} needs {n} entries (or one)")))
        };
        config.kernel_size = fix(&config.kernel_size, "kernel_size")?;
        config.strides = fix(&config.strides, "strides")?;
        config.dilation_rate = fix(&config.dilation_rate, "dilation_rate")?;
        let c = &config;
        if c.filters == 0 {
            return Err(invalid(class, "filters must be > 0"));
        }
        if c.groups == 0 || !c.filters.is_multiple_of(c.groups) {
            return Err(invalid(
                class,
                format!(
                    "filters {} must be a multiple of groups {} >= 1",
                    c.filters, c.groups
                ),
            ));
        }
        if kind != ConvKind::Conv2D && kind != ConvKind::Conv1D && c.groups != 1 {
            return Err(invalid(class, "groups must be 1"));
        }
        if [&c.kernel_size, &c.strides, &c.dilation_rate]
            .iter()
            .any(|v| v.contains(&0))
        {
            return Err(invalid(
                class,
                "kernel_size, strides and dilation_rate must be >= 1",
            ));
        }
        if c.strides.iter().any(|&s| s > 1) && c.dilation_rate.iter().any(|&d| d > 1) {
            return Err(invalid(
                class,
                "strides > 1 together with dilation_rate > 1 is not supported",
            ));
        }
        if c.data_format != DataFormat::ChannelsLast {
            return Err(invalid(
                class,
                "only data_format = channels_last is supported",
            ));
        }
        validate_regularizers([
            &c.kernel_regularizer,
            &c.bias_regularizer,
            &c.activity_regularizer,
        ])?;
        Ok(config)
    }

    pub(crate) fn kernel(&self) -> Option<Variable<T>> {
        self.kernel.get()
    }

    pub(crate) fn bias(&self) -> Option<Variable<T>> {
        self.bias.get()
    }

    /// The input channels of a valid input shape (`None`: unknown).
    fn channels(&self, shapes: &[PartialShape]) -> Result<Option<usize>> {
        let rank = self.kind.spatial() + 2;
        match shapes {
            [s] if s.rank() == rank => Ok(s[rank - 1]),
            _ => Err(self.base.bad_input(
                shapes,
                format!("expects one input of rank {rank} (batch, spatial axes, channels)"),
            )),
        }
    }

    /// The output channels for `c_in` input channels (unknown for a
    /// depthwise convolution of unknown channels).
    fn output_channels(
        &self,
        shapes: &[PartialShape],
        c_in: Option<usize>,
    ) -> Result<Option<usize>> {
        match self.kind {
            ConvKind::Depthwise => c_in
                .map(|c| {
                    c.checked_mul(self.config.filters)
                        .ok_or_else(|| self.base.bad_input(shapes, "output channels overflow"))
                })
                .transpose(),
            _ => Ok(Some(self.config.filters)),
        }
    }

    pub(crate) fn build(&self, shapes: &[PartialShape]) -> Result<()> {
        Self::checked(self.kind, self.config.clone()).map_err(|e| at_build(&self.base, e))?;
        self.channels(shapes)?;
        let c_in = self.base.known_dim(
            shapes,
            0,
            self.kind.spatial() + 1,
            "(the input channels) to size its kernel",
        )?;
        let c = &self.config;
        if c_in == 0 || !c_in.is_multiple_of(c.groups) {
            return Err(self.base.bad_input(
                shapes,
                format!(
                    "input channels {c_in} must be a positive multiple of groups {}",
                    c.groups
                ),
            ));
        }
        let mut shape = c.kernel_size.clone();
        match self.kind {
            ConvKind::Conv1D | ConvKind::Conv2D => shape.extend([c_in / c.groups, c.filters]),
            ConvKind::Depthwise => shape.extend([c_in, c.filters]),
            ConvKind::Transpose => shape.extend([c.filters, c_in]),
        }
        let kernel = self.base.add_weight(
            WeightSpec::new("kernel", shape)
                .initializer(c.kernel_initializer.clone())
                .regularizer(c.kernel_regularizer)
                .constraint(constraint(c.kernel_constraint)),
        )?;
        self.kernel.set(kernel);
        if c.use_bias {
            let c_out = self
                .output_channels(shapes, Some(c_in))?
                .unwrap_or(c.filters);
            let bias = self.base.add_weight(
                WeightSpec::new("bias", [c_out])
                    .initializer(c.bias_initializer.clone())
                    .regularizer(c.bias_regularizer)
                    .constraint(constraint(c.bias_constraint)),
            )?;
            self.bias.set(bias);
        }
        Ok(())
    }

    fn options(&self) -> Conv2dOptions {
        let c = &self.config;
        let two = |v: &[usize]| {
            if v.len() == 1 {
                [1, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        Conv2dOptions {
            strides: two(&c.strides),
            padding: c.padding.into(),
            dilation: two(&c.dilation_rate),
            groups: c.groups,
        }
    }

    /// An unknown spatial size gives an unknown output size.
    pub(crate) fn output_shape(&self, shapes: &[PartialShape]) -> Result<PartialShape> {
        Self::checked(self.kind, self.config.clone()).map_err(|e| at_build(&self.base, e))?;
        let c_in = self.channels(shapes)?;
        let s = &shapes[0];
        let c = &self.config;
        let mut dims = vec![s[0]];
        for i in 0..self.kind.spatial() {
            let (k, st, d) = (c.kernel_size[i], c.strides[i], c.dilation_rate[i]);
            let Some(n) = s[i + 1] else {
                dims.push(None);
                continue;
            };
            let out = if self.kind == ConvKind::Transpose {
                conv_transpose_output_size(n, k, st, d, c.padding.into())
            } else {
                conv_output_size(n, k, st, d, c.padding.into()).map(|(o, _)| o)
            };
            dims.push(Some(out.ok_or_else(|| {
                self.base.bad_input(
                    shapes,
                    format!(
                        "kernel_size {:?} (dilation {:?}) does not fit the input",
                        c.kernel_size, c.dilation_rate
                    ),
                )
            })?));
        }
        dims.push(self.output_channels(shapes, c_in)?);
        Ok(PartialShape::from(dims))
    }

    pub(crate) fn call(&self, inputs: &[Tensor<T>]) -> Result<Tensor<T>> {
        let x = self.base.single(inputs)?;
        let kernel = self.kernel.get().ok_or_else(|| self.base.not_built())?;
        let shapes = [PartialShape::from(x.shape())];
        self.channels(&shapes)?;
        let c_in = x.dims()[x.rank() - 1]; // the rank was checked
        let k = kernel.value();
        let built_for = match self.kind {
            ConvKind::Conv1D | ConvKind::Conv2D => k.dims()[k.rank() - 2] * self.config.groups,
            ConvKind::Depthwise => k.dims()[2],
            ConvKind::Transpose => k.dims()[3],
        };
        if c_in != built_for {
            return Err(self.base.bad_input(
                &shapes,
                format!("was built for inputs with {built_for} channels"),
            ));
        }
        let opts = self.options();
        let mut y = match self.kind {
            ConvKind::Conv1D => x.conv1d(
                &k,
                &Conv1dOptions {
                    stride: opts.strides[1],
                    padding: opts.padding,
                    dilation: opts.dilation[1],
                    groups: opts.groups,
                },
            )?,
            ConvKind::Conv2D => x.conv2d(&k, &opts)?,
            ConvKind::Depthwise => x.depthwise_conv2d(&k, &opts)?,
            ConvKind::Transpose => {
                let out = self.output_shape(&shapes)?;
                let out = known_output(&self.base, &[x.shape().clone()], out)?;
                x.conv2d_transpose(&k, [out[1], out[2]], &opts)?
            }
        };
        if let Some(bias) = self.bias.get() {
            y = y.add(&bias.value())?;
        }
        let y = self.config.activation.apply(&y)?;
        if let Some(r) = &self.config.activity_regularizer {
            let batch = T::of(y.dims().first().copied().unwrap_or(1).max(1) as f64);
            self.base.add_loss(r.penalty(&y)?.div_scalar(batch));
        }
        Ok(y)
    }

    pub(crate) fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        match self.kind {
            // Keras' names: `depth_multiplier`, `depthwise_initializer`, ..
            ConvKind::Depthwise => serde_json::to_value(DepthwiseConv2DConfig::from_conv(&c)),
            _ => serde_json::to_value(c),
        }
        .expect("configs serialize")
    }
}

/// What every layer wrapping a [`ConvCore`] has: the builders of the
/// arguments all convolutions share, the weights' getters, the `Layer`
/// impl, `named`/`with_trainable`. The kernel's builders and `from_config`
/// differ in name (Keras' `depthwise_*`) and are written per class.
macro_rules! conv_layer {
    ($ty:ident) => {
        impl<T: Element> $ty<T> {
            /// Applies a config change; an invalid result is kept as given
            /// and reported when the layer is built.
            fn with(mut self, f: impl FnOnce(&mut ConvConfig)) -> Self {
                let mut config = self.core.config.clone();
                f(&mut config);
                self.core.config =
                    ConvCore::<T>::checked(self.core.kind, config.clone()).unwrap_or(config);
                self
            }
            /// Sets the strides (one entry per spatial axis, or one for all).
            pub fn strides(self, s: &[usize]) -> Self {
                let s = s.to_vec();
                self.with(|c| c.strides = s)
            }
            /// Sets the padding.
            pub fn padding(self, p: Padding) -> Self {
                self.with(|c| c.padding = p)
            }
            /// Sets the dilation rate.
            pub fn dilation_rate(self, d: &[usize]) -> Self {
                let d = d.to_vec();
                self.with(|c| c.dilation_rate = d)
            }
            /// Sets the activation.
            pub fn activation(self, a: Activation) -> Self {
                self.with(|c| c.activation = a)
            }
            /// Whether to add a bias.
            pub fn use_bias(self, b: bool) -> Self {
                self.with(|c| c.use_bias = b)
            }
            /// Sets the bias initializer.
            pub fn bias_initializer(self, i: Initializer) -> Self {
                self.with(|c| c.bias_initializer = i)
            }
            /// Sets the bias regularizer.
            pub fn bias_regularizer(self, r: Regularizer) -> Self {
                self.with(|c| c.bias_regularizer = Some(r))
            }
            /// Sets the activity regularizer (divided by the batch size).
            pub fn activity_regularizer(self, r: Regularizer) -> Self {
                self.with(|c| c.activity_regularizer = Some(r))
            }
            /// Sets the bias constraint.
            pub fn bias_constraint(self, k: WeightConstraint) -> Self {
                self.with(|c| c.bias_constraint = Some(k))
            }
            /// The kernel, once built.
            pub fn kernel(&self) -> Option<Variable<T>> {
                self.core.kernel()
            }
            /// The bias, once built (None without `use_bias`).
            pub fn bias(&self) -> Option<Variable<T>> {
                self.core.bias()
            }
        }

        impl<T: Element> Layer<T> for $ty<T> {
            fn base(&self) -> &LayerBase<T> {
                &self.core.base
            }
            fn class_name(&self) -> &'static str {
                self.core.kind.class()
            }
            fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
                self.core.build(input_shapes)
            }
            fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
                Ok(vec![self.core.call(inputs)?])
            }
            fn compute_output_shape(
                &self,
                input_shapes: &[PartialShape],
            ) -> Result<Vec<PartialShape>> {
                Ok(vec![self.core.output_shape(input_shapes)?])
            }
            fn get_config(&self) -> serde_json::Value {
                self.core.get_config()
            }
        }

        layer_builders!($ty, core.base);
    };
}

/// [`conv_layer!`] plus the `ConvConfig` parts: `from_config`, `config`
/// and the `kernel_*` builders (Conv1D, Conv2D, Conv2DTranspose).
macro_rules! plain_conv_layer {
    ($ty:ident, $kind:expr) => {
        impl<T: Element> $ty<T> {
            /// From a full config; errors name the layer class and the
            /// argument at fault.
            pub fn from_config(config: ConvConfig) -> Result<Self> {
                Ok($ty {
                    core: ConvCore::new($kind, config)?,
                })
            }
            /// Sets the kernel initializer.
            pub fn kernel_initializer(self, i: Initializer) -> Self {
                self.with(|c| c.kernel_initializer = i)
            }
            /// Sets the kernel regularizer.
            pub fn kernel_regularizer(self, r: Regularizer) -> Self {
                self.with(|c| c.kernel_regularizer = Some(r))
            }
            /// Sets the kernel constraint.
            pub fn kernel_constraint(self, k: WeightConstraint) -> Self {
                self.with(|c| c.kernel_constraint = Some(k))
            }
            /// The config.
            pub fn config(&self) -> &ConvConfig {
                &self.core.config
            }
        }
        $crate::layers::conv::conv_layer!($ty);
    };
}
pub(crate) use conv_layer;
pub(crate) use plain_conv_layer;

/// Keras' Conv1D: `activation(conv1d(x, kernel) + bias)` over `[batch,
/// steps, channels]`, kernel `[k, c_in / groups, filters]`.
///
/// ```
/// use rime_layers::{Conv1D, Layer, layers::Padding};
/// use rime_tensor::Tensor;
/// let conv = Conv1D::new(4, 3).padding(Padding::Same);
/// assert_eq!(conv.call(&Tensor::<f32>::ones([2, 10, 3])?, false)?.shape(), &[2, 10, 4]);
/// assert_eq!(conv.kernel().unwrap().shape(), [3, 3, 4]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Conv1D<T: Element = f32> {
    core: ConvCore<T>,
}

impl<T: Element> Conv1D<T> {
    /// `filters` outputs, windows of `kernel_size`, Keras' defaults
    /// otherwise (invalid arguments are reported when the layer is built).
    pub fn new(filters: usize, kernel_size: usize) -> Self {
        let config = ConvConfig {
            filters,
            kernel_size: vec![kernel_size],
            strides: vec![1],
            dilation_rate: vec![1],
            ..ConvConfig::default()
        };
        Conv1D {
            core: ConvCore::lenient(ConvKind::Conv1D, config),
        }
    }
}
plain_conv_layer!(Conv1D, ConvKind::Conv1D);

/// Keras' Conv2D: `activation(conv2d(x, kernel) + bias)` over `[batch,
/// height, width, channels]`, kernel `[kh, kw, c_in / groups, filters]`.
///
/// ```
/// use rime_layers::{Conv2D, Layer, activations::Activation, layers::Padding};
/// use rime_tensor::{PartialShape, Tensor};
/// let conv = Conv2D::new(32, [3, 3]).activation(Activation::Relu);
/// assert_eq!(conv.call(&Tensor::<f32>::ones([1, 28, 28, 1])?, false)?.shape(), &[1, 26, 26, 32]);
/// let s = Conv2D::<f32>::new(8, [3, 3]).strides(&[2]).padding(Padding::Same);
/// let out = s.compute_output_shape(&[PartialShape::batched([7, 8, 3])])?;
/// assert_eq!(out[0].to_string(), "(None, 4, 4, 8)");
/// // any size, once the channels are known
/// let out = s.compute_output_shape(&[PartialShape::from([None, None, None, Some(3)])])?;
/// assert_eq!(out[0].to_string(), "(None, None, None, 8)");
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Conv2D<T: Element = f32> {
    core: ConvCore<T>,
}

impl<T: Element> Conv2D<T> {
    /// `filters` outputs, windows of `kernel_size`, Keras' defaults
    /// otherwise (invalid arguments are reported when the layer is built).
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Self {
        let config = ConvConfig {
            filters,
            kernel_size: kernel_size.to_vec(),
            ..ConvConfig::default()
        };
        Conv2D {
            core: ConvCore::lenient(ConvKind::Conv2D, config),
        }
    }

    /// Sets the number of channel groups.
    pub fn groups(self, groups: usize) -> Self {
        self.with(|c| c.groups = groups)
    }
}
plain_conv_layer!(Conv2D, ConvKind::Conv2D);

impl<T: Element> ConvCore<T> {
    /// A core for `config` from a builder: normalized if valid, else kept
    /// as given and reported when the layer is built.
    pub(crate) fn lenient(kind: ConvKind, config: ConvConfig) -> Self {
        let config = Self::checked(kind, config.clone()).unwrap_or(config);
        Self::unchecked(kind, config)
    }

    /// A core whose config failed validation: its build reports why.
    pub(crate) fn unchecked(kind: ConvKind, config: ConvConfig) -> Self {
        ConvCore {
            base: LayerBase::new(kind.class(), config.name.clone()),
            config,
            kind,
            kernel: Weight::new(),
            bias: Weight::new(),
        }
    }
}
