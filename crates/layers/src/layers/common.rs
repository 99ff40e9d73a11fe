//! Small helpers the layer files share: axis resolution with errors naming
//! the layer, constraint boxing, config validation, Keras' merge shapes.

use std::sync::Arc;

use rime_tape::Constraint;
use rime_tensor::{Element, Shape, Tensor};

use crate::constraints::WeightConstraint;
use crate::regularizers::Regularizer;
use crate::{Error, LayerBase, Result};

/// The shapes of some tensors.
pub(crate) fn shapes_of<T: Element>(inputs: &[Tensor<T>]) -> Vec<Shape> {
    inputs.iter().map(|t| t.shape().clone()).collect()
}

/// Resolves a possibly negative `axis` against `rank`, or an input error
/// naming the layer.
pub(crate) fn resolve_axis<T: Element>(
    base: &LayerBase<T>,
    shapes: &[Shape],
    axis: isize,
    rank: usize,
) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(base.bad_input(
            shapes,
            format!("axis {axis} is out of range for inputs of rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// The single input shape of a one-input layer, of rank at least `min_rank`.
pub(crate) fn single_shape<'a, T: Element>(
    base: &LayerBase<T>,
    shapes: &'a [Shape],
    min_rank: usize,
) -> Result<&'a Shape> {
    match shapes {
        [s] if s.rank() >= min_rank => Ok(s),
        [s] => Err(base.bad_input(
            shapes,
            format!(
                "expects an input of rank >= {min_rank}, got rank {}",
                s.rank()
            ),
        )),
        _ => Err(base.bad_input(shapes, format!("expects one input, got {}", shapes.len()))),
    }
}

/// A config constraint as the variable's constraint object.
pub(crate) fn constraint<T: Element>(
    c: Option<WeightConstraint>,
) -> Option<Arc<dyn Constraint<T>>> {
    c.map(|c| Arc::new(c) as Arc<dyn Constraint<T>>)
}

/// Validates every regularizer given.
pub(crate) fn validate_regularizers<'a>(
    rs: impl IntoIterator<Item = &'a Option<Regularizer>>,
) -> Result<()> {
    rs.into_iter().flatten().try_for_each(Regularizer::validate)
}

/// The largest size (units, table dimensions, reshape targets) a layer
/// config may give: 2^48, beyond any buffer this library could allocate, so
/// anything larger in an (untrusted) config is rejected when the layer is
/// made rather than when its weights are sized.
pub(crate) const MAX_SIZE: usize = 1 << 48;

/// `value` in `1..=MAX_SIZE`, or an error naming the class and field.
pub(crate) fn check_size(class: &str, field: &str, value: usize) -> Result<()> {
    if value == 0 || value > MAX_SIZE {
        return Err(invalid(
            class,
            format!("{field} must be in 1..={MAX_SIZE}, got {value}"),
        ));
    }
    Ok(())
}

/// An invalid constructor argument of a layer class.
pub(crate) fn invalid(class: &str, msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        what: class.to_string(),
        msg: msg.into(),
    }
}

/// The output shape of Keras' elementwise merge layers (`Add`,
/// `Multiply`): at least one input, each of rank >= 1, one batch size, and
/// the non-batch axes aligned on the right and broadcast where one of them
/// is 1.
pub(crate) fn merge_output_shape<T: Element>(
    base: &LayerBase<T>,
    shapes: &[Shape],
) -> Result<Shape> {
    if shapes.is_empty() {
        return Err(base.bad_input(shapes, "a merge layer needs at least one input"));
    }
    if shapes.iter().any(|s| s.rank() == 0) {
        return Err(base.bad_input(shapes, "every input needs a batch axis (rank >= 1)"));
    }
    let batch = shapes[0][0];
    if shapes.iter().any(|s| s[0] != batch) {
        return Err(base.bad_input(shapes, "inputs have different batch sizes"));
    }
    // the non-batch axes, right-aligned
    let mut out: Vec<usize> = shapes[0][1..].to_vec();
    for s in &shapes[1..] {
        let other = &s[1..];
        let (long, short) = if other.len() > out.len() {
            (other.to_vec(), out.clone())
        } else {
            (out.clone(), other.to_vec())
        };
        let offset = long.len() - short.len();
        let mut merged = long.clone();
        for (k, &j) in short.iter().enumerate() {
            let i = long[offset + k];
            merged[offset + k] = match (i, j) {
                (1, j) => j,
                (i, 1) => i,
                (i, j) if i == j => i,
                _ => {
                    return Err(base.bad_input(
                        shapes,
                        "inputs have incompatible shapes (non-batch axes must be equal or 1)",
                    ));
                }
            };
        }
        out = merged;
    }
    let mut dims = vec![batch];
    dims.extend(out);
    Ok(Shape::from(dims))
}

/// Keras' merge: checks the shapes, gives lower-rank inputs size-1 axes
/// after the batch axis, then folds `op` over the inputs (broadcasting).
pub(crate) fn merge<T: Element>(
    base: &LayerBase<T>,
    inputs: &[Tensor<T>],
    op: impl Fn(&Tensor<T>, &Tensor<T>) -> rime_tensor::Result<Tensor<T>>,
) -> Result<Tensor<T>> {
    let shapes = shapes_of(inputs);
    let out = merge_output_shape(base, &shapes)?;
    let rank = out.rank();
    let mut acc: Option<Tensor<T>> = None;
    for x in inputs {
        let x = if x.rank() < rank {
            let mut dims = vec![x.dims()[0]];
            dims.extend(std::iter::repeat_n(1, rank - x.rank()));
            dims.extend_from_slice(&x.dims()[1..]);
            x.reshape(dims)?
        } else {
            x.clone()
        };
        acc = Some(match acc {
            None => x,
            Some(a) => op(&a, &x)?,
        });
    }
    acc.ok_or_else(|| base.bad_input(&shapes, "a merge layer needs at least one input"))
}

/// A config error found when the layer is built (constructors do not
/// fail), reworded to name the layer: `layer `pool` (MaxPooling2D)`.
pub(crate) fn at_build<T: Element>(base: &LayerBase<T>, e: Error) -> Error {
    match e {
        Error::InvalidArgument { what, msg } => Error::InvalidArgument {
            what: format!("layer `{}` ({what})", base.name()),
            msg,
        },
        e => e,
    }
}
