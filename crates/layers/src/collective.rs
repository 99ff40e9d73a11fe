//! The extension point for training one model in several processes
//! (data parallelism): what a [`TrainStep`](crate::TrainStep) and
//! [`Trainer::fit`](crate::fit::Trainer::fit) ask of their peer processes.
//!
//! rime-layers knows nothing of transports. A step without a
//! [`Collective`] is a single process and does exactly what it did before;
//! a step given one (rime-distributed's `DataParallel` implements it over
//! MPI) calls it at three points:
//!
//! - [`broadcast_state`](Collective::broadcast_state) when training starts
//!   (`fit` calls it first thing; a custom loop calls
//!   [`TrainStep::broadcast_state`](crate::TrainStep::broadcast_state)):
//!   every process takes the root's weights, non-trainable state and
//!   optimizer state;
//! - [`exchange_step`](Collective::exchange_step) in every step, between
//!   the backward pass and the optimizer update: gradients are replaced by
//!   their mean over the processes, and so are the state updates the
//!   forward pass staged (BatchNormalization's moving statistics);
//! - [`reduce_f64`](Collective::reduce_f64) for what `fit` reports and
//!   decides: loss and metric sums, the number of batches per epoch, and
//!   whether any process failed or asked to stop.
//!
//! Every process must make the same calls in the same order (they are
//! collective operations). A failure on one process is therefore still
//! reported to the others through the exchange, so that all of them
//! return an error rather than some waiting forever.

use std::sync::Arc;

use rime_tape::{ResolvedMask, Variable};
use rime_tensor::{Element, Tensor};

use crate::optimizers::Optimizer;
use crate::{Layer, Result};

/// How [`Collective::reduce_f64`] combines the processes' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over processes.
    Sum,
    /// The minimum over processes.
    Min,
    /// The maximum over processes.
    Max,
}

/// One training step's contribution to [`Collective::exchange_step`].
pub struct StepExchange<'a, T: Element = f32> {
    /// This process's forward or backward pass failed (then `gradients`
    /// and `state` are empty). It still takes part, so that the others
    /// learn of the failure and return an error too.
    pub failed: bool,
    /// The gradients of `variables` (`None`: the loss does not depend on
    /// that variable on this process), replaced by their mean over the
    /// processes; `None` only where it is `None` on every process.
    pub gradients: &'a mut [Option<Tensor<T>>],
    /// The variables the step trains, in the step's order.
    pub variables: &'a [Variable<T>],
    /// The step's masks of `variables`: gradients are zero at frozen
    /// elements on every process, so those need not be sent.
    pub masks: &'a [Option<Arc<ResolvedMask>>],
    /// The state values the forward pass staged (moving statistics), in the
    /// order staged, replaced by their mean over the processes (same
    /// shapes).
    pub state: &'a mut [Tensor<T>],
}

/// The operations a training step needs from its peer processes. See the
/// [module docs](self) for when each is called.
///
/// A single process needs none: a [`TrainStep`](crate::TrainStep) without
/// a collective skips all of this. A test double for one process:
///
/// ```
/// use rime_layers::collective::{Collective, ReduceOp, StepExchange};
/// use rime_layers::optimizers::{Optimizer, Sgd};
/// use rime_layers::{losses::MeanSquaredError, Dense, Layer, Result, Sequential, TrainStep};
/// use rime_tape::Variable;
/// use rime_tensor::Tensor;
/// /// One process that counts the exchanges.
/// struct Alone(usize);
/// impl Collective for Alone {
///     fn rank(&self) -> usize { 0 }
///     fn size(&self) -> usize { 1 }
///     fn broadcast_state(&mut self, _: &dyn Layer, _: &[Variable<f32>], _: &mut dyn Optimizer) -> Result<()> { Ok(()) }
///     fn exchange_step(&mut self, _: StepExchange<'_>) -> Result<()> { self.0 += 1; Ok(()) }
///     fn reduce_f64(&mut self, _: &mut [f64], _: ReduceOp) -> Result<()> { Ok(()) }
/// }
/// let model = Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2])?;
/// let mut step = TrainStep::new(&model, Sgd::new(), MeanSquaredError::new()).with_collective(Alone(0));
/// step.run(&Tensor::ones([4, 2])?, &Tensor::zeros([4, 1])?)?;
/// assert!(step.collective().unwrap().is_root());
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub trait Collective<T: Element = f32> {
    /// This process's index, `0..size()`.
    fn rank(&self) -> usize;

    /// The number of processes training together.
    fn size(&self) -> usize;

    /// Whether this is the root process (rank 0): the one whose state is
    /// broadcast, and the only one that writes files (checkpoints, model
    /// files, CSV logs) and prints progress during `fit`.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Makes every process's weights (trainable and not) of `model`, and
    /// `optimizer`'s state for `variables`, equal to the root's. Must fail
    /// on every process, changing nothing, when the models or optimizers
    /// differ in structure.
    fn broadcast_state(
        &mut self,
        model: &dyn Layer<T>,
        variables: &[Variable<T>],
        optimizer: &mut dyn Optimizer<T>,
    ) -> Result<()>;

    /// Replaces one step's gradients and staged state by their means over
    /// the processes (see [`StepExchange`]). Fails on every process when
    /// one of them failed or the processes' steps do not match (variables,
    /// shapes, masks).
    fn exchange_step(&mut self, step: StepExchange<'_, T>) -> Result<()>;

    /// Replaces `values` by their element-wise reduction over the processes
    /// (every process passes the same number of values).
    fn reduce_f64(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()>;
}
