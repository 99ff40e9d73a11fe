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
mod conv;
pub(crate) mod dense;
mod index;
mod layout;
pub(crate) mod matmul;
mod nn;
mod pool;
mod reduce;
mod unary;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rime_tensor::{DType, DynTensor, Element, Op, Tensor};
use smallvec::SmallVec;

use crate::mask::ResolvedMask;
use crate::{Error, Result};

/// The backward function of a custom-gradient op, dtype-erased.
pub(crate) type CustomBackward = dyn Fn(
    &[&DynTensor],
    &DynTensor,
    &DynTensor,
) -> crate::Result<SmallVec<[Option<DynTensor>; 3]>>;

/// What a recorded node computed: a tensor op, a variable read, or a
/// custom-gradient op; the rules below give each one's gradient.
pub(crate) enum NodeOp {
    Tensor(Op),
    ReadVariable,
    /// Behind one pointer, so that a node stays as small as a tensor op's.
    Custom(Rc<CustomOp>),
}

/// A recorded custom-gradient op: its name (for errors) and its backward
/// function.
pub(crate) struct CustomOp {
    pub(crate) name: Arc<str>,
    pub(crate) backward: Rc<CustomBackward>,
}

/// One gradient per input (`None`: not needed, or no dependence).
pub(crate) type Grads<T> = SmallVec<[Option<Tensor<T>>; 3]>;

/// The gradients of a one-input op.
#[inline]
pub(crate) fn one<T: Element>(g: Option<Tensor<T>>) -> Grads<T> {
    let mut out = Grads::new();
    out.push(g);
    out
}

/// The gradients of a two-input op.
#[inline]
pub(crate) fn two<T: Element>(a: Option<Tensor<T>>, b: Option<Tensor<T>>) -> Grads<T> {
    let mut out = Grads::new();
    out.push(a);
    out.push(b);
    out
}

/// Whether two tensors have the same shape (inlined: shapes are short and
/// this runs once per input of every op on the backward pass).
#[inline]
pub(crate) fn same_shape<T: Element>(a: &Tensor<T>, b: &Tensor<T>) -> bool {
    let (a, b) = (a.dims(), b.dims());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// What a rule sees.
pub(crate) struct Ctx<'a, T: Element> {
    /// The op's inputs.
    pub x: &'a [&'a Tensor<T>],
    /// The op's output.
    pub y: &'a Tensor<T>,
    /// The gradient flowing into the output.
    pub dy: &'a Tensor<T>,
    /// The inputs that need a gradient.
    needs: &'a InputSet,
    hints: &'a [Option<&'a ResolvedMask>],
    premasked: RefCell<InputSet>,
}

/// A set of input positions of one node, for any number of inputs (a
/// 40-way concatenation has 40): one bit per input, inline up to 64.
#[derive(Clone, Debug, Default)]
pub(crate) struct InputSet(SmallVec<[u64; 1]>);

impl InputSet {
    /// Adds input `i`.
    pub fn insert(&mut self, i: usize) {
        let (word, bit) = (i / 64, i % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    /// Removes input `i`.
    pub fn remove(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Whether input `i` is in the set.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Whether no input is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Removes every input (keeping the storage).
    pub fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
}

impl<T: Element> Ctx<'_, T> {
    /// Whether input `i` needs a gradient.
    #[inline]
    pub fn needs(&self, i: usize) -> bool {
        self.needs.contains(i)
    }

    /// The trainable mask of input `i`, when it is a read of a masked
    /// variable whose gradient is requested.
    pub fn hint(&self, i: usize) -> Option<&ResolvedMask> {
        self.hints.get(i).copied().flatten()
    }

    /// Declares that the gradient returned for input `i` is already exactly
    /// zero at the frozen elements of its hint mask.
    pub fn mark_premasked(&self, i: usize) {
        self.premasked.borrow_mut().insert(i);
    }

    /// Computes input `i`'s gradient with `f` only if it is needed.
    #[inline]
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

/// Where a rule's results go: `(input, gradient, premasked)`, where
/// `premasked` says the gradient is already exactly zero at its mask's
/// frozen elements. Called only for inputs that need a gradient.
pub(crate) type Sink<'a> = dyn FnMut(usize, DynTensor, bool) -> Result<()> + 'a;

/// Applies the rule of a node's op to the gradient `dy` of its output and
/// hands each needed input gradient to `sink`. `needs` holds each input
/// that needs a gradient; `hints` is empty or has one entry per
/// input. (Variable reads pass their gradient on in the tape itself.)
pub(crate) fn backward(
    op: &NodeOp,
    inputs: &[&DynTensor],
    output: &DynTensor,
    dy: &DynTensor,
    needs: &InputSet,
    hints: &[Option<&ResolvedMask>],
    sink: &mut Sink<'_>,
) -> Result<()> {
    match op {
        NodeOp::ReadVariable => sink(0, dy.clone(), false),
        NodeOp::Custom(custom) => {
            let grads = (custom.backward)(inputs, output, dy)?;
            check_custom(&custom.name, inputs, &grads)?;
            for (k, g) in grads.into_iter().enumerate() {
                if let (true, Some(g)) = (needs.contains(k), g) {
                    sink(k, g, false)?;
                }
            }
            Ok(())
        }
        NodeOp::Tensor(Op::Cast { from, .. }) => {
            let g = match (from, dy) {
                (DType::F32, DynTensor::F64(g)) => DynTensor::F32(g.cast()),
                (DType::F64, DynTensor::F32(g)) => DynTensor::F64(g.cast()),
                (_, g) => g.clone(),
            };
            sink(0, g, false)
        }
        NodeOp::Tensor(op) => match dy {
            DynTensor::F32(dy) => typed(op, inputs, output, dy, needs, hints, sink),
            DynTensor::F64(dy) => typed(op, inputs, output, dy, needs, hints, sink),
        },
    }
}

fn typed<T: Element>(
    op: &Op,
    inputs: &[&DynTensor],
    output: &DynTensor,
    dy: &Tensor<T>,
    needs: &InputSet,
    hints: &[Option<&ResolvedMask>],
    sink: &mut Sink<'_>,
) -> Result<()> {
    let mismatch = || Error::InvalidArgument {
        call: "gradient",
        msg: format!(
            "{op:?}: a gradient of dtype {} reached tensors of another dtype",
            T::DTYPE
        ),
    };
    let y = T::from_dyn(output).ok_or_else(mismatch)?;
    let x = |i: usize| T::from_dyn(inputs[i]).ok_or_else(mismatch);
    // the inputs as a slice of typed references: on the stack for the
    // usual one to three inputs
    let ctx = |x| Ctx {
        x,
        y,
        dy,
        needs,
        hints,
        premasked: RefCell::new(InputSet::default()),
    };
    match inputs.len() {
        1 => apply(op, &ctx(&[x(0)?]), sink),
        2 => apply(op, &ctx(&[x(0)?, x(1)?]), sink),
        3 => apply(op, &ctx(&[x(0)?, x(1)?, x(2)?]), sink),
        n => {
            let xs = (0..n).map(x).collect::<Result<Vec<_>>>()?;
            apply(op, &ctx(&xs), sink)
        }
    }
}

/// Runs the rule of `op` and hands the needed gradients to `sink`.
fn apply<T: Element>(op: &Op, ctx: &Ctx<'_, T>, sink: &mut Sink<'_>) -> Result<()> {
    let (x, needs) = (ctx.x, ctx.needs);
    let grads = match op {
        Op::Binary(b) => arith::binary(*b, ctx)?,
        Op::Select => arith::select(ctx)?,
        Op::Unary(u) => unary::backward(*u, ctx)?,
        Op::Reduce(r) => reduce::backward(r, ctx)?,
        Op::Nn(n) => nn::backward(n, ctx)?,
        Op::Layout(l) => layout::backward(l, ctx)?,
        Op::Index(i) => index::backward(i, ctx)?,
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::backward(*transpose_a, *transpose_b, ctx)?,
        Op::Dense { activation } => dense::backward(*activation, ctx)?,
        Op::Conv(c) => conv::backward(c, ctx)?,
        Op::Pool(p) => pool::backward(p, ctx)?,
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
            .zip(x)
            .all(|(g, x)| g.as_ref().is_none_or(|g| g.shape() == x.shape())),
        "rule for {op:?} returned a gradient of the wrong shape"
    );
    let premasked = ctx.premasked.borrow();
    for (k, g) in grads.into_iter().enumerate() {
        if let (true, Some(g)) = (needs.contains(k), g) {
            sink(k, T::into_dyn(g), premasked.contains(k))?;
        }
    }
    Ok(())
}

fn check_custom(name: &str, inputs: &[&DynTensor], grads: &[Option<DynTensor>]) -> Result<()> {
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
        if let Some(g) = g
            && (g.shape() != x.shape() || g.dtype() != x.dtype())
        {
            return Err(err(format!(
                "gradient {i} is {} {}, its input is {} {}",
                g.dtype(),
                g.shape(),
                x.dtype(),
                x.shape()
            )));
        }
    }
    Ok(())
}
