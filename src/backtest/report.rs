//! The self-contained HTML report of a backtest (being written).
