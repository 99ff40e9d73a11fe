//! Losses with Keras 3's formulas: [`MeanSquaredError`],
//! [`MeanAbsoluteError`], [`Huber`], [`BinaryCrossentropy`],
//! [`CategoricalCrossentropy`] and [`SparseCategoricalCrossentropy`].
//!
//! A loss computes one value per sample (over the last axis) and reduces
//! them ([`Reduction`]): by default the mean over all samples (Keras'
//! `sum_over_batch_size`). Losses are built from recorded tensor ops, so a
//! loss computed under a [`GradientTape`](rime_tape::GradientTape) is
//! differentiable. The cross entropies with `from_logits` use the stable
//! fused forms (log-sum-exp, `softplus`); probabilities are clipped to
//! `[1e-7, 1 − 1e-7]` as Keras does.
//!
//! Prefer a linear output layer and `from_logits(true)`: a probability loss
//! clips, so once a softmax or sigmoid output saturates its value is capped
//! and its gradient is zero. (Keras' TensorFlow backend silently reads the
//! logits behind its own softmax/sigmoid outputs instead; rime's losses use
//! exactly what they are given, and `from_logits(true)` gives Keras'
//! numbers — tests/parity.rs pins this.)
//!
//! `y_true` and `y_pred` must have the same shape, except that a trailing
//! axis of size 1 on either side is dropped to match the other (Keras'
//! `squeeze_or_expand_to_same_rank`); broadcasting one against the other is
//! refused, since it is nearly always a bug.
//!
//! ```
//! use rime_layers::losses::{Loss, MeanSquaredError, Reduction};
//! use rime_tensor::Tensor;
//! let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2])?;
//! let p = Tensor::from_vec(vec![1.0f32, 1.0, 1.0, 1.0], [2, 2])?;
//! assert_eq!(MeanSquaredError::new().call(&y, &p)?.to_scalar()?, 0.5);
//! let per_sample = MeanSquaredError::new().with_reduction(Reduction::None).call(&y, &p)?;
//! assert_eq!(per_sample.to_vec(), vec![0.5, 0.5]);
//! # Ok::<(), rime_layers::Error>(())
//! ```

use rime_tensor::{Element, Shape, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Error, Result, Target};

/// Keras' `backend.epsilon()`, the clipping margin for probabilities.
const EPSILON: f64 = 1e-7;

/// How per-sample losses become the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// The mean over all per-sample values (Keras' `sum_over_batch_size`).
    #[default]
    #[serde(rename = "sum_over_batch_size")]
    Mean,
    /// The sum of the per-sample values.
    Sum,
    /// The per-sample values themselves (shape `y_pred.shape[..-1]`).
    None,
}

/// A loss function: `call(y_true, y_pred)`.
pub trait Loss<T: Element = f32>: Send + Sync {
    /// Keras' name (`"mean_squared_error"`, ...).
    fn name(&self) -> &'static str;

    /// The reduction this loss applies.
    fn reduction(&self) -> Reduction;

    /// One loss value per sample: shape `y_pred.shape[..-1]`.
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>>;

    /// The loss: the per-sample values reduced.
    fn call(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let values = self.per_sample(y_true, y_pred)?;
        reduce(values, self.reduction())
    }

    /// [`per_sample`](Loss::per_sample) with integer targets (class
    /// indices). The sparse losses read them as they are; every other loss
    /// converts them to `T` first, as Keras casts `y_true` to `y_pred`'s
    /// dtype.
    fn per_sample_int(&self, y_true: &Tensor<i64>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        self.per_sample(&y_true.to_dtype::<T>()?, y_pred)
    }

    /// The loss with integer targets (class indices): what a custom loop
    /// calls with labels read from files.
    ///
    /// ```
    /// use rime_layers::losses::{Loss, SparseCategoricalCrossentropy};
    /// use rime_tensor::Tensor;
    /// let labels = Tensor::vector(vec![1i64, 0]);
    /// let logits = Tensor::from_vec(vec![0.0f32, 0.0, 3.0, 1.0], [2, 2])?;
    /// let loss = SparseCategoricalCrossentropy::new().with_from_logits(true);
    /// let l = loss.call_int(&labels, &logits)?;
    /// // the same value as with float labels
    /// assert_eq!(l, loss.call(&Tensor::vector(vec![1.0, 0.0]), &logits)?);
    /// assert!(loss.call_int(&Tensor::vector(vec![2i64, 0]), &logits).is_err());
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    fn call_int(&self, y_true: &Tensor<i64>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        reduce(self.per_sample_int(y_true, y_pred)?, self.reduction())
    }

    /// The loss for a [`Target`] (float values or integer class indices),
    /// as a dataset's batches hold them.
    fn call_target(&self, y_true: &Target<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        match y_true {
            Target::Float(y) => self.call(y, y_pred),
            Target::Int(y) => self.call_int(y, y_pred),
        }
    }

    /// The loss with one weight per sample (shape `y_pred.shape[..-1]`, or
    /// broadcastable to it): Keras' `sample_weight`. The mean reduction
    /// divides by the number of samples, not by the weights' sum.
    fn call_weighted(
        &self,
        y_true: &Tensor<T>,
        y_pred: &Tensor<T>,
        sample_weight: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let values = self.per_sample(y_true, y_pred)?;
        let weighted = values
            .mul(sample_weight)
            .map_err(|e| Error::InvalidArgument {
                what: format!("loss {}", self.name()),
                msg: format!(
                    "sample_weight of shape {} does not fit per-sample losses of shape {}: {e}",
                    sample_weight.shape(),
                    values.shape()
                ),
            })?;
        if weighted.shape() != values.shape() {
            return Err(Error::InvalidArgument {
                what: format!("loss {}", self.name()),
                msg: format!(
                    "sample_weight of shape {} broadcasts the per-sample losses of shape {} to {}",
                    sample_weight.shape(),
                    values.shape(),
                    weighted.shape()
                ),
            });
        }
        reduce(weighted, self.reduction())
    }

    /// Keras-style configuration.
    fn get_config(&self) -> Value;
}

fn reduce<T: Element>(values: Tensor<T>, reduction: Reduction) -> Result<Tensor<T>> {
    Ok(match reduction {
        Reduction::Mean if values.is_empty() => Tensor::scalar(T::zero()),
        Reduction::Mean => values.mean_all(),
        Reduction::Sum => values.sum_all(),
        Reduction::None => values,
    })
}

fn invalid(loss: &str, msg: String) -> Error {
    Error::InvalidArgument {
        what: format!("loss {loss}"),
        msg,
    }
}

/// Brings `y_true` to `y_pred`'s shape by dropping a trailing size-1 axis
/// on either side; any other mismatch is an error naming both shapes.
fn align<T: Element>(
    loss: &str,
    y_true: &Tensor<T>,
    y_pred: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let (t, p) = (y_true.shape(), y_pred.shape());
    if t == p {
        return Ok((y_true.clone(), y_pred.clone()));
    }
    let drop_last = |s: &Shape| Shape::from(&s.dims()[..s.rank() - 1]);
    if t.rank() == p.rank() + 1 && t.dims().last() == Some(&1) && &drop_last(t) == p {
        return Ok((y_true.reshape(p.clone())?, y_pred.clone()));
    }
    if p.rank() == t.rank() + 1 && p.dims().last() == Some(&1) && &drop_last(p) == t {
        return Ok((y_true.reshape(p.clone())?, y_pred.clone()));
    }
    Err(invalid(
        loss,
        format!("y_true has shape {t}, y_pred has shape {p}: they must match"),
    ))
}

fn rank_at_least_1<T: Element>(loss: &str, y_pred: &Tensor<T>) -> Result<()> {
    if y_pred.rank() == 0 {
        return Err(invalid(
            loss,
            format!(
                "y_pred must have rank >= 1 (samples × values), got shape {}",
                y_pred.shape()
            ),
        ));
    }
    Ok(())
}

/// Mean over the last axis: each sample's loss.
fn mean_last<T: Element>(x: &Tensor<T>) -> Result<Tensor<T>> {
    Ok(x.mean(&[-1], false)?)
}

macro_rules! reduction_builder {
    ($ty:ident) => {
        impl $ty {
            /// How per-sample losses are reduced (default: their mean).
            pub fn with_reduction(mut self, reduction: Reduction) -> Self {
                self.reduction = reduction;
                self
            }
        }
    };
}

/// `mean((y_true − y_pred)², axis = −1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanSquaredError {
    reduction: Reduction,
}

impl MeanSquaredError {
    /// With the mean reduction.
    pub fn new() -> Self {
        Self::default()
    }
}
reduction_builder!(MeanSquaredError);

impl<T: Element> Loss<T> for MeanSquaredError {
    fn name(&self) -> &'static str {
        "mean_squared_error"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        rank_at_least_1(Loss::<T>::name(self), y_pred)?;
        let (t, p) = align(Loss::<T>::name(self), y_true, y_pred)?;
        mean_last(&p.sub(&t)?.square())
    }
    fn get_config(&self) -> Value {
        json!({ "name": "mean_squared_error", "reduction": self.reduction })
    }
}

/// `mean(|y_true − y_pred|, axis = −1)`.
///
/// ```
/// use rime_layers::losses::{Loss, MeanAbsoluteError};
/// use rime_tensor::Tensor;
/// let (y, p) = (Tensor::vector(vec![0.0f32, 2.0]), Tensor::vector(vec![1.0f32, 0.0]));
/// assert_eq!(MeanAbsoluteError::new().call(&y.reshape([1, 2])?, &p.reshape([1, 2])?)?.to_scalar()?, 1.5);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanAbsoluteError {
    reduction: Reduction,
}

impl MeanAbsoluteError {
    /// With the mean reduction.
    pub fn new() -> Self {
        Self::default()
    }
}
reduction_builder!(MeanAbsoluteError);

impl<T: Element> Loss<T> for MeanAbsoluteError {
    fn name(&self) -> &'static str {
        "mean_absolute_error"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        rank_at_least_1(Loss::<T>::name(self), y_pred)?;
        let (t, p) = align(Loss::<T>::name(self), y_true, y_pred)?;
        mean_last(&p.sub(&t)?.abs())
    }
    fn get_config(&self) -> Value {
        json!({ "name": "mean_absolute_error", "reduction": self.reduction })
    }
}

/// Huber: `½e²` where `|e| ≤ δ`, else `δ|e| − ½δ²` (`e = y_pred − y_true`),
/// averaged over the last axis; default `δ = 1`.
///
/// ```
/// use rime_layers::losses::{Huber, Loss};
/// use rime_tensor::Tensor;
/// let y = Tensor::<f64>::zeros([1, 2])?;
/// let p = Tensor::from_vec(vec![0.5, 3.0], [1, 2])?;
/// // (½·0.25 + (3 − ½)) / 2
/// assert!((Huber::new().call(&y, &p)?.to_scalar()? - 1.3125).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Huber {
    delta: f64,
    reduction: Reduction,
}

impl Default for Huber {
    fn default() -> Self {
        Huber {
            delta: 1.0,
            reduction: Reduction::Mean,
        }
    }
}

impl Huber {
    /// `δ = 1`, mean reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The point where the loss turns from quadratic to linear (> 0).
    pub fn with_delta(mut self, delta: f64) -> Self {
        self.delta = delta;
        self
    }
}
reduction_builder!(Huber);

impl<T: Element> Loss<T> for Huber {
    fn name(&self) -> &'static str {
        "huber_loss"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let name = Loss::<T>::name(self);
        if !(self.delta.is_finite() && self.delta > 0.0) {
            return Err(invalid(
                name,
                format!("delta must be > 0, got {}", self.delta),
            ));
        }
        rank_at_least_1(name, y_pred)?;
        let (t, p) = align(name, y_true, y_pred)?;
        let delta = T::of(self.delta);
        let error = p.sub(&t)?;
        let abs_error = error.abs();
        let quadratic = error.square().mul_scalar(T::of(0.5));
        let linear = abs_error
            .mul_scalar(delta)
            .sub_scalar(T::of(0.5) * delta * delta);
        let small = abs_error.le_scalar(delta);
        mean_last(&Tensor::select(&small, &quadratic, &linear)?)
    }
    fn get_config(&self) -> Value {
        json!({ "name": "huber_loss", "delta": self.delta, "reduction": self.reduction })
    }
}

/// Binary cross entropy, averaged over the last axis. With `from_logits`
/// it is `max(x, 0) − x·z + ln(1 + e^−|x|)` (stable for any logit);
/// otherwise probabilities are clipped to `[ε, 1 − ε]`.
///
/// ```
/// use rime_layers::losses::{BinaryCrossentropy, Loss};
/// use rime_tensor::Tensor;
/// let y = Tensor::from_vec(vec![1.0f64, 0.0], [2, 1])?;
/// let logits = Tensor::from_vec(vec![0.0, 0.0], [2, 1])?;
/// let l = BinaryCrossentropy::new().with_from_logits(true).call(&y, &logits)?;
/// assert!((l.to_scalar()? - 2f64.ln()).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BinaryCrossentropy {
    from_logits: bool,
    label_smoothing: f64,
    reduction: Reduction,
}

impl BinaryCrossentropy {
    /// From probabilities, no label smoothing, mean reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `y_pred` holds logits (default: probabilities).
    pub fn with_from_logits(mut self, from_logits: bool) -> Self {
        self.from_logits = from_logits;
        self
    }

    /// Labels become `z·(1 − s) + s/2` (in `[0, 1]`).
    pub fn with_label_smoothing(mut self, smoothing: f64) -> Self {
        self.label_smoothing = smoothing;
        self
    }
}
reduction_builder!(BinaryCrossentropy);

fn check_smoothing(loss: &str, s: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&s) {
        return Err(invalid(
            loss,
            format!("label_smoothing must be in [0, 1], got {s}"),
        ));
    }
    Ok(())
}

impl<T: Element> Loss<T> for BinaryCrossentropy {
    fn name(&self) -> &'static str {
        "binary_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let name = Loss::<T>::name(self);
        check_smoothing(name, self.label_smoothing)?;
        rank_at_least_1(name, y_pred)?;
        let (mut z, x) = align(name, y_true, y_pred)?;
        if self.label_smoothing > 0.0 {
            let s = T::of(self.label_smoothing);
            z = z.mul_scalar(T::one() - s).add_scalar(s * T::of(0.5));
        }
        let elementwise = if self.from_logits {
            // max(x, 0) - x z + ln(1 + exp(-|x|))
            x.maximum_scalar(T::zero())
                .sub(&x.mul(&z)?)?
                .add(&x.abs().neg().softplus())?
        } else {
            let p = x.clamp(T::of(EPSILON), T::one() - T::of(EPSILON))?;
            let ones = Tensor::scalar(T::one());
            let pos = z.mul(&p.ln())?;
            let neg = ones.sub(&z)?.mul(&ones.sub(&p)?.ln())?;
            pos.add(&neg)?.neg()
        };
        mean_last(&elementwise)
    }
    fn get_config(&self) -> Value {
        json!({
            "name": "binary_crossentropy",
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
        })
    }
}

/// Categorical cross entropy over the last axis with one-hot (or soft)
/// labels. With `from_logits` it is `−Σ z·log_softmax(x)`; otherwise the
/// probabilities are renormalized to sum to 1 and clipped to `[ε, 1 − ε]`.
///
/// ```
/// use rime_layers::losses::{CategoricalCrossentropy, Loss};
/// use rime_tensor::Tensor;
/// let y = Tensor::from_vec(vec![0.0f64, 1.0], [1, 2])?;
/// let p = Tensor::from_vec(vec![0.25, 0.75], [1, 2])?;
/// let l = CategoricalCrossentropy::new().call(&y, &p)?;
/// assert!((l.to_scalar()? + 0.75f64.ln()).abs() < 1e-12);
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoricalCrossentropy {
    from_logits: bool,
    label_smoothing: f64,
    reduction: Reduction,
}

impl CategoricalCrossentropy {
    /// From probabilities, no label smoothing, mean reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `y_pred` holds logits (default: probabilities).
    pub fn with_from_logits(mut self, from_logits: bool) -> Self {
        self.from_logits = from_logits;
        self
    }

    /// Labels become `z·(1 − s) + s/classes`.
    pub fn with_label_smoothing(mut self, smoothing: f64) -> Self {
        self.label_smoothing = smoothing;
        self
    }
}
reduction_builder!(CategoricalCrossentropy);

impl<T: Element> Loss<T> for CategoricalCrossentropy {
    fn name(&self) -> &'static str {
        "categorical_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let name = Loss::<T>::name(self);
        check_smoothing(name, self.label_smoothing)?;
        rank_at_least_1(name, y_pred)?;
        if y_true.shape() != y_pred.shape() {
            return Err(invalid(
                name,
                format!(
                    "y_true has shape {}, y_pred has shape {}: one-hot labels must match the predictions",
                    y_true.shape(),
                    y_pred.shape()
                ),
            ));
        }
        let mut z = y_true.clone();
        if self.label_smoothing > 0.0 {
            let s = T::of(self.label_smoothing);
            let classes = T::of(y_pred.dims()[y_pred.rank() - 1] as f64);
            z = z.mul_scalar(T::one() - s).add_scalar(s / classes);
        }
        if self.from_logits {
            return Ok(y_pred.softmax_cross_entropy(&z)?);
        }
        let p = y_pred.div(&y_pred.sum(&[-1], true)?)?;
        let p = p.clamp(T::of(EPSILON), T::one() - T::of(EPSILON))?;
        Ok(z.mul(&p.ln())?.sum(&[-1], false)?.neg())
    }
    fn get_config(&self) -> Value {
        json!({
            "name": "categorical_crossentropy",
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
        })
    }
}

/// Categorical cross entropy with integer class labels: `y_true` holds one
/// class index per sample (shape `y_pred.shape[..-1]`, or with a trailing
/// axis of size 1). With `from_logits` the fused, stable
/// `sparse_softmax_cross_entropy`; otherwise the probabilities are clipped
/// to `[ε, 1 − ε]` and their log taken as logits (as Keras).
///
/// ```
/// use rime_layers::losses::{Loss, SparseCategoricalCrossentropy};
/// use rime_tensor::Tensor;
/// let labels = Tensor::vector(vec![1.0f64, 0.0]);
/// let logits = Tensor::from_vec(vec![0.0, 0.0, 0.0, 0.0], [2, 2])?;
/// let l = SparseCategoricalCrossentropy::new().with_from_logits(true).call(&labels, &logits)?;
/// assert!((l.to_scalar()? - 2f64.ln()).abs() < 1e-12);
/// // integer labels, as datasets read them from files
/// let ids = Tensor::vector(vec![1i64, 0]);
/// let li = SparseCategoricalCrossentropy::new().with_from_logits(true).call_int(&ids, &logits)?;
/// assert_eq!(li, l);
/// let bad = Tensor::vector(vec![2.0f64, 0.0]); // class 2 of 2
/// assert!(SparseCategoricalCrossentropy::new().call(&bad, &logits).is_err());
/// # Ok::<(), rime_layers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SparseCategoricalCrossentropy {
    from_logits: bool,
    reduction: Reduction,
}

impl SparseCategoricalCrossentropy {
    /// From probabilities, mean reduction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `y_pred` holds logits (default: probabilities).
    pub fn with_from_logits(mut self, from_logits: bool) -> Self {
        self.from_logits = from_logits;
        self
    }
}
reduction_builder!(SparseCategoricalCrossentropy);

impl SparseCategoricalCrossentropy {
    /// Per-sample losses for checked class indices.
    fn per_sample_of_labels<T: Element>(
        &self,
        labels: &[usize],
        y_pred: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let logits = if self.from_logits {
            y_pred.clone()
        } else {
            y_pred
                .clamp(T::of(EPSILON), T::one() - T::of(EPSILON))?
                .ln()
        };
        Ok(logits.sparse_softmax_cross_entropy(labels)?)
    }
}

/// Checks that `y_true` holds one class index per sample of `y_pred`
/// (shape `y_pred.shape[..-1]`, or that plus a trailing 1); returns the
/// number of classes.
fn check_label_shape<T: Element>(what: &str, y_true: &Shape, y_pred: &Tensor<T>) -> Result<usize> {
    if y_pred.rank() == 0 {
        return Err(Error::InvalidArgument {
            what: what.to_string(),
            msg: format!(
                "y_pred must have rank >= 1 (classes on the last axis), got shape {}",
                y_pred.shape()
            ),
        });
    }
    let samples = &y_pred.dims()[..y_pred.rank() - 1];
    let t: &[usize] = y_true;
    let fits = t == samples
        || (t.len() == samples.len() + 1 && t.last() == Some(&1) && &t[..samples.len()] == samples);
    if !fits {
        return Err(Error::InvalidArgument {
            what: what.to_string(),
            msg: format!(
                "y_true has shape {}, y_pred has shape {}: expected one class index per sample (shape {})",
                y_true,
                y_pred.shape(),
                Shape::from(samples)
            ),
        });
    }
    Ok(y_pred.dims()[y_pred.rank() - 1])
}

/// Class indices from a tensor of integer labels, one per sample of
/// `y_pred`.
pub(crate) fn int_class_labels<T: Element>(
    what: &str,
    y_true: &Tensor<i64>,
    y_pred: &Tensor<T>,
) -> Result<Vec<usize>> {
    let classes = check_label_shape(what, y_true.shape(), y_pred)?;
    y_true
        .as_slice()
        .iter()
        .map(|&v| match usize::try_from(v) {
            Ok(i) if i < classes => Ok(i),
            _ => Err(Error::InvalidArgument {
                what: what.to_string(),
                msg: format!(
                    "label {v} is not a class index in 0..{classes} (y_true shape {}, y_pred shape {})",
                    y_true.shape(),
                    y_pred.shape()
                ),
            }),
        })
        .collect()
}

/// Class indices from a tensor of float labels (whole numbers), one per
/// sample of `y_pred`.
pub(crate) fn class_labels<T: Element>(
    what: &str,
    y_true: &Tensor<T>,
    y_pred: &Tensor<T>,
) -> Result<Vec<usize>> {
    let classes = check_label_shape(what, y_true.shape(), y_pred)?;
    y_true
        .as_slice()
        .iter()
        .map(|&v| {
            let f = v.to_f64().unwrap_or(f64::NAN);
            if f >= 0.0 && f.fract() == 0.0 && (f as usize) < classes {
                Ok(f as usize)
            } else {
                Err(Error::InvalidArgument {
                    what: what.to_string(),
                    msg: format!("label {v} is not a class index in 0..{classes}"),
                })
            }
        })
        .collect()
}

impl<T: Element> Loss<T> for SparseCategoricalCrossentropy {
    fn name(&self) -> &'static str {
        "sparse_categorical_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn per_sample(&self, y_true: &Tensor<T>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let labels = class_labels("loss sparse_categorical_crossentropy", y_true, y_pred)?;
        self.per_sample_of_labels(&labels, y_pred)
    }
    fn per_sample_int(&self, y_true: &Tensor<i64>, y_pred: &Tensor<T>) -> Result<Tensor<T>> {
        let labels = int_class_labels("loss sparse_categorical_crossentropy", y_true, y_pred)?;
        self.per_sample_of_labels(&labels, y_pred)
    }
    fn get_config(&self) -> Value {
        json!({
            "name": "sparse_categorical_crossentropy",
            "from_logits": self.from_logits,
            "reduction": self.reduction,
        })
    }
}
