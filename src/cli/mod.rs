//! The `recur` command line: arguments and subcommand glue over the library.

mod backtest;
mod bench;
mod show;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use recur::config::Config;
use recur::stage::{self, LiveLine};
use recur::tools;
use serde::Serialize;

/// recur: online time-series forecasting with recurrent networks.
#[derive(Parser)]
#[command(name = "recur", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stage: input topic -> forecasts on the output topic (embedded demo cluster by default).
    Run(RunArgs),
    /// Print the effective configuration (defaults < file < RECUR_* < flags), secrets redacted, with the layer that set each key.
    Config(RunArgs),
    /// Feed a topic with events: synthetic seasonal streams or a CSV file.
    Produce(ProduceArgs),
    /// Print a topic's messages (e.g. predictions or dead letters) from the beginning.
    Tail(TailArgs),
    /// Pretrain offline on a CSV or Parquet file (as a backtest replays it) and save a checkpoint.
    Train(Box<backtest::TrainArgs>),
    /// Replay a CSV or Parquet file (or a topic) through the online learner and score it against baselines.
    Backtest(Box<backtest::BacktestArgs>),
    /// Measure recur's speed.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Flags of `recur run` (and `recur config`).
#[derive(Args)]
struct RunArgs {
    /// Config file (TOML); layered as defaults < file < RECUR_* variables < flags.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

/// The flags of `recur run` that set configuration keys, shaped as the config.
#[derive(Args, Serialize)]
struct RunFlags {
    #[command(flatten)]
    kafka: KafkaFlags,
    #[command(flatten)]
    metrics: MetricsFlags,
    #[command(flatten)]
    state: StateFlags,
}

#[derive(Args, Serialize)]
struct KafkaFlags {
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
}

#[derive(Args, Serialize)]
struct MetricsFlags {
    /// Listen address of /metrics, /healthz, /readyz.
    #[arg(long = "metrics-addr")]
    addr: Option<String>,
}

#[derive(Args, Serialize)]
struct StateFlags {
    /// Start every partition from this checkpoint (`recur train --out`); sets state.init.
    #[arg(long)]
    init: Option<PathBuf>,
}

/// Where `produce` and `tail` connect: brokers plus `[kafka.properties]`
/// from a config file and `RECUR_KAFKA__PROPERTIES__*` (TLS, SASL).
#[derive(Args)]
struct Connection {
    /// Bootstrap servers (default: kafka.brokers of the configuration, else 127.0.0.1:9092).
    #[arg(long)]
    brokers: Option<String>,
    /// Config file whose [kafka] section (brokers, properties) is used.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Connection {
    fn client(&self) -> anyhow::Result<rdkafka::ClientConfig> {
        let cfg =
            Config::load_layered(self.config.as_deref(), std::env::vars(), toml::Table::new())?;
        let brokers = match (&self.brokers, cfg.kafka.is_embedded()) {
            (Some(b), _) => b.clone(),
            (None, true) => "127.0.0.1:9092".to_string(),
            (None, false) => cfg.kafka.brokers.clone(),
        };
        Ok(recur::kafka::client_config(&brokers, &cfg))
    }
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    to: Connection,
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
    #[command(flatten)]
    from: Connection,
    /// Topic to print.
    #[arg(long)]
    topic: String,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
    /// Print each message as JSON with its key, partition, offset and headers
    /// (a dead letter's reason is in its headers).
    #[arg(long)]
    headers: bool,
}

/// A serde struct of flags as a config table: unset flags (None) and empty
/// sections left out, so only what was given overrides the layers below.
pub(crate) fn table(flags: &impl Serialize) -> anyhow::Result<toml::Table> {
    fn prune(t: &mut toml::Table) {
        for (_, v) in t.iter_mut() {
            if let toml::Value::Table(sub) = v {
                prune(sub);
            }
        }
        t.retain(|_, v| !matches!(v, toml::Value::Table(sub) if sub.is_empty()));
    }
    let mut t = toml::Table::try_from(flags)?;
    prune(&mut t);
    Ok(t)
}

impl RunArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load_layered(
            self.config.as_deref(),
            std::env::vars(),
            table(&self.flags)?,
        )?)
    }
}

impl Cli {
    /// The configuration's log format, for the subscriber: from the file and
    /// `RECUR_LOG__FORMAT`, else text.
    pub fn log_format(&self) -> recur::log::Format {
        let file = match &self.command {
            Command::Run(a) | Command::Config(a) => a.config.as_deref(),
            Command::Produce(a) => a.to.config.as_deref(),
            Command::Tail(a) => a.from.config.as_deref(),
            Command::Train(a) => a.config.as_deref(),
            Command::Backtest(a) => a.config.as_deref(),
            Command::Bench { .. } => None,
        };
        Config::load_layered(file, std::env::vars(), toml::Table::new())
            .map(|c| c.log.format)
            .unwrap_or_default()
    }

    /// Runs the subcommand.
    pub fn dispatch(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => {
                let live = if args.quiet {
                    LiveLine::Quiet
                } else {
                    LiveLine::Print
                };
                stage::run(args.load()?, stage::signal(), live)?;
            }
            Command::Config(args) => show::config(
                args.config.as_deref(),
                std::env::vars(),
                table(&args.flags)?,
            )?,
            Command::Produce(a) => produce(&a)?,
            Command::Tail(a) => {
                let client = a.from.client()?;
                tools::tail(
                    &client,
                    &a.topic,
                    a.max,
                    Duration::from_secs(a.idle_s),
                    a.headers,
                )?;
            }
            Command::Backtest(args) => backtest::backtest(&args)?,
            Command::Train(args) => backtest::train(&args)?,
            Command::Bench { what } => bench::run(what)?,
        }
        Ok(())
    }
}

fn produce(a: &ProduceArgs) -> anyhow::Result<()> {
    let client = a.to.client()?;
    let sent = match &a.csv {
        Some(path) => tools::produce_csv(&client, &a.topic, path, a.stream.as_deref(), a.rate)?,
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = std::thread::spawn(move || {
                rt.block_on(stage::signal());
                flag.store(true, Ordering::Relaxed);
            });
            let n =
                tools::produce_synthetic(&client, &a.topic, a.streams, a.rate, a.events, &stop)?;
            drop(handle);
            n
        }
    };
    eprintln!("recur: produced {sent} events to {}", a.topic);
    Ok(())
}
