//! Rules for `ops/pool.rs`. Average pooling and its gradient are linear
//! and each other's adjoint. Max pooling routes its gradient to each
//! window's maximum (`max_pool2d_grad`); that op is linear in the routed
//! gradient (its adjoint `max_pool2d_gradgrad` reads the maxima back) and
//! piecewise constant in the input, so the three close under
//! differentiation and second derivatives work.

use rime_tensor::{Element, PoolOp, Tensor};

use super::{Ctx, Grads, one, two};
use crate::Result;

pub(super) fn backward<T: Element>(op: &PoolOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (x, dy) = (c.x[0], c.dy);
    Ok(match op {
        // the output holds each window's maximum: read, not searched again
        PoolOp::MaxPool2d(g) => one(c.grad_if(0, || x.max_pool2d_grad_pooled(c.y, dy, g))?),
        PoolOp::MaxPool2dGrad(g) => two(
            c.grad_if(0, || Ok(Tensor::zeros_like(x)))?,
            c.grad_if(1, || x.max_pool2d_gradgrad(dy, g))?,
        ),
        PoolOp::MaxPool2dGradGrad(g) => two(
            c.grad_if(0, || Ok(Tensor::zeros_like(x)))?,
            c.grad_if(1, || x.max_pool2d_grad(dy, g))?,
        ),
        PoolOp::AvgPool2d(g) => one(c.grad_if(0, || dy.avg_pool2d_grad(g))?),
        PoolOp::AvgPool2dGrad(g) => one(c.grad_if(0, || dy.avg_pool2d_with(g))?),
    })
}
