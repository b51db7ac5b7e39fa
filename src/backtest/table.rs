//! Reading history files into per-stream rows, and writing `predictions.parquet`.
//!
//! Two layouts are read, from CSV (`.csv`) or Parquet (`.parquet`, `.pq`):
//!
//! * **wide**: a time column plus value columns, one stream named after the
//!   file stem (`ETTh1.csv` is stream `ETTh1`);
//! * **long**: a column literally named `stream`, a time column and value
//!   columns, many streams interleaved. Streams are listed in order of first
//!   appearance and each keeps its rows in file order.
//!
//! CSV cells are all read as text and parsed here, not by polars' type
//! inference, so that a bad cell anywhere in the file is reported with its
//! column, row and text instead of silently turning a column into strings (or,
//! past the inference window, failing without saying where). Rows in error
//! messages are 1-based data rows: the header is not counted.
//!
//! A value must be a finite number: an empty cell, a null, text or NaN/inf
//! stops the load. Nothing is dropped or filled in.
//!
//! Times are epoch milliseconds, UTC; see [`crate::time::parse_time`] for the accepted
//! spellings. Parquet `Datetime` columns are taken as UTC whatever their zone
//! (their stored instant is UTC), `Date` columns as midnight UTC.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use crate::time::{MS_PER_DAY, epoch_float_to_ms, epoch_int_to_ms, parse_time};

use polars::prelude::{
    Column, CsvReadOptions, DataFrame, DataType, Int64Chunked, IntoColumn, IntoSeries,
    ParquetReader, ParquetWriter, PolarsError, SerReader, Series, TimeUnit, TimeZone,
};

/// The name of the column that marks a long-format file.
pub const STREAM_COLUMN: &str = "stream";

/// Which column holds time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeColumn {
    /// The column with this name.
    Named(String),
    /// No time column: the row index within the file (from 0) is the time.
    RowIndex,
}

/// How to read a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which column holds time (the CLI's `--time-column NAME` or `none`).
    pub time_column: TimeColumn,
    /// Value columns to keep, in this order; `None` keeps every numeric column
    /// except the time and stream columns, in file order.
    pub columns: Option<Vec<String>>,
}

/// One stream's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRows {
    /// The stream key (the file stem for a wide file).
    pub stream: String,
    /// Event time as epoch milliseconds (UTC); with [`TimeColumn::RowIndex`],
    /// the row's index within the whole file (from 0).
    pub ts_ms: Vec<i64>,
    /// Row-major values: `ts_ms.len()` rows of `Table::columns.len()` values.
    pub values: Vec<f64>,
}

/// A loaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The value columns, in the order of each row's values.
    pub columns: Vec<String>,
    /// The streams, in order of first appearance in the file.
    pub streams: Vec<StreamRows>,
    /// Total rows over all streams.
    pub rows: usize,
}

/// Why a file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Opening or creating the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// polars could not read or write the file (malformed CSV or Parquet).
    #[error("{path}: {source}")]
    Polars {
        /// The file.
        path: String,
        /// The cause.
        source: PolarsError,
    },
    /// The extension names no format this module reads.
    #[error("{path}: unsupported file type `{ext}` (expected .csv, .parquet or .pq)")]
    UnsupportedExtension {
        /// The file.
        path: String,
        /// The extension, empty when there is none.
        ext: String,
    },
    /// A requested column (time or value) is not in the file.
    #[error("{path}: no column `{column}` (available: {})", .available.join(", "))]
    MissingColumn {
        /// The file.
        path: String,
        /// The column asked for.
        column: String,
        /// The file's columns.
        available: Vec<String>,
    },
    /// A requested value column is the time or the stream column.
    #[error("{path}: column `{column}` is the {role} column and cannot also be a value column")]
    ReservedColumn {
        /// The file.
        path: String,
        /// The column asked for.
        column: String,
        /// `time` or `stream`.
        role: &'static str,
    },
    /// The file has no header row.
    #[error("{path}: the file is empty (expected a header row, then one row per time step)")]
    Empty {
        /// The file.
        path: String,
    },
    /// Two columns share a name.
    #[error("{path}: column `{column}` appears more than once in the header")]
    DuplicateColumn {
        /// The file.
        path: String,
        /// The repeated name.
        column: String,
    },
    /// No column holds numbers (with no explicit column list).
    #[error("{path}: no numeric value columns (columns: {})", .available.join(", "))]
    NoValueColumns {
        /// The file.
        path: String,
        /// The file's columns.
        available: Vec<String>,
    },
    /// A column's type cannot hold what it is used for.
    #[error("{path}: column `{column}` has type {dtype}, expected {expected}")]
    ColumnType {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// Its polars type.
        dtype: String,
        /// What the column was to hold.
        expected: &'static str,
    },
    /// A cell is empty or null.
    #[error("{path}: column `{column}`, row {row}: missing value")]
    Missing {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// 1-based data row (the header is not counted).
        row: usize,
    },
    /// A value cell is not a finite number.
    #[error("{path}: column `{column}`, row {row}: `{value}` is not a finite number")]
    BadValue {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// 1-based data row (the header is not counted).
        row: usize,
        /// The cell as read.
        value: String,
    },
    /// A time cell could not be parsed.
    #[error("{path}: column `{column}`, row {row}: {reason}")]
    BadTime {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// 1-based data row (the header is not counted).
        row: usize,
        /// What [`crate::time::parse_time`] said, naming the value.
        reason: String,
    },
}

/// Loads `path` (format by extension: .csv, .parquet/.pq; anything else is an error naming the extension).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Table, TableError> {
    let file = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let df = match ext.as_str() {
        "csv" => read_csv(path, &file)?,
        "parquet" | "pq" => read_parquet(path, &file)?,
        _ => return Err(TableError::UnsupportedExtension { path: file, ext }),
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    from_frame(&df, &file, &stem, opts)
}

/// Every CSV cell as text: parsing happens in [`from_frame`], where a bad cell
/// can be reported by column and row.
fn read_csv(path: &Path, file: &str) -> Result<DataFrame, TableError> {
    let handle = open(path, file)?;
    if handle.metadata().is_ok_and(|m| m.len() == 0) {
        return Err(TableError::Empty {
            path: file.to_owned(),
        });
    }
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(handle)
        .finish()
        .map_err(|source| match source {
            PolarsError::NoData(_) => TableError::Empty {
                path: file.to_owned(),
            },
            source => polars_err(file, source),
        })?;
    // polars renames a repeated header name to `<name>_duplicated_<k>`.
    let names: Vec<&str> = df.get_column_names().iter().map(|n| n.as_str()).collect();
    for name in &names {
        if let Some((base, k)) = name.rsplit_once("_duplicated_")
            && k.parse::<u32>().is_ok()
            && names.contains(&base)
        {
            return Err(TableError::DuplicateColumn {
                path: file.to_owned(),
                column: base.to_owned(),
            });
        }
    }
    Ok(df)
}

fn read_parquet(path: &Path, file: &str) -> Result<DataFrame, TableError> {
    ParquetReader::new(open(path, file)?)
        .finish()
        .map_err(|source| polars_err(file, source))
}

fn open(path: &Path, file: &str) -> Result<File, TableError> {
    File::open(path).map_err(|source| TableError::Io {
        path: file.to_owned(),
        source,
    })
}

fn polars_err(file: &str, source: PolarsError) -> TableError {
    TableError::Polars {
        path: file.to_owned(),
        source,
    }
}

/// Splits a read frame into streams of numeric rows.
fn from_frame(
    df: &DataFrame,
    file: &str,
    stem: &str,
    opts: &LoadOptions,
) -> Result<Table, TableError> {
    let available: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let column = |name: &str| -> Result<&Column, TableError> {
        df.column(name).map_err(|_| TableError::MissingColumn {
            path: file.to_owned(),
            column: name.to_owned(),
            available: available.clone(),
        })
    };
    let n = df.height();

    let time_name = match &opts.time_column {
        TimeColumn::Named(name) => Some(name.as_str()),
        TimeColumn::RowIndex => None,
    };
    let ts_ms: Vec<i64> = match time_name {
        Some(name) => time_values(column(name)?, file)?,
        None => (0..n as i64).collect(),
    };
    let stream_col = available
        .iter()
        .any(|c| c == STREAM_COLUMN)
        .then(|| column(STREAM_COLUMN))
        .transpose()?;

    let reserved = |name: &str| -> Option<&'static str> {
        if Some(name) == time_name {
            Some("time")
        } else if stream_col.is_some() && name == STREAM_COLUMN {
            Some("stream")
        } else {
            None
        }
    };
    let names: Vec<String> = match &opts.columns {
        Some(wanted) => {
            for name in wanted {
                column(name)?;
                if let Some(role) = reserved(name) {
                    return Err(TableError::ReservedColumn {
                        path: file.to_owned(),
                        column: name.clone(),
                        role,
                    });
                }
            }
            wanted.clone()
        }
        None => df
            .columns()
            .iter()
            .filter(|c| reserved(c.name()).is_none() && looks_numeric(c))
            .map(|c| c.name().to_string())
            .collect(),
    };
    if names.is_empty() {
        return Err(TableError::NoValueColumns {
            path: file.to_owned(),
            available,
        });
    }
    let values = names
        .iter()
        .map(|name| number_values(column(name)?, file))
        .collect::<Result<Vec<_>, _>>()?;

    let width = names.len();
    let mut streams: Vec<StreamRows> = Vec::new();
    let push = |s: &mut StreamRows, i: usize| {
        s.ts_ms.push(ts_ms[i]);
        s.values.extend(values.iter().map(|col| col[i]));
    };
    match stream_col {
        None => {
            let mut s = StreamRows {
                stream: stem.to_owned(),
                ts_ms: Vec::with_capacity(n),
                values: Vec::with_capacity(n * width),
            };
            (0..n).for_each(|i| push(&mut s, i));
            streams.push(s);
        }
        Some(col) => {
            let keys = stream_keys(col, file)?;
            let mut index: HashMap<&str, usize> = HashMap::new();
            for (i, key) in keys.iter().enumerate() {
                let at = *index.entry(key.as_str()).or_insert_with(|| {
                    streams.push(StreamRows {
                        stream: key.clone(),
                        ts_ms: Vec::new(),
                        values: Vec::new(),
                    });
                    streams.len() - 1
                });
                push(&mut streams[at], i);
            }
        }
    }
    Ok(Table {
        columns: names,
        streams,
        rows: n,
    })
}

/// Whether a column is a value column when none were named: a numeric type,
/// or text whose first non-empty cell is a finite number (a CSV column of
/// numbers; a later bad cell is then reported, not used to skip the column).
fn looks_numeric(col: &Column) -> bool {
    let dtype = col.dtype();
    if dtype.is_primitive_numeric() || dtype.is_decimal() {
        return true;
    }
    match col.as_materialized_series().str() {
        Ok(ca) => ca
            .iter()
            .flatten()
            .map(str::trim)
            .find(|s| !s.is_empty())
            // Any number, NaN and infinities too: a column that holds one
            // is a value column, and its non-finite cells are named there.
            .is_some_and(|s| s.parse::<f64>().is_ok()),
        Err(_) => false,
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A value column as finite f64s, one per row.
fn number_values(col: &Column, file: &str) -> Result<Vec<f64>, TableError> {
    let name = col.name().to_string();
    let missing = |i: usize| TableError::Missing {
        path: file.to_owned(),
        column: name.clone(),
        row: i + 1,
    };
    let bad = |i: usize, value: String| TableError::BadValue {
        path: file.to_owned(),
        column: name.clone(),
        row: i + 1,
        value,
    };
    let series = col.as_materialized_series();
    let dtype = series.dtype();
    if let Ok(ca) = series.str() {
        return ca
            .iter()
            .enumerate()
            .map(|(i, cell)| match cell.map(str::trim) {
                None | Some("") => Err(missing(i)),
                Some(s) => parse_number(s).ok_or_else(|| bad(i, s.to_owned())),
            })
            .collect();
    }
    if !(dtype.is_primitive_numeric() || dtype.is_decimal()) {
        return Err(TableError::ColumnType {
            path: file.to_owned(),
            column: name.clone(),
            dtype: dtype.to_string(),
            expected: "numbers",
        });
    }
    let cast = series
        .cast(&DataType::Float64)
        .map_err(|source| polars_err(file, source))?;
    let ca = cast.f64().map_err(|source| polars_err(file, source))?;
    ca.iter()
        .enumerate()
        .map(|(i, cell)| match cell {
            None => Err(missing(i)),
            Some(v) if v.is_finite() => Ok(v),
            Some(v) => Err(bad(i, v.to_string())),
        })
        .collect()
}

/// The time column as epoch milliseconds, one per row.
fn time_values(col: &Column, file: &str) -> Result<Vec<i64>, TableError> {
    let name = col.name().to_string();
    let missing = |i: usize| TableError::Missing {
        path: file.to_owned(),
        column: name.clone(),
        row: i + 1,
    };
    let bad = |i: usize, reason: String| TableError::BadTime {
        path: file.to_owned(),
        column: name.clone(),
        row: i + 1,
        reason,
    };
    let series = col.as_materialized_series();
    let physical = |ty: DataType| -> Result<Series, TableError> {
        series
            .to_physical_repr()
            .cast(&ty)
            .map_err(|source| polars_err(file, source))
    };
    let ints = |s: &Series, to_ms: &dyn Fn(i64) -> Result<i64, String>| {
        let ca = s.i64().map_err(|source| polars_err(file, source))?;
        ca.iter()
            .enumerate()
            .map(|(i, cell)| match cell {
                None => Err(missing(i)),
                Some(v) => to_ms(v).map_err(|reason| bad(i, reason)),
            })
            .collect::<Result<Vec<i64>, TableError>>()
    };
    match series.dtype() {
        DataType::String => {
            let ca = series.str().map_err(|source| polars_err(file, source))?;
            ca.iter()
                .enumerate()
                .map(|(i, cell)| match cell.map(str::trim) {
                    None | Some("") => Err(missing(i)),
                    Some(s) => parse_time(s).map_err(|reason| bad(i, reason)),
                })
                .collect()
        }
        DataType::Datetime(unit, _) => {
            let per_ms: i64 = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            ints(&physical(DataType::Int64)?, &|v| Ok(v.div_euclid(per_ms)))
        }
        DataType::Date => ints(&physical(DataType::Int64)?, &|days| {
            days.checked_mul(MS_PER_DAY)
                .ok_or_else(|| format!("date {days} days from 1970 is out of range"))
        }),
        dt if dt.is_integer() => ints(&physical(DataType::Int64)?, &epoch_int_to_ms),
        dt if dt.is_float() => {
            let cast = physical(DataType::Float64)?;
            let ca = cast.f64().map_err(|source| polars_err(file, source))?;
            ca.iter()
                .enumerate()
                .map(|(i, cell)| match cell {
                    None => Err(missing(i)),
                    Some(v) => epoch_float_to_ms(v, &v.to_string()).map_err(|r| bad(i, r)),
                })
                .collect()
        }
        dt => Err(TableError::ColumnType {
            path: file.to_owned(),
            column: name.clone(),
            dtype: dt.to_string(),
            expected: "times",
        }),
    }
}

/// The stream key of every row (numbers are keyed by their text).
fn stream_keys(col: &Column, file: &str) -> Result<Vec<String>, TableError> {
    let text = col
        .as_materialized_series()
        .cast(&DataType::String)
        .map_err(|source| polars_err(file, source))?;
    let ca = text.str().map_err(|source| polars_err(file, source))?;
    ca.iter()
        .enumerate()
        .map(|(i, cell)| match cell {
            Some(key) if !key.is_empty() => Ok(key.to_owned()),
            _ => Err(TableError::Missing {
                path: file.to_owned(),
                column: STREAM_COLUMN.to_owned(),
                row: i + 1,
            }),
        })
        .collect()
}

/// One forecast component, one row of predictions.parquet.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    /// Row (in replay order) of the event this value forecasts.
    pub row: u64,
    /// That event's time (epoch ms, UTC).
    pub ts_ms: i64,
    /// The stream key.
    pub stream: String,
    /// Steps ahead, from 1 to the horizon.
    pub step: u32,
    /// The target column forecast.
    pub target: String,
    /// The forecast value, in original units.
    pub forecast: f64,
    /// The value that arrived.
    pub actual: f64,
}

/// Writes predictions.parquet with columns row (u64), ts (datetime ms, UTC), stream (str), step (u32), target (str), forecast (f64), actual (f64).
pub fn write_predictions(path: &Path, rows: &[PredictionRow]) -> Result<(), TableError> {
    write_predictions_with(path, rows, Vec::new())
}

/// [`write_predictions`] with more f64 columns after `actual` (e.g. the
/// baselines' forecasts), each `(name, one value per row)`; a column of
/// another length is an error.
pub fn write_predictions_with(
    path: &Path,
    rows: &[PredictionRow],
    extra: Vec<(&str, Vec<f64>)>,
) -> Result<(), TableError> {
    let file = path.display().to_string();
    let ts = Int64Chunked::from_vec("ts".into(), rows.iter().map(|r| r.ts_ms).collect())
        .into_datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))
        .into_series();
    let columns = vec![
        Column::new("row".into(), rows.iter().map(|r| r.row).collect::<Vec<_>>()),
        ts.into_column(),
        Column::new(
            "stream".into(),
            rows.iter().map(|r| r.stream.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "step".into(),
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        ),
        Column::new(
            "target".into(),
            rows.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "forecast".into(),
            rows.iter().map(|r| r.forecast).collect::<Vec<_>>(),
        ),
        Column::new(
            "actual".into(),
            rows.iter().map(|r| r.actual).collect::<Vec<_>>(),
        ),
    ];
    let columns = columns
        .into_iter()
        .chain(
            extra
                .into_iter()
                .map(|(name, values)| Column::new(name.into(), values)),
        )
        .collect();
    let mut df = DataFrame::new(rows.len(), columns).map_err(|source| polars_err(&file, source))?;
    let out = File::create(path).map_err(|source| TableError::Io {
        path: file.clone(),
        source,
    })?;
    ParquetWriter::new(out)
        .finish(&mut df)
        .map_err(|source| polars_err(&file, source))?;
    Ok(())
}
