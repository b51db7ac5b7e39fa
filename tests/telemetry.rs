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
    while metric(&text, "recur_forecasts_scored_total") < 2000.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        text = http_get(&addr, "/metrics");
    }
    stop.notify_one();
    run.join().unwrap();

    let scored = sample(&text, "recur_forecasts_scored_total{model=\"recur\"}").unwrap_or(0.0);
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
