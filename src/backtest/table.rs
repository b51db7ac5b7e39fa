//! Reading history files into per-stream rows (being written).
