//! What an operator reads off /metrics: error counters that sum across
//! instances, build and process metrics, and an event lag that means
//! something in the embedded demo (its events are stamped near the wall clock).

use std::time::{Duration, Instant};

use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{free_port, http_get, metric};

/// The value of the one sample line starting with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_embedded_stage_exports_summable_errors_build_info_and_a_real_event_lag() {
    let addr = format!("127.0.0.1:{}", free_port());
    let overrides = format!("[metrics]\naddr = \"{addr}\"\n[embedded]\nrate = 5000\n")
        .parse()
        .unwrap();
    let cfg = Config::load_with(None, overrides).unwrap();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let recur_scored = "recur_forecasts_scored_total{model=\"recur\"}";
    // Wait on recur's own count: the unlabelled name also sums the naive
    // model's equal count, which reached 2000 at 1020 forecasts each.
    while sample(&text, recur_scored).unwrap_or(0.0) < 2000.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        text = http_get(&addr, "/metrics");
    }
    stop.notify_one();
    run.join().unwrap();

    let scored = sample(&text, recur_scored).unwrap_or(0.0);
    assert!(scored >= 2000.0, "too few forecasts scored:\n{text}");
    assert_eq!(
        sample(&text, "recur_forecasts_scored_total{model=\"naive\"}"),
        Some(scored),
        "recur and naive are scored on the same forecasts"
    );
    let sq = sample(&text, "recur_forecast_squared_error_total{model=\"recur\"}").unwrap();
    let naive_sq = sample(&text, "recur_forecast_squared_error_total{model=\"naive\"}").unwrap();
    let abs = sample(
        &text,
        "recur_forecast_absolute_error_total{model=\"recur\"}",
    )
    .unwrap();
    assert!(sq > 0.0 && naive_sq > 0.0 && abs > 0.0, "{text}");
    // Mean absolute error is at most root mean squared error.
    assert!(abs / scored <= (sq / scored).sqrt() + 1e-9);

    let version = "recur_build_info{librdkafka=\"";
    let info = text
        .lines()
        .find(|l| l.starts_with(version))
        .unwrap_or_else(|| panic!("no recur_build_info:\n{text}"));
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && info.ends_with(" 1"),
        "{info}"
    );
    assert!(
        metric(&text, "process_resident_memory_bytes") > 1e6,
        "no resident memory:\n{text}"
    );

    // Events are stamped near the wall clock, so their lag lands in the
    // finite buckets (with synthetic hourly times every one was at +Inf).
    // The first ones wait for the group join, so the bound is loose.
    let count = sample(&text, "recur_event_lag_seconds_count").unwrap();
    let finite = text
        .lines()
        .filter(|l| l.starts_with("recur_event_lag_seconds_bucket{le=\"") && !l.contains("+Inf"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(
        count > 0.0 && finite >= 0.9 * count,
        "event lag: {finite} of {count} observations below +Inf:\n{text}"
    );
}

/// A server on a port of its own, with fresh metrics and health.
fn endpoint() -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let health = std::sync::Arc::new(recur::health::Health::default());
    rt.spawn(recur::http::serve(
        listener,
        recur::telemetry::Metrics::new(),
        health,
    ));
    (rt, addr)
}

#[test]
fn a_request_split_across_packets_is_read_whole() {
    use std::io::{Read, Write};
    let (_rt, addr) = endpoint();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET /met").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"rics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("recur_events_total"), "{text}");
    let ready = http_get(&addr.to_string(), "/readyz");
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("no partitions assigned yet"),
        "{ready}"
    );
}

#[test]
fn idle_connections_past_the_limit_are_dropped_and_do_not_starve_a_scrape() {
    use std::io::Read;
    let (_rt, addr) = endpoint();
    // More silent connections than the server serves at once.
    let idle: Vec<std::net::TcpStream> = (0..recur::http::MAX_CONNECTIONS + 16)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let scrape = std::thread::spawn(move || http_get(&addr.to_string(), "/metrics"));
    let text = scrape.join().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The server hung up on every silent connection (after its header timeout).
    for mut s in idle {
        s.set_read_timeout(Some(recur::http::TIMEOUT * 6)).unwrap();
        // To the end: a read timeout (the server kept it open) fails here.
        if let Err(e) = s.read_to_end(&mut Vec::new()) {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
    }
}
