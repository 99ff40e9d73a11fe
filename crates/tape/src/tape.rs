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
//! The record is flat and cheap to append to, because small ops are
//! recorded by the million: nodes, per-input arenas (gradient slot, index
//! of the stored tensor) and one arena of tensor handles. A tensor is
//! stored once however many ops read it (the output of an earlier node is
//! referred to by index; a constant read by consecutive ops is stored
//! once). Finding whether an input is tracked checks the newest output
//! first (a chain of ops), then the map of watched leaves, then a binary
//! search over node outputs (their ids grow with recording order).
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
    dyn Fn(&[&DynTensor], &DynTensor, &DynTensor) -> Result<SmallVec<[Option<DynTensor>; 3]>>;

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
pub(crate) enum Slot {
    Leaf(u32),
    Node(u32),
}

/// One recorded op. Its inputs are `start..start + n_inputs` in the tape's
/// per-input arenas (`slots`: where each input's gradient goes;
/// `input_ix`: where the input tensor is in `values`), its output is
/// `values[output]`. An input that is the output of an earlier node points
/// at that node's stored output instead of holding another handle, so a
/// chain of ops stores each tensor once; a variable read stores no input
/// (its rule needs none).
struct Node {
    op: NodeOp,
    start: u32,
    n_inputs: u32,
    output: u32,
}

/// `input_ix` entry of an input that is not stored.
const NOT_STORED: u32 = u32::MAX;

/// Number of recorded nodes alive on this thread's tapes (a tape and its
/// nodes never leave the thread that made them). Each node holds the
/// tensors its op's gradient needs; dropping or resetting a tape releases
/// them. For leak tests and diagnostics.
///
/// ```
/// use rime_tape::{live_nodes, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::<f32>::ones([4]).unwrap();
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
    // nodes exist only in the states of this thread's live tapes (a
    // released state is cleared before it is kept for reuse)
    TAPES.with(|t| {
        t.borrow()
            .iter()
            .map(|tape| tape.state.try_borrow().map_or(0, |st| st.nodes.len()))
            .sum()
    })
}

#[derive(Default)]
struct TapeState {
    nodes: Vec<Node>,
    /// The tensors the nodes hold (outputs, and inputs that are not the
    /// output of an earlier node).
    values: Vec<DynTensor>,
    /// Per node input, its index in `values` (or `NOT_STORED`).
    input_ix: Vec<u32>,
    /// Per node input, where its gradient goes (`None`: a constant).
    slots: Vec<Option<Slot>>,
    /// The watched leaves, and node outputs recorded out of id order.
    tracked: FxHashMap<TensorId, Slot>,
    /// Node outputs in increasing id order, with their node: a tensor's id
    /// comes from a global counter when it is made, so the outputs of ops
    /// recorded one after another mostly arrive in order and are found by
    /// binary search, without hashing every recorded output.
    outputs: Vec<(TensorId, u32)>,
    /// Ids of the watched leaves, by leaf index.
    leaves: Vec<TensorId>,
    watched_variables: Vec<AnyVariable>,
    /// The constant (untracked) input stored last, and its index in
    /// `values`: an op applied repeatedly with one constant operand (a
    /// fixed input, a mask) stores it once and skips its map lookup.
    /// Cleared whenever the tape starts watching something.
    last_constant: Option<(TensorId, u32)>,
}

impl TapeState {
    /// Where the gradient of `id` goes, if this tape tracks it.
    #[inline]
    fn slot_of(&self, id: TensorId) -> Option<Slot> {
        if let Some(s) = self.tracked.get(&id) {
            return Some(*s);
        }
        match (self.outputs.first(), self.outputs.last()) {
            (Some(&(lo, _)), Some(&(hi, _))) if lo <= id && id <= hi => self
                .outputs
                .binary_search_by_key(&id, |&(t, _)| t)
                .ok()
                .map(|k| Slot::Node(self.outputs[k].1)),
            _ => None,
        }
    }

    /// Whether this tape tracks `id`.
    fn tracks(&self, id: TensorId) -> bool {
        self.slot_of(id).is_some()
    }

    fn watch(&mut self, id: TensorId) -> bool {
        self.last_constant = None;
        if self.tracks(id) {
            return false;
        }
        let leaves = &mut self.leaves;
        let mut new = false;
        self.tracked.entry(id).or_insert_with(|| {
            new = true;
            leaves.push(id);
            Slot::Leaf(leaves.len() as u32 - 1)
        });
        new
    }

    /// Appends the slots of an op's inputs and returns where they start,
    /// or appends nothing and returns `None` if this tape tracks none of
    /// them (the op is not recorded here).
    #[inline]
    fn stage_inputs(&mut self, inputs: &[DynRef<'_>]) -> Option<u32> {
        let start = self.slots.len();
        let mut any = false;
        for x in inputs {
            let s = self.input_slot(x.id());
            any |= s.is_some();
            self.slots.push(s);
        }
        if any {
            Some(start as u32)
        } else {
            self.slots.truncate(start);
            None
        }
    }

    /// Appends a node whose input slots were staged at `start`, storing
    /// its inputs and output.
    #[inline]
    fn push(&mut self, op: NodeOp, start: u32, inputs: &[DynRef<'_>], output: DynTensor) {
        for (k, x) in inputs.iter().enumerate() {
            let ix = match self.slots[start as usize + k] {
                Some(Slot::Node(j)) => self.nodes[j as usize].output,
                Some(Slot::Leaf(_)) => {
                    self.values.push(x.to_owned());
                    self.values.len() as u32 - 1
                }
                None => match self.last_constant {
                    Some((id, ix)) if id == x.id() => ix,
                    _ => {
                        self.values.push(x.to_owned());
                        let ix = self.values.len() as u32 - 1;
                        self.last_constant = Some((x.id(), ix));
                        ix
                    }
                },
            };
            self.input_ix.push(ix);
        }
        self.push_output(op, start, inputs.len() as u32, output);
    }

    /// Appends a variable read (its one slot is `slot`; no input stored).
    fn push_read(&mut self, slot: Option<Slot>, output: DynTensor) {
        let start = self.slots.len() as u32;
        self.slots.push(slot);
        self.input_ix.push(NOT_STORED);
        self.push_output(NodeOp::ReadVariable, start, 1, output);
    }

    #[inline]
    fn push_output(&mut self, op: NodeOp, start: u32, n_inputs: u32, output: DynTensor) {
        if self.last_constant.is_some_and(|(c, _)| c == output.id()) {
            self.last_constant = None; // from now on it is tracked
        }
        let node = self.nodes.len() as u32;
        match self.outputs.last() {
            Some(&(last, _)) if last >= output.id() => {
                self.tracked.insert(output.id(), Slot::Node(node));
            }
            _ => self.outputs.push((output.id(), node)),
        }
        self.values.push(output);
        let output = self.values.len() as u32 - 1;
        // the indices are written in place: building the whole node first
        // and copying it costs a store-forwarding stall on every op
        self.nodes.push(Node {
            op,
            start: 0,
            n_inputs: 0,
            output: 0,
        });
        let node = self.nodes.last_mut().expect("just pushed");
        node.start = start;
        node.n_inputs = n_inputs;
        node.output = output;
    }

    /// Where the gradients of a node's inputs go.
    #[inline]
    fn slots_of(&self, node: &Node) -> &[Option<Slot>] {
        let s = node.start as usize;
        &self.slots[s..s + node.n_inputs as usize]
    }

    /// A node's stored inputs (appended to `out`) and its output.
    #[inline]
    fn io<'s>(&'s self, node: &Node, out: &mut Vec<&'s DynTensor>) -> &'s DynTensor {
        let s = node.start as usize;
        let ix = &self.input_ix[s..s + node.n_inputs as usize];
        out.extend(
            ix.iter()
                .filter(|&&i| i != NOT_STORED)
                .map(|&i| &self.values[i as usize]),
        );
        &self.values[node.output as usize]
    }

    /// The slot of an op input: the newest node's output is checked first
    /// (a chain of ops reads what the previous op made), then the map.
    #[inline]
    fn input_slot(&self, id: TensorId) -> Option<Slot> {
        if let Some(last) = self.nodes.last()
            && self.values[last.output as usize].id() == id
        {
            return Some(Slot::Node(self.nodes.len() as u32 - 1));
        }
        if self.last_constant.is_some_and(|(c, _)| c == id) {
            return None;
        }
        self.slot_of(id)
    }
}

impl TapeState {
    /// Drops everything recorded, keeping the allocations.
    fn clear(&mut self) {
        self.nodes.clear();
        self.values.clear();
        self.input_ix.clear();
        self.slots.clear();
        self.tracked.clear();
        self.outputs.clear();
        self.leaves.clear();
        self.watched_variables.clear();
        self.last_constant = None;
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

struct TapeInner {
    persistent: bool,
    watch_accessed_variables: bool,
    paused: Cell<u32>,
    stopped: Cell<bool>,
    used: Cell<bool>,
    state: RefCell<TapeState>,
}

impl TapeInner {
    #[inline]
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
#[inline]
fn for_each_recording_tape(mut f: impl FnMut(&TapeInner, &mut TapeState)) {
    TAPES.with(|tapes| {
        for tape in tapes.borrow().iter().filter(|t| t.recording()) {
            if let Ok(mut st) = tape.state.try_borrow_mut() {
                f(tape, &mut st);
            }
        }
    });
}

/// The hook rime-tensor calls for every op while recording is on.
fn on_op(op: Op, inputs: &[DynRef<'_>], output: DynRef<'_>) {
    TAPES.with(|tapes| {
        let tapes = tapes.borrow();
        // the usual case, one tape: the op moves in
        if let [tape] = &tapes[..] {
            if tape.recording()
                && let Ok(mut st) = tape.state.try_borrow_mut()
                && let Some(start) = st.stage_inputs(inputs)
            {
                st.push(NodeOp::Tensor(op), start, inputs, output.to_owned());
            }
            return;
        }
        // nested tapes: each one that tracks an input records a copy
        for tape in tapes.iter().filter(|t| t.recording()) {
            if let Ok(mut st) = tape.state.try_borrow_mut()
                && let Some(start) = st.stage_inputs(inputs)
            {
                st.push(NodeOp::Tensor(op.clone()), start, inputs, output.to_owned());
            }
        }
    });
}

/// Called by `Variable::value` while recording: connects the read to the
/// variable on every tape that watches it (or, with
/// `watch_accessed_variables`, starts watching it if it is trainable).
pub(crate) fn on_variable_read<T: Element>(var: &Variable<T>, value: &Tensor<T>) -> Tensor<T> {
    let mut read: Option<Tensor<T>> = None;
    for_each_recording_tape(|tape, st| {
        let auto_watch = tape.watch_accessed_variables && var.trainable();
        if !auto_watch && !st.tracks(var.id()) {
            return;
        }
        if st.watch(var.id()) {
            st.watched_variables.push(wrap_variable(var));
        }
        let out = read.get_or_insert_with(|| value.detach()).clone();
        let slot = st.slot_of(var.id());
        st.push_read(slot, T::into_dyn(out));
    });
    read.unwrap_or_else(|| value.clone())
}

fn wrap_variable<T: Element>(var: &Variable<T>) -> AnyVariable {
    // Element is implemented for f32 and f64 only; dispatch on the dtype tag.
    match T::DTYPE {
        DType::F32 => AnyVariable::F32(cast_variable::<T, f32>(var)),
        DType::F64 => AnyVariable::F64(cast_variable::<T, f64>(var)),
        DType::I32 | DType::I64 => unreachable!("Element is implemented for f32 and f64 only"),
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
    let refs: SmallVec<[DynRef<'_>; 4]> = inputs
        .iter()
        .map(|t| match t {
            DynTensor::F32(t) => DynRef::F32(t),
            DynTensor::F64(t) => DynRef::F64(t),
        })
        .collect();
    for_each_recording_tape(|_, st| {
        let Some(start) = st.stage_inputs(&refs) else {
            return;
        };
        let op = NodeOp::Custom {
            name: name.clone(),
            backward: backward.clone(),
        };
        st.push(op, start, &refs, output.clone());
    });
}

/// Runs `f` with recording off on every tape of this thread (PyTorch's
/// `no_grad`). Ops inside are not recorded and variable reads are not
/// connected.
///
/// ```
/// use rime_tape::{no_record, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::<f32>::ones([2]).unwrap();
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
///
/// ```
/// use rime_tape::{GradientOptions, GradientTape, UnconnectedGradients};
/// use rime_tensor::Tensor;
/// let (x, u) = (Tensor::vector(vec![1.0f32]), Tensor::vector(vec![2.0f32, 3.0]));
/// let tape = GradientTape::persistent();
/// tape.watch(&x);
/// tape.watch(&u);
/// let y = x.exp().sum_all();
/// assert!(tape.gradient(&y, &[&u])?[0].is_none());
/// let zero = GradientOptions { unconnected: UnconnectedGradients::Zero, ..Default::default() };
/// let g = tape.gradient_with(&[&y], &[&u], zero)?;
/// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![0.0, 0.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnconnectedGradients {
    /// `None` (TensorFlow's default).
    #[default]
    None,
    /// A tensor of zeros of the source's shape.
    Zero,
}

/// Options for [`GradientTape::gradient_with`].
///
/// ```
/// use rime_tape::{GradientOptions, GradientTape};
/// use rime_tensor::Tensor;
/// let x = Tensor::vector(vec![1.0f64, 2.0]);
/// let tape = GradientTape::new();
/// tape.watch(&x);
/// let y = x.square(); // dy/dx = diag(2x)
/// let seed = [Tensor::vector(vec![3.0, -1.0])];
/// let opts = GradientOptions { output_gradients: Some(&seed), ..Default::default() };
/// let g = tape.gradient_with(&[&y], &[&x], opts)?;
/// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![6.0, -4.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
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
/// variable (its identity, its shape and the mask its gradient honours).
/// Usually made by [`AsSource`]; see [`SourceRef::variable_with_mask`].
///
/// ```
/// use rime_tape::{AsSource, GradientTape, SourceRef, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f32>::ones([2])?);
/// let sources: Vec<SourceRef<f32>> = vec![w.as_source()];
/// let tape = GradientTape::new();
/// let y = w.value().mul_scalar(3.0).sum_all();
/// assert_eq!(tape.gradient(&y, &sources)?[0].as_ref().unwrap().to_vec(), vec![3.0, 3.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
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
    /// let w = Variable::new("w", Tensor::<f32>::ones([2])?);
    /// let mask = Arc::new(TrainableMask::rows(1..2).resolve("w", &w.shape())?);
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

    /// The identity of the tensor or variable this source stands for.
    pub fn id(&self) -> TensorId {
        self.id
    }

    /// The source's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl<T: Element> AsSource<T> for SourceRef<T> {
    fn as_source(&self) -> SourceRef<T> {
        self.clone()
    }
}

/// Conversion into a [`SourceRef`], for `gradient`'s source list:
/// implemented for tensors, variables, [`Source`], `SourceRef` and
/// references to them.
///
/// ```
/// use rime_tape::{AsSource, GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let v = Variable::new("v", Tensor::<f32>::full([2], 3.0)?);
/// let tape = GradientTape::persistent();
/// let y = v.value().square().sum_all();
/// // a variable, a reference to one, and a SourceRef are all sources
/// let a = tape.gradient(&y, &[v.clone()])?;
/// let b = tape.gradient(&y, &[&v])?;
/// let c = tape.gradient(&y, &[v.as_source()])?;
/// assert_eq!(a[0].as_ref().unwrap().to_vec(), vec![6.0, 6.0]);
/// assert!(a == b && b == c);
/// # Ok::<(), rime_tape::Error>(())
/// ```
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
/// let w = Variable::new("w", Tensor::<f64>::full([1], 3.0)?);
/// let x = Tensor::<f64>::full([1], 2.0)?;
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
///
/// ```
/// use rime_tape::{GradientTape, Variable, Watchable};
/// use rime_tensor::Tensor;
/// let v = Variable::non_trainable("v", Tensor::<f32>::ones([1])?);
/// assert_eq!(v.watch_id().0, v.id());
/// let tape = GradientTape::new();
/// tape.watch(&v); // a non-trainable variable, watched explicitly
/// let y = v.value().exp().sum_all();
/// assert!(tape.gradient(&y, &[&v])?[0].is_some());
/// # Ok::<(), rime_tape::Error>(())
/// ```
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

/// Options for creating a [`GradientTape`] ([`GradientTape::builder`]).
///
/// ```
/// use rime_tape::{GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::<f32>::ones([1]).unwrap());
/// let tape = GradientTape::builder().persistent(true).watch_accessed_variables(false).start();
/// assert!(tape.is_persistent());
/// let _ = w.value().exp();
/// assert!(tape.watched_variables::<f32>().is_empty());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TapeBuilder {
    persistent: bool,
    watch_accessed_variables: bool,
}

impl TapeBuilder {
    /// Whether the tape answers several gradient calls (default false).
    ///
    /// ```
    /// assert!(rime_tape::GradientTape::builder().persistent(true).start().is_persistent());
    /// ```
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Whether trainable variables read while recording are watched
    /// automatically (default true).
    ///
    /// ```
    /// use rime_tape::{Error, GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::ones([1]).unwrap());
    /// let tape = GradientTape::builder().watch_accessed_variables(false).start();
    /// let y = w.value().exp().sum_all();
    /// assert!(matches!(tape.gradient(&y, &[&w]), Err(Error::TargetNotRecorded { .. })));
    /// ```
    pub fn watch_accessed_variables(mut self, watch: bool) -> Self {
        self.watch_accessed_variables = watch;
        self
    }

    /// Creates the tape; it starts recording.
    ///
    /// ```
    /// let tape = rime_tape::GradientTape::builder().start();
    /// assert!(tape.is_recording() && !tape.is_persistent());
    /// ```
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
///
/// ```
/// let tape = rime_tape::GradientTape::new();
/// {
///     let _paused = tape.stop_recording();
///     assert!(!tape.is_recording());
/// }
/// assert!(tape.is_recording());
/// ```
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
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::full([1], 2.0)?);
    /// let tape = GradientTape::new();
    /// let y = w.value().square().sum_all();
    /// assert_eq!(tape.gradient(&y, &[&w])?[0].as_ref().unwrap().to_vec(), vec![4.0]);
    /// assert!(tape.gradient(&y, &[&w]).is_err()); // one call only
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn new() -> Self {
        Self::builder().start()
    }

    /// A persistent tape (answers several gradient calls).
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![3.0f32]);
    /// let tape = GradientTape::persistent();
    /// tape.watch(&x);
    /// let (a, b) = (x.square().sum_all(), x.exp().sum_all());
    /// assert_eq!(tape.gradient(&a, &[&x])?[0].as_ref().unwrap().to_vec(), vec![6.0]);
    /// assert_eq!(tape.gradient(&b, &[&x])?[0].as_ref().unwrap().to_vec(), vec![3f32.exp()]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn persistent() -> Self {
        Self::builder().persistent(true).start()
    }

    /// Options: `GradientTape::builder().persistent(true).watch_accessed_variables(false).start()`.
    ///
    /// ```
    /// let tape = rime_tape::GradientTape::builder().persistent(true).start();
    /// assert!(tape.is_persistent());
    /// ```
    pub fn builder() -> TapeBuilder {
        TapeBuilder {
            persistent: false,
            watch_accessed_variables: true,
        }
    }

    /// Whether this tape answers several gradient calls.
    ///
    /// ```
    /// assert!(!rime_tape::GradientTape::new().is_persistent());
    /// ```
    pub fn is_persistent(&self) -> bool {
        self.inner.persistent
    }

    /// Whether ops run now are recorded on this tape (not paused, stopped,
    /// used up, or inside [`no_record`]).
    ///
    /// ```
    /// let tape = rime_tape::GradientTape::new();
    /// assert!(tape.is_recording());
    /// rime_tape::no_record(|| assert!(!tape.is_recording()));
    /// tape.stop();
    /// assert!(!tape.is_recording());
    /// ```
    pub fn is_recording(&self) -> bool {
        self.inner.recording() && NO_RECORD.with(|n| n.get()) == 0
    }

    /// Watches a tensor or a variable: gradients may be taken with respect
    /// to it, and ops on it are recorded.
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::full([2], 3.0)?;
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.square().sum_all();
    /// assert_eq!(tape.gradient(&y, &[&x])?[0].as_ref().unwrap().to_vec(), vec![6.0, 6.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn watch(&self, x: &impl Watchable) {
        let (id, var) = x.watch_id();
        let mut st = self.inner.state.borrow_mut();
        if st.watch(id)
            && let Some(v) = var
        {
            st.watched_variables.push(v);
        }
    }

    /// The variables this tape watches, in the order it started watching
    /// them (explicitly or by access), of element type `T`.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let a = Variable::new("a", Tensor::<f32>::ones([1])?);
    /// let frozen = Variable::non_trainable("f", Tensor::<f32>::ones([1])?);
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
    /// let x = Tensor::<f32>::ones([1]).unwrap();
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
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f32]);
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.exp().sum_all();
    /// tape.stop();
    /// let _not_recorded = y.exp();
    /// assert_eq!(tape.len(), 2);
    /// assert!(tape.gradient(&y, &[&x])?[0].is_some());
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn stop(&self) {
        self.inner.stopped.set(true);
        refresh_recording_flag();
    }

    /// Clears everything recorded and watched, as if the tape were new
    /// (TensorFlow's `reset`): it records again (also after
    /// [`stop`](GradientTape::stop), or after a non-persistent tape's one
    /// gradient call), and a used non-persistent tape answers a gradient
    /// again. A [`stop_recording`](GradientTape::stop_recording) guard
    /// still alive keeps pausing it until dropped.
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f64>::full([1], 2.0)?;
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = x.square().sum_all();
    /// assert_eq!(tape.gradient(&y, &[&x])?[0].as_ref().unwrap().to_vec(), vec![4.0]);
    /// tape.reset();
    /// tape.watch(&x);
    /// let z = x.powf(3.0).sum_all();
    /// assert_eq!(tape.gradient(&z, &[&x])?[0].as_ref().unwrap().to_vec(), vec![12.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn reset(&self) {
        self.inner.state.borrow_mut().clear();
        self.inner.used.set(false);
        self.inner.stopped.set(false);
        refresh_recording_flag();
    }

    /// Number of nodes recorded on this tape (ops and variable reads).
    ///
    /// ```
    /// use rime_tape::GradientTape;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::vector(vec![1.0f32]);
    /// let tape = GradientTape::new();
    /// assert!(tape.is_empty());
    /// let _ = x.exp(); // x is not watched: not recorded
    /// tape.watch(&x);
    /// let _ = x.exp().sin();
    /// assert_eq!(tape.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.state.borrow().nodes.len()
    }

    /// Whether nothing has been recorded.
    ///
    /// ```
    /// assert!(rime_tape::GradientTape::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gradient of `target` (of its sum, if not a scalar) with respect
    /// to each source, in order: `Some(grad)`, or `None` for a source the
    /// target does not depend on. Masked variables get exact zeros at
    /// frozen elements. A source may be a watched tensor, a tensor recorded
    /// on this tape (an intermediate), or a variable.
    ///
    /// Errors: [`Error::TargetNotRecorded`] if the target was not computed
    /// on this tape from something it watches, [`Error::TapeExhausted`] on
    /// a second call to a non-persistent tape. A failed call changes
    /// nothing.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, 2.0], [2])?);
    /// let x = Tensor::from_vec(vec![3.0f32, 4.0], [2])?;
    /// let tape = GradientTape::new();
    /// tape.watch(&x);
    /// let y = w.value().mul(&x)?; // a vector target: the gradient of its sum
    /// let g = tape.gradient(&y, &[rime_tape::Source::from(&w), rime_tape::Source::from(&x)])?;
    /// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![3.0, 4.0]);
    /// assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        fill_unconnected(grads, &sources, options.unconnected)
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
            rows.push(match g {
                Some(g) => g,
                None => Tensor::zeros(src[0].shape.clone())?,
            });
        }
        self.mark_used();
        if !connected && n > 0 {
            return Ok(None);
        }
        let mut shape: SmallVec<[usize; 4]> = target.dims().into();
        shape.extend_from_slice(&src[0].shape);
        if rows.is_empty() {
            return Ok(Some(Tensor::zeros(Shape::from(shape))?));
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
            cols.push(match g {
                Some(g) => g,
                None => Tensor::zeros(src[0].shape.clone())?,
            });
        }
        self.mark_used();
        if !connected && per > 0 {
            return Ok(None);
        }
        let mut shape: SmallVec<[usize; 4]> = target.dims().into();
        shape.extend_from_slice(&src[0].shape[1..]);
        if cols.is_empty() {
            return Ok(Some(Tensor::zeros(Shape::from(shape))?));
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
            if !st.tracks(t.id()) {
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
                && st
                    .slots_of(node)
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
                .map(|node| match (&node.op, st.slots_of(node).first()) {
                    (NodeOp::ReadVariable, Some(Some(Slot::Leaf(l)))) => {
                        masked_leaves.get(l).copied()
                    }
                    _ => None,
                })
                .collect();
        }

        // seeds
        let mut acc = Accumulated::new(n_leaves, n);
        for (i, t) in targets.iter().enumerate() {
            let slot = st.slot_of(t.id());
            if !is_derived(&slot, &derived_node) {
                continue;
            }
            let seed = match seeds {
                Some(s) => s[i].clone(),
                None => Tensor::ones_like(t),
            };
            acc.add(slot, T::into_dyn(seed), false)?;
        }

        // reverse
        let mut hints: SmallVec<[Option<&ResolvedMask>; 4]> = SmallVec::new();
        let mut inputs: Vec<&DynTensor> = Vec::new();
        let mut needs = rules::InputSet::default();
        for (i, node) in st.nodes.iter().enumerate().rev() {
            if !derived_node[i] {
                continue;
            }
            let g = if keep_node[i] {
                acc.node[i].clone()
            } else {
                acc.node[i].take()
            };
            let Some(g) = g else { continue };
            needs.clear();
            let slots = st.slots_of(node);
            for (k, s) in slots.iter().enumerate() {
                if is_derived(s, &derived_node) {
                    needs.insert(k);
                }
            }
            if needs.is_empty() {
                continue;
            }
            if let NodeOp::ReadVariable = node.op {
                // the read passes its gradient on unchanged
                let premasked = acc.node_premasked[i];
                acc.add(slots[0], g, premasked)?;
                continue;
            }
            hints.clear();
            if !hint_node.is_empty() {
                hints.extend(slots.iter().map(|s| match s {
                    Some(Slot::Node(j)) => hint_node[*j as usize],
                    _ => None,
                }));
            }
            inputs.clear();
            let output = st.io(node, &mut inputs);
            rules::backward(
                &node.op,
                &inputs,
                output,
                &g,
                &needs,
                &hints,
                &mut |k, value, premasked| acc.add(slots[k], value, premasked),
            )?;
        }

        sources
            .iter()
            .zip(&source_slots)
            .enumerate()
            .map(|(k, (s, slot))| {
                // taken at the source's last mention (so that a mask is
                // applied in place), cloned before: a source may be listed
                // twice
                let last = !source_slots[k + 1..].contains(slot);
                let take = |g: &mut Option<DynTensor>| if last { g.take() } else { g.clone() };
                let (g, premasked) = match *slot {
                    None => (None, false),
                    Some(Slot::Leaf(l)) => (
                        take(&mut acc.leaf[l as usize]),
                        acc.leaf_premasked[l as usize],
                    ),
                    Some(Slot::Node(i)) => (
                        take(&mut acc.node[i as usize]),
                        acc.node_premasked[i as usize],
                    ),
                };
                let Some(g) = g else { return Ok(None) };
                let t = T::from_dyn(&g)
                    .cloned()
                    .ok_or_else(|| Error::InvalidArgument {
                        call: "gradient",
                        msg: format!(
                            "a source of dtype {} received a gradient of another dtype",
                            T::DTYPE
                        ),
                    })?;
                drop(g);
                Ok(Some(apply_mask(t, premasked, s.mask.as_deref())?))
            })
            .collect()
    }
}

impl Drop for GradientTape {
    fn drop(&mut self) {
        TAPES.with(|t| t.borrow_mut().retain(|x| !Rc::ptr_eq(x, &self.inner)));
        refresh_recording_flag();
        std::mem::take(&mut *self.inner.state.borrow_mut()).release();
    }
}

/// The gradients accumulated so far for the leaves and the node outputs,
/// and per entry whether it is already exactly zero at the frozen elements
/// of its source's mask (kept apart from the tensors, so that moving a
/// gradient moves two words).
struct Accumulated {
    leaf: Vec<Option<DynTensor>>,
    node: Vec<Option<DynTensor>>,
    leaf_premasked: Vec<bool>,
    node_premasked: Vec<bool>,
}

impl Accumulated {
    fn new(leaves: usize, nodes: usize) -> Self {
        Accumulated {
            leaf: vec![None; leaves],
            node: vec![None; nodes],
            leaf_premasked: vec![false; leaves],
            node_premasked: vec![false; nodes],
        }
    }

    /// Adds `g` to the gradient of `slot` (a tracked input).
    #[inline]
    fn add(&mut self, slot: Option<Slot>, g: DynTensor, premasked: bool) -> Result<()> {
        let (entry, flag) = match slot {
            Some(Slot::Leaf(l)) => (
                &mut self.leaf[l as usize],
                &mut self.leaf_premasked[l as usize],
            ),
            Some(Slot::Node(i)) => (
                &mut self.node[i as usize],
                &mut self.node_premasked[i as usize],
            ),
            None => {
                return Err(Error::InvalidArgument {
                    call: "gradient",
                    msg: "a gradient reached an input the tape does not track".into(),
                });
            }
        };
        match entry {
            None => {
                *entry = Some(g);
                *flag = premasked;
            }
            Some(acc) => {
                *acc = match (&*acc, &g) {
                    (DynTensor::F32(a), DynTensor::F32(b)) => DynTensor::F32(a.add(b)?),
                    (DynTensor::F64(a), DynTensor::F64(b)) => DynTensor::F64(a.add(b)?),
                    _ => {
                        return Err(Error::InvalidArgument {
                            call: "gradient",
                            msg: "gradients of different dtypes reached one tensor".into(),
                        });
                    }
                };
                *flag &= premasked;
            }
        }
        Ok(())
    }
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
) -> Result<Vec<Option<Tensor<T>>>> {
    grads
        .into_iter()
        .zip(sources)
        .map(|(g, s)| match (g, unconnected) {
            (None, UnconnectedGradients::Zero) => Ok(Some(Tensor::zeros(s.shape.clone())?)),
            (g, _) => Ok(g),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynref(t: &Tensor<f32>) -> DynRef<'_> {
        DynRef::F32(t)
    }

    /// Outputs whose ids arrive out of order go to the map; in-order ones
    /// are found by binary search; watched ids and constants stay apart.
    #[test]
    fn lookups_of_tracked_ids() {
        let x = Tensor::<f32>::ones([2]).unwrap();
        let early = Tensor::<f32>::ones([2]).unwrap(); // an output made before its turn
        let c = Tensor::<f32>::ones([2]).unwrap();
        let mut st = TapeState::default();
        assert!(st.watch(x.id()));
        assert!(!st.watch(x.id()), "watching twice is one leaf");
        let outs: Vec<Tensor<f32>> = (0..5).map(|_| Tensor::ones([2]).unwrap()).collect();
        let mut prev = x.clone();
        for o in &outs {
            let inputs = [dynref(&prev), dynref(&c)];
            let start = st.stage_inputs(&inputs).unwrap();
            st.push(NodeOp::ReadVariable, start, &inputs, out32(o));
            prev = o.clone();
        }
        // the leaf and the constant were stored once each, plus the outputs
        assert_eq!(st.values.len(), 2 + outs.len());
        assert_eq!(st.slots.len(), 2 * outs.len());
        // an output with an older id than the newest node's
        let inputs = [dynref(&outs[1])];
        let start = st.stage_inputs(&inputs).unwrap();
        st.push(NodeOp::ReadVariable, start, &inputs, out32(&early));
        assert_eq!(st.slot_of(x.id()), Some(Slot::Leaf(0)));
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(st.slot_of(o.id()), Some(Slot::Node(i as u32)));
            assert_eq!(st.input_slot(o.id()), Some(Slot::Node(i as u32)));
        }
        assert_eq!(st.slot_of(early.id()), Some(Slot::Node(5)));
        assert_eq!(st.input_slot(early.id()), Some(Slot::Node(5)));
        assert_eq!(st.slot_of(c.id()), None);
        let before = st.slots.len();
        assert!(st.stage_inputs(&[dynref(&c)]).is_none());
        assert_eq!(st.slots.len(), before, "nothing staged for an untracked op");
        // watching a recorded output keeps it a node; watching the constant
        // makes it a leaf (and no longer a cached constant)
        assert!(!st.watch(outs[2].id()));
        assert_eq!(st.slot_of(outs[2].id()), Some(Slot::Node(2)));
        assert!(st.watch(c.id()));
        assert_eq!(st.input_slot(c.id()), Some(Slot::Leaf(1)));
        st.clear();
        assert_eq!(st.slot_of(outs[0].id()), None);
        assert_eq!(st.slot_of(early.id()), None);
        assert_eq!(st.slot_of(x.id()), None);
    }

    fn out32(t: &Tensor<f32>) -> DynTensor {
        DynTensor::F32(t.clone())
    }
}
