//! Online stacking of experts: per stream, horizon step and target, the
//! forecast change is a linear combination of the experts' forecast changes,
//! with weights fitted by recursive least squares as the targets arrive.
//!
//! The experts are the linear autoregression ([`super::linear`]) and the
//! recurrent head; the naive forecast is the zero change, so it is the
//! combination with every weight 0. Fitting the weights by RLS is the
//! Vovk–Azoury–Warmuth forecaster (with forgetting): its cumulative squared
//! loss exceeds that of the best *fixed* combination in hindsight (pure
//! linear, pure recurrent, naive or any blend) by at most `O(F log n)` for `F`
//! experts and `n` forecasts with bounded values (Cesa-Bianchi and Lugosi,
//! *Prediction, Learning, and Games*, §11.8). So a stream's combined forecast
//! cannot stay much worse than any of its experts, and it is better than each
//! wherever their errors differ.
//!
//! One cell is `F` weights followed by the upper triangle of the symmetric
//! `F × F` matrix `P`, stored in the stream's buffer (so it is checkpointed
//! with the stream); the arithmetic runs in `f64`.

use serde::{Deserialize, Serialize};

use super::scalar::Scalar;

/// Experts per cell: the linear and the recurrent forecast change.
pub const EXPERTS: usize = 2;

/// Settings of the stacking weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Forgetting factor in (0, 1] of the weights' least squares.
    pub forgetting: f64,
    /// Ridge prior > 0 pulling the weights toward their start: the linear
    /// expert alone.
    pub ridge: f64,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            forgetting: 0.999,
            ridge: 10.0,
        }
    }
}

impl StackConfig {
    /// Checks the settings, naming the first bad key and value.
    pub fn validate(&self) -> Result<(), String> {
        super::linear::validate_rls("model.stack", self.forgetting, self.ridge)
    }
}

/// Elements of one cell: weights and the upper triangle of `P`.
pub const CELL: usize = EXPERTS + EXPERTS * (EXPERTS + 1) / 2;

/// Where `P[i][j]` (i ≤ j) lives in a cell.
#[inline(always)]
fn tri(i: usize, j: usize) -> usize {
    let (i, j) = if i <= j { (i, j) } else { (j, i) };
    EXPERTS + i * EXPERTS - i * (i + 1) / 2 + j
}

/// The starting weights: the linear expert alone.
const PRIOR: [f64; EXPERTS] = [1.0, 0.0];

/// Sets a cell to its prior: the linear expert alone, `P = I / ridge`.
pub fn init<S: Scalar>(cell: &mut [S], ridge: f64) {
    for (w, &p) in cell[..EXPERTS].iter_mut().zip(&PRIOR) {
        *w = S::of(p);
    }
    for i in 0..EXPERTS {
        for j in i..EXPERTS {
            cell[tri(i, j)] = S::of(if i == j { 1.0 / ridge } else { 0.0 });
        }
    }
}

/// The combined forecast change of one cell.
#[inline(always)]
pub fn predict<S: Scalar>(cell: &[S], experts: &[S]) -> f64 {
    let mut y = 0.0;
    for i in 0..EXPERTS {
        y += cell[i].f64() * experts[i].f64();
    }
    y
}

/// Learns from one scored forecast: `experts` were the experts' changes, `y`
/// the change that happened. Skips (returns false) on non-finite input.
#[inline(always)]
pub fn update<S: Scalar>(cell: &mut [S], experts: &[S], y: f64, cfg: &StackConfig) -> bool {
    let mut x = [0.0; EXPERTS];
    for (xi, e) in x.iter_mut().zip(experts) {
        *xi = e.f64();
    }
    if !y.is_finite() || !x.iter().all(|v| v.is_finite()) {
        return false;
    }
    let mut px = [0.0; EXPERTS];
    let mut quad = 0.0;
    for i in 0..EXPERTS {
        let mut acc = 0.0;
        for j in 0..EXPERTS {
            acc += cell[tri(i, j)].f64() * x[j];
        }
        px[i] = acc;
        quad += acc * x[i];
    }
    let denom = cfg.forgetting + quad;
    if !(denom.is_finite() && denom > 0.0) {
        return false;
    }
    let resid = y - predict(cell, experts);
    for i in 0..EXPERTS {
        cell[i] = S::of(cell[i].f64() + px[i] / denom * resid);
    }
    let mut trace = 0.0;
    let mut next = [[0.0; EXPERTS]; EXPERTS];
    for i in 0..EXPERTS {
        for j in i..EXPERTS {
            next[i][j] = cell[tri(i, j)].f64() - px[i] * px[j] / denom;
        }
        trace += next[i][i];
    }
    let grow = cfg.forgetting < 1.0 && trace / cfg.forgetting <= EXPERTS as f64 / cfg.ridge;
    let scale = if grow { 1.0 / cfg.forgetting } else { 1.0 };
    // A diagonal that rounding drove to zero or below would stop learning or
    // make P indefinite: start that cell's P again from the prior.
    if next
        .iter()
        .enumerate()
        .any(|(i, row)| row[i].is_nan() || row[i] <= 0.0)
    {
        let mut w = [S::zero(); EXPERTS];
        w.copy_from_slice(&cell[..EXPERTS]);
        init(cell, cfg.ridge);
        cell[..EXPERTS].copy_from_slice(&w);
        return true;
    }
    for i in 0..EXPERTS {
        for j in i..EXPERTS {
            cell[tri(i, j)] = S::of(next[i][j] * scale);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_as_the_linear_expert() {
        let mut cell = [0f32; CELL];
        init(&mut cell, 10.0);
        assert_eq!(predict(&cell, &[0.7f32, -3.0]), 0.7f32 as f64);
    }

    #[test]
    fn finds_the_combination_that_fits() {
        // y = 0.25 lin + 0.75 rnn exactly: the weights converge there.
        let cfg = StackConfig {
            forgetting: 1.0,
            ridge: 1.0,
        };
        let mut cell = [0f64; CELL];
        init(&mut cell, cfg.ridge);
        let mut rng = crate::model::rng::Rng::new(3);
        for _ in 0..2000 {
            let (a, b) = (rng.normal(), rng.normal());
            assert!(update(&mut cell, &[a, b], 0.25 * a + 0.75 * b, &cfg));
        }
        assert!((cell[0] - 0.25).abs() < 1e-3, "{cell:?}");
        assert!((cell[1] - 0.75).abs() < 1e-3, "{cell:?}");
    }

    #[test]
    fn bounded_and_finite_on_a_flat_stream() {
        let cfg = StackConfig::default();
        let mut cell = [0f32; CELL];
        init(&mut cell, cfg.ridge);
        for _ in 0..100_000 {
            update(&mut cell, &[0.0f32, 0.0], 0.0, &cfg);
        }
        assert!(cell.iter().all(|c| c.is_finite()));
        assert!(cell[tri(0, 0)] as f64 <= 1.0 / cfg.ridge + 1e-6);
    }
}
