//! Weight initializers with Keras 3's formulas, seeded and portable.
//!
//! An initializer with `seed: Some(s)` gives the same values every time; with
//! `None` it draws its seed from rime's global seed stream (see
//! [`set_global_seed`]), so a program that creates its layers in the same
//! order gets the same weights on every run and platform.

use std::sync::Mutex;

use rand::RngExt;
use rime_tensor::{Element, Shape, Tensor, seeded_rng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

static GLOBAL_SEED: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Restarts the global seed stream that unseeded initializers (and dropout
/// layers) draw from.
///
/// ```
/// use rime_layers::initializers::{set_global_seed, Initializer};
/// set_global_seed(42);
/// let a = Initializer::glorot_uniform().init::<f32>(&[3, 2].into())?;
/// set_global_seed(42);
/// let b = Initializer::glorot_uniform().init::<f32>(&[3, 2].into())?;
/// assert_eq!(a, b);
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn set_global_seed(seed: u64) {
    *GLOBAL_SEED.lock().unwrap_or_else(|p| p.into_inner()) = (seed, 0);
}

/// The next seed of the global stream.
pub fn next_seed() -> u64 {
    let mut g = GLOBAL_SEED.lock().unwrap_or_else(|p| p.into_inner());
    let (base, n) = *g;
    g.1 += 1;
    // decorrelate consecutive draws of one base seed
    seeded_rng(base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))).random()
}

/// How a weight is initialized. Defaults follow Keras 3 (e.g.
/// `RandomNormal` has stddev 0.05).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name", rename_all = "snake_case")]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element `value`.
    Constant {
        /// The value.
        value: f64,
    },
    /// Uniform in ±√(6 / (fan_in + fan_out)).
    GlorotUniform {
        /// Seed (None: the global stream).
        seed: Option<u64>,
    },
    /// Truncated normal with stddev √(2 / (fan_in + fan_out)) / 0.8796.
    GlorotNormal {
        /// Seed.
        seed: Option<u64>,
    },
    /// Uniform in ±√(6 / fan_in).
    HeUniform {
        /// Seed.
        seed: Option<u64>,
    },
    /// Truncated normal with stddev √(2 / fan_in) / 0.8796.
    HeNormal {
        /// Seed.
        seed: Option<u64>,
    },
    /// Truncated normal with stddev √(1 / fan_in) / 0.8796.
    LecunNormal {
        /// Seed.
        seed: Option<u64>,
    },
    /// Normal with the given mean and stddev.
    RandomNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
        /// Seed.
        seed: Option<u64>,
    },
    /// Uniform in `[minval, maxval)`.
    RandomUniform {
        /// Lower bound.
        minval: f64,
        /// Upper bound.
        maxval: f64,
        /// Seed.
        seed: Option<u64>,
    },
    /// Normal redrawn beyond two stddevs.
    TruncatedNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
        /// Seed.
        seed: Option<u64>,
    },
    /// A (semi-)orthogonal matrix from the QR decomposition of a normal one,
    /// times `gain`.
    Orthogonal {
        /// Multiplier.
        gain: f64,
        /// Seed.
        seed: Option<u64>,
    },
}

/// Keras' `compute_fans`: (fan_in, fan_out) of a weight shape.
fn compute_fans(shape: &Shape) -> (f64, f64) {
    let d = shape.dims();
    let (i, o) = match d.len() {
        0 => (1, 1),
        1 => (d[0], d[0]),
        2 => (d[0], d[1]),
        r => {
            let receptive: usize = d[..r - 2].iter().product();
            (d[r - 2] * receptive, d[r - 1] * receptive)
        }
    };
    (i as f64, o as f64)
}

enum Distribution {
    Uniform,
    TruncatedNormal,
}

impl Initializer {
    /// Glorot (Xavier) uniform with a seed from the global stream (Keras'
    /// default kernel initializer).
    pub fn glorot_uniform() -> Self {
        Initializer::GlorotUniform { seed: None }
    }

    /// `RandomNormal(mean 0, stddev 0.05)`, Keras' defaults.
    pub fn random_normal() -> Self {
        Initializer::RandomNormal {
            mean: 0.0,
            stddev: 0.05,
            seed: None,
        }
    }

    /// `RandomUniform(-0.05, 0.05)`, Keras' defaults (the Embedding default).
    pub fn random_uniform() -> Self {
        Initializer::RandomUniform {
            minval: -0.05,
            maxval: 0.05,
            seed: None,
        }
    }

    /// The Keras name of this initializer, e.g. `glorot_uniform`.
    pub fn name(&self) -> &'static str {
        match self {
            Initializer::Zeros => "zeros",
            Initializer::Ones => "ones",
            Initializer::Constant { .. } => "constant",
            Initializer::GlorotUniform { .. } => "glorot_uniform",
            Initializer::GlorotNormal { .. } => "glorot_normal",
            Initializer::HeUniform { .. } => "he_uniform",
            Initializer::HeNormal { .. } => "he_normal",
            Initializer::LecunNormal { .. } => "lecun_normal",
            Initializer::RandomNormal { .. } => "random_normal",
            Initializer::RandomUniform { .. } => "random_uniform",
            Initializer::TruncatedNormal { .. } => "truncated_normal",
            Initializer::Orthogonal { .. } => "orthogonal",
        }
    }

    /// A tensor of `shape` initialized by this rule.
    ///
    /// ```
    /// use rime_layers::initializers::Initializer;
    /// let w = Initializer::HeUniform { seed: Some(1) }.init::<f64>(&[400, 100].into())?;
    /// let limit = (6.0f64 / 400.0).sqrt();
    /// assert!(w.as_slice().iter().all(|v| v.abs() <= limit));
    /// assert!(Initializer::Orthogonal { gain: 1.0, seed: Some(1) }.init::<f32>(&[3].into()).is_err());
    /// # Ok::<(), rime_layers::Error>(())
    /// ```
    pub fn init<T: Element>(&self, shape: &Shape) -> Result<Tensor<T>> {
        let seed = |s: &Option<u64>| s.unwrap_or_else(next_seed);
        let (fan_in, fan_out) = compute_fans(shape);
        let scaled =
            |scale: f64, fan: f64, dist: Distribution, s: &Option<u64>| -> Result<Tensor<T>> {
                let scale = scale / fan.max(1.0);
                let rng = &mut seeded_rng(seed(s));
                Ok(match dist {
                    Distribution::Uniform => {
                        let limit = (3.0 * scale).sqrt();
                        Tensor::rand_uniform(shape.clone(), -limit, limit, rng)?
                    }
                    Distribution::TruncatedNormal => {
                        let std = scale.sqrt() / 0.879_625_661_034_239_8;
                        Tensor::rand_truncated_normal(shape.clone(), 0.0, std, rng)?
                    }
                })
            };
        let avg = (fan_in + fan_out) / 2.0;
        match self {
            Initializer::Zeros => Ok(Tensor::zeros(shape.clone())?),
            Initializer::Ones => Ok(Tensor::ones(shape.clone())?),
            Initializer::Constant { value } => Ok(Tensor::full(shape.clone(), T::of(*value))?),
            Initializer::GlorotUniform { seed } => scaled(1.0, avg, Distribution::Uniform, seed),
            Initializer::GlorotNormal { seed } => {
                scaled(1.0, avg, Distribution::TruncatedNormal, seed)
            }
            Initializer::HeUniform { seed } => scaled(2.0, fan_in, Distribution::Uniform, seed),
            Initializer::HeNormal { seed } => {
                scaled(2.0, fan_in, Distribution::TruncatedNormal, seed)
            }
            Initializer::LecunNormal { seed } => {
                scaled(1.0, fan_in, Distribution::TruncatedNormal, seed)
            }
            Initializer::RandomNormal {
                mean,
                stddev,
                seed: s,
            } => Ok(Tensor::rand_normal(
                shape.clone(),
                *mean,
                *stddev,
                &mut seeded_rng(seed(s)),
            )?),
            Initializer::RandomUniform {
                minval,
                maxval,
                seed: s,
            } => Ok(Tensor::rand_uniform(
                shape.clone(),
                *minval,
                *maxval,
                &mut seeded_rng(seed(s)),
            )?),
            Initializer::TruncatedNormal {
                mean,
                stddev,
                seed: s,
            } => Ok(Tensor::rand_truncated_normal(
                shape.clone(),
                *mean,
                *stddev,
                &mut seeded_rng(seed(s)),
            )?),
            Initializer::Orthogonal { gain, seed: s } => orthogonal(shape, *gain, seed(s)),
        }
    }
}

/// Keras' `Orthogonal`: QR of a normal `max(r, c) × min(r, c)` matrix, `Q`
/// with columns signed by `diag(R)`, transposed if there are fewer rows.
fn orthogonal<T: Element>(shape: &Shape, gain: f64, seed: u64) -> Result<Tensor<T>> {
    if shape.rank() < 2 {
        return Err(Error::InvalidArgument {
            what: "Orthogonal initializer".into(),
            msg: format!("needs a shape of rank >= 2, got {shape}"),
        });
    }
    let cols = shape[shape.rank() - 1];
    let rows = shape.numel() / cols.max(1);
    let (m, n) = (rows.max(cols), rows.min(cols));
    let a = Tensor::<f64>::rand_normal([m, n], 0.0, 1.0, &mut seeded_rng(seed))?.to_vec();
    let q = thin_q(&a, m, n);
    let mut out = vec![T::zero(); rows * cols];
    for i in 0..m {
        for j in 0..n {
            let (r, c) = if rows < cols { (j, i) } else { (i, j) };
            out[r * cols + c] = T::of(gain * q[i * n + j]);
        }
    }
    Ok(Tensor::from_vec(out, shape.clone())?)
}

/// The `m×n` factor `Q` (m >= n) of `A = QR` by Householder reflections,
/// with column signs chosen so `diag(R) >= 0` (what `q * sign(diag(r))`
/// gives after LAPACK's QR).
fn thin_q(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut r = a.to_vec();
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(n);
    for k in 0..n {
        let norm: f64 = (k..m).map(|i| r[i * n + k].powi(2)).sum::<f64>().sqrt();
        let mut v: Vec<f64> = (k..m).map(|i| r[i * n + k]).collect();
        let alpha = if v[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vnorm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if vnorm > 0.0 {
            v.iter_mut().for_each(|x| *x /= vnorm);
            for j in 0..n {
                let dot: f64 = (k..m).map(|i| v[i - k] * r[i * n + j]).sum();
                for i in k..m {
                    r[i * n + j] -= 2.0 * v[i - k] * dot;
                }
            }
        }
        vs.push(v);
    }
    // Q = H_0 H_1 ... H_{n-1} applied to the first n columns of I
    let mut q = vec![0.0; m * n];
    for j in 0..n {
        q[j * n + j] = 1.0;
    }
    for k in (0..n).rev() {
        let v = &vs[k];
        for j in 0..n {
            let dot: f64 = (k..m).map(|i| v[i - k] * q[i * n + j]).sum();
            for i in k..m {
                q[i * n + j] -= 2.0 * v[i - k] * dot;
            }
        }
    }
    // make diag(R) non-negative
    for j in 0..n {
        if r[j * n + j] < 0.0 {
            for i in 0..m {
                q[i * n + j] = -q[i * n + j];
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        for (r, c) in [(5, 3), (3, 5), (4, 4)] {
            let w = Initializer::Orthogonal {
                gain: 1.0,
                seed: Some(3),
            }
            .init::<f64>(&[r, c].into())
            .unwrap();
            let g = if r >= c {
                w.matmul_t(&w, true, false)
            } else {
                w.matmul_t(&w, false, true)
            }
            .unwrap();
            let k = r.min(c);
            for i in 0..k {
                for j in 0..k {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((g.get(&[i, j]).unwrap() - want).abs() < 1e-12, "{r}x{c}");
                }
            }
        }
    }

    #[test]
    fn variance_scaling_limits_and_spread() {
        let w = Initializer::GlorotUniform { seed: Some(0) }
            .init::<f64>(&[300, 200].into())
            .unwrap();
        let limit = (6.0f64 / 500.0).sqrt();
        assert!(w.as_slice().iter().all(|v| v.abs() <= limit));
        // uniform variance limit²/3
        let var = w.var(&[], false).unwrap().to_scalar().unwrap();
        assert!((var - limit * limit / 3.0).abs() < 0.05 * limit * limit / 3.0);
        let n = Initializer::HeNormal { seed: Some(0) }
            .init::<f64>(&[1000, 50].into())
            .unwrap();
        let std = (2.0f64 / 1000.0).sqrt() / 0.879_625_661_034_239_8;
        assert!(n.as_slice().iter().all(|v| v.abs() <= 2.0 * std));
        // a normal truncated at 2σ keeps 0.774 of its variance: Keras' constant undoes it
        let var = n.var(&[], false).unwrap().to_scalar().unwrap();
        assert!((var.sqrt() - (2.0f64 / 1000.0).sqrt()).abs() < 0.03 * (2.0f64 / 1000.0).sqrt());
    }

    #[test]
    fn fans_follow_keras() {
        assert_eq!(compute_fans(&Shape::from([])), (1.0, 1.0));
        assert_eq!(compute_fans(&Shape::from([7])), (7.0, 7.0));
        assert_eq!(compute_fans(&Shape::from([3, 3, 4, 8])), (36.0, 72.0));
    }

    #[test]
    fn unseeded_draws_differ_and_constants_are_exact() {
        let a = Initializer::glorot_uniform()
            .init::<f32>(&[4].into())
            .unwrap();
        let b = Initializer::glorot_uniform()
            .init::<f32>(&[4].into())
            .unwrap();
        assert_ne!(a, b);
        let c = Initializer::Constant { value: 0.5 }
            .init::<f32>(&[2].into())
            .unwrap();
        assert_eq!(c.to_vec(), vec![0.5, 0.5]);
    }

    #[test]
    fn serde_round_trip() {
        let i = Initializer::RandomNormal {
            mean: 1.0,
            stddev: 2.0,
            seed: Some(5),
        };
        let j: Initializer = serde_json::from_value(serde_json::to_value(&i).unwrap()).unwrap();
        assert_eq!(i, j);
        assert_eq!(
            serde_json::to_value(Initializer::Zeros).unwrap()["class_name"],
            "zeros"
        );
    }
}
