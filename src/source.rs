//! The Kafka consumer: fetches input messages on its own thread, hands each
//! partition's messages in order to that partition's worker, follows
//! rebalances, and commits only offsets whose outputs were acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::offsets::Offsets;
use crate::sink::Sink;
use crate::telemetry::Metrics;
use crate::worker::{self, Fetched, Input, WorkerSetup};

/// Batches buffered per partition before the consumer waits (backpressure).
const INBOX: usize = 512;
/// Messages per batch handed to a worker at most.
const BATCH: usize = 256;
/// How often acknowledged positions are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

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

/// Builds a worker's setup for a partition, given the group's metadata (for transactions).
pub type SetupFn =
    dyn Fn(i32, Option<ConsumerGroupMetadata>) -> Result<WorkerSetup, String> + Send + Sync;

struct Running {
    inbox: SyncSender<Input>,
    thread: JoinHandle<()>,
    /// Distinguishes this assignment of the partition from earlier ones.
    epoch: u64,
}

/// Consumer callbacks: partition workers start on assign and drain on revoke.
pub struct SourceContext {
    topic: String,
    setup: Box<SetupFn>,
    workers: Mutex<HashMap<i32, Running>>,
    epochs: std::sync::atomic::AtomicU64,
    /// Bumped by every rebalance callback, so the fetch loop knows when its
    /// cached view of the assignment is stale.
    rebalances: std::sync::atomic::AtomicU64,
    offsets: Arc<Offsets>,
    sink: Arc<Sink>,
    metrics: Arc<Metrics>,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
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
        self.rebalances.fetch_add(1, Ordering::Release);
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.stop_workers(&parts);
            // Everything the revoked partitions produced is acknowledged: commit it now.
            if let Err(e) = commit(consumer, &self.topic, &self.offsets, CommitMode::Sync) {
                eprintln!("recur: commit on revoke failed: {e}");
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
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                let p = e.partition();
                if workers.contains_key(&p) {
                    continue;
                }
                let setup = match (self.setup)(p, consumer.group_metadata()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.metrics.fail(format!("partition {p}: {e}"));
                        continue;
                    }
                };
                let (tx, rx) = sync_channel(INBOX);
                let thread = std::thread::Builder::new()
                    .name(format!("recur-p{p}"))
                    .spawn(move || worker::run(setup, rx))
                    .expect("spawning a worker thread");
                let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
                workers.insert(
                    p,
                    Running {
                        inbox: tx,
                        thread,
                        epoch,
                    },
                );
            }
            self.metrics.partitions_assigned.set(workers.len() as i64);
            self.metrics.ready.store(true, Ordering::Relaxed);
        }
        self.rebalances.fetch_add(1, Ordering::Release);
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
        for r in stopped {
            drop(r.inbox);
            let _ = r.thread.join();
        }
        if let Err(e) = self.sink.flush(Duration::from_secs(30)) {
            eprintln!("recur: producer flush: {e}");
        }
    }

    /// The inbox of a partition's current worker and the epoch of its assignment.
    fn inbox(&self, partition: i32) -> Option<(SyncSender<Input>, u64)> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .map(|r| (r.inbox.clone(), r.epoch))
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
        setup: Box<SetupFn>,
        offsets: Arc<Offsets>,
        sink: Arc<Sink>,
        metrics: Arc<Metrics>,
    ) -> KafkaResult<Self> {
        // recur commits itself, only what was delivered: not overridable.
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        for (k, v) in CONSUMER_DEFAULTS {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        let ctx = SourceContext {
            topic: topic.to_string(),
            setup,
            workers: Mutex::new(HashMap::new()),
            epochs: std::sync::atomic::AtomicU64::new(0),
            rebalances: std::sync::atomic::AtomicU64::new(0),
            offsets,
            sink,
            metrics,
        };
        let consumer: BaseConsumer<SourceContext> = config.create_with_context(ctx)?;
        consumer.subscribe(&[topic])?;
        Ok(Source {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Fetches and dispatches until `stop` is set, then drains every worker,
    /// waits for the producer, commits and leaves the group.
    pub fn run(self, stop: &AtomicBool) {
        let ctx = self.consumer.context();
        let mut last_commit = Instant::now();
        let mut errors = 0u64;
        // Messages gathered per partition (with the assignment epoch they were
        // fetched under); handed over when a batch fills or the fetch queue runs dry.
        let mut pending: HashMap<i32, (u64, Fetched)> = HashMap::new();
        let hand_over = |pending: &mut HashMap<i32, (u64, Fetched)>, p: i32| {
            let Some((epoch, batch)) = pending.remove(&p) else {
                return;
            };
            match ctx.inbox(p) {
                // Blocks while the worker is behind: backpressure, not memory growth.
                Some((inbox, now)) if now == epoch => {
                    // In flight from here until their outputs are acknowledged.
                    ctx.offsets
                        .with(p, |o| batch.iter().for_each(|r| o.fetched(r.offset)));
                    let _ = inbox.send(Input::Messages(batch));
                }
                // Revoked (and maybe reassigned) since the fetch: these offsets were
                // never committed, so whoever owns the partition now reads them again.
                _ => {}
            }
        };
        // The assignment as of the last rebalance (partition → epoch), so the
        // per-message path takes no lock.
        let mut assigned: HashMap<i32, Option<u64>> = HashMap::new();
        let mut seen_rebalances = u64::MAX;
        let mut polls = 0u32;
        while !stop.load(Ordering::Relaxed) && !ctx.metrics.failed() {
            let wait = if pending.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            let polled = self.consumer.poll(wait);
            let rebalances = ctx.rebalances.load(Ordering::Acquire);
            if rebalances != seen_rebalances {
                seen_rebalances = rebalances;
                assigned.clear();
            }
            let idle = polled.is_none();
            match polled {
                Some(Ok(m)) => {
                    let (p, offset) = (m.partition(), m.offset());
                    let epoch = *assigned
                        .entry(p)
                        .or_insert_with(|| ctx.inbox(p).map(|(_, e)| e));
                    let Some(epoch) = epoch else {
                        continue;
                    };
                    let (_, batch) = pending
                        .entry(p)
                        .or_insert_with(|| (epoch, Fetched::with_capacity(BATCH)));
                    batch.push(m.key(), m.payload(), m.timestamp().to_millis(), offset);
                    drop(m);
                    if batch.len() >= BATCH {
                        hand_over(&mut pending, p);
                    }
                }
                Some(Err(e)) => {
                    errors += 1;
                    if errors < 10 || errors.is_power_of_two() {
                        eprintln!("recur: consumer: {e} ({errors} errors so far)");
                    }
                }
                None => {
                    let parts: Vec<i32> = pending.keys().copied().collect();
                    for p in parts {
                        hand_over(&mut pending, p);
                    }
                }
            }
            // Reading the clock per message is measurable: look every 256
            // messages, or whenever the fetch queue ran dry.
            polls = polls.wrapping_add(1);
            if (idle || polls.is_multiple_of(256)) && last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                if let Err(e) = commit(&self.consumer, &self.topic, &ctx.offsets, CommitMode::Async)
                {
                    eprintln!("recur: commit: {e}");
                }
            }
        }
        let parts: Vec<i32> = pending.keys().copied().collect();
        for p in parts {
            hand_over(&mut pending, p);
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
            eprintln!("recur: final commit failed: {e}");
        }
        self.consumer.unsubscribe();
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
