//! `f32` exp and tanh written with arithmetic and bit operations only, so
//! that loops over them vectorize (the libm calls behind `f32::exp` and
//! `f32::tanh` process one element per call).
//!
//! Both follow Cephes (`expf`, `tanhf`): range reduction by `ln 2` and a
//! degree-5 polynomial; tanh uses an odd polynomial near 0 and
//! `1 - 2 / (e^{2|x|} + 1)` elsewhere. Over the whole `f32` range the
//! relative error is within a few ulp (`f32::EPSILON`-scale), and the
//! special values match: `exp(-inf) = 0`, `exp(inf) = inf`, `tanh(±inf) =
//! ±1`, NaN in gives NaN out. Results depend only on the input, never on the
//! instruction set the loop was vectorized for (no fused multiply-add is
//! introduced).

/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for `f32`.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| <= 2^9
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // beyond these the result is inf / rounds to 0
    let xc = x.clamp_nan_free(-104.0, 89.0);
    let t = xc * LOG2E + ROUND;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = t - ROUND;
    let g = (xc - r * LN2_HI) - r * LN2_LO;
    let p = ((((1.987_569_1e-4 * g + 1.398_199_9e-3) * g + 8.333_452e-3) * g + 4.166_579_6e-2) * g
        + 1.666_666_5e-1)
        * g
        + 0.5;
    let y = p * (g * g) + g + 1.0;
    // 2^n as two normal factors, so results in the subnormal range round
    // correctly and 2^128 overflows to inf
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let e = y * s1 * s2;
    if x.is_nan() { x } else { e }
}

/// `tanh(x)` for `f32`.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    // |x| < 0.625: odd polynomial
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    // otherwise 1 - 2 / (e^{2|x|} + 1), with the sign of x
    let e = exp_f32(2.0 * a.min(44.0));
    let big = 1.0 - 2.0 / (e + 1.0);
    let big = f32::copysign(big, x);
    if a < 0.625 {
        small
    } else if x.is_nan() {
        x
    } else {
        big
    }
}

/// Clamping that vectorizes to plain min/max (NaN handled by the caller).
trait ClampNanFree {
    fn clamp_nan_free(self, lo: Self, hi: Self) -> Self;
}

impl ClampNanFree for f32 {
    #[inline(always)]
    fn clamp_nan_free(self, lo: f32, hi: f32) -> f32 {
        let v = if self < lo { lo } else { self };
        if v > hi { hi } else { v }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error in units of f32::EPSILON against the f64 function.
    fn ulps(got: f32, want: f64) -> f64 {
        if want == 0.0 {
            return if got == 0.0 { 0.0 } else { f64::INFINITY };
        }
        let tiny = f32::MIN_POSITIVE as f64;
        ((got as f64 - want).abs() / want.abs().max(tiny)) / f32::EPSILON as f64
    }

    #[test]
    fn exp_is_accurate_over_the_range() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.7 {
            let e = ulps(exp_f32(x), (x as f64).exp());
            worst = worst.max(e);
            x += 0.000_37;
        }
        assert!(worst < 2.0, "worst relative error {worst} eps");
        // subnormal results: absolute error within one subnormal step
        for x in [-88.0f32, -95.5, -103.0] {
            let want = (x as f64).exp();
            assert!((exp_f32(x) as f64 - want).abs() <= 1.5e-45, "{x}");
        }
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(88.72), (88.72f32 as f64).exp() as f32);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_is_accurate_over_the_range() {
        let mut worst: f64 = 0.0;
        let mut x = -12.0f32;
        while x < 12.0 {
            worst = worst.max(ulps(tanh_f32(x), (x as f64).tanh()));
            x += 0.000_173;
        }
        for x in [1e-30f32, -1e-20, 1e-8, 3e-4, -0.1, 0.624, 0.625, 0.626] {
            worst = worst.max(ulps(tanh_f32(x), (x as f64).tanh()));
        }
        assert!(worst < 3.0, "worst relative error {worst} eps");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }
}
