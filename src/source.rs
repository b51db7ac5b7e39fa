//! The Kafka consumer: follows rebalances, gives each assigned partition's
//! fetch queue to that partition's worker (which reads it directly, in
//! order), and commits only offsets whose outputs were acknowledged.

use std::collections::HashMap;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::worker::{self, Raw, WorkerSetup};

/// Messages a worker takes from its partition's queue at a time, at most.
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
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// One partition's fetch queue, split off the consumer's main queue: the
/// partition's worker reads its messages straight from librdkafka, in
/// partition order, with no copy and no hand-over between threads.
///
/// It is split before the partition is assigned, so librdkafka's fetch start
/// leaves it alone (an application-forwarded queue is not re-forwarded) and
/// no message of the partition ever reaches the main queue.
pub struct PartitionFeed {
    queue: NonNull<rdkafka::bindings::rd_kafka_queue_t>,
    batch: Vec<*mut rdkafka::bindings::rd_kafka_message_t>,
    errors: u64,
}

// SAFETY: a librdkafka queue handle may be used from any thread; the feed is
// used by one thread at a time (its worker), and the consumer outlives it
// (workers are joined before the consumer is dropped).
unsafe impl Send for PartitionFeed {}

impl PartitionFeed {
    /// Splits `topic`/`partition`'s queue off `consumer`'s main queue.
    fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        use rdkafka::bindings as rd;
        let topic = CString::new(topic).ok()?;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live consumer handle and `topic` a C string.
        let queue = NonNull::new(unsafe {
            rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition)
        })?;
        // SAFETY: `queue` was just obtained; forwarding to NULL detaches it.
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(PartitionFeed {
            queue,
            batch: vec![std::ptr::null_mut(); BATCH],
            errors: 0,
        })
    }

    /// Hands the partition's next messages, in order, to `handle` (once, as
    /// one slice); waits up to `wait` when none is ready. Returns how many.
    pub fn poll(&mut self, wait: Duration, handle: impl FnOnce(&[Raw<'_>])) -> usize {
        use rdkafka::bindings as rd;
        let q = self.queue.as_ptr();
        // SAFETY: `q` is live; the array holds BATCH pointers.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(q, 0, self.batch.as_mut_ptr(), BATCH) };
        let mut n = n.max(0) as usize;
        if n == 0 && !wait.is_zero() {
            // The batch call waits for a full batch; wait for the first message only.
            let ms = wait.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `q` is live.
            let m = unsafe { rd::rd_kafka_consume_queue(q, ms) };
            if !m.is_null() {
                self.batch[0] = m;
                n = 1;
            }
        }
        let mut raws = Vec::with_capacity(n);
        for &m in &self.batch[..n] {
            // SAFETY: librdkafka returned `m`; it lives until destroyed below.
            let msg = unsafe { &*m };
            if msg.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let bytes = |p: *mut std::ffi::c_void, len: usize| {
                    // SAFETY: librdkafka keeps `len` bytes at `p` until the message is destroyed.
                    (!p.is_null())
                        .then(|| unsafe { std::slice::from_raw_parts(p as *const u8, len) })
                };
                let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                // SAFETY: `m` is a live message.
                let ts = unsafe { rd::rd_kafka_message_timestamp(m, &mut kind) };
                raws.push(Raw {
                    key: bytes(msg.key, msg.key_len),
                    value: bytes(msg.payload, msg.len),
                    ts_ms: (ts >= 0).then_some(ts),
                    offset: msg.offset,
                });
            } else {
                self.errors += 1;
                if self.errors < 10 || self.errors.is_power_of_two() {
                    let e = rdkafka::error::RDKafkaErrorCode::from(msg.err);
                    eprintln!(
                        "recur: consumer, partition {}: {e} ({} errors so far)",
                        msg.partition, self.errors
                    );
                }
            }
        }
        let handed = raws.len();
        if handed > 0 {
            handle(&raws);
        }
        drop(raws);
        for &m in &self.batch[..n] {
            // SAFETY: returned by librdkafka above, destroyed once, after its last use.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        handed
    }
}

impl Drop for PartitionFeed {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Consumer callbacks: partition workers start on assign and drain on revoke.
pub struct SourceContext {
    topic: String,
    setup: Box<SetupFn>,
    workers: Mutex<HashMap<i32, Running>>,
    /// Queues split off for partitions being assigned, until their workers start.
    feeds: Mutex<HashMap<i32, PartitionFeed>>,
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
                let feed = self
                    .feeds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&p);
                if workers.contains_key(&p) {
                    continue;
                }
                let Some(feed) = feed else {
                    self.metrics.fail(format!(
                        "partition {p}: librdkafka gave no queue for it ({} partition {p})",
                        e.topic()
                    ));
                    continue;
                };
                let setup = match (self.setup)(p, consumer.group_metadata()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.metrics.fail(format!("partition {p}: {e}"));
                        continue;
                    }
                };
                let stop = Arc::new(AtomicBool::new(false));
                let s = stop.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("recur-p{p}"))
                    .spawn(move || worker::run(setup, feed, &s))
                    .expect("spawning a worker thread");
                workers.insert(p, Running { stop, thread });
            }
            self.metrics.partitions_assigned.set(workers.len() as i64);
            self.metrics.ready.store(true, Ordering::Relaxed);
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
            eprintln!("recur: producer flush: {e}");
        }
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
            feeds: Mutex::new(HashMap::new()),
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

    /// Serves the consumer (rebalances, commits) until `stop` is set, then
    /// stops every worker, waits for the producer, commits and leaves the group.
    pub fn run(self, stop: &AtomicBool) {
        let ctx = self.consumer.context();
        let mut last_commit = Instant::now();
        let mut errors = 0u64;
        while !stop.load(Ordering::Relaxed) && !ctx.metrics.failed() {
            // Messages go to the partitions' workers; the main queue carries
            // rebalances, commit results and errors.
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    // Cannot happen (every assigned partition's queue is split
                    // off before it fetches). Should it, hold the partition's
                    // commits before this offset and stop: a restart reads it.
                    let (p, offset) = (m.partition(), m.offset());
                    ctx.offsets.with(p, |o| o.fetched(offset));
                    ctx.metrics.fail(format!(
                        "partition {p} offset {offset} arrived on the consumer's main queue, not its partition's"
                    ));
                }
                Some(Err(e)) => {
                    errors += 1;
                    if errors < 10 || errors.is_power_of_two() {
                        eprintln!("recur: consumer: {e} ({errors} errors so far)");
                    }
                }
                None => {}
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                if let Err(e) = commit(&self.consumer, &self.topic, &ctx.offsets, CommitMode::Async)
                {
                    eprintln!("recur: commit: {e}");
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
