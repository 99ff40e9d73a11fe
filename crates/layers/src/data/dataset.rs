//! [`Dataset`]: batches of in-memory tensors.

use std::sync::Arc;
use std::sync::mpsc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rime_tensor::{Element, Tensor};

use super::data_err;
use crate::{ModelData, Result, Target};

/// One batch: the feature tensors (the model's inputs) and the targets,
/// each with the batch's samples along axis 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T: Element = f32> {
    /// One tensor per model input: float features, or integer ids
    /// ([`ModelData`]).
    pub inputs: Vec<ModelData<T>>,
    /// One target per model output (empty for unlabelled data): float
    /// values or integer class indices ([`Target`]).
    pub targets: Vec<Target<T>>,
}

impl<T: Element> Batch<T> {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.inputs
            .first()
            .map(|t| t.dims())
            .or(self.targets.first().map(|t| t.dims()))
            .and_then(|d| d.first().copied())
            .unwrap_or(0)
    }

    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type MapFn<T> = Arc<dyn Fn(Batch<T>) -> Result<Batch<T>> + Send + Sync>;

/// Samples held in memory, served in batches. Cheap to clone (tensors
/// share storage); every method returns a new dataset.
///
/// `take`, `skip`, `split` and `shard` select **samples** of the
/// underlying tensors in their stored order (before shuffling), so a
/// validation split or a shard never changes between epochs; shuffling
/// permutes the selected samples anew each epoch; `map` transforms whole
/// batches after they are gathered.
#[derive(Clone)]
pub struct Dataset<T: Element = f32> {
    inputs: Vec<ModelData<T>>,
    targets: Vec<Target<T>>,
    indices: Arc<[usize]>,
    batch_size: usize,
    drop_remainder: bool,
    shuffle_seed: Option<u64>,
    maps: Vec<MapFn<T>>,
    prefetch: usize,
}

impl<T: Element> std::fmt::Debug for Dataset<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("samples", &self.len())
            .field(
                "inputs",
                &self
                    .inputs
                    .iter()
                    .map(|t| t.shape().clone())
                    .collect::<Vec<_>>(),
            )
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|t| t.shape().clone())
                    .collect::<Vec<_>>(),
            )
            .field("batch_size", &self.batch_size)
            .field("drop_remainder", &self.drop_remainder)
            .field("shuffle_seed", &self.shuffle_seed)
            .field("maps", &self.maps.len())
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl<T: Element> Dataset<T> {
    /// One feature tensor and one target with the same number of samples
    /// (first axis). The target is a float tensor or an integer tensor of
    /// class indices (`i64` or `i32`, kept as integers: see [`Target`]).
    /// Batch size 32, no shuffling. Integer features (token ids):
    /// [`from_data`](Dataset::from_data).
    ///
    /// ```
    /// use rime_layers::data::Dataset;
    /// use rime_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros([3, 2])?;
    /// let labels = Tensor::vector(vec![2i64, 0, 1]);
    /// let data = Dataset::from_tensors(x, labels)?.batch(2)?;
    /// let first = data.iter().next().unwrap()?;
    /// assert_eq!(first.targets[0].as_int().unwrap().to_vec(), vec![2, 0]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn from_tensors(x: Tensor<T>, y: impl Into<Target<T>>) -> Result<Self> {
        Self::from_many([ModelData::Float(x)], [y.into()])
    }

    /// [`from_tensors`](Dataset::from_tensors) for features of any kind:
    /// float features or integer ids (`i64`, `i32`), kept as integers so
    /// that they reach a model's `Embedding` exactly (see [`ModelData`]).
    ///
    /// ```
    /// use rime_layers::data::Dataset;
    /// use rime_tensor::Tensor;
    /// let ids = Tensor::from_vec(vec![4i64, 1, 0, 7, 7, 2], [3, 2])?;
    /// let data = Dataset::<f32>::from_data(ids, Tensor::vector(vec![1i64, 0, 1]))?;
    /// let batch = data.to_batch()?;
    /// assert_eq!(batch.inputs[0].as_int().unwrap().to_vec(), vec![4, 1, 0, 7, 7, 2]);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn from_data(x: impl Into<ModelData<T>>, y: impl Into<Target<T>>) -> Result<Self> {
        Self::from_many([x.into()], [y.into()])
    }

    /// Features only (for `predict`): a float tensor, or integer ids.
    pub fn from_features(x: impl Into<ModelData<T>>) -> Result<Self> {
        Self::from_many([x.into()], Vec::<Target<T>>::new())
    }

    /// Several feature tensors (a multi-input model) and several targets
    /// (a multi-output model); each a float or integer tensor, or
    /// [`ModelData`]; all with the same number of samples.
    pub fn from_many(
        inputs: impl IntoIterator<Item = impl Into<ModelData<T>>>,
        targets: impl IntoIterator<Item = impl Into<Target<T>>>,
    ) -> Result<Self> {
        let inputs: Vec<ModelData<T>> = inputs.into_iter().map(Into::into).collect();
        let targets: Vec<Target<T>> = targets.into_iter().map(Into::into).collect();
        let Some(first) = inputs.first() else {
            return Err(data_err("dataset", "needs at least one feature tensor"));
        };
        let n = sample_count(first.shape())?;
        let shapes = inputs
            .iter()
            .map(|t| ("feature", t.shape()))
            .enumerate()
            .chain(targets.iter().map(|t| ("target", t.shape())).enumerate());
        for (i, (kind, shape)) in shapes {
            if sample_count(shape)? != n {
                return Err(data_err(
                    "dataset",
                    format!(
                        "{kind} tensor {i} of shape {shape} has {} samples, feature tensor 0 of shape {} has {n}",
                        shape[0],
                        first.shape()
                    ),
                ));
            }
        }
        Ok(Dataset {
            inputs,
            targets,
            indices: (0..n).collect(),
            batch_size: 32,
            drop_remainder: false,
            shuffle_seed: None,
            maps: Vec::new(),
            prefetch: 0,
        })
    }

    /// Samples per batch (Keras' default is 32). Zero is an error.
    pub fn batch(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(data_err("dataset batch", "batch size must be at least 1"));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// Drops the last batch when it has fewer than `batch_size` samples.
    pub fn drop_remainder(mut self, drop: bool) -> Self {
        self.drop_remainder = drop;
        self
    }

    /// Shuffles the samples every epoch: epoch `e`'s order is a function
    /// of `(seed, e)` alone, so runs repeat and a resumed run continues
    /// with the orders an uninterrupted one would have seen.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Reorders the selected samples once by a seeded permutation (tf.data's
    /// `shuffle(reshuffle_each_iteration=False)`), so that a following
    /// `split`, `take` or `skip` draws a random subset that stays the same
    /// every epoch (a random train/test split).
    pub fn permuted(mut self, seed: u64) -> Self {
        let mut order = self.indices.to_vec();
        order.shuffle(&mut rand_pcg::Pcg64::seed_from_u64(seed));
        self.indices = order.into();
        self
    }

    /// Serves batches in stored order.
    pub fn no_shuffle(mut self) -> Self {
        self.shuffle_seed = None;
        self
    }

    /// Transforms every batch (after gathering, in the order added), e.g.
    /// scaling pixels or one-hot encoding labels. An error from `f` is
    /// returned by the iterator.
    pub fn map(mut self, f: impl Fn(Batch<T>) -> Result<Batch<T>> + Send + Sync + 'static) -> Self {
        self.maps.push(Arc::new(f));
        self
    }

    /// The first `n` samples (all if fewer).
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.indices.len());
        self.indices = self.indices[..n].into();
        self
    }

    /// All but the first `n` samples.
    pub fn skip(mut self, n: usize) -> Self {
        let n = n.min(self.indices.len());
        self.indices = self.indices[n..].into();
        self
    }

    /// Splits off the last `fraction` of the samples (Keras'
    /// `validation_split`: taken before shuffling, the same every epoch).
    /// Returns `(train, validation)`; `fraction` must be in `(0, 1)`.
    pub fn split(self, fraction: f64) -> Result<(Self, Self)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(data_err(
                "dataset split",
                format!("fraction must be in (0, 1), got {fraction}"),
            ));
        }
        let n = self.indices.len();
        // Keras: split_at = int(n * (1 - validation_split))
        let at = ((n as f64) * (1.0 - fraction)).floor() as usize;
        let train = self.clone().take(at);
        let val = self.skip(at);
        Ok((train, val))
    }

    /// Every `count`-th sample starting at `index` (tf.data's `shard`), for
    /// data-parallel training: the shards of `0..count` partition the data.
    pub fn shard(mut self, index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(data_err(
                "dataset shard",
                format!("needs index < count, got index {index}, count {count}"),
            ));
        }
        self.indices = self
            .indices
            .iter()
            .copied()
            .skip(index)
            .step_by(count)
            .collect();
        Ok(self)
    }

    /// Prepares up to `n` batches ahead on a background thread while the
    /// caller works on the current one (0: no thread).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The shuffle seed, if shuffling.
    pub fn shuffle_seed(&self) -> Option<u64> {
        self.shuffle_seed
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_remainder {
            self.len() / self.batch_size
        } else {
            self.len().div_ceil(self.batch_size)
        }
    }

    /// The number of feature tensors.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// The number of target tensors.
    pub fn num_targets(&self) -> usize {
        self.targets.len()
    }

    /// The sample order of epoch `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.indices.to_vec();
        if let Some(seed) = self.shuffle_seed {
            // one generator per (seed, epoch): an epoch's order does not
            // depend on how many epochs ran before it in this process
            let mixed = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut rand_pcg::Pcg64::seed_from_u64(mixed));
        }
        order
    }

    /// The batches of epoch `epoch` (shuffled for that epoch when a seed
    /// is set).
    pub fn epoch(&self, epoch: u64) -> Batches<T> {
        let order = self.order(epoch);
        let producer = Producer {
            data: self.clone(),
            order,
            next: 0,
        };
        if self.prefetch == 0 {
            return Batches {
                inner: BatchesInner::Inline(producer),
            };
        }
        let (tx, rx) = mpsc::sync_channel(self.prefetch);
        std::thread::spawn(move || {
            let mut producer = producer;
            while let Some(batch) = producer.next_batch() {
                let failed = batch.is_err();
                // the receiver is gone when the caller stopped early
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        Batches {
            inner: BatchesInner::Prefetch(rx),
        }
    }

    /// The batches of epoch 0.
    pub fn iter(&self) -> Batches<T> {
        self.epoch(0)
    }

    /// All selected samples as one batch, in stored order, maps applied.
    pub fn to_batch(&self) -> Result<Batch<T>> {
        let mut producer = Producer {
            data: self.clone(),
            order: self.indices.to_vec(),
            next: 0,
        };
        producer.gather(&self.indices)
    }
}

fn sample_count(shape: &rime_tensor::Shape) -> Result<usize> {
    shape.first().copied().ok_or_else(|| {
        data_err(
            "dataset",
            "a scalar has no samples: tensors need a first (sample) axis",
        )
    })
}

struct Producer<T: Element> {
    data: Dataset<T>,
    order: Vec<usize>,
    next: usize,
}

impl<T: Element> Producer<T> {
    fn next_batch(&mut self) -> Option<Result<Batch<T>>> {
        let bs = self.data.batch_size;
        let left = self.order.len() - self.next;
        if left == 0 || (self.data.drop_remainder && left < bs) {
            return None;
        }
        let end = self.next + left.min(bs);
        let idx = self.order[self.next..end].to_vec();
        self.next = end;
        Some(self.gather(&idx))
    }

    fn gather(&mut self, idx: &[usize]) -> Result<Batch<T>> {
        let inputs = self.data.inputs.iter();
        let targets = self.data.targets.iter();
        let mut batch = Batch {
            inputs: inputs.map(|t| t.index_select(idx)).collect::<Result<_>>()?,
            targets: targets
                .map(|t| t.index_select(idx))
                .collect::<Result<_>>()?,
        };
        for f in &self.data.maps {
            batch = f(batch)?;
        }
        Ok(batch)
    }
}

enum BatchesInner<T: Element> {
    Inline(Producer<T>),
    Prefetch(mpsc::Receiver<Result<Batch<T>>>),
}

/// The batches of one epoch, from [`Dataset::epoch`].
pub struct Batches<T: Element = f32> {
    inner: BatchesInner<T>,
}

impl<T: Element> Iterator for Batches<T> {
    type Item = Result<Batch<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            BatchesInner::Inline(p) => p.next_batch(),
            BatchesInner::Prefetch(rx) => rx.recv().ok(),
        }
    }
}
