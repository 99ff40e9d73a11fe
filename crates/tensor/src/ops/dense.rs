//! The fused dense op, `activation(x · kernel + bias)`, recorded as one op:
//! the bias add and the activation run in the product's epilogue, on each
//! finished row segment of the output while it is in cache, instead of as
//! two more passes over the output. Gradient rule: rime-tape
//! `rules/dense.rs`.

use std::mem::MaybeUninit;

use crate::kernels::gemm::{self, MatRef};
use crate::kernels::{self, vectorized};
use crate::ops::unary::sigmoid;
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor};

/// The activations [`Tensor::dense`] fuses: those whose derivative is a
/// function of the output `y`, so that the gradient needs only `y`.
///
/// ```
/// use rime_tensor::DenseActivation;
/// assert_eq!(DenseActivation::Relu.name(), "relu");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenseActivation {
    /// `z` (derivative 1).
    Linear,
    /// `max(z, 0)`, as [`Tensor::relu`] (derivative `y > 0`).
    Relu,
    /// `1 / (1 + e^-z)`, as [`Tensor::sigmoid`] (derivative `y (1 - y)`).
    Sigmoid,
    /// `tanh(z)`, as [`Tensor::tanh`] (derivative `1 - y²`).
    Tanh,
}

impl DenseActivation {
    /// The activation's name (Keras').
    pub fn name(self) -> &'static str {
        match self {
            DenseActivation::Linear => "linear",
            DenseActivation::Relu => "relu",
            DenseActivation::Sigmoid => "sigmoid",
            DenseActivation::Tanh => "tanh",
        }
    }
}

/// `seg[j] = f(seg[j] + bias[j])` (or `f(seg[j])` without a bias): the
/// unfused ops' `add` then activation, element for element.
#[inline(always)]
fn bias_then<T: Element>(seg: &mut [T], bias: Option<&[T]>, f: impl Fn(T) -> T) {
    match bias {
        Some(b) => {
            for (v, &b) in seg.iter_mut().zip(b) {
                *v = f(*v + b);
            }
        }
        None => {
            for v in seg {
                *v = f(*v);
            }
        }
    }
}

/// The epilogue for `activation`: each row segment `C[i, j0..]` gets the
/// bias columns `j0..` and the activation, with the same formulas as
/// `Tensor::add` and the unary activation kernels, so the bits agree.
fn run_epilogue<T: Element>(seg: &mut [T], bias: Option<&[T]>, activation: DenseActivation) {
    // closures that capture nothing by reference, so the loops vectorize
    match activation {
        DenseActivation::Linear => vectorized(
            #[inline(always)]
            move || {
                bias_then(
                    seg,
                    bias,
                    #[inline(always)]
                    |v| v,
                )
            },
        ),
        DenseActivation::Relu => vectorized(
            #[inline(always)]
            move || {
                bias_then(
                    seg,
                    bias,
                    #[inline(always)]
                    |v| if v > T::zero() { v } else { T::zero() },
                )
            },
        ),
        DenseActivation::Sigmoid => vectorized(
            #[inline(always)]
            move || bias_then(seg, bias, sigmoid),
        ),
        DenseActivation::Tanh => vectorized(
            #[inline(always)]
            move || {
                bias_then(
                    seg,
                    bias,
                    #[inline(always)]
                    |v| v.tanh_v(),
                )
            },
        ),
    }
}

/// Validates the shapes of `dense(x, kernel, bias)`; returns `(m, k, n)`
/// and the output shape (its byte size checked for `T`).
fn dense_geometry<T>(
    x: &Shape,
    kernel: &Shape,
    bias: Option<&Shape>,
) -> Result<(usize, usize, usize, Shape)> {
    for s in [x, kernel] {
        if s.rank() != 2 {
            return Err(Error::Rank {
                op: "dense",
                expected: "rank 2 (input [batch, in], kernel [in, out])",
                shape: s.clone(),
            });
        }
    }
    let (m, k, n) = (x[0], x[1], kernel[1]);
    if kernel[0] != k {
        return Err(Error::ShapeMismatch {
            op: "dense",
            lhs: x.clone(),
            rhs: kernel.clone(),
            msg: format!(
                "the input's last axis ({k}) differs from the kernel's first ({})",
                kernel[0]
            ),
        });
    }
    if let Some(b) = bias
        && (b.rank() != 1 || b[0] != n)
    {
        return Err(Error::ShapeMismatch {
            op: "dense",
            lhs: kernel.clone(),
            rhs: b.clone(),
            msg: format!("the bias must have shape [{n}] (the kernel's last axis)"),
        });
    }
    let out = Shape::from(&[m, n][..]);
    out.checked_len::<T>("dense")?;
    Ok((m, k, n, out))
}

impl<T: Element> Tensor<T> {
    /// A dense layer's computation, `activation(self · kernel + bias)`, as
    /// one op: `self` is `[batch, in]`, `kernel` `[in, out]`, `bias` `[out]`.
    /// The bias add and the activation run on each piece of the product as
    /// it is finished, not as separate passes; the values are those of
    /// `self.matmul(kernel)?.add(bias)?` followed by the activation, bit
    /// for bit. Recorded on tapes as one op (`Op::Dense`), whose gradient
    /// needs only the output.
    ///
    /// ```
    /// use rime_tensor::{DenseActivation, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, -3.0, 1.0], [2, 2])?;
    /// let w = Tensor::from_vec(vec![1.0f32, -1.0, 1.0, 1.0], [2, 2])?;
    /// let b = Tensor::vector(vec![0.5f32, -0.5]);
    /// let y = x.dense(&w, Some(&b), DenseActivation::Relu)?;
    /// assert_eq!(y.to_vec(), vec![3.5, 0.5, 0.0, 3.5]);
    /// assert_eq!(y.to_vec(), x.matmul(&w)?.add(&b)?.relu().to_vec());
    /// // shapes that do not fit are typed errors
    /// assert!(x.dense(&w, Some(&Tensor::vector(vec![1.0f32; 3])), DenseActivation::Relu).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn dense(
        &self,
        kernel: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        activation: DenseActivation,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().dense(self, kernel, bias, activation)
    }

    pub(crate) fn dense_native(
        &self,
        kernel: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        activation: DenseActivation,
    ) -> Result<Tensor<T>> {
        let (m, k, n, shape) =
            dense_geometry::<T>(self.shape(), kernel.shape(), bias.map(|b| b.shape()))?;
        let len = m * n;
        let mut out = kernels::try_buffer("dense", len)?;
        let a = MatRef::new(self.as_slice(), m, k, false);
        let b = MatRef::new(kernel.as_slice(), k, n, false);
        let c = &mut out.spare_capacity_mut()[..len];
        let bias_data = bias.map(|b| b.as_slice());
        if bias.is_none() && activation == DenseActivation::Linear {
            gemm::gemm(m, k, n, a, b, c, n, true);
        } else {
            let epilogue = |_i: usize, j0: usize, seg: &mut [T]| {
                run_epilogue(seg, bias_data.map(|b| &b[j0..j0 + seg.len()]), activation)
            };
            gemm::gemm_epilogue(m, k, n, a, b, c, n, true, &epilogue);
        }
        // SAFETY: `out` has capacity `len` (reserved above), and the
        // product writes every element of its `m×n` output (as in
        // `matmul_t`); the epilogue only rewrites elements.
        unsafe { out.set_len(len) };
        let out = Tensor::from_parts(out, shape);
        match bias {
            Some(bias) => record(|| Op::Dense { activation }, &[self, kernel, bias], &out),
            None => record(|| Op::Dense { activation }, &[self, kernel], &out),
        }
        Ok(out)
    }
}

/// Rows up to which [`Tensor::dense_grad_z_and_bias`] sums the bias
/// gradient in its pass: the rows that `sum_to` folds as one block
/// (`kernels::reduce`'s `COL_BLOCK`: `0 + (((r0 + r1) + r2) + ...)`
/// column by column), so that the sum has the same bits.
const ONE_BLOCK_ROWS: usize = 256;

/// `dz[i, j] = f(dy[i, j], y[i, j])` for each row, and `db[j] = 0 + Σ_i
/// dz[i, j]` summed in row order, in one pass.
#[inline(always)]
fn grad_rows<T: Element>(
    y: &[T],
    dy: &[T],
    dz: &mut [MaybeUninit<T>],
    db: &mut [T],
    f: impl Fn(T, T) -> T,
) {
    let n = db.len();
    let m = y.len() / n;
    for i in 0..m {
        let (yr, dr, zr) = (&y[i * n..][..n], &dy[i * n..][..n], &mut dz[i * n..][..n]);
        if i == 0 {
            for j in 0..n {
                db[j] = *zr[j].write(f(dr[j], yr[j]));
            }
        } else {
            for j in 0..n {
                db[j] += *zr[j].write(f(dr[j], yr[j]));
            }
        }
    }
    let zero = T::zero();
    for b in db {
        *b = zero + *b;
    }
}

impl<T: Element> Tensor<T> {
    /// The first-order gradient through a dense op's activation and bias
    /// in one pass over `dy`: `dz = dy ⊙ act'(y)` from the op's output
    /// `self` (`y`), and the bias gradient `Σ_rows dz`, each with the bits
    /// of the recorded ops (`relu_grad`, or the sigmoid/tanh formula, then
    /// `sum_to`). `Ok(None)` when the single pass would not give those
    /// bits or saves nothing: a linear activation (`dz` is `dy`), more
    /// than 256 rows (`sum_to` folds blocks of rows in a tree) or one
    /// column (it folds the column with several accumulators); use the
    /// ops then. Not recorded on tapes (a gradient rule uses it when no
    /// tape records the backward pass).
    ///
    /// ```
    /// use rime_tensor::{DenseActivation, Tensor};
    /// let y = Tensor::from_vec(vec![0.0f32, 2.0, 1.0, 0.0], [2, 2])?;
    /// let dy = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// let (dz, db) = y.dense_grad_z_and_bias(&dy, DenseActivation::Relu)?.unwrap();
    /// assert_eq!(dz.to_vec(), vec![0.0, 2.0, 3.0, 0.0]);
    /// assert_eq!(db.to_vec(), vec![3.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn dense_grad_z_and_bias(
        &self,
        dy: &Tensor<T>,
        activation: DenseActivation,
    ) -> Result<Option<(Tensor<T>, Tensor<T>)>> {
        crate::instances::table::<T>().dense_grad_z_and_bias(self, dy, activation)
    }

    pub(crate) fn dense_grad_z_and_bias_native(
        &self,
        dy: &Tensor<T>,
        activation: DenseActivation,
    ) -> Result<Option<(Tensor<T>, Tensor<T>)>> {
        const OP: &str = "dense_grad_z_and_bias";
        if self.rank() != 2 {
            return Err(Error::Rank {
                op: OP,
                expected: "rank 2 (a dense op's output)",
                shape: self.shape().clone(),
            });
        }
        if self.shape() != dy.shape() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: dy.shape().clone(),
                msg: "the output and its gradient must have the same shape".into(),
            });
        }
        let (m, n) = (self.dims()[0], self.dims()[1]);
        if activation == DenseActivation::Linear || m == 0 || m > ONE_BLOCK_ROWS || n < 2 {
            return Ok(None);
        }
        let (y, g) = (self.as_slice(), dy.as_slice());
        // m * n is the length of `self`, a valid tensor
        let mut dz = kernels::try_buffer(OP, m * n)?;
        let mut db = kernels::try_filled(OP, n, T::zero())?;
        let (z, b) = (&mut dz.spare_capacity_mut()[..m * n], &mut db[..]);
        let (zero, one) = (T::zero(), T::one());
        // the recorded ops' formulas (`relu_grad`, `rules/dense.rs`);
        // constants captured by value and relu's flag as a select, so the
        // loops vectorize (a captured reference was reloaded behind a
        // branch: a scalar loop, 15x slower than the two ops)
        match activation {
            DenseActivation::Relu => vectorized(
                #[inline(always)]
                move || {
                    grad_rows(
                        y,
                        g,
                        z,
                        b,
                        #[inline(always)]
                        move |d, y| d * if y > zero { one } else { zero },
                    )
                },
            ),
            DenseActivation::Sigmoid => vectorized(
                #[inline(always)]
                move || {
                    grad_rows(
                        y,
                        g,
                        z,
                        b,
                        #[inline(always)]
                        move |d, y| d * (y * (one - y)),
                    )
                },
            ),
            DenseActivation::Tanh => vectorized(
                #[inline(always)]
                move || {
                    grad_rows(
                        y,
                        g,
                        z,
                        b,
                        #[inline(always)]
                        move |d, y| d * (one - y * y),
                    )
                },
            ),
            _ => return Ok(None),
        }
        // SAFETY: `dz` has capacity m * n (reserved above), and
        // `grad_rows` wrote each of its m rows of n elements.
        unsafe { dz.set_len(m * n) };
        Ok(Some((
            Tensor::from_parts(dz, self.shape().clone()),
            Tensor::from_parts(db, Shape::from(&[n][..])),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit patterns, every NaN as one value (Rust leaves a NaN result's
    /// sign and payload unspecified).
    fn bits<T: Element>(t: &Tensor<T>) -> Vec<u64> {
        let canonical = |v: f64| if v.is_nan() { u64::MAX } else { v.to_bits() };
        t.as_slice()
            .iter()
            .map(|v| canonical(v.to_f64().unwrap_or(f64::NAN)))
            .collect()
    }

    #[test]
    fn matches_unfused_ops_with_edge_values() {
        // NaN, -0, +0, infinities after the product and the bias
        let x = Tensor::from_vec(
            vec![1.0f64, 0.0, -1.0, 0.0, 0.0, 1.0, f64::NAN, 0.0],
            [4, 2],
        )
        .unwrap();
        let w =
            Tensor::from_vec(vec![-0.0f64, 1.0, f64::INFINITY, 2.0, -3.0, -0.0], [2, 3]).unwrap();
        let b = Tensor::vector(vec![-0.0f64, 0.0, f64::NEG_INFINITY]);
        for act in [
            DenseActivation::Linear,
            DenseActivation::Relu,
            DenseActivation::Sigmoid,
            DenseActivation::Tanh,
        ] {
            let unfused = |z: Tensor<f64>| match act {
                DenseActivation::Linear => z,
                DenseActivation::Relu => z.relu(),
                DenseActivation::Sigmoid => z.sigmoid(),
                DenseActivation::Tanh => z.tanh(),
            };
            let p = x.matmul(&w).unwrap();
            let want = unfused(p.add(&b).unwrap());
            let got = x.dense(&w, Some(&b), act).unwrap();
            assert_eq!(bits(&got), bits(&want), "{act:?}");
            let want = unfused(p);
            let got = x.dense(&w, None, act).unwrap();
            assert_eq!(bits(&got), bits(&want), "{act:?} without bias");
        }
        // relu of -0 is +0, of NaN is +0
        let z = Tensor::from_vec(vec![-0.0f32, f32::NAN], [1, 2]).unwrap();
        let y = z
            .dense(&Tensor::eye(2).unwrap(), None, DenseActivation::Relu)
            .unwrap();
        assert_eq!(y.as_slice()[0].to_bits(), 0.0f32.to_bits());
        assert_eq!(y.as_slice()[1].to_bits(), 0.0f32.to_bits());
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let x = Tensor::<f32>::zeros([2, 3]).unwrap();
        let w = Tensor::<f32>::zeros([3, 4]).unwrap();
        let r = DenseActivation::Relu;
        let e = x.dense(&x, None, r).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { op: "dense", .. }), "{e}");
        assert!(e.to_string().contains("[2, 3]"), "{e}");
        let e = x
            .dense(&w, Some(&Tensor::zeros([3]).unwrap()), r)
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { op: "dense", .. }), "{e}");
        assert!(e.to_string().contains("[3, 4]") && e.to_string().contains("[3]"));
        let e = x
            .dense(&w, Some(&Tensor::zeros([1, 4]).unwrap()), r)
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { op: "dense", .. }), "{e}");
        let e = Tensor::<f32>::zeros([3])
            .unwrap()
            .dense(&w, None, r)
            .unwrap_err();
        assert!(matches!(e, Error::Rank { op: "dense", .. }), "{e}");
        let e = x
            .dense(&Tensor::zeros([1, 3, 4]).unwrap(), None, r)
            .unwrap_err();
        assert!(matches!(e, Error::Rank { op: "dense", .. }), "{e}");
    }

    #[test]
    fn one_pass_bias_gradient_has_the_ops_bits() {
        let vals = [0.5f32, -0.0, 0.0, f32::NAN, -1.5, 2.0, 0.25, -3.0, 1.0];
        let data = |len: usize, s: usize| -> Vec<f32> {
            (0..len)
                .map(|i| vals[(i * s + i / 7) % vals.len()] * (1.0 + i as f32 / 64.0))
                .collect()
        };
        for (m, n) in [(1, 2), (2, 3), (7, 33), (256, 5), (256, 2100)] {
            let z = Tensor::from_vec(data(m * n, 5), [m, n]).unwrap();
            let dy = Tensor::from_vec(data(m * n, 3), [m, n]).unwrap();
            let b = Tensor::<f32>::zeros([n]).unwrap();
            for (act, y) in [
                (DenseActivation::Relu, z.relu()),
                (DenseActivation::Sigmoid, z.sigmoid()),
                (DenseActivation::Tanh, z.tanh()),
            ] {
                let want_dz = match act {
                    DenseActivation::Relu => dy.relu_grad(&y).unwrap(),
                    DenseActivation::Sigmoid => {
                        dy.mul(&y.mul(&y.rsub_scalar(1.0)).unwrap()).unwrap()
                    }
                    _ => dy.mul(&y.square().rsub_scalar(1.0)).unwrap(),
                };
                let want_db = want_dz.sum_to(b.shape()).unwrap();
                let (dz, db) = y.dense_grad_z_and_bias(&dy, act).unwrap().unwrap();
                assert_eq!(bits(&dz), bits(&want_dz), "{act:?} {m}x{n}");
                assert_eq!(bits(&db), bits(&want_db), "{act:?} {m}x{n}");
            }
        }
        // the shapes it leaves to the ops, and bad ones
        let y = Tensor::<f32>::ones([257, 2]).unwrap();
        assert!(
            y.dense_grad_z_and_bias(&y, DenseActivation::Relu)
                .unwrap()
                .is_none()
        );
        let y = Tensor::<f32>::ones([4, 1]).unwrap();
        assert!(
            y.dense_grad_z_and_bias(&y, DenseActivation::Relu)
                .unwrap()
                .is_none()
        );
        let y = Tensor::<f32>::ones([4, 2]).unwrap();
        assert!(
            y.dense_grad_z_and_bias(&y, DenseActivation::Linear)
                .unwrap()
                .is_none()
        );
        let dy = Tensor::<f32>::ones([2, 4]).unwrap();
        assert!(matches!(
            y.dense_grad_z_and_bias(&dy, DenseActivation::Tanh),
            Err(Error::ShapeMismatch { .. })
        ));
        let v = Tensor::<f32>::ones([4]).unwrap();
        assert!(matches!(
            v.dense_grad_z_and_bias(&v, DenseActivation::Tanh),
            Err(Error::Rank { .. })
        ));
    }

    #[test]
    fn empty_shapes() {
        let b = Tensor::vector(vec![1.0f32, -2.0]);
        let y = Tensor::<f32>::zeros([3, 0])
            .unwrap()
            .dense(
                &Tensor::zeros([0, 2]).unwrap(),
                Some(&b),
                DenseActivation::Relu,
            )
            .unwrap();
        assert_eq!(y.to_vec(), vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let y = Tensor::<f32>::zeros([0, 4])
            .unwrap()
            .dense(
                &Tensor::zeros([4, 2]).unwrap(),
                Some(&b),
                DenseActivation::Tanh,
            )
            .unwrap();
        assert_eq!(y.shape(), &[0, 2]);
    }
}
