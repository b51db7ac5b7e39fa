//! A one-input stream's own linear expert, fitted exactly from `O(L + H)`
//! running sums instead of an `L × L` covariance: the least-squares fit a
//! separate RLS would make for the stream.
//!
//! The expert's features are the lag differences `a_i(t) = z_{t−i} − z_t`
//! (`i = 1 … L−1`, plus a bias) and its targets the changes
//! `b_h(t) = z_{t+h} − z_t`. With the increments `d_k(u) = z_u − z_{u−k}`,
//! every product the normal equations sum is a sum of squared increments:
//!
//! ```text
//! a_i a_j = ½ (d_i(t)² + d_j(t)² − d_k(t − s)²)      k = |i − j|, s = min(i, j)
//! a_i b_h = ½ (d_i(t)² + d_h(t + h)² − d_(i+h)(t + h)²)
//! a_i     = −Σ_{v<i} d_1(t − v)         b_h = Σ_{v<h} d_1(t + h − v)
//! ```
//!
//! So a stream keeps, for `k = 1 … K` (`K = L − 1 + H`), the exponentially
//! forgotten sum `S_k(n) = Σ_u λ^(n−u) d_k(u)²`, and the sum `M(n)` of its
//! one-step increments; the Gram matrix and the cross moments of its windows
//! `t ≤ T = n − H` (the windows whose targets have all arrived) are these
//! sums *as they stood a few events ago*, `S_k(n − e)` for `e < L + H`,
//! which the newest `L + H` rows (kept for the features anyway) give back
//! exactly: `S_k(n − e) = λ^(−e) (S_k(n) − Σ_{v<e} λ^v d_k(n − v)²)`.
//! Before a stream's first value the series counts as that value, which
//! makes every sum start where the identities need it to. Solving
//!
//! ```text
//! (G + λ^(T+H) ρ I) W = R
//! ```
//!
//! is then exactly RLS's objective, `Σ_t λ^(T−t) ‖b(t) − Wᵀφ_t‖² + λ^(T+H) ρ ‖W‖²`
//! (a test checks it against the windows themselves), over the windows
//! `t = −(H − 1) … T`: no stationarity is assumed, so a series whose swing
//! grows or whose level wanders is fitted as well as by the RLS.
//!
//! One difference remains: the first `L − 1` windows reach back before the
//! stream began, where the series counts as flat, and a separate RLS skips
//! them. On a near-deterministic series they weigh in the directions the
//! data hardly excite: alone on a 24-event sine with 10% noise (5,000
//! events), the fit scores 1.02 of RLS's one-step MSE. While every
//! observation of the pooled fit is the stream's own, that fit is the
//! stream's RLS exactly, and the stream keeps it (see `OwnFit` in the learner).
//!
//! The series is the stream's scaled values as stored, so the fit is the
//! RLS's whatever the scaling does. It needs one input: with more, the
//! cross products of two columns are not increments of one series, so wider
//! streams keep the pooled covariance ([`super::linear::Rls::update_own`]).
//! Under running statistics (the default) the learner keeps the pooled
//! covariance too: the sums would put a one-input stream's state past 1 KiB
//! (1,111 B), and on ETTh1's seven columns as seven streams under running
//! statistics they did not pay for it (one-step MSE 0.9833 of the
//! per-stream baseline's against 0.9825 pooled: ahead on OT, LULL and MULL,
//! behind on LUFL and HUFL).

use super::scalar::Scalar;

/// Events between two solves of a stream's weights: the sums move by about
/// `1/N` an event, so a solve every few events loses nothing and costs a quarter.
pub const SOLVE_EVERY: u64 = 4;

/// Elements of a stream's sums: `S_1 … S_K` (`K = lags − 1 + horizon`), then `M`.
pub fn moments_len(lags: usize, horizon: usize) -> usize {
    lags + horizon
}

/// The value `back` events before the newest, with the stream's first value
/// standing for every value before it: `hist` holds the newest rows (one
/// input), oldest first, and the newest has index `seen` in the stream.
#[inline(always)]
fn value<S: Scalar>(hist: &[S], seen: u64, back: usize) -> f64 {
    let newest = hist.len() - 1;
    hist[newest - back.min(seen as usize)].f64()
}

/// The increment over `k` steps that ended `v` events before the newest
/// (zero before the stream's first value), clamped to `±bound[k]`.
#[inline(always)]
fn increment<S: Scalar>(hist: &[S], seen: u64, v: usize, k: usize, bound: &[f64]) -> f64 {
    if v as u64 > seen {
        return 0.0;
    }
    (value(hist, seen, v) - value(hist, seen, v + k)).clamp(-bound[k], bound[k])
}

/// Folds the newest value into the sums. `hist` holds the stream's newest
/// rows (one input), oldest first; the newest has index `seen` in the
/// stream, whose every value has been folded in, and its first value stands
/// for every value before it. Each increment over `k` steps is clamped to
/// `±bound[k]`, as the expert's features and targets are (the identities are
/// exact while no increment reaches its bound).
#[inline(always)]
pub fn observe<S: Scalar>(mom: &mut [S], hist: &[S], seen: u64, bound: &[f64], forgetting: f64) {
    let k_max = mom.len() - 1;
    debug_assert!(hist.len() > k_max);
    for k in 1..=k_max {
        let d = increment(hist, seen, 0, k, bound);
        mom[k - 1] = S::of(forgetting * mom[k - 1].f64() + d * d);
    }
    let d = increment(hist, seen, 0, 1, bound);
    mom[k_max] = S::of(forgetting * mom[k_max].f64() + d);
}

/// Scratch of [`solve`]: the system, its right-hand sides, the sums as they
/// stood `e` events ago and the powers of `λ`.
#[derive(Clone, Debug)]
pub struct Scratch {
    a: Vec<f64>,
    r: Vec<f64>,
    /// `S_k(n − e)` at `k · (E + 1) + e` (`k = 0` is zero), then `M(n − e)` at `(K + 1)(E + 1) + e`.
    past: Vec<f64>,
    /// `λ^v` for `v ≤ E`.
    power: Vec<f64>,
}

impl Scratch {
    /// For `lags` rows of features, `horizon` outputs and forgetting `λ`.
    pub fn new(lags: usize, horizon: usize, forgetting: f64) -> Self {
        let offsets = lags + horizon; // e = 0 … L + H − 1
        let sums = lags + horizon; // k = 0 … K, then M
        Scratch {
            a: vec![0.0; lags * lags],
            r: vec![0.0; lags * horizon],
            past: vec![0.0; (sums + 1) * offsets],
            power: (0..offsets).map(|v| forgetting.powi(v as i32)).collect(),
        }
    }
}

/// Replaces the weights `w` (`lags × horizon`, row-major as
/// [`super::linear::Rls::weight`]) by the ridge least-squares fit of the
/// stream's windows whose targets have arrived, from its sums `mom` and its
/// newest rows `hist` (as [`observe`] last took them; the newest has index
/// `seen`), with RLS's ridge
/// prior `λ^(T+H) ρ`. False (and
/// `w` unchanged) before the first such window, or if the system is not
/// positive definite or the solution not finite.
#[allow(clippy::too_many_arguments)]
pub fn solve<S: Scalar>(
    mom: &[S],
    hist: &[S],
    seen: u64,
    bound: &[f64],
    forgetting: f64,
    ridge: f64,
    w: &mut [S],
    sc: &mut Scratch,
) -> bool {
    let p = sc.a.len().isqrt();
    let q = sc.r.len() / p;
    let k_max = mom.len() - 1;
    let offsets = p + q;
    debug_assert_eq!(k_max, p - 1 + q);
    if seen < q as u64 {
        return false;
    }
    // The sums as they stood e events ago, for every e the rows allow
    // (v + k ≤ L + H − 1 for the increments taken back out).
    let rows = hist.len();
    for k in 0..=k_max + 1 {
        let (sum, lag, square) = match k {
            0 => (0.0, 0, true),
            k if k <= k_max => (mom[k - 1].f64(), k, true),
            _ => (mom[k_max].f64(), 1, false),
        };
        let mut taken = 0.0;
        for e in 0..offsets {
            let at = k * offsets + e;
            if lag == 0 {
                sc.past[at] = 0.0;
                continue;
            }
            // S(n − e) = λ^(−e) (S(n) − Σ_{v<e} λ^v d(n − v)²).
            sc.past[at] = (sum - taken) / sc.power[e];
            if e + lag < rows {
                let d = increment(hist, seen, e, lag, bound);
                taken += sc.power[e] * if square { d * d } else { d };
            }
        }
    }
    let past = &sc.past;
    let s = |k: usize, e: usize| past[k * offsets + e];
    let m = |e: usize| past[(k_max + 1) * offsets + e];
    let horizon = q;
    let (a, r) = (&mut sc.a, &mut sc.r);
    // Feature j is the lag i = p − 1 − j (oldest first); the bias is last.
    // Windows end at T = n − H, so S(T − x) is S at offset H + x.
    for j in 0..p - 1 {
        let i = p - 1 - j;
        for l in 0..=j {
            let i2 = p - 1 - l;
            let (k, sh) = (i.abs_diff(i2), i.min(i2));
            a[j * p + l] = 0.5 * (s(i, horizon) + s(i2, horizon) - s(k, horizon + sh));
        }
        a[(p - 1) * p + j] = -(0..i).map(|v| m(horizon + v)).sum::<f64>();
        for h in 1..=q {
            // S(T + h) is S at offset H − h.
            r[j * q + h - 1] = 0.5 * (s(i, horizon) + s(h, horizon - h) - s(i + h, horizon - h));
        }
    }
    // Windows t = −(H − 1) … T: those before the first value have no
    // features (the series is flat there) and only their bias sees the first
    // changes, which keeps every sum of one-step increments whole.
    let windows = seen;
    a[(p - 1) * p + p - 1] = super::linear::effective(forgetting, windows);
    for h in 1..=q {
        // Σ_t λ^(T−t) b_h(t) = Σ_{v<h} M(T + h − v), M(T + h − v) at offset H − h + v.
        r[(p - 1) * q + h - 1] = (0..h).map(|v| m(horizon - h + v)).sum::<f64>();
    }
    let shrink = forgetting.powf(windows as f64) * ridge;
    for j in 0..p {
        a[j * p + j] += shrink;
    }
    if !cholesky_solve(a, r, p, q) {
        return false;
    }
    for (wi, &v) in w.iter_mut().zip(r.iter()) {
        *wi = S::of(v);
    }
    true
}

/// Solves `A X = B` in place (`A` `p × p` symmetric, its lower triangle
/// read and overwritten by its Cholesky factor; `B` `p × q` overwritten by
/// `X`); false if `A` is not positive definite or `X` not finite.
fn cholesky_solve(a: &mut [f64], r: &mut [f64], p: usize, q: usize) -> bool {
    for j in 0..p {
        let mut diag = a[j * p + j];
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        if !(diag > 0.0 && diag.is_finite()) {
            return false;
        }
        let root = diag.sqrt();
        a[j * p + j] = root;
        for i in j + 1..p {
            let mut v = a[i * p + j];
            for k in 0..j {
                v -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = v / root;
        }
    }
    // L Y = B, then Lᵀ X = Y, every column at once.
    for i in 0..p {
        for k in 0..i {
            let l = a[i * p + k];
            for h in 0..q {
                r[i * q + h] -= l * r[k * q + h];
            }
        }
        for h in 0..q {
            r[i * q + h] /= a[i * p + i];
        }
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            let l = a[k * p + i];
            for h in 0..q {
                r[i * q + h] -= l * r[k * q + h];
            }
        }
        for h in 0..q {
            r[i * q + h] /= a[i * p + i];
        }
    }
    r.iter().all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `series` through the sums as the learner does (a shift register
    /// of `lags + horizon` rows) and solves; returns the weights.
    fn fit<S: Scalar>(
        series: &[f64],
        lags: usize,
        horizon: usize,
        lam: f64,
        ridge: f64,
    ) -> Vec<f64> {
        let rows = lags + horizon;
        let mut hist = vec![S::zero(); rows];
        let mut mom = vec![S::zero(); moments_len(lags, horizon)];
        let (mut seen, unbounded) = (0, vec![f64::INFINITY; rows + 1]);
        for &x in series {
            hist.rotate_left(1);
            hist[rows - 1] = S::of(x);
            observe(&mut mom, &hist, seen, &unbounded, lam);
            seen += 1;
        }
        let mut w = vec![S::zero(); lags * horizon];
        let mut sc = Scratch::new(lags, horizon, lam);
        assert!(solve(
            &mom,
            &hist,
            seen - 1,
            &unbounded,
            lam,
            ridge,
            &mut w,
            &mut sc
        ));
        w.iter().map(|v| v.f64()).collect()
    }

    /// The same fit from the windows themselves: weighted ridge least squares
    /// of `[z_{t−L+1} − z_t, …, z_{t−1} − z_t, 1]` on `z_{t+h} − z_t` over
    /// every window `t = −(H − 1) … T` whose targets are in `series` (values
    /// before the first standing for it), the newest weighted 1 and the
    /// ridge `λ^(T+H) ρ`.
    fn direct(series: &[f64], lags: usize, horizon: usize, lam: f64, ridge: f64) -> Vec<f64> {
        let (p, q) = (lags, horizon);
        let z = |t: isize| series[t.max(0) as usize];
        let last = series.len() as isize - 1 - q as isize; // T
        let mut g = vec![0.0; p * p];
        let mut r = vec![0.0; p * q];
        for t in 1 - q as isize..=last {
            let weight = lam.powi((last - t) as i32);
            let mut phi: Vec<f64> = (1..lags).rev().map(|i| z(t - i as isize) - z(t)).collect();
            phi.push(1.0);
            for a in 0..p {
                for b in 0..p {
                    g[a * p + b] += weight * phi[a] * phi[b];
                }
                for h in 0..q {
                    r[a * q + h] += weight * phi[a] * (z(t + 1 + h as isize) - z(t));
                }
            }
        }
        for a in 0..p {
            g[a * p + a] += lam.powi((last + q as isize) as i32) * ridge;
        }
        assert!(cholesky_solve(&mut g, &mut r, p, q));
        r
    }

    /// Every weight within `tol` (relative, plus `tol` absolute) of the direct fit's.
    fn assert_close(got: &[f64], want: &[f64], tol: f64, case: &str) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{case}: {got:?} vs {want:?}"
            );
        }
    }

    fn series(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::model::rng::Rng::new(seed);
        let mut level = 0.0;
        (0..n)
            .map(|t| {
                level += 0.3 * rng.normal() + 0.01;
                level + (t as f64 * std::f64::consts::TAU / 24.0).sin() + 0.2 * rng.normal()
            })
            .collect()
    }

    #[test]
    fn the_sums_give_the_least_squares_fit_of_the_windows() {
        // A wandering, seasonal, drifting series: no stationarity to lean on.
        let z = series(700, 7);
        for (lags, horizon) in [(6, 1), (5, 4), (24, 1)] {
            for lam in [1.0, 0.99] {
                let got = fit::<f64>(&z, lags, horizon, lam, 10.0);
                let want = direct(&z, lags, horizon, lam, 10.0);
                assert_close(&got, &want, 1e-7, &format!("L={lags} H={horizon} λ={lam}"));
            }
        }
    }

    #[test]
    fn a_short_series_counts_its_first_value_before_it() {
        // Fewer values than rows of history: the early windows are padded.
        let z = series(9, 3);
        let got = fit::<f64>(&z, 6, 2, 0.999, 1.0);
        let want = direct(&z, 6, 2, 0.999, 1.0);
        assert_close(&got, &want, 1e-9, "9 values, L=6 H=2");
    }

    #[test]
    fn sums_in_f32_fit_a_near_deterministic_season() {
        let mut rng = crate::model::rng::Rng::new(11);
        let z: Vec<f64> = (0..5000)
            .map(|t| (t as f64 * std::f64::consts::TAU / 24.0).sin() + 0.1 * rng.normal())
            .collect();
        let single = fit::<f32>(&z, 24, 1, 0.9999, 10.0);
        let double = direct(&z, 24, 1, 0.9999, 10.0);
        // Forecasts of the last window, the only thing the weights are for.
        let n = z.len();
        let phi: Vec<f64> = (1..24)
            .rev()
            .map(|i| z[n - 1 - i] - z[n - 1])
            .chain([1.0])
            .collect();
        let f = |w: &[f64]| phi.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        assert!(
            (f(&single) - f(&double)).abs() < 1e-3,
            "{} vs {}",
            f(&single),
            f(&double)
        );
    }
}
