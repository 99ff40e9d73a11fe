//! [`Mpi`] (the MPI environment of this process) and [`DataParallel`], the
//! [`Collective`] that averages a training step over MPI's processes.

use std::marker::PhantomData;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};
use rime_layers::collective::{Collective, ReduceOp, StepExchange};
use rime_layers::optimizers::{Optimizer, OptimizerState};
use rime_layers::{Error, Layer, Result};
use rime_tape::Variable;
use rime_tensor::{Element, Tensor};
use serde::{Deserialize, Serialize};

use crate::plan::{Call, Fingerprint, Plan, Source, layout_fingerprint, packed_len};

/// The default bucket: the most one allreduce call carries, 16 MiB.
///
/// Horovod's default fusion threshold is 64 MiB, PyTorch DDP's bucket
/// 25 MiB. On CPUs, calls above 32 MiB are slower: Open MPI's allreduce of
/// large messages takes a temporary buffer of the message's size at every
/// call, fresh pages (page faults) above glibc's 32 MiB mmap threshold,
/// reused heap below it; and a 16 MiB call leaves its result in cache for
/// the scaling to the mean. Much smaller calls cost more when processes
/// share cores (each call is a rendezvous). Over a network a 16 MiB call
/// dwarfs its latency (13 ms at 10 Gb/s against some 20 µs).
pub const DEFAULT_BUCKET_BYTES: usize = 16 << 20;

fn dist_err(what: &str, msg: impl Into<String>) -> Error {
    Error::Distributed {
        what: what.into(),
        msg: msg.into(),
    }
}

/// This process's MPI environment: initialized once per process by
/// [`Mpi::init`], finalized when dropped. Run the program under `mpirun`
/// (or `srun`); run alone, it is one process of a world of one.
pub struct Mpi {
    _universe: Universe,
    world: SimpleCommunicator,
}

impl Mpi {
    /// Initializes MPI (thread level "funneled": rime's compute threads
    /// never call MPI; the thread that trains does). Fails if MPI was
    /// initialized before in this process.
    pub fn init() -> Result<Mpi> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| {
                dist_err(
                    "Mpi::init",
                    "MPI is already initialized in this process (initialize it once)",
                )
            })?;
        let world = universe.world();
        Ok(Mpi {
            _universe: universe,
            world,
        })
    }

    /// This process's rank in the world, `0..size()`.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// The number of processes in the world.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// The world communicator, for the program's own MPI calls.
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// A [`DataParallel`] over all processes, with its own communicator
    /// (rime's messages never mix with the program's own MPI traffic).
    pub fn data_parallel<T: Element + Equivalence>(&self) -> DataParallel<'_, T> {
        DataParallel {
            comm: self.world.duplicate(),
            rank: self.rank(),
            size: self.size(),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            verify_every: if cfg!(debug_assertions) { 1 } else { 0 },
            steps: 0,
            fusion: Vec::new(),
            plan: None,
            _mpi: PhantomData,
        }
    }
}

/// Data-parallel training over MPI, as Horovod does it: a [`Collective`]
/// for [`TrainStep::with_collective`](rime_layers::TrainStep::with_collective)
/// (and so for `fit`), also usable directly in a custom loop
/// ([`average_gradients`](DataParallel::average_gradients)).
///
/// - Every step's gradients are averaged with `MPI_Allreduce`, in calls of
///   at most [`bucket_bytes`](DataParallel::bucket_bytes) ([16 MiB by
///   default](DEFAULT_BUCKET_BYTES)). A run of 64 KiB or more of a
///   gradient is reduced in place in the gradient's own storage
///   (`MPI_IN_PLACE`; copied first only if another handle shares the
///   buffer); shorter ones are packed into a fusion bucket rather than
///   sent one call each (Horovod's tensor fusion). Only the trainable
///   elements of a masked variable are sent, and frozen variables are not
///   in the step at all: they stay bit-identical on every process.
/// - Each step starts with one small fixed-size allreduce (48 bytes) that
///   checks that every process is at the same step with the same layout
///   and none failed; the layout's plan is cached between steps. A flag in
///   it says whether any process lacks a gradient; only then is a
///   presence flag per gradient exchanged.
/// - BatchNormalization's moving statistics (the state a forward pass
///   stages) are averaged the same way in the same buckets; the batch
///   statistics that normalize during training are each process's own
///   (no synchronized batch norm).
/// - Every process applies the same averaged update, so the weights stay
///   identical; [`verify_every`](DataParallel::verify_every) compares a
///   checksum of the trained variables across processes at every n-th
///   step (every step in debug builds, never in release by default).
/// - A step that fails on one process, or whose variables, shapes or
///   masks differ between processes, fails with an error on all of them,
///   before any data is exchanged.
pub struct DataParallel<'m, T: Element + Equivalence = f32> {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    bucket_bytes: usize,
    verify_every: u64,
    steps: u64,
    /// The fusion buffer: short runs are packed here and reduced in place.
    fusion: Vec<T>,
    /// The plan of a step with every gradient present, and its layout
    /// fingerprint: rebuilt only when the layout changes.
    plan: Option<(u64, Plan)>,
    _mpi: PhantomData<&'m Mpi>,
}

unsafe extern "C" {
    /// `MPI_IN_PLACE` of the system's mpi.h (src/in_place.c).
    safe fn rime_mpi_in_place() -> *mut std::ffi::c_void;
}

/// Sums `buf` over the processes of `comm`, in place: `MPI_Allreduce` with
/// `MPI_IN_PLACE`, so there is no receive buffer to fill and MPI skips its
/// copy of the send buffer. Every process calls it with the same length.
fn all_reduce_sum_in_place<T: Equivalence>(comm: &SimpleCommunicator, buf: &mut [T]) {
    let Ok(count) = i32::try_from(buf.len()) else {
        unreachable!("calls carry at most a bucket, at most i32::MAX elements")
    };
    // SAFETY: `buf` is exclusively borrowed and valid for `count` elements
    // of `T`, whose MPI datatype is `T::equivalent_datatype()` (what
    // `Equivalence` promises); `rime_mpi_in_place` returns the
    // `MPI_IN_PLACE` of the mpi.h of the library this links (build.rs
    // compiles it against mpi-sys's MPI); the datatype, operation and
    // communicator handles are alive for the call. MPI's default error
    // handler aborts on error, so the return code carries nothing.
    unsafe {
        mpi::ffi::MPI_Allreduce(
            rime_mpi_in_place(),
            buf.as_mut_ptr().cast(),
            count,
            T::equivalent_datatype().as_raw(),
            SystemOperation::sum().as_raw(),
            comm.as_raw(),
        );
    }
}

/// The optimizer state's description, broadcast as JSON before its values.
#[derive(Serialize, Deserialize)]
struct StateHeader {
    iterations: u64,
    learning_rate: Option<f64>,
    /// Per variable, its slots' names and shapes.
    slots: Vec<Vec<(String, Vec<usize>)>>,
}

impl<'m, T: Element + Equivalence> DataParallel<'m, T> {
    /// Sets the bucket size in bytes (Horovod's `HOROVOD_FUSION_THRESHOLD`):
    /// the most one allreduce call carries, and the fusion buffer's size.
    /// It must hold at least one element, at most `i32::MAX` elements (an
    /// MPI count), and be the same on every process (a step checks).
    pub fn bucket_bytes(mut self, bytes: usize) -> Result<Self> {
        let elems = bytes / std::mem::size_of::<T>();
        if elems == 0 || elems > i32::MAX as usize {
            return Err(Error::InvalidArgument {
                what: "DataParallel::bucket_bytes".into(),
                msg: format!(
                    "{bytes} bytes must hold 1 to {} elements of {} bytes",
                    i32::MAX,
                    std::mem::size_of::<T>()
                ),
            });
        }
        self.bucket_bytes = bytes;
        Ok(self)
    }

    /// Compares a checksum of the trained variables across processes at
    /// every `n`-th step (0: never), failing the step if they differ.
    pub fn verify_every(mut self, n: u64) -> Self {
        self.verify_every = n;
        self
    }

    fn bucket_len(&self) -> usize {
        (self.bucket_bytes / std::mem::size_of::<T>()).max(1)
    }

    /// Checks that every process is at the same point: none failed (`failed`)
    /// and all have the same `layout` fingerprint (and `checksum`, when
    /// given). One small allreduce of a fixed size (so that processes at
    /// different points still make matching calls); an error on every
    /// process otherwise. Returns whether any process set `missing`.
    fn handshake(
        &mut self,
        what: &str,
        failed: bool,
        layout: u64,
        checksum: Option<u64>,
        missing: bool,
    ) -> Result<bool> {
        let c = checksum.unwrap_or(0);
        // max of h and of !h gives max and min of h in one call
        let local = [
            u64::from(failed),
            layout,
            !layout,
            c,
            !c,
            u64::from(missing),
        ];
        let mut global = [0u64; 6];
        self.comm
            .all_reduce_into(&local[..], &mut global[..], SystemOperation::max());
        if global[0] != 0 {
            return Err(dist_err(
                what,
                "another process failed (its own error says why)",
            ));
        }
        if global[1] != !global[2] {
            return Err(dist_err(
                what,
                format!(
                    "the processes' {what} do not match (different models, trainable \
                     variables, shapes, masks, optimizers or bucket sizes); rank {} has \
                     layout {layout:016x}",
                    self.rank
                ),
            ));
        }
        if checksum.is_some() && global[3] != !global[4] {
            let mut all = vec![0u64; self.size];
            self.comm.all_gather_into(&c, &mut all[..]);
            let differ: Vec<usize> = (0..self.size).filter(|&r| all[r] != all[0]).collect();
            return Err(dist_err(
                what,
                format!(
                    "weights differ across processes: ranks {differ:?} disagree with rank 0 \
                     (checksums {all:016x?})"
                ),
            ));
        }
        Ok(global[5] != 0)
    }

    /// Broadcasts `buf` from the root, in calls of at most a bucket.
    fn broadcast_chunks<U: Equivalence>(&self, buf: &mut [U], chunk: usize) {
        let root = self.comm.process_at_rank(0);
        for part in buf.chunks_mut(chunk.max(1)) {
            root.broadcast_into(part);
        }
    }

    /// A checksum of the variables' values (bit patterns, in order).
    fn checksum(vars: &[Variable<T>]) -> u64 {
        let mut fp = Fingerprint::new();
        for v in vars {
            let value = v.value_untracked();
            for x in value.as_slice() {
                fp.add(x.to_f64().map_or(u64::MAX, f64::to_bits));
            }
        }
        fp.value()
    }

    /// Compares a checksum of every weight of `model` across processes:
    /// `Ok` when all are bit-identical, else an error naming the ranks that
    /// differ from rank 0 (on every process).
    pub fn verify_replicas(&mut self, model: &dyn Layer<T>) -> Result<()> {
        let c = Self::checksum(&model.weights());
        self.handshake("verify_replicas", false, 0, Some(c), false)
            .map(drop)
    }

    /// For a custom loop without a [`TrainStep`](rime_layers::TrainStep):
    /// replaces `grads[i]` (the gradient of `vars[i]`) by its mean over the
    /// processes, as a step does. Every process passes the same variables.
    pub fn average_gradients(
        &mut self,
        grads: &mut [Option<Tensor<T>>],
        vars: &[Variable<T>],
    ) -> Result<()> {
        let masks: Vec<_> = vars.iter().map(Variable::mask).collect();
        self.exchange_step(StepExchange {
            failed: false,
            gradients: grads,
            variables: vars,
            masks: &masks,
            state: &mut [],
        })
    }

    /// What can be checked of this process's step before the exchange.
    fn check_step(step: &StepExchange<'_, T>) -> Result<()> {
        let what = "data-parallel train step";
        if step.gradients.len() != step.variables.len() {
            return Err(dist_err(
                what,
                format!(
                    "{} gradients for {} variables",
                    step.gradients.len(),
                    step.variables.len()
                ),
            ));
        }
        for (g, v) in step.gradients.iter().zip(step.variables) {
            if let Some(g) = g
                && *g.shape() != v.shape()
            {
                return Err(dist_err(
                    what,
                    format!(
                        "gradient of shape {} for variable `{}` of shape {}",
                        g.shape(),
                        v.name(),
                        v.shape()
                    ),
                ));
            }
        }
        if step.masks.len() > step.variables.len() {
            return Err(dist_err(
                what,
                format!(
                    "{} masks for {} variables",
                    step.masks.len(),
                    step.variables.len()
                ),
            ));
        }
        for (m, v) in step.masks.iter().zip(step.variables) {
            if let Some(m) = m
                && *m.shape() != v.shape()
            {
                return Err(dist_err(
                    what,
                    format!(
                        "mask of shape {} for variable `{}` of shape {}",
                        m.shape(),
                        v.name(),
                        v.shape()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The plan of a step whose gradients are all present (cached while
    /// the layout stays the same), with a fusion buffer large enough for
    /// it and so for any plan of the same step with fewer gradients.
    fn prepare(&mut self, step: &StepExchange<'_, T>, layout: u64) -> Result<()> {
        if !matches!(&self.plan, Some((cached, _)) if *cached == layout) {
            let all = vec![true; step.variables.len()];
            self.plan = Some((layout, Plan::new(step, &all, self.bucket_len())));
        }
        let n = self.plan.as_ref().map_or(0, |(_, p)| p.packed_len);
        if self.fusion.len() < n {
            self.fusion
                .try_reserve_exact(n - self.fusion.len())
                .map_err(|e| {
                    dist_err(
                        "data-parallel train step",
                        format!("fusion buffer of {n} elements: {e}"),
                    )
                })?;
            self.fusion.resize(n, T::zero());
        }
        Ok(())
    }
}

impl<T: Element + Equivalence> Collective<T> for DataParallel<'_, T> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn broadcast_state(
        &mut self,
        model: &dyn Layer<T>,
        variables: &[Variable<T>],
        optimizer: &mut dyn Optimizer<T>,
    ) -> Result<()> {
        let what = "broadcast_state";
        let weights = model.weights();
        let mut fp = Fingerprint::new();
        fp.add_usize(std::mem::size_of::<T>());
        for group in [&weights[..], variables] {
            fp.add_usize(group.len());
            for w in group {
                let shape = w.shape();
                fp.add_usize(shape.dims().len());
                shape.dims().iter().for_each(|d| fp.add_usize(*d));
            }
        }
        optimizer.name().bytes().for_each(|b| fp.add(u64::from(b)));
        let root = self.rank == 0;
        let exported = if root {
            optimizer.state(variables).map(Some)
        } else {
            Ok(None)
        };
        let failed = exported.is_err();
        let handshake = self.handshake(what, failed, fp.value(), None, false);
        let exported = exported?;
        handshake?;

        let chunk = self.bucket_len();
        // the weights, trainable and not, in one buffer
        let total: usize = weights.iter().map(Variable::len).sum();
        let mut values: Vec<T> = Vec::new();
        if root {
            values.reserve_exact(total);
            for w in &weights {
                values.extend_from_slice(w.value_untracked().as_slice());
            }
        } else {
            values.resize(total, T::zero());
        }
        self.broadcast_chunks(&mut values, chunk);

        // the optimizer state: a JSON header, then the slot values
        let mut header_bytes = match &exported {
            Some(state) => {
                let header = StateHeader {
                    iterations: state.iterations,
                    learning_rate: state.learning_rate,
                    slots: state
                        .slots
                        .iter()
                        .map(|s| {
                            s.iter()
                                .map(|(n, t)| (n.clone(), t.shape().dims().to_vec()))
                                .collect()
                        })
                        .collect(),
                };
                serde_json::to_vec(&header).map_err(|e| dist_err(what, e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut len = [header_bytes.len() as u64];
        self.broadcast_chunks(&mut len, 1);
        header_bytes.resize(len[0] as usize, 0);
        self.broadcast_chunks(&mut header_bytes, chunk);
        let header: std::result::Result<StateHeader, _> = serde_json::from_slice(&header_bytes);
        let slot_total: usize = header.as_ref().map_or(0, |h| {
            h.slots
                .iter()
                .flatten()
                .map(|(_, dims)| dims.iter().product::<usize>())
                .sum()
        });
        let mut slot_values: Vec<T> = Vec::new();
        match &exported {
            Some(state) => {
                for (_, t) in state.slots.iter().flatten() {
                    slot_values.extend_from_slice(t.as_slice());
                }
            }
            None => slot_values.resize(slot_total, T::zero()),
        }
        self.broadcast_chunks(&mut slot_values, chunk);

        // the others take it all, optimizer first (it checks everything)
        let applied = if root {
            Ok(())
        } else {
            (|| -> Result<()> {
                let header = header.map_err(|e| dist_err(what, e.to_string()))?;
                let mut offset = 0usize;
                let mut slots = Vec::with_capacity(header.slots.len());
                for var_slots in header.slots {
                    let mut out = Vec::with_capacity(var_slots.len());
                    for (name, dims) in var_slots {
                        let n: usize = dims.iter().product();
                        let data = slot_values[offset..offset + n].to_vec();
                        offset += n;
                        out.push((name, Tensor::from_vec(data, dims)?));
                    }
                    slots.push(out);
                }
                optimizer.set_state(
                    variables,
                    &OptimizerState {
                        optimizer: optimizer.name().to_string(),
                        iterations: header.iterations,
                        learning_rate: header.learning_rate,
                        slots,
                    },
                )?;
                let mut tensors = Vec::with_capacity(weights.len());
                let mut offset = 0usize;
                for w in &weights {
                    let n = w.len();
                    tensors.push(Tensor::from_vec(
                        values[offset..offset + n].to_vec(),
                        w.shape(),
                    )?);
                    offset += n;
                }
                model.set_weights(&tensors)
            })()
        };
        let agreed = self.handshake(what, applied.is_err(), 0, None, false);
        applied?;
        agreed.map(drop)
    }

    fn exchange_step(&mut self, step: StepExchange<'_, T>) -> Result<()> {
        let what = "data-parallel train step";
        let checked = if step.failed {
            Ok(())
        } else {
            Self::check_step(&step)
        };
        let layout = match &checked {
            Ok(()) if !step.failed => layout_fingerprint(&step, self.bucket_len()),
            _ => 0,
        };
        // everything that can fail locally fails before the handshake, so
        // that the others learn of it instead of waiting in an allreduce
        let prepared = match &checked {
            Ok(()) if !step.failed => self.prepare(&step, layout),
            _ => Ok(()),
        };
        let failed = step.failed || checked.is_err() || prepared.is_err();
        let missing = !failed && step.gradients.iter().any(Option::is_none);
        self.steps += 1;
        let verify = self.verify_every > 0 && self.steps.is_multiple_of(self.verify_every);
        let checksum = (verify && !failed).then(|| Self::checksum(step.variables));
        let handshake = self.handshake(
            what,
            failed,
            layout,
            verify.then(|| checksum.unwrap_or(0)),
            missing,
        );
        checked?;
        prepared?;
        let any_missing = handshake?;
        let Some((_, full_plan)) = &self.plan else {
            // unreachable after a successful handshake: `prepare` ran
            return Err(dist_err(what, "no exchange plan"));
        };
        // which gradients some process has (all of them, usually: then the
        // handshake said so and nothing more is exchanged)
        let mut present = Vec::new();
        let missing_plan = if any_missing {
            let local: Vec<u8> = step
                .gradients
                .iter()
                .map(|g| u8::from(g.is_some()))
                .collect();
            let mut global = vec![0u8; local.len()];
            self.comm
                .all_reduce_into(&local[..], &mut global[..], SystemOperation::max());
            present.extend(global.iter().map(|&p| p != 0));
            Some(Plan::new(&step, &present, self.bucket_len()))
        } else {
            None
        };
        let plan = missing_plan.as_ref().unwrap_or(full_plan);
        let StepExchange {
            gradients,
            variables,
            masks,
            state,
            ..
        } = step;
        // zeros for a gradient that another process has and this one not
        let mut fills: Vec<Option<Vec<T>>> = variables
            .iter()
            .zip(gradients.iter())
            .enumerate()
            .map(|(i, (v, g))| {
                (g.is_none() && present.get(i).copied().unwrap_or(false))
                    .then(|| vec![T::zero(); v.len()])
            })
            .collect();
        {
            // the results are written into the tensors' own storage (copied
            // first only where another handle shares it)
            let mut grads: Vec<&mut [T]> = gradients
                .iter_mut()
                .zip(fills.iter_mut())
                .map(|(g, fill)| match (g, fill) {
                    (Some(g), _) => g.make_mut(),
                    (None, Some(fill)) => &mut fill[..],
                    (None, None) => &mut [],
                })
                .collect();
            let mut states: Vec<&mut [T]> = state.iter_mut().map(Tensor::make_mut).collect();
            // frozen elements are zero (they are not sent)
            for (g, mask) in grads.iter_mut().zip(masks) {
                if let Some(mask) = mask
                    && !g.is_empty()
                {
                    let mut end = 0;
                    for r in mask.runs() {
                        g[end..r.start].fill(T::zero());
                        end = r.end;
                    }
                    g[end..].fill(T::zero());
                }
            }
            let inv = T::one() / T::from_usize(self.size).unwrap_or_else(T::one);
            let bucket = self.bucket_len();
            for call in &plan.calls {
                match call {
                    Call::Direct(piece) => {
                        let buf = match piece.source {
                            Source::Gradient(i) => &mut grads[i][piece.range.clone()],
                            Source::State(i) => &mut states[i][piece.range.clone()],
                        };
                        // bucket-sized calls, each scaled while in cache
                        for part in buf.chunks_mut(bucket) {
                            all_reduce_sum_in_place(&self.comm, part);
                            part.iter_mut().for_each(|x| *x *= inv);
                        }
                    }
                    Call::Packed(pieces) => {
                        let fused = &mut self.fusion[..packed_len(pieces)];
                        let mut at = 0;
                        for p in pieces {
                            let src = match p.source {
                                Source::Gradient(i) => &grads[i][p.range.clone()],
                                Source::State(i) => &states[i][p.range.clone()],
                            };
                            fused[at..at + src.len()].copy_from_slice(src);
                            at += src.len();
                        }
                        all_reduce_sum_in_place(&self.comm, fused);
                        let mut at = 0;
                        for p in pieces {
                            let dst = match p.source {
                                Source::Gradient(i) => &mut grads[i][p.range.clone()],
                                Source::State(i) => &mut states[i][p.range.clone()],
                            };
                            let n = dst.len();
                            dst.iter_mut()
                                .zip(&fused[at..at + n])
                                .for_each(|(d, s)| *d = *s * inv);
                            at += n;
                        }
                    }
                }
            }
        }
        for ((g, v), fill) in gradients.iter_mut().zip(variables).zip(fills.iter_mut()) {
            if let Some(data) = fill.take() {
                *g = Some(Tensor::from_vec(data, v.shape())?);
            }
        }
        Ok(())
    }

    fn reduce_f64(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        let local = values.to_vec();
        let op = match op {
            ReduceOp::Sum => SystemOperation::sum(),
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Max => SystemOperation::max(),
        };
        self.comm.all_reduce_into(&local[..], values, op);
        Ok(())
    }
}
