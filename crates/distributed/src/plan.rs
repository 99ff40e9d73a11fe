//! Tensor fusion (Horovod's): where each piece of a step's exchange lies in
//! a few large buffers, so that a step makes a few big allreduce calls
//! rather than one per tensor.
//!
//! A step sends, in this order: the trainable elements of each gradient
//! (only the trainable runs of a masked variable: frozen elements are zero
//! on every process and stay so), one presence flag per gradient (1 where
//! this process has it, so a gradient missing everywhere stays `None`),
//! and each staged state tensor. That sequence is cut into buckets of at
//! most `bucket_len` elements; a tensor may span buckets.

use std::ops::Range;

use rime_layers::collective::StepExchange;
use rime_tensor::Element;

/// What a piece of a bucket holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Elements of gradient `i`.
    Gradient(usize),
    /// The presence flags of gradients `range.start..range.end`.
    Flags,
    /// Elements of staged state tensor `i`.
    State(usize),
}

/// A contiguous run of a source's elements placed in a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub source: Source,
    /// The elements of the source (flat, row-major; for `Flags`, gradient
    /// indices).
    pub range: Range<usize>,
}

/// The buckets of one step's exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Each bucket's pieces, in buffer order.
    pub buckets: Vec<Vec<Piece>>,
    /// Elements in all buckets.
    pub total: usize,
    /// A hash of the layout: equal on every process iff their steps match.
    pub fingerprint: u64,
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

impl Plan {
    /// Lays out `step`'s gradients, flags and state in buckets of at most
    /// `bucket_len` (≥ 1) elements.
    pub fn new<T: Element>(step: &StepExchange<'_, T>, bucket_len: usize) -> Self {
        let mut fp = Fingerprint::new();
        fp.add_usize(std::mem::size_of::<T>());
        let mut runs: Vec<(Source, Range<usize>)> = Vec::new();
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
                        runs.push((Source::Gradient(i), r.clone()));
                    }
                }
                None => {
                    fp.add(u64::MAX);
                    runs.push((Source::Gradient(i), 0..v.len()));
                }
            }
        }
        runs.push((Source::Flags, 0..step.variables.len()));
        fp.add_usize(step.state.len());
        for (i, s) in step.state.iter().enumerate() {
            let dims = s.shape().dims();
            fp.add_usize(dims.len());
            dims.iter().for_each(|d| fp.add_usize(*d));
            runs.push((Source::State(i), 0..s.len()));
        }
        let bucket_len = bucket_len.max(1);
        let mut buckets: Vec<Vec<Piece>> = Vec::new();
        let (mut current, mut filled, mut total) = (Vec::new(), 0usize, 0usize);
        for (source, range) in runs {
            let mut start = range.start;
            while start < range.end {
                let take = (range.end - start).min(bucket_len - filled);
                current.push(Piece {
                    source,
                    range: start..start + take,
                });
                start += take;
                filled += take;
                total += take;
                if filled == bucket_len {
                    buckets.push(std::mem::take(&mut current));
                    filled = 0;
                }
            }
        }
        if !current.is_empty() {
            buckets.push(current);
        }
        fp.add_usize(bucket_len);
        Plan {
            buckets,
            total,
            fingerprint: fp.value(),
        }
    }
}

/// A bucket's length in elements.
pub(crate) fn bucket_len(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.range.len()).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rime_tape::{TrainableMask, Variable};
    use rime_tensor::Tensor;

    use super::*;

    fn exchange_plan(
        vars: &[Variable<f32>],
        masks: &[Option<Arc<rime_tape::ResolvedMask>>],
        state: &mut [Tensor<f32>],
        bucket: usize,
    ) -> Plan {
        let mut grads = vec![None; vars.len()];
        let step = StepExchange {
            failed: false,
            gradients: &mut grads,
            variables: vars,
            masks,
            state,
        };
        Plan::new(&step, bucket)
    }

    #[test]
    fn buckets_cut_the_sequence_and_masks_send_only_trainable_runs() {
        let a = Variable::new("a", Tensor::<f32>::zeros([3, 4]).unwrap());
        let b = Variable::new("b", Tensor::<f32>::zeros([5]).unwrap());
        let mask = TrainableMask::freeze_rows(1..2)
            .resolve("a", &a.shape())
            .unwrap();
        let mut st = Tensor::<f32>::zeros([2]).unwrap();
        let plan = exchange_plan(
            &[a.clone(), b.clone()],
            &[Some(Arc::new(mask)), None],
            std::slice::from_mut(&mut st),
            6,
        );
        // a: rows 0 and 2 (0..4, 8..12), b: 0..5, flags: 2, state: 2 → 17
        assert_eq!(plan.total, 8 + 5 + 2 + 2);
        let lens: Vec<usize> = plan.buckets.iter().map(|b| bucket_len(b)).collect();
        assert_eq!(lens, vec![6, 6, 5]);
        assert_eq!(
            plan.buckets[0],
            vec![
                Piece {
                    source: Source::Gradient(0),
                    range: 0..4
                },
                Piece {
                    source: Source::Gradient(0),
                    range: 8..10
                },
            ]
        );
        assert_eq!(
            plan.buckets[2],
            vec![
                Piece {
                    source: Source::Gradient(1),
                    range: 4..5
                },
                Piece {
                    source: Source::Flags,
                    range: 0..2
                },
                Piece {
                    source: Source::State(0),
                    range: 0..2
                },
            ]
        );
        // the same step laid out again matches; another mask or bucket size does not
        let again = exchange_plan(
            &[a.clone(), b.clone()],
            &[
                Some(Arc::new(
                    TrainableMask::freeze_rows(1..2)
                        .resolve("a", &a.shape())
                        .unwrap(),
                )),
                None,
            ],
            std::slice::from_mut(&mut st),
            6,
        );
        assert_eq!(again.fingerprint, plan.fingerprint);
        let unmasked = exchange_plan(
            &[a.clone(), b.clone()],
            &[None, None],
            std::slice::from_mut(&mut st),
            6,
        );
        assert_ne!(unmasked.fingerprint, plan.fingerprint);
        assert_eq!(unmasked.total, 12 + 5 + 2 + 2);
        let bigger = exchange_plan(
            &[a, b],
            &[
                Some(Arc::new(
                    TrainableMask::freeze_rows(1..2)
                        .resolve("a", &Tensor::<f32>::zeros([3, 4]).unwrap().shape().clone())
                        .unwrap(),
                )),
                None,
            ],
            std::slice::from_mut(&mut st),
            64,
        );
        assert_eq!(bigger.buckets.len(), 1);
        assert_ne!(bigger.fingerprint, plan.fingerprint);
    }
}
