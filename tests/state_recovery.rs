//! State that survives, checked end to end on the real broker: after a SIGKILL
//! and a restart, or after a failover between two instances of one group, the
//! forecast for every input offset is byte for byte the one an uninterrupted
//! single run produces (the restored state covers exactly the offset
//! consumption resumes at, so replayed events meet the same learner).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{
    Collector, Prediction, brokers, create_topics, end_offsets, free_port, metric, metrics_text,
};

const PARTITIONS: i32 = 4;
const STREAMS: usize = 100;

/// Source (partition, offset) → prediction value bytes.
type Forecasts = HashMap<(i32, i64), Vec<u8>>;

/// A `recur run` child process with its own /metrics address and stderr log.
/// Killed (SIGKILL) if a failing test drops it while it still runs.
struct Instance {
    name: &'static str,
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Instance {
    fn spawn(
        name: &'static str,
        dir: &Path,
        brokers: &str,
        tag: &str,
        run: &str,
        extra: &str,
    ) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join(format!("{name}.toml"));
        let text = common::stage_toml_run(brokers, tag, run, &addr) + extra;
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance {
            name,
            child,
            addr,
            log,
        }
    }

    fn metrics(&self) -> String {
        metrics_text(&self.addr)
    }

    fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with its stderr) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited early ({status}); stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (at most 60 s) for the exit.
    fn sigterm(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -TERM {} failed", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 60 s of SIGTERM; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `partition P: restored N streams (+I idle) at input offset R` lines: (P, R).
    fn restored(&self) -> Vec<(i32, i64)> {
        self.stderr()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("recur: partition ")?;
                let (p, rest) = rest.split_once(": restored ")?;
                let (_, rest) = rest.split_once(" at input offset ")?;
                let r = rest.split(|c: char| !c.is_ascii_digit()).next()?;
                Some((p.parse().ok()?, r.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh scratch directory for configs and logs.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recur-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Creates `in-<tag>`, `dlq-<tag>` and `out-<tag>-<run>` for each run.
fn topics(brokers: &str, tag: &str, runs: &[&str]) {
    let (input, dlq) = (format!("in-{tag}"), format!("dlq-{tag}"));
    let outs: Vec<String> = runs.iter().map(|r| format!("out-{tag}-{r}")).collect();
    let mut all = vec![(input.as_str(), PARTITIONS), (dlq.as_str(), 1)];
    all.extend(outs.iter().map(|o| (o.as_str(), PARTITIONS)));
    create_topics(brokers, &all);
}

/// The uninterrupted run: one in-process stage, no checkpoints, its own group
/// and output topic, over all `events` of `in-<tag>`; one prediction per event.
fn reference_run(brokers: &str, tag: &str, events: usize) -> Forecasts {
    let addr = format!("127.0.0.1:{}", free_port());
    let text =
        common::stage_toml_run(brokers, tag, "ref", &addr) + "\n[checkpoint]\ninterval = \"off\"\n";
    let cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
    let collector = Collector::start(brokers, &format!("out-{tag}-ref"));
    let done = Arc::new(tokio::sync::Notify::new());
    let d = done.clone();
    let run = std::thread::spawn(move || {
        stage::run(cfg, async move { d.notified().await }, LiveLine::Quiet).unwrap()
    });
    let t = Instant::now();
    let got = collector.wait_distinct(events, Duration::from_secs(120));
    done.notify_one();
    let report = run.join().unwrap();
    let all = collector.finish_predictions();
    eprintln!(
        "reference run: {} predictions in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        got, events,
        "the reference run left events without a prediction"
    );
    assert_eq!(report.dead_letters, 0);
    assert_eq!(report.predictions, events as u64, "{report:?}");
    assert_eq!(
        all.len(),
        events,
        "the uninterrupted run repeated predictions"
    );
    let map: Forecasts = all
        .into_iter()
        .map(|p| ((p.partition, p.offset), p.value))
        .collect();
    assert_eq!(map.len(), events);
    map
}

/// Checks `got` against the reference: every offset covered, every value equal.
/// Returns how many predictions were duplicates.
fn assert_same_forecasts(
    reference: &Forecasts,
    got: &[Prediction],
    ends: &HashMap<i32, i64>,
) -> usize {
    let mut by_offset: BTreeMap<(i32, i64), Vec<&[u8]>> = BTreeMap::new();
    for p in got {
        by_offset
            .entry((p.partition, p.offset))
            .or_default()
            .push(&p.value);
    }
    let expected: usize = ends.values().map(|&e| e as usize).sum();
    assert_eq!(reference.len(), expected);
    let mut missing = Vec::new();
    for (&p, &end) in ends {
        missing.extend(
            (0..end)
                .filter(|o| !by_offset.contains_key(&(p, *o)))
                .map(|o| (p, o)),
        );
    }
    missing.sort();
    let unknown: Vec<_> = by_offset
        .keys()
        .filter(|k| !reference.contains_key(k))
        .collect();
    assert!(
        unknown.is_empty(),
        "{} predictions for offsets that were never produced, e.g. {:?}",
        unknown.len(),
        &unknown[..unknown.len().min(5)]
    );
    assert!(
        missing.is_empty(),
        "{} input offsets without a prediction, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut differing = Vec::new();
    for (k, values) in &by_offset {
        let want = &reference[k];
        for v in values {
            if v != want {
                differing.push((*k, *v, want));
            }
        }
    }
    if let Some((k, got, want)) = differing.first() {
        let mut per_partition: BTreeMap<i32, (usize, i64)> = BTreeMap::new();
        for ((p, o), ..) in &differing {
            let e = per_partition.entry(*p).or_insert((0, *o));
            e.0 += 1;
            e.1 = e.1.min(*o);
        }
        panic!(
            "{} predictions differ from the uninterrupted run (per partition: count, first offset: {per_partition:?}); first at partition {} offset {}:\n  got:       {}\n  reference: {}",
            differing.len(),
            k.0,
            k.1,
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        );
    }
    got.len() - by_offset.len()
}

/// The seed of the random kill point: `RECUR_TEST_SEED` if set, else the clock.
fn seed() -> u64 {
    std::env::var("RECUR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// SplitMix64: one well-mixed number from a seed.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn sigkill_at_a_random_point_then_restart_replays_identical_forecasts() {
    let Some(brokers) = brokers() else { return };
    let started = Instant::now();
    let tag = format!("srk-{}", std::process::id());
    let input = format!("in-{tag}");
    topics(&brokers, &tag, &["ref", "crash"]);
    let events = 40_000usize;
    let stop = AtomicBool::new(false);
    let sent =
        recur::tools::produce_synthetic(&brokers, &input, STREAMS, 0, Some(events as u64), &stop)
            .unwrap();
    assert_eq!(sent, events as u64);
    let ends = end_offsets(&brokers, &input, PARTITIONS, events as i64);
    eprintln!("input offsets per partition: {ends:?}");
    let reference = reference_run(&brokers, &tag, events);

    // The kill point: a random share (20%..80%) of the events predicted, and
    // at least one checkpoint finished, so the restart has state to restore.
    let seed = seed();
    let kill_at = events as u64 * (20 + mix(seed) % 61) / 100;
    eprintln!(
        "kill point: SIGKILL once {kill_at} of {events} predictions are acknowledged (RECUR_TEST_SEED={seed} reproduces it)"
    );
    let dir = scratch(&tag);
    let checkpoints = "\n[checkpoint]\ninterval = 2000\n";
    let collector = Collector::start(&brokers, &format!("out-{tag}-crash"));
    let mut first = Instance::spawn("first", &dir, &brokers, &tag, "crash", checkpoints);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (killed_at, checkpoints_before) = loop {
        let text = first.metrics();
        let (done, cps) = (
            metric(&text, "recur_predictions_total"),
            metric(&text, "recur_checkpoints_total"),
        );
        if done >= kill_at as f64 && cps >= 1.0 {
            first.sigkill();
            break (done, cps);
        }
        first.assert_running();
        assert!(
            Instant::now() < deadline,
            "the first run reached only {done} predictions, {cps} checkpoints; stderr:\n{}",
            first.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    eprintln!(
        "SIGKILL after {killed_at} acknowledged predictions and {checkpoints_before} checkpoints; {} distinct read back so far",
        collector.distinct()
    );
    assert!(
        killed_at < events as f64,
        "the first run finished before the kill ({killed_at} predictions): make the input larger"
    );

    let mut second = Instance::spawn("second", &dir, &brokers, &tag, "crash", checkpoints);
    let got = collector.wait_distinct(events, Duration::from_secs(120));
    second.assert_running();
    let text = second.metrics();
    let status = second.sigterm();
    let all = collector.finish_predictions();
    let restored = second.restored();
    eprintln!(
        "restart: restored {restored:?} (partition, input offset); {} changelog records read; {} predictions",
        metric(&text, "recur_restore_records_total"),
        metric(&text, "recur_predictions_total"),
    );
    assert_eq!(
        got,
        events,
        "predictions are missing after the restart; stderr:\n{}",
        second.stderr()
    );
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}; stderr:\n{}",
        second.stderr()
    );
    assert!(
        metric(&text, "recur_restore_records_total") > 0.0,
        "the restart read no changelog records"
    );
    assert!(
        restored.iter().any(|&(_, at)| at > 0),
        "no partition resumed from a checkpoint: the restart replayed from scratch; stderr:\n{}",
        second.stderr()
    );
    let redone = metric(&text, "recur_predictions_total");
    assert!(
        redone < events as f64,
        "the restart predicted all {redone} events again: it did not resume from its state"
    );
    let duplicates = assert_same_forecasts(&reference, &all, &ends);
    eprintln!(
        "crash run: {} predictions read, {duplicates} duplicates, all {events} identical to the reference; {:.1} s in all",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failover_between_two_instances_matches_a_single_instance() {
    let Some(brokers) = brokers() else { return };
    let started = Instant::now();
    let tag = format!("sfo-{}", std::process::id());
    let input = format!("in-{tag}");
    topics(&brokers, &tag, &["ref", "ab"]);
    let events = 40_000usize;
    let dir = scratch(&tag);
    let checkpoints = "\n[checkpoint]\ninterval = \"1s\"\n";
    let collector = Collector::start(&brokers, &format!("out-{tag}-ab"));
    let mut a = Instance::spawn("a", &dir, &brokers, &tag, "ab", checkpoints);
    let mut b = Instance::spawn("b", &dir, &brokers, &tag, "ab", checkpoints);

    // Both in the group, sharing the partitions, before any event arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (pa, pb) = (
            a.metric("recur_partitions_assigned"),
            b.metric("recur_partitions_assigned"),
        );
        if pa > 0.0 && pb > 0.0 && pa + pb == PARTITIONS as f64 {
            eprintln!("assigned: a {pa}, b {pb} partitions");
            break;
        }
        a.assert_running();
        b.assert_running();
        assert!(
            Instant::now() < deadline,
            "the two instances did not share the partitions (a {pa}, b {pb}); stderr a:\n{}\nstderr b:\n{}",
            a.stderr(),
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Paced input: the run lasts several seconds, so A stops mid-stream.
    let feeder = {
        let (brokers, input) = (brokers.clone(), input.clone());
        std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            recur::tools::produce_synthetic(
                &brokers,
                &input,
                STREAMS,
                6000,
                Some(events as u64),
                &stop,
            )
            .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let stopped_at = loop {
        let (na, nb) = (
            a.metric("recur_predictions_total"),
            b.metric("recur_predictions_total"),
        );
        if na > 0.0 && nb > 0.0 && na + nb >= events as f64 / 4.0 {
            break (na, nb);
        }
        a.assert_running();
        b.assert_running();
        assert!(
            Instant::now() < deadline,
            "predictions do not flow on both instances (a {na}, b {nb})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = a.sigterm();
    eprintln!(
        "stopped a after a {} + b {} predictions; a exited with {status}",
        stopped_at.0, stopped_at.1
    );
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}; stderr a:\n{}",
        a.stderr()
    );
    assert!(
        stopped_at.0 + stopped_at.1 < events as f64 * 0.6,
        "a stopped too late to leave work to b"
    );

    // B finishes alone.
    assert_eq!(feeder.join().unwrap(), events as u64);
    let ends = end_offsets(&brokers, &input, PARTITIONS, events as i64);
    eprintln!("input offsets per partition: {ends:?}");
    let got = collector.wait_distinct(events, Duration::from_secs(120));
    b.assert_running();
    let text = b.metrics();
    let status = b.sigterm();
    let all = collector.finish_predictions();
    let restored = b.restored();
    eprintln!(
        "b: restored {restored:?} (partition, input offset); {} changelog records read; {} predictions, {} partitions at the end",
        metric(&text, "recur_restore_records_total"),
        metric(&text, "recur_predictions_total"),
        metric(&text, "recur_partitions_assigned"),
    );
    assert_eq!(
        got,
        events,
        "predictions are missing after the failover; stderr b:\n{}",
        b.stderr()
    );
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}; stderr b:\n{}",
        b.stderr()
    );
    assert_eq!(
        metric(&text, "recur_partitions_assigned"),
        PARTITIONS as f64,
        "b did not take over every partition"
    );
    assert!(
        metric(&text, "recur_restore_records_total") > 0.0,
        "b read no changelog records: state did not move"
    );
    assert!(
        restored.iter().any(|&(_, at)| at > 0),
        "b resumed no partition from a's checkpoint; stderr b:\n{}",
        b.stderr()
    );

    let reference = reference_run(&brokers, &tag, events);
    let duplicates = assert_same_forecasts(&reference, &all, &ends);
    eprintln!(
        "failover: {} predictions read, {duplicates} duplicates, all {events} identical to the reference; {:.1} s in all",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
