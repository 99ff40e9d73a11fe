//! Tensor fusion (Horovod's): how one step's exchange is cut into
//! allreduce calls, so that a step makes a few calls rather than one per
//! tensor, and copies as little as it can.
//!
//! A step sends the trainable elements of each gradient that some process
//! has (only the trainable runs of a masked variable: frozen elements are
//! zero on every process and stay so), then each staged state tensor. A
//! run of at least [`Plan::direct_len`] elements is reduced in place in
//! its tensor's own storage, in calls of at most a bucket (no copy, as
//! Horovod does for tensors above its fusion threshold); smaller runs are
//! packed into fusion buckets of at most `bucket_len` elements.

use std::ops::Range;

use rime_layers::collective::StepExchange;
use rime_tensor::Element;

/// Runs shorter than this many bytes are packed into fusion buckets; longer
/// ones are reduced in place. Packing costs two copies (in and out of the
/// bucket) and saves one call's latency (microseconds in shared memory,
/// tens of microseconds over Ethernet): a wash around 64 KiB.
pub(crate) const DIRECT_BYTES: usize = 64 << 10;

/// What a piece of the exchange holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Elements of gradient `i`.
    Gradient(usize),
    /// Elements of staged state tensor `i`.
    State(usize),
}

/// A contiguous run of a source's elements (flat, row-major).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub source: Source,
    pub range: Range<usize>,
}

/// One unit of the exchange, in the same order on every process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// A long run, reduced in place in its tensor's storage (in calls of at
    /// most a bucket).
    Direct(Piece),
    /// Short runs packed into one fusion bucket, in buffer order.
    Packed(Vec<Piece>),
}

/// The calls of one step's exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub calls: Vec<Call>,
    /// Elements in all calls.
    pub total: usize,
    /// The longest packed bucket (the fusion buffer's length).
    pub packed_len: usize,
}

/// FNV-1a over 64-bit words: a layout or weights fingerprint that is the
/// same in every build and process (std's hasher promises neither).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    pub fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
    pub fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn add_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    pub fn value(self) -> u64 {
        self.0
    }
}

/// A hash of what decides a step's plan (element size, variables' shapes,
/// masks' runs, state shapes, bucket length): equal on every process iff
/// their steps match.
pub(crate) fn layout_fingerprint<T: Element>(step: &StepExchange<'_, T>, bucket_len: usize) -> u64 {
    let mut fp = Fingerprint::new();
    fp.add_usize(std::mem::size_of::<T>());
    fp.add_usize(step.variables.len());
    for (i, v) in step.variables.iter().enumerate() {
        let shape = v.shape();
        fp.add_usize(shape.dims().len());
        shape.dims().iter().for_each(|d| fp.add_usize(*d));
        match step.masks.get(i).and_then(|m| m.as_ref()) {
            Some(mask) => {
                fp.add_usize(mask.runs().len());
                for r in mask.runs() {
                    fp.add_usize(r.start);
                    fp.add_usize(r.end);
                }
            }
            None => fp.add(u64::MAX),
        }
    }
    fp.add_usize(step.state.len());
    for s in step.state.iter() {
        let dims = s.shape().dims();
        fp.add_usize(dims.len());
        dims.iter().for_each(|d| fp.add_usize(*d));
    }
    fp.add_usize(bucket_len);
    fp.value()
}

impl Plan {
    /// The shortest run reduced in place, in elements of `T`.
    pub fn direct_len<T>() -> usize {
        (DIRECT_BYTES / std::mem::size_of::<T>().max(1)).max(1)
    }

    /// Lays out `step`'s exchange: the gradients some process has
    /// (`present[i]`, the same on every process), then the state, in calls
    /// of at most `bucket_len` (≥ 1) elements.
    pub fn new<T: Element>(
        step: &StepExchange<'_, T>,
        present: &[bool],
        bucket_len: usize,
    ) -> Self {
        let bucket_len = bucket_len.max(1);
        let direct_len = Self::direct_len::<T>().min(bucket_len);
        let mut runs: Vec<Piece> = Vec::new();
        for (i, v) in step.variables.iter().enumerate() {
            if !present.get(i).copied().unwrap_or(false) {
                continue;
            }
            let source = Source::Gradient(i);
            match step.masks.get(i).and_then(|m| m.as_ref()) {
                Some(mask) => runs.extend(mask.runs().iter().map(|r| Piece {
                    source,
                    range: r.clone(),
                })),
                None => runs.push(Piece {
                    source,
                    range: 0..v.len(),
                }),
            }
        }
        for (i, s) in step.state.iter().enumerate() {
            runs.push(Piece {
                source: Source::State(i),
                range: 0..s.len(),
            });
        }
        let mut calls = Vec::new();
        let (mut current, mut filled, mut total, mut packed_len) = (Vec::new(), 0usize, 0usize, 0);
        for run in runs {
            total += run.range.len();
            if run.range.len() >= direct_len {
                calls.push(Call::Direct(run));
                continue;
            }
            let mut start = run.range.start;
            while start < run.range.end {
                let take = (run.range.end - start).min(bucket_len - filled);
                current.push(Piece {
                    source: run.source,
                    range: start..start + take,
                });
                start += take;
                filled += take;
                if filled == bucket_len {
                    calls.push(Call::Packed(std::mem::take(&mut current)));
                    packed_len = packed_len.max(filled);
                    filled = 0;
                }
            }
        }
        if !current.is_empty() {
            calls.push(Call::Packed(current));
            packed_len = packed_len.max(filled);
        }
        Plan {
            calls,
            total,
            packed_len,
        }
    }
}

/// A packed bucket's length in elements.
pub(crate) fn packed_len(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.range.len()).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rime_tape::{ResolvedMask, TrainableMask, Variable};
    use rime_tensor::Tensor;

    use super::*;

    fn piece(source: Source, range: Range<usize>) -> Piece {
        Piece { source, range }
    }

    fn with_step<R>(
        vars: &[Variable<f32>],
        masks: &[Option<Arc<ResolvedMask>>],
        state: &mut [Tensor<f32>],
        f: impl FnOnce(&StepExchange<'_, f32>) -> R,
    ) -> R {
        let mut grads = vec![None; vars.len()];
        let step = StepExchange {
            failed: false,
            gradients: &mut grads,
            variables: vars,
            masks,
            state,
        };
        f(&step)
    }

    #[test]
    fn long_runs_go_direct_short_ones_are_packed_and_masks_send_only_trainable_runs() {
        let a = Variable::new("a", Tensor::<f32>::zeros([3, 4]).unwrap());
        let b = Variable::new("b", Tensor::<f32>::zeros([7]).unwrap());
        let c = Variable::new("c", Tensor::<f32>::zeros([3]).unwrap());
        let freeze_row_1 = || {
            Some(Arc::new(
                TrainableMask::freeze_rows(1..2)
                    .resolve("a", &a.shape())
                    .unwrap(),
            ))
        };
        let vars = [a.clone(), b.clone(), c.clone()];
        let mut st = Tensor::<f32>::zeros([2]).unwrap();
        let masks = [freeze_row_1(), None, None];
        let state = std::slice::from_mut(&mut st);
        // bucket 6: runs of 6 or more go direct
        let plan = with_step(&vars, &masks, state, |s| Plan::new(s, &[true; 3], 6));
        use Source::{Gradient as G, State as S};
        assert_eq!(
            plan.calls,
            vec![
                Call::Packed(vec![piece(G(0), 0..4), piece(G(0), 8..10)]),
                Call::Direct(piece(G(1), 0..7)),
                Call::Packed(vec![
                    piece(G(0), 10..12),
                    piece(G(2), 0..3),
                    piece(S(0), 0..1)
                ]),
                Call::Packed(vec![piece(S(0), 1..2)]),
            ]
        );
        // a: rows 0 and 2, b, c, state
        assert_eq!(plan.total, 8 + 7 + 3 + 2);
        assert_eq!(plan.packed_len, 6);
        let lens: Vec<usize> = (plan.calls.iter())
            .filter_map(|c| match c {
                Call::Packed(pieces) => Some(packed_len(pieces)),
                Call::Direct(_) => None,
            })
            .collect();
        assert_eq!(lens, vec![6, 6, 1]);
        // a gradient no process has is not sent
        let plan = with_step(&vars, &masks, state, |s| {
            Plan::new(s, &[true, false, false], 64)
        });
        assert_eq!(
            plan.calls,
            vec![Call::Packed(vec![
                piece(G(0), 0..4),
                piece(G(0), 8..12),
                piece(S(0), 0..2)
            ])]
        );
        assert_eq!(plan.packed_len, 10);
        // long runs (64 KiB of f32 and more) go direct under the default buckets
        let big = Variable::new("big", Tensor::<f32>::zeros([16 << 10]).unwrap());
        let plan = with_step(&[big.clone(), c.clone()], &[None, None], &mut [], |s| {
            Plan::new(s, &[true, true], 1 << 20)
        });
        assert_eq!(
            plan.calls,
            vec![
                Call::Direct(piece(G(0), 0..16 << 10)),
                Call::Packed(vec![piece(G(1), 0..3)]),
            ]
        );

        // the layout fingerprint: the same step matches, another mask or bucket does not
        let fp = |masks: &[Option<Arc<ResolvedMask>>], state: &mut [Tensor<f32>], bucket| {
            with_step(&vars, masks, state, |s| layout_fingerprint(s, bucket))
        };
        let reference = fp(
            &[freeze_row_1(), None, None],
            std::slice::from_mut(&mut st),
            6,
        );
        assert_eq!(
            fp(
                &[freeze_row_1(), None, None],
                std::slice::from_mut(&mut st),
                6
            ),
            reference
        );
        assert_ne!(
            fp(&[None, None, None], std::slice::from_mut(&mut st), 6),
            reference
        );
        assert_ne!(
            fp(
                &[freeze_row_1(), None, None],
                std::slice::from_mut(&mut st),
                7
            ),
            reference
        );
        assert_ne!(fp(&[freeze_row_1(), None, None], &mut [], 6), reference);
    }
}
