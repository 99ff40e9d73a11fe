//! Reading and restoring an optimizer's state (slots and iterations), for
//! checkpoints that resume exactly.

use rime_tape::Variable;
use rime_tensor::{Element, Tensor};

use super::{Common, Slots, invalid};
use crate::Result;

/// Everything an optimizer has learned while training: the iteration count
/// (which is also a learning-rate schedule's position), the learning rate
/// when it is a constant (callbacks such as `ReduceLROnPlateau` change it),
/// and each variable's slots, in the order of the variables it was read
/// for.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<T: Element = f32> {
    /// Keras' class name of the optimizer the state came from.
    pub optimizer: String,
    /// Updates applied so far.
    pub iterations: u64,
    /// The constant learning rate (`None` under a schedule).
    pub learning_rate: Option<f64>,
    /// Per variable, its slots by name (empty before its first update).
    pub slots: Vec<Vec<(String, Tensor<T>)>>,
}

impl Common {
    pub(crate) fn export_state<T: Element>(
        &self,
        name: &str,
        slot_names: &'static [&'static str],
        vars: &[Variable<T>],
    ) -> OptimizerState<T> {
        OptimizerState {
            optimizer: name.to_string(),
            iterations: self.iterations,
            learning_rate: match &self.learning_rate {
                super::LearningRate::Constant(lr) => Some(*lr),
                super::LearningRate::Schedule(_) => None,
            },
            slots: vars
                .iter()
                .map(|v| {
                    self.slots(slot_names, v)
                        .into_iter()
                        .map(|(n, t)| (n.to_string(), t))
                        .collect()
                })
                .collect(),
        }
    }

    /// Checks everything, then replaces the state for `vars`.
    pub(crate) fn import_state<T: Element>(
        &mut self,
        name: &str,
        slot_names: &'static [&'static str],
        vars: &[Variable<T>],
        state: &OptimizerState<T>,
    ) -> Result<()> {
        if state.optimizer != name {
            return Err(invalid(
                name,
                format!(
                    "cannot restore the state of a {} optimizer",
                    state.optimizer
                ),
            ));
        }
        if state.slots.len() != vars.len() {
            return Err(invalid(
                name,
                format!(
                    "state holds slots for {} variables, {} given",
                    state.slots.len(),
                    vars.len()
                ),
            ));
        }
        if let Some(lr) = state.learning_rate
            && !(lr.is_finite() && lr >= 0.0)
        {
            return Err(invalid(
                name,
                format!("learning rate must be finite and >= 0, got {lr}"),
            ));
        }
        for (v, slots) in vars.iter().zip(&state.slots) {
            if slots.is_empty() {
                continue;
            }
            let names: Vec<&str> = slots.iter().map(|(n, _)| n.as_str()).collect();
            if names != slot_names {
                return Err(invalid(
                    name,
                    format!(
                        "slots {names:?} for `{}` do not match this optimizer's {slot_names:?}",
                        v.name()
                    ),
                ));
            }
            if let Some((n, t)) = slots.iter().find(|(_, t)| t.shape() != &v.shape()) {
                return Err(invalid(
                    name,
                    format!(
                        "slot `{n}` has shape {}, variable `{}` has shape {}",
                        t.shape(),
                        v.name(),
                        v.shape()
                    ),
                ));
            }
        }
        // nothing can fail from here on
        for (v, slots) in vars.iter().zip(&state.slots) {
            if slots.is_empty() {
                self.state.remove(&v.id());
            } else {
                let values = slots.iter().map(|(_, t)| t.to_vec()).collect();
                self.state.insert(v.id(), Box::new(Slots(values)));
            }
        }
        self.iterations = state.iterations;
        if let Some(lr) = state.learning_rate {
            self.learning_rate = super::LearningRate::Constant(lr);
        }
        Ok(())
    }

    pub(crate) fn set_constant_learning_rate(&mut self, name: &str, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(invalid(
                name,
                format!("learning rate must be finite and >= 0, got {lr}"),
            ));
        }
        self.learning_rate = super::LearningRate::Constant(lr);
        Ok(())
    }
}
