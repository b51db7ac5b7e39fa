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
//! Times are epoch milliseconds, UTC; see [`parse_time`] for the accepted
//! spellings. Parquet `Datetime` columns are taken as UTC whatever their zone
//! (their stored instant is UTC), `Date` columns as midnight UTC.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

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
        /// What [`parse_time`] said, naming the value.
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
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(handle)
        .finish()
        .map_err(|source| polars_err(file, source))
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
            .is_some_and(|s| parse_number(s).is_some()),
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

const MS_PER_DAY: i64 = 86_400_000;

/// Epoch numbers at or above this magnitude are milliseconds, below it
/// seconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
const EPOCH_MS_THRESHOLD: f64 = 1e11;

/// Parses one time value as epoch ms (used by load and by the CLI for --from/--to).
///
/// Accepted, all read as UTC unless they carry an offset:
///
/// * ISO 8601 / RFC 3339: `2016-07-01T00:00:00Z`, `2016-07-01T02:00:00+02:00`
///   (also `+0200`, `+02`), fractional seconds (`…:00.250Z`, digits past
///   milliseconds are truncated), seconds optional, `T` or a space between
///   date and time, no zone meaning UTC; so `2016-07-01 00:00:00` too;
/// * a date, `2016-07-01` (midnight UTC);
/// * epoch seconds or milliseconds, integer or decimal: a magnitude of at
///   least 1e11 means milliseconds, below it seconds (so milliseconds before
///   March 1973 would be read as seconds);
/// * US `M/D/YYYY H:MM` or `M/D/YYYY H:MM:SS` (24-hour), or `M/D/YYYY`.
///
/// The error names the value and what was wrong with it.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let b = t.as_bytes();
    let result = if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        parse_iso(b)
    } else if t.contains('/') {
        parse_us(b)
    } else if !t.is_empty()
        && t.bytes()
            .all(|c| c.is_ascii_digit() || c == b'-' || c == b'+')
    {
        match t.parse::<i64>() {
            Ok(v) => epoch_int_to_ms(v),
            Err(_) => Err("not a valid integer".to_owned()),
        }
    } else {
        match t.parse::<f64>() {
            Ok(v) => epoch_float_to_ms(v, t),
            Err(_) => Err(
                "expected ISO 8601 (2016-07-01T00:00:00Z), YYYY-MM-DD HH:MM:SS, \
                 YYYY-MM-DD, epoch seconds or milliseconds, or M/D/YYYY H:MM"
                    .to_owned(),
            ),
        }
    };
    result.map_err(|why| format!("`{s}` is not a time: {why}"))
}

fn epoch_int_to_ms(v: i64) -> Result<i64, String> {
    if v.unsigned_abs() >= EPOCH_MS_THRESHOLD as u64 {
        Ok(v)
    } else {
        Ok(v * 1000)
    }
}

fn epoch_float_to_ms(v: f64, text: &str) -> Result<i64, String> {
    if !v.is_finite() {
        return Err(format!("{text} is not a finite number"));
    }
    let ms = if v.abs() >= EPOCH_MS_THRESHOLD {
        v.round()
    } else {
        (v * 1000.0).round()
    };
    if ms.abs() >= 9.2e18 {
        return Err("out of range".to_owned());
    }
    Ok(ms as i64)
}

/// A cursor over the bytes of a time string.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected `{}` at position {}",
                c as char,
                self.at + 1
            ))
        }
    }

    /// Between `min` and `max` digits as a number.
    fn digits(&mut self, min: usize, max: usize, what: &str) -> Result<i64, String> {
        let start = self.at;
        let mut v = 0i64;
        while self.at - start < max {
            match self.peek() {
                Some(c @ b'0'..=b'9') => {
                    v = v * 10 + i64::from(c - b'0');
                    self.at += 1;
                }
                _ => break,
            }
        }
        if self.at - start < min {
            return Err(format!("expected {what} at position {}", start + 1));
        }
        Ok(v)
    }

    fn done(&self) -> bool {
        self.at == self.b.len()
    }

    fn trailing(&self) -> String {
        format!(
            "unexpected `{}` at position {}",
            String::from_utf8_lossy(&self.b[self.at..]),
            self.at + 1
        )
    }
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]][Z|±HH[:MM]]]`.
fn parse_iso(b: &[u8]) -> Result<i64, String> {
    let mut c = Cursor { b, at: 0 };
    let year = c.digits(4, 4, "a 4-digit year")?;
    c.expect(b'-')?;
    let month = c.digits(2, 2, "a 2-digit month")?;
    c.expect(b'-')?;
    let day = c.digits(2, 2, "a 2-digit day")?;
    let date = days_from_civil(year, month, day)?;
    if c.done() {
        return Ok(date * MS_PER_DAY);
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(c.trailing());
    }
    let hour = c.digits(2, 2, "a 2-digit hour")?;
    c.expect(b':')?;
    let minute = c.digits(2, 2, "2-digit minutes")?;
    let mut second = 0;
    let mut ms = 0;
    if c.eat(b':') {
        second = c.digits(2, 2, "2-digit seconds")?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.at;
            let frac = c.digits(1, usize::MAX, "fractional seconds")?;
            let len = c.at - start;
            ms = if len >= 3 {
                // Leading three digits; the rest is below a millisecond.
                let digits = &b[start..start + 3];
                digits.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0'))
            } else {
                frac * 10i64.pow(3 - len as u32)
            };
        }
    }
    let clock = clock_ms(hour, minute, second)?;
    let offset_min = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.at += 1;
            let h = c.digits(2, 2, "a 2-digit offset hour")?;
            c.eat(b':');
            let m = if c.done() {
                0
            } else {
                c.digits(2, 2, "2-digit offset minutes")?
            };
            if h > 23 || m > 59 {
                return Err(format!("offset {h:02}:{m:02} is out of range"));
            }
            let minutes = h * 60 + m;
            if sign == b'+' { minutes } else { -minutes }
        }
        Some(_) => return Err(c.trailing()),
    };
    if !c.done() {
        return Err(c.trailing());
    }
    Ok(date * MS_PER_DAY + clock + ms - offset_min * 60_000)
}

/// `M/D/YYYY[ H:MM[:SS]]`.
fn parse_us(b: &[u8]) -> Result<i64, String> {
    let mut c = Cursor { b, at: 0 };
    let month = c.digits(1, 2, "a month")?;
    c.expect(b'/')?;
    let day = c.digits(1, 2, "a day")?;
    c.expect(b'/')?;
    let year = c.digits(4, 4, "a 4-digit year")?;
    let date = days_from_civil(year, month, day)?;
    let mut clock = 0;
    if c.eat(b' ') {
        let hour = c.digits(1, 2, "an hour")?;
        c.expect(b':')?;
        let minute = c.digits(2, 2, "2-digit minutes")?;
        let second = if c.eat(b':') {
            c.digits(2, 2, "2-digit seconds")?
        } else {
            0
        };
        clock = clock_ms(hour, minute, second)?;
    }
    if !c.done() {
        return Err(c.trailing());
    }
    Ok(date * MS_PER_DAY + clock)
}

fn clock_ms(hour: i64, minute: i64, second: i64) -> Result<i64, String> {
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    Ok(((hour * 60 + minute) * 60 + second) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), after checking the month and day exist.
fn days_from_civil(year: i64, month: i64, day: i64) -> Result<i64, String> {
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) {
        return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
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

#[cfg(test)]
mod tests {
    use super::*;

    const JULY_1_2016: i64 = 1_467_331_200_000;

    #[test]
    fn iso_forms() {
        assert_eq!(parse_time("2016-07-01T00:00:00Z"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01t00:00:00z"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T00:00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T02:00:00+02:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-06-30T22:30:00-01:30"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T05:30:00+0530"), Ok(JULY_1_2016));
        assert_eq!(parse_time("2016-07-01T03:00:00+03"), Ok(JULY_1_2016));
        assert_eq!(
            parse_time("2016-07-01T00:00:00.250Z"),
            Ok(JULY_1_2016 + 250)
        );
        assert_eq!(parse_time("2016-07-01T00:00:00.5"), Ok(JULY_1_2016 + 500));
        assert_eq!(
            parse_time("2016-07-01T00:00:01.123456789Z"),
            Ok(JULY_1_2016 + 1123)
        );
        assert_eq!(parse_time(" 2016-07-01 00:00:00 "), Ok(JULY_1_2016));
        assert_eq!(
            parse_time("2016-07-01 13:45:10"),
            Ok(JULY_1_2016 + 49_510_000)
        );
        assert_eq!(parse_time("2016-07-01"), Ok(JULY_1_2016));
    }

    #[test]
    fn calendar() {
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_time("2000-03-01"), Ok(951_868_800_000));
        assert_eq!(parse_time("2024-02-29"), Ok(1_709_164_800_000));
        assert!(parse_time("2023-02-29").is_err());
        assert!(parse_time("1900-02-29").is_err());
        assert!(parse_time("2016-13-01").is_err());
        assert!(parse_time("2016-04-31").is_err());
        assert!(parse_time("2016-07-01 24:00:00").is_err());
        assert!(parse_time("2016-07-01 23:60:00").is_err());
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(parse_time("1467331200"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1467331200000"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1467331200.25"), Ok(JULY_1_2016 + 250));
        assert_eq!(parse_time("1467331200000.0"), Ok(JULY_1_2016));
        assert_eq!(parse_time("1.4673312e9"), Ok(JULY_1_2016));
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("-86400"), Ok(-MS_PER_DAY));
        // The boundary: 1e11 and above are milliseconds.
        assert_eq!(parse_time("99999999999"), Ok(99_999_999_999_000));
        assert_eq!(parse_time("100000000000"), Ok(100_000_000_000));
    }

    #[test]
    fn us_forms() {
        assert_eq!(parse_time("7/1/2016 0:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("07/01/2016 00:00:00"), Ok(JULY_1_2016));
        assert_eq!(parse_time("7/1/2016 13:05"), Ok(JULY_1_2016 + 47_100_000));
        assert_eq!(parse_time("12/31/2016 23:59:59"), Ok(1_483_228_799_000));
        assert_eq!(parse_time("7/1/2016"), Ok(JULY_1_2016));
        assert!(parse_time("13/1/2016 0:00").is_err());
        assert!(parse_time("7/1/16 0:00").is_err());
    }

    #[test]
    fn bad_input_names_the_value() {
        for bad in [
            "",
            "yesterday",
            "2016-07-01X00:00:00",
            "2016-07-01T00:00:00Q",
            "2016-7-1",
            "2016-07-01T00:00:00+25:00",
            "7/1/2016 0:00 PM",
            "NaN",
            "inf",
            "12:00",
            "1-2",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad:?}: {err}");
        }
    }
}
