//! Gradients without list bookkeeping: the single-source form
//! [`GradientTape::gradient_of`] and the collection [`Gradients`], looked up
//! by the variable or tensor they belong to.

use std::ops::{Deref, Index};

use rime_tensor::{Element, Tensor, TensorId};

use crate::{AsSource, Error, GradientOptions, GradientTape, Result, UnconnectedGradients};

impl GradientTape {
    /// The gradient of `target` (of its sum, if not a scalar) with respect
    /// to one source. A source the target does not depend on is an
    /// [`Error::Unconnected`]; [`gradient_of_with`](Self::gradient_of_with)
    /// returns zeros instead when asked. Masked variables get exact zeros
    /// at frozen elements. Other errors as [`gradient`](Self::gradient).
    ///
    /// ```
    /// use rime_tape::{Error, GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, 2.0], [2])?);
    /// let unused = Variable::new("unused", Tensor::from_vec(vec![0.0f32], [1])?);
    /// let tape = GradientTape::persistent();
    /// let loss = w.value().square().sum_all();
    /// assert_eq!(tape.gradient_of(&loss, &w)?.to_vec(), vec![2.0, 4.0]);
    /// assert!(matches!(tape.gradient_of(&loss, &unused), Err(Error::Unconnected { .. })));
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn gradient_of<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        source: S,
    ) -> Result<Tensor<T>> {
        self.gradient_of_with(target, source, UnconnectedGradients::None)
    }

    /// [`gradient_of`](Self::gradient_of) with a choice for an unconnected
    /// source: [`UnconnectedGradients::None`] is an [`Error::Unconnected`],
    /// [`UnconnectedGradients::Zero`] a tensor of zeros of its shape.
    ///
    /// ```
    /// use rime_tape::{GradientTape, UnconnectedGradients, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::from_vec(vec![1.0f64, 2.0], [2])?);
    /// let frozen_out = Variable::new("v", Tensor::from_vec(vec![3.0f64], [1])?);
    /// let tape = GradientTape::new();
    /// let loss = w.value().sum_all();
    /// let g = tape.gradient_of_with(&loss, &frozen_out, UnconnectedGradients::Zero)?;
    /// assert_eq!(g.to_vec(), vec![0.0]); // zeros of the source's shape
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn gradient_of_with<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        source: S,
        unconnected: UnconnectedGradients,
    ) -> Result<Tensor<T>> {
        let source = source.as_source();
        let options = GradientOptions {
            unconnected,
            ..Default::default()
        };
        let grad = self
            .gradient_with(&[target], std::slice::from_ref(&source), options)?
            .pop()
            .flatten();
        grad.ok_or_else(|| Error::Unconnected {
            call: "gradient_of",
            shape: source.shape().clone(),
        })
    }

    /// [`gradient`](Self::gradient) as a [`Gradients`] collection: one
    /// entry per source in order (it derefs to `[Option<Tensor<T>>]`, so an
    /// optimizer's `apply_gradients(&grads, &vars)` takes it as is), and
    /// each gradient looked up by its variable or tensor: `grads[&w]`.
    ///
    /// ```
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, 2.0], [2])?);
    /// let b = Variable::new("b", Tensor::from_vec(vec![0.5f32], [1])?);
    /// let tape = GradientTape::new();
    /// let loss = w.value().square().sum_all().add(&b.value().sum_all().mul_scalar(3.0))?;
    /// let grads = tape.gradients(&loss, &[&w, &b])?;
    /// assert_eq!(grads[&w].to_vec(), vec![2.0, 4.0]);
    /// assert_eq!(grads[&b].to_vec(), vec![3.0]);
    /// assert_eq!(grads.len(), 2);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn gradients<T: Element, S: AsSource<T>>(
        &self,
        target: &Tensor<T>,
        sources: &[S],
    ) -> Result<Gradients<T>> {
        let ids = sources.iter().map(|s| s.as_source().id()).collect();
        let grads = self.gradient(target, sources)?;
        Ok(Gradients { ids, grads })
    }
}

/// Gradients, one entry per source in the order asked (`None` for a source
/// the target does not depend on), looked up by the variable or tensor they
/// belong to. Made by [`GradientTape::gradients`]. Derefs to
/// `[Option<Tensor<T>>]`, the form optimizers take.
///
/// Indexing with a source (`grads[&w]`) panics if `w` was not among the
/// sources or is unconnected; [`get`](Self::get) is the checked form.
///
/// ```
/// use rime_tape::{GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let w = Variable::new("w", Tensor::from_vec(vec![3.0f32], [1])?);
/// let other = Variable::new("other", Tensor::from_vec(vec![1.0f32], [1])?);
/// let tape = GradientTape::new();
/// let grads = tape.gradients(&w.value().square().sum_all(), &[&w, &other])?;
/// assert_eq!(grads.get(&w).map(|g| g.to_vec()), Some(vec![6.0]));
/// assert!(grads.get(&other).is_none()); // unconnected
/// assert!(grads[1].is_none()); // by position, as a slice
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<T: Element> {
    ids: Vec<TensorId>,
    grads: Vec<Option<Tensor<T>>>,
}

impl<T: Element> Gradients<T> {
    /// The gradient of `source`: `None` if it was not a source or the target
    /// does not depend on it. A source listed twice has the same gradient
    /// in both entries; this returns the first.
    pub fn get<S: AsSource<T> + ?Sized>(&self, source: &S) -> Option<&Tensor<T>> {
        let id = source.as_source().id();
        let at = self.ids.iter().position(|&i| i == id)?;
        self.grads[at].as_ref()
    }

    /// Whether `source` was among the sources asked for.
    pub fn contains<S: AsSource<T> + ?Sized>(&self, source: &S) -> bool {
        let id = source.as_source().id();
        self.ids.contains(&id)
    }

    /// The gradients in source order.
    pub fn into_vec(self) -> Vec<Option<Tensor<T>>> {
        self.grads
    }
}

impl<T: Element> Deref for Gradients<T> {
    type Target = [Option<Tensor<T>>];
    fn deref(&self) -> &Self::Target {
        &self.grads
    }
}

impl<T: Element> From<Gradients<T>> for Vec<Option<Tensor<T>>> {
    fn from(g: Gradients<T>) -> Self {
        g.grads
    }
}

impl<T: Element, S: AsSource<T>> Index<&S> for Gradients<T> {
    type Output = Tensor<T>;
    /// Panics if `source` was not a source or is unconnected.
    fn index(&self, source: &S) -> &Tensor<T> {
        match self.get(source) {
            Some(g) => g,
            None => {
                let shape = source.as_source().shape().clone();
                if self.contains(source) {
                    panic!(
                        "Gradients[..]: the target does not depend on the source of shape {shape}"
                    )
                }
                panic!(
                    "Gradients[..]: the source of shape {shape} was not among the gradient's sources"
                )
            }
        }
    }
}

impl<T: Element> Index<usize> for Gradients<T> {
    type Output = Option<Tensor<T>>;
    /// The entry at `position` in source order; panics if out of range.
    fn index(&self, position: usize) -> &Option<Tensor<T>> {
        &self.grads[position]
    }
}

impl<'a, T: Element> IntoIterator for &'a Gradients<T> {
    type Item = &'a Option<Tensor<T>>;
    type IntoIter = std::slice::Iter<'a, Option<Tensor<T>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.grads.iter()
    }
}
