//! Rules for `ops/nn.rs`: the softmax family and fused cross entropy.

use rime_tensor::{Element, NnOp, Tensor};

use super::{Ctx, Grads, one};
use crate::Result;

pub(super) fn backward<T: Element>(op: &NnOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (x, y, dy) = (c.x[0], c.y, c.dy);
    let g = c.grad_if(0, || match op {
        // y (dy - Σ dy·y)
        NnOp::Softmax { axis } => {
            let a = *axis as isize;
            y.mul(&dy.sub(&dy.mul(y)?.sum(&[a], true)?)?)
        }
        // dy - softmax · Σ dy
        NnOp::LogSoftmax { axis } => {
            let a = *axis as isize;
            dy.sub(&y.exp().mul(&dy.sum(&[a], true)?)?)
        }
        // (softmax(x) - onehot(labels)) · dy per example
        NnOp::SparseSoftmaxCrossEntropy { labels } => {
            let classes = x.dims()[x.rank() - 1];
            let onehot = Tensor::one_hot(&labels[..], classes)?.reshape(x.shape().clone())?;
            x.softmax(-1)?.sub(&onehot)?.mul(&dy.unsqueeze(-1)?)
        }
    })?;
    Ok(one(g))
}
