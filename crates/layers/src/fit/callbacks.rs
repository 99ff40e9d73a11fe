//! Callbacks: code `fit` calls at the start and end of training, epochs
//! and batches, with access to the model, the optimizer and the logs, and
//! the power to stop training. Built in: [`EarlyStopping`],
//! [`ModelCheckpoint`], [`LearningRateScheduler`], [`ReduceLROnPlateau`],
//! [`CsvLogger`] — Keras 3's logic, state by state.
//!
//! A user callback implements the methods it needs:
//!
//! ```
//! use rime_layers::fit::{Callback, CallbackContext, Logs};
//! use rime_layers::Result;
//! /// Stops once the training loss is below a target.
//! struct StopBelow(f64, Vec<f64>);
//! impl Callback for StopBelow {
//!     fn on_epoch_end(&mut self, _epoch: usize, logs: &mut Logs, ctx: &mut CallbackContext<'_, '_>) -> Result<()> {
//!         let loss = logs.get("loss").unwrap_or(f64::INFINITY);
//!         self.1.push(loss);
//!         if loss < self.0 {
//!             ctx.stop_training();
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::path::PathBuf;

use rime_tensor::{Element, Tensor};

use super::Logs;
use crate::optimizers::Optimizer;
use crate::saving::{Counters, save_model};
use crate::{Error, Layer, Result, TrainStep};

/// What a callback can reach during `fit`.
pub struct CallbackContext<'a, 'm, T: Element = f32> {
    pub(crate) step: &'a mut TrainStep<'m, T>,
    pub(crate) stop: bool,
    pub(crate) counters: Counters,
}

impl<'a, 'm, T: Element> CallbackContext<'a, 'm, T> {
    pub(crate) fn new(step: &'a mut TrainStep<'m, T>, counters: Counters) -> Self {
        CallbackContext {
            step,
            stop: false,
            counters,
        }
    }

    /// The model being trained.
    pub fn model(&self) -> &'m dyn Layer<T> {
        self.step.model()
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer<T> {
        self.step.optimizer()
    }

    /// The optimizer, e.g. to change its learning rate.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer<T> {
        self.step.optimizer_mut()
    }

    /// Ends training after the current batch's callbacks (Keras'
    /// `model.stop_training = True`).
    pub fn stop_training(&mut self) {
        self.stop = true;
    }

    /// Whether a callback asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop
    }

    /// Epochs and steps so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// Code run by `fit` at fixed points. Every method defaults to nothing; an
/// error ends `fit` with that error. `on_epoch_end` may add entries to the
/// logs (they reach the `History`).
#[allow(unused_variables)]
pub trait Callback<T: Element = f32> {
    /// Before the first epoch.
    fn on_train_begin(&mut self, ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        Ok(())
    }
    /// Before epoch `epoch` (0-based).
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        Ok(())
    }
    /// After training batch `batch` of the epoch, with the running logs.
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        Ok(())
    }
    /// After epoch `epoch`, with its logs (validation included).
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        Ok(())
    }
    /// After the last epoch, with its logs.
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        Ok(())
    }
}

/// Whether a monitored value improves by going down or up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `Max` for names containing `acc`, `auc` or `precision`/`recall`,
    /// else `Min` (Keras' `"auto"`).
    #[default]
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    fn resolve(self, monitor: &str) -> Mode {
        match self {
            Mode::Auto => {
                let m = monitor.to_ascii_lowercase();
                if ["acc", "auc", "precision", "recall"]
                    .iter()
                    .any(|k| m.contains(k))
                {
                    Mode::Max
                } else {
                    Mode::Min
                }
            }
            m => m,
        }
    }

    fn worst(self) -> f64 {
        if self == Mode::Max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    }
}

/// What `EarlyStopping` and `ReduceLROnPlateau` share: the monitored log
/// entry, which way improves, the smallest change that counts, and the
/// best value so far.
struct Monitor {
    name: String,
    mode: Mode,
    min_delta: f64,
    best: f64,
}

impl Monitor {
    fn new(name: String, min_delta: f64) -> Self {
        Monitor {
            name,
            mode: Mode::Auto,
            min_delta,
            best: f64::INFINITY,
        }
    }

    /// Forgets the best value (training starts).
    fn reset(&mut self) {
        self.best = self.mode.resolve(&self.name).worst();
    }

    /// The monitored value in `logs`, or an error naming `callback`.
    fn read(&self, callback: &str, logs: &Logs) -> Result<f64> {
        monitored(callback, &self.name, logs)
    }

    /// Whether `value` beats `reference` by more than `min_delta`.
    fn improves_on(&self, value: f64, reference: f64) -> bool {
        match self.mode.resolve(&self.name) {
            Mode::Max => value - self.min_delta > reference,
            _ => value + self.min_delta < reference,
        }
    }

    /// Whether `value` beats the best so far.
    fn improves(&self, value: f64) -> bool {
        self.improves_on(value, self.best)
    }
}

fn monitored(name: &str, monitor: &str, logs: &Logs) -> Result<f64> {
    logs.get(monitor).ok_or_else(|| Error::InvalidArgument {
        what: format!("callback {name}"),
        msg: format!(
            "monitors `{monitor}`, which is not in the logs (available: {})",
            logs.iter().map(|(k, _)| k).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Stops training when a monitored value has stopped improving (Keras'
/// `EarlyStopping`): after `patience` epochs without an improvement of
/// more than `min_delta`, and optionally puts back the weights of the best
/// epoch.
pub struct EarlyStopping<T: Element = f32> {
    monitor: Monitor,
    patience: usize,
    baseline: Option<f64>,
    restore_best_weights: bool,
    wait: usize,
    best_weights: Option<Vec<Tensor<T>>>,
    best_epoch: usize,
    stopped_epoch: Option<usize>,
}

impl<T: Element> EarlyStopping<T> {
    /// Monitors `monitor` (e.g. `"val_loss"`), patience 0.
    pub fn new(monitor: impl Into<String>) -> Self {
        EarlyStopping {
            monitor: Monitor::new(monitor.into(), 0.0),
            patience: 0,
            baseline: None,
            restore_best_weights: false,
            wait: 0,
            best_weights: None,
            best_epoch: 0,
            stopped_epoch: None,
        }
    }

    /// Epochs without improvement before stopping.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Smallest change that counts as an improvement.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.monitor.min_delta = min_delta.abs();
        self
    }

    /// Lower or higher is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.monitor.mode = mode;
        self
    }

    /// A value the monitor must beat for the patience counter to reset.
    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// At the stop, restore the weights of the best epoch.
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// The epoch training stopped at (`None`: it ran to the end).
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }

    /// The best epoch and its monitored value.
    pub fn best(&self) -> (usize, f64) {
        (self.best_epoch, self.monitor.best)
    }
}

impl<T: Element> Callback<T> for EarlyStopping<T> {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        self.wait = 0;
        self.stopped_epoch = None;
        self.monitor.reset();
        self.best_weights = None;
        self.best_epoch = 0;
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        let current = self.monitor.read("EarlyStopping", logs)?;
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(ctx.model().get_weights());
        }
        self.wait += 1;
        if self.monitor.improves(current) {
            self.monitor.best = current;
            self.best_epoch = epoch;
            if self.restore_best_weights {
                self.best_weights = Some(ctx.model().get_weights());
            }
            if self
                .baseline
                .is_none_or(|b| self.monitor.improves_on(current, b))
            {
                self.wait = 0;
                return Ok(());
            }
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            ctx.stop_training();
            if let Some(w) = self
                .best_weights
                .as_ref()
                .filter(|_| self.restore_best_weights)
            {
                ctx.model().set_weights(w)?;
            }
        }
        Ok(())
    }
}

/// Saves the model ([`save_model`]: one file with architecture, weights
/// and trainability) at the end of epochs (Keras' `ModelCheckpoint`); with
/// `save_best_only`, only when the monitored value improved. `{epoch}` in
/// the path is replaced by the 1-based epoch number.
pub struct ModelCheckpoint {
    path: String,
    monitor: String,
    mode: Mode,
    save_best_only: bool,
    best: Option<f64>,
    saved: Vec<(usize, PathBuf)>,
}

impl ModelCheckpoint {
    /// Saves to `path` after every epoch, monitoring `val_loss`.
    pub fn new(path: impl Into<String>) -> Self {
        ModelCheckpoint {
            path: path.into(),
            monitor: "val_loss".into(),
            mode: Mode::Auto,
            save_best_only: false,
            best: None,
            saved: Vec::new(),
        }
    }

    /// The logged value that decides what is best.
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }

    /// Lower or higher is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Save only when the monitored value improved.
    pub fn save_best_only(mut self, best_only: bool) -> Self {
        self.save_best_only = best_only;
        self
    }

    /// The epochs (0-based) saved and their files.
    pub fn saved(&self) -> &[(usize, PathBuf)] {
        &self.saved
    }

    /// The best monitored value seen.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

impl<T: Element> Callback<T> for ModelCheckpoint {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        if self.save_best_only {
            let current = monitored("ModelCheckpoint", &self.monitor, logs)?;
            let better = match (self.best, self.mode.resolve(&self.monitor)) {
                (None, _) => true,
                (Some(b), Mode::Max) => current > b,
                (Some(b), _) => current < b,
            };
            if !better {
                return Ok(());
            }
            self.best = Some(current);
        }
        let path = PathBuf::from(self.path.replace("{epoch}", &format!("{}", epoch + 1)));
        save_model(ctx.model(), &path)?;
        self.saved.push((epoch, path));
        Ok(())
    }
}

type LrFn = Box<dyn FnMut(usize, f64) -> f64 + Send>;

/// Sets the learning rate at the start of every epoch to
/// `schedule(epoch, current_rate)` (Keras' `LearningRateScheduler`), and
/// logs it as `learning_rate`.
pub struct LearningRateScheduler {
    schedule: LrFn,
}

impl LearningRateScheduler {
    /// The schedule: `(epoch, current rate) -> new rate`.
    pub fn new(schedule: impl FnMut(usize, f64) -> f64 + Send + 'static) -> Self {
        LearningRateScheduler {
            schedule: Box::new(schedule),
        }
    }
}

impl<T: Element> Callback<T> for LearningRateScheduler {
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        let lr = (self.schedule)(epoch, ctx.optimizer().current_learning_rate());
        ctx.optimizer_mut().set_learning_rate(lr)
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        logs.insert("learning_rate", ctx.optimizer().current_learning_rate());
        Ok(())
    }
}

/// Multiplies the learning rate by `factor` when a monitored value has not
/// improved for `patience` epochs (Keras' `ReduceLROnPlateau`: `min_delta`,
/// `cooldown`, `min_lr`), and logs the rate as `learning_rate`.
pub struct ReduceLROnPlateau {
    monitor: Monitor,
    factor: f64,
    patience: usize,
    cooldown: usize,
    min_lr: f64,
    wait: usize,
    cooldown_counter: usize,
}

impl ReduceLROnPlateau {
    /// Keras' defaults: factor 0.1, patience 10, min_delta 1e-4.
    pub fn new(monitor: impl Into<String>) -> Self {
        ReduceLROnPlateau {
            monitor: Monitor::new(monitor.into(), 1e-4),
            factor: 0.1,
            patience: 10,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
        }
    }

    /// The multiplier (in (0, 1); checked when training starts).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Epochs without improvement before reducing.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Lower or higher is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.monitor.mode = mode;
        self
    }

    /// Smallest change that counts as an improvement.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.monitor.min_delta = min_delta;
        self
    }

    /// Epochs to wait after a reduction before counting again.
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The rate never goes below this.
    pub fn min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = min_lr;
        self
    }
}

impl<T: Element> Callback<T> for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::InvalidArgument {
                what: "callback ReduceLROnPlateau".into(),
                msg: format!("factor must be in (0, 1), got {}", self.factor),
            });
        }
        self.wait = 0;
        self.cooldown_counter = 0;
        self.monitor.reset();
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        logs.insert("learning_rate", ctx.optimizer().current_learning_rate());
        let current = self.monitor.read("ReduceLROnPlateau", logs)?;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.monitor.improves(current) {
            self.monitor.best = current;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                let old = ctx.optimizer().current_learning_rate();
                if old > self.min_lr {
                    let new = (old * self.factor).max(self.min_lr);
                    ctx.optimizer_mut().set_learning_rate(new)?;
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(())
    }
}

/// Writes each epoch's logs as a CSV row (Keras' `CSVLogger`): a header
/// `epoch,<keys sorted>` then one row per epoch.
pub struct CsvLogger {
    path: PathBuf,
    append: bool,
    keys: Option<Vec<String>>,
    writer: Option<csv::Writer<std::fs::File>>,
}

impl CsvLogger {
    /// Logs to `path` (truncated when training starts).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger {
            path: path.into(),
            append: false,
            keys: None,
            writer: None,
        }
    }

    /// Append to an existing file instead (no second header).
    pub fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Data {
            what: format!("CsvLogger file `{}`", self.path.display()),
            msg: e.to_string(),
        }
    }
}

impl<T: Element> Callback<T> for CsvLogger {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        let exists = self.append && self.path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        self.keys = None;
        self.writer = Some(csv::Writer::from_writer(file));
        if exists {
            // the header is in the file already
            self.keys = Some(Vec::new());
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        _ctx: &mut CallbackContext<'_, '_, T>,
    ) -> Result<()> {
        let mut keys: Vec<String> = logs.iter().map(|(k, _)| k.to_string()).collect();
        keys.sort();
        let write_header = match &self.keys {
            None => true,
            Some(k) if k.is_empty() => {
                self.keys = Some(keys.clone());
                false
            }
            Some(_) => false,
        };
        if write_header {
            self.keys = Some(keys.clone());
        }
        let keys = self.keys.clone().unwrap_or_default();
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut rows: Vec<Vec<String>> = Vec::new();
        if write_header {
            let mut header = vec!["epoch".to_string()];
            header.extend(keys.iter().cloned());
            rows.push(header);
        }
        let mut row = vec![epoch.to_string()];
        row.extend(
            keys.iter()
                .map(|k| logs.get(k).map(|v| v.to_string()).unwrap_or_default()),
        );
        rows.push(row);
        for r in rows {
            w.write_record(&r).map_err(|e| Error::Data {
                what: "CsvLogger".into(),
                msg: e.to_string(),
            })?;
        }
        w.flush().map_err(|e| Error::Data {
            what: "CsvLogger".into(),
            msg: e.to_string(),
        })
    }

    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut CallbackContext<'_, '_, T>) -> Result<()> {
        self.writer = None;
        Ok(())
    }
}
