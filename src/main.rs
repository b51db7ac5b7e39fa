//! The `recur` command line: a thin layer over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recur::bench::{self, ModelBench};
use recur::model::CellKind;

/// recur: online time-series forecasting with recurrent networks.
#[derive(Parser)]
#[command(name = "recur", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure recur's speed.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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
        Command::Bench { what } => match what {
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
