//! `recur backtest` and `recur train`: their flags and their output.

use std::path::PathBuf;

use clap::Args;
use recur::backtest::job::{self, ProgressBar, Summary};
use recur::config::Config;
use recur::model::{CellKind, OptimizerKind};
use serde::Serialize;

use super::table;

/// Flags of `recur backtest`.
#[derive(Args)]
pub struct BacktestArgs {
    /// CSV file to replay (wide: a time column and value columns; long: stream, ts, values).
    #[arg(long, conflicts_with_all = ["parquet", "topic", "nab"], required_unless_present_any = ["parquet", "topic", "nab"])]
    csv: Option<PathBuf>,
    /// A Numenta Anomaly Benchmark corpus (data/, labels/, config/): every
    /// file through the learner, scored by NAB's rules and profiles.
    #[arg(long, conflicts_with_all = ["parquet", "topic"])]
    nab: Option<PathBuf>,
    /// Parquet file to replay (same layouts as --csv).
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Topic to replay instead of a file (partitions assigned directly, nothing committed).
    #[arg(long, conflicts_with = "parquet", requires = "brokers")]
    topic: Option<String>,
    /// Bootstrap servers of --topic.
    #[arg(long)]
    brokers: Option<String>,
    /// Start of the topic range: `earliest` or a time (RFC 3339, ...).
    #[arg(long, default_value = "earliest")]
    from: String,
    /// End of the topic range (inclusive): `latest` or a time.
    #[arg(long, default_value = "latest")]
    to: String,
    /// Config file (TOML, `[model]` and `[backtest]` sections) under the flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write predictions.parquet, metrics.json and report.html here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON summary line on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    score: ScoreFlags,
    #[command(flatten)]
    model: ModelFlags,
}

/// Flags of `recur train`.
#[derive(Args)]
pub struct TrainArgs {
    /// CSV file to train on (the layouts of `recur backtest`).
    #[arg(long, conflicts_with = "parquet", required_unless_present = "parquet")]
    csv: Option<PathBuf>,
    /// Parquet file to train on.
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Where to write the checkpoint (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Config file (TOML, `[model]` and `[backtest]` sections) under the flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// No progress bar on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    model: ModelFlags,
}

/// How a file is read and the model warmed up (`[backtest]` keys).
#[derive(Args, Serialize)]
struct DataFlags {
    /// Value columns to read, comma-separated (default: every numeric column).
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Columns to forecast, comma-separated (default: all read).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Pretrain on the first N rows before the online run.
    #[arg(long)]
    warmup_rows: Option<usize>,
    /// Passes over the warm-up rows.
    #[arg(long)]
    epochs: Option<usize>,
    /// warmup, running, none or auto.
    #[arg(long)]
    normalize: Option<String>,
    /// Time column name, or `none` for the row index.
    #[arg(long)]
    time_column: Option<String>,
}

/// How a backtest is scored and reported (`[backtest]` keys).
#[derive(Args, Serialize)]
struct ScoreFlags {
    /// Score only forecasts of rows A..B (end exclusive).
    #[arg(long)]
    eval_rows: Option<String>,
    /// Season length (rows) of the seasonal-naive baseline (0: one day of rows, from the time column).
    #[arg(long)]
    season: Option<usize>,
    /// Repeat with N seeds and report mean and standard deviation.
    #[arg(long)]
    seeds: Option<usize>,
    /// Rows A..B shown in the report's forecast charts.
    #[arg(long)]
    report_span: Option<String>,
    #[command(flatten)]
    linear: LinearFlags,
}

/// `[backtest.linear]`: the linear baseline.
#[derive(Args, Serialize)]
struct LinearFlags {
    /// Rows of history the linear baseline regresses on.
    #[arg(long = "linear-lags")]
    lags: Option<usize>,
    /// Forgetting factor of the linear baseline, in (0, 1].
    #[arg(long = "linear-forgetting")]
    forgetting: Option<f64>,
    /// Ridge prior of the linear baseline (> 0).
    #[arg(long = "linear-ridge")]
    ridge: Option<f64>,
}

/// `[model]` keys.
#[derive(Args, Serialize)]
struct ModelFlags {
    /// Steps ahead per forecast.
    #[arg(long)]
    horizon: Option<usize>,
    /// Values per event (model.inputs); topic events must all have this many.
    #[arg(long)]
    inputs: Option<usize>,
    /// Recurrent cell: lstm, gru, rnn or rnn_relu.
    #[arg(long)]
    cell: Option<CellKind>,
    /// Hidden units per layer.
    #[arg(long)]
    hidden: Option<usize>,
    /// Stacked layers.
    #[arg(long)]
    layers: Option<usize>,
    /// TBPTT window.
    #[arg(long)]
    tbptt: Option<usize>,
    /// Events per stream between updates.
    #[arg(long)]
    update_every: Option<usize>,
    /// Seed of the weight initialisation.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    optimizer: OptimizerFlags,
}

/// `[model.optimizer]` keys.
#[derive(Args, Serialize)]
struct OptimizerFlags {
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Optimizer: adam, adamw or sgd.
    #[arg(long = "optimizer", value_parser = parse_optimizer)]
    kind: Option<OptimizerKind>,
}

fn parse_optimizer(s: &str) -> Result<OptimizerKind, String> {
    match s {
        "adam" => Ok(OptimizerKind::Adam),
        "adamw" => Ok(OptimizerKind::Adamw),
        "sgd" => Ok(OptimizerKind::Sgd),
        other => Err(format!(
            "unknown optimizer `{other}` (expected adam, adamw or sgd)"
        )),
    }
}

/// The `[model]` and `[backtest]` tables the flags set.
#[derive(Serialize)]
struct Overrides<'a> {
    model: &'a ModelFlags,
    backtest: BacktestTable<'a>,
}

#[derive(Serialize)]
struct BacktestTable<'a> {
    #[serde(flatten)]
    data: &'a DataFlags,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    score: Option<&'a ScoreFlags>,
}

fn load(config: Option<&std::path::Path>, o: &Overrides<'_>) -> anyhow::Result<Config> {
    // The same layers as `recur run`, so a backtest sees the deployment's settings.
    Ok(Config::load_layered(config, std::env::vars(), table(o)?)?)
}

fn bar(quiet: bool) -> ProgressBar {
    if quiet {
        ProgressBar::Off
    } else {
        ProgressBar::Auto
    }
}

/// `recur backtest`.
pub fn backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        model: &args.model,
        backtest: BacktestTable {
            data: &args.data,
            score: Some(&args.score),
        },
    };
    let cfg = load(args.config.as_deref(), &overrides)?;
    if let Some(dir) = &args.nab {
        return nab(&cfg, dir, args);
    }
    let bar = bar(args.quiet);
    let (summary, label) = match (&args.topic, args.csv.as_ref().or(args.parquet.as_ref())) {
        (Some(topic), _) => {
            use recur::backtest::topic::Bound;
            let brokers = args.brokers.as_deref().unwrap_or("127.0.0.1:9092");
            let (from, to) = (
                Bound::parse(&args.from, "earliest")?,
                Bound::parse(&args.to, "latest")?,
            );
            (
                job::run_topic(&cfg, brokers, topic, from, to, args.out.as_deref(), bar)?,
                format!("topic {topic}"),
            )
        }
        (None, Some(file)) => (
            job::run_file(&cfg, file, args.out.as_deref(), bar)?,
            file.display().to_string(),
        ),
        (None, None) => anyhow::bail!("give --csv FILE, --parquet FILE or --topic T --brokers B"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, &label);
        if let Some(dir) = &args.out {
            for p in job::describe_outputs(dir) {
                println!("  wrote {}", p.display());
            }
        }
    }
    Ok(())
}

/// `--nab DIR`: the corpus scored, printed as JSON or as a table.
fn nab(
    cfg: &recur::config::Config,
    dir: &std::path::Path,
    args: &BacktestArgs,
) -> anyhow::Result<()> {
    let quiet = args.quiet;
    let mut n = 0;
    let mut progress = |key: &str| {
        n += 1;
        if !quiet {
            eprintln!("nab: {n}: {key}");
        }
    };
    let report =
        recur::backtest::anomaly::run(&cfg.model, dir, args.out.as_deref(), &mut progress)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "NAB, {} files, {} rows ({:.1} s):",
        report.files, report.rows, report.elapsed_s
    );
    for p in &report.profiles {
        println!(
            "  {:<20} {:>6.1}   threshold {:.6}, {}/{} windows detected, {} false-positive rows",
            p.profile,
            p.score,
            p.threshold,
            p.windows_detected,
            p.windows_total,
            p.false_positive_rows
        );
    }
    if let Some(out) = &args.out {
        println!(
            "  wrote {}",
            out.join(recur::backtest::anomaly::DETECTOR).display()
        );
    }
    Ok(())
}

fn print_summary(summary: &Summary, label: &str) {
    let spread = |sd: f64| {
        if summary.seeds > 1 {
            format!(" ± {sd:.4}")
        } else {
            String::new()
        }
    };
    println!(
        "{}: {} rows, {} forecasts scored ({} units{})",
        label,
        summary.rows,
        summary.predictions,
        summary.units,
        if summary.seeds > 1 {
            format!(", mean ± sd over {} seeds", summary.seeds)
        } else {
            String::new()
        }
    );
    println!(
        "  recur           MSE {:.4}{}  MAE {:.4}{}",
        summary.mse,
        spread(summary.mse_std),
        summary.mae,
        spread(summary.mae_std)
    );
    println!(
        "  naive           MSE {:.4}  MAE {:.4}",
        summary.naive_mse, summary.naive_mae
    );
    println!(
        "  seasonal naive  MSE {:.4}  (season {} rows)",
        summary.seasonal_mse, summary.season
    );
    println!(
        "  linear          MSE {:.4}  MAE {:.4}",
        summary.linear_mse, summary.linear_mae
    );
    for lv in &summary.intervals {
        println!(
            "  {:>3.0}% interval   coverage {:.3}  width {:.3}  interval score {:.3} (split conformal {:.3}, {:.3})",
            lv.level * 100.0,
            lv.recur.coverage,
            lv.recur.width,
            lv.recur.winkler,
            lv.split_conformal.coverage,
            lv.split_conformal.winkler
        );
    }
    println!(
        "  {:.2} s, {:.0} events/s",
        summary.elapsed_s, summary.events_per_sec
    );
}

/// `recur train`.
pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        model: &args.model,
        backtest: BacktestTable {
            data: &args.data,
            score: None,
        },
    };
    let cfg = load(args.config.as_deref(), &overrides)?;
    let file = args
        .csv
        .as_ref()
        .or(args.parquet.as_ref())
        .expect("clap requires --csv or --parquet");
    let s = job::train_file(&cfg, file, &args.out, bar(args.quiet))?;
    println!(
        "{}: trained on {} rows (online MSE {:.4} against naive {:.4}, {} units); wrote {}",
        file.display(),
        s.rows,
        s.mse,
        s.naive_mse,
        s.units,
        args.out.display()
    );
    Ok(())
}
