//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoint.
//!
//! Names follow `recur_<thing>_<unit>`; the only labels are `partition` and
//! `reason`, never a stream id (unbounded cardinality).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every metric recur exports.
pub struct Metrics {
    /// The registry they live in.
    pub registry: Registry,
    /// Good input events decoded.
    pub events: IntCounter,
    /// Predictions acknowledged by the broker.
    pub predictions: IntCounter,
    /// Dead letters acknowledged by the broker, by reason.
    pub dead_letters: IntCounterVec,
    /// Weight updates applied.
    pub model_updates: IntCounter,
    /// Events, losses or gradients the non-finite guard stopped.
    pub nonfinite: IntCounter,
    /// Produce requests that failed for good (their offsets are never committed).
    pub delivery_errors: IntCounter,
    /// Events per flushed window.
    pub window_events: Histogram,
    /// Seconds from a window's flush to all its records handed to the producer.
    pub processing: Histogram,
    /// Seconds from an event's time to its prediction being produced.
    pub event_lag: Histogram,
    /// Streams with state on this instance.
    pub streams_active: IntGauge,
    /// Messages behind the end of each assigned partition.
    pub consumer_lag: IntGaugeVec,
    /// Partitions assigned to this instance.
    pub partitions_assigned: IntGauge,
    /// Exponentially weighted squared one-step error.
    pub online_mse: Gauge,
    /// Exponentially weighted absolute one-step error.
    pub online_mae: Gauge,
    /// The same for the naive (last value) forecast, for comparison.
    pub naive_mse: Gauge,
    /// Running error averages behind the gauges.
    ewma: Mutex<Ewma>,
    /// Seconds to restore a partition's state from the changelog.
    pub restore_seconds: Histogram,
    /// Changelog records read while restoring.
    pub restore_records: IntCounter,
    /// Checkpoints completed (head acknowledged).
    pub checkpoints: IntCounter,
    /// Checkpoints that failed (retried at the next interval).
    pub checkpoint_failures: IntCounter,
    /// Seconds a checkpoint takes, from its first record to its head acknowledged.
    pub checkpoint_seconds: Histogram,
    /// Streams evicted to the changelog after `state.idle_ttl`.
    pub streams_evicted: IntCounter,
    /// Evicted streams brought back because they had a new event.
    pub streams_returned: IntCounter,
    /// Hot swaps applied (partitions that loaded a new checkpoint).
    pub model_swaps: IntCounter,
    /// Set once the stage consumes (it has joined its group).
    pub ready: AtomicBool,
    /// An error that stops the stage (e.g. a changelog that does not fit the model).
    fatal: Mutex<Option<String>>,
    failed: AtomicBool,
}

#[derive(Default)]
struct Ewma {
    mse: Option<f64>,
    mae: Option<f64>,
    naive: Option<f64>,
}

/// Weight of the newest window in the error averages.
const EWMA_ALPHA: f64 = 0.05;

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "recur_dead_letters_total",
                "Dead-letter records delivered, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(dead_letters.clone()))
            .expect("unique metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "recur_consumer_lag_messages",
                "Messages between the consumer position and the partition end",
            ),
            &["partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let streams_active = IntGauge::new(
            "recur_streams_active",
            "Streams with state on this instance",
        )
        .expect("valid");
        registry
            .register(Box::new(streams_active.clone()))
            .expect("unique metric");
        let partitions_assigned = IntGauge::new(
            "recur_partitions_assigned",
            "Input partitions assigned to this instance",
        )
        .expect("valid");
        registry
            .register(Box::new(partitions_assigned.clone()))
            .expect("unique metric");
        let latency = prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        Arc::new(Metrics {
            events: counter("recur_events_total", "Good input events decoded"),
            predictions: counter(
                "recur_predictions_total",
                "Predictions acknowledged by the broker",
            ),
            model_updates: counter("recur_model_updates_total", "TBPTT weight updates applied"),
            nonfinite: counter(
                "recur_nonfinite_total",
                "Non-finite inputs, losses or gradients stopped by the guard",
            ),
            delivery_errors: counter(
                "recur_delivery_errors_total",
                "Records the broker never acknowledged",
            ),
            window_events: hist(
                "recur_window_events",
                "Events per flushed window",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            processing: hist(
                "recur_processing_seconds",
                "Seconds to run a window through the model and hand it to the producer",
                latency.clone(),
            ),
            event_lag: hist(
                "recur_event_lag_seconds",
                "Seconds from event time to prediction produced",
                latency,
            ),
            online_mse: gauge(
                "recur_online_mse",
                "Exponentially weighted one-step squared error (original units)",
            ),
            online_mae: gauge(
                "recur_online_mae",
                "Exponentially weighted one-step absolute error (original units)",
            ),
            naive_mse: gauge(
                "recur_naive_mse",
                "The same squared error for the naive last-value forecast",
            ),
            restore_seconds: hist(
                "recur_restore_seconds",
                "Seconds to restore one partition's state from the changelog",
                prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets"),
            ),
            restore_records: counter(
                "recur_restore_records_total",
                "Changelog records read while restoring state",
            ),
            checkpoints: counter(
                "recur_checkpoints_total",
                "Partition checkpoints completed (head record acknowledged)",
            ),
            checkpoint_failures: counter(
                "recur_checkpoint_failures_total",
                "Partition checkpoints that failed and wait for the next interval",
            ),
            checkpoint_seconds: hist(
                "recur_checkpoint_seconds",
                "Seconds from a checkpoint's first record to its head acknowledged",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            streams_evicted: counter(
                "recur_streams_evicted_total",
                "Idle streams evicted from memory to the changelog",
            ),
            streams_returned: counter(
                "recur_streams_returned_total",
                "Evicted streams fetched back from the changelog",
            ),
            model_swaps: counter(
                "recur_model_swaps_total",
                "Partitions that loaded a hot-swapped checkpoint",
            ),
            dead_letters,
            consumer_lag,
            streams_active,
            partitions_assigned,
            registry,
            ewma: Mutex::new(Ewma::default()),
            ready: AtomicBool::new(false),
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
        })
    }

    /// Records an error that must stop the stage (the first one wins).
    pub fn fail(&self, message: String) {
        eprintln!("recur: {message}");
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(message);
        self.failed.store(true, Ordering::Release);
    }

    /// Whether an error stops the stage (cheap: for loops).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The error that stops the stage, if any.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Folds one window's mean one-step errors into the weighted averages.
    pub fn observe_errors(&self, mse: f64, mae: f64, naive_mse: f64) {
        let mut e = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        let fold =
            |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o + EWMA_ALPHA * (new - o)));
        e.mse = fold(e.mse, mse);
        e.mae = fold(e.mae, mae);
        e.naive = fold(e.naive, naive_mse);
        self.online_mse.set(e.mse.unwrap_or(0.0));
        self.online_mae.set(e.mae.unwrap_or(0.0));
        self.naive_mse.set(e.naive.unwrap_or(0.0));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => match metrics.fatal() {
                    None => ("200 OK", "text/plain", "ok\n".to_string()),
                    Some(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
                },
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_string(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics, /healthz, /readyz\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
