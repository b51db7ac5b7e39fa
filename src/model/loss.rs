//! Training losses and their gradients with respect to the forecast.

use serde::{Deserialize, Serialize};

use super::scalar::Scalar;

/// The loss a TBPTT step minimises; both are means over every scored element.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Loss {
    /// Mean squared error, `mean((y - t)^2)` (PyTorch `MSELoss`).
    Mse,
    /// Huber loss with threshold `delta` (PyTorch `HuberLoss`): quadratic
    /// `0.5 d^2` for `|d| <= delta`, linear `delta (|d| - delta/2)` beyond.
    Huber {
        /// Where the loss turns from quadratic to linear.
        delta: f64,
    },
}

impl Loss {
    /// Adds this loss over `y` against `target` to a running sum and writes
    /// `dL/dy` for a mean over `count` elements in all; returns the sum's addend.
    #[inline(always)]
    pub fn accumulate<S: Scalar>(&self, y: &[S], target: &[S], count: usize, dy: &mut [S]) -> S {
        let n = S::of(count as f64);
        let mut sum = S::zero();
        match *self {
            Loss::Mse => {
                let two = S::of(2.0);
                for ((g, &yi), &ti) in dy.iter_mut().zip(y).zip(target) {
                    let d = yi - ti;
                    sum += d * d;
                    *g = two * d / n;
                }
            }
            Loss::Huber { delta } => {
                let delta = S::of(delta);
                let half = S::of(0.5);
                for ((g, &yi), &ti) in dy.iter_mut().zip(y).zip(target) {
                    let d = yi - ti;
                    if d.abs() <= delta {
                        sum += half * d * d;
                        *g = d / n;
                    } else {
                        sum += delta * (d.abs() - half * delta);
                        *g = delta * d.signum() / n;
                    }
                }
            }
        }
        sum / n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let y = [0.3f64, -1.7, 2.5];
        let t = [0.1f64, 0.4, -0.2];
        for loss in [Loss::Mse, Loss::Huber { delta: 1.0 }] {
            let mut dy = [0.0; 3];
            let l0 = loss.accumulate(&y, &t, 3, &mut dy);
            for k in 0..3 {
                let mut yp = y;
                yp[k] += 1e-6;
                let mut scratch = [0.0; 3];
                let l1 = loss.accumulate(&yp, &t, 3, &mut scratch);
                assert!(((l1 - l0) / 1e-6 - dy[k]).abs() < 1e-5, "{loss:?} at {k}");
            }
        }
        let mut dy = [0.0; 3];
        // Huber with a huge delta is half the MSE.
        let h = Loss::Huber { delta: 1e9 }.accumulate(&y, &t, 3, &mut dy);
        let m = Loss::Mse.accumulate(&y, &t, 3, &mut dy);
        assert!((2.0 * h - m).abs() < 1e-12);
    }
}
