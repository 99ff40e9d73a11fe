//! `DepthwiseConv2D`: each input channel convolved with its own
//! `depth_multiplier` filters (a grouped convolution, one channel a group).

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::conv::{ConvConfig, ConvCore, ConvKind, Padding, conv_layer};
use super::flatten::DataFormat;
use crate::activations::Activation;
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result};

/// DepthwiseConv2D's constructor arguments (Keras names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DepthwiseConv2DConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Window height and width.
    pub kernel_size: Vec<usize>,
    /// Window steps.
    pub strides: Vec<usize>,
    /// Border handling.
    pub padding: Padding,
    /// Filters per input channel.
    pub depth_multiplier: usize,
    /// Only `channels_last` is supported.
    pub data_format: DataFormat,
    /// Spacing of the kernel taps.
    pub dilation_rate: Vec<usize>,
    /// Applied to the output.
    pub activation: Activation,
    /// Whether to add a bias.
    pub use_bias: bool,
    /// Kernel initializer (Glorot uniform).
    pub depthwise_initializer: Initializer,
    /// Bias initializer (zeros).
    pub bias_initializer: Initializer,
    /// Penalty on the kernel.
    pub depthwise_regularizer: Option<Regularizer>,
    /// Penalty on the bias.
    pub bias_regularizer: Option<Regularizer>,
    /// Penalty on the output.
    pub activity_regularizer: Option<Regularizer>,
    /// Projection of the kernel after each update.
    pub depthwise_constraint: Option<WeightConstraint>,
    /// Projection of the bias after each update.
    pub bias_constraint: Option<WeightConstraint>,
}

impl Default for DepthwiseConv2DConfig {
    fn default() -> Self {
        let c = ConvConfig::default();
        DepthwiseConv2DConfig {
            name: None,
            kernel_size: vec![1, 1],
            strides: c.strides,
            padding: c.padding,
            depth_multiplier: 1,
            data_format: c.data_format,
            dilation_rate: c.dilation_rate,
            activation: c.activation,
            use_bias: true,
            depthwise_initializer: c.kernel_initializer,
            bias_initializer: c.bias_initializer,
            depthwise_regularizer: None,
            bias_regularizer: None,
            activity_regularizer: None,
            depthwise_constraint: None,
            bias_constraint: None,
        }
    }
}

impl DepthwiseConv2DConfig {
    fn to_conv(&self) -> ConvConfig {
        ConvConfig {
            name: self.name.clone(),
            filters: self.depth_multiplier,
            kernel_size: self.kernel_size.clone(),
            strides: self.strides.clone(),
            padding: self.padding,
            data_format: self.data_format,
            dilation_rate: self.dilation_rate.clone(),
            groups: 1,
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.depthwise_initializer.clone(),
            bias_initializer: self.bias_initializer.clone(),
            kernel_regularizer: self.depthwise_regularizer,
            bias_regularizer: self.bias_regularizer,
            activity_regularizer: self.activity_regularizer,
            kernel_constraint: self.depthwise_constraint,
            bias_constraint: self.bias_constraint,
        }
    }

    pub(crate) fn from_conv(c: &ConvConfig) -> Self {
        DepthwiseConv2DConfig {
            name: c.name.clone(),
            kernel_size: c.kernel_size.clone(),
            strides: c.strides.clone(),
            padding: c.padding,
            depth_multiplier: c.filters,
            data_format: c.data_format,
            dilation_rate: c.dilation_rate.clone(),
            activation: c.activation,
            use_bias: c.use_bias,
            depthwise_initializer: c.kernel_initializer.clone(),
            bias_initializer: c.bias_initializer.clone(),
            depthwise_regularizer: c.kernel_regularizer,
            bias_regularizer: c.bias_regularizer,
            activity_regularizer: c.activity_regularizer,
            depthwise_constraint: c.kernel_constraint,
            bias_constraint: c.bias_constraint,
        }
    }
}

/// Keras' DepthwiseConv2D: kernel `[kh, kw, c_in, depth_multiplier]`,
/// output channel `c · depth_multiplier + j` from input channel `c` and its
/// filter `j`.
///
/// ```
/// use rime_layers::{DepthwiseConv2D, Layer};
/// use rime_tensor::Tensor;
/// let dw = DepthwiseConv2D::new([3, 3]).depth_multiplier(2);
/// assert_eq!(dw.call(&Tensor::<f32>::ones([1, 5, 5, 3])?, false)?.shape(), &[1, 3, 3, 6]);
/// assert_eq!(dw.kernel().unwrap().shape(), [3, 3, 3, 2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct DepthwiseConv2D<T: Element = f32> {
    core: ConvCore<T>,
}

impl<T: Element> DepthwiseConv2D<T> {
    /// Windows of `kernel_size`, one filter per channel, Keras' defaults
    /// otherwise (invalid arguments are reported when the layer is built).
    pub fn new(kernel_size: [usize; 2]) -> Self {
        let config = DepthwiseConv2DConfig {
            kernel_size: kernel_size.to_vec(),
            ..DepthwiseConv2DConfig::default()
        }
        .to_conv();
        DepthwiseConv2D {
            core: ConvCore::lenient(ConvKind::Depthwise, config),
        }
    }

    /// From a full config; errors name the argument at fault.
    pub fn from_config(config: DepthwiseConv2DConfig) -> Result<Self> {
        Ok(DepthwiseConv2D {
            core: ConvCore::new(ConvKind::Depthwise, config.to_conv())?,
        })
    }

    /// Sets the filters per input channel.
    pub fn depth_multiplier(self, m: usize) -> Self {
        self.with(|c| c.filters = m)
    }
    /// Sets the kernel initializer.
    pub fn depthwise_initializer(self, i: Initializer) -> Self {
        self.with(|c| c.kernel_initializer = i)
    }
    /// Sets the kernel regularizer.
    pub fn depthwise_regularizer(self, r: Regularizer) -> Self {
        self.with(|c| c.kernel_regularizer = Some(r))
    }
    /// Sets the kernel constraint.
    pub fn depthwise_constraint(self, k: WeightConstraint) -> Self {
        self.with(|c| c.kernel_constraint = Some(k))
    }
    /// The config.
    pub fn config(&self) -> DepthwiseConv2DConfig {
        DepthwiseConv2DConfig::from_conv(&self.core.config)
    }
}

conv_layer!(DepthwiseConv2D);
