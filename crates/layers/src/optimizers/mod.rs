//! Optimizers with Keras 3's update formulas and defaults: [`Sgd`]
//! (momentum, Nesterov), [`RmsProp`] (momentum, centered), [`Adam`]
//! (amsgrad) and [`AdamW`] (decoupled weight decay).
//!
//! Every optimizer shares Keras' base arguments: a learning rate or a
//! [schedule](schedules), `weight_decay`, and one of `clipnorm`,
//! `clipvalue`, `global_clipnorm`. An update runs in Keras' order: clip the
//! gradients, decay the weights, apply the rule, apply the variable's
//! constraint.
//!
//! **Masks are honoured.** For a variable with a [`TrainableMask`] only its
//! trainable elements are touched: the rule, the weight decay and the
//! constraint's projection run over the mask's trainable runs, and the
//! optimizer state (momentum, moment estimates) of frozen elements is never
//! written. Frozen elements stay bit-for-bit unchanged.
//!
//! A call that returns an error changes nothing: every count, shape and
//! argument is checked, and every constraint projection computed, before
//! the first variable is written.
//!
//! ```
//! use rime_layers::optimizers::{Optimizer, Sgd};
//! use rime_tape::{GradientTape, Variable};
//! use rime_tensor::Tensor;
//! let w = Variable::new("w", Tensor::<f32>::full([2], 1.0)?);
//! let mut opt = Sgd::new().learning_rate(0.1);
//! let tape = GradientTape::new();
//! let loss = w.value().square().sum_all(); // gradient 2w
//! let grads = tape.gradient(&loss, &[&w])?;
//! opt.apply_gradients(&grads, &[w.clone()])?;
//! assert_eq!(w.to_vec(), vec![0.8, 0.8]);
//! assert_eq!(Optimizer::<f32>::iterations(&opt), 1);
//! # Ok::<(), rime_layers::Error>(())
//! ```
//!
//! [`TrainableMask`]: rime_tape::TrainableMask

mod adam;
mod rmsprop;
pub mod schedules;
mod sgd;
mod state;

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use rime_tape::{DeferredGradient, GradientProduct, ResolvedMask, Variable};
use rime_tensor::{Element, Shape, Tensor, TensorId};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};

pub use adam::{Adam, AdamW};
pub use rmsprop::RmsProp;
pub use schedules::{
    CosineDecay, ExponentialDecay, LearningRate, LearningRateSchedule, PiecewiseConstantDecay,
};
pub use sgd::Sgd;
pub use state::OptimizerState;

use crate::{Error, Result};

/// Applies gradients to variables. Implemented by [`Sgd`], [`RmsProp`],
/// [`Adam`] and [`AdamW`]; object safe, so a loop can hold a
/// `Box<dyn Optimizer<f32>>`.
pub trait Optimizer<T: Element = f32>: Send {
    /// Keras' class name (`"SGD"`, `"Adam"`, ...).
    fn name(&self) -> &'static str;

    /// Number of updates applied so far (Keras' `iterations`).
    fn iterations(&self) -> u64;

    /// The learning rate the next update will use (a schedule evaluated at
    /// [`iterations`](Optimizer::iterations)).
    fn current_learning_rate(&self) -> f64;

    /// Applies one update: `grads[i]` to `vars[i]`, each variable's current
    /// mask honoured. `None` gradients are skipped (their variables are not
    /// touched); all of them `None` is an error, as are mismatched counts
    /// or shapes. An error changes nothing.
    fn apply_gradients(&mut self, grads: &[Option<Tensor<T>>], vars: &[Variable<T>]) -> Result<()> {
        let masks: Vec<_> = vars.iter().map(Variable::mask).collect();
        self.apply_gradients_masked(grads, vars, &masks)
    }

    /// [`apply_gradients`](Optimizer::apply_gradients) with explicit masks
    /// (`masks[i]` for `vars[i]`, `None`: all trainable) instead of the
    /// variables' current ones; a training step passes the masks it
    /// snapshotted when it was built.
    fn apply_gradients_masked(
        &mut self,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()>;

    /// [`apply_gradients`](Optimizer::apply_gradients) for gradients from
    /// [`GradientTape::gradient_deferred`](rime_tape::GradientTape::gradient_deferred),
    /// when the optimizer is their only consumer: a deferred weight
    /// gradient (a Dense kernel's `xᵀδ`) is computed block by block and
    /// each block applied while it is in cache, with no buffer of the
    /// weight's size (for a batch of one, each element where the update
    /// reads it, with no buffer at all); the weights end up the same, bit
    /// for bit, as with `apply_gradients` on the computed gradients. Same
    /// errors, and an error changes nothing.
    ///
    /// The default (for optimizers outside rime) computes the gradients
    /// and calls [`apply_gradients_masked`](Optimizer::apply_gradients_masked).
    ///
    /// ```
    /// use rime_layers::optimizers::{Adam, Optimizer};
    /// use rime_tape::{GradientTape, Variable};
    /// use rime_tensor::Tensor;
    /// let w = Variable::new("w", Tensor::<f32>::ones([3, 2])?);
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// let mut opt = Adam::new().learning_rate(0.1);
    /// let tape = GradientTape::new();
    /// let loss = x.matmul(&w.value())?.square().sum_all();
    /// let grads = tape.gradient_deferred(&loss, &[&w])?;
    /// opt.apply_deferred(grads, &[w.clone()])?;
    /// // Adam's first step moves every element by the learning rate
    /// assert!(w.to_vec().iter().all(|&v| (v - 0.9).abs() < 1e-6));
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    fn apply_deferred(
        &mut self,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
    ) -> Result<()> {
        let masks: Vec<_> = vars.iter().map(Variable::mask).collect();
        self.apply_deferred_masked(grads, vars, &masks)
    }

    /// [`apply_deferred`](Optimizer::apply_deferred) with explicit masks,
    /// as [`apply_gradients_masked`](Optimizer::apply_gradients_masked).
    fn apply_deferred_masked(
        &mut self,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        let grads = grads
            .into_iter()
            .map(|g| g.map(DeferredGradient::into_tensor).transpose())
            .collect::<rime_tape::Result<Vec<_>>>()?;
        self.apply_gradients_masked(&grads, vars, masks)
    }

    /// The optimizer's state for `var` (Keras' slot variables: `momentum`,
    /// `velocity`, ...), copied, in a fixed order. Empty before the first
    /// update of `var`.
    fn slots(&self, var: &Variable<T>) -> Vec<(&'static str, Tensor<T>)>;

    /// Keras-style configuration (`learning_rate`, `momentum`, ...).
    fn get_config(&self) -> Value;

    /// How many variables the optimizer holds state (slots) for. State of a
    /// variable that has been dropped is released at the next update, so a
    /// loop creating fresh variables does not grow this without bound.
    fn tracked_variables(&self) -> usize;

    /// Replaces the learning rate (or schedule) by a constant, as Keras'
    /// `optimizer.learning_rate = lr` (what `LearningRateScheduler` and
    /// `ReduceLROnPlateau` do). A negative or non-finite rate is an error.
    /// The default (for optimizers outside rime) is an error.
    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let _ = lr;
        Err(invalid(self.name(), "cannot set its learning rate".into()))
    }

    /// The state to checkpoint: iterations, a constant learning rate, and
    /// the slots of each of `vars` (in that order). The default (for
    /// optimizers outside rime) is an error.
    fn state(&self, vars: &[Variable<T>]) -> Result<OptimizerState<T>> {
        let _ = vars;
        Err(invalid(self.name(), "cannot export its state".into()))
    }

    /// Restores a [`state`](Optimizer::state) for `vars` (the same
    /// variables, or a fresh model's in the same order). Every name and
    /// shape is checked first: an error changes nothing. The default (for
    /// optimizers outside rime) is an error.
    fn set_state(&mut self, vars: &[Variable<T>], state: &OptimizerState<T>) -> Result<()> {
        let _ = (vars, state);
        Err(invalid(self.name(), "cannot restore a state".into()))
    }
}

/// A boxed optimizer is an optimizer (an optimizer chosen at run time can
/// go where one is taken by value, e.g. `TrainStep::new`).
impl<T: Element, O: Optimizer<T> + ?Sized> Optimizer<T> for Box<O> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn iterations(&self) -> u64 {
        (**self).iterations()
    }
    fn current_learning_rate(&self) -> f64 {
        (**self).current_learning_rate()
    }
    fn apply_gradients_masked(
        &mut self,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        (**self).apply_gradients_masked(grads, vars, masks)
    }
    fn apply_deferred_masked(
        &mut self,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        (**self).apply_deferred_masked(grads, vars, masks)
    }
    fn slots(&self, var: &Variable<T>) -> Vec<(&'static str, Tensor<T>)> {
        (**self).slots(var)
    }
    fn get_config(&self) -> Value {
        (**self).get_config()
    }
    fn tracked_variables(&self) -> usize {
        (**self).tracked_variables()
    }
    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        (**self).set_learning_rate(lr)
    }
    fn state(&self, vars: &[Variable<T>]) -> Result<OptimizerState<T>> {
        (**self).state(vars)
    }
    fn set_state(&mut self, vars: &[Variable<T>], state: &OptimizerState<T>) -> Result<()> {
        (**self).set_state(vars, state)
    }
}

/// An optimizer's update formula, applied to one run of consecutive
/// trainable elements. The shared machinery (validation, masks, clipping,
/// weight decay, constraints, state) lives in [`Common::apply`].
pub(crate) trait Rule: Send {
    /// Keras' class name.
    const NAME: &'static str;

    /// This rule among all of them (for the one table entry that steps
    /// every optimizer, `crate::instances`).
    fn any(&self) -> AnyRule<'_>;

    /// The names of the state slots this configuration keeps per variable.
    fn slot_names(&self) -> &'static [&'static str];

    /// Checks the hyperparameters; errors name the optimizer `name` (a
    /// rule shared by two optimizers, Adam's by AdamW, reports the caller).
    fn validate(&self, name: &str) -> Result<()>;

    /// The constants of one step (hyperparameters as `T`, Adam's bias
    /// correction), computed once per step rather than once per run.
    type Step<T: Element>: Copy;

    /// This step's constants at learning rate `lr`; `iteration` is the
    /// number of updates before this one.
    fn step<T: Element>(&self, lr: T, iteration: u64) -> Self::Step<T>;

    /// Updates `w[run]` from `g` (the gradient of those elements,
    /// `run.len()` long) and the slots' `run` elements.
    /// Implementations are `#[inline(always)]` loops over exactly-sized
    /// slices and [`GradientSource::first`], so they vectorize inside
    /// [`rime_tensor::vectorized_loop`] whatever the source.
    fn update<T: Element, G: GradientSource<T>>(
        step: Self::Step<T>,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    );

    /// The rule's own hyperparameters, for `get_config`.
    fn config(&self) -> Value;
}

/// One of the update rules: an optimizer step goes through one table entry
/// (`crate::instances`, compiled once here) whatever the optimizer.
#[derive(Clone, Copy)]
pub(crate) enum AnyRule<'a> {
    Sgd(&'a sgd::SgdRule),
    RmsProp(&'a rmsprop::RmsPropRule),
    Adam(&'a adam::AdamRule),
    AdamW(&'a adam::AdamWRule),
}

/// Keras' base-optimizer arguments and the state every optimizer keeps.
#[derive(Debug)]
pub(crate) struct Common {
    pub learning_rate: LearningRate,
    pub weight_decay: Option<f64>,
    pub clipnorm: Option<f64>,
    pub clipvalue: Option<f64>,
    pub global_clipnorm: Option<f64>,
    pub exclude_from_weight_decay: Vec<String>,
    iterations: u64,
    state: State,
}

/// One variable's slots of element type `T`.
pub(crate) struct Slots<T>(Vec<Vec<T>>);

impl Common {
    pub fn new(learning_rate: f64) -> Self {
        Common {
            learning_rate: LearningRate::Constant(learning_rate),
            weight_decay: None,
            clipnorm: None,
            clipvalue: None,
            global_clipnorm: None,
            exclude_from_weight_decay: Vec::new(),
            iterations: 0,
            state: FxHashMap::default(),
        }
    }

    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    pub fn tracked_variables(&self) -> usize {
        self.state.len()
    }

    pub fn current_learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations)
    }

    fn validate(&self, name: &str) -> Result<()> {
        let bad = |msg: String| invalid(name, msg);
        let positive = |what: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(bad(format!("{what} must be finite and > 0, got {v}")))
            }
            _ => Ok(()),
        };
        positive("clipnorm", self.clipnorm)?;
        positive("clipvalue", self.clipvalue)?;
        positive("global_clipnorm", self.global_clipnorm)?;
        let set = [self.clipnorm, self.clipvalue, self.global_clipnorm]
            .iter()
            .filter(|c| c.is_some())
            .count();
        if set > 1 {
            return Err(bad(
                "only one of clipnorm, clipvalue and global_clipnorm can be set".into(),
            ));
        }
        if let Some(wd) = self.weight_decay
            && !(wd.is_finite() && wd >= 0.0)
        {
            return Err(bad(format!(
                "weight_decay must be finite and >= 0, got {wd}"
            )));
        }
        let lr = self.current_learning_rate();
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(bad(format!(
                "learning rate must be finite and >= 0, got {lr} at iteration {}",
                self.iterations
            )));
        }
        Ok(())
    }

    pub fn config(&self, name: &str, rule: Value) -> Value {
        let mut c = json!({
            "name": name,
            "learning_rate": self.learning_rate.config(),
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
            "iterations": self.iterations,
        });
        if let (Value::Object(c), Value::Object(r)) = (&mut c, rule) {
            c.extend(r);
        }
        c
    }

    pub fn slots<T: Element>(
        &self,
        names: &'static [&'static str],
        var: &Variable<T>,
    ) -> Vec<(&'static str, Tensor<T>)> {
        let Some(Slots(slots)) = self
            .state
            .get(&var.id())
            .and_then(|s| s.slots.downcast_ref::<Slots<T>>())
        else {
            return Vec::new();
        };
        names
            .iter()
            .zip(slots)
            .map(|(&n, s)| {
                let t = Tensor::from_vec(s.clone(), var.shape())
                    .expect("slots have the variable's shape");
                (n, t)
            })
            .collect()
    }

    /// One optimizer step with any rule (the table's entry point).
    pub(crate) fn apply_any<T: Element>(
        &mut self,
        rule: AnyRule<'_>,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        match rule {
            AnyRule::Sgd(r) => self.apply(r, grads, vars, masks),
            AnyRule::RmsProp(r) => self.apply(r, grads, vars, masks),
            AnyRule::Adam(r) => self.apply(r, grads, vars, masks),
            AnyRule::AdamW(r) => self.apply(r, grads, vars, masks),
        }
    }

    /// One deferred-gradient step with any rule (the table's entry point).
    pub(crate) fn apply_deferred_any<T: Element>(
        &mut self,
        rule: AnyRule<'_>,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        match rule {
            AnyRule::Sgd(r) => self.apply_deferred(r, grads, vars, masks),
            AnyRule::RmsProp(r) => self.apply_deferred(r, grads, vars, masks),
            AnyRule::Adam(r) => self.apply_deferred(r, grads, vars, masks),
            AnyRule::AdamW(r) => self.apply_deferred(r, grads, vars, masks),
        }
    }

    /// One optimizer step (see the module docs for the order and the
    /// guarantees).
    pub fn apply<T: Element, R: Rule>(
        &mut self,
        rule: &R,
        grads: &[Option<Tensor<T>>],
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        self.apply_fused(rule, grads, Vec::new(), vars, masks)
    }

    /// One optimizer step with [deferred](rime_tape::DeferredGradient)
    /// gradients: each deferred product of an unconstrained variable is
    /// computed block by block and the block applied while in cache (no
    /// buffer of the weight's size), or, for an outer product (a batch of
    /// one), element by element where the rule reads it (no buffer at
    /// all: one pass over the weight); every other gradient is computed
    /// and applied as by [`apply`](Common::apply). The result is the same,
    /// bit for bit: a block or element holds the same value as the whole
    /// product, and the rule runs on the same elements in the same order.
    ///
    /// With `clipnorm` or `global_clipnorm` the norms are needed before
    /// any update, so such a step computes every gradient first (the
    /// unfused path). A constrained variable's projection takes the whole
    /// updated tensor and may fail, so its gradient is computed first too.
    pub fn apply_deferred<T: Element, R: Rule>(
        &mut self,
        rule: &R,
        grads: Vec<Option<DeferredGradient<T>>>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        let norm_clip = self.clipnorm.is_some() || self.global_clipnorm.is_some();
        let mut dense = Vec::with_capacity(grads.len());
        let mut fused = Vec::new();
        for (i, g) in grads.into_iter().enumerate() {
            match g {
                Some(DeferredGradient::Product(p))
                    if !norm_clip && vars.get(i).is_some_and(|v| v.constraint().is_none()) =>
                {
                    dense.push(None);
                    fused.push((i, p));
                }
                g => dense.push(g.map(DeferredGradient::into_tensor).transpose()?),
            }
        }
        self.apply_fused(rule, &dense, fused, vars, masks)
    }

    /// The step itself: `grads` computed, `fused[..] = (i, product)` the
    /// deferred gradient of `vars[i]` (whose `grads[i]` is `None`).
    ///
    /// All or nothing: everything that can fail (arguments, shapes, masks,
    /// constraint projections, the block buffer's allocation) is checked
    /// before the first variable is written. The fused products are
    /// computed in that final pass, after the backward pass has finished,
    /// rather than during it: a backward pass that fails part way (or a
    /// step whose exchange fails) then cannot leave some weights updated.
    fn apply_fused<T: Element, R: Rule>(
        &mut self,
        rule: &R,
        grads: &[Option<Tensor<T>>],
        fused: Vec<(usize, GradientProduct<T>)>,
        vars: &[Variable<T>],
        masks: &[Option<Arc<ResolvedMask>>],
    ) -> Result<()> {
        let name = R::NAME;
        rule.validate(name)?;
        self.validate(name)?;
        let items = check_inputs(name, grads, &fused, vars, masks)?;
        let all_items = items.iter().copied().chain(fused.iter().map(|(i, _)| *i));
        if let Some(var) = all_items.map(|i| &vars[i]).find(|v| v.is_updating()) {
            return Err(rime_tape::Error::ReentrantUpdate {
                variable: var.name().to_string(),
                call: "apply_gradients",
            }
            .into());
        }
        let lr = self.current_learning_rate();
        let n_slots = rule.slot_names().len();

        // Effective gradients: zero at frozen elements, then clipped.
        let mut effective: Vec<Grad<'_, T>> = items
            .iter()
            .map(|&i| Grad::new(grads[i].as_ref().expect("checked"), masks[i].as_deref()))
            .collect();
        self.clip(&mut effective);

        let iteration = self.iterations;
        let clipvalue = self.clipvalue.map(|c| (T::of(-c), T::of(c)));
        let (weight_decay, exclude) = (self.weight_decay, &self.exclude_from_weight_decay);
        // (every loop gets these by value: a constant captured by
        // reference compiled to a scalar loop with a branch)
        let (lr, consts) = (T::of(lr), rule.step(T::of(lr), iteration));
        let update = |var: &Variable<T>| {
            let decay = weight_decay
                .filter(|&wd| wd > 0.0)
                .filter(|_| !exclude.iter().any(|pat| var.name().contains(pat.as_str())))
                .map(T::of);
            RunUpdate::<T, R> {
                rule: std::marker::PhantomData,
                step: consts,
                lr,
                decay,
            }
        };
        // The update of the elements `runs` (inside `g_at..g_at + g.len()`)
        // from `g`, the gradient of those elements: the whole-gradient and
        // the block-by-block updates.
        let step = |var: &Variable<T>,
                    w: &mut [T],
                    g: &[T],
                    g_at: usize,
                    slots: &mut [Vec<T>],
                    runs: &mut dyn Iterator<Item = Range<usize>>| {
            let update = update(var);
            for run in runs {
                let g = &g[run.start - g_at..run.end - g_at];
                // compiled for AVX2/AVX-512 when the CPU has it (a
                // `VectorLoop`: a closure through `vectorized` was too
                // large to be inlined there and ran 4-wide SSE);
                // elementwise IEEE operations in the same order, so the
                // results are the same bits
                rime_tensor::vectorized_loop(SliceRun {
                    update,
                    w: &mut *w,
                    g,
                    slots: &mut *slots,
                    run,
                });
            }
        };

        // Constrained variables first, on copies: a failing projection
        // must leave everything as it was.
        let mut staged = Vec::new();
        for (k, &i) in items.iter().enumerate() {
            let var = &vars[i];
            let Some(constraint) = var.constraint() else {
                continue;
            };
            let all = 0..var.len();
            let runs = runs_of(masks[i].as_deref(), &all);
            let mut w = var.to_vec();
            let mut slots = slot_copy::<T>(&self.state, var.id(), n_slots, var.len());
            let g = effective[k].as_slice();
            step(var, &mut w, g, 0, &mut slots, &mut runs.iter().cloned());
            let updated = Tensor::from_vec(w, var.shape()).expect("variable's own length");
            let projected = constraint.apply(&updated).map_err(|e| {
                invalid(name, format!("constraint of `{}` failed: {e}", var.name()))
            })?;
            if projected.shape() != updated.shape() {
                return Err(invalid(
                    name,
                    format!(
                        "constraint of `{}` returned shape {}, the variable has {}",
                        var.name(),
                        projected.shape(),
                        updated.shape()
                    ),
                ));
            }
            // frozen elements keep their value: only trainable runs take
            // the projection
            let mut merged = updated.into_vec();
            for run in runs {
                merged[run.clone()].copy_from_slice(&projected.as_slice()[run.clone()]);
            }
            staged.push((i, merged, slots));
        }
        // How each fused product is applied, and the block buffer of those
        // applied by blocks, reserved before any write.
        let plans: Vec<Fusion<'_, T>> = fused
            .iter()
            .map(|(i, product)| {
                // the product's own mask, when the step was given another
                // one (a custom loop): the unfused gradient is zero at its
                // frozen elements
                let zero_at = product
                    .mask()
                    .filter(|pm| masks[*i].as_deref().is_none_or(|m| !std::ptr::eq(*pm, m)))
                    .map(ResolvedMask::frozen_runs)
                    .unwrap_or(&[]);
                match product.outer_factors() {
                    // a batch of one, no elements to zero
                    Some((col, row)) if zero_at.is_empty() => Fusion::Outer { col, row },
                    _ => Fusion::Blocks {
                        rows_per: block_rows(product),
                        zero_at,
                    },
                }
            })
            .collect();
        let block_len = fused
            .iter()
            .zip(&plans)
            .map(|((_, p), plan)| match plan {
                Fusion::Blocks { rows_per, .. } => rows_per * p.cols(),
                Fusion::Outer { .. } => 0,
            })
            .max()
            .unwrap_or(0);
        // (a tensor: its buffer comes from, and returns to, rime_tensor's
        // cache of large buffers, so a step does not page-fault it in)
        let mut block = Tensor::<T>::zeros([block_len])?;
        let block = block.make_mut();

        // Nothing can fail from here on.
        for (k, &i) in items.iter().enumerate() {
            let var = &vars[i];
            if var.constraint().is_some() {
                continue;
            }
            let all = 0..var.len();
            let runs = runs_of(masks[i].as_deref(), &all);
            let slots = slots_mut::<T>(&mut self.state, var, n_slots);
            let g = effective[k].as_slice();
            var.update_exclusive(|w| step(var, w, g, 0, slots, &mut runs.iter().cloned()))?;
        }
        for ((i, product), plan) in fused.iter().zip(plans) {
            let var = &vars[*i];
            let all = 0..var.len();
            let runs = runs_of(masks[*i].as_deref(), &all);
            let slots = slots_mut::<T>(&mut self.state, var, n_slots);
            let (rows_per, zero_at) = match plan {
                Fusion::Outer { col, row } => {
                    // each gradient element computed where the rule reads it
                    let update = update(var);
                    var.update_exclusive(|w| {
                        let outer = OuterRuns {
                            update,
                            w,
                            slots,
                            col,
                            row,
                            runs,
                            clip: NoClip,
                        };
                        // (each clipping a type of its own: no branch per
                        // element)
                        match clipvalue {
                            None => rime_tensor::vectorized_loop(outer),
                            Some((lo, hi)) => {
                                rime_tensor::vectorized_loop(outer.clipped(ClipValue { lo, hi }))
                            }
                        }
                    })?;
                    continue;
                }
                Fusion::Blocks { rows_per, zero_at } => (rows_per, zero_at),
            };
            let cols = product.cols();
            var.update_exclusive(|w| {
                let mut first = 0; // the first run not entirely before the block
                for r0 in (0..product.rows()).step_by(rows_per.max(1)) {
                    let r1 = (r0 + rows_per).min(product.rows());
                    let span = r0 * cols..r1 * cols;
                    while first < runs.len() && runs[first].end <= span.start {
                        first += 1;
                    }
                    let mut inside = runs[first..]
                        .iter()
                        .take_while(|r| r.start < span.end)
                        .map(|r| r.start.max(span.start)..r.end.min(span.end))
                        .filter(|r| !r.is_empty())
                        .peekable();
                    if inside.peek().is_none() {
                        // frozen rows: no gradient work at all
                        continue;
                    }
                    let g = &mut block[..span.len()];
                    product.rows_into(r0..r1, g);
                    for z in zero_at {
                        let (a, b) = (z.start.max(span.start), z.end.min(span.end));
                        if a < b {
                            g[a - span.start..b - span.start].fill(T::zero());
                        }
                    }
                    if let Some((lo, hi)) = clipvalue {
                        clamp(g, lo, hi);
                    }
                    step(var, w, g, span.start, slots, &mut inside);
                }
            })?;
        }
        for (i, merged, slots) in staged {
            let var = &vars[i];
            var.update_exclusive(|w| w.copy_from_slice(&merged))?;
            if n_slots > 0 {
                self.state.insert(var.id(), Entry::new(var, slots));
            }
        }
        // release the state of variables dropped since (their ids never
        // come back)
        self.state.retain(|_, e| (e.alive)());
        self.iterations += 1;
        Ok(())
    }

    /// Scales or clamps the effective gradients (Keras' `_clip_gradients`).
    fn clip<T: Element>(&self, grads: &mut [Grad<'_, T>]) {
        if let Some(c) = self.clipnorm {
            for g in grads {
                let norm = g.norm_sq().sqrt();
                g.scale(T::of(c / norm.max(c)));
            }
        } else if let Some(c) = self.global_clipnorm {
            let norm = grads.iter().map(Grad::norm_sq).sum::<f64>().sqrt();
            let s = T::of(c / norm.max(c));
            grads.iter_mut().for_each(|g| g.scale(s));
        } else if let Some(c) = self.clipvalue {
            let (lo, hi) = (T::of(-c), T::of(c));
            for g in grads {
                clamp(g.owned(), lo, hi);
            }
        }
    }
}

/// Where a rule reads the gradient of the run it updates: a slice (a
/// computed gradient, or a block of a deferred product) or an
/// [`OuterRow`], computed as it is read. Both are `#[inline(always)]`
/// element reads, so a rule's loop vectorizes over either.
pub(crate) trait GradientSource<T>: Copy {
    /// The first `n` elements (panics past the end, as slicing does: the
    /// reads of `0..n` are then check-free).
    fn first(self, n: usize) -> Self;
    /// Element `i`.
    fn at(self, i: usize) -> T;
}

impl<T: Element> GradientSource<T> for &[T] {
    #[inline(always)]
    fn first(self, n: usize) -> Self {
        &self[..n]
    }
    #[inline(always)]
    fn at(self, i: usize) -> T {
        self[i]
    }
}

/// Part of a row of an outer-product gradient (a deferred product with
/// inner dimension 1): element `i` is `scale * row[i]`, with the one
/// rounding and operand order of the product kernel
/// ([`GradientProduct::outer_factors`]), so the rule sees the bits a
/// computed gradient holds; then clipped by `clip`.
#[derive(Clone, Copy)]
struct OuterRow<'a, T, C> {
    scale: T,
    row: &'a [T],
    clip: C,
}

impl<T: Element, C: Clip<T>> GradientSource<T> for OuterRow<'_, T, C> {
    #[inline(always)]
    fn first(self, n: usize) -> Self {
        OuterRow {
            row: &self.row[..n],
            ..self
        }
    }
    #[inline(always)]
    fn at(self, i: usize) -> T {
        self.clip.clip(self.scale * self.row[i])
    }
}

/// What is done to each gradient element before the rule reads it.
trait Clip<T>: Copy {
    /// The clipped element.
    fn clip(self, x: T) -> T;
}

/// No clipping.
#[derive(Clone, Copy)]
struct NoClip;

impl<T> Clip<T> for NoClip {
    #[inline(always)]
    fn clip(self, x: T) -> T {
        x
    }
}

/// `clipvalue`: each element clamped into `[lo, hi]`.
#[derive(Clone, Copy)]
struct ClipValue<T> {
    lo: T,
    hi: T,
}

impl<T: Element> Clip<T> for ClipValue<T> {
    #[inline(always)]
    fn clip(self, x: T) -> T {
        x.max(self.lo).min(self.hi)
    }
}

/// What every run of one variable's update shares: the rule and its step
/// constants, the learning rate, the variable's weight decay.
struct RunUpdate<T: Element, R: Rule> {
    rule: std::marker::PhantomData<R>,
    step: R::Step<T>,
    lr: T,
    decay: Option<T>,
}

impl<T: Element, R: Rule> Clone for RunUpdate<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Element, R: Rule> Copy for RunUpdate<T, R> {}

impl<T: Element, R: Rule> RunUpdate<T, R> {
    /// One run's update from `g`: the weight decay, then the rule (the
    /// one per-run code path of the whole-gradient, block and outer
    /// product updates).
    #[inline(always)]
    fn apply<G: GradientSource<T>>(
        self,
        w: &mut [T],
        g: G,
        slots: &mut [Vec<T>],
        run: Range<usize>,
    ) {
        if let Some(wd) = self.decay {
            let lr = self.lr;
            // Keras: variable - variable * wd * lr, before the rule (in
            // that order, so f32 results match bit for bit)
            w[run.clone()].iter_mut().for_each(|w| *w -= *w * wd * lr);
        }
        R::update(self.step, w, g, slots, run);
    }
}

/// One run's update from a slice of its gradient (a
/// [`VectorLoop`](rime_tensor::VectorLoop), so that both loops are
/// compiled for the CPU's widest vector unit).
struct SliceRun<'a, T: Element, R: Rule> {
    update: RunUpdate<T, R>,
    w: &'a mut [T],
    g: &'a [T],
    slots: &'a mut [Vec<T>],
    run: Range<usize>,
}

impl<T: Element, R: Rule> rime_tensor::VectorLoop for SliceRun<'_, T, R> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        self.update.apply(self.w, self.g, self.slots, self.run);
    }
}

/// A whole variable's update from an outer-product gradient
/// `g[r, c] = col[r] * row[c]`, each element computed where the rule reads
/// it (no gradient buffer), in one vectorized call: each trainable run
/// is split at row ends, and each piece is a run of [`RunUpdate`] over an
/// [`OuterRow`], each element clipped by `clip`.
struct OuterRuns<'a, T: Element, R: Rule, C> {
    update: RunUpdate<T, R>,
    w: &'a mut [T],
    slots: &'a mut [Vec<T>],
    col: &'a [T],
    row: &'a [T],
    runs: &'a [Range<usize>],
    clip: C,
}

impl<'a, T: Element, R: Rule> OuterRuns<'a, T, R, NoClip> {
    /// The same update with each element clipped by `clip`.
    fn clipped<C: Clip<T>>(self, clip: C) -> OuterRuns<'a, T, R, C> {
        let OuterRuns {
            update,
            w,
            slots,
            col,
            row,
            runs,
            clip: NoClip,
        } = self;
        OuterRuns {
            update,
            w,
            slots,
            col,
            row,
            runs,
            clip,
        }
    }
}

impl<T: Element, R: Rule, C: Clip<T>> rime_tensor::VectorLoop for OuterRuns<'_, T, R, C> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let OuterRuns {
            update,
            w,
            slots,
            col,
            row,
            runs,
            clip,
        } = self;
        let cols = row.len();
        for run in runs {
            // row `r` of the gradient, from column `c`, at flat index `at`
            let (mut r, mut c) = (run.start / cols, run.start % cols);
            let mut at = run.start;
            while at < run.end {
                let end = run.end.min(at - c + cols);
                let g = OuterRow {
                    scale: col[r],
                    row: &row[c..],
                    clip,
                };
                update.apply(&mut *w, g, &mut *slots, at..end);
                (r, c, at) = (r + 1, 0, end);
            }
        }
    }
}

/// Clamps every element into `[lo, hi]` (clipvalue, on a computed
/// gradient or block; the outer-product path clamps each element as it is
/// read, the same way).
fn clamp<T: Element>(g: &mut [T], lo: T, hi: T) {
    let clip = ClipValue { lo, hi };
    g.iter_mut().for_each(|x| *x = clip.clip(*x));
}

/// How a deferred product is applied.
enum Fusion<'a, T> {
    /// Element by element from its two factors (inner dimension 1), with
    /// no gradient buffer (clipvalue applied to each element as read).
    Outer { col: &'a [T], row: &'a [T] },
    /// By blocks of `rows_per` rows written to a buffer, its elements
    /// `zero_at` zeroed (the product's own mask, when the step's differs).
    Blocks {
        rows_per: usize,
        zero_at: &'a [Range<usize>],
    },
}

/// Elements of a fused gradient block: 16 K (64 KB of f32), so that a
/// block stays in L2 between the product that writes it and the update
/// that reads it.
const BLOCK_ELEMS: usize = 1 << 14;

/// Rows per block of a deferred product: [`BLOCK_ELEMS`] worth, but at
/// least 4× the inner dimension, since each block's product packs the
/// whole right operand (`inner × cols`) again; a large batch thus gets
/// larger blocks, up to the whole gradient.
fn block_rows<T: Element>(p: &GradientProduct<T>) -> usize {
    let by_size = BLOCK_ELEMS / p.cols().max(1);
    by_size
        .max(p.inner().saturating_mul(4))
        .clamp(1, p.rows().max(1))
}

/// Per variable (by id): whether it is still alive (a weak handle, so the
/// optimizer does not keep it or its state alive) and its `Slots<T>`.
type State = FxHashMap<TensorId, Entry>;

pub(crate) struct Entry {
    alive: Box<dyn Fn() -> bool + Send>,
    slots: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("alive", &(self.alive)())
            .finish()
    }
}

impl Entry {
    pub(crate) fn new<T: Element>(var: &Variable<T>, slots: Vec<Vec<T>>) -> Self {
        let weak = var.downgrade();
        Entry {
            alive: Box::new(move || weak.is_alive()),
            slots: Box::new(Slots(slots)),
        }
    }
}

fn slot_copy<T: Element>(state: &State, id: TensorId, n: usize, len: usize) -> Vec<Vec<T>> {
    match state
        .get(&id)
        .and_then(|s| s.slots.downcast_ref::<Slots<T>>())
    {
        Some(Slots(s)) => s.clone(),
        None => vec![vec![T::zero(); len]; n],
    }
}

fn slots_mut<'a, T: Element>(
    state: &'a mut State,
    var: &Variable<T>,
    n: usize,
) -> &'a mut Vec<Vec<T>> {
    let len = var.len();
    let entry = state
        .entry(var.id())
        .or_insert_with(|| Entry::new(var, vec![vec![T::zero(); len]; n]));
    if !entry.slots.is::<Slots<T>>() {
        // variable ids are unique, so this only happens for a new variable
        *entry = Entry::new(var, vec![vec![T::zero(); len]; n]);
    }
    match entry.slots.downcast_mut::<Slots<T>>() {
        Some(Slots(s)) => s,
        None => unreachable!("replaced by slots of this type just above"),
    }
}

fn runs_of<'a>(mask: Option<&'a ResolvedMask>, all: &'a Range<usize>) -> &'a [Range<usize>] {
    match mask {
        Some(m) => m.runs(),
        None => std::slice::from_ref(all),
    }
}

/// A gradient as the rule sees it: the caller's buffer while nothing needs
/// changing, a copy once masking or clipping does.
struct Grad<'a, T: Element> {
    data: std::borrow::Cow<'a, [T]>,
}

impl<'a, T: Element> Grad<'a, T> {
    fn new(g: &'a Tensor<T>, mask: Option<&ResolvedMask>) -> Self {
        let mut grad = Grad {
            data: std::borrow::Cow::Borrowed(g.as_slice()),
        };
        if let Some(mask) = mask {
            let frozen_nonzero = mask
                .frozen_runs()
                .iter()
                .any(|r| g.as_slice()[r.clone()].iter().any(|x| *x != T::zero()));
            if frozen_nonzero {
                mask.zero_frozen(grad.owned());
            }
        }
        grad
    }

    fn owned(&mut self) -> &mut [T] {
        self.data.to_mut()
    }

    fn as_slice(&self) -> &[T] {
        &self.data
    }

    fn norm_sq(&self) -> f64 {
        self.data
            .iter()
            .map(|x| {
                let x = x.to_f64().unwrap_or(f64::NAN);
                x * x
            })
            .sum()
    }

    fn scale(&mut self, s: T) {
        if s != T::one() {
            self.owned().iter_mut().for_each(|x| *x *= s);
        }
    }
}

/// Validates counts, shapes and masks; returns the indices with a gradient.
fn check_inputs<T: Element>(
    name: &str,
    grads: &[Option<Tensor<T>>],
    fused: &[(usize, GradientProduct<T>)],
    vars: &[Variable<T>],
    masks: &[Option<Arc<ResolvedMask>>],
) -> Result<Vec<usize>> {
    if grads.len() != vars.len() || masks.len() != vars.len() {
        return Err(invalid(
            name,
            format!(
                "apply_gradients got {} gradients and {} masks for {} variables",
                grads.len(),
                masks.len(),
                vars.len()
            ),
        ));
    }
    let mut items = Vec::with_capacity(vars.len());
    let mut seen = rustc_hash::FxHashSet::default();
    let given = grads
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.as_ref().map(|g| (i, g.shape().clone(), true)));
    let deferred = fused
        .iter()
        .map(|(i, p)| (*i, Shape::from(&[p.rows(), p.cols()][..]), false));
    for (i, shape, computed) in given.chain(deferred) {
        let Some(v) = vars.get(i) else {
            return Err(invalid(
                name,
                format!("apply_gradients: gradient {i} for {} variables", vars.len()),
            ));
        };
        if !computed && grads[i].is_some() {
            return Err(invalid(
                name,
                format!("apply_gradients: two gradients for variable `{}`", v.name()),
            ));
        }
        if shape != v.shape() {
            return Err(invalid(
                name,
                format!(
                    "apply_gradients: gradient {i} has shape {shape}, variable `{}` has shape {}",
                    v.name(),
                    v.shape()
                ),
            ));
        }
        if let Some(m) = &masks[i]
            && m.shape() != &v.shape()
        {
            return Err(invalid(
                name,
                format!(
                    "apply_gradients: mask {i} has shape {}, variable `{}` has shape {}",
                    m.shape(),
                    v.name(),
                    v.shape()
                ),
            ));
        }
        if !seen.insert(v.id()) {
            return Err(invalid(
                name,
                format!(
                    "apply_gradients: variable `{}` is listed twice (a tied variable is listed once)",
                    v.name()
                ),
            ));
        }
        if computed {
            items.push(i);
        }
    }
    if items.is_empty() && fused.is_empty() {
        let names: Vec<&str> = vars.iter().map(|v| v.name()).collect();
        return Err(invalid(
            name,
            format!("apply_gradients: no gradients provided for any variable of {names:?}"),
        ));
    }
    Ok(items)
}

pub(crate) fn invalid(name: &str, msg: String) -> Error {
    Error::InvalidArgument {
        what: format!("optimizer {name}"),
        msg,
    }
}

/// `v` in `[0, 1)`: a decay rate (beta, rho) of 1 would never update (or,
/// for Adam's bias correction, divide by zero).
pub(crate) fn check_decay(name: &str, what: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && (0.0..1.0).contains(&v)) {
        return Err(invalid(name, format!("{what} must be in [0, 1), got {v}")));
    }
    Ok(())
}

/// `v` finite and `> 0` (an epsilon of 0 gives 0/0 with a zero gradient).
pub(crate) fn check_positive(name: &str, what: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(
            name,
            format!("{what} must be finite and > 0, got {v}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_range(name: &str, what: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !(v.is_finite() && v >= lo && v <= hi) {
        return Err(invalid(
            name,
            format!("{what} must be in [{lo}, {hi}], got {v}"),
        ));
    }
    Ok(())
}

/// The base-optimizer builder methods every optimizer has, and its
/// [`Optimizer`] implementation over [`Common::apply`].
macro_rules! optimizer_common {
    ($ty:ident, $rule:ty) => {
        impl $ty {
            /// A constant learning rate.
            pub fn learning_rate(mut self, lr: f64) -> Self {
                self.common.learning_rate = $crate::optimizers::LearningRate::Constant(lr);
                self
            }

            /// A learning-rate schedule, evaluated at the iteration count.
            pub fn learning_rate_schedule(
                mut self,
                schedule: impl $crate::optimizers::LearningRateSchedule + 'static,
            ) -> Self {
                self.common.learning_rate =
                    $crate::optimizers::LearningRate::Schedule(std::sync::Arc::new(schedule));
                self
            }

            /// Decoupled weight decay: before each update a variable `w`
            /// becomes `w - w * weight_decay * lr` (Keras 3's base
            /// optimizer; trainable elements only).
            pub fn weight_decay(mut self, weight_decay: f64) -> Self {
                self.common.weight_decay = Some(weight_decay);
                self
            }

            /// Variables whose name contains any of these strings get no
            /// weight decay (Keras' `exclude_from_weight_decay`).
            pub fn exclude_from_weight_decay(
                mut self,
                names: impl IntoIterator<Item = impl Into<String>>,
            ) -> Self {
                self.common.exclude_from_weight_decay = names.into_iter().map(Into::into).collect();
                self
            }

            /// Scales each gradient whose L2 norm exceeds `clipnorm` down to it.
            pub fn clipnorm(mut self, clipnorm: f64) -> Self {
                self.common.clipnorm = Some(clipnorm);
                self
            }

            /// Clamps every gradient element into `[-clipvalue, clipvalue]`.
            pub fn clipvalue(mut self, clipvalue: f64) -> Self {
                self.common.clipvalue = Some(clipvalue);
                self
            }

            /// Scales all gradients together when their joint L2 norm
            /// exceeds `clipnorm`.
            pub fn global_clipnorm(mut self, clipnorm: f64) -> Self {
                self.common.global_clipnorm = Some(clipnorm);
                self
            }
        }

        impl<T: rime_tensor::Element> $crate::optimizers::Optimizer<T> for $ty {
            fn name(&self) -> &'static str {
                <$rule as $crate::optimizers::Rule>::NAME
            }

            fn iterations(&self) -> u64 {
                self.common.iterations()
            }

            fn current_learning_rate(&self) -> f64 {
                self.common.current_learning_rate()
            }

            fn apply_gradients_masked(
                &mut self,
                grads: &[Option<rime_tensor::Tensor<T>>],
                vars: &[rime_tape::Variable<T>],
                masks: &[Option<std::sync::Arc<rime_tape::ResolvedMask>>],
            ) -> $crate::Result<()> {
                use $crate::optimizers::Rule;
                let $ty { common, rule } = self;
                $crate::instances::table::<T>().apply_gradients(
                    common,
                    rule.any(),
                    grads,
                    vars,
                    masks,
                )
            }

            fn apply_deferred_masked(
                &mut self,
                grads: Vec<Option<rime_tape::DeferredGradient<T>>>,
                vars: &[rime_tape::Variable<T>],
                masks: &[Option<std::sync::Arc<rime_tape::ResolvedMask>>],
            ) -> $crate::Result<()> {
                use $crate::optimizers::Rule;
                let $ty { common, rule } = self;
                $crate::instances::table::<T>().apply_deferred(
                    common,
                    rule.any(),
                    grads,
                    vars,
                    masks,
                )
            }

            fn slots(
                &self,
                var: &rime_tape::Variable<T>,
            ) -> Vec<(&'static str, rime_tensor::Tensor<T>)> {
                use $crate::optimizers::Rule;
                self.common.slots(self.rule.slot_names(), var)
            }

            fn tracked_variables(&self) -> usize {
                self.common.tracked_variables()
            }

            fn set_learning_rate(&mut self, lr: f64) -> $crate::Result<()> {
                self.common
                    .set_constant_learning_rate(<$rule as $crate::optimizers::Rule>::NAME, lr)
            }

            fn state(
                &self,
                vars: &[rime_tape::Variable<T>],
            ) -> $crate::Result<$crate::optimizers::OptimizerState<T>> {
                use $crate::optimizers::Rule;
                Ok(self.common.export_state(
                    <$rule as $crate::optimizers::Rule>::NAME,
                    self.rule.slot_names(),
                    vars,
                ))
            }

            fn set_state(
                &mut self,
                vars: &[rime_tape::Variable<T>],
                state: &$crate::optimizers::OptimizerState<T>,
            ) -> $crate::Result<()> {
                use $crate::optimizers::Rule;
                self.common.import_state(
                    <$rule as $crate::optimizers::Rule>::NAME,
                    self.rule.slot_names(),
                    vars,
                    state,
                )
            }

            fn get_config(&self) -> serde_json::Value {
                use $crate::optimizers::Rule;
                self.common.config(
                    <$rule as $crate::optimizers::Rule>::NAME,
                    self.rule.config(),
                )
            }
        }
    };
}
pub(crate) use optimizer_common;
