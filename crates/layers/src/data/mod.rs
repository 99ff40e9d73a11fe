//! Datasets: in-memory tensors cut into batches, and readers for the file
//! formats the examples use (CSV, IDX).
//!
//! A [`Dataset`] holds one or more feature tensors and zero or more target
//! tensors whose first axis indexes samples. It batches (the last partial
//! batch is kept unless [`drop_remainder`](Dataset::drop_remainder)),
//! shuffles with a seed (a new order every epoch, the same orders on every
//! run), maps batches through transforms, takes, skips, splits and shards
//! samples, and can prepare the next batch on a background thread. It is
//! independent of `fit`: a custom loop iterates `dataset.epoch(e)`.
//!
//! ```
//! use rime_layers::data::Dataset;
//! use rime_tensor::Tensor;
//! let x = Tensor::from_vec((0..10).map(|i| i as f32).collect(), [5, 2])?;
//! let y = Tensor::vector(vec![0.0f32, 1.0, 0.0, 1.0, 1.0]);
//! let data = Dataset::from_tensors(x, y)?.batch(2)?.shuffle(7);
//! let sizes: Vec<usize> = data.epoch(0).map(|b| b.map(|b| b.len())).collect::<Result<_, _>>()?;
//! assert_eq!(sizes, vec![2, 2, 1]);
//! // another epoch, another order; the same epoch, the same order
//! let first = |e| data.epoch(e).next().unwrap().unwrap().targets[0].clone();
//! assert_eq!(first(3), first(3));
//! # Ok::<(), rime_layers::Error>(())
//! ```
//!
//! Labels and ids stay integers as they come from the files:
//! [`IdxArray::to_int_tensor`] and [`CsvTable::int_column`] give `i64`
//! tensors, a dataset holds them as integer [`Target`]s, and the sparse
//! losses and metrics read them as they are (`fit` and [`TrainStep`] pass
//! them through). Float labels still work everywhere.
//!
//! ```
//! use rime_layers::data::Dataset;
//! use rime_layers::losses::SparseCategoricalCrossentropy;
//! use rime_layers::optimizers::Sgd;
//! use rime_layers::{Dense, Layer, Sequential, TrainStep};
//! use rime_tensor::Tensor;
//! let x = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2])?;
//! let labels = Tensor::vector(vec![1i64, 0]);
//! let model = Sequential::<f32>::new().add(Dense::new(2)).with_input_shape([2])?;
//! let loss = SparseCategoricalCrossentropy::new().with_from_logits(true);
//! let mut step = TrainStep::new(&model, Sgd::new(), loss);
//! for batch in Dataset::from_tensors(x, labels)?.iter() {
//!     step.run_batch(&batch?)?;
//! }
//! # Ok::<(), rime_layers::Error>(())
//! ```
//!
//! [`Target`]: crate::Target
//! [`TrainStep`]: crate::TrainStep

mod csv;
mod dataset;
mod idx;

pub use self::csv::{CsvTable, read_csv};
pub use dataset::{Batch, Batches, Dataset};
pub use idx::{IdxArray, IdxData, read_idx};

use crate::Error;

pub(crate) fn data_err(what: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::Data {
        what: what.into(),
        msg: msg.to_string(),
    }
}

/// Opens a file, transparently decompressing it when it starts with the
/// gzip magic bytes (the Debian Fashion-MNIST files and the digits CSV are
/// `.gz`).
pub(crate) fn open_maybe_gz(path: &std::path::Path) -> crate::Result<Box<dyn std::io::Read>> {
    use std::io::{BufRead, BufReader};
    let what = || format!("file `{}`", path.display());
    let file = std::fs::File::open(path).map_err(|e| data_err(what(), e))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| data_err(what(), e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(
            flate2::bufread::MultiGzDecoder::new(reader),
        )))
    } else {
        Ok(Box::new(reader))
    }
}
