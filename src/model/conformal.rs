//! Online conformal quantile tracking: one bound of a calibrated interval.
//!
//! Conformal PID control (Angelopoulos, Candès and Tibshirani 2023, "Conformal
//! PID Control for Time Series Prediction", §2): a bound `q` on a score
//! (here a forecast's residual in units of the stream's scale) moves after
//! each scored forecast by
//!
//! ```text
//! q ← q + η (miss − α) + integrator,   miss = 1{score > q}
//! ```
//!
//! That is quantile tracking (online gradient descent on the pinball loss).
//! Its long-run miss rate is within `(B + η) / (η T)` of `α` for scores
//! bounded by `B`, whatever the sequence: a guarantee under drift, with no
//! exchangeability assumed (their Proposition 1). The bound issued adds an
//! integrator on the running sum of `miss − α`, saturated so that it never
//! exceeds `K_I` (their eq. 6 with `tanh` as the saturation): it reacts to
//! sustained under- or over-coverage faster than the tracked quantile alone,
//! and, being bounded, keeps the guarantee (with `B + K_I` for `B`).
//!
//! This module holds the pure update; where the trackers live (per stream,
//! horizon step, target and level) is the caller's.

/// The settings shared by every tracker of a forecaster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pid {
    /// Step size `η`, in score units (scores are scaled residuals, so ~0.05).
    pub lr: f32,
    /// Integrator gain `K_I` (0 turns the integrator off).
    pub ki: f32,
    /// The integrator saturates when the miss count drifts this far from its
    /// target (`C_sat` in the paper): the term never exceeds `K_I` in size.
    pub saturation: f32,
}

impl Default for Pid {
    fn default() -> Self {
        Pid {
            lr: 0.05,
            ki: 0.5,
            saturation: 50.0,
        }
    }
}

/// One bound: the tracked quantile and the running sum of `miss − α`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tracker {
    /// The current bound on the score.
    pub q: f32,
    /// Σ (miss − α) over the scored forecasts so far.
    pub drift: f32,
}

impl Tracker {
    /// The tracked quantile plus the integrator, unclamped: what misses are
    /// counted against, so the update is exactly the one the guarantee is for.
    #[inline]
    fn raw(&self, pid: &Pid) -> f32 {
        self.q + pid.ki * (self.drift / pid.saturation).tanh()
    }

    /// The bound to issue now, never below 0 (the interval always holds the
    /// point forecast; clamping only widens it, so coverage only rises).
    #[inline]
    pub fn bound(&self, pid: &Pid) -> f32 {
        self.raw(pid).max(0.0)
    }

    /// Scores one forecast against the tracker as it was when the forecast
    /// was issued, and moves it; `alpha` is the miss rate aimed at. Returns
    /// whether the score missed.
    #[inline]
    pub fn observe(&mut self, score: f32, alpha: f32, pid: &Pid) -> bool {
        let miss = score > self.raw(pid);
        let e = f32::from(u8::from(miss)) - alpha;
        self.drift += e;
        self.q += pid.lr * e;
        miss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::Rng;

    /// Laplace noise of scale `b` (heavy enough tails to make a fixed bound miss).
    fn laplace(rng: &mut Rng, b: f64) -> f64 {
        let u = rng.unit() - 0.5;
        -b * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
    }

    /// The miss rate of one tracker over `scores`.
    fn miss_rate(scores: &[f64], alpha: f32, pid: &Pid) -> f64 {
        let mut t = Tracker::default();
        let misses = scores
            .iter()
            .filter(|&&s| t.observe(s as f32, alpha, pid))
            .count();
        misses as f64 / scores.len() as f64
    }

    #[test]
    fn the_miss_rate_holds_its_target_on_stationary_and_drifting_scores() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let stationary: Vec<f64> = (0..n).map(|_| laplace(&mut rng, 1.0).abs()).collect();
        // The scale triples halfway: a fixed bound would miss far more often after.
        let drifting: Vec<f64> = (0..n)
            .map(|i| laplace(&mut rng, if i < n / 2 { 1.0 } else { 3.0 }).abs())
            .collect();
        for pid in [
            Pid::default(),
            Pid {
                ki: 0.0,
                ..Pid::default()
            },
        ] {
            for alpha in [0.2f32, 0.05] {
                for scores in [&stationary, &drifting] {
                    let rate = miss_rate(scores, alpha, &pid);
                    assert!(
                        (rate - alpha as f64).abs() < 0.01,
                        "alpha {alpha}, ki {}: miss rate {rate}",
                        pid.ki
                    );
                }
            }
        }
    }

    #[test]
    fn the_guarantee_holds_on_an_adversarial_sequence() {
        // Scores that jump between 0 and a large value in long blocks: the
        // bound (B + η) / (η T) of quantile tracking still caps the error.
        let pid = Pid {
            ki: 0.0,
            ..Pid::default()
        };
        let (alpha, b, n) = (0.1f32, 10.0f64, 50_000usize);
        let scores: Vec<f64> = (0..n)
            .map(|i| if (i / 777) % 2 == 0 { 0.0 } else { b })
            .collect();
        let rate = miss_rate(&scores, alpha, &pid);
        let bound = (b + pid.lr as f64) / (pid.lr as f64 * n as f64);
        assert!(
            (rate - alpha as f64).abs() <= bound + 1e-6,
            "{rate} vs {alpha} ± {bound}"
        );
    }

    #[test]
    fn the_bound_is_never_negative() {
        let pid = Pid::default();
        let mut t = Tracker::default();
        for _ in 0..100 {
            t.observe(0.0, 0.5, &pid);
        }
        assert!(t.bound(&pid) >= 0.0);
    }
}
