//! Rules for `ops/conv.rs`. `conv2d(x, w)` is bilinear, and so are its two
//! gradients, so the three ops close under differentiation: each rule is
//! written with the other two (and `conv2d` itself), which gives second and
//! higher derivatives (a gradient penalty on a CNN).
//!
//! | op (inputs)                   | d first input              | d second input               |
//! |-------------------------------|----------------------------|------------------------------|
//! | `conv2d(x, w)`                | `backprop_input(G, w)`     | `backprop_filter(x, G)`      |
//! | `backprop_input(dy, w)`       | `conv2d(G, w)`             | `backprop_filter(G, dy)`     |
//! | `backprop_filter(x, dy)`      | `backprop_input(dy, G)`    | `conv2d(x, G)`               |
//!
//! Mask-aware: when the kernel is a read of a variable whose trainable mask
//! is a set of whole output filters (ranges of its last axis), and no other
//! tape records this computation, only those filters' gradient is computed.

use std::ops::Range;

use rime_tensor::{ConvOp, Element, Tensor};

use super::{Ctx, Grads, two};
use crate::Result;
use crate::mask::ResolvedMask;

pub(super) fn backward<T: Element>(op: &ConvOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (a, b, dy) = (c.x[0], c.x[1], c.dy);
    Ok(match op {
        ConvOp::Conv2d(g) => {
            let dx = c.grad_if(0, || dy.conv2d_backprop_input(b, g))?;
            let dw = if !c.needs(1) {
                None
            } else if let Some(filters) = trainable_filters(c.hint(1), b) {
                c.mark_premasked(1);
                Some(a.conv2d_backprop_filter_filters(dy, g, &filters)?)
            } else {
                Some(a.conv2d_backprop_filter(dy, g)?)
            };
            two(dx, dw)
        }
        ConvOp::Conv2dBackpropInput(g) => two(
            c.grad_if(0, || dy.conv2d_with(b, g))?,
            c.grad_if(1, || dy.conv2d_backprop_filter(a, g))?,
        ),
        ConvOp::Conv2dBackpropFilter(g) => two(
            c.grad_if(0, || b.conv2d_backprop_input(dy, g))?,
            c.grad_if(1, || a.conv2d_with(dy, g))?,
        ),
    })
}

/// The trainable output filters of a kernel whose mask is whole filters
/// (every position of the last axis trainable everywhere or nowhere), when
/// nothing else records this backward pass.
fn trainable_filters<T: Element>(
    mask: Option<&ResolvedMask>,
    kernel: &Tensor<T>,
) -> Option<Vec<Range<usize>>> {
    let mask = mask?;
    if rime_tensor::record::is_recording() || mask.shape() != kernel.shape() {
        return None;
    }
    let cout = *kernel.dims().last()?;
    let bits = mask.bits();
    if cout == 0 || bits.is_empty() {
        return None;
    }
    let first = &bits[..cout];
    if !bits.chunks_exact(cout).all(|row| row == first) {
        return None;
    }
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &b) in first.iter().chain([&false]).enumerate() {
        match (b, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    Some(runs)
}
