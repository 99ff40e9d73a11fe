//! This crate's heavy generic code behind one table per float type, so that
//! its `f32` and `f64` instances are compiled here once and not again in
//! every binary that uses rime (rime_tensor::instances; docs/design.md,
//! "Compile time for users"). The public generic functions call these.

use std::sync::Arc;

use rime_tape::{DeferredGradient, ResolvedMask, Variable};
use rime_tensor::instances::Native;
use rime_tensor::{Element, Tensor};

use crate::Result;
use crate::config::LayerConfig;
use crate::layer::LayerRef;
use crate::optimizers::{AnyRule, Common};

/// One method per entry point; each forwards to the generic body.
pub(crate) trait Table<T: Element>: Sync {
    /// The layer registry (`config.rs`), which names every built-in layer.
    fn layer_from_config(&self, cfg: &LayerConfig) -> Result<LayerRef<T>>;
    /// An optimizer step (`optimizers/mod.rs`).
    fn apply_gradients(
        &self,
        common: &mut Common,
        rule: AnyRule<'_>,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()>;
    /// An optimizer step with deferred gradients (`optimizers/mod.rs`).
    fn apply_deferred(
        &self,
        common: &mut Common,
        rule: AnyRule<'_>,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()>;
}

impl<T: Element> Table<T> for Native<T> {
    fn layer_from_config(&self, cfg: &LayerConfig) -> Result<LayerRef<T>> {
        crate::config::layer_from_config_generic(cfg)
    }
    fn apply_gradients(
        &self,
        common: &mut Common,
        rule: AnyRule<'_>,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        common.apply_any(rule, grads, vars, masks)
    }
    fn apply_deferred(
        &self,
        common: &mut Common,
        rule: AnyRule<'_>,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        common.apply_deferred_any(rule, grads, vars, masks)
    }
}

rime_tensor::float_table!(pub(crate) fn table() -> dyn Table);
