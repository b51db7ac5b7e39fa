//! Helpers shared by the Kafka integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The broker under test, or `None` (skip) outside CI when none is running.
pub fn brokers() -> Option<String> {
    match std::env::var("RECUR_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("RECUR_TEST_BROKERS is not set: CI must start the broker (scripts/test.sh does)")
        }
        _ => {
            eprintln!(
                "RECUR_TEST_BROKERS not set: skipping (run scripts/test.sh to start a broker)"
            );
            None
        }
    }
}

/// Client settings that suit tansu: quick group joins and fetches.
pub fn tuned(c: &mut ClientConfig) -> &mut ClientConfig {
    c.set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "20")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

/// The stage's /metrics page; empty while the endpoint is not up yet.
pub fn metrics_text(addr: &str) -> String {
    http_get(addr, "/metrics")
}

/// A raw HTTP response (status line, headers, body) for `path`; empty if nothing listens.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let mut text = String::new();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
        return String::new();
    }
    text
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// End offset of each partition, found by reading to the end (tansu's
/// ListOffsets answer is not the log end, so read instead of asking).
pub fn end_offsets(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected_total: i64,
) -> HashMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ends-{topic}"))
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut ends = HashMap::new();
    let mut eof = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof < partitions && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                ends.insert(m.partition(), m.offset() + 1);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    assert_eq!(
        ends.values().sum::<i64>(),
        expected_total,
        "could not read back what was produced"
    );
    ends
}

/// The stage's config for test topics `in-/out-/dlq-<tag>`, group `recur-<tag>`,
/// client settings that suit tansu, and `/metrics` on `metrics_addr`.
pub fn stage_toml(brokers: &str, tag: &str, metrics_addr: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "in-{tag}"
output_topic = "out-{tag}"
dlq_topic = "dlq-{tag}"
group = "recur-{tag}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"fetch.wait.max.ms" = "20"
[metrics]
addr = "{metrics_addr}"
"#
    )
}

/// [`stage_toml`] for another run over the same input `in-<tag>`: its own
/// output topic `out-<tag>-<run>` and group `recur-<tag>-<run>` (so its
/// changelog is `recur-<tag>-<run>-state`).
pub fn stage_toml_run(brokers: &str, tag: &str, run: &str, metrics_addr: &str) -> String {
    let base = stage_toml(brokers, tag, metrics_addr);
    let (out, group) = (
        format!("output_topic = \"out-{tag}\""),
        format!("group = \"recur-{tag}\""),
    );
    assert!(base.contains(&out) && base.contains(&group));
    base.replace(&out, &format!("output_topic = \"out-{tag}-{run}\""))
        .replace(&group, &format!("group = \"recur-{tag}-{run}\""))
}

/// One prediction read back: its source partition and offset, and its value bytes.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub partition: i32,
    pub offset: i64,
    pub value: Vec<u8>,
}

#[derive(Default)]
struct Collected {
    all: Vec<Prediction>,
    distinct: std::collections::HashSet<(i32, i64)>,
}

/// Every prediction read from `topic` (source partition, offset and value),
/// kept up to date by a thread.
pub struct Collector {
    seen: std::sync::Arc<std::sync::Mutex<Collected>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    pub fn start(brokers: &str, topic: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("group.id", format!("collect-{topic}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let c: BaseConsumer = tuned(&mut cfg).create().unwrap();
        c.subscribe(&[topic]).unwrap();
        let seen = Arc::new(Mutex::new(Collected::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let value = m.payload().unwrap_or_default().to_vec();
                    let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
                    let src = &v["source"];
                    let (partition, offset) = (
                        src["partition"].as_i64().unwrap() as i32,
                        src["offset"].as_i64().unwrap(),
                    );
                    let mut s = s.lock().unwrap();
                    s.distinct.insert((partition, offset));
                    s.all.push(Prediction {
                        partition,
                        offset,
                        value,
                    });
                }
            }
        });
        Collector {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Distinct source offsets with a prediction so far.
    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().distinct.len()
    }

    /// Waits until `n` distinct source offsets have a prediction (or the timeout); returns the count.
    pub fn wait_distinct(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.distinct() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.distinct()
    }

    /// Stops reading; the source (partition, offset) of every prediction read, duplicates included.
    pub fn finish(self) -> Vec<(i32, i64)> {
        self.finish_predictions()
            .into_iter()
            .map(|p| (p.partition, p.offset))
            .collect()
    }

    /// Stops reading; every prediction read, duplicates included, in arrival order.
    pub fn finish_predictions(mut self) -> Vec<Prediction> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut self.seen.lock().unwrap().all)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Asserts that `group`'s committed offsets on `topic` equal `ends` (partition → end offset).
pub fn assert_committed_at(brokers: &str, group: &str, topic: &str, ends: &HashMap<i32, i64>) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for &p in ends.keys() {
        tpl.add_partition(topic, p);
    }
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(ends[&e.partition()]),
            "group {group}, partition {}",
            e.partition()
        );
    }
}
