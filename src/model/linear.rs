//! Online ridge regression by recursive least squares (RLS) with exponential
//! forgetting, and the lag features of the linear forecaster built on it.
//!
//! [`Rls`] minimises `Σ_i λ^(n-i) ‖y_i − Wᵀφ_i‖² + λ^n ρ ‖W − W₀‖²` one
//! observation at a time (Haykin, *Adaptive Filter Theory*, ch. 10): with
//! `P = (Σ λ^(n-i) φ_i φ_iᵀ + λ^n ρ I)⁻¹`,
//!
//! ```text
//! k = P φ / (λ + φᵀ P φ)      W ← W + k (y − Wᵀφ)ᵀ      P ← (P − k φᵀ P) / λ
//! ```
//!
//! Every output shares `P` (they see the same features), so an update costs
//! `O(p² + p·q)` for `p` features and `q` outputs. Forgetting inflates `P` in
//! directions the features never excite (a flat stream's lags); the division
//! by `λ` is skipped once `trace(P)` would pass its prior's `p / ρ`, which keeps
//! `P` bounded however long a stream runs, and never triggers on data that
//! excites every direction.
//!
//! [`lag_features`] turns the last `L` rows of a stream into
//! `[x_{t−L+1} − x_t, …, x_{t−1} − x_t, 1]` (every column, then a bias), and
//! the targets are each horizon step's change from the last value: the
//! forecaster starts as the naive forecast (`W₀ = 0`) and learns how the
//! recent path predicts the next moves.

use serde::{Deserialize, Serialize};

use super::scalar::Scalar;

/// Rows of history per feature vector (L): a number, or `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lags {
    /// [`auto_lags`] of the inputs and horizon.
    Auto,
    /// This many rows.
    Rows(usize),
}

/// The rows `"auto"` reaches back at least: a day of hourly data and one row
/// more, so that the change over the same hour a day before,
/// `x_{t−23} − x_{t−24}`, is a difference of two features. A season of `P`
/// rows needs `P + 1` of them for that (the lag `P + 1` of seasonal
/// differencing, `(1 − B)(1 − B^P)`); with 24 rows the one-step forecast of
/// ETTh1's columns as seven one-input streams scored 0.979 of the per-stream
/// baseline's MSE, with 25 rows 0.933.
pub const AUTO_MIN_LAGS: usize = 25;

/// What `lags = "auto"` means: with one input, a window of twice the horizon
/// (the shortest lookback in N-BEATS' ensemble, whose windows run from 2 to
/// 7 horizons: Oreshkin et al., ICLR 2020) and at
/// least [`AUTO_MIN_LAGS`] rows, so that each step of a long forecast sees the
/// same phase of a daily season in two earlier days; with several inputs
/// [`AUTO_MIN_LAGS`], since the shared covariance grows with the square of
/// inputs × lags and each feature costs estimation noise.
pub fn auto_lags(inputs: usize, horizon: usize) -> usize {
    match inputs {
        1 => AUTO_MIN_LAGS.max(2 * horizon),
        _ => AUTO_MIN_LAGS,
    }
}

impl Lags {
    /// The rows this setting means for `inputs` columns and `horizon` steps.
    pub fn rows(self, inputs: usize, horizon: usize) -> usize {
        match self {
            Lags::Auto => auto_lags(inputs, horizon),
            Lags::Rows(n) => n,
        }
    }
}

impl std::fmt::Display for Lags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lags::Auto => f.write_str("\"auto\""),
            Lags::Rows(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Lags {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        match self {
            Lags::Auto => s.serialize_str("auto"),
            Lags::Rows(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Lags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Lags;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of rows or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Lags, E> {
                usize::try_from(v)
                    .map(Lags::Rows)
                    .map_err(|_| E::custom(format!("{v} rows is too many")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Lags, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v}: expected a number of rows or \"auto\""
                    ))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lags, E> {
                match v {
                    "auto" => Ok(Lags::Auto),
                    _ => Err(E::custom(format!(
                        "\"{v}\": expected a number of rows or \"auto\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Settings of the linear forecaster.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    /// Rows of history per feature vector (L): `L − 1` lag differences per column.
    pub lags: Lags,
    /// Forgetting factor λ in (0, 1]: the weight of an observation `n` steps old is λⁿ.
    pub forgetting: f64,
    /// Ridge prior ρ > 0: the initial `P` is `I / ρ`.
    pub ridge: f64,
}

/// Rows of the backtest's linear baseline (`[backtest.linear] lags`), the
/// yardstick's fixed window.
pub const BASELINE_LAGS: usize = 24;

impl Default for LinearConfig {
    /// The backtest baseline's settings (the learner's expert sets `lags = "auto"`).
    fn default() -> Self {
        LinearConfig {
            lags: Lags::Rows(BASELINE_LAGS),
            forgetting: 0.9999,
            ridge: 10.0,
        }
    }
}

impl LinearConfig {
    /// Checks the settings, naming the first bad key (under `section`) and value.
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if let Lags::Rows(n) = self.lags
            && n < 2
        {
            return Err(format!(
                "{section}.lags = {n}: must be at least 2 (one lag difference) or \"auto\""
            ));
        }
        validate_rls(section, self.forgetting, self.ridge)
    }

    /// Rows per feature vector for `width` columns forecast `horizon` steps ahead.
    pub fn rows(&self, width: usize, horizon: usize) -> usize {
        self.lags.rows(width, horizon)
    }

    /// Features of `width` columns forecast `horizon` steps ahead: `(L − 1)`
    /// lags each plus the bias.
    pub fn features(&self, width: usize, horizon: usize) -> usize {
        (self.rows(width, horizon) - 1) * width + 1
    }
}

/// Checks an RLS forgetting factor (in (0, 1]) and ridge prior (> 0), naming `section`'s keys.
pub fn validate_rls(section: &str, forgetting: f64, ridge: f64) -> Result<(), String> {
    if !(forgetting > 0.0 && forgetting <= 1.0) {
        return Err(format!(
            "{section}.forgetting = {forgetting}: must be in (0, 1]"
        ));
    }
    if !(ridge > 0.0 && ridge.is_finite()) {
        return Err(format!(
            "{section}.ridge = {ridge}: must be a positive number"
        ));
    }
    Ok(())
}

/// Recursive least squares with forgetting, `p` features to `q` outputs.
#[derive(Clone, Debug)]
pub struct Rls {
    p: usize,
    q: usize,
    forgetting: f64,
    /// `trace(P)` of the prior: the bound forgetting may not push `P` past.
    max_trace: f64,
    /// `P`, row-major `p × p`, kept exactly symmetric.
    pub cov: Vec<f64>,
    /// `W`, row-major `p × q`.
    pub weight: Vec<f64>,
    /// Updates applied.
    pub updates: u64,
    /// Scratch `P φ`.
    pphi: Vec<f64>,
    /// Scratch residual.
    resid: Vec<f64>,
}

/// Equal state: the scratch buffers do not count.
impl PartialEq for Rls {
    fn eq(&self, other: &Self) -> bool {
        (self.p, self.q, self.forgetting, self.updates)
            == (other.p, other.q, other.forgetting, other.updates)
            && self.cov == other.cov
            && self.weight == other.weight
    }
}

impl Rls {
    /// `W = 0`, `P = I / ridge`.
    pub fn new(features: usize, outputs: usize, forgetting: f64, ridge: f64) -> Self {
        let mut cov = vec![0.0; features * features];
        for i in 0..features {
            cov[i * features + i] = 1.0 / ridge;
        }
        Rls {
            p: features,
            q: outputs,
            forgetting,
            max_trace: features as f64 / ridge,
            cov,
            weight: vec![0.0; features * outputs],
            updates: 0,
            pphi: vec![0.0; features],
            resid: vec![0.0; outputs],
        }
    }

    /// Features (p).
    pub fn features(&self) -> usize {
        self.p
    }
    /// Outputs (q).
    pub fn outputs(&self) -> usize {
        self.q
    }

    /// `out = Wᵀ φ`.
    #[inline(always)]
    pub fn predict(&self, phi: &[f64], out: &mut [f64]) {
        debug_assert_eq!(phi.len(), self.p);
        predict_with(&self.weight, phi, &mut out[..self.q]);
    }

    /// Learns `y ≈ Wᵀ φ` from one observation; returns false (and changes
    /// nothing) if the inputs or the update are not finite.
    pub fn update(&mut self, phi: &[f64], y: &[f64]) -> bool {
        match self.prepare(phi, y) {
            Some(quad) => {
                self.apply(phi, y, quad);
                true
            }
            None => false,
        }
    }

    /// The first half of [`Rls::update`]: `P φ` (kept for [`Rls::apply`] and
    /// [`Rls::update_own`]) and `φᵀ P φ`, or `None` if the observation or the
    /// gain is not finite.
    pub fn prepare(&mut self, phi: &[f64], y: &[f64]) -> Option<f64> {
        let p = self.p;
        if !phi.iter().chain(y).all(|v| v.is_finite()) {
            return None;
        }
        // P φ (P symmetric) and φᵀ P φ.
        let mut quad = 0.0;
        for i in 0..p {
            let row = &self.cov[i * p..(i + 1) * p];
            let mut acc = 0.0;
            for (c, &f) in row.iter().zip(phi) {
                acc += c * f;
            }
            self.pphi[i] = acc;
            quad += acc * phi[i];
        }
        let denom = self.forgetting + quad;
        if !(denom.is_finite() && denom > 0.0) {
            return None;
        }
        Some(quad)
    }

    /// The second half of [`Rls::update`], after [`Rls::prepare`] returned `quad`.
    pub fn apply(&mut self, phi: &[f64], y: &[f64], quad: f64) {
        let (p, q) = (self.p, self.q);
        let denom = self.forgetting + quad;
        // Residual before the update.
        self.predict_into_resid(phi, y);
        // W += k rᵀ with k = P φ / denom.
        for i in 0..p {
            let k = self.pphi[i] / denom;
            if k == 0.0 {
                continue;
            }
            let row = &mut self.weight[i * q..(i + 1) * q];
            for (w, &r) in row.iter_mut().zip(&self.resid) {
                *w += k * r;
            }
        }
        // P ← (P − u uᵀ) / λ with u = P φ / √denom: u_i u_j = u_j u_i exactly,
        // so P stays bit-symmetric with one contiguous pass.
        let root = denom.sqrt();
        let mut trace = 0.0;
        for u in self.pphi.iter_mut() {
            *u /= root;
        }
        for i in 0..p {
            trace += self.cov[i * p + i] - self.pphi[i] * self.pphi[i];
        }
        let scale = if self.forgetting < 1.0 && trace / self.forgetting <= self.max_trace {
            1.0 / self.forgetting
        } else {
            1.0
        };
        for i in 0..p {
            let ui = self.pphi[i];
            let row = &mut self.cov[i * p..(i + 1) * p];
            for (c, &uj) in row.iter_mut().zip(&self.pphi) {
                *c = (*c - ui * uj) * scale;
            }
        }
        self.updates += 1;
    }

    /// The gain scale `s` for the own weights of a stream that has learned
    /// from `stream_updates` observations, when this pooled fit has learned
    /// from every stream: `s · P` stands for the stream's own `P`.
    ///
    /// A stream's own RLS would hold `P_s ≈ (n_s Σ)⁻¹` and the pooled one
    /// holds `P ≈ (n Σ)⁻¹`, with `n_s` and `n` the effective (forgotten)
    /// counts and `Σ` the features' second moment, so `s = n / n_s`. It is
    /// capped where `trace(s · P)` would pass the prior's `p / ρ`: a stream's
    /// gain is never larger than a fresh fit's. With one stream `s = 1` and
    /// the own weights are exactly the pooled fit.
    pub fn stream_gain(&self, stream_updates: u64) -> f64 {
        let ratio = effective(self.forgetting, self.updates + 1)
            / effective(self.forgetting, stream_updates + 1);
        let trace: f64 = (0..self.p).map(|i| self.cov[i * self.p + i]).sum();
        let cap = self.max_trace / trace;
        if cap.is_finite() && cap > 0.0 {
            ratio.min(cap)
        } else {
            ratio
        }
    }

    /// Learns a stream's own weights `w` (`p × q`, row-major, as [`Rls::weight`])
    /// from the observation [`Rls::prepare`] just saw (returning `quad`), with
    /// the gain `scale · P φ / (λ + scale · φᵀ P φ)`: RLS on the stream's own
    /// observations with the covariance pooled over every stream. Call it
    /// before [`Rls::apply`], which moves `P` on.
    pub fn update_own<S: Scalar>(
        &mut self,
        w: &mut [S],
        phi: &[f64],
        y: &[f64],
        quad: f64,
        scale: f64,
    ) {
        let (p, q) = (self.p, self.q);
        debug_assert_eq!(w.len(), p * q);
        let denom = self.forgetting + scale * quad;
        self.resid.copy_from_slice(&y[..q]);
        for (i, &f) in phi.iter().enumerate() {
            for (r, wi) in self.resid.iter_mut().zip(&w[i * q..(i + 1) * q]) {
                *r -= f * wi.f64();
            }
        }
        for i in 0..p {
            let k = scale * self.pphi[i] / denom;
            if k == 0.0 {
                continue;
            }
            for (wi, &r) in w[i * q..(i + 1) * q].iter_mut().zip(&self.resid) {
                *wi = S::of(wi.f64() + k * r);
            }
        }
    }

    fn predict_into_resid(&mut self, phi: &[f64], y: &[f64]) {
        let q = self.q;
        self.resid.copy_from_slice(&y[..q]);
        for (i, &f) in phi.iter().enumerate() {
            let row = &self.weight[i * q..(i + 1) * q];
            for (r, &w) in self.resid.iter_mut().zip(row) {
                *r -= f * w;
            }
        }
    }

    /// Replaces `P` and `W` (restoring a checkpoint); false if the lengths do not fit.
    pub fn load(&mut self, cov: &[f64], weight: &[f64], updates: u64) -> bool {
        if cov.len() != self.cov.len() || weight.len() != self.weight.len() {
            return false;
        }
        self.cov.copy_from_slice(cov);
        self.weight.copy_from_slice(weight);
        self.updates = updates;
        true
    }
}

/// The largest change, in the stream's standard deviations (or, for a
/// stream that has outgrown them, in its typical one-step changes: see
/// [`change_bound`]), that the linear expert's features and targets and the
/// stacking weights' inputs take: beyond it a value counts as the bound.
///
/// Least squares with an unbounded input is at the mercy of one outlier: a
/// level shift of `10⁴` standard deviations makes lag differences of `10⁴`,
/// after which `P` is about `10⁻⁸` along them and the fit is frozen there
/// for as long as forgetting takes to undo it (`ln 10⁸ / (1 − λ)` updates).
/// The regret bound of the stacking weights holds for bounded inputs and
/// targets; clipping them keeps every update bounded. Changes this large are
/// rare in any series the normaliser fits (none in ETTh1 or ETTm2, 0.05% of
/// ETTh2's hourly changes).
pub const CHANGE_BOUND: f64 = 10.0;

/// Weight of a new one-step change in a stream's running change scale (see
/// [`change_bound`]): about 100 events.
pub const CHANGE_WEIGHT: f64 = 0.01;

/// The bound on a change over `steps` steps of a column whose running scale
/// of one-step changes is `scale` (both in the stream's standard
/// deviations): `CHANGE_BOUND` deviations, or `CHANGE_BOUND · scale · √steps`
/// where that is larger.
///
/// A series that stays within its statistics changes by less than about 1.6
/// of its deviations a step on average (a change's deviation is at most
/// twice the series'), so the one-step bound stays at `CHANGE_BOUND` for it.
/// Statistics frozen after a warm-up go stale when a series outgrows them: a
/// seasonal swing that has grown tenfold changes by tens of warm-up
/// deviations within a day, and a fixed bound would clip every such change
/// (and with it the linear expert's forecast) to a fraction of its size. The
/// scale follows such growth within a few hundred events, and it is robust
/// to the outliers the bound is for: each change enters it capped at
/// `CHANGE_BOUND` times the scale, so one jump, however large, moves it by
/// at most 9% (see [`next_change_scale`]).
///
/// A change over several steps is larger than a one-step change: by `√steps`
/// for a random walk, by up to `steps` for a trend, and for a sinusoid of
/// period `P` its swing over `P / 2` steps is `P / 2` mean one-step changes
/// (12 for a daily season of hourly data, past a bound of 10 that ignores the
/// steps). `√steps` passes such a swing for periods up to 200 steps and keeps
/// a single outlier bounded at a few tens of typical changes.
#[inline(always)]
pub fn change_bound(scale: f64, steps: usize) -> f64 {
    CHANGE_BOUND * (scale * (steps as f64).sqrt()).max(1.0)
}

/// The running scale of one-step changes after a change of size `step`
/// (absolute) from `scale`: an exponentially weighted mean of the changes,
/// each capped at `CHANGE_BOUND · scale`; the first nonzero change (capped
/// at `CHANGE_BOUND`) starts it.
#[inline(always)]
pub fn next_change_scale(scale: f64, step: f64) -> f64 {
    if !step.is_finite() {
        return scale;
    }
    if scale == 0.0 {
        return step.min(CHANGE_BOUND);
    }
    scale + CHANGE_WEIGHT * (step.min(CHANGE_BOUND * scale) - scale)
}

/// The effective number of observations behind a fit with forgetting `λ`
/// after `n` updates: `Σ_{i<n} λⁱ`.
pub fn effective(forgetting: f64, n: u64) -> f64 {
    if forgetting >= 1.0 {
        n as f64
    } else {
        (1.0 - forgetting.powf(n as f64)) / (1.0 - forgetting)
    }
}

/// `out = Wᵀ φ` for weights `w` laid out as [`Rls::weight`] (`p × q`), held in `S`.
#[inline(always)]
pub fn predict_with<S: Scalar>(w: &[S], phi: &[f64], out: &mut [f64]) {
    let q = out.len();
    if q == 1 {
        // One output (one target, one step): a dot product in four fixed lanes.
        let mut lanes = [0.0; 4];
        let chunks = phi.len() / 4 * 4;
        for (f, w) in phi[..chunks]
            .chunks_exact(4)
            .zip(w[..chunks].chunks_exact(4))
        {
            for l in 0..4 {
                lanes[l] += f[l] * w[l].f64();
            }
        }
        let mut acc = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        for (f, w) in phi[chunks..].iter().zip(&w[chunks..]) {
            acc += f * w.f64();
        }
        out[0] = acc;
        return;
    }
    out.fill(0.0);
    for (i, &f) in phi.iter().enumerate() {
        for (o, wi) in out.iter_mut().zip(&w[i * q..(i + 1) * q]) {
            *o += f * wi.f64();
        }
    }
}

/// Writes the lag features of the newest row into `phi`.
///
/// `history(j)` is the row `j` steps back (`j = 0` the newest), for
/// `j < lags`; `phi` gets `history(j)[k] − history(0)[k]` for
/// `j = lags − 1` down to 1 (oldest first, column `k` fastest), then the bias `1`.
pub fn lag_features<'a>(
    lags: usize,
    width: usize,
    history: impl Fn(usize) -> &'a [f64],
    phi: &mut [f64],
) {
    let last = history(0);
    for i in 0..lags - 1 {
        let row = history(lags - 1 - i);
        for k in 0..width {
            phi[i * width + k] = row[k] - last[k];
        }
    }
    phi[(lags - 1) * width] = 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_jump_moves_the_change_scale_by_at_most_nine_percent() {
        let mut scale = 0.0;
        for i in 0..1000 {
            scale = next_change_scale(scale, if i % 2 == 0 { 0.4 } else { 1.4 });
        }
        assert!((scale - 0.9).abs() < 0.02, "{scale}");
        assert_eq!(
            change_bound(scale, 1),
            CHANGE_BOUND,
            "within its statistics"
        );
        let jumped = next_change_scale(scale, 1e4);
        assert!(jumped <= scale * 1.09 + 1e-12, "{scale} -> {jumped}");
        assert_eq!(next_change_scale(scale, f64::NAN), scale);
    }

    #[test]
    fn a_stream_whose_changes_grow_gets_a_wider_bound() {
        // Changes ten times the warm-up's, held: the scale follows them and
        // the bound is ten typical changes.
        let mut scale = next_change_scale(0.0, 1.0);
        for _ in 0..2000 {
            scale = next_change_scale(scale, 10.0);
        }
        assert!((scale - 10.0).abs() < 0.01, "{scale}");
        assert!((change_bound(scale, 1) - 100.0).abs() < 0.1);
        // Over four steps, twice that.
        assert!((change_bound(scale, 4) - 200.0).abs() < 0.2);
    }

    /// Solves the ridge normal equations `(Σ φφᵀ + ρI) w = Σ φ y` directly.
    #[allow(clippy::needless_range_loop)]
    fn ridge_solve(rows: &[Vec<f64>], ys: &[f64], ridge: f64) -> Vec<f64> {
        let p = rows[0].len();
        let mut a = vec![vec![0.0; p + 1]; p];
        for (i, ai) in a.iter_mut().enumerate() {
            ai[i] = ridge;
        }
        for (phi, &y) in rows.iter().zip(ys) {
            for i in 0..p {
                for j in 0..p {
                    a[i][j] += phi[i] * phi[j];
                }
                a[i][p] += phi[i] * y;
            }
        }
        // Gauss-Jordan with partial pivoting.
        for c in 0..p {
            let piv = (c..p)
                .max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))
                .unwrap();
            a.swap(c, piv);
            for r in 0..p {
                if r != c {
                    let f = a[r][c] / a[c][c];
                    for k in c..=p {
                        a[r][k] -= f * a[c][k];
                    }
                }
            }
        }
        (0..p).map(|i| a[i][p] / a[i][i]).collect()
    }

    #[test]
    fn without_forgetting_rls_is_the_ridge_solution() {
        let mut rng = crate::model::rng::Rng::new(7);
        let rows: Vec<Vec<f64>> = (0..200)
            .map(|_| (0..4).map(|_| rng.normal()).collect())
            .collect();
        let ys: Vec<f64> = rows
            .iter()
            .map(|r| 0.5 * r[0] - 2.0 * r[1] + 0.25 * r[3] + 0.1 * rng.normal())
            .collect();
        let mut rls = Rls::new(4, 1, 1.0, 3.0);
        for (phi, y) in rows.iter().zip(&ys) {
            assert!(rls.update(phi, &[*y]));
        }
        let exact = ridge_solve(&rows, &ys, 3.0);
        for (w, e) in rls.weight.iter().zip(&exact) {
            assert!((w - e).abs() < 1e-9, "{w} vs {e}");
        }
    }

    /// One update of the pooled fit and of `own`, a stream's own weights, as the learner does it.
    fn learn(rls: &mut Rls, own: &mut [f64], own_updates: u64, phi: &[f64], y: f64) {
        let quad = rls.prepare(phi, &[y]).expect("finite");
        let scale = rls.stream_gain(own_updates);
        rls.update_own(own, phi, &[y], quad, scale);
        rls.apply(phi, &[y], quad);
    }

    #[test]
    fn one_streams_own_weights_are_the_pooled_fit() {
        let mut rng = crate::model::rng::Rng::new(3);
        let mut rls = Rls::new(3, 1, 0.99, 10.0);
        let mut own = vec![0.0; 3];
        for n in 0..2000 {
            let phi = [rng.normal(), rng.normal(), 1.0];
            let y = 0.7 * phi[0] - 0.2 * phi[1] + 0.3 + 0.1 * rng.normal();
            learn(&mut rls, &mut own, n, &phi, y);
        }
        for (o, w) in own.iter().zip(&rls.weight) {
            assert!((o - w).abs() < 1e-9, "own {o} vs pooled {w}");
        }
    }

    #[test]
    fn own_weights_follow_each_streams_dynamics_where_the_pooled_fit_cannot() {
        // Two streams take turns; their next value moves with the feature in
        // opposite directions, so the pooled fit learns about zero.
        let mut rng = crate::model::rng::Rng::new(5);
        let mut rls = Rls::new(2, 1, 1.0, 10.0);
        let mut own = [vec![0.0; 2], vec![0.0; 2]];
        let mut seen: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
        let mut ys: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for n in 0..3000u64 {
            for (s, sign) in [(0, 1.0), (1, -1.0)] {
                let phi = vec![rng.normal(), 1.0];
                let y = sign * 0.8 * phi[0] + 0.1 * rng.normal();
                learn(&mut rls, &mut own[s], n, &phi, y);
                seen[s].push(phi);
                ys[s].push(y);
            }
        }
        assert!(rls.weight[0].abs() < 0.1, "pooled slope {}", rls.weight[0]);
        for s in 0..2 {
            // Each stream's own ridge fit, solved directly.
            let exact = ridge_solve(&seen[s], &ys[s], 10.0);
            for (o, e) in own[s].iter().zip(&exact) {
                assert!(
                    (o - e).abs() < 0.005,
                    "stream {s}: own {o} vs its own fit {e}"
                );
            }
        }
    }

    #[test]
    fn forgetting_never_grows_p_past_its_prior() {
        // A feature that is always zero is never excited: without the bound its
        // variance would grow by 1/λ every step.
        let mut rls = Rls::new(2, 1, 0.99, 1.0);
        for i in 0..5000 {
            rls.update(&[1.0, 0.0], &[(i % 3) as f64]);
        }
        let trace = rls.cov[0] + rls.cov[3];
        assert!(trace <= 2.0 + 1e-12, "trace {trace}");
        assert!(rls.cov.iter().all(|c| c.is_finite()));
    }

    #[test]
    fn non_finite_observations_change_nothing() {
        let mut rls = Rls::new(2, 1, 0.999, 1.0);
        rls.update(&[1.0, 1.0], &[2.0]);
        let before = rls.clone();
        assert!(!rls.update(&[f64::NAN, 1.0], &[1.0]));
        assert!(!rls.update(&[1.0, 1.0], &[f64::INFINITY]));
        assert_eq!(rls, before);
    }
}
