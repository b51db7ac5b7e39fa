//! The Kafka consumer: follows rebalances, gives each assigned partition's
//! fetch queue to that partition's worker (which reads it directly, in
//! order), and commits only offsets whose outputs were acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::health::Health;
use crate::kafka::{self, KafkaLog};
use crate::log::Repeats;
use crate::stage::feed::PartitionFeed;
use crate::stage::offsets::Offsets;
use crate::stage::sink::Sink;
use crate::telemetry::Metrics;

/// How often acknowledged positions are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// A partition's work: runs on its own thread, reading the partition's feed
/// until the flag is set.
pub type Task = Box<dyn FnOnce(PartitionFeed, &AtomicBool) + Send>;

/// Prepares a partition's task, given the group's metadata (for
/// transactions). The source only starts and stops tasks; what a task does
/// is the caller's (the stage runs a worker).
pub type StartFn = dyn Fn(i32, Arc<Group>) -> Result<Task, String> + Send + Sync;

/// The consumer group's metadata as of the latest rebalance, shared with
/// every partition's task. A transaction commits its input offsets under the
/// group's current generation; with cooperative rebalancing a partition kept
/// through a rebalance keeps its worker, which would otherwise commit under
/// the generation it was assigned in, and be fenced.
#[derive(Default)]
pub struct Group(Mutex<Option<Arc<ConsumerGroupMetadata>>>);

impl Group {
    /// Records the metadata the consumer has after a rebalance.
    pub fn set(&self, metadata: Option<ConsumerGroupMetadata>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = metadata.map(Arc::new);
    }

    /// The metadata as of the latest rebalance.
    pub fn current(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Consumer callbacks: partition workers start on assign and drain on revoke.
pub struct SourceContext {
    topic: String,
    start: Box<StartFn>,
    group: Arc<Group>,
    workers: Mutex<HashMap<i32, Running>>,
    /// Queues split off for partitions being assigned, until their workers start.
    feeds: Mutex<HashMap<i32, PartitionFeed>>,
    offsets: Arc<Offsets>,
    sink: Arc<Sink>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    log: KafkaLog,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }

    fn stats(&self, stats: Statistics) {
        let reachable = stats
            .brokers
            .values()
            .any(|b| b.source != "internal" && b.state == "UP");
        self.health.broker_seen(reachable);
        if let Some(topic) = stats.topics.get(&self.topic) {
            for (p, s) in &topic.partitions {
                if *p >= 0 && s.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&p.to_string()])
                        .set(s.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Before the assignment starts fetching: see `PartitionFeed`.
            let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                if let Some(feed) = PartitionFeed::split(consumer, e.topic(), e.partition()) {
                    feeds.insert(e.partition(), feed);
                }
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.stop_workers(&parts);
            // Everything the revoked partitions produced is acknowledged: commit it now.
            if let Err(e) = commit(consumer, &self.topic, &self.offsets, CommitMode::Sync) {
                tracing::warn!("commit on revoke failed: {e}");
            }
            for p in parts {
                self.offsets.remove(p);
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[&p.to_string()]);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Every rebalance moves the group to a new generation, kept
            // partitions too; with cooperative rebalancing each one ends in
            // an assignment, if an empty one. (Not on revoke: asking for the
            // metadata while the consumer closes can wait on the group's
            // own thread.)
            self.group.set(consumer.group_metadata());
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                let p = e.partition();
                let feed = self
                    .feeds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&p);
                if workers.contains_key(&p) {
                    continue;
                }
                let Some(feed) = feed else {
                    self.health.fail(format!(
                        "partition {p}: librdkafka gave no queue for it ({} partition {p})",
                        e.topic()
                    ));
                    continue;
                };
                let task = match (self.start)(p, self.group.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.health.fail(format!("partition {p}: {e}"));
                        continue;
                    }
                };
                let stop = Arc::new(AtomicBool::new(false));
                let s = stop.clone();
                let health = self.health.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("recur-p{p}"))
                    .spawn(move || guarded(p, &health, || task(feed, &s)))
                    .expect("spawning a worker thread");
                workers.insert(p, Running { stop, thread });
            }
            self.metrics.partitions_assigned.set(workers.len() as i64);
            self.health.set_ready();
        }
    }
}

impl SourceContext {
    /// Drains and stops the workers of `parts`, then waits for their records' acknowledgements.
    fn stop_workers(&self, parts: &[i32]) {
        let stopped: Vec<Running> = {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            let gone = parts.iter().filter_map(|p| workers.remove(p)).collect();
            self.metrics.partitions_assigned.set(workers.len() as i64);
            gone
        };
        for r in &stopped {
            r.stop.store(true, Ordering::Relaxed);
        }
        for r in stopped {
            let _ = r.thread.join();
        }
        if let Err(e) = self.sink.flush(Duration::from_secs(30)) {
            tracing::warn!("producer flush: {e}");
        }
    }
}

/// Runs a partition's task; a panic fails the stage loudly (logged, health
/// failing, non-zero exit) instead of leaving a dead partition behind a green
/// health check.
pub fn guarded(partition: i32, health: &Health, task: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic".into());
        health.fail(format!(
            "partition {partition}: its worker panicked: {what}"
        ));
    }
}

/// Commits every partition's acknowledged position that moved.
fn commit(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    offsets: &Offsets,
    mode: CommitMode,
) -> KafkaResult<()> {
    let positions = offsets.new_positions();
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, pos) in positions {
        tpl.add_partition_offset(topic, p, Offset::Offset(pos))?;
    }
    consumer.commit(&tpl, mode)
}

/// The consumer side of a running stage.
pub struct Source {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
}

impl Source {
    /// Creates the consumer and subscribes to `topic`.
    pub fn new(
        mut config: ClientConfig,
        topic: &str,
        start: Box<StartFn>,
        offsets: Arc<Offsets>,
        sink: Arc<Sink>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> KafkaResult<Self> {
        // recur commits itself, only what was delivered: not overridable.
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        kafka::consumer_defaults(&mut config);
        let ctx = SourceContext {
            topic: topic.to_string(),
            start,
            group: Arc::default(),
            workers: Mutex::new(HashMap::new()),
            feeds: Mutex::new(HashMap::new()),
            offsets,
            sink,
            metrics,
            health,
            log: KafkaLog::new(&config),
        };
        let consumer: BaseConsumer<SourceContext> = config.create_with_context(ctx)?;
        consumer.subscribe(&[topic])?;
        Ok(Source {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Serves the consumer (rebalances, commits) until `stop` is set, then
    /// stops every worker, waits for the producer, commits and leaves the group.
    pub fn run(self, stop: &AtomicBool) {
        let ctx = self.consumer.context();
        let mut last_commit = Instant::now();
        let mut errors = Repeats::default();
        let mut commit_errors = Repeats::default();
        while !stop.load(Ordering::Relaxed) && !ctx.health.failed() {
            // Messages go to the partitions' workers; the main queue carries
            // rebalances, commit results and errors.
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    // Cannot happen (every assigned partition's queue is split
                    // off before it fetches). Should it, hold the partition's
                    // commits before this offset and stop: a restart reads it.
                    let (p, offset) = (m.partition(), m.offset());
                    ctx.offsets.with(p, |o| o.fetched(offset));
                    ctx.health.fail(format!(
                        "partition {p} offset {offset} arrived on the consumer's main queue, not its partition's"
                    ));
                }
                Some(Err(e)) => {
                    if let Some(n) = errors.hit() {
                        tracing::warn!(errors = n, "consumer: {e}");
                    }
                }
                None => {}
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                if let Err(e) = commit(&self.consumer, &self.topic, &ctx.offsets, CommitMode::Async)
                    && let Some(n) = commit_errors.hit()
                {
                    tracing::warn!(errors = n, "commit: {e}");
                }
            }
        }
        // Shutdown: drain windows, wait for acknowledgements, commit, leave.
        let parts: Vec<i32> = ctx
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        ctx.stop_workers(&parts);
        if let Err(e) = commit(&self.consumer, &self.topic, &ctx.offsets, CommitMode::Sync) {
            tracing::error!("final commit failed: {e}");
        }
        self.consumer.unsubscribe();
    }
}
