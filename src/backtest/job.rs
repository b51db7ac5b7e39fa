//! `recur backtest` over a file: load, replay, score, write the outputs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::Error;
use super::engine::{
    self, Keep, Outcome, Prediction, Protocol, Replay, Scaling, Scored, Scores, TimeBase,
};
use super::report::{
    Band, CoveragePanel, MetricRow, ReportData, RollingPanel, SeriesPanel, StepError, StreamRow,
};
use super::table::{self, LoadOptions, PredictionRow, Table, TimeColumn};
use crate::config::Config;
use crate::model::ModelConfig;

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
    /// Per interval level, recur's calibrated intervals and the rolling
    /// split-conformal baseline (first seed), in `units`.
    pub intervals: Vec<super::intervals::LevelScores>,
}

/// Parses `"A..B"`.
pub fn parse_range(s: &str, key: &str) -> Result<std::ops::Range<usize>, Error> {
    let bad = || {
        Error::Invalid(format!(
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

fn time_column(name: &str, path: &Path) -> Result<TimeColumn, Error> {
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
) -> Result<Summary, Error> {
    let replay = load_replay(cfg, path)?;
    Ok(run_replay(cfg, &replay, out, bar)?.0)
}

/// Loads a file with the `[backtest]` column and time settings, in replay order.
pub fn load_replay(cfg: &Config, path: &Path) -> Result<Replay, Error> {
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
) -> Result<Summary, Error> {
    let replay = load_replay(cfg, path)?;
    let (summary, outcomes) = run_replay(cfg, &replay, None, bar)?;
    let learner = outcomes
        .into_iter()
        .next()
        .and_then(|o| o.learner)
        .ok_or_else(|| Error::Invalid("the run produced no model".into()))?;
    learner
        .save(model_out)
        .map_err(|e| Error::Invalid(e.to_string()))?;
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
) -> Result<Summary, Error> {
    let t = super::topic::read(cfg, brokers, topic, from, to)?;
    if t.bad > 0 {
        tracing::warn!(
            "{} messages in range could not be decoded and were skipped",
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
) -> Result<(Summary, Vec<Outcome>), Error> {
    let b = &cfg.backtest;
    if replay.rows() == 0 {
        return Err(Error::Invalid(
            "nothing to replay: the input has no events".into(),
        ));
    }
    let model = replay_model(cfg, replay)?;
    let scaling = scaling_of(&b.normalize, b.warmup_rows)?;
    let eval = if b.eval_rows.trim().is_empty() {
        b.warmup_rows..replay.rows()
    } else {
        parse_range(&b.eval_rows, "backtest.eval_rows")?
    };
    if b.seeds == 0 {
        return Err(Error::Invalid("backtest.seeds must be at least 1".into()));
    }
    let season = season_of(cfg, replay);
    let protocol = Protocol {
        warmup_rows: b.warmup_rows,
        epochs: b.epochs,
        eval,
        scaling,
        season: season.rows,
        linear: b.linear,
    };

    let start = Instant::now();
    let outcomes = run_seeds(replay, &model, &protocol, b.seeds, out.is_some(), bar)?;
    let elapsed_s = start.elapsed().as_secs_f64();
    let summary = summarize(
        &outcomes,
        Units::of(scaling),
        season.rows,
        b.seeds,
        elapsed_s,
    );
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

/// `[model]` fitted to a replay: one input per column read, and the targets
/// `backtest.targets` names, as column indices.
fn replay_model(cfg: &Config, replay: &Replay) -> Result<ModelConfig, Error> {
    let mut model = cfg.model.clone();
    model.inputs = replay.columns.len();
    model.targets =
        cfg.backtest
            .targets
            .iter()
            .map(|name| {
                replay.columns.iter().position(|c| c == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "backtest.targets names `{name}`, which is not among the columns read: {}",
                    replay.columns.join(", ")
                ))
            })
            })
            .collect::<Result<_, _>>()?;
    Ok(model)
}

/// The scaling `backtest.normalize` asks for (`auto` picks `warmup` when there
/// are warm-up rows, else `running`).
fn scaling_of(normalize: &str, warmup_rows: usize) -> Result<Scaling, Error> {
    match normalize {
        "auto" if warmup_rows > 0 => Ok(Scaling::Warmup),
        "auto" | "running" => Ok(Scaling::Running),
        "warmup" if warmup_rows == 0 => Err(Error::Invalid(
            "backtest.normalize = \"warmup\" needs backtest.warmup_rows > 0".into(),
        )),
        "warmup" => Ok(Scaling::Warmup),
        "none" => Ok(Scaling::None),
        other => Err(Error::Invalid(format!(
            "backtest.normalize = {other:?}: expected warmup, running, none or auto"
        ))),
    }
}

/// The seasonal-naive baseline's season: `backtest.season`, or inferred from
/// the replay's event times when that is 0.
fn season_of(cfg: &Config, replay: &Replay) -> engine::SeasonGuess {
    let b = &cfg.backtest;
    if b.season == 0 {
        engine::infer_season(replay)
    } else {
        engine::SeasonGuess {
            rows: b.season,
            why: format!(
                "season {} rows: set by backtest.season (--season)",
                b.season
            ),
        }
    }
}

/// Runs seeds `model.seed, model.seed + 1, …` one after the other, with a
/// progress bar on stderr when `bar` allows and stderr is a terminal. Only the
/// first seed keeps its predictions, and only if `keep_first`.
fn run_seeds(
    replay: &Replay,
    model: &ModelConfig,
    protocol: &Protocol,
    seeds: usize,
    keep_first: bool,
    bar: ProgressBar,
) -> Result<Vec<Outcome>, Error> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(seeds);
    let show = bar == ProgressBar::Auto && std::io::stderr().is_terminal();
    for k in 0..seeds {
        let keep = if k == 0 && keep_first {
            Keep::Predictions
        } else {
            Keep::MetricsOnly
        };
        let label = if seeds > 1 {
            format!("seed {}/{}", k + 1, seeds)
        } else {
            String::new()
        };
        outcomes.push(run_seed(replay, model, protocol, k, keep, &label, show)?);
    }
    if show {
        eprintln!();
    }
    Ok(outcomes)
}

/// One seed's run: `model` with its seed advanced by `k`.
fn run_seed(
    replay: &Replay,
    model: &ModelConfig,
    protocol: &Protocol,
    k: usize,
    keep: Keep,
    label: &str,
    show: bool,
) -> Result<Outcome, Error> {
    let mut m = model.clone();
    m.seed = model.seed + k as u64;
    let mut progress = progress_bar(label, show);
    engine::run(replay, &m, protocol, keep, &mut progress).map_err(Error::from)
}

/// A progress callback that redraws the bar (if `show`) at most every 100 ms,
/// and always at the end.
fn progress_bar(label: &str, show: bool) -> impl FnMut(u64, u64) + '_ {
    let mut last_draw = Instant::now();
    move |done: u64, total: u64| {
        if show && (done == total || last_draw.elapsed().as_millis() >= 100) {
            last_draw = Instant::now();
            draw_bar(label, done, total);
        }
    }
}

/// The summary of a run: the model's errors averaged over the seeds (with their
/// spread), rows, forecasts and baselines from the first seed, events per second
/// over all seeds.
fn summarize(
    outcomes: &[Outcome],
    units: Units,
    season: usize,
    seeds: usize,
    elapsed_s: f64,
) -> Summary {
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
    Summary {
        rows: first.rows,
        predictions: first.forecasts,
        mse: mean(&mses),
        mae: mean(&maes),
        naive_mse: all.naive.mse,
        naive_mae: all.naive.mae,
        seasonal_mse: all.seasonal.mse,
        linear_mse: all.linear.mse,
        linear_mae: all.linear.mae,
        season,
        elapsed_s,
        events_per_sec: events as f64 / elapsed_s.max(1e-9),
        units: units.name(),
        seeds,
        mse_std: std_dev(&mses),
        mae_std: std_dev(&maes),
        intervals: match units {
            Units::Normalized => first.overall.intervals.clone(),
            Units::Original => first.overall.intervals_raw.clone(),
        },
    }
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
    model: Scores,
    naive: Scores,
    seasonal: Scores,
    linear: Scores,
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.display().to_string(),
        source,
    }
}

fn metrics_json(m: &Scores) -> serde_json::Value {
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
        "intervals": {"normalized": s.intervals, "original": s.intervals_raw},
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
) -> Result<(), Error> {
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
    // The intervals as statsforecast names them: lo-80, hi-80, lo-95, hi-95.
    let names: Vec<(String, String)> = summary_levels(summary)
        .iter()
        .map(|l| {
            let pct = format!("{}", (l * 100.0 * 1e6).round() / 1e6);
            (format!("lo-{pct}"), format!("hi-{pct}"))
        })
        .collect();
    let bound = |l: usize, side: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        o.predictions
            .iter()
            .map(|p| p.bounds.get(l).map_or(f64::NAN, side))
            .collect()
    };
    let mut extra = vec![
        ("naive", baseline(|p| p.naive)),
        ("seasonal", baseline(|p| p.seasonal)),
        ("linear", baseline(|p| p.linear)),
    ];
    for (l, (lo, hi)) in names.iter().enumerate() {
        extra.push((lo.as_str(), bound(l, |b| b.0)));
        extra.push((hi.as_str(), bound(l, |b| b.1)));
    }
    table::write_predictions_with(&dir.join("predictions.parquet"), &rows, extra)?;

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
    // Forecast vs actual, one-step-ahead, first stream, each target, over the chosen span.
    let one_step: Vec<_> = o
        .predictions
        .iter()
        .filter(|p| p.step == 1 && p.stream == 0)
        .collect();
    let span = parse_range(&cfg.backtest.report_span, "").ok();
    ReportData {
        title: "recur backtest".into(),
        summary: summary_rows(summary, units.name()),
        series: series_panels(
            replay,
            target_names,
            &one_step,
            span.as_ref(),
            &summary_levels(summary),
        ),
        rolling: rolling_panel(&one_step, target_names.len().max(1)),
        coverage: coverage_panel(&one_step, &summary_levels(summary)),
        by_step: step_errors(o, units),
        metrics: metric_rows(o, target_names, units),
        per_stream: stream_rows(o, replay, units),
        notes: report_notes(cfg, protocol, season_why, units, o.per_stream.len()),
    }
}

/// The report's headline figures.
fn summary_rows(summary: &Summary, unit_name: &str) -> Vec<(String, String)> {
    vec![
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
    ]
}

/// Forecast vs actual charts, one per target, of the first stream's one-step-ahead
/// forecasts (`one_step`) over `span`, or the last 500 of them.
fn series_panels(
    replay: &Replay,
    target_names: &[&str],
    one_step: &[&Prediction],
    span: Option<&std::ops::Range<usize>>,
    levels: &[f64],
) -> Vec<SeriesPanel> {
    let mut series = Vec::new();
    for (j, name) in target_names.iter().enumerate() {
        let pts: Vec<_> = one_step.iter().filter(|p| p.target as usize == j).collect();
        let pts: Vec<_> = match span {
            Some(r) => pts.into_iter().filter(|p| r.contains(&p.row)).collect(),
            None => pts[pts.len().saturating_sub(500)..].to_vec(),
        };
        let n = pts.first().map_or(0, |p| p.bounds.len());
        let bands = (0..n)
            .rev()
            .map(|l| Band {
                level: levels.get(l).copied().unwrap_or(f64::NAN),
                lo: pts.iter().map(|p| p.bounds[l].0).collect(),
                hi: pts.iter().map(|p| p.bounds[l].1).collect(),
            })
            .collect();
        series.push(SeriesPanel {
            name: format!("{} — {name}, one step ahead", replay.streams[0]),
            x: pts.iter().map(|p| p.row as f64).collect(),
            actual: pts.iter().map(|p| p.actual).collect(),
            forecast: pts.iter().map(|p| p.forecast).collect(),
            naive: Some(pts.iter().map(|p| p.naive).collect()),
            bands,
        });
    }
    series
}

/// Rolling MSE (original units, all `nt` targets, one step ahead) over a window of
/// forecasts, for the model and the baselines; `None` when there are too few rows.
fn rolling_panel(one_step: &[&Prediction], nt: usize) -> Option<RollingPanel> {
    let window = 168.min(one_step.len().max(1));
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
    (by_row.len() >= window && window > 0).then(|| {
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
    })
}

/// The interval levels a backtest scored.
fn summary_levels(summary: &Summary) -> Vec<f64> {
    summary.intervals.iter().map(|l| l.level).collect()
}

/// Rolling coverage of the one-step intervals (all targets) over a window of
/// forecasts; `None` without intervals or with too few rows.
fn coverage_panel(one_step: &[&Prediction], levels: &[f64]) -> Option<CoveragePanel> {
    let window = 500.min(one_step.len());
    if levels.is_empty() || window < 50 || one_step.iter().any(|p| p.bounds.len() != levels.len()) {
        return None;
    }
    let mut x = Vec::new();
    let mut lines = vec![Vec::new(); levels.len()];
    let mut inside = vec![0usize; levels.len()];
    let hit = |p: &Prediction, l: usize| {
        let (lo, hi) = p.bounds[l];
        usize::from(lo <= p.actual && p.actual <= hi)
    };
    for (i, p) in one_step.iter().enumerate() {
        for (l, n) in inside.iter_mut().enumerate() {
            *n += hit(p, l);
            if i >= window {
                *n -= hit(one_step[i - window], l);
            }
        }
        if i + 1 >= window && (i + 1 - window) % 10 == 0 {
            x.push(p.row as f64);
            for (l, n) in inside.iter().enumerate() {
                lines[l].push(*n as f64 / window as f64);
            }
        }
    }
    Some(CoveragePanel {
        window,
        x,
        levels: levels.iter().copied().zip(lines).collect(),
    })
}

/// MSE per horizon step, for the model and the baselines.
fn step_errors(o: &Outcome, units: Units) -> Vec<StepError> {
    o.per_step
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
        .collect()
}

fn metric_row(scope: String, units: &str, m: &Scores) -> MetricRow {
    MetricRow {
        scope,
        units: units.into(),
        mse: m.mse,
        mae: m.mae,
        rmse: m.rmse,
        smape: m.smape,
        mase: m.mase,
    }
}

/// The metrics table: overall for the model and each baseline, then per target.
fn metric_rows(o: &Outcome, target_names: &[&str], units: Units) -> Vec<MetricRow> {
    let unit_name = units.name();
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
            metrics.push(metric_row(format!("{who}, overall"), "normalized", scaled));
        }
        metrics.push(metric_row(format!("{who}, overall"), "original", raw));
    }
    for (s, name) in o.per_target.iter().zip(target_names) {
        let p = units.pick(s);
        metrics.push(metric_row(format!("recur, {name}"), unit_name, &p.model));
        metrics.push(metric_row(format!("naive, {name}"), unit_name, &p.naive));
        metrics.push(metric_row(format!("linear, {name}"), unit_name, &p.linear));
    }
    metrics
}

/// The per-stream table (the first [`REPORT_STREAMS`]; empty for a single stream).
fn stream_rows(o: &Outcome, replay: &Replay, units: Units) -> Vec<StreamRow> {
    if o.per_stream.len() <= 1 {
        return Vec::new();
    }
    let unit_name = units.name();
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
}

/// The report's notes: model, protocol, season, linear baseline and units, and
/// whether the per-stream table of `streams` streams is cut short.
fn report_notes(
    cfg: &Config,
    protocol: &Protocol,
    season_why: &str,
    units: Units,
    streams: usize,
) -> Vec<String> {
    let m = &cfg.model;
    let lin = &protocol.linear;
    let mut notes = vec![
        format!(
            "model: {} hidden={} layers={} tbptt={} horizon={} linear lags={} optimizer={:?} lr={} predict={:?} seed={}",
            m.cell.name(),
            m.hidden,
            m.layers,
            m.tbptt,
            m.horizon,
            m.linear_lags(),
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
            lin.rows(m.inputs, m.horizon),
            lin.forgetting,
            lin.ridge
        ),
        match units {
            Units::Normalized => {
                "units: errors z-scored with each stream's warm-up mean and standard deviation"
                    .into()
            }
            Units::Original => "units: errors in the data's original units".into(),
        },
    ];
    if streams > REPORT_STREAMS {
        notes.push(format!(
            "per-stream table: the first {REPORT_STREAMS} of {streams} streams; metrics.json lists all"
        ));
    }
    notes
}

/// Where the outputs of a run go, for messages.
pub fn describe_outputs(dir: &Path) -> Vec<PathBuf> {
    ["predictions.parquet", "metrics.json", "report.html"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}
