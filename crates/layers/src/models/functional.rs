//! The functional `Model`: a graph of layer calls on symbolic tensors.
//!
//! [`Input`] makes a symbolic tensor; applying a layer to symbolic tensors
//! builds the layer (shapes are known) and records a node; [`Model::new`]
//! takes any symbolic tensors as inputs and outputs and runs the part of
//! the graph between them. So a model can expose an inner layer's output
//! (feature extraction) or start at an inner tensor (cut in the middle),
//! and every such model shares the original's layers and weights.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rime_tensor::{DType, Element, PartialShape, Tensor};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::IntoLayerRef;
use crate::config::{LayerConfig, layer_from_config, parse};
use crate::layer::{LayerRef, dedup_layers};
use crate::{CallContext, Error, Layer, LayerBase, ModelData, Result};

static NODE_IDS: AtomicU64 = AtomicU64::new(1);

enum NodeKind<T: Element> {
    Input { name: String, dtype: DType },
    Layer(LayerRef<T>),
}

struct GraphNode<T: Element> {
    id: u64,
    kind: NodeKind<T>,
    inputs: Vec<SymbolicTensor<T>>,
    /// Output shapes, `None` where unknown (the batch size, at least).
    output_shapes: Vec<PartialShape>,
}

/// A placeholder in a model graph: the `index`-th output of a layer call
/// (or an [`Input`]). Cheap to clone.
pub struct SymbolicTensor<T: Element = f32> {
    node: Arc<GraphNode<T>>,
    index: usize,
}

impl<T: Element> Clone for SymbolicTensor<T> {
    fn clone(&self) -> Self {
        SymbolicTensor {
            node: Arc::clone(&self.node),
            index: self.index,
        }
    }
}

type Key = (u64, usize);

impl<T: Element> SymbolicTensor<T> {
    fn key(&self) -> Key {
        (self.node.id, self.index)
    }

    /// The shape, `None` where unknown: the batch size, and any other
    /// dimension the model's inputs leave open (Keras' `x.shape`,
    /// `(None, 3)`).
    ///
    /// ```
    /// use rime_layers::{Dense, Input};
    /// let h = Input::<f32>::new([4]).apply(Dense::new(3))?;
    /// assert_eq!(h.shape().to_string(), "(None, 3)");
    /// assert_eq!(h.shape().dim(1), Some(3));
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn shape(&self) -> &PartialShape {
        &self.node.output_shapes[self.index]
    }

    /// The shape of one example (without the batch axis).
    pub fn example_shape(&self) -> PartialShape {
        self.shape().example()
    }

    /// The name of the layer (or input) that produces this tensor.
    pub fn producer(&self) -> &str {
        match &self.node.kind {
            NodeKind::Input { name, .. } => name,
            NodeKind::Layer(l) => l.name(),
        }
    }

    /// The element type: an [`Input`]'s declared one (`I64`/`I32` for
    /// token ids), the model's float type for a layer's output.
    pub fn dtype(&self) -> DType {
        match &self.node.kind {
            NodeKind::Input { dtype, .. } => *dtype,
            NodeKind::Layer(_) => T::DTYPE,
        }
    }

    /// Applies a one-output layer: `x.apply(Dense::new(8))` is Keras'
    /// `Dense(8)(x)`. Pass an `Arc` of a layer to apply it again elsewhere
    /// (shared weights).
    ///
    /// ```
    /// use rime_layers::{Dense, Input};
    /// let x = Input::<f32>::new([4]);
    /// let h = x.apply(Dense::new(3))?;
    /// assert_eq!(h.example_shape(), [3]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn apply(&self, layer: impl IntoLayerRef<T>) -> Result<SymbolicTensor<T>> {
        let layer = layer.into_layer_ref();
        let mut out = call_symbolic(layer.clone(), &[self])?;
        if out.len() != 1 {
            return Err(Error::Graph {
                model: "functional".into(),
                msg: format!(
                    "layer `{}` has {} outputs; use call_symbolic",
                    layer.name(),
                    out.len()
                ),
            });
        }
        Ok(out.remove(0))
    }
}

/// Symbolic inputs of a functional model (Keras' `Input`).
pub struct Input<T: Element = f32>(std::marker::PhantomData<T>);

impl<T: Element> Input<T> {
    /// A symbolic input for examples of `shape` (without the batch axis),
    /// named automatically (`input`, `input_1`, ...). Its shape is
    /// `(None, *shape)`: the batch size is unknown, and so is any
    /// dimension given as `None` (`Input::new([None, Some(16)])`: sequences
    /// of any length).
    ///
    /// ```
    /// use rime_layers::{Dense, Input, Layer, Model};
    /// use rime_tensor::Tensor;
    /// let x = Input::<f32>::new([None, Some(4)]);
    /// assert_eq!(x.shape().to_string(), "(None, None, 4)");
    /// let y = x.apply(Dense::new(2))?;
    /// assert_eq!(y.shape().to_string(), "(None, None, 2)");
    /// let model = Model::new(&[&x], &[&y])?;
    /// assert_eq!(model.call(&Tensor::ones([3, 5, 4])?, false)?.shape(), &[3, 5, 2]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new(shape: impl Into<PartialShape>) -> SymbolicTensor<T> {
        Self::named(crate::unique_name("input"), shape)
    }

    /// A named symbolic input.
    pub fn named(name: impl Into<String>, shape: impl Into<PartialShape>) -> SymbolicTensor<T> {
        Self::named_with_dtype(name, shape, T::DTYPE)
    }

    /// A symbolic input of integers (`DType::I64` or `DType::I32`: token
    /// ids for an `Embedding`), Keras' `Input(shape, dtype="int32")`. The
    /// model is then called with integer tensors (through
    /// [`Layer::apply_data`], `TrainStep`, `fit` and datasets), which reach
    /// the layers that take this input as integers; float values given for
    /// it must be whole numbers and are converted exactly. A float `dtype`
    /// means the model's float type.
    ///
    /// ```
    /// use rime_layers::{CallContext, Embedding, GlobalAveragePooling1D, Input, Layer, Model, ModelData};
    /// use rime_tensor::{DType, Tensor};
    /// let ids = Input::<f32>::with_dtype([None], DType::I32); // any length
    /// let h = ids.apply(Embedding::new(100, 8))?.apply(GlobalAveragePooling1D::new())?;
    /// let model = Model::new(&[&ids], &[&h])?;
    /// let batch = ModelData::from(Tensor::from_vec(vec![5i32, 99, 7, 0, 1, 2], [2, 3])?);
    /// assert_eq!(model.apply_data(&[batch], CallContext::INFERENCE)?[0].shape(), &[2, 8]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn with_dtype(shape: impl Into<PartialShape>, dtype: DType) -> SymbolicTensor<T> {
        Self::named_with_dtype(crate::unique_name("input"), shape, dtype)
    }

    /// A named symbolic input of `dtype`.
    pub fn named_with_dtype(
        name: impl Into<String>,
        shape: impl Into<PartialShape>,
        dtype: DType,
    ) -> SymbolicTensor<T> {
        let dtype = if dtype.is_float() { T::DTYPE } else { dtype };
        SymbolicTensor {
            node: Arc::new(GraphNode {
                id: NODE_IDS.fetch_add(1, Ordering::Relaxed),
                kind: NodeKind::Input {
                    name: name.into(),
                    dtype,
                },
                inputs: Vec::new(),
                output_shapes: vec![PartialShape::batched(shape)],
            }),
            index: 0,
        }
    }
}

/// Applies a layer to several symbolic tensors (Keras' `layer([a, b])`):
/// builds it for their shapes and returns its symbolic outputs.
///
/// ```
/// use rime_layers::{call_symbolic, Dense, Input};
/// let x = Input::<f32>::new([4]);
/// let out = call_symbolic(Dense::new(2), &[&x])?;
/// assert_eq!(out[0].example_shape(), [2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn call_symbolic<T: Element>(
    layer: impl IntoLayerRef<T>,
    inputs: &[&SymbolicTensor<T>],
) -> Result<Vec<SymbolicTensor<T>>> {
    let layer = layer.into_layer_ref();
    let shapes: Vec<PartialShape> = inputs.iter().map(|t| t.shape().clone()).collect();
    layer.ensure_built(&shapes)?;
    let output_shapes = layer.compute_output_shape(&shapes)?;
    let node = Arc::new(GraphNode {
        id: NODE_IDS.fetch_add(1, Ordering::Relaxed),
        kind: NodeKind::Layer(layer),
        inputs: inputs.iter().map(|&t| t.clone()).collect(),
        output_shapes,
    });
    Ok((0..node.output_shapes.len())
        .map(|index| SymbolicTensor {
            node: node.clone(),
            index,
        })
        .collect())
}

/// A model over a graph of layer calls (Keras' functional API): several
/// inputs and outputs, shared layers, models used as layers.
///
/// ```
/// use rime_layers::{activations::Activation, Dense, Input, Layer, Model};
/// use rime_tensor::Tensor;
/// use std::sync::Arc;
/// let x = Input::<f32>::new([4]);
/// let h1 = x.apply(Dense::new(8).activation(Activation::Relu))?;
/// let shared = Arc::new(Dense::new(8));
/// let h2 = h1.apply(shared.clone())?;
/// let h3 = h2.apply(shared.clone())?; // the same weights twice
/// let model = Model::new(&[&x], &[&h1, &h3])?; // two outputs
/// let outs = model.call_many(&[Tensor::ones([2, 4])?], false)?;
/// assert_eq!(outs[1].shape(), &[2, 8]);
/// // a model from an inner tensor onwards shares the weights
/// let tail = Model::new(&[&h2], &[&h3])?;
/// assert_eq!(tail.weights(), shared.weights());
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Model<T: Element = f32> {
    base: LayerBase<T>,
    inputs: Vec<SymbolicTensor<T>>,
    outputs: Vec<SymbolicTensor<T>>,
    /// Layer nodes between inputs and outputs, in execution order.
    order: Vec<Arc<GraphNode<T>>>,
    /// Each layer once, in order of first use.
    layers: Vec<LayerRef<T>>,
}

impl<T: Element> Model<T> {
    /// The model computing `outputs` from `inputs`, named automatically
    /// (`functional`, ...).
    pub fn new(inputs: &[&SymbolicTensor<T>], outputs: &[&SymbolicTensor<T>]) -> Result<Self> {
        Self::named(None, inputs, outputs)
    }

    /// The same with a name.
    pub fn named(
        name: Option<String>,
        inputs: &[&SymbolicTensor<T>],
        outputs: &[&SymbolicTensor<T>],
    ) -> Result<Self> {
        let base = LayerBase::new("Functional", name);
        let model_name = base.name().to_string();
        let graph_err = |msg: String| Error::Graph {
            model: model_name.clone(),
            msg,
        };
        if inputs.is_empty() || outputs.is_empty() {
            return Err(graph_err("needs at least one input and one output".into()));
        }
        let input_keys: FxHashSet<Key> = inputs.iter().map(|t| t.key()).collect();
        if input_keys.len() != inputs.len() {
            return Err(graph_err(
                "the same tensor is given twice as an input".into(),
            ));
        }
        // depth-first from the outputs, stopping at the inputs
        let mut order = Vec::new();
        let mut visited: FxHashSet<u64> = FxHashSet::default();
        fn visit<T: Element>(
            t: &SymbolicTensor<T>,
            inputs: &FxHashSet<Key>,
            visited: &mut FxHashSet<u64>,
            order: &mut Vec<Arc<GraphNode<T>>>,
        ) -> std::result::Result<(), String> {
            if inputs.contains(&t.key()) || visited.contains(&t.node.id) {
                return Ok(());
            }
            match &t.node.kind {
                NodeKind::Input { name, .. } => Err(format!(
                    "graph disconnected: an output depends on input `{name}` {}, which is not among the model's inputs",
                    t.shape()
                )),
                NodeKind::Layer(_) => {
                    for i in &t.node.inputs {
                        visit(i, inputs, visited, order)?;
                    }
                    visited.insert(t.node.id);
                    order.push(t.node.clone());
                    Ok(())
                }
            }
        }
        for o in outputs {
            visit(o, &input_keys, &mut visited, &mut order).map_err(graph_err)?;
        }
        let layers = dedup_layers(
            order
                .iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::Layer(l) => Some(l.clone()),
                    NodeKind::Input { .. } => None,
                })
                .collect(),
        );
        let mut names: HashMap<&str, usize> = HashMap::new();
        for l in &layers {
            *names.entry(l.name()).or_default() += 1;
        }
        if let Some((dup, _)) = names.iter().find(|(_, n)| **n > 1) {
            return Err(graph_err(format!(
                "layer names must be unique; `{dup}` is used by several layers"
            )));
        }
        base.mark_built();
        Ok(Model {
            base,
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            outputs: outputs.iter().map(|&t| t.clone()).collect(),
            order,
            layers,
        })
    }

    /// The symbolic inputs.
    pub fn inputs(&self) -> &[SymbolicTensor<T>] {
        &self.inputs
    }

    /// The symbolic outputs.
    pub fn outputs(&self) -> &[SymbolicTensor<T>] {
        &self.outputs
    }

    /// Each layer once, in order of first use.
    pub fn layers(&self) -> &[LayerRef<T>] {
        &self.layers
    }

    /// The layer called `name`.
    pub fn get_layer(&self, name: &str) -> Option<LayerRef<T>> {
        self.layers.iter().find(|l| l.name() == name).cloned()
    }

    /// The (first) symbolic output of the layer called `name` in this graph,
    /// to build a model on an inner layer (Keras' `layer.output`).
    pub fn layer_output(&self, name: &str) -> Result<SymbolicTensor<T>> {
        self.order
            .iter()
            .find(|n| matches!(&n.kind, NodeKind::Layer(l) if l.name() == name))
            .map(|n| SymbolicTensor {
                node: n.clone(),
                index: 0,
            })
            .ok_or_else(|| Error::Graph {
                model: self.name().to_string(),
                msg: format!("no layer named `{name}`"),
            })
    }

    /// Output shape of each layer node, in execution order.
    pub(crate) fn node_rows(&self) -> Vec<(LayerRef<T>, PartialShape)> {
        let mut seen = FxHashSet::default();
        self.order
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Layer(l) if seen.insert(l.base() as *const LayerBase<T>) => {
                    Some((l.clone(), n.output_shapes[0].clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn check_inputs(&self, inputs: &[ModelData<T>]) -> Result<()> {
        let shapes = || inputs.iter().map(|t| t.shape().clone()).collect::<Vec<_>>();
        if inputs.len() != self.inputs.len() {
            return Err(self
                .base
                .bad_input(&shapes(), format!("expects {} inputs", self.inputs.len())));
        }
        for (t, s) in inputs.iter().zip(&self.inputs) {
            if !s.shape().matches(t.shape()) {
                return Err(self.base.bad_input(
                    &shapes(),
                    format!(
                        "input `{}` needs examples of shape {}",
                        s.producer(),
                        s.example_shape()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl<T: Element> Model<T> {
    /// `x` as input `input` declares it: floats given for an integer
    /// input become integers if they are whole numbers an `f64` holds
    /// exactly (|x| <= 2^53), else a typed error; anything else as given.
    fn as_declared(&self, input: &SymbolicTensor<T>, x: &ModelData<T>) -> Result<ModelData<T>> {
        let (ModelData::Float(f), false) = (x, input.dtype().is_float()) else {
            return Ok(x.clone());
        };
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        let mut ints = Vec::with_capacity(f.len());
        for (pos, v) in f.as_slice().iter().enumerate() {
            let v = v.to_f64().unwrap_or(f64::NAN);
            if !v.is_finite() || v.fract() != 0.0 || v.abs() > EXACT {
                return Err(self.base.bad_input(
                    std::slice::from_ref(f.shape()),
                    format!(
                        "input `{}` is declared {}: value {v} at flat position {pos} is not a whole number",
                        input.producer(),
                        input.dtype()
                    ),
                ));
            }
            ints.push(v as i64);
        }
        Ok(ModelData::Int(Tensor::from_vec(ints, f.shape().clone())?))
    }
}

impl<T: Element> Layer<T> for Model<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Functional"
    }

    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let data: Vec<ModelData<T>> = inputs.iter().cloned().map(ModelData::Float).collect();
        self.call_data_with(&data, ctx)
    }

    /// Each input reaches the layers that take it as given (integer ids
    /// as integers), after conversion to an integer [`Input`]'s dtype.
    fn call_data_with(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        self.check_inputs(inputs)?;
        let mut values: FxHashMap<Key, ModelData<T>> = FxHashMap::default();
        for (s, x) in self.inputs.iter().zip(inputs) {
            values.insert(s.key(), self.as_declared(s, x)?);
        }
        for node in &self.order {
            let NodeKind::Layer(layer) = &node.kind else {
                continue;
            };
            let args: Vec<ModelData<T>> = node
                .inputs
                .iter()
                .map(|s| values[&s.key()].clone())
                .collect();
            let outs = layer.apply_data(&args, ctx)?;
            if outs.len() != node.output_shapes.len() {
                return Err(Error::Graph {
                    model: self.name().to_string(),
                    msg: format!(
                        "layer `{}` returned {} outputs, expected {}",
                        layer.name(),
                        outs.len(),
                        node.output_shapes.len()
                    ),
                });
            }
            for (i, o) in outs.into_iter().enumerate() {
                values.insert((node.id, i), ModelData::Float(o));
            }
        }
        // an output that is an input as given (an identity model)
        self.outputs
            .iter()
            .map(|s| values[&s.key()].to_float())
            .collect()
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        if input_shapes.len() != self.inputs.len() {
            return Err(self.base.bad_input(
                input_shapes,
                format!("expects {} inputs", self.inputs.len()),
            ));
        }
        let mut shapes: FxHashMap<Key, PartialShape> = self
            .inputs
            .iter()
            .map(|s| s.key())
            .zip(input_shapes.iter().cloned())
            .collect();
        for node in &self.order {
            let NodeKind::Layer(layer) = &node.kind else {
                continue;
            };
            let args: Vec<PartialShape> = node
                .inputs
                .iter()
                .map(|s| shapes[&s.key()].clone())
                .collect();
            for (i, o) in layer.compute_output_shape(&args)?.into_iter().enumerate() {
                shapes.insert((node.id, i), o);
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|s| shapes[&s.key()].clone())
            .collect())
    }

    fn sublayers(&self) -> Vec<LayerRef<T>> {
        self.layers.clone()
    }

    fn get_config(&self) -> serde_json::Value {
        serde_json::to_value(self.graph_config()).expect("configs serialize")
    }

    /// Same graph, every layer fresh (Keras' `clone_model`); shared layers
    /// stay shared within the copy.
    fn fresh(&self) -> Result<LayerRef<T>> {
        // one scope: a layer tied by name to another (EmbeddingTranspose)
        // finds the other's copy
        crate::config::in_layer_scope(|| self.fresh_layers())
    }
}

impl<T: Element> Model<T> {
    fn fresh_layers(&self) -> Result<LayerRef<T>> {
        let mut fresh_layers: FxHashMap<*const LayerBase<T>, LayerRef<T>> = FxHashMap::default();
        for l in &self.layers {
            fresh_layers.insert(l.base() as *const LayerBase<T>, l.fresh()?);
        }
        let copy = self.rebuild(|l| fresh_layers[&(l.base() as *const LayerBase<T>)].clone())?;
        copy.set_trainable(self.trainable());
        Ok(Arc::new(copy))
    }
}

/// A reference to a tensor in a [`GraphConfig`]: an input (`node` None) or
/// a node's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TensorRef {
    node: Option<usize>,
    index: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct InputConfig {
    name: String,
    /// One example's shape, `null` for an unknown dimension (files from
    /// before unknown dimensions hold plain sizes and read as is).
    shape: Vec<Option<usize>>,
    /// Keras' name of an integer input's dtype (`"int32"`, `"int64"`);
    /// absent for the model's float type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dtype: Option<String>,
}

/// Keras' dtype names of integer inputs.
fn int_dtype_name(dtype: DType) -> Option<String> {
    match dtype {
        DType::I32 => Some("int32".into()),
        DType::I64 => Some("int64".into()),
        DType::F32 | DType::F64 => None,
    }
}

fn int_dtype_from_name(name: Option<&str>) -> Result<DType> {
    match name {
        None | Some("float32" | "float64") => Ok(DType::F32),
        Some("int32") => Ok(DType::I32),
        Some("int64") => Ok(DType::I64),
        Some(other) => Err(Error::Config {
            class: "Functional".into(),
            msg: format!("input dtype `{other}` is not supported (float32, float64, int32, int64)"),
        }),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NodeConfig {
    layer: String,
    inbound: Vec<TensorRef>,
}

/// A functional model as serde data: its inputs, each layer's config once,
/// and the calls between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GraphConfig {
    name: String,
    inputs: Vec<InputConfig>,
    layers: Vec<(String, LayerConfig)>,
    nodes: Vec<NodeConfig>,
    outputs: Vec<TensorRef>,
}

impl<T: Element> Model<T> {
    fn tensor_ref(&self, t: &SymbolicTensor<T>) -> TensorRef {
        if let Some(i) = self.inputs.iter().position(|s| s.key() == t.key()) {
            return TensorRef {
                node: None,
                index: i,
            };
        }
        let node = self.order.iter().position(|n| n.id == t.node.id);
        TensorRef {
            node,
            index: t.index,
        }
    }

    fn graph_config(&self) -> GraphConfig {
        GraphConfig {
            name: self.name().to_string(),
            inputs: self
                .inputs
                .iter()
                .map(|s| InputConfig {
                    name: s.producer().to_string(),
                    shape: s.example_shape().to_vec(),
                    dtype: int_dtype_name(s.dtype()),
                })
                .collect(),
            layers: self
                .layers
                .iter()
                .map(|l| (l.name().to_string(), LayerConfig::of(&**l)))
                .collect(),
            nodes: self
                .order
                .iter()
                .map(|n| NodeConfig {
                    layer: match &n.kind {
                        NodeKind::Layer(l) => l.name().to_string(),
                        NodeKind::Input { name, .. } => name.clone(),
                    },
                    inbound: n.inputs.iter().map(|t| self.tensor_ref(t)).collect(),
                })
                .collect(),
            outputs: self.outputs.iter().map(|t| self.tensor_ref(t)).collect(),
        }
    }

    /// The same graph over other layers (`map` gives each layer's stand-in),
    /// from new inputs of the same shapes.
    fn rebuild(&self, map: impl Fn(&LayerRef<T>) -> LayerRef<T>) -> Result<Model<T>> {
        let new_inputs: Vec<SymbolicTensor<T>> = self
            .inputs
            .iter()
            .map(|s| Input::named_with_dtype(s.producer(), s.example_shape(), s.dtype()))
            .collect();
        let mut tensors: FxHashMap<Key, SymbolicTensor<T>> = self
            .inputs
            .iter()
            .map(|s| s.key())
            .zip(new_inputs.iter().cloned())
            .collect();
        for node in &self.order {
            let NodeKind::Layer(layer) = &node.kind else {
                continue;
            };
            let args: Vec<SymbolicTensor<T>> = node
                .inputs
                .iter()
                .map(|s| tensors[&s.key()].clone())
                .collect();
            let outs = call_symbolic(map(layer), &args.iter().collect::<Vec<_>>())?;
            for (i, o) in outs.into_iter().enumerate() {
                tensors.insert((node.id, i), o);
            }
        }
        let outputs: Vec<SymbolicTensor<T>> = self
            .outputs
            .iter()
            .map(|s| tensors[&s.key()].clone())
            .collect();
        Model::named(
            Some(self.name().to_string()),
            &new_inputs.iter().collect::<Vec<_>>(),
            &outputs.iter().collect::<Vec<_>>(),
        )
    }
}

/// Rebuilds a functional model from its `get_config`.
pub(crate) fn from_config<T: Element>(config: &serde_json::Value) -> Result<Model<T>> {
    let cfg: GraphConfig = parse("Functional", config)?;
    let bad = |msg: String| Error::Config {
        class: "Functional".into(),
        msg,
    };
    let mut layers: HashMap<String, LayerRef<T>> = HashMap::new();
    for (name, lc) in &cfg.layers {
        layers.insert(name.clone(), layer_from_config::<T>(lc)?);
    }
    let inputs: Vec<SymbolicTensor<T>> = cfg
        .inputs
        .iter()
        .map(|i| {
            let dtype = int_dtype_from_name(i.dtype.as_deref())?;
            Ok(Input::named_with_dtype(
                i.name.clone(),
                i.shape.clone(),
                dtype,
            ))
        })
        .collect::<Result<_>>()?;
    let mut outs: Vec<Vec<SymbolicTensor<T>>> = Vec::new();
    let resolve = |r: &TensorRef, outs: &[Vec<SymbolicTensor<T>>]| -> Result<SymbolicTensor<T>> {
        match r.node {
            None => inputs.get(r.index).cloned(),
            Some(n) => outs.get(n).and_then(|o| o.get(r.index)).cloned(),
        }
        .ok_or_else(|| bad(format!("dangling tensor reference {r:?}")))
    };
    for node in &cfg.nodes {
        let layer = layers
            .get(&node.layer)
            .cloned()
            .ok_or_else(|| bad(format!("unknown layer `{}`", node.layer)))?;
        let args = node
            .inbound
            .iter()
            .map(|r| resolve(r, &outs))
            .collect::<Result<Vec<_>>>()?;
        outs.push(call_symbolic(layer, &args.iter().collect::<Vec<_>>())?);
    }
    let outputs = cfg
        .outputs
        .iter()
        .map(|r| resolve(r, &outs))
        .collect::<Result<Vec<_>>>()?;
    Model::named(
        Some(cfg.name),
        &inputs.iter().collect::<Vec<_>>(),
        &outputs.iter().collect::<Vec<_>>(),
    )
}
