//! Reading a topic's time range for a backtest.
//!
//! Partitions are assigned directly (no group subscription, nothing committed,
//! so a live group's position is untouched). Start offsets come from
//! `offsets_for_times`; every message up to the end of each partition is then
//! read and kept when its timestamp lies in the range, so a broker whose time
//! index is coarse (or absent) still gives the exact range. Messages are
//! decoded by exactly the rules `recur run` uses; each partition's events get
//! their own learner, as in the live stage.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Error;
use super::engine::Replay;
use crate::config::Config;
use crate::stage::decode;

/// One end of a topic range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The first message (for `--from`) or the last (for `--to`).
    Open,
    /// A message timestamp, epoch ms (inclusive).
    At(i64),
}

impl Bound {
    /// Parses `earliest` / `latest` or a time accepted by `parse_time` (RFC 3339 and others).
    pub fn parse(s: &str, open: &str) -> Result<Self, Error> {
        if s == open {
            return Ok(Bound::Open);
        }
        crate::time::parse_time(s)
            .map(Bound::At)
            .map_err(|e| Error::Invalid(format!("expected {open} or a time, got {s:?}: {e}")))
    }
}

/// A topic range read into a replay.
pub struct TopicReplay {
    /// The events, ordered by (partition, offset); `group` is the partition index.
    pub replay: Replay,
    /// Input (partition, offset) of each replay row.
    pub source: Vec<(i32, i64)>,
    /// Messages in range that failed to decode (skipped, as dead letters would be).
    pub bad: u64,
}

/// Reads `topic` between `from` and `to` from `brokers`.
pub fn read(
    cfg: &Config,
    brokers: &str,
    topic: &str,
    from: Bound,
    to: Bound,
) -> Result<TopicReplay, Error> {
    let kafka =
        |e: rdkafka::error::KafkaError| Error::Invalid(format!("topic {topic} on {brokers}: {e}"));
    let mut cc = crate::kafka::client_config(brokers, cfg);
    cc.set("group.id", format!("recur-backtest-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    crate::kafka::fetch_defaults(&mut cc);
    let c = crate::kafka::consumer(&cc).map_err(kafka)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Invalid(format!(
            "topic {topic} on {brokers} does not exist or has no partitions"
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let o = match from {
            Bound::Open => Offset::Beginning,
            Bound::At(ms) => Offset::Offset(ms),
        };
        tpl.add_partition_offset(topic, p, o).map_err(kafka)?;
    }
    if let Bound::At(_) = from {
        tpl = c
            .offsets_for_times(tpl, Duration::from_secs(10))
            .map_err(kafka)?;
    }
    c.assign(&tpl).map_err(kafka)?;

    let decode_cfg = cfg.decode_config();
    let index = |p: i32| partitions.iter().position(|&q| q == p).unwrap_or(0) as u32;
    // (ts, partition index, offset, stream, values)
    let mut rows: Vec<(i64, u32, i64, String, Vec<f64>)> = Vec::new();
    let mut bad = 0u64;
    let mut eof = std::collections::HashSet::new();
    let mut last = Instant::now();
    while eof.len() < partitions.len() {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let ts = m.timestamp().to_millis();
                let inside = ts.is_none_or(|t| {
                    !matches!(from, Bound::At(f) if t < f) && !matches!(to, Bound::At(u) if t > u)
                });
                if !inside {
                    continue;
                }
                match decode::decode(&decode_cfg, m.key(), m.payload(), ts) {
                    Ok(e) => rows.push((
                        e.ts_ms,
                        index(m.partition()),
                        m.offset(),
                        e.stream,
                        e.values,
                    )),
                    Err(_) => bad += 1,
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => return Err(kafka(e)),
            None if last.elapsed() > Duration::from_secs(60) => {
                return Err(Error::Invalid(format!(
                    "topic {topic}: no message and no end of partition for 60 s"
                )));
            }
            None => {}
        }
    }
    // Each partition has its own learner, so only the order within a partition
    // matters: offset order, exactly as the live stage sees it.
    rows.sort_by_key(|r| (r.1, r.2));
    let d = decode_cfg.width;
    let mut streams: Vec<String> = Vec::new();
    let mut ids = std::collections::HashMap::new();
    let mut replay = Replay {
        columns: (0..d).map(|k| format!("value{k}")).collect(),
        ..Replay::default()
    };
    let mut source = Vec::with_capacity(rows.len());
    for (ts, p, offset, stream, values) in rows {
        let id = *ids.entry(stream.clone()).or_insert_with(|| {
            streams.push(stream);
            streams.len() as u32 - 1
        });
        replay.stream.push(id);
        replay.ts_ms.push(ts);
        replay.values.extend_from_slice(&values);
        replay.group.push(p);
        source.push((partitions[p as usize], offset));
    }
    replay.streams = streams;
    Ok(TopicReplay {
        replay,
        source,
        bad,
    })
}
