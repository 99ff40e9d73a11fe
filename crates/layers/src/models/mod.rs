//! Models: [`Sequential`], the functional [`Model`], their `summary`,
//! [`clone_model`], and weights files.

pub(crate) mod functional;
mod io;
pub(crate) mod sequential;
mod summary;

pub use functional::{Input, Model, SymbolicTensor, call_symbolic};
pub use io::{load_weights, save_weights};
pub use sequential::Sequential;
pub use summary::summary;

use std::sync::Arc;

use rime_tensor::Element;

use crate::layer::LayerRef;
use crate::{Layer, Result};

/// A layer value or a shared handle to one, as `add`/`apply` take them. A
/// value is moved into a new handle; an `Arc` is shared.
pub trait IntoLayerRef<T: Element> {
    /// The shared handle.
    fn into_layer_ref(self) -> LayerRef<T>;
}

impl<T: Element, L: Layer<T> + 'static> IntoLayerRef<T> for L {
    fn into_layer_ref(self) -> LayerRef<T> {
        // an `Arc<dyn Layer>` passed in is shared as is, not wrapped again
        let any: Box<dyn std::any::Any> = Box::new(self);
        match any.downcast::<LayerRef<T>>() {
            Ok(shared) => *shared,
            Err(any) => Arc::new(*any.downcast::<L>().expect("the value is an L")),
        }
    }
}

/// A copy of a model (or any layer) with the same structure and fresh
/// weights (Keras' `clone_model`), keeping the `trainable` flags of the
/// model, its layers and its variables, its masks and its weight ties. Copy weights with
/// `copy.set_weights(&model.get_weights())`.
///
/// ```
/// use rime_layers::{clone_model, Dense, Layer, Sequential};
/// use rime_tensor::Tensor;
/// let model = Sequential::<f32>::new().add(Dense::new(3)).with_input_shape([2])?;
/// let copy = clone_model(&model)?;
/// let x = Tensor::ones([1, 2])?;
/// assert_ne!(model.call(&x, false)?, copy.call(&x, false)?);
/// copy.set_weights(&model.get_weights())?;
/// assert_eq!(model.call(&x, false)?, copy.call(&x, false)?);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn clone_model<T: Element>(model: &dyn Layer<T>) -> Result<LayerRef<T>> {
    let copy = model.fresh()?;
    // Keras keeps `trainable` through get_config; masks decide training too
    crate::saving::copy_trainability(model, &*copy)?;
    Ok(copy)
}
