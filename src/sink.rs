//! The Kafka producer: predictions and dead letters out, acknowledgements back
//! into [`Offsets`] and the metrics. It never touches model state.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use crate::decode::Reason;
use crate::offsets::Offsets;
use crate::telemetry::Metrics;

/// What a produced record was for.
#[derive(Clone, Copy, Debug)]
pub enum RecordKind {
    /// A prediction on the output topic.
    Prediction,
    /// A dead letter on the dead-letter topic.
    DeadLetter(Reason),
}

/// The input offset a record answers, carried to its delivery report.
#[derive(Debug)]
pub struct Delivery {
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// Prediction or dead letter.
    pub kind: RecordKind,
}

/// Receives delivery reports on librdkafka's thread.
pub struct SinkContext {
    offsets: Arc<Offsets>,
    metrics: Arc<Metrics>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        match result {
            Ok(_) => {
                self.offsets.with(d.partition, |p| p.acked(d.offset));
                match d.kind {
                    RecordKind::Prediction => self.metrics.predictions.inc(),
                    RecordKind::DeadLetter(r) => self
                        .metrics
                        .dead_letters
                        .with_label_values(&[r.as_str()])
                        .inc(),
                }
            }
            Err((e, _)) => self.fail(&d, e),
        }
    }
}

impl SinkContext {
    fn fail(&self, d: &Delivery, e: &KafkaError) {
        // The offset stays in flight, so it is never committed: a restart redoes it.
        self.offsets.with(d.partition, |p| p.failed());
        let n = self.metrics.delivery_errors.get();
        self.metrics.delivery_errors.inc();
        if n < 10 || n.is_power_of_two() {
            eprintln!(
                "recur: record for input partition {} offset {} was not delivered ({e}); {} such failures so far",
                d.partition,
                d.offset,
                n + 1
            );
        }
    }
}

/// The shared producer.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
}

impl Sink {
    /// A producer from `config` (bootstrap servers and pass-through properties already set).
    pub fn new(
        mut config: ClientConfig,
        offsets: Arc<Offsets>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        // Throughput defaults; a pass-through property of the same name wins.
        for (k, v) in [
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "1000000"),
            ("compression.type", "lz4"),
        ] {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        let producer = config.create_with_context(SinkContext { offsets, metrics })?;
        Ok(Sink { producer })
    }

    /// Queues one record; waits while the local queue is full. A record the
    /// client refuses outright (e.g. too large) is counted as a failed delivery.
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        d: Delivery,
    ) {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(d))
            .key(key)
            .payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err((e, back)) => {
                    self.producer.context().fail(&back.delivery_opaque, &e);
                    return;
                }
            }
        }
    }

    /// Waits until every queued record is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records still waiting for acknowledgement.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// Headers of a dead-letter record.
pub fn headers(pairs: &[(&'static str, Vec<u8>)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        })
}
