//! Backtests: replay history through the same learner `recur run` uses, and
//! score it against baselines.
//!
//! * [`table`]: reading CSV/Parquet files (wide or long) into per-stream rows,
//!   and writing `predictions.parquet`.
//! * [`engine`]: the replay and the scoring against baselines.
//! * [`baseline`]: the per-stream linear baseline (online ridge regression on lags).
//! * [`intervals`]: interval scores (coverage, width, Winkler, pinball) and the
//!   rolling split-conformal baseline.
//! * [`nab`]: the Numenta Anomaly Benchmark's scorer; [`anomaly`]: a NAB
//!   corpus through the learner (`recur backtest --nab`).
//! * [`job`]: `recur backtest` over a file: options, outputs, summary.
//! * [`topic`]: reading a topic's time range (partitions assigned directly, nothing committed).
//! * [`report`]: the self-contained `report.html` with SVG charts.

pub mod anomaly;
pub mod baseline;
pub mod engine;
pub mod intervals;
pub mod job;
pub mod nab;
pub mod report;
pub mod table;
pub mod topic;

/// Why a backtest failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
