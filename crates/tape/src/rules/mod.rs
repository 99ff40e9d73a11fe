//! The gradient rules: what each recorded op contributes to its inputs'
//! gradients. One file per op family, named like the family's file in
//! rime-tensor's `ops/`, so an op's forward and its rule are found by the
//! same name.
//!
//! Rules are written with ordinary (recorded) tensor ops: when another tape
//! is recording while this one computes a gradient, the rule's computation
//! lands on that tape, which gives second and higher derivatives.
//!
//! A rule receives a [`Ctx`]: the op's inputs `x`, output `y`, the gradient
//! `dy` flowing into the output, and which inputs need a gradient. It
//! returns one `Option` per input; inputs that do not need one should get
//! `None` without any work spent on them.

mod arith;
mod index;
mod layout;
mod matmul;
mod nn;
mod reduce;
mod unary;

use std::cell::Cell;

use rime_tensor::{DType, DynTensor, Element, Op, Tensor};
use smallvec::SmallVec;

use crate::mask::ResolvedMask;
use crate::tape::NodeOp;
use crate::{Error, Result};

/// One gradient per input (`None`: not needed, or no dependence).
pub(crate) type Grads<T> = SmallVec<[Option<Tensor<T>>; 3]>;

/// What a rule sees.
pub(crate) struct Ctx<'a, T: Element> {
    /// The op's inputs.
    pub x: &'a [&'a Tensor<T>],
    /// The op's output.
    pub y: &'a Tensor<T>,
    /// The gradient flowing into the output.
    pub dy: &'a Tensor<T>,
    needs: &'a [bool],
    hints: &'a [Option<&'a ResolvedMask>],
    premasked: Cell<u32>,
}

impl<T: Element> Ctx<'_, T> {
    /// Whether input `i` needs a gradient.
    pub fn needs(&self, i: usize) -> bool {
        self.needs[i]
    }

    /// The trainable mask of input `i`, when it is a read of a masked
    /// variable whose gradient is requested.
    pub fn hint(&self, i: usize) -> Option<&ResolvedMask> {
        self.hints.get(i).copied().flatten()
    }

    /// Declares that the gradient returned for input `i` is already exactly
    /// zero at the frozen elements of its hint mask.
    pub fn mark_premasked(&self, i: usize) {
        self.premasked.set(self.premasked.get() | (1 << i));
    }

    /// Computes input `i`'s gradient with `f` only if it is needed.
    pub fn grad_if(
        &self,
        i: usize,
        f: impl FnOnce() -> rime_tensor::Result<Tensor<T>>,
    ) -> Result<Option<Tensor<T>>> {
        if self.needs(i) {
            Ok(Some(f()?))
        } else {
            Ok(None)
        }
    }
}

/// The result of one node's backward step.
pub(crate) struct Backward {
    pub grads: SmallVec<[Option<DynTensor>; 3]>,
    /// Bit `i`: `grads[i]` is already zero at its mask's frozen elements.
    pub premasked: u32,
}

/// Applies the rule of a node's op to the gradient `dy` of its output.
pub(crate) fn backward(
    op: &NodeOp,
    inputs: &[DynTensor],
    output: &DynTensor,
    dy: &DynTensor,
    needs: &[bool],
    hints: &[Option<&ResolvedMask>],
) -> Result<Backward> {
    match op {
        NodeOp::ReadVariable => Ok(Backward {
            grads: std::iter::once(Some(dy.clone())).collect(),
            premasked: 0,
        }),
        NodeOp::Custom { name, backward } => {
            let grads = backward(inputs, output, dy)?;
            check_custom(name, inputs, &grads)?;
            Ok(Backward {
                grads,
                premasked: 0,
            })
        }
        NodeOp::Tensor(Op::Cast { from, .. }) => {
            let g = match (from, dy) {
                (DType::F32, DynTensor::F64(g)) => DynTensor::F32(g.cast()),
                (DType::F64, DynTensor::F32(g)) => DynTensor::F64(g.cast()),
                (_, g) => g.clone(),
            };
            Ok(Backward {
                grads: std::iter::once(Some(g)).collect(),
                premasked: 0,
            })
        }
        NodeOp::Tensor(op) => match dy {
            DynTensor::F32(dy) => typed(op, inputs, output, dy, needs, hints),
            DynTensor::F64(dy) => typed(op, inputs, output, dy, needs, hints),
        },
    }
}

fn typed<T: Element>(
    op: &Op,
    inputs: &[DynTensor],
    output: &DynTensor,
    dy: &Tensor<T>,
    needs: &[bool],
    hints: &[Option<&ResolvedMask>],
) -> Result<Backward> {
    let x: SmallVec<[&Tensor<T>; 3]> = inputs
        .iter()
        .map(|t| T::from_dyn(t).expect("a same-dtype op's inputs share its output's dtype"))
        .collect();
    let y = T::from_dyn(output).expect("the gradient has its output's dtype");
    let ctx = Ctx {
        x: &x,
        y,
        dy,
        needs,
        hints,
        premasked: Cell::new(0),
    };
    let grads = match op {
        Op::Binary(b) => arith::binary(*b, &ctx)?,
        Op::Select => arith::select(&ctx)?,
        Op::Unary(u) => unary::backward(*u, &ctx)?,
        Op::Reduce(r) => reduce::backward(r, &ctx)?,
        Op::Nn(n) => nn::backward(n, &ctx)?,
        Op::Layout(l) => layout::backward(l, &ctx)?,
        Op::Index(i) => index::backward(i, &ctx)?,
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::backward(*transpose_a, *transpose_b, &ctx)?,
        other => {
            return Err(Error::InvalidArgument {
                call: "gradient",
                msg: format!("no gradient rule for {other:?}"),
            });
        }
    };
    debug_assert!(
        grads
            .iter()
            .zip(&x)
            .all(|(g, x)| g.as_ref().is_none_or(|g| g.shape() == x.shape())),
        "rule for {op:?} returned a gradient of the wrong shape"
    );
    Ok(Backward {
        grads: grads.into_iter().map(|g| g.map(T::into_dyn)).collect(),
        premasked: ctx.premasked.get(),
    })
}

fn check_custom(name: &str, inputs: &[DynTensor], grads: &[Option<DynTensor>]) -> Result<()> {
    let err = |msg: String| Error::CustomGradient {
        name: name.to_string(),
        msg,
    };
    if grads.len() != inputs.len() {
        return Err(err(format!(
            "returned {} gradients for {} inputs",
            grads.len(),
            inputs.len()
        )));
    }
    for (i, (g, x)) in grads.iter().zip(inputs).enumerate() {
        if let Some(g) = g {
            if g.shape() != x.shape() || g.dtype() != x.dtype() {
                return Err(err(format!(
                    "gradient {i} is {} {}, its input is {} {}",
                    g.dtype(),
                    g.shape(),
                    x.dtype(),
                    x.shape()
                )));
            }
        }
    }
    Ok(())
}
