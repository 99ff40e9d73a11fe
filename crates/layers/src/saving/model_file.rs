//! Whole-model files: architecture, weights, and everything that decides
//! what trains (layer and model `trainable` flags, variable flags, masks,
//! weight ties), in one safetensors file.

use std::collections::HashMap;
use std::path::Path;

use rime_tape::{TrainableMask, Variable};
use rime_tensor::{Element, TensorId};
use serde::{Deserialize, Serialize};

use super::{file_err, read_file, walk, write_file};
use crate::config::{LayerConfig, layer_from_config};
use crate::{Error, Layer, LayerRef, Result};

const FORMAT: &str = "rime-model";
/// The model-file format version this library writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// One layer of the model tree (the model first, then its sublayers depth
/// first) with its flag and the positions of its weights in the model's
/// `weights()`. Two layers listing the same position share (tie) it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LayerEntry {
    path: String,
    class_name: String,
    trainable: bool,
    weights: Vec<usize>,
}

/// One variable: its name, flag, and the trainable runs of its mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WeightEntry {
    name: String,
    shape: Vec<usize>,
    trainable: bool,
    mask_runs: Option<Vec<(usize, usize)>>,
}

fn describe<T: Element>(model: &dyn Layer<T>) -> (Vec<LayerEntry>, Vec<WeightEntry>) {
    let weights = model.variables();
    let pos: HashMap<TensorId, usize> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id(), i))
        .collect();
    let entry = |path: String, l: &dyn Layer<T>| LayerEntry {
        path,
        class_name: l.class_name().to_string(),
        trainable: l.trainable(),
        weights: l.variables().iter().map(|w| pos[&w.id()]).collect(),
    };
    let mut layers = vec![entry(model.name().to_string(), model)];
    layers.extend(walk(model).into_iter().map(|(p, l)| entry(p, &*l)));
    let weights = weights
        .iter()
        .map(|w| WeightEntry {
            name: w.name().to_string(),
            shape: w.shape().to_vec(),
            trainable: w.trainable(),
            mask_runs: w
                .mask()
                .map(|m| m.runs().iter().map(|r| (r.start, r.end)).collect()),
        })
        .collect();
    (layers, weights)
}

/// Saves `model` in one file: its config (architecture, names), every
/// weight, the `trainable` flags of the model, its layers and its
/// variables, every mask, the weight ties, the dtype and the format
/// version. [`load_model`] rebuilds it without model-building code.
///
/// ```
/// use rime_layers::saving::{load_model, save_model};
/// use rime_layers::{Dense, Layer, Sequential};
/// use rime_tape::TrainableMask;
/// let model = Sequential::<f32>::new().add(Dense::new(3).named("a")).add(Dense::new(1).named("b")).with_input_shape([2])?;
/// model.get_layer("a").unwrap().set_trainable(false);
/// model.variables()[2].set_mask(Some(TrainableMask::freeze_rows(0..1)))?;
/// let path = std::env::temp_dir().join("rime_doc_model.safetensors");
/// save_model(&model, &path)?;
/// let loaded = load_model::<f32>(&path)?;
/// assert_eq!(loaded.get_weights(), model.get_weights());
/// assert_eq!(loaded.trainable_weights().len(), 2);
/// assert!(loaded.variables()[2].mask().is_some());
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn save_model<T: Element>(model: &dyn Layer<T>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let config = LayerConfig::of(model);
    let (layers, weights) = describe(model);
    let tensors = model
        .variables()
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("weight/{i:05}"), w.value_untracked()))
        .collect();
    let json = |v: &dyn erased::Ser| v.to_json();
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), MODEL_FORMAT_VERSION.to_string()),
        ("dtype".to_string(), T::DTYPE.to_string()),
        ("config".to_string(), json(&config)),
        ("layers".to_string(), json(&layers)),
        ("weights".to_string(), json(&weights)),
    ]);
    write_file(path, tensors, meta)
}

mod erased {
    pub trait Ser {
        fn to_json(&self) -> String;
    }
    impl<S: serde::Serialize> Ser for S {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("model descriptions serialize")
        }
    }
}

/// Loads a model saved by [`save_model`]: rebuilds it from its config
/// (custom layer classes through
/// [`register_layer`](crate::config::register_layer)), checks that the
/// rebuilt structure has the file's layers, weights and ties, then restores
/// weights, flags and masks. Another format version, another dtype or a
/// corrupt file is a typed error.
pub fn load_model<T: Element>(path: impl AsRef<Path>) -> Result<LayerRef<T>> {
    let path = path.as_ref();
    let file = read_file(path)?;
    file.check_format(path, FORMAT, MODEL_FORMAT_VERSION)?;
    let dtype = file.meta.get("dtype").cloned().unwrap_or_default();
    if dtype != T::DTYPE.to_string() {
        return Err(file_err(
            path,
            format!("holds a {dtype} model, asked for {}", T::DTYPE),
        ));
    }
    let config: LayerConfig = file.json(path, "config")?;
    let layers: Vec<LayerEntry> = file.json(path, "layers")?;
    let weights: Vec<WeightEntry> = file.json(path, "weights")?;
    let model = layer_from_config::<T>(&config).map_err(|e| file_err(path, e))?;
    let (got_layers, got_weights) = describe(&*model);
    if got_weights.is_empty() && !weights.is_empty() {
        return Err(file_err(
            path,
            format!(
                "its config rebuilds model `{}` unbuilt (no weights; a Sequential needs \
                 `with_input_shape` to be saved with its architecture), the file lists {} weights",
                model.name(),
                weights.len()
            ),
        ));
    }
    if got_layers.len() != layers.len() || got_weights.len() != weights.len() {
        return Err(file_err(
            path,
            format!(
                "its config rebuilds {} layers with {} weights, the file lists {} with {}: \
                 the configs do not reproduce the saved structure or weight ties",
                got_layers.len(),
                got_weights.len(),
                layers.len(),
                weights.len()
            ),
        ));
    }
    for (want, got) in layers.iter().zip(&got_layers) {
        if want.class_name != got.class_name || want.weights != got.weights {
            return Err(file_err(
                path,
                format!(
                    "layer `{}` ({}) owns weights {:?} in the file, the rebuilt `{}` ({}) owns {:?}: \
                     the configs do not reproduce the saved structure or weight ties",
                    want.path, want.class_name, want.weights, got.path, got.class_name, got.weights
                ),
            ));
        }
    }
    let vars = model.variables();
    let mut values = Vec::with_capacity(vars.len());
    let mut masks = Vec::with_capacity(vars.len());
    for (i, (w, v)) in weights.iter().zip(&vars).enumerate() {
        if w.shape != v.shape().to_vec() {
            return Err(file_err(
                path,
                format!(
                    "weight `{}` has shape {:?}, rebuilt `{}` has {}",
                    w.name,
                    w.shape,
                    v.name(),
                    v.shape()
                ),
            ));
        }
        values.push(file.tensor::<T>(path, &format!("weight/{i:05}"), Some(&w.shape))?);
        masks.push(mask_from_runs(path, w, v)?);
    }
    if file.tensors.len() != vars.len() {
        return Err(file_err(
            path,
            format!(
                "holds {} tensors for {} weights",
                file.tensors.len(),
                vars.len()
            ),
        ));
    }
    // everything checked; the model is new, so nothing else can observe it
    crate::layer::assign_all(&*model, &vars, &values)?;
    apply_flags(&*model, &layers, &weights, masks)?;
    Ok(model)
}

fn mask_from_runs<T: Element>(
    path: &Path,
    w: &WeightEntry,
    v: &Variable<T>,
) -> Result<Option<TrainableMask>> {
    let Some(runs) = &w.mask_runs else {
        return Ok(None);
    };
    let n = v.len();
    let mut bits = vec![false; n];
    let mut last = 0;
    for &(a, b) in runs {
        if a < last || a > b || b > n {
            return Err(file_err(
                path,
                format!(
                    "mask of `{}`: run {a}..{b} is not ordered within 0..{n}",
                    w.name
                ),
            ));
        }
        bits[a..b].iter_mut().for_each(|x| *x = true);
        last = b;
    }
    Ok(Some(TrainableMask::from_bools(v.shape(), bits)))
}

/// Sets layer flags, then variable flags (a layer's flag also sets its
/// variables'), then masks.
fn apply_flags<T: Element>(
    model: &dyn Layer<T>,
    layers: &[LayerEntry],
    weights: &[WeightEntry],
    masks: Vec<Option<TrainableMask>>,
) -> Result<()> {
    let tree = walk(model);
    model.set_trainable(layers[0].trainable);
    for (entry, (_, l)) in layers[1..].iter().zip(&tree) {
        l.set_trainable(entry.trainable);
    }
    let vars = model.variables();
    for ((w, v), m) in weights.iter().zip(&vars).zip(masks) {
        v.set_trainable(w.trainable);
        v.set_mask(m).map_err(Error::from)?;
    }
    Ok(())
}

/// Copies what decides training from `from` to `to`, two models of the
/// same structure: the model's, every layer's and every variable's
/// `trainable` flag and every mask. `clone_model` results keep their
/// source's trainability this way.
pub fn copy_trainability<T: Element>(from: &dyn Layer<T>, to: &dyn Layer<T>) -> Result<()> {
    let (layers, weights) = describe(from);
    let (to_layers, to_weights) = describe(to);
    let same = layers.len() == to_layers.len()
        && weights.len() == to_weights.len()
        && layers
            .iter()
            .zip(&to_layers)
            .all(|(a, b)| a.class_name == b.class_name && a.weights == b.weights);
    if !same {
        return Err(Error::InvalidArgument {
            what: format!(
                "copy_trainability from `{}` to `{}`",
                from.name(),
                to.name()
            ),
            msg: "the models differ in structure or weight ties".into(),
        });
    }
    let masks = from
        .variables()
        .iter()
        .zip(to.variables())
        .map(|(a, b)| match a.mask() {
            None => Ok(None),
            Some(m) => {
                let w = WeightEntry {
                    name: a.name().to_string(),
                    shape: a.shape().to_vec(),
                    trainable: a.trainable(),
                    mask_runs: Some(m.runs().iter().map(|r| (r.start, r.end)).collect()),
                };
                mask_from_runs(Path::new("<memory>"), &w, &b)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    apply_flags(to, &layers, &weights, masks)
}

/// Loads the weights of a model file into `model` **by variable name**,
/// for transfer learning between models that share some layers. Weights
/// of `model` with no entry of that name keep their values. A name found
/// with another shape is an error, or skipped with `skip_mismatch`.
/// Returns the names of the weights assigned. Everything is checked before
/// anything is assigned.
pub fn load_weights_by_name<T: Element>(
    model: &dyn Layer<T>,
    path: impl AsRef<Path>,
    skip_mismatch: bool,
) -> Result<Vec<String>> {
    let path = path.as_ref();
    let file = read_file(path)?;
    file.check_format(path, FORMAT, MODEL_FORMAT_VERSION)?;
    let weights: Vec<WeightEntry> = file.json(path, "weights")?;
    let by_name: HashMap<&str, usize> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    let mut plan = Vec::new();
    for v in model.variables() {
        let Some(&i) = by_name.get(v.name()) else {
            continue;
        };
        if weights[i].shape != v.shape().to_vec() {
            if skip_mismatch {
                continue;
            }
            return Err(file_err(
                path,
                format!(
                    "weight `{}` has shape {:?} in the file, {} in model `{}` (pass skip_mismatch to skip it)",
                    v.name(),
                    weights[i].shape,
                    v.shape(),
                    model.name()
                ),
            ));
        }
        let value = file.tensor::<T>(path, &format!("weight/{i:05}"), Some(&weights[i].shape))?;
        plan.push((v, value));
    }
    let names = plan.iter().map(|(v, _)| v.name().to_string()).collect();
    for (v, value) in plan {
        v.assign(&value)?;
    }
    Ok(names)
}
