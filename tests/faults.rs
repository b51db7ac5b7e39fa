//! Faults inside the stage fail it loudly instead of leaving it half alive.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use recur::health::Health;

mod common;
use recur::stage::offsets::{CommitPolicy, Offsets};
use recur::stage::sink::Sink;
use recur::stage::source::{Source, Task};
use recur::telemetry::Metrics;

#[test]
fn a_panicking_partition_worker_fails_the_stage() {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
    cluster.create_topic("in", 2, 1).unwrap();
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", cluster.bootstrap_servers());
    let (metrics, health) = (Metrics::new(), Arc::new(Health::default()));
    let offsets = Arc::new(Offsets::new(CommitPolicy::Acknowledged));
    let sink = Arc::new(
        Sink::new(
            client.clone(),
            offsets.clone(),
            metrics.clone(),
            health.clone(),
        )
        .unwrap(),
    );
    client.set("group.id", "g");
    let start = Box::new(|p: i32, _| -> Result<Task, String> {
        Ok(Box::new(move |_feed, _stop| {
            if p == 1 {
                panic!("index out of bounds in partition one");
            }
        }))
    });
    let source = Source::new(client, "in", start, offsets, sink, metrics, health.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let run = std::thread::spawn(move || source.run(&s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !health.failed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fatal = health.fatal().expect("the panic did not fail the stage");
    assert!(
        fatal.contains("partition 1") && fatal.contains("index out of bounds in partition one"),
        "{fatal}"
    );
    // A failed stage stops serving on its own: the source returns without a stop request.
    run.join().unwrap();
}

/// A stage config against `brokers` (a test's own mock cluster), checkpoints off.
fn stage_config(brokers: &str, extra: &str) -> recur::config::Config {
    stage_config_at(brokers, "", "\"off\"", extra)
}

/// A stage config with more `[kafka]` keys and `checkpoint.interval = interval`.
fn stage_config_at(
    brokers: &str,
    kafka: &str,
    interval: &str,
    extra: &str,
) -> recur::config::Config {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"in\"\noutput_topic = \"out\"\ndlq_topic = \"dlq\"\n{kafka}\
         [metrics]\naddr = \"{addr}\"\n[checkpoint]\ninterval = {interval}\n{extra}"
    );
    recur::config::Config::load_with(None, text.parse().unwrap()).unwrap()
}

/// An input event of stream `s`, `i` ms after a fixed start.
fn event(s: &str, i: i64, value: impl std::fmt::Display) -> Vec<u8> {
    format!(
        r#"{{"stream":"{s}","ts":{},"value":{value}}}"#,
        1_467_331_200_000i64 + i
    )
    .into_bytes()
}

/// Starts the stage on its own thread; notify the handle to stop it.
fn start(
    cfg: recur::config::Config,
) -> (
    Arc<tokio::sync::Notify>,
    std::thread::JoinHandle<anyhow::Result<recur::stage::RunReport>>,
) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        recur::stage::run(
            cfg,
            async move { s.notified().await },
            recur::stage::LiveLine::Quiet,
        )
    });
    (stop, run)
}

fn mock(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for (t, n) in topics {
        cluster.create_topic(t, *n, 1).unwrap();
    }
    cluster
}

/// Sends `(key, value)` records to `topic`, waiting for each.
fn send(brokers: &str, topic: &str, records: &[(&[u8], Vec<u8>)]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    for (k, v) in records {
        p.send(BaseRecord::to(topic).key(*k).payload(v)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_dead_letter_too_large_to_send_is_cut_to_fit_and_the_partition_commits() {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let huge = vec![b'x'; 2 << 20];
    let good = br#"{"stream":"s","ts":1467331200000,"value":1.5}"#.to_vec();
    send(&brokers, "in", &[(b"s", huge), (b"s", good)]);
    let (stop, run) = start(stage_config(&brokers, ""));
    // Read the dead letter back.
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["dlq"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let letter = loop {
        assert!(Instant::now() < deadline, "no dead letter within a minute");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            break m.detach();
        }
    };
    stop.notify_one();
    let report = run.join().unwrap().expect("the stage stops cleanly");
    assert_eq!(
        (report.events, report.predictions, report.dead_letters),
        (1, 1, 1)
    );
    let header = |name: &str| {
        let hs = letter.headers().expect("headers");
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert!(header("recur.error").unwrap().starts_with("oversize"));
    assert_eq!(
        header("recur.truncated").as_deref(),
        Some("key 1 bytes, value 2097152 bytes")
    );
    // Both offsets are committed: nothing is left to redo.
    let g: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "recur")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let committed = g.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition("in", 0).unwrap().offset(),
        rdkafka::Offset::Offset(2)
    );
    let kept = letter.payload().unwrap();
    assert!(
        kept.len() < 1_000_000 && kept.iter().all(|&b| b == b'x'),
        "{}",
        kept.len()
    );
}

#[test]
fn predictions_that_cannot_be_delivered_fail_the_stage_loudly() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let events: Vec<(&[u8], Vec<u8>)> = (0..20)
        .map(|i| (b"s".as_slice(), event("s", i, i)))
        .collect();
    send(&brokers, "in", &events);
    // From now on the broker refuses every produce request (a long output outage).
    let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000];
    cluster.request_errors(RDKafkaApiKey::Produce, &errors);
    let cfg = stage_config(
        &brokers,
        "[kafka.properties]\n\"message.timeout.ms\" = \"1500\"\n",
    );
    let started = Instant::now();
    // No shutdown request: the stage must stop by itself.
    let result = recur::stage::run(cfg, std::future::pending(), recur::stage::LiveLine::Quiet);
    let err = result.expect_err("the stage kept running with frozen commits");
    let text = format!("{err:#}");
    assert!(
        text.contains("not delivered") && text.contains("partition 0"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_prediction_that_failed_for_good_does_not_hold_a_checkpoint_for_minutes() {
    // The output partition has no leader: predictions time out after 1.5 s
    // while the changelog keeps working. A checkpoint covering a failed
    // prediction can never finish; it must give up at once, not wait out
    // the two-minute acknowledgement deadline, so the stage stops promptly.
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1), ("lost-state", 1)]);
    let brokers = cluster.bootstrap_servers();
    let events: Vec<(&[u8], Vec<u8>)> = (0..20)
        .map(|i| (b"s".as_slice(), event("s", i, i)))
        .collect();
    send(&brokers, "in", &events);
    cluster.partition_leader("out", 0, None).unwrap();
    let cfg = stage_config_at(
        &brokers,
        "group = \"lost\"\n",
        "\"1s\"",
        "[kafka.properties]\n\"message.timeout.ms\" = \"1500\"\n",
    );
    let started = Instant::now();
    let result = recur::stage::run(cfg, std::future::pending(), recur::stage::LiveLine::Quiet);
    let err = result.expect_err("the stage kept running with a prediction lost");
    let text = format!("{err:#}");
    assert!(text.contains("not delivered"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_changelog_replication_defaults_to_the_brokers_and_is_checked() {
    // (A single-broker test cluster cannot show more than one replica; the
    // Kafka tests create their changelogs with this default on tansu.)
    let defaults = recur::config::Config::load(None).unwrap();
    assert_eq!(defaults.checkpoint.replication, -1);
    for bad in ["0", "-2"] {
        let t = format!("[checkpoint]\nreplication = {bad}\n")
            .parse()
            .unwrap();
        let e = recur::config::Config::load_with(None, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("checkpoint.replication"), "{e}");
    }
}

/// Runs the stage over what `in` holds until `outcomes` records are acknowledged; its report.
fn run_over(brokers: &str, extra: &str, outcomes: u64) -> recur::stage::RunReport {
    run_watching(stage_config(brokers, extra), outcomes, |_| {})
}

/// Runs the stage with `cfg` until `outcomes` records are acknowledged,
/// showing `watch` every /metrics page read meanwhile; its report.
fn run_watching(
    cfg: recur::config::Config,
    outcomes: u64,
    mut watch: impl FnMut(&str),
) -> recur::stage::RunReport {
    let addr = cfg.metrics.addr.clone();
    let (stop, run) = start(cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let text = common::metrics_text(&addr);
        watch(&text);
        let done = common::metric(&text, "recur_predictions_total")
            + common::metric(&text, "recur_dead_letters_total");
        if done >= outcomes as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.notify_one();
    run.join().unwrap().unwrap()
}

#[test]
fn a_sender_of_new_streams_cannot_grow_memory_past_max_streams() {
    // A checkpoint interval far beyond the run: only crowding can evict.
    flood_of_new_streams("\"1h\"", "recur_streams_evicted_total");
}

#[test]
fn without_checkpoints_max_streams_still_bounds_memory() {
    // No changelog to evict to: past the cap the least recently seen are dropped.
    let gone = flood_of_new_streams("\"off\"", "recur_streams_dropped_total");
    // Only the least recently seen go: the cap's worth of the newest stay.
    assert!(gone <= (FLOOD - FLOOD_CAP) as f64, "{gone} dropped");
}

/// New streams in [`flood_of_new_streams`], and the cap it runs under.
const FLOOD: usize = 4000;
const FLOOD_CAP: usize = 200;

/// Runs the stage under `state.max_streams = FLOOD_CAP` on `FLOOD` events,
/// each of a stream never seen before, and checks that the streams in memory
/// never pass the bound and that the counter `gone` (streams taken out of
/// memory) took out the rest; returns that counter's highest value.
fn flood_of_new_streams(interval: &str, gone: &str) -> f64 {
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1), ("cap-state", 1)]);
    let brokers = cluster.bootstrap_servers();
    let cfg = stage_config_at(
        &brokers,
        "group = \"cap\"\n",
        interval,
        &format!("[state]\nmax_streams = {FLOOD_CAP}\n"),
    );
    assert_eq!(cfg.changelog_topic(), "cap-state");
    let events: Vec<(Vec<u8>, Vec<u8>)> = (0..FLOOD)
        .map(|i| {
            let key = format!("s{i}");
            let v = event(&key, i as i64, i % 7);
            (key.into_bytes(), v)
        })
        .collect();
    let refs: Vec<(&[u8], Vec<u8>)> = events
        .iter()
        .map(|(k, v)| (k.as_slice(), v.clone()))
        .collect();
    send(&brokers, "in", &refs);
    let (mut most, mut taken) = (0.0f64, 0.0f64);
    let report = run_watching(cfg, FLOOD as u64, |text| {
        most = most.max(common::metric(text, "recur_streams_active"));
        taken = taken.max(common::metric(text, gone));
    });
    assert_eq!(report.predictions, FLOOD as u64, "{report:?}");
    // Crowding is checked between windows: one window's worth of new streams on top.
    let window = recur::config::Config::load(None).unwrap().window.max_events;
    let bound = (recur::stage::worker::crowd_limit(FLOOD_CAP) + window) as f64;
    assert!(
        most > 0.0 && most <= bound,
        "{most} streams in memory, bound {bound}"
    );
    assert!(taken >= FLOOD as f64 - bound, "{taken} taken out ({gone})");
    taken
}

#[test]
fn late_events_are_accepted_or_dead_lettered_by_policy() {
    let ts = [1000i64, 3000, 2000, 4000, 3999, 5000];
    for (policy, predictions, dead) in [("accept", 6, 0), ("dead_letter", 4, 2)] {
        let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1)]);
        let brokers = cluster.bootstrap_servers();
        let events: Vec<(&[u8], Vec<u8>)> = ts
            .iter()
            .map(|t| {
                (
                    b"s".as_slice(),
                    format!(r#"{{"ts":{t},"value":1}}"#).into_bytes(),
                )
            })
            .collect();
        send(&brokers, "in", &events);
        let report = run_over(&brokers, &format!("[events]\nlate = \"{policy}\"\n"), 6);
        assert_eq!(
            (report.predictions, report.dead_letters),
            (predictions, dead),
            "events.late = {policy}"
        );
    }
}

#[test]
fn readiness_ends_while_no_broker_is_reachable_and_returns_with_it() {
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let cfg = stage_config(
        &brokers,
        "[run]\nbroker_loss = \"1s\"\n[kafka.properties]\n\"statistics.interval.ms\" = \"200\"\n",
    );
    let addr = cfg.metrics.addr.clone();
    let (stop, run) = start(cfg);
    let wait_for = |status: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = common::http_get(&addr, "/readyz");
            if answer.starts_with(status) && answer.contains(what) {
                return answer;
            }
            assert!(Instant::now() < deadline, "no {status} {what}: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("HTTP/1.1 200", "ready");
    cluster.broker_down(1).unwrap();
    wait_for("HTTP/1.1 503", "no broker reachable");
    // /healthz stays 200: a lost broker is not the stage's fault, and it reconnects.
    assert!(common::http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    cluster.broker_up(1).unwrap();
    wait_for("HTTP/1.1 200", "ready");
    stop.notify_one();
    run.join().unwrap().unwrap();
}

#[test]
fn an_aborted_transaction_stops_the_partition_and_commits_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock(&[("in", 1), ("out", 1), ("dlq", 1), ("eos-state", 1)]);
    let brokers = cluster.bootstrap_servers();
    let events: Vec<(&[u8], Vec<u8>)> = (0..200)
        .map(|i| (b"s".as_slice(), event("s", i, i % 5)))
        .collect();
    send(&brokers, "in", &events);
    // Every transaction's offsets are refused (abortable): the first
    // checkpoint's transaction aborts.
    let refused = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 1000];
    cluster.request_errors(RDKafkaApiKey::AddOffsetsToTxn, &refused);
    let cfg = stage_config_at(
        &brokers,
        "group = \"eos\"\ndelivery = \"exactly_once\"\n",
        "50",
        "",
    );
    let started = Instant::now();
    let err = recur::stage::run(cfg, std::future::pending(), recur::stage::LiveLine::Quiet)
        .expect_err("the stage kept running after its transaction aborted");
    let text = format!("{err:#}");
    assert!(text.contains("aborted"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // Nothing was committed for the group: a restart redoes everything.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "eos")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition("in", 0).unwrap().offset();
    assert_eq!(offset, rdkafka::Offset::Invalid, "{offset:?}");
}
