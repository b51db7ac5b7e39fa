//! The backtest engine: replays events through the live learner and scores
//! every forecast against the naive, seasonal-naive and linear baselines.
//!
//! Events are processed in order exactly as `recur run` would process them
//! ([`Forecaster::observe`], one event at a time). The forecast made after a
//! stream's event at row `r` covers that stream's next `horizon` events; it is
//! scored when every one of them lies in the evaluation rows, and each
//! baseline's forecast made after the same event is scored on the same values.

use std::ops::Range;
use std::time::Instant;

use serde::Serialize;

use super::baseline::LinearBaseline;
use super::intervals::{LevelScores, LevelSums, SplitConformal};
use crate::model::linear::LinearConfig;
use crate::model::normalize::Normalizer;
use crate::model::{Forecaster, ModelConfig, Normalize};

/// Events to replay, in processing order.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Value column names (D).
    pub columns: Vec<String>,
    /// Stream names; events refer to them by index.
    pub streams: Vec<String>,
    /// Stream index of each event.
    pub stream: Vec<u32>,
    /// Event time of each event (epoch ms, or the row index).
    pub ts_ms: Vec<i64>,
    /// Values, row-major `events × columns`.
    pub values: Vec<f64>,
    /// Learner of each event (empty: one learner for all). A topic replay uses
    /// one per partition, exactly as `recur run` does.
    pub group: Vec<u32>,
    /// What `ts_ms` holds.
    pub time: TimeBase,
}

/// What a replay's event times are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBase {
    /// Epoch milliseconds from a time column or message timestamps.
    #[default]
    Epoch,
    /// The row index (no time column): spacing says nothing about the clock.
    RowIndex,
}

impl Replay {
    /// Number of events (rows).
    pub fn rows(&self) -> usize {
        self.stream.len()
    }
    fn row(&self, r: usize) -> &[f64] {
        let d = self.columns.len();
        &self.values[r * d..(r + 1) * d]
    }
    /// The learner (group) of event `r`.
    fn group_of(&self, r: usize) -> usize {
        self.group.get(r).map_or(0, |&g| g as usize)
    }
}

/// How values are scaled in a backtest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// z-score with the mean and population standard deviation of each
    /// stream's warm-up rows (the published protocol).
    Warmup,
    /// The learner's running (Welford) statistics.
    Running,
    /// No scaling.
    None,
}

/// The evaluation protocol.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// Rows `[0, warmup_rows)` pretrain the model, `epochs` passes, before the online run.
    pub warmup_rows: usize,
    /// Passes over the warm-up rows.
    pub epochs: usize,
    /// Rows whose forecasts are scored (all targets of a forecast must lie inside).
    pub eval: Range<usize>,
    /// Scaling of values.
    pub scaling: Scaling,
    /// Season length (in events, at least 1) of the seasonal-naive baseline.
    pub season: usize,
    /// The linear baseline's settings.
    pub linear: LinearConfig,
}

/// A season length inferred from a replay's event times, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeasonGuess {
    /// Events per season.
    pub rows: usize,
    /// How it was found (for the report's notes).
    pub why: String,
}

/// Season when the event times say nothing: a day of hourly data.
pub const FALLBACK_SEASON: usize = 24;

/// One day of events: a day divided by the median spacing of consecutive
/// events of the first stream (24 for hourly data, 96 for 15-minute data, 1 for
/// daily data). Falls back to [`FALLBACK_SEASON`] when the times are row
/// indices, there are fewer than two events, or the spacing does not divide a day.
pub fn infer_season(replay: &Replay) -> SeasonGuess {
    const DAY_MS: i64 = 86_400_000;
    let fallback = |why: String| SeasonGuess {
        rows: FALLBACK_SEASON,
        why: format!("season {FALLBACK_SEASON} rows (fallback): {why}"),
    };
    if replay.time == TimeBase::RowIndex {
        return fallback("the time column is the row index".into());
    }
    let first: Vec<i64> = (0..replay.rows())
        .filter(|&r| replay.stream[r] == 0)
        .map(|r| replay.ts_ms[r])
        .collect();
    let mut gaps: Vec<i64> = first.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.is_empty() {
        return fallback("fewer than two events in the first stream".into());
    }
    let mid = gaps.len() / 2;
    let spacing = *gaps.select_nth_unstable(mid).1;
    if spacing <= 0 || DAY_MS % spacing != 0 {
        return fallback(format!(
            "the median spacing of events, {spacing} ms, does not divide a day"
        ));
    }
    SeasonGuess {
        rows: (DAY_MS / spacing) as usize,
        why: format!(
            "season {} rows: one day at the median spacing of {}",
            DAY_MS / spacing,
            spacing_text(spacing)
        ),
    }
}

/// `3600000` as `1 h`, `900000` as `15 min`.
fn spacing_text(ms: i64) -> String {
    for (unit, name) in [(3_600_000, "h"), (60_000, "min"), (1000, "s")] {
        if ms % unit == 0 {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

/// Error sums of one forecaster over some slice of the predictions.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ErrorSums {
    n: u64,
    se: f64,
    ae: f64,
    smape: f64,
    smape_n: u64,
}

impl ErrorSums {
    fn add(&mut self, forecast: f64, actual: f64) {
        let e = forecast - actual;
        self.n += 1;
        self.se += e * e;
        self.ae += e.abs();
        let denom = forecast.abs() + actual.abs();
        if denom > 0.0 {
            self.smape += 2.0 * e.abs() / denom;
            self.smape_n += 1;
        }
    }
}

/// The five metrics of one forecaster on one slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Scored values.
    pub n: u64,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Symmetric MAPE in percent, `mean(200 |f - a| / (|f| + |a|))`.
    pub smape: f64,
    /// MAE divided by the in-sample MAE of the one-step naive forecast on the warm-up rows.
    pub mase: f64,
}

impl Scores {
    fn from(s: &ErrorSums, mase_scale: f64) -> Self {
        let n = s.n.max(1) as f64;
        let mae = s.ae / n;
        Scores {
            n: s.n,
            mse: s.se / n,
            mae,
            rmse: (s.se / n).sqrt(),
            smape: 100.0 * s.smape / s.smape_n.max(1) as f64,
            mase: if mase_scale > 0.0 {
                mae / mase_scale
            } else {
                f64::NAN
            },
        }
    }
}

/// Scores of the model and the baselines on one slice, in both unit systems.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scored {
    /// recur's forecasts, scaled units.
    pub model: Scores,
    /// Naive (last value), scaled units.
    pub naive: Scores,
    /// Seasonal naive, scaled units.
    pub seasonal: Scores,
    /// recur's forecasts, original units.
    pub model_raw: Scores,
    /// Naive, original units.
    pub naive_raw: Scores,
    /// Seasonal naive, original units.
    pub seasonal_raw: Scores,
    /// The linear baseline, scaled units.
    pub linear: Scores,
    /// The linear baseline, original units.
    pub linear_raw: Scores,
    /// recur's intervals and the split-conformal baseline's, per level, scaled units.
    pub intervals: Vec<LevelScores>,
    /// The same in original units.
    pub intervals_raw: Vec<LevelScores>,
}

/// One scored forecast component.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Row of the event the forecast is for.
    pub row: usize,
    /// Its time.
    pub ts_ms: i64,
    /// Stream index.
    pub stream: u32,
    /// Horizon step (1-based).
    pub step: u32,
    /// Target index (into the targets).
    pub target: u32,
    /// recur's forecast, original units.
    pub forecast: f64,
    /// The observed value.
    pub actual: f64,
    /// The naive forecast.
    pub naive: f64,
    /// The seasonal-naive forecast.
    pub seasonal: f64,
    /// The linear baseline's forecast.
    pub linear: f64,
    /// recur's interval `(lower, upper)` at each level, ascending (empty without intervals).
    pub bounds: Vec<(f64, f64)>,
}

/// What a backtest produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The learner after the run (the first partition's, for topic replays):
    /// what `recur train` saves.
    pub learner: Option<Forecaster<f32>>,
    /// Rows replayed (online part, after pretraining).
    pub rows: usize,
    /// Forecasts scored (each covers horizon × targets values).
    pub forecasts: u64,
    /// Over everything scored.
    pub overall: Scored,
    /// Per horizon step (index 0 = one step ahead).
    pub per_step: Vec<Scored>,
    /// Per target.
    pub per_target: Vec<Scored>,
    /// Per stream (index as in [`Replay::streams`]), each baseline on its own stream's values.
    pub per_stream: Vec<Scored>,
    /// Every scored forecast component, if requested.
    pub predictions: Vec<Prediction>,
    /// Every forecast made, with the row of the event it was made after (online part), if requested.
    pub made: Vec<(usize, Vec<f64>)>,
    /// For each of `made`: its interval bounds (lower, upper; `levels ×
    /// horizon × targets`) and the event's anomaly score.
    pub made_bounds: Vec<(Vec<f64>, Vec<f64>, Option<f64>)>,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Events processed per second (pretraining included).
    pub events_per_sec: f64,
    /// Events processed (pretraining included).
    pub events: u64,
}

/// Whether to keep every prediction in the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Keep them (for `predictions.parquet` and the report).
    Predictions,
    /// Only the metrics.
    MetricsOnly,
}

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The protocol does not fit the data.
    #[error("{0}")]
    Protocol(String),
    /// The model configuration is invalid.
    #[error("model: {0}")]
    Model(String),
}

/// Per-stream bookkeeping of forecasts waiting to be scored.
struct Pending {
    /// Rows of this stream's events so far, in order.
    rows: Vec<usize>,
    /// Forecasts made after each event, newest last.
    made: std::collections::VecDeque<Made>,
}

/// The forecasts made after one event, original units, `horizon × targets` each.
struct Made {
    /// Index of the event within its stream.
    k: usize,
    /// Its row.
    row: usize,
    /// recur's forecast.
    model: Vec<f64>,
    /// The linear baseline's.
    linear: Vec<f64>,
    /// recur's interval bounds, `levels × horizon × targets` each (empty without intervals).
    lower: Vec<f64>,
    upper: Vec<f64>,
    /// The split-conformal baseline's half-widths, shaped like `lower` (NaN:
    /// no error observed yet for that component).
    split: Vec<f64>,
}

/// What the learner made of one row.
struct Fed {
    forecast: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    anomaly: Option<f64>,
}

/// Progress callback: `(events done, events total)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Runs the backtest.
pub fn run(
    replay: &Replay,
    cfg: &ModelConfig,
    protocol: &Protocol,
    keep: Keep,
    progress: Progress<'_>,
) -> Result<Outcome, BacktestError> {
    let start = Instant::now();
    validate(replay, protocol)?;
    let mut engine = Engine::new(replay, cfg, protocol, keep)?;
    engine.pretrain(progress);
    // With no pretraining the warm-up rows still pass through the learner online.
    let online_from = if protocol.epochs == 0 {
        0
    } else {
        protocol.warmup_rows
    };

    let ns = replay.streams.len();
    let mut pend: Vec<Pending> = (0..ns)
        .map(|_| Pending {
            rows: Vec::new(),
            made: Default::default(),
        })
        .collect();
    let mut sums = Sums::new(engine.hz, engine.targets.len(), ns, &engine.levels);
    let mut out = Outcome::default();
    for r in online_from..replay.rows() {
        engine.step(r, &mut pend, &mut sums, &mut out);
        engine.tick(progress);
    }
    progress(engine.total, engine.total);
    Ok(engine.outcome(&sums, out, online_from, start))
}

/// Checks that the protocol fits the replay.
fn validate(replay: &Replay, protocol: &Protocol) -> Result<(), BacktestError> {
    let rows = replay.rows();
    let d = replay.columns.len();
    if rows == 0 || d == 0 {
        return Err(BacktestError::Protocol(
            "the input has no rows or no value columns".into(),
        ));
    }
    if protocol.warmup_rows >= rows {
        return Err(BacktestError::Protocol(format!(
            "--warmup-rows {} leaves no rows to replay (the input has {rows})",
            protocol.warmup_rows
        )));
    }
    if protocol.eval.start >= protocol.eval.end || protocol.eval.end > rows {
        return Err(BacktestError::Protocol(format!(
            "--eval-rows {}..{} is empty or past the end of the input ({rows} rows)",
            protocol.eval.start, protocol.eval.end
        )));
    }
    if protocol.season == 0 {
        return Err(BacktestError::Protocol(
            "the season of the seasonal-naive baseline must be at least 1 row".into(),
        ));
    }
    protocol
        .linear
        .validate("backtest.linear")
        .map_err(BacktestError::Protocol)?;
    if protocol.eval.start < protocol.warmup_rows {
        return Err(BacktestError::Protocol(format!(
            "--eval-rows starts at {}, inside the warm-up rows 0..{}",
            protocol.eval.start, protocol.warmup_rows
        )));
    }
    Ok(())
}

/// One backtest in progress: the learners, the linear baseline, the warm-up
/// statistics and the count of events processed.
struct Engine<'a> {
    replay: &'a Replay,
    protocol: &'a Protocol,
    keep: Keep,
    /// Target column indices.
    targets: Vec<usize>,
    /// Forecast horizon, in events.
    hz: usize,
    /// One learner per group.
    fs: Vec<Forecaster<f32>>,
    /// Per stream: warm-up mean and standard deviation of each column.
    warm: Vec<(Vec<f64>, Vec<f64>)>,
    /// MASE's scale per target, over all streams and per stream.
    mase_scale: Vec<f64>,
    stream_mase_scale: Vec<Vec<f64>>,
    linear: LinearBaseline,
    /// Interval levels, ascending (empty without intervals).
    levels: Vec<f64>,
    /// Per stream and forecast component: the split-conformal baseline's errors.
    split: Vec<Vec<SplitConformal>>,
    /// Scratch: one row in the learner's scalar type.
    x: Vec<f32>,
    /// Events processed so far, and in all (pretraining included).
    done: u64,
    total: u64,
}

impl<'a> Engine<'a> {
    /// Sets up the learners (one per group), the warm-up statistics, the
    /// linear baseline and, for protocol `warmup`, the fixed scaling.
    fn new(
        replay: &'a Replay,
        cfg: &ModelConfig,
        protocol: &'a Protocol,
        keep: Keep,
    ) -> Result<Self, BacktestError> {
        let rows = replay.rows();
        let d = replay.columns.len();
        let mut cfg = cfg.clone();
        cfg.inputs = d;
        cfg.normalize = match protocol.scaling {
            Scaling::Running => Normalize::Running,
            Scaling::Warmup | Scaling::None => Normalize::None,
        };
        let targets = cfg.target_indices();
        let hz = cfg.horizon;
        let groups = replay.group.iter().max().map_or(1, |&g| g as usize + 1);
        let mut fs: Vec<Forecaster<f32>> = (0..groups)
            .map(|_| Forecaster::<f32>::new(cfg.clone()))
            .collect::<Result<_, _>>()
            .map_err(BacktestError::Model)?;

        // Per-stream statistics of the warm-up rows: the fixed scaling (protocol
        // `warmup`), the scale of the reported normalised errors, and MASE's scale.
        let warm = warmup_stats(replay, protocol.warmup_rows.max(1).min(rows));
        let (mase_scale, stream_mase_scale) =
            naive_mae(replay, protocol.warmup_rows.max(2).min(rows), &targets);
        // One pass over every row, from row 0: the warm-up rows in the first epoch.
        let linear = LinearBaseline::new(&protocol.linear, d, &targets, hz, &warm);
        if protocol.scaling == Scaling::Warmup {
            for f in fs.iter_mut() {
                for (s, name) in replay.streams.iter().enumerate() {
                    f.set_normalizer(name, Normalizer::fixed(&warm[s].0, &warm[s].1));
                }
            }
        }

        let levels = fs[0].interval_levels().to_vec();
        let split = vec![vec![SplitConformal::default(); hz * targets.len()]; replay.streams.len()];
        let total = (protocol.warmup_rows * protocol.epochs + rows - protocol.warmup_rows) as u64;
        Ok(Engine {
            replay,
            protocol,
            keep,
            targets,
            hz,
            fs,
            warm,
            mase_scale,
            stream_mase_scale,
            linear,
            levels,
            split,
            x: vec![0f32; d],
            done: 0,
            total,
        })
    }

    /// Feeds row `r` to its group's learner; returns the forecast it made, if any.
    fn feed(&mut self, r: usize) -> Option<Fed> {
        let replay = self.replay;
        for (xi, &v) in self.x.iter_mut().zip(replay.row(r)) {
            *xi = v as f32;
        }
        let name = &replay.streams[replay.stream[r] as usize];
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        self.fs[replay.group_of(r)]
            .observe(name, &self.x)
            .ok()
            .map(|o| Fed {
                forecast: wide(o.forecast),
                lower: wide(o.lower),
                upper: wide(o.upper),
                anomaly: o.anomaly,
            })
    }

    /// Counts one processed event, reporting progress every 4096.
    fn tick(&mut self, progress: Progress<'_>) {
        self.done += 1;
        if self.done.is_multiple_of(4096) {
            progress(self.done, self.total);
        }
    }

    /// Pretraining: `epochs` passes over the warm-up rows, each from a fresh state.
    fn pretrain(&mut self, progress: Progress<'_>) {
        let replay = self.replay;
        for epoch in 0..self.protocol.epochs {
            self.reset_streams();
            for r in 0..self.protocol.warmup_rows {
                self.feed(r);
                if epoch == 0 {
                    self.linear
                        .observe(replay.stream[r] as usize, replay.row(r));
                }
                self.tick(progress);
            }
        }
    }

    /// Resets every learner's stream states (keeping their normalisers) for a
    /// new pretraining epoch.
    fn reset_streams(&mut self) {
        let replay = self.replay;
        for f in self.fs.iter_mut() {
            for name in &replay.streams {
                if let Some(mut s) = f.remove_stream(name) {
                    let fresh = f.new_stream();
                    s.buf = fresh.buf;
                    s.seen = 0;
                    s.ring_len = 0;
                    s.ring_head = 0;
                    s.since_update = 0;
                    f.insert_stream(name, s);
                }
            }
        }
    }

    /// Processes row `r` online: scores its stream's forecasts that it
    /// completes, then feeds it to the linear baseline and the learner.
    fn step(&mut self, r: usize, pend: &mut [Pending], sums: &mut Sums, out: &mut Outcome) {
        let replay = self.replay;
        let s = replay.stream[r] as usize;
        let p = &mut pend[s];
        p.rows.push(r);
        let k = p.rows.len() - 1; // this event's index within its stream
        self.score_matured(p, k, s, sums, out);
        let lin = self.linear.observe(s, replay.row(r));
        if let Some(fed) = self.feed(r) {
            if self.keep == Keep::Predictions {
                out.made.push((r, fed.forecast.clone()));
                out.made_bounds
                    .push((fed.lower.clone(), fed.upper.clone(), fed.anomaly));
            }
            let split = self
                .levels
                .iter()
                .flat_map(|&l| {
                    self.split[s]
                        .iter()
                        .map(move |c| c.half_width(l).unwrap_or(f64::NAN))
                })
                .collect();
            p.made.push_back(Made {
                k,
                row: r,
                model: fed.forecast,
                linear: lin,
                lower: fed.lower,
                upper: fed.upper,
                split,
            });
        }
    }

    /// Scores stream `s`'s forecasts that are now complete, `k` being the
    /// index of its latest event: those made after event `k - hz` or earlier.
    fn score_matured(
        &mut self,
        p: &mut Pending,
        k: usize,
        s: usize,
        sums: &mut Sums,
        out: &mut Outcome,
    ) {
        let hz = self.hz;
        while p.made.front().is_some_and(|m| m.k + hz <= k) {
            let made = p.made.pop_front().expect("front exists");
            let cover = &p.rows[made.k + 1..=made.k + hz];
            if cover.iter().all(|c| self.protocol.eval.contains(c)) {
                out.forecasts += 1;
                score(
                    self.replay,
                    &self.warm[s],
                    self.protocol.season,
                    &p.rows,
                    &made,
                    &self.targets,
                    sums,
                    self.keep,
                    out,
                    s,
                );
                score_intervals(self, &p.rows, &made, sums, s);
            }
            // Every matured forecast's errors feed the baseline, scored or not.
            let nt = self.targets.len();
            for (c, window) in self.split[s].iter_mut().enumerate() {
                let actual = self.replay.row(p.rows[made.k + 1 + c / nt])[self.targets[c % nt]];
                window.push((actual - made.model[c]).abs());
            }
        }
    }

    /// Assembles the outcome: the first learner, the counts, every slice's
    /// metrics and the timing since `start`.
    fn outcome(self, sums: &Sums, mut out: Outcome, online_from: usize, start: Instant) -> Outcome {
        out.learner = self.fs.into_iter().next();
        out.rows = self.replay.rows() - online_from;
        out.events = self.done;
        out.overall = sums.all.finish(&self.mase_scale, None);
        out.per_step = sums
            .step
            .iter()
            .map(|s| s.finish(&self.mase_scale, None))
            .collect();
        out.per_target = sums
            .target
            .iter()
            .enumerate()
            .map(|(j, s)| s.finish(&self.mase_scale, Some(j)))
            .collect();
        out.per_stream = sums
            .stream
            .iter()
            .zip(&self.stream_mase_scale)
            .map(|(s, scale)| s.finish(scale, None))
            .collect();
        out.elapsed_s = start.elapsed().as_secs_f64();
        out.events_per_sec = self.done as f64 / out.elapsed_s.max(1e-9);
        out
    }
}

/// Index of each forecaster in a [`Slice`]'s arrays.
const MODEL: usize = 0;
const NAIVE: usize = 1;
const SEASONAL: usize = 2;
const LINEAR: usize = 3;
/// Forecasters scored: the model and three baselines.
const FORECASTERS: usize = 4;

/// Error sums of every forecaster over one slice, in both unit systems.
#[derive(Clone, Default)]
struct Slice {
    /// Per forecaster, scaled units.
    scaled: [ErrorSums; FORECASTERS],
    /// Per forecaster, original units.
    raw: [ErrorSums; FORECASTERS],
    /// Per target, absolute error sums for MASE, original units, per forecaster.
    by_target_ae: Vec<[f64; FORECASTERS]>,
    by_target_n: Vec<u64>,
    /// Interval levels, and per level the intervals' sums, scaled and original units.
    levels: Vec<f64>,
    iv: Vec<LevelSums>,
    iv_raw: Vec<LevelSums>,
}

impl Slice {
    fn new(nt: usize, levels: &[f64]) -> Self {
        Slice {
            by_target_ae: vec![[0.0; FORECASTERS]; nt],
            by_target_n: vec![0; nt],
            levels: levels.to_vec(),
            iv: vec![LevelSums::default(); levels.len()],
            iv_raw: vec![LevelSums::default(); levels.len()],
            ..Default::default()
        }
    }

    /// Adds one scored value: `forecasts` in forecaster order, scaled by `z`.
    fn add(
        &mut self,
        j: usize,
        forecasts: &[f64; FORECASTERS],
        actual: f64,
        z: impl Fn(f64) -> f64,
    ) {
        for (w, &f) in forecasts.iter().enumerate() {
            self.scaled[w].add(z(f), z(actual));
            self.raw[w].add(f, actual);
            self.by_target_ae[j][w] += (f - actual).abs();
        }
        self.by_target_n[j] += 1;
    }

    fn finish(&self, mase_scale: &[f64], only: Option<usize>) -> Scored {
        // MASE: each target's MAE over its own scale, averaged over targets.
        let mase = |which: usize| {
            let mut acc = 0.0;
            let mut n = 0.0;
            for (j, ae) in self.by_target_ae.iter().enumerate() {
                if only.is_some_and(|o| o != j) || self.by_target_n[j] == 0 || mase_scale[j] <= 0.0
                {
                    continue;
                }
                acc += ae[which] / self.by_target_n[j] as f64 / mase_scale[j];
                n += 1.0;
            }
            if n > 0.0 { acc / n } else { f64::NAN }
        };
        let with = |s: &ErrorSums, which: usize| Scores {
            mase: mase(which),
            ..Scores::from(s, 0.0)
        };
        let levels = |sums: &[LevelSums]| -> Vec<LevelScores> {
            sums.iter()
                .zip(&self.levels)
                .map(|(s, &l)| s.finish(l))
                .collect()
        };
        Scored {
            intervals: levels(&self.iv),
            intervals_raw: levels(&self.iv_raw),
            model: with(&self.scaled[MODEL], MODEL),
            naive: with(&self.scaled[NAIVE], NAIVE),
            seasonal: with(&self.scaled[SEASONAL], SEASONAL),
            linear: with(&self.scaled[LINEAR], LINEAR),
            model_raw: with(&self.raw[MODEL], MODEL),
            naive_raw: with(&self.raw[NAIVE], NAIVE),
            seasonal_raw: with(&self.raw[SEASONAL], SEASONAL),
            linear_raw: with(&self.raw[LINEAR], LINEAR),
        }
    }
}

/// The slices every value is scored into.
struct Sums {
    all: Slice,
    step: Vec<Slice>,
    target: Vec<Slice>,
    stream: Vec<Slice>,
}

impl Sums {
    fn new(hz: usize, nt: usize, streams: usize, levels: &[f64]) -> Self {
        Sums {
            all: Slice::new(nt, levels),
            step: vec![Slice::new(nt, levels); hz],
            target: vec![Slice::new(nt, levels); nt],
            stream: vec![Slice::new(nt, levels); streams],
        }
    }
}

/// Scores the intervals of the forecasts made after stream event `made.k`
/// (recur's and the split-conformal baseline's, on the same point forecasts).
fn score_intervals(e: &Engine<'_>, rows: &[usize], made: &Made, sums: &mut Sums, stream: usize) {
    let nt = e.targets.len();
    let fl = made.model.len();
    if e.levels.is_empty() || made.lower.len() < e.levels.len() * fl {
        return;
    }
    let warm = &e.warm[stream];
    for (h, &r) in rows[made.k + 1..].iter().take(fl / nt).enumerate() {
        let actual_row = e.replay.row(r);
        for (j, &t) in e.targets.iter().enumerate() {
            let c = h * nt + j;
            let (mean, std) = (warm.0[t], warm.1[t]);
            let z = |v: f64| (v - mean) / std;
            let (y, m) = (actual_row[t], made.model[c]);
            for (l, &level) in e.levels.iter().enumerate() {
                let at = l * fl + c;
                let half = made.split[at];
                if half.is_nan() {
                    continue;
                }
                let (lo, hi) = (made.lower[at], made.upper[at]);
                for slice in [
                    &mut sums.all,
                    &mut sums.step[h],
                    &mut sums.target[j],
                    &mut sums.stream[stream],
                ] {
                    slice.iv[l].recur.add(level, z(lo), z(hi), z(y));
                    slice.iv[l].split.add(level, z(m - half), z(m + half), z(y));
                    slice.iv_raw[l].recur.add(level, lo, hi, y);
                    slice.iv_raw[l].split.add(level, m - half, m + half, y);
                }
            }
        }
    }
}

/// Scores the forecasts made after stream event `made.k`.
#[allow(clippy::too_many_arguments)]
fn score(
    replay: &Replay,
    warm: &(Vec<f64>, Vec<f64>),
    season: usize,
    rows: &[usize],
    made: &Made,
    targets: &[usize],
    sums: &mut Sums,
    keep: Keep,
    out: &mut Outcome,
    stream: usize,
) {
    let nt = targets.len();
    let mk = made.k;
    let last = replay.row(made.row);
    for (h, &r) in rows[mk + 1..]
        .iter()
        .take(made.model.len() / nt)
        .enumerate()
    {
        let actual_row = replay.row(r);
        // Seasonal naive: the latest observed event of the same phase.
        let back = season * (h / season.max(1) + 1);
        let seasonal_row = (mk + 1 + h).checked_sub(back).map(|i| replay.row(rows[i]));
        for (j, &t) in targets.iter().enumerate() {
            let (mean, std) = (warm.0[t], warm.1[t]);
            let z = |v: f64| (v - mean) / std;
            let a = actual_row[t];
            let m = made.model[h * nt + j];
            let nv = last[t];
            let sv = seasonal_row.map_or(nv, |row| row[t]);
            let lv = made.linear[h * nt + j];
            let forecasts = [m, nv, sv, lv];
            for slice in [
                &mut sums.all,
                &mut sums.step[h],
                &mut sums.target[j],
                &mut sums.stream[stream],
            ] {
                slice.add(j, &forecasts, a, z);
            }
            if keep == Keep::Predictions {
                out.predictions.push(Prediction {
                    row: r,
                    ts_ms: replay.ts_ms[r],
                    stream: stream as u32,
                    step: h as u32 + 1,
                    target: j as u32,
                    forecast: m,
                    actual: a,
                    naive: nv,
                    seasonal: sv,
                    linear: lv,
                    bounds: bounds_of(made, h * nt + j),
                });
            }
        }
    }
}

/// recur's interval bounds at every level for component `c` of `made`.
fn bounds_of(made: &Made, c: usize) -> Vec<(f64, f64)> {
    let fl = made.model.len();
    (0..made.lower.len() / fl.max(1))
        .map(|l| (made.lower[l * fl + c], made.upper[l * fl + c]))
        .collect()
}

/// Per stream: mean and population standard deviation of each column over rows `[0, n)`.
fn warmup_stats(replay: &Replay, n: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    let d = replay.columns.len();
    let mut acc = vec![(0u64, vec![0.0; d], vec![0.0; d]); replay.streams.len()];
    for r in 0..n {
        let (cnt, mean, m2) = &mut acc[replay.stream[r] as usize];
        *cnt += 1;
        for (k, &v) in replay.row(r).iter().enumerate() {
            let delta = v - mean[k];
            mean[k] += delta / *cnt as f64;
            m2[k] += delta * (v - mean[k]);
        }
    }
    acc.into_iter()
        .map(|(cnt, mean, m2)| {
            let std = m2
                .iter()
                .map(|&s| {
                    let var = s / cnt.max(1) as f64;
                    if var > 0.0 { var.sqrt() } else { 1.0 }
                })
                .collect();
            (mean, std)
        })
        .collect()
}

/// Per target: mean |x_t - x_{t-1}| over rows `[0, n)` (each stream's own
/// consecutive events), over all streams and per stream.
fn naive_mae(replay: &Replay, n: usize, targets: &[usize]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let ns = replay.streams.len();
    let mut last: Vec<Option<usize>> = vec![None; ns];
    let (mut all, mut all_n) = (vec![0.0; targets.len()], 0u64);
    let mut sum = vec![vec![0.0; targets.len()]; ns];
    let mut cnt = vec![0u64; ns];
    for r in 0..n {
        let s = replay.stream[r] as usize;
        if let Some(p) = last[s] {
            for (j, &t) in targets.iter().enumerate() {
                let e = (replay.row(r)[t] - replay.row(p)[t]).abs();
                all[j] += e;
                sum[s][j] += e;
            }
            all_n += 1;
            cnt[s] += 1;
        }
        last[s] = Some(r);
    }
    let overall = all.iter().map(|v| v / all_n.max(1) as f64).collect();
    let per_stream = sum
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| s.iter().map(|v| v / c.max(1) as f64).collect())
        .collect();
    (overall, per_stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stream with events `step_ms` apart.
    fn spaced(step_ms: i64, time: TimeBase) -> Replay {
        let n = 50;
        Replay {
            columns: vec!["v".into()],
            streams: vec!["s".into()],
            stream: vec![0; n],
            ts_ms: (0..n as i64)
                .map(|i| 1_467_331_200_000 + i * step_ms)
                .collect(),
            values: vec![0.0; n],
            group: Vec::new(),
            time,
        }
    }

    #[test]
    fn the_season_is_a_day_of_rows() {
        let hour = 3_600_000;
        assert_eq!(infer_season(&spaced(hour, TimeBase::Epoch)).rows, 24);
        let quarter = infer_season(&spaced(hour / 4, TimeBase::Epoch));
        assert_eq!(quarter.rows, 96);
        assert!(quarter.why.contains("15 min"), "{}", quarter.why);
        assert_eq!(infer_season(&spaced(24 * hour, TimeBase::Epoch)).rows, 1);
        let index = infer_season(&Replay {
            ts_ms: (0..50).collect(),
            ..spaced(1, TimeBase::RowIndex)
        });
        assert_eq!(index.rows, 24);
        assert!(index.why.contains("row index"), "{}", index.why);
        // Seven minutes do not divide a day.
        let odd = infer_season(&spaced(7 * 60_000, TimeBase::Epoch));
        assert_eq!(odd.rows, 24);
        assert!(odd.why.contains("does not divide"), "{}", odd.why);
    }

    #[test]
    fn the_median_spacing_ignores_gaps_and_other_streams() {
        let quarter = 900_000;
        let mut r = spaced(quarter, TimeBase::Epoch);
        // A missing day in the first stream (the mean spacing would not divide
        // a day), and a second stream every minute.
        for ts in r.ts_ms.iter_mut().skip(30) {
            *ts += 96 * quarter;
        }
        let t0 = r.ts_ms[0];
        r.streams.push("fast".into());
        for i in 0..200 {
            r.stream.push(1);
            r.ts_ms.push(t0 + i * 60_000);
            r.values.push(0.0);
        }
        assert_eq!(infer_season(&r).rows, 96);
    }
}
