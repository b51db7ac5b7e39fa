//! State that survives: each partition's learner checkpointed to a compacted
//! changelog topic, restored on assignment, idle streams evicted to it.
//!
//! * [`record`]: changelog keys and the binary form of one stream's state.
//! * [`changelog`]: the Kafka side: creating the topic, reading a partition
//!   back, fetching one evicted stream.
//!
//! This module's own part is pure bookkeeping ([`Checkpoints`]): which streams
//! a checkpoint writes, which it evicts, and how a partition's records turn
//! back into a [`Forecaster`].
//!
//! # The protocol
//!
//! Checkpoint `k` of a partition covers input offsets below `covered`. It
//! writes, to slot `k % 2`, every stream changed since checkpoint `k - 2` (the
//! last one that wrote this slot), so the slot then holds every stream's state
//! as of `covered`. Once those records and every prediction below `covered` are
//! acknowledged, the head record (weights, `k`, `covered`) is written; once it
//! is acknowledged, `covered` may be committed. Restoring takes the latest head
//! and its slot, and resumes at its `covered` offset, so the replayed events
//! meet exactly the state an uninterrupted run had: forecasts are identical.

pub mod changelog;
pub mod record;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::model::checkpoint::{CheckpointError, Reader, config_differences};
use crate::model::learner::Stream;
use crate::model::{Forecaster, ModelConfig, Scalar};
use record::Key;

/// Why a partition's state could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The head record is not a checkpoint that fits the `[model]` settings.
    #[error("changelog head of partition {partition}: {source}")]
    Head {
        /// Input partition.
        partition: i32,
        /// The cause.
        source: CheckpointError,
    },
    /// A stream record is malformed or does not fit.
    #[error("partition {partition}: {source}")]
    Stream {
        /// Input partition.
        partition: i32,
        /// The cause.
        source: record::RecordError,
    },
    /// The checkpoint was written under a model configuration that shapes
    /// the state differently (see [`state_shape_diff`]).
    #[error(
        "changelog head of partition {partition} was written under another model configuration: {differences}"
    )]
    Mismatch {
        /// Input partition.
        partition: i32,
        /// What differs, key by key.
        differences: String,
    },
}

/// The `[model]` keys that shape a partition's saved state; a checkpoint
/// written under other values cannot continue under these.
pub const STATE_SHAPING_KEYS: [&str; 13] = [
    "cell",
    "inputs",
    "targets",
    "hidden",
    "layers",
    "horizon",
    "tbptt",
    "normalize",
    "weight_scope",
    "predict",
    "learning",
    "combine",
    "intervals",
];

/// The state-shaping keys whose values differ between the configuration a
/// checkpoint was written under (`saved`) and `current`, as
/// `key: checkpoint X, configured Y` (empty when they agree).
pub fn state_shape_diff(saved: &ModelConfig, current: &ModelConfig) -> Vec<String> {
    let saved_json = serde_json::to_value(saved).unwrap_or_default();
    let mut out = config_differences(&saved_json, current, &STATE_SHAPING_KEYS);
    if saved.linear_lags() != current.linear_lags() {
        out.push(format!(
            "linear.lags: checkpoint {} rows, configured {} ({} rows)",
            saved.linear_lags(),
            current.linear.lags,
            current.linear_lags()
        ));
    }
    out
}

/// The latest record of each key of a changelog partition: offset and value (`None` for a tombstone).
pub type Latest = foldhash::HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>;

/// One record a checkpoint writes: key and value (`None` deletes the key).
#[derive(Debug)]
pub struct Record {
    /// Changelog key.
    pub key: Vec<u8>,
    /// Value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The stream records of one checkpoint, and which of them evict their stream.
#[derive(Debug)]
pub struct Plan {
    /// Sequence number of the checkpoint.
    pub seq: u64,
    /// Records to write before the head.
    pub records: Vec<Record>,
    /// `(index into records, stream)` of streams to drop from memory once written.
    pub evict: Vec<(usize, String)>,
}

/// One partition's checkpoint bookkeeping.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    partition: i32,
    /// Sequence number of the next checkpoint; events are stamped with it.
    next: u64,
    /// Newest event time seen in the partition, epoch ms.
    max_ts: i64,
    /// Evict streams whose newest event is older than `max_ts - idle_ttl_ms`.
    idle_ttl_ms: Option<i64>,
    /// Evicted streams: key hash → changelog offset of their state record.
    idle: HashMap<u64, i64>,
    /// Keys an unfinished checkpoint wrote for streams the restored state does
    /// not have, and records that could not be decoded.
    stale: Vec<Vec<u8>>,
    /// The input topic, written into the head (checked on restore).
    topic: Option<String>,
    /// The input topic's broker id, when the broker has one.
    topic_id: Option<String>,
    /// Streams kept in memory at most: past it, the least recently seen are
    /// evicted at each checkpoint, as idle streams are.
    max_streams: Option<usize>,
}

/// The event time below which streams go so that at most `cap` of the
/// streams last seen at `ts` stay (ties at the cutoff go too); `None` when
/// they fit.
pub fn least_recent_cutoff(mut ts: Vec<i64>, cap: usize) -> Option<i64> {
    if ts.len() <= cap {
        return None;
    }
    let excess = ts.len() - cap;
    let (_, nth, _) = ts.select_nth_unstable(excess - 1);
    Some(*nth + 1)
}

/// Hash of a stream id in the evicted-stream index (SipHash with fixed keys: stable across runs).
fn key_hash(stream: &str) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    stream.hash(&mut h);
    h.finish()
}

impl Checkpoints {
    /// Bookkeeping for a partition with no checkpoint yet.
    pub fn new(partition: i32, idle_ttl_ms: Option<i64>) -> Self {
        Checkpoints {
            partition,
            next: 1,
            max_ts: i64::MIN,
            idle_ttl_ms,
            idle: HashMap::new(),
            stale: Vec::new(),
            topic: None,
            topic_id: None,
            max_streams: None,
        }
    }

    /// Caps the streams kept in memory (`state.max_streams`).
    pub fn set_max_streams(&mut self, cap: Option<usize>) {
        self.max_streams = cap;
    }

    /// With a cap and more streams than it: the event time below which a
    /// stream is evicted so that at most `cap` stay (ties at the cutoff go too).
    fn crowding_cutoff<S: Scalar>(
        &self,
        f: &Forecaster<S>,
        idle_before: Option<i64>,
    ) -> Option<i64> {
        let cap = self.max_streams?;
        if f.stream_count() <= cap {
            return None;
        }
        let ts = f
            .streams()
            .map(|(_, s)| s.last_ts_ms)
            .filter(|t| idle_before.is_none_or(|h| *t >= h))
            .collect();
        least_recent_cutoff(ts, cap)
    }

    /// Names the input topic this partition's checkpoints cover, and its
    /// broker id if it has one (written into every head).
    pub fn set_topic(&mut self, topic: &str, id: Option<&str>) {
        self.topic = Some(topic.to_string());
        self.topic_id = id.map(str::to_string);
    }

    /// The sequence number the next checkpoint will have (stamp events with it).
    pub fn generation(&self) -> u64 {
        self.next
    }

    /// Notes an event's time, seen when the wall clock read `now_ms`. The
    /// idle TTL counts back from the newest time noted, and a time ahead of
    /// the wall clock counts as now: one event stamped hours ahead (as
    /// `events.max_future` lets through) cannot make every stream idle.
    pub fn saw(&mut self, ts_ms: i64, now_ms: i64) {
        self.max_ts = self.max_ts.max(ts_ms.min(now_ms));
    }

    /// Streams evicted and not back yet.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// The changelog offset of an evicted stream's state, if `stream` was evicted.
    pub fn evicted(&self, stream: &str) -> Option<i64> {
        if self.idle.is_empty() {
            return None;
        }
        self.idle.get(&key_hash(stream)).copied()
    }

    /// Brings an evicted stream back from its record (fetched from the changelog).
    pub fn bring_back<S: Scalar>(
        &mut self,
        f: &mut Forecaster<S>,
        stream: &str,
        value: &[u8],
    ) -> Result<(), RestoreError> {
        let s = decode(f, self.partition, stream, value)?;
        self.idle.remove(&key_hash(stream));
        f.insert_stream(stream, s);
        Ok(())
    }

    /// The records of the next checkpoint: every stream changed since the
    /// checkpoint before last, every stream idle past the TTL (to evict it),
    /// and tombstones for records an unfinished checkpoint left behind.
    pub fn plan<S: Scalar>(&self, f: &Forecaster<S>) -> Plan {
        let seq = self.next;
        let slot = (seq % 2) as u8;
        let horizon = self.idle_ttl_ms.map(|ttl| self.max_ts.saturating_sub(ttl));
        // Kept until the checkpoint is finished: a failed one retries them.
        let mut records: Vec<Record> = self
            .stale
            .iter()
            .map(|key| Record {
                key: key.clone(),
                value: None,
            })
            .collect();
        let mut evict = Vec::new();
        let crowded = self.crowding_cutoff(f, horizon);
        let mut scratch = Vec::new();
        for (stream, s) in f.streams() {
            let idle = horizon.is_some_and(|h| s.last_ts_ms < h)
                || crowded.is_some_and(|c| s.last_ts_ms < c);
            if s.touched + 1 >= seq || idle {
                let key = Key::Stream {
                    partition: self.partition,
                    slot,
                    stream,
                }
                .to_bytes();
                // Encoded into one scratch buffer, then copied at its exact
                // length: a checkpoint holds every record at once, and a
                // growing Vec would double each one's capacity.
                scratch.clear();
                record::encode_stream(&mut scratch, seq, s);
                let value = scratch.to_vec();
                if idle {
                    evict.push((records.len(), stream.to_string()));
                }
                records.push(Record {
                    key,
                    value: Some(value),
                });
            }
        }
        Plan {
            seq,
            records,
            evict,
        }
    }

    /// The head record of checkpoint `seq`, covering input offsets below `covered`.
    pub fn head<S: Scalar>(&self, f: &Forecaster<S>, seq: u64, covered: i64) -> Record {
        let mut meta = vec![
            ("recur.checkpoint.seq", seq.to_string()),
            ("recur.checkpoint.covered", covered.to_string()),
            ("recur.checkpoint.max_ts", self.max_ts.to_string()),
            ("recur.checkpoint.partition", self.partition.to_string()),
        ];
        if let Some(t) = &self.topic {
            meta.push(("recur.checkpoint.topic", t.clone()));
        }
        if let Some(id) = &self.topic_id {
            meta.push(("recur.checkpoint.topic_id", id.clone()));
        }
        let value = f.model_to_safetensors(&meta);
        Record {
            key: Key::Head {
                partition: self.partition,
            }
            .to_bytes(),
            value: Some(value),
        }
    }

    /// After the head of `plan` was acknowledged: evicts the streams it wrote
    /// for that (`offsets[i]` is where record `i` landed) and moves on.
    pub fn finish<S: Scalar>(&mut self, f: &mut Forecaster<S>, plan: &Plan, offsets: &[i64]) {
        for (i, stream) in &plan.evict {
            if f.remove_stream(stream).is_some() {
                self.idle.insert(key_hash(stream), offsets[*i]);
            }
        }
        self.stale.clear();
        self.next = plan.seq + 1;
        f.set_clock(crate::model::Clock {
            ts_ms: self.max_ts,
            generation: self.next,
        });
    }
}

/// One stream's record decoded into a fresh stream of `f`'s shape.
fn decode<S: Scalar>(
    f: &Forecaster<S>,
    partition: i32,
    stream: &str,
    value: &[u8],
) -> Result<Stream<S>, RestoreError> {
    let mut s = f.new_stream();
    let bad = |reason: String| RestoreError::Stream {
        partition,
        source: record::RecordError {
            stream: stream.into(),
            reason,
        },
    };
    record::decode_stream(stream, value, &mut s)
        .map_err(|source| RestoreError::Stream { partition, source })?;
    // The counters index the ring: check them against this learner's shape.
    f.state_layout()
        .check_counters(s.seen, s.ring_len.into(), s.ring_head.into())
        .map_err(bad)?;
    Ok(s)
}

/// A partition's state read back from its changelog records.
pub struct Restored<S> {
    /// The learner, with weights and every live stream.
    pub forecaster: Forecaster<S>,
    /// The bookkeeping to continue checkpointing with.
    pub checkpoints: Checkpoints,
    /// Input offset to resume at (`None`: no checkpoint, start where the group left off).
    pub resume: Option<i64>,
    /// Streams loaded into memory.
    pub loaded: usize,
    /// Stream records that could not be decoded: skipped (those streams start
    /// afresh) and deleted at the next checkpoint.
    pub skipped: Vec<String>,
    /// The input topic the head says it covers (`None` for older heads).
    pub topic: Option<String>,
    /// That topic's broker id (`None` for older heads and brokers without ids).
    pub topic_id: Option<String>,
}

/// Rebuilds partition `partition`'s learner from the latest changelog records.
pub fn restore<S: Scalar>(
    cfg: &ModelConfig,
    partition: i32,
    idle_ttl_ms: Option<i64>,
    latest: &Latest,
) -> Result<Restored<S>, RestoreError> {
    let mut f = Forecaster::<S>::new(cfg.clone()).expect("model config was validated at start");
    let mut cp = Checkpoints::new(partition, idle_ttl_ms);
    let Some(head) = find_head(latest, partition) else {
        // No finished checkpoint: whatever stream records exist are from an
        // unfinished first one. Delete them at the first checkpoint.
        return Ok(fresh(cfg, partition, idle_ttl_ms, latest));
    };
    let meta = read_head(&mut f, partition, head)?;
    let seq = meta.seq;
    cp.max_ts = meta.max_ts;
    let slot = (seq % 2) as u8;
    let horizon = idle_ttl_ms.map(|ttl| cp.max_ts.saturating_sub(ttl));
    let mut skipped = Vec::new();
    let (live, other) = sort_stream_records(&mut cp, latest, slot, seq, horizon, &mut skipped);
    let mut loaded = load_live(&mut f, &mut cp, seq, slot, &live, &mut skipped);
    loaded += settle_other_slot(&mut f, &mut cp, latest, slot, seq, other, &mut skipped);
    cp.next = seq + 1;
    f.set_clock(crate::model::Clock {
        ts_ms: cp.max_ts,
        generation: cp.next,
    });
    Ok(Restored {
        forecaster: f,
        checkpoints: cp,
        resume: Some(meta.covered),
        loaded,
        skipped,
        topic: meta.topic,
        topic_id: meta.topic_id,
    })
}

/// A partition started afresh over `latest`: no state restored, every stream
/// record of the partition deleted at the first checkpoint (whose head then
/// replaces any old one).
pub fn fresh<S: Scalar>(
    cfg: &ModelConfig,
    partition: i32,
    idle_ttl_ms: Option<i64>,
    latest: &Latest,
) -> Restored<S> {
    let mut cp = Checkpoints::new(partition, idle_ttl_ms);
    cp.stale = stream_keys(latest, partition)
        .map(|(k, ..)| k.to_vec())
        .collect();
    Restored {
        forecaster: Forecaster::<S>::new(cfg.clone()).expect("model config was validated at start"),
        checkpoints: cp,
        resume: None,
        loaded: 0,
        skipped: Vec::new(),
        topic: None,
        topic_id: None,
    }
}

/// What a head record says about its checkpoint.
struct HeadMeta {
    /// Sequence number of the checkpoint.
    seq: u64,
    /// Input offsets below this are covered.
    covered: i64,
    /// Newest event time of the partition at the checkpoint, epoch ms.
    max_ts: i64,
    /// The input topic it covers, if the head names one.
    topic: Option<String>,
    /// That topic's broker id, if the broker had one.
    topic_id: Option<String>,
}

/// The value of `partition`'s head record, if it has one (a tombstone counts as none).
fn find_head(latest: &Latest, partition: i32) -> Option<&[u8]> {
    latest
        .get(&Key::Head { partition }.to_bytes())
        .and_then(|(_, v)| v.as_deref())
}

/// Loads the head record's weights into `f` and reads its metadata.
fn read_head<S: Scalar>(
    f: &mut Forecaster<S>,
    partition: i32,
    head: &[u8],
) -> Result<HeadMeta, RestoreError> {
    let head_err = |source| RestoreError::Head { partition, source };
    let reader = Reader::new(head).map_err(head_err)?;
    // The shape first: a head under another configuration is named as such,
    // not as the first tensor that does not fit.
    let config: ModelConfig =
        serde_json::from_str(reader.need_meta("recur.config").map_err(head_err)?).map_err(|e| {
            head_err(CheckpointError::Format(format!(
                "metadata `recur.config`: {e}"
            )))
        })?;
    let differences = state_shape_diff(&config, f.config());
    if !differences.is_empty() {
        return Err(RestoreError::Mismatch {
            partition,
            differences: differences.join("; "),
        });
    }
    f.load_weights(&reader).map_err(head_err)?;
    let meta = |k: &str| -> Result<i64, RestoreError> {
        reader
            .need_meta(k)
            .map_err(head_err)?
            .parse::<i64>()
            .map_err(|e| head_err(CheckpointError::Format(format!("metadata `{k}`: {e}"))))
    };
    let seq = meta("recur.checkpoint.seq")? as u64;
    let covered = meta("recur.checkpoint.covered")?;
    let max_ts = meta("recur.checkpoint.max_ts")?;
    Ok(HeadMeta {
        seq,
        covered,
        max_ts,
        topic: reader.meta("recur.checkpoint.topic").map(str::to_string),
        topic_id: reader.meta("recur.checkpoint.topic_id").map(str::to_string),
    })
}

/// A stream record of the head's slot to load: stream, value.
type LiveRecord<'a> = (&'a str, &'a [u8]);

/// A stream record of the other slot: key, stream, value.
type OtherRecord<'a> = (&'a [u8], &'a str, &'a [u8]);

/// Sorts the stream records of `cp`'s partition (tombstones skipped): those of
/// the head's `slot` become stale (newer than `seq`), evicted (idle before
/// `horizon`, into `cp`'s idle book) or live (returned to load); those of the
/// other slot are returned for [`settle_other_slot`].
fn sort_stream_records<'a>(
    cp: &mut Checkpoints,
    latest: &'a Latest,
    slot: u8,
    seq: u64,
    horizon: Option<i64>,
    skipped: &mut Vec<String>,
) -> (Vec<LiveRecord<'a>>, Vec<OtherRecord<'a>>) {
    let partition = cp.partition;
    let mut other = Vec::new();
    let mut live = Vec::with_capacity(latest.len() / 2);
    for (key, s_slot, stream, offset, value) in stream_keys(latest, partition) {
        let Some(value) = value else { continue };
        if s_slot != slot {
            other.push((key, stream, value));
            continue;
        }
        let Some(header) = record::stream_header(value) else {
            skip(cp, key, stream, "not a recur stream record", skipped);
            continue;
        };
        if header.seq > seq {
            // Cannot happen with recur's write order; keep the slot consistent regardless.
            cp.stale.push(key.to_vec());
        } else if horizon.is_some_and(|h| header.last_ts_ms < h) {
            cp.idle.insert(key_hash(stream), offset);
        } else {
            live.push((stream, value));
        }
    }
    (live, other)
}

/// Skips a stream record that cannot be restored: logged, listed, and its
/// key deleted at the next checkpoint (the stream starts afresh).
fn skip(cp: &mut Checkpoints, key: &[u8], stream: &str, why: &str, skipped: &mut Vec<String>) {
    if skipped.len() < 10 {
        tracing::warn!(
            partition = cp.partition,
            "changelog record of stream {stream:?} skipped, the stream starts afresh: {why}"
        );
    }
    skipped.push(stream.to_string());
    cp.stale.push(key.to_vec());
}

/// One stream's record decoded as restored at checkpoint `seq`.
///
/// Restored streams are marked changed at `seq`, so the next checkpoint
/// rewrites them: it must leave its slot whole.
fn load<S: Scalar>(
    f: &Forecaster<S>,
    partition: i32,
    seq: u64,
    stream: &str,
    value: &[u8],
) -> Result<Stream<S>, RestoreError> {
    decode(f, partition, stream, value).map(|mut s| {
        s.touched = seq;
        s
    })
}

/// Decodes the `live` records into `f`; returns how many streams it inserted.
fn load_live<S: Scalar>(
    f: &mut Forecaster<S>,
    cp: &mut Checkpoints,
    seq: u64,
    slot: u8,
    live: &[LiveRecord<'_>],
    skipped: &mut Vec<String>,
) -> usize {
    let partition = cp.partition;
    // Decoding is independent per stream: spread it over the cores, then insert.
    let threads = if live.len() < 20_000 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let chunk = live.len().div_ceil(threads).max(1);
    let shared: &Forecaster<S> = f;
    let decoded: Vec<Vec<_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = live
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&(stream, value)| {
                            (
                                Box::<str>::from(stream),
                                load(shared, partition, seq, stream, value),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a decoding thread panicked"))
            .collect()
    });
    f.reserve_streams(live.len());
    let mut loaded = 0;
    for part in decoded {
        for (stream, s) in part {
            match s {
                Ok(s) => {
                    f.insert_stream_boxed(stream, s);
                    loaded += 1;
                }
                Err(e) => {
                    let key = Key::Stream {
                        partition,
                        slot,
                        stream: &stream,
                    }
                    .to_bytes();
                    skip(cp, &key, &stream, &e.to_string(), skipped);
                }
            }
        }
    }
    loaded
}

/// The other slot may hold records of an unfinished checkpoint `seq + 1`:
/// the next checkpoint writes that slot, so it must overwrite or delete them.
/// Loads the streams such records need rewritten (taking them out of `cp`'s
/// idle book), marks the rest stale; returns how many streams it loaded.
fn settle_other_slot<S: Scalar>(
    f: &mut Forecaster<S>,
    cp: &mut Checkpoints,
    latest: &Latest,
    slot: u8,
    seq: u64,
    other: Vec<OtherRecord<'_>>,
    skipped: &mut Vec<String>,
) -> usize {
    let partition = cp.partition;
    let mut loaded = 0;
    for (key, stream, value) in other {
        let newer = record::stream_header(value).is_none_or(|h| h.seq > seq);
        if !newer || f.stream(stream).is_some() {
            continue;
        }
        let own = latest.get(
            &Key::Stream {
                partition,
                slot,
                stream,
            }
            .to_bytes(),
        );
        match own {
            Some((_, Some(v))) => match load(f, partition, seq, stream, v) {
                // Evicted in the restored state: load it so the next checkpoint rewrites it.
                Ok(s) => {
                    f.insert_stream(stream, s);
                    cp.idle.remove(&key_hash(stream));
                    loaded += 1;
                }
                Err(e) => {
                    cp.idle.remove(&key_hash(stream));
                    let own_key = Key::Stream {
                        partition,
                        slot,
                        stream,
                    }
                    .to_bytes();
                    skip(cp, &own_key, stream, &e.to_string(), skipped);
                    cp.stale.push(key.to_vec());
                }
            },
            _ => cp.stale.push(key.to_vec()),
        }
    }
    loaded
}

/// The stream records of `partition`: key, slot, stream, offset, value.
fn stream_keys(
    latest: &Latest,
    partition: i32,
) -> impl Iterator<Item = (&[u8], u8, &str, i64, Option<&[u8]>)> {
    latest
        .iter()
        .filter_map(move |(k, (offset, v))| match Key::parse(k) {
            Some(Key::Stream {
                partition: p,
                slot,
                stream,
            }) if p == partition => Some((k.as_slice(), slot, stream, *offset, v.as_deref())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Clock, Learning};

    fn cfg() -> ModelConfig {
        ModelConfig {
            hidden: 8,
            tbptt: 4,
            learning: Learning::On,
            ..ModelConfig::default()
        }
    }

    /// Applies records to a fake changelog partition, as a compacted topic would keep them.
    fn write(log: &mut Latest, next_offset: &mut i64, records: &[Record]) -> Vec<i64> {
        records
            .iter()
            .map(|r| {
                let o = *next_offset;
                *next_offset += 1;
                log.insert(r.key.clone(), (o, r.value.clone()));
                o
            })
            .collect()
    }

    fn feed(
        f: &mut Forecaster<f32>,
        cp: &mut Checkpoints,
        events: std::ops::Range<usize>,
    ) -> Vec<f32> {
        let mut out = Vec::new();
        for i in events {
            let stream = format!("s{}", i % 7);
            let ts = i as i64 * 1000;
            cp.saw(ts, i64::MAX);
            f.set_clock(Clock {
                ts_ms: ts,
                generation: cp.generation(),
            });
            let v = ((i as f32) * 0.3).sin() + (i % 7) as f32;
            out.extend_from_slice(f.observe(&stream, &[v]).unwrap().forecast);
        }
        out
    }

    /// The value of the changelog record at offset `at`.
    fn value_at(log: &Latest, at: i64) -> Vec<u8> {
        log.values()
            .find(|(o, _)| *o == at)
            .and_then(|(_, v)| v.clone())
            .expect("a record at that offset")
    }

    fn checkpoint(
        f: &mut Forecaster<f32>,
        cp: &mut Checkpoints,
        log: &mut Latest,
        off: &mut i64,
        covered: i64,
    ) {
        let plan = cp.plan(f);
        let offsets = write(log, off, &plan.records);
        let head = cp.head(f, plan.seq, covered);
        write(log, off, &[head]);
        cp.finish(f, &plan, &offsets);
    }

    /// A partition with one finished checkpoint at offset 100 (7 streams).
    fn checkpointed(topic: Option<&str>) -> (Latest, Forecaster<f32>, Checkpoints) {
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, None);
        if let Some(t) = topic {
            cp.set_topic(t, None);
        }
        let (mut log, mut off) = (Latest::default(), 0);
        feed(&mut f, &mut cp, 0..100);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 100);
        (log, f, cp)
    }

    #[test]
    fn a_checkpoint_under_another_model_shape_is_refused_naming_what_differs() {
        let (log, ..) = checkpointed(None);
        for (other, key) in [
            (ModelConfig { tbptt: 6, ..cfg() }, "tbptt"),
            (
                ModelConfig {
                    horizon: 2,
                    ..cfg()
                },
                "horizon",
            ),
            (
                ModelConfig {
                    learning: Learning::Off,
                    ..cfg()
                },
                "learning",
            ),
            (ModelConfig { hidden: 9, ..cfg() }, "hidden"),
        ] {
            match restore::<f32>(&other, 0, None, &log) {
                Err(RestoreError::Mismatch { differences, .. }) => {
                    assert!(differences.starts_with(key), "{key}: {differences}")
                }
                Err(e) => panic!("{key}: another error: {e}"),
                Ok(_) => panic!("{key}: restored under another shape"),
            }
        }
        // What does not shape the state may change between runs.
        let lr = ModelConfig {
            update_every: 4,
            ..cfg()
        };
        assert_eq!(
            restore::<f32>(&lr, 0, None, &log).unwrap().resume,
            Some(100)
        );
    }

    #[test]
    fn the_head_names_its_input_topic() {
        let (log, ..) = checkpointed(Some("events"));
        assert_eq!(
            restore::<f32>(&cfg(), 0, None, &log)
                .unwrap()
                .topic
                .as_deref(),
            Some("events")
        );
    }

    #[test]
    fn an_unreadable_stream_record_is_skipped_and_the_rest_restore() {
        let (mut log, ..) = checkpointed(None);
        let slot = 1; // checkpoint 1 writes slot 1
        let bad = Key::Stream {
            partition: 0,
            slot,
            stream: "s3",
        }
        .to_bytes();
        let entry = log.get_mut(&bad).expect("s3 was checkpointed");
        let v = entry.1.as_mut().unwrap();
        v.truncate(v.len() / 2);
        let r = restore::<f32>(&cfg(), 0, None, &log).unwrap();
        assert_eq!(r.resume, Some(100));
        assert_eq!((r.loaded, r.skipped.clone()), (6, vec!["s3".to_string()]));
        assert!(r.forecaster.stream("s3").is_none() && r.forecaster.stream("s4").is_some());
        // Its key is deleted at the next checkpoint.
        let plan = r.checkpoints.plan(&r.forecaster);
        assert!(
            plan.records
                .iter()
                .any(|rec| rec.key == bad && rec.value.is_none())
        );
    }

    /// Stream `s2`'s record as a checkpoint wrote it.
    fn s2_record() -> Vec<u8> {
        let (log, ..) = checkpointed(None);
        let key = Key::Stream {
            partition: 0,
            slot: 1,
            stream: "s2",
        }
        .to_bytes();
        log[&key].1.clone().unwrap()
    }

    #[test]
    fn corrupt_stream_records_never_panic_and_never_index_out_of_range() {
        let good = s2_record();
        let f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4000 {
            let mut bytes = good.clone();
            match round % 3 {
                0 => bytes.truncate(next() as usize % bytes.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = next() as usize % bytes.len();
                        bytes[i] = next() as u8;
                    }
                }
                _ => {
                    // The counters (bytes 20..40) are where an index comes from.
                    let i = 20 + next() as usize % 20;
                    bytes[i] = next() as u8;
                }
            }
            let result = std::panic::catch_unwind(|| {
                if let Ok(mut s) = decode(&f, 0, "s2", &bytes) {
                    // A record that decodes must also be safe to continue from.
                    let mut g = f.clone();
                    s.touched = 0;
                    g.insert_stream("s2", s);
                    for k in 0..8 {
                        let _ = g.observe("s2", &[k as f32]);
                    }
                }
            });
            assert!(result.is_ok(), "round {round}: a corrupt record panicked");
        }
    }

    /// A ring count short of the events seen once let training read a
    /// window of no events (a panic in the backward pass, found by the
    /// fuzzing above): such a record is refused, naming the ring.
    #[test]
    fn a_record_whose_ring_holds_fewer_events_than_seen_is_refused() {
        let mut bytes = s2_record();
        let f = Forecaster::<f32>::new(cfg()).unwrap();
        let good = decode(&f, 0, "s2", &bytes).expect("the record as written decodes");
        assert!(good.seen >= f.state_layout().ring as u64, "a full ring");
        // `ring_len` is the u32 after the header (20 bytes) and `seen` (8).
        bytes[28..32].copy_from_slice(&0u32.to_le_bytes());
        let err = decode(&f, 0, "s2", &bytes).expect_err("an empty ring after many events");
        assert!(err.to_string().contains("the ring holds 0 events"), "{err}");
    }

    /// Where the ring is read from the history (stacking, the default) its
    /// oldest event is always at slot 0: a record that puts it elsewhere
    /// was not written by this learner, and is refused naming the counters.
    #[test]
    fn a_record_whose_ring_reads_the_history_but_starts_past_slot_0_is_refused() {
        let mut bytes = s2_record();
        let f = Forecaster::<f32>::new(cfg()).unwrap();
        assert!(
            f.state_layout().ring_in_history,
            "stacking keeps no ring copy"
        );
        let good = decode(&f, 0, "s2", &bytes).expect("the record as written decodes");
        assert_eq!(good.ring_head, 0);
        // `ring_head` is the u32 after `ring_len` (bytes 28..32).
        bytes[32..36].copy_from_slice(&1u32.to_le_bytes());
        let err = decode(&f, 0, "s2", &bytes).expect_err("a ring that starts at slot 1");
        assert!(err.to_string().contains("ring counters"), "{err}");
    }

    #[test]
    fn restoring_a_finished_checkpoint_continues_bit_for_bit() {
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, None);
        let (mut log, mut off) = (Latest::default(), 0);
        feed(&mut f, &mut cp, 0..100);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 100);
        feed(&mut f, &mut cp, 100..150);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 150);
        let expected = feed(&mut f, &mut cp, 150..200);

        let mut r = restore::<f32>(&cfg(), 0, None, &log).unwrap();
        assert_eq!(r.resume, Some(150));
        assert_eq!(r.loaded, 7);
        let got = feed(&mut r.forecaster, &mut r.checkpoints, 150..200);
        assert_eq!(got, expected);
    }

    #[test]
    fn an_unfinished_checkpoint_leaves_the_previous_one_whole() {
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, None);
        let (mut log, mut off) = (Latest::default(), 0);
        feed(&mut f, &mut cp, 0..60);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 60);
        let expected = feed(&mut f, &mut cp, 60..120);
        // Checkpoint 2 at 120 gets half its stream records out, then the process dies.
        let plan = cp.clone().plan(&f);
        assert!(plan.records.len() > 2);
        write(&mut log, &mut off, &plan.records[..plan.records.len() / 2]);
        // A stream only the dead run had: its record must be cleaned up.
        let mut ghost = Vec::new();
        record::encode_stream(&mut ghost, 2, &f.new_stream());
        write(
            &mut log,
            &mut off,
            &[Record {
                key: Key::Stream {
                    partition: 0,
                    slot: 0,
                    stream: "ghost",
                }
                .to_bytes(),
                value: Some(ghost),
            }],
        );

        let mut r = restore::<f32>(&cfg(), 0, None, &log).unwrap();
        assert_eq!(r.resume, Some(60));
        let got = feed(&mut r.forecaster, &mut r.checkpoints, 60..120);
        assert_eq!(got, expected, "the replay meets the state of checkpoint 1");
        // The next checkpoint deletes the ghost and rewrites its slot; restoring it then works too.
        let (mut f2, mut cp2) = (r.forecaster, r.checkpoints);
        let ghost_key = Key::Stream {
            partition: 0,
            slot: 0,
            stream: "ghost",
        }
        .to_bytes();
        let tombstones = |plan: &Plan| {
            plan.records
                .iter()
                .filter(|r| r.key == ghost_key && r.value.is_none())
                .count()
        };
        // A checkpoint that fails before its head keeps the tombstone for the retry.
        assert_eq!(tombstones(&cp2.plan(&f2)), 1);
        assert_eq!(tombstones(&cp2.plan(&f2)), 1);
        checkpoint(&mut f2, &mut cp2, &mut log, &mut off, 120);
        assert_eq!(log[&ghost_key].1, None, "tombstoned");
        assert_eq!(tombstones(&cp2.plan(&f2)), 0, "and forgotten once finished");
        let expected = feed(&mut f2, &mut cp2, 120..170);
        let mut r = restore::<f32>(&cfg(), 0, None, &log).unwrap();
        assert_eq!(r.resume, Some(120));
        assert_eq!(
            feed(&mut r.forecaster, &mut r.checkpoints, 120..170),
            expected
        );
    }

    #[test]
    fn idle_streams_are_evicted_and_come_back_unchanged() {
        let ttl = Some(20_000);
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, ttl);
        let mut reference = Forecaster::<f32>::new(cfg()).unwrap();
        let mut ref_cp = Checkpoints::new(0, None);
        let (mut log, mut off) = (Latest::default(), 0);
        // Stream "quiet" speaks early, then falls silent while s0..s6 go on.
        for g in [&mut f, &mut reference] {
            for i in 0..5 {
                g.observe("quiet", &[i as f32]).unwrap();
            }
        }
        let a = feed(&mut f, &mut cp, 0..100);
        let b = feed(&mut reference, &mut ref_cp, 0..100);
        assert_eq!(a, b);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 100);
        assert!(f.stream("quiet").is_none(), "evicted");
        assert_eq!(cp.idle_count(), 1);
        assert_eq!(f.stream_count(), 7);
        // It returns: fetched back by its offset, it forecasts as if never gone.
        let at = cp.evicted("quiet").unwrap();
        let value = value_at(&log, at);
        cp.bring_back(&mut f, "quiet", &value).unwrap();
        assert_eq!(
            f.observe("quiet", &[9.0]).unwrap().forecast,
            reference.observe("quiet", &[9.0]).unwrap().forecast
        );
        assert_eq!(cp.idle_count(), 0);
    }

    #[test]
    fn an_event_stamped_ahead_of_the_wall_clock_does_not_make_every_stream_idle() {
        // events.max_future lets through events up to a day ahead: one such
        // event must not move "now" for the idle TTL.
        let hour = 3_600_000;
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, Some(hour));
        let (mut log, mut off) = (Latest::default(), 0);
        let now = 1_700_000_000_000i64;
        for (i, (stream, ts)) in [("a", now), ("b", now), ("ahead", now + 20 * hour)]
            .into_iter()
            .enumerate()
        {
            cp.saw(ts, now);
            f.set_clock(Clock {
                ts_ms: ts,
                generation: cp.generation(),
            });
            f.observe(stream, &[i as f32]).unwrap();
        }
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 3);
        assert_eq!(f.stream_count(), 3, "no stream is idle yet");
        assert_eq!(cp.idle_count(), 0);
    }

    #[test]
    fn past_max_streams_the_least_recently_seen_are_evicted_and_come_back() {
        let mut f = Forecaster::<f32>::new(cfg()).unwrap();
        let mut cp = Checkpoints::new(0, None);
        cp.set_max_streams(Some(5));
        let mut reference = Forecaster::<f32>::new(cfg()).unwrap();
        let mut ref_cp = Checkpoints::new(0, None);
        let (mut log, mut off) = (Latest::default(), 0);
        // Streams s0..s6 speak in turn: s0 and s1 are the least recently seen.
        let a = feed(&mut f, &mut cp, 0..98);
        let b = feed(&mut reference, &mut ref_cp, 0..98);
        assert_eq!(a, b);
        checkpoint(&mut f, &mut cp, &mut log, &mut off, 98);
        assert_eq!(f.stream_count(), 5, "capped");
        assert!(f.stream("s0").is_none() && f.stream("s1").is_none());
        assert!(f.stream("s6").is_some());
        assert_eq!(cp.idle_count(), 2);
        // s0 returns: fetched back, it forecasts as if never evicted.
        let at = cp.evicted("s0").unwrap();
        let value = value_at(&log, at);
        cp.bring_back(&mut f, "s0", &value).unwrap();
        assert_eq!(
            f.observe("s0", &[9.0]).unwrap().forecast,
            reference.observe("s0", &[9.0]).unwrap().forecast
        );
    }

    #[test]
    fn keys_round_trip() {
        for k in [
            Key::Head { partition: 3 },
            Key::Stream {
                partition: 12,
                slot: 1,
                stream: "a/b c",
            },
        ] {
            assert_eq!(Key::parse(&k.to_bytes()), Some(k));
        }
        assert_eq!(Key::parse(b"x/0/s"), None);
        assert_eq!(Key::parse(b"1/2/s"), None);
    }
}
