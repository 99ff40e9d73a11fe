//! [`GradientTape`]: recording ops on this thread and computing gradients
//! from the record. The gradient of each op comes from `rules/`; this file
//! only records and walks the record.
//!
//! Recording: every tensor op reports `(op, inputs, output)` through the
//! hook rime-tensor calls while a tape is active. Each active, unpaused
//! tape that tracks one of the inputs (because it watches it, or recorded
//! the op that made it) appends a node. Variable reads are nodes too, from
//! the variable's identity to the tensor read.
//!
//! Gradient: a forward pass over the nodes finds what derives from the
//! requested sources; a reverse pass from the targets applies the rule of
//! every node on a path between them, and only for inputs that derive from
//! a source. While a tape computes a gradient it does not record, but other
//! active tapes do, which is how nested tapes give higher derivatives.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use rime_tensor::record::{self, DynRef};
use rime_tensor::{DType, DynTensor, Element, Op, Shape, Tensor, TensorId};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::mask::ResolvedMask;
use crate::rules;
use crate::variable::{AnyVariable, Variable, VariableElement};
use crate::{Error, Result};

/// The backward function of a custom-gradient op, dtype-erased.
pub(crate) type CustomBackward =
    dyn Fn(&[DynTensor], &DynTensor, &DynTensor) -> Result<SmallVec<[Option<DynTensor>; 3]>>;

pub(crate) enum NodeOp {
    Tensor(Op),
    ReadVariable,
    Custom {
        name: Arc<str>,
        backward: Rc<CustomBackward>,
    },
}

/// Where the gradient for a tracked id accumulates: a watched leaf (tensor
/// or variable), or the output of a recorded node. Resolved once at record
/// time, so the backward pass indexes vectors instead of hashing ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Leaf(u32),
    Node(u32),
}

/// One recorded op. Its input and output tensors sit in the tape's value
/// arena at `start..start + n_inputs + 1` (inputs, then the output).
struct Node {
    op: NodeOp,
    /// Per input, where its gradient goes (`None`: a constant).
    input_slots: SmallVec<[Option<Slot>; 3]>,
    start: u32,
    n_inputs: u32,
}

thread_local! {
    static LIVE_NODES: Cell<usize> = const { Cell::new(0) };
}

/// Number of recorded nodes alive on this thread's tapes (a tape and its
/// nodes never leave the thread that made them). Each node holds the
/// tensors its op's gradient needs; dropping or resetting a tape releases
/// them. For leak tests and diagnostics.
///
/// ```
/// use rime_tape::{live_nodes, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::<f32>::ones([4]);
/// let before = live_nodes();
/// {
///     let tape = GradientTape::new();
///     tape.watch(&x);
///     let _y = x.exp().sum_all();
///     assert_eq!(live_nodes(), before + 2);
/// }
/// assert_eq!(live_nodes(), before);
/// ```
pub fn live_nodes() -> usize {
    LIVE_NODES.with(|n| n.get())
}

#[derive(Default)]
struct TapeState {
    nodes: Vec<Node>,
    /// Inputs and outputs of the nodes, in order.
    values: Vec<DynTensor>,
    /// Every id this tape tracks, and where its gradient goes.
    tracked: FxHashMap<TensorId, Slot>,
    /// Ids of the watched leaves, by leaf index.
    leaves: Vec<TensorId>,
    watched_variables: Vec<AnyVariable>,
}

impl TapeState {
    fn slot_of(&self, id: TensorId) -> Option<Slot> {
        self.tracked.get(&id).copied()
    }

    fn watch(&mut self, id: TensorId) -> bool {
        let leaves = &mut self.leaves;
        let mut new = false;
        self.tracked.entry(id).or_insert_with(|| {
            new = true;
            leaves.push(id);
            Slot::Leaf(leaves.len() as u32 - 1)
        });
        new
    }

    fn push(
        &mut self,
        op: NodeOp,
        input_slots: SmallVec<[Option<Slot>; 3]>,
        inputs: impl Iterator<Item = DynTensor>,
        output: DynTensor,
    ) {
        let start = self.values.len();
        self.values.extend(inputs);
        let n_inputs = self.values.len() - start;
        self.tracked
            .insert(output.id(), Slot::Node(self.nodes.len() as u32));
        self.values.push(output);
        self.nodes.push(Node {
            op,
            input_slots,
            start: start as u32,
            n_inputs: n_inputs as u32,
        });
        LIVE_NODES.with(|n| n.set(n.get() + 1));
    }

    fn io(&self, node: &Node) -> (&[DynTensor], &DynTensor) {
        let s = node.start as usize;
        let n = node.n_inputs as usize;
        (&self.values[s..s + n], &self.values[s + n])
    }
}

impl TapeState {
    /// Drops everything recorded, keeping the allocations.
    fn clear(&mut self) {
        LIVE_NODES.with(|c| c.set(c.get() - self.nodes.len()));
        self.nodes.clear();
        self.values.clear();
        self.tracked.clear();
        self.leaves.clear();
        self.watched_variables.clear();
    }

    /// A cleared state, reusing the last released one's allocations: a
    /// training loop makes a tape per step, and regrowing these vectors
    /// every step costs more than the recording itself.
    fn fresh() -> TapeState {
        SPARE_STATE.with(|s| s.take()).unwrap_or_default()
    }

    /// Clears this state and keeps it for the next tape on this thread.
    fn release(mut self) {
        self.clear();
        SPARE_STATE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare
                .as_ref()
                .is_none_or(|o| o.values.capacity() < self.values.capacity())
            {
                *spare = Some(self);
            }
        });
    }
}

impl Drop for TapeState {
    fn drop(&mut self) {
        LIVE_NODES.with(|c| c.set(c.get() - self.nodes.len()));
    }
}

struct TapeInner {
    persistent: bool,
    watch_accessed_variables: bool,
    paused: Cell<u32>,
    stopped: Cell<bool>,
    used: Cell<bool>,
    state: RefCell<TapeState>,
}

impl TapeInner {
    fn recording(&self) -> bool {
        !self.stopped.get() && self.paused.get() == 0
    }
}

thread_local! {
    static SPARE_STATE: RefCell<Option<TapeState>> = const { RefCell::new(None) };
    static TAPES: RefCell<Vec<Rc<TapeInner>>> = const { RefCell::new(Vec::new()) };
    static NO_RECORD: Cell<u32> = const { Cell::new(0) };
}

/// Turns rime-tensor's recording flag on exactly when some tape on this
/// thread would record.
fn refresh_recording_flag() {
    let on = NO_RECORD.with(|n| n.get()) == 0
        && TAPES.with(|t| t.borrow().iter().any(|t| t.recording()));
    record::set_recording(on);
}

/// Calls `f` with the state of every tape that records now (a tape busy
/// computing a gradient holds its state and is paused: it is skipped).
fn for_each_recording_tape(mut f: impl FnMut(&TapeInner, &mut TapeState, bool)) {
    TAPES.with(|tapes| {
        let tapes = tapes.borrow();
        let n = tapes.len();
        for (i, tape) in tapes.iter().enumerate() {
            if !tape.recording() {
                continue;
            }
            if let Ok(mut st) = tape.state.try_borrow_mut() {
                f(tape, &mut st, i + 1 == n);
            }
        }
    });
}

/// The hook rime-tensor calls for every op while recording is on.
fn on_op(op: Op, inputs: &[DynRef<'_>], output: DynRef<'_>) {
    let mut op = Some(op);
    for_each_recording_tape(|_, st, last| {
        let slots: SmallVec<[Option<Slot>; 3]> =
            inputs.iter().map(|x| st.slot_of(x.id())).collect();
        if slots.iter().all(Option::is_none) {
            return;
        }
        let this = if last { op.take() } else { op.clone() };
        if let Some(this) = this {
            st.push(
                NodeOp::Tensor(this),
                slots,
                inputs.iter().map(DynRef::to_owned),
                output.to_owned(),
            );
        }
    });
}

/// Called by `Variable::value` while recording: connects the read to the
/// variable on every tape that watches it (or, with
/// `watch_accessed_variables`, starts watching it if it is trainable).
pub(crate) fn on_variable_read<T: Element>(var: &Variable<T>, value: &Tensor<T>) -> Tensor<T> {
    let mut read: Option<Tensor<T>> = None;
    for_each_recording_tape(|tape, st, _| {
        let auto_watch = tape.watch_accessed_variables && var.trainable();
        if !auto_watch && !st.tracked.contains_key(&var.id()) {
            return;
        }
        if st.watch(var.id()) {
            st.watched_variables.push(wrap_variable(var));
        }
        let out = read.get_or_insert_with(|| value.detach()).clone();
        let slots = std::iter::once(st.slot_of(var.id())).collect();
        st.push(
            NodeOp::ReadVariable,
            slots,
            std::iter::once(T::into_dyn(value.clone())),
            T::into_dyn(out),
        );
    });
    read.unwrap_or_else(|| value.clone())
}

fn wrap_variable<T: Element>(var: &Variable<T>) -> AnyVariable {
    // Element is implemented for f32 and f64 only; dispatch on the dtype tag.
    match T::DTYPE {
        DType::F32 => AnyVariable::F32(cast_variable::<T, f32>(var)),
        DType::F64 => AnyVariable::F64(cast_variable::<T, f64>(var)),
    }
}

fn cast_variable<T: Element, U: Element>(var: &Variable<T>) -> Variable<U> {
    let any: &dyn std::any::Any = var;
    any.downcast_ref::<Variable<U>>()
        .cloned()
        .expect("dtype tag matches the element type")
}

/// Records a custom-gradient node on every tape that tracks an input.
pub(crate) fn record_custom(
    name: Arc<str>,
    backward: Rc<CustomBackward>,
    inputs: &[DynTensor],
    output: DynTensor,
) {
    for_each_recording_tape(|_, st, _| {
        let slots: SmallVec<[Option<Slot>; 3]> =
            inputs.iter().map(|x| st.slot_of(x.id())).collect();
        if slots.iter().any(Option::is_some) {
            let op = NodeOp::Custom {
                name: name.clone(),
                backward: backward.clone(),
            };
            st.push(op, slots, inputs.iter().cloned(), output.clone());
        }
    });
}

/// Runs `f` with recording off on every tape of this thread (PyTorch's
/// `no_grad`). Ops inside are not recorded and variable reads are not
/// connected.
///
/// ```
/// use rime_tape::{no_record, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::<f32>::ones([2]);
/// let tape = GradientTape::new();
/// tape.watch(&x);
/// let y = no_record(|| x.exp());
/// assert!(tape.gradient(&y.sum_all(), &[&x]).is_err()); // y is not on the tape
/// ```
pub fn no_record<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            NO_RECORD.with(|n| n.set(n.get() - 1));
            refresh_recording_flag();
        }
    }
    NO_RECORD.with(|n| n.set(n.get() + 1));
    refresh_recording_flag();
    let _g = Guard;
    f()
}

/// What `gradient` returns for a source the targets do not depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnconnectedGradients {
    /// `None` (TensorFlow's default).
    #[default]
    None,
    /// A tensor of zeros of the source's shape.
    Zero,
}

/// Options for [`GradientTape::gradient_with`].
#[derive(Clone, Debug)]
pub struct GradientOptions<'a, T: Element> {
    /// Seeds, one per target, of the targets' shapes: computes the
    /// vector-Jacobian product `Σ seedᵢ · ∂targetᵢ/∂source` instead of the
    /// gradient of the targets' sum.
    pub output_gradients: Option<&'a [Tensor<T>]>,
    /// What to return for unconnected sources.
    pub unconnected: UnconnectedGradients,
}

impl<T: Element> Default for GradientOptions<'_, T> {
    fn default() -> Self {
        GradientOptions {
            output_gradients: None,
            unconnected: UnconnectedGradients::None,
        }
    }
}

/// Something gradients can be taken with respect to: a watched tensor or a
/// variable.
#[derive(Clone, Debug)]
pub struct SourceRef<T: Element> {
    id: TensorId,
    shape: Shape,
    mask: Option<Arc<ResolvedMask>>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Element> SourceRef<T> {
    /// A variable as a source with an explicit mask instead of its current
    /// one (a training step uses the masks it snapshotted when built).
    ///
    /// ```
    /// use rime_tape::{GradientTape, SourceRef, TrainableMask, Variable};
    /// use rime_tensor::Tensor;
    /// use std::sync::Arc;
    /// let w = Variable::new("w", Tensor::<f32>::ones([2]));
    /// let mask = Arc::new(TrainableMask::rows([1..2]).resolve("w", &w.shape())?);
    /// let tape = GradientTape::new();
    /// let y = w.value().sum_all();
    /// let g = tape.gradient(&y, &[SourceRef::variable_with_mask(&w, Some(mask))])?;
    /// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![0.0, 1.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn variable_with_mask(var: &Variable<T>, mask: Option<Arc<ResolvedMask>>) -> Self {
        SourceRef {
            id: var.id(),
            shape: var.shape(),
            mask,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Element> AsSource<T> for SourceRef<T> {
    fn as_source(&self) -> SourceRef<T> {
        self.clone()
    }
}

/// Conversion into a [`SourceRef`], for `gradient`'s source list.
pub trait AsSource<T: Element> {
    /// The source's identity, shape and mask.
    fn as_source(&self) -> SourceRef<T>;
}

impl<T: Element> AsSource<T> for Tensor<T> {
    fn as_source(&self) -> SourceRef<T> {
        SourceRef {
            id: self.id(),
            shape: self.shape().clone(),
            mask: None,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Element> AsSource<T> for Variable<T> {
    fn as_source(&self) -> SourceRef<T> {
        SourceRef {
            id: self.id(),
            shape: self.shape(),
            mask: self.mask(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Element, S: AsSource<T> + ?Sized> AsSource<T> for &S {
    fn as_source(&self) -> SourceRef<T> {
        (**self).as_source()
    }
}

/// A tensor or a variable, for source lists that mix both.
///
/// ```
/// use rime_tape::{GradientTape, Source, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f64>::full([1], 3.0));
/// let x = Tensor::<f64>::full([1], 2.0);
/// let tape = GradientTape::new();
/// tape.watch(&x);
/// let y = w.value().mul(&x)?.sum_all();
/// let g = tape.gradient(&y, &[Source::from(&w), Source::from(&x)])?;
/// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![2.0]);
/// assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![3.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone, Debug)]
pub enum Source<'a, T: Element> {
    /// A watched tensor.
    Tensor(&'a Tensor<T>),
    /// A variable.
    Variable(&'a Variable<T>),
}

impl<'a, T: Element> From<&'a Tensor<T>> for Source<'a, T> {
    fn from(t: &'a Tensor<T>) -> Self {
        Source::Tensor(t)
    }
}

impl<'a, T: Element> From<&'a Variable<T>> for Source<'a, T> {
    fn from(v: &'a Variable<T>) -> Self {
        Source::Variable(v)
    }
}

impl<T: Element> AsSource<T> for Source<'_, T> {
    fn as_source(&self) -> SourceRef<T> {
        match self {
            Source::Tensor(t) => t.as_source(),
            Source::Variable(v) => v.as_source(),
        }
    }
}

/// Something a tape can watch: a tensor or a variable.
pub trait Watchable {
    /// The identity to watch, and the variable if it is one.
    fn watch_id(&self) -> (TensorId, Option<AnyVariable>);
}

impl<T: Element> Watchable for Tensor<T> {
    fn watch_id(&self) -> (TensorId, Option<AnyVariable>) {
        (self.id(), None)
    }
}

impl<T: Element> Watchable for Variable<T> {
    fn watch_id(&self) -> (TensorId, Option<AnyVariable>) {
        (self.id(), Some(wrap_variable(self)))
    }
}

/// Records the ops run on this thread while it is alive, and computes
/// gradients of recorded results with respect to watched tensors and
/// variables, with TensorFlow's semantics.
///
/// - A tape records from creation until it is dropped or
///   [`stop`](GradientTape::stop)ped; [`stop_recording`] pauses it.
/// - Trainable variables read while it records are watched automatically
///   (`watch_accessed_variables`); tensors are watched with
///   [`watch`](GradientTape::watch).
/// - A non-persistent tape answers one `gradient` (or `jacobian`) call;
///   a persistent one answers many.
/// - Tapes nest: an op is recorded on every active tape that tracks one of
///   its inputs. Gradient rules are themselves recorded ops, so an outer
///   tape records an inner tape's gradient computation (higher derivatives).
///
/// [`stop_recording`]: GradientTape::stop_recording
///
/// ```
/// use rime_tape::GradientTape;
/// use rime_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.5f64], [1])?;
/// let outer = GradientTape::new();
/// outer.watch(&x);
/// let inner = GradientTape::new();
/// inner.watch(&x);
/// let y = x.sin();
/// let dy = inner.gradient(&y, &[&x])?[0].clone().unwrap(); // cos x
/// let d2y = outer.gradient(&dy, &[&x])?[0].clone().unwrap(); // -sin x
/// assert!((d2y.to_vec()[0] + 0.5f64.sin()).abs() < 1e-15);
/// # Ok::<(), rime_tape::Error>(())
/// ```
pub struct GradientTape {
    inner: Rc<TapeInner>,
}

/// Options for creating a [`GradientTape`].
#[derive(Clone, Copy, Debug)]
pub struct TapeBuilder {
    persistent: bool,
    watch_accessed_variables: bool,
}

impl TapeBuilder {
    /// Whether the tape answers several gradient calls.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Whether trainable variables read while recording are watched
    /// automatically (default true).
    pub fn watch_accessed_variables(mut self, watch: bool) -> Self {
        self.watch_accessed_variables = watch;
        self
    }

    /// Creates the tape; it starts recording.
    pub fn start(self) -> GradientTape {
        let inner = Rc::new(TapeInner {
            persistent: self.persistent,
            watch_accessed_variables: self.watch_accessed_variables,
            paused: Cell::new(0),
            stopped: Cell::new(false),
            used: Cell::new(false),
            state: RefCell::new(TapeState::fresh()),
        });
        record::install_hook(on_op);
        TAPES.with(|t| t.borrow_mut().push(inner.clone()));
        refresh_recording_flag();
        GradientTape { inner }
    }
}

/// While alive, the tape it came from does not record
/// ([`GradientTape::stop_recording`]).
pub struct RecordingPaused<'a> {
    tape: &'a GradientTape,
}

impl Drop for RecordingPaused<'_> {
    fn drop(&mut self) {
        let p = &self.tape.inner.paused;
        p.set(p.get() - 1);
        refresh_recording_flag();
    }
}

impl Default for GradientTape {
    fn default() -> Self {
        Self::new()
    }
}

impl GradientTape {
    /// A non-persistent tape watching accessed variables; it starts
    /// recording now.
    pub fn new() -> Self {
        Self::builder().start()
    }

    /// A persistent tape (answers several gradient calls).
    pub fn persistent() -> Self {
        Self::builder().persistent(true).start()
    }

    /// Options: `GradientTape::builder().persistent(true).watch_accessed_variables(false).start()`.
    pub fn builder() -> TapeBuilder {
        TapeBuilder {
            persistent: false,
            watch_accessed_variables: true,
        }
    }

    /// Whether this tape answers several gradient calls.
    pub fn is_persistent(&self) -> bool {
        self.inner.persistent
    }

    /// Whether ops run now are recorded on this tape.
    pub fn is_recording(&self) -> bool {
        self.inner.recording() && NO_RECORD.with(|n| n.get()) == 0
    }

    /// Watches a tensor or a variable: gradients may be taken with respect
    /// to it, and ops on it are recorded.
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::full([2], 3.0);
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.square().sum_all();
    /// assert_eq!(tape.gradient(&y, &[&x])?[0].as_ref().unwrap().to_vec(), vec![6.0, 6.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn watch(&self, x: &impl Watchable) {
        let (id, var) = x.watch_id();
        let mut st = self.inner.state.borrow_mut();
        if st.watch(id) {
            if let Some(v) = var {
                st.watched_variables.push(v);
            }
        }
    }

    /// The variables this tape watches, in the order it started watching
    /// them (explicitly or by access), of element type `T`.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let a = Variable::new("a", Tensor::<f32>::ones([1]));
    /// let frozen = Variable::non_trainable("f", Tensor::<f32>::ones([1]));
    /// let tape = GradientTape::new();
    /// let _ = a.value().add(&frozen.value())?;
    /// let watched: Vec<Variable<f32>> = tape.watched_variables();
    /// assert_eq!(watched, vec![a]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn watched_variables<T: VariableElement>(&self) -> Vec<Variable<T>> {
        self.inner
            .state
            .borrow()
            .watched_variables
            .iter()
            .filter_map(|v| T::unwrap(v).cloned())
            .collect()
    }

    /// Pauses recording on this tape until the returned guard is dropped
    /// (TensorFlow's `with tape.stop_recording():`).
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::ones([1]);
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = {
    ///     let _paused = tape.stop_recording();
    ///     x.exp()
    /// };
    /// assert!(tape.gradient(&y, &[&x]).is_err()); // not recorded
    /// ```
    pub fn stop_recording(&self) -> RecordingPaused<'_> {
        self.inner.paused.set(self.inner.paused.get() + 1);
        refresh_recording_flag();
        RecordingPaused { tape: self }
    }

    /// Ends recording for good (like leaving TensorFlow's `with` block);
    /// what was recorded stays available to `gradient`.
    pub fn stop(&self) {
        self.inner.stopped.set(true);
        refresh_recording_flag();
    }

    /// Clears everything recorded and watched, as if the tape were new
    /// (it keeps recording, and a used non-persistent tape is usable again).
    pub fn reset(&self) {
        self.inner.state.borrow_mut().clear();
        self.inner.used.set(false);
    }

    /// Number of nodes recorded on this tape.
    pub fn len(&self) -> usize {
        self.inner.state.borrow().nodes.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gradient of `target` (of its sum, if not a scalar) with respect
    /// to each source, in order: `Some(grad)`, or `None` for a source the
    /// target does not depend on. Masked variables get exact zeros at
    /// frozen elements.
    pub fn gradient<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        sources: &[S],
    ) -> Result<Vec<Option<Tensor<T>>>> {
        self.gradient_with(&[target], sources, GradientOptions::default())
    }

    /// The gradient of several targets (their gradients add), with
    /// `output_gradients` seeds and a choice for unconnected sources.
    ///
    /// ```
    /// use rime_tape::{GradientOptions, GradientTape, UnconnectedGradients};
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f64, 2.0]);
    /// let unrelated = Tensor::vector(vec![0.0f64]);
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// tape.watch(&unrelated);
    /// let y = x.square(); // a vector target
    /// let seed = [Tensor::vector(vec![1.0, 10.0])];
    /// let opts = GradientOptions { output_gradients: Some(&seed), unconnected: UnconnectedGradients::Zero };
    /// let g = tape.gradient_with(&[&y], &[&x, &unrelated], opts)?;
    /// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![2.0, 40.0]);
    /// assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![0.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn gradient_with<T: Element, S: AsSource<T>>(
        &self,
        targets: &[&Tensor<T>],
        sources: &[S],
        options: GradientOptions<'_, T>,
    ) -> Result<Vec<Option<Tensor<T>>>> {
        const CALL: &str = "gradient";
        self.check_usable(CALL)?;
        let sources: Vec<SourceRef<T>> = sources.iter().map(|s| s.as_source()).collect();
        self.check_targets(CALL, targets, options.output_gradients)?;
        let grads = self.compute(targets, options.output_gradients, &sources)?;
        self.mark_used();
        Ok(fill_unconnected(grads, &sources, options.unconnected))
    }

    /// The Jacobian of `target` with respect to `source`: shape
    /// `target.shape ++ source.shape`, or `None` if unconnected.
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f64, 2.0]);
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.square();
    /// let j = tape.jacobian(&y, &x)?.unwrap();
    /// assert_eq!(j.shape(), &[2, 2]);
    /// assert_eq!(j.to_vec(), vec![2.0, 0.0, 0.0, 4.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn jacobian<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        source: S,
    ) -> Result<Option<Tensor<T>>> {
        const CALL: &str = "jacobian";
        self.check_usable(CALL)?;
        self.check_targets(CALL, &[target], None)?;
        let src = [source.as_source()];
        let n = target.len();
        let mut rows = Vec::with_capacity(n);
        let mut connected = false;
        for j in 0..n {
            let mut seed = vec![T::zero(); n];
            seed[j] = T::one();
            let seed = [Tensor::from_vec(seed, target.shape().clone())?];
            let g = self.compute(&[target], Some(&seed), &src)?.pop().flatten();
            connected |= g.is_some();
            rows.push(g.unwrap_or_else(|| Tensor::zeros(src[0].shape.clone())));
        }
        self.mark_used();
        if !connected && n > 0 {
            return Ok(None);
        }
        let mut shape: SmallVec<[usize; 4]> = target.dims().into();
        shape.extend_from_slice(&src[0].shape);
        if rows.is_empty() {
            return Ok(Some(Tensor::zeros(Shape::from(shape))));
        }
        let stacked = Tensor::stack(&rows.iter().collect::<Vec<_>>(), 0)?;
        Ok(Some(stacked.reshape(Shape::from(shape))?))
    }

    /// The per-example Jacobian for a target and a source that share a
    /// leading batch axis, assuming examples do not interact (TensorFlow's
    /// `batch_jacobian`): shape `[batch] ++ target.shape[1..] ++
    /// source.shape[1..]`.
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2])?;
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.square();
    /// let j = tape.batch_jacobian(&y, &x)?.unwrap();
    /// assert_eq!(j.shape(), &[2, 2, 2]);
    /// assert_eq!(j.to_vec(), vec![2.0, 0.0, 0.0, 4.0, 6.0, 0.0, 0.0, 8.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn batch_jacobian<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        source: S,
    ) -> Result<Option<Tensor<T>>> {
        const CALL: &str = "batch_jacobian";
        self.check_usable(CALL)?;
        let src = [source.as_source()];
        if target.rank() == 0 || src[0].shape.rank() == 0 || target.dims()[0] != src[0].shape[0] {
            return Err(Error::InvalidArgument {
                call: CALL,
                msg: format!(
                    "target {} and source {} need the same leading batch axis",
                    target.shape(),
                    src[0].shape
                ),
            });
        }
        self.check_targets(CALL, &[target], None)?;
        let b = target.dims()[0];
        let per = target.len() / b.max(1);
        let mut cols = Vec::with_capacity(per);
        let mut connected = false;
        for j in 0..per {
            let mut seed = vec![T::zero(); target.len()];
            for e in 0..b {
                seed[e * per + j] = T::one();
            }
            let seed = [Tensor::from_vec(seed, target.shape().clone())?];
            let g = self.compute(&[target], Some(&seed), &src)?.pop().flatten();
            connected |= g.is_some();
            cols.push(g.unwrap_or_else(|| Tensor::zeros(src[0].shape.clone())));
        }
        self.mark_used();
        if !connected && per > 0 {
            return Ok(None);
        }
        let mut shape: SmallVec<[usize; 4]> = target.dims().into();
        shape.extend_from_slice(&src[0].shape[1..]);
        if cols.is_empty() {
            return Ok(Some(Tensor::zeros(Shape::from(shape))));
        }
        // cols[j]: [b, src...] → stack on axis 1: [b, per, src...]
        let stacked = Tensor::stack(&cols.iter().collect::<Vec<_>>(), 1)?;
        Ok(Some(stacked.reshape(Shape::from(shape))?))
    }

    fn check_usable(&self, call: &'static str) -> Result<()> {
        if !self.inner.persistent && self.inner.used.get() {
            return Err(Error::TapeExhausted { call });
        }
        Ok(())
    }

    fn mark_used(&self) {
        if !self.inner.persistent {
            // a non-persistent tape releases what it recorded (TensorFlow)
            self.inner.used.set(true);
            self.inner.stopped.set(true);
            self.inner.state.borrow_mut().clear();
            refresh_recording_flag();
        }
    }

    fn check_targets<T: Element>(
        &self,
        call: &'static str,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
    ) -> Result<()> {
        let st = self.inner.state.borrow();
        for (index, t) in targets.iter().enumerate() {
            if !st.tracked.contains_key(&t.id()) {
                return Err(Error::TargetNotRecorded {
                    call,
                    index,
                    shape: t.shape().clone(),
                });
            }
        }
        if let Some(seeds) = seeds {
            if seeds.len() != targets.len() {
                return Err(Error::InvalidArgument {
                    call,
                    msg: format!(
                        "{} output gradients for {} targets",
                        seeds.len(),
                        targets.len()
                    ),
                });
            }
            for (index, (s, t)) in seeds.iter().zip(targets).enumerate() {
                if s.shape() != t.shape() {
                    return Err(Error::OutputGradientShape {
                        call,
                        index,
                        target: t.shape().clone(),
                        given: s.shape().clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The engine: gradients of the (seeded) targets for each source, with
    /// masks applied; `None` where unconnected. Leaves the tape unchanged.
    fn compute<T: Element>(
        &self,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
        sources: &[SourceRef<T>],
    ) -> Result<Vec<Option<Tensor<T>>>> {
        // this tape does not record its own gradient computation
        struct Pause<'a>(&'a TapeInner);
        impl Drop for Pause<'_> {
            fn drop(&mut self) {
                self.0.paused.set(self.0.paused.get() - 1);
                refresh_recording_flag();
            }
        }
        self.inner.paused.set(self.inner.paused.get() + 1);
        refresh_recording_flag();
        let _pause = Pause(&self.inner);
        let st = self.inner.state.borrow();
        let (n, n_leaves) = (st.nodes.len(), st.leaves.len());

        // forward: which leaves and nodes derive from a requested source
        let source_slots: Vec<Option<Slot>> = sources.iter().map(|s| st.slot_of(s.id)).collect();
        let mut derived_leaf = vec![false; n_leaves];
        let mut derived_node = vec![false; n];
        let mut keep_node = vec![false; n]; // outputs that are sources themselves
        for slot in source_slots.iter().flatten() {
            match *slot {
                Slot::Leaf(l) => derived_leaf[l as usize] = true,
                Slot::Node(i) => {
                    derived_node[i as usize] = true;
                    keep_node[i as usize] = true;
                }
            }
        }
        let is_derived = |slot: &Option<Slot>, dn: &[bool]| match *slot {
            None => false,
            Some(Slot::Leaf(l)) => derived_leaf[l as usize],
            Some(Slot::Node(i)) => dn[i as usize],
        };
        for (i, node) in st.nodes.iter().enumerate() {
            if !derived_node[i]
                && node
                    .input_slots
                    .iter()
                    .any(|s| is_derived(s, &derived_node))
            {
                derived_node[i] = true;
            }
        }

        // mask hints: reads of masked source variables
        let mut hint_node: Vec<Option<&ResolvedMask>> = Vec::new();
        let masked_leaves: FxHashMap<u32, &ResolvedMask> = sources
            .iter()
            .zip(&source_slots)
            .filter_map(|(s, slot)| match (slot, &s.mask) {
                (Some(Slot::Leaf(l)), Some(m)) => Some((*l, m.as_ref())),
                _ => None,
            })
            .collect();
        if !masked_leaves.is_empty() {
            hint_node = st
                .nodes
                .iter()
                .map(|node| match (&node.op, node.input_slots[0]) {
                    (NodeOp::ReadVariable, Some(Slot::Leaf(l))) => masked_leaves.get(&l).copied(),
                    _ => None,
                })
                .collect();
        }

        // seeds
        let mut grad_leaf: Vec<Option<Grad>> = vec![None; n_leaves];
        let mut grad_node: Vec<Option<Grad>> = vec![None; n];
        for (i, t) in targets.iter().enumerate() {
            let slot = st.slot_of(t.id());
            if !is_derived(&slot, &derived_node) {
                continue;
            }
            let seed = match seeds {
                Some(s) => s[i].clone(),
                None => Tensor::ones(t.shape().clone()),
            };
            accumulate(
                slot_entry(slot, &mut grad_leaf, &mut grad_node),
                Grad::new(T::into_dyn(seed)),
            )?;
        }

        // reverse
        for (i, node) in st.nodes.iter().enumerate().rev() {
            if !derived_node[i] {
                continue;
            }
            let g = if keep_node[i] {
                grad_node[i].clone()
            } else {
                grad_node[i].take()
            };
            let Some(g) = g else { continue };
            let needs: SmallVec<[bool; 4]> = node
                .input_slots
                .iter()
                .map(|s| is_derived(s, &derived_node))
                .collect();
            if !needs.iter().any(|&x| x) {
                continue;
            }
            let hints: SmallVec<[Option<&ResolvedMask>; 4]> = node
                .input_slots
                .iter()
                .map(|s| match (s, hint_node.is_empty()) {
                    (Some(Slot::Node(j)), false) => hint_node[*j as usize],
                    _ => None,
                })
                .collect();
            let (inputs, output) = st.io(node);
            let out = rules::backward(&node.op, inputs, output, &g.value, &needs, &hints)?;
            let read = matches!(node.op, NodeOp::ReadVariable);
            for (k, gk) in out.grads.into_iter().enumerate() {
                if let (true, Some(gk)) = (needs[k], gk) {
                    let premasked = out.premasked & (1 << k) != 0 || (read && g.premasked);
                    let entry = slot_entry(node.input_slots[k], &mut grad_leaf, &mut grad_node);
                    accumulate(
                        entry,
                        Grad {
                            value: gk,
                            premasked,
                        },
                    )?;
                }
            }
        }

        sources
            .iter()
            .zip(&source_slots)
            .map(|(s, slot)| {
                let g = match slot {
                    None => None,
                    Some(Slot::Leaf(l)) => grad_leaf[*l as usize].take(),
                    Some(Slot::Node(i)) => grad_node[*i as usize].clone(),
                };
                let Some(g) = g else { return Ok(None) };
                let t = T::from_dyn(&g.value)
                    .cloned()
                    .ok_or_else(|| Error::InvalidArgument {
                        call: "gradient",
                        msg: format!(
                            "a source of dtype {} received a gradient of another dtype",
                            T::DTYPE
                        ),
                    })?;
                Ok(Some(apply_mask(t, g.premasked, s.mask.as_deref())?))
            })
            .collect()
    }
}

fn slot_entry<'a>(
    slot: Option<Slot>,
    leaves: &'a mut [Option<Grad>],
    nodes: &'a mut [Option<Grad>],
) -> &'a mut Option<Grad> {
    match slot.expect("only tracked inputs receive gradients") {
        Slot::Leaf(l) => &mut leaves[l as usize],
        Slot::Node(i) => &mut nodes[i as usize],
    }
}

impl Drop for GradientTape {
    fn drop(&mut self) {
        TAPES.with(|t| t.borrow_mut().retain(|x| !Rc::ptr_eq(x, &self.inner)));
        refresh_recording_flag();
        std::mem::take(&mut *self.inner.state.borrow_mut()).release();
    }
}

#[derive(Clone)]
struct Grad {
    value: DynTensor,
    /// Already exactly zero at the frozen elements of its source's mask.
    premasked: bool,
}

impl Grad {
    fn new(value: DynTensor) -> Self {
        Grad {
            value,
            premasked: false,
        }
    }
}

fn accumulate(entry: &mut Option<Grad>, g: Grad) -> Result<()> {
    match entry {
        None => *entry = Some(g),
        Some(acc) => {
            acc.value = match (&acc.value, &g.value) {
                (DynTensor::F32(a), DynTensor::F32(b)) => DynTensor::F32(a.add(b)?),
                (DynTensor::F64(a), DynTensor::F64(b)) => DynTensor::F64(a.add(b)?),
                _ => {
                    return Err(Error::InvalidArgument {
                        call: "gradient",
                        msg: "gradients of different dtypes reached one tensor".into(),
                    });
                }
            };
            acc.premasked &= g.premasked;
        }
    }
    Ok(())
}

/// Zeros a gradient at the frozen elements of its mask: differentiably if
/// another tape records this computation, in place otherwise.
fn apply_mask<T: Element>(
    g: Tensor<T>,
    premasked: bool,
    mask: Option<&ResolvedMask>,
) -> Result<Tensor<T>> {
    let Some(mask) = mask else { return Ok(g) };
    if premasked || mask.frozen_runs().is_empty() {
        return Ok(g);
    }
    if record::is_recording() {
        return Ok(Tensor::select(
            &mask.to_tensor(),
            &g,
            &Tensor::scalar(T::zero()),
        )?);
    }
    let mut g = g;
    mask.zero_frozen(g.make_mut());
    Ok(g)
}

fn fill_unconnected<T: Element>(
    grads: Vec<Option<Tensor<T>>>,
    sources: &[SourceRef<T>],
    unconnected: UnconnectedGradients,
) -> Vec<Option<Tensor<T>>> {
    grads
        .into_iter()
        .zip(sources)
        .map(|(g, s)| match (g, unconnected) {
            (None, UnconnectedGradients::Zero) => Some(Tensor::zeros(s.shape.clone())),
            (g, _) => g,
        })
        .collect()
}
