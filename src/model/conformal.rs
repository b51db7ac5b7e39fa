//! Online conformal intervals and anomaly scores, per stream, horizon step
//! and target.
//!
//! Each interval bound tracks a quantile of the forecast's residuals by
//! conformal quantile tracking (Angelopoulos, Candès and Tibshirani 2023,
//! "Conformal PID Control for Time Series Prediction", §2.1; the adaptive
//! conformal inference update of Gibbs and Candès 2021 on the bound itself):
//! after each scored forecast
//!
//! ```text
//! q ← q + η (miss − α),   miss = 1{score > q}
//! ```
//!
//! which is online gradient descent on the pinball loss. Whatever the
//! sequence, with scores bounded by `B`, the long-run miss rate is within
//! `(B + η) / (η T)` of `α` (their Proposition 1): a guarantee under drift,
//! with no exchangeability assumed. The bound issued adds a bounded
//! integrator on the running sum of `miss − α` (their §2.2, eq. 6, with
//! `x / (1 + |x|)` as the saturation), which reacts to sustained under- or
//! over-coverage sooner; being bounded by `K_I`, it keeps the guarantee with
//! `B + K_I` for `B`.
//!
//! Scores are residuals divided by a running scale of the component's
//! residuals, and bounds are issued as scale · q: so the same step size `η`
//! suits every stream whatever its scale, the widths follow a change of
//! volatility as fast as the scale does (about 100 events) while the
//! quantile in units of the scale moves slowly, and a new stream starts from
//! its first residual (each bound at the Gaussian quantile for its level,
//! relative to that residual) instead of at zero. A level's scale is the one
//! its quantile moves with: below [`TAIL_LEVEL`] the running mean of absolute
//! residuals `m`, from it the running root mean square `s`. Where residuals
//! come as a mixture (small most of the time, jumps or bursts now and then)
//! the wide quantiles sit on the large residuals, which the squares weigh as
//! they do and the absolute values underweigh; the central ones sit in the
//! bulk, which `m` follows with less noise (docs/backtests.md, "Intervals").
//!
//! Each level's step is `η · g`, with the gain `g = φ(z₀.₀₂₅) / φ(z_α)` the
//! inverse of the Gaussian density at the level's quantile relative to the
//! 0.95 level's (so 0.95 keeps `η`; 0.8 takes `0.33 η`, 0.99 `4.0 η`): the
//! Robbins–Monro gain for a quantile is the inverse density there (a flat
//! density needs long steps to cross it, a steep one short steps not to
//! overshoot). The guarantee above holds per level with its own step.
//!
//! Each scale is kept at two speeds, fast (`m`, `s`: about 100 events) and
//! slow (`m'`, `s'`: about 330), and each bound's width is its quantile
//! times a mixture of the two, weighted by exponential weights on the
//! pinball loss either width would have had ([`Calibration::observe`]): a
//! long horizon's residuals move slowly, and there the slow scale's lower
//! noise is worth more than the fast one's speed. The tracker scores each
//! residual against the mixed width it was issued with, so the guarantee
//! above holds whatever the weights do.
//!
//! A cell holds one component's calibration: `[m, s, m', s', then per
//! level: lower (q, drift, lead, weight), upper (q, drift, lead, weight)]`,
//! the drifts only with an integrator (`K_I > 0`). The lower bound tracks
//! the `(1 − level) / 2` quantile of `ŷ − y`, the upper one that of
//! `y − ŷ`, so intervals may be asymmetric.
//!
//! Anomaly scores read a p-value off quantiles of the one-step residual
//! tracked for them alone ([`Calibration::observe_anomaly`]): per level a
//! lower and an upper quantile in units of `m`, with the plain step `η`. A
//! score's tail must move with the typical residual: read off the interval
//! bounds, where the wide ones are in units of `s` (which a spike inflates
//! tenfold for about a hundred events) and the central ones take short
//! steps, the NAB score fell from 40.6 to 31.1 (docs/backtests.md, "NAB").

use super::scalar::Scalar;
use super::special::{exp_approx, exp_tail, normal_quantile, pinball};

/// Weight of a new residual in the running scales `m` and `s` (about 100
/// events): faster scales made widths noisier and the interval scores on
/// ETT worse (docs/backtests.md, "Intervals").
const MEAN_WEIGHT: f64 = 0.01;
/// Weight of a new residual in the slow scales `m'` and `s'` (about 330
/// events): the second scale a bound's width can follow (see
/// [`Calibration::observe`]).
const SLOW_WEIGHT: f64 = 0.003;
/// Every how many events of a stream the scales' weights are recomputed
/// from their leads: an event moves a weight by at most a quarter of `η`
/// times that event's loss difference (0.04 times it at 4,000 events), and
/// recomputing it on every event ran inference at 0.87 of the build before
/// the slow scales, against 0.92 (`recur bench model`).
pub const WEIGHT_REFRESH: u64 = 8;
/// `√(8 ln 2)`: the exponential weights' rate `c / √n` over two experts
/// whose losses lie in [0, 1] (Cesa-Bianchi and Lugosi 2006, Theorem 2.3:
/// regret at most `√(n ln 2 / 2)` plus `√(n ln 2 / 8)` against the better one).
const MIX_RATE: f64 = 2.354_820_045_030_949_3;
/// The level from which a bound is tracked in units of the running root mean
/// square of the residuals instead of their running mean absolute value.
pub const TAIL_LEVEL: f64 = 0.9;
/// The miss rate per side whose level keeps the configured step size (0.95).
const REFERENCE_ALPHA: f64 = 0.025;
/// Elements of a cell before its trackers: the running scales, fast
/// `(m, s)` and slow `(m', s')`.
const SCALES: usize = 4;
/// Bounds [`Calibration::observe`] moves at once (two levels' lower and upper).
const LANES: usize = 4;
/// Elements a pending forecast component keeps to be scored by: its
/// cell's fast and slow mean absolute residual when it was issued.
pub const ISSUED: usize = 2;
/// Mean of |N(0, 1)|: turns a first residual into a Gaussian scale.
const MEAN_ABS_NORMAL: f64 = 0.797_884_560_802_865_4;

/// How far past the range of the values a stream has seen (as a fraction of
/// that range) a value must fall to be new to it: the "spatial anomaly" of
/// Numenta's detector (Ahmad et al. 2017, NAB's `numenta` detector uses 5%).
pub const RANGE_TOLERANCE: f64 = 0.05;
/// Values a stream must have seen before one can be new to its range.
pub const RANGE_WARMUP: u64 = 100;

/// Whether `x` falls more than [`RANGE_TOLERANCE`] of the range outside the
/// range `[lo, hi]` held in `range` (the values seen before), which then
/// takes `x` in. `first` starts the range at `x` (a new stream); `armed`
/// (the stream has seen [`RANGE_WARMUP`] values) lets a value be new.
#[inline]
pub fn outside_range<S: Scalar>(range: &mut [S], x: f64, first: bool, armed: bool) -> bool {
    if first {
        range[0] = S::of(x);
        range[1] = S::of(x);
        return false;
    }
    let (lo, hi) = (range[0].f64(), range[1].f64());
    let slack = RANGE_TOLERANCE * (hi - lo);
    if x < lo {
        range[0] = S::of(x);
    }
    if x > hi {
        range[1] = S::of(x);
    }
    armed && hi > lo && (x < lo - slack || x > hi + slack)
}

/// Elements of one component's cell for `levels` interval levels, with
/// `integrator` the trackers keep their running sums (`K_I > 0`).
pub const fn cell_len(levels: usize, integrator: bool) -> usize {
    SCALES + 2 * levels * side_len(integrator)
}

/// Elements of one target's anomaly trackers for `levels` interval levels.
pub const fn anomaly_len(levels: usize) -> usize {
    2 * levels
}

/// Elements of one bound's tracker in a cell: its quantile, its running sum
/// with an integrator, the fast scale's lead over the slow one, and the fast
/// scale's weight that lead gives.
const fn side_len(integrator: bool) -> usize {
    if integrator { 4 } else { 3 }
}

/// The settings shared by every cell of a forecaster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pid {
    /// Step size relative to the mean absolute residual.
    pub lr: f64,
    /// Integrator gain `K_I`, relative to the mean absolute residual (0: none).
    pub ki: f64,
    /// Misses beyond target at which the integrator is half saturated.
    pub saturation: f64,
}

impl Default for Pid {
    fn default() -> Self {
        Pid {
            lr: 0.05,
            ki: 0.0,
            saturation: 20.0,
        }
    }
}

/// One bound: the tracked quantile and the running sum of `miss − α`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tracker {
    /// The tracked quantile of the score.
    pub q: f64,
    /// Σ (miss − α) over the scored forecasts so far.
    pub drift: f64,
}

impl Tracker {
    /// The bound to issue: the tracked quantile plus the integrator. It may
    /// be negative: residuals that all lie on one side put the far bound past
    /// the point forecast.
    #[inline(always)]
    pub fn bound(&self, pid: &Pid) -> f64 {
        if pid.ki == 0.0 {
            return self.q;
        }
        let x = self.drift / pid.saturation;
        self.q + pid.ki * (x / (1.0 + x.abs()))
    }

    /// Scores one residual against the tracker and moves it by `lr` (in
    /// score units) toward a miss rate of `alpha`. Returns whether it missed.
    #[inline(always)]
    pub fn observe(&mut self, score: f64, alpha: f64, pid: &Pid) -> bool {
        let miss = score > self.bound(pid);
        self.step(miss, alpha, pid);
        miss
    }

    /// Moves the tracker by `lr` toward a miss rate of `alpha` after a
    /// score that did (`miss`) or did not exceed its bound.
    #[inline(always)]
    pub fn step(&mut self, miss: bool, alpha: f64, pid: &Pid) {
        let e = if miss { 1.0 - alpha } else { -alpha };
        self.drift += e;
        self.q += pid.lr * e;
    }
}

/// The interval levels and step settings of a forecaster, with the
/// per-level constants its cells use.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Levels in (0, 1), ascending.
    levels: Vec<f64>,
    /// Each level's miss rate per side, `(1 − level) / 2`, and its logarithm.
    alphas: Vec<f64>,
    ln_alphas: Vec<f64>,
    /// Each level's starting anomaly quantile, in units of the mean absolute residual.
    anomaly_starts: Vec<f64>,
    /// Each bound's constants, in the order of the cell's trackers (level
    /// by level, lower then upper): what [`Calibration::observe`] reads.
    bounds: Vec<BoundSpec>,
    /// The bounds' constants [`LANES`] at a time, then the last level's two
    /// if the levels are odd in number: what [`Calibration::observe_lanes`] reads.
    quads: Vec<Lanes<LANES>>,
    pair: Option<Lanes<2>>,
    pid: Pid,
}

/// `N` bounds' constants side by side (see [`Calibration::observe_lanes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Lanes<const N: usize> {
    /// −1 for a lower bound (it scores `ŷ − y`), 1 for an upper one
    /// (`y − ŷ`): either is exact as a factor.
    sign: [f64; N],
    /// [`BoundSpec::alpha`].
    alpha: [f64; N],
    /// [`BoundSpec::lr`].
    lr: [f64; N],
    /// All bits set for a bound in units of the RMS, none for one in units
    /// of the mean absolute residual: picks a bound's scale by its bits,
    /// which runs in the lanes where an index would not.
    rms: [u64; N],
}

impl<const N: usize> Lanes<N> {
    /// The constants of `bounds` (`N` of them).
    fn of(bounds: &[BoundSpec]) -> Self {
        Lanes {
            sign: std::array::from_fn(|i| if bounds[i].upper { 1.0 } else { -1.0 }),
            alpha: std::array::from_fn(|i| bounds[i].alpha),
            lr: std::array::from_fn(|i| bounds[i].lr),
            rms: std::array::from_fn(|i| if bounds[i].kind == 1 { u64::MAX } else { 0 }),
        }
    }

    /// Of a pair of scales `[mean absolute, RMS]`, the one bound `i` is in
    /// units of.
    #[inline(always)]
    fn pick(&self, i: usize, [mean, rms]: [f64; 2]) -> f64 {
        f64::from_bits((mean.to_bits() & !self.rms[i]) | (rms.to_bits() & self.rms[i]))
    }
}

/// The constants of one interval bound (see [`Calibration::observe`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct BoundSpec {
    /// The miss rate it tracks, `(1 − level) / 2`.
    alpha: f64,
    /// Its step before the delay's shrink: the configured step times the
    /// level's gain (the inverse Gaussian density at its quantile, relative
    /// to the 0.95 level's).
    lr: f64,
    /// Its starting quantile, per unit of the first residual's scale.
    start: f64,
    /// Which scale it is in units of: 0 the mean absolute residual, 1 the RMS.
    kind: usize,
    /// Whether it is the upper bound (it scores `y − ŷ`; the lower one `ŷ − y`).
    upper: bool,
}

/// What [`Calibration::observe`] scores a cell's bounds with.
#[derive(Clone, Copy)]
struct Scored {
    /// The residual `y − ŷ`.
    r: f64,
    /// The fast and slow scales the forecast was issued in, by kind (mean
    /// absolute, RMS).
    fast: [f64; 2],
    slow: [f64; 2],
    /// One over the issued mean absolute residual: the unit of the leads.
    per_issued: f64,
    /// The delay's shrink of the step (`1 / √step`).
    shrink: f64,
    /// The weights' rate on the events that refresh them.
    eta: Option<f64>,
    /// The cell's scales after `r` (`m, s, m', s'`): what the next widths use.
    next: [f64; 4],
}

impl Calibration {
    /// Calibration at `levels` (checked: each in (0, 1), no repeats).
    pub fn new(levels: &[f64], pid: Pid) -> Result<Self, String> {
        let mut sorted = levels.to_vec();
        if let Some(bad) = sorted.iter().find(|l| !(**l > 0.0 && **l < 1.0)) {
            return Err(format!(
                "model.intervals contains {bad}: each level must be in (0, 1), e.g. 0.8"
            ));
        }
        sorted.sort_by(f64::total_cmp);
        if let Some(twice) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "model.intervals lists {} twice: give each level once, e.g. [0.8, 0.95]",
                twice[0]
            ));
        }
        if !(pid.lr > 0.0 && pid.lr.is_finite()) {
            return Err(format!(
                "model.interval_lr = {}: must be a positive number",
                pid.lr
            ));
        }
        let alphas: Vec<f64> = sorted.iter().map(|l| (1.0 - l) / 2.0).collect();
        let rms: Vec<bool> = sorted.iter().map(|&l| l >= TAIL_LEVEL).collect();
        // Each level's Gaussian quantile per side, in units of σ.
        let z: Vec<f64> = alphas.iter().map(|a| normal_quantile(1.0 - a)).collect();
        // A Gaussian's RMS is its σ, its mean absolute value 0.798 σ.
        let starts: Vec<f64> = z
            .iter()
            .zip(&rms)
            .map(|(z, &rms)| z / if rms { 1.0 } else { MEAN_ABS_NORMAL })
            .collect();
        let anomaly_starts = z.iter().map(|z| z / MEAN_ABS_NORMAL).collect();
        // The density at a quantile, up to a constant that the ratio cancels.
        let density = |z: f64| (-0.5 * z * z).exp();
        let reference = density(normal_quantile(1.0 - REFERENCE_ALPHA));
        let gains: Vec<f64> = z.iter().map(|&z| reference / density(z)).collect();
        let bounds: Vec<BoundSpec> = (0..sorted.len())
            .flat_map(|l| {
                [false, true].map(|upper| BoundSpec {
                    alpha: alphas[l],
                    lr: pid.lr * gains[l],
                    start: starts[l],
                    kind: usize::from(rms[l]),
                    upper,
                })
            })
            .collect();
        Ok(Calibration {
            levels: sorted,
            ln_alphas: alphas.iter().map(|a| a.ln()).collect(),
            alphas,
            anomaly_starts,
            quads: bounds.chunks_exact(LANES).map(Lanes::of).collect(),
            pair: match bounds.chunks_exact(LANES).remainder() {
                [] => None,
                rest => Some(Lanes::of(rest)),
            },
            bounds,
            pid,
        })
    }

    /// The levels, ascending.
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }

    /// The widest level (what a residual past every bound scores at least).
    pub fn widest(&self) -> f64 {
        self.levels.last().copied().unwrap_or(0.0)
    }

    /// Elements of one component's cell.
    pub fn cell_len(&self) -> usize {
        cell_len(self.levels.len(), self.integrator())
    }

    /// Elements of one target's anomaly trackers: per level, a lower and an
    /// upper quantile.
    pub fn anomaly_len(&self) -> usize {
        anomaly_len(self.levels.len())
    }

    /// Moves a target's anomaly trackers `track` by the one-step residual
    /// `r`, in units of `m`, the running mean absolute residual of its
    /// one-step cell before that cell takes `r` in (see
    /// [`Calibration::scale`]; 0 while the cell has not started, which
    /// starts the trackers at the Gaussian quantiles). Call it after
    /// [`Calibration::anomaly`] has scored `r`.
    #[inline(always)]
    pub fn observe_anomaly<S: Scalar>(&self, track: &mut [S], m: f64, r: f64) {
        if m == 0.0 {
            self.start_anomaly(track);
            return;
        }
        let z = r / m;
        let pid = Pid {
            ki: 0.0,
            ..self.pid
        };
        for (l, &alpha) in self.alphas[..track.len() / 2].iter().enumerate() {
            for (at, score) in [(2 * l, -z), (2 * l + 1, z)] {
                let mut t = Tracker {
                    q: track[at].f64(),
                    drift: 0.0,
                };
                t.observe(score, alpha, &pid);
                track[at] = S::of(t.q);
            }
        }
    }

    /// Starts a target's anomaly trackers at the Gaussian quantiles (out of
    /// line and cold, as the other first-event paths are).
    #[cold]
    #[inline(never)]
    fn start_anomaly<S: Scalar>(&self, track: &mut [S]) {
        for (l, start) in self.anomaly_starts.iter().enumerate() {
            track[2 * l] = S::of(*start);
            track[2 * l + 1] = S::of(*start);
        }
    }

    /// Whether the trackers keep their running sums (an integrator gain `K_I > 0`).
    fn integrator(&self) -> bool {
        self.pid.ki > 0.0
    }

    /// Elements of one bound's tracker in this calibration's cells.
    #[inline(always)]
    fn side(&self) -> usize {
        side_len(self.integrator())
    }

    /// Where bound `b`'s weight (the fast scale's in its width) is kept in
    /// a cell: the last element of its tracker.
    #[cfg(test)]
    fn weight_at(&self, b: usize) -> usize {
        SCALES + (b + 1) * self.side() - 1
    }

    /// The rate of the exponential weights on the fast and slow scales `n`
    /// events into a stream, the anytime `√(8 ln 2 / n)`, on the events that
    /// refresh the weights (every [`WEIGHT_REFRESH`]th of a stream); `None`
    /// on the others. Passed to [`Calibration::observe`].
    pub fn mix_rate(n: u64) -> Option<f64> {
        /// Out of line: inlined, its square root and division were
        /// computed on every event, not only on the refreshing ones.
        #[inline(never)]
        fn rate(n: u64) -> f64 {
            MIX_RATE / (n.max(1) as f64).sqrt()
        }
        n.is_multiple_of(WEIGHT_REFRESH).then(|| rate(n))
    }

    /// The fast scale's weight in a bound's width, from its `lead` (the slow
    /// scale's summed pinball loss minus the fast one's) at the weights'
    /// rate `eta`: the logistic function of `eta · lead`, exact to 1e-6 (a
    /// weight needs no more).
    #[inline(always)]
    fn fast_weight(lead: f64, eta: f64) -> f64 {
        1.0 / (1.0 + exp_approx(-eta * lead))
    }

    /// The running mean absolute residual of a cell (0 until it starts): what
    /// the anomaly trackers are in units of.
    #[inline(always)]
    pub fn scale<S: Scalar>(cell: &[S]) -> f64 {
        cell[0].f64()
    }

    /// What a forecast component keeps to be scored by later: the cell's
    /// fast and slow mean absolute residuals now (0 until it starts). The RMS scales it was
    /// issued in are taken as their present values times the matching mean's
    /// movement since (exact one step ahead, where none has moved), so a
    /// forecast keeps two numbers, not four.
    #[inline(always)]
    pub fn issue<S: Scalar>(cell: &[S]) -> [S; ISSUED] {
        [cell[0], cell[2]]
    }

    /// Scores the residual `r = y − ŷ` of one forecast component issued with
    /// the scales `issued` (see [`Calibration::issue`]; a forecast's steps
    /// ahead are scored later than it was made, and the scales move
    /// meanwhile), with the weights' rate `eta` (see
    /// [`Calibration::mix_rate`]), and moves the cell. A cell
    /// that has seen no residual yet starts from this one.
    ///
    /// Each bound's width is its tracked quantile times a mixture of the
    /// fast and slow scales, weighted by how well each would have done:
    /// before the tracker moves, the bound's pinball loss with either scale
    /// (in units of the issued mean absolute residual) adds to its lead. The
    /// tracker scores the residual in units of the mixture, so the guarantee
    /// holds for the widths issued whatever the weights do.
    ///
    /// Writes into `widths` (one per bound, [`Calibration::bounds`]) the
    /// widths the cell issues next, as [`Calibration::widths`] would: the
    /// cell is at hand, and the next forecast's interval needs them.
    #[inline(always)]
    pub fn observe<S: Scalar>(
        &self,
        cell: &mut [S],
        r: f64,
        issued: &[S],
        step: usize,
        eta: Option<f64>,
        widths: &mut [f64],
    ) {
        let (m, s, m2, s2) = (cell[0].f64(), cell[1].f64(), cell[2].f64(), cell[3].f64());
        // One step ahead a forecast is scored before its cell moves again:
        // it was issued in the cell's own scales, which need no rescaling.
        let one = step == 1;
        let (i1, i2) = if one {
            (m, m2)
        } else {
            (issued[0].f64(), issued[1].f64())
        };
        if m == 0.0 || i1 == 0.0 {
            self.observe_unscored(cell, r, widths);
            return;
        }
        // The scales each bound was issued in, by kind (mean absolute, RMS).
        let rms = |s: f64, m: f64, i: f64| if one { s } else { s / m * i };
        let fast = [i1, rms(s, m, i1)];
        let slow = if m2 > 0.0 && i2 > 0.0 {
            [i2, rms(s2, m2, i2)]
        } else {
            fast
        };
        let per_issued = 1.0 / i1;
        // Step k's feedback arrives k events late, so its bound moves k
        // times before the interval it issued is scored; a step size shrunk
        // by √k keeps that drift (and the coverage it costs) from growing
        // with the horizon, the usual remedy for delayed feedback.
        let shrink = if step == 1 {
            1.0
        } else {
            1.0 / (step as f64).sqrt()
        };
        // The scales the next interval is issued in (they take `r` in after
        // the trackers scored it), as the cell keeps them.
        Self::take_in(cell, r.abs(), [m, s, m2, s2]);
        let next = [cell[0].f64(), cell[1].f64(), cell[2].f64(), cell[3].f64()];
        let scored = Scored {
            r,
            fast,
            slow,
            per_issued,
            shrink,
            eta,
            next,
        };
        if self.integrator() {
            self.observe_bounds::<S, { side_len(true) }>(cell, &scored, widths);
        } else {
            self.observe_bounds::<S, { side_len(false) }>(cell, &scored, widths);
        }
    }

    /// [`Calibration::observe`] of a residual `r` with no interval to score:
    /// the cell's first (which sets its scales and starts its trackers; a
    /// zero one leaves it unstarted), or one of a forecast issued before the
    /// cell started (which only moves its scales). Out of line and cold, as
    /// [`Calibration::widths`] is.
    #[cold]
    #[inline(never)]
    fn observe_unscored<S: Scalar>(&self, cell: &mut [S], r: f64, widths: &mut [f64]) {
        let a = r.abs();
        if cell[0].f64() != 0.0 {
            let (m, s, m2, s2) = (cell[0].f64(), cell[1].f64(), cell[2].f64(), cell[3].f64());
            Self::take_in(cell, a, [m, s, m2, s2]);
        } else {
            cell[..SCALES].fill(S::of(a));
            let side = self.side();
            for (k, t) in self
                .bounds
                .iter()
                .zip(cell[SCALES..].chunks_exact_mut(side))
            {
                t.fill(S::zero());
                t[0] = S::of(k.start);
                t[side - 1] = S::of(0.5);
            }
        }
        self.widths(cell, widths);
    }

    /// Moves a cell's scales, which were `[m, s, m', s']`, by the absolute
    /// residual `a`.
    #[inline(always)]
    fn take_in<S: Scalar>(cell: &mut [S], a: f64, [m, s, m2, s2]: [f64; 4]) {
        cell[0] = S::of(m + MEAN_WEIGHT * (a - m));
        cell[1] = S::of((s * s + MEAN_WEIGHT * (a * a - s * s)).sqrt());
        cell[2] = S::of(m2 + SLOW_WEIGHT * (a - m2));
        cell[3] = S::of((s2 * s2 + SLOW_WEIGHT * (a * a - s2 * s2)).sqrt());
    }

    /// The bounds' part of [`Calibration::observe`], with `SIDE` the
    /// elements of a bound's tracker ([`side_len`]; a constant, so that
    /// every element's place in the cell is one). The bounds are moved
    /// [`LANES`] at a time (two levels), then a level's two if one is left.
    #[inline(always)]
    fn observe_bounds<S: Scalar, const SIDE: usize>(
        &self,
        cell: &mut [S],
        scored: &Scored,
        widths: &mut [f64],
    ) {
        let n = widths.len();
        let (trackers, _) = cell[SCALES..].as_chunks_mut::<SIDE>();
        let (ts, t_rest) = trackers[..n].as_chunks_mut::<LANES>();
        let (outs, out_rest) = widths.as_chunks_mut::<LANES>();
        let quads = &self.quads[..n / LANES];
        for ((k, t), out) in quads.iter().zip(ts).zip(outs) {
            self.observe_lanes(k, t, scored, out);
        }
        if let Some(k) = &self.pair {
            let (ts, _) = t_rest.as_chunks_mut::<2>();
            let (outs, _) = out_rest.as_chunks_mut::<2>();
            if let (Some(t), Some(out)) = (ts.first_mut(), outs.first_mut()) {
                self.observe_lanes(k, t, scored, out);
            }
        }
    }

    /// `N` bounds' part of [`Calibration::observe`] on their trackers'
    /// elements `t` in a cell; writes the widths they issue next into `out`.
    /// Each step runs over the `N` bounds before the next (so that it can
    /// run on them at once); each bound's arithmetic is its own.
    #[inline(always)]
    fn observe_lanes<S: Scalar, const SIDE: usize, const N: usize>(
        &self,
        k: &Lanes<N>,
        t: &mut [[S; SIDE]; N],
        scored: &Scored,
        out: &mut [f64; N],
    ) {
        let lanes = |f: &dyn Fn(usize) -> f64| -> [f64; N] { std::array::from_fn(f) };
        let x = lanes(&|i| k.sign[i] * scored.r);
        let f = lanes(&|i| k.pick(i, scored.fast));
        let sl = lanes(&|i| k.pick(i, scored.slow));
        let alpha = k.alpha;
        // The weight each bound was issued with (exactly, one step ahead).
        let w = lanes(&|i| t[i][SIDE - 1].f64());
        let trackers: [Tracker; N] = std::array::from_fn(|i| self.tracker(&t[i]));
        let b = lanes(&|i| self.bound(&t[i], &trackers[i]));
        for i in 0..N {
            let gain = pinball(b[i] * sl[i], x[i], alpha[i]) - pinball(b[i] * f[i], x[i], alpha[i]);
            t[i][SIDE - 2] = S::of(t[i][SIDE - 2].f64() + gain * scored.per_issued);
        }
        // The weight the new lead gives, on the events that refresh it.
        if let Some(eta) = scored.eta {
            for t in t.iter_mut() {
                t[SIDE - 1] = S::of(Self::fast_weight(t[SIDE - 2].f64(), eta));
            }
        }
        // Scored in units of the width's scale (a miss is the residual past
        // the bound times that scale): the trackers' steps stay the same
        // size whatever the stream's volatility does, so the telescoping sum
        // behind the guarantee holds.
        for i in 0..N {
            let pid = Pid {
                lr: k.lr[i] * scored.shrink,
                ..self.pid
            };
            let mut tracker = trackers[i];
            tracker.step(x[i] > b[i] * Self::mixed(w[i], f[i], sl[i]), alpha[i], &pid);
            t[i][0] = S::of(tracker.q);
            if SIDE == side_len(true) {
                t[i][1] = S::of(tracker.drift);
            }
        }
        let [m, s, m2, s2] = scored.next;
        for i in 0..N {
            let (f, sl) = (k.pick(i, [m, s]), k.pick(i, [m2, s2]));
            let w = t[i][SIDE - 1].f64();
            out[i] = Self::mixed(w, f, sl) * self.bound(&t[i], &self.tracker(&t[i]));
        }
    }

    /// The width bound `k` issues from its tracker's elements `t` in a cell
    /// whose scales are `scales` (`m, s, m', s'`): its quantile times the
    /// mixture of the fast and slow scales its weight gives.
    #[inline(always)]
    fn width<S: Scalar>(&self, k: &BoundSpec, t: &[S], scales: &[f64; 4]) -> f64 {
        let (f, sl) = (scales[k.kind & 1], scales[(k.kind & 1) + 2]);
        let w = t[t.len() - 1].f64();
        Self::mixed(w, f, sl) * self.bound(t, &self.tracker(t))
    }

    /// The mixture of a fast and a slow scale that a fast weight `w` gives.
    #[inline(always)]
    fn mixed(w: f64, fast: f64, slow: f64) -> f64 {
        w * fast + (1.0 - w) * slow
    }

    /// The bound `tracker` (read from its elements `t` in a cell) issues:
    /// its quantile alone where the trackers keep no running sum (`K_I = 0`,
    /// known from the tracker's length), as [`Tracker::bound`] gives then.
    #[inline(always)]
    fn bound<S: Scalar>(&self, t: &[S], tracker: &Tracker) -> f64 {
        if t.len() == side_len(true) {
            tracker.bound(&self.pid)
        } else {
            tracker.q
        }
    }

    /// [`Calibration::observe`] of a one-step residual `r`, the `n`th of its
    /// stream, issued from the cell as it is: what the tests replay.
    #[cfg(test)]
    pub(crate) fn observe_next<S: Scalar>(&self, cell: &mut [S], r: f64, n: usize) {
        let issued = Self::issue(cell);
        let mut widths = vec![0.0; self.bounds()];
        self.observe(cell, r, &issued, 1, Self::mix_rate(n as u64), &mut widths);
    }

    /// Bounds per cell: two per level, level by level, lower then upper.
    pub fn bounds(&self) -> usize {
        self.bounds.len()
    }

    /// Each bound's width in the cell's next interval, into `widths` (one
    /// per bound, [`Calibration::bounds`]; see [`Calibration::width`]).
    /// Out of line and cold: [`Calibration::observe`] leaves the widths of
    /// every scored cell, so a stream asks for them only before its cells
    /// start (inlined, its set-up was hoisted onto every event).
    #[cold]
    #[inline(never)]
    pub fn widths<S: Scalar>(&self, cell: &[S], widths: &mut [f64]) {
        if self.integrator() {
            self.widths_with::<S, { side_len(true) }>(cell, widths);
        } else {
            self.widths_with::<S, { side_len(false) }>(cell, widths);
        }
    }

    /// [`Calibration::widths`] with `SIDE` elements per tracker (see
    /// [`Calibration::observe_bounds`]).
    #[inline(always)]
    fn widths_with<S: Scalar, const SIDE: usize>(&self, cell: &[S], widths: &mut [f64]) {
        let scales = [cell[0].f64(), cell[1].f64(), cell[2].f64(), cell[3].f64()];
        let (trackers, _) = cell[SCALES..].as_chunks::<SIDE>();
        for ((k, t), out) in self.bounds.iter().zip(trackers).zip(widths.iter_mut()) {
            *out = self.width(k, t, &scales);
        }
    }

    /// The interval around `forecast` whose lower and upper bounds have the
    /// widths `lower` and `upper` (see [`Calibration::widths`]): an unstarted
    /// cell gives the point forecast; bounds that would cross (both sides'
    /// quantiles past each other) meet in the middle.
    #[inline(always)]
    pub fn around(forecast: f64, lower: f64, upper: f64) -> (f64, f64) {
        let (lo, hi) = (forecast - lower, forecast + upper);
        if lo <= hi {
            (lo, hi)
        } else {
            let mid = 0.5 * (lo + hi);
            (mid, mid)
        }
    }

    /// The interval around `forecast` at level index `l` (see
    /// [`Calibration::around`]), from the cell: what the tests read.
    #[cfg(test)]
    pub(crate) fn interval<S: Scalar>(&self, cell: &[S], l: usize, forecast: f64) -> (f64, f64) {
        let mut widths = vec![0.0; self.bounds()];
        self.widths(cell, &mut widths);
        Self::around(forecast, widths[2 * l], widths[2 * l + 1])
    }

    /// A bound's tracker from its elements `t` in a cell (its running sum
    /// 0 without an integrator).
    #[inline(always)]
    fn tracker<S: Scalar>(&self, t: &[S]) -> Tracker {
        Tracker {
            q: t[0].f64(),
            drift: if t.len() == side_len(true) {
                t[1].f64()
            } else {
                0.0
            },
        }
    }

    /// How anomalous the one-step residual `r = y − ŷ` is, in [0, 1]: one
    /// minus a two-sided p-value read off the anomaly trackers `track` of its
    /// side (each a calibrated bound in units of the one-step `cell`'s `m`). A bound at level `L` is exceeded with probability `(1 − L) / 2`;
    /// from the point forecast (probability 1/2) to the first bound the tail
    /// is taken as exponential, between bounds and past the widest as a power
    /// law (log-linear in the log of the distance). Residuals of real series
    /// have heavy tails: an exponential extrapolation would call every spike
    /// impossible (p below 1e-16, a score of exactly 1) and leave the large
    /// ones indistinguishable from the huge ones. `None` while the cell has
    /// not started.
    #[inline(always)]
    pub fn anomaly<S: Scalar>(&self, cell: &[S], track: &[S], r: f64) -> Option<f64> {
        let m = cell[0].f64();
        if m == 0.0 {
            return None;
        }
        // The first level's tracker on the residual's side; each further
        // level's is two elements on.
        let side = usize::from(r >= 0.0);
        let x = r.abs();
        // Knots (width, ln tail probability), from the point forecast out.
        // The logarithms run in f32 (a score needs no more, and they are
        // much of its cost); the exponential, on every event, inline.
        let ln = |v: f64| f64::from((v as f32).ln());
        let (mut w0, mut lp0) = (0.0, -std::f64::consts::LN_2);
        let levels = &self.ln_alphas[..track.len() / 2];
        // Most residuals fall within the first bound: that case first, as
        // the loop below would take it, without the loop's set-up.
        if let Some(&lp) = levels.first() {
            let w = m * track[side].f64();
            if w > w0 && x <= w {
                return Some(1.0 - (2.0 * exp_tail(lp0 + (lp - lp0) * x / w)).min(1.0));
            }
        }
        let mut power = None;
        for (l, &lp) in levels.iter().enumerate() {
            let w = m * track[side + 2 * l].f64();
            if w <= w0 {
                continue;
            }
            if x <= w {
                let lpx = if w0 == 0.0 {
                    lp0 + (lp - lp0) * x / w
                } else {
                    lp0 + (lp - lp0) * ln(x / w0) / ln(w / w0)
                };
                return Some(1.0 - (2.0 * exp_tail(lpx)).min(1.0));
            }
            if w0 > 0.0 {
                power = Some((lp0 - lp) / ln(w / w0));
            }
            (w0, lp0) = (w, lp);
        }
        if w0 == 0.0 {
            // No bound wider than zero: the mean residual as the scale.
            return Some(1.0 - (2.0 * exp_tail(lp0 - x / m)).min(1.0));
        }
        // Past the widest bound: the power law of the last two knots, or
        // (with one level) the exponential's slope at that bound.
        let gamma = power.unwrap_or((-std::f64::consts::LN_2 - lp0).abs().max(1.0));
        let lpx = lp0 - gamma * ln(x / w0);
        Some(1.0 - (2.0 * exp_tail(lpx)).min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::Rng;

    /// Laplace noise of scale `b` (heavier tails than a Gaussian).
    fn laplace(rng: &mut Rng, b: f64) -> f64 {
        let u = rng.unit() - 0.5;
        -b * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
    }

    /// Coverage of each level's intervals over `residuals`, issued before each is scored.
    fn coverage(residuals: &[f64], cal: &Calibration) -> Vec<f64> {
        let mut cell = vec![0.0f64; cal.cell_len()];
        let mut inside = vec![0usize; cal.levels().len()];
        for (t, &r) in residuals.iter().enumerate() {
            for (l, n) in inside.iter_mut().enumerate() {
                let (lo, hi) = cal.interval(&cell, l, 0.0);
                if (lo..=hi).contains(&r) {
                    *n += 1;
                }
            }
            cal.observe_next(&mut cell, r, t);
        }
        inside
            .iter()
            .map(|&n| n as f64 / residuals.len() as f64)
            .collect()
    }

    #[test]
    fn a_level_moves_the_same_whichever_levels_it_is_tracked_with() {
        // A level's bounds read the shared scales and their own trackers
        // only. `observe` moves bounds four at a time (two levels) and a
        // level left over as a pair, so each level here runs once in a
        // group of four and once as a pair: its widths must agree bit for
        // bit, with the integrator and without.
        let mut rng = Rng::new(11);
        let residuals: Vec<f64> = (0..3_000)
            .map(|i| laplace(&mut rng, if i < 1_500 { 1.0 } else { 4.0 }) + 0.3)
            .collect();
        for pid in [
            Pid::default(),
            Pid {
                ki: 0.5,
                ..Pid::default()
            },
        ] {
            // 0.5 and 0.8 in a group of four, 0.95 a pair; then 0.8 and
            // 0.95 in a group of four; then 0.5 a pair.
            let cals = [&[0.5, 0.8, 0.95][..], &[0.8, 0.95], &[0.5]]
                .map(|levels| Calibration::new(levels, pid).unwrap());
            let mut cells = cals.each_ref().map(|c| vec![0.0f64; c.cell_len()]);
            let mut widths = cals.each_ref().map(|c| vec![0.0; c.bounds()]);
            for (n, &r) in residuals.iter().enumerate() {
                for ((cal, cell), widths) in cals.iter().zip(&mut cells).zip(&mut widths) {
                    let issued = Calibration::issue(cell);
                    cal.observe(cell, r, &issued, 1, Calibration::mix_rate(n as u64), widths);
                }
                let [three, two, one] = &widths;
                assert_eq!(three[..2], one[..], "{pid:?} 0.5 after {n}");
                assert_eq!(three[2..], two[..], "{pid:?} 0.8 and 0.95 after {n}");
            }
            // The widths `observe` leaves are the ones the cell gives.
            for ((cal, cell), left) in cals.iter().zip(&cells).zip(&widths) {
                let mut again = vec![0.0; cal.bounds()];
                cal.widths(cell, &mut again);
                assert_eq!(&again, left, "{pid:?} {:?}", cal.levels());
            }
        }
    }

    #[test]
    fn coverage_holds_on_stationary_drifting_and_skewed_residuals() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let stationary: Vec<f64> = (0..n).map(|_| laplace(&mut rng, 1.0)).collect();
        // The scale grows tenfold halfway, then the residuals turn one-sided.
        let drifting: Vec<f64> = (0..n)
            .map(|i| laplace(&mut rng, if i < n / 2 { 1.0 } else { 10.0 }))
            .collect();
        let skewed: Vec<f64> = (0..n).map(|_| laplace(&mut rng, 1.0).abs() + 3.0).collect();
        for pid in [
            Pid::default(),
            Pid {
                ki: 0.5,
                ..Pid::default()
            },
        ] {
            let cal = Calibration::new(&[0.8, 0.95], pid).unwrap();
            for residuals in [&stationary, &drifting, &skewed] {
                let got = coverage(residuals, &cal);
                for (level, c) in cal.levels().iter().zip(&got) {
                    assert!((c - level).abs() < 0.01, "{pid:?} level {level}: {c}");
                }
            }
        }
    }

    #[test]
    fn quantile_tracking_keeps_its_guarantee_on_an_adversarial_sequence() {
        // Scores jump between 0 and B in long blocks; the miss rate stays
        // within (B + η) / (η T) of α.
        let pid = Pid {
            ki: 0.0,
            ..Pid::default()
        };
        let (alpha, b, n) = (0.1, 10.0, 50_000usize);
        let mut t = Tracker::default();
        let misses = (0..n)
            .filter(|i| t.observe(if (i / 777) % 2 == 0 { 0.0 } else { b }, alpha, &pid))
            .count();
        let rate = misses as f64 / n as f64;
        let bound = (b + pid.lr) / (pid.lr * n as f64);
        assert!((rate - alpha).abs() <= bound, "{rate} vs {alpha} ± {bound}");
    }

    #[test]
    fn a_value_is_new_to_a_range_only_past_its_tolerance_and_once_armed() {
        let mut range = [0.0f32; 2];
        assert!(
            !outside_range(&mut range, 5.0, true, true),
            "the first value starts it"
        );
        assert!(
            !outside_range(&mut range, 15.0, false, true),
            "a one-point range has no span"
        );
        assert_eq!(range, [5.0, 15.0]);
        // Span 10: new only past 4.5 or 15.5.
        assert!(!outside_range(&mut range, 15.4, false, true));
        assert!(outside_range(&mut range, 4.4, false, true));
        assert_eq!(range, [4.4, 15.4], "the range takes every value in");
        assert!(!outside_range(&mut range, 100.0, false, false), "not armed");
        assert_eq!(range[1], 100.0);
    }

    #[test]
    fn anomaly_scores_rise_with_the_residual_and_mark_the_tails() {
        // Without an integrator (the default, 16 elements for two levels:
        // four scales, and four quantiles with their leads and weights) and
        // with one (20: each tracker keeps its running sum).
        for (ki, len) in [(0.0, 16), (0.5, 20)] {
            anomaly_scores_with(
                Pid {
                    ki,
                    ..Pid::default()
                },
                len,
            );
        }
    }

    fn anomaly_scores_with(pid: Pid, len: usize) {
        let mut rng = Rng::new(3);
        let cal = Calibration::new(&[0.8, 0.95], pid).unwrap();
        assert_eq!(cal.cell_len(), len);
        let mut cell = vec![0.0f32; cal.cell_len()];
        let mut track = vec![0.0f32; cal.anomaly_len()];
        assert_eq!(track.len(), 4, "a lower and an upper quantile per level");
        assert_eq!(cal.anomaly(&cell, &track, 1.0), None, "not started");
        for n in 0..5000 {
            let r = laplace(&mut rng, 1.0);
            let m = Calibration::scale(&cell);
            cal.observe_anomaly(&mut track, m, r);
            cal.observe_next(&mut cell, r, n);
        }
        let score = |r: f64| cal.anomaly(&cell, &track, r).unwrap();
        let scores: Vec<f64> = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 30.0]
            .iter()
            .map(|&r| score(r))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
        // Laplace(1) puts 3.4e-4 past 8 (a score of 0.9997); the power-law
        // tail is heavier on purpose, and still far past the 0.95 bound.
        assert!(
            scores[0] == 0.0 && scores[5] > 0.99 && scores[6] > 0.999,
            "{scores:?}"
        );
        assert!(score(-30.0) > 0.999, "the lower side too");
        // At a calibrated bound the score is its level: 1 − 2·(1 − L)/2 = L.
        let m = f64::from(cell[0]);
        let at = score(m * f64::from(track[3]));
        assert!((at - 0.95).abs() < 1e-6, "{at}");
        let at = score(-m * f64::from(track[0]));
        assert!((at - 0.8).abs() < 1e-6, "{at}");
        // The trackers are calibrated: Laplace(1) has |r| ≥ 1.61 one time in
        // five and ≥ 3.0 one time in twenty (m → 1).
        assert!((m * f64::from(track[1]) - 1.61).abs() < 0.25, "{track:?}");
        assert!((m * f64::from(track[3]) - 3.0).abs() < 0.5, "{track:?}");
    }

    /// The fast scale's weights in the bounds of level `l` after
    /// `residuals` (lower, upper), and the level's mean interval score; with
    /// `held`, every weight is held there instead of learned.
    fn weights_after(residuals: &[f64], l: usize, held: Option<f64>) -> ((f64, f64), f64) {
        let cal = Calibration::new(&[0.8, 0.95], Pid::default()).unwrap();
        let mut cell = vec![0.0f64; cal.cell_len()];
        let (mut score, alpha) = (0.0, 1.0 - cal.levels()[l]);
        let weights: Vec<usize> = (0..cal.bounds()).map(|b| cal.weight_at(b)).collect();
        for (n, &r) in residuals.iter().enumerate() {
            let (lo, hi) = cal.interval(&cell, l, 0.0);
            score += hi - lo + 2.0 / alpha * ((lo - r).max(0.0) + (r - hi).max(0.0));
            cal.observe_next(&mut cell, r, n);
            if let Some(w) = held {
                weights.iter().for_each(|&at| cell[at] = w);
            }
        }
        let weight = |b: usize| cell[cal.weight_at(b)];
        (
            (weight(2 * l), weight(2 * l + 1)),
            score / residuals.len() as f64,
        )
    }

    #[test]
    fn the_width_follows_the_scale_that_would_have_scored_better() {
        let mut rng = Rng::new(5);
        // Steady Laplace noise: the slow scale is the less noisy estimate of
        // the same spread, so the weights move to it, and the interval score
        // drops below the fast scale's alone (the weights held at 1, as
        // before the slow scale).
        let steady: Vec<f64> = (0..30_000).map(|_| laplace(&mut rng, 1.0)).collect();
        let ((lo, hi), mixed) = weights_after(&steady, 0, None);
        assert!(
            lo < 0.5 && hi < 0.5,
            "steady noise: fast weights {lo}, {hi}"
        );
        let (_, fast) = weights_after(&steady, 0, Some(1.0));
        assert!(mixed < fast, "steady: mixture {mixed}, fast scale {fast}");
        // Volatility that jumps between 1 and 5 every 150 events: the fast
        // scale follows the jumps sooner, and the weights move to it; the
        // mixture costs at most its regret (here well under 1%) against it.
        let jumpy: Vec<f64> = (0..30_000)
            .map(|i| laplace(&mut rng, if (i / 150) % 2 == 0 { 1.0 } else { 5.0 }))
            .collect();
        let ((lo, hi), mixed) = weights_after(&jumpy, 0, None);
        assert!(lo > 0.5 && hi > 0.5, "jumpy noise: fast weights {lo}, {hi}");
        let (_, fast) = weights_after(&jumpy, 0, Some(1.0));
        let (_, slow) = weights_after(&jumpy, 0, Some(0.0));
        assert!(
            mixed < slow && mixed <= 1.01 * fast,
            "jumpy: mixture {mixed}, fast scale {fast}, slow scale {slow}"
        );
    }

    #[test]
    fn the_weights_start_even_and_refresh_every_few_events() {
        assert!((Calibration::fast_weight(0.0, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(
            Calibration::mix_rate(3),
            None,
            "only every WEIGHT_REFRESH events"
        );
        assert!(Calibration::mix_rate(WEIGHT_REFRESH).is_some());
    }

    #[test]
    fn levels_are_checked_and_the_starting_bounds_are_gaussian() {
        assert!(Calibration::new(&[1.0], Pid::default()).is_err());
        assert!(Calibration::new(&[0.0], Pid::default()).is_err());
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(0.1) + 1.281_551_566).abs() < 1e-8);
        let twice = Calibration::new(&[0.95, 0.8, 0.8], Pid::default()).unwrap_err();
        assert!(twice.contains("0.8 twice"), "{twice}");
        let cal = Calibration::new(&[0.95, 0.8], Pid::default()).unwrap();
        assert_eq!(cal.levels(), &[0.8, 0.95]);
        let mut cell = vec![0.0f64; cal.cell_len()];
        cal.observe(&mut cell, -2.0, &[0.0; ISSUED], 1, None, &mut [0.0; 4]);
        // A first residual of 2 is a Gaussian's mean absolute value when
        // σ = 2 / 0.798 (the 0.8 level's scale) and its RMS when σ = 2 (the
        // 0.95 level's).
        for (l, w) in [
            (0, 2.0 / MEAN_ABS_NORMAL * 1.281_551_566),
            (1, 2.0 * 1.959_963_985),
        ] {
            let (lo, hi) = cal.interval(&cell, l, 10.0);
            assert!(
                (hi - 10.0 - w).abs() < 1e-6 && (10.0 - lo - w).abs() < 1e-6,
                "level {l}: {lo}..{hi}, expected 10 ± {w}"
            );
        }
    }
}
