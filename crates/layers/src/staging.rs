//! Staged state updates: what a layer changes during a forward pass besides
//! its output (BatchNormalization's moving statistics) waits, inside a
//! [`TrainStep`](crate::TrainStep), until the whole step has succeeded, so a
//! step that fails (bad targets, a loss or optimizer error) changes nothing.
//!
//! Outside a training step [`assign_state`] assigns at once, as before.

use std::any::Any;
use std::cell::RefCell;

use rime_tape::Variable;
use rime_tensor::{Element, Tensor, TensorId};

use crate::Result;

/// One staged assignment of a variable of some element type.
trait Pending {
    /// The variable's id.
    fn id(&self) -> TensorId;
    /// The new value, a `Tensor<T>` (type-erased).
    fn value(&self) -> &dyn Any;
    /// The same, to replace before commit (a training step averaging it
    /// across processes).
    fn value_mut(&mut self) -> &mut dyn Any;
    /// Assigns the value.
    fn commit(self: Box<Self>) -> rime_tape::Result<()>;
}

struct Assignment<T: Element> {
    var: Variable<T>,
    value: Tensor<T>,
}

impl<T: Element> Pending for Assignment<T> {
    fn id(&self) -> TensorId {
        self.var.id()
    }
    fn value(&self) -> &dyn Any {
        &self.value
    }
    fn value_mut(&mut self) -> &mut dyn Any {
        &mut self.value
    }
    fn commit(self: Box<Self>) -> rime_tape::Result<()> {
        self.var.assign(&self.value)
    }
}

thread_local! {
    /// The open staging scopes of this thread, innermost last.
    static STAGES: RefCell<Vec<Vec<Box<dyn Pending>>>> = const { RefCell::new(Vec::new()) };
}

/// Sets a layer's state variable (a non-trainable weight updated by the
/// forward pass) to `value`: at once, or, inside a training step, when the
/// step succeeds. The shape is checked now either way.
///
/// ```
/// use rime_layers::assign_state;
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// let v = Variable::non_trainable("moving_mean", Tensor::<f32>::zeros([2])?);
/// assign_state(&v, Tensor::ones([2])?)?;
/// assert_eq!(v.to_vec(), vec![1.0, 1.0]);
/// assert!(assign_state(&v, Tensor::ones([3])?).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn assign_state<T: Element>(var: &Variable<T>, value: Tensor<T>) -> Result<()> {
    if var.shape() != *value.shape() {
        return Err(rime_tape::Error::AssignShape {
            variable: var.name().to_string(),
            expected: var.shape(),
            got: value.shape().clone(),
        }
        .into());
    }
    let staged = STAGES.with(|s| {
        let mut s = s.borrow_mut();
        let Some(stage) = s.last_mut() else {
            return false;
        };
        stage.push(Box::new(Assignment {
            var: var.clone(),
            value: value.clone(),
        }));
        true
    });
    if !staged {
        var.assign(&value)?;
    }
    Ok(())
}

/// The value of a state variable as the forward pass should see it: the
/// latest staged value when the step has staged one (a layer called twice
/// in one step), else the variable's own, untracked.
///
/// ```
/// use rime_layers::current_state;
/// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::ones([1])?);
/// assert_eq!(current_state(&v).to_vec(), vec![1.0]);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub fn current_state<T: Element>(var: &Variable<T>) -> Tensor<T> {
    let staged = STAGES.with(|s| {
        let s = s.borrow();
        let stage = s.last()?;
        let p = stage.iter().rev().find(|p| p.id() == var.id())?;
        p.value().downcast_ref::<Tensor<T>>().cloned()
    });
    staged.unwrap_or_else(|| var.value_untracked())
}

/// The updates staged while running a closure under [`stage`].
pub(crate) struct Staged(Vec<Box<dyn Pending>>);

impl Staged {
    /// Nothing staged.
    pub fn empty() -> Self {
        Staged(Vec::new())
    }

    /// The staged values of element type `T`, in the order staged, to
    /// replace (keeping their shapes) before [`commit`](Staged::commit).
    pub fn values_mut<T: Element>(&mut self) -> Vec<&mut Tensor<T>> {
        self.0
            .iter_mut()
            .filter_map(|p| p.value_mut().downcast_mut::<Tensor<T>>())
            .collect()
    }

    /// Applies the staged updates in order. They were shape-checked when
    /// staged, so this fails only on a variable being updated meanwhile.
    pub fn commit(self) -> Result<()> {
        for p in self.0 {
            p.commit()?;
        }
        Ok(())
    }
}

/// Runs `f` with state updates staged instead of applied; returns its
/// result and the staged updates (dropping them discards them).
pub(crate) fn stage<R>(f: impl FnOnce() -> R) -> (R, Staged) {
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            STAGES.with(|s| s.borrow_mut().pop());
        }
    }
    STAGES.with(|s| s.borrow_mut().push(Vec::new()));
    let scope = Scope;
    let r = f();
    let pending = STAGES.with(|s| s.borrow_mut().last_mut().map(std::mem::take));
    drop(scope);
    (r, Staged(pending.unwrap_or_default()))
}
