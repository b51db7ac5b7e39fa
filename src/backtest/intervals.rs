//! Scores of prediction intervals, and the baseline they are held against.
//!
//! For each level `L` (miss rate `α = 1 − L`), over the scored forecast
//! components: the coverage (share of actual values inside), the mean width,
//! the interval score of Winkler (1972) / Gneiting and Raftery (2007, §6.2),
//! `width + (2/α)·(lo − y)·1{y < lo} + (2/α)·(y − hi)·1{y > hi}`, and the
//! pinball loss averaged over the two bounds as the `α/2` and `1 − α/2`
//! quantiles. Lower is better for both scores.
//!
//! The baseline is rolling split conformal prediction on the same point
//! forecasts: per stream and forecast component, the interval `ŷ ± q` with
//! `q` the `⌈(n + 1)·L⌉`-th smallest of the last `n ≤` [`WINDOW`] absolute
//! errors observed before the forecast was made (the largest of them while
//! `n` is too small for that rank).

use std::collections::VecDeque;

use serde::Serialize;

/// Absolute errors the split-conformal baseline keeps per stream and component.
pub const WINDOW: usize = 500;

/// Running sums of one interval forecaster at one level.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntervalSums {
    n: u64,
    inside: u64,
    width: f64,
    winkler: f64,
    pinball: f64,
}

impl IntervalSums {
    /// Scores the interval `[lo, hi]` at `level` against the actual `y`.
    pub fn add(&mut self, level: f64, lo: f64, hi: f64, y: f64) {
        let alpha = 1.0 - level;
        let width = hi - lo;
        let mut winkler = width;
        if y < lo {
            winkler += 2.0 / alpha * (lo - y);
        } else if y > hi {
            winkler += 2.0 / alpha * (y - hi);
        }
        let pin = |q: f64, tau: f64| {
            let u = y - q;
            if u >= 0.0 { tau * u } else { (tau - 1.0) * u }
        };
        self.n += 1;
        self.inside += u64::from(lo <= y && y <= hi);
        self.width += width;
        self.winkler += winkler;
        self.pinball += 0.5 * (pin(lo, alpha / 2.0) + pin(hi, 1.0 - alpha / 2.0));
    }

    /// The means.
    pub fn finish(&self) -> IntervalScores {
        let n = self.n.max(1) as f64;
        let mean = |v: f64| if self.n == 0 { f64::NAN } else { v / n };
        IntervalScores {
            n: self.n,
            coverage: mean(self.inside as f64),
            width: mean(self.width),
            winkler: mean(self.winkler),
            pinball: mean(self.pinball),
        }
    }
}

/// Mean scores of one interval forecaster at one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct IntervalScores {
    /// Components scored.
    pub n: u64,
    /// Share of actual values inside the interval.
    pub coverage: f64,
    /// Mean width.
    pub width: f64,
    /// Mean interval (Winkler) score.
    pub winkler: f64,
    /// Mean pinball loss of the two bounds.
    pub pinball: f64,
}

/// recur's and the baseline's scores at one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LevelScores {
    /// The level.
    pub level: f64,
    /// recur's calibrated intervals.
    pub recur: IntervalScores,
    /// Rolling split conformal on the same forecasts.
    pub split_conformal: IntervalScores,
}

/// recur's and the baseline's sums at one level.
#[derive(Clone, Copy, Debug, Default)]
pub struct LevelSums {
    /// recur's intervals.
    pub recur: IntervalSums,
    /// The baseline's.
    pub split: IntervalSums,
}

impl LevelSums {
    /// The means, labelled with `level`.
    pub fn finish(&self, level: f64) -> LevelScores {
        LevelScores {
            level,
            recur: self.recur.finish(),
            split_conformal: self.split.finish(),
        }
    }
}

/// The last [`WINDOW`] absolute errors of one stream's forecast component,
/// in arrival order and sorted.
#[derive(Clone, Debug, Default)]
pub struct SplitConformal {
    recent: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl SplitConformal {
    /// Adds one observed absolute error (dropping the oldest past [`WINDOW`]).
    pub fn push(&mut self, abs_error: f64) {
        if !abs_error.is_finite() {
            return;
        }
        if self.recent.len() == WINDOW
            && let Some(old) = self.recent.pop_front()
        {
            let at = self.sorted.partition_point(|&v| v < old);
            self.sorted.remove(at);
        }
        self.recent.push_back(abs_error);
        let at = self.sorted.partition_point(|&v| v < abs_error);
        self.sorted.insert(at, abs_error);
    }

    /// The half-width at `level`: `None` before any error was observed.
    pub fn half_width(&self, level: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((n + 1) as f64 * level).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winkler_and_pinball_follow_their_definitions() {
        let mut s = IntervalSums::default();
        // Inside: the score is the width; pinball 0.5·(0.05·1 + 0.05·1) at α = 0.1.
        s.add(0.9, -1.0, 1.0, 0.0);
        let r = s.finish();
        assert_eq!((r.coverage, r.width, r.winkler), (1.0, 2.0, 2.0));
        assert!((r.pinball - 0.05).abs() < 1e-12);
        // Above by 0.5: 2 + (2 / 0.1)·0.5 = 12.
        let mut s = IntervalSums::default();
        s.add(0.9, -1.0, 1.0, 1.5);
        let r = s.finish();
        assert_eq!(r.coverage, 0.0);
        assert!((r.winkler - 12.0).abs() < 1e-12);
        // Pinball: lower bound 0.05·2.5, upper bound 0.95·0.5; mean of the two.
        assert!((r.pinball - 0.5 * (0.05 * 2.5 + 0.95 * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn wide_intervals_hold_on_residuals_that_jump_in_spells() {
        use crate::model::conformal::{Calibration, Pid};
        // Laplace noise of scale 0.1, and in every other spell of 2000
        // events a jump of ±1 one time in ten: the 0.95 quantile is the jump
        // in a spell of jumps and the noise in a calm one. Tracked in units
        // of the mean absolute residual, recur's wide bound scored 1.036 of
        // split conformal's here (0.993 in RMS units, with the fast and slow
        // scales mixed).
        let mut rng = crate::model::rng::Rng::new(11);
        let residuals: Vec<f64> = (0..20_000)
            .map(|i| {
                let jumpy = (i / 2000) % 2 == 1;
                let jump = if jumpy && rng.unit() < 0.1 {
                    if rng.unit() < 0.5 { -1.0 } else { 1.0 }
                } else {
                    0.0
                };
                let u = rng.unit() - 0.5;
                let noise = -0.1 * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln();
                noise + jump
            })
            .collect();
        let level = 0.95;
        let cal = Calibration::new(&[0.8, level], Pid::default()).unwrap();
        let mut cell = vec![0.0f64; cal.cell_len()];
        let (mut split, mut sums) = (SplitConformal::default(), LevelSums::default());
        for (n, &r) in residuals.iter().enumerate() {
            // Both issued before the residual is scored.
            let (lo, hi) = cal.interval(&cell, 1, 0.0);
            sums.recur.add(level, lo, hi, r);
            let q = split.half_width(level).unwrap_or(0.0);
            sums.split.add(level, -q, q, r);
            cal.observe_next(&mut cell, r, n);
            split.push(r.abs());
        }
        let s = sums.finish(level);
        assert!(
            s.recur.winkler <= s.split_conformal.winkler,
            "interval score {} against split conformal's {}",
            s.recur.winkler,
            s.split_conformal.winkler
        );
    }

    #[test]
    fn split_conformal_takes_the_conformal_rank_of_the_last_window() {
        let mut c = SplitConformal::default();
        assert_eq!(c.half_width(0.8), None);
        for e in 1..=9 {
            c.push(e as f64);
        }
        // n = 9: rank ⌈10·0.8⌉ = 8.
        assert_eq!(c.half_width(0.8), Some(8.0));
        // Too few for rank ⌈10·0.95⌉ = 10: the largest.
        assert_eq!(c.half_width(0.95), Some(9.0));
        // Only the last WINDOW errors count.
        for _ in 0..WINDOW {
            c.push(0.5);
        }
        assert_eq!(c.half_width(0.95), Some(0.5));
    }
}
