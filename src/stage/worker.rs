//! One partition's worker thread: decode → window → model → encode → sink.
//!
//! Each assigned partition gets its own thread and its own [`Forecaster`]
//! (shared weights per partition), so a partition's forecasts depend only on
//! that partition's events, in partition order. The learner is defined per
//! event, so how events were grouped into windows never changes a forecast.
//!
//! With checkpoints, the worker first restores its partition's state from the
//! changelog and skips input below the offset that state covers; it then
//! checkpoints every interval and once more when it stops (see [`crate::state`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Every, Late, OnMismatch};
use crate::health::Health;
use crate::model::checkpoint::Reader;
use crate::model::{Clock, Forecaster, ModelConfig, StreamStats};
pub use crate::stage::checkpoint::StateSetup;
use crate::stage::checkpoint::{self, CheckpointFailure, Checkpointing};
use crate::stage::decode::{self, DecodeConfig, DecodeError, Reason};
use crate::stage::encode::{self, SourceRef};
use crate::stage::feed::{PartitionFeed, Raw};
use crate::stage::offsets::Offsets;
use crate::stage::sink::{self, Receipt, RecordKind, Sink};
use crate::stage::swap::HotSwap;
use crate::stage::window::{WindowRows, Windower};
use crate::state;
use crate::state::changelog;
use crate::telemetry::{Metrics, WindowErrors};

/// Everything a worker needs besides its partition's feed.
pub struct WorkerSetup {
    /// Input topic (for the `source` of predictions and dead-letter headers).
    pub topic: String,
    /// Partition served.
    pub partition: i32,
    /// Output topic.
    pub output_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Most bytes of key and value a dead letter carries (the producer's
    /// `message.max.bytes` less room for headers).
    pub dlq_max_bytes: usize,
    /// Decoding rules.
    pub decode: DecodeConfig,
    /// `events.max_future` in ms: `decode.max_ts_ms` follows the wall clock by this.
    pub max_future_ms: Option<i64>,
    /// `events.late`.
    pub late: Late,
    /// `state.max_streams` (`None`: no limit). With checkpoints it evicts to
    /// the changelog at checkpoints; without, it drops.
    pub max_streams: Option<usize>,
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
    /// The stage's health (a fatal error stops it).
    pub health: Arc<Health>,
    /// Held until the partition's state is restored (`/readyz` waits for it).
    pub restoring: Option<crate::health::Restoring>,
    /// Input offsets in flight: marked when fetched, cleared when acknowledged.
    pub offsets: Arc<Offsets>,
    /// Checkpoint bytes to start the learner from (already validated), if any.
    pub init: Option<Arc<Vec<u8>>>,
    /// Checkpointing, if on.
    pub state: Option<StateSetup>,
    /// Checkpoints published for hot swap.
    pub swap: Arc<HotSwap>,
    /// The forecasts' interval levels, ascending (empty without intervals).
    pub levels: Vec<f64>,
    /// Scores at or above this flag an anomaly.
    pub anomaly_threshold: f64,
    /// Where flagged predictions also go, if anywhere.
    pub anomaly_topic: Option<String>,
}

/// The learner a partition starts with: its changelog state, else the warm start, else fresh.
fn start(setup: &mut WorkerSetup) -> Result<(Forecaster<f32>, Option<Checkpointing>), String> {
    let p = setup.partition;
    let mut cp = None;
    let model = match setup.state.take() {
        Some(st) => {
            let t = Instant::now();
            let (latest, records) = changelog::read_partition(&st.client, &st.changelog, p)
                .map_err(|e| format!("partition {p}: cannot read its state: {e}"))?;
            let mut r = restore(setup, &st, &latest)?;
            r.checkpoints
                .set_topic(&setup.topic, st.topic_id.as_deref());
            r.checkpoints.set_max_streams(setup.max_streams);
            drop(latest);
            let m = &setup.metrics;
            m.restore_seconds.observe(t.elapsed().as_secs_f64());
            m.restore_records.inc_by(records);
            if let Some(resume) = r.resume {
                tracing::info!(
                    "partition {p}: restored {} streams (+{} idle) at input offset {resume}, model version {}, from {records} changelog records in {:.3} s",
                    r.loaded,
                    r.checkpoints.idle_count(),
                    r.forecaster.shared().updates,
                    t.elapsed().as_secs_f64()
                );
                setup.offsets.with(p, |o| o.checkpointed(resume));
            }
            cp = Some(Checkpointing {
                setup: st,
                book: r.checkpoints,
                resume: r.resume.unwrap_or(i64::MIN),
                next_offset: r.resume,
                covered: r.resume,
                since: 0,
                last: Instant::now(),
                fetcher: None,
            });
            let fresh = r.resume.is_none();
            let mut f = r.forecaster;
            if fresh {
                warm_start(&mut f, setup.init.as_deref());
            }
            f
        }
        None => {
            let mut f = Forecaster::<f32>::new(setup.model.clone())
                .expect("model config was validated at start");
            warm_start(&mut f, setup.init.as_deref());
            f
        }
    };
    Ok((model, cp))
}

/// The partition's state from its changelog records, by `state.on_mismatch`
/// when the checkpoint covers another topic or another model shape.
fn restore(
    setup: &WorkerSetup,
    st: &StateSetup,
    latest: &state::Latest,
) -> Result<state::Restored<f32>, String> {
    let p = setup.partition;
    let misfit = match state::restore::<f32>(&setup.model, p, st.idle_ttl_ms, latest) {
        Ok(r) => match (r.topic.as_deref(), r.topic_id.as_deref()) {
            (Some(t), _) if t != setup.topic => format!(
                "partition {p}: the changelog checkpoint covers input topic {t:?}, this stage reads {:?}",
                setup.topic
            ),
            (_, Some(was)) if st.topic_id.as_deref().is_some_and(|now| now != was) => format!(
                "partition {p}: input topic {:?} was deleted and recreated since the changelog checkpoint (topic id {was}, now {}): its offsets start over",
                setup.topic,
                st.topic_id.as_deref().unwrap_or_default()
            ),
            _ => {
                if !r.skipped.is_empty() {
                    tracing::warn!(
                        "partition {p}: {} unreadable stream records skipped; those streams start afresh",
                        r.skipped.len()
                    );
                }
                return Ok(r);
            }
        },
        Err(e @ state::RestoreError::Mismatch { .. }) => e.to_string(),
        Err(e) => return Err(format!("cannot restore state: {e}")),
    };
    match st.on_mismatch {
        OnMismatch::Fail => Err(format!(
            "{misfit} (state.on_mismatch = \"fail\"; \"fresh\" starts the partition afresh)"
        )),
        OnMismatch::Fresh => {
            tracing::warn!(
                "{misfit}: starting the partition afresh (state.on_mismatch = \"fresh\")"
            );
            Ok(state::fresh(&setup.model, p, st.idle_ttl_ms, latest))
        }
    }
}

fn warm_start(f: &mut Forecaster<f32>, init: Option<&Vec<u8>>) {
    if let Some(bytes) = init {
        Reader::new(bytes)
            .and_then(|r| f.load_weights(&r))
            .expect("state.init was checked at start");
    }
}

/// Runs a worker on its partition's feed until `stop` is set, then flushes
/// its window and takes a last checkpoint.
pub fn run(mut setup: WorkerSetup, mut feed: PartitionFeed, stop: &AtomicBool) {
    let started = start(&mut setup);
    setup.restoring = None;
    let (model, cp) = match started {
        Ok(x) => x,
        Err(e) => {
            // Nothing of this partition is processed or committed: the stage stops.
            setup.health.fail(e);
            return;
        }
    };
    let swapped = setup.swap.version();
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
        cp,
        swapped,
        values: Vec::new(),
        out: Vec::new(),
        streams: 0,
        counted: StreamStats::default(),
        aborted: false,
    };
    let (p, offsets) = (w.setup.partition, w.setup.offsets.clone());
    while !stop.load(Ordering::Relaxed) && !w.aborted {
        // At most POLL_WAIT, so a stop is noticed promptly.
        let mut wait = w
            .windower
            .deadline()
            .map_or(POLL_WAIT, |d| d.saturating_duration_since(Instant::now()))
            .min(POLL_WAIT);
        if let Some(due) = w.checkpoint_deadline() {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(ahead) = w.setup.max_future_ms {
            w.setup.decode.max_ts_ms = wall_ms().saturating_add(ahead).min(decode::MAX_TS_MS);
        }
        let got = feed.poll(wait, |batch| {
            // In flight from here until their outputs are acknowledged.
            offsets.with(p, |o| batch.iter().for_each(|r| o.fetched(r.offset)));
            let now = Instant::now();
            for &raw in batch {
                w.handle(raw, now);
            }
        });
        if got == 0
            && let Some(batch) = w.windower.poll(Instant::now())
        {
            w.process(&batch);
        }
        w.hot_swap();
        if w.checkpoint_due() {
            w.checkpoint();
        }
        w.drop_crowd();
    }
    // Revoked or shutting down: everything handled goes into a last checkpoint.
    // Messages still queued were never marked, so they are not committed:
    // whoever owns the partition next reads them. (The checkpoint flushes the
    // open window first, with or without checkpointing on.)
    if !w.aborted {
        w.checkpoint();
    }
    w.setup.metrics.streams_active.sub(w.streams as i64);
}

/// The longest a worker waits for messages before looking at its window,
/// its checkpoint clock and its stop flag.
const POLL_WAIT: Duration = Duration::from_millis(100);

struct Worker {
    setup: WorkerSetup,
    model: Forecaster<f32>,
    windower: Windower,
    cp: Option<Checkpointing>,
    /// The last hot-swap version applied.
    swapped: u64,
    values: Vec<f32>,
    out: Vec<u8>,
    /// Streams counted in the `streams_active` gauge.
    streams: usize,
    /// Learner counters already added to the metrics.
    counted: StreamStats,
    /// A transaction aborted (exactly once): the partition stops here.
    aborted: bool,
}

/// Streams in memory that bring a checkpoint forward under `state.max_streams = cap`:
/// an eighth over the cap, so the early checkpoints (each a pass over every
/// stream) come at most once per `cap / 8` new streams.
pub fn crowd_limit(cap: usize) -> usize {
    cap + cap / 8 + 64
}

impl Worker {
    fn source(&self, offset: i64) -> SourceRef<'_> {
        SourceRef {
            topic: &self.setup.topic,
            partition: self.setup.partition,
            offset,
        }
    }

    fn handle(&mut self, raw: Raw<'_>, now: Instant) {
        if let Some(c) = self.cp.as_mut() {
            if raw.offset < c.resume {
                // Covered by the restored state: its outputs were delivered before.
                self.setup
                    .offsets
                    .with(self.setup.partition, |o| o.acked(raw.offset));
                return;
            }
            c.next_offset = Some(
                c.next_offset
                    .map_or(raw.offset + 1, |n| n.max(raw.offset + 1)),
            );
            c.since += 1;
        }
        match decode::decode(&self.setup.decode, raw.key, raw.value, raw.ts_ms) {
            Ok(event) => {
                self.setup.metrics.events.inc();
                if let Some(batch) = self.windower.push(&event, raw.offset, now) {
                    self.process(&batch);
                }
            }
            Err(e) => self.dead_letter(raw.key, raw.value, raw.offset, &e),
        }
    }

    /// Sends the input to the dead-letter topic with its reason. A key and
    /// value too large for the producer are cut to fit, with a header giving
    /// the original sizes: an unsendable dead letter would stall the partition.
    fn dead_letter(&self, key: Option<&[u8]>, value: Option<&[u8]>, offset: i64, e: &DecodeError) {
        let (mut key, mut value) = (key.unwrap_or_default(), value.unwrap_or_default());
        let mut hs = encode::dead_letter_headers(e, &self.source(offset)).to_vec();
        if let Some((k, v)) = encode::fit(key.len(), value.len(), self.setup.dlq_max_bytes) {
            let original = format!("key {} bytes, value {} bytes", key.len(), value.len());
            hs.push((encode::HEADER_TRUNCATED, original.into_bytes()));
            (key, value) = (&key[..k], &value[..v]);
        }
        let d = Receipt {
            partition: self.setup.partition,
            offset,
            kind: RecordKind::DeadLetter(e.reason),
        };
        self.setup.sink.send(
            &self.setup.dlq_topic,
            key,
            value,
            Some(sink::headers(&hs)),
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
        let mut errors = WindowErrors::default();
        let now_ms = wall_ms();
        for i in 0..rows.len() {
            let (stream, ts_ms, offset) = (rows.stream(i), rows.ts_ms(i), rows.offset(i));
            // Streams are stamped with their last event time with or without
            // checkpoints: crowding evicts (or drops) by it.
            self.model.set_clock(Clock {
                ts_ms,
                generation: self.cp.as_ref().map_or(0, |c| c.book.generation()),
            });
            if let Some(c) = self.cp.as_mut() {
                c.book.saw(ts_ms, now_ms);
                if let Some(at) = c.book.evicted(stream)
                    && self.model.stream(stream).is_none()
                {
                    checkpoint::bring_back(
                        c,
                        &mut self.model,
                        self.setup.partition,
                        &self.setup.metrics,
                        stream,
                        at,
                    );
                }
            }
            if self.refuse_late(stream, ts_ms, rows.values(i), offset) {
                continue;
            }
            self.values.clear();
            self.values.extend(rows.values(i).iter().map(|&v| v as f32));
            match self.model.observe(stream, &self.values) {
                Ok(obs) => {
                    errors.sq += obs.errors.step1_sq;
                    errors.abs += obs.errors.step1_abs;
                    errors.naive_sq += obs.errors.naive_sq;
                    errors.naive_abs += obs.errors.naive_abs;
                    errors.n += obs.errors.step1_n as u64;
                    let src = SourceRef {
                        topic: &self.setup.topic,
                        partition: self.setup.partition,
                        offset,
                    };
                    let flagged = obs
                        .anomaly
                        .is_some_and(|a| a >= self.setup.anomaly_threshold);
                    let fc = encode::Forecast {
                        values: obs.forecast,
                        targets,
                        model_version: obs.model_version,
                        levels: &self.setup.levels,
                        lower: obs.lower,
                        upper: obs.upper,
                        score: obs.anomaly,
                        anomaly: flagged,
                    };
                    encode::prediction_with(&mut self.out, stream, ts_ms, &fc, &src);
                    let p = self.setup.partition;
                    let receipt = |kind| Receipt {
                        partition: p,
                        offset,
                        kind,
                    };
                    if flagged {
                        metrics.anomalies.inc();
                        if let Some(topic) = &self.setup.anomaly_topic {
                            // Counted before either record is sent: the offset
                            // commits only once both are acknowledged.
                            self.setup.offsets.with(p, |o| o.one_more(offset));
                            let key = stream.as_bytes();
                            self.setup.sink.send(
                                topic,
                                key,
                                &self.out,
                                None,
                                receipt(RecordKind::Anomaly),
                            );
                        }
                    }
                    self.setup.sink.send(
                        &self.setup.output_topic,
                        stream.as_bytes(),
                        &self.out,
                        None,
                        receipt(RecordKind::Prediction),
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
        metrics.observe_errors(&errors);
        self.sync_counters();
        metrics.processing.observe(start.elapsed().as_secs_f64());
    }

    /// With `events.late = "dead_letter"`: dead-letters an event older than
    /// its stream's last one; true when it did.
    fn refuse_late(&mut self, stream: &str, ts_ms: i64, values: &[f64], offset: i64) -> bool {
        if self.setup.late != Late::DeadLetter {
            return false;
        }
        if self.cp.is_none() {
            // Streams' last event times follow the clock (checkpoints set it otherwise).
            self.model.set_clock(Clock {
                ts_ms,
                generation: 0,
            });
        }
        let Some(last) = self.model.stream(stream).map(|s| s.last_ts_ms) else {
            return false;
        };
        if ts_ms >= last {
            return false;
        }
        let err = DecodeError {
            reason: Reason::Late,
            detail: format!(
                "event time {ts_ms} ms is before the stream's last, {last} ms (events.late = \"dead_letter\")"
            ),
        };
        let value =
            serde_json::json!({"stream": stream, "ts": ts_ms, "values": values}).to_string();
        self.dead_letter(
            Some(stream.as_bytes()),
            Some(value.as_bytes()),
            offset,
            &err,
        );
        true
    }

    /// Adds the learner's new counts to the metrics.
    fn sync_counters(&mut self) {
        let metrics = &self.setup.metrics;
        let stats = self.model.stats();
        let seen = std::mem::replace(&mut self.counted, stats);
        metrics.model_updates.inc_by(stats.updates - seen.updates);
        metrics.nonfinite.inc_by(stats.nonfinite - seen.nonfinite);
        metrics
            .weight_rollbacks
            .inc_by(stats.rollbacks - seen.rollbacks);
        metrics
            .level_shifts
            .inc_by(stats.level_shifts - seen.level_shifts);
        let streams = self.model.stream_count();
        metrics
            .streams_active
            .add(streams as i64 - self.streams as i64);
        self.streams = streams;
    }

    /// When the next time-based checkpoint is due.
    fn checkpoint_deadline(&self) -> Option<Instant> {
        match self.cp.as_ref()? {
            c if c.since == 0 => None,
            c => checkpoint::due_by_time(c.setup.every, c.setup.longest_open, c.last),
        }
    }

    fn checkpoint_due(&self) -> bool {
        match &self.cp {
            Some(c) if c.since > 0 => {
                let scheduled = matches!(c.setup.every, Every::Events(n) if c.since >= n)
                    || self
                        .checkpoint_deadline()
                        .is_some_and(|d| d <= Instant::now());
                // Evictions happen at checkpoints: one comes early when new
                // streams crowd memory past the cap, whatever the interval.
                let crowded = self
                    .setup
                    .max_streams
                    .is_some_and(|cap| self.model.stream_count() >= crowd_limit(cap));
                scheduled || crowded
            }
            _ => false,
        }
    }

    /// Without checkpoints there is no changelog to evict to: once a
    /// partition holds [`crowd_limit`] streams, the least recently seen (in
    /// event time) are dropped down to `state.max_streams`, so memory stays
    /// bounded whatever the sender does. A dropped stream that returns starts
    /// afresh, as every stream does after a restart without checkpoints.
    fn drop_crowd(&mut self) {
        let (None, Some(cap)) = (&self.cp, self.setup.max_streams) else {
            return;
        };
        if self.model.stream_count() < crowd_limit(cap) {
            return;
        }
        let ts = self.model.streams().map(|(_, s)| s.last_ts_ms).collect();
        let Some(cutoff) = crate::state::least_recent_cutoff(ts, cap) else {
            return;
        };
        let dropped = self.model.drop_seen_before(cutoff);
        self.setup.metrics.streams_dropped.inc_by(dropped as u64);
        self.sync_counters();
        tracing::warn!(
            "partition {}: {dropped} streams dropped from memory (state.max_streams = {cap}, no checkpoints to evict them to); they start afresh if they return",
            self.setup.partition
        );
    }

    /// Loads a newly published checkpoint's weights (hot swap).
    fn hot_swap(&mut self) {
        if self.setup.swap.version() == self.swapped {
            return;
        }
        let (version, bytes) = self.setup.swap.latest();
        self.swapped = version;
        let Some(bytes) = bytes else { return };
        match Reader::new(&bytes).and_then(|r| self.model.load_weights(&r)) {
            Ok(()) => {
                self.setup.metrics.model_swaps.inc();
                tracing::info!(
                    "partition {}: loaded new weights, model version {}",
                    self.setup.partition,
                    self.model.shared().updates
                );
            }
            Err(e) => tracing::warn!("partition {}: hot swap refused: {e}", self.setup.partition),
        }
    }

    /// Writes a checkpoint of everything handled so far: the stream records,
    /// then (once they and every prediction before it are acknowledged) the
    /// head, then marks its offset committable. A failure leaves the previous
    /// checkpoint in force; the next interval tries again.
    fn checkpoint(&mut self) {
        self.flush();
        let Some(c) = self.cp.as_mut() else { return };
        let Some(covered) = c.next_offset else { return };
        if c.since == 0 && c.covered == Some(covered) {
            return;
        }
        let p = self.setup.partition;
        let metrics = self.setup.metrics.clone();
        let start = Instant::now();
        match checkpoint::write_checkpoint(
            c,
            &mut self.model,
            &self.setup.offsets,
            &self.setup.sink,
            &self.setup.topic,
            p,
            covered,
        ) {
            Ok(evicted) => {
                c.covered = Some(covered);
                c.since = 0;
                c.last = Instant::now();
                metrics.checkpoints.inc();
                metrics.streams_evicted.inc_by(evicted as u64);
                metrics
                    .checkpoint_seconds
                    .observe(start.elapsed().as_secs_f64());
                if let Some(dir) = &c.setup.dir {
                    let path = dir.join(format!("{}-{p}.safetensors", self.setup.topic));
                    if let Err(e) = self.model.save(&path) {
                        tracing::warn!("partition {p}: local checkpoint copy: {e}");
                    }
                }
            }
            Err(CheckpointFailure::Retry(e)) => {
                metrics.checkpoint_failures.inc();
                c.last = Instant::now();
                tracing::warn!(
                    "partition {p}: checkpoint at offset {covered} failed, retrying at the next interval: {e}"
                );
            }
            Err(CheckpointFailure::Fatal(e)) => {
                // Nothing more from this partition: no output, no checkpoint.
                self.aborted = true;
                self.setup.health.fail(format!("partition {p}: {e}"))
            }
        }
        self.sync_counters();
    }
}

/// The wall clock, epoch ms.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
