//! Small helpers the layer files share: axis resolution with errors naming
//! the layer, constraint boxing, config validation, Keras' merge shapes.

use std::sync::Arc;

use rime_tape::Constraint;
use rime_tensor::{Element, PartialShape, Shape, Tensor};

use crate::constraints::WeightConstraint;
use crate::regularizers::Regularizer;
use crate::{Error, LayerBase, Result};

/// The shapes of some tensors.
pub(crate) fn shapes_of<T: Element>(inputs: &[Tensor<T>]) -> Vec<Shape> {
    inputs.iter().map(|t| t.shape().clone()).collect()
}

/// Something with a rank: a [`Shape`] (a call's inputs) or a
/// [`PartialShape`] (a build's).
pub(crate) trait Ranked {
    fn rank(&self) -> usize;
    fn partial(&self) -> PartialShape;
}

impl Ranked for Shape {
    fn rank(&self) -> usize {
        Shape::rank(self)
    }
    fn partial(&self) -> PartialShape {
        self.into()
    }
}

impl Ranked for PartialShape {
    fn rank(&self) -> usize {
        PartialShape::rank(self)
    }
    fn partial(&self) -> PartialShape {
        self.clone()
    }
}

fn partials<S: Ranked>(shapes: &[S]) -> Vec<PartialShape> {
    shapes.iter().map(Ranked::partial).collect()
}

/// Resolves a possibly negative `axis` against `rank`, or an input error
/// naming the layer.
pub(crate) fn resolve_axis<T: Element, S: Ranked>(
    base: &LayerBase<T>,
    shapes: &[S],
    axis: isize,
    rank: usize,
) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(base.bad_input(
            &partials(shapes),
            format!("axis {axis} is out of range for inputs of rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// The single input shape of a one-input layer, of rank at least `min_rank`.
pub(crate) fn single_shape<'a, T: Element, S: Ranked>(
    base: &LayerBase<T>,
    shapes: &'a [S],
    min_rank: usize,
) -> Result<&'a S> {
    match shapes {
        [s] if s.rank() >= min_rank => Ok(s),
        [s] => Err(base.bad_input(
            &partials(shapes),
            format!(
                "expects an input of rank >= {min_rank}, got rank {}",
                s.rank()
            ),
        )),
        _ => Err(base.bad_input(
            &partials(shapes),
            format!("expects one input, got {}", shapes.len()),
        )),
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
/// `[batch, h, w, channels]` input (`UpSampling2D`, `ZeroPadding2D`):
/// `resize` gives the new size of one of them, `None` when it overflows.
/// An unknown height or width stays unknown.
pub(crate) fn resize_hw<T: Element>(
    base: &LayerBase<T>,
    input_shapes: &[PartialShape],
    what: &str,
    resize: impl Fn(usize, usize) -> Option<usize>,
) -> Result<Vec<PartialShape>> {
    match input_shapes {
        [s] if s.rank() == 4 => {
            let axis = |i: usize| match s[i] {
                None => Ok(None),
                Some(d) => resize(i - 1, d).map(Some).ok_or_else(|| {
                    base.bad_input(input_shapes, format!("{what} overflows the input size"))
                }),
            };
            Ok(vec![PartialShape::new([s[0], axis(1)?, axis(2)?, s[3]])])
        }
        _ => Err(base.bad_input(
            input_shapes,
            "expects one input of rank 4 (batch, h, w, channels)",
        )),
    }
}

/// The concrete shape of a `compute_output_shape` result for inputs whose
/// shapes are all known (as in `call_with`): every built-in layer's output
/// is then known too; an unknown one is reported, not unwrapped.
pub(crate) fn known_output<T: Element>(
    base: &LayerBase<T>,
    inputs: &[Shape],
    out: PartialShape,
) -> Result<Shape> {
    out.known().ok_or_else(|| {
        base.bad_input(
            inputs,
            format!("output shape {out} is not fully known for known input shapes"),
        )
    })
}

/// The number of elements in one example (every axis but the first):
/// `None` if one of them is unknown; an error naming the layer if it
/// overflows.
pub(crate) fn example_numel<T: Element>(
    base: &LayerBase<T>,
    shapes: &[PartialShape],
    s: &PartialShape,
) -> Result<Option<usize>> {
    let example = s.example();
    if !example.is_fully_known() {
        return Ok(None);
    }
    example
        .numel()
        .map(Some)
        .ok_or_else(|| base.bad_input(shapes, "the example size overflows"))
}
