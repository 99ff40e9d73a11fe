//! `Sequential`: a stack of single-input, single-output layers.

use std::sync::RwLock;

use rime_tensor::{Element, PartialShape, Shape, Tensor};
use serde_json::json;

use super::IntoLayerRef;
use crate::config::{LayerConfig, layer_from_config, parse};
use crate::layer::LayerRef;
use crate::{CallContext, Error, Layer, LayerBase, ModelData, Result};

/// A linear stack of layers, each fed the previous one's output.
///
/// A model is itself a layer. Its `trainable` flag only changes what this
/// model reports and how it calls its layers: a layer it shares with
/// another model keeps training there (see [`crate::layer`]).
///
/// ```
/// use rime_layers::{activations::Activation, Dense, Layer, Sequential};
/// use rime_tensor::Tensor;
/// let model = Sequential::new()
///     .add(Dense::new(16).activation(Activation::Relu))
///     .add(Dense::new(3));
/// let y = model.call(&Tensor::<f32>::ones([8, 4])?, true)?;
/// assert_eq!(y.shape(), &[8, 3]);
/// assert_eq!(model.count_params(), 4 * 16 + 16 + 16 * 3 + 3);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Sequential<T: Element = f32> {
    base: LayerBase<T>,
    layers: RwLock<Vec<LayerRef<T>>>,
    /// Shape of one example, if declared (dimensions may be unknown):
    /// layers are then built at once, for an unknown batch size.
    input_shape: RwLock<Option<PartialShape>>,
    /// Shape of one example of the first successful call (Keras'
    /// `build_input_shape`): saved in the config so that a model built by
    /// calling it is rebuilt with its weights.
    build_shape: RwLock<Option<PartialShape>>,
}

impl<T: Element> Default for Sequential<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Sequential<T> {
    /// An empty stack with an automatic name (`sequential`, ...).
    pub fn new() -> Self {
        Self::named(None)
    }

    /// An empty stack named `name` (None: automatic).
    pub fn named(name: Option<String>) -> Self {
        let base = LayerBase::new("Sequential", name);
        base.mark_built();
        Sequential {
            base,
            layers: RwLock::new(Vec::new()),
            input_shape: RwLock::new(None),
            build_shape: RwLock::new(None),
        }
    }

    /// Declares the shape of one example (without the batch axis), like a
    /// Keras `Input`: every layer is built now, for an unknown batch size
    /// (`(None, 3)`), and `summary` shows shapes. Dimensions a layer does
    /// not size weights by may be unknown too (`[None, Some(8)]`: any
    /// sequence length).
    ///
    /// ```
    /// use rime_layers::{Dense, Layer, Sequential};
    /// use rime_tensor::{PartialShape, Tensor};
    /// let model = Sequential::<f32>::new().add(Dense::new(4)).with_input_shape([3])?;
    /// assert!(model.layers()[0].built());
    /// assert_eq!(
    ///     model.compute_output_shape(&[PartialShape::batched([3])])?[0].to_string(),
    ///     "(None, 4)"
    /// );
    /// for batch in [1, 3, 7] {
    ///     assert_eq!(model.call(&Tensor::ones([batch, 3])?, false)?.shape(), &[batch, 4]);
    /// }
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn with_input_shape(self, shape: impl Into<PartialShape>) -> Result<Self> {
        let shape = shape.into();
        *self.input_shape.write().unwrap_or_else(|p| p.into_inner()) = Some(shape);
        self.output_shapes()?;
        Ok(self)
    }

    /// Appends a layer (a layer value, or an `Arc` of one to share it).
    #[allow(clippy::should_implement_trait)] // Keras' name; builder style, not `+`
    pub fn add(self, layer: impl IntoLayerRef<T>) -> Self {
        self.push(layer);
        self
    }

    /// Appends a layer through a shared reference.
    pub fn push(&self, layer: impl IntoLayerRef<T>) {
        self.layers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(layer.into_layer_ref());
    }

    /// The layers, in order.
    pub fn layers(&self) -> Vec<LayerRef<T>> {
        self.layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The layer called `name`, if any.
    pub fn get_layer(&self, name: &str) -> Option<LayerRef<T>> {
        self.layers().into_iter().find(|l| l.name() == name)
    }

    /// The declared example shape, if any.
    pub fn input_shape(&self) -> Option<PartialShape> {
        self.input_shape
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Each layer's output shape (the batch size unknown), if the input
    /// shape is declared or the model was built by a call; builds the
    /// layers.
    pub(crate) fn output_shapes(&self) -> Result<Option<Vec<PartialShape>>> {
        match self.input_shape().or_else(|| self.build_shape()) {
            Some(example) => self.build_for(&example).map(Some),
            None => Ok(None),
        }
    }

    /// Builds every layer for examples of this shape and an unknown batch
    /// size; each layer's output shape.
    fn build_for(&self, example: &PartialShape) -> Result<Vec<PartialShape>> {
        let mut shape = PartialShape::batched(example);
        let mut out = Vec::new();
        for l in self.layers() {
            l.ensure_built(std::slice::from_ref(&shape))?;
            shape = single_shape(&*l, l.compute_output_shape(std::slice::from_ref(&shape))?)?;
            out.push(shape.clone());
        }
        Ok(out)
    }

    fn build_shape(&self) -> Option<PartialShape> {
        self.build_shape
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl<T: Element> Sequential<T> {
    /// The forward pass: `first` calls the first layer on the model's
    /// input (of shape `input`), each next layer gets the previous output.
    fn run(
        &self,
        input: &Shape,
        first: impl FnOnce(&LayerRef<T>) -> Result<Vec<Tensor<T>>>,
        ctx: CallContext,
    ) -> Result<Vec<Tensor<T>>> {
        let layers = self.layers();
        let Some((head, rest)) = layers.split_first() else {
            return Err(Error::Graph {
                model: self.name().to_string(),
                msg: "has no layers".into(),
            });
        };
        let one = |l: &LayerRef<T>, mut out: Vec<Tensor<T>>| {
            if out.len() != 1 {
                return Err(Error::Graph {
                    model: self.name().to_string(),
                    msg: format!(
                        "layer `{}` returned {} outputs; Sequential needs one",
                        l.name(),
                        out.len()
                    ),
                });
            }
            Ok(out.remove(0))
        };
        let mut x = one(head, first(head)?)?;
        for l in rest {
            x = one(l, l.apply(std::slice::from_ref(&x), ctx)?)?;
        }
        let mut recorded = self.build_shape.write().unwrap_or_else(|p| p.into_inner());
        if recorded.is_none() && input.rank() >= 1 {
            *recorded = Some(PartialShape::from(&input[1..]));
        }
        Ok(vec![x])
    }
}

fn single_shape<T: Element>(
    l: &dyn Layer<T>,
    mut shapes: Vec<PartialShape>,
) -> Result<PartialShape> {
    if shapes.len() != 1 {
        return Err(Error::Graph {
            model: "sequential".into(),
            msg: format!(
                "layer `{}` has {} outputs; Sequential needs exactly one",
                l.name(),
                shapes.len()
            ),
        });
    }
    Ok(shapes.remove(0))
}

impl<T: Element> Layer<T> for Sequential<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Sequential"
    }

    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        if self.layers().is_empty() {
            return Ok(vec![x.clone()]);
        }
        self.run(x.shape(), |first| first.apply(inputs, ctx), ctx)
    }

    /// Integer ids go to the first layer as they are (an `Embedding` reads
    /// them exactly; another layer casts them, as in Keras).
    fn call_data_with(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let [x] = inputs else {
            let shapes: Vec<_> = inputs.iter().map(|d| d.shape().clone()).collect();
            return Err(self
                .base
                .bad_input(&shapes, format!("expects one input, got {}", inputs.len())));
        };
        if self.layers().is_empty() {
            return Ok(vec![x.to_float()?]);
        }
        self.run(x.shape(), |first| first.apply_data(inputs, ctx), ctx)
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        let mut shape = match input_shapes {
            [s] => s.clone(),
            _ => return Err(self.base.bad_input(input_shapes, "expects one input")),
        };
        for l in self.layers() {
            l.ensure_built(std::slice::from_ref(&shape))?;
            shape = single_shape(&*l, l.compute_output_shape(std::slice::from_ref(&shape))?)?;
        }
        Ok(vec![shape])
    }

    fn sublayers(&self) -> Vec<LayerRef<T>> {
        self.layers()
    }

    fn get_config(&self) -> serde_json::Value {
        // a layer used again is a reference to its first position, so that
        // the rebuilt model shares it too (a tie survives the config)
        let all = self.layers();
        let layers: Vec<LayerConfig> = all
            .iter()
            .enumerate()
            .map(|(i, l)| {
                match all[..i]
                    .iter()
                    .position(|p| std::ptr::eq(p.base(), l.base()))
                {
                    Some(first) => LayerConfig {
                        class_name: SHARED.to_string(),
                        config: json!({ "layer": first }),
                    },
                    None => LayerConfig::of(&**l),
                }
            })
            .collect();
        json!({
            "name": self.name(),
            // one example's shape, `null` for an unknown dimension
            "input_shape": self.input_shape().map(|s| s.to_vec()),
            "build_input_shape": self.build_shape().map(|s| s.to_vec()),
            "layers": layers,
        })
    }

    /// Same structure, every layer fresh (Keras' `clone_model`). A layer that
    /// appears twice is cloned once and appears twice in the copy.
    fn fresh(&self) -> Result<LayerRef<T>> {
        // one scope: a layer tied by name to another (EmbeddingTranspose)
        // finds the other's copy
        crate::config::in_layer_scope(|| self.fresh_layers())
    }
}

impl<T: Element> Sequential<T> {
    fn fresh_layers(&self) -> Result<LayerRef<T>> {
        let copy = Sequential::new();
        let mut done: Vec<(*const LayerBase<T>, LayerRef<T>)> = Vec::new();
        for l in self.layers() {
            let key = l.base() as *const LayerBase<T>;
            let new = match done.iter().find(|(k, _)| *k == key) {
                Some((_, n)) => n.clone(),
                None => {
                    let n = l.fresh()?;
                    done.push((key, n.clone()));
                    n
                }
            };
            copy.push(new);
        }
        let copy = match (self.input_shape(), self.build_shape()) {
            (Some(s), _) => copy.with_input_shape(s)?,
            (None, Some(s)) => {
                copy.build_for(&s)?;
                *copy.build_shape.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
                copy
            }
            (None, None) => copy,
        };
        copy.set_trainable(self.trainable());
        Ok(std::sync::Arc::new(copy))
    }
}

/// The class name of a repeated layer in a Sequential's config: a
/// reference to the layer's first position.
const SHARED: &str = "SharedLayer";

/// Rebuilds a Sequential from its `get_config`.
pub(crate) fn from_config<T: Element>(config: &serde_json::Value) -> Result<Sequential<T>> {
    #[derive(serde::Deserialize)]
    struct Cfg {
        name: Option<String>,
        // files before unknown dimensions hold plain sizes: they read as is
        input_shape: Option<Vec<Option<usize>>>,
        #[serde(default)]
        build_input_shape: Option<Vec<Option<usize>>>,
        layers: Vec<LayerConfig>,
    }
    let cfg: Cfg = parse("Sequential", config)?;
    let model = Sequential::named(cfg.name);
    let mut built: Vec<LayerRef<T>> = Vec::with_capacity(cfg.layers.len());
    for (i, l) in cfg.layers.iter().enumerate() {
        let layer = if l.class_name == SHARED {
            let first = l.config["layer"]
                .as_u64()
                .and_then(|f| usize::try_from(f).ok())
                .filter(|&f| f < i)
                .ok_or_else(|| Error::Config {
                    class: "Sequential".into(),
                    msg: format!(
                        "layer {i} refers to `{}`, not an earlier position",
                        l.config["layer"]
                    ),
                })?;
            built[first].clone()
        } else {
            layer_from_config::<T>(l)?
        };
        built.push(layer.clone());
        model.push(layer);
    }
    match (cfg.input_shape, cfg.build_input_shape) {
        (Some(s), _) => model.with_input_shape(s),
        (None, Some(s)) => {
            let s = PartialShape::from(s);
            model.build_for(&s)?;
            *model.build_shape.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
            Ok(model)
        }
        (None, None) => Ok(model),
    }
}
