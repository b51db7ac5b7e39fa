//! Prometheus metrics (served by [`crate::http`]).
//!
//! Names follow `recur_<thing>_<unit>`; the only labels are `partition`,
//! `reason` and `model`, never a stream id (unbounded cardinality).

use std::sync::Arc;
use std::sync::Mutex;

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    /// Weight updates undone because a new weight was not finite.
    pub weight_rollbacks: IntCounter,
    /// Streams restarted after a level shift far outside their running statistics.
    pub level_shifts: IntCounter,
    /// Events whose anomaly score reached `anomaly.threshold`.
    pub anomalies: IntCounter,
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
    /// Streams dropped from memory past `state.max_streams` without checkpoints.
    pub streams_dropped: IntCounter,
    /// Evicted streams brought back because they had a new event.
    pub streams_returned: IntCounter,
    /// Hot swaps applied (partitions that loaded a new checkpoint).
    pub model_swaps: IntCounter,
    /// Summed one-step squared errors, `model` = `recur` or `naive`: with
    /// [`Metrics::scored`], an MSE that sums and averages across instances.
    pub squared_error: CounterVec,
    /// Summed one-step absolute errors, by `model`.
    pub absolute_error: CounterVec,
    /// One-step forecast components scored, by `model`.
    pub scored: IntCounterVec,
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
        let r = Reg(Registry::new());
        register_build_info(&r.0);
        register_process(&r.0);
        let latency = || prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let slow = |n| prometheus::exponential_buckets(0.001, 2.0, n).expect("valid buckets");
        let by_model = "by model: recur or naive";
        Arc::new(Metrics {
            events: r.counter("recur_events_total", "Good input events decoded"),
            predictions: r.counter("recur_predictions_total", "Predictions acknowledged"),
            dead_letters: r.counters(
                "recur_dead_letters_total",
                "Dead-letter records delivered, by reason",
                "reason",
            ),
            model_updates: r.counter("recur_model_updates_total", "TBPTT weight updates applied"),
            nonfinite: r.counter(
                "recur_nonfinite_total",
                "Non-finite inputs, losses or gradients stopped by the guard",
            ),
            weight_rollbacks: r
                .counter("recur_weight_rollbacks_total", "Updates undone: not finite"),
            level_shifts: r.counter(
                "recur_level_shifts_total",
                "Streams whose running statistics restarted after a level shift",
            ),
            delivery_errors: r.counter("recur_delivery_errors_total", "Records never acknowledged"),
            anomalies: r.counter("recur_anomalies_total", "Events flagged as anomalies"),
            window_events: r.hist(
                "recur_window_events",
                "Events per flushed window",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            processing: r.hist(
                "recur_processing_seconds",
                "Seconds to run a window through the model and hand it to the producer",
                latency(),
            ),
            event_lag: r.hist(
                "recur_event_lag_seconds",
                "Seconds from event time to prediction produced",
                latency(),
            ),
            streams_active: r.int_gauge(
                "recur_streams_active",
                "Streams with state on this instance",
            ),
            consumer_lag: r.int_gauges(
                "recur_consumer_lag_messages",
                "Messages between the consumer position and the partition end",
                "partition",
            ),
            partitions_assigned: r.int_gauge(
                "recur_partitions_assigned",
                "Input partitions assigned to this instance",
            ),
            online_mse: r.gauge(
                "recur_online_mse",
                "Exponentially weighted one-step squared error (original units)",
            ),
            online_mae: r.gauge(
                "recur_online_mae",
                "Exponentially weighted one-step absolute error (original units)",
            ),
            naive_mse: r.gauge(
                "recur_naive_mse",
                "The same squared error for the naive last-value forecast",
            ),
            ewma: Mutex::new(Ewma::default()),
            restore_seconds: r.hist(
                "recur_restore_seconds",
                "Seconds to restore one partition's state from the changelog",
                slow(18),
            ),
            restore_records: r.counter(
                "recur_restore_records_total",
                "Changelog records read while restoring state",
            ),
            checkpoints: r.counter(
                "recur_checkpoints_total",
                "Partition checkpoints completed (head record acknowledged)",
            ),
            checkpoint_failures: r.counter(
                "recur_checkpoint_failures_total",
                "Partition checkpoints that failed and wait for the next interval",
            ),
            checkpoint_seconds: r.hist(
                "recur_checkpoint_seconds",
                "Seconds from a checkpoint's first record to its head acknowledged",
                slow(16),
            ),
            streams_evicted: r.counter(
                "recur_streams_evicted_total",
                "Idle streams evicted from memory to the changelog",
            ),
            streams_dropped: r.counter(
                "recur_streams_dropped_total",
                "Streams dropped from memory past state.max_streams with checkpoints off (they start afresh)",
            ),
            streams_returned: r.counter(
                "recur_streams_returned_total",
                "Evicted streams fetched back from the changelog",
            ),
            model_swaps: r.counter(
                "recur_model_swaps_total",
                "Partitions that loaded a hot-swapped checkpoint",
            ),
            squared_error: r.float_counters(
                "recur_forecast_squared_error_total",
                &format!("Summed one-step squared errors (original units), {by_model}"),
                "model",
            ),
            absolute_error: r.float_counters(
                "recur_forecast_absolute_error_total",
                &format!("Summed one-step absolute errors (original units), {by_model}"),
                "model",
            ),
            scored: r.counters(
                "recur_forecasts_scored_total",
                &format!("One-step forecast components scored, {by_model}"),
                "model",
            ),
            registry: r.0,
        })
    }

    /// Folds one window's one-step errors into the counters and the
    /// weighted averages.
    pub fn observe_errors(&self, e: &WindowErrors) {
        if e.n == 0 {
            return;
        }
        let n = e.n as f64;
        for (model, sq, abs) in [("recur", e.sq, e.abs), ("naive", e.naive_sq, e.naive_abs)] {
            self.squared_error.with_label_values(&[model]).inc_by(sq);
            self.absolute_error.with_label_values(&[model]).inc_by(abs);
            self.scored.with_label_values(&[model]).inc_by(e.n);
        }
        self.fold(e.sq / n, e.abs / n, e.naive_sq / n);
    }

    fn fold(&self, mse: f64, mae: f64, naive_mse: f64) {
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

/// One window's summed one-step errors (original units).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct WindowErrors {
    /// recur's squared errors.
    pub sq: f64,
    /// recur's absolute errors.
    pub abs: f64,
    /// The naive forecast's squared errors.
    pub naive_sq: f64,
    /// The naive forecast's absolute errors.
    pub naive_abs: f64,
    /// Components scored.
    pub n: u64,
}

/// Registers metrics as they are made.
struct Reg(Registry);

impl Reg {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0.register(Box::new(m.clone())).expect("unique metric");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, label: &str) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }

    fn float_counters(&self, name: &str, help: &str, label: &str) -> CounterVec {
        self.add(CounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn int_gauges(&self, name: &str, help: &str, label: &str) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }

    fn hist(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.add(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric"),
        )
    }
}

/// `recur_build_info{version, librdkafka} 1`.
fn register_build_info(registry: &Registry) {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let info = IntGaugeVec::new(
        Opts::new(
            "recur_build_info",
            "Always 1; the labels name recur's and librdkafka's versions",
        ),
        &["version", "librdkafka"],
    )
    .expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), librdkafka.as_str()])
        .set(1);
    registry.register(Box::new(info)).expect("unique metric");
}

/// The standard `process_*` metrics (resident memory, CPU, open files), on Linux.
fn register_process(registry: &Registry) {
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}
