//! Rules for `ops/layout.rs`: each is the op's adjoint — reshape back,
//! permute by the inverse, sum a broadcast, split a concat, pad a slice and
//! slice a pad.

use std::ops::Range;

use rime_tensor::{Element, LayoutOp};
use smallvec::SmallVec;

use super::{Ctx, Grads, one};
use crate::Result;

pub(super) fn backward<T: Element>(op: &LayoutOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let dy = c.dy;
    if let LayoutOp::Concat { axis } = op {
        let mut start = 0;
        let mut out = Grads::new();
        for (i, x) in c.x.iter().enumerate() {
            let n = x.dims()[*axis];
            out.push(c.grad_if(i, || dy.narrow(*axis as isize, start, n))?);
            start += n;
        }
        return Ok(out);
    }
    let x = c.x[0];
    let g = c.grad_if(0, || match op {
        LayoutOp::Reshape => dy.reshape(x.shape().clone()),
        LayoutOp::Permute { perm } => {
            let mut inverse: SmallVec<[usize; 4]> = SmallVec::from_elem(0, perm.len());
            for (j, &p) in perm.iter().enumerate() {
                inverse[p] = j;
            }
            dy.permute(&inverse)
        }
        LayoutOp::BroadcastTo => dy.sum_to(x.shape()),
        LayoutOp::Slice { ranges } => {
            let widths: SmallVec<[(usize, usize); 4]> = ranges
                .iter()
                .zip(x.dims())
                .map(|(r, &d)| (r.start, d - r.end))
                .collect();
            dy.pad(&widths)
        }
        LayoutOp::Pad { widths } => {
            let ranges: SmallVec<[Range<usize>; 4]> = widths
                .iter()
                .zip(x.dims())
                .map(|(&(b, _), &d)| b..b + d)
                .collect();
            dy.slice(&ranges)
        }
        LayoutOp::Concat { .. } => unreachable!("handled above"),
    })?;
    Ok(one(g))
}
