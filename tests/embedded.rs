//! The zero-setup default: `brokers = "embedded"` starts librdkafka's mock
//! cluster, feeds it synthetic streams and serves /metrics.

use std::time::{Duration, Instant};

use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{http_get as get, metric as counter};

#[test]
fn the_embedded_default_forecasts_and_serves_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Nothing but the metrics address differs from the built-in defaults.
    let overrides = format!("[metrics]\naddr = \"{addr}\"\n[embedded]\nrate = 5000\n")
        .parse()
        .unwrap();
    let cfg = Config::load_with(None, overrides).unwrap();
    assert!(
        cfg.kafka.is_embedded(),
        "the default must be the embedded cluster"
    );
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { s.notified().await }, LiveLine::Quiet).unwrap()
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    // The error gauges move when a window is done, predictions as they are acknowledged.
    while (counter(&text, "recur_predictions_total") < 500.0
        || counter(&text, "recur_online_mse") <= 0.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(250));
        text = get(&addr, "/metrics");
    }
    assert!(
        counter(&text, "recur_predictions_total") >= 500.0,
        "no predictions within a minute:\n{text}"
    );
    assert!(get(&addr, "/healthz").contains("200 OK"));
    // Ready once every assigned partition has restored its state: one
    // partition may already predict while another still reads its changelog.
    let mut ready = get(&addr, "/readyz");
    while !ready.contains("200 OK") && Instant::now() < deadline + Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
        ready = get(&addr, "/readyz");
    }
    assert!(ready.contains("200 OK"), "never ready:\n{ready}");
    assert!(get(&addr, "/nope").contains("404"));
    assert!(counter(&text, "recur_online_mse") > 0.0);
    stop.notify_one();
    let report = run.join().unwrap();
    assert!(report.events >= 500);
    assert_eq!(
        report.predictions, report.events,
        "every fed event got a prediction before shutdown"
    );
    assert_eq!(report.dead_letters, 0);
}
