//! Kafka client configuration: the brokers and pass-through properties every
//! recur client shares, recur's librdkafka defaults, and the client context
//! that routes librdkafka's log lines and errors into `tracing`.

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};

use crate::config::{Config, is_secret};
use crate::log::RateLimit;

/// The client configuration shared by consumer and producer: brokers and pass-through properties.
pub fn client_config(brokers: &str, cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Consumer defaults a pass-through property of the same name overrides.
pub const CONSUMER_DEFAULTS: [(&str, &str); 5] = [
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("statistics.interval.ms", "5000"),
    FETCH_WAIT,
    FETCH_QUEUE_BACKOFF,
];

/// A short fetch wait keeps latency low on brokers that do not wake waiting fetches.
const FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "50");

/// librdkafka stops fetching a partition for `fetch.queue.backoff.ms` whenever
/// its local queue holds `queued.min.messages` (100,000) or more. Its default,
/// 1 s, idles a reader that drains that queue in a fraction of a second: the
/// backlog benchmark went from 192k to 496k events/s (learning off).
const FETCH_QUEUE_BACKOFF: (&str, &str) = ("fetch.queue.backoff.ms", "10");

/// Sets the fetch defaults of every recur consumer (the stage's, the
/// changelog reader's, a topic backtest's) where no property overrides them.
pub fn fetch_defaults(config: &mut ClientConfig) {
    for (k, v) in [FETCH_WAIT, FETCH_QUEUE_BACKOFF] {
        if config.get(k).is_none() {
            config.set(k, v);
        }
    }
}

/// Sets [`CONSUMER_DEFAULTS`] where no property overrides them.
pub fn consumer_defaults(config: &mut ClientConfig) {
    for (k, v) in CONSUMER_DEFAULTS {
        if config.get(k).is_none() {
            config.set(k, v);
        }
    }
}

/// Routes librdkafka's log lines and client errors into `tracing` (target
/// `rdkafka`), with the client's secret property values redacted and
/// repeated errors rate-limited. Every recur client's context holds one.
#[derive(Debug, Default)]
pub struct KafkaLog {
    secrets: Vec<String>,
    repeats: RateLimit,
}

impl KafkaLog {
    /// A log for a client made from `config` (its secret values are redacted).
    pub fn new(config: &ClientConfig) -> Self {
        let secrets = config
            .config_map()
            .into_iter()
            .filter(|(k, v)| is_secret(k) && !v.is_empty())
            .map(|(_, v)| v.to_owned())
            .collect();
        KafkaLog {
            secrets,
            repeats: RateLimit::default(),
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }

    /// One librdkafka log line.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let message = self.redact(message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                if let Some(n) = self.repeats.hit(fac) {
                    tracing::error!(target: "rdkafka", facility = fac, "{message}{}", times(n));
                }
            }
            RDKafkaLogLevel::Warning => {
                if let Some(n) = self.repeats.hit(fac) {
                    tracing::warn!(target: "rdkafka", facility = fac, "{message}{}", times(n));
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "rdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "rdkafka", facility = fac, "{message}")
            }
        }
    }

    /// One librdkafka client error (e.g. all brokers down, authentication
    /// failed). The end of a partition is not an error: it logs at debug.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let reason = self.redact(reason);
        if code == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(target: "rdkafka", "{reason}");
            return;
        }
        let key = code.map_or_else(|| error.to_string(), |c| format!("{c:?}"));
        if let Some(n) = self.repeats.hit(&key) {
            let error = self.redact(&error.to_string());
            tracing::error!(target: "rdkafka", "client error: {error}: {reason}{}", times(n));
        }
    }
}

/// ` (N times so far)` past the first occurrence of a rate-limited line.
fn times(n: u64) -> String {
    if n > 1 {
        format!(" ({n} times so far)")
    } else {
        String::new()
    }
}

/// The context of recur's plain clients (changelog readers, topic backtests,
/// `recur produce` and `tail`, benchmarks): librdkafka's logs into `tracing`.
pub struct Logged(pub KafkaLog);

impl Logged {
    /// The context for a client made from `config`.
    pub fn new(config: &ClientConfig) -> Self {
        Logged(KafkaLog::new(config))
    }
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

impl ConsumerContext for Logged {}

impl ProducerContext for Logged {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A consumer with the logging context.
pub type Consumer = BaseConsumer<Logged>;

/// Creates a consumer from `config` whose librdkafka logs reach `tracing`.
pub fn consumer(config: &ClientConfig) -> KafkaResult<Consumer> {
    config.create_with_context(Logged::new(config))
}

/// Creates a producer from `config` whose librdkafka logs reach `tracing`.
pub fn producer(config: &ClientConfig) -> KafkaResult<BaseProducer<Logged>> {
    config.create_with_context(Logged::new(config))
}

/// The broker's id of `topic` (Kafka 2.8+ topic ids, base64), or `None` when
/// the broker gives none (older brokers answer all zeros) or cannot be asked
/// within `timeout`. A deleted and recreated topic keeps its name but gets a
/// new id: that is how a checkpoint tells the two apart.
pub fn topic_id(
    config: &ClientConfig,
    topic: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    use rdkafka::bindings as rd;
    use rdkafka::consumer::Consumer as _;
    use std::ffi::{CStr, CString};
    let consumer = consumer(config).ok()?;
    let rk = consumer.client().native_ptr();
    let name = CString::new(topic).ok()?;
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: every object is created and destroyed here, in order, on a live
    // client; the result strings are copied before the event is destroyed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let names = [name.as_ptr()];
        let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_ptr() as *mut _, 1);
        let opts = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::ffi::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(opts, ms, errstr.as_mut_ptr(), errstr.len());
        rd::rd_kafka_DescribeTopics(rk, topics, opts, queue);
        let event = rd::rd_kafka_queue_poll(queue, ms.saturating_add(1000));
        let mut id = None;
        if !event.is_null() {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            if !result.is_null() {
                let mut n = 0usize;
                let described = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
                if n == 1 && !(*described).is_null() {
                    let t = *described;
                    let error = rd::rd_kafka_TopicDescription_error(t);
                    let ok = error.is_null()
                        || rd::rd_kafka_error_code(error)
                            == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
                    let uuid = rd::rd_kafka_TopicDescription_topic_id(t);
                    if ok && !uuid.is_null() {
                        let text = CStr::from_ptr(rd::rd_kafka_Uuid_base64str(uuid));
                        id = Some(text.to_string_lossy().into_owned());
                    }
                }
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_AdminOptions_destroy(opts);
        rd::rd_kafka_TopicCollection_destroy(topics);
        rd::rd_kafka_queue_destroy(queue);
        // All zeros: the broker has no topic ids.
        id.filter(|t| t.trim_end_matches('=').chars().any(|c| c != 'A'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_defaults_fill_gaps_and_leave_pass_through_properties_alone() {
        let mut c = ClientConfig::new();
        c.set("fetch.wait.max.ms", "500");
        fetch_defaults(&mut c);
        assert_eq!(
            c.get("fetch.wait.max.ms"),
            Some("500"),
            "the user's value wins"
        );
        assert_eq!(
            c.get("fetch.queue.backoff.ms"),
            Some("10"),
            "librdkafka's 1 s default idles a fast reader"
        );
    }
}
