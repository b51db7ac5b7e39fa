//! The `recur` command line: a thin layer over the library.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use recur::backtest::job::{self, ProgressBar};
use recur::bench::{self, ModelBench};
use recur::config::Config;
use recur::model::{CellKind, OptimizerKind};

/// jemalloc serves Rust and C (librdkafka) allocations alike; see Cargo.toml.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (the `MALLOC_CONF` environment variable overrides
/// them): a background thread hands freed pages back to the system within
/// about a second, so memory falls again after evictions (`recur bench idle`:
/// final RSS 146 MiB rather than 576 MiB with the default ten seconds).
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// recur: online time-series forecasting with recurrent networks.
#[derive(Parser)]
#[command(name = "recur", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stage: input topic -> forecasts on the output topic (embedded demo cluster by default).
    Run(RunArgs),
    /// Feed a topic with events: synthetic seasonal streams or a CSV file.
    Produce(ProduceArgs),
    /// Print a topic's messages (e.g. predictions) from the beginning.
    Tail(TailArgs),
    /// Pretrain offline on a CSV or Parquet file (as a backtest replays it) and save a checkpoint with --out FILE.
    Train(Box<BacktestArgs>),
    /// Replay a CSV or Parquet file through the online learner and score it against baselines.
    Backtest(Box<BacktestArgs>),
    /// Measure recur's speed.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// End to end: input topic to predictions acknowledged, against the raw consume rate.
    Pipeline {
        /// Bootstrap servers, or `embedded`.
        #[arg(long, default_value = "embedded")]
        brokers: String,
        /// Events in the backlog.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Streams.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Input partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Config file for the stage (model, windows, librdkafka properties).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events per stream between weight updates (overrides the config).
        #[arg(long)]
        update_every: Option<usize>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Restore speed: stream states decoded per second, from memory and from a changelog topic.
    Restore {
        /// Streams to restore.
        #[arg(long, default_value_t = 100_000)]
        streams: usize,
        /// A broker to restore through (write a changelog, then time reading it back).
        #[arg(long)]
        brokers: Option<String>,
        /// Config file (model settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Memory with idle streams: each stream sends one event, then goes quiet;
    /// the stage runs as a child process, without and with state.idle_ttl.
    Idle {
        /// Bootstrap servers of a real broker.
        #[arg(long)]
        brokers: String,
        /// Streams (one event each).
        #[arg(long, default_value_t = 1_000_000)]
        streams: u64,
        /// Event time between consecutive events, ms.
        #[arg(long, default_value_t = 1)]
        step_ms: i64,
        /// state.idle_ttl of the second run.
        #[arg(long, default_value = "60s")]
        idle_ttl: String,
        /// checkpoint.interval of both runs.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Model throughput: inference and training events per second, state size.
    Model {
        /// Recurrent cell: lstm, gru, rnn or rnn_relu.
        #[arg(long, default_value = "lstm")]
        cell: CellKind,
        /// Hidden units.
        #[arg(long, default_value_t = 32)]
        hidden: usize,
        /// Values per event.
        #[arg(long, default_value_t = 1)]
        inputs: usize,
        /// TBPTT window.
        #[arg(long, default_value_t = 16)]
        tbptt: usize,
        /// Streams the events are interleaved over.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Events timed for inference.
        #[arg(long, default_value_t = 4_000_000)]
        infer_events: usize,
        /// Events timed for training.
        #[arg(long, default_value_t = 300_000)]
        train_events: usize,
        /// Print one JSON line instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Config file (TOML); layered as defaults < file < RECUR_* variables < flags.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bootstrap servers, or `embedded` for the in-process demo cluster.
    #[arg(long)]
    brokers: Option<String>,
    /// Topic of input events.
    #[arg(long)]
    input_topic: Option<String>,
    /// Topic of predictions.
    #[arg(long)]
    output_topic: Option<String>,
    /// Topic of dead letters.
    #[arg(long)]
    dlq_topic: Option<String>,
    /// Consumer group.
    #[arg(long)]
    group: Option<String>,
    /// Listen address of /metrics, /healthz, /readyz.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Start every partition from this checkpoint (`recur train --out`); sets state.init.
    #[arg(long)]
    init: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    fn overrides(&self) -> toml::Table {
        use toml::Value;
        let mut kafka = toml::Table::new();
        for (k, v) in [
            ("brokers", &self.brokers),
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("dlq_topic", &self.dlq_topic),
            ("group", &self.group),
        ] {
            if let Some(v) = v {
                kafka.insert(k.into(), Value::String(v.clone()));
            }
        }
        let mut top = toml::Table::new();
        if !kafka.is_empty() {
            top.insert("kafka".into(), Value::Table(kafka));
        }
        if let Some(p) = &self.init {
            let mut st = toml::Table::new();
            st.insert("init".into(), Value::String(p.display().to_string()));
            top.insert("state".into(), Value::Table(st));
        }
        if let Some(a) = &self.metrics_addr {
            let mut m = toml::Table::new();
            m.insert("addr".into(), Value::String(a.clone()));
            top.insert("metrics".into(), Value::Table(m));
        }
        top
    }
}

#[derive(Args)]
struct ProduceArgs {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Produce synthetic seasonal streams.
    #[arg(long, conflicts_with = "csv", required_unless_present = "csv")]
    synthetic: bool,
    /// Produce the rows of a CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Stream id for the CSV's events (default: the file stem).
    #[arg(long)]
    stream: Option<String>,
    /// Synthetic streams.
    #[arg(long, default_value_t = 20)]
    streams: usize,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop after this many synthetic events (default: until interrupted).
    #[arg(long)]
    events: Option<u64>,
}

#[derive(Args)]
struct TailArgs {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to print.
    #[arg(long)]
    topic: String,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
}

#[derive(Args)]
struct BacktestArgs {
    /// CSV file to replay (wide: a time column and value columns; long: stream, ts, values).
    #[arg(long, conflicts_with_all = ["parquet", "topic"], required_unless_present_any = ["parquet", "topic"])]
    csv: Option<PathBuf>,
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
    /// Values per event (model.inputs); topic events must all have this many.
    #[arg(long)]
    inputs: Option<usize>,
    /// Parquet file to replay (same layouts as --csv).
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Config file (TOML, `[model]` and `[backtest]` sections) under the flags.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write predictions.parquet, metrics.json and report.html here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON summary line on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    quiet: bool,
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
    /// Score only forecasts of rows A..B (end exclusive).
    #[arg(long)]
    eval_rows: Option<String>,
    /// warmup, running, none or auto.
    #[arg(long)]
    normalize: Option<String>,
    /// Steps ahead per forecast.
    #[arg(long)]
    horizon: Option<usize>,
    /// Time column name, or `none` for the row index.
    #[arg(long)]
    time_column: Option<String>,
    /// Season length (rows) of the seasonal-naive baseline (0: one day of rows, from the time column).
    #[arg(long)]
    season: Option<usize>,
    /// Rows of history the linear baseline regresses on.
    #[arg(long)]
    linear_lags: Option<usize>,
    /// Forgetting factor of the linear baseline, in (0, 1].
    #[arg(long)]
    linear_forgetting: Option<f64>,
    /// Ridge prior of the linear baseline (> 0).
    #[arg(long)]
    linear_ridge: Option<f64>,
    /// Repeat with N seeds and report mean and standard deviation.
    #[arg(long)]
    seeds: Option<usize>,
    /// Rows A..B shown in the report's forecast charts.
    #[arg(long)]
    report_span: Option<String>,
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
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Optimizer: adam, adamw or sgd.
    #[arg(long, value_parser = parse_optimizer)]
    optimizer: Option<OptimizerKind>,
    /// Events per stream between updates.
    #[arg(long)]
    update_every: Option<usize>,
    /// Seed of the weight initialisation.
    #[arg(long)]
    seed: Option<u64>,
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

impl BacktestArgs {
    /// The flags that were given, as a TOML table to merge over the config.
    fn overrides(&self) -> anyhow::Result<toml::Table> {
        use toml::Value;
        let mut model = toml::Table::new();
        let mut optimizer = toml::Table::new();
        let mut backtest = toml::Table::new();
        let mut linear = toml::Table::new();
        let int = |v: usize| Value::Integer(v as i64);
        let list = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        let put = |t: &mut toml::Table, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                t.insert(k.into(), v);
            }
        };
        put(&mut backtest, "columns", self.columns.as_deref().map(list));
        put(&mut backtest, "targets", self.targets.as_deref().map(list));
        put(&mut backtest, "warmup_rows", self.warmup_rows.map(int));
        put(&mut backtest, "epochs", self.epochs.map(int));
        put(
            &mut backtest,
            "eval_rows",
            self.eval_rows.clone().map(Value::String),
        );
        put(
            &mut backtest,
            "normalize",
            self.normalize.clone().map(Value::String),
        );
        put(
            &mut backtest,
            "time_column",
            self.time_column.clone().map(Value::String),
        );
        put(&mut backtest, "season", self.season.map(int));
        put(&mut backtest, "seeds", self.seeds.map(int));
        put(
            &mut backtest,
            "report_span",
            self.report_span.clone().map(Value::String),
        );
        put(&mut linear, "lags", self.linear_lags.map(int));
        put(
            &mut linear,
            "forgetting",
            self.linear_forgetting.map(Value::Float),
        );
        put(&mut linear, "ridge", self.linear_ridge.map(Value::Float));
        if !linear.is_empty() {
            backtest.insert("linear".into(), Value::Table(linear));
        }
        put(&mut model, "horizon", self.horizon.map(int));
        put(&mut model, "inputs", self.inputs.map(int));
        put(
            &mut model,
            "cell",
            self.cell.map(|c| Value::String(c.name().into())),
        );
        put(&mut model, "hidden", self.hidden.map(int));
        put(&mut model, "layers", self.layers.map(int));
        put(&mut model, "tbptt", self.tbptt.map(int));
        put(&mut model, "update_every", self.update_every.map(int));
        put(
            &mut model,
            "seed",
            self.seed.map(|s| Value::Integer(s as i64)),
        );
        put(&mut optimizer, "lr", self.lr.map(Value::Float));
        put(
            &mut optimizer,
            "kind",
            self.optimizer.map(|k| {
                Value::String(
                    match k {
                        OptimizerKind::Adam => "adam",
                        OptimizerKind::Adamw => "adamw",
                        OptimizerKind::Sgd => "sgd",
                    }
                    .into(),
                )
            }),
        );
        if !optimizer.is_empty() {
            model.insert("optimizer".into(), Value::Table(optimizer));
        }
        let mut top = toml::Table::new();
        if !model.is_empty() {
            top.insert("model".into(), Value::Table(model));
        }
        if !backtest.is_empty() {
            top.insert("backtest".into(), Value::Table(backtest));
        }
        Ok(top)
    }
}

fn backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    // The same layers as `recur run`, so a backtest sees the deployment's settings.
    let cfg = Config::load_layered(args.config.as_deref(), std::env::vars(), args.overrides()?)?;
    let bar = if args.quiet {
        ProgressBar::Off
    } else {
        ProgressBar::Auto
    };
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
        println!(
            "  {:.2} s, {:.0} events/s",
            summary.elapsed_s, summary.events_per_sec
        );
        if let Some(dir) = &args.out {
            for p in job::describe_outputs(dir) {
                println!("  wrote {}", p.display());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let cfg =
                Config::load_layered(args.config.as_deref(), std::env::vars(), args.overrides())?;
            let live = if args.quiet {
                recur::stage::LiveLine::Quiet
            } else {
                recur::stage::LiveLine::Print
            };
            recur::stage::run(cfg, recur::stage::signal(), live)?;
        }
        Command::Produce(a) => {
            let sent = match &a.csv {
                Some(path) => recur::tools::produce_csv(
                    &a.brokers,
                    &a.topic,
                    path,
                    a.stream.as_deref(),
                    a.rate,
                )?,
                None => {
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let flag = stop.clone();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let handle = std::thread::spawn(move || {
                        rt.block_on(recur::stage::signal());
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    });
                    let n = recur::tools::produce_synthetic(
                        &a.brokers, &a.topic, a.streams, a.rate, a.events, &stop,
                    )?;
                    drop(handle);
                    n
                }
            };
            eprintln!("recur: produced {sent} events to {}", a.topic);
        }
        Command::Tail(a) => {
            recur::tools::tail(
                &a.brokers,
                &a.topic,
                a.max,
                std::time::Duration::from_secs(a.idle_s),
            )?;
        }
        Command::Backtest(args) => backtest(&args)?,
        Command::Train(args) => {
            let cfg =
                Config::load_layered(args.config.as_deref(), std::env::vars(), args.overrides()?)?;
            let file = args.csv.as_ref().or(args.parquet.as_ref());
            let (Some(file), None, Some(out)) = (file, &args.topic, &args.out) else {
                anyhow::bail!(
                    "recur train needs --csv FILE (or --parquet FILE) and --out CHECKPOINT"
                );
            };
            let bar = if args.quiet {
                ProgressBar::Off
            } else {
                ProgressBar::Auto
            };
            let s = job::train_file(&cfg, file, out, bar)?;
            println!(
                "{}: trained on {} rows (online MSE {:.4} against naive {:.4}, {} units); wrote {}",
                file.display(),
                s.rows,
                s.mse,
                s.naive_mse,
                s.units,
                out.display()
            );
        }
        Command::Bench { what } => match what {
            BenchCommand::Pipeline {
                brokers,
                events,
                streams,
                partitions,
                config,
                update_every,
                json,
            } => {
                let mut cfg =
                    Config::load_layered(config.as_deref(), std::env::vars(), toml::Table::new())?;
                if let Some(u) = update_every {
                    cfg.model.update_every = u;
                }
                let report = bench::pipeline(&bench::PipelineBench {
                    brokers,
                    events,
                    streams,
                    partitions,
                    config: cfg,
                })?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{report:#?}");
                }
            }
            BenchCommand::Restore {
                streams,
                brokers,
                config,
                json,
            } => {
                anyhow::ensure!(streams > 0, "--streams must be at least 1");
                let cfg =
                    Config::load_layered(config.as_deref(), std::env::vars(), toml::Table::new())?;
                let r = bench::restore(streams, brokers.as_deref(), &cfg)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{r:#?}");
                }
            }
            BenchCommand::Idle {
                brokers,
                streams,
                step_ms,
                idle_ttl,
                interval,
                json,
            } => {
                anyhow::ensure!(streams > 0, "--streams must be at least 1");
                let r = bench::idle(&brokers, streams, step_ms, &idle_ttl, &interval)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{r:#?}");
                }
            }
            BenchCommand::Model {
                cell,
                hidden,
                inputs,
                tbptt,
                streams,
                infer_events,
                train_events,
                json,
            } => {
                anyhow::ensure!(streams > 0, "--streams must be at least 1");
                let report = bench::model(&ModelBench {
                    cell,
                    hidden,
                    inputs,
                    tbptt,
                    streams,
                    infer_events,
                    train_events,
                })
                .map_err(anyhow::Error::msg)?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "{} H={} D={} T={} streams={} ({}):\n  inference  {:>12.0} events/s\n  training   {:>12.0} events/s (TBPTT({}) + Adam on every event)\n  state      {:>12} bytes/stream (shared weights)",
                        report.cell,
                        hidden,
                        inputs,
                        tbptt,
                        streams,
                        report.dtype,
                        report.infer_events_per_sec,
                        report.train_events_per_sec,
                        tbptt,
                        report.state_bytes_per_stream
                    );
                }
            }
        },
    }
    Ok(())
}
