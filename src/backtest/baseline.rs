//! The linear baseline a backtest scores beside naive and seasonal naive.
//!
//! Every stream has its own online ridge regression ([`Rls`]) of each horizon
//! step's change from the last value on the stream's recent path
//! ([`lag_features`]: the last `L` rows of every input column), in the
//! stream's warm-up z-scores. It learns from a forecast only once every row
//! the forecast covers has been observed, so it sees no more of the future
//! than recur does, and it starts as the naive forecast (`W = 0`).
//!
//! Per event `t` of a stream, with horizon `H` and targets `j`:
//!
//! 1. the row, z-scored, joins the stream's last `max(L, H + 1)` rows;
//! 2. if the forecast made `H` events earlier had a feature vector, the
//!    regression learns from it with `y[h·nt + j] = z_{made+1+h}[j] − z_made[j]`
//!    (the row of step 1 is the newest of those it covers, and learning reads
//!    only stored features, so the order of steps 1 and 2 does not matter);
//! 3. once the stream has `L` rows, the forecast is `z_t + Wᵀφ_t`, back in
//!    original units, and `φ_t` waits for its rows; before that it is the naive
//!    forecast and nothing waits.
//!
//! A stream's regression holds `p² + p·H·nt` numbers for `p = (L − 1)·D + 1`
//! features; it is allocated with the stream's first feature vector.

use std::collections::VecDeque;

use crate::model::linear::{LinearConfig, Rls, lag_features};

/// The linear baseline of every stream of a replay.
pub struct LinearBaseline {
    cfg: LinearConfig,
    width: usize,
    targets: Vec<usize>,
    horizon: usize,
    streams: Vec<Stream>,
    /// Scratch: predicted changes, learning targets.
    delta: Vec<f64>,
    y: Vec<f64>,
}

/// One stream's regression and recent rows.
struct Stream {
    rls: Option<Rls>,
    /// Warm-up mean and standard deviation of each column.
    mean: Vec<f64>,
    std: Vec<f64>,
    /// The last `cap` rows, z-scored, as a ring of `width`-wide rows.
    ring: Vec<f64>,
    cap: usize,
    /// Ring slot of the newest row.
    head: usize,
    /// Events seen.
    seen: usize,
    /// Feature vectors of forecasts not yet learned from, with the index of
    /// the event each was made at, oldest first.
    waiting: VecDeque<(usize, Vec<f64>)>,
}

impl Stream {
    /// The z-scored row `back` events before the newest.
    fn back(&self, back: usize, width: usize) -> &[f64] {
        let slot = (self.head + self.cap - back) % self.cap;
        &self.ring[slot * width..(slot + 1) * width]
    }
}

impl LinearBaseline {
    /// A baseline of `width` input columns forecasting `targets` (column
    /// indices) `horizon` steps ahead, for streams scaled by `scale[s] = (mean, std)`.
    pub fn new(
        cfg: &LinearConfig,
        width: usize,
        targets: &[usize],
        horizon: usize,
        scale: &[(Vec<f64>, Vec<f64>)],
    ) -> Self {
        let cap = cfg.rows(width, horizon).max(horizon + 1);
        LinearBaseline {
            cfg: *cfg,
            width,
            targets: targets.to_vec(),
            horizon,
            streams: scale
                .iter()
                .map(|(mean, std)| Stream {
                    rls: None,
                    mean: mean.clone(),
                    std: std.clone(),
                    ring: vec![0.0; cap * width],
                    cap,
                    head: cap - 1,
                    seen: 0,
                    waiting: VecDeque::new(),
                })
                .collect(),
            delta: vec![0.0; horizon * targets.len()],
            y: vec![0.0; horizon * targets.len()],
        }
    }

    /// Observes stream `s`'s next row (original units) and returns its
    /// forecast of the next `horizon` rows, `horizon × targets` in original units.
    pub fn observe(&mut self, s: usize, row: &[f64]) -> Vec<f64> {
        let (d, hz, nt) = (self.width, self.horizon, self.targets.len());
        let lags = self.cfg.rows(d, hz);
        let st = &mut self.streams[s];
        st.head = (st.head + 1) % st.cap;
        let slot = st.head * d;
        for (k, &v) in row.iter().enumerate().take(d) {
            st.ring[slot + k] = (v - st.mean[k]) / st.std[k];
        }
        let k = st.seen;
        st.seen += 1;

        // Learn from the forecast whose rows are now all observed.
        while st.waiting.front().is_some_and(|(made, _)| made + hz <= k) {
            let (made, phi) = st.waiting.pop_front().expect("front exists");
            let from = k - made; // rows back to the event the forecast was made at
            for h in 0..hz {
                let (to, at) = (st.back(from - 1 - h, d), st.back(from, d));
                for (j, &t) in self.targets.iter().enumerate() {
                    self.y[h * nt + j] = to[t] - at[t];
                }
            }
            if let Some(rls) = st.rls.as_mut() {
                rls.update(&phi, &self.y);
            }
        }

        if st.seen < lags {
            return (0..hz)
                .flat_map(|_| self.targets.iter().map(|&t| row[t]))
                .collect();
        }
        let mut phi = vec![0.0; self.cfg.features(d, hz)];
        lag_features(lags, d, |j| st.back(j, d), &mut phi);
        let (forgetting, ridge) = (self.cfg.forgetting, self.cfg.ridge);
        let rls = st
            .rls
            .get_or_insert_with(|| Rls::new(phi.len(), hz * nt, forgetting, ridge));
        rls.predict(&phi, &mut self.delta);
        let last = st.back(0, d);
        let mut out = Vec::with_capacity(hz * nt);
        for h in 0..hz {
            for (j, &t) in self.targets.iter().enumerate() {
                out.push((last[t] + self.delta[h * nt + j]) * st.std[t] + st.mean[t]);
            }
        }
        st.waiting.push_back((k, phi));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::Lags;

    fn unit_scale(d: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
        vec![(vec![0.0; d], vec![1.0; d])]
    }

    #[test]
    fn naive_until_it_has_lags_rows_then_learns_a_trend() {
        let cfg = LinearConfig {
            lags: Lags::Rows(3),
            forgetting: 1.0,
            ridge: 1e-6,
        };
        let mut b = LinearBaseline::new(&cfg, 1, &[0], 2, &unit_scale(1));
        // A straight line: every change is 1, which the bias learns.
        let mut last = Vec::new();
        for t in 0..50 {
            last = b.observe(0, &[t as f64]);
            if t < 2 {
                assert_eq!(last, vec![t as f64; 2], "naive before L rows");
            }
        }
        assert!(
            (last[0] - 50.0).abs() < 1e-4 && (last[1] - 51.0).abs() < 1e-4,
            "{last:?}"
        );
    }

    #[test]
    fn forecasts_are_in_original_units() {
        let cfg = LinearConfig {
            lags: Lags::Rows(2),
            forgetting: 1.0,
            ridge: 1e-6,
        };
        // z = (v - 100) / 10: a line of slope 5 is a z-line of slope 0.5.
        let scale = vec![(vec![100.0], vec![10.0])];
        let mut b = LinearBaseline::new(&cfg, 1, &[0], 1, &scale);
        let mut last = Vec::new();
        for t in 0..40 {
            last = b.observe(0, &[100.0 + 5.0 * t as f64]);
        }
        assert!((last[0] - (100.0 + 5.0 * 40.0)).abs() < 1e-3, "{last:?}");
    }

    #[test]
    fn streams_learn_only_from_their_own_rows() {
        let cfg = LinearConfig {
            lags: Lags::Rows(2),
            forgetting: 1.0,
            ridge: 1e-6,
        };
        let scale = [unit_scale(1), unit_scale(1)].concat();
        let mut b = LinearBaseline::new(&cfg, 1, &[0], 1, &scale);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for t in 0..40 {
            up = b.observe(0, &[t as f64]);
            down = b.observe(1, &[-2.0 * t as f64]);
        }
        assert!((up[0] - 40.0).abs() < 1e-3, "{up:?}");
        assert!((down[0] + 80.0).abs() < 1e-3, "{down:?}");
    }
}
