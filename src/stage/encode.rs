//! Predictions and dead letters → Kafka record bytes.
//!
//! # The prediction record
//!
//! One JSON object per forecast, keyed (by the sink) like its input event:
//!
//! ```json
//! {"stream":"meter-17","ts":1467331200000,"horizon":1,"forecast":[[12.5]],
//!  "intervals":[{"level":0.8,"lo":[[11.9]],"hi":[[13.2]]},{"level":0.95,"lo":[[11.4]],"hi":[[13.9]]}],
//!  "score":0.31,"anomaly":false,
//!  "model_version":42,"source":{"topic":"recur-input","partition":3,"offset":1234}}
//! ```
//!
//! * `stream`, `ts`: the input event's stream id and time (epoch ms, UTC).
//! * `horizon`: the number of rows of `forecast`.
//! * `forecast`: row-major, one row per step ahead, each row holding one value
//!   per target, in target order. Numbers are the shortest decimal that reads
//!   back as the same `f32` (`0.1f32` is written `0.1`). A NaN or infinite
//!   forecast is written `null`, so the record is always valid JSON.
//! * `intervals` (with `model.intervals`, default levels 0.8 and 0.95): one
//!   object per level, ascending, `{"level":0.8,"lo":[[..]],"hi":[[..]]}`,
//!   `lo` and `hi` shaped like `forecast`: the calibrated lower and upper
//!   bounds of every step and target.
//! * `score`, `anomaly` (with intervals, once the stream's one-step
//!   calibration has started): how anomalous this event's value is against
//!   the one-step interval the stream's last forecast carried, in [0, 1], and
//!   whether it reached `anomaly.threshold`.
//! * `model_version`: the version of the weights that made the forecast.
//! * `source`: where the input event was read, for tracing a forecast back.
//!
//! # The dead-letter record
//!
//! The dead-letter topic gets the input message's key and value unchanged, with
//! the headers of [`dead_letter_headers`]: `recur.error` (the
//! [`DecodeError`]'s Display, `"{reason}: {detail}"`),
//! `recur.source.topic`, `recur.source.partition` and `recur.source.offset`
//! (decimal text).

use serde_json::ser::{CompactFormatter, Formatter};

use crate::stage::decode::DecodeError;

/// Header holding the reason and detail of a dead letter.
pub const HEADER_ERROR: &str = "recur.error";
/// Header holding the input topic of a dead letter.
pub const HEADER_SOURCE_TOPIC: &str = "recur.source.topic";
/// Header holding the input partition of a dead letter (decimal).
pub const HEADER_SOURCE_PARTITION: &str = "recur.source.partition";
/// Header holding the input offset of a dead letter (decimal).
pub const HEADER_SOURCE_OFFSET: &str = "recur.source.offset";

/// Where an input event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRef<'a> {
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// The input message's offset.
    pub offset: i64,
}

/// Appends the prediction JSON to `out` (cleared first), without intervals.
///
/// `forecast` is row-major horizon × `targets`. `targets` is expected to
/// divide `forecast.len()` (the model guarantees it); otherwise the last row is
/// written short, and a `targets` of 0 is taken as 1, so the output stays
/// valid JSON whatever the arguments.
pub fn prediction(
    out: &mut Vec<u8>,
    stream: &str,
    ts_ms: i64,
    forecast: &[f32],
    targets: usize,
    model_version: u64,
    src: &SourceRef<'_>,
) {
    let f = Forecast {
        values: forecast,
        targets,
        model_version,
        ..Forecast::default()
    };
    prediction_with(out, stream, ts_ms, &f, src);
}

/// What one prediction record carries besides its stream, time and source.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forecast<'a> {
    /// Row-major horizon × `targets`.
    pub values: &'a [f32],
    /// Values per row.
    pub targets: usize,
    /// The version of the weights that made it.
    pub model_version: u64,
    /// Interval levels, ascending (empty: no intervals).
    pub levels: &'a [f64],
    /// Lower bounds, `levels × values` (level-major).
    pub lower: &'a [f32],
    /// Upper bounds, shaped like `lower`.
    pub upper: &'a [f32],
    /// The event's anomaly score in [0, 1], if it has one.
    pub score: Option<f64>,
    /// Whether the score is at or above `anomaly.threshold`.
    pub anomaly: bool,
}

/// Appends the prediction JSON of `f` to `out` (cleared first); see the
/// module docs for the shape, and [`prediction`] for odd `targets`.
pub fn prediction_with(
    out: &mut Vec<u8>,
    stream: &str,
    ts_ms: i64,
    fc: &Forecast<'_>,
    src: &SourceRef<'_>,
) {
    let (forecast, targets) = (fc.values, fc.targets);
    debug_assert!(
        targets > 0 && forecast.len().is_multiple_of(targets),
        "{} forecast values are not rows of {targets} targets",
        forecast.len()
    );
    let targets = targets.max(1);
    out.clear();
    out.reserve(
        96 + stream.len() + src.topic.len() + forecast.len() * 12 * (1 + 2 * fc.levels.len()),
    );
    let f = &mut CompactFormatter;
    out.extend_from_slice(b"{\"stream\":");
    string(out, stream);
    out.extend_from_slice(b",\"ts\":");
    integer(out, |w| f.write_i64(w, ts_ms));
    out.extend_from_slice(b",\"horizon\":");
    integer(out, |w| {
        f.write_u64(w, forecast.len().div_ceil(targets) as u64)
    });
    out.extend_from_slice(b",\"forecast\":");
    rows(out, forecast, targets);
    let n = forecast.len();
    if !fc.levels.is_empty() && fc.lower.len() >= fc.levels.len() * n {
        out.extend_from_slice(b",\"intervals\":[");
        for (l, &level) in fc.levels.iter().enumerate() {
            if l > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"level\":");
            integer(out, |w| f.write_f64(w, level));
            out.extend_from_slice(b",\"lo\":");
            rows(out, &fc.lower[l * n..(l + 1) * n], targets);
            out.extend_from_slice(b",\"hi\":");
            rows(out, &fc.upper[l * n..(l + 1) * n], targets);
            out.push(b'}');
        }
        out.push(b']');
    }
    if let Some(score) = fc.score {
        out.extend_from_slice(b",\"score\":");
        if score.is_finite() {
            integer(out, |w| f.write_f64(w, score));
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(if fc.anomaly {
            b",\"anomaly\":true"
        } else {
            b",\"anomaly\":false"
        });
    }
    out.extend_from_slice(b",\"model_version\":");
    integer(out, |w| f.write_u64(w, fc.model_version));
    out.extend_from_slice(b",\"source\":{\"topic\":");
    string(out, src.topic);
    out.extend_from_slice(b",\"partition\":");
    integer(out, |w| f.write_i32(w, src.partition));
    out.extend_from_slice(b",\"offset\":");
    integer(out, |w| f.write_i64(w, src.offset));
    out.extend_from_slice(b"}}");
}

/// Writes row-major `values` as a JSON array of rows of `targets`.
fn rows(out: &mut Vec<u8>, values: &[f32], targets: usize) {
    out.push(b'[');
    for (i, row) in values.chunks(targets).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (j, &v) in row.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            float(out, v);
        }
        out.push(b']');
    }
    out.push(b']');
}

/// The headers of a dead-letter record: recur.error, recur.source.topic, recur.source.partition, recur.source.offset.
pub fn dead_letter_headers(err: &DecodeError, src: &SourceRef<'_>) -> [(&'static str, Vec<u8>); 4] {
    [
        (HEADER_ERROR, err.to_string().into_bytes()),
        (HEADER_SOURCE_TOPIC, src.topic.as_bytes().to_vec()),
        (
            HEADER_SOURCE_PARTITION,
            src.partition.to_string().into_bytes(),
        ),
        (HEADER_SOURCE_OFFSET, src.offset.to_string().into_bytes()),
    ]
}

/// Header set on a dead letter whose key or value was cut to fit the
/// producer's `message.max.bytes`: the original sizes, e.g. `key 12 bytes, value 2097152 bytes`.
pub const HEADER_TRUNCATED: &str = "recur.truncated";

/// Cuts a dead letter's key and value so that together they take at most
/// `budget` bytes (the key keeps up to half); `None` when they already fit.
/// Returns the kept lengths.
pub fn fit(key_len: usize, value_len: usize, budget: usize) -> Option<(usize, usize)> {
    if key_len + value_len <= budget {
        return None;
    }
    let key = key_len.min(budget / 2);
    Some((key, value_len.min(budget - key)))
}

/// Writes `s` as a JSON string (quoted and escaped).
fn string(out: &mut Vec<u8>, s: &str) {
    // `Vec<u8>` as `io::Write` never fails, and serializing a `str` has no other error.
    let written = serde_json::to_writer(&mut *out, s);
    debug_assert!(written.is_ok());
}

/// Runs one of the formatter's integer writers on `out`.
fn integer(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
    // As in `string`: writing to a `Vec` cannot fail.
    let written = write(out);
    debug_assert!(written.is_ok());
}

/// Writes the shortest round-trip decimal of `v`, or `null` when it is not finite.
fn float(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        // As in `string`: writing to a `Vec` cannot fail.
        let written = CompactFormatter.write_f32(out, v);
        debug_assert!(written.is_ok());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_cut_to_the_budget() {
        assert_eq!(fit(10, 100, 1000), None);
        assert_eq!(fit(10, 2_000_000, 1000), Some((10, 990)));
        assert_eq!(fit(600_000, 10, 1000), Some((500, 10)));
        assert_eq!(fit(600_000, 2_000_000, 1000), Some((500, 500)));
        let (k, v) = fit(7, 3_000, 1_000).unwrap();
        assert!(k + v <= 1_000);
    }
    use crate::stage::decode::Reason;
    use serde_json::{Value, json};

    const SRC: SourceRef<'static> = SourceRef {
        topic: "recur-input",
        partition: 3,
        offset: 1234,
    };

    fn encode(stream: &str, forecast: &[f32], targets: usize) -> Value {
        let mut out = b"stale bytes".to_vec();
        prediction(
            &mut out,
            stream,
            1_467_331_200_000,
            forecast,
            targets,
            42,
            &SRC,
        );
        match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(&out)),
        }
    }

    #[test]
    fn every_field_reads_back() {
        let v = encode("meter-17", &[12.5, 0.3, 12.75, 0.25], 2);
        assert_eq!(
            v,
            json!({
                "stream": "meter-17",
                "ts": 1_467_331_200_000_i64,
                "horizon": 2,
                "forecast": [[12.5, 0.3], [12.75, 0.25]],
                "model_version": 42,
                "source": {"topic": "recur-input", "partition": 3, "offset": 1234}
            })
        );
    }

    #[test]
    fn exact_text() {
        let mut out = Vec::new();
        let src = SourceRef {
            topic: "in",
            partition: -1,
            offset: i64::MAX,
        };
        prediction(
            &mut out,
            "s",
            -5,
            &[0.1, 1.0, -2.5e-8, 3.4e38],
            1,
            u64::MAX,
            &src,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"stream\":\"s\",\"ts\":-5,\"horizon\":4,\"forecast\":[[0.1],[1.0],[-2.5e-8],[3.4e+38]],\
             \"model_version\":18446744073709551615,\"source\":{\"topic\":\"in\",\"partition\":-1,\
             \"offset\":9223372036854775807}}"
        );
    }

    #[test]
    fn floats_are_shortest_round_trip() {
        let xs = [
            0.1f32,
            1.0 / 3.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            -0.0,
            1e-45,
            16_777_217.0,
            123_456.79,
        ];
        let mut out = Vec::new();
        prediction(&mut out, "s", 0, &xs, 1, 0, &SRC);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let rows = v["forecast"].as_array().unwrap();
        for (x, row) in xs.iter().zip(rows) {
            let back = row[0].as_f64().unwrap() as f32;
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[[0.1],[0.33333334],"), "{text}");
    }

    #[test]
    fn non_finite_forecasts_are_null() {
        let v = encode("s", &[f32::NAN, 1.5, f32::INFINITY, f32::NEG_INFINITY], 2);
        assert_eq!(v["forecast"], json!([[null, 1.5], [null, null]]));
    }

    #[test]
    fn strings_are_escaped() {
        for id in [
            "quote\"d",
            "back\\slash",
            "new\nline\r\t",
            "nul\u{0}and\u{1f}",
            "Zürich 東京 🌡️",
            "\u{2028}\u{2029}",
            "</script>",
        ] {
            let v = encode(id, &[1.0], 1);
            assert_eq!(v["stream"], id);
        }
        let mut out = Vec::new();
        let src = SourceRef {
            topic: "in\"put",
            ..SRC
        };
        prediction(&mut out, "a\"b\n", 0, &[1.0], 1, 0, &src);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with(r#"{"stream":"a\"b\n","#), "{text}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["source"]["topic"], "in\"put");
    }

    #[test]
    fn shape_24_by_7() {
        let forecast: Vec<f32> = (0..24 * 7).map(|i| i as f32 * 0.5 - 3.0).collect();
        let v = encode("ETTh2", &forecast, 7);
        assert_eq!(v["horizon"], 24);
        let rows = v["forecast"].as_array().unwrap();
        assert_eq!(rows.len(), 24);
        for (h, row) in rows.iter().enumerate() {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 7);
            for (t, x) in row.iter().enumerate() {
                assert_eq!(x.as_f64().unwrap() as f32, forecast[h * 7 + t]);
            }
        }
    }

    #[test]
    fn an_empty_forecast_is_still_json() {
        let v = encode("s", &[], 3);
        assert_eq!(v["horizon"], 0);
        assert_eq!(v["forecast"], json!([]));
    }

    #[test]
    fn out_is_cleared_and_reusable() {
        let mut out = Vec::new();
        prediction(&mut out, "a-long-stream-name", 1, &[1.0; 32], 4, 1, &SRC);
        prediction(&mut out, "b", 2, &[2.0], 1, 2, &SRC);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["stream"].as_str(), v["ts"].as_i64()),
            (Some("b"), Some(2))
        );
    }

    #[test]
    fn dead_letter_headers_carry_the_error_and_source() {
        let err = crate::stage::decode::decode(
            &crate::stage::decode::DecodeConfig {
                fields: Default::default(),
                width: 3,
                max_bytes: 1024,
                max_stream_bytes: 256,
                max_ts_ms: crate::stage::decode::MAX_TS_MS,
            },
            None,
            Some(br#"{"stream":"a","ts":1,"values":[1,2]}"#),
            None,
        )
        .unwrap_err();
        assert_eq!(err.reason, Reason::WrongWidth);
        let h = dead_letter_headers(&err, &SRC);
        let names: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "recur.error",
                "recur.source.topic",
                "recur.source.partition",
                "recur.source.offset"
            ]
        );
        assert_eq!(
            String::from_utf8(h[0].1.clone()).unwrap(),
            format!("wrong_width: {}", err.detail)
        );
        assert_eq!(h[1].1, b"recur-input");
        assert_eq!(h[2].1, b"3");
        assert_eq!(h[3].1, b"1234");
    }
}
