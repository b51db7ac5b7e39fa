//! Per-stream input scaling: `z = (x - mean) / std`, per column.
//!
//! Statistics are kept in `f64` whatever the model's element type, so a stream
//! that runs for months does not lose precision in its running mean.

use serde::{Deserialize, Serialize};

/// How a stream's values are scaled before they reach the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Values go in as they are.
    None,
    /// Running (Welford) mean and population variance, updated with every event.
    Running,
    /// Running statistics over a stream's first `normalize_events` events, then frozen.
    Warmup,
}

/// Whether a normaliser is still learning its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPhase {
    /// Identity scaling.
    Off,
    /// Welford updates on every event.
    Running,
    /// Fixed statistics (after a warm-up, or supplied).
    Frozen,
}

/// One stream's scaling statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    /// The phase.
    pub phase: NormPhase,
    /// Events folded into the statistics.
    pub count: u64,
    /// Per-column mean.
    pub mean: Box<[f64]>,
    /// Per-column sum of squared deviations (`Running`) or standard deviation (`Frozen`).
    pub spread: Box<[f64]>,
}

impl Normalizer {
    /// A normaliser for `width` columns in the given mode.
    pub fn new(mode: Normalize, width: usize) -> Self {
        let phase = match mode {
            Normalize::None => NormPhase::Off,
            Normalize::Running | Normalize::Warmup => NormPhase::Running,
        };
        Normalizer {
            phase,
            count: 0,
            mean: vec![0.0; width].into(),
            spread: vec![if phase == NormPhase::Off { 1.0 } else { 0.0 }; width].into(),
        }
    }

    /// Fixed statistics, e.g. from a backtest's warm-up rows. A zero or
    /// non-finite standard deviation is replaced by 1.
    pub fn fixed(mean: &[f64], std: &[f64]) -> Self {
        let spread: Box<[f64]> = std
            .iter()
            .map(|&s| if s > 0.0 && s.is_finite() { s } else { 1.0 })
            .collect();
        Normalizer {
            phase: NormPhase::Frozen,
            count: 0,
            mean: mean.into(),
            spread,
        }
    }

    /// Folds in one event (while running) and freezes after `freeze_after` events if nonzero.
    pub fn observe(&mut self, x: &[f64], freeze_after: u64) {
        if self.phase != NormPhase::Running {
            return;
        }
        self.count += 1;
        let n = self.count as f64;
        for ((m, s), &v) in self.mean.iter_mut().zip(self.spread.iter_mut()).zip(x) {
            let d = v - *m;
            *m += d / n;
            *s += d * (v - *m);
        }
        if freeze_after > 0 && self.count >= freeze_after {
            let n = self.count as f64;
            for s in self.spread.iter_mut() {
                *s = std_of(*s / n);
            }
            self.phase = NormPhase::Frozen;
        }
    }

    /// Standard deviation of column `k` as used for scaling (never zero).
    #[inline]
    pub fn std(&self, k: usize) -> f64 {
        match self.phase {
            NormPhase::Off | NormPhase::Frozen => self.spread[k],
            NormPhase::Running => {
                if self.count < 2 {
                    1.0
                } else {
                    std_of(self.spread[k] / self.count as f64)
                }
            }
        }
    }

    /// Scaled value of `x` in column `k`.
    #[inline]
    pub fn scale(&self, k: usize, x: f64) -> f64 {
        (x - self.mean[k]) / self.std(k)
    }

    /// Original-units value of the scaled `z` in column `k`.
    #[inline]
    pub fn unscale(&self, k: usize, z: f64) -> f64 {
        z * self.std(k) + self.mean[k]
    }

    /// True when every statistic is finite.
    pub fn is_finite(&self) -> bool {
        self.mean
            .iter()
            .chain(self.spread.iter())
            .all(|v| v.is_finite())
    }
}

/// Standard deviation from a variance; a degenerate (constant) column scales by 1.
fn std_of(var: f64) -> f64 {
    if var > 1e-24 && var.is_finite() {
        var.sqrt()
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_two_pass_and_freezes() {
        let xs = [3.0, 7.5, -1.25, 4.0, 10.0, 2.5];
        let mut n = Normalizer::new(Normalize::Warmup, 1);
        for &x in &xs[..4] {
            n.observe(&[x], 4);
        }
        let mean = xs[..4].iter().sum::<f64>() / 4.0;
        let var = xs[..4].iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        assert_eq!(n.phase, NormPhase::Frozen);
        assert!((n.mean[0] - mean).abs() < 1e-12);
        assert!((n.std(0) - var.sqrt()).abs() < 1e-12);
        n.observe(&[1000.0], 4); // frozen: ignored
        assert!((n.mean[0] - mean).abs() < 1e-12);
        let z = n.scale(0, 5.0);
        assert!((n.unscale(0, z) - 5.0).abs() < 1e-12);

        let mut r = Normalizer::new(Normalize::Running, 1);
        for &x in &xs {
            r.observe(&[x], 0);
        }
        let mean = xs.iter().sum::<f64>() / 6.0;
        assert!((r.mean[0] - mean).abs() < 1e-12);
        assert_eq!(r.phase, NormPhase::Running);

        let off = Normalizer::new(Normalize::None, 2);
        assert_eq!(off.scale(1, 4.0), 4.0);
        let fixed = Normalizer::fixed(&[1.0], &[0.0]);
        assert_eq!(fixed.std(0), 1.0);
    }
}
