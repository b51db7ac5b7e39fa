//! recur: a streaming pipeline stage for online time-series forecasting.
//!
//! # Layout
//!
//! * [`model`]: the recurrent networks (Elman RNN, LSTM, GRU), truncated BPTT,
//!   optimisers and the online learner that keeps one hidden state per stream.
//!   Pure computation: no I/O, no async, no logging.
//! * [`backtest`]: file replays scored against baselines, with reports.
//! * [`synth`]: deterministic synthetic series (sine, AR(2), seasonal streams)
//!   for tests, benchmarks and the demo.
//! * [`bench`]: the `recur bench` measurements behind the README's numbers.
//! * [`config`]: layered configuration (built-in `config/default.toml` < file).

pub mod backtest;
pub mod bench;
pub mod config;
pub mod model;
pub mod synth;
