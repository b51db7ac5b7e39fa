//! The Kafka producer: predictions and dead letters out, acknowledgements back
//! into [`Offsets`] and the metrics. It never touches model state.

use crate::health::Health;
use crate::kafka::KafkaLog;
use rdkafka::config::RDKafkaLogLevel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};

use crate::stage::decode::Reason;
use crate::stage::offsets::Offsets;
use crate::telemetry::Metrics;

/// What a produced record was for.
#[derive(Clone, Debug)]
pub enum RecordKind {
    /// A prediction on the output topic.
    Prediction,
    /// A flagged prediction's copy on the anomaly topic.
    Anomaly,
    /// A dead letter on the dead-letter topic.
    DeadLetter(Reason),
    /// Record `i` of a checkpoint batch on the changelog.
    State(Arc<Batch>, usize),
}

/// Records someone waits for, e.g. one checkpoint's changelog records.
#[derive(Debug)]
pub struct Batch {
    state: Mutex<BatchState>,
    done: Condvar,
}

#[derive(Debug)]
struct BatchState {
    offsets: Vec<i64>,
    pending: usize,
    failed: Option<String>,
}

impl Batch {
    /// A batch of `n` records.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Batch {
            state: Mutex::new(BatchState {
                offsets: vec![-1; n],
                pending: n,
                failed: None,
            }),
            done: Condvar::new(),
        })
    }

    fn delivered(&self, i: usize, result: Result<i64, String>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(offset) => s.offsets[i] = offset,
            Err(e) => {
                s.failed.get_or_insert(e);
            }
        }
        s.pending -= 1;
        if s.pending == 0 {
            self.done.notify_all();
        }
    }

    /// Waits until every record is acknowledged; their offsets, or the first failure.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<i64>, String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} records not acknowledged after {} s",
                    s.pending,
                    timeout.as_secs()
                ));
            }
            s = self
                .done
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match &s.failed {
            Some(e) => Err(e.clone()),
            None => Ok(s.offsets.clone()),
        }
    }
}

/// The input offset a record answers, carried to its delivery report.
#[derive(Debug)]
pub struct Receipt {
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
    health: Arc<Health>,
    log: KafkaLog,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Receipt>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Receipt>) {
        if let RecordKind::State(batch, i) = &d.kind {
            batch.delivered(
                *i,
                result
                    .as_ref()
                    .map(|m| m.offset())
                    .map_err(|(e, _)| e.to_string()),
            );
            return;
        }
        match result {
            Ok(_) => {
                self.offsets.with(d.partition, |p| p.acked(d.offset));
                match &d.kind {
                    RecordKind::Prediction => self.metrics.predictions.inc(),
                    RecordKind::Anomaly => {}
                    RecordKind::DeadLetter(r) => self
                        .metrics
                        .dead_letters
                        .with_label_values(&[r.as_str()])
                        .inc(),
                    RecordKind::State(..) => {}
                }
            }
            Err((e, _)) => self.fail(&d, e),
        }
    }
}

impl SinkContext {
    fn fail(&self, d: &Receipt, e: &KafkaError) {
        if let RecordKind::State(batch, i) = &d.kind {
            batch.delivered(*i, Err(e.to_string()));
            return;
        }
        // The offset stays in flight, so it is never committed, and the stage
        // stops (by policy): librdkafka already retried for message.timeout.ms,
        // and a partition that can never commit again must not look healthy.
        // A restart redoes everything from the last commit.
        self.offsets.with(d.partition, |p| p.failed());
        self.metrics.delivery_errors.inc();
        let what = match d.kind {
            RecordKind::Prediction => "prediction",
            RecordKind::Anomaly => "anomaly record",
            _ => "dead letter",
        };
        self.health.fail(format!(
            "partition {} offset {}: the {what} was not delivered ({e}); stopping, a restart redoes it from the last commit",
            d.partition, d.offset
        ));
    }
}

/// The shared producer.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
}

/// The stage producer's defaults; a pass-through property of the same name
/// wins. Idempotence keeps a stream's predictions in order through retries
/// (and drops the duplicates a retry would otherwise write).
pub const PRODUCER_DEFAULTS: [(&str, &str); 5] = [
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "1000000"),
    ("compression.type", "lz4"),
];

/// Sets [`PRODUCER_DEFAULTS`] where no property overrides them.
pub fn producer_defaults(config: &mut ClientConfig) {
    for (k, v) in PRODUCER_DEFAULTS {
        if config.get(k).is_none() {
            config.set(k, v);
        }
    }
}

impl Sink {
    /// A producer from `config` (bootstrap servers and pass-through properties already set).
    pub fn new(
        mut config: ClientConfig,
        offsets: Arc<Offsets>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, KafkaError> {
        producer_defaults(&mut config);
        let log = KafkaLog::new(&config);
        let producer = config.create_with_context(SinkContext {
            offsets,
            metrics,
            health,
            log,
        })?;
        Ok(Sink { producer })
    }

    /// A transactional producer (`transactional.id` = `id`) with a transaction open.
    pub fn transactional(
        mut config: ClientConfig,
        id: &str,
        offsets: Arc<Offsets>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, KafkaError> {
        config.set("transactional.id", id);
        let sink = Self::new(config, offsets, metrics, health)?;
        sink.producer.init_transactions(TXN_TIMEOUT)?;
        sink.producer.begin_transaction()?;
        Ok(sink)
    }

    /// Commits the open transaction with input offset `position` of
    /// `topic`/`partition` for the group, then opens the next one. On an
    /// error the transaction is aborted: its outputs are never read by a
    /// read_committed consumer and the offset stays where it was.
    pub fn commit_transaction(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(position))?;
        let result = self
            .producer
            .send_offsets_to_transaction(&tpl, group, TXN_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(TXN_TIMEOUT));
        if let Err(e) = result {
            let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            self.producer.begin_transaction()?;
            return Err(e);
        }
        self.producer.begin_transaction()
    }

    /// Queues one record; waits while the local queue is full. A record the
    /// client refuses outright (e.g. too large) is counted as a failed delivery.
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        d: Receipt,
    ) {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(d))
            .key(key)
            .payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        self.enqueue(record);
    }

    /// Queues a changelog record for partition `partition`; `None` is a tombstone.
    pub fn send_state(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        batch: &Arc<Batch>,
        i: usize,
    ) {
        let d = Receipt {
            partition,
            offset: -1,
            kind: RecordKind::State(batch.clone(), i),
        };
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(d))
            .key(key)
            .partition(partition);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.enqueue(record);
    }

    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8], Box<Receipt>>) {
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

/// How long transaction calls may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_is_idempotent_unless_told_otherwise() {
        let mut c = ClientConfig::new();
        producer_defaults(&mut c);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "false");
        producer_defaults(&mut c);
        assert_eq!(
            c.get("enable.idempotence"),
            Some("false"),
            "the user's value wins"
        );
    }
}
