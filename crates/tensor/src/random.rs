//! Seeded random tensors. The generator is PCG-64 (`rand_pcg`), which gives
//! the same stream on every platform, and values are drawn in `f64` and
//! rounded, so one seed gives the same numbers for `f32` and `f64` tensors.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::{Element, Error, Result, Shape, Tensor};

/// The portable seeded generator rime uses everywhere (initializers,
/// dropout, data shuffling in the examples).
pub type Rng = rand_pcg::Pcg64;

/// A generator from a seed.
///
/// ```
/// use rime_tensor::{seeded_rng, Tensor};
/// let a = Tensor::<f32>::rand_normal([3], 0.0, 1.0, &mut seeded_rng(7))?;
/// let b = Tensor::<f32>::rand_normal([3], 0.0, 1.0, &mut seeded_rng(7))?;
/// assert_eq!(a, b);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
pub fn seeded_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

fn normal(op: &'static str, mean: f64, std: f64) -> Result<Normal<f64>> {
    let valid = mean.is_finite() && std.is_finite() && std >= 0.0;
    match Normal::new(mean, std) {
        Ok(d) if valid => Ok(d),
        _ => Err(Error::InvalidArgument {
            op,
            msg: format!("needs a finite mean and a finite std >= 0, got mean {mean}, std {std}"),
        }),
    }
}

/// A fallibly reserved, empty buffer for the validated element count of
/// `shape`, and that count.
fn buffer<T: crate::Scalar>(op: &'static str, shape: &Shape) -> Result<(Vec<T>, usize)> {
    let n = shape.checked_len::<T>(op)?;
    Ok((crate::kernels::try_buffer(op, n)?, n))
}

impl<T: Element> Tensor<T> {
    /// Uniform values in `[low, high)`.
    ///
    /// ```
    /// use rime_tensor::{seeded_rng, Tensor};
    /// let t = Tensor::<f64>::rand_uniform([100], -1.0, 1.0, &mut seeded_rng(0))?;
    /// assert!(t.as_slice().iter().all(|&v| (-1.0..1.0).contains(&v)));
    /// assert!(Tensor::<f64>::rand_uniform([1], 1.0, 1.0, &mut seeded_rng(0)).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        low: f64,
        high: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let shape = shape.into();
        let dist = Uniform::new(low, high).map_err(|e| Error::InvalidArgument {
            op: "rand_uniform",
            msg: format!("bounds [{low}, {high}): {e}"),
        })?;
        let (mut v, n) = buffer::<T>("rand_uniform", &shape)?;
        v.extend((0..n).map(|_| T::of(dist.sample(rng))));
        Ok(Tensor::from_parts(v, shape))
    }

    /// Normal values with the given mean and standard deviation.
    ///
    /// ```
    /// use rime_tensor::{seeded_rng, Tensor};
    /// let t = Tensor::<f64>::rand_normal([10000], 2.0, 0.5, &mut seeded_rng(1))?;
    /// assert!((t.mean_all().to_scalar()? - 2.0).abs() < 0.02);
    /// assert!(Tensor::<f64>::rand_normal([1], 0.0, -1.0, &mut seeded_rng(0)).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn rand_normal(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let shape = shape.into();
        let dist = normal("rand_normal", mean, std)?;
        let (mut v, n) = buffer::<T>("rand_normal", &shape)?;
        v.extend((0..n).map(|_| T::of(dist.sample(rng))));
        Ok(Tensor::from_parts(v, shape))
    }

    /// Normal values redrawn until within two standard deviations of the
    /// mean (Keras' `TruncatedNormal`).
    ///
    /// ```
    /// use rime_tensor::{seeded_rng, Tensor};
    /// let t = Tensor::<f64>::rand_truncated_normal([1000], 0.0, 1.0, &mut seeded_rng(2))?;
    /// assert!(t.as_slice().iter().all(|v| v.abs() <= 2.0));
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn rand_truncated_normal(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let shape = shape.into();
        let dist = normal("rand_truncated_normal", mean, std)?;
        let (mut v, n) = buffer::<T>("rand_truncated_normal", &shape)?;
        v.extend((0..n).map(|_| {
            loop {
                let s = dist.sample(rng);
                if (s - mean).abs() <= 2.0 * std {
                    break T::of(s);
                }
            }
        }));
        Ok(Tensor::from_parts(v, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_across_dtypes() {
        let a = Tensor::<f64>::rand_uniform([5], 0.0, 1.0, &mut seeded_rng(9)).unwrap();
        let b = Tensor::<f32>::rand_uniform([5], 0.0, 1.0, &mut seeded_rng(9)).unwrap();
        assert_eq!(a.cast::<f32>(), b);
        let c = Tensor::<f64>::rand_uniform([5], 0.0, 1.0, &mut seeded_rng(10)).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let r = &mut seeded_rng(0);
        assert!(matches!(
            Tensor::<f32>::rand_uniform([1], 2.0, 1.0, r),
            Err(Error::InvalidArgument {
                op: "rand_uniform",
                ..
            })
        ));
        assert!(matches!(
            Tensor::<f32>::rand_normal([1], 0.0, f64::NAN, r),
            Err(Error::InvalidArgument {
                op: "rand_normal",
                ..
            })
        ));
    }
}
