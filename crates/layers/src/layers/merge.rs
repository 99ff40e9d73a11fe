//! Keras' elementwise merge layers, one family: `Add` and `Multiply` take
//! one or more inputs of one batch size, broadcast the other axes (equal
//! or 1, aligned on the right; a lower-rank input gets size-1 axes after
//! its batch axis) and fold one binary op over them.

use rime_tensor::{Element, PartialShape, Tensor};
use serde::{Deserialize, Serialize};

use super::common::shapes_of;
use crate::{CallContext, Layer, LayerBase, Result};

/// The constructor arguments of a merge layer (only the name).
///
/// ```
/// use rime_layers::layers::MergeConfig;
/// let c: MergeConfig = serde_json::from_str(r#"{"name": "m"}"#).unwrap();
/// assert_eq!(c.name.as_deref(), Some("m"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MergeConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
}

/// `Add`'s config.
pub type AddConfig = MergeConfig;
/// `Multiply`'s config.
pub type MultiplyConfig = MergeConfig;

macro_rules! merge_layer {
    ($ty:ident, $op:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty<T: Element = f32> {
            base: LayerBase<T>,
            config: MergeConfig,
        }

        impl<T: Element> Default for $ty<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T: Element> $ty<T> {
            /// A layer with an automatic name.
            pub fn new() -> Self {
                Self::from_config(MergeConfig::default())
            }

            /// From a config (always valid).
            pub fn from_config(config: MergeConfig) -> Self {
                let base = LayerBase::new(stringify!($ty), config.name.clone());
                base.mark_built();
                $ty { base, config }
            }

            /// The config.
            pub fn config(&self) -> &MergeConfig {
                &self.config
            }
        }

        impl<T: Element> Layer<T> for $ty<T> {
            fn base(&self) -> &LayerBase<T> {
                &self.base
            }
            fn class_name(&self) -> &'static str {
                stringify!($ty)
            }
            fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
                Ok(vec![merge(&self.base, inputs, |a, b| a.$op(b))?])
            }
            fn compute_output_shape(
                &self,
                input_shapes: &[PartialShape],
            ) -> Result<Vec<PartialShape>> {
                Ok(vec![merge_output_shape(&self.base, input_shapes)?])
            }
            fn get_config(&self) -> serde_json::Value {
                let mut c = self.config.clone();
                c.name = Some(self.base.name().to_string());
                serde_json::to_value(c).expect("configs serialize")
            }
        }

        layer_builders!($ty);
    };
}

merge_layer!(
    Add,
    add,
    "Keras' `Add` merge layer: `x1 + x2 + ...` over one or more inputs (see the module docs for the shapes).\n\n```\nuse rime_layers::{Add, Layer};\nuse rime_tensor::Tensor;\nlet merge = Add::<f32>::new();\nlet a = Tensor::from_vec(vec![1.0, 2.0], [2, 1])?;\nlet b = Tensor::from_vec(vec![3.0, 5.0], [2, 1])?;\nassert_eq!(merge.call_many(&[a.clone(), b], false)?[0].to_vec(), vec![4.0, 7.0]);\n// [2, 1] and [2, 3, 1] broadcast to [2, 3, 1]\nassert_eq!(merge.call_many(&[a.clone(), Tensor::ones([2, 3, 1])?], false)?[0].shape(), &[2, 3, 1]);\nassert!(merge.call_many(&[a, Tensor::ones([3, 1])?], false).is_err()); // batch sizes differ\n# Ok::<(), rime_layers::Error>(())\n```"
);
merge_layer!(
    Multiply,
    mul,
    "Keras' `Multiply` merge layer: `x1 · x2 · ...` over one or more inputs (see the module docs for the shapes).\n\n```\nuse rime_layers::{Layer, Multiply};\nuse rime_tensor::Tensor;\nlet merge = Multiply::<f32>::new();\nlet a = Tensor::from_vec(vec![1.0, 2.0], [2, 1])?;\nlet b = Tensor::from_vec(vec![3.0, 5.0], [2, 1])?;\nassert_eq!(merge.call_many(&[a, b], false)?[0].to_vec(), vec![3.0, 10.0]);\n# Ok::<(), rime_layers::Error>(())\n```"
);

/// The output shape of Keras' elementwise merge layers (`Add`,
/// `Multiply`): at least one input, each of rank >= 1, one batch size, and
/// the non-batch axes aligned on the right and broadcast where one of them
/// is 1. An axis unknown (`None`) in any input is unknown in the output
/// (Keras).
fn merge_output_shape<T: Element>(
    base: &LayerBase<T>,
    shapes: &[PartialShape],
) -> Result<PartialShape> {
    if shapes.is_empty() {
        return Err(base.bad_input(shapes, "a merge layer needs at least one input"));
    }
    if shapes.iter().any(|s| s.rank() == 0) {
        return Err(base.bad_input(shapes, "every input needs a batch axis (rank >= 1)"));
    }
    let mut batch = None;
    for b in shapes.iter().filter_map(|s| s[0]) {
        if batch.is_some_and(|a| a != b) {
            return Err(base.bad_input(shapes, "inputs have different batch sizes"));
        }
        batch = Some(b);
    }
    // the non-batch axes, right-aligned
    let mut out: Vec<Option<usize>> = shapes[0][1..].to_vec();
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
                (None, _) | (_, None) => None,
                (Some(1), j) => j,
                (i, Some(1)) => i,
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
    Ok(PartialShape::from(dims))
}

/// Keras' merge: checks the shapes, gives lower-rank inputs size-1 axes
/// after the batch axis, then folds `op` over the inputs (broadcasting).
fn merge<T: Element>(
    base: &LayerBase<T>,
    inputs: &[Tensor<T>],
    op: impl Fn(&Tensor<T>, &Tensor<T>) -> rime_tensor::Result<Tensor<T>>,
) -> Result<Tensor<T>> {
    let shapes: Vec<PartialShape> = shapes_of(inputs).iter().map(Into::into).collect();
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
