//! `gradcheck`: tape gradients against central finite differences, in f64.

use rime_tensor::{Tensor, seeded_rng};

use crate::{Error, GradientTape, Result};

/// Tolerances for [`gradcheck`]. An element passes when
/// `|analytic - numeric| <= atol + rtol * |numeric|`.
///
/// ```
/// use rime_tape::{gradcheck, GradcheckOptions};
/// use rime_tensor::Tensor;
/// // a function evaluated in f32 needs a coarser step and tolerance
/// let coarse = GradcheckOptions { eps: 1e-2, atol: 1e-3, rtol: 1e-3, ..Default::default() };
/// let x = Tensor::vector(vec![0.5f64, -1.0]);
/// let f = |v: &[Tensor<f64>]| Ok(v[0].cast::<f32>().square().cast::<f64>());
/// assert!(gradcheck(f, &[x], &coarse).is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Seed of the random projection of a non-scalar output.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-4,
            seed: 0,
        }
    }
}

/// What a passing check compared.
///
/// ```
/// use rime_tape::{gradcheck, GradcheckOptions};
/// use rime_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.1f64, 0.2, 0.3, 0.4], [2, 2])?;
/// let report = gradcheck(|v| Ok(v[0].exp().sum_all()), &[x], &GradcheckOptions::default()).unwrap();
/// assert_eq!(report.checked, 4);
/// assert!(report.max_abs_error < 1e-8);
/// # Ok::<(), rime_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest `|analytic - numeric|`.
    pub max_abs_error: f64,
}

/// Why a check failed.
///
/// ```
/// use rime_tape::{custom_gradient, gradcheck, GradcheckError, GradcheckOptions};
/// use rime_tensor::Tensor;
/// // a hand-written gradient that is off by a factor of 2
/// let f = |v: &[Tensor<f64>]| {
///     custom_gradient("bad", &[&v[0]], |xs| Ok(xs[0].square()), |xs, _, dy| {
///         Ok(vec![Some(dy.mul(&xs[0])?)])
///     })
/// };
/// let x = Tensor::vector(vec![3.0f64]);
/// match gradcheck(f, &[x], &GradcheckOptions::default()) {
///     Err(GradcheckError::Mismatch { input, index, analytic, numeric }) => {
///         assert_eq!((input, index), (0, vec![0]));
///         assert!((analytic - 3.0).abs() < 1e-12 && (numeric - 6.0).abs() < 1e-6);
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GradcheckError {
    /// An analytic and a numeric partial derivative disagree; this is the
    /// element with the largest excess over the tolerance.
    #[error(
        "gradcheck: input {input} at index {index:?}: analytic {analytic:e}, numeric {numeric:e}"
    )]
    Mismatch {
        /// Which input.
        input: usize,
        /// The element's multi-index.
        index: Vec<usize>,
        /// The tape's value.
        analytic: f64,
        /// The finite-difference value.
        numeric: f64,
    },
    /// The function or the tape returned an error.
    #[error("gradcheck: {0}")]
    Failed(#[from] Error),
}

/// Checks the tape's gradients of `f` at `inputs` against central
/// differences. A non-scalar output is projected on a fixed random vector
/// (seeded), so every output element's gradient is exercised; a
/// one-element output is used as it is, so a mismatch reports its true
/// partial derivatives.
///
/// `f` may use tapes of its own (a gradient penalty, a Hessian-vector
/// product): gradcheck's tape then checks the derivative of that gradient
/// computation.
///
/// ```
/// use rime_tape::{gradcheck, GradcheckOptions};
/// use rime_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], [3]).unwrap();
/// let y = Tensor::from_vec(vec![1.5], [1]).unwrap();
/// let report = gradcheck(|v| Ok(v[0].tanh().mul(&v[1])?), &[x, y], &GradcheckOptions::default()).unwrap();
/// assert_eq!(report.checked, 4);
/// ```
pub fn gradcheck<F>(
    f: F,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<GradcheckReport, GradcheckError>
where
    F: Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>,
{
    // fresh identities, so repeated inputs are separate sources
    let xs: Vec<Tensor<f64>> = inputs.iter().map(|x| x.detach()).collect();
    // not under `no_record`: `f` may compute gradients with tapes of its
    // own, and ops on the fresh, unwatched `xs` are not recorded anyway
    let probe = f(&xs)?;
    let v = if probe.len() == 1 {
        Tensor::ones_like(&probe)
    } else {
        Tensor::<f64>::rand_normal(
            probe.shape().clone(),
            0.0,
            1.0,
            &mut seeded_rng(options.seed),
        )
        .map_err(Error::from)?
    };
    let project = |y: Tensor<f64>| -> Result<f64> { Ok(y.mul(&v)?.sum_all().to_scalar()?) };

    let analytic: Vec<Option<Tensor<f64>>> = {
        let tape = GradientTape::new();
        xs.iter().for_each(|x| tape.watch(x));
        let y = f(&xs)?;
        let loss = y.mul(&v).map_err(Error::from)?.sum_all();
        match tape.gradient(&loss, &xs) {
            Ok(g) => g,
            Err(Error::TargetNotRecorded { .. }) => vec![None; xs.len()],
            Err(e) => return Err(e.into()),
        }
    };

    let mut worst: Option<(f64, GradcheckError)> = None;
    let mut report = GradcheckReport {
        checked: 0,
        max_abs_error: 0.0,
    };
    for (i, x) in xs.iter().enumerate() {
        let strides = x.shape().strides();
        for j in 0..x.len() {
            let at = |delta: f64| -> Result<f64> {
                let mut p = x.to_vec();
                p[j] += delta;
                let mut args = xs.clone();
                args[i] = Tensor::from_vec(p, x.shape().clone())?;
                project(f(&args)?)
            };
            let numeric = (at(options.eps)? - at(-options.eps)?) / (2.0 * options.eps);
            let a = analytic[i].as_ref().map_or(0.0, |g| g.as_slice()[j]);
            let err = (a - numeric).abs();
            report.checked += 1;
            report.max_abs_error = report.max_abs_error.max(err);
            let excess = err - (options.atol + options.rtol * numeric.abs());
            if excess > 0.0 && worst.as_ref().is_none_or(|(w, _)| excess > *w) {
                let index = strides
                    .iter()
                    .zip(x.dims())
                    .map(|(s, d)| (j / s) % d)
                    .collect();
                worst = Some((
                    excess,
                    GradcheckError::Mismatch {
                        input: i,
                        index,
                        analytic: a,
                        numeric,
                    },
                ));
            }
        }
    }
    match worst {
        Some((_, e)) => Err(e),
        None => Ok(report),
    }
}
