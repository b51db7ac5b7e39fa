//! The rest of state that survives, end to end on the real broker: idle
//! streams evicted to the changelog and fetched back unchanged, a hot swap
//! from a watched file, and the exactly-once (transactional) code path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use recur::config::Config;
use recur::model::{Forecaster, Learning, ModelConfig};
use recur::stage::{self, LiveLine, RunReport};

mod common;
use common::{Collector, brokers, create_topics, end_offsets, free_port, metric, metrics_text};

/// Sends `(key, value)` events in order to partition 0 of `topic`.
fn produce_in_order(brokers: &str, topic: &str, events: &[(String, String)]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (k, v) in events {
        let mut rec = BaseRecord::to(topic).key(k).payload(v).partition(0);
        while let Err((_, back)) = p.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A stage run in-process: stop it with `stop()`.
struct Running {
    stop: Arc<tokio::sync::Notify>,
    thread: std::thread::JoinHandle<anyhow::Result<RunReport>>,
    addr: String,
}

impl Running {
    fn start(toml: String) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let text = format!("{toml}\n[metrics]\naddr = \"{addr}\"\n");
        let cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
        let stop = Arc::new(tokio::sync::Notify::new());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet)
        });
        Running { stop, thread, addr }
    }
    fn metric(&self, name: &str) -> f64 {
        metric(&metrics_text(&self.addr), name)
    }
    fn wait_metric(&self, name: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut v = self.metric(name);
        while v < at_least && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            v = self.metric(name);
        }
        v
    }
    fn stop(self) -> RunReport {
        self.stop.notify_one();
        self.thread.join().unwrap().unwrap()
    }
}

/// Creates the topics [`topics_toml`] names: the input, one output per run, the dead letters.
fn create_stage_topics(brokers: &str, tag: &str, partitions: i32, runs: &[&str]) {
    let input = format!("in-{tag}");
    let dlq = format!("dlq-{tag}");
    let outputs: Vec<String> = runs.iter().map(|r| format!("out-{tag}-{r}")).collect();
    let mut topics = vec![(input.as_str(), partitions), (dlq.as_str(), 1)];
    topics.extend(outputs.iter().map(|o| (o.as_str(), partitions)));
    create_topics(brokers, &topics);
}

fn topics_toml(brokers: &str, tag: &str, run: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
input_topic = "in-{tag}"
output_topic = "out-{tag}-{run}"
dlq_topic = "dlq-{tag}"
group = "recur-{tag}-{run}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"fetch.wait.max.ms" = "20"
"#
    )
}

/// Prediction value per input offset, read from a run's output topic.
fn forecasts(brokers: &str, topic: &str, n: usize) -> HashMap<(i32, i64), Vec<u8>> {
    let c = Collector::start(brokers, topic);
    assert_eq!(c.wait_distinct(n, Duration::from_secs(60)), n);
    c.finish_predictions()
        .into_iter()
        .map(|p| ((p.partition, p.offset), p.value))
        .collect()
}

#[test]
fn idle_streams_are_evicted_and_come_back_unchanged() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("idle-{}", std::process::id());
    create_stage_topics(&brokers, &tag, 1, &["ref", "ttl"]);
    // "returner" speaks 5 times, falls silent for 300 s of event time while 300
    // busy streams (each heard every 30 s) go on, then speaks 5 times more.
    let t0 = 1_700_000_000_000i64;
    let mut events = Vec::new();
    let mut ts = t0;
    let mut push = |key: String, v: f64, ts: i64| {
        let value = format!(r#"{{"stream":"{key}","ts":{ts},"value":{v}}}"#);
        events.push((key, value));
    };
    for i in 0..5 {
        push("returner".into(), 10.0 + i as f64, ts);
        ts += 100;
    }
    for i in 0..3000 {
        push(format!("busy-{}", i % 300), (i as f64 * 0.1).sin(), ts);
        ts += 100;
    }
    for i in 0..5 {
        push("returner".into(), 15.0 + i as f64, ts);
        ts += 100;
    }
    produce_in_order(&brokers, &format!("in-{tag}"), &events);
    let n = events.len();

    // Reference: no eviction (and no checkpoints at all).
    let reference =
        Running::start(topics_toml(&brokers, &tag, "ref") + "[checkpoint]\ninterval = \"off\"\n");
    let want = forecasts(&brokers, &format!("out-{tag}-ref"), n);
    reference.stop();

    // With a 60 s TTL and a checkpoint every 500 events, "returner" is evicted
    // to the changelog and fetched back when it speaks again.
    let run = Running::start(
        topics_toml(&brokers, &tag, "ttl")
            + "[checkpoint]\ninterval = 500\n[state]\nidle_ttl = \"60s\"\n",
    );
    let got = forecasts(&brokers, &format!("out-{tag}-ttl"), n);
    let evicted = run.metric("recur_streams_evicted_total");
    let returned = run.metric("recur_streams_returned_total");
    let active = run.metric("recur_streams_active");
    run.stop();
    assert_eq!(evicted, 1.0, "only the returner idles past the TTL");
    assert_eq!(returned, 1.0, "and it comes back from the changelog");
    assert_eq!(active, 301.0);
    assert_eq!(got.len(), n);
    for (at, value) in &want {
        assert_eq!(
            got.get(at),
            Some(value),
            "offset {at:?}: eviction changed a forecast"
        );
    }
}

#[test]
fn a_watched_checkpoint_is_hot_swapped_into_every_partition() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("swap-{}", std::process::id());
    let partitions = 4;
    create_stage_topics(&brokers, &tag, partitions, &["a"]);
    let dir = std::env::temp_dir().join(format!("recur-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let watched = dir.join("model.ckpt");
    // The run warm-starts from version 99 (state.init), then swaps to 4242.
    let model = |seed: u64, version: u64, path: &std::path::Path| {
        let mut m = Forecaster::<f32>::new(ModelConfig {
            seed,
            learning: Learning::Off,
            ..ModelConfig::default()
        })
        .unwrap();
        m.shared_mut().updates = version;
        m.save(path).unwrap();
    };
    let init = dir.join("init.ckpt");
    model(3, 99, &init);
    let run = Running::start(format!(
        "{}[model]\nlearning = \"off\"\n[state]\ninit = \"{}\"\nwatch = \"{}\"\n",
        topics_toml(&brokers, &tag, "a"),
        init.display(),
        watched.display()
    ));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let input = format!("in-{tag}");
    recur::tools::produce_synthetic(&brokers, &input, 40, 0, Some(2000), &stop).unwrap();
    assert_eq!(run.wait_metric("recur_predictions_total", 2000.0), 2000.0);

    // A new model: other weights (another seed), version 4242; written whole, then renamed in.
    let tmp = dir.join("model.tmp");
    model(7, 4242, &tmp);
    std::fs::rename(&tmp, &watched).unwrap();
    assert_eq!(
        run.wait_metric("recur_model_swaps_total", partitions as f64),
        partitions as f64,
        "every partition loads it"
    );
    recur::tools::produce_synthetic(&brokers, &input, 40, 0, Some(2000), &stop).unwrap();
    assert_eq!(run.wait_metric("recur_predictions_total", 4000.0), 4000.0);
    let collector = Collector::start(&brokers, &format!("out-{tag}-a"));
    assert_eq!(collector.wait_distinct(4000, Duration::from_secs(60)), 4000);
    run.stop();
    let preds = collector.finish_predictions();
    let ends = end_offsets(&brokers, &input, partitions, 4000);
    let mut versions: HashMap<u64, usize> = HashMap::new();
    for p in &preds {
        let v: serde_json::Value = serde_json::from_slice(&p.value).unwrap();
        let version = v["model_version"].as_u64().unwrap();
        // The second batch starts at half of each partition's end offset or later.
        let second = p.offset >= ends[&p.partition] / 2;
        if second {
            assert_eq!(version, 4242, "{p:?} came after the swap");
        } else {
            assert_eq!(version, 99, "{p:?} came from the warm start");
        }
        *versions.entry(version).or_default() += 1;
    }
    assert_eq!(versions.get(&4242), Some(&2000), "{versions:?}");
    assert_eq!(versions.get(&99), Some(&2000), "{versions:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exactly_once_commits_offsets_through_transactions() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("eos-{}", std::process::id());
    let partitions = 4;
    create_stage_topics(&brokers, &tag, partitions, &["a"]);
    let input = format!("in-{tag}");
    let stop = std::sync::atomic::AtomicBool::new(false);
    recur::tools::produce_synthetic(&brokers, &input, 50, 0, Some(4000), &stop).unwrap();
    let ends = end_offsets(&brokers, &input, partitions, 4000);
    let toml = topics_toml(&brokers, &tag, "a").replace(
        "[kafka.properties]",
        "delivery = \"exactly_once\"\n[kafka.properties]",
    );
    let run = Running::start(toml + "[checkpoint]\ninterval = 300\n");
    assert_eq!(run.wait_metric("recur_predictions_total", 4000.0), 4000.0);
    // Checkpoints (each one a committed transaction) happened mid-run, not only at the end.
    assert!(run.metric("recur_checkpoints_total") >= 4.0);
    let report = run.stop();
    assert_eq!(report.predictions, 4000);
    // The stage itself never commits in this mode: these positions came with
    // send_offsets_to_transaction, one transaction per checkpoint.
    common::assert_committed_at(&brokers, &format!("recur-{tag}-a"), &input, &ends);
}
