//! `Concatenate`: joins its inputs along one axis.

use rime_tensor::{Element, Shape, Tensor};
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
    fn check(&self, shapes: &[Shape]) -> Result<usize> {
        let Some(first) = shapes.first() else {
            return Err(self.base.bad_input(shapes, "needs at least one input"));
        };
        if shapes.iter().any(|s| s.rank() != first.rank()) {
            return Err(self
                .base
                .bad_input(shapes, "inputs must have the same rank"));
        }
        let axis = resolve_axis(&self.base, shapes, self.config.axis, first.rank())?;
        let fits = |s: &Shape| (0..s.rank()).all(|i| i == axis || s[i] == first[i]);
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
        let axis = self.check(&shapes_of(inputs))?;
        let refs: Vec<&Tensor<T>> = inputs.iter().collect();
        Ok(vec![Tensor::concat(&refs, axis as isize)?])
    }

    fn compute_output_shape(&self, input_shapes: &[Shape]) -> Result<Vec<Shape>> {
        let axis = self.check(input_shapes)?;
        let mut dims = input_shapes[0].dims().to_vec();
        dims[axis] = input_shapes.iter().map(|s| s[axis]).sum();
        Ok(vec![Shape::from(dims)])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Concatenate);
