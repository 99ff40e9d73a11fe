//! `Dropout`: zeroes random inputs in training, scaling the rest up.

use std::sync::Mutex;

use rime_tensor::{Element, PartialShape, Rng, Tensor, seeded_rng};
use serde::{Deserialize, Serialize};

use super::common::{at_build, invalid, known_output, single_shape};
use crate::initializers::next_seed;
use crate::{CallContext, Layer, LayerBase, Result};

/// Dropout's constructor arguments (Keras names).
///
/// ```
/// use rime_layers::DropoutConfig;
/// let c: DropoutConfig = serde_json::from_str(r#"{"rate": 0.5, "noise_shape": [null, 1]}"#).unwrap();
/// assert_eq!(c.noise_shape, Some(vec![None, Some(1)]));
/// assert_eq!(c.seed, None);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropoutConfig {
    /// Layer name (None: automatic).
    #[serde(default)]
    pub name: Option<String>,
    /// Fraction of the inputs to drop, in `[0, 1)`.
    pub rate: f64,
    /// Shape of the mask, broadcast over the input; `None` entries take the
    /// input's size (Keras: `(None, 1, None)` drops whole time steps' features
    /// alike). `None`: the input's shape.
    #[serde(default)]
    pub noise_shape: Option<Vec<Option<usize>>>,
    /// Seed of the mask stream (None: drawn from the global seed stream).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl DropoutConfig {
    /// Drops `rate` of the inputs; no noise shape, no seed.
    pub fn new(rate: f64) -> Self {
        DropoutConfig {
            name: None,
            rate,
            noise_shape: None,
            seed: None,
        }
    }
}

/// Keras' Dropout: in training mode (`training = true`; the `trainable`
/// flag does not matter, as in Keras) each input is zeroed with
/// probability `rate` and the others are scaled by `1 / (1 - rate)`, so the
/// expected output is the input; in inference it is the identity.
///
/// Masks come from a seeded PCG-64 stream, the same on every platform and
/// for `f32` and `f64`: a layer with a seed draws the same sequence of
/// masks on every run; successive calls draw new masks. Without a seed the
/// layer takes one from [`next_seed`](crate::initializers::next_seed).
///
/// ```
/// use rime_layers::{Dropout, Layer};
/// use rime_tensor::Tensor;
/// let drop = Dropout::<f32>::new(0.5).seed(7);
/// let x = Tensor::ones([4, 100])?;
/// assert_eq!(drop.call(&x, false)?, x); // inference: identity
/// let y = drop.call(&x, true)?;
/// assert!(y.as_slice().iter().all(|&v| v == 0.0 || v == 2.0));
/// assert_ne!(drop.call(&x, true)?, y); // a new mask
/// assert!(Dropout::<f32>::new(1.0).call(&x, true).is_err()); // rate must be < 1
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub struct Dropout<T: Element = f32> {
    base: LayerBase<T>,
    config: DropoutConfig,
    rng: Mutex<Rng>,
}

impl<T: Element> Dropout<T> {
    /// Drops `rate` of the inputs in training (a rate outside `[0, 1)` is
    /// reported when the layer is built).
    pub fn new(rate: f64) -> Self {
        Self::unchecked(DropoutConfig::new(rate))
    }

    /// From a full config; errors unless `0 <= rate < 1` or if a noise
    /// shape entry is 0.
    pub fn from_config(config: DropoutConfig) -> Result<Self> {
        Self::validate(&config)?;
        Ok(Self::unchecked(config))
    }

    fn unchecked(config: DropoutConfig) -> Self {
        Dropout {
            base: LayerBase::new("Dropout", config.name.clone()),
            rng: Mutex::new(seeded_rng(config.seed.unwrap_or_else(next_seed))),
            config,
        }
    }

    fn validate(config: &DropoutConfig) -> Result<()> {
        if !(0.0..1.0).contains(&config.rate) {
            return Err(invalid(
                "Dropout",
                format!("rate must be in [0, 1), got {}", config.rate),
            ));
        }
        if let Some(ns) = &config.noise_shape
            && ns.contains(&Some(0))
        {
            return Err(invalid(
                "Dropout",
                format!("noise_shape entries must be > 0 or None, got {ns:?}"),
            ));
        }
        Ok(())
    }

    /// Restarts the mask stream from `seed` (and records it in the config).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self.rng = Mutex::new(seeded_rng(seed));
        self
    }

    /// Sets the noise shape (`None` entries take the input's size).
    pub fn noise_shape(mut self, shape: Vec<Option<usize>>) -> Self {
        self.config.noise_shape = Some(shape);
        self
    }

    /// The config.
    pub fn config(&self) -> &DropoutConfig {
        &self.config
    }

    /// The mask's shape for an input of this shape (unknown input sizes
    /// fit any noise size).
    fn mask_shape(&self, x: &PartialShape) -> Result<PartialShape> {
        let Some(ns) = &self.config.noise_shape else {
            return Ok(x.clone());
        };
        let bad = || {
            self.base.bad_input(
                std::slice::from_ref(x),
                format!("noise_shape {ns:?} does not broadcast to the input"),
            )
        };
        if ns.len() != x.rank() {
            return Err(bad());
        }
        ns.iter()
            .zip(x.dims())
            .map(|(n, &d)| match (n, d) {
                (None, d) => Ok(d),
                (Some(n), Some(d)) if *n != d && *n != 1 => Err(bad()),
                (Some(n), _) => Ok(Some(*n)),
            })
            .collect::<Result<Vec<Option<usize>>>>()
            .map(PartialShape::from)
    }
}

impl<T: Element> Layer<T> for Dropout<T> {
    fn base(&self) -> &LayerBase<T> {
        &self.base
    }

    fn class_name(&self) -> &'static str {
        "Dropout"
    }

    fn build(&self, _input_shapes: &[PartialShape]) -> Result<()> {
        Self::validate(&self.config).map_err(|e| at_build(&self.base, e))
    }

    fn random_stream(&self) -> Option<&Mutex<Rng>> {
        Some(&self.rng)
    }

    fn call_with(&self, inputs: &[Tensor<T>], ctx: CallContext) -> Result<Vec<Tensor<T>>> {
        let x = self.base.single(inputs)?;
        let rate = self.config.rate;
        if !ctx.training || rate == 0.0 {
            return Ok(vec![x.clone()]);
        }
        let shape = self.mask_shape(&x.shape().into())?;
        let shape = known_output(&self.base, &[x.shape().clone()], shape)?;
        // drawn in f64 so f32 and f64 layers with one seed drop alike
        let u = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            Tensor::<f64>::rand_uniform(shape.clone(), 0.0, 1.0, &mut *rng)?
        };
        let scale = T::of(1.0 / (1.0 - rate));
        let mask: Vec<T> = u
            .as_slice()
            .iter()
            .map(|&u| if u >= rate { scale } else { T::zero() })
            .collect();
        Ok(vec![x.mul(&Tensor::from_vec(mask, shape)?)?])
    }

    fn compute_output_shape(&self, input_shapes: &[PartialShape]) -> Result<Vec<PartialShape>> {
        self.build(input_shapes)?;
        let s = single_shape(&self.base, input_shapes, 0)?;
        self.mask_shape(s)?;
        Ok(vec![s.clone()])
    }

    fn get_config(&self) -> serde_json::Value {
        let mut c = self.config.clone();
        c.name = Some(self.base.name().to_string());
        serde_json::to_value(c).expect("configs serialize")
    }
}

layer_builders!(Dropout);
