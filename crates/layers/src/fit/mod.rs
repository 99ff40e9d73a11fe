//! `fit`, `evaluate` and `predict` with Keras' semantics, built on
//! [`TrainStep`] and [`Dataset`].
//!
//! A [`Trainer`] is Keras' compiled model: a [`TrainStep`] (model,
//! optimizer, loss) plus metrics. [`Trainer::fit`] runs epochs of the
//! dataset's batches through the step, updates the metrics from each
//! batch's training-mode outputs, evaluates validation data at each
//! epoch's end, calls [callbacks](callbacks) and returns a [`History`]. The
//! epoch `loss` is the batch-size-weighted mean of the batch losses (the
//! mean over samples). Nothing here adds a rule about what trains: the
//! step's snapshot does, as in a custom loop.
//!
//! ```
//! use rime_layers::data::Dataset;
//! use rime_layers::fit::{FitOptions, Trainer, Verbose};
//! use rime_layers::losses::SparseCategoricalCrossentropy;
//! use rime_layers::metrics::SparseCategoricalAccuracy;
//! use rime_layers::optimizers::Adam;
//! use rime_layers::{Dense, Sequential};
//! use rime_tensor::{seeded_rng, Tensor};
//! let model = Sequential::<f32>::new().add(Dense::new(2)).with_input_shape([3])?;
//! let x = Tensor::rand_normal([64, 3], 0.0, 1.0, &mut seeded_rng(0))?;
//! let y = Tensor::vector(x.as_slice().chunks(3).map(|r| (r[0] > 0.0) as u8 as f32).collect());
//! let data = Dataset::from_tensors(x, y)?.batch(16)?.shuffle(1);
//! let mut trainer = Trainer::new(&model, Adam::new().learning_rate(0.05),
//!     SparseCategoricalCrossentropy::new().with_from_logits(true))
//!     .metric(SparseCategoricalAccuracy::new());
//! let history = trainer.fit(&data, FitOptions::new().epochs(20).validation_split(0.25).verbose(Verbose::Silent))?;
//! let loss = history.get("loss").unwrap();
//! assert!(loss[19] < loss[0]);
//! assert_eq!(history.get("val_sparse_categorical_accuracy").unwrap().len(), 20);
//! # Ok::<(), rime_layers::Error>(())
//! ```

pub mod callbacks;
mod progress;

use std::io::Write;
use std::path::Path;

use rime_tensor::{Element, Tensor};

use crate::collective::ReduceOp;
use crate::data::{Batch, Dataset};
use crate::losses::Loss;
use crate::metrics::UpdateState;
use crate::optimizers::Optimizer;
use crate::saving::{Counters, load_checkpoint, save_checkpoint};
use crate::{CallContext, Error, Layer, Result, Target, TrainStep};

pub use callbacks::{
    Callback, CallbackContext, CsvLogger, EarlyStopping, LearningRateScheduler, Mode,
    ModelCheckpoint, ReduceLROnPlateau,
};

/// Named values of one epoch or batch (`loss`, metric names, `val_*`), in
/// the order they were added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs(Vec<(String, f64)>);

impl Logs {
    /// No values.
    pub fn new() -> Self {
        Logs(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Sets `key` (replacing an earlier value).
    pub fn insert(&mut self, key: impl Into<String>, value: f64) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `key: value` pairs joined Keras-style (`loss: 0.1234 - accuracy: 0.9000`).
    pub fn summary(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}: {v:.4}"))
            .collect::<Vec<_>>()
            .join(" - ")
    }
}

/// What `fit` returns: each epoch's logs (Keras' `History.history`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The epochs run (0-based, from `initial_epoch`).
    pub epochs: Vec<usize>,
    /// Per key, one value per epoch run.
    pub history: Vec<(String, Vec<f64>)>,
}

impl History {
    /// The per-epoch values of `key` (`"loss"`, `"val_loss"`, ...).
    pub fn get(&self, key: &str) -> Option<&[f64]> {
        self.history
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The keys, in the order they first appeared.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(|(k, _)| k.as_str())
    }

    fn record(&mut self, epoch: usize, logs: &Logs) {
        self.epochs.push(epoch);
        for (k, v) in logs.iter() {
            match self.history.iter_mut().find(|(key, _)| key == k) {
                Some((_, vs)) => vs.push(v),
                None => self.history.push((k.to_string(), vec![v])),
            }
        }
    }
}

/// How much `fit` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbose {
    /// Nothing (Keras' `verbose=0`).
    Silent,
    /// A progress bar with ETA and running metrics when output is a
    /// terminal, one line per epoch otherwise (Keras' `verbose=1`/`auto`).
    #[default]
    Bar,
    /// One line per epoch (Keras' `verbose=2`).
    Line,
}

/// Arguments of [`Trainer::fit`] besides the data (Keras' `fit` keywords).
pub struct FitOptions<'a, T: Element = f32> {
    epochs: usize,
    initial_epoch: usize,
    validation_data: Option<Dataset<T>>,
    validation_split: Option<f64>,
    batch_size: Option<usize>,
    callbacks: Vec<&'a mut dyn Callback<T>>,
    verbose: Verbose,
    output: Option<Box<dyn Write + 'a>>,
}

impl<T: Element> Default for FitOptions<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, T: Element> FitOptions<'a, T> {
    /// One epoch, no validation, no callbacks, a progress bar.
    pub fn new() -> Self {
        FitOptions {
            epochs: 1,
            initial_epoch: 0,
            validation_data: None,
            validation_split: None,
            batch_size: None,
            callbacks: Vec::new(),
            verbose: Verbose::Bar,
            output: None,
        }
    }

    /// Train until epoch `epochs` (epochs `initial_epoch..epochs` run).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// The first epoch's index, to continue an earlier run (Keras'
    /// `initial_epoch`); it also selects the shuffle order.
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }

    /// Evaluate on this data at the end of every epoch (`val_*` logs).
    pub fn validation_data(mut self, data: Dataset<T>) -> Self {
        self.validation_data = Some(data);
        self
    }

    /// Hold out the last `fraction` of the training samples (before
    /// shuffling) as validation data.
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }

    /// Overrides the dataset's batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Adds a callback; it stays the caller's, to read afterwards.
    pub fn callback(mut self, callback: &'a mut dyn Callback<T>) -> Self {
        self.callbacks.push(callback);
        self
    }

    /// How much to print.
    pub fn verbose(mut self, verbose: Verbose) -> Self {
        self.verbose = verbose;
        self
    }

    /// Writes the per-epoch lines to `out` instead of standard output
    /// (never a redrawn bar: `out` is not a terminal).
    pub fn output(mut self, out: impl Write + 'a) -> Self {
        self.output = Some(Box::new(out));
        self
    }
}

type MetricFactory<T> = Box<dyn Fn() -> Box<dyn UpdateState<T>> + Send + Sync>;

/// A model compiled for `fit`: a [`TrainStep`] and metrics, plus where
/// training stands ([`Counters`]) for checkpoints.
pub struct Trainer<'m, T: Element = f32> {
    step: TrainStep<'m, T>,
    metrics: Vec<MetricFactory<T>>,
    counters: Counters,
}

impl<'m, T: Element> Trainer<'m, T> {
    /// Keras' `compile(optimizer, loss)`: snapshots the trainable
    /// variables and masks now (see [`TrainStep`]).
    pub fn new(
        model: &'m dyn Layer<T>,
        optimizer: impl Optimizer<T> + 'm,
        loss: impl Loss<T> + 'm,
    ) -> Self {
        Self::from_step(TrainStep::new(model, optimizer, loss))
    }

    /// Wraps an existing step (its optimizer state is kept).
    pub fn from_step(step: TrainStep<'m, T>) -> Self {
        Trainer {
            step,
            metrics: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Adds a metric, reported under its name (and `val_` + name).
    pub fn metric<M: UpdateState<T> + Clone + Sync + 'static>(mut self, metric: M) -> Self {
        self.metrics.push(Box::new(move || {
            let mut m = metric.clone();
            m.reset_state();
            Box::new(m)
        }));
        self
    }

    /// The step.
    pub fn step(&self) -> &TrainStep<'m, T> {
        &self.step
    }

    /// The step, for custom loop work between `fit` calls.
    pub fn step_mut(&mut self) -> &mut TrainStep<'m, T> {
        &mut self.step
    }

    /// The model.
    pub fn model(&self) -> &'m dyn Layer<T> {
        self.step.model()
    }

    /// Keras' `compile` again with the same optimizer: a new snapshot of
    /// trainable variables and masks, optimizer state kept.
    pub fn recompile(&mut self) {
        self.step.rebuild();
    }

    /// Where training stands (epochs and steps done, the data's shuffle
    /// seed).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Saves weights, optimizer state and counters
    /// ([`save_checkpoint`]). In data-parallel training only the root
    /// process writes (the others' state is the same); elsewhere this does
    /// nothing.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        if !self.step.is_root() {
            return Ok(());
        }
        save_checkpoint(path, self.model(), self.step.optimizer(), &self.counters)
    }

    /// Restores a checkpoint into the model and optimizer and returns its
    /// counters; continue with `FitOptions::initial_epoch(counters.epoch)`.
    /// In data-parallel training every process reads the file (`fit`
    /// broadcasts the root's state when it starts anyway).
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<Counters> {
        let model = self.step.model();
        let counters = load_checkpoint(path, model, self.step.optimizer_mut())?;
        self.counters = counters;
        Ok(counters)
    }

    fn fresh_metrics(&self) -> Vec<Box<dyn UpdateState<T>>> {
        self.metrics.iter().map(|f| f()).collect()
    }

    /// Trains on `data` (Keras' `fit`); see the module docs.
    ///
    /// With a [collective](TrainStep::with_collective) (data-parallel
    /// training, each process passing its own shard of the data), `fit`
    /// first makes every process's weights and optimizer state the root's,
    /// runs as many batches per epoch as the process with the fewest has,
    /// and reports global values: the loss and metrics in the logs, the
    /// `History` and what callbacks see are reduced over all processes
    /// (each sample counting once), so callbacks such as `EarlyStopping`
    /// decide the same everywhere; a stop asked on one process stops all.
    /// Only the root prints progress and writes files
    /// ([`CallbackContext::is_root`]). An error on one process ends `fit`
    /// with an error on every process.
    pub fn fit(&mut self, data: &Dataset<T>, options: FitOptions<'_, T>) -> Result<History> {
        let FitOptions {
            epochs,
            initial_epoch,
            validation_data,
            validation_split,
            batch_size,
            mut callbacks,
            verbose,
            output,
        } = options;
        let prepared = prepare_data(data, batch_size, validation_data, validation_split);
        let mut stop = false;
        let checked = prepared.as_ref().map(|_| ()).map_err(Error::clone);
        agree(&mut self.step, checked, &mut stop)?;
        let (train, val) = prepared?;
        self.step.broadcast_state()?;
        let mut steps = [train.num_batches() as f64];
        if let Some(c) = self.step.collective_mut() {
            c.reduce_f64(&mut steps, ReduceOp::Min)?;
        }
        let steps = steps[0] as usize;
        let verbose = if self.step.is_root() {
            verbose
        } else {
            Verbose::Silent
        };
        let mut progress = progress::Progress::new(verbose, output, epochs);
        let factories = &self.metrics;
        let fresh = || -> Vec<Box<dyn UpdateState<T>>> { factories.iter().map(|f| f()).collect() };
        let mut history = History::default();
        let mut ctx = CallbackContext::new(&mut self.step, self.counters);
        let begun = callbacks
            .iter_mut()
            .try_for_each(|cb| cb.on_train_begin(&mut ctx));
        agree(ctx.step, begun, &mut ctx.stop)?;
        let mut last = Logs::new();
        for epoch in initial_epoch..epochs {
            if ctx.stop {
                break;
            }
            let begun = callbacks
                .iter_mut()
                .try_for_each(|cb| cb.on_epoch_begin(epoch, &mut ctx));
            agree(ctx.step, begun, &mut ctx.stop)?;
            progress.epoch_begin(epoch, steps);
            let mut metrics = fresh();
            let (mut loss_sum, mut samples) = (0.0f64, 0usize);
            ctx.counters.epoch = epoch as u64;
            ctx.counters.step_in_epoch = 0;
            ctx.counters.shuffle_seed = train.shuffle_seed();
            let mut logs = Logs::new();
            for (b, batch) in train.epoch(epoch as u64).take(steps).enumerate() {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        ctx.step.report_failure();
                        return Err(e);
                    }
                };
                let (loss, outputs) = ctx.step.run_with_outputs(&batch.inputs, &batch.targets)?;
                let n = batch.len();
                loss_sum += loss.to_f64().unwrap_or(f64::NAN) * n as f64;
                samples += n;
                let updated = update_metrics(&mut metrics, &batch.targets, &outputs);
                logs = global_logs(ctx.step, updated, loss_sum, samples, &metrics)?;
                ctx.counters.step_in_epoch += 1;
                ctx.counters.global_step += 1;
                let done = callbacks
                    .iter_mut()
                    .try_for_each(|cb| cb.on_train_batch_end(b, &logs, &mut ctx));
                agree(ctx.step, done, &mut ctx.stop)?;
                progress.batch_end(b + 1, &logs);
                if ctx.stop {
                    break;
                }
            }
            if let Some(v) = &val {
                // on error, fresh metrics: every process reduces as many values
                let (sums, metrics) =
                    match evaluate_sums(ctx.step.model(), ctx.step.loss(), v, fresh()) {
                        Ok((loss_sum, samples, metrics)) => (Ok((loss_sum, samples)), metrics),
                        Err(e) => (Err(e), fresh()),
                    };
                let (loss_sum, samples) = sums.as_ref().map_or((0.0, 0), |s| *s);
                let val_logs =
                    global_logs(ctx.step, sums.map(|_| ()), loss_sum, samples, &metrics)?;
                for (k, x) in val_logs.iter() {
                    logs.insert(format!("val_{k}"), x);
                }
            }
            ctx.counters.epoch = epoch as u64 + 1;
            ctx.counters.step_in_epoch = 0;
            let ended = callbacks
                .iter_mut()
                .try_for_each(|cb| cb.on_epoch_end(epoch, &mut logs, &mut ctx));
            agree(ctx.step, ended, &mut ctx.stop)?;
            progress.epoch_end(epoch, &logs);
            history.record(epoch, &logs);
            last = logs;
        }
        let ended = callbacks
            .iter_mut()
            .try_for_each(|cb| cb.on_train_end(&last, &mut ctx));
        agree(ctx.step, ended, &mut ctx.stop)?;
        self.counters = ctx.counters;
        Ok(history)
    }

    /// Loss and metrics over `data` in inference mode (Keras'
    /// `evaluate`); the loss is the mean over samples.
    ///
    /// With a [collective](TrainStep::with_collective) it is a collective
    /// operation (every process calls it) and every process gets the same
    /// global figures: over all the processes' `data` together, each
    /// process's sums weighted by its number of samples, as `fit` reports
    /// its validation figures (Horovod's averaging of metrics over ranks,
    /// exact also for shards of unequal size). Give each process its shard
    /// (`data.shard(rank, size)`) to split the work; an error on one
    /// process fails it on every process.
    pub fn evaluate(&mut self, data: &Dataset<T>) -> Result<Logs> {
        let (sums, metrics) = self.evaluate_local(data);
        let (loss_sum, samples) = sums.as_ref().map_or((0.0, 0), |s| *s);
        global_logs(&mut self.step, sums.map(drop), loss_sum, samples, &metrics)
    }

    /// This process's loss sum, sample count and metrics over `data`; on
    /// error, fresh metrics (so that every process reduces as many values).
    #[allow(clippy::type_complexity)]
    fn evaluate_local(
        &self,
        data: &Dataset<T>,
    ) -> (Result<(f64, usize)>, Vec<Box<dyn UpdateState<T>>>) {
        match evaluate_sums(self.model(), self.step.loss(), data, self.fresh_metrics()) {
            Ok((loss_sum, samples, metrics)) => (Ok((loss_sum, samples)), metrics),
            Err(e) => (Err(e), self.fresh_metrics()),
        }
    }

    /// The model's outputs over `data` in inference mode, batch by batch,
    /// concatenated (Keras' `predict`). With a collective, still this
    /// process's own: no communication (as under Horovod); gather them with
    /// the program's own MPI calls if one process needs them all.
    pub fn predict(&self, data: &Dataset<T>) -> Result<Vec<Tensor<T>>> {
        predict(self.model(), data)
    }
}

/// The training and validation data `fit` runs on.
fn prepare_data<T: Element>(
    data: &Dataset<T>,
    batch_size: Option<usize>,
    validation_data: Option<Dataset<T>>,
    validation_split: Option<f64>,
) -> Result<(Dataset<T>, Option<Dataset<T>>)> {
    let mut train = data.clone();
    if let Some(bs) = batch_size {
        train = train.batch(bs)?;
    }
    let mut val = validation_data;
    if let Some(fraction) = validation_split {
        if val.is_some() {
            return Err(fit_err(
                "give validation_data or validation_split, not both",
            ));
        }
        let (t, v) = train.split(fraction)?;
        train = t;
        val = Some(v);
    }
    if train.is_empty() {
        return Err(fit_err("no training samples"));
    }
    if train.num_batches() == 0 {
        return Err(fit_err(format!(
            "{} samples make no batch of {} with drop_remainder",
            train.len(),
            train.batch_size()
        )));
    }
    Ok((train, val))
}

/// Makes a local outcome (of callbacks, of checking the data) collective:
/// with a collective, every process learns whether any failed, and all
/// fail if one did; a stop asked on any process stops all. Without one,
/// `local` as it is.
fn agree<T: Element>(
    step: &mut TrainStep<'_, T>,
    local: Result<()>,
    stop: &mut bool,
) -> Result<()> {
    let Some(c) = step.collective_mut() else {
        return local;
    };
    let mut flags = [
        f64::from(u8::from(local.is_err())),
        f64::from(u8::from(*stop)),
    ];
    c.reduce_f64(&mut flags, ReduceOp::Max)?;
    local?;
    if flags[0] > 0.0 {
        return Err(another_failed());
    }
    *stop = flags[1] > 0.0;
    Ok(())
}

fn another_failed() -> Error {
    Error::Distributed {
        what: "fit".into(),
        msg: "another process failed (its own error says why)".into(),
    }
}

/// `loss` and metric logs from running sums: over this process's samples,
/// or with a collective, over every process's (each metric's result
/// weighted by its process's sample count, exact for metrics in which
/// every sample counts the same, as all of rime's do). `local` says
/// whether this process's sums are valid; its failure fails all.
fn global_logs<T: Element>(
    step: &mut TrainStep<'_, T>,
    local: Result<()>,
    loss_sum: f64,
    samples: usize,
    metrics: &[Box<dyn UpdateState<T>>],
) -> Result<Logs> {
    let mut logs = Logs::new();
    let Some(c) = step.collective_mut() else {
        local?;
        logs.insert("loss", mean(loss_sum, samples as f64));
        for m in metrics {
            logs.insert(m.name(), m.result());
        }
        return Ok(logs);
    };
    let n = samples as f64;
    let mut sums = vec![f64::from(u8::from(local.is_err())), loss_sum, n];
    sums.extend(metrics.iter().map(|m| m.result() * n));
    c.reduce_f64(&mut sums, ReduceOp::Sum)?;
    local?;
    if sums[0] > 0.0 {
        return Err(another_failed());
    }
    logs.insert("loss", mean(sums[1], sums[2]));
    for (m, total) in metrics.iter().zip(&sums[3..]) {
        logs.insert(m.name(), mean(*total, sums[2]));
    }
    Ok(logs)
}

fn mean(total: f64, count: f64) -> f64 {
    if count == 0.0 { 0.0 } else { total / count }
}

fn fit_err(msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        what: "fit".into(),
        msg: msg.into(),
    }
}

fn update_metrics<T: Element>(
    metrics: &mut [Box<dyn UpdateState<T>>],
    targets: &[Target<T>],
    outputs: &[Tensor<T>],
) -> Result<()> {
    for m in metrics.iter_mut() {
        for (y, p) in targets.iter().zip(outputs) {
            m.update_state_target(y, p)?;
        }
    }
    Ok(())
}

fn run_inference<T: Element>(model: &dyn Layer<T>, batch: &Batch<T>) -> Result<Vec<Tensor<T>>> {
    model.apply_data(&batch.inputs, CallContext::new(false))
}

/// Loss (plus the model's regularization losses) and metrics over `data`
/// in inference mode, in stored order (Keras' `evaluate`). The loss is the
/// batch-size-weighted mean of the batch losses.
///
/// ```
/// use rime_layers::data::Dataset;
/// use rime_layers::fit::evaluate;
/// use rime_layers::losses::MeanSquaredError;
/// use rime_layers::{Dense, Layer, Sequential};
/// use rime_tensor::Tensor;
/// let model = Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2])?;
/// let data = Dataset::from_tensors(Tensor::<f32>::ones([5, 2])?, Tensor::<f32>::zeros([5, 1])?)?.batch(2)?;
/// let logs = evaluate(&model, &MeanSquaredError::new(), &data, vec![])?;
/// let p = model.call(&Tensor::ones([1, 2])?, false)?.to_vec()[0] as f64;
/// assert!((logs.get("loss").unwrap() - p * p).abs() < 1e-6);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn evaluate<T: Element>(
    model: &dyn Layer<T>,
    loss: &dyn Loss<T>,
    data: &Dataset<T>,
    metrics: Vec<Box<dyn UpdateState<T>>>,
) -> Result<Logs> {
    evaluate_with(model, loss, data, metrics)
}

fn evaluate_with<T: Element>(
    model: &dyn Layer<T>,
    loss: &dyn Loss<T>,
    data: &Dataset<T>,
    metrics: Vec<Box<dyn UpdateState<T>>>,
) -> Result<Logs> {
    let (loss_sum, samples, metrics) = evaluate_sums(model, loss, data, metrics)?;
    let mut logs = Logs::new();
    logs.insert("loss", mean(loss_sum, samples as f64));
    for m in &metrics {
        logs.insert(m.name(), m.result());
    }
    Ok(logs)
}

/// The sum of the batch losses weighted by batch size, the number of
/// samples, and the updated metrics.
#[allow(clippy::type_complexity)]
fn evaluate_sums<T: Element>(
    model: &dyn Layer<T>,
    loss: &dyn Loss<T>,
    data: &Dataset<T>,
    mut metrics: Vec<Box<dyn UpdateState<T>>>,
) -> Result<(f64, usize, Vec<Box<dyn UpdateState<T>>>)> {
    metrics.iter_mut().for_each(|m| m.reset_state());
    let data = data.clone().no_shuffle();
    let (mut loss_sum, mut samples) = (0.0f64, 0usize);
    for batch in data.iter() {
        let batch = batch?;
        let outputs = run_inference(model, &batch)?;
        if outputs.len() != batch.targets.len() {
            return Err(Error::InvalidArgument {
                what: format!("evaluate `{}`", model.name()),
                msg: format!(
                    "{} targets for {} outputs",
                    batch.targets.len(),
                    outputs.len()
                ),
            });
        }
        let mut value = 0.0f64;
        for (y, p) in batch.targets.iter().zip(&outputs) {
            value += loss
                .call_target(y, p)?
                .to_scalar()?
                .to_f64()
                .unwrap_or(f64::NAN);
        }
        for penalty in model.losses()? {
            value += penalty.sum_all().to_scalar()?.to_f64().unwrap_or(f64::NAN);
        }
        loss_sum += value * batch.len() as f64;
        samples += batch.len();
        update_metrics(&mut metrics, &batch.targets, &outputs)?;
    }
    Ok((loss_sum, samples, metrics))
}

/// The model's outputs over `data` (inference mode, stored order, targets
/// ignored), one tensor per output with every sample (Keras' `predict`).
///
/// ```
/// use rime_layers::data::Dataset;
/// use rime_layers::fit::predict;
/// use rime_layers::{Dense, Layer, Sequential};
/// use rime_tensor::Tensor;
/// let model = Sequential::<f32>::new().add(Dense::new(2)).with_input_shape([3])?;
/// let x = Tensor::ones([7, 3])?;
/// let out = predict(&model, &Dataset::from_features(x.clone())?.batch(3)?)?;
/// assert_eq!(out[0], model.call(&x, false)?);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn predict<T: Element>(model: &dyn Layer<T>, data: &Dataset<T>) -> Result<Vec<Tensor<T>>> {
    let data = data.clone().no_shuffle();
    let mut parts: Vec<Vec<Tensor<T>>> = Vec::new();
    for batch in data.iter() {
        let outputs = run_inference(model, &batch?)?;
        if parts.is_empty() {
            parts = vec![Vec::new(); outputs.len()];
        }
        for (p, o) in parts.iter_mut().zip(outputs) {
            p.push(o);
        }
    }
    parts
        .iter()
        .map(|p| {
            let refs: Vec<&Tensor<T>> = p.iter().collect();
            Ok(Tensor::concat(&refs, 0)?)
        })
        .collect()
}
