//! `recur bench pipeline` on the embedded cluster: a run completes and
//! reports every latency event, and a backlog larger than the cluster keeps
//! is refused with the reason instead of waiting for records that are gone.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `recur bench pipeline ARGS`, killing it (and failing) if it has not
/// finished within `bound`: the old failure was a wait of ten minutes per phase.
fn bench(args: &[&str], bound: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["bench", "pipeline"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting recur");
    let start = Instant::now();
    while child.try_wait().expect("waiting for recur").is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            panic!("recur bench pipeline {args:?} still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().expect("reading recur's output")
}

#[test]
fn a_small_backlog_runs_to_the_end_and_times_every_latency_event() {
    let out = bench(
        &["--events", "20000", "--streams", "100", "--json"],
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(report["events"], 20000);
    assert_eq!(report["latency_events"], 2000, "{report}");
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["latency_p99_ms"].as_f64().unwrap().is_finite(),
        "{report}"
    );
}

#[test]
fn a_backlog_the_embedded_cluster_cannot_keep_is_refused_with_the_reason() {
    let out = bench(
        &["--events", "400000", "--partitions", "2", "--json"],
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("dropped the oldest") && stderr.contains("--events"),
        "{stderr}"
    );
}
