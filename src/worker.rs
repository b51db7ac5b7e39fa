//! One partition's worker thread: decode → window → model → encode → sink.
//!
//! Each assigned partition gets its own thread and its own [`Forecaster`]
//! (shared weights per partition), so a partition's forecasts depend only on
//! that partition's events, in partition order. The learner is defined per
//! event, so how events were grouped into windows never changes a forecast.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::decode::{self, DecodeConfig, DecodeError, Reason};
use crate::encode::{self, SourceRef};
use crate::model::{Forecaster, ModelConfig};
use crate::sink::{self, Delivery, RecordKind, Sink};
use crate::telemetry::Metrics;
use crate::window::{WindowRows, Windower};

/// One input message as fetched.
#[derive(Debug)]
pub struct Raw {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Option<Vec<u8>>,
    /// Broker or producer timestamp, epoch ms.
    pub ts_ms: Option<i64>,
    /// Input offset.
    pub offset: i64,
}

/// What the source sends a worker.
#[derive(Debug)]
pub enum Input {
    /// Messages of the worker's partition, in order (batched to keep
    /// channel hand-offs and thread wake-ups off the per-event path).
    Messages(Vec<Raw>),
    /// Flush the open window and hand everything to the producer, then reply.
    Drain(SyncSender<()>),
}

/// Everything a worker needs besides its inbox.
pub struct WorkerSetup {
    /// Input topic (for the `source` of predictions and dead-letter headers).
    pub topic: String,
    /// Partition served.
    pub partition: i32,
    /// Output topic.
    pub output_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Decoding rules.
    pub decode: DecodeConfig,
    /// The learner's configuration.
    pub model: ModelConfig,
    /// Window size limit.
    pub max_events: usize,
    /// Window time limit.
    pub linger: Duration,
    /// The shared producer.
    pub sink: Arc<Sink>,
    /// The shared metrics.
    pub metrics: Arc<Metrics>,
    /// Checkpoint bytes to start the learner from (already validated), if any.
    pub init: Option<Arc<Vec<u8>>>,
}

/// Runs a worker until its inbox closes (after draining).
pub fn run(setup: WorkerSetup, inbox: Receiver<Input>) {
    let model =
        Forecaster::<f32>::new(setup.model.clone()).expect("model config was validated at start");
    let windower = Windower::new(
        setup.partition,
        setup.decode.width,
        setup.max_events,
        setup.linger,
    );
    let mut w = Worker {
        setup,
        model,
        windower,
        values: Vec::new(),
        out: Vec::new(),
        streams: 0,
        updates: 0,
        nonfinite: 0,
    };
    loop {
        let wait = w
            .windower
            .deadline()
            .map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(Instant::now())
            });
        match inbox.recv_timeout(wait) {
            Ok(Input::Messages(batch)) => {
                let now = Instant::now();
                for raw in batch {
                    w.handle(raw, now);
                }
            }
            Ok(Input::Drain(reply)) => {
                w.flush();
                let _ = reply.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(batch) = w.windower.poll(Instant::now()) {
                    w.process(&batch);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                w.flush();
                w.setup.metrics.streams_active.sub(w.streams as i64);
                return;
            }
        }
    }
}

struct Worker {
    setup: WorkerSetup,
    model: Forecaster<f32>,
    windower: Windower,
    values: Vec<f32>,
    out: Vec<u8>,
    /// Streams counted in the `streams_active` gauge.
    streams: usize,
    /// Learner counters already added to the metrics.
    updates: u64,
    nonfinite: u64,
}

impl Worker {
    fn source(&self, offset: i64) -> SourceRef<'_> {
        SourceRef {
            topic: &self.setup.topic,
            partition: self.setup.partition,
            offset,
        }
    }

    fn handle(&mut self, raw: Raw, now: Instant) {
        match decode::decode(
            &self.setup.decode,
            raw.key.as_deref(),
            raw.value.as_deref(),
            raw.ts_ms,
        ) {
            Ok(event) => {
                self.setup.metrics.events.inc();
                if let Some(batch) = self.windower.push(&event, raw.offset, now) {
                    self.process(&batch);
                }
            }
            Err(e) => self.dead_letter(raw.key.as_deref(), raw.value.as_deref(), raw.offset, &e),
        }
    }

    fn dead_letter(&self, key: Option<&[u8]>, value: Option<&[u8]>, offset: i64, e: &DecodeError) {
        let hs = sink::headers(&encode::dead_letter_headers(e, &self.source(offset)));
        let d = Delivery {
            partition: self.setup.partition,
            offset,
            kind: RecordKind::DeadLetter(e.reason),
        };
        self.setup.sink.send(
            &self.setup.dlq_topic,
            key.unwrap_or_default(),
            value.unwrap_or_default(),
            Some(hs),
            d,
        );
    }

    fn flush(&mut self) {
        if let Some(batch) = self.windower.flush() {
            self.process(&batch);
        }
    }

    /// Runs a window through the learner, one event at a time, and produces a record per event.
    fn process(&mut self, batch: &arrow_array::RecordBatch) {
        let start = Instant::now();
        let rows = match WindowRows::new(batch) {
            Ok(r) => r,
            Err(e) => panic!("a window built by this worker has the wrong schema: {e}"),
        };
        let metrics = self.setup.metrics.clone();
        metrics.window_events.observe(rows.len() as f64);
        let targets = self.model.config().target_indices().len();
        let (mut se, mut ae, mut ne, mut n) = (0.0, 0.0, 0.0, 0usize);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for i in 0..rows.len() {
            let (stream, ts_ms, offset) = (rows.stream(i), rows.ts_ms(i), rows.offset(i));
            self.values.clear();
            self.values.extend(rows.values(i).iter().map(|&v| v as f32));
            match self.model.observe(stream, &self.values) {
                Ok(obs) => {
                    se += obs.errors.step1_sq;
                    ae += obs.errors.step1_abs;
                    ne += obs.errors.naive_sq;
                    n += obs.errors.step1_n;
                    let src = SourceRef {
                        topic: &self.setup.topic,
                        partition: self.setup.partition,
                        offset,
                    };
                    encode::prediction(
                        &mut self.out,
                        stream,
                        ts_ms,
                        obs.forecast,
                        targets,
                        obs.model_version,
                        &src,
                    );
                    let d = Delivery {
                        partition: self.setup.partition,
                        offset,
                        kind: RecordKind::Prediction,
                    };
                    self.setup.sink.send(
                        &self.setup.output_topic,
                        stream.as_bytes(),
                        &self.out,
                        None,
                        d,
                    );
                    metrics
                        .event_lag
                        .observe(((now_ms - ts_ms).max(0) as f64) / 1000.0);
                }
                Err(e) => {
                    // Decode already refuses wrong widths and non-finite values;
                    // should the learner still refuse an event, it becomes a dead letter.
                    let err = DecodeError {
                        reason: Reason::NonFinite,
                        detail: e.to_string(),
                    };
                    let value = serde_json::json!({"stream": stream, "ts": ts_ms, "values": rows.values(i)}).to_string();
                    self.dead_letter(
                        Some(stream.as_bytes()),
                        Some(value.as_bytes()),
                        offset,
                        &err,
                    );
                }
            }
        }
        if n > 0 {
            let n = n as f64;
            metrics.observe_errors(se / n, ae / n, ne / n);
        }
        let stats = self.model.stats();
        metrics.model_updates.inc_by(stats.updates - self.updates);
        metrics.nonfinite.inc_by(stats.nonfinite - self.nonfinite);
        self.updates = stats.updates;
        self.nonfinite = stats.nonfinite;
        let streams = self.model.stream_count();
        metrics
            .streams_active
            .add(streams as i64 - self.streams as i64);
        self.streams = streams;
        metrics.processing.observe(start.elapsed().as_secs_f64());
    }
}
