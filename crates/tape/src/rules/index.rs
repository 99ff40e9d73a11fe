//! Rules for `ops/index.rs`: `index_select` and `scatter_add` are each
//! other's adjoints.

use rime_tensor::{Element, IndexOp, Tensor};

use super::{Ctx, Grads, one};
use crate::Result;

pub(super) fn backward<T: Element>(op: &IndexOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let dy = c.dy;
    Ok(match op {
        IndexOp::IndexSelect { axis, indices } => {
            let x = c.x[0];
            let g = c.grad_if(0, || {
                Tensor::zeros_like(x).scatter_add(*axis as isize, &indices[..], dy)
            })?;
            one(g)
        }
        IndexOp::ScatterAdd { axis, indices } => [
            c.grad_if(0, || Ok(dy.clone()))?,
            c.grad_if(1, || dy.index_select(*axis as isize, &indices[..]))?,
        ]
        .into_iter()
        .collect(),
    })
}
