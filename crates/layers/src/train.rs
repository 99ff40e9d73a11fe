//! [`TrainStep`]: one optimizer step on a batch, built from a model, an
//! optimizer and a loss — the counterpart of Keras' `compile`.
//!
//! The custom loop (a [`GradientTape`], `trainable_weights()`,
//! `apply_gradients`) stays the first-class path; a `TrainStep` packages
//! it, with one rule of its own: it takes the set of trainable variables
//! and their masks **when it is built**. Freezing or unfreezing a layer (or
//! changing a mask) afterwards changes steps built later, not this one
//! (docs/design.md rule 4, Keras' compile-time snapshot).

use std::sync::Arc;

use rime_tape::{DeferredGradient, GradientTape, ResolvedMask, SourceRef, Variable};
use rime_tensor::{Element, Tensor};

use crate::collective::{Collective, StepExchange};
use crate::data::Batch;
use crate::losses::Loss;
use crate::optimizers::Optimizer;
use crate::{CallContext, Error, Layer, ModelData, Result, Target};

/// A training step bound to a model, an optimizer and a loss.
///
/// ```
/// use rime_layers::{losses::MeanSquaredError, optimizers::Sgd, Dense, Layer, Sequential, TrainStep};
/// use rime_tensor::Tensor;
/// let model = Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2])?;
/// let mut step = TrainStep::new(&model, Sgd::new().learning_rate(0.1), MeanSquaredError::new());
/// let (x, y) = (Tensor::ones([4, 2])?, Tensor::zeros([4, 1])?);
/// let first = step.run(&x, &y)?;
/// for _ in 0..20 {
///     step.run(&x, &y)?;
/// }
/// assert!(step.run(&x, &y)? < first);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct TrainStep<'m, T: Element = f32> {
    model: &'m dyn Layer<T>,
    optimizer: Box<dyn Optimizer<T> + 'm>,
    loss: Box<dyn Loss<T> + 'm>,
    variables: Vec<Variable<T>>,
    masks: Vec<Option<Arc<ResolvedMask>>>,
    collective: Option<Box<dyn Collective<T> + 'm>>,
    fused_updates: bool,
}

impl<'m, T: Element> TrainStep<'m, T> {
    /// Binds the step, snapshotting `model.trainable_weights()` and their
    /// masks now.
    pub fn new(
        model: &'m dyn Layer<T>,
        optimizer: impl Optimizer<T> + 'm,
        loss: impl Loss<T> + 'm,
    ) -> Self {
        let variables = model.trainable_weights();
        let masks = variables.iter().map(|v| v.mask()).collect();
        TrainStep {
            model,
            optimizer: Box::new(optimizer),
            loss: Box::new(loss),
            variables,
            masks,
            collective: None,
            fused_updates: true,
        }
    }

    /// Whether the step fuses weight-gradient products into the optimizer
    /// update (on by default): a Dense kernel's gradient `xᵀδ` is then
    /// computed block by block, each block applied while in cache, with no
    /// gradient buffer of the kernel's size
    /// ([`GradientTape::gradient_deferred`], [`Optimizer::apply_deferred`]).
    /// The weights are the same bit for bit either way; off is for
    /// comparing the two. A step with a [collective](TrainStep::with_collective)
    /// never fuses: its gradients are averaged over the processes first.
    ///
    /// ```
    /// use rime_layers::{losses::MeanSquaredError, optimizers::Sgd, Dense, Layer, Sequential, TrainStep};
    /// use rime_tensor::Tensor;
    /// let model = Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2])?;
    /// let mut step = TrainStep::new(&model, Sgd::new(), MeanSquaredError::new())
    ///     .with_fused_updates(false);
    /// assert!(!step.fused_updates());
    /// step.run(&Tensor::ones([4, 2])?, &Tensor::zeros([4, 1])?)?;
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn with_fused_updates(mut self, on: bool) -> Self {
        self.fused_updates = on;
        self
    }

    /// Whether this step fuses weight-gradient products into the update
    /// (see [`with_fused_updates`](TrainStep::with_fused_updates)).
    pub fn fused_updates(&self) -> bool {
        self.fused_updates && self.collective.is_none()
    }

    /// Trains together with other processes through `collective` (data
    /// parallelism, see [`collective`](crate::collective)): every step
    /// averages its gradients and staged state over the processes before
    /// the update. Call [`broadcast_state`](TrainStep::broadcast_state)
    /// before the first step (`fit` does).
    pub fn with_collective(mut self, collective: impl Collective<T> + 'm) -> Self {
        self.collective = Some(Box::new(collective));
        self
    }

    /// The collective this step trains through (`None`: one process).
    pub fn collective(&self) -> Option<&(dyn Collective<T> + 'm)> {
        self.collective.as_deref()
    }

    /// The same, mutable (for `fit`'s reductions and a custom loop's own).
    pub fn collective_mut(&mut self) -> Option<&mut (dyn Collective<T> + 'm)> {
        self.collective.as_deref_mut()
    }

    /// Whether this process is the root (always, without a collective).
    pub fn is_root(&self) -> bool {
        self.collective.as_ref().is_none_or(|c| c.is_root())
    }

    /// Makes this process's weights and optimizer state equal to the root
    /// process's ([`Collective::broadcast_state`]); nothing without a
    /// collective.
    pub fn broadcast_state(&mut self) -> Result<()> {
        match self.collective.as_deref_mut() {
            Some(c) => c.broadcast_state(self.model, &self.variables, &mut *self.optimizer),
            None => Ok(()),
        }
    }

    /// The variables this step trains (the snapshot).
    pub fn variables(&self) -> &[Variable<T>] {
        &self.variables
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer<T> {
        &*self.optimizer
    }

    /// The optimizer, to change its learning rate or restore its state.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer<T> {
        &mut *self.optimizer
    }

    /// The model this step trains.
    pub fn model(&self) -> &'m dyn Layer<T> {
        self.model
    }

    /// The loss.
    pub fn loss(&self) -> &dyn Loss<T> {
        &*self.loss
    }

    /// Takes a new snapshot of the model's trainable variables and masks,
    /// **keeping the optimizer and its state** (slots, iterations): Keras'
    /// `compile` again with the same optimizer object, after freezing a
    /// layer or changing a mask. The result trains exactly like a custom
    /// loop that kept one optimizer throughout.
    ///
    /// ```
    /// use rime_layers::{losses::MeanSquaredError, optimizers::{Adam, Optimizer}, Dense, Layer, Sequential, TrainStep};
    /// use rime_tape::TrainableMask;
    /// use rime_tensor::Tensor;
    /// let model = Sequential::<f32>::new().add(Dense::new(2)).with_input_shape([3])?;
    /// let mut step = TrainStep::new(&model, Adam::new(), MeanSquaredError::new());
    /// let (x, y) = (Tensor::ones([4, 3])?, Tensor::zeros([4, 2])?);
    /// step.run(&x, &y)?;
    /// let kernel = model.weights()[0].clone();
    /// kernel.set_mask(Some(TrainableMask::freeze_rows(0..1)))?;
    /// step.rebuild();
    /// let row0 = kernel.to_vec()[..2].to_vec();
    /// step.run(&x, &y)?;
    /// assert_eq!(kernel.to_vec()[..2], row0[..]);
    /// assert_eq!(step.optimizer().iterations(), 2);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn rebuild(&mut self) {
        self.variables = self.model.trainable_weights();
        self.masks = self.variables.iter().map(|v| v.mask()).collect();
    }

    /// One step on a batch of a one-input, one-output model: forward in
    /// training mode, loss plus the model's `losses()`, gradients of the
    /// snapshot variables (zero at their snapshot masks' frozen elements),
    /// one optimizer update. Returns the loss before the update.
    pub fn run(&mut self, x: &Tensor<T>, y: &Tensor<T>) -> Result<T> {
        self.run_with_outputs(&[ModelData::Float(x.clone())], &[Target::Float(y.clone())])
            .map(|(loss, _)| loss)
    }

    /// [`run`](TrainStep::run) for any [`ModelData`]: `x` and `y` are
    /// float tensors of the model's type, or integer
    /// tensors (`i64`, `i32`): token ids for a model whose first layer is
    /// an `Embedding` (they reach it as integers, never through floats),
    /// class indices for the sparse losses.
    ///
    /// ```
    /// use rime_layers::losses::SparseCategoricalCrossentropy;
    /// use rime_layers::optimizers::Sgd;
    /// use rime_layers::{Dense, Embedding, Flatten, Layer, Sequential, TrainStep};
    /// use rime_tensor::Tensor;
    /// let model = Sequential::<f32>::new()
    ///     .add(Embedding::new(1000, 4))
    ///     .add(Flatten::new())
    ///     .add(Dense::new(2))
    ///     .with_input_shape([3])?;
    /// let loss = SparseCategoricalCrossentropy::new().with_from_logits(true);
    /// let mut step = TrainStep::new(&model, Sgd::new().learning_rate(0.5), loss);
    /// let ids = Tensor::from_vec(vec![999i64, 3, 17, 0, 0, 512], [2, 3])?;
    /// let labels = Tensor::vector(vec![1i64, 0]);
    /// let first = step.run_data(&ids, &labels)?;
    /// assert!(step.run_data(&ids, &labels)? < first);
    /// // an id outside the table is an error naming the layer, and the
    /// // step changes nothing
    /// let bad = Tensor::from_vec(vec![1000i64, 0, 0, 0, 0, 0], [2, 3])?;
    /// assert!(matches!(step.run_data(&bad, &labels), Err(rime_layers::Error::IndexOutOfBounds { .. })));
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn run_data(&mut self, x: impl Into<ModelData<T>>, y: impl Into<Target<T>>) -> Result<T> {
        self.run_with_outputs(&[x.into()], &[y.into()])
            .map(|(loss, _)| loss)
    }

    /// [`run`](TrainStep::run) with integer targets: class indices for the
    /// sparse losses, which read them as they are (other losses convert
    /// them to `T`).
    ///
    /// ```
    /// use rime_layers::losses::SparseCategoricalCrossentropy;
    /// use rime_layers::optimizers::Sgd;
    /// use rime_layers::{Dense, Sequential, TrainStep};
    /// use rime_tensor::Tensor;
    /// let model = Sequential::<f32>::new().add(Dense::new(3)).with_input_shape([2])?;
    /// let loss = SparseCategoricalCrossentropy::new().with_from_logits(true);
    /// let mut step = TrainStep::new(&model, Sgd::new(), loss);
    /// let x = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], [2, 2])?;
    /// let first = step.run_int(&x, &Tensor::vector(vec![2i64, 0]))?;
    /// assert!(step.run_int(&x, &Tensor::vector(vec![2i64, 0]))? < first);
    /// // a label outside 0..3 is an error, and the step changes nothing
    /// assert!(step.run_int(&x, &Tensor::vector(vec![3i64, 0])).is_err());
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn run_int(&mut self, x: &Tensor<T>, y: &Tensor<i64>) -> Result<T> {
        self.run_with_outputs(&[ModelData::Float(x.clone())], &[Target::Int(y.clone())])
            .map(|(loss, _)| loss)
    }

    /// One step on a dataset's batch (float or integer targets).
    pub fn run_batch(&mut self, batch: &Batch<T>) -> Result<T> {
        self.run_with_outputs(&batch.inputs, &batch.targets)
            .map(|(loss, _)| loss)
    }

    /// The same for models with several inputs and outputs: the loss is
    /// applied to each output with its target and the results added.
    pub fn run_many(&mut self, inputs: &[Tensor<T>], targets: &[Tensor<T>]) -> Result<T> {
        let inputs: Vec<ModelData<T>> = inputs.iter().cloned().map(ModelData::Float).collect();
        let targets: Vec<Target<T>> = targets.iter().cloned().map(Target::Float).collect();
        self.run_with_outputs(&inputs, &targets)
            .map(|(loss, _)| loss)
    }

    /// [`run_many`](TrainStep::run_many) with [`ModelData`] inputs (float
    /// features or integer ids) and [`Target`]s (float values or integer
    /// class indices), also returning the model's
    /// outputs of the training-mode forward pass (before the update), from
    /// which `fit` updates its metrics as Keras does.
    ///
    /// A step that fails changes nothing: targets are checked before the
    /// forward pass, the forward pass's state updates (moving statistics)
    /// are staged and committed only after the optimizer update succeeded,
    /// and the optimizer's own update is all or nothing.
    ///
    /// With a [collective](TrainStep::with_collective), the gradients and
    /// staged state are replaced by their means over the processes before
    /// the update, and a step that fails on one process fails on all.
    pub fn run_with_outputs(
        &mut self,
        inputs: &[ModelData<T>],
        targets: &[Target<T>],
    ) -> Result<(T, Vec<Tensor<T>>)> {
        let checked = self.check_targets(targets);
        let defer = self.fused_updates();
        let (result, mut staged) = match checked {
            Ok(()) => crate::staging::stage(|| self.forward_backward(inputs, targets, defer)),
            Err(e) => (Err(e), crate::staging::Staged::empty()),
        };
        if defer {
            // Fused: the deferred products are computed and applied in the
            // optimizer's final pass, after everything that can fail (the
            // backward pass, the optimizer's checks): a failed step changes
            // nothing, as unfused.
            let (value, outputs, grads) = result?;
            if let Some(grads) = grads {
                self.optimizer
                    .apply_deferred_masked(grads, &self.variables, &self.masks)?;
            }
            staged.commit()?;
            return Ok((value, outputs));
        }
        // nothing is deferred when not asked for: these are all computed
        let mut result = result.and_then(|(value, outputs, grads)| {
            let grads = grads
                .map(|g| {
                    g.into_iter()
                        .map(|g| g.map(DeferredGradient::into_tensor).transpose())
                        .collect::<rime_tape::Result<Vec<_>>>()
                })
                .transpose()?;
            Ok((value, outputs, grads))
        });
        if let Some(collective) = self.collective.as_deref_mut() {
            let mut no_grads: Vec<Option<Tensor<T>>> = Vec::new();
            let (failed, grads) = match &mut result {
                Ok((_, _, Some(g))) => (false, g),
                // a frozen model trains nothing but still averages its state
                Ok((_, _, None)) => (false, &mut no_grads),
                Err(_) => (true, &mut no_grads),
            };
            let mut state: Vec<Tensor<T>> = if failed {
                Vec::new()
            } else {
                staged
                    .values_mut::<T>()
                    .into_iter()
                    .map(|t| t.clone())
                    .collect()
            };
            let exchanged = collective.exchange_step(StepExchange {
                failed,
                gradients: grads,
                variables: if failed { &[] } else { &self.variables },
                masks: if failed { &[] } else { &self.masks },
                state: &mut state,
            });
            // this process's own error first; else the exchange's
            if result.is_ok() {
                exchanged?;
            }
            for (staged, mean) in staged.values_mut::<T>().into_iter().zip(state) {
                *staged = mean;
            }
        }
        let (value, outputs, grads) = result?;
        if let Some(grads) = grads {
            self.optimizer
                .apply_gradients_masked(&grads, &self.variables, &self.masks)?;
        }
        staged.commit()?;
        Ok((value, outputs))
    }

    /// Tells the other processes that this one failed before its step's
    /// exchange (a batch that could not be read), so that they fail too
    /// instead of waiting for it.
    pub(crate) fn report_failure(&mut self) {
        if let Some(c) = self.collective.as_deref_mut() {
            // the caller returns its own error; the exchange's adds nothing
            let _ = c.exchange_step(StepExchange {
                failed: true,
                gradients: &mut [],
                variables: &[],
                masks: &[],
                state: &mut [],
            });
        }
    }

    /// What can be checked of the targets before the forward pass; their
    /// count and shapes are checked against the outputs before anything
    /// is applied.
    fn check_targets(&self, targets: &[Target<T>]) -> Result<()> {
        if targets.is_empty() {
            return Err(Error::InvalidArgument {
                what: format!("train step of `{}`", self.model.name()),
                msg: "no targets given".into(),
            });
        }
        Ok(())
    }

    /// Forward pass, loss and gradients (`None` for a frozen model); no
    /// variable changes here.
    #[allow(clippy::type_complexity)]
    fn forward_backward(
        &self,
        inputs: &[ModelData<T>],
        targets: &[Target<T>],
        defer: bool,
    ) -> Result<(T, Vec<Tensor<T>>, Option<Vec<Option<DeferredGradient<T>>>>)> {
        let tape = GradientTape::builder()
            .watch_accessed_variables(false)
            .start();
        for v in &self.variables {
            tape.watch(v);
        }
        let outputs = self.model.apply_data(inputs, CallContext::TRAINING)?;
        if outputs.len() != targets.len() {
            return Err(Error::InvalidArgument {
                what: format!("train step of `{}`", self.model.name()),
                msg: format!("{} targets for {} outputs", targets.len(), outputs.len()),
            });
        }
        let mut loss = Tensor::scalar(T::zero());
        for (y, p) in targets.iter().zip(&outputs) {
            loss = loss.add(&self.loss.call_target(y, p)?)?;
        }
        for penalty in self.model.losses()? {
            loss = loss.add(&penalty)?;
        }
        let value = loss.to_scalar()?;
        if self.variables.is_empty() {
            // a frozen model: forward and loss only, nothing to train
            return Ok((value, outputs, None));
        }
        let sources: Vec<SourceRef<T>> = self
            .variables
            .iter()
            .zip(&self.masks)
            .map(|(v, m)| SourceRef::variable_with_mask(v, m.clone()))
            .collect();
        let grads = if defer {
            tape.gradient_deferred(&loss, &sources)?
        } else {
            tape.gradient(&loss, &sources)?
                .into_iter()
                .map(|g| g.map(DeferredGradient::Dense))
                .collect()
        };
        Ok((value, outputs, Some(grads)))
    }
}
