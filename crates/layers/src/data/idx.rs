//! IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
//!
//! Layout: two zero bytes, a type byte, a rank byte, `rank` big-endian
//! `u32` dimensions, then the values big-endian, row-major.

use std::io::Read;
use std::path::Path;

use rime_tensor::{Element, Tensor};

use super::{data_err, open_maybe_gz};
use crate::Result;

/// The values of an IDX file, in the element type the file stores.
#[derive(Clone, Debug, PartialEq)]
pub enum IdxData {
    /// Type 0x08 (pixels, labels).
    U8(Vec<u8>),
    /// Type 0x09.
    I8(Vec<i8>),
    /// Type 0x0B.
    I16(Vec<i16>),
    /// Type 0x0C.
    I32(Vec<i32>),
    /// Type 0x0D.
    F32(Vec<f32>),
    /// Type 0x0E.
    F64(Vec<f64>),
}

/// An IDX array: its dimensions and its values as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// The dimensions, e.g. `[60000, 28, 28]` for the training images.
    pub dims: Vec<usize>,
    /// The values.
    pub data: IdxData,
}

/// Largest IDX payload read (8 GiB): a corrupt header cannot make the
/// reader reserve more.
const MAX_BYTES: usize = 8 << 30;

/// Reads an IDX file (`.gz` is decompressed). The header is checked
/// (magic, type, rank, an element count that fits memory) and the payload
/// must have exactly the size the header declares.
///
/// ```
/// use rime_layers::data::{read_idx, IdxData};
/// let path = std::env::temp_dir().join("rime_doc_labels.idx1");
/// // magic 0x00000801 (u8, rank 1), 3 labels
/// std::fs::write(&path, [0u8, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])?;
/// let labels = read_idx(&path)?;
/// assert_eq!(labels.dims, [3]);
/// assert_eq!(labels.data, IdxData::U8(vec![7, 2, 1]));
/// assert_eq!(labels.to_int_tensor()?.to_vec(), vec![7i64, 2, 1]);
/// assert_eq!(labels.to_tensor::<f32>(1.0)?.to_vec(), vec![7.0, 2.0, 1.0]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let what = || format!("IDX file `{}`", path.display());
    let mut r = open_maybe_gz(path)?;
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|e| data_err(what(), format!("header: {e}")))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(data_err(
            what(),
            format!("bad magic {head:02x?}: an IDX file starts with two zero bytes"),
        ));
    }
    let size = match head[2] {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        t => return Err(data_err(what(), format!("unknown element type 0x{t:02x}"))),
    };
    let rank = head[3] as usize;
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        let mut d = [0u8; 4];
        r.read_exact(&mut d)
            .map_err(|e| data_err(what(), format!("header: {e}")))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let bytes = dims
        .iter()
        .try_fold(size, |acc: usize, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_BYTES)
        .ok_or_else(|| {
            data_err(
                what(),
                format!("dimensions {dims:?} of {size}-byte values exceed {MAX_BYTES} bytes"),
            )
        })?;
    let mut payload = Vec::new();
    payload
        .try_reserve_exact(bytes)
        .map_err(|e| data_err(what(), format!("cannot allocate {bytes} bytes: {e}")))?;
    r.by_ref()
        .take(bytes as u64)
        .read_to_end(&mut payload)
        .map_err(|e| data_err(what(), e))?;
    if payload.len() != bytes {
        return Err(data_err(
            what(),
            format!(
                "truncated: header {dims:?} needs {bytes} bytes of values, found {}",
                payload.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra).map_err(|e| data_err(what(), e))? != 0 {
        return Err(data_err(
            what(),
            format!("trailing bytes after the {bytes} bytes the header {dims:?} declares"),
        ));
    }
    let data = match head[2] {
        0x08 => IdxData::U8(payload),
        0x09 => IdxData::I8(payload.iter().map(|&b| b as i8).collect()),
        0x0B => IdxData::I16(
            payload
                .chunks_exact(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect(),
        ),
        0x0C => IdxData::I32(
            payload
                .chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        0x0D => IdxData::F32(
            payload
                .chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => IdxData::F64(
            payload
                .chunks_exact(8)
                .map(|c| f64::from_be_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
        ),
    };
    Ok(IdxArray { dims, data })
}

impl IdxArray {
    /// The number of values.
    pub fn len(&self) -> usize {
        match &self.data {
            IdxData::U8(v) => v.len(),
            IdxData::I8(v) => v.len(),
            IdxData::I16(v) => v.len(),
            IdxData::I32(v) => v.len(),
            IdxData::F32(v) => v.len(),
            IdxData::F64(v) => v.len(),
        }
    }

    /// Whether the array has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of an integer array (types 0x08 to 0x0C) as an `i64`
    /// tensor of shape `dims`, exactly: labels as the sparse losses and
    /// metrics read them. A float array is an error.
    pub fn to_int_tensor(&self) -> Result<Tensor<i64>> {
        let values: Vec<i64> = match &self.data {
            IdxData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            IdxData::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            IdxData::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            IdxData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            IdxData::F32(_) | IdxData::F64(_) => {
                return Err(data_err(
                    "IDX array",
                    format!(
                        "holds floats (dims {:?}); integer labels need an integer array",
                        self.dims
                    ),
                ));
            }
        };
        Ok(Tensor::from_vec(values, self.dims.as_slice())?)
    }

    /// The values as a float tensor of shape `dims`, each multiplied by
    /// `scale` (`1.0 / 255.0` for pixels). Labels are read with
    /// [`to_int_tensor`](IdxArray::to_int_tensor).
    pub fn to_tensor<T: Element>(&self, scale: f64) -> Result<Tensor<T>> {
        let conv = |v: f64| T::of(v * scale);
        let values: Vec<T> = match &self.data {
            IdxData::U8(v) => v.iter().map(|&x| conv(x as f64)).collect(),
            IdxData::I8(v) => v.iter().map(|&x| conv(x as f64)).collect(),
            IdxData::I16(v) => v.iter().map(|&x| conv(x as f64)).collect(),
            IdxData::I32(v) => v.iter().map(|&x| conv(x as f64)).collect(),
            IdxData::F32(v) => v.iter().map(|&x| conv(x as f64)).collect(),
            IdxData::F64(v) => v.iter().map(|&x| conv(x)).collect(),
        };
        Ok(Tensor::from_vec(values, self.dims.as_slice())?)
    }
}
