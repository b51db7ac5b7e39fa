//! Per-partition Arrow windows: decoded events gathered into record batches,
//! flushed on size or time.
//!
//! # The window schema
//!
//! One row per event, in the order the partition delivered them:
//!
//! | column | Arrow type | nullable | holds |
//! |---|---|---|---|
//! | `stream` | `Utf8` | no | the stream id |
//! | `event_time` | `Timestamp(Millisecond, "UTC")` | no | the event time |
//! | `values` | `FixedSizeList<Float64>(width)` (items named `item`, not nullable) | no | the event's values |
//! | `partition` | `Int32` | no | the Kafka partition (the same on every row) |
//! | `offset` | `Int64` | no | the Kafka offset of the event's message |
//!
//! # Flushing
//!
//! A [`Windower`] holds one partition's open window. It is flushed when it
//! reaches `max_events` events, or once `linger` has passed since its first
//! event: [`Windower::deadline`] says when, [`Windower::poll`] flushes at or
//! after that instant, and an event pushed after the deadline flushes the
//! window it joins. [`Windower::flush`] empties it on shutdown or revoke.
//! Time is always passed in, so the windower is a pure state machine.
//!
//! [`WindowRows`] reads a window back without copying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    ArrayBuilder, FixedSizeListBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use thiserror::Error;

use crate::stage::decode::Event;

/// The timezone of the `event_time` column.
pub const TIMEZONE: &str = "UTC";

/// The longest linger honoured: a day is already far beyond any sensible one.
pub const MAX_LINGER: Duration = Duration::from_secs(86_400);

/// Rows allocated up front per window at most, so a huge `max_events` does not reserve memory it may never use.
const MAX_PREALLOCATED_ROWS: usize = 8192;

/// The window schema: stream `Utf8`, event_time `Timestamp(Millisecond, "UTC")`, values `FixedSizeList<Float64>(width)`, partition `Int32`, offset `Int64`.
///
/// # Panics
///
/// If `width` exceeds `i32::MAX`, Arrow's limit for a fixed-size list.
pub fn schema(width: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into())),
            false,
        ),
        Field::new(
            "values",
            DataType::FixedSizeList(item_field(), list_len(width)),
            false,
        ),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float64, false))
}

fn list_len(width: usize) -> i32 {
    match i32::try_from(width) {
        Ok(w) => w,
        Err(_) => panic!("window width {width} exceeds Arrow's fixed-size list limit"),
    }
}

/// Gathers one partition's decoded events into Arrow record batches, flushed on size or time.
pub struct Windower {
    schema: SchemaRef,
    stream: StringBuilder,
    event_time: TimestampMillisecondBuilder,
    values: FixedSizeListBuilder<Float64Builder>,
    partition_col: Int32Builder,
    offset: Int64Builder,
    partition: i32,
    width: usize,
    max_events: usize,
    linger: Duration,
    /// When the open window's first event arrived; `None` when nothing is open.
    opened_at: Option<Instant>,
}

impl std::fmt::Debug for Windower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windower")
            .field("partition", &self.partition)
            .field("width", &self.width)
            .field("max_events", &self.max_events)
            .field("linger", &self.linger)
            .field("len", &self.len())
            .field("opened_at", &self.opened_at)
            .finish()
    }
}

impl Windower {
    /// A windower for `partition`'s events of `width` values; a `max_events` of 0 is taken as 1, a `linger` over [`MAX_LINGER`] as that.
    ///
    /// # Panics
    ///
    /// If `width` exceeds `i32::MAX`, as [`schema`].
    pub fn new(partition: i32, width: usize, max_events: usize, linger: Duration) -> Self {
        let max_events = max_events.max(1);
        // Keeps `opened_at + linger` far from `Instant`'s overflow.
        let linger = linger.min(MAX_LINGER);
        let rows = max_events.min(MAX_PREALLOCATED_ROWS);
        Windower {
            schema: schema(width),
            stream: StringBuilder::with_capacity(rows, rows * 16),
            event_time: TimestampMillisecondBuilder::with_capacity(rows).with_timezone(TIMEZONE),
            values: FixedSizeListBuilder::with_capacity(
                Float64Builder::with_capacity(rows * width),
                list_len(width),
                rows,
            )
            .with_field(item_field()),
            partition_col: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            partition,
            width,
            max_events,
            linger,
            opened_at: None,
        }
    }

    /// The partition whose events this windower gathers.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The schema of the batches it produces.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends an event; returns the batch when this fills the window.
    ///
    /// The batch is also returned when the event arrives at or after the open
    /// window's deadline (the caller polled late), so no window outlives its
    /// linger by more than one event. `event.values` should hold `width`
    /// values, as [`decode`](crate::stage::decode::decode) guarantees; if not, the row
    /// is cut or padded with NaN (which the model refuses and counts) so the
    /// batch stays well formed.
    pub fn push(&mut self, event: &Event, offset: i64, now: Instant) -> Option<RecordBatch> {
        debug_assert_eq!(event.values.len(), self.width, "event of the wrong width");
        let opened_at = *self.opened_at.get_or_insert(now);
        self.stream.append_value(&event.stream);
        self.event_time.append_value(event.ts_ms);
        let n = event.values.len().min(self.width);
        let values = self.values.values();
        values.append_slice(&event.values[..n]);
        for _ in n..self.width {
            values.append_value(f64::NAN);
        }
        self.values.append(true);
        self.partition_col.append_value(self.partition);
        self.offset.append_value(offset);
        let overdue = now.saturating_duration_since(opened_at) >= self.linger;
        if self.len() >= self.max_events || overdue {
            self.flush()
        } else {
            None
        }
    }

    /// When the open window must be flushed (linger after its first event), if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.linger)
    }

    /// Flushes the open window if its linger has passed at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<RecordBatch> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// Flushes whatever is open (shutdown, revoke).
    pub fn flush(&mut self) -> Option<RecordBatch> {
        self.opened_at.take()?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.stream.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.values.finish()),
            Arc::new(self.partition_col.finish()),
            Arc::new(self.offset.finish()),
        ];
        match RecordBatch::try_new(self.schema.clone(), columns) {
            Ok(batch) => Some(batch),
            // Every push appends one row to every builder of the schema's types.
            Err(e) => unreachable!("window columns disagree with the window schema: {e}"),
        }
    }

    /// Events in the open window.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// True when no window is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a record batch is not a window.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// A column is missing or has another type.
    #[error("window column {index} should be `{name}` of type {expected}, found {found}")]
    Column {
        /// Position in the schema.
        index: usize,
        /// The expected name.
        name: &'static str,
        /// The expected Arrow type.
        expected: String,
        /// What the batch has there.
        found: String,
    },
    /// A column holds nulls.
    #[error("window column `{name}` holds {count} nulls; windows have none")]
    Nulls {
        /// The column.
        name: &'static str,
        /// How many.
        count: usize,
    },
    /// The batch has no rows.
    #[error("the batch has no rows; a window holds at least one event")]
    Empty,
    /// Rows from more than one partition.
    #[error(
        "row {row} is from partition {found}, row 0 from partition {first}; a window holds one partition"
    )]
    MixedPartitions {
        /// Row 0's partition.
        first: i32,
        /// The first row from another partition.
        row: usize,
        /// Its partition.
        found: i32,
    },
}

/// Typed, zero-copy access to a window's rows.
#[derive(Debug, Clone, Copy)]
pub struct WindowRows<'a> {
    stream: &'a StringArray,
    event_time: &'a [i64],
    values: &'a [f64],
    offset: &'a [i64],
    width: usize,
    partition: i32,
}

impl<'a> WindowRows<'a> {
    /// Checks the batch against the window schema (of any width) and wraps it.
    pub fn new(batch: &'a RecordBatch) -> Result<Self, WindowError> {
        let stream: &StringArray = column(batch, 0, "stream", &DataType::Utf8)?;
        let event_time: &TimestampMillisecondArray = column(
            batch,
            1,
            "event_time",
            &DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into())),
        )?;
        let list = batch.columns().get(2);
        let width = match list.map(|c| c.data_type()) {
            Some(DataType::FixedSizeList(item, w)) if item.data_type() == &DataType::Float64 => *w,
            _ => 1,
        };
        let values: &FixedSizeListArray = column(
            batch,
            2,
            "values",
            &DataType::FixedSizeList(item_field(), width),
        )?;
        let partition: &Int32Array = column(batch, 3, "partition", &DataType::Int32)?;
        let offset: &Int64Array = column(batch, 4, "offset", &DataType::Int64)?;
        if batch.num_columns() != 5 {
            return Err(WindowError::Column {
                index: 5,
                name: "(none)",
                expected: "no more columns".into(),
                found: format!("{} columns", batch.num_columns()),
            });
        }
        let items = values
            .values()
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| WindowError::Column {
                index: 2,
                name: "values",
                expected: "Float64 items".into(),
                found: values.values().data_type().to_string(),
            })?;
        for (name, count) in [
            ("stream", stream.null_count()),
            ("event_time", event_time.null_count()),
            ("values", values.null_count()),
            ("values", items.null_count()),
            ("partition", partition.null_count()),
            ("offset", offset.null_count()),
        ] {
            if count > 0 {
                return Err(WindowError::Nulls { name, count });
            }
        }
        let partitions = partition.values();
        let first = *partitions.first().ok_or(WindowError::Empty)?;
        if let Some(row) = partitions.iter().position(|&p| p != first) {
            return Err(WindowError::MixedPartitions {
                first,
                row,
                found: partitions[row],
            });
        }
        let width = usize::try_from(width).unwrap_or(0);
        // Slicing a fixed-size list slices its items, so row 0 starts at item 0.
        if items.len() < partitions.len() * width {
            return Err(WindowError::Column {
                index: 2,
                name: "values",
                expected: format!("{} items", partitions.len() * width),
                found: format!("{} items", items.len()),
            });
        }
        Ok(WindowRows {
            stream,
            event_time: event_time.values(),
            values: items.values(),
            offset: offset.values(),
            width,
            partition: first,
        })
    }

    /// Events in the window.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// True for a window without events (never: [`WindowRows::new`] refuses those).
    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }

    /// Values per event.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i`'s stream id. Panics if `i >= len()`, as slice indexing does.
    pub fn stream(&self, i: usize) -> &'a str {
        assert!(i < self.len(), "row {i} of a {}-row window", self.len());
        self.stream.value(i)
    }

    /// Row `i`'s event time, epoch ms UTC. Panics if `i >= len()`.
    pub fn ts_ms(&self, i: usize) -> i64 {
        self.event_time[i]
    }

    /// Row `i`'s values. Panics if `i >= len()`.
    pub fn values(&self, i: usize) -> &'a [f64] {
        assert!(i < self.len(), "row {i} of a {}-row window", self.len());
        let start = i * self.width;
        &self.values[start..start + self.width]
    }

    /// Row `i`'s Kafka offset. Panics if `i >= len()`.
    pub fn offset(&self, i: usize) -> i64 {
        self.offset[i]
    }

    /// The Kafka partition of every row.
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

/// Column `index` of `batch`, checked to be `name` of type `expected` and downcast.
fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    index: usize,
    name: &'static str,
    expected: &DataType,
) -> Result<&'a T, WindowError> {
    let wrong = |found: String| WindowError::Column {
        index,
        name,
        expected: expected.to_string(),
        found,
    };
    let schema = batch.schema_ref();
    let (Some(field), Some(array)) = (schema.fields().get(index), batch.columns().get(index))
    else {
        return Err(wrong("no column".into()));
    };
    if field.name() != name || array.data_type() != expected {
        return Err(wrong(format!(
            "`{}` of type {}",
            field.name(),
            array.data_type()
        )));
    }
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| wrong(format!("an array of type {}", array.data_type())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn event(stream: &str, ts_ms: i64, values: &[f64]) -> Event {
        Event {
            stream: stream.into(),
            ts_ms,
            values: values.to_vec(),
        }
    }

    #[test]
    fn flushes_by_size_exactly_at_max_events() {
        let t0 = Instant::now();
        let mut w = Windower::new(2, 1, 3, 20 * MS);
        assert!(w.push(&event("a", 1, &[1.0]), 10, t0).is_none());
        assert!(w.push(&event("b", 2, &[2.0]), 11, t0).is_none());
        assert_eq!(w.len(), 2);
        let batch = w
            .push(&event("a", 3, &[3.0]), 12, t0)
            .expect("third event fills the window");
        assert_eq!(batch.num_rows(), 3);
        assert!(w.is_empty());
        assert_eq!(w.deadline(), None);
        // The next event opens a fresh window.
        assert!(w.push(&event("c", 4, &[4.0]), 13, t0 + MS).is_none());
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(), Some(t0 + 21 * MS));
    }

    #[test]
    fn max_events_one_flushes_every_event() {
        let t0 = Instant::now();
        let mut w = Windower::new(0, 1, 0, Duration::from_secs(1));
        for i in 0..3 {
            let b = w
                .push(&event("a", i, &[0.0]), i, t0)
                .expect("window of one");
            assert_eq!(b.num_rows(), 1);
        }
    }

    #[test]
    fn flushes_by_linger_via_poll() {
        let t0 = Instant::now();
        let mut w = Windower::new(0, 2, 100, 20 * MS);
        assert!(w.poll(t0).is_none(), "nothing open");
        w.push(&event("a", 1, &[1.0, 2.0]), 0, t0);
        w.push(&event("a", 2, &[3.0, 4.0]), 1, t0 + 5 * MS);
        assert!(w.poll(t0 + 19 * MS).is_none());
        assert_eq!(w.len(), 2);
        let b = w.poll(t0 + 20 * MS).expect("linger has passed");
        assert_eq!(b.num_rows(), 2);
        assert!(w.is_empty());
        assert!(w.poll(t0 + 40 * MS).is_none());
    }

    #[test]
    fn deadline_is_linger_after_the_first_event() {
        let t0 = Instant::now();
        let mut w = Windower::new(0, 1, 100, 20 * MS);
        assert_eq!(w.deadline(), None);
        w.push(&event("a", 1, &[1.0]), 0, t0 + 3 * MS);
        assert_eq!(w.deadline(), Some(t0 + 23 * MS));
        // Later events do not move it.
        w.push(&event("a", 2, &[1.0]), 1, t0 + 10 * MS);
        assert_eq!(w.deadline(), Some(t0 + 23 * MS));
        w.flush();
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn an_event_after_the_deadline_flushes_its_window() {
        let t0 = Instant::now();
        let mut w = Windower::new(0, 1, 100, 20 * MS);
        w.push(&event("a", 1, &[1.0]), 0, t0);
        let b = w
            .push(&event("a", 2, &[2.0]), 1, t0 + 25 * MS)
            .expect("overdue");
        assert_eq!(b.num_rows(), 2);
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn zero_linger_flushes_on_every_push() {
        let t0 = Instant::now();
        let mut w = Windower::new(0, 1, 100, Duration::ZERO);
        assert_eq!(
            w.push(&event("a", 1, &[1.0]), 0, t0).map(|b| b.num_rows()),
            Some(1)
        );
    }

    #[test]
    fn flush_on_empty_returns_none() {
        let mut w = Windower::new(0, 3, 10, 20 * MS);
        assert!(w.flush().is_none());
        w.push(&event("a", 1, &[1.0, 2.0, 3.0]), 0, Instant::now());
        assert_eq!(w.flush().map(|b| b.num_rows()), Some(1));
        assert!(w.flush().is_none());
    }

    #[test]
    fn round_trip_keeps_order_and_every_value() {
        let t0 = Instant::now();
        let width = 7;
        let mut w = Windower::new(5, width, 1000, Duration::from_secs(1));
        let events: Vec<(Event, i64)> = (0..257)
            .map(|i| {
                let stream = format!("s{}-Zürich-{}", i % 13, "x".repeat(i % 5));
                let values: Vec<f64> = (0..width)
                    .map(|j| i as f64 * 1.5 - j as f64 / 3.0)
                    .collect();
                (
                    event(&stream, 1_467_331_200_000 + i as i64 * 3_600_000, &values),
                    1_000 + i as i64 * 2,
                )
            })
            .collect();
        for (e, off) in &events {
            assert!(w.push(e, *off, t0).is_none());
        }
        let batch = w.flush().unwrap();
        assert_eq!(batch.schema(), schema(width));
        let rows = WindowRows::new(&batch).unwrap();
        assert_eq!(
            (rows.len(), rows.width(), rows.partition()),
            (events.len(), width, 5)
        );
        for (i, (e, off)) in events.iter().enumerate() {
            assert_eq!(rows.stream(i), e.stream);
            assert_eq!(rows.ts_ms(i), e.ts_ms);
            assert_eq!(rows.values(i), e.values.as_slice());
            assert_eq!(rows.offset(i), *off);
        }
        // A second window from the same builders reads back just as well.
        w.push(&events[3].0, 9, t0);
        let batch = w.flush().unwrap();
        let rows = WindowRows::new(&batch).unwrap();
        assert_eq!(
            (rows.len(), rows.stream(0), rows.values(0)),
            (
                1,
                events[3].0.stream.as_str(),
                events[3].0.values.as_slice()
            )
        );
    }

    #[test]
    fn non_finite_values_survive() {
        let mut w = Windower::new(0, 2, 10, Duration::from_secs(1));
        w.push(&event("a", 1, &[f64::INFINITY, -0.0]), 0, Instant::now());
        let batch = w.flush().unwrap();
        let rows = WindowRows::new(&batch).unwrap();
        assert_eq!(rows.values(0)[0], f64::INFINITY);
        assert!(rows.values(0)[1].is_sign_negative());
    }

    #[test]
    fn schema_is_as_documented() {
        let s = schema(3);
        let described: Vec<String> = s
            .fields()
            .iter()
            .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
            .collect();
        assert_eq!(
            described,
            [
                "stream Utf8 false",
                "event_time Timestamp(ms, \"UTC\") false",
                "values FixedSizeList(3 x non-null Float64) false",
                "partition Int32 false",
                "offset Int64 false",
            ]
        );
    }

    #[test]
    fn sliced_windows_read_correctly() {
        let mut w = Windower::new(1, 2, 10, Duration::from_secs(1));
        for i in 0..5 {
            w.push(
                &event(&format!("s{i}"), i, &[i as f64, -(i as f64)]),
                100 + i,
                Instant::now(),
            );
        }
        let batch = w.flush().unwrap();
        let tail = batch.slice(2, 3);
        let rows = WindowRows::new(&tail).unwrap();
        assert_eq!(rows.len(), 3);
        for i in 0..3 {
            let k = i as i64 + 2;
            assert_eq!(rows.stream(i), format!("s{k}"));
            assert_eq!(rows.ts_ms(i), k);
            assert_eq!(rows.values(i), [k as f64, -(k as f64)]);
            assert_eq!(rows.offset(i), 100 + k);
        }
    }

    #[test]
    fn rows_refuse_other_batches() {
        let ok = {
            let mut w = Windower::new(1, 2, 10, Duration::from_secs(1));
            w.push(&event("a", 1, &[1.0, 2.0]), 0, Instant::now());
            w.flush().unwrap()
        };
        // Wrong column type.
        let mut columns = ok.columns().to_vec();
        columns[4] = Arc::new(Int32Array::from(vec![0]));
        let fields: Vec<Field> = ok
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i == 4 {
                    Field::new("offset", DataType::Int32, false)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let e = WindowRows::new(&bad).unwrap_err();
        assert!(
            matches!(
                e,
                WindowError::Column {
                    index: 4,
                    name: "offset",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("Int64") && e.to_string().contains("Int32"),
            "{e}"
        );
        // Too few columns.
        let short = ok.project(&[0, 1, 2]).unwrap();
        assert!(matches!(
            WindowRows::new(&short),
            Err(WindowError::Column { index: 3, .. })
        ));
        // Empty.
        assert_eq!(
            WindowRows::new(&ok.slice(0, 0)).unwrap_err(),
            WindowError::Empty
        );
        // Mixed partitions.
        let mut w = Windower::new(1, 2, 10, Duration::from_secs(1));
        w.push(&event("a", 1, &[1.0, 2.0]), 0, Instant::now());
        w.push(&event("b", 1, &[1.0, 2.0]), 1, Instant::now());
        let mut columns = w.flush().unwrap().columns().to_vec();
        columns[3] = Arc::new(Int32Array::from(vec![1, 2]));
        let two = RecordBatch::try_new(ok.schema(), columns).unwrap();
        assert_eq!(
            WindowRows::new(&two).unwrap_err(),
            WindowError::MixedPartitions {
                first: 1,
                row: 1,
                found: 2
            }
        );
    }
}
