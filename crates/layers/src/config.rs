//! Layer configs as serde data, and rebuilding layers from them.
//!
//! `get_config` describes a layer's constructor arguments (Keras'
//! `get_config`); [`layer_from_config`] turns a [`LayerConfig`] back into a
//! layer with fresh weights. Built-in classes are known; a custom layer
//! class is added with [`register_layer`].

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rime_tensor::{DType, Element};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::layer::LayerRef;
use crate::{Error, Layer, Result};

/// A layer's class and constructor arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerConfig {
    /// The class, e.g. `"Dense"`.
    pub class_name: String,
    /// The arguments.
    pub config: serde_json::Value,
}

impl LayerConfig {
    /// The config of a layer.
    ///
    /// ```
    /// use rime_layers::{config::LayerConfig, Dense};
    /// let c = LayerConfig::of(&Dense::<f32>::new(4));
    /// assert_eq!(c.class_name, "Dense");
    /// assert_eq!(c.config["units"], 4);
    /// ```
    pub fn of<T: Element>(layer: &dyn Layer<T>) -> Self {
        LayerConfig {
            class_name: layer.class_name().to_string(),
            config: layer.get_config(),
        }
    }
}

type Constructor<T> = fn(&serde_json::Value) -> Result<LayerRef<T>>;

/// Values registered by (name, dtype), each kept as the type it was
/// registered as and read back as that type: the one registry behind
/// [`register_layer`] (constructors) and `Lambda::register` (closures).
pub(crate) struct Registry {
    entries: Mutex<Option<Entries>>,
}

/// Registered values by (name, dtype), type-erased.
type Entries = HashMap<(String, DType), Box<dyn Any + Send>>;

impl Registry {
    /// An empty registry (for a `static`).
    pub(crate) const fn new() -> Self {
        Registry {
            entries: Mutex::new(None),
        }
    }

    /// Registers `value` under `name` for element type `T`, replacing any
    /// earlier value.
    pub(crate) fn insert<T: Element, V: Any + Send>(&self, name: &str, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get_or_insert_with(HashMap::new)
            .insert((name.to_string(), T::DTYPE), Box::new(value));
    }

    /// The value registered under `name` for `T`, if it is a `V`.
    pub(crate) fn get<T: Element, V: Any + Clone>(&self, name: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .as_ref()?
            .get(&(name.to_string(), T::DTYPE))?
            .downcast_ref::<V>()
            .cloned()
    }
}

static CONSTRUCTORS: Registry = Registry::new();

/// Makes a custom layer class known to [`layer_from_config`] (and so to
/// `clone_model` and model configs).
///
/// ```
/// use rime_layers::config::{layer_from_config, register_layer, LayerConfig};
/// use rime_layers::{CallContext, Layer, LayerBase, LayerRef, Result};
/// use rime_tensor::Tensor;
/// use std::sync::Arc;
///
/// struct Double(LayerBase);
/// impl Layer for Double {
///     fn base(&self) -> &LayerBase { &self.0 }
///     fn class_name(&self) -> &'static str { "Double" }
///     fn call_with(&self, x: &[Tensor], _: CallContext) -> Result<Vec<Tensor>> {
///         Ok(vec![x[0].mul_scalar(2.0)])
///     }
///     fn get_config(&self) -> serde_json::Value { serde_json::json!({}) }
/// }
/// register_layer::<f32>("Double", |_| Ok(Arc::new(Double(LayerBase::new("Double", None))) as LayerRef));
/// let l = layer_from_config::<f32>(&LayerConfig { class_name: "Double".into(), config: serde_json::json!({}) })?;
/// assert_eq!(l.call(&Tensor::vector(vec![1.5]), false)?.to_vec(), vec![3.0]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn register_layer<T: Element>(class_name: &str, constructor: Constructor<T>) {
    CONSTRUCTORS.insert::<T, Constructor<T>>(class_name, constructor);
}

/// Deserializes a built-in layer config.
pub(crate) fn parse<C: DeserializeOwned>(class: &str, v: &serde_json::Value) -> Result<C> {
    serde_json::from_value(v.clone()).map_err(|e| Error::Config {
        class: class.to_string(),
        msg: e.to_string(),
    })
}

/// A new layer (fresh weights) from its config: built-in classes, then
/// classes added with [`register_layer`].
pub fn layer_from_config<T: Element>(cfg: &LayerConfig) -> Result<LayerRef<T>> {
    crate::instances::table::<T>().layer_from_config(cfg)
}

pub(crate) fn layer_from_config_generic<T: Element>(cfg: &LayerConfig) -> Result<LayerRef<T>> {
    let layer = in_layer_scope(|| construct::<T>(cfg))?;
    scope_register(&layer);
    Ok(layer)
}

fn construct<T: Element>(cfg: &LayerConfig) -> Result<LayerRef<T>> {
    if let Some(layer) = builtin::<T>(cfg)? {
        return Ok(layer);
    }
    match CONSTRUCTORS.get::<T, Constructor<T>>(&cfg.class_name) {
        Some(f) => f(&cfg.config),
        None => Err(Error::Config {
            class: cfg.class_name.clone(),
            msg: "unknown layer class; register it with rime_layers::config::register_layer \
                  or implement Layer::fresh"
                .into(),
        }),
    }
}

/// The built-in classes, layers and models, by name (None: not built-in).
fn builtin<T: Element>(cfg: &LayerConfig) -> Result<Option<LayerRef<T>>> {
    use crate::layers::*;
    use crate::models::{functional, sequential};
    let c = &cfg.config;
    let name = cfg.class_name.as_str();
    Ok(Some(match name {
        "Dense" => arc(Dense::<T>::from_config(parse(name, c)?)?),
        "Embedding" => arc(Embedding::<T>::from_config(parse(name, c)?)?),
        "EmbeddingTranspose" => arc(EmbeddingTranspose::<T>::from_config(parse(name, c)?)?),
        "BatchNormalization" => arc(BatchNormalization::<T>::from_config(parse(name, c)?)?),
        "LayerNormalization" => arc(LayerNormalization::<T>::from_config(parse(name, c)?)?),
        "Dropout" => arc(Dropout::<T>::from_config(parse(name, c)?)?),
        "Activation" => arc(ActivationLayer::<T>::from_config(parse(name, c)?)),
        "Flatten" => arc(Flatten::<T>::from_config(parse(name, c)?)),
        "Reshape" => arc(Reshape::<T>::from_config(parse(name, c)?)?),
        "Concatenate" => arc(Concatenate::<T>::from_config(parse(name, c)?)),
        "Add" => arc(Add::<T>::from_config(parse(name, c)?)),
        "Multiply" => arc(Multiply::<T>::from_config(parse(name, c)?)),
        "Lambda" => arc(Lambda::<T>::from_config(parse(name, c)?)?),
        "Conv1D" => arc(Conv1D::<T>::from_config(parse(name, c)?)?),
        "Conv2D" => arc(Conv2D::<T>::from_config(parse(name, c)?)?),
        "Conv2DTranspose" => arc(Conv2DTranspose::<T>::from_config(parse(name, c)?)?),
        "DepthwiseConv2D" => arc(DepthwiseConv2D::<T>::from_config(parse(name, c)?)?),
        "MaxPooling1D" => arc(MaxPooling1D::<T>::from_config(parse(name, c)?)?),
        "MaxPooling2D" => arc(MaxPooling2D::<T>::from_config(parse(name, c)?)?),
        "AveragePooling1D" => arc(AveragePooling1D::<T>::from_config(parse(name, c)?)?),
        "AveragePooling2D" => arc(AveragePooling2D::<T>::from_config(parse(name, c)?)?),
        "GlobalAveragePooling1D" => arc(GlobalAveragePooling1D::<T>::from_config(parse(name, c)?)?),
        "GlobalAveragePooling2D" => arc(GlobalAveragePooling2D::<T>::from_config(parse(name, c)?)?),
        "GlobalMaxPooling1D" => arc(GlobalMaxPooling1D::<T>::from_config(parse(name, c)?)?),
        "GlobalMaxPooling2D" => arc(GlobalMaxPooling2D::<T>::from_config(parse(name, c)?)?),
        "ZeroPadding2D" => arc(ZeroPadding2D::<T>::from_config(parse(name, c)?)?),
        "UpSampling2D" => arc(UpSampling2D::<T>::from_config(parse(name, c)?)?),
        "Sequential" => arc(sequential::from_config::<T>(c)?),
        "Functional" => arc(functional::from_config::<T>(c)?),
        _ => return Ok(None),
    }))
}

// The layers rebuilt so far by the outermost `layer_from_config` (or a
// container's `fresh`), by name: a layer whose config refers to another
// layer of the same model by name (EmbeddingTranspose's tied Embedding)
// finds it here, so the rebuilt model is tied like the original.
/// The layers of an open scope: names and `LayerRef<T>`s of any `T`.
type ScopedLayers = Vec<(String, Box<dyn Any>)>;

thread_local! {
    static SCOPE: std::cell::RefCell<Option<ScopedLayers>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` inside a layer scope: layers rebuilt from configs within it can
/// find each other by name ([`scoped_layer`]). Nested calls share the
/// outermost scope.
pub(crate) fn in_layer_scope<R>(f: impl FnOnce() -> R) -> R {
    let outermost = SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        let open = s.is_none();
        if open {
            *s = Some(Vec::new());
        }
        open
    });
    // closes the scope even if `f` unwinds
    struct Close(bool);
    impl Drop for Close {
        fn drop(&mut self) {
            if self.0 {
                SCOPE.with(|s| *s.borrow_mut() = None);
            }
        }
    }
    let _close = Close(outermost);
    f()
}

/// Records a layer rebuilt inside the current scope.
pub(crate) fn scope_register<T: Element>(layer: &LayerRef<T>) {
    SCOPE.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.push((layer.name().to_string(), Box::new(layer.clone())));
        }
    });
}

/// The layer named `name` rebuilt earlier in the current scope, if any.
pub(crate) fn scoped_layer<T: Element>(name: &str) -> Option<LayerRef<T>> {
    SCOPE.with(|s| {
        s.borrow().as_ref().and_then(|s| {
            s.iter()
                .rev()
                .find(|(n, _)| n == name)
                .and_then(|(_, l)| l.downcast_ref::<LayerRef<T>>().cloned())
        })
    })
}

/// Shares one constructor between the registry and the builtin table.
pub(crate) fn arc<T: Element, L: Layer<T> + 'static>(l: L) -> LayerRef<T> {
    Arc::new(l)
}
