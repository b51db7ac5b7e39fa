//! `recur backtest` over a file: load, replay, score, write the outputs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::engine::{
    self, Keep, Metrics, Outcome, Prediction, Protocol, Replay, Scaling, Scored, TimeBase,
};
use super::report::{MetricRow, ReportData, RollingPanel, SeriesPanel, StepError, StreamRow};
use super::table::{self, LoadOptions, PredictionRow, Table, TimeColumn};
use crate::config::Config;
use crate::model::linear::LinearConfig;

/// The `[backtest]` section of the configuration (defaults in `config/default.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestConfig {
    /// Rows `[0, warmup_rows)` pretrain the model before the online run.
    pub warmup_rows: usize,
    /// Passes over the warm-up rows.
    pub epochs: usize,
    /// Scored rows as `"A..B"`; empty scores every row after the warm-up.
    pub eval_rows: String,
    /// `auto`, `warmup`, `running` or `none`.
    pub normalize: String,
    /// Season (rows) of the seasonal-naive baseline; 0 infers one day of rows
    /// from the event times ([`engine::infer_season`]).
    pub season: usize,
    /// Time column, `none` (row index) or `auto`.
    pub time_column: String,
    /// Value columns to read; empty reads every numeric column.
    pub columns: Vec<String>,
    /// Columns to forecast; empty forecasts every column read.
    pub targets: Vec<String>,
    /// Runs with seeds `seed, seed+1, …`.
    pub seeds: usize,
    /// Rows shown in the report's forecast chart: `"A..B"`, or empty for the last 500 scored rows.
    pub report_span: String,
    /// The linear baseline (`[backtest.linear]`).
    pub linear: LinearConfig,
}

/// Why a backtest failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A setting is invalid (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// The input file could not be read.
    #[error(transparent)]
    Table(#[from] table::TableError),
    /// The replay failed.
    #[error(transparent)]
    Engine(#[from] engine::BacktestError),
    /// An output could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The output file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Whether to draw a progress bar on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressBar {
    /// When stderr is a terminal.
    Auto,
    /// Never.
    Off,
}

/// The one-line summary `--json` prints (errors in normalised units under the
/// `warmup` scaling, else in original units; `units` says which).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Rows replayed after pretraining.
    pub rows: usize,
    /// Forecasts scored.
    pub predictions: u64,
    /// recur's MSE.
    pub mse: f64,
    /// recur's MAE.
    pub mae: f64,
    /// Naive MSE.
    pub naive_mse: f64,
    /// Naive MAE.
    pub naive_mae: f64,
    /// Seasonal-naive MSE.
    pub seasonal_mse: f64,
    /// The linear baseline's MSE.
    pub linear_mse: f64,
    /// The linear baseline's MAE.
    pub linear_mae: f64,
    /// Season (rows) of the seasonal-naive baseline, as given or inferred.
    pub season: usize,
    /// Wall-clock seconds (all seeds).
    pub elapsed_s: f64,
    /// Events per second (pretraining included).
    pub events_per_sec: f64,
    /// Units of the errors: `normalized` or `original`.
    pub units: &'static str,
    /// Seeds run.
    pub seeds: usize,
    /// Standard deviation of the MSE over seeds (0 for one seed).
    pub mse_std: f64,
    /// Standard deviation of the MAE over seeds.
    pub mae_std: f64,
}

/// Parses `"A..B"`.
pub fn parse_range(s: &str, key: &str) -> Result<std::ops::Range<usize>, JobError> {
    let bad = || {
        JobError::Invalid(format!(
            "{key} = {s:?}: expected A..B with whole numbers A < B"
        ))
    };
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<usize>().map_err(|_| bad())?,
        b.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok(a..b)
}

fn time_column(name: &str, path: &Path) -> Result<TimeColumn, JobError> {
    Ok(match name {
        "none" => TimeColumn::RowIndex,
        "auto" => {
            let header = sniff_header(path);
            ["date", "time", "ts", "timestamp", "datetime"]
                .iter()
                .find(|c| header.iter().any(|h| h.eq_ignore_ascii_case(c)))
                .map(|c| {
                    TimeColumn::Named(
                        header
                            .iter()
                            .find(|h| h.eq_ignore_ascii_case(c))
                            .cloned()
                            .unwrap_or((*c).into()),
                    )
                })
                .unwrap_or(TimeColumn::RowIndex)
        }
        other => TimeColumn::Named(other.into()),
    })
}

/// The column names of a CSV's first line (empty for other formats or errors).
fn sniff_header(path: &Path) -> Vec<String> {
    use std::io::BufRead;
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("csv"))
    {
        return Vec::new();
    }
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut line = String::new();
    if std::io::BufReader::new(file).read_line(&mut line).is_err() {
        return Vec::new();
    }
    line.trim_end()
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// Interleaves a table's streams into one replay ordered by time (stable by stream).
pub fn replay_of(t: &Table) -> Replay {
    let d = t.columns.len();
    let mut order: Vec<(i64, u32, usize)> = Vec::with_capacity(t.rows);
    for (s, rows) in t.streams.iter().enumerate() {
        order.extend(
            rows.ts_ms
                .iter()
                .enumerate()
                .map(|(i, &ts)| (ts, s as u32, i)),
        );
    }
    if t.streams.len() > 1 {
        order.sort_by_key(|&(ts, s, i)| (ts, s, i));
    }
    let mut r = Replay {
        columns: t.columns.clone(),
        streams: t.streams.iter().map(|s| s.stream.clone()).collect(),
        stream: Vec::with_capacity(order.len()),
        ts_ms: Vec::with_capacity(order.len()),
        values: Vec::with_capacity(order.len() * d),
        group: Vec::new(),
        time: TimeBase::Epoch,
    };
    for (ts, s, i) in order {
        r.stream.push(s);
        r.ts_ms.push(ts);
        r.values
            .extend_from_slice(&t.streams[s as usize].values[i * d..(i + 1) * d]);
    }
    r
}

/// Runs a file backtest; writes `out` if given; returns the summary.
pub fn run_file(
    cfg: &Config,
    path: &Path,
    out: Option<&Path>,
    bar: ProgressBar,
) -> Result<Summary, JobError> {
    let replay = load_replay(cfg, path)?;
    Ok(run_replay(cfg, &replay, out, bar)?.0)
}

/// Loads a file with the `[backtest]` column and time settings, in replay order.
pub fn load_replay(cfg: &Config, path: &Path) -> Result<Replay, JobError> {
    let b = &cfg.backtest;
    let opts = LoadOptions {
        time_column: time_column(&b.time_column, path)?,
        columns: if b.columns.is_empty() {
            None
        } else {
            Some(b.columns.clone())
        },
    };
    let mut replay = replay_of(&table::load(path, &opts)?);
    if opts.time_column == TimeColumn::RowIndex {
        replay.time = TimeBase::RowIndex;
    }
    Ok(replay)
}

/// Trains on a file exactly as a backtest replays it, then saves the learner's
/// weights and optimiser state (and the file's stream states) to `model_out`.
pub fn train_file(
    cfg: &Config,
    path: &Path,
    model_out: &Path,
    bar: ProgressBar,
) -> Result<Summary, JobError> {
    let replay = load_replay(cfg, path)?;
    let (summary, outcomes) = run_replay(cfg, &replay, None, bar)?;
    let learner = outcomes
        .into_iter()
        .next()
        .and_then(|o| o.learner)
        .ok_or_else(|| JobError::Invalid("the run produced no model".into()))?;
    learner
        .save(model_out)
        .map_err(|e| JobError::Invalid(e.to_string()))?;
    Ok(summary)
}

/// Runs a backtest over a topic's time range (see [`super::topic`]).
pub fn run_topic(
    cfg: &Config,
    brokers: &str,
    topic: &str,
    from: super::topic::Bound,
    to: super::topic::Bound,
    out: Option<&Path>,
    bar: ProgressBar,
) -> Result<Summary, JobError> {
    let t = super::topic::read(cfg, brokers, topic, from, to)?;
    if t.bad > 0 {
        eprintln!(
            "recur: {} messages in range could not be decoded and were skipped",
            t.bad
        );
    }
    Ok(run_replay(cfg, &t.replay, out, bar)?.0)
}

/// Runs a backtest over events already in memory (from a file or a topic).
/// Returns the summary and every seed's outcome.
pub fn run_replay(
    cfg: &Config,
    replay: &Replay,
    out: Option<&Path>,
    bar: ProgressBar,
) -> Result<(Summary, Vec<Outcome>), JobError> {
    let b = &cfg.backtest;
    if replay.rows() == 0 {
        return Err(JobError::Invalid(
            "nothing to replay: the input has no events".into(),
        ));
    }
    let mut model = cfg.model.clone();
    model.inputs = replay.columns.len();
    model.targets =
        b.targets
            .iter()
            .map(|name| {
                replay.columns.iter().position(|c| c == name).ok_or_else(|| {
                JobError::Invalid(format!(
                    "backtest.targets names `{name}`, which is not among the columns read: {}",
                    replay.columns.join(", ")
                ))
            })
            })
            .collect::<Result<_, _>>()?;
    let scaling = match b.normalize.as_str() {
        "auto" if b.warmup_rows > 0 => Scaling::Warmup,
        "auto" | "running" => Scaling::Running,
        "warmup" if b.warmup_rows == 0 => {
            return Err(JobError::Invalid(
                "backtest.normalize = \"warmup\" needs backtest.warmup_rows > 0".into(),
            ));
        }
        "warmup" => Scaling::Warmup,
        "none" => Scaling::None,
        other => {
            return Err(JobError::Invalid(format!(
                "backtest.normalize = {other:?}: expected warmup, running, none or auto"
            )));
        }
    };
    let eval = if b.eval_rows.trim().is_empty() {
        b.warmup_rows..replay.rows()
    } else {
        parse_range(&b.eval_rows, "backtest.eval_rows")?
    };
    if b.seeds == 0 {
        return Err(JobError::Invalid(
            "backtest.seeds must be at least 1".into(),
        ));
    }
    let season = if b.season == 0 {
        engine::infer_season(replay)
    } else {
        engine::SeasonGuess {
            rows: b.season,
            why: format!(
                "season {} rows: set by backtest.season (--season)",
                b.season
            ),
        }
    };
    let protocol = Protocol {
        warmup_rows: b.warmup_rows,
        epochs: b.epochs,
        eval,
        scaling,
        season: season.rows,
        linear: b.linear,
    };

    let start = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(b.seeds);
    let show = bar == ProgressBar::Auto && std::io::stderr().is_terminal();
    for k in 0..b.seeds {
        let mut m = model.clone();
        m.seed = model.seed + k as u64;
        let keep = if k == 0 && out.is_some() {
            Keep::Predictions
        } else {
            Keep::MetricsOnly
        };
        let label = if b.seeds > 1 {
            format!("seed {}/{}", k + 1, b.seeds)
        } else {
            String::new()
        };
        let mut last_draw = Instant::now();
        let mut progress = |done: u64, total: u64| {
            if show && (done == total || last_draw.elapsed().as_millis() >= 100) {
                last_draw = Instant::now();
                draw_bar(&label, done, total);
            }
        };
        outcomes.push(engine::run(replay, &m, &protocol, keep, &mut progress)?);
    }
    if show {
        eprintln!();
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let units = Units::of(scaling);
    let mses: Vec<f64> = outcomes
        .iter()
        .map(|o| units.pick(&o.overall).model.mse)
        .collect();
    let maes: Vec<f64> = outcomes
        .iter()
        .map(|o| units.pick(&o.overall).model.mae)
        .collect();
    let first = &outcomes[0];
    let all = units.pick(&first.overall);
    let events: u64 = outcomes.iter().map(|o| o.events).sum();
    let summary = Summary {
        rows: first.rows,
        predictions: first.forecasts,
        mse: mean(&mses),
        mae: mean(&maes),
        naive_mse: all.naive.mse,
        naive_mae: all.naive.mae,
        seasonal_mse: all.seasonal.mse,
        linear_mse: all.linear.mse,
        linear_mae: all.linear.mae,
        season: season.rows,
        elapsed_s,
        events_per_sec: events as f64 / elapsed_s.max(1e-9),
        units: units.name(),
        seeds: b.seeds,
        mse_std: std_dev(&mses),
        mae_std: std_dev(&maes),
    };
    if let Some(dir) = out {
        write_outputs(
            dir,
            cfg,
            replay,
            &model.target_indices(),
            &protocol,
            &season.why,
            &outcomes,
            &summary,
        )?;
    }
    Ok((summary, outcomes))
}

/// Which of [`Scored`]'s unit systems a summary reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Units {
    /// z-scores of the warm-up rows (`Scaling::Warmup`, the published protocol).
    Normalized,
    /// The data's own units. The scaled sums of the other scalings use the
    /// statistics of row 0 alone when there is no warm-up: not a normalisation.
    Original,
}

/// One slice's metrics in one unit system.
struct Picked {
    model: Metrics,
    naive: Metrics,
    seasonal: Metrics,
    linear: Metrics,
}

impl Units {
    fn of(scaling: Scaling) -> Units {
        match scaling {
            Scaling::Warmup => Units::Normalized,
            Scaling::Running | Scaling::None => Units::Original,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Units::Normalized => "normalized",
            Units::Original => "original",
        }
    }

    fn pick(self, s: &Scored) -> Picked {
        match self {
            Units::Normalized => Picked {
                model: s.model,
                naive: s.naive,
                seasonal: s.seasonal,
                linear: s.linear,
            },
            Units::Original => Picked {
                model: s.model_raw,
                naive: s.naive_raw,
                seasonal: s.seasonal_raw,
                linear: s.linear_raw,
            },
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (0 for fewer than two values).
fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn draw_bar(label: &str, done: u64, total: u64) {
    let frac = done as f64 / total.max(1) as f64;
    let width = 30;
    let filled = (frac * width as f64).round() as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{label}{}[{}{}] {:>5.1}% {done}/{total} events",
        if label.is_empty() { "" } else { " " },
        "#".repeat(filled),
        " ".repeat(width - filled),
        100.0 * frac
    );
    let _ = err.flush();
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JobError + '_ {
    move |source| JobError::Write {
        path: path.display().to_string(),
        source,
    }
}

fn metrics_json(m: &Metrics) -> serde_json::Value {
    json!({"n": m.n, "mse": m.mse, "mae": m.mae, "rmse": m.rmse, "smape": m.smape, "mase": m.mase})
}

fn scored_json(s: &Scored) -> serde_json::Value {
    json!({
        "normalized": {
            "model": metrics_json(&s.model), "naive": metrics_json(&s.naive),
            "seasonal": metrics_json(&s.seasonal), "linear": metrics_json(&s.linear),
        },
        "original": {
            "model": metrics_json(&s.model_raw), "naive": metrics_json(&s.naive_raw),
            "seasonal": metrics_json(&s.seasonal_raw), "linear": metrics_json(&s.linear_raw),
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    dir: &Path,
    cfg: &Config,
    replay: &Replay,
    targets: &[usize],
    protocol: &Protocol,
    season_why: &str,
    outcomes: &[Outcome],
    summary: &Summary,
) -> Result<(), JobError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let o = &outcomes[0];
    let target_names: Vec<&str> = targets
        .iter()
        .map(|&t| replay.columns[t].as_str())
        .collect();

    // predictions.parquet
    let rows: Vec<PredictionRow> = o
        .predictions
        .iter()
        .map(|p| PredictionRow {
            row: p.row as u64,
            ts_ms: p.ts_ms,
            stream: replay.streams[p.stream as usize].clone(),
            step: p.step,
            target: target_names[p.target as usize].to_string(),
            forecast: p.forecast,
            actual: p.actual,
        })
        .collect();
    let baseline = |f: fn(&Prediction) -> f64| o.predictions.iter().map(f).collect::<Vec<_>>();
    table::write_predictions_with(
        &dir.join("predictions.parquet"),
        &rows,
        vec![
            ("naive", baseline(|p| p.naive)),
            ("seasonal", baseline(|p| p.seasonal)),
            ("linear", baseline(|p| p.linear)),
        ],
    )?;

    // metrics.json
    let per_seed: Vec<serde_json::Value> =
        outcomes.iter().map(|o| scored_json(&o.overall)).collect();
    let metrics = json!({
        "summary": summary,
        "protocol": {
            "warmup_rows": protocol.warmup_rows, "epochs": protocol.epochs,
            "eval_rows": [protocol.eval.start, protocol.eval.end], "scaling": protocol.scaling,
            "season": protocol.season, "season_note": season_why, "horizon": cfg.model.horizon,
            "linear": protocol.linear,
        },
        "model": cfg.model,
        "overall": scored_json(&o.overall),
        "per_step": o.per_step.iter().enumerate().map(|(h, s)| json!({"step": h + 1, "metrics": scored_json(s)})).collect::<Vec<_>>(),
        "per_target": o.per_target.iter().zip(&target_names).map(|(s, n)| json!({"target": n, "metrics": scored_json(s)})).collect::<Vec<_>>(),
        "per_stream": o.per_stream.iter().zip(&replay.streams).map(|(s, n)| json!({"stream": n, "metrics": scored_json(s)})).collect::<Vec<_>>(),
        "per_seed": per_seed,
    });
    let path = dir.join("metrics.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&metrics).expect("metrics serialise"),
    )
    .map_err(io_err(&path))?;

    // report.html
    let report = report_data(cfg, replay, &target_names, protocol, season_why, o, summary);
    let path = dir.join("report.html");
    super::report::write(&report, &path).map_err(io_err(&path))?;
    Ok(())
}

/// Streams the report's per-stream table lists at most (metrics.json has all).
const REPORT_STREAMS: usize = 100;

fn report_data(
    cfg: &Config,
    replay: &Replay,
    target_names: &[&str],
    protocol: &Protocol,
    season_why: &str,
    o: &Outcome,
    summary: &Summary,
) -> ReportData {
    let units = Units::of(protocol.scaling);
    let unit_name = units.name();
    // Forecast vs actual, one-step-ahead, first stream, each target, over the chosen span.
    let one_step: Vec<_> = o
        .predictions
        .iter()
        .filter(|p| p.step == 1 && p.stream == 0)
        .collect();
    let span = parse_range(&cfg.backtest.report_span, "").ok();
    let mut series = Vec::new();
    for (j, name) in target_names.iter().enumerate() {
        let pts: Vec<_> = one_step.iter().filter(|p| p.target as usize == j).collect();
        let pts: Vec<_> = match &span {
            Some(r) => pts.into_iter().filter(|p| r.contains(&p.row)).collect(),
            None => pts[pts.len().saturating_sub(500)..].to_vec(),
        };
        series.push(SeriesPanel {
            name: format!("{} — {name}, one step ahead", replay.streams[0]),
            x: pts.iter().map(|p| p.row as f64).collect(),
            actual: pts.iter().map(|p| p.actual).collect(),
            forecast: pts.iter().map(|p| p.forecast).collect(),
            naive: Some(pts.iter().map(|p| p.naive).collect()),
        });
    }
    // Rolling MSE (original units, all targets, one step ahead) over a window of
    // forecasts, for the model and the baselines.
    let window = 168.min(one_step.len().max(1));
    let nt = target_names.len().max(1);
    let mse_of = |chunk: &[&Prediction], f: fn(&Prediction) -> f64| {
        chunk.iter().map(|p| (f(p) - p.actual).powi(2)).sum::<f64>() / chunk.len() as f64
    };
    let by_row: Vec<(usize, [f64; 4])> = one_step
        .chunks(nt)
        .map(|c| {
            (
                c[0].row,
                [
                    mse_of(c, |p| p.forecast),
                    mse_of(c, |p| p.naive),
                    mse_of(c, |p| p.seasonal),
                    mse_of(c, |p| p.linear),
                ],
            )
        })
        .collect();
    let rolling = (by_row.len() >= window && window > 0).then(|| {
        let mut x = Vec::new();
        let mut lines: [Vec<f64>; 4] = Default::default();
        let mut sums = [0.0; 4];
        for (i, (row, errs)) in by_row.iter().enumerate() {
            for k in 0..4 {
                sums[k] += errs[k];
                if i >= window {
                    sums[k] -= by_row[i - window].1[k];
                }
            }
            if i + 1 >= window {
                x.push(*row as f64);
                for k in 0..4 {
                    lines[k].push(sums[k] / window as f64);
                }
            }
        }
        let [model, naive, seasonal, linear] = lines;
        RollingPanel {
            window,
            x,
            model,
            naive,
            seasonal: Some(seasonal),
            linear: Some(linear),
        }
    });
    let by_step = o
        .per_step
        .iter()
        .enumerate()
        .map(|(h, s)| {
            let p = units.pick(s);
            StepError {
                step: h + 1,
                model_mse: p.model.mse,
                naive_mse: p.naive.mse,
                seasonal_mse: Some(p.seasonal.mse),
                linear_mse: Some(p.linear.mse),
            }
        })
        .collect();
    let row = |scope: String, units: &str, m: &Metrics| MetricRow {
        scope,
        units: units.into(),
        mse: m.mse,
        mae: m.mae,
        rmse: m.rmse,
        smape: m.smape,
        mase: m.mase,
    };
    let mut metrics = Vec::new();
    let all = &o.overall;
    for (who, scaled, raw) in [
        ("recur", &all.model, &all.model_raw),
        ("naive", &all.naive, &all.naive_raw),
        ("seasonal naive", &all.seasonal, &all.seasonal_raw),
        ("linear", &all.linear, &all.linear_raw),
    ] {
        // Only the warm-up scaling has normalised units worth showing.
        if units == Units::Normalized {
            metrics.push(row(format!("{who}, overall"), "normalized", scaled));
        }
        metrics.push(row(format!("{who}, overall"), "original", raw));
    }
    for (s, name) in o.per_target.iter().zip(target_names) {
        let p = units.pick(s);
        metrics.push(row(format!("recur, {name}"), unit_name, &p.model));
        metrics.push(row(format!("naive, {name}"), unit_name, &p.naive));
        metrics.push(row(format!("linear, {name}"), unit_name, &p.linear));
    }
    let per_stream = if o.per_stream.len() > 1 {
        o.per_stream
            .iter()
            .zip(&replay.streams)
            .take(REPORT_STREAMS)
            .map(|(s, name)| {
                let p = units.pick(s);
                StreamRow {
                    stream: name.clone(),
                    units: unit_name.into(),
                    n: p.model.n,
                    model: (p.model.mse, p.model.mae),
                    naive: (p.naive.mse, p.naive.mae),
                    linear: (p.linear.mse, p.linear.mae),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let m = &cfg.model;
    let lin = &protocol.linear;
    let mut notes = vec![
        format!(
            "model: {} hidden={} layers={} tbptt={} horizon={} optimizer={:?} lr={} predict={:?} seed={}",
            m.cell.name(),
            m.hidden,
            m.layers,
            m.tbptt,
            m.horizon,
            m.optimizer.kind,
            m.optimizer.lr,
            m.predict,
            m.seed
        ),
        format!(
            "protocol: warm-up rows 0..{} ({} epochs), scored rows {}..{}, scaling {:?}, season {}",
            protocol.warmup_rows,
            protocol.epochs,
            protocol.eval.start,
            protocol.eval.end,
            protocol.scaling,
            protocol.season
        ),
        season_why.to_string(),
        format!(
            "linear baseline: per stream, ridge regression of each step's change on the last {} rows \
             of every column (recursive least squares, forgetting {}, ridge {}), learning from a \
             forecast once its rows are observed",
            lin.lags, lin.forgetting, lin.ridge
        ),
        match units {
            Units::Normalized => {
                "units: errors z-scored with each stream's warm-up mean and standard deviation"
                    .into()
            }
            Units::Original => "units: errors in the data's original units".into(),
        },
    ];
    if o.per_stream.len() > REPORT_STREAMS {
        notes.push(format!(
            "per-stream table: the first {REPORT_STREAMS} of {} streams; metrics.json lists all",
            o.per_stream.len()
        ));
    }
    ReportData {
        title: "recur backtest".into(),
        summary: vec![
            ("rows replayed".into(), summary.rows.to_string()),
            ("forecasts scored".into(), summary.predictions.to_string()),
            ("units".into(), unit_name.into()),
            (format!("MSE ({unit_name})"), format!("{:.4}", summary.mse)),
            (
                format!("naive MSE ({unit_name})"),
                format!("{:.4}", summary.naive_mse),
            ),
            (
                format!("seasonal-naive MSE ({unit_name})"),
                format!("{:.4}", summary.seasonal_mse),
            ),
            (
                format!("linear MSE ({unit_name})"),
                format!("{:.4}", summary.linear_mse),
            ),
            (format!("MAE ({unit_name})"), format!("{:.4}", summary.mae)),
            (
                format!("naive MAE ({unit_name})"),
                format!("{:.4}", summary.naive_mae),
            ),
            (
                format!("linear MAE ({unit_name})"),
                format!("{:.4}", summary.linear_mae),
            ),
            ("elapsed".into(), format!("{:.2} s", summary.elapsed_s)),
        ],
        series,
        rolling,
        by_step,
        metrics,
        per_stream,
        notes,
    }
}

/// Where the outputs of a run go, for messages.
pub fn describe_outputs(dir: &Path) -> Vec<PathBuf> {
    ["predictions.parquet", "metrics.json", "report.html"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}
