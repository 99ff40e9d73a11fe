//! Rule for `ops/dense.rs`: `y = act(z)`, `z = x·W + b`, with `dy` given.
//! `dz = dy ⊙ act'(y)` (written from the output, as the unary rules do),
//! then `dx = dz·Wᵀ`, `dW = xᵀ·dz` (transposes read in place) and `db`
//! the sum of `dz` over the batch: the same ops, in the same order, as the
//! rules of the unfused `matmul`, `add` and activation, so the gradients
//! agree bit for bit.

use rime_tensor::{DenseActivation, Element, Tensor};

use super::matmul::masked_block;
use super::{Ctx, Grads};
use crate::{Error, Result};

/// `dz = dy ⊙ act'(z)` from the output `y = act(z)`, in recorded ops.
fn pre_activation_grad<T: Element>(
    activation: DenseActivation,
    y: &Tensor<T>,
    dy: &Tensor<T>,
) -> Result<Tensor<T>> {
    Ok(match activation {
        DenseActivation::Linear => dy.clone(),
        DenseActivation::Relu => dy.relu_grad(y)?,
        DenseActivation::Sigmoid => dy.mul(&y.mul(&y.rsub_scalar(T::one()))?)?,
        DenseActivation::Tanh => dy.mul(&y.square().rsub_scalar(T::one()))?,
        other => {
            return Err(Error::InvalidArgument {
                call: "gradient",
                msg: format!("no gradient rule for the dense activation {other:?}"),
            });
        }
    })
}

/// `dz` and, when `bias` is given (its gradient is needed), the bias
/// gradient `Σ_rows dz` (also what the engine's deferred weight gradient
/// multiplies by, `tape/backward.rs`): in one pass over `dy` when no tape records this
/// computation (then no higher derivative needs the ops) and that pass
/// gives the ops' bits (`Tensor::dense_grad_z_and_bias`), else by the ops.
pub(crate) fn output_grads<T: Element>(
    activation: DenseActivation,
    y: &Tensor<T>,
    dy: &Tensor<T>,
    bias: Option<&Tensor<T>>,
) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
    let Some(b) = bias else {
        return Ok((pre_activation_grad(activation, y, dy)?, None));
    };
    if !rime_tensor::record::is_recording()
        && let Some((dz, db)) = y.dense_grad_z_and_bias(dy, activation)?
    {
        return Ok((dz, Some(db)));
    }
    let dz = pre_activation_grad(activation, y, dy)?;
    let db = dz.sum_to(b.shape())?;
    Ok((dz, Some(db)))
}

pub(super) fn backward<T: Element>(
    activation: DenseActivation,
    c: &Ctx<'_, T>,
) -> Result<Grads<T>> {
    let (x, w) = (c.x[0], c.x[1]);
    let bias = c.x.get(2).copied().filter(|_| c.needs(2));
    let (dz, db) = output_grads(activation, c.y, c.dy, bias)?;
    let mut out = Grads::new();
    // (left, right, transpose_left, transpose_right) of each product
    for (i, (l, r, tl, tr)) in [(0, (&dz, w, false, true)), (1, (x, &dz, true, false))] {
        let g = if !c.needs(i) {
            None
        } else if let Some(block) = masked_block(c.hint(i), l, r, tl, tr, c.x[i])? {
            c.mark_premasked(i);
            Some(block)
        } else {
            Some(l.matmul_t(r, tl, tr)?)
        };
        out.push(g);
    }
    if c.x.len() == 3 {
        out.push(db);
    }
    Ok(out)
}
