//! `Conv2DTranspose`: the transposed convolution (the input gradient of a
//! `Conv2D`), upsampling by its strides.

use rime_tape::Variable;
use rime_tensor::{Element, PartialShape, Tensor};

use super::conv::{ConvConfig, ConvCore, ConvKind, Padding, plain_conv_layer};
use crate::activations::Activation;
use crate::constraints::WeightConstraint;
use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{CallContext, Layer, LayerBase, Result};

/// Keras' Conv2DTranspose: `activation(conv2d_transpose(x, kernel) +
/// bias)`, kernel `[kh, kw, filters, c_in]`; each spatial size becomes
/// `n·s + max(k - s, 0)` (`valid`) or `n·s` (`same`).
///
/// ```
/// use rime_layers::{Conv2DTranspose, Layer, layers::Padding};
/// use rime_tensor::Tensor;
/// let up = Conv2DTranspose::new(3, [3, 3]).strides(&[2, 2]).padding(Padding::Same);
/// assert_eq!(up.call(&Tensor::<f32>::ones([1, 4, 5, 2])?, false)?.shape(), &[1, 8, 10, 3]);
/// assert_eq!(up.kernel().unwrap().shape(), [3, 3, 3, 2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Conv2DTranspose<T: Element = f32> {
    core: ConvCore<T>,
}

impl<T: Element> Conv2DTranspose<T> {
    /// `filters` outputs, windows of `kernel_size`, Keras' defaults
    /// otherwise (invalid arguments are reported when the layer is built).
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Self {
        let config = ConvConfig {
            filters,
            kernel_size: kernel_size.to_vec(),
            ..ConvConfig::default()
        };
        Conv2DTranspose {
            core: ConvCore::lenient(ConvKind::Transpose, config),
        }
    }
}
plain_conv_layer!(Conv2DTranspose, ConvKind::Transpose);
