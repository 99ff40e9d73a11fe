//! [`ModelData`]: what a model is fed and what its outputs are compared
//! with — float values, or integers (token ids, class indices) as they come
//! from files. [`Target`] is its name on the loss side.

use rime_tensor::{Element, Shape, Tensor};

use crate::{Error, Result};

/// A model input or target: float values of the model's type (features,
/// regression targets, one-hot rows), or integers (`i64`, PyTorch's index
/// type; `i32` widens exactly): token ids for an `Embedding`, class
/// indices for the sparse losses and metrics.
///
/// As a **target** ([`Target`]) integers are read directly by the sparse
/// losses and metrics; every other loss converts them to the model's float
/// type first (as Keras casts `y_true` to `y_pred`'s dtype). As an
/// **input** ([`Layer::apply_data`](crate::Layer::apply_data)) integer ids
/// reach an `Embedding` as integers, never through floats (an `f32` holds
/// integers exactly only up to 2^24); any other layer fed integers casts
/// them to its float type, as Keras does.
///
/// Datasets hold their features and targets as `ModelData`, so ids and
/// labels read from IDX or CSV files stay integers until a layer or a loss
/// reads them. `From` converts float, `i64` and `i32` tensors.
///
/// ```
/// use rime_layers::Target;
/// use rime_tensor::Tensor;
/// let labels: Target = Tensor::vector(vec![2i64, 0, 1]).into();
/// assert_eq!(labels.dims(), &[3]);
/// assert_eq!(labels.to_float()?.to_vec(), vec![2.0f32, 0.0, 1.0]);
/// let values: Target = Tensor::vector(vec![0.5f32]).into();
/// assert!(values.as_int().is_none());
/// # Ok::<(), rime_layers::Error>(())
/// ```
///
/// Integer tensors are never differentiable: a gradient tape records no op
/// on them, and asking for a gradient with respect to one, or watching one,
/// does not compile (the tape's sources are float tensors and variables).
/// The gradient flows to the float values that integer ids select:
///
/// ```compile_fail
/// use rime_tape::GradientTape;
/// use rime_tensor::Tensor;
/// let ids = Tensor::vector(vec![1i64, 0]);
/// let tape = GradientTape::new();
/// tape.watch(&ids); // error: `Tensor<i64>` is not `Watchable`
/// ```
///
/// ```compile_fail
/// use rime_tape::GradientTape;
/// use rime_tensor::Tensor;
/// let table = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
/// let ids = Tensor::vector(vec![1i64, 0]);
/// let tape = GradientTape::new();
/// tape.watch(&table);
/// let y = table.gather(0, &ids).unwrap().sum_all();
/// tape.gradient(&y, &[&ids]); // error: `Tensor<i64>` is not a source of an f32 gradient
/// ```
///
/// ```
/// use rime_tape::GradientTape;
/// use rime_tensor::Tensor;
/// let table = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
/// let ids = Tensor::vector(vec![1i64, 1]);
/// let tape = GradientTape::new();
/// tape.watch(&table);
/// let y = table.gather(0, &ids)?.sum_all();
/// assert_eq!(tape.gradient_of(&y, &table)?.to_vec(), vec![0.0, 0.0, 2.0, 2.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ModelData<T: Element = f32> {
    /// Float values of the model's type.
    Float(Tensor<T>),
    /// Integers: class indices, token ids.
    Int(Tensor<i64>),
}

/// A target: [`ModelData`] on the loss side (float values or integer class
/// indices).
pub type Target<T = f32> = ModelData<T>;

impl<T: Element> ModelData<T> {
    /// The shape.
    pub fn shape(&self) -> &Shape {
        match self {
            Target::Float(t) => t.shape(),
            Target::Int(t) => t.shape(),
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    /// The float tensor, if this is one.
    pub fn as_float(&self) -> Option<&Tensor<T>> {
        match self {
            Target::Float(t) => Some(t),
            Target::Int(_) => None,
        }
    }

    /// The integer tensor, if this is one.
    pub fn as_int(&self) -> Option<&Tensor<i64>> {
        match self {
            Target::Int(t) => Some(t),
            Target::Float(_) => None,
        }
    }

    /// The values as the model's float type (integers rounded to nearest,
    /// exact up to 2^24 for `f32`).
    pub fn to_float(&self) -> Result<Tensor<T>> {
        Ok(match self {
            Target::Float(t) => t.clone(),
            Target::Int(t) => t.to_dtype::<T>()?,
        })
    }

    /// The samples at `indices` along axis 0 (a batch).
    pub fn index_select(&self, indices: &[usize]) -> Result<Self> {
        Ok(match self {
            Target::Float(t) => Target::Float(t.index_select(0, indices)?),
            Target::Int(t) => Target::Int(t.index_select(0, indices)?),
        })
    }

    /// Joins targets of one kind along axis 0.
    pub fn concat(parts: &[&Target<T>]) -> Result<Self> {
        let floats: Option<Vec<&Tensor<T>>> = parts.iter().map(|p| p.as_float()).collect();
        if let Some(f) = floats {
            return Ok(Target::Float(Tensor::concat(&f, 0)?));
        }
        let ints: Option<Vec<&Tensor<i64>>> = parts.iter().map(|p| p.as_int()).collect();
        match ints {
            Some(i) => Ok(Target::Int(Tensor::concat(&i, 0)?)),
            None => Err(Error::InvalidArgument {
                what: "Target::concat".into(),
                msg: "cannot join float and integer targets".into(),
            }),
        }
    }
}

impl<T: Element> From<Tensor<T>> for Target<T> {
    fn from(t: Tensor<T>) -> Self {
        Target::Float(t)
    }
}

impl<T: Element> From<&Tensor<T>> for Target<T> {
    fn from(t: &Tensor<T>) -> Self {
        Target::Float(t.clone())
    }
}

// integer tensors per float type: a blanket `impl<T> From<Tensor<i64>> for
// Target<T>` would overlap the one above as far as coherence can tell
macro_rules! int_targets {
    ($t:ty) => {
        impl From<Tensor<i64>> for Target<$t> {
            fn from(t: Tensor<i64>) -> Self {
                Target::Int(t)
            }
        }

        impl From<&Tensor<i64>> for Target<$t> {
            fn from(t: &Tensor<i64>) -> Self {
                Target::Int(t.clone())
            }
        }

        /// `i32` ids and labels widen to `i64` exactly.
        impl From<Tensor<i32>> for Target<$t> {
            fn from(t: Tensor<i32>) -> Self {
                Self::from(&t)
            }
        }

        /// `i32` ids and labels widen to `i64` exactly.
        impl From<&Tensor<i32>> for Target<$t> {
            fn from(t: &Tensor<i32>) -> Self {
                let wide: Vec<i64> = t.as_slice().iter().map(|&v| i64::from(v)).collect();
                // same shape, same length
                Target::Int(Tensor::from_vec(wide, t.shape().clone()).expect("same shape"))
            }
        }
    };
}
int_targets!(f32);
int_targets!(f64);

impl<T: Element> From<&Target<T>> for Target<T> {
    fn from(t: &Target<T>) -> Self {
        t.clone()
    }
}
