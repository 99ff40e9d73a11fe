//! Checkpoints: weights, optimizer state and training counters.

use std::collections::HashMap;
use std::path::Path;

use std::sync::Mutex;

use rime_tensor::{Element, Rng, Tensor};
use serde::{Deserialize, Serialize};

use super::{file_err, read_file, walk, write_file};
use crate::optimizers::{Optimizer, OptimizerState};
use crate::{Layer, Result};

/// Calls `f` with the path and random stream of every layer of `model` that
/// has one (Dropout's masks), model first, then depth first, each stream once
/// (a shared layer at its first place).
fn for_each_stream<T: Element>(
    model: &dyn Layer<T>,
    mut f: impl FnMut(&str, &Mutex<Rng>) -> Result<()>,
) -> Result<()> {
    let mut seen: Vec<*const Mutex<Rng>> = Vec::new();
    let mut visit = |path: &str, layer: &dyn Layer<T>| -> Result<()> {
        match layer.random_stream() {
            Some(s) if !seen.contains(&std::ptr::from_ref(s)) => {
                seen.push(std::ptr::from_ref(s));
                f(path, s)
            }
            _ => Ok(()),
        }
    };
    // paths relative to the model: a fresh model of the same structure has
    // another automatic name
    visit("", model)?;
    let root = model.name().len() + 1;
    for (path, layer) in walk(model) {
        visit(&path[root..], &*layer)?;
    }
    Ok(())
}

/// One saved random stream: the owning layer's path and the generator.
#[derive(Serialize, Deserialize)]
struct StreamEntry {
    layer: String,
    state: Rng,
}

fn lock(m: &Mutex<Rng>) -> std::sync::MutexGuard<'_, Rng> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const FORMAT: &str = "rime-checkpoint";
const VERSION: u32 = 1;

/// Where training stands: what a resumed run needs besides weights and
/// optimizer state to continue exactly (the dataset's shuffle order of an
/// epoch is a function of its seed and the epoch number, so the seed and
/// the position are its generator's whole state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Completed epochs (the epoch the next batch belongs to).
    pub epoch: u64,
    /// Batches done within that epoch.
    pub step_in_epoch: u64,
    /// Training steps done in all.
    pub global_step: u64,
    /// The dataset's shuffle seed (`None`: not shuffled).
    pub shuffle_seed: Option<u64>,
}

/// Saves a checkpoint: every weight of `model` (trainable and not, e.g.
/// BatchNormalization's moving statistics) in [`variables`](Layer::variables) order (independent of the `trainable` flags), the
/// optimizer's slots for each of them, its iteration count (a schedule's
/// position) and constant learning rate, the state of every layer's random
/// stream (Dropout's masks), and `counters`.
///
/// ```
/// use rime_layers::saving::{load_checkpoint, save_checkpoint, Counters};
/// use rime_layers::{losses::MeanSquaredError, optimizers::{Adam, Optimizer}, Dense, Layer, Sequential, TrainStep};
/// use rime_tensor::Tensor;
/// let build = || Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2]);
/// let (x, y) = (Tensor::ones([4, 2])?, Tensor::zeros([4, 1])?);
/// let model = build()?;
/// let mut step = TrainStep::new(&model, Adam::new(), MeanSquaredError::new());
/// step.run(&x, &y)?;
/// let path = std::env::temp_dir().join("rime_doc_checkpoint.safetensors");
/// save_checkpoint(&path, &model, step.optimizer(), &Counters { global_step: 1, ..Default::default() })?;
///
/// let fresh = build()?;
/// let mut opt = Adam::new();
/// let counters = load_checkpoint(&path, &fresh, &mut opt)?;
/// assert_eq!((counters.global_step, Optimizer::<f32>::iterations(&opt)), (1, 1));
/// assert_eq!(fresh.get_weights(), model.get_weights());
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn save_checkpoint<T: Element>(
    path: impl AsRef<Path>,
    model: &dyn Layer<T>,
    optimizer: &dyn Optimizer<T>,
    counters: &Counters,
) -> Result<()> {
    let path = path.as_ref();
    let weights = model.variables();
    let state = optimizer.state(&weights)?;
    let mut tensors = Vec::new();
    let mut slot_names = Vec::new();
    for (i, (w, slots)) in weights.iter().zip(&state.slots).enumerate() {
        tensors.push((format!("weight/{i:05}"), w.value_untracked()));
        slot_names.push(slots.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
        for (n, t) in slots {
            tensors.push((format!("slot/{i:05}/{n}"), t.clone()));
        }
    }
    let names: Vec<&str> = weights.iter().map(|w| w.name()).collect();
    let mut streams = Vec::new();
    for_each_stream(model, |layer, s| {
        streams.push(StreamEntry {
            layer: layer.to_string(),
            state: lock(s).clone(),
        });
        Ok(())
    })?;
    let json = |v: serde_json::Value| v.to_string();
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("dtype".to_string(), T::DTYPE.to_string()),
        ("model".to_string(), model.name().to_string()),
        ("weight_names".to_string(), json(serde_json::json!(names))),
        (
            "slot_names".to_string(),
            json(serde_json::json!(slot_names)),
        ),
        ("optimizer".to_string(), state.optimizer.clone()),
        (
            "optimizer_config".to_string(),
            optimizer.get_config().to_string(),
        ),
        ("iterations".to_string(), state.iterations.to_string()),
        (
            "random_streams".to_string(),
            serde_json::to_string(&streams).expect("generators serialize"),
        ),
        (
            "learning_rate".to_string(),
            json(serde_json::json!(state.learning_rate)),
        ),
        (
            "counters".to_string(),
            serde_json::to_string(counters).expect("counters serialize"),
        ),
    ]);
    write_file(path, tensors, meta)
}

/// Restores a checkpoint written by [`save_checkpoint`] into a model of
/// the same structure and an optimizer of the same class, and returns the
/// counters. Everything is read and checked (format, version, dtype,
/// counts, shapes, slot names) before anything is assigned: an error
/// changes neither the model nor the optimizer.
pub fn load_checkpoint<T: Element>(
    path: impl AsRef<Path>,
    model: &dyn Layer<T>,
    optimizer: &mut dyn Optimizer<T>,
) -> Result<Counters> {
    let path = path.as_ref();
    let file = read_file(path)?;
    file.check_format(path, FORMAT, VERSION)?;
    let dtype = file.meta.get("dtype").cloned().unwrap_or_default();
    if dtype != T::DTYPE.to_string() {
        return Err(file_err(
            path,
            format!("holds {dtype} weights, the model is {}", T::DTYPE),
        ));
    }
    let names: Vec<String> = file.json(path, "weight_names")?;
    let slot_names: Vec<Vec<String>> = file.json(path, "slot_names")?;
    let counters: Counters = file.json(path, "counters")?;
    let learning_rate: Option<f64> = file.json(path, "learning_rate")?;
    let iterations: u64 = file.json(path, "iterations")?;
    let opt_name = file.meta.get("optimizer").cloned().unwrap_or_default();
    let streams: Vec<StreamEntry> = file.json(path, "random_streams")?;
    let mut targets = Vec::new();
    for_each_stream(model, |layer, _| {
        targets.push(layer.to_string());
        Ok(())
    })?;
    // matched by position, as the weights are (a fresh model built by the
    // same code has other automatic layer names)
    if streams.len() != targets.len() {
        let saved: Vec<&str> = streams.iter().map(|s| s.layer.as_str()).collect();
        return Err(file_err(
            path,
            format!(
                "holds the random streams of layers {saved:?}, model `{}` has {targets:?}",
                model.name()
            ),
        ));
    }
    let weights = model.variables();
    if names.len() != weights.len() || slot_names.len() != weights.len() {
        return Err(file_err(
            path,
            format!(
                "holds {} weights, model `{}` has {}",
                names.len(),
                model.name(),
                weights.len()
            ),
        ));
    }
    let expected = 1 + weights.len() + slot_names.iter().map(Vec::len).sum::<usize>();
    if file.tensors.len() + 1 != expected {
        return Err(file_err(
            path,
            format!(
                "holds {} tensors, its metadata lists {}",
                file.tensors.len(),
                expected - 1
            ),
        ));
    }
    let mut values = Vec::with_capacity(weights.len());
    let mut slots = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let shape = w.shape();
        values.push(file.tensor::<T>(path, &format!("weight/{i:05}"), Some(shape.dims()))?);
        let s = slot_names[i]
            .iter()
            .map(|n| {
                let t: Tensor<T> =
                    file.tensor(path, &format!("slot/{i:05}/{n}"), Some(shape.dims()))?;
                Ok((n.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        slots.push(s);
    }
    let state = OptimizerState {
        optimizer: opt_name,
        iterations,
        learning_rate,
        slots,
    };
    // the optimizer checks its part before changing anything; the weights'
    // shapes were checked above, so the assignment cannot fail after it
    optimizer.set_state(&weights, &state)?;
    crate::layer::assign_all(model, &weights, &values)?;
    let mut saved = streams.into_iter();
    for_each_stream(model, |_, s| {
        if let Some(entry) = saved.next() {
            *lock(s) = entry.state;
        }
        Ok(())
    })?;
    Ok(counters)
}
