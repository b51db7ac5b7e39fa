//! No input is skipped because of someone else's checkpoint: a group whose
//! changelog covers another input topic refuses it (or starts afresh, by
//! `state.on_mismatch`), instead of skipping the new topic's first offsets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use recur::config::Config;
use recur::stage::{self, LiveLine, RunReport};

mod common;
use common::{brokers, create_topics, free_port, metric, metrics_text};

fn config(brokers: &str, tag: &str, input: &str, extra: &str) -> (Config, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\noutput_topic = \"out-{tag}\"\n\
         dlq_topic = \"dlq-{tag}\"\ngroup = \"recur-{tag}\"\n[kafka.properties]\n\
         \"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\"fetch.wait.max.ms\" = \"20\"\n\
         [metrics]\naddr = \"{addr}\"\n{extra}"
    );
    (
        Config::load_with(None, text.parse().unwrap()).unwrap(),
        addr,
    )
}

/// Runs the stage until `predictions` are acknowledged (or 90 s), then stops it.
fn run_until(cfg: Config, addr: &str, predictions: f64) -> anyhow::Result<RunReport> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet)
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    while !run.is_finished()
        && metric(&metrics_text(addr), "recur_predictions_total") < predictions
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.notify_one();
    run.join().unwrap()
}

fn produce(brokers: &str, topic: &str, n: u64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    recur::tools::produce_synthetic(brokers, topic, 5, 0, Some(n), &stop).unwrap();
}

#[test]
fn a_checkpoint_of_another_input_topic_is_refused_or_started_afresh_never_skipped() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("mismatch-{}", std::process::id());
    let (a, b) = (format!("in-{tag}-a"), format!("in-{tag}-b"));
    let (out, dlq) = (format!("out-{tag}"), format!("dlq-{tag}"));
    create_topics(&brokers, &[(&a, 1), (&b, 1), (&out, 1), (&dlq, 1)]);

    // The group checkpoints topic a up to offset 300.
    produce(&brokers, &a, 300);
    let (cfg, addr) = config(&brokers, &tag, &a, "");
    assert_eq!(run_until(cfg, &addr, 300.0).unwrap().predictions, 300);

    // The same group on topic b: its state covers a, not b.
    produce(&brokers, &b, 120);
    let (cfg, addr) = config(&brokers, &tag, &b, "");
    let err = run_until(cfg, &addr, 120.0).expect_err("topic b ran on topic a's checkpoint");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("covers input topic {a:?}")),
        "{text}"
    );

    // Started afresh on purpose: every event of b gets its prediction.
    let (cfg, addr) = config(&brokers, &tag, &b, "[state]\non_mismatch = \"fresh\"\n");
    let report = run_until(cfg, &addr, 120.0).unwrap();
    assert_eq!(report.predictions, 120, "topic b's events were skipped");
}

#[test]
fn a_deleted_and_recreated_input_topic_is_told_from_the_old_one() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("recreated-{}", std::process::id());
    let input = format!("in-{tag}");
    let (out, dlq) = (format!("out-{tag}"), format!("dlq-{tag}"));
    create_topics(&brokers, &[(&input, 1), (&out, 1), (&dlq, 1)]);
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", &brokers);
    let Some(old_id) = recur::kafka::topic_id(&client, &input, Duration::from_secs(10)) else {
        eprintln!("skipped: the broker gives no topic ids");
        return;
    };
    produce(&brokers, &input, 300);
    let (cfg, addr) = config(&brokers, &tag, &input, "");
    assert_eq!(run_until(cfg, &addr, 300.0).unwrap().predictions, 300);

    // Same name, new topic: its offsets start at 0 again, below what the
    // checkpoint covers.
    delete_topic(&brokers, &input);
    create_topics(&brokers, &[(&input, 1)]);
    let new_id = recur::kafka::topic_id(&client, &input, Duration::from_secs(10));
    assert!(new_id.is_some() && new_id.as_deref() != Some(old_id.as_str()));
    produce(&brokers, &input, 120);
    let (cfg, addr) = config(&brokers, &tag, &input, "");
    let err =
        run_until(cfg, &addr, 120.0).expect_err("the new topic ran on the old one's checkpoint");
    let text = format!("{err:#}");
    assert!(text.contains("was deleted and recreated"), "{text}");

    let (cfg, addr) = config(&brokers, &tag, &input, "[state]\non_mismatch = \"fresh\"\n");
    let report = run_until(cfg, &addr, 120.0).unwrap();
    assert_eq!(
        report.predictions, 120,
        "the new topic's events were skipped"
    );
}

fn delete_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.delete_topics(&[topic], &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}
