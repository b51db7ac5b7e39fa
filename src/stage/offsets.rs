//! Which input offsets may be committed: only those whose output the broker acknowledged.
//!
//! Every input message yields one record (a prediction or a dead letter),
//! and a flagged anomaly one more (on `anomaly.topic`). An offset is *in
//! flight* from the moment it is fetched until each of its records is
//! acknowledged. A partition may commit up to (not including) its
//! lowest offset in flight, or past the highest fetched when none is in flight.
//! With checkpoints, it commits no further than its last checkpoint's
//! covered offset, so a restart's restored state and its position agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One partition's offsets.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// Offset → records of it not yet acknowledged.
    in_flight: BTreeMap<i64, u32>,
    /// One past the highest offset fetched.
    next: Option<i64>,
    /// The position last handed to the consumer for commit.
    stored: Option<i64>,
    /// Records that failed for good: their offsets stay in flight.
    failed: u64,
    /// Input offset covered by the last finished checkpoint.
    checkpointed: Option<i64>,
}

/// What limits the committed position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitPolicy {
    /// Acknowledged outputs alone.
    #[default]
    Acknowledged,
    /// Acknowledged outputs and the last checkpoint.
    Checkpointed,
    /// Nothing is committed here (transactions commit offsets).
    Never,
}

impl PartitionOffsets {
    /// An offset was fetched and is being processed.
    pub fn fetched(&mut self, offset: i64) {
        self.in_flight.insert(offset, 1);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// `offset` produces one more record (a flagged anomaly's copy), which
    /// must be acknowledged too before the offset is committed.
    pub fn one_more(&mut self, offset: i64) {
        *self.in_flight.entry(offset).or_insert(0) += 1;
    }

    /// The broker acknowledged a record produced for `offset`.
    pub fn acked(&mut self, offset: i64) {
        if let Some(n) = self.in_flight.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&offset);
            }
        }
    }

    /// The record for `offset` failed for good; it is never committed.
    pub fn failed(&mut self) {
        self.failed += 1;
    }

    /// Records of this partition that failed for good.
    pub fn failures(&self) -> u64 {
        self.failed
    }

    /// A checkpoint covering offsets below `position` is acknowledged.
    pub fn checkpointed(&mut self, position: i64) {
        self.checkpointed = Some(self.checkpointed.map_or(position, |c| c.max(position)));
    }

    /// Whether every offset below `position` has its output acknowledged.
    pub fn acked_below(&self, position: i64) -> bool {
        self.in_flight
            .first_key_value()
            .is_none_or(|(&low, _)| low >= position)
    }

    /// The position that may be committed now (the next offset to consume), if any.
    pub fn committable(&self) -> Option<i64> {
        match self.in_flight.first_key_value() {
            Some((&low, _)) => Some(low),
            None => self.next,
        }
    }

    /// The committable position under `policy` if it moved since the last call.
    pub fn take_new_position(&mut self, policy: CommitPolicy) -> Option<i64> {
        let acked = self.committable();
        let pos = match policy {
            CommitPolicy::Acknowledged => acked?,
            CommitPolicy::Checkpointed => acked?.min(self.checkpointed?),
            CommitPolicy::Never => return None,
        };
        if self.stored.is_some_and(|s| s >= pos) {
            return None;
        }
        self.stored = Some(pos);
        Some(pos)
    }

    /// Offsets still waiting for an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// Offsets of every assigned partition, shared by the source and the delivery callbacks.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: Mutex<HashMap<i32, PartitionOffsets>>,
    policy: CommitPolicy,
}

impl Offsets {
    /// Offsets committed under `policy`.
    pub fn new(policy: CommitPolicy) -> Self {
        Offsets {
            parts: Mutex::default(),
            policy,
        }
    }

    /// Runs `f` on a partition's offsets (created on first use).
    pub fn with<R>(&self, partition: i32, f: impl FnOnce(&mut PartitionOffsets) -> R) -> R {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        f(parts.entry(partition).or_default())
    }

    /// Forgets a partition (after it was revoked and committed).
    pub fn remove(&self, partition: i32) {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// New committable positions of every partition.
    pub fn new_positions(&self) -> Vec<(i32, i64)> {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts
            .iter_mut()
            .filter_map(|(&p, o)| o.take_new_position(self.policy).map(|pos| (p, pos)))
            .collect()
    }

    /// Records in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|o| o.in_flight())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_lowest_unacknowledged_offset() {
        let mut p = PartitionOffsets::default();
        assert_eq!(p.committable(), None);
        for o in 10..15 {
            p.fetched(o);
        }
        assert_eq!(p.committable(), Some(10));
        p.acked(12);
        p.acked(11);
        assert_eq!(p.committable(), Some(10), "10 is not acknowledged yet");
        p.acked(10);
        assert_eq!(p.committable(), Some(13));
        let ack = CommitPolicy::Acknowledged;
        assert_eq!(p.take_new_position(ack), Some(13));
        assert_eq!(p.take_new_position(ack), None, "unchanged");
        p.acked(14);
        p.acked(13);
        assert_eq!(
            p.take_new_position(ack),
            Some(15),
            "all acknowledged: past the highest fetched"
        );
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn with_checkpoints_commits_stop_at_the_last_checkpoint() {
        let mut p = PartitionOffsets::default();
        let cp = CommitPolicy::Checkpointed;
        for o in 0..10 {
            p.fetched(o);
            p.acked(o);
        }
        assert_eq!(p.take_new_position(cp), None, "no checkpoint yet");
        assert!(p.acked_below(10));
        p.checkpointed(6);
        assert_eq!(p.take_new_position(cp), Some(6));
        p.fetched(10);
        assert!(!p.acked_below(11));
        p.checkpointed(11);
        assert_eq!(
            p.take_new_position(cp),
            Some(10),
            "10 is not acknowledged yet"
        );
        assert_eq!(p.take_new_position(CommitPolicy::Never), None);
    }

    #[test]
    fn a_failed_record_holds_its_partition_back() {
        let o = Offsets::default();
        o.with(0, |p| (0..3).for_each(|x| p.fetched(x)));
        o.with(1, |p| p.fetched(7));
        o.with(0, |p| {
            p.acked(0);
            p.failed();
            p.acked(2);
        });
        o.with(1, |p| p.acked(7));
        let mut pos = o.new_positions();
        pos.sort();
        assert_eq!(pos, vec![(0, 1), (1, 8)]);
        assert_eq!(o.in_flight(), 1);
    }

    #[test]
    fn an_offset_with_two_records_waits_for_both() {
        let mut o = PartitionOffsets::default();
        o.fetched(5);
        o.one_more(5);
        o.acked(5);
        assert_eq!(o.committable(), Some(5), "one of two acknowledged");
        o.acked(5);
        assert_eq!(o.committable(), Some(6));
    }
}
