//! recur: a streaming pipeline stage for online time-series forecasting.
//!
//! # Layout
//!
//! The stage's data flows one way:
//!
//! ```text
//! stage::source (consumer) -> stage::feed -> stage::worker: decode -> window (Arrow) -> model -> encode
//!   -> stage::sink (producer) -> stage::offsets (commit only what was delivered)
//!   beside it: stage::checkpoint -> state (changelog), telemetry + health (HTTP), log
//! ```
//!
//! * [`stage`]: `recur run`: the consumer, partition feeds and workers,
//!   decode, windows, encode, the producer, offsets, the worker's checkpoint
//!   protocol, hot swap and the embedded demo cluster.
//! * [`state`]: checkpoint bookkeeping (what to write, what is evicted),
//!   restore from the changelog, record formats, changelog reading.
//! * [`model`]: the recurrent networks (Elman RNN, LSTM, GRU), truncated BPTT,
//!   optimisers, the linear expert and the blend, and the online learner that
//!   keeps one hidden state per stream. Pure computation: no I/O, no async,
//!   no logging.
//! * [`backtest`]: file and topic replays scored against baselines, with reports.
//! * [`config`]: every configuration section, layered
//!   (`config/default.toml` < file < `RECUR_*` < flags) and validated at load.
//! * [`kafka`]: client configuration, recur's librdkafka defaults, and the
//!   client context that routes librdkafka's logs into `tracing`.
//! * [`telemetry`]: Prometheus metrics; [`http`]: the endpoint that serves
//!   them with `/healthz` and `/readyz` (hyper); [`health`]: readiness and
//!   the fatal error the endpoint reports.
//! * [`log`]: the `tracing` subscriber (`RUST_LOG`, `log.format`) and rate limits.
//! * [`time`]: time values (ISO 8601, epoch, US forms) as epoch milliseconds.
//! * [`tools`]: `recur produce` and `recur tail`.
//! * [`synth`]: deterministic synthetic series (sine, AR(2), seasonal streams)
//!   for tests, benchmarks and the demo.
//!
//! The binary's arguments, subcommand glue and `recur bench` live in the
//! binary (`src/cli/`), not in this library.

pub mod backtest;
pub mod config;
pub mod health;
pub mod http;
pub mod kafka;
pub mod log;
pub mod model;
pub mod stage;
pub mod state;
pub mod synth;
pub mod telemetry;
pub mod time;
pub mod tools;
