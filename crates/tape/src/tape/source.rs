//! What a gradient is taken with respect to: tensors, variables (with
//! their masks), and the dtype-erased [`Source`] list.

#[allow(unused_imports)]
use super::*;

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
    pub(crate) id: TensorId,
    pub(crate) shape: Shape,
    pub(crate) mask: Option<Arc<ResolvedMask>>,
    pub(crate) _t: std::marker::PhantomData<T>,
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
