//! [`Variable`]: a shared, mutable tensor with an identity, a name, a
//! `trainable` flag, an optional element mask and an optional constraint.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rime_tensor::{Element, Shape, Tensor, TensorId};

use crate::mask::{ResolvedMask, TrainableMask};
use crate::{Error, Result, tape};

/// A projection applied to a variable's value after each optimizer update
/// (Keras' `kernel_constraint`: non-negativity, max-norm, ...).
///
/// ```
/// use rime_tape::Constraint;
/// use rime_tensor::Tensor;
/// #[derive(Debug)]
/// struct NonNeg;
/// impl Constraint<f32> for NonNeg {
///     fn apply(&self, w: &Tensor<f32>) -> rime_tensor::Result<Tensor<f32>> {
///         Ok(w.relu())
///     }
/// }
/// assert_eq!(NonNeg.apply(&Tensor::vector(vec![-1.0, 2.0]))?.to_vec(), vec![0.0, 2.0]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub trait Constraint<T: Element>: Send + Sync + fmt::Debug {
    /// The projected value (same shape as `w`).
    fn apply(&self, w: &Tensor<T>) -> rime_tensor::Result<Tensor<T>>;
}

struct Inner<T: Element> {
    id: TensorId,
    name: String,
    value: RwLock<Tensor<T>>,
    trainable: AtomicBool,
    mask: RwLock<Option<Arc<ResolvedMask>>>,
    constraint: RwLock<Option<Arc<dyn Constraint<T>>>>,
}

/// A shared handle to a mutable tensor: cloning the handle shares the
/// variable (this is how layers tie weights). `Send + Sync`.
///
/// Reading it with [`value`](Variable::value) while a [`GradientTape`]
/// records connects the read to the variable, so gradients can be taken
/// with respect to the variable itself; all reads add up.
///
/// [`GradientTape`]: crate::GradientTape
///
/// ```
/// use rime_tape::{GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, 2.0], [2])?);
/// let tape = GradientTape::new();
/// let y = w.value().mul(&w.value())?.sum_all(); // Σ w²
/// let g = tape.gradient(&y, &[&w])?;
/// assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![2.0, 4.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
pub struct Variable<T: Element = f32>(Arc<Inner<T>>);

/// A non-owning handle to a [`Variable`] (see [`Variable::downgrade`]).
pub struct WeakVariable<T: Element = f32>(std::sync::Weak<Inner<T>>);

impl<T: Element> WeakVariable<T> {
    /// Whether some [`Variable`] handle still holds the variable.
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }

    /// The variable, if it is still alive.
    pub fn upgrade(&self) -> Option<Variable<T>> {
        self.0.upgrade().map(Variable)
    }
}

impl<T: Element> Clone for WeakVariable<T> {
    fn clone(&self) -> Self {
        WeakVariable(self.0.clone())
    }
}

impl<T: Element> Clone for Variable<T> {
    fn clone(&self) -> Self {
        Variable(Arc::clone(&self.0))
    }
}

/// The variables whose `update` closure is running on this thread, with
/// their values from before the update (a `Tensor<T>` of the variable's
/// element type). Usually empty; at most a few entries deep.
struct Updating;

thread_local! {
    static UPDATING: RefCell<Vec<(TensorId, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Pops its entry from [`UPDATING`] when dropped (also while unwinding).
struct UpdatingGuard;

impl Drop for UpdatingGuard {
    fn drop(&mut self) {
        UPDATING.with(|u| u.borrow_mut().pop());
    }
}

impl Updating {
    /// Marks `id` as updating on this thread; `before` is the value reads
    /// see meanwhile (`None`: [`Variable::update_exclusive`], no snapshot).
    fn enter<T: Element>(id: TensorId, before: Option<Tensor<T>>) -> UpdatingGuard {
        UPDATING.with(|u| u.borrow_mut().push((id, Box::new(before))));
        UpdatingGuard
    }

    fn active(id: TensorId) -> bool {
        UPDATING.with(|u| u.borrow().iter().any(|(i, _)| *i == id))
    }

    /// `None`: not updating; `Some(None)`: updating without a snapshot.
    fn snapshot<T: Element>(id: TensorId) -> Option<Option<Tensor<T>>> {
        UPDATING.with(|u| {
            let u = u.borrow();
            let (_, t) = u.iter().rev().find(|(i, _)| *i == id)?;
            t.downcast_ref::<Option<Tensor<T>>>().cloned()
        })
    }
}

fn read<X>(l: &RwLock<X>) -> RwLockReadGuard<'_, X> {
    // a panic while holding the lock cannot leave a half-written tensor
    // (writes swap whole values), so a poisoned lock is still consistent
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<X>(l: &RwLock<X>) -> RwLockWriteGuard<'_, X> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl<T: Element> Variable<T> {
    /// A trainable variable holding `value`.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("bias", Tensor::<f32>::zeros([3]).unwrap());
    /// assert_eq!(v.name(), "bias");
    /// assert!(v.trainable());
    /// ```
    pub fn new(name: impl Into<String>, value: Tensor<T>) -> Self {
        Variable(Arc::new(Inner {
            id: TensorId::fresh(),
            name: name.into(),
            value: RwLock::new(value),
            trainable: AtomicBool::new(true),
            mask: RwLock::new(None),
            constraint: RwLock::new(None),
        }))
    }

    /// A variable that gradient training never changes (`trainable =
    /// false`), like BatchNormalization's moving statistics.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// assert!(!Variable::non_trainable("moving_mean", Tensor::<f32>::zeros([3]).unwrap()).trainable());
    /// ```
    pub fn non_trainable(name: impl Into<String>, value: Tensor<T>) -> Self {
        let v = Self::new(name, value);
        v.set_trainable(false);
        v
    }

    /// The variable's identity (shared by clones of the handle).
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let a = Variable::new("w", Tensor::<f32>::zeros([1]).unwrap());
    /// let b = Variable::new("w", Tensor::<f32>::zeros([1]).unwrap());
    /// assert_eq!(a.id(), a.clone().id());
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The name given at creation (errors name the variable by it).
    ///
    /// ```
    /// let v = rime_tape::Variable::new("dense/kernel", rime_tensor::Tensor::<f32>::zeros([1]).unwrap());
    /// assert_eq!(v.name(), "dense/kernel");
    /// ```
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The shape (fixed for the variable's life: assignments of another
    /// shape are errors).
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::zeros([2, 3]).unwrap());
    /// assert_eq!(v.shape(), [2, 3]);
    /// ```
    pub fn shape(&self) -> Shape {
        self.current().shape().clone()
    }

    /// Number of elements.
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::zeros([2, 3]).unwrap());
    /// assert_eq!(v.len(), 6);
    /// ```
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether the variable has no elements.
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::zeros([0, 3]).unwrap());
    /// assert!(v.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle that does not keep the variable alive (for caches keyed by
    /// variable, such as an optimizer's state, which must not outlive it).
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::zeros([1]).unwrap());
    /// let weak = v.downgrade();
    /// assert!(weak.is_alive());
    /// drop(v);
    /// assert!(!weak.is_alive());
    /// ```
    pub fn downgrade(&self) -> WeakVariable<T> {
        WeakVariable(Arc::downgrade(&self.0))
    }

    /// Whether two handles share one variable (also what `==` compares).
    ///
    /// ```
    /// let a = rime_tape::Variable::new("a", rime_tensor::Tensor::<f32>::zeros([1]).unwrap());
    /// let b = a.clone();
    /// assert!(a.ptr_eq(&b));
    /// assert!(!a.ptr_eq(&rime_tape::Variable::new("a", a.value())));
    /// ```
    pub fn ptr_eq(&self, other: &Variable<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The current value. While a tape records, the read is connected to
    /// the variable (and, with `watch_accessed_variables`, a trainable
    /// variable becomes watched).
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::full([1], 2.0)?);
    /// let tape = GradientTape::new();
    /// let y = w.value().powf(3.0).sum_all();
    /// assert_eq!(tape.watched_variables::<f32>(), vec![w.clone()]);
    /// assert_eq!(tape.gradient(&y, &[&w])?[0].as_ref().unwrap().to_vec(), vec![12.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn value(&self) -> Tensor<T> {
        let v = self.current();
        if rime_tensor::record::is_recording() {
            tape::on_variable_read(self, &v)
        } else {
            v
        }
    }

    /// The current value, never connected to any tape.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::ones([1]).unwrap());
    /// let tape = GradientTape::new();
    /// let _ = w.value_untracked().exp();
    /// assert!(tape.is_empty() && tape.watched_variables::<f32>().is_empty());
    /// ```
    pub fn value_untracked(&self) -> Tensor<T> {
        self.current()
    }

    /// The elements, copied.
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f64>::ones([2]).unwrap());
    /// assert_eq!(v.to_vec(), vec![1.0, 1.0]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.current().to_vec()
    }

    fn check_shape(&self, got: &Shape) -> Result<()> {
        let want = self.shape();
        if &want != got {
            return Err(Error::AssignShape {
                variable: self.name().to_string(),
                expected: want,
                got: got.clone(),
            });
        }
        Ok(())
    }

    /// Replaces the value; its shape must match.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f32>::zeros([2])?);
    /// v.assign(&Tensor::ones([2])?)?;
    /// assert_eq!(v.to_vec(), vec![1.0, 1.0]);
    /// assert!(v.assign(&Tensor::ones([1])?).is_err());
    /// assert_eq!(v.to_vec(), vec![1.0, 1.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn assign(&self, value: &Tensor<T>) -> Result<()> {
        self.check_not_updating("assign")?;
        let mut slot = write(&self.0.value);
        if slot.shape() != value.shape() {
            return Err(Error::AssignShape {
                variable: self.name().to_string(),
                expected: slot.shape().clone(),
                got: value.shape().clone(),
            });
        }
        *slot = value.detach();
        Ok(())
    }

    /// Adds `delta` (of the variable's shape) to the value.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f64>::ones([2])?);
    /// v.assign_add(&Tensor::ones([2])?)?;
    /// assert_eq!(v.to_vec(), vec![2.0, 2.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn assign_add(&self, delta: &Tensor<T>) -> Result<()> {
        self.check_shape(delta.shape())?;
        self.update(|w| {
            w.iter_mut()
                .zip(delta.as_slice())
                .for_each(|(w, &d)| *w += d)
        })
    }

    /// Subtracts `delta` (of the variable's shape) from the value; another
    /// shape is an error and changes nothing.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f64>::ones([2])?);
    /// v.assign_sub(&Tensor::full([2], 0.25)?)?;
    /// assert_eq!(v.to_vec(), vec![0.75, 0.75]);
    /// assert!(v.assign_sub(&Tensor::ones([3])?).is_err());
    /// assert_eq!(v.to_vec(), vec![0.75, 0.75]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn assign_sub(&self, delta: &Tensor<T>) -> Result<()> {
        self.check_shape(delta.shape())?;
        self.update(|w| {
            w.iter_mut()
                .zip(delta.as_slice())
                .for_each(|(w, &d)| *w -= d)
        })
    }

    /// Mutates the value in place (copying first only if a tensor read
    /// earlier still shares the buffer). Optimizers update through this.
    ///
    /// Other threads wait while `f` runs. On the thread running it, reads
    /// of this variable inside `f` see the value from before the update
    /// (they do not deadlock), and writes to it (`assign`, `update`, ...)
    /// are [`Error::ReentrantUpdate`], which this call also returns without
    /// running `f` when it is itself nested in an update of the variable.
    ///
    /// ```
    /// use rime_tape::{Error, Variable};
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f32>::ones([3])?);
    /// let before = v.value();
    /// v.update(|w| w[1] = 5.0)?;
    /// assert_eq!(v.to_vec(), vec![1.0, 5.0, 1.0]);
    /// assert_eq!(before.to_vec(), vec![1.0, 1.0, 1.0]); // earlier reads keep their value
    /// // reading inside the closure sees the old value
    /// let seen = v.update(|w| { let old = v.to_vec(); w[0] = 2.0; old })?;
    /// assert_eq!(seen, vec![1.0, 5.0, 1.0]);
    /// // writing inside it is an error, and changes nothing
    /// let nested = v.update(|_| v.assign(&Tensor::zeros([3]).unwrap()))?;
    /// assert!(matches!(nested, Err(Error::ReentrantUpdate { .. })));
    /// assert_eq!(v.to_vec(), vec![2.0, 5.0, 1.0]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn update<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        self.check_not_updating("update")?;
        let mut slot = write(&self.0.value);
        // the value before the update, for reads from inside `f`; it shares
        // the buffer, so `make_mut` below writes into a copy
        let _updating = Updating::enter(self.id(), Some(slot.clone()));
        Ok(f(slot.make_mut()))
    }

    /// [`update`](Variable::update) without the snapshot of the value before
    /// the update: no copy of the buffer when nothing else holds it (the
    /// optimizers' path). `f` must not read this variable: such a read
    /// panics, as a `RefCell` borrowed mutably does.
    ///
    /// ```
    /// use rime_tape::Variable;
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f32>::vector(vec![1.0, 2.0]));
    /// v.update_exclusive(|w| w.iter_mut().for_each(|x| *x *= 3.0))?;
    /// assert_eq!(v.to_vec(), vec![3.0, 6.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn update_exclusive<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        self.check_not_updating("update_exclusive")?;
        let mut slot = write(&self.0.value);
        let _updating = Updating::enter::<T>(self.id(), None);
        Ok(f(slot.make_mut()))
    }

    /// The current value: the pre-update snapshot when called from inside
    /// this variable's own `update` closure on this thread (the lock is held
    /// there), else the stored value.
    fn current(&self) -> Tensor<T> {
        match Updating::snapshot::<T>(self.id()) {
            Some(Some(before)) => before,
            Some(None) => panic!(
                "variable `{}` read inside its own update_exclusive closure \
                 (use update, whose closure may read the value before the update)",
                self.name()
            ),
            None => read(&self.0.value).clone(),
        }
    }

    /// Whether this thread is running this variable's
    /// [`update`](Variable::update) closure (where writes are errors).
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::ones([1]).unwrap());
    /// assert!(!v.is_updating());
    /// assert!(v.update(|_| v.is_updating()).unwrap());
    /// ```
    pub fn is_updating(&self) -> bool {
        Updating::active(self.id())
    }

    fn check_not_updating(&self, call: &'static str) -> Result<()> {
        if Updating::active(self.id()) {
            return Err(Error::ReentrantUpdate {
                variable: self.name().to_string(),
                call,
            });
        }
        Ok(())
    }

    /// Whether gradient training may change this variable.
    ///
    /// ```
    /// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::ones([1]).unwrap());
    /// assert!(v.trainable());
    /// ```
    pub fn trainable(&self) -> bool {
        self.0.trainable.load(Ordering::Relaxed)
    }

    /// Sets the `trainable` flag (shared by every handle). Tapes created
    /// later stop watching the variable by access.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f32>::ones([1]).unwrap());
    /// v.clone().set_trainable(false);
    /// assert!(!v.trainable());
    /// let tape = GradientTape::new();
    /// let _ = v.value().exp();
    /// assert!(tape.watched_variables::<f32>().is_empty());
    /// ```
    pub fn set_trainable(&self, trainable: bool) {
        self.0.trainable.store(trainable, Ordering::Relaxed);
    }

    /// The element mask, resolved against the variable's shape.
    ///
    /// ```
    /// use rime_tape::{TrainableMask, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::zeros([3, 2])?);
    /// assert!(w.mask().is_none());
    /// w.set_mask(Some(TrainableMask::rows(2..3)))?;
    /// assert_eq!(w.mask().unwrap().runs(), &[4..6]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn mask(&self) -> Option<Arc<ResolvedMask>> {
        read(&self.0.mask).clone()
    }

    /// Sets (or with `None` clears) the element mask. A mask that does not
    /// fit the variable's shape is an error and changes nothing.
    ///
    /// ```
    /// use rime_tape::{TrainableMask, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("kernel", Tensor::<f32>::zeros([4, 2])?);
    /// w.set_mask(Some(TrainableMask::freeze_rows(0..2)))?;
    /// assert_eq!(w.mask().unwrap().trainable_count(), 4);
    /// assert!(w.set_mask(Some(TrainableMask::rows(0..5))).is_err());
    /// assert_eq!(w.mask().unwrap().trainable_count(), 4);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn set_mask(&self, mask: Option<TrainableMask>) -> Result<()> {
        let resolved = match mask {
            Some(m) => Some(Arc::new(m.resolve(self.name(), &self.shape())?)),
            None => None,
        };
        *write(&self.0.mask) = resolved;
        Ok(())
    }

    /// The constraint applied after optimizer updates, if any.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rime_tape::{Constraint, Variable};
    /// use rime_tensor::Tensor;
    /// #[derive(Debug)]
    /// struct NonNeg;
    /// impl Constraint<f32> for NonNeg {
    ///     fn apply(&self, w: &Tensor<f32>) -> rime_tensor::Result<Tensor<f32>> { Ok(w.relu()) }
    /// }
    /// let w = Variable::new("w", Tensor::vector(vec![-1.0f32, 2.0]));
    /// assert!(w.constraint().is_none());
    /// w.set_constraint(Some(Arc::new(NonNeg)));
    /// let projected = w.constraint().unwrap().apply(&w.value_untracked())?;
    /// assert_eq!(projected.to_vec(), vec![0.0, 2.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn constraint(&self) -> Option<Arc<dyn Constraint<T>>> {
        read(&self.0.constraint).clone()
    }

    /// Sets (or with `None` clears) the constraint.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rime_tape::{Constraint, Variable};
    /// use rime_tensor::Tensor;
    /// #[derive(Debug)]
    /// struct Clip;
    /// impl Constraint<f32> for Clip {
    ///     fn apply(&self, w: &Tensor<f32>) -> rime_tensor::Result<Tensor<f32>> { w.clamp(-1.0, 1.0) }
    /// }
    /// let w = Variable::new("w", Tensor::<f32>::zeros([1]).unwrap());
    /// w.set_constraint(Some(Arc::new(Clip)));
    /// assert!(w.constraint().is_some());
    /// w.set_constraint(None);
    /// assert!(w.constraint().is_none());
    /// ```
    pub fn set_constraint(&self, constraint: Option<Arc<dyn Constraint<T>>>) {
        *write(&self.0.constraint) = constraint;
    }
}

impl<T: Element> fmt::Debug for Variable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variable")
            .field("name", &self.name())
            .field("shape", &self.shape())
            .field("dtype", &T::DTYPE)
            .field("trainable", &self.trainable())
            .field("masked", &self.mask().is_some())
            .finish()
    }
}

/// Handles are equal when they share one variable.
impl<T: Element> PartialEq for Variable<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other)
    }
}

impl<T: Element> Eq for Variable<T> {}

impl<T: Element> Hash for Variable<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

/// A variable of either element type (what a tape watches).
///
/// ```
/// use rime_tape::{AnyVariable, Variable, VariableElement};
/// use rime_tensor::Tensor;
/// let v = Variable::new("v", Tensor::<f64>::ones([1]).unwrap());
/// let any = f64::wrap(v.clone());
/// assert!(matches!(any, AnyVariable::F64(_)));
/// assert_eq!(any.id(), v.id());
/// ```
#[derive(Clone, Debug)]
pub enum AnyVariable {
    /// An `f32` variable.
    F32(Variable<f32>),
    /// An `f64` variable.
    F64(Variable<f64>),
}

/// Converting typed variables to and from [`AnyVariable`].
///
/// ```
/// use rime_tape::{Variable, VariableElement};
/// use rime_tensor::Tensor;
/// let any = f32::wrap(Variable::new("v", Tensor::<f32>::ones([1]).unwrap()));
/// assert!(f32::unwrap(&any).is_some());
/// assert!(f64::unwrap(&any).is_none());
/// ```
pub trait VariableElement: Element {
    /// Wraps.
    fn wrap(v: Variable<Self>) -> AnyVariable;
    /// Unwraps if the type matches.
    fn unwrap(v: &AnyVariable) -> Option<&Variable<Self>>;
}

impl VariableElement for f32 {
    fn wrap(v: Variable<Self>) -> AnyVariable {
        AnyVariable::F32(v)
    }
    fn unwrap(v: &AnyVariable) -> Option<&Variable<Self>> {
        match v {
            AnyVariable::F32(v) => Some(v),
            AnyVariable::F64(_) => None,
        }
    }
}

impl VariableElement for f64 {
    fn wrap(v: Variable<Self>) -> AnyVariable {
        AnyVariable::F64(v)
    }
    fn unwrap(v: &AnyVariable) -> Option<&Variable<Self>> {
        match v {
            AnyVariable::F64(v) => Some(v),
            AnyVariable::F32(_) => None,
        }
    }
}

impl AnyVariable {
    /// The variable's identity.
    ///
    /// ```
    /// use rime_tape::{AnyVariable, Variable};
    /// use rime_tensor::Tensor;
    /// let v = Variable::new("v", Tensor::<f32>::ones([1]).unwrap());
    /// assert_eq!(AnyVariable::F32(v.clone()).id(), v.id());
    /// ```
    pub fn id(&self) -> TensorId {
        match self {
            AnyVariable::F32(v) => v.id(),
            AnyVariable::F64(v) => v.id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<X: Send + Sync>() {}

    #[test]
    fn variables_are_send_sync_and_shared() {
        assert_send_sync::<Variable<f32>>();
        assert_send_sync::<Variable<f64>>();
        let a = Variable::new("a", Tensor::<f32>::zeros([2]).unwrap());
        let b = a.clone();
        b.assign(&Tensor::ones([2]).unwrap()).unwrap();
        assert_eq!(a.to_vec(), vec![1.0, 1.0]);
        assert_eq!(a, b);
        assert_ne!(a, Variable::new("a", Tensor::<f32>::zeros([2]).unwrap()));
        std::thread::spawn(move || b.assign_add(&Tensor::ones([2]).unwrap()).unwrap())
            .join()
            .unwrap();
        assert_eq!(a.to_vec(), vec![2.0, 2.0]);
    }

    #[test]
    fn bad_assignments_change_nothing() {
        let v = Variable::new("v", Tensor::<f32>::ones([2, 2]).unwrap());
        for r in [
            v.assign(&Tensor::zeros([4]).unwrap()),
            v.assign_add(&Tensor::zeros([2]).unwrap()),
            v.assign_sub(&Tensor::zeros([2, 2, 1]).unwrap()),
        ] {
            assert!(matches!(r, Err(Error::AssignShape { ref variable, .. }) if variable == "v"));
        }
        assert_eq!(v.to_vec(), vec![1.0; 4]);
    }
}
