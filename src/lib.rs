//! recur: a streaming pipeline stage for online time-series forecasting.
//!
//! # Layout
//!
//! The stage's data flows one way:
//!
//! ```text
//! source (consumer) -> decode -> window (Arrow) -> model -> encode -> sink (producer)
//!   -> offsets (commit only what was delivered)  checkpoint (state) / telemetry / backtest beside it
//! ```
//!
//! * [`source`]: the Kafka consumer: rebalances, each partition's queue split off for its worker, commits.
//! * [`decode`]: message bytes to events, or a dead-letter reason.
//! * [`window`]: per-partition Arrow record batches, flushed on size or time.
//! * [`worker`]: one thread per partition running decode → window → model → encode.
//! * [`encode`]: prediction JSON and dead-letter headers.
//! * [`sink`]: the Kafka producer and its delivery reports.
//! * [`offsets`]: which input offsets are safe to commit.
//! * [`telemetry`]: Prometheus metrics and the HTTP endpoint.
//! * [`stage`]: `recur run` wiring, the embedded demo cluster, shutdown.
//! * [`state`]: per-partition checkpoints to the changelog topic, restore,
//!   idle-stream eviction, hot swap.
//! * [`tools`]: `recur produce` and `recur tail`.
//!
//! * [`model`]: the recurrent networks (Elman RNN, LSTM, GRU), truncated BPTT,
//!   optimisers and the online learner that keeps one hidden state per stream.
//!   Pure computation: no I/O, no async, no logging.
//! * [`backtest`]: file replays scored against baselines, with reports.
//! * [`synth`]: deterministic synthetic series (sine, AR(2), seasonal streams)
//!   for tests, benchmarks and the demo.
//! * [`bench`]: the `recur bench` measurements behind the README's numbers.
//! * [`config`]: layered configuration (`config/default.toml` < file < `RECUR_*` < flags).

pub mod backtest;
pub mod bench;
pub mod config;
pub mod decode;
pub mod encode;
pub mod model;
pub mod offsets;
pub mod sink;
pub mod source;
pub mod stage;
pub mod state;
pub mod synth;
pub mod telemetry;
pub mod tools;
pub mod window;
pub mod worker;
