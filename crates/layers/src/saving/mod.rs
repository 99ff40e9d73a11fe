//! Files that restore training exactly: whole-model files
//! ([`save_model`]/[`load_model`]: architecture, weights and everything
//! that decides what trains) and checkpoints ([`save_checkpoint`]/
//! [`load_checkpoint`]: weights, optimizer state and counters, for a
//! bit-identical resumed run).
//!
//! Both are one safetensors file with a JSON description in its metadata
//! and a format version; a file of another version, or a corrupt one, is a
//! typed error and changes nothing.

mod checkpoint;
mod model_file;

pub use checkpoint::{Counters, load_checkpoint, save_checkpoint};
pub use model_file::{
    MODEL_FORMAT_VERSION, copy_trainability, load_model, load_weights_by_name, save_model,
};

use std::collections::HashMap;
use std::path::Path;

use rime_tensor::{DType, Element, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::{Error, Layer, LayerRef, Result};

/// The model's sublayers, depth first, each with its path
/// (`model/block/dense`); a shared layer appears at each of its places.
pub(crate) fn walk<T: Element>(root: &dyn Layer<T>) -> Vec<(String, LayerRef<T>)> {
    fn rec<T: Element>(prefix: &str, l: &dyn Layer<T>, out: &mut Vec<(String, LayerRef<T>)>) {
        for s in l.sublayers() {
            let path = format!("{prefix}/{}", s.name());
            out.push((path.clone(), s.clone()));
            rec(&path, &*s, out);
        }
    }
    let mut out = Vec::new();
    rec(root.name(), root, &mut out);
    out
}

pub(crate) fn file_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::ModelFile {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

fn st_dtype<T: Element>() -> Dtype {
    match T::DTYPE {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
    }
}

fn to_bytes<T: Element>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(v));
    for &x in v {
        match T::DTYPE {
            DType::F32 => out.extend_from_slice(&x.to_f32().unwrap_or(f32::NAN).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&x.to_f64().unwrap_or(f64::NAN).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&x.to_i32().unwrap_or(0).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&x.to_i64().unwrap_or(0).to_le_bytes()),
        }
    }
    out
}

/// Writes tensors and metadata to `path` through a temporary file and a
/// rename, so a crash mid-write leaves the previous file intact.
pub(crate) fn write_file<T: Element>(
    path: &Path,
    tensors: Vec<(String, Tensor<T>)>,
    meta: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec(), to_bytes(t.as_slice())))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(st_dtype::<T>(), shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| file_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| file_err(path, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| file_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        file_err(path, e)
    })
}

/// A file read back: its metadata and its tensors by name.
pub(crate) struct ReadFile {
    pub meta: HashMap<String, String>,
    pub tensors: HashMap<String, (Vec<usize>, Dtype, Vec<u8>)>,
}

pub(crate) fn read_file(path: &Path) -> Result<ReadFile> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| file_err(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, e))?;
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.dtype(), v.data().to_vec())))
        .collect();
    Ok(ReadFile { meta, tensors })
}

impl ReadFile {
    /// Tensor `name` as `T`, with the shape `expect` when given.
    pub fn tensor<T: Element>(
        &self,
        path: &Path,
        name: &str,
        expect: Option<&[usize]>,
    ) -> Result<Tensor<T>> {
        let (shape, dtype, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| file_err(path, format!("entry `{name}` is missing")))?;
        if let Some(e) = expect
            && e != shape.as_slice()
        {
            return Err(file_err(
                path,
                format!("`{name}` has shape {shape:?}, expected {e:?}"),
            ));
        }
        let values: Vec<T> = match (dtype, T::DTYPE) {
            (Dtype::F32, DType::F32) => data
                .chunks_exact(4)
                .map(|c| T::of(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
                .collect(),
            (Dtype::F64, DType::F64) => data
                .chunks_exact(8)
                .map(|c| T::of(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            (d, t) => {
                return Err(file_err(path, format!("`{name}` is {d:?}, expected {t}")));
            }
        };
        Ok(Tensor::from_vec(values, shape.as_slice())?)
    }

    /// Metadata entry `key` parsed as JSON.
    pub fn json<V: serde::de::DeserializeOwned>(&self, path: &Path, key: &str) -> Result<V> {
        let raw = self
            .meta
            .get(key)
            .ok_or_else(|| file_err(path, format!("metadata `{key}` is missing")))?;
        serde_json::from_str(raw).map_err(|e| file_err(path, format!("metadata `{key}`: {e}")))
    }

    /// Checks the `format` and `version` metadata.
    pub fn check_format(&self, path: &Path, format: &str, version: u32) -> Result<()> {
        match self.meta.get("format") {
            Some(f) if f == format => {}
            other => {
                return Err(file_err(
                    path,
                    format!("not a {format} file (format {other:?})"),
                ));
            }
        }
        let found = self.meta.get("version").cloned().unwrap_or_default();
        if found != version.to_string() {
            return Err(Error::FormatVersion {
                path: path.display().to_string(),
                found,
                expected: version,
            });
        }
        Ok(())
    }
}
