//! Rules for `ops/arith.rs`: broadcasting binary ops and `select`.
//! Every gradient is summed back to its input's shape (`sum_to`), which
//! undoes broadcasting.

use rime_tensor::{BinaryOp, Element, Tensor};

use super::{Ctx, Grads, same_shape, two};
use crate::Result;

pub(super) fn binary<T: Element>(op: BinaryOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (a, b, dy) = (c.x[0], c.x[1], c.dy);
    let zero = || Tensor::scalar(T::zero());
    let (da, db) = match op {
        BinaryOp::Add => (
            c.grad_if(0, || Ok(dy.clone()))?,
            c.grad_if(1, || Ok(dy.clone()))?,
        ),
        BinaryOp::Sub => (
            c.grad_if(0, || Ok(dy.clone()))?,
            c.grad_if(1, || Ok(dy.neg()))?,
        ),
        BinaryOp::Mul => (c.grad_if(0, || dy.mul(b))?, c.grad_if(1, || dy.mul(a))?),
        BinaryOp::Div => (
            c.grad_if(0, || dy.div(b))?,
            // d(a/b)/db = -a / b²
            c.grad_if(1, || dy.mul(a)?.div(&b.square()).map(|t| t.neg()))?,
        ),
        BinaryOp::Pow => (
            // b · a^(b-1)
            c.grad_if(0, || dy.mul(&b.mul(&a.pow(&b.sub_scalar(T::one()))?)?))?,
            // a^b · ln a, taken as 0 where a <= 0 (as TensorFlow)
            c.grad_if(1, || {
                let positive = a.gt_scalar(T::zero());
                let safe_a = Tensor::select(&positive, a, &Tensor::scalar(T::one()))?;
                let ln_a = Tensor::select(&positive, &safe_a.ln(), &zero())?;
                dy.mul(&c.y.mul(&ln_a)?)
            })?,
        ),
        // linear in `a`, piecewise constant in `b`
        BinaryOp::ReluGrad => (
            c.grad_if(0, || dy.relu_grad(b))?,
            c.grad_if(1, || Ok(Tensor::zeros_like(b)))?,
        ),
        // ties send the gradient to `a` (TensorFlow's rule)
        BinaryOp::Maximum | BinaryOp::Minimum => {
            let to_a = if op == BinaryOp::Maximum {
                a.ge(b)?
            } else {
                a.le(b)?
            };
            (
                c.grad_if(0, || Tensor::select(&to_a, dy, &zero()))?,
                c.grad_if(1, || Tensor::select(&to_a, &zero(), dy))?,
            )
        }
    };
    Ok(two(reduce_to(da, a)?, reduce_to(db, b)?))
}

pub(super) fn select<T: Element>(c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (cond, a, b, dy) = (c.x[0], c.x[1], c.x[2], c.dy);
    let zero = Tensor::scalar(T::zero());
    let da = c.grad_if(1, || Tensor::select(cond, dy, &zero))?;
    let db = c.grad_if(2, || Tensor::select(cond, &zero, dy))?;
    Ok([None, reduce_to(da, a)?, reduce_to(db, b)?]
        .into_iter()
        .collect())
}

/// Sums a gradient of the broadcast shape back to `x`'s shape.
fn reduce_to<T: Element>(g: Option<Tensor<T>>, x: &Tensor<T>) -> Result<Option<Tensor<T>>> {
    Ok(match g {
        Some(g) if !same_shape(&g, x) => Some(g.sum_to(x.shape())?),
        g => g,
    })
}
