//! Anomaly flags on the real broker: spikes injected into a clean stream at
//! known offsets are flagged, few clean events are, and the flagged ones
//! also reach `anomaly.topic`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{Collector, brokers, create_topics, free_port};

#[test]
fn injected_spikes_are_flagged_and_at_most_one_percent_of_clean_events() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("anomaly-{}", std::process::id());
    let (input, output, dlq, flagged) = (
        format!("in-{tag}"),
        format!("out-{tag}"),
        format!("dlq-{tag}"),
        format!("flagged-{tag}"),
    );
    create_topics(
        &brokers,
        &[(&input, 1), (&output, 1), (&dlq, 1), (&flagged, 1)],
    );

    // A clean noisy daily cycle (noise sd 0.1), with spikes of 20 noise sds.
    let events = 3000usize;
    let spikes: HashSet<usize> = (0..10).map(|i| 800 + 211 * i).collect();
    let clean = recur::synth::NoisySine::new(48.0, 0.1, 11);
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (i, x) in clean.take(events).enumerate() {
        let value = 10.0 + x + if spikes.contains(&i) { 2.0 } else { 0.0 };
        let payload = format!(
            r#"{{"stream":"s","ts":{},"value":{value}}}"#,
            1_467_331_200_000i64 + 60_000 * i as i64
        );
        producer
            .send(BaseRecord::to(&input).key("s").payload(&payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\noutput_topic = \"{output}\"\n\
         dlq_topic = \"{dlq}\"\ngroup = \"g-{tag}\"\n[kafka.properties]\n\
         \"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [metrics]\naddr = \"127.0.0.1:{}\"\n[anomaly]\ntopic = \"{flagged}\"\n",
        free_port()
    );
    let cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
    let (out, side) = (
        Collector::start(&brokers, &output),
        Collector::start(&brokers, &flagged),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet).unwrap()
    });
    assert_eq!(out.wait_distinct(events, Duration::from_secs(120)), events);
    stop.notify_one();
    let report = run.join().unwrap();
    assert_eq!(report.predictions, events as u64);

    let mut flagged_offsets = HashSet::new();
    for p in out.finish_predictions() {
        let v: serde_json::Value = serde_json::from_slice(&p.value).unwrap();
        if v["anomaly"] == serde_json::Value::Bool(true) {
            flagged_offsets.insert(p.offset as usize);
        }
    }
    for &i in &spikes {
        assert!(
            flagged_offsets.contains(&i),
            "spike at offset {i} not flagged"
        );
    }
    let false_flags = flagged_offsets.difference(&spikes).count();
    let clean_events = events - spikes.len();
    assert!(
        false_flags * 100 <= clean_events,
        "{false_flags} of {clean_events} clean events flagged"
    );
    // The flagged topic holds exactly the flagged events.
    assert_eq!(
        side.wait_distinct(flagged_offsets.len(), Duration::from_secs(30)),
        flagged_offsets.len()
    );
    let side: HashSet<usize> = side.finish().into_iter().map(|(_, o)| o as usize).collect();
    assert_eq!(side, flagged_offsets);
    eprintln!(
        "anomaly: {} spikes flagged, {false_flags} of {clean_events} clean events flagged",
        spikes.len()
    );
}
