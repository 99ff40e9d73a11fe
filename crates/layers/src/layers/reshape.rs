//! `Reshape`: a new shape for each example.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::{MAX_SIZE, at_build, example_numel, invalid, known_output, single_shape};
use crate::{CallContext, Layer, LayerBase, Result};

/// Reshape's constructor arguments (Keras names).
///
/// ```
/// use rime_layers::ReshapeConfig;
/// let c: ReshapeConfig = serde_json::from_str(r#"{"target_shape": [3, -1]}"#).unwrap();
/// assert_eq!(c.target_shape, vec![3, -1]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReshapeConfig {
    /// Layer name (None: automatic).
    #[serde(default)]
    pub name: Option<String>,
    /// The shape of each example, without the batch axis; one entry may be
    /// -1 (inferred).
    pub target_shape: Vec<isize>,
}

/// Keras' Reshape: `[batch, ...]` → `[batch, target_shape...]`, with at
/// most one `-1` in `target_shape` inferred from the element count.
///
/// ```
/// use rime_layers::{Layer, Reshape};
/// use rime_tensor::Tensor;
/// let r = Reshape::<f32>::new(vec![-1, 2]);
/// assert_eq!(r.call(&Tensor::zeros([5, 3, 4])?, false)?.shape(), &[5, 6, 2]);
/// assert!(r.call(&Tensor::zeros([5, 3])?, false).is_err()); // 3 is not a multiple of 2
/// assert!(Reshape::<f32>::new(vec![-1, -1]).call(&Tensor::zeros([5, 6])?, false).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Reshape<T: Element = f32> {
    base: LayerBase<T>,
    config: ReshapeConfig,
}

impl<T: Element> Reshape<T> {
    /// Reshapes each example to `target_shape` (no batch axis). An invalid
    /// target is reported when the layer is built.
    pub fn new(target_shape: Vec<isize>) -> Self {
        Reshape {
            base: LayerBase::new("Reshape", None),
            config: ReshapeConfig {
                name: None,
                target_shape,
            },
        }
    }

    /// From a config; errors if an entry is neither positive nor -1, or
    /// there is more than one -1.
    pub fn from_config(config: ReshapeConfig) -> Result<Self> {
        Self::validate(&config)?;
        let base = LayerBase::new("Reshape", config.name.clone());
        Ok(Reshape { base, config })
    }

    fn validate(config: &ReshapeConfig) -> Result<()> {
        let t = &config.target_shape;
        if t.iter().any(|&d| d <= 0 && d != -1) || t.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(invalid(
                "Reshape",
                format!("target_shape entries must be positive, with at most one -1; got {t:?}"),
            ));
        }
        let known = t
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        if known.is_none_or(|k| k > MAX_SIZE) {
            return Err(invalid(
                "Reshape",
                format!("target_shape {t:?} has more than {MAX_SIZE} elements"),
            ));
        }
        Ok(())
    }

    /// The config.
    pub fn config(&self) -> &ReshapeConfig {
        &self.config
    }
}

impl<T: Element> Layer<T> for Reshape<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Reshape"
    }

    fn build(&self, _input_shapes: &[PartialShape]) -> Result<()> {
        Self::validate(&self.config).map_err(|e| at_build(&self.base, e))
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let out = self.compute_output_shape(&[x.shape().into()])?.remove(0);
        let out = known_output(&self.base, &[x.shape().clone()], out)?;
        Ok(vec![x.reshape(out)?])
    }

    /// `(batch, *target_shape)`; the `-1` axis is unknown if the input's
    /// example size is (Keras).
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.build(input_shapes)?;
        let s = single_shape(&self.base, input_shapes, 1)?;
        let t = &self.config.target_shape;
        let known: usize = t.iter().filter(|&&d| d > 0).map(|&d| d as usize).product();
        let inferred = match example_numel(&self.base, input_shapes, s)? {
            None => None,
            Some(n) => {
                let fits = if t.contains(&-1) {
                    known > 0 && n.is_multiple_of(known)
                } else {
                    known == n
                };
                if !fits {
                    return Err(self.base.bad_input(
                        input_shapes,
                        format!("{n} elements per example cannot take the target shape {t:?}"),
                    ));
                }
                Some(n / known.max(1))
            }
        };
        let mut dims = vec![s[0]];
        dims.extend(
            t.iter()
                .map(|&d| if d == -1 { inferred } else { Some(d as usize) }),
        );
        Ok(vec![PartialShape::from(dims)])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Reshape);
