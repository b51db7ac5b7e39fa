//! The stage end to end against a real Kafka-protocol broker (tansu, started by
//! `scripts/test.sh`; its address is in `RECUR_TEST_BROKERS`).
//!
//! 4 partitions, 50 streams, 20,000 events of which 100 are malformed in varied
//! ways: exactly 19,900 predictions in per-stream order, 100 dead letters with
//! their reasons, metrics that match, committed offsets at the end offsets, and
//! a restart of the same group that reprocesses nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use recur::config::Config;

mod common;
use common::{brokers, create_topics, free_port, metric, metrics_text, tuned};
use recur::stage::{self, LiveLine, RunReport};

const PARTITIONS: i32 = 4;
const STREAMS: usize = 50;
const EVENTS: usize = 20_000;
const BAD: usize = 100;

/// A malformed value of kind `k`, with the reason recur must give it.
fn malformed(k: usize, stream: &str, ts: i64) -> (String, &'static str) {
    match k % 6 {
        0 => ("{not json".to_string(), "not_json"),
        1 => (
            format!(r#"{{"stream":"{stream}","ts":{ts}}}"#),
            "missing_field",
        ),
        2 => (
            format!(r#"{{"stream":"{stream}","ts":{ts},"values":[1.0,2.0]}}"#),
            "wrong_width",
        ),
        3 => (
            format!(r#"{{"stream":"{stream}","ts":{ts},"value":"high"}}"#),
            "bad_type",
        ),
        4 => (
            format!(r#"{{"stream":"{stream}","ts":"yesterday","value":1.0}}"#),
            "bad_timestamp",
        ),
        _ => (
            format!(r#"{{"stream":"someone-else","ts":{ts},"value":1.0}}"#),
            "stream_mismatch",
        ),
    }
}

struct Produced {
    /// Per stream, the times of its good events in order.
    good: HashMap<String, Vec<i64>>,
    /// Expected dead letters per reason.
    bad: BTreeMap<&'static str, usize>,
    /// End offset per input partition.
    ends: HashMap<i32, i64>,
}

fn produce(brokers: &str, topic: &str) -> Produced {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut good: HashMap<String, Vec<i64>> = HashMap::new();
    let mut bad = BTreeMap::new();
    // Spread the bad events evenly: every 200th event.
    for i in 0..EVENTS {
        let s = i % STREAMS;
        let stream = format!("stream-{s}");
        let ts = 1_700_000_000_000 + (i / STREAMS) as i64 * 60_000;
        let value = if i % (EVENTS / BAD) == 7 {
            let (v, reason) = malformed(i / (EVENTS / BAD), &stream, ts);
            *bad.entry(reason).or_insert(0) += 1;
            v
        } else {
            good.entry(stream.clone()).or_default().push(ts);
            let x = ((i / STREAMS) as f64 * 0.3 + s as f64).sin() * 10.0 + s as f64;
            format!(r#"{{"stream":"{stream}","ts":{ts},"value":{x}}}"#)
        };
        loop {
            match p.send(
                BaseRecord::<str, str>::to(topic)
                    .key(&stream)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err(_) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let ends = common::end_offsets(brokers, topic, PARTITIONS, EVENTS as i64);
    Produced { good, bad, ends }
}

/// Reads the output and dead-letter topics until `want` records arrived (or a timeout).
fn collect(
    brokers: &str,
    topics: &[&str],
    want: usize,
    timeout: Duration,
) -> Vec<(String, Option<String>, Vec<u8>)> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", format!("collect-{}", topics[0]))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = tuned(&mut cfg).create().unwrap();
    c.subscribe(topics).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let error = m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == "recur.error")
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push((
                m.topic().to_string(),
                error,
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

fn stage_config(brokers: &str, tag: &str, metrics_addr: &str) -> Config {
    Config::load_with(
        None,
        common::stage_toml(brokers, tag, metrics_addr)
            .parse()
            .unwrap(),
    )
    .unwrap()
}

/// Runs the stage in a thread; `stop` ends it.
fn start_stage(cfg: Config) -> (std::thread::JoinHandle<RunReport>, Arc<tokio::sync::Notify>) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet).expect("the stage runs")
    });
    (handle, stop)
}

#[test]
fn end_to_end_on_a_real_broker() {
    let Some(brokers) = brokers() else { return };
    let tag = format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() % 100_000
    );
    let (input, output, dlq) = (
        format!("in-{tag}"),
        format!("out-{tag}"),
        format!("dlq-{tag}"),
    );
    create_topics(
        &brokers,
        &[(&input, PARTITIONS), (&output, PARTITIONS), (&dlq, 1)],
    );
    let produced = produce(&brokers, &input);
    let good_total: usize = produced.good.values().map(Vec::len).sum();
    assert_eq!(good_total, EVENTS - BAD);

    let addr = format!("127.0.0.1:{}", free_port());
    let (stage_thread, stop) = start_stage(stage_config(&brokers, &tag, &addr));
    let records = collect(&brokers, &[&output, &dlq], EVENTS, Duration::from_secs(180));

    // Metrics must agree with what the test counted (delivery reports may trail the records).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = metrics_text(&addr);
    while metric(&text, "recur_predictions_total") < good_total as f64 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        text = metrics_text(&addr);
    }
    stop.notify_one();
    let report = stage_thread.join().unwrap();

    let predictions: Vec<_> = records.iter().filter(|r| r.0 == output).collect();
    let dead: Vec<_> = records.iter().filter(|r| r.0 == dlq).collect();
    assert_eq!(
        predictions.len(),
        EVENTS - BAD,
        "one prediction per good event"
    );
    assert_eq!(dead.len(), BAD, "one dead letter per malformed event");

    // Per-stream order: each stream's predictions carry its events' times, in order.
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, _, payload) in &predictions {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["horizon"], 1);
        assert!(v["forecast"][0][0].as_f64().unwrap().is_finite());
        assert_eq!(v["source"]["topic"], input.as_str());
        seen.entry(v["stream"].as_str().unwrap().to_string())
            .or_default()
            .push(v["ts"].as_i64().unwrap());
    }
    assert_eq!(
        seen, produced.good,
        "predictions out of per-stream order, missing or duplicated"
    );

    // Dead letters carry their reasons.
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, err, _) in &dead {
        let err = err.as_deref().expect("recur.error header");
        let reason = produced.bad.keys().find(|r| err.starts_with(*r)).copied();
        *reasons.entry(reason.unwrap_or("unexpected")).or_insert(0) += 1;
    }
    assert_eq!(reasons, produced.bad);

    // Metrics match the test's own counts.
    assert_eq!(
        metric(&text, "recur_events_total"),
        good_total as f64,
        "{text}"
    );
    assert_eq!(metric(&text, "recur_predictions_total"), good_total as f64);
    assert_eq!(metric(&text, "recur_dead_letters_total"), BAD as f64);
    for (reason, n) in &produced.bad {
        assert_eq!(
            metric(
                &text,
                &format!("recur_dead_letters_total{{reason=\"{reason}\"}}")
            ),
            *n as f64,
            "{reason}"
        );
    }
    assert_eq!(
        metric(&text, "recur_partitions_assigned"),
        PARTITIONS as f64
    );
    assert!(metric(&text, "recur_model_updates_total") > 0.0);
    assert_eq!(metric(&text, "recur_streams_active"), STREAMS as f64);
    assert!(
        text.contains("recur_window_events_bucket")
            && text.contains("recur_event_lag_seconds_bucket")
    );
    assert!(!text.contains("stream-"), "a stream id leaked into a label");
    assert_eq!(report.predictions, good_total as u64);

    // Committed offsets equal the end offsets.
    common::assert_committed_at(&brokers, &format!("recur-{tag}"), &input, &produced.ends);

    // A restart with the same group reprocesses nothing.
    let addr = format!("127.0.0.1:{}", free_port());
    let (again, stop) = start_stage(stage_config(&brokers, &tag, &addr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics_text(&addr), "recur_partitions_assigned") < PARTITIONS as f64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.notify_one();
    let report = again.join().unwrap();
    assert_eq!(
        report,
        RunReport {
            events: 0,
            predictions: 0,
            dead_letters: 0
        },
        "the restart reprocessed events"
    );
}
