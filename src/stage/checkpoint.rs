//! The worker's side of the changelog protocol: a partition's checkpoint
//! settings and progress, writing one checkpoint (stream records, then the
//! head once everything below it is acknowledged) and fetching an evicted
//! stream back. The bookkeeping itself is [`crate::state`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stage::source::Group;
use rdkafka::config::ClientConfig;

use crate::config::Every;
use crate::model::Forecaster;
use crate::stage::offsets::Offsets;
use crate::stage::sink::{Batch, Sink};
use crate::state::Checkpoints;
use crate::state::changelog::Fetcher;
use crate::telemetry::Metrics;

/// How long a checkpoint waits for its records' acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// A worker's checkpoint settings.
pub struct StateSetup {
    /// The changelog topic.
    pub changelog: String,
    /// Client settings to read the changelog with.
    pub client: ClientConfig,
    /// How often to checkpoint.
    pub every: Every,
    /// Evict streams idle this long (event time, ms).
    pub idle_ttl_ms: Option<i64>,
    /// Directory for a local copy of each checkpoint.
    pub dir: Option<PathBuf>,
    /// What to do with a checkpoint that does not fit.
    pub on_mismatch: crate::config::OnMismatch,
    /// The input topic's broker id at start, when the broker has topic ids:
    /// a checkpoint of an older topic of the same name does not fit.
    pub topic_id: Option<String>,
    /// Exactly-once: the group whose offsets each checkpoint's transaction
    /// commits, as of the latest rebalance.
    pub transaction: Option<Arc<Group>>,
    /// Exactly-once: the longest a checkpoint's transaction may stay open
    /// (half of `transaction.timeout.ms`), whatever the interval.
    pub longest_open: Option<Duration>,
}

/// When a checkpoint is due by the clock after one at `last`: an interval
/// later, and (exactly-once) before the transaction opened since then stays
/// open `longest_open`, so an interval counted in events cannot hold one
/// open past the broker's timeout on a quiet partition.
pub(super) fn due_by_time(
    every: Every,
    longest_open: Option<Duration>,
    last: Instant,
) -> Option<Instant> {
    let interval = match every {
        Every::Time(d) => Some(last + d),
        _ => None,
    };
    match (interval, longest_open.map(|l| last + l)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A worker's checkpoint progress.
pub(super) struct Checkpointing {
    pub(super) setup: StateSetup,
    pub(super) book: Checkpoints,
    /// Input below this offset is covered by the restored state: skipped.
    pub(super) resume: i64,
    /// One past the last input offset handled.
    pub(super) next_offset: Option<i64>,
    /// The offset the last checkpoint covered.
    pub(super) covered: Option<i64>,
    /// Events handled since the last checkpoint.
    pub(super) since: u64,
    pub(super) last: Instant,
    pub(super) fetcher: Option<Fetcher>,
}

pub(super) enum CheckpointFailure {
    /// The previous checkpoint stays in force; try again later.
    Retry(String),
    /// The stage must stop (an aborted transaction lost outputs a restart redoes).
    Fatal(String),
}

/// The Kafka side of one checkpoint; returns how many streams it evicted.
pub(super) fn write_checkpoint(
    c: &mut Checkpointing,
    model: &mut Forecaster<f32>,
    input: &Offsets,
    sink: &Sink,
    input_topic: &str,
    p: i32,
    covered: i64,
) -> Result<usize, CheckpointFailure> {
    let retry = CheckpointFailure::Retry;
    let plan = c.book.plan(model);
    let topic = &c.setup.changelog;
    let batch = Batch::new(plan.records.len());
    for (i, r) in plan.records.iter().enumerate() {
        sink.send_state(topic, p, &r.key, r.value.as_deref(), &batch, i);
    }
    let offsets = batch.wait(ACK_WAIT).map_err(retry)?;
    // The head says "everything below `covered` is done": its predictions too.
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let (acked, failures) = input.with(p, |o| (o.acked_below(covered), o.failures()));
        if acked {
            break;
        }
        if failures > 0 {
            // A record that failed for good stays in flight: waiting cannot help.
            return Err(retry(format!(
                "a record of partition {p} was not delivered, so no checkpoint can cover offset {covered}"
            )));
        }
        if Instant::now() > deadline {
            return Err(retry(format!(
                "predictions below offset {covered} not acknowledged after {} s",
                ACK_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let head = c.book.head(model, plan.seq, covered);
    let hb = Batch::new(1);
    sink.send_state(topic, p, &head.key, head.value.as_deref(), &hb, 0);
    hb.wait(ACK_WAIT).map_err(retry)?;
    if let Some(group) = &c.setup.transaction {
        let metadata = group
            .current()
            .ok_or_else(|| CheckpointFailure::Fatal("the consumer group has no metadata".into()))?;
        sink.commit_transaction(input_topic, p, covered, &metadata)
            .map_err(|e| CheckpointFailure::Fatal(format!(
                "transaction for input offset {covered} aborted ({e}); restart to redo it from the last committed checkpoint"
            )))?;
    }
    c.book.finish(model, &plan, &offsets);
    input.with(p, |o| o.checkpointed(covered));
    Ok(plan.evict.len())
}

/// Fetches an evicted stream's state back from the changelog.
pub(super) fn bring_back(
    c: &mut Checkpointing,
    model: &mut Forecaster<f32>,
    p: i32,
    metrics: &Metrics,
    stream: &str,
    at: i64,
) {
    let mut fetch_back = || -> Result<(), String> {
        if c.fetcher.is_none() {
            c.fetcher = Some(
                Fetcher::new(&c.setup.client, &c.setup.changelog, p).map_err(|e| e.to_string())?,
            );
        }
        let fetcher = c.fetcher.as_ref().expect("set above");
        match fetcher.fetch(at).map_err(|e| e.to_string())? {
            (_, Some(value)) => c
                .book
                .bring_back(model, stream, &value)
                .map_err(|e| e.to_string()),
            (_, None) => Err(format!("offset {at} is a tombstone")),
        }
    };
    let result = fetch_back();
    match result {
        Ok(()) => metrics.streams_returned.inc(),
        // Forecasting goes on from a fresh state rather than stalling the partition.
        Err(e) => tracing::warn!(
            "partition {p}: evicted stream could not be fetched back, it starts afresh: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_exactly_once_a_checkpoint_comes_before_the_transaction_times_out() {
        let last = Instant::now();
        let s = Duration::from_secs;
        // An interval in events: with exactly-once a checkpoint is still due
        // by the clock, half a transaction timeout after the last one.
        assert_eq!(due_by_time(Every::Events(50_000), None, last), None);
        assert_eq!(
            due_by_time(Every::Events(50_000), Some(s(30)), last),
            Some(last + s(30))
        );
        // An interval in time: the sooner of the two.
        assert_eq!(
            due_by_time(Every::Time(s(10)), Some(s(30)), last),
            Some(last + s(10))
        );
        assert_eq!(
            due_by_time(Every::Time(s(10)), None, last),
            Some(last + s(10))
        );
    }
}
