//! Per-partition wiring: what each partition's worker gets when the group
//! assigns the partition (its producer, its checkpoint settings, the shared
//! metrics, offsets and hot-swap slot).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Every};
use crate::health::Health;
use crate::kafka::client_config;
use crate::stage::offsets::Offsets;
use crate::stage::sink::Sink;
use crate::stage::source::{Group, Task};
use crate::stage::swap::HotSwap;
use crate::stage::worker::{self, StateSetup, WorkerSetup};
use crate::telemetry::Metrics;

/// Everything shared by the partitions' workers.
pub(super) struct Wiring {
    pub cfg: Config,
    pub brokers: String,
    pub sink: Arc<Sink>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub offsets: Arc<Offsets>,
    pub swap: Arc<HotSwap>,
    pub init: Option<Arc<Vec<u8>>>,
    pub every: Every,
    pub idle_ttl_ms: Option<i64>,
    pub exactly_once: bool,
    /// The input topic's broker id at start, if it has one.
    pub topic_id: Option<String>,
}

impl Wiring {
    /// The task that runs `partition`'s worker.
    pub fn task(&self, partition: i32, group: Arc<Group>) -> Result<Task, String> {
        let setup = self.worker_setup(partition, group)?;
        Ok(Box::new(move |feed, stop| worker::run(setup, feed, stop)))
    }

    fn worker_setup(&self, partition: i32, group: Arc<Group>) -> Result<WorkerSetup, String> {
        let cfg = &self.cfg;
        let sink = if self.exactly_once {
            let id = format!("{}-{}-{partition}", cfg.kafka.group, cfg.kafka.input_topic);
            Arc::new(
                Sink::transactional(
                    client_config(&self.brokers, cfg),
                    &id,
                    self.offsets.clone(),
                    self.metrics.clone(),
                    self.health.clone(),
                )
                .map_err(|e| format!("transactional producer {id}: {e}"))?,
            )
        } else {
            self.sink.clone()
        };
        let state = match self.every {
            Every::Off => None,
            every => Some(StateSetup {
                changelog: cfg.changelog_topic(),
                client: client_config(&self.brokers, cfg),
                every,
                idle_ttl_ms: self.idle_ttl_ms,
                on_mismatch: cfg.state.on_mismatch,
                topic_id: self.topic_id.clone(),
                dir: (!cfg.checkpoint.dir.is_empty()).then(|| PathBuf::from(&cfg.checkpoint.dir)),
                longest_open: self
                    .exactly_once
                    .then(|| Duration::from_millis(cfg.kafka.transaction_timeout_ms() / 2)),
                transaction: if self.exactly_once {
                    group
                        .current()
                        .ok_or("exactly_once needs the consumer group's metadata")?;
                    Some(group)
                } else {
                    None
                },
            }),
        };
        Ok(WorkerSetup {
            topic: cfg.kafka.input_topic.clone(),
            partition,
            output_topic: cfg.kafka.output_topic.clone(),
            dlq_topic: cfg.kafka.dlq_topic.clone(),
            dlq_max_bytes: cfg.kafka.dead_letter_budget(),
            decode: cfg.decode_config(),
            late: cfg.events.late,
            max_streams: (cfg.state.max_streams > 0).then_some(cfg.state.max_streams),
            max_future_ms: cfg
                .events
                .max_future_ms()
                .expect("events.max_future was validated at load"),
            model: cfg.model.clone(),
            max_events: cfg.window.max_events,
            linger: Duration::from_millis(cfg.window.linger_ms),
            sink,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            restoring: Some(self.health.restoring()),
            offsets: self.offsets.clone(),
            init: self.init.clone(),
            levels: cfg
                .model
                .calibration()?
                .map(|c| c.levels().to_vec())
                .unwrap_or_default(),
            anomaly_threshold: cfg.anomaly.threshold,
            anomaly_topic: (!cfg.anomaly.topic.is_empty()).then(|| cfg.anomaly.topic.clone()),
            state,
            swap: self.swap.clone(),
        })
    }
}
