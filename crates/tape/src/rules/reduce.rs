//! Rules for `ops/reduce.rs`. The output gradient is first reshaped to the
//! input's rank (reduced axes of size 1), then broadcast back over them.

use rime_tensor::{Element, ReduceKind, ReduceOp};
use smallvec::SmallVec;

use super::{Ctx, Grads, one};
use crate::Result;

pub(super) fn backward<T: Element>(op: &ReduceOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let x = c.x[0];
    let kept = op.kept_shape(x.shape());
    let axes: SmallVec<[isize; 4]> = op.axes.iter().map(|&a| a as isize).collect();
    let n: usize = op.axes.iter().map(|&a| x.dims()[a]).product();
    let g = c.grad_if(0, || {
        let dy = c.dy.reshape(kept.clone())?;
        match op.kind {
            ReduceKind::Sum => dy.broadcast_to(x.shape().clone()),
            ReduceKind::Mean => dy
                .div_scalar(T::of(n as f64))
                .broadcast_to(x.shape().clone()),
            // ties share the gradient equally (TensorFlow's rule)
            ReduceKind::Max | ReduceKind::Min => {
                let hit = x.eq(&c.y.reshape(kept.clone())?)?;
                let count = hit.sum(&axes, true)?;
                hit.div(&count)?.mul(&dy)
            }
            // 2 (x - mean) / n
            ReduceKind::Var => {
                let centered = x.sub(&x.mean(&axes, true)?)?;
                centered.mul_scalar(T::of(2.0 / n as f64)).mul(&dy)
            }
            // softmax over the reduced axes
            ReduceKind::LogSumExp => x.sub(&c.y.reshape(kept.clone())?)?.exp().mul(&dy),
        }
    })?;
    let g = match g {
        Some(g) if g.shape() != x.shape() => Some(g.broadcast_to(x.shape().clone())?),
        g => g,
    };
    Ok(one(g))
}
