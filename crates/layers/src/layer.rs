//! The [`Layer`] trait and the state every layer shares ([`LayerBase`]).
//!
//! A layer is used through `&self`: it builds its weights lazily on the
//! first call (from the input shapes) and keeps them behind interior
//! mutability, so one layer can sit in several models, or be called twice
//! in one, and share its weights. Models hold layers as [`LayerRef`]s
//! (`Arc<dyn Layer>`).
//!
//! ## Who decides what trains
//!
//! - A [`Variable`] created with `trainable = false` (BatchNormalization's
//!   moving statistics) is never trained by gradient.
//! - [`Layer::set_trainable`]`(false)` freezes the layer — and the variables
//!   it created as trainable — in every model that holds it (Keras 3 sets
//!   the variables' flags too, so a tied use elsewhere is frozen as well).
//!   It does not touch sublayers' flags.
//! - A model's flag ([`Layer::set_trainable`] on a model) only changes what
//!   that model reports: a frozen model has no trainable weights and calls
//!   its layers in a frozen context ([`CallContext::trainable`] false), but
//!   a layer it shares with another model still trains there.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use rime_tape::{Constraint, Variable};
use rime_tensor::{Element, PartialShape, Shape, Tensor, TensorId};
use rustc_hash::FxHashSet;

use crate::initializers::Initializer;
use crate::regularizers::Regularizer;
use crate::{Error, ModelData, Result};

/// The two sizes the default [`Layer::compute_output_shape`] gives an
/// unknown dimension to find which output dimensions depend on it.
pub const PROBE_SIZES: [usize; 2] = [5, 13];

/// A shared layer handle, as models hold their layers.
pub type LayerRef<T = f32> = Arc<dyn Layer<T>>;

/// How a layer is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// Keras' `training` argument: dropout drops, batch normalization uses
    /// and updates batch statistics.
    pub training: bool,
    /// False when the call comes through a frozen model: stateful layers
    /// behave as frozen (a BatchNormalization runs in inference mode).
    pub trainable: bool,
}

impl CallContext {
    /// Training mode.
    pub const TRAINING: CallContext = CallContext {
        training: true,
        trainable: true,
    };
    /// Inference mode.
    pub const INFERENCE: CallContext = CallContext {
        training: false,
        trainable: true,
    };

    /// From Keras' `training` flag.
    pub fn new(training: bool) -> Self {
        CallContext {
            training,
            trainable: true,
        }
    }

    /// The context a layer passes to its sublayers: frozen if it is.
    pub fn within(self, layer_trainable: bool) -> Self {
        CallContext {
            trainable: self.trainable && layer_trainable,
            ..self
        }
    }
}

/// A layer: a named, lazily built computation with weights.
///
/// Implementors provide [`base`](Layer::base), [`class_name`](Layer::class_name),
/// [`build`](Layer::build) (create weights with [`LayerBase::add_weight`]),
/// [`call_with`](Layer::call_with) and [`get_config`](Layer::get_config);
/// composite layers also list their [`sublayers`](Layer::sublayers). Users
/// call [`call`](Layer::call) (one input, one output) or
/// [`call_many`](Layer::call_many), which build on first use.
///
/// ```
/// use rime_layers::{Dense, Layer};
/// use rime_tensor::Tensor;
/// let dense = Dense::new(3);
/// let y = dense.call(&Tensor::<f32>::ones([2, 4])?, false)?;
/// assert_eq!(y.shape(), &[2, 3]);
/// assert_eq!(dense.weights().len(), 2); // kernel [4, 3] and bias [3]
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub trait Layer<T: Element = f32>: std::any::Any + Send + Sync {
    /// The state every layer has: name, trainable flag, weights, losses.
    fn base(&self) -> &LayerBase<T>;

    /// The class name, as in Keras (`"Dense"`). The default is the
    /// type's name without its path and generic arguments
    /// (`my_crate::SimpleDense<f32>` → `"SimpleDense"`).
    fn class_name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// Creates the weights for inputs of these shapes. Called once, before
    /// the first call; the default creates none.
    ///
    /// The shapes may have unknown (`None`) dimensions: a model builds its
    /// layers for `(None, ..)`, the batch size unknown, as Keras does. A
    /// layer reads the sizes it needs with [`LayerBase::known_dim`] (or
    /// [`LayerBase::last_dim`]), which give
    /// [`Error::UnknownDimension`] naming the layer when one is unknown.
    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        let _ = input_shapes;
        Ok(())
    }

    /// The computation, on built weights.
    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>>;

    /// The layer's constructor arguments as serde data (Keras' `get_config`).
    /// The default is Keras' base config, `{"name": .., "trainable": ..}`:
    /// enough for a layer that is never rebuilt from a config.
    fn get_config(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name(), "trainable": self.trainable() })
    }

    /// Output shapes for inputs of these shapes, `None` where a dimension
    /// cannot be known before the call (Keras: `Dense(3)` on `(None, 4)`
    /// gives `(None, 3)`).
    ///
    /// The default builds the layer and runs it on zeros (unrecorded,
    /// inference mode). Unknown dimensions are probed with two sizes
    /// ([`PROBE_SIZES`]); an output dimension that differs between the two
    /// runs is reported unknown. Layers whose output depends on an unknown
    /// size in a way two probes cannot tell (or that cannot run on the
    /// probe sizes) override this; every built-in layer does.
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.ensure_built(input_shapes)?;
        let run = |size: usize| -> Result<Vec<Shape>> {
            let zeros: Vec<Tensor<T>> = input_shapes
                .iter()
                .map(|s| {
                    Tensor::zeros(Shape::from(
                        s.iter().map(|d| d.unwrap_or(size)).collect::<Vec<_>>(),
                    ))
                })
                .collect::<rime_tensor::Result<_>>()?;
            let out = rime_tape::no_record(|| self.apply(&zeros, CallContext::INFERENCE))?;
            Ok(out.iter().map(|t| t.shape().clone()).collect())
        };
        let first = run(PROBE_SIZES[0])?;
        if input_shapes.iter().all(|s| s.is_fully_known()) {
            return Ok(first.into_iter().map(PartialShape::from).collect());
        }
        let second = run(PROBE_SIZES[1])?;
        Ok(first
            .iter()
            .zip(&second)
            .map(|(a, b)| {
                if a.rank() != b.rank() {
                    return PartialShape::new(std::iter::repeat_n(None, a.rank()));
                }
                PartialShape::new(a.iter().zip(b.iter()).map(|(&x, &y)| (x == y).then_some(x)))
            })
            .collect())
    }

    /// Layers whose weights this layer holds (composite layers, models).
    /// The default is the layers registered with [`LayerBase::track`]:
    /// a composite layer that creates its sublayers through `track` needs
    /// no `sublayers` of its own.
    fn sublayers(&self) -> Vec<LayerRef<T>> {
        self.base().tracked()
    }

    /// This layer's own random stream (Dropout's mask generator), if it has
    /// one. Checkpoints save and restore it, so that a resumed run draws the
    /// same masks as an uninterrupted one.
    fn random_stream(&self) -> Option<&std::sync::Mutex<rime_tensor::Rng>> {
        None
    }

    /// A layer of the same class and config with fresh (unbuilt) weights.
    /// The default rebuilds it from [`get_config`](Layer::get_config)
    /// through [`crate::config::layer_from_config`].
    fn fresh(&self) -> Result<LayerRef<T>> {
        crate::config::layer_from_config(&crate::config::LayerConfig {
            class_name: self.class_name().to_string(),
            config: self.get_config(),
        })
    }

    /// The layer's name (unique automatic names like `dense_1`).
    fn name(&self) -> &str {
        self.base().name()
    }

    /// Whether this layer's weights train.
    fn trainable(&self) -> bool {
        self.base().trainable()
    }

    /// Freezes or unfreezes this layer (see the module docs for the rules).
    fn set_trainable(&self, trainable: bool) {
        self.base().set_trainable(trainable)
    }

    /// Whether the weights exist.
    fn built(&self) -> bool {
        self.base().is_built()
    }

    /// Builds for these input shapes unless built.
    fn ensure_built(&self, input_shapes: &[PartialShape]) -> Result<()> {
        self.base().build_once(|| self.build(input_shapes))
    }

    /// Keras' `__call__`: builds if needed, then runs `call_with`. Models
    /// and composite layers call their sublayers through this.
    ///
    /// Two things happen here, once for every layer, so that no
    /// implementation can forget them: `call_with` gets the context
    /// [`within`](CallContext::within) this layer's flag *and* the context
    /// of the call it is nested in (a frozen layer calls everything inside
    /// it frozen, even a sublayer it calls with a fresh
    /// `call(x, true)` instead of forwarding `ctx`: a BatchNormalization in
    /// a frozen composite runs in inference mode, docs/design.md rule 6),
    /// and the losses added with [`LayerBase::add_loss`] are cleared when
    /// an outermost call starts, so a layer called twice in one forward
    /// pass keeps both calls' losses (Keras).
    fn apply(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let call = NestedCall::begin(self, || inputs.iter().map(|t| t.shape().into()), ctx)?;
        self.call_with(inputs, call.ctx)
    }

    /// [`apply`](Layer::apply) on model data: inputs that may be integer
    /// tensors (token ids), as a model's first layers get them. Builds if
    /// needed, then runs [`call_data_with`](Layer::call_data_with) with
    /// the same context rules as `apply`; all-float inputs go through
    /// `apply` itself.
    ///
    /// ```
    /// use rime_layers::{CallContext, Dense, Embedding, Layer, ModelData};
    /// use rime_tensor::Tensor;
    /// let ids = ModelData::<f32>::from(Tensor::vector(vec![3i64, 0]));
    /// // an Embedding reads the ids as integers
    /// let emb = Embedding::<f32>::new(4, 2);
    /// let rows = emb.apply_data(std::slice::from_ref(&ids), CallContext::INFERENCE)?;
    /// assert_eq!(rows[0].shape(), &[2, 2]);
    /// // another layer casts them to its float type (Keras)
    /// let dense = Dense::<f32>::new(1);
    /// let x = ModelData::<f32>::from(Tensor::from_vec(vec![1i64, 2], [1, 2])?);
    /// let y = dense.apply_data(&[x], CallContext::INFERENCE)?;
    /// assert_eq!(y[0], dense.call(&Tensor::from_vec(vec![1.0, 2.0], [1, 2])?, false)?);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    fn apply_data(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        if let Some(floats) = inputs
            .iter()
            .map(|d| d.as_float().cloned())
            .collect::<Option<Vec<_>>>()
        {
            return self.apply(&floats, ctx);
        }
        let call = NestedCall::begin(self, || inputs.iter().map(|d| d.shape().into()), ctx)?;
        self.call_data_with(inputs, call.ctx)
    }

    /// The computation on model data with integer inputs (see
    /// [`apply_data`](Layer::apply_data)). The default casts integers to
    /// the layer's float type, as Keras does for a float layer fed
    /// integers, and runs [`call_with`](Layer::call_with); `Embedding`
    /// reads ids as integers, and models pass the data on to the layers
    /// that take their inputs.
    fn call_data_with(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let floats = inputs
            .iter()
            .map(ModelData::to_float)
            .collect::<Result<Vec<_>>>()?;
        self.call_with(&floats, ctx)
    }

    /// Calls the layer on one input, expecting one output.
    fn call(&self, x: &Tensor<T>, training: bool) -> Result<Tensor<T>> {
        let mut out = self.apply(std::slice::from_ref(x), CallContext::new(training))?;
        if out.len() != 1 {
            return Err(Error::InvalidArgument {
                what: format!("layer `{}`", self.name()),
                msg: format!(
                    "call expects one output, the layer returned {}; use call_many",
                    out.len()
                ),
            });
        }
        Ok(out.remove(0))
    }

    /// [`call`](Layer::call) on model data: one input that may be integer
    /// ids (see [`apply_data`](Layer::apply_data)), one output.
    ///
    /// ```
    /// use rime_layers::{Embedding, Layer, ModelData, Sequential};
    /// use rime_tensor::Tensor;
    /// let model = Sequential::<f32>::new().add(Embedding::new(10, 2));
    /// let ids = Tensor::vector(vec![9i64, 0, 9]);
    /// let rows = model.call_data(&ModelData::from(&ids), false)?;
    /// assert_eq!(rows.shape(), &[3, 2]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    fn call_data(&self, x: &ModelData<T>, training: bool) -> Result<Tensor<T>> {
        let mut out = self.apply_data(std::slice::from_ref(x), CallContext::new(training))?;
        if out.len() != 1 {
            return Err(Error::InvalidArgument {
                what: format!("layer `{}`", self.name()),
                msg: format!(
                    "call_data expects one output, the layer returned {}; use apply_data",
                    out.len()
                ),
            });
        }
        Ok(out.remove(0))
    }

    /// Calls the layer on several inputs.
    fn call_many(&self, inputs: &[Tensor<T>], training: bool) -> Result<Vec<Tensor<T>>> {
        self.apply(inputs, CallContext::new(training))
    }

    /// All weights, each once, in Keras' order: the
    /// [trainable](Layer::trainable_weights) ones, then the
    /// [non-trainable](Layer::non_trainable_weights) ones. The order follows
    /// the `trainable` flags; [`variables`](Layer::variables) gives a fixed
    /// one.
    ///
    /// ```
    /// use rime_layers::{Dense, Layer, Sequential};
    /// let model = Sequential::<f32>::new()
    ///     .add(Dense::new(3).named("first"))
    ///     .add(Dense::new(1).named("second"))
    ///     .with_input_shape([2])?;
    /// model.get_layer("first").unwrap().set_trainable(false);
    /// let names: Vec<String> = model.weights().iter().map(|v| v.name().to_string()).collect();
    /// assert_eq!(names, ["second/kernel", "second/bias", "first/kernel", "first/bias"]);
    /// assert_eq!(model.variables()[0].name(), "first/kernel"); // fixed order
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    fn weights(&self) -> Vec<Variable<T>> {
        let mut out = self.trainable_weights();
        out.extend(self.non_trainable_weights());
        dedup(out)
    }

    /// All weights, each once, in an order that does not depend on any
    /// `trainable` flag: this layer's own in creation order, then each
    /// sublayer's. Weight and checkpoint files are written and read in
    /// this order, so a file saved with some layers frozen loads into a
    /// fresh model.
    fn variables(&self) -> Vec<Variable<T>> {
        let mut out = self.base().own_weights();
        for l in self.sublayers() {
            out.extend(l.variables());
        }
        dedup(out)
    }

    /// The weights a training step may change: none if this layer is
    /// frozen; otherwise its trainable variables and its sublayers'
    /// trainable weights.
    fn trainable_weights(&self) -> Vec<Variable<T>> {
        if !self.trainable() {
            return Vec::new();
        }
        let mut out: Vec<Variable<T>> = self
            .base()
            .own_weights()
            .into_iter()
            .filter(|v| v.trainable())
            .collect();
        for l in self.sublayers() {
            out.extend(l.trainable_weights());
        }
        dedup(out)
    }

    /// The weights that do not train: all of them if this layer is frozen.
    fn non_trainable_weights(&self) -> Vec<Variable<T>> {
        if !self.trainable() {
            return self.variables();
        }
        let mut out: Vec<Variable<T>> = self
            .base()
            .own_weights()
            .into_iter()
            .filter(|v| !v.trainable())
            .collect();
        for l in self.sublayers() {
            out.extend(l.non_trainable_weights());
        }
        dedup(out)
    }

    /// Copies of the weights' values, in [`weights`](Layer::weights) order.
    fn get_weights(&self) -> Vec<Tensor<T>> {
        self.weights().iter().map(|v| v.value_untracked()).collect()
    }

    /// Assigns values to all weights, in [`weights`](Layer::weights) order.
    /// Checks the count and every shape first: a bad call assigns nothing.
    fn set_weights(&self, values: &[Tensor<T>]) -> Result<()> {
        assign_all(self, &self.weights(), values)
    }

    /// Penalties to add to the loss: weight regularizers (computed now from
    /// the current values, so they are recorded on an active tape), losses
    /// added during the last call, and the sublayers' losses.
    fn losses(&self) -> Result<Vec<Tensor<T>>> {
        let mut out = self.base().own_losses()?;
        // a layer held twice (called twice) reports its losses once
        for l in dedup_layers(self.sublayers()) {
            out.extend(l.losses()?);
        }
        Ok(out)
    }

    /// Number of scalars in all weights.
    fn count_params(&self) -> usize {
        self.weights().iter().map(|v| v.len()).sum()
    }
}

thread_local! {
    /// The context of the innermost `apply` running on this thread.
    static ENCLOSING: std::cell::Cell<Option<CallContext>> = const { std::cell::Cell::new(None) };
}

/// An `apply` in progress: its context, frozen if the enclosing call is,
/// becomes the enclosing context until it ends.
struct NestedCall {
    ctx: CallContext,
    previous: Option<CallContext>,
}

impl NestedCall {
    /// The call of `layer` as [`Layer::apply`] and [`Layer::apply_data`]
    /// make it: the layer built for the inputs' `shapes` if it is not yet,
    /// then entered within its own flag and the enclosing call's.
    fn begin<T, L, S>(layer: &L, shapes: impl FnOnce() -> S, ctx: CallContext) -> Result<Self>
    where
        T: Element,
        L: Layer<T> + ?Sized,
        S: Iterator<Item = PartialShape>,
    {
        if !layer.built() {
            layer.ensure_built(&shapes().collect::<Vec<_>>())?;
        }
        Ok(NestedCall::enter(ctx.within(layer.trainable()), || {
            clear_losses_deep(layer)
        }))
    }

    /// Runs `on_outermost` first if no `apply` is running on this thread.
    fn enter(ctx: CallContext, on_outermost: impl FnOnce()) -> NestedCall {
        let previous = ENCLOSING.with(|e| e.get());
        let ctx = match previous {
            None => {
                on_outermost();
                ctx
            }
            Some(outer) => ctx.within(outer.trainable),
        };
        ENCLOSING.with(|e| e.set(Some(ctx)));
        NestedCall { ctx, previous }
    }
}

impl Drop for NestedCall {
    fn drop(&mut self) {
        ENCLOSING.with(|e| e.set(self.previous));
    }
}

/// `a::b::Name<c::T>` → `Name`.
fn short_type_name(full: &'static str) -> &'static str {
    let head = full.split('<').next().unwrap_or(full);
    head.rsplit("::").next().unwrap_or(head)
}

/// Clears the call losses of `layer` and everything inside it.
fn clear_losses_deep<T: Element, L: Layer<T> + ?Sized>(layer: &L) {
    layer.base().clear_call_losses();
    for l in layer.sublayers() {
        clear_losses_deep(&*l);
    }
}

/// Assigns `values` to `vars` (weights of `layer`), checking the count and
/// every shape first: a bad call assigns nothing.
pub(crate) fn assign_all<T: Element, L: Layer<T> + ?Sized>(
    layer: &L,
    vars: &[Variable<T>],
    values: &[Tensor<T>],
) -> Result<()> {
    let err = |msg: String| Error::SetWeights {
        layer: layer.name().to_string(),
        msg,
    };
    if values.len() != vars.len() {
        let hint = if vars.is_empty() && !layer.built() {
            " (the layer is not built yet)"
        } else {
            ""
        };
        return Err(err(format!(
            "expected {} arrays, got {}{hint}",
            vars.len(),
            values.len()
        )));
    }
    for (w, v) in vars.iter().zip(values) {
        if w.shape() != *v.shape() {
            return Err(err(format!(
                "weight `{}` has shape {}, got {}",
                w.name(),
                w.shape(),
                v.shape()
            )));
        }
    }
    for (w, v) in vars.iter().zip(values) {
        w.assign(v)?;
    }
    Ok(())
}

/// Keeps the first occurrence of each layer (by identity).
pub(crate) fn dedup_layers<T: Element>(layers: Vec<LayerRef<T>>) -> Vec<LayerRef<T>> {
    let mut seen: FxHashSet<*const LayerBase<T>> = FxHashSet::default();
    layers
        .into_iter()
        .filter(|l| seen.insert(l.base() as *const LayerBase<T>))
        .collect()
}

/// Keeps the first occurrence of each variable.
pub(crate) fn dedup<T: Element>(vars: Vec<Variable<T>>) -> Vec<Variable<T>> {
    let mut seen: FxHashSet<TensorId> = FxHashSet::default();
    vars.into_iter().filter(|v| seen.insert(v.id())).collect()
}

/// How [`LayerBase::add_weight`] makes a weight (Keras' `add_weight`
/// arguments: name, shape, initializer, trainable, regularizer,
/// constraint).
///
/// ```
/// use rime_layers::{initializers::Initializer, regularizers::Regularizer, WeightSpec};
/// let spec = WeightSpec::<f32>::new("kernel", [4, 3])
///     .initializer(Initializer::Zeros)
///     .regularizer(Some(Regularizer::L2 { l2: 0.01 }));
/// # let _ = spec;
/// ```
pub struct WeightSpec<T: Element = f32> {
    name: String,
    shape: Shape,
    initializer: Initializer,
    trainable: bool,
    regularizer: Option<Regularizer>,
    constraint: Option<Arc<dyn Constraint<T>>>,
}

impl<T: Element> WeightSpec<T> {
    /// A trainable weight initialized with Glorot uniform.
    pub fn new(name: impl Into<String>, shape: impl Into<Shape>) -> Self {
        WeightSpec {
            name: name.into(),
            shape: shape.into(),
            initializer: Initializer::glorot_uniform(),
            trainable: true,
            regularizer: None,
            constraint: None,
        }
    }

    /// The initializer.
    pub fn initializer(mut self, i: Initializer) -> Self {
        self.initializer = i;
        self
    }

    /// Whether gradient training may change it (false: a statistic, a fixed bias).
    pub fn trainable(mut self, trainable: bool) -> Self {
        self.trainable = trainable;
        self
    }

    /// A penalty added to the layer's losses.
    pub fn regularizer(mut self, r: Option<Regularizer>) -> Self {
        self.regularizer = r;
        self
    }

    /// A projection optimizers apply after each update.
    pub fn constraint(mut self, c: Option<Arc<dyn Constraint<T>>>) -> Self {
        self.constraint = c;
        self
    }
}

/// A layer's handle on a weight it creates in [`Layer::build`]: a field
/// that starts empty and is [`set`](Weight::set) to the variable
/// [`LayerBase::add_weight`] returns. Reading it before the layer is built
/// is a typed error, not a panic.
///
/// ```
/// use rime_layers::{LayerBase, Weight, WeightSpec};
/// let base = LayerBase::<f32>::new("MyLayer", None);
/// let w = Weight::new();
/// assert!(w.value().is_err()); // not built yet
/// w.set(base.add_weight(WeightSpec::new("w", [2, 2]))?);
/// assert_eq!(w.value()?.shape(), &[2, 2]);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Weight<T: Element = f32> {
    var: RwLock<Option<Variable<T>>>,
}

impl<T: Element> Weight<T> {
    /// An empty handle.
    pub fn new() -> Self {
        Weight {
            var: RwLock::new(None),
        }
    }

    /// Points the handle at `var` (in `build`; a rebuild after a failed
    /// build replaces it).
    pub fn set(&self, var: Variable<T>) {
        *self.var.write().unwrap_or_else(|p| p.into_inner()) = Some(var);
    }

    /// The variable, once set.
    pub fn get(&self) -> Option<Variable<T>> {
        self.var.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The variable, or an error if the layer is not built.
    pub fn variable(&self) -> Result<Variable<T>> {
        self.get().ok_or_else(|| Error::InvalidArgument {
            what: "layer weight".into(),
            msg: "read before the layer was built (call the layer with `call`/`apply`, \
                  which build first)"
                .into(),
        })
    }

    /// The current value, recorded on an active tape (for `call_with`).
    pub fn value(&self) -> Result<Tensor<T>> {
        Ok(self.variable()?.value())
    }
}

impl<T: Element> Default for Weight<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> fmt::Debug for Weight<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(v) => write!(f, "Weight({})", v.name()),
            None => f.write_str("Weight(unbuilt)"),
        }
    }
}

struct OwnWeight<T: Element> {
    var: Variable<T>,
    created_trainable: bool,
    regularizer: Option<Regularizer>,
}

/// The state every layer has: its name, `trainable` flag, weights (in
/// creation order), whether it is built, and losses added during a call.
pub struct LayerBase<T: Element = f32> {
    name: String,
    trainable: AtomicBool,
    built: Mutex<bool>,
    weights: RwLock<Vec<OwnWeight<T>>>,
    sublayers: RwLock<Vec<LayerRef<T>>>,
    call_losses: Mutex<Vec<Tensor<T>>>,
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static NAME_COUNTS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// A unique name from a prefix: `dense`, then `dense_1`, `dense_2`, ...
/// (Keras' automatic names).
pub fn unique_name(prefix: &str) -> String {
    let mut counts = lock(&NAME_COUNTS);
    let n = counts
        .get_or_insert_with(HashMap::new)
        .entry(prefix.to_string())
        .or_insert(0);
    let name = if *n == 0 {
        prefix.to_string()
    } else {
        format!("{prefix}_{n}")
    };
    *n += 1;
    name
}

/// `BatchNormalization` → `batch_normalization`, `Conv2D` → `conv2d`,
/// `MaxPooling2D` → `max_pooling2d` (Keras' `to_snake_case`: a break before
/// an upper-case letter that starts a word or follows a lower-case one).
pub(crate) fn snake_case(class: &str) -> String {
    let chars: Vec<char> = class.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let after_lower = i > 0 && chars[i - 1].is_lowercase();
        if c.is_uppercase() && i > 0 && (starts_word || after_lower) {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

impl<T: Element> LayerBase<T> {
    /// State for a layer of `class_name` (e.g. `"Dense"`), named `name` or,
    /// if `None`, automatically (`dense`, `dense_1`, ...).
    pub fn new(class_name: &str, name: Option<String>) -> Self {
        LayerBase {
            name: name.unwrap_or_else(|| unique_name(&snake_case(class_name))),
            trainable: AtomicBool::new(true),
            built: Mutex::new(false),
            weights: RwLock::new(Vec::new()),
            sublayers: RwLock::new(Vec::new()),
            call_losses: Mutex::new(Vec::new()),
        }
    }

    /// Registers `layer` as a sublayer (Keras tracks layers assigned to
    /// attributes): its weights, losses and trainable flag then count as
    /// this layer's, through the default [`Layer::sublayers`]. Returns the
    /// shared handle to keep in a field and call.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rime_layers::{Dense, Layer, LayerBase};
    /// let base = LayerBase::<f32>::new("Block", None);
    /// let head: Arc<Dense> = base.track(Dense::new(2));
    /// assert_eq!(base.tracked().len(), 1);
    /// # let _ = head;
    /// ```
    pub fn track<L: Layer<T>>(&self, layer: L) -> Arc<L> {
        self.track_shared(Arc::new(layer))
    }

    /// [`track`](LayerBase::track) for a layer already shared (a layer
    /// also used elsewhere: its weights are tied).
    pub fn track_shared<L: Layer<T>>(&self, layer: Arc<L>) -> Arc<L> {
        self.sublayers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(layer.clone());
        layer
    }

    /// The layers registered with [`track`](LayerBase::track), in order.
    pub fn tracked(&self) -> Vec<LayerRef<T>> {
        self.sublayers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the layer (for `named(..)` builders, before the layer is
    /// shared).
    pub fn rename(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The layer's flag.
    pub fn trainable(&self) -> bool {
        self.trainable.load(Ordering::Relaxed)
    }

    /// Sets the flag, and the `trainable` flag of the variables this layer
    /// created as trainable (Keras 3).
    pub fn set_trainable(&self, trainable: bool) {
        self.trainable.store(trainable, Ordering::Relaxed);
        for w in self
            .weights
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if w.created_trainable {
                w.var.set_trainable(trainable);
            }
        }
    }

    /// Whether BatchNormalization-like state should update: training mode,
    /// this layer trainable, and not called through a frozen model.
    pub fn is_training(&self, ctx: CallContext) -> bool {
        ctx.training && ctx.trainable && self.trainable()
    }

    /// Whether `build` has run.
    pub fn is_built(&self) -> bool {
        *lock(&self.built)
    }

    /// Marks the layer built without calling `build` (layers without
    /// weights, models built at construction).
    pub fn mark_built(&self) {
        *lock(&self.built) = true;
    }

    /// Runs `build` once. If it fails, the weights it added are removed so a
    /// later call can build again.
    pub fn build_once(&self, build: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut built = lock(&self.built);
        if *built {
            return Ok(());
        }
        let before = self.weights.read().unwrap_or_else(|p| p.into_inner()).len();
        match build() {
            Ok(()) => {
                *built = true;
                Ok(())
            }
            Err(e) => {
                self.weights
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .truncate(before);
                Err(e)
            }
        }
    }

    /// Creates a weight (Keras' `add_weight`), named `<layer>/<name>`.
    ///
    /// ```
    /// use rime_layers::{LayerBase, WeightSpec};
    /// let base = LayerBase::<f32>::new("MyLayer", None);
    /// let w = base.add_weight(WeightSpec::new("w", [2, 2]))?;
    /// assert_eq!(w.name(), format!("{}/w", base.name()));
    /// assert_eq!(base.own_weights(), vec![w]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn add_weight(&self, spec: WeightSpec<T>) -> Result<Variable<T>> {
        if let Some(r) = &spec.regularizer {
            r.validate()?;
        }
        let value = spec.initializer.init::<T>(&spec.shape)?;
        let var = Variable::new(format!("{}/{}", self.name, spec.name), value);
        // a weight created in a frozen layer starts frozen (Keras 3)
        var.set_trainable(spec.trainable && self.trainable());
        var.set_constraint(spec.constraint);
        self.weights
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(OwnWeight {
                var: var.clone(),
                created_trainable: spec.trainable,
                regularizer: spec.regularizer,
            });
        Ok(var)
    }

    /// Registers an existing variable as one of this layer's weights (a
    /// tied weight: the variable of another layer, used here too).
    pub fn track_weight(&self, var: Variable<T>) {
        let created_trainable = var.trainable();
        self.weights
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(OwnWeight {
                var,
                created_trainable,
                regularizer: None,
            });
    }

    /// This layer's own weights (not sublayers'), in creation order.
    pub fn own_weights(&self) -> Vec<Variable<T>> {
        self.weights
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|w| w.var.clone())
            .collect()
    }

    /// Adds a loss for this call (Keras' `add_loss`, activity regularizers).
    /// Losses accumulate over the calls of one outermost forward pass and
    /// are cleared when the next one starts.
    pub fn add_loss(&self, loss: Tensor<T>) {
        lock(&self.call_losses).push(loss);
    }

    fn clear_call_losses(&self) {
        lock(&self.call_losses).clear();
    }

    fn own_losses(&self) -> Result<Vec<Tensor<T>>> {
        let mut out = Vec::new();
        for w in self
            .weights
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if let Some(r) = &w.regularizer {
                out.push(r.penalty(&w.var.value())?);
            }
        }
        out.extend(lock(&self.call_losses).iter().cloned());
        Ok(out)
    }

    /// The error for using weights before the layer is built.
    pub fn not_built(&self) -> Error {
        Error::InvalidArgument {
            what: format!("layer `{}`", self.name),
            msg: "called before it was built (use `call`/`apply`, which build first)".into(),
        }
    }

    /// The error for inputs a layer cannot take (shapes concrete, as in
    /// `call_with`, or partial, as in `build`).
    pub fn bad_input<S>(&self, inputs: &[S], msg: impl Into<String>) -> Error
    where
        for<'s> &'s S: Into<PartialShape>,
    {
        Error::Input {
            layer: self.name.clone(),
            shapes: inputs.iter().map(Into::into).collect(),
            msg: msg.into(),
        }
    }

    /// The size of axis `axis` of input `input`, which the layer needs
    /// (`what`: "to size its kernel"), or [`Error::UnknownDimension`]
    /// naming the layer and the shapes when it is unknown (`None`).
    ///
    /// ```
    /// use rime_layers::{Error, LayerBase};
    /// use rime_tensor::PartialShape;
    /// let base = LayerBase::<f32>::new("MyLayer", Some("mine".into()));
    /// let shapes = [PartialShape::from([None, Some(4), None])];
    /// assert_eq!(base.known_dim(&shapes, 0, 1, "to size its kernel")?, 4);
    /// let e = base.known_dim(&shapes, 0, 2, "to size its kernel").unwrap_err();
    /// assert!(matches!(e, Error::UnknownDimension { axis: 2, .. }));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "layer `mine` needs the size of axis 2 to size its kernel, unknown in input shapes [(None, 4, None)]"
    /// );
    /// # Ok::<(), Error>(())
    /// ```
    pub fn known_dim(
        &self,
        input_shapes: &[PartialShape],
        input: usize,
        axis: usize,
        what: &str,
    ) -> Result<usize> {
        let Some(s) = input_shapes.get(input) else {
            return Err(self.bad_input(input_shapes, format!("expects an input #{input}")));
        };
        if axis >= s.rank() {
            return Err(self.bad_input(
                input_shapes,
                format!("has no axis {axis} in an input of rank {}", s.rank()),
            ));
        }
        s.dim(axis).ok_or_else(|| Error::UnknownDimension {
            layer: self.name.clone(),
            shapes: input_shapes.to_vec(),
            axis,
            what: what.to_string(),
        })
    }

    /// The size of the last axis of the single input shape (what a
    /// Dense-like `build` sizes its kernel by), or an error naming the
    /// layer: [`Error::Input`] for no such axis,
    /// [`Error::UnknownDimension`] when it is unknown.
    pub fn last_dim(&self, input_shapes: &[PartialShape]) -> Result<usize> {
        match input_shapes {
            [s] if s.rank() >= 1 => {
                self.known_dim(input_shapes, 0, s.rank() - 1, "to size its weights")
            }
            _ => Err(self.bad_input(input_shapes, "expects one input of rank >= 1")),
        }
    }

    /// The single input of a one-input layer, or an error naming the layer.
    pub fn single<'a>(&self, inputs: &'a [Tensor<T>]) -> Result<&'a Tensor<T>> {
        match inputs {
            [x] => Ok(x),
            _ => Err(self.bad_input(
                &inputs.iter().map(|t| t.shape().clone()).collect::<Vec<_>>(),
                format!("expects one input, got {}", inputs.len()),
            )),
        }
    }
}

impl<T: Element> fmt::Debug for LayerBase<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerBase")
            .field("name", &self.name)
            .field("trainable", &self.trainable())
            .field("built", &self.is_built())
            .field(
                "weights",
                &self
                    .own_weights()
                    .iter()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Any `Arc` of a layer is a layer (the shared handle).
impl<T: Element, L: Layer<T> + ?Sized> Layer<T> for Arc<L> {
    fn base(&self) -> &LayerBase<T> {
        (**self).base()
    }
    fn class_name(&self) -> &'static str {
        (**self).class_name()
    }
    fn build(&self, input_shapes: &[PartialShape]) -> Result<()> {
        (**self).build(input_shapes)
    }
    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        (**self).call_with(inputs, ctx)
    }
    fn get_config(&self) -> serde_json::Value {
        (**self).get_config()
    }
    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        (**self).compute_output_shape(input_shapes)
    }
    fn sublayers(&self) -> Vec<LayerRef<T>> {
        (**self).sublayers()
    }
    fn fresh(&self) -> Result<LayerRef<T>> {
        (**self).fresh()
    }
    fn set_trainable(&self, trainable: bool) {
        (**self).set_trainable(trainable)
    }
    fn trainable_weights(&self) -> Vec<Variable<T>> {
        (**self).trainable_weights()
    }
    fn non_trainable_weights(&self) -> Vec<Variable<T>> {
        (**self).non_trainable_weights()
    }
    fn weights(&self) -> Vec<Variable<T>> {
        (**self).weights()
    }
    fn variables(&self) -> Vec<Variable<T>> {
        (**self).variables()
    }
    fn apply(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        (**self).apply(inputs, ctx)
    }
    fn apply_data(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        (**self).apply_data(inputs, ctx)
    }
    fn call_data_with(&self, inputs: &[ModelData<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        (**self).call_data_with(inputs, ctx)
    }
    fn losses(&self) -> Result<Vec<Tensor<T>>> {
        (**self).losses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_names_are_unique() {
        let a = unique_name("unit_test_layer");
        let b = unique_name("unit_test_layer");
        assert_eq!(a, "unit_test_layer");
        assert_eq!(b, "unit_test_layer_1");
        assert_eq!(snake_case("BatchNormalization"), "batch_normalization");
        assert_eq!(snake_case("Conv2D"), "conv2d");
        assert_eq!(snake_case("MaxPooling2D"), "max_pooling2d");
        assert_eq!(snake_case("Conv2DTranspose"), "conv2d_transpose");
    }

    #[test]
    fn failed_build_leaves_no_weights() {
        let base = LayerBase::<f32>::new("T", None);
        let r = base.build_once(|| {
            base.add_weight(WeightSpec::new("a", [2]))?;
            Err(base.bad_input::<Shape>(&[], "nope"))
        });
        assert!(r.is_err());
        assert!(base.own_weights().is_empty());
        assert!(!base.is_built());
        base.build_once(|| base.add_weight(WeightSpec::new("a", [2])).map(|_| ()))
            .unwrap();
        assert_eq!(base.own_weights().len(), 1);
    }

    #[test]
    fn freezing_flips_created_trainable_variables_only() {
        let base = LayerBase::<f32>::new("T", None);
        let w = base.add_weight(WeightSpec::new("w", [1])).unwrap();
        let s = base
            .add_weight(WeightSpec::new("s", [1]).trainable(false))
            .unwrap();
        base.set_trainable(false);
        assert!(!w.trainable() && !s.trainable());
        base.set_trainable(true);
        assert!(w.trainable() && !s.trainable());
    }
}
