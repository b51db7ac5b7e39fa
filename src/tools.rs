//! `recur produce` and `recur tail`: feed a topic with events, print predictions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::kafka::Logged;
use crate::synth::Seasonal;

/// Where a tool connects: a bootstrap list (`"host:9092"`), or a full client
/// configuration (brokers and `[kafka.properties]`, for secured clusters).
pub trait Connect {
    /// The client configuration to start from.
    fn client_config(&self) -> ClientConfig;
}

impl Connect for str {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self);
        c
    }
}

impl Connect for String {
    fn client_config(&self) -> ClientConfig {
        self.as_str().client_config()
    }
}

impl Connect for ClientConfig {
    fn client_config(&self) -> ClientConfig {
        self.clone()
    }
}

fn brokers_of(c: &ClientConfig) -> String {
    c.get("bootstrap.servers").unwrap_or("?").to_owned()
}

/// The tools' producer type.
pub type ToolProducer = ThreadedProducer<Logged>;

fn producer(to: &(impl Connect + ?Sized)) -> anyhow::Result<ToolProducer> {
    let mut c = to.client_config();
    for (k, v) in [
        ("linger.ms", "5"),
        ("queue.buffering.max.messages", "1000000"),
    ] {
        if c.get(k).is_none() {
            c.set(k, v);
        }
    }
    c.create_with_context(Logged::new(&c))
        .with_context(|| format!("connecting a producer to {}", brokers_of(&c)))
}

/// Sends one event, waiting while the local queue is full.
fn send(p: &ToolProducer, topic: &str, key: &str, value: &str) -> anyhow::Result<()> {
    send_at(p, topic, key, value, None)
}

/// Sends one event with an explicit message timestamp (the event time), if given.
fn send_at(
    p: &ToolProducer,
    topic: &str,
    key: &str,
    value: &str,
    ts_ms: Option<i64>,
) -> anyhow::Result<()> {
    let mut rec = BaseRecord::to(topic).key(key).payload(value);
    if let Some(ts) = ts_ms {
        rec = rec.timestamp(ts);
    }
    send_waiting(p, rec)
}

/// Sends a record, waiting while the producer's local queue is full.
pub fn send_waiting<
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
>(
    p: &ToolProducer,
    mut rec: BaseRecord<'_, K, P>,
) -> anyhow::Result<()> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                rec = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("producing a record"),
        }
    }
}

/// Paces a producer at `rate` events per second (0 = as fast as possible).
struct Pace {
    start: Instant,
    rate: u64,
}

impl Pace {
    fn wait(&self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Produces synthetic seasonal events for `streams` streams round-robin, one
/// hour of synthetic time per event, until `events` are sent or `stop` is set.
pub fn produce_synthetic(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    streams: usize,
    rate: u64,
    events: Option<u64>,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let t0 = 1_700_000_000_000i64;
    let per_stream = streams as u64;
    produce_seasonal(brokers, topic, streams, rate, events, stop, |_, sent| {
        t0 + (sent / per_stream) as i64 * 3_600_000
    })
}

/// [`produce_synthetic`]'s streams stamped with the wall clock (each stream's
/// times strictly increasing), as the embedded demo sends them: event lag
/// then measures something real.
pub fn produce_synthetic_live(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    streams: usize,
    rate: u64,
    events: Option<u64>,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut last = vec![i64::MIN; streams];
    produce_seasonal(brokers, topic, streams, rate, events, stop, |s, _| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        last[s] = now.max(last[s].saturating_add(1));
        last[s]
    })
}

/// The synthetic seasonal streams `stream-<n>`, round-robin; `ts(stream, sent)`
/// stamps each event.
fn produce_seasonal(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    streams: usize,
    rate: u64,
    events: Option<u64>,
    stop: &AtomicBool,
    mut ts: impl FnMut(usize, u64) -> i64,
) -> anyhow::Result<u64> {
    let p = producer(brokers)?;
    let mut gens: Vec<Seasonal> = (0..streams as u64).map(|s| Seasonal::new(s, 1)).collect();
    let keys: Vec<String> = (0..streams).map(|s| format!("stream-{s}")).collect();
    produce_paced(&p, topic, rate, events, stop, |sent| {
        let s = (sent % streams as u64) as usize;
        let v = gens[s].next().unwrap_or(0.0);
        let value = format!(
            r#"{{"stream":"{}","ts":{},"value":{v}}}"#,
            keys[s],
            ts(s, sent)
        );
        (keys[s].clone(), value)
    })
}

/// Sends `make(i)` (key, value) for i = 0.. at `rate` per second until `events`
/// are sent (or forever when `None`) or `stop` is set, then flushes.
fn produce_paced(
    p: &ToolProducer,
    topic: &str,
    rate: u64,
    events: Option<u64>,
    stop: &AtomicBool,
    mut make: impl FnMut(u64) -> (String, String),
) -> anyhow::Result<u64> {
    let pace = Pace {
        start: Instant::now(),
        rate,
    };
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && events.is_none_or(|n| sent < n) {
        let (key, value) = make(sent);
        send(p, topic, &key, &value)?;
        sent += 1;
        pace.wait(sent);
    }
    p.flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    Ok(sent)
}

/// Produces one event for each of `streams` streams named `once-<n>`, event
/// time advancing `step_ms` per event: streams that speak once and go idle.
pub fn produce_one_shot(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    streams: u64,
    step_ms: i64,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let p = producer(brokers)?;
    let t0 = 1_700_000_000_000i64;
    produce_paced(&p, topic, 0, Some(streams), stop, |i| {
        let key = format!("once-{i}");
        let value = format!(
            r#"{{"stream":"{key}","ts":{},"value":{}}}"#,
            t0 + i as i64 * step_ms,
            (i as f64 * 0.01).sin()
        );
        (key, value)
    })
}

/// Produces `events` events for `streams` streams named `lat-<n>` at `rate` per
/// second, stamped with the wall clock, for latency measurements.
pub fn produce_latency(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    streams: usize,
    rate: u64,
    events: u64,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let p = producer(brokers)?;
    let keys: Vec<String> = (0..streams).map(|s| format!("lat-{s}")).collect();
    produce_paced(&p, topic, rate, Some(events), stop, |sent| {
        let s = (sent % streams as u64) as usize;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let value = format!(
            r#"{{"stream":"{}","ts":{now},"value":{}}}"#,
            keys[s],
            (sent as f64 * 0.1).sin()
        );
        (keys[s].clone(), value)
    })
}

/// Produces a CSV file as events: one event per row with every numeric column as
/// `values`, the first column parsed as the time if it is one.
pub fn produce_csv(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    path: &std::path::Path,
    stream: Option<&str>,
    rate: u64,
) -> anyhow::Result<u64> {
    use crate::backtest::table::{self, LoadOptions, TimeColumn};
    let header = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let first = header
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let time_column = if ["date", "time", "ts", "timestamp", "datetime"]
        .contains(&first.to_lowercase().as_str())
    {
        TimeColumn::Named(first)
    } else {
        TimeColumn::RowIndex
    };
    let t = table::load(
        path,
        &LoadOptions {
            time_column,
            columns: None,
        },
    )?;
    let p = producer(brokers)?;
    let pace = Pace {
        start: Instant::now(),
        rate,
    };
    let mut sent = 0u64;
    let d = t.columns.len();
    for rows in &t.streams {
        let key = stream.unwrap_or(&rows.stream);
        for (i, ts) in rows.ts_ms.iter().enumerate() {
            let values = &rows.values[i * d..(i + 1) * d];
            let value = serde_json::json!({"stream": key, "ts": ts, "values": values}).to_string();
            send_at(&p, topic, key, &value, Some(*ts))?;
            sent += 1;
            pace.wait(sent);
        }
    }
    p.flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    Ok(sent)
}

/// Prints the values of `topic` from the beginning, one per line, until `max`
/// messages or `idle` without new ones.
/// With `headers`, each line is a JSON object with the value, key, partition,
/// offset and headers (dead letters carry their reason there).
pub fn tail(
    brokers: &(impl Connect + ?Sized),
    topic: &str,
    max: Option<u64>,
    idle: Duration,
    headers: bool,
) -> anyhow::Result<u64> {
    let mut cc = brokers.client_config();
    cc.set("group.id", format!("recur-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let c = crate::kafka::consumer(&cc)
        .with_context(|| format!("connecting a consumer to {}", brokers_of(&cc)))?;
    c.subscribe(&[topic])?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| seen < m) && last.elapsed() < idle {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            // Broker errors are logged by the client's context; tail keeps
            // waiting (until --idle-s) rather than dying on a transient one.
            let Ok(m) = m else { continue };
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
            if headers {
                println!("{}", described(&m, &value));
            } else {
                println!("{value}");
            }
            seen += 1;
            last = Instant::now();
        }
    }
    Ok(seen)
}

/// One consumed message as a JSON line: value (parsed when it is JSON), key,
/// partition, offset and headers.
fn described(m: &rdkafka::message::BorrowedMessage<'_>, value: &str) -> String {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let mut hs = serde_json::Map::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            hs.insert(h.key.to_owned(), text(h.value).into());
        }
    }
    let value = serde_json::from_str::<serde_json::Value>(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    serde_json::json!({
        "partition": m.partition(),
        "offset": m.offset(),
        "key": text(m.key()),
        "headers": hs,
        "value": value,
    })
    .to_string()
}
