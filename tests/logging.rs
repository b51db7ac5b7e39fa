//! Log lines: librdkafka's own errors reach recur's log (they were dropped
//! before), and `log.format = "json"` writes one JSON object per line.

use std::process::Command;

mod common;

/// `recur tail` against a port nobody listens on, for `idle` seconds; its stderr.
fn tail_closed_port(envs: &[(&str, &str)]) -> (String, u16) {
    let port = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["tail", "--brokers", &format!("127.0.0.1:{port}")])
        .args(["--topic", "nothing-here", "--idle-s", "2"])
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .output()
        .expect("running recur tail");
    assert!(
        out.status.success(),
        "tail ends quietly after --idle-s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stderr).into_owned(), port)
}

#[test]
fn a_librdkafka_connection_error_reaches_the_log() {
    let (stderr, port) = tail_closed_port(&[]);
    let line = stderr
        .lines()
        .find(|l| l.contains("[rdkafka]") && l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no librdkafka line about port {port} in:\n{stderr}"));
    assert!(line.starts_with("recur: error: "), "{line}");
    assert!(
        stderr.contains("Connection refused") || stderr.contains("brokers are down"),
        "{stderr}"
    );
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let (stderr, port) = tail_closed_port(&[("RECUR_LOG__FORMAT", "json")]);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    let mut from_rdkafka = 0;
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {l}"));
        assert!(
            o.contains_key("level") && o.contains_key("timestamp"),
            "{l}"
        );
        if o.get("target").and_then(|t| t.as_str()) == Some("rdkafka") {
            from_rdkafka += 1;
            let msg = o["message"].as_str().unwrap_or_default();
            assert!(!msg.is_empty(), "{l}");
        }
    }
    assert!(
        from_rdkafka > 0 && stderr.contains(&format!("127.0.0.1:{port}")),
        "no librdkafka object in:\n{stderr}"
    );
}

#[test]
fn rust_log_filters_librdkafka_lines_by_target() {
    let (kept, _) = tail_closed_port(&[("RUST_LOG", "off,rdkafka=error")]);
    assert!(
        kept.contains("[rdkafka]"),
        "rdkafka=error keeps its errors:\n{kept}"
    );
    let (stderr, _) = tail_closed_port(&[("RUST_LOG", "info,rdkafka=off")]);
    assert!(!stderr.contains("[rdkafka]"), "{stderr}");
}
