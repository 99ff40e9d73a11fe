//! `Concatenate`: joins its inputs along one axis.

use std::ops::Not;

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{resolve_axis, shapes_of};
use crate::{CallContext, Layer, LayerBase, Result};

/// Concatenate's constructor arguments (Keras names and defaults).
///
/// ```
/// use rime_layers::ConcatenateConfig;
/// let c: ConcatenateConfig = serde_json::from_str("{}").unwrap();
/// assert_eq!(c.axis, -1);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConcatenateConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// The axis joined along (default -1).
    pub axis: isize,
}

impl Default for ConcatenateConfig {
    fn default() -> Self {
        ConcatenateConfig {
            name: None,
            axis: -1,
        }
    }
}

/// Keras' Concatenate: joins one or more inputs of equal rank along `axis`;
/// every other axis must match.
///
/// ```
/// use rime_layers::{Concatenate, Layer};
/// use rime_tensor::Tensor;
/// let cat = Concatenate::<f32>::new();
/// let y = cat.call_many(&[Tensor::ones([2, 3])?, Tensor::zeros([2, 1])?], false)?;
/// assert_eq!(y[0].shape(), &[2, 4]);
/// assert!(cat.call_many(&[Tensor::ones([2, 3])?, Tensor::zeros([3, 1])?], false).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Concatenate<T: Element = f32> {
    base: LayerBase<T>,
    config: ConcatenateConfig,
}

impl<T: Element> Default for Concatenate<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Concatenate<T> {
    /// Joins along the last axis.
    pub fn new() -> Self {
        Self::from_config(ConcatenateConfig::default())
    }

    /// From a config (the axis is checked against the inputs).
    pub fn from_config(config: ConcatenateConfig) -> Self {
        let base = LayerBase::new("Concatenate", config.name.clone());
        base.mark_built();
        Concatenate { base, config }
    }

    /// Sets the axis.
    pub fn axis(mut self, axis: isize) -> Self {
        self.config.axis = axis;
        self
    }

    /// The config.
    pub fn config(&self) -> &ConcatenateConfig {
        &self.config
    }

    /// The resolved axis, after checking the shapes fit together.
    /// Unknown (`None`) dimensions fit any size.
    fn check(&self, shapes: &[PartialShape]) -> Result<usize> {
        let Some(first) = shapes.first() else {
            return Err(self.base.bad_input(shapes, "needs at least one input"));
        };
        if shapes.iter().any(|s| s.rank() != first.rank()) {
            return Err(self
                .base
                .bad_input(shapes, "inputs must have the same rank"));
        }
        let axis = resolve_axis(&self.base, shapes, self.config.axis, first.rank())?;
        let fits = |s: &PartialShape| {
            (0..s.rank()).all(|i| {
                i == axis || matches!((s[i], first[i]), (Some(a), Some(b)) if a != b).not()
            })
        };
        if !shapes.iter().all(fits) {
            return Err(self.base.bad_input(
                shapes,
                format!("inputs must match on every axis but the concatenation axis {axis}"),
            ));
        }
        Ok(axis)
    }
}

impl<T: Element> Layer<T> for Concatenate<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Concatenate"
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let shapes: Vec<PartialShape> = shapes_of(inputs).iter().map(Into::into).collect();
        let axis = self.check(&shapes)?;
        let refs: Vec<&Tensor<T>> = inputs.iter().collect();
        Ok(vec![Tensor::concat(&refs, axis as isize)?])
    }

    /// The concatenation axis is the sum of the inputs' sizes (unknown if
    /// one is); another axis takes the size any input knows.
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        let axis = self.check(input_shapes)?;
        let dims = (0..input_shapes[0].rank()).map(|i| {
            if i == axis {
                input_shapes
                    .iter()
                    .try_fold(0usize, |acc, s| acc.checked_add(s[i]?))
            } else {
                input_shapes.iter().find_map(|s| s[i])
            }
        });
        Ok(vec![PartialShape::new(dims)])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Concatenate);
