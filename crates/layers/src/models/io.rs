//! Weights files in the safetensors format.
//!
//! Entries are keyed `<position>:<variable name>` in the model's
//! [`weights`](crate::Layer::weights) order (each tied variable once), so
//! weights load into any model of the same structure — a clone, or the same
//! program run again — whatever its layer names.

use std::collections::HashMap;
use std::path::Path;

use rime_tensor::{DType, Element, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::{Error, Layer, Result};

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// The elements as little-endian bytes (safetensors' byte order).
fn le_bytes<T: Element>(v: &[T]) -> Vec<u8> {
    let mut bytes: Vec<u8> = bytemuck::cast_slice(v).to_vec();
    if cfg!(target_endian = "big") {
        bytes
            .chunks_exact_mut(std::mem::size_of::<T>())
            .for_each(<[u8]>::reverse);
    }
    bytes
}

/// Elements from little-endian bytes (any alignment); `None` if the length
/// is not a whole number of elements.
fn from_le_bytes<T: Element>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let mut out = vec![T::zero(); bytes.len() / size];
    let out_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
    out_bytes.copy_from_slice(bytes);
    if cfg!(target_endian = "big") {
        out_bytes.chunks_exact_mut(size).for_each(<[u8]>::reverse);
    }
    Some(out)
}

/// Writes every weight of `model` to a safetensors file.
///
/// ```
/// use rime_layers::{models::{load_weights, save_weights}, Dense, Layer, Sequential};
/// let a = Sequential::<f32>::new().add(Dense::new(3)).with_input_shape([2])?;
/// let b = Sequential::<f32>::new().add(Dense::new(3)).with_input_shape([2])?;
/// let path = std::env::temp_dir().join("rime_doc_weights.safetensors");
/// save_weights(&a, &path)?;
/// load_weights(&b, &path)?;
/// assert_eq!(a.get_weights(), b.get_weights());
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn save_weights<T: Element>(model: &dyn Layer<T>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let weights = model.variables();
    let dtype = match T::DTYPE {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
    };
    let entries: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            (
                format!("{i:05}:{}", w.name()),
                w.shape().to_vec(),
                le_bytes(&w.to_vec()),
            )
        })
        .collect();
    let views = entries
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| io_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "rime".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| io_err(path, e))
}

/// Reads weights written by [`save_weights`] into `model`. Every count,
/// dtype and shape is checked before anything is assigned: a file that does
/// not fit changes nothing.
pub fn load_weights<T: Element>(model: &dyn Layer<T>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| io_err(path, e))?;
    let mut entries: Vec<(usize, String)> = file
        .names()
        .into_iter()
        .map(|n| {
            let pos = n.split(':').next().and_then(|p| p.parse().ok());
            pos.map(|p| (p, n.to_string()))
                .ok_or_else(|| io_err(path, format!("entry `{n}` is not a rime weight")))
        })
        .collect::<Result<_>>()?;
    entries.sort();
    let weights = model.variables();
    if entries.len() != weights.len() {
        return Err(io_err(
            path,
            format!(
                "holds {} weights, model `{}` has {}",
                entries.len(),
                model.name(),
                weights.len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(weights.len());
    for ((_, name), w) in entries.iter().zip(&weights) {
        let view = file.tensor(name).map_err(|e| io_err(path, e))?;
        if view.shape() != &w.shape()[..] {
            return Err(io_err(
                path,
                format!(
                    "`{name}` has shape {:?}, weight `{}` has shape {}",
                    view.shape(),
                    w.name(),
                    w.shape()
                ),
            ));
        }
        let data: Vec<T> = match (view.dtype(), T::DTYPE) {
            (Dtype::F32, DType::F32) | (Dtype::F64, DType::F64) => from_le_bytes(view.data())
                .ok_or_else(|| io_err(path, format!("`{name}`: data is not whole elements")))?,
            (d, _) => {
                return Err(io_err(
                    path,
                    format!("`{name}` is {d:?}, the model is {}", T::DTYPE),
                ));
            }
        };
        values.push(Tensor::from_vec(data, w.shape())?);
    }
    crate::layer::assign_all(model, &weights, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_little_endian_ieee() {
        // 1.0f32 = 0x3f800000, -2.0f64 = 0xc000000000000000
        assert_eq!(le_bytes(&[1.0f32, -0.0]), [0, 0, 0x80, 0x3f, 0, 0, 0, 0x80]);
        assert_eq!(le_bytes(&[-2.0f64]), [0, 0, 0, 0, 0, 0, 0, 0xc0]);
    }

    #[test]
    fn decoding_takes_any_alignment_and_rejects_partial_elements() {
        let values = [1.5f64, -0.0, f64::MAX, f64::MIN_POSITIVE];
        let mut buf = vec![0xAAu8];
        buf.extend(le_bytes(&values));
        let back: Vec<f64> = from_le_bytes(&buf[1..]).unwrap(); // misaligned
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(from_le_bytes::<f32>(&[0, 0, 0]).is_none());
        assert_eq!(from_le_bytes::<f32>(&[]), Some(vec![]));
    }
}
