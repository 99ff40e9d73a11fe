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

/// The output shape of a layer that resizes the height and width of one
/// `[batch, h, w, channels]` input (`UpSampling2D`, `ZeroPadding2D`);
/// `resize` gives the new `(h, w)`, `None` when it overflows.
pub(crate) fn resize_hw<T: Element>(
    base: &LayerBase<T>,
    input_shapes: &[Shape],
    what: &str,
    resize: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Result<Vec<Shape>> {
    match input_shapes {
        [s] if s.rank() == 4 => match resize(s[1], s[2]) {
            Some((h, w)) => Ok(vec![Shape::from([s[0], h, w, s[3]])]),
            None => Err(base.bad_input(input_shapes, format!("{what} overflows the input size"))),
        },
        _ => Err(base.bad_input(
            input_shapes,
            "expects one input of rank 4 (batch, h, w, channels)",
        )),
    }
}
