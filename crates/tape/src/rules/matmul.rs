//! Rule for `ops/matmul.rs`. With `C = op(A) op(B)` and `G = dC`
//! (TensorFlow's table, transposes passed as flags, never copied):
//!
//! | ta, tb | dA            | dB            |
//! |--------|---------------|---------------|
//! | F, F   | G Bᵀ          | Aᵀ G          |
//! | F, T   | G B           | Gᵀ A          |
//! | T, F   | B Gᵀ          | A G           |
//! | T, T   | Bᵀ Gᵀ         | Gᵀ Aᵀ         |
//!
//! Batched products sum the gradient over broadcast batch axes.
//!
//! Mask-aware: when an operand is a 2-D read of a variable whose trainable
//! mask is whole rows or whole columns, and no other tape records this
//! computation, only that block of its gradient is computed (the rest is
//! zero), so a mostly frozen weight costs a fraction of a full product.

use rime_tensor::{Element, Tensor};

use super::{Ctx, Grads};
use crate::Result;
use crate::mask::{MaskStructure, ResolvedMask};

/// The product giving the gradient of input `i` (0: `a`, 1: `b`) of
/// `C = op(a)·op(b)` from `g = dC`, as `(left, right, transpose_left,
/// transpose_right)`: the table above, shared by the rule and by the
/// engine's deferred weight gradients (`deferred.rs`).
pub(crate) fn gradient_product<'a, T: Element>(
    ta: bool,
    tb: bool,
    i: usize,
    a: &'a Tensor<T>,
    b: &'a Tensor<T>,
    g: &'a Tensor<T>,
) -> (&'a Tensor<T>, &'a Tensor<T>, bool, bool) {
    match (i, ta, tb) {
        (0, false, false) => (g, b, false, true),
        (0, false, true) => (g, b, false, false),
        (0, true, false) => (b, g, false, true),
        (0, true, true) => (b, g, true, true),
        (_, false, false) => (a, g, true, false),
        (_, false, true) => (g, a, true, false),
        (_, true, false) => (a, g, false, false),
        (_, true, true) => (g, a, true, true),
    }
}

pub(super) fn backward<T: Element>(ta: bool, tb: bool, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (a, b, g) = (c.x[0], c.x[1], c.dy);
    let da = gradient_product(ta, tb, 0, a, b, g);
    let db = gradient_product(ta, tb, 1, a, b, g);
    let mut out = Grads::new();
    for (i, (l, r, tl, tr)) in [(0, da), (1, db)] {
        let x = c.x[i];
        let gi = if !c.needs(i) {
            None
        } else if let Some(block) = masked_block(c.hint(i), l, r, tl, tr, x)? {
            c.mark_premasked(i);
            Some(block)
        } else {
            let full = l.matmul_t(r, tl, tr)?;
            Some(if full.shape() != x.shape() {
                full.sum_to(x.shape())?
            } else {
                full
            })
        };
        out.push(gi);
    }
    Ok(out)
}

/// The product restricted to the trainable rows or columns of `mask`, when
/// that is possible and allowed (2-D, structured, nothing else recording).
pub(super) fn masked_block<T: Element>(
    mask: Option<&ResolvedMask>,
    l: &Tensor<T>,
    r: &Tensor<T>,
    tl: bool,
    tr: bool,
    x: &Tensor<T>,
) -> Result<Option<Tensor<T>>> {
    let Some(mask) = mask else { return Ok(None) };
    if x.rank() != 2 || l.rank() != 2 || r.rank() != 2 || rime_tensor::record::is_recording() {
        return Ok(None);
    }
    Ok(match mask.structure() {
        MaskStructure::Rows(rows) => Some(l.matmul_t_blocks(r, tl, tr, Some(rows), None)?),
        MaskStructure::Cols(cols) => Some(l.matmul_t_blocks(r, tl, tr, None, Some(cols))?),
        MaskStructure::Nothing => Some(Tensor::zeros_like(x)),
        MaskStructure::All | MaskStructure::Irregular => None,
    })
}
