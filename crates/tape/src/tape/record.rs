//! The recorder: the flat record each tape keeps, the thread's list of
//! active tapes, and the hooks rime-tensor (every op) and variables (every
//! read) call while recording.

#[allow(unused_imports)]
use super::*;

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
pub(crate) struct Node {
    pub(crate) op: NodeOp,
    pub(crate) start: u32,
    pub(crate) n_inputs: u32,
    pub(crate) output: u32,
}

// Every recorded op moves a node into the tape: it stays small (a tensor
// op's attributes inline, large ones boxed by rime-tensor's `Op`).
const _: () = assert!(std::mem::size_of::<Node>() <= 48);

/// `input_ix` entry of an input that is not stored.
pub(crate) const NOT_STORED: u32 = u32::MAX;

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
pub(crate) struct TapeState {
    pub(crate) nodes: Vec<Node>,
    /// The tensors the nodes hold (outputs, and inputs that are not the
    /// output of an earlier node).
    pub(crate) values: Vec<DynTensor>,
    /// Per node input, its index in `values` (or `NOT_STORED`).
    pub(crate) input_ix: Vec<u32>,
    /// Per node input, where its gradient goes (`None`: a constant).
    pub(crate) slots: Vec<Option<Slot>>,
    /// The watched leaves, and node outputs recorded out of id order.
    pub(crate) tracked: FxHashMap<TensorId, Slot>,
    /// Node outputs in increasing id order, with their node: a tensor's id
    /// comes from a global counter when it is made, so the outputs of ops
    /// recorded one after another mostly arrive in order and are found by
    /// binary search, without hashing every recorded output.
    pub(crate) outputs: Vec<(TensorId, u32)>,
    /// Ids of the watched leaves, by leaf index.
    pub(crate) leaves: Vec<TensorId>,
    pub(crate) watched_variables: Vec<AnyVariable>,
    /// The constant (untracked) input stored last, and its index in
    /// `values`: an op applied repeatedly with one constant operand (a
    /// fixed input, a mask) stores it once and skips its map lookup.
    /// Cleared whenever the tape starts watching something.
    pub(crate) last_constant: Option<(TensorId, u32)>,
}

impl TapeState {
    /// Where the gradient of `id` goes, if this tape tracks it.
    #[inline]
    pub(crate) fn slot_of(&self, id: TensorId) -> Option<Slot> {
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
    pub(crate) fn tracks(&self, id: TensorId) -> bool {
        self.slot_of(id).is_some()
    }

    pub(crate) fn watch(&mut self, id: TensorId) -> bool {
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
    pub(crate) fn stage_inputs(&mut self, inputs: &[DynRef<'_>]) -> Option<u32> {
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
    pub(crate) fn push(
        &mut self,
        op: NodeOp,
        start: u32,
        inputs: &[DynRef<'_>],
        output: DynTensor,
    ) {
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
    pub(crate) fn push_read(&mut self, slot: Option<Slot>, output: DynTensor) {
        let start = self.slots.len() as u32;
        self.slots.push(slot);
        self.input_ix.push(NOT_STORED);
        self.push_output(NodeOp::ReadVariable, start, 1, output);
    }

    #[inline]
    pub(crate) fn push_output(&mut self, op: NodeOp, start: u32, n_inputs: u32, output: DynTensor) {
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
        // the node is built in place, after the vector has room for it:
        // built on the stack across `push`'s possible growth and then
        // copied, its three indices were read back as one word (a
        // store-forwarding stall on every op)
        self.nodes.extend(std::iter::once_with(|| Node {
            op,
            start,
            n_inputs,
            output,
        }));
    }

    /// Where the gradients of a node's inputs go.
    #[inline]
    pub(crate) fn slots_of(&self, node: &Node) -> &[Option<Slot>] {
        let s = node.start as usize;
        &self.slots[s..s + node.n_inputs as usize]
    }

    /// A node's stored inputs (appended to `out`) and its output.
    #[inline]
    pub(crate) fn io<'s>(&'s self, node: &Node, out: &mut Vec<&'s DynTensor>) -> &'s DynTensor {
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
    pub(crate) fn input_slot(&self, id: TensorId) -> Option<Slot> {
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
    pub(crate) fn clear(&mut self) {
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
    pub(crate) fn fresh() -> TapeState {
        SPARE_STATE.with(|s| s.take()).unwrap_or_default()
    }

    /// Clears this state and keeps it for the next tape on this thread.
    pub(crate) fn release(mut self) {
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

pub(crate) struct TapeInner {
    pub(crate) persistent: bool,
    pub(crate) watch_accessed_variables: bool,
    pub(crate) paused: Cell<u32>,
    pub(crate) stopped: Cell<bool>,
    pub(crate) used: Cell<bool>,
    pub(crate) state: RefCell<TapeState>,
}

impl TapeInner {
    #[inline]
    pub(crate) fn recording(&self) -> bool {
        !self.stopped.get() && self.paused.get() == 0
    }
}

thread_local! {
    pub(crate) static SPARE_STATE: RefCell<Option<TapeState>> = const { RefCell::new(None) };
    pub(crate) static TAPES: RefCell<Vec<Rc<TapeInner>>> = const { RefCell::new(Vec::new()) };
    pub(crate) static NO_RECORD: Cell<u32> = const { Cell::new(0) };
}

/// Turns rime-tensor's recording flag on exactly when some tape on this
/// thread would record.
pub(crate) fn refresh_recording_flag() {
    let on = NO_RECORD.with(|n| n.get()) == 0
        && TAPES.with(|t| t.borrow().iter().any(|t| t.recording()));
    rime_tensor::record::set_recording(on);
}

/// Calls `f` with the state of every tape that records now (a tape busy
/// computing a gradient holds its state and is paused: it is skipped).
#[inline]
pub(crate) fn for_each_recording_tape(mut f: impl FnMut(&TapeInner, &mut TapeState)) {
    TAPES.with(|tapes| {
        for tape in tapes.borrow().iter().filter(|t| t.recording()) {
            if let Ok(mut st) = tape.state.try_borrow_mut() {
                f(tape, &mut st);
            }
        }
    });
}

/// The hook rime-tensor calls for every op while recording is on.
pub(crate) fn on_op(op: Op, inputs: &[DynRef<'_>], output: DynRef<'_>) {
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

pub(crate) fn wrap_variable<T: Element>(var: &Variable<T>) -> AnyVariable {
    // Element is implemented for f32 and f64 only; dispatch on the dtype tag.
    match T::DTYPE {
        DType::F32 => AnyVariable::F32(cast_variable::<T, f32>(var)),
        DType::F64 => AnyVariable::F64(cast_variable::<T, f64>(var)),
        DType::I32 | DType::I64 => unreachable!("Element is implemented for f32 and f64 only"),
    }
}

pub(crate) fn cast_variable<T: Element, U: Element>(var: &Variable<T>) -> Variable<U> {
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
    let custom = Rc::new(CustomOp { name, backward });
    for_each_recording_tape(|_, st| {
        let Some(start) = st.stage_inputs(&refs) else {
            return;
        };
        st.push(NodeOp::Custom(custom.clone()), start, &refs, output.clone());
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
