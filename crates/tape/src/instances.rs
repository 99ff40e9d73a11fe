//! This crate's heavy generic code behind one table per float type, so that
//! its `f32` and `f64` instances are compiled here once and not again in
//! every binary that uses rime (rime_tensor::instances; docs/design.md,
//! "Compile time for users"). The public generic functions call these.

use rime_tensor::instances::Native;
use rime_tensor::{Element, Tensor};

use crate::tape::{GradientTape, SourceRef};
use crate::{DeferredGradient, Result};

/// One method per entry point; each forwards to the generic body.
pub(crate) trait Table<T: Element>: Sync {
    /// The backward engine (`tape/backward.rs`).
    fn compute(
        &self,
        tape: &GradientTape,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
        sources: &[SourceRef<T>],
        defer: bool,
    ) -> Result<Vec<Option<DeferredGradient<T>>>>;
}

impl<T: Element> Table<T> for Native<T> {
    fn compute(
        &self,
        tape: &GradientTape,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
        sources: &[SourceRef<T>],
        defer: bool,
    ) -> Result<Vec<Option<DeferredGradient<T>>>> {
        tape.compute_native(targets, seeds, sources, defer)
    }
}

rime_tensor::float_table!(pub(crate) fn table() -> dyn Table);
