//! Metrics with Keras 3's semantics: running values over batches.
//!
//! Every metric implements [`Metric`] (`result`, `reset_state`, `name`).
//! The comparison metrics ([`Accuracy`], [`BinaryAccuracy`],
//! [`CategoricalAccuracy`], [`SparseCategoricalAccuracy`]) are updated with
//! `(y_true, y_pred)` through [`UpdateState`]; [`Mean`] with the values to
//! average. Results are `f64`, accumulated over every update since the last
//! reset (each sample counts once, whatever the batch sizes).
//!
//! ```
//! use rime_layers::metrics::{Metric, SparseCategoricalAccuracy, UpdateState};
//! use rime_tensor::Tensor;
//! let mut acc = SparseCategoricalAccuracy::new();
//! let logits = Tensor::from_vec(vec![2.0f32, 0.0, 0.0, 1.0, 3.0, 0.0], [3, 2])?;
//! acc.update_state(&Tensor::vector(vec![0.0, 1.0, 1.0]), &logits)?;
//! assert!((acc.result() - 2.0 / 3.0).abs() < 1e-12);
//! acc.reset_state();
//! assert_eq!(acc.result(), 0.0);
//! # Ok::<(), rime_layers::Error>(())
//! ```

use rime_tensor::{Element, Tensor};

use crate::losses::{class_labels, int_class_labels};
use crate::{Error, Result, Target};

/// A running metric.
pub trait Metric: Send {
    /// Keras' name (`"accuracy"`, ...).
    fn name(&self) -> &str;

    /// The value over everything seen since the last reset (0 if nothing).
    fn result(&self) -> f64;

    /// Forgets everything seen.
    fn reset_state(&mut self);
}

/// Metrics updated from labels and predictions.
pub trait UpdateState<T: Element = f32>: Metric {
    /// Adds a batch.
    fn update_state(&mut self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()>;

    /// Adds a batch with integer targets (class indices). The sparse
    /// metrics read them as they are; the others convert them to `T`
    /// first.
    fn update_state_int(&mut self, y_true: &Tensor<i64>, y_pred: &Tensor<T>) -> Result<()> {
        self.update_state(&y_true.to_dtype::<T>()?, y_pred)
    }

    /// Adds a batch with a [`Target`] (float values or integer class
    /// indices), as a dataset's batches hold them.
    fn update_state_target(&mut self, y_true: &Target<T>, y_pred: &Tensor<T>) -> Result<()> {
        match y_true {
            Target::Float(y) => self.update_state(y, y_pred),
            Target::Int(y) => self.update_state_int(y, y_pred),
        }
    }
}

/// A weighted running mean: `Σ wᵢxᵢ / Σ wᵢ`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Running {
    total: f64,
    count: f64,
}

impl Running {
    fn add(&mut self, total: f64, count: f64) {
        self.total += total;
        self.count += count;
    }

    fn value(&self) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.total / self.count
        }
    }
}

fn invalid(metric: &str, msg: String) -> Error {
    Error::InvalidArgument {
        what: format!("metric {metric}"),
        msg,
    }
}

fn same_shape<T: Element>(metric: &str, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()> {
    if y_true.shape() != y_pred.shape() {
        return Err(invalid(
            metric,
            format!(
                "y_true has shape {}, y_pred has shape {}: they must match",
                y_true.shape(),
                y_pred.shape()
            ),
        ));
    }
    Ok(())
}

/// The mean of the values it is given (e.g. the loss of each batch).
///
/// ```
/// use rime_layers::metrics::{Mean, Metric};
/// use rime_tensor::Tensor;
/// let mut m = Mean::new();
/// m.update_state(&Tensor::vector(vec![1.0f32, 2.0]))?;
/// m.update_state(&Tensor::scalar(6.0f32))?;
/// assert_eq!(m.result(), 3.0);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Mean {
    name: String,
    state: Running,
}

impl Default for Mean {
    fn default() -> Self {
        Self::new()
    }
}

impl Mean {
    /// A mean named `"mean"`.
    pub fn new() -> Self {
        Self::named("mean")
    }

    /// A mean with a name (`"loss"`).
    pub fn named(name: impl Into<String>) -> Self {
        Mean {
            name: name.into(),
            state: Running::default(),
        }
    }

    /// Adds every element of `values` with weight 1.
    pub fn update_state<T: Element>(&mut self, values: &Tensor<T>) -> Result<()> {
        let total = values
            .as_slice()
            .iter()
            .map(|v| v.to_f64().unwrap_or(f64::NAN))
            .sum();
        self.state.add(total, values.len() as f64);
        Ok(())
    }

    /// Adds `values` with weights of the same shape.
    pub fn update_state_weighted<T: Element>(
        &mut self,
        values: &Tensor<T>,
        weights: &Tensor<T>,
    ) -> Result<()> {
        same_shape(&self.name, values, weights)?;
        let f = |v: &T| v.to_f64().unwrap_or(f64::NAN);
        let total = values
            .as_slice()
            .iter()
            .zip(weights.as_slice())
            .map(|(v, w)| f(v) * f(w))
            .sum();
        let count = weights.as_slice().iter().map(f).sum();
        self.state.add(total, count);
        Ok(())
    }
}

impl Metric for Mean {
    fn name(&self) -> &str {
        &self.name
    }
    fn result(&self) -> f64 {
        self.state.value()
    }
    fn reset_state(&mut self) {
        self.state = Running::default();
    }
}

/// Defines a comparison metric: a struct with a name and a running mean,
/// `new`, `Default` and `Metric`.
macro_rules! comparison_metric {
    ($(#[$doc:meta])* $ty:ident, $name:literal $(, $field:ident: $fty:ty = $default:expr)*) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $ty {
            state: Running,
            $($field: $fty,)*
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $ty {
            /// Keras' defaults.
            pub fn new() -> Self {
                $ty { state: Running::default(), $($field: $default,)* }
            }
        }

        impl Metric for $ty {
            fn name(&self) -> &str {
                $name
            }
            fn result(&self) -> f64 {
                self.state.value()
            }
            fn reset_state(&mut self) {
                self.state = Running::default();
            }
        }
    };
}

comparison_metric!(
    /// How often `y_pred` equals `y_true`, elementwise.
    ///
    /// ```
    /// use rime_layers::metrics::{Accuracy, Metric, UpdateState};
    /// use rime_tensor::Tensor;
    /// let mut a = Accuracy::new();
    /// a.update_state(&Tensor::vector(vec![1.0f32, 2.0, 3.0, 4.0]), &Tensor::vector(vec![1.0, 0.0, 3.0, 4.0]))?;
    /// assert_eq!(a.result(), 0.75);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    Accuracy,
    "accuracy"
);

impl<T: Element> UpdateState<T> for Accuracy {
    fn update_state(&mut self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()> {
        same_shape("accuracy", y_true, y_pred)?;
        let hits = y_true
            .as_slice()
            .iter()
            .zip(y_pred.as_slice())
            .filter(|(a, b)| a == b)
            .count();
        self.state.add(hits as f64, y_true.len() as f64);
        Ok(())
    }
}

comparison_metric!(
    /// How often `y_pred > threshold` (default 0.5) matches a 0/1 label.
    ///
    /// ```
    /// use rime_layers::metrics::{BinaryAccuracy, Metric, UpdateState};
    /// use rime_tensor::Tensor;
    /// let mut a = BinaryAccuracy::new();
    /// a.update_state(&Tensor::vector(vec![1.0f32, 0.0]), &Tensor::vector(vec![0.7, 0.6]))?;
    /// assert_eq!(a.result(), 0.5);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    BinaryAccuracy,
    "binary_accuracy",
    threshold: f64 = 0.5
);

impl BinaryAccuracy {
    /// Predictions above `threshold` count as 1 (for logits use 0).
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
}

impl<T: Element> UpdateState<T> for BinaryAccuracy {
    fn update_state(&mut self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()> {
        same_shape("binary_accuracy", y_true, y_pred)?;
        let th = T::of(self.threshold);
        let hits = y_true
            .as_slice()
            .iter()
            .zip(y_pred.as_slice())
            .filter(|&(&t, &p)| (p > th) == (t == T::one()))
            .count();
        self.state.add(hits as f64, y_true.len() as f64);
        Ok(())
    }
}

comparison_metric!(
    /// How often the arg-max of `y_pred` is the arg-max of one-hot `y_true`
    /// (over the last axis).
    ///
    /// ```
    /// use rime_layers::metrics::{CategoricalAccuracy, Metric, UpdateState};
    /// use rime_tensor::Tensor;
    /// let mut a = CategoricalAccuracy::new();
    /// let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2])?;
    /// let p = Tensor::from_vec(vec![0.2f32, 0.8, 0.3, 0.7], [2, 2])?;
    /// a.update_state(&y, &p)?;
    /// assert_eq!(a.result(), 0.5);
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    CategoricalAccuracy,
    "categorical_accuracy"
);

impl<T: Element> UpdateState<T> for CategoricalAccuracy {
    fn update_state(&mut self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()> {
        same_shape("categorical_accuracy", y_true, y_pred)?;
        if y_pred.rank() == 0 {
            return Err(invalid(
                "categorical_accuracy",
                "y_pred must have rank >= 1".into(),
            ));
        }
        let truth = y_true.argmax_indices(-1)?;
        let guess = y_pred.argmax_indices(-1)?;
        let hits = truth.iter().zip(&guess).filter(|(a, b)| a == b).count();
        self.state.add(hits as f64, truth.len() as f64);
        Ok(())
    }
}

comparison_metric!(
    /// How often the arg-max of `y_pred` (over the last axis) is the class
    /// index in `y_true` (float labels, or integer ones through
    /// [`UpdateState::update_state_int`]).
    ///
    /// ```
    /// use rime_layers::metrics::{Metric, SparseCategoricalAccuracy, UpdateState};
    /// use rime_tensor::Tensor;
    /// let mut a = SparseCategoricalAccuracy::new();
    /// let p = Tensor::from_vec(vec![0.2f32, 0.8, 0.3, 0.7], [2, 2])?;
    /// a.update_state_int(&Tensor::vector(vec![1i64, 0]), &p)?;
    /// assert_eq!(a.result(), 0.5);
    /// assert!(a.update_state_int(&Tensor::vector(vec![-1i64, 0]), &p).is_err());
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    SparseCategoricalAccuracy,
    "sparse_categorical_accuracy"
);

impl SparseCategoricalAccuracy {
    fn add_hits<T: Element>(&mut self, labels: &[usize], y_pred: &Tensor<T>) -> Result<()> {
        let guess = y_pred.argmax_indices(-1)?;
        let hits = labels.iter().zip(&guess).filter(|(a, b)| a == b).count();
        self.state.add(hits as f64, labels.len() as f64);
        Ok(())
    }
}

impl<T: Element> UpdateState<T> for SparseCategoricalAccuracy {
    fn update_state(&mut self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<()> {
        let labels = class_labels("metric sparse_categorical_accuracy", y_true, y_pred)?;
        self.add_hits(&labels, y_pred)
    }

    fn update_state_int(&mut self, y_true: &Tensor<i64>, y_pred: &Tensor<T>) -> Result<()> {
        let labels = int_class_labels("metric sparse_categorical_accuracy", y_true, y_pred)?;
        self.add_hits(&labels, y_pred)
    }
}
