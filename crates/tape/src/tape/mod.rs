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
//!
//! Layout: this file is the public tape API ([`GradientTape`], its
//! builder and options); `record.rs` is the recorder (the flat record and
//! the hooks rime-tensor and variables call), `backward.rs` the backward
//! engine, `source.rs` the source types (what a gradient is taken with
//! respect to). The gradient rules of the ops are in `rules/`.

mod backward;
mod record;
mod source;

pub use record::{live_nodes, no_record};
pub(crate) use record::{on_variable_read, record_custom};
pub use source::{AsSource, Source, SourceRef, Watchable};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use rime_tensor::record::DynRef;
use rime_tensor::{DType, DynTensor, Element, Op, Shape, Tensor, TensorId};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::deferred::DeferredGradient;
use crate::mask::ResolvedMask;
use crate::rules::{self, NodeOp};
use crate::rules::{CustomBackward, CustomOp};
use crate::variable::{AnyVariable, Variable, VariableElement};
use crate::{Error, Result};
pub(crate) use backward::apply_mask;
#[allow(unused_imports)]
use backward::*;
#[allow(unused_imports)]
use record::*;

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
        rime_tensor::record::install_hook(on_op);
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

    /// [`gradient`](GradientTape::gradient) for an optimizer that applies
    /// the gradients itself and is their only consumer: a source whose one
    /// contribution is the weight operand of a 2-D matrix product (a Dense
    /// kernel) gets a [`DeferredGradient::Product`], computed later block by
    /// block, with no buffer of its size (an optimizer's
    /// `apply_deferred`); every other source gets
    /// [`DeferredGradient::Dense`], as `gradient` would return it. Nothing
    /// is deferred while another tape records (its gradient must be
    /// recorded). Same errors as `gradient`.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::ones([2, 2])?);
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2])?;
    /// let tape = GradientTape::new();
    /// let loss = x.matmul(&w.value())?.sum_all();
    /// let g = tape.gradient_deferred(&loss, &[&w])?;
    /// let g = g[0].clone().unwrap().into_tensor()?;
    /// assert_eq!(g.to_vec(), vec![1.0, 1.0, 2.0, 2.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn gradient_deferred<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        sources: &[S],
    ) -> Result<Vec<Option<DeferredGradient<T>>>> {
        const CALL: &str = "gradient";
        self.check_usable(CALL)?;
        let sources: Vec<SourceRef<T>> = sources.iter().map(|s| s.as_source()).collect();
        self.check_targets(CALL, &[target], None)?;
        let grads = self.compute_deferred(&[target], &sources)?;
        self.mark_used();
        Ok(grads)
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
}

impl Drop for GradientTape {
    fn drop(&mut self) {
        TAPES.with(|t| t.borrow_mut().retain(|x| !Rc::ptr_eq(x, &self.inner)));
        refresh_recording_flag();
        std::mem::take(&mut *self.inner.state.borrow_mut()).release();
    }
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
