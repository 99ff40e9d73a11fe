//! `Lambda`: a layer from a Rust closure.

use std::fmt;
use std::sync::Arc;

use rime_tensor::{Element, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::Registry;
use crate::layer::LayerRef;
use crate::{CallContext, Error, Layer, LayerBase, Result};

/// The closure a [`Lambda`] runs.
pub type LambdaFn<T> = dyn Fn(&[Tensor<T>]) -> Result<Vec<Tensor<T>>> + Send + Sync;

/// Lambda's config: the layer name and, for a closure registered with
/// [`Lambda::register`], the key it was registered under.
///
/// ```
/// use rime_layers::LambdaConfig;
/// let c: LambdaConfig = serde_json::from_str(r#"{"function": "double"}"#).unwrap();
/// assert_eq!((c.name, c.function.as_deref()), (None, Some("double")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LambdaConfig {
    /// Layer name (None: automatic).
    pub name: Option<String>,
    /// Registry key of the closure (None: an unregistered closure, which a
    /// config cannot rebuild).
    pub function: Option<String>,
}

/// Registered closures by (key, dtype), each an `Arc<LambdaFn<T>>`.
static FUNCTIONS: Registry = Registry::new();

fn registered<T: Element>(function: &str) -> Option<Arc<LambdaFn<T>>> {
    FUNCTIONS.get::<T, Arc<LambdaFn<T>>>(function)
}

/// Keras' Lambda layer: a closure over the inputs, without weights. Ops in
/// the closure are recorded like any others, so gradients flow through it.
///
/// A closure is not data, so a config carries it only by name:
/// - [`Lambda::new`] wraps any closure. [`fresh`](Layer::fresh) (and so
///   `clone_model`) shares the closure with the new layer, but
///   `layer_from_config` cannot rebuild the layer from its config.
/// - [`Lambda::register`] stores a closure under a key and
///   [`Lambda::registered`] makes a layer of it; its config records the
///   key, so `layer_from_config` (and model configs) rebuild it in any
///   process that registered the same key.
///
/// ```
/// use rime_layers::{Lambda, Layer};
/// use rime_tensor::Tensor;
/// let norm = Lambda::new("l2_normalize", |xs: &[Tensor]| {
///     let n = xs[0].square().sum(&[-1], true)?.sqrt();
///     Ok(vec![xs[0].div(&n)?])
/// });
/// let y = norm.call(&Tensor::from_vec(vec![3.0, 4.0], [1, 2])?, false)?;
/// assert_eq!(y.to_vec(), vec![0.6, 0.8]);
/// assert_eq!(norm.fresh()?.call(&Tensor::from_vec(vec![0.0, 2.0], [1, 2])?, false)?.to_vec(), vec![0.0, 1.0]);
/// // in a model built for any batch size, the output shape comes from the
/// // default `compute_output_shape` (two probe sizes for unknown axes)
/// let x = rime_layers::Input::<f32>::new([2]);
/// assert_eq!(x.apply(norm)?.shape().to_string(), "(None, 2)");
/// let rows = Lambda::new("first_row", |xs: &[Tensor]| Ok(vec![xs[0].index_select(0, &[0])?]));
/// assert_eq!(x.apply(rows)?.shape().to_string(), "(1, 2)");
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Lambda<T: Element = f32> {
    base: LayerBase<T>,
    config: LambdaConfig,
    f: Arc<LambdaFn<T>>,
}

impl<T: Element> Lambda<T> {
    /// A layer named `name` computing `f(inputs)`.
    pub fn new(
        name: impl Into<String>,
        f: impl Fn(&[Tensor<T>]) -> Result<Vec<Tensor<T>>> + Send + Sync + 'static,
    ) -> Self {
        Self::shared(
            LambdaConfig {
                name: Some(name.into()),
                function: None,
            },
            Arc::new(f),
        )
    }

    /// Registers `f` under `function` for layers of element type `T`,
    /// replacing an earlier closure of that key.
    ///
    /// ```
    /// use rime_layers::config::{layer_from_config, LayerConfig};
    /// use rime_layers::{Lambda, Layer};
    /// use rime_tensor::Tensor;
    /// Lambda::<f32>::register("double", |xs| Ok(vec![xs[0].mul_scalar(2.0)]));
    /// let layer = Lambda::<f32>::registered("double")?;
    /// let copy = layer_from_config::<f32>(&LayerConfig::of(&layer))?;
    /// assert_eq!(copy.call(&Tensor::vector(vec![1.5]), false)?.to_vec(), vec![3.0]);
    /// assert!(Lambda::<f32>::registered("not_registered").is_err());
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn register(
        function: &str,
        f: impl Fn(&[Tensor<T>]) -> Result<Vec<Tensor<T>>> + Send + Sync + 'static,
    ) {
        FUNCTIONS.insert::<T, Arc<LambdaFn<T>>>(function, Arc::new(f));
    }

    /// A layer (automatically named) running the closure registered under
    /// `function`; errors if there is none for `T`.
    pub fn registered(function: &str) -> Result<Self> {
        Self::from_config(LambdaConfig {
            name: None,
            function: Some(function.to_string()),
        })
    }

    /// From a config: the registered closure `config.function`. Errors if
    /// the config names no function or an unregistered one.
    pub fn from_config(config: LambdaConfig) -> Result<Self> {
        let Some(key) = &config.function else {
            return Err(Error::Config {
                class: "Lambda".into(),
                msg: "the config names no function (the closure of `Lambda::new` is not \
                      data): use `fresh()` on the layer, or `Lambda::register` + \
                      `Lambda::registered`"
                    .into(),
            });
        };
        let f = registered::<T>(key).ok_or_else(|| Error::Config {
            class: "Lambda".into(),
            msg: format!(
                "no function `{key}` is registered for {:?} (use `Lambda::register`)",
                T::DTYPE
            ),
        })?;
        Ok(Self::shared(config, f))
    }

    fn shared(config: LambdaConfig, f: Arc<LambdaFn<T>>) -> Self {
        let base = LayerBase::new("Lambda", config.name.clone());
        base.mark_built();
        Lambda { base, config, f }
    }

    /// The config.
    pub fn config(&self) -> &LambdaConfig {
        &self.config
    }
}

impl<T: Element> fmt::Debug for Lambda<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lambda")
            .field("name", &self.base.name())
            .field("function", &self.config.function)
            .finish_non_exhaustive()
    }
}

impl<T: Element> Layer<T> for Lambda<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Lambda"
    }

    fn call_with(&self, inputs: &[Tensor<T>], _ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        (self.f)(inputs)
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }

    /// A layer of the same name sharing the closure (registered or not).
    fn fresh(&self) -> Result<LayerRef<T>> {
        let mut config = self.config.clone();
        config.name = Some(self.base.name().to_string());
        Ok(Arc::new(Self::shared(config, self.f.clone())))
    }
}

layer_builders!(Lambda);
