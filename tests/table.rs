//! Loading history files (wide and long CSV, Parquet) and writing
//! `predictions.parquet`, against the real ETTh1 data.
//!
//! ETTh1 is read from `../shared/data/` (or `$RECUR_SHARED_DIR/data`); the
//! derived files are written to a temporary directory, never to the repository.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::{
    Column, DataFrame, DataType, Int64Chunked, IntoColumn, IntoSeries, ParquetReader,
    ParquetWriter, SerReader, TimeUnit, TimeZone,
};
use recur::backtest::table::{
    LoadOptions, PredictionRow, Table, TableError, TimeColumn, load, write_predictions,
    write_predictions_with,
};
use recur::time::parse_time;

const ROWS: usize = 17_420;
const COLUMNS: [&str; 7] = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"];
const HOUR_MS: i64 = 3_600_000;

fn etth1() -> PathBuf {
    match std::env::var_os("RECUR_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir).join("data/ETTh1.csv"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ETTh1.csv"),
    }
}

/// A fresh directory for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("recur-table-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn named(time: &str) -> LoadOptions {
    LoadOptions {
        time_column: TimeColumn::Named(time.to_owned()),
        columns: None,
    }
}

fn load_etth1() -> Table {
    load(&etth1(), &named("date")).unwrap()
}

/// The CSV's data lines split into cells, straight from the text.
fn etth1_cells() -> Vec<Vec<String>> {
    fs::read_to_string(etth1())
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn wide_csv() {
    let table = load_etth1();
    assert_eq!(table.rows, ROWS);
    assert_eq!(table.columns, COLUMNS);
    assert_eq!(table.streams.len(), 1);
    let s = &table.streams[0];
    assert_eq!(s.stream, "ETTh1");
    assert_eq!(s.ts_ms.len(), ROWS);
    assert_eq!(s.values.len(), ROWS * COLUMNS.len());
    // 2016-07-01T00:00:00Z.
    assert_eq!(s.ts_ms[0], 1_467_331_200_000);
    assert!(s.ts_ms.windows(2).all(|w| w[1] - w[0] == HOUR_MS));

    let cells = etth1_cells();
    assert_eq!(cells.len(), ROWS);
    for row in [0, 1, ROWS / 2, ROWS - 1] {
        let expected: Vec<f64> = cells[row][1..].iter().map(|c| c.parse().unwrap()).collect();
        assert_eq!(
            &s.values[row * 7..(row + 1) * 7],
            &expected[..],
            "row {row}"
        );
    }
    assert_eq!(s.values[0], 5.827000141143799);
}

#[test]
fn long_csv_matches_wide() {
    let wide = load_etth1();
    let w = &wide.streams[0];
    let cells = etth1_cells();
    // Two streams interleaved: `b` is rows 0..300, `a` rows 300..600, so `b`
    // appears first; times as RFC 3339 in `a` and epoch seconds in `b`.
    let n = 300;
    let mut text = format!("stream,ts,{}\n", COLUMNS.join(","));
    for i in 0..n {
        let b = &cells[i];
        let a = &cells[n + i];
        let a_ts = a[0].replace(' ', "T") + "Z";
        let b_ts = w.ts_ms[i] / 1000;
        writeln!(text, "b,{b_ts},{}", b[1..].join(",")).unwrap();
        writeln!(text, "a,{a_ts},{}", a[1..].join(",")).unwrap();
    }
    let dir = TempDir::new("long");
    let path = dir.write("long.csv", &text);
    let table = load(&path, &named("ts")).unwrap();
    assert_eq!(table.rows, 2 * n);
    assert_eq!(table.columns, COLUMNS);
    let names: Vec<&str> = table.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    let (b, a) = (&table.streams[0], &table.streams[1]);
    assert_eq!(b.ts_ms, w.ts_ms[..n]);
    assert_eq!(b.values, w.values[..n * 7]);
    assert_eq!(a.ts_ms, w.ts_ms[n..2 * n]);
    assert_eq!(a.values, w.values[n * 7..2 * n * 7]);

    // Row index time counts rows of the whole file.
    let by_row = load(
        &path,
        &LoadOptions {
            time_column: TimeColumn::RowIndex,
            columns: Some(vec!["OT".into()]),
        },
    )
    .unwrap();
    assert_eq!(by_row.streams[0].ts_ms[..3], [0, 2, 4]);
    assert_eq!(by_row.streams[1].ts_ms[..3], [1, 3, 5]);
}

/// Writes `wide`'s rows as Parquet with a `Datetime(ms)` time column.
fn write_parquet(path: &Path, wide: &Table, unit: TimeUnit) {
    let s = &wide.streams[0];
    let scale = match unit {
        TimeUnit::Milliseconds => 1,
        TimeUnit::Microseconds => 1_000,
        TimeUnit::Nanoseconds => 1_000_000,
    };
    let ts = Int64Chunked::from_vec("date".into(), s.ts_ms.iter().map(|t| t * scale).collect())
        .into_datetime(unit, Some(TimeZone::UTC))
        .into_series()
        .into_column();
    let mut columns = vec![ts];
    for (j, name) in wide.columns.iter().enumerate() {
        let v: Vec<f64> = s.values.iter().skip(j).step_by(7).copied().collect();
        columns.push(Column::new(name.as_str().into(), v));
    }
    let mut df = DataFrame::new(s.ts_ms.len(), columns).unwrap();
    ParquetWriter::new(fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

#[test]
fn parquet_matches_csv() {
    let wide = load_etth1();
    let dir = TempDir::new("parquet");
    for (name, unit) in [
        ("ETTh1.parquet", TimeUnit::Milliseconds),
        ("ETTh1.pq", TimeUnit::Nanoseconds),
    ] {
        let path = dir.0.join(name);
        write_parquet(&path, &wide, unit);
        let table = load(&path, &named("date")).unwrap();
        assert_eq!(table, wide, "{name}");
    }
}

#[test]
fn column_selection_keeps_the_order_asked() {
    let wide = load_etth1();
    let picked = load(
        &etth1(),
        &LoadOptions {
            time_column: TimeColumn::Named("date".into()),
            columns: Some(vec!["OT".into(), "HUFL".into()]),
        },
    )
    .unwrap();
    assert_eq!(picked.columns, ["OT", "HUFL"]);
    let (w, p) = (&wide.streams[0], &picked.streams[0]);
    assert_eq!(p.ts_ms, w.ts_ms);
    for row in 0..ROWS {
        assert_eq!(p.values[row * 2], w.values[row * 7 + 6]);
        assert_eq!(p.values[row * 2 + 1], w.values[row * 7]);
    }
}

#[test]
fn row_index_time_skips_text_columns() {
    let table = load(
        &etth1(),
        &LoadOptions {
            time_column: TimeColumn::RowIndex,
            columns: None,
        },
    )
    .unwrap();
    // `date` does not hold numbers, so it is not a value column.
    assert_eq!(table.columns, COLUMNS);
    let s = &table.streams[0];
    assert_eq!(s.ts_ms, (0..ROWS as i64).collect::<Vec<_>>());
    assert_eq!(s.values, load_etth1().streams[0].values);
}

#[test]
fn bad_cells_are_named() {
    let dir = TempDir::new("bad");
    let path = dir.write(
        "bad.csv",
        "t,a,b\n2020-01-01,1,2\n2020-01-02,3,4\n2020-01-03,5,oops\n",
    );
    let err = load(&path, &named("t")).unwrap_err();
    assert!(
        matches!(&err, TableError::BadValue { column, row: 3, value, .. } if column == "b" && value == "oops"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bad.csv")
            && msg.contains("`b`")
            && msg.contains("row 3")
            && msg.contains("oops"),
        "{msg}"
    );

    let path = dir.write("empty.csv", "t,a,b\n2020-01-01,1,2\n2020-01-02,,4\n");
    let err = load(&path, &named("t")).unwrap_err();
    assert!(
        matches!(&err, TableError::Missing { column, row: 2, .. } if column == "a"),
        "{err:?}"
    );

    let path = dir.write("time.csv", "t,a\n2020-01-01,1\n2020-13-01,2\n");
    let err = load(&path, &named("t")).unwrap_err();
    assert!(
        matches!(&err, TableError::BadTime { row: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`2020-13-01`"), "{err}");
}

/// A value column whose first value is not finite is still a value
/// column: the bad cell is named, not the column silently left out.
#[test]
fn a_column_starting_with_a_non_finite_value_is_named_not_dropped() {
    let dir = TempDir::new("nan-first");
    let path = dir.write(
        "nan.csv",
        "t,a,b\n2020-01-01,1,NaN\n2020-01-02,3,4\n2020-01-03,5,6\n",
    );
    let err = load(&path, &named("t")).unwrap_err();
    assert!(
        matches!(&err, TableError::BadValue { column, row: 1, value, .. } if column == "b" && value == "NaN"),
        "{err:?}"
    );
    let path = dir.write("inf.csv", "t,a\n2020-01-01,inf\n2020-01-02,3\n");
    let err = load(&path, &named("t")).unwrap_err();
    assert!(
        matches!(&err, TableError::BadValue { column, row: 1, .. } if column == "a"),
        "{err:?}"
    );
}

/// Two columns of one name are ambiguous: refused, naming the column
/// (not renamed behind the user's back).
#[test]
fn a_repeated_column_name_is_refused() {
    let dir = TempDir::new("dup");
    let path = dir.write("dup.csv", "t,a,a\n2020-01-01,1,2\n2020-01-02,3,4\n");
    let err = load(&path, &named("t")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, TableError::DuplicateColumn { column, .. } if column == "a"),
        "{err:?}"
    );
    assert!(msg.contains("dup.csv") && msg.contains("`a`"), "{msg}");
}

/// An empty file says so once, plainly.
#[test]
fn an_empty_file_says_it_is_empty() {
    let dir = TempDir::new("empty-file");
    let path = dir.write("nothing.csv", "");
    let err = load(&path, &named("t")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, TableError::Empty { .. }), "{err:?}");
    assert!(
        msg.contains("nothing.csv") && msg.contains("empty"),
        "{msg}"
    );
}

#[test]
fn missing_columns_are_named() {
    let err = load(
        &etth1(),
        &LoadOptions {
            time_column: TimeColumn::Named("date".into()),
            columns: Some(vec!["OT".into(), "nope".into()]),
        },
    )
    .unwrap_err();
    assert!(matches!(&err, TableError::MissingColumn { column, .. } if column == "nope"));
    let msg = err.to_string();
    assert!(
        msg.contains("`nope`") && msg.contains("date, HUFL, HULL"),
        "{msg}"
    );

    let err = load(&etth1(), &named("time")).unwrap_err();
    assert!(matches!(&err, TableError::MissingColumn { column, .. } if column == "time"));

    let err = load(
        &etth1(),
        &LoadOptions {
            time_column: TimeColumn::Named("date".into()),
            columns: Some(vec!["date".into()]),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, TableError::ReservedColumn { role: "time", .. }),
        "{err:?}"
    );

    let err = load(Path::new("history.txt"), &named("date")).unwrap_err();
    assert!(err.to_string().contains("`txt`"), "{err}");
}

/// A predictions file and its column names, in order.
fn read_predictions(path: &Path) -> (DataFrame, Vec<String>) {
    let df = ParquetReader::new(fs::File::open(path).unwrap())
        .finish()
        .unwrap();
    let names = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    (df, names)
}

#[test]
fn predictions_round_trip() {
    let rows: Vec<PredictionRow> = (0..50u64)
        .flat_map(|i| {
            (1..=2u32).map(move |step| PredictionRow {
                row: i,
                ts_ms: 1_467_331_200_000 + i as i64 * HOUR_MS,
                stream: format!("s{}", i % 3),
                step,
                target: if step == 1 {
                    "OT".into()
                } else {
                    "HUFL".into()
                },
                forecast: i as f64 * 0.5 - 3.25,
                actual: if i == 49 { f64::NAN } else { i as f64 / 7.0 },
            })
        })
        .collect();
    let dir = TempDir::new("predictions");
    let path = dir.0.join("predictions.parquet");
    write_predictions(&path, &rows).unwrap();

    let (df, names) = read_predictions(&path);
    assert_eq!(
        names,
        [
            "row", "ts", "stream", "step", "target", "forecast", "actual"
        ]
    );
    let dtype = |name: &str| df.column(name).unwrap().dtype().clone();
    assert_eq!(dtype("row"), DataType::UInt64);
    assert_eq!(
        dtype("ts"),
        DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))
    );
    assert_eq!(dtype("stream"), DataType::String);
    assert_eq!(dtype("step"), DataType::UInt32);
    assert_eq!(dtype("target"), DataType::String);
    assert_eq!(dtype("forecast"), DataType::Float64);
    assert_eq!(dtype("actual"), DataType::Float64);

    let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
    let row: Vec<u64> = col("row").u64().unwrap().into_no_null_iter().collect();
    let ts = col("ts").to_physical_repr().into_owned();
    let ts: Vec<i64> = ts.i64().unwrap().into_no_null_iter().collect();
    let stream = col("stream");
    let stream: Vec<&str> = stream.str().unwrap().iter().map(Option::unwrap).collect();
    let step: Vec<u32> = col("step").u32().unwrap().into_no_null_iter().collect();
    let target = col("target");
    let target: Vec<&str> = target.str().unwrap().iter().map(Option::unwrap).collect();
    let forecast: Vec<f64> = col("forecast").f64().unwrap().into_no_null_iter().collect();
    let actual: Vec<f64> = col("actual").f64().unwrap().into_no_null_iter().collect();
    assert_eq!(row.len(), rows.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(row[i], r.row);
        assert_eq!(ts[i], r.ts_ms);
        assert_eq!(stream[i], r.stream);
        assert_eq!(step[i], r.step);
        assert_eq!(target[i], r.target);
        assert_eq!(forecast[i].to_bits(), r.forecast.to_bits());
        assert_eq!(actual[i].to_bits(), r.actual.to_bits());
    }
    // The CLI's --from/--to go through the same parser.
    assert_eq!(parse_time("2016-07-01T01:00:00Z"), Ok(ts[2]));
}

#[test]
fn baseline_columns_follow_actual() {
    let rows: Vec<PredictionRow> = (0..20u64)
        .map(|i| PredictionRow {
            row: i,
            ts_ms: i as i64 * HOUR_MS,
            stream: "s".into(),
            step: 1,
            target: "OT".into(),
            forecast: i as f64,
            actual: i as f64 + 0.5,
        })
        .collect();
    let naive: Vec<f64> = (0..20).map(|i| i as f64 - 1.0).collect();
    let linear: Vec<f64> = (0..20).map(|i| i as f64 * 0.25).collect();
    let dir = TempDir::new("baselines");
    let path = dir.0.join("predictions.parquet");
    write_predictions_with(
        &path,
        &rows,
        vec![("naive", naive.clone()), ("linear", linear.clone())],
    )
    .unwrap();
    let (df, names) = read_predictions(&path);
    assert_eq!(
        names,
        [
            "row", "ts", "stream", "step", "target", "forecast", "actual", "naive", "linear"
        ]
    );
    let col = |name: &str| -> Vec<f64> {
        df.column(name)
            .unwrap()
            .as_materialized_series()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    };
    assert_eq!(col("naive"), naive);
    assert_eq!(col("linear"), linear);

    // A column of another length is refused.
    let short = write_predictions_with(&path, &rows, vec![("linear", vec![0.0; 3])]);
    assert!(short.is_err());
}
