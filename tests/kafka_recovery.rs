//! Nothing is lost when things break: a SIGKILL mid-run on the real broker,
//! and the brokers going away for 5 s (librdkafka's mock cluster).

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{Collector, brokers, create_topics, end_offsets, free_port, metric, metrics_text};

const PARTITIONS: i32 = 4;

/// Checks that every input offset `[0, end)` of every partition has a prediction.
fn assert_all_covered(seen: &[(i32, i64)], ends: &HashMap<i32, i64>) {
    let got: HashSet<(i32, i64)> = seen.iter().copied().collect();
    for (&p, &end) in ends {
        let missing: Vec<i64> = (0..end).filter(|o| !got.contains(&(p, *o))).collect();
        assert!(
            missing.is_empty(),
            "partition {p}: {} offsets without a prediction, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

fn write_config(
    dir: &std::path::Path,
    brokers: &str,
    tag: &str,
    metrics_port: u16,
) -> std::path::PathBuf {
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &path,
        common::stage_toml(brokers, tag, &format!("127.0.0.1:{metrics_port}")),
    )
    .unwrap();
    path
}

fn spawn_recur(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["run", "--quiet", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_mid_run_loses_no_prediction() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("kill-{}", std::process::id());
    let input = format!("in-{tag}");
    create_topics(
        &brokers,
        &[
            (&input, PARTITIONS),
            (&format!("out-{tag}"), PARTITIONS),
            (&format!("dlq-{tag}"), 1),
        ],
    );
    let events = 30_000u64;
    let stop = AtomicBool::new(false);
    recur::tools::produce_synthetic(&brokers, &input, 100, 0, Some(events), &stop).unwrap();
    let ends = end_offsets(&brokers, &input, PARTITIONS, events as i64);

    let dir = std::env::temp_dir().join(format!("recur-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = write_config(&dir, &brokers, &tag, port);
    let collector = Collector::start(&brokers, &format!("out-{tag}"));

    let mut first = spawn_recur(&config);
    let got = collector.wait_distinct(events as usize / 3, Duration::from_secs(120));
    assert!(
        got >= events as usize / 3,
        "the first run produced only {got} predictions"
    );
    assert!(
        (got as u64) < events,
        "the run finished before the kill; make the input larger"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = spawn_recur(&config);
    let got = collector.wait_distinct(events as usize, Duration::from_secs(180));
    // SIGTERM: a graceful stop of the second run.
    unsafe_sigterm(second.id());
    let status = second.wait().unwrap();
    let seen = collector.finish();
    assert_eq!(
        got, events as usize,
        "predictions are missing after the restart"
    );
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert_all_covered(&seen, &ends);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn unsafe_sigterm(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn brokers_down_for_five_seconds_loses_nothing() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let tag = format!("down-{}", std::process::id());
    for (t, p) in [
        (format!("in-{tag}"), PARTITIONS),
        (format!("out-{tag}"), PARTITIONS),
        (format!("dlq-{tag}"), 1),
        // The changelog: the mock cluster has no CreateTopics, so the test makes it.
        (format!("g-{tag}-state"), PARTITIONS),
    ] {
        mock.create_topic(&t, p, 1).unwrap();
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"in-{tag}\"\noutput_topic = \"out-{tag}\"\ndlq_topic = \"dlq-{tag}\"\ngroup = \"g-{tag}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[metrics]\naddr = \"{addr}\"\n"
    );
    let cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
    let done = Arc::new(tokio::sync::Notify::new());
    let d = done.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { d.notified().await }, LiveLine::Quiet).unwrap()
    });

    // Feed 8,000 events over 8 s; once predictions flow, take the broker down for
    // 5 s: the stage's fetches, produces and commits all fail in mid-flow.
    let input = format!("in-{tag}");
    let feeder = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            recur::tools::produce_synthetic(&brokers, &input, 30, 1000, Some(8000), &stop).unwrap()
        })
    };
    let flowing = Instant::now() + Duration::from_secs(30);
    let mut before = 0.0;
    while before < 300.0 && Instant::now() < flowing {
        std::thread::sleep(Duration::from_millis(100));
        before = metric(&metrics_text(&addr), "recur_predictions_total");
    }
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    mock.broker_up(1).unwrap();
    assert_eq!(feeder.join().unwrap(), 8000);
    assert!(before > 0.0, "nothing was processed before the outage");

    // Every input offset must get a prediction (duplicates are allowed: at least once).
    let ends = end_offsets(&brokers, &format!("in-{tag}"), PARTITIONS, 8000);
    let collector = Collector::start(&brokers, &format!("out-{tag}"));
    let got = collector.wait_distinct(8000, Duration::from_secs(120));
    done.notify_one();
    let report = run.join().unwrap();
    let seen = collector.finish();
    assert_eq!(got, 8000, "predictions are missing after the outage");
    assert_all_covered(&seen, &ends);
    assert_eq!(report.dead_letters, 0);
    assert!(report.events >= 8000);
    assert_eq!(
        report.predictions, report.events,
        "an event processed during the outage lost its prediction"
    );
    drop(mock);
}
