//! Convolutions, channels-last like Keras: `conv1d` (NWC), `conv2d` (NHWC)
//! with strides, `valid`/`same` padding (TensorFlow's rule), dilation and
//! groups (depthwise = one input channel per group), `conv2d_transpose`, and
//! the two gradients of `conv2d` as ops of their own, so gradient rules can
//! be written with them and differentiated again. Kernels:
//! `kernels/conv.rs` (im2col blocks feeding the gemm). Gradient rules:
//! rime-tape `rules/conv.rs`.
//!
//! Kernels are `[k, c_in / groups, c_out]` (1-D) and
//! `[kh, kw, c_in / groups, c_out]` (2-D); output channel `o` belongs to
//! group `o / (c_out / groups)`.

use std::ops::Range;

use crate::kernels::conv as kernel;
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor};

/// How a convolution or pooling window treats the border (Keras/TF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Padding {
    /// No padding: windows lie wholly inside the input.
    #[default]
    Valid,
    /// Output size `ceil(n / stride)`; TF pads `max((out - 1)·s + (k - 1)·d
    /// + 1 - n, 0)` in total, the extra one (if odd) at the end.
    Same,
}

/// The output length and the padding before the first element of one
/// spatial axis, by TensorFlow's rule; `None` if the (dilated) window does
/// not fit (`valid` on an input shorter than it) or sizes overflow.
///
/// ```
/// use rime_tensor::ops::conv::{Padding, conv_output_size};
/// // same padding, stride 2: 7 -> 4 with one row of padding before
/// assert_eq!(conv_output_size(7, 3, 2, 1, Padding::Same), Some((4, 1)));
/// assert_eq!(conv_output_size(6, 3, 2, 1, Padding::Same), Some((3, 0)));
/// assert_eq!(conv_output_size(5, 3, 1, 2, Padding::Valid), Some((1, 0)));
/// assert_eq!(conv_output_size(4, 3, 1, 2, Padding::Valid), None);
/// ```
pub fn conv_output_size(
    n: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Option<(usize, usize)> {
    if k == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let kd = (k - 1).checked_mul(dilation)?.checked_add(1)?;
    match padding {
        Padding::Valid => (n >= kd).then(|| ((n - kd) / stride + 1, 0)),
        Padding::Same => {
            let out = n.div_ceil(stride);
            if out == 0 {
                return Some((0, 0));
            }
            let need = (out - 1).checked_mul(stride)?.checked_add(kd)?;
            Some((out, need.saturating_sub(n) / 2))
        }
    }
}

/// The output length of a transposed convolution along one axis (Keras'
/// rule without `output_padding`): `n·s + max(kd - s, 0)` for `valid`,
/// `n·s` for `same`, with `kd` the dilated kernel size.
///
/// ```
/// use rime_tensor::ops::conv::{Padding, conv_transpose_output_size};
/// assert_eq!(conv_transpose_output_size(4, 3, 2, 1, Padding::Valid), Some(9));
/// assert_eq!(conv_transpose_output_size(4, 3, 2, 1, Padding::Same), Some(8));
/// ```
pub fn conv_transpose_output_size(
    n: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Option<usize> {
    if k == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let kd = (k - 1).checked_mul(dilation)?.checked_add(1)?;
    let base = n.checked_mul(stride)?;
    match padding {
        Padding::Valid => base.checked_add(kd.saturating_sub(stride)),
        Padding::Same => Some(base),
    }
}

/// Options of a 2-D convolution (Keras' arguments).
///
/// ```
/// use rime_tensor::ops::conv::{Conv2dOptions, Padding};
/// let o = Conv2dOptions::default().strides([2, 2]).padding(Padding::Same);
/// assert_eq!((o.strides, o.dilation, o.groups), ([2, 2], [1, 1], 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dOptions {
    /// Step of the window along height and width.
    pub strides: [usize; 2],
    /// Border handling.
    pub padding: Padding,
    /// Spacing of the kernel taps along height and width.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels split into this many
    /// independent convolutions.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            strides: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    /// Sets the strides.
    pub fn strides(self, strides: [usize; 2]) -> Self {
        Conv2dOptions { strides, ..self }
    }
    /// Sets the padding.
    pub fn padding(self, padding: Padding) -> Self {
        Conv2dOptions { padding, ..self }
    }
    /// Sets the dilation.
    pub fn dilation(self, dilation: [usize; 2]) -> Self {
        Conv2dOptions { dilation, ..self }
    }
    /// Sets the number of groups.
    pub fn groups(self, groups: usize) -> Self {
        Conv2dOptions { groups, ..self }
    }
}

/// Options of a 1-D convolution (Keras' arguments).
///
/// ```
/// use rime_tensor::ops::conv::{Conv1dOptions, Padding};
/// let o = Conv1dOptions { stride: 2, padding: Padding::Same, ..Default::default() };
/// assert_eq!(o.dilation, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv1dOptions {
    /// Step of the window.
    pub stride: usize,
    /// Border handling.
    pub padding: Padding,
    /// Spacing of the kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions {
            stride: 1,
            padding: Padding::Valid,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv1dOptions {
    fn to_2d(self) -> Conv2dOptions {
        Conv2dOptions {
            strides: [1, self.stride],
            padding: self.padding,
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// The validated geometry of a 2-D convolution: everything its kernels and
/// gradient rules need. Built by [`Conv2dGeometry::new`], which checks every
/// size with overflow-checked arithmetic.
///
/// ```
/// use rime_tensor::ops::conv::{Conv2dGeometry, Conv2dOptions, Padding};
/// let g = Conv2dGeometry::new(
///     "conv2d",
///     &[8, 28, 28, 1].into(),
///     &[3, 3, 1, 32].into(),
///     &Conv2dOptions::default().strides([2, 2]).padding(Padding::Same),
/// )?;
/// assert_eq!(g.output_shape(), [8, 14, 14, 32]);
/// assert_eq!(g.pads, [0, 0]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Input `[n, h, w, c_in]`.
    pub input: [usize; 4],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Output channels.
    pub out_c: usize,
    /// Output height and width.
    pub output: [usize; 2],
    /// Strides along height and width.
    pub strides: [usize; 2],
    /// Dilations along height and width.
    pub dilations: [usize; 2],
    /// Padding before the first row and column.
    pub pads: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

fn bad(op: &'static str, msg: String) -> Error {
    Error::InvalidArgument { op, msg }
}

impl Conv2dGeometry {
    /// Validates a convolution of an input of shape `input` (`[n, h, w,
    /// c_in]`) with a kernel of shape `kernel` (`[kh, kw, c_in / groups,
    /// c_out]`) under `opts`; `op` names the op in errors.
    pub fn new(
        op: &'static str,
        input: &Shape,
        kernel: &Shape,
        opts: &Conv2dOptions,
    ) -> Result<Self> {
        if input.rank() != 4 {
            return Err(Error::Rank {
                op,
                expected: "input of rank 4 [batch, height, width, channels]",
                shape: input.clone(),
            });
        }
        if kernel.rank() != 4 {
            return Err(Error::Rank {
                op,
                expected: "kernel of rank 4 [kh, kw, in_channels / groups, out_channels]",
                shape: kernel.clone(),
            });
        }
        let [n, h, w, c] = [input[0], input[1], input[2], input[3]];
        let [kh, kw, kc, out_c] = [kernel[0], kernel[1], kernel[2], kernel[3]];
        let groups = opts.groups;
        if opts.strides.contains(&0) || opts.dilation.contains(&0) || groups == 0 {
            return Err(bad(
                op,
                format!(
                    "strides {:?}, dilation {:?} and groups {groups} must be >= 1",
                    opts.strides, opts.dilation
                ),
            ));
        }
        if opts.strides.iter().any(|&s| s > 1) && opts.dilation.iter().any(|&d| d > 1) {
            // TF and Keras reject this combination too
            return Err(bad(
                op,
                format!(
                    "strides {:?} > 1 together with dilation {:?} > 1 is not supported",
                    opts.strides, opts.dilation
                ),
            ));
        }
        if kh == 0 || kw == 0 {
            return Err(bad(op, format!("kernel {kernel} has an empty window")));
        }
        if !c.is_multiple_of(groups) || kc.checked_mul(groups) != Some(c) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: input.clone(),
                rhs: kernel.clone(),
                msg: format!(
                    "input channels {c} must equal kernel in_channels {kc} x groups {groups}"
                ),
            });
        }
        if !out_c.is_multiple_of(groups) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: input.clone(),
                rhs: kernel.clone(),
                msg: format!("out_channels {out_c} is not a multiple of groups {groups}"),
            });
        }
        let axis = |i: usize, size: usize, k: usize| {
            conv_output_size(size, k, opts.strides[i], opts.dilation[i], opts.padding).ok_or_else(
                || Error::ShapeMismatch {
                    op,
                    lhs: input.clone(),
                    rhs: kernel.clone(),
                    msg: format!(
                        "the kernel (dilation {:?}) does not fit the input with {:?} padding",
                        opts.dilation, opts.padding
                    ),
                },
            )
        };
        let (oh, pt) = axis(0, h, kh)?;
        let (ow, pl) = axis(1, w, kw)?;
        let g = Conv2dGeometry {
            input: [n, h, w, c],
            kernel: [kh, kw],
            out_c,
            output: [oh, ow],
            strides: opts.strides,
            dilations: opts.dilation,
            pads: [pt, pl],
            groups,
        };
        let sizes = [
            g.output_shape().checked_numel(),
            input.checked_numel(),
            kernel.checked_numel(),
            // an im2col row, and the gemm's n·oh·ow·width work
            kh.checked_mul(kw)
                .and_then(|v| v.checked_mul(kc))
                .and_then(|v| v.checked_mul(n))
                .and_then(|v| v.checked_mul(oh))
                .and_then(|v| v.checked_mul(ow)),
        ];
        if sizes.contains(&None) {
            return Err(bad(
                op,
                format!("input {input} and kernel {kernel} give sizes beyond usize"),
            ));
        }
        Ok(g)
    }

    /// Output positions: `n · out_h · out_w`.
    pub fn positions(&self) -> usize {
        self.input[0] * self.output[0] * self.output[1]
    }

    /// `[n, h, w, c_in]`.
    pub fn input_shape(&self) -> Shape {
        Shape::from(&self.input[..])
    }

    /// `[kh, kw, c_in / groups, c_out]`.
    pub fn kernel_shape(&self) -> Shape {
        Shape::from(
            &[
                self.kernel[0],
                self.kernel[1],
                self.input[3] / self.groups,
                self.out_c,
            ][..],
        )
    }

    /// `[n, out_h, out_w, c_out]`.
    pub fn output_shape(&self) -> Shape {
        Shape::from(&[self.input[0], self.output[0], self.output[1], self.out_c][..])
    }

    fn expect(&self, op: &'static str, what: &str, got: &Shape, want: Shape) -> Result<()> {
        if got != &want {
            return Err(Error::ShapeMismatch {
                op,
                lhs: got.clone(),
                rhs: want,
                msg: format!("{what} does not match the convolution's geometry"),
            });
        }
        Ok(())
    }
}

/// The recorded ops of this family. Each carries the validated geometry of
/// the forward convolution it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConvOp {
    /// `conv2d(x, w)`: inputs `[x, w]`.
    Conv2d(Conv2dGeometry),
    /// The input gradient of `conv2d` (transposed convolution): inputs
    /// `[dy, w]`, output shaped like the forward input.
    Conv2dBackpropInput(Conv2dGeometry),
    /// The kernel gradient of `conv2d`: inputs `[x, dy]`, output shaped like
    /// the kernel.
    Conv2dBackpropFilter(Conv2dGeometry),
}

impl<T: Element> Tensor<T> {
    /// 2-D convolution of an NHWC input with a `[kh, kw, c_in / groups,
    /// c_out]` kernel (TensorFlow's `conv2d`, Keras' `Conv2D` without bias):
    /// `[n, oh, ow, c_out]`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv2dOptions, Padding};
    /// let x = Tensor::<f32>::from_vec((0..16).map(|v| v as f32).collect(), [1, 4, 4, 1])?;
    /// let k = Tensor::<f32>::ones([2, 2, 1, 1])?;
    /// let y = x.conv2d(&k, &Conv2dOptions::default().strides([2, 2]))?;
    /// assert_eq!(y.shape(), &[1, 2, 2, 1]);
    /// assert_eq!(y.to_vec(), vec![10.0, 18.0, 42.0, 50.0]);
    /// let same = x.conv2d(&k, &Conv2dOptions::default().padding(Padding::Same))?;
    /// assert_eq!(same.shape(), &[1, 4, 4, 1]);
    /// assert!(x.conv2d(&Tensor::ones([2, 2, 3, 1])?, &Conv2dOptions::default()).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d(&self, kernel: &Tensor<T>, opts: &Conv2dOptions) -> Result<Tensor<T>> {
        let g = Conv2dGeometry::new("conv2d", self.shape(), kernel.shape(), opts)?;
        self.conv2d_with(kernel, &g)
    }

    /// [`conv2d`](Self::conv2d) with a geometry already validated (what the
    /// gradient rules call); the shapes are checked against it.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv2dGeometry, Conv2dOptions};
    /// let x = Tensor::<f32>::ones([1, 3, 3, 2])?;
    /// let k = Tensor::<f32>::ones([2, 2, 2, 4])?;
    /// let g = Conv2dGeometry::new("conv2d", x.shape(), k.shape(), &Conv2dOptions::default())?;
    /// assert_eq!(x.conv2d_with(&k, &g)?.to_vec(), vec![8.0; 16]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d_with(&self, kernel: &Tensor<T>, g: &Conv2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().conv2d_with(self, kernel, g)
    }

    pub(crate) fn conv2d_with_native(
        &self,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>> {
        g.expect("conv2d", "input", self.shape(), g.input_shape())?;
        g.expect("conv2d", "kernel", kernel.shape(), g.kernel_shape())?;
        let out = kernel::conv2d_forward(self.as_slice(), kernel.as_slice(), g);
        let out = Tensor::from_parts(out, g.output_shape());
        record(
            || Op::Conv(Box::new(ConvOp::Conv2d(g.clone()))),
            &[self, kernel],
            &out,
        );
        Ok(out)
    }

    /// The input gradient of `conv2d(x, kernel)` under geometry `g`, for
    /// `self` the gradient of its output: shaped like `x`. This is the
    /// transposed convolution of `self` with `kernel`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv2dGeometry, Conv2dOptions};
    /// let g = Conv2dGeometry::new("conv2d", &[1, 3, 3, 1].into(), &[2, 2, 1, 1].into(),
    ///     &Conv2dOptions::default())?;
    /// let dy = Tensor::<f32>::ones([1, 2, 2, 1])?;
    /// let dx = dy.conv2d_backprop_input(&Tensor::ones([2, 2, 1, 1])?, &g)?;
    /// // how many windows cover each input pixel
    /// assert_eq!(dx.to_vec(), vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d_backprop_input(
        &self,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().conv2d_backprop_input(self, kernel, g)
    }

    pub(crate) fn conv2d_backprop_input_native(
        &self,
        kernel: &Tensor<T>,
        g: &Conv2dGeometry,
    ) -> Result<Tensor<T>> {
        let op = "conv2d_backprop_input";
        g.expect(op, "output gradient", self.shape(), g.output_shape())?;
        g.expect(op, "kernel", kernel.shape(), g.kernel_shape())?;
        let out = kernel::conv2d_backprop_input(self.as_slice(), kernel.as_slice(), g);
        let out = Tensor::from_parts(out, g.input_shape());
        record(
            || Op::Conv(Box::new(ConvOp::Conv2dBackpropInput(g.clone()))),
            &[self, kernel],
            &out,
        );
        Ok(out)
    }

    /// The kernel gradient of `conv2d(self, kernel)` under geometry `g`,
    /// given `dy`, the gradient of its output: shaped like the kernel.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv2dGeometry, Conv2dOptions};
    /// let g = Conv2dGeometry::new("conv2d", &[1, 3, 3, 1].into(), &[2, 2, 1, 1].into(),
    ///     &Conv2dOptions::default())?;
    /// let x = Tensor::<f32>::from_vec((1..=9).map(|v| v as f32).collect(), [1, 3, 3, 1])?;
    /// let dw = x.conv2d_backprop_filter(&Tensor::ones([1, 2, 2, 1])?, &g)?;
    /// assert_eq!(dw.to_vec(), vec![12.0, 16.0, 24.0, 28.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d_backprop_filter(&self, dy: &Tensor<T>, g: &Conv2dGeometry) -> Result<Tensor<T>> {
        let out = self.backprop_filter(dy, g, None)?;
        record(
            || Op::Conv(Box::new(ConvOp::Conv2dBackpropFilter(g.clone()))),
            &[self, dy],
            &out,
        );
        Ok(out)
    }

    /// [`conv2d_backprop_filter`](Self::conv2d_backprop_filter) computing
    /// only the output filters in `filters` (ranges of the kernel's last
    /// axis); the others are zero. This is how the gradient rule serves a
    /// kernel whose trainable part is a set of filters: the cost shrinks
    /// with it. Not recorded on tapes.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv2dGeometry, Conv2dOptions};
    /// let g = Conv2dGeometry::new("conv2d", &[1, 3, 3, 1].into(), &[2, 2, 1, 2].into(),
    ///     &Conv2dOptions::default())?;
    /// let x = Tensor::<f32>::ones([1, 3, 3, 1])?;
    /// let dw = x.conv2d_backprop_filter_filters(&Tensor::ones([1, 2, 2, 2])?, &g, &[1..2])?;
    /// assert_eq!(dw.to_vec(), vec![0.0, 4.0, 0.0, 4.0, 0.0, 4.0, 0.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d_backprop_filter_filters(
        &self,
        dy: &Tensor<T>,
        g: &Conv2dGeometry,
        filters: &[Range<usize>],
    ) -> Result<Tensor<T>> {
        if let Some(r) = filters.iter().find(|r| r.start > r.end || r.end > g.out_c) {
            return Err(bad(
                "conv2d_backprop_filter",
                format!(
                    "filter range {r:?} is out of bounds for kernel {}",
                    g.kernel_shape()
                ),
            ));
        }
        self.backprop_filter(dy, g, Some(filters))
    }

    fn backprop_filter(
        &self,
        dy: &Tensor<T>,
        g: &Conv2dGeometry,
        filters: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().backprop_filter(self, dy, g, filters)
    }

    pub(crate) fn backprop_filter_native(
        &self,
        dy: &Tensor<T>,
        g: &Conv2dGeometry,
        filters: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        let op = "conv2d_backprop_filter";
        g.expect(op, "input", self.shape(), g.input_shape())?;
        g.expect(op, "output gradient", dy.shape(), g.output_shape())?;
        let out = kernel::conv2d_backprop_filter(self.as_slice(), dy.as_slice(), g, filters);
        Ok(Tensor::from_parts(out, g.kernel_shape()))
    }

    /// Transposed 2-D convolution (TensorFlow's `conv2d_transpose`, Keras'
    /// `Conv2DTranspose` without bias): `self` is `[n, h, w, c_in]`, the
    /// kernel `[kh, kw, c_out, c_in]`, the result `[n, out_h, out_w, c_out]`
    /// where `output` is `[out_h, out_w]` (see
    /// [`conv_transpose_output_size`]). It is the input gradient of the
    /// convolution that maps the output back onto `self`'s shape.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::Conv2dOptions;
    /// let x = Tensor::<f32>::ones([1, 2, 2, 1])?;
    /// let k = Tensor::<f32>::ones([2, 2, 1, 1])?;
    /// let y = x.conv2d_transpose(&k, [4, 4], &Conv2dOptions::default().strides([2, 2]))?;
    /// assert_eq!(y.to_vec(), vec![1.0; 16]);
    /// assert!(x.conv2d_transpose(&k, [6, 6], &Conv2dOptions::default().strides([2, 2])).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv2d_transpose(
        &self,
        kernel: &Tensor<T>,
        output: [usize; 2],
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().conv2d_transpose(self, kernel, output, opts)
    }

    pub(crate) fn conv2d_transpose_native(
        &self,
        kernel: &Tensor<T>,
        output: [usize; 2],
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>> {
        let op = "conv2d_transpose";
        if self.rank() != 4 || kernel.rank() != 4 {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: kernel.shape().clone(),
                msg: "expects an input [n, h, w, c_in] and a kernel [kh, kw, c_out, c_in]".into(),
            });
        }
        let d = self.dims();
        let forward_in =
            Shape::from(&[d[0], output[0], output[1], kernel.dims()[2] * opts.groups][..]);
        let g = Conv2dGeometry::new(op, &forward_in, kernel.shape(), opts)?;
        if g.output_shape() != *self.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: kernel.shape().clone(),
                msg: format!(
                    "output size {output:?} does not map back to this input under strides {:?}, \
                     {:?} padding, dilation {:?} (a convolution of {forward_in} gives {})",
                    opts.strides,
                    opts.padding,
                    opts.dilation,
                    g.output_shape()
                ),
            });
        }
        self.conv2d_backprop_input(kernel, &g)
    }

    /// 1-D convolution of an NWC input with a `[k, c_in / groups, c_out]`
    /// kernel: `[n, out_w, c_out]` (a `conv2d` over a height of 1).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::{Conv1dOptions, Padding};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4, 1])?;
    /// let k = Tensor::<f32>::from_vec(vec![1.0, -1.0], [2, 1, 1])?;
    /// let y = x.conv1d(&k, &Conv1dOptions::default())?;
    /// assert_eq!(y.to_vec(), vec![-1.0, -1.0, -1.0]);
    /// let s = x.conv1d(&k, &Conv1dOptions { padding: Padding::Same, ..Default::default() })?;
    /// assert_eq!(s.to_vec(), vec![-1.0, -1.0, -1.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn conv1d(&self, kernel: &Tensor<T>, opts: &Conv1dOptions) -> Result<Tensor<T>> {
        crate::instances::table::<T>().conv1d(self, kernel, opts)
    }

    pub(crate) fn conv1d_native(
        &self,
        kernel: &Tensor<T>,
        opts: &Conv1dOptions,
    ) -> Result<Tensor<T>> {
        let op = "conv1d";
        if self.rank() != 3 || kernel.rank() != 3 {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: kernel.shape().clone(),
                msg: "expects an input [n, w, c_in] and a kernel [k, c_in / groups, c_out]".into(),
            });
        }
        let x = self.unsqueeze(1)?;
        let k = kernel.unsqueeze(0)?;
        let g = Conv2dGeometry::new(op, x.shape(), k.shape(), &opts.to_2d())?;
        x.conv2d_with(&k, &g)?.squeeze(&[1])
    }

    /// Depthwise 2-D convolution (Keras' `DepthwiseConv2D` without bias):
    /// each input channel convolved with its own `depth_multiplier`
    /// filters; the kernel is `[kh, kw, c_in, depth_multiplier]`, the output
    /// `[n, oh, ow, c_in · depth_multiplier]` (channel `c · m + j`). A
    /// grouped `conv2d` with one input channel per group.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::conv::Conv2dOptions;
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 10.0, 2.0, 20.0], [1, 1, 2, 2])?;
    /// let k = Tensor::<f32>::ones([1, 2, 2, 1])?;
    /// assert_eq!(x.depthwise_conv2d(&k, &Conv2dOptions::default())?.to_vec(), vec![3.0, 30.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn depthwise_conv2d(&self, kernel: &Tensor<T>, opts: &Conv2dOptions) -> Result<Tensor<T>> {
        crate::instances::table::<T>().depthwise_conv2d(self, kernel, opts)
    }

    pub(crate) fn depthwise_conv2d_native(
        &self,
        kernel: &Tensor<T>,
        opts: &Conv2dOptions,
    ) -> Result<Tensor<T>> {
        let op = "depthwise_conv2d";
        if kernel.rank() != 4 || self.rank() != 4 || kernel.dims()[2] != self.dims()[3] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: kernel.shape().clone(),
                msg: "expects an input [n, h, w, c] and a kernel [kh, kw, c, depth_multiplier]"
                    .into(),
            });
        }
        let d = kernel.dims();
        let c = d[2];
        let out_c = c
            .checked_mul(d[3])
            .ok_or_else(|| bad(op, format!("kernel {} is too large", kernel.shape())))?;
        let k = kernel.reshape([d[0], d[1], 1, out_c])?;
        let opts = Conv2dOptions {
            groups: c.max(1),
            ..*opts
        };
        let g = Conv2dGeometry::new(op, self.shape(), k.shape(), &opts)?;
        self.conv2d_with(&k, &g)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range filter lists are the point
mod tests {
    use super::*;

    fn iota(shape: &[usize], scale: f64) -> Tensor<f64> {
        let n = Shape::from(shape).numel();
        Tensor::from_vec(
            (0..n).map(|v| ((v as f64 + 1.0) * scale).sin()).collect(),
            shape,
        )
        .unwrap()
    }

    /// Direct definition: y[b,oy,ox,o] = Σ x[b, oy·s + ky·d - p, ...] w[ky,kx,ci,o].
    fn naive(x: &Tensor<f64>, w: &Tensor<f64>, g: &Conv2dGeometry) -> Vec<f64> {
        let [n, ih, iw, cin] = g.input;
        let [kh, kw] = g.kernel;
        let [oh, ow] = g.output;
        let (cg, og) = (cin / g.groups, g.out_c / g.groups);
        let mut y = vec![0.0; g.output_shape().numel()];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..g.out_c {
                        let grp = o / og;
                        let mut s = 0.0;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                    - g.pads[0] as isize;
                                let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                    - g.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                    continue;
                                }
                                for ci in 0..cg {
                                    let xv = x
                                        .get(&[b, iy as usize, ix as usize, grp * cg + ci])
                                        .unwrap();
                                    s += xv * w.get(&[ky, kx, ci, o]).unwrap();
                                }
                            }
                        }
                        y[((b * oh + oy) * ow + ox) * g.out_c + o] = s;
                    }
                }
            }
        }
        y
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn forward_and_adjoints_match_definition() {
        let cases = [
            // (input, kernel hw, cin/g, cout, strides, padding, dilation, groups)
            (
                [2, 5, 6, 3],
                [3, 2],
                3,
                4,
                [1, 1],
                Padding::Valid,
                [1, 1],
                1,
            ),
            ([1, 7, 6, 2], [3, 3], 2, 3, [2, 2], Padding::Same, [1, 1], 1),
            ([2, 6, 7, 4], [3, 3], 2, 4, [2, 1], Padding::Same, [1, 1], 2),
            ([1, 8, 8, 3], [3, 3], 1, 6, [1, 1], Padding::Same, [2, 2], 3),
            (
                [3, 4, 4, 5],
                [1, 1],
                5,
                7,
                [1, 1],
                Padding::Valid,
                [1, 1],
                1,
            ),
            (
                [40, 9, 9, 8],
                [3, 3],
                8,
                16,
                [1, 1],
                Padding::Same,
                [1, 1],
                1,
            ),
        ];
        for (input, k, kc, cout, strides, padding, dilation, groups) in cases {
            let opts = Conv2dOptions {
                strides,
                padding,
                dilation,
                groups,
            };
            let x = iota(&input, 0.37);
            let w = iota(&[k[0], k[1], kc, cout], 0.61);
            let g = Conv2dGeometry::new("t", x.shape(), w.shape(), &opts).unwrap();
            let y = x.conv2d(&w, &opts).unwrap();
            let want = naive(&x, &w, &g);
            for (a, b) in y.as_slice().iter().zip(&want) {
                assert!((a - b).abs() < 1e-10, "{input:?} {opts:?}: {a} vs {b}");
            }
            // adjoints: <conv(x, w), dy> = <x, dx(dy)> = <w, dw(x, dy)>
            let dy = iota(g.output_shape().dims(), 0.23);
            let lhs = dot(y.as_slice(), dy.as_slice());
            let dx = dy.conv2d_backprop_input(&w, &g).unwrap();
            let dw = x.conv2d_backprop_filter(&dy, &g).unwrap();
            assert!((lhs - dot(x.as_slice(), dx.as_slice())).abs() < 1e-8 * (1.0 + lhs.abs()));
            assert!((lhs - dot(w.as_slice(), dw.as_slice())).abs() < 1e-8 * (1.0 + lhs.abs()));
            // filter subsets agree with the full gradient inside, zero outside
            let part = x
                .conv2d_backprop_filter_filters(&dy, &g, &[1..2, 3..cout])
                .unwrap();
            for (i, (&p, &f)) in part.as_slice().iter().zip(dw.as_slice()).enumerate() {
                let o = i % cout;
                let want = if o == 1 || o >= 3 { f } else { 0.0 };
                assert!((p - want).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn tf_same_padding_rule() {
        // odd and even sizes at stride 2: TF puts the extra pad at the end
        assert_eq!(conv_output_size(5, 3, 2, 1, Padding::Same), Some((3, 1)));
        assert_eq!(conv_output_size(4, 3, 2, 1, Padding::Same), Some((2, 0)));
        assert_eq!(conv_output_size(4, 2, 2, 1, Padding::Same), Some((2, 0)));
        assert_eq!(conv_output_size(5, 2, 1, 3, Padding::Same), Some((5, 1)));
        assert_eq!(conv_output_size(0, 3, 1, 1, Padding::Same), Some((0, 0)));
        assert_eq!(conv_output_size(5, 0, 1, 1, Padding::Same), None);
        assert_eq!(conv_output_size(5, usize::MAX, 1, 2, Padding::Valid), None);
    }

    #[test]
    fn conv1d_depthwise_and_transpose_are_convolutions() {
        let x = iota(&[2, 9, 4], 0.3);
        let k = iota(&[3, 2, 6], 0.5);
        let o = Conv1dOptions {
            stride: 2,
            padding: Padding::Same,
            dilation: 1,
            groups: 2,
        };
        let y = x.conv1d(&k, &o).unwrap();
        let y2 = x
            .unsqueeze(1)
            .unwrap()
            .conv2d(&k.unsqueeze(0).unwrap(), &o.to_2d())
            .unwrap();
        assert_eq!(y.shape(), &[2, 5, 6]);
        assert_eq!(y.as_slice(), y2.as_slice());
        // depthwise: channel c·m + j from input channel c with filter j
        let x = iota(&[1, 4, 4, 3], 0.7);
        let k = iota(&[2, 2, 3, 2], 0.9);
        let y = x.depthwise_conv2d(&k, &Conv2dOptions::default()).unwrap();
        for c in 0..3 {
            for j in 0..2 {
                let xc = x.narrow(3, c, 1).unwrap();
                let kc = k.narrow(2, c, 1).unwrap().narrow(3, j, 1).unwrap();
                let yc = xc.conv2d(&kc, &Conv2dOptions::default()).unwrap();
                let got = y.narrow(3, c * 2 + j, 1).unwrap();
                for (a, b) in got.as_slice().iter().zip(yc.as_slice()) {
                    assert!((a - b).abs() < 1e-12);
                }
            }
        }
        // transpose = backprop_input of the matching convolution
        let x = iota(&[2, 3, 4, 5], 0.4);
        let k = iota(&[3, 3, 2, 5], 0.8);
        let opts = Conv2dOptions::default().strides([2, 2]);
        let out = [
            conv_transpose_output_size(3, 3, 2, 1, Padding::Valid).unwrap(),
            conv_transpose_output_size(4, 3, 2, 1, Padding::Valid).unwrap(),
        ];
        let y = x.conv2d_transpose(&k, out, &opts).unwrap();
        assert_eq!(y.shape(), &[2, 7, 9, 2]);
        let g = Conv2dGeometry::new("t", y.shape(), k.shape(), &opts).unwrap();
        assert_eq!(
            y.to_vec(),
            x.conv2d_backprop_input(&k, &g).unwrap().to_vec()
        );
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let x = Tensor::<f32>::zeros([1, 4, 4, 2]).unwrap();
        let k = Tensor::<f32>::zeros([3, 3, 2, 4]).unwrap();
        let d = Conv2dOptions::default();
        assert!(matches!(
            x.conv2d(&Tensor::zeros([3, 3, 3, 4]).unwrap(), &d),
            Err(Error::ShapeMismatch { op: "conv2d", .. })
        ));
        assert!(matches!(
            x.conv2d(&k, &d.strides([0, 1])),
            Err(Error::InvalidArgument { op: "conv2d", .. })
        ));
        assert!(x.conv2d(&k, &d.groups(2)).is_err()); // kernel in 2 != 2/2
        assert!(x.conv2d(&Tensor::zeros([5, 5, 2, 4]).unwrap(), &d).is_err()); // too big for valid
        assert!(
            x.conv2d(
                &Tensor::zeros([5, 5, 2, 4]).unwrap(),
                &d.padding(Padding::Same)
            )
            .is_ok()
        );
        assert!(x.conv2d(&k, &d.strides([2, 2]).dilation([2, 2])).is_err());
        assert!(matches!(
            Tensor::<f32>::zeros([4, 4, 2]).unwrap().conv2d(&k, &d),
            Err(Error::Rank { .. })
        ));
        let g = Conv2dGeometry::new("conv2d", x.shape(), k.shape(), &d).unwrap();
        assert!(
            Tensor::<f32>::zeros([1, 3, 3, 4])
                .unwrap()
                .conv2d_backprop_input(&k, &g)
                .is_err()
        );
        assert!(
            x.conv2d_backprop_filter_filters(&Tensor::zeros([1, 2, 2, 4]).unwrap(), &g, &[2..5])
                .is_err()
        );
        let big = Shape::from(&[usize::MAX / 2, 4, 4, 2][..]);
        assert!(Conv2dGeometry::new("conv2d", &big, k.shape(), &d).is_err());
        let msg = x
            .conv2d(&Tensor::zeros([3, 3, 3, 4]).unwrap(), &d)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("[1, 4, 4, 2]") && msg.contains("[3, 3, 3, 4]"),
            "{msg}"
        );
    }
}
