//! `stop_gradient` and user-defined gradients.

use std::rc::Rc;
use std::sync::Arc;

use rime_tensor::{DynTensor, Element, Tensor};
use smallvec::SmallVec;

use crate::tape::{self, no_record};
use crate::{Error, Result};

/// The same values, cut off from every tape: no gradient flows through it.
///
/// ```
/// use rime_tape::{stop_gradient, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::vector(vec![3.0f64]);
/// let tape = GradientTape::new();
/// tape.watch(&x);
/// // d/dx [x · stop(x)] = stop(x) = 3
/// let y = x.mul(&stop_gradient(&x))?.sum_all();
/// assert_eq!(tape.gradient(&y, &[&x])?[0].as_ref().unwrap().to_vec(), vec![3.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
pub fn stop_gradient<T: Element>(x: &Tensor<T>) -> Tensor<T> {
    x.detach()
}

/// An op with a hand-written gradient (TensorFlow's `tf.custom_gradient`).
///
/// `forward` computes the output from `inputs` without being recorded;
/// `backward(inputs, output, dy)` returns one gradient (or `None`) per
/// input. The op is recorded on every tape that tracks an input, and its
/// backward runs like any rule: written with tensor ops, it is recorded by
/// outer tapes, so it can have higher derivatives of its own.
///
/// ```
/// use rime_tape::{custom_gradient, GradientTape};
/// use rime_tensor::Tensor;
/// // identity forward, gradient clipped to [-1, 1] backward
/// let x = Tensor::vector(vec![2.0f32]);
/// let tape = GradientTape::new();
/// tape.watch(&x);
/// let y = custom_gradient("clip_grad", &[&x], |xs| Ok(xs[0].clone()), |_, _, dy| {
///     Ok(vec![Some(dy.clamp(-1.0, 1.0)?)])
/// })?;
/// let loss = y.mul_scalar(5.0).sum_all();
/// assert_eq!(tape.gradient(&loss, &[&x])?[0].as_ref().unwrap().to_vec(), vec![1.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
pub fn custom_gradient<T, F, B>(
    name: &str,
    inputs: &[&Tensor<T>],
    forward: F,
    backward: B,
) -> Result<Tensor<T>>
where
    T: Element,
    F: FnOnce(&[Tensor<T>]) -> Result<Tensor<T>>,
    B: Fn(&[Tensor<T>], &Tensor<T>, &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> + 'static,
{
    let owned: Vec<Tensor<T>> = inputs.iter().map(|&t| t.clone()).collect();
    let output = no_record(|| forward(&owned))?.detach();
    if rime_tensor::record::is_recording() {
        let name: Arc<str> = name.into();
        let err_name = name.clone();
        let erased = move |xs: &[&DynTensor],
                           y: &DynTensor,
                           dy: &DynTensor|
              -> Result<SmallVec<[Option<DynTensor>; 3]>> {
            let mismatch = || Error::CustomGradient {
                name: err_name.to_string(),
                msg: "received tensors of another dtype".into(),
            };
            let xs: Vec<Tensor<T>> = xs
                .iter()
                .map(|x| T::from_dyn(x).cloned().ok_or_else(mismatch))
                .collect::<Result<_>>()?;
            let y = T::from_dyn(y).ok_or_else(mismatch)?;
            let dy = T::from_dyn(dy).ok_or_else(mismatch)?;
            Ok(backward(&xs, y, dy)?
                .into_iter()
                .map(|g| g.map(T::into_dyn))
                .collect())
        };
        let inputs: Vec<DynTensor> = owned.into_iter().map(T::into_dyn).collect();
        tape::record_custom(name, Rc::new(erased), &inputs, T::into_dyn(output.clone()));
    }
    Ok(output)
}
