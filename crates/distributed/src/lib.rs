//! Data-parallel training for rime over MPI, as Horovod does it for
//! TensorFlow and PyTorch: every process holds a replica of the model,
//! trains on its own shard of the data, and averages its gradients with
//! the others' through `MPI_Allreduce` before each update, so the replicas
//! stay identical.
//!
//! The MPI backend is behind this crate's `mpi` feature (the facade's
//! `distributed` feature turns it on); it builds against the system MPI
//! through the `mpi` crate (rsmpi). Processes are started by MPI's own
//! launcher: `mpirun -n 4 ./train`, `mpirun --hostfile hosts ./train`, or
//! `srun` under Slurm.
//!
//! ```no_run
//! # #[cfg(feature = "mpi")] fn main() -> rime_layers::Result<()> {
//! use rime_distributed::Mpi;
//! use rime_layers::fit::{FitOptions, Trainer};
//! use rime_layers::{data::Dataset, losses::MeanSquaredError, optimizers::Sgd};
//! use rime_layers::{Dense, Sequential, TrainStep};
//! use rime_tensor::Tensor;
//! let mpi = Mpi::init()?;
//! let model = Sequential::<f32>::new().add(Dense::new(1)).with_input_shape([2])?;
//! let step = TrainStep::new(&model, Sgd::new(), MeanSquaredError::new())
//!     .with_collective(mpi.data_parallel());
//! let data = Dataset::from_tensors(Tensor::<f32>::ones([64, 2])?, Tensor::<f32>::zeros([64, 1])?)?
//!     .shard(mpi.rank(), mpi.size())? // this process's samples
//!     .batch(32)?;
//! Trainer::from_step(step).fit(&data, FitOptions::new().epochs(3))?;
//! # Ok(()) }
//! # #[cfg(not(feature = "mpi"))] fn main() {}
//! ```
//!
//! What training across processes means, with Keras+Horovod's semantics:
//!
//! - **Gradients** are averaged over the processes at every step (fused
//!   allreduce, in place in the gradients' own storage; see
//!   [`DataParallel`]), so every process applies the same update and the
//!   weights stay identical. Frozen variables and masked (frozen) elements
//!   are not sent and stay bit-identical everywhere.
//! - **BatchNormalization** normalizes each batch with that process's own
//!   batch statistics (no synchronized batch norm: with p processes ×
//!   batch b, the statistics are over b samples, not p·b); its moving
//!   mean and variance are averaged over the processes at every step, in
//!   the same exchange as the gradients, so they too stay identical.
//! - **`fit`** reports global loss and metrics (training and validation):
//!   each process's sums weighted by its number of samples and reduced
//!   over all, the figures one process would give on all the data. Only
//!   rank 0 prints, writes checkpoints and model files; early stopping and
//!   any callback's stop decide on every process together.
//! - **`Trainer::evaluate`** is collective and global in the same way: give
//!   each process its shard of the evaluation data. **`predict`** stays
//!   local (each process's outputs for its own data, no communication).
//!
//! What is exchanged and when is rime-layers' [`collective`] extension
//! point: [`DataParallel`] implements its [`Collective`] trait.
//!
//! Without the `mpi` feature this crate is empty, so that a workspace build
//! (`cargo test --workspace`) needs no MPI.
//!
//! [`collective`]: rime_layers::collective
//! [`Collective`]: rime_layers::collective::Collective

#![warn(missing_docs)]

#[cfg(feature = "mpi")]
mod data_parallel;
#[cfg(any(feature = "mpi", test))]
mod plan;

#[cfg(feature = "mpi")]
pub use data_parallel::{DEFAULT_BUCKET_BYTES, DataParallel, Mpi};
/// The `mpi` crate (rsmpi) this backend is built on, for a program's own
/// MPI calls.
#[cfg(feature = "mpi")]
pub use mpi;
