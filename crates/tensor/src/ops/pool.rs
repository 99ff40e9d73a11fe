//! Pooling over NHWC / NWC tensors with Keras/TF semantics: max and average
//! pooling 1-D/2-D (pool size, strides, `valid`/`same` padding; average
//! pooling divides by the number of real elements in each window, as TF),
//! global pooling, zero padding and nearest-neighbour upsampling. Kernels:
//! `kernels/pool.rs`; gradient rules: rime-tape `rules/pool.rs`. Global
//! pooling, padding and upsampling are compositions of recorded layout and
//! reduction ops, so they need no rules of their own.

use crate::kernels::pool as kernel;
use crate::ops::conv::{Padding, conv_output_size};
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor};

/// Options of a 2-D pooling (Keras' arguments; strides default to the
/// pool size).
///
/// ```
/// use rime_tensor::ops::pool::Pool2dOptions;
/// let o = Pool2dOptions::new([2, 2]);
/// assert_eq!(o.strides, [2, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dOptions {
    /// Window height and width.
    pub pool_size: [usize; 2],
    /// Window step along height and width.
    pub strides: [usize; 2],
    /// Border handling.
    pub padding: Padding,
}

impl Pool2dOptions {
    /// Windows of `pool_size`, strides equal to it, `valid` padding.
    pub fn new(pool_size: [usize; 2]) -> Self {
        Pool2dOptions {
            pool_size,
            strides: pool_size,
            padding: Padding::Valid,
        }
    }
    /// Sets the strides.
    pub fn strides(self, strides: [usize; 2]) -> Self {
        Pool2dOptions { strides, ..self }
    }
    /// Sets the padding.
    pub fn padding(self, padding: Padding) -> Self {
        Pool2dOptions { padding, ..self }
    }
}

/// The validated geometry of a 2-D pooling.
///
/// ```
/// use rime_tensor::ops::{conv::Padding, pool::{Pool2dGeometry, Pool2dOptions}};
/// let g = Pool2dGeometry::new("max_pool2d", &[1, 5, 4, 3].into(),
///     &Pool2dOptions::new([2, 2]).padding(Padding::Same))?;
/// assert_eq!(g.output, [3, 2]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dGeometry {
    /// Input `[n, h, w, c]`.
    pub input: [usize; 4],
    /// Window height and width.
    pub pool: [usize; 2],
    /// Strides.
    pub strides: [usize; 2],
    /// Padding before the first row and column.
    pub pads: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

impl Pool2dGeometry {
    /// Validates a pooling of an input of shape `input` under `opts`.
    pub fn new(op: &'static str, input: &Shape, opts: &Pool2dOptions) -> Result<Self> {
        if input.rank() != 4 {
            return Err(Error::Rank {
                op,
                expected: "rank 4 [batch, height, width, channels]",
                shape: input.clone(),
            });
        }
        if opts.pool_size.contains(&0) || opts.strides.contains(&0) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "pool size {:?} and strides {:?} must be >= 1",
                    opts.pool_size, opts.strides
                ),
            });
        }
        let axis = |i: usize| {
            conv_output_size(
                input[i + 1],
                opts.pool_size[i],
                opts.strides[i],
                1,
                opts.padding,
            )
            .ok_or_else(|| Error::InvalidArgument {
                op,
                msg: format!(
                    "pool size {:?} does not fit input {input} with {:?} padding",
                    opts.pool_size, opts.padding
                ),
            })
        };
        let ((oh, pt), (ow, pl)) = (axis(0)?, axis(1)?);
        let g = Pool2dGeometry {
            input: [input[0], input[1], input[2], input[3]],
            pool: opts.pool_size,
            strides: opts.strides,
            pads: [pt, pl],
            output: [oh, ow],
        };
        if input.checked_numel().is_none() || g.output_shape().checked_numel().is_none() {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("input {input} is too large"),
            });
        }
        Ok(g)
    }

    /// `[n, h, w, c]`.
    pub fn input_shape(&self) -> Shape {
        Shape::from(&self.input[..])
    }

    /// `[n, out_h, out_w, c]`.
    pub fn output_shape(&self) -> Shape {
        Shape::from(&[self.input[0], self.output[0], self.output[1], self.input[3]][..])
    }

    fn expect(&self, op: &'static str, what: &str, got: &Shape, want: Shape) -> Result<()> {
        if got != &want {
            return Err(Error::ShapeMismatch {
                op,
                lhs: got.clone(),
                rhs: want,
                msg: format!("{what} does not match the pooling's geometry"),
            });
        }
        Ok(())
    }
}

/// The recorded ops of this family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PoolOp {
    /// Max pooling: input `[x]`.
    MaxPool2d(Pool2dGeometry),
    /// Max pooling's input gradient: inputs `[x, dy]`, output shaped like x.
    MaxPool2dGrad(Pool2dGeometry),
    /// The gradient of `MaxPool2dGrad` with respect to `dy`: inputs `[x,
    /// g]` (g shaped like x), output shaped like the pooled output.
    MaxPool2dGradGrad(Pool2dGeometry),
    /// Average pooling: input `[x]`.
    AvgPool2d(Pool2dGeometry),
    /// Average pooling's input gradient: input `[dy]`.
    AvgPool2dGrad(Pool2dGeometry),
}

fn pool1d_options(pool: usize, stride: usize, padding: Padding) -> Pool2dOptions {
    Pool2dOptions {
        pool_size: [1, pool],
        strides: [1, stride],
        padding,
    }
}

fn rank3(op: &'static str, x: &Shape) -> Result<()> {
    if x.rank() != 3 {
        return Err(Error::Rank {
            op,
            expected: "rank 3 [batch, steps, channels]",
            shape: x.clone(),
        });
    }
    Ok(())
}

impl<T: Element> Tensor<T> {
    /// 2-D max pooling of an NHWC tensor (padding never wins a max).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::pool::Pool2dOptions;
    /// let x = Tensor::<f32>::from_vec((0..16).map(|v| v as f32).collect(), [1, 4, 4, 1])?;
    /// let y = x.max_pool2d(&Pool2dOptions::new([2, 2]))?;
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max_pool2d(&self, opts: &Pool2dOptions) -> Result<Tensor<T>> {
        let g = Pool2dGeometry::new("max_pool2d", self.shape(), opts)?;
        self.max_pool2d_with(&g)
    }

    /// [`max_pool2d`](Self::max_pool2d) under a validated geometry.
    pub fn max_pool2d_with(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().max_pool2d_with(self, g)
    }

    pub(crate) fn max_pool2d_with_native(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        g.expect("max_pool2d", "input", self.shape(), g.input_shape())?;
        let out = Tensor::from_parts(kernel::max_pool2d(self.as_slice(), g), g.output_shape());
        record(
            || Op::Pool(Box::new(PoolOp::MaxPool2d(g.clone()))),
            &[self],
            &out,
        );
        Ok(out)
    }

    /// Max pooling's input gradient for input `self` and output gradient
    /// `dy`: each window's gradient goes to its first maximum.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::pool::{Pool2dGeometry, Pool2dOptions};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], [1, 2, 2, 1])?;
    /// let g = Pool2dGeometry::new("max_pool2d", x.shape(), &Pool2dOptions::new([2, 2]))?;
    /// let dx = x.max_pool2d_grad(&Tensor::full([1, 1, 1, 1], 5.0)?, &g)?;
    /// assert_eq!(dx.to_vec(), vec![0.0, 5.0, 0.0, 0.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max_pool2d_grad(&self, dy: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().max_pool2d_grad(self, None, dy, g)
    }

    /// As [`max_pool2d_grad`](Self::max_pool2d_grad), given the forward
    /// output `pooled = self.max_pool2d_with(g)`, so that each window's
    /// maximum is read rather than searched for again (the gradient rule of
    /// max pooling has it). Each window's gradient goes to its first element
    /// equal to `pooled` (NaN matching NaN); with `pooled` the forward
    /// output, that is the same result.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::pool::{Pool2dGeometry, Pool2dOptions};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], [1, 2, 2, 1])?;
    /// let g = Pool2dGeometry::new("max_pool2d", x.shape(), &Pool2dOptions::new([2, 2]))?;
    /// let (y, dy) = (x.max_pool2d_with(&g)?, Tensor::full([1, 1, 1, 1], 5.0)?);
    /// assert_eq!(x.max_pool2d_grad_pooled(&y, &dy, &g)?, x.max_pool2d_grad(&dy, &g)?);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max_pool2d_grad_pooled(
        &self,
        pooled: &Tensor<T>,
        dy: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().max_pool2d_grad(self, Some(pooled), dy, g)
    }

    pub(crate) fn max_pool2d_grad_native(
        &self,
        pooled: Option<&Tensor<T>>,
        dy: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>> {
        let op = "max_pool2d_grad";
        g.expect(op, "input", self.shape(), g.input_shape())?;
        g.expect(op, "output gradient", dy.shape(), g.output_shape())?;
        if let Some(p) = pooled {
            g.expect(op, "pooled output", p.shape(), g.output_shape())?;
        }
        let pooled = pooled.map(|p| p.as_slice());
        let dx = kernel::max_pool2d_grad(self.as_slice(), pooled, dy.as_slice(), g);
        let out = Tensor::from_parts(dx, g.input_shape());
        record(
            || Op::Pool(Box::new(PoolOp::MaxPool2dGrad(g.clone()))),
            &[self, dy],
            &out,
        );
        Ok(out)
    }

    /// The derivative of [`max_pool2d_grad`](Self::max_pool2d_grad) with
    /// respect to its `dy`, applied to `gg` (shaped like the input): `gg`
    /// read at each window's maximum.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::pool::{Pool2dGeometry, Pool2dOptions};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], [1, 2, 2, 1])?;
    /// let g = Pool2dGeometry::new("max_pool2d", x.shape(), &Pool2dOptions::new([2, 2]))?;
    /// let gg = Tensor::<f32>::from_vec(vec![10.0, 20.0, 30.0, 40.0], [1, 2, 2, 1])?;
    /// assert_eq!(x.max_pool2d_gradgrad(&gg, &g)?.to_vec(), vec![20.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max_pool2d_gradgrad(&self, gg: &Tensor<T>, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().max_pool2d_gradgrad(self, gg, g)
    }

    pub(crate) fn max_pool2d_gradgrad_native(
        &self,
        gg: &Tensor<T>,
        g: &Pool2dGeometry,
    ) -> Result<Tensor<T>> {
        let op = "max_pool2d_gradgrad";
        g.expect(op, "input", self.shape(), g.input_shape())?;
        g.expect(op, "gradient", gg.shape(), g.input_shape())?;
        let y = kernel::max_pool2d_gradgrad(self.as_slice(), gg.as_slice(), g);
        let out = Tensor::from_parts(y, g.output_shape());
        record(
            || Op::Pool(Box::new(PoolOp::MaxPool2dGradGrad(g.clone()))),
            &[self, gg],
            &out,
        );
        Ok(out)
    }

    /// 2-D average pooling of an NHWC tensor; with `same` padding each
    /// window is divided by the number of real (unpadded) elements in it.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::{conv::Padding, pool::Pool2dOptions};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], [1, 1, 3, 1])?;
    /// let o = Pool2dOptions::new([1, 2]).padding(Padding::Same);
    /// assert_eq!(x.avg_pool2d(&o)?.to_vec(), vec![1.5, 3.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn avg_pool2d(&self, opts: &Pool2dOptions) -> Result<Tensor<T>> {
        let g = Pool2dGeometry::new("avg_pool2d", self.shape(), opts)?;
        self.avg_pool2d_with(&g)
    }

    /// [`avg_pool2d`](Self::avg_pool2d) under a validated geometry.
    pub fn avg_pool2d_with(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().avg_pool2d_with(self, g)
    }

    pub(crate) fn avg_pool2d_with_native(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        g.expect("avg_pool2d", "input", self.shape(), g.input_shape())?;
        let out = Tensor::from_parts(kernel::avg_pool2d(self.as_slice(), g), g.output_shape());
        record(
            || Op::Pool(Box::new(PoolOp::AvgPool2d(g.clone()))),
            &[self],
            &out,
        );
        Ok(out)
    }

    /// Average pooling's input gradient for output gradient `self`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// use rime_tensor::ops::pool::{Pool2dGeometry, Pool2dOptions};
    /// let g = Pool2dGeometry::new("avg_pool2d", &[1, 2, 2, 1].into(), &Pool2dOptions::new([2, 2]))?;
    /// let dx = Tensor::<f32>::full([1, 1, 1, 1], 4.0)?.avg_pool2d_grad(&g)?;
    /// assert_eq!(dx.to_vec(), vec![1.0; 4]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn avg_pool2d_grad(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        crate::instances::table::<T>().avg_pool2d_grad(self, g)
    }

    pub(crate) fn avg_pool2d_grad_native(&self, g: &Pool2dGeometry) -> Result<Tensor<T>> {
        g.expect(
            "avg_pool2d_grad",
            "output gradient",
            self.shape(),
            g.output_shape(),
        )?;
        let dx = kernel::avg_pool2d_grad(self.as_slice(), g);
        let out = Tensor::from_parts(dx, g.input_shape());
        record(
            || Op::Pool(Box::new(PoolOp::AvgPool2dGrad(g.clone()))),
            &[self],
            &out,
        );
        Ok(out)
    }

    /// 1-D max pooling of an NWC tensor.
    ///
    /// ```
    /// use rime_tensor::{Tensor, Padding};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 3.0, 2.0, 5.0, 4.0], [1, 5, 1])?;
    /// assert_eq!(x.max_pool1d(2, 2, Padding::Valid)?.to_vec(), vec![3.0, 5.0]);
    /// assert_eq!(x.max_pool1d(2, 2, Padding::Same)?.to_vec(), vec![3.0, 5.0, 4.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn max_pool1d(&self, pool: usize, stride: usize, padding: Padding) -> Result<Tensor<T>> {
        rank3("max_pool1d", self.shape())?;
        let x = self.unsqueeze(1)?;
        let g = Pool2dGeometry::new(
            "max_pool1d",
            x.shape(),
            &pool1d_options(pool, stride, padding),
        )?;
        x.max_pool2d_with(&g)?.squeeze(&[1])
    }

    /// 1-D average pooling of an NWC tensor.
    ///
    /// ```
    /// use rime_tensor::{Tensor, Padding};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 3.0, 2.0], [1, 3, 1])?;
    /// assert_eq!(x.avg_pool1d(2, 2, Padding::Same)?.to_vec(), vec![2.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn avg_pool1d(&self, pool: usize, stride: usize, padding: Padding) -> Result<Tensor<T>> {
        rank3("avg_pool1d", self.shape())?;
        let x = self.unsqueeze(1)?;
        let g = Pool2dGeometry::new(
            "avg_pool1d",
            x.shape(),
            &pool1d_options(pool, stride, padding),
        )?;
        x.avg_pool2d_with(&g)?.squeeze(&[1])
    }

    /// Mean over the spatial axes of an NHWC (rank 4) or NWC (rank 3)
    /// tensor: `[n, c]` (`[n, 1, 1, c]` / `[n, 1, c]` with `keep_dims`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 10.0, 3.0, 30.0], [1, 2, 1, 2])?;
    /// assert_eq!(x.global_avg_pool(false)?.to_vec(), vec![2.0, 20.0]);
    /// assert_eq!(x.global_max_pool(true)?.shape(), &[1, 1, 1, 2]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn global_avg_pool(&self, keep_dims: bool) -> Result<Tensor<T>> {
        self.mean(&spatial_axes("global_avg_pool", self.shape())?, keep_dims)
    }

    /// Max over the spatial axes of an NHWC or NWC tensor (see
    /// [`global_avg_pool`](Self::global_avg_pool)).
    pub fn global_max_pool(&self, keep_dims: bool) -> Result<Tensor<T>> {
        self.max(&spatial_axes("global_max_pool", self.shape())?, keep_dims)
    }

    /// Zero padding of the height and width of an NHWC tensor:
    /// `((top, bottom), (left, right))`.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::ones([1, 1, 1, 1])?;
    /// let y = x.zero_pad2d(((1, 0), (0, 1)))?;
    /// assert_eq!(y.shape(), &[1, 2, 2, 1]);
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 1.0, 0.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn zero_pad2d(&self, padding: ((usize, usize), (usize, usize))) -> Result<Tensor<T>> {
        crate::instances::table::<T>().zero_pad2d(self, padding)
    }

    pub(crate) fn zero_pad2d_native(
        &self,
        padding: ((usize, usize), (usize, usize)),
    ) -> Result<Tensor<T>> {
        if self.rank() != 4 {
            return Err(Error::Rank {
                op: "zero_pad2d",
                expected: "rank 4 [batch, height, width, channels]",
                shape: self.shape().clone(),
            });
        }
        self.pad(&[(0, 0), padding.0, padding.1, (0, 0)])
    }

    /// Nearest-neighbour upsampling of an NHWC tensor: each pixel repeated
    /// `size[0]` times down and `size[1]` times across.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 2.0], [1, 1, 2, 1])?;
    /// let y = x.upsample_nearest2d([2, 2])?;
    /// assert_eq!(y.shape(), &[1, 2, 4, 1]);
    /// assert_eq!(y.to_vec(), vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn upsample_nearest2d(&self, size: [usize; 2]) -> Result<Tensor<T>> {
        crate::instances::table::<T>().upsample_nearest2d(self, size)
    }

    pub(crate) fn upsample_nearest2d_native(&self, size: [usize; 2]) -> Result<Tensor<T>> {
        let op = "upsample_nearest2d";
        if self.rank() != 4 {
            return Err(Error::Rank {
                op,
                expected: "rank 4 [batch, height, width, channels]",
                shape: self.shape().clone(),
            });
        }
        let [n, h, w, c] = [
            self.dims()[0],
            self.dims()[1],
            self.dims()[2],
            self.dims()[3],
        ];
        let (oh, ow) = match (h.checked_mul(size[0]), w.checked_mul(size[1])) {
            (Some(a), Some(b)) if size[0] > 0 && size[1] > 0 => (a, b),
            _ => {
                return Err(Error::InvalidArgument {
                    op,
                    msg: format!(
                        "size {size:?} must be >= 1 and keep {} in range",
                        self.shape()
                    ),
                });
            }
        };
        let out = Shape::from(&[n, oh, ow, c][..]);
        if out.checked_numel().is_none() {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("size {size:?} makes {} too large", self.shape()),
            });
        }
        self.reshape([n, h, 1, w, 1, c])?
            .broadcast_to([n, h, size[0], w, size[1], c])?
            .reshape(out)
    }
}

fn spatial_axes(op: &'static str, s: &Shape) -> Result<Vec<isize>> {
    match s.rank() {
        3 => Ok(vec![1]),
        4 => Ok(vec![1, 2]),
        _ => Err(Error::Rank {
            op,
            expected: "rank 3 (NWC) or 4 (NHWC)",
            shape: s.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor<f64> {
        let n = Shape::from(shape).numel();
        Tensor::from_vec(
            (0..n)
                .map(|v| ((v * 37 % 101) as f64 * 0.13).sin())
                .collect(),
            shape,
        )
        .unwrap()
    }

    /// Windows by definition (clipped to the input).
    fn naive(x: &Tensor<f64>, g: &Pool2dGeometry, max: bool) -> Vec<f64> {
        let [n, ih, iw, c] = g.input;
        let [oh, ow] = g.output;
        let mut out = vec![];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut vals = vec![];
                        for ky in 0..g.pool[0] {
                            for kx in 0..g.pool[1] {
                                let iy = (oy * g.strides[0] + ky) as isize - g.pads[0] as isize;
                                let ix = (ox * g.strides[1] + kx) as isize - g.pads[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                    vals.push(x.get(&[b, iy as usize, ix as usize, ch]).unwrap());
                                }
                            }
                        }
                        out.push(if max {
                            vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                        } else {
                            vals.iter().sum::<f64>() / vals.len() as f64
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn pools_match_definition_and_adjoints() {
        for (shape, pool, strides, padding) in [
            ([2, 5, 6, 3], [2, 2], [2, 2], Padding::Valid),
            ([1, 5, 5, 2], [2, 2], [2, 2], Padding::Same),
            ([2, 6, 7, 2], [3, 3], [2, 1], Padding::Same),
            ([1, 4, 4, 1], [3, 2], [1, 3], Padding::Valid),
            ([64, 12, 12, 16], [2, 2], [2, 2], Padding::Valid),
        ] {
            let o = Pool2dOptions {
                pool_size: pool,
                strides,
                padding,
            };
            let x = iota(&shape);
            let g = Pool2dGeometry::new("t", x.shape(), &o).unwrap();
            assert_eq!(x.max_pool2d(&o).unwrap().to_vec(), naive(&x, &g, true));
            let avg = x.avg_pool2d(&o).unwrap().to_vec();
            for (a, b) in avg.iter().zip(naive(&x, &g, false)) {
                assert!((a - b).abs() < 1e-12);
            }
            // adjoint pairs
            let dy = iota(g.output_shape().dims()).mul_scalar(0.5);
            let gg = iota(&shape).mul_scalar(-0.3);
            let dot = |a: &Tensor<f64>, b: &Tensor<f64>| -> f64 {
                a.as_slice()
                    .iter()
                    .zip(b.as_slice())
                    .map(|(x, y)| x * y)
                    .sum()
            };
            let dx = x.max_pool2d_grad(&dy, &g).unwrap();
            let gy = x.max_pool2d_gradgrad(&gg, &g).unwrap();
            assert!((dot(&dx, &gg) - dot(&dy, &gy)).abs() < 1e-10);
            let ax = dy.avg_pool2d_grad(&g).unwrap();
            let ay = gg.avg_pool2d(&o).unwrap();
            assert!((dot(&ax, &gg) - dot(&dy, &ay)).abs() < 1e-10);
        }
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let x = Tensor::<f32>::zeros([1, 3, 3, 1]).unwrap();
        assert!(matches!(
            x.max_pool2d(&Pool2dOptions::new([4, 4])),
            Err(Error::InvalidArgument {
                op: "max_pool2d",
                ..
            })
        ));
        assert!(x.avg_pool2d(&Pool2dOptions::new([0, 1])).is_err());
        assert!(x.max_pool1d(2, 2, Padding::Valid).is_err());
        assert!(
            Tensor::<f32>::zeros([3, 3])
                .unwrap()
                .global_avg_pool(false)
                .is_err()
        );
        assert!(x.upsample_nearest2d([0, 2]).is_err());
        assert!(x.upsample_nearest2d([usize::MAX, 2]).is_err());
        let g = Pool2dGeometry::new("p", x.shape(), &Pool2dOptions::new([2, 2])).unwrap();
        assert!(
            x.max_pool2d_grad(&Tensor::zeros([1, 2, 2, 1]).unwrap(), &g)
                .is_err()
        );
    }
}
