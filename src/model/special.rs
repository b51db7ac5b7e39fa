//! Small numerical functions the calibration runs on every event or at
//! start: an exponential without a call, the pinball loss, and the normal
//! quantile.

/// `e^x` to a relative error below 1e-6 for `x` in [−20, 20] (clamped
/// there), without a branch or a call (see [`exp_in`]).
#[inline(always)]
pub fn exp_approx(x: f64) -> f64 {
    exp_in::<-20, 20>(x)
}

/// `e^x` to a relative error below 1e-6 for `x` in [−700, 0] (clamped
/// there; `e^−700` is 1e-304, still a normal number): the tail
/// probabilities of the anomaly scores, which come far smaller than
/// [`exp_approx`]'s range reaches.
#[inline(always)]
pub fn exp_tail(x: f64) -> f64 {
    exp_in::<-700, 0>(x)
}

/// `e^x` for `x` clamped to [`LO`, `HI`] (within ±708, where `e^x` and the
/// power of two below are normal numbers), without a branch or a call:
/// `2^(x log₂ e)` split into the nearest integer `n` (by the float-rounding
/// constant 1.5·2⁵², whose sum with `y` holds `n` in its low bits), set in
/// the exponent bits, and a fraction in [−½, ½], a degree-6 Taylor
/// polynomial (in Estrin's scheme).
#[inline(always)]
fn exp_in<const LO: i32, const HI: i32>(x: f64) -> f64 {
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    let y = x.clamp(f64::from(LO), f64::from(HI)) * std::f64::consts::LOG2_E;
    let t = y + ROUND;
    let n = t - ROUND;
    let f = (y - n) * std::f64::consts::LN_2;
    // Estrin's scheme: three independent pairs, then their sum (by the
    // coefficients' reciprocals: a division by a constant stays a division).
    let f2 = f * f;
    let (c3, c5, c6) = (1.0 / 6.0, 1.0 / 120.0, 1.0 / 720.0);
    let p = (1.0 + f) + f2 * ((0.5 + f * c3) + f2 * ((1.0 / 24.0 + f * c5) + f2 * c6));
    // The low bits of t are n + 2^51; 2^n's bits are (n + 1023) << 52.
    let bits = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023) << 52;
    p * f64::from_bits(bits)
}

/// The pinball loss of the bound `b` on `x` for the `1 − alpha` quantile.
#[inline(always)]
pub fn pinball(b: f64, x: f64, alpha: f64) -> f64 {
    // Both sides, then a select: which one applies is the data's coin toss,
    // and a branch on it was mispredicted on every miss of a bound.
    let (above, below) = ((x - b) * (1.0 - alpha), (b - x) * alpha);
    if x > b { above } else { below }
}

/// The standard normal quantile at `p` in (0, 1) (Acklam's rational
/// approximation, relative error below 1.2e-9): only for starting bounds.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `exp` against `f64::exp` to a relative 1e-6 at every
    /// hundredth in `lo..=hi` (in hundredths).
    fn assert_exact_to_a_millionth(exp: fn(f64) -> f64, lo: i32, hi: i32) {
        for i in lo..=hi {
            let x = f64::from(i) / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "e^{x}: {got} against {want}"
            );
        }
    }

    #[test]
    fn the_exponential_is_exact_to_a_millionth() {
        assert_exact_to_a_millionth(exp_approx, -2000, 2000);
        assert_eq!(exp_approx(-1e300), exp_approx(-20.0), "clamped");
    }

    #[test]
    fn the_tail_exponential_is_exact_to_a_millionth_down_to_minus_700() {
        assert_exact_to_a_millionth(exp_tail, -70_000, 0);
        assert_eq!(exp_tail(-1e300), exp_tail(-700.0), "clamped below");
        assert_eq!(exp_tail(5.0), 1.0, "clamped above");
    }

    #[test]
    fn the_normal_quantile_matches_tables() {
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(0.1) + 1.281_551_566).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306).abs() < 1e-8);
    }

    #[test]
    fn the_pinball_loss_weighs_each_side_by_its_level() {
        assert!(
            (pinball(1.0, 3.0, 0.1) - 1.8).abs() < 1e-12,
            "above: 0.9 per unit"
        );
        assert!(
            (pinball(1.0, 0.0, 0.1) - 0.1).abs() < 1e-12,
            "below: 0.1 per unit"
        );
    }
}
