//! Kafka message bytes → [`Event`], or the [`DecodeError`] that sends the
//! message to the dead-letter topic.
//!
//! # The input event
//!
//! A message value is one JSON object (field names configurable, see
//! [`Fields`]):
//!
//! ```json
//! {"stream": "meter-17", "ts": 1467331200000, "values": [12.5, 0.3, 7]}
//! {"stream": "meter-17", "ts": "2016-07-01T00:00:00Z", "value": 12.5}
//! ```
//!
//! * `stream`: the stream id, a non-empty string. It may be omitted when the
//!   Kafka key is set: the key is the stream id (UTF-8). When both are present
//!   they must be equal. An empty key counts as no key.
//! * `ts`: the event time, epoch milliseconds (a JSON integer, or a decimal
//!   that is rounded) or a string read by
//!   [`parse_time`] (RFC 3339, and the
//!   other spellings it accepts). Without it the Kafka message timestamp is
//!   used. Accepted times lie in `1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z`
//!   ([`MAX_TS_MS`]): a negative time or one past year 9999 is almost always
//!   seconds, microseconds or nanoseconds sent where milliseconds belong.
//! * `values`: exactly `width` JSON numbers; or `value`, one number, as
//!   shorthand when `width` is 1. Not both.
//! * Any other field is ignored. A field named twice is refused (`bad_type`):
//!   which one was meant is a guess. A `null` is a value of the wrong type, not
//!   an absent field.
//!
//! # Dead-letter reasons
//!
//! | [`Reason`] | label | when |
//! |---|---|---|
//! | `Oversize` | `oversize` | the value is longer than `max_bytes` (checked before parsing) |
//! | `NotJson` | `not_json` | no value, an empty value, or invalid JSON |
//! | `MissingField` | `missing_field` | no stream (field or key), an empty stream id, no time (field or Kafka timestamp), no values |
//! | `BadType` | `bad_type` | the message is not an object, a field has the wrong JSON type (naming the array index), both `values` and `value`, a duplicated field, a non-UTF-8 key |
//! | `WrongWidth` | `wrong_width` | not `width` values (naming both counts) |
//! | `NonFinite` | `non_finite` | a value is NaN or infinite: the bare `NaN`/`Infinity` tokens some encoders write (not JSON, but that is what they mean), or a number beyond f64's range such as `1e400` |
//! | `BadTimestamp` | `bad_timestamp` | a time that does not parse or lies outside the accepted range |
//! | `StreamMismatch` | `stream_mismatch` | the `stream` field and the Kafka key differ |
//! | `StreamTooLong` | `stream_too_long` | the stream id is longer than `max_stream_bytes` |
//! | `FutureTimestamp` | `future_timestamp` | the event time is after `max_ts_ms` (the stage keeps it at the wall clock plus `events.max_future`) |
//! | `Late` | `late` | (in the worker, with `events.late = "dead_letter"`) an event time before its stream's last one |
//! | `OutOfRange` | `out_of_range` | a finite value beyond f32's range (e.g. `1e39`): the model computes in f32 |
//!
//! When a message has several faults, the first one met is reported: size,
//! then the JSON in document order, then stream, time and values.
//!
//! # Speed
//!
//! [`decode`] deserializes straight from the bytes with a map visitor: keys
//! are matched against the configured names, the stream id is borrowed from
//! the input when it has no escapes, `values` goes straight into a `Vec<f64>`
//! of capacity `width`, and other fields are skipped without being built.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use thiserror::Error;

use crate::time::parse_time;

/// The latest accepted event time, 9999-12-31T23:59:59.999Z in epoch ms.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Longest `detail` kept in a [`DecodeError`], in bytes; longer ones are cut at a character boundary and end in `…`.
pub const MAX_DETAIL_BYTES: usize = 256;

/// JSON field names of an input event (configurable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The stream id field (default `stream`).
    pub stream: String,
    /// The event time field (default `ts`).
    pub ts: String,
    /// The values array field (default `values`).
    pub values: String,
    /// The single-value shorthand field (default `value`).
    pub value: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            stream: "stream".to_owned(),
            ts: "ts".to_owned(),
            values: "values".to_owned(),
            value: "value".to_owned(),
        }
    }
}

/// How to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeConfig {
    /// The JSON field names.
    pub fields: Fields,
    /// Values per event.
    pub width: usize,
    /// Largest accepted message value, in bytes.
    pub max_bytes: usize,
    /// Longest accepted stream id, in bytes.
    pub max_stream_bytes: usize,
    /// Latest accepted event time (epoch ms): the stage keeps it at the wall
    /// clock plus `events.max_future`; at most [`MAX_TS_MS`].
    pub max_ts_ms: i64,
}

/// A good input event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The stream id (never empty).
    pub stream: String,
    /// Event time, epoch milliseconds UTC, in `0..=MAX_TS_MS`.
    pub ts_ms: i64,
    /// Exactly `width` finite values.
    pub values: Vec<f64>,
}

/// Why an event is a dead letter; `as_str()` is the Prometheus `reason` label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The value is longer than `max_bytes`.
    Oversize,
    /// No value, an empty one, or invalid JSON.
    NotJson,
    /// A required field is absent (or the stream id is empty).
    MissingField,
    /// A field has the wrong JSON type, or the message is not an object.
    BadType,
    /// Not `width` values.
    WrongWidth,
    /// A NaN or infinite value.
    NonFinite,
    /// A time that does not parse or is out of range.
    BadTimestamp,
    /// The `stream` field and the Kafka key differ.
    StreamMismatch,
    /// The stream id is longer than `max_stream_bytes`.
    StreamTooLong,
    /// A value beyond f32's range (the model computes in f32).
    OutOfRange,
    /// An event time later than the wall clock plus `events.max_future`.
    FutureTimestamp,
    /// An event time before its stream's last one, with `events.late = "dead_letter"`.
    Late,
}

impl Reason {
    /// Every reason, for registering the metric labels up front.
    pub const ALL: [Reason; 12] = [
        Reason::Oversize,
        Reason::NotJson,
        Reason::MissingField,
        Reason::BadType,
        Reason::WrongWidth,
        Reason::NonFinite,
        Reason::BadTimestamp,
        Reason::StreamMismatch,
        Reason::StreamTooLong,
        Reason::OutOfRange,
        Reason::FutureTimestamp,
        Reason::Late,
    ];

    /// The Prometheus `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversize => "oversize",
            Reason::NotJson => "not_json",
            Reason::MissingField => "missing_field",
            Reason::BadType => "bad_type",
            Reason::WrongWidth => "wrong_width",
            Reason::NonFinite => "non_finite",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::StreamMismatch => "stream_mismatch",
            Reason::StreamTooLong => "stream_too_long",
            Reason::OutOfRange => "out_of_range",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::Late => "late",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the reason and a human-readable detail naming the field and value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// Why, as a metric label.
    pub reason: Reason,
    /// What was wrong with which field, quoting the value (at most [`MAX_DETAIL_BYTES`]).
    pub detail: String,
}

impl DecodeError {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut cut = MAX_DETAIL_BYTES - '…'.len_utf8();
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        DecodeError { reason, detail }
    }
}

/// Decodes one message.
pub fn decode(
    cfg: &DecodeConfig,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    kafka_ts_ms: Option<i64>,
) -> Result<Event, DecodeError> {
    let bytes = value.unwrap_or_default();
    if bytes.len() > cfg.max_bytes {
        return Err(DecodeError::new(
            Reason::Oversize,
            format!(
                "the message value is {} bytes, more than max_bytes = {}",
                bytes.len(),
                cfg.max_bytes
            ),
        ));
    }
    if bytes.is_empty() {
        let what = if value.is_none() { "no" } else { "an empty" };
        return Err(DecodeError::new(
            Reason::NotJson,
            format!("the message has {what} value; expected a JSON object"),
        ));
    }

    let raw = parse(cfg, bytes)?;
    let f = &cfg.fields;

    let stream = resolve_stream(f, raw.stream, key)?;
    check_stream(cfg, &stream)?;
    let ts_ms = match (raw.ts, kafka_ts_ms) {
        (Some(ts), _) => ts,
        (None, Some(ts)) if (0..=MAX_TS_MS).contains(&ts) => ts,
        (None, Some(ts)) => {
            return Err(DecodeError::new(
                Reason::BadTimestamp,
                format!(
                    "no `{}` field, and the Kafka timestamp {ts} is outside 0..={MAX_TS_MS} ms",
                    f.ts
                ),
            ));
        }
        (None, None) => {
            return Err(DecodeError::new(
                Reason::MissingField,
                format!("no `{}` field and no Kafka timestamp", f.ts),
            ));
        }
    };
    let values = match (raw.values, raw.value) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::new(
                Reason::BadType,
                format!(
                    "both `{}` and `{}` are present; send one",
                    f.values, f.value
                ),
            ));
        }
        (Some(values), None) => {
            if values.len() != cfg.width {
                return Err(DecodeError::new(
                    Reason::WrongWidth,
                    format!(
                        "field `{}` has {} values, expected {}",
                        f.values,
                        values.len(),
                        cfg.width
                    ),
                ));
            }
            values
        }
        (None, Some(value)) => {
            if cfg.width != 1 {
                return Err(DecodeError::new(
                    Reason::WrongWidth,
                    format!(
                        "field `{}` gives 1 value, expected {} (send `{}`)",
                        f.value, cfg.width, f.values
                    ),
                ));
            }
            vec![value]
        }
        (None, None) => {
            return Err(DecodeError::new(
                Reason::MissingField,
                format!("no `{}` or `{}` field", f.values, f.value),
            ));
        }
    };
    check_bounds(cfg, ts_ms, &values)?;
    Ok(Event {
        stream,
        ts_ms,
        values,
    })
}

/// The stream id's length limit.
fn check_stream(cfg: &DecodeConfig, stream: &str) -> Result<(), DecodeError> {
    if stream.len() > cfg.max_stream_bytes {
        return Err(DecodeError::new(
            Reason::StreamTooLong,
            format!(
                "the stream id is {} bytes, more than max_stream_bytes = {}: {:?}",
                stream.len(),
                cfg.max_stream_bytes,
                &stream[..stream.floor_char_boundary(64)]
            ),
        ));
    }
    Ok(())
}

/// The event time's bound, then the values: finite, and within f32's range.
fn check_bounds(cfg: &DecodeConfig, ts_ms: i64, values: &[f64]) -> Result<(), DecodeError> {
    let f = &cfg.fields;
    if ts_ms > cfg.max_ts_ms {
        return Err(DecodeError::new(
            Reason::FutureTimestamp,
            format!(
                "the event time {ts_ms} ms is after {} ms (the wall clock plus events.max_future)",
                cfg.max_ts_ms
            ),
        ));
    }
    // serde_json refuses NaN and infinities, so this only guards the contract.
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(DecodeError::new(
            Reason::NonFinite,
            format!("field `{}`[{i}] is {}", f.values, values[i]),
        ));
    }
    if let Some(i) = values.iter().position(|v| v.abs() > f32::MAX as f64) {
        return Err(DecodeError::new(
            Reason::OutOfRange,
            format!(
                "field `{}`[{i}] is {}, beyond the model's f32 range (±{:e})",
                f.values,
                values[i],
                f32::MAX
            ),
        ));
    }
    Ok(())
}

/// The stream id from the field and the key, by the precedence rules.
fn resolve_stream(
    f: &Fields,
    field: Option<Cow<'_, str>>,
    key: Option<&[u8]>,
) -> Result<String, DecodeError> {
    let key = match key {
        None | Some([]) => None,
        Some(k) => Some(std::str::from_utf8(k).map_err(|e| {
            DecodeError::new(
                Reason::BadType,
                format!(
                    "the Kafka key (the stream id) is not UTF-8: {e}; key bytes {:?}",
                    String::from_utf8_lossy(k)
                ),
            )
        })?),
    };
    match (field, key) {
        (Some(s), _) if s.is_empty() => Err(DecodeError::new(
            Reason::MissingField,
            format!("field `{}` is empty", f.stream),
        )),
        (Some(s), Some(k)) if s != k => Err(DecodeError::new(
            Reason::StreamMismatch,
            format!("field `{}` is {s:?} but the Kafka key is {k:?}", f.stream),
        )),
        (Some(s), _) => Ok(s.into_owned()),
        (None, Some(k)) => Ok(k.to_owned()),
        (None, None) => Err(DecodeError::new(
            Reason::MissingField,
            format!("no `{}` field and no Kafka key", f.stream),
        )),
    }
}

/// The fields of one message as found, before the precedence rules.
struct Wire<'de> {
    stream: Option<Cow<'de, str>>,
    ts: Option<i64>,
    values: Option<Vec<f64>>,
    value: Option<f64>,
}

/// Which field's value the parser is inside, to name it in errors.
#[derive(Debug, Clone, Copy)]
enum At {
    Top,
    Stream,
    Ts,
    Values,
    ValuesItem(usize),
    Value,
}

/// What a visitor knows that a `serde_json::Error` cannot carry.
struct Ctx {
    /// A refusal decided by a visitor, reported instead of serde's error.
    err: Option<DecodeError>,
    at: At,
}

/// Parses the JSON into [`Wire`], mapping every failure to a reason.
fn parse<'de>(cfg: &DecodeConfig, bytes: &'de [u8]) -> Result<Wire<'de>, DecodeError> {
    let mut ctx = Ctx {
        err: None,
        at: At::Top,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = EventSeed { cfg, ctx: &mut ctx }
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|()| raw));
    result.map_err(|e| classify(e, ctx, &cfg.fields, bytes))
}

/// Turns a serde failure into a [`DecodeError`].
fn classify(e: serde_json::Error, ctx: Ctx, f: &Fields, bytes: &[u8]) -> DecodeError {
    if let Some(err) = ctx.err {
        return err;
    }
    let field = match ctx.at {
        At::Top => "the message".to_owned(),
        At::Stream => format!("field `{}`", f.stream),
        At::Ts => format!("field `{}`", f.ts),
        At::Values => format!("field `{}`", f.values),
        At::ValuesItem(i) => format!("field `{}`[{i}]", f.values),
        At::Value => format!("field `{}`", f.value),
    };
    match e.classify() {
        Category::Data => DecodeError::new(Reason::BadType, format!("{field}: {e}")),
        Category::Syntax | Category::Eof | Category::Io => {
            // Only inside a numeric field: elsewhere the token is just one more way of not being JSON.
            let numeric = matches!(ctx.at, At::Ts | At::Values | At::ValuesItem(_) | At::Value);
            if let Some(token) = bare_non_finite(bytes).filter(|_| numeric) {
                let reason = match ctx.at {
                    At::Ts => Reason::BadTimestamp,
                    _ => Reason::NonFinite,
                };
                return DecodeError::new(
                    reason,
                    format!("{field} holds `{token}`, which JSON cannot carry"),
                );
            }
            let out_of_range = e.to_string().starts_with("number out of range");
            match ctx.at {
                At::ValuesItem(_) | At::Value if out_of_range => {
                    DecodeError::new(Reason::NonFinite, format!("{field}: {e} (beyond f64)"))
                }
                At::Ts if out_of_range => {
                    DecodeError::new(Reason::BadTimestamp, format!("{field}: {e}"))
                }
                _ => DecodeError::new(Reason::NotJson, format!("invalid JSON in {field}: {e}")),
            }
        }
    }
}

/// The first `NaN` or `Infinity` token outside a JSON string, if any.
fn bare_non_finite(bytes: &[u8]) -> Option<&'static str> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if bytes[i..].starts_with(b"NaN") {
            return Some("NaN");
        } else if bytes[i..].starts_with(b"Infinity") {
            return Some(if i > 0 && bytes[i - 1] == b'-' {
                "-Infinity"
            } else {
                "Infinity"
            });
        }
    }
    None
}

/// Deserializes one event object.
struct EventSeed<'a> {
    cfg: &'a DecodeConfig,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Wire<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Wire<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let fields = &self.cfg.fields;
        let mut raw = Wire {
            stream: None,
            ts: None,
            values: None,
            value: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed(fields))? {
            let name = match key {
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                Key::Stream if raw.stream.is_none() => {
                    self.ctx.at = At::Stream;
                    raw.stream = Some(map.next_value_seed(StreamSeed)?);
                    self.ctx.at = At::Top;
                    continue;
                }
                Key::Ts if raw.ts.is_none() => {
                    self.ctx.at = At::Ts;
                    raw.ts = Some(map.next_value_seed(TsSeed {
                        name: &fields.ts,
                        err: &mut self.ctx.err,
                    })?);
                    self.ctx.at = At::Top;
                    continue;
                }
                Key::Values if raw.values.is_none() => {
                    self.ctx.at = At::Values;
                    raw.values = Some(map.next_value_seed(ValuesSeed {
                        width: self.cfg.width,
                        at: &mut self.ctx.at,
                    })?);
                    self.ctx.at = At::Top;
                    continue;
                }
                Key::Value if raw.value.is_none() => {
                    self.ctx.at = At::Value;
                    raw.value = Some(map.next_value::<f64>()?);
                    self.ctx.at = At::Top;
                    continue;
                }
                Key::Stream => &fields.stream,
                Key::Ts => &fields.ts,
                Key::Values => &fields.values,
                Key::Value => &fields.value,
            };
            self.ctx.err = Some(DecodeError::new(
                Reason::BadType,
                format!("field `{name}` appears more than once"),
            ));
            return Err(de::Error::custom("duplicate field"));
        }
        Ok(raw)
    }
}

/// A key of the event object, matched against the configured names.
enum Key {
    Stream,
    Ts,
    Values,
    Value,
    Other,
}

/// Reads a key without allocating.
struct KeySeed<'a>(&'a Fields);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        let f = self.0;
        Ok(if s == f.stream {
            Key::Stream
        } else if s == f.ts {
            Key::Ts
        } else if s == f.values {
            Key::Values
        } else if s == f.value {
            Key::Value
        } else {
            Key::Other
        })
    }
}

/// The stream id, borrowed from the input when it has no escapes.
struct StreamSeed;

impl<'de> DeserializeSeed<'de> for StreamSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StreamSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// The event time as epoch ms, checked against the accepted range.
struct TsSeed<'a> {
    name: &'a str,
    err: &'a mut Option<DecodeError>,
}

impl TsSeed<'_> {
    fn refuse<E: de::Error>(self, detail: String) -> Result<i64, E> {
        *self.err = Some(DecodeError::new(Reason::BadTimestamp, detail));
        Err(E::custom("bad timestamp"))
    }

    fn in_range<E: de::Error>(self, ms: i64, shown: &dyn fmt::Display) -> Result<i64, E> {
        if (0..=MAX_TS_MS).contains(&ms) {
            Ok(ms)
        } else {
            let name = self.name;
            self.refuse(format!(
                "field `{name}` is {shown}, outside 0..={MAX_TS_MS} ms (1970 to 9999); \
                 is it seconds, microseconds or nanoseconds?"
            ))
        }
    }
}

impl<'de> DeserializeSeed<'de> for TsSeed<'_> {
    type Value = i64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for TsSeed<'_> {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("epoch milliseconds or an RFC 3339 string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        let ms = i64::try_from(v).unwrap_or(i64::MAX);
        self.in_range(ms, &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        self.in_range(v, &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        let r = v.round();
        // The cast saturates; the range check below needs only the sign and size.
        let ms = if r.abs() < 9.2e18 { r as i64 } else { -1 };
        self.in_range(ms, &format_args!("{v:?}"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<i64, E> {
        match parse_time(s) {
            Ok(ms) => {
                let shown = format!("{s:?} ({ms} ms)");
                self.in_range(ms, &shown)
            }
            Err(why) => {
                let name = self.name;
                self.refuse(format!("field `{name}`: {why}"))
            }
        }
    }
}

/// The values array, straight into a `Vec<f64>` of capacity `width`.
struct ValuesSeed<'a> {
    width: usize,
    at: &'a mut At,
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = Vec<f64>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<f64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = Vec<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
        let mut out = Vec::with_capacity(self.width);
        loop {
            *self.at = At::ValuesItem(out.len());
            match seq.next_element::<f64>()? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JULY_1_2016: i64 = 1_467_331_200_000;

    fn cfg(width: usize) -> DecodeConfig {
        DecodeConfig {
            fields: Fields::default(),
            width,
            max_bytes: 4096,
            max_stream_bytes: 256,
            max_ts_ms: MAX_TS_MS,
        }
    }

    fn ok(cfg: &DecodeConfig, key: Option<&str>, value: &str, kafka_ts: Option<i64>) -> Event {
        match decode(
            cfg,
            key.map(str::as_bytes),
            Some(value.as_bytes()),
            kafka_ts,
        ) {
            Ok(e) => e,
            Err(e) => panic!("{value}: {e}"),
        }
    }

    fn err(
        cfg: &DecodeConfig,
        key: Option<&[u8]>,
        value: &str,
        kafka_ts: Option<i64>,
    ) -> DecodeError {
        match decode(cfg, key, Some(value.as_bytes()), kafka_ts) {
            Ok(e) => panic!("{value} decoded to {e:?}"),
            Err(e) => e,
        }
    }

    fn reason(cfg: &DecodeConfig, value: &str) -> Reason {
        err(cfg, None, value, None).reason
    }

    #[test]
    fn a_good_event() {
        let e = ok(
            &cfg(3),
            None,
            r#"{"stream":"meter-17","ts":1467331200000,"values":[12.5,-0.25,7]}"#,
            None,
        );
        assert_eq!(
            e,
            Event {
                stream: "meter-17".into(),
                ts_ms: JULY_1_2016,
                values: vec![12.5, -0.25, 7.0]
            }
        );
    }

    /// Whatever the bytes, decoding gives an event that keeps the rules
    /// (the configured width, finite values, a non-empty bounded stream id)
    /// or an error; it never panics.
    #[test]
    fn mangled_events_decode_or_fail_but_never_panic() {
        let c = cfg(3);
        let good =
            br#"{"stream":"meter-17","ts":"2016-07-01T00:00:00Z","values":[12.5,-0.25,7e3]}"#;
        let specials = b"{}[]\",:-+.eE0\\u\x00\xff\xc3";
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = good.to_vec();
            for _ in 0..1 + next() % 3 {
                let i = next() as usize % bytes.len();
                match next() % 4 {
                    0 => bytes[i] = specials[next() as usize % specials.len()],
                    1 => bytes.insert(i, specials[next() as usize % specials.len()]),
                    2 => {
                        bytes.remove(i);
                    }
                    _ => bytes[i] = next() as u8,
                }
                if bytes.is_empty() {
                    bytes.push(b'{');
                }
            }
            let key = (round % 5 == 0).then_some(&bytes[..bytes.len() / 2]);
            let result = std::panic::catch_unwind(|| decode(&c, key, Some(&bytes), Some(1)));
            match result {
                Ok(Ok(e)) => {
                    decoded += 1;
                    assert_eq!(e.values.len(), 3, "{:?}", String::from_utf8_lossy(&bytes));
                    assert!(e.values.iter().all(|v| v.is_finite()));
                    assert!(!e.stream.is_empty() && e.stream.len() <= 256);
                }
                Ok(Err(_)) => refused += 1,
                Err(_) => panic!("panicked on {:?}", String::from_utf8_lossy(&bytes)),
            }
        }
        assert!(
            decoded > 100 && refused > 100,
            "{decoded} decoded, {refused} refused"
        );
    }

    #[test]
    fn whitespace_and_field_order_do_not_matter() {
        let e = ok(
            &cfg(2),
            None,
            "\n { \"values\" : [ 1 , 2e0 ] ,\t\"ts\": 5, \"stream\" : \"a\" } \r\n",
            None,
        );
        assert_eq!(
            (e.stream.as_str(), e.ts_ms, e.values),
            ("a", 5, vec![1.0, 2.0])
        );
    }

    #[test]
    fn floats_round_trip_exactly() {
        let x = 0.1f64 + 0.2;
        let e = ok(
            &cfg(2),
            None,
            &format!(
                r#"{{"stream":"a","ts":1,"values":[{x},{}]}}"#,
                f32::MAX as f64
            ),
            None,
        );
        // The largest value the model can hold (f32::MAX) comes through exactly.
        assert_eq!(e.values, vec![x, f32::MAX as f64]);
    }

    #[test]
    fn oversize_is_checked_before_parsing() {
        let c = DecodeConfig {
            max_bytes: 16,
            ..cfg(1)
        };
        let e = err(&c, None, r#"{"stream":"a","ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::Oversize);
        assert!(
            e.detail.contains("31 bytes") && e.detail.contains("16"),
            "{e}"
        );
        // Garbage that is too long is still oversize, not not_json.
        assert_eq!(reason(&c, "not json at all, and long"), Reason::Oversize);
        // Exactly max_bytes is accepted.
        let exact = r#"{"value":1.5}"#;
        let c = DecodeConfig {
            max_bytes: exact.len(),
            ..cfg(1)
        };
        assert_eq!(ok(&c, Some("k"), exact, Some(9)).values, vec![1.5]);
    }

    #[test]
    fn not_json() {
        let c = cfg(1);
        for bad in [
            "",
            "   ",
            r#"{"stream":"a","ts":1,"value":1"#,
            r#"{"stream":"a" "ts":1}"#,
            r#"{'stream':'a'}"#,
            r#"stream=a ts=1 value=1"#,
            r#"{"stream":"a","ts":1,"value":1}}"#,
            r#"{"stream":"a","ts":1,"value":1} {"stream":"b"}"#,
            r#"{"stream":"a","ts":1,"values":[1,]}"#,
        ] {
            let e = err(&c, None, bad, None);
            assert_eq!(e.reason, Reason::NotJson, "{bad:?}: {e}");
        }
        let none = decode(&c, Some(b"k"), None, Some(1)).unwrap_err();
        assert_eq!(none.reason, Reason::NotJson);
        assert!(none.detail.contains("no value"), "{none}");
        let e = err(&c, None, r#"{"stream":"a","ts":1,"value":1"#, None);
        assert!(e.detail.contains("EOF"), "{e}");
        let bad_utf8 = decode(
            &c,
            None,
            Some(b"{\"stream\":\"\xff\",\"ts\":1,\"value\":1}"),
            None,
        )
        .unwrap_err();
        assert_eq!(bad_utf8.reason, Reason::NotJson, "{bad_utf8}");
    }

    #[test]
    fn missing_fields() {
        let c = cfg(1);
        let e = err(&c, None, r#"{"ts":1,"value":1}"#, Some(2));
        assert_eq!(e.reason, Reason::MissingField);
        assert!(
            e.detail.contains("`stream`") && e.detail.contains("Kafka key"),
            "{e}"
        );

        let e = err(&c, Some(b"a"), r#"{"value":1}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
        assert!(
            e.detail.contains("`ts`") && e.detail.contains("Kafka timestamp"),
            "{e}"
        );

        let e = err(&c, Some(b"a"), r#"{"ts":1,"reading":1}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
        assert!(
            e.detail.contains("`values`") && e.detail.contains("`value`"),
            "{e}"
        );

        let e = err(&c, None, r#"{}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
    }

    #[test]
    fn empty_stream_ids_are_refused() {
        let c = cfg(1);
        let e = err(&c, None, r#"{"stream":"","ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
        assert!(e.detail.contains("empty"), "{e}");
        // Even when a key could stand in: an empty field is a producer bug.
        let e = err(&c, Some(b"a"), r#"{"stream":"","ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
        // An empty key counts as no key.
        let e = err(&c, Some(b""), r#"{"ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::MissingField);
        assert_eq!(
            ok(&c, Some(""), r#"{"stream":"a","ts":1,"value":1}"#, None).stream,
            "a"
        );
    }

    #[test]
    fn bad_types_name_the_field_and_value() {
        let c = cfg(3);
        let cases: [(&str, &[&str]); 10] = [
            (
                r#"{"stream":17,"ts":1,"values":[1,2,3]}"#,
                &["`stream`", "17"],
            ),
            (
                r#"{"stream":null,"ts":1,"values":[1,2,3]}"#,
                &["`stream`", "null"],
            ),
            (
                r#"{"stream":"a","ts":true,"values":[1,2,3]}"#,
                &["`ts`", "true"],
            ),
            (
                r#"{"stream":"a","ts":[1],"values":[1,2,3]}"#,
                &["`ts`", "sequence"],
            ),
            (
                r#"{"stream":"a","ts":1,"values":"1,2,3"}"#,
                &["`values`", "\"1,2,3\""],
            ),
            (
                r#"{"stream":"a","ts":1,"values":[1,"2.5",3]}"#,
                &["`values`[1]", "\"2.5\""],
            ),
            (
                r#"{"stream":"a","ts":1,"values":[1,2,null]}"#,
                &["`values`[2]", "null"],
            ),
            (
                r#"{"stream":"a","ts":1,"values":[1,2,{"v":3}]}"#,
                &["`values`[2]", "map"],
            ),
            (
                r#"[{"stream":"a","ts":1,"values":[1,2,3]}]"#,
                &["the message", "object"],
            ),
            (r#"42"#, &["the message", "42"]),
        ];
        for (msg, words) in cases {
            let e = err(&c, None, msg, None);
            assert_eq!(e.reason, Reason::BadType, "{msg}: {e}");
            for w in words {
                assert!(e.detail.contains(w), "{msg}: {e} lacks {w}");
            }
        }
        let c1 = cfg(1);
        let e = err(&c1, None, r#"{"stream":"a","ts":1,"value":"7"}"#, None);
        assert_eq!(e.reason, Reason::BadType);
        assert!(
            e.detail.contains("`value`") && e.detail.contains("\"7\""),
            "{e}"
        );
    }

    #[test]
    fn values_and_value_together_are_bad_type() {
        let e = err(
            &cfg(1),
            None,
            r#"{"stream":"a","ts":1,"values":[1],"value":1}"#,
            None,
        );
        assert_eq!(e.reason, Reason::BadType);
        assert!(e.detail.contains("both"), "{e}");
    }

    #[test]
    fn duplicate_fields_are_bad_type() {
        let e = err(
            &cfg(1),
            None,
            r#"{"stream":"a","ts":1,"value":1,"stream":"b"}"#,
            None,
        );
        assert_eq!(e.reason, Reason::BadType);
        assert!(e.detail.contains("`stream` appears more than once"), "{e}");
        let e = err(
            &cfg(1),
            None,
            r#"{"stream":"a","ts":1,"ts":2,"value":1}"#,
            None,
        );
        assert_eq!(e.reason, Reason::BadType);
        // Unknown fields may repeat: they are not read.
        ok(
            &cfg(1),
            None,
            r#"{"x":1,"stream":"a","x":2,"ts":1,"value":1}"#,
            None,
        );
    }

    #[test]
    fn non_utf8_key_is_bad_type() {
        let e = err(&cfg(1), Some(b"me\xffter"), r#"{"ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::BadType);
        assert!(
            e.detail.contains("Kafka key") && e.detail.contains("UTF-8"),
            "{e}"
        );
        let e = err(
            &cfg(1),
            Some(b"\xc3"),
            r#"{"stream":"a","ts":1,"value":1}"#,
            None,
        );
        assert_eq!(e.reason, Reason::BadType);
    }

    #[test]
    fn wrong_width_names_both_counts() {
        let c = cfg(3);
        let e = err(&c, None, r#"{"stream":"a","ts":1,"values":[1,2]}"#, None);
        assert_eq!(e.reason, Reason::WrongWidth);
        assert!(e.detail.contains("has 2 values, expected 3"), "{e}");
        let e = err(
            &c,
            None,
            r#"{"stream":"a","ts":1,"values":[1,2,3,4]}"#,
            None,
        );
        assert!(e.detail.contains("has 4 values, expected 3"), "{e}");
        let e = err(&c, None, r#"{"stream":"a","ts":1,"values":[]}"#, None);
        assert!(e.detail.contains("has 0 values, expected 3"), "{e}");
        // The shorthand needs width 1.
        let e = err(&c, None, r#"{"stream":"a","ts":1,"value":1}"#, None);
        assert_eq!(e.reason, Reason::WrongWidth);
        assert!(e.detail.contains("expected 3"), "{e}");
    }

    #[test]
    fn non_finite_values() {
        let c = cfg(2);
        // What Python's json.dumps writes for float("nan") and float("inf").
        for (msg, token) in [
            (r#"{"stream":"a","ts":1,"values":[1.0,NaN]}"#, "`NaN`"),
            (
                r#"{"stream":"a","ts":1,"values":[Infinity,1.0]}"#,
                "`Infinity`",
            ),
            (
                r#"{"stream":"a","ts":1,"values":[1.0,-Infinity]}"#,
                "`-Infinity`",
            ),
        ] {
            let e = err(&c, None, msg, None);
            assert_eq!(e.reason, Reason::NonFinite, "{msg}: {e}");
            assert!(
                e.detail.contains("`values`") && e.detail.contains(token),
                "{e}"
            );
        }
        let e = err(
            &c,
            None,
            r#"{"stream":"a","ts":1,"values":[1,1e400]}"#,
            None,
        );
        assert_eq!(e.reason, Reason::NonFinite);
        assert!(e.detail.contains("`values`[1]"), "{e}");
        let e = err(
            &cfg(1),
            None,
            r#"{"stream":"a","ts":1,"value":-1e999}"#,
            None,
        );
        assert_eq!(e.reason, Reason::NonFinite);
        assert!(e.detail.contains("`value`"), "{e}");
        // "NaN" inside a string is only text.
        let e = ok(
            &c,
            None,
            r#"{"stream":"NaN","note":"Infinity","ts":1,"values":[1,2]}"#,
            None,
        );
        assert_eq!(e.stream, "NaN");
    }

    #[test]
    fn bad_timestamps() {
        let c = cfg(1);
        for (msg, word) in [
            (r#"{"stream":"a","ts":"yesterday","value":1}"#, "yesterday"),
            (
                r#"{"stream":"a","ts":"2016-02-30T00:00:00Z","value":1}"#,
                "day 30",
            ),
            (r#"{"stream":"a","ts":-5,"value":1}"#, "-5"),
            (
                r#"{"stream":"a","ts":1467331200000000000,"value":1}"#,
                "nanoseconds",
            ),
            (
                r#"{"stream":"a","ts":18446744073709551615,"value":1}"#,
                "18446744073709551615",
            ),
            (r#"{"stream":"a","ts":1e300,"value":1}"#, "1e300"),
            (r#"{"stream":"a","ts":1e400,"value":1}"#, "`ts`"),
            (r#"{"stream":"a","ts":NaN,"value":1}"#, "NaN"),
            (
                r#"{"stream":"a","ts":"1969-12-31T23:59:59Z","value":1}"#,
                "1969",
            ),
        ] {
            let e = err(&c, None, msg, None);
            assert_eq!(e.reason, Reason::BadTimestamp, "{msg}: {e}");
            assert!(e.detail.contains(word), "{msg}: {e} lacks {word}");
        }
        let e = err(&c, Some(b"a"), r#"{"value":1}"#, Some(-1));
        assert_eq!(e.reason, Reason::BadTimestamp);
        assert!(e.detail.contains("Kafka timestamp -1"), "{e}");
        // The range ends are accepted.
        assert_eq!(
            ok(&c, None, r#"{"stream":"a","ts":0,"value":1}"#, None).ts_ms,
            0
        );
        let max = format!(r#"{{"stream":"a","ts":{MAX_TS_MS},"value":1}}"#);
        assert_eq!(ok(&c, None, &max, None).ts_ms, MAX_TS_MS);
        let past = format!(r#"{{"stream":"a","ts":{},"value":1}}"#, MAX_TS_MS + 1);
        assert_eq!(reason(&c, &past), Reason::BadTimestamp);
        let max_str = r#"{"stream":"a","ts":"9999-12-31T23:59:59.999Z","value":1}"#;
        assert_eq!(ok(&c, None, max_str, None).ts_ms, MAX_TS_MS);
    }

    #[test]
    fn stream_mismatch() {
        let e = err(
            &cfg(1),
            Some(b"meter-18"),
            r#"{"stream":"meter-17","ts":1,"value":1}"#,
            None,
        );
        assert_eq!(e.reason, Reason::StreamMismatch);
        assert!(
            e.detail.contains("\"meter-17\"") && e.detail.contains("\"meter-18\""),
            "{e}"
        );
    }

    #[test]
    fn key_and_field_precedence() {
        let c = cfg(1);
        // Field only, key only, both equal.
        assert_eq!(
            ok(&c, None, r#"{"stream":"a","ts":1,"value":1}"#, None).stream,
            "a"
        );
        assert_eq!(ok(&c, Some("k"), r#"{"ts":1,"value":1}"#, None).stream, "k");
        assert_eq!(
            ok(&c, Some("k"), r#"{"stream":"k","ts":1,"value":1}"#, None).stream,
            "k"
        );
        // An escaped field equal to the key matches after unescaping.
        assert_eq!(
            ok(
                &c,
                Some("k\"1"),
                r#"{"stream":"k\"1","ts":1,"value":1}"#,
                None
            )
            .stream,
            "k\"1"
        );
    }

    #[test]
    fn shorthand_value() {
        let e = ok(&cfg(1), None, r#"{"stream":"a","ts":1,"value":-3}"#, None);
        assert_eq!(e.values, vec![-3.0]);
        let e = ok(
            &cfg(1),
            None,
            r#"{"stream":"a","ts":1,"values":[2.5]}"#,
            None,
        );
        assert_eq!(e.values, vec![2.5]);
    }

    #[test]
    fn timestamps() {
        let c = cfg(1);
        let at = |ts: &str| {
            ok(
                &c,
                None,
                &format!(r#"{{"stream":"a","ts":{ts},"value":1}}"#),
                Some(77),
            )
            .ts_ms
        };
        assert_eq!(at("1467331200000"), JULY_1_2016);
        assert_eq!(at("1467331200000.4"), JULY_1_2016);
        assert_eq!(at("1467331200000.5"), JULY_1_2016 + 1);
        assert_eq!(at("1.4673312e12"), JULY_1_2016);
        assert_eq!(at(r#""2016-07-01T00:00:00Z""#), JULY_1_2016);
        assert_eq!(at(r#""2016-07-01T02:00:00.250+02:00""#), JULY_1_2016 + 250);
        assert_eq!(at(r#""2016-07-01 00:00:00""#), JULY_1_2016);
        // Escapes in the string are resolved before parsing.
        assert_eq!(at(r#""2016-07-01T00:00:00\u005a""#), JULY_1_2016);
    }

    #[test]
    fn kafka_timestamp_fallback() {
        let c = cfg(1);
        assert_eq!(
            ok(&c, None, r#"{"stream":"a","value":1}"#, Some(JULY_1_2016)).ts_ms,
            JULY_1_2016
        );
        // The field wins over the Kafka timestamp.
        assert_eq!(
            ok(
                &c,
                None,
                r#"{"stream":"a","ts":5,"value":1}"#,
                Some(JULY_1_2016)
            )
            .ts_ms,
            5
        );
    }

    #[test]
    fn extra_fields_are_ignored() {
        let e = ok(
            &cfg(2),
            None,
            r#"{"site":{"id":[1,2,{"deep":null}],"name":"x\"y"},"stream":"a","unit":"kWh",
               "ts":1,"tags":["a","b"],"values":[1,2],"q":false,"n":1e999999}"#,
            None,
        );
        assert_eq!(e.values, vec![1.0, 2.0]);
    }

    #[test]
    fn configured_field_names() {
        let c = DecodeConfig {
            fields: Fields {
                stream: "sensor".into(),
                ts: "time".into(),
                values: "readings".into(),
                value: "reading".into(),
            },
            width: 2,
            max_bytes: 1024,
            max_stream_bytes: 256,
            max_ts_ms: MAX_TS_MS,
        };
        let e = ok(
            &c,
            None,
            r#"{"sensor":"s","time":9,"readings":[1,2],"stream":"ignored","values":"ignored"}"#,
            None,
        );
        assert_eq!(
            (e.stream.as_str(), e.ts_ms, e.values),
            ("s", 9, vec![1.0, 2.0])
        );
        let e = err(
            &c,
            None,
            r#"{"sensor":"s","time":9,"readings":[1,"x"]}"#,
            None,
        );
        assert!(e.detail.contains("`readings`[1]"), "{e}");
    }

    #[test]
    fn unicode_stream_ids() {
        let c = cfg(1);
        for id in [
            "Zürich/Wärmepumpe",
            "東京-7",
            "🌡️ sensor",
            "a\u{0}b",
            "tab\there",
        ] {
            let json = serde_json::to_string(id).unwrap();
            let msg = format!(r#"{{"stream":{json},"ts":1,"value":1}}"#);
            assert_eq!(ok(&c, None, &msg, None).stream, id);
            assert_eq!(ok(&c, Some(id), &msg, None).stream, id);
            assert_eq!(ok(&c, Some(id), r#"{"ts":1,"value":1}"#, None).stream, id);
        }
        let e = ok(
            &c,
            None,
            r#"{"stream":"\u6771\u4eac","ts":1,"value":1}"#,
            None,
        );
        assert_eq!(e.stream, "東京");
    }

    #[test]
    fn details_are_bounded() {
        let long = "x".repeat(2000);
        let e = err(
            &cfg(1),
            Some(b"k"),
            &format!(r#"{{"stream":"é{long}","ts":1,"value":1}}"#),
            None,
        );
        assert_eq!(e.reason, Reason::StreamMismatch);
        assert!(
            e.detail.len() <= MAX_DETAIL_BYTES && e.detail.ends_with('…'),
            "{}",
            e.detail.len()
        );
    }

    #[test]
    fn display_and_labels() {
        let e = err(&cfg(1), None, r#"{"ts":1,"value":1}"#, None);
        assert_eq!(e.to_string(), format!("missing_field: {}", e.detail));
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "oversize",
                "not_json",
                "missing_field",
                "bad_type",
                "wrong_width",
                "non_finite",
                "bad_timestamp",
                "stream_mismatch",
                "stream_too_long",
                "out_of_range",
                "future_timestamp",
                "late"
            ]
        );
    }
}
