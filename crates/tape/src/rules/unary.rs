//! Rules for `ops/unary.rs`. `x` is the input, `y` the output; rules that
//! can be written from `y` use it (no recomputation).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use rime_tensor::{Element, Tensor, UnaryOp};

use super::{Ctx, Grads, one};
use crate::Result;

pub(super) fn backward<T: Element>(op: UnaryOp, c: &Ctx<'_, T>) -> Result<Grads<T>> {
    let (x, y, dy) = (c.x[0], c.y, c.dy);
    let of = T::of;
    let g = c.grad_if(0, || match op {
        UnaryOp::Neg => Ok(dy.neg()),
        // sign(0) = 0: no gradient at the kink (TensorFlow's choice)
        UnaryOp::Abs => dy.mul(&x.sign()),
        UnaryOp::Exp => dy.mul(y),
        UnaryOp::Ln => dy.div(x),
        UnaryOp::Sqrt => dy.div(&y.mul_scalar(of(2.0))),
        UnaryOp::Square => dy.mul(&x.mul_scalar(of(2.0))),
        UnaryOp::Recip => dy.mul(&y.square()).map(|t| t.neg()),
        UnaryOp::Sin => dy.mul(&x.cos()),
        UnaryOp::Cos => dy.mul(&x.sin()).map(|t| t.neg()),
        UnaryOp::Tanh => dy.mul(&y.square().rsub_scalar(T::one())),
        UnaryOp::Sigmoid => dy.mul(&y.mul(&y.rsub_scalar(T::one()))?),
        // 0 at x = 0, as TensorFlow
        UnaryOp::Relu => dy.relu_grad(x),
        UnaryOp::LeakyRelu { alpha } => {
            let slope = Tensor::select(
                &x.gt_scalar(T::zero()),
                &Tensor::scalar(T::one()),
                &Tensor::scalar(of(alpha)),
            )?;
            dy.mul(&slope)
        }
        // d/dx x Φ(x) = Φ(x) + x φ(x)
        UnaryOp::Gelu => {
            let cdf = x
                .mul_scalar(of(FRAC_1_SQRT_2))
                .erf()
                .add_scalar(T::one())
                .mul_scalar(of(0.5));
            let pdf = x
                .square()
                .mul_scalar(of(-0.5))
                .exp()
                .mul_scalar(of(1.0 / (2.0 * PI).sqrt()));
            dy.mul(&cdf.add(&x.mul(&pdf)?)?)
        }
        UnaryOp::Erf => dy.mul(&x.square().neg().exp().mul_scalar(of(2.0 / PI.sqrt()))),
        UnaryOp::Softplus => dy.mul(&x.sigmoid()),
        // passes inside [min, max], boundaries included (TensorFlow)
        UnaryOp::Clamp { min, max } => {
            let inside = x.ge_scalar(of(min)).mul(&x.le_scalar(of(max)))?;
            dy.mul(&inside)
        }
        UnaryOp::Sign => Ok(Tensor::zeros_like(x)),
    })?;
    Ok(one(g))
}
