//! `recur bench`: the measurements behind the figures in docs/performance.md.

use std::time::Instant;

use std::path::PathBuf;

use clap::Subcommand;
use recur::config::Config;
use serde::Serialize;

use recur::model::learner::Learning;
use recur::model::{CellKind, Forecaster, ModelConfig};
use recur::synth::NoisySine;

/// Settings of `recur bench model`.
#[derive(Clone, Debug)]
pub struct ModelBench {
    /// Cell under test.
    pub cell: CellKind,
    /// Hidden size.
    pub hidden: usize,
    /// Values per event.
    pub inputs: usize,
    /// TBPTT window.
    pub tbptt: usize,
    /// Streams the events are spread over (interleaved round-robin).
    pub streams: usize,
    /// Events timed for inference.
    pub infer_events: usize,
    /// Events timed for training.
    pub train_events: usize,
    /// Whether forecasts carry intervals and anomaly scores (the default
    /// `model.intervals`; off: `model.intervals = []`).
    pub intervals: bool,
}

/// What `recur bench model --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ModelBenchReport {
    /// Cell.
    pub cell: &'static str,
    /// Hidden size.
    pub hidden: usize,
    /// Values per event.
    pub inputs: usize,
    /// TBPTT window.
    pub tbptt: usize,
    /// Streams.
    pub streams: usize,
    /// Element type of the live path.
    pub dtype: &'static str,
    /// State step + forecast per event, one event at a time, streams interleaved.
    pub infer_events_per_sec: f64,
    /// The same plus a TBPTT step with Adam on every event.
    pub train_events_per_sec: f64,
    /// Bytes per stream with shared weights and learning on (state, TBPTT ring, normaliser, map entry).
    pub state_bytes_per_stream: usize,
    /// Events timed for inference.
    pub infer_events: usize,
    /// Events timed for training.
    pub train_events: usize,
    /// Whether forecasts carried intervals and anomaly scores.
    pub intervals: bool,
}

fn config(b: &ModelBench, learning: Learning) -> ModelConfig {
    let defaults = ModelConfig::default();
    ModelConfig {
        cell: b.cell,
        hidden: b.hidden,
        inputs: b.inputs,
        tbptt: b.tbptt,
        learning,
        intervals: if b.intervals {
            defaults.intervals.clone()
        } else {
            Vec::new()
        },
        ..defaults
    }
}

/// Times `events` observations spread round-robin over the streams; returns events per second.
fn time_events(
    f: &mut Forecaster<f32>,
    keys: &[String],
    series: &[Vec<f32>],
    events: usize,
) -> f64 {
    let width = f.config().inputs;
    let per_stream = series[0].len() / width;
    let mut sink = 0.0f32;
    let (mut s, mut t) = (0usize, 0usize);
    let start = Instant::now();
    for _ in 0..events {
        let x = &series[s][t * width..(t + 1) * width];
        if let Ok(obs) = f.observe(&keys[s], x) {
            sink += obs.forecast[0];
        }
        // Round-robin over streams; each stream cycles through its series.
        s += 1;
        if s == keys.len() {
            s = 0;
            t = if t + 1 == per_stream { 0 } else { t + 1 };
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    events as f64 / secs
}

/// The model benchmark's stream keys and each stream's series: 512
/// distinct events per stream, cycled, so inputs stay realistic and cheap
/// to fetch.
fn bench_inputs(b: &ModelBench) -> (Vec<String>, Vec<Vec<f32>>) {
    let keys = (0..b.streams).map(|i| format!("stream-{i}")).collect();
    let series = (0..b.streams)
        .map(|i| {
            NoisySine::new(24.0, 0.1, i as u64)
                .take(512 * b.inputs)
                .map(|v| v as f32)
                .collect()
        })
        .collect();
    (keys, series)
}

/// Runs the model benchmark.
pub fn model(b: &ModelBench) -> Result<ModelBenchReport, String> {
    let (keys, series) = bench_inputs(b);

    let mut infer = Forecaster::<f32>::new(config(b, Learning::Off))?;
    time_events(&mut infer, &keys, &series, b.streams * 4); // warm every stream
    let infer_rate = time_events(&mut infer, &keys, &series, b.infer_events);

    let mut train = Forecaster::<f32>::new(config(b, Learning::On))?;
    time_events(&mut train, &keys, &series, b.streams * (b.tbptt + 2));
    let train_rate = time_events(&mut train, &keys, &series, b.train_events);

    Ok(ModelBenchReport {
        cell: b.cell.name(),
        hidden: b.hidden,
        inputs: b.inputs,
        tbptt: b.tbptt,
        streams: b.streams,
        dtype: "f32",
        infer_events_per_sec: infer_rate.round(),
        train_events_per_sec: train_rate.round(),
        state_bytes_per_stream: train.state_bytes_per_stream(),
        infer_events: b.infer_events,
        train_events: b.train_events,
        intervals: b.intervals,
    })
}

/// What `recur bench model --compare-intervals --json` prints: the same
/// benchmark with intervals on (the default `model.intervals`) and off
/// (`[]`), timed in alternating rounds in one process so that the machine's
/// drift falls on both alike.
#[derive(Clone, Debug, Serialize)]
pub struct IntervalsCostReport {
    /// Cell.
    pub cell: &'static str,
    /// Hidden size.
    pub hidden: usize,
    /// Streams.
    pub streams: usize,
    /// Rounds; each times both settings, in turn (the order swaps every round).
    pub rounds: usize,
    /// Median over rounds of inference with intervals over inference without.
    pub infer_ratio: f64,
    /// The lowest and highest round's inference ratio.
    pub infer_ratio_range: [f64; 2],
    /// The fastest round with intervals over the fastest without: on a
    /// noisy machine the least disturbed reading of the two.
    pub infer_ratio_best: f64,
    /// Median over rounds of training with intervals over training without.
    pub train_ratio: f64,
    /// The lowest and highest round's training ratio.
    pub train_ratio_range: [f64; 2],
    /// Median inference rates with and without intervals, events per second.
    pub infer_events_per_sec: [f64; 2],
    /// Median training rates with and without intervals, events per second.
    pub train_events_per_sec: [f64; 2],
    /// Bytes per stream with and without intervals (as `recur bench model`).
    pub state_bytes_per_stream: [usize; 2],
}

/// The median of `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Runs `recur bench model --compare-intervals`: `rounds` rounds, each
/// timing a share of the events with intervals and without.
pub fn intervals_cost(b: &ModelBench, rounds: usize) -> Result<IntervalsCostReport, String> {
    let (keys, series) = bench_inputs(b);
    let setting = |intervals: bool, learning: Learning| {
        let b = ModelBench {
            intervals,
            ..b.clone()
        };
        Forecaster::<f32>::new(config(&b, learning))
    };
    // [with, without], for inference and for training, each warmed first.
    let mut infer = [
        setting(true, Learning::Off)?,
        setting(false, Learning::Off)?,
    ];
    let mut train = [setting(true, Learning::On)?, setting(false, Learning::On)?];
    for f in &mut infer {
        time_events(f, &keys, &series, b.streams * 4);
    }
    for f in &mut train {
        time_events(f, &keys, &series, b.streams * (b.tbptt + 2));
    }
    let (infer_share, train_share) = (
        (b.infer_events / rounds).max(1),
        (b.train_events / rounds).max(1),
    );
    let mut rates = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let r = time_events(&mut infer[i], &keys, &series, infer_share);
            rates[0][i].push(r);
        }
        for i in order {
            let r = time_events(&mut train[i], &keys, &series, train_share);
            rates[1][i].push(r);
        }
    }
    let ratios = |kind: usize| -> Vec<f64> {
        rates[kind][0]
            .iter()
            .zip(&rates[kind][1])
            .map(|(on, off)| on / off)
            .collect()
    };
    let range = |v: &[f64]| {
        [
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        ]
    };
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let (ri, rt) = (ratios(0), ratios(1));
    Ok(IntervalsCostReport {
        cell: b.cell.name(),
        hidden: b.hidden,
        streams: b.streams,
        rounds,
        infer_ratio: round3(median(&ri)),
        infer_ratio_range: range(&ri).map(round3),
        infer_ratio_best: round3(range(&rates[0][0])[1] / range(&rates[0][1])[1]),
        train_ratio: round3(median(&rt)),
        train_ratio_range: range(&rt).map(round3),
        infer_events_per_sec: [median(&rates[0][0]).round(), median(&rates[0][1]).round()],
        train_events_per_sec: [median(&rates[1][0]).round(), median(&rates[1][1]).round()],
        state_bytes_per_stream: [
            train[0].state_bytes_per_stream(),
            train[1].state_bytes_per_stream(),
        ],
    })
}

/// Settings of `recur bench pipeline`.
#[derive(Clone, Debug)]
pub struct PipelineBench {
    /// Bootstrap servers, or `embedded` for the in-process mock cluster.
    pub brokers: String,
    /// Events in the throughput phase.
    pub events: u64,
    /// Streams the events are spread over.
    pub streams: usize,
    /// Input partitions (one worker thread each).
    pub partitions: i32,
    /// The stage's configuration (model, windows, properties).
    pub config: recur::config::Config,
}

/// What `recur bench pipeline --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineBenchReport {
    /// Brokers measured.
    pub brokers: String,
    /// Events in the throughput phase.
    pub events: u64,
    /// Streams.
    pub streams: usize,
    /// Input partitions.
    pub partitions: i32,
    /// Cell, hidden size, update interval, objective and learning switch of the model.
    pub model: String,
    /// Input topic to predictions acknowledged, over a backlog of `events`.
    pub events_per_sec: f64,
    /// A plain consumer reading the same backlog from the same broker.
    pub raw_consume_events_per_sec: f64,
    /// `events_per_sec / raw_consume_events_per_sec`.
    pub fraction_of_raw: f64,
    /// Event time to prediction produced, median, at half the measured throughput.
    pub latency_p50_ms: f64,
    /// The same, 99th percentile.
    pub latency_p99_ms: f64,
    /// Events timed in the latency phase.
    pub latency_events: u64,
}

/// Runs the end-to-end benchmark: backlog throughput, raw consume rate, paced latency.
pub fn pipeline(b: &PipelineBench) -> anyhow::Result<PipelineBenchReport> {
    use anyhow::Context;

    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let mut cfg = pipeline_config(b, &tag);
    let mock = if b.brokers == "embedded" {
        let m = rdkafka::mocking::MockCluster::new(1).context("starting the mock cluster")?;
        Some(m)
    } else {
        None
    };
    let brokers = mock
        .as_ref()
        .map_or(b.brokers.clone(), |m| m.bootstrap_servers());
    cfg.kafka.brokers = brokers.clone();
    let changelog = cfg.changelog_topic();
    let topics = [
        (cfg.kafka.input_topic.as_str(), b.partitions),
        (cfg.kafka.output_topic.as_str(), b.partitions),
        (cfg.kafka.dlq_topic.as_str(), 1),
        (changelog.as_str(), b.partitions),
    ];
    create_topics(mock.as_ref(), &brokers, &topics)?;

    produce_backlog(b, &brokers, &cfg.kafka.input_topic)?;
    check_backlog_kept(b, &brokers, &cfg.kafka.input_topic)?;
    let raw_rate = raw_consume_rate(b, &brokers, &tag, &cfg.kafka.input_topic)?;
    cfg.metrics.addr = free_addr()?;
    let (e2e, lat_events) = run_stage_timed(b, &cfg, &brokers)?;
    let lat = output_latencies(b, &brokers, &tag, &cfg.kafka.output_topic, lat_events)?;
    Ok(pipeline_report(b, &cfg.model, e2e, raw_rate, &lat))
}

/// The stage's configuration with the run's own topics and group, named after `tag`.
fn pipeline_config(b: &PipelineBench, tag: &str) -> Config {
    let mut cfg = b.config.clone();
    cfg.kafka.input_topic = format!("{tag}-in");
    cfg.kafka.output_topic = format!("{tag}-out");
    cfg.kafka.dlq_topic = format!("{tag}-dlq");
    cfg.kafka.group = tag.to_string();
    cfg
}

/// Writes the backlog: `b.events` synthetic events over `b.streams` streams, unpaced.
fn produce_backlog(b: &PipelineBench, brokers: &str, input_topic: &str) -> anyhow::Result<()> {
    use std::sync::atomic::AtomicBool;

    eprintln!("bench: producing {} events to {}", b.events, input_topic);
    let stop = AtomicBool::new(false);
    recur::tools::produce_synthetic(brokers, input_topic, b.streams, 0, Some(b.events), &stop)?;
    Ok(())
}

/// Fails, saying why, when the broker no longer holds the whole backlog:
/// every later phase counts on reading all of it (librdkafka's mock cluster
/// drops a partition's oldest records past about 5 MB).
fn check_backlog_kept(b: &PipelineBench, brokers: &str, input_topic: &str) -> anyhow::Result<()> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::BaseConsumer;

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let (mut dropped, mut held) = (0i64, 0i64);
    for (low, high) in watermarks(&c, input_topic, b.partitions)? {
        dropped += low;
        held += high - low;
    }
    if dropped > 0 {
        anyhow::bail!(
            "the broker holds {held} of the {} events produced to {input_topic}: it dropped the \
             oldest {dropped} (the embedded mock cluster keeps about 5 MB per partition); use \
             fewer --events, more --partitions, or a real broker with --brokers",
            b.events
        );
    }
    Ok(())
}

/// `(low, high)` watermarks of partitions `0..partitions` of `topic`.
fn watermarks<C: rdkafka::consumer::Consumer>(
    c: &C,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| Ok(c.fetch_watermarks(topic, p, std::time::Duration::from_secs(10))?))
        .collect()
}

/// Events per second a plain consumer reads the backlog at, from the same broker.
fn raw_consume_rate(
    b: &PipelineBench,
    brokers: &str,
    tag: &str,
    input_topic: &str,
) -> anyhow::Result<f64> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    // The stage's own consumer settings, so the two rates compare like with like.
    let mut raw = ClientConfig::new();
    for (k, v) in recur::kafka::CONSUMER_DEFAULTS {
        raw.set(k, v);
    }
    let raw: BaseConsumer = raw
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{tag}-raw"))
        // The stage reads statistics for its readiness; this consumer has no use for them.
        .set("statistics.interval.ms", "0")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..b.partitions {
        tpl.add_partition_offset(input_topic, p, Offset::Beginning)?;
    }
    raw.assign(&tpl)?;
    // Timed from the first message, as the stage is from its first prediction,
    // so neither rate counts connection and fetch start-up.
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while n < b.events && Instant::now() < deadline {
        if let Some(Ok(m)) = raw.poll(std::time::Duration::from_millis(100)) {
            std::hint::black_box(m.payload());
            first.get_or_insert_with(Instant::now);
            n += 1;
        }
    }
    let raw_rate = match first {
        Some(t0) if n > 1 => (n - 1) as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        _ => 0.0,
    };
    drop(raw);
    eprintln!("bench: raw consume {raw_rate:.0} events/s");
    Ok(raw_rate)
}

/// The sum of a metric's samples on the stage's `/metrics` at `addr` (0 if unreachable).
fn metric_sum(addr: &str, name: &str) -> f64 {
    let text = http_get(addr, "/metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `recur_predictions_total` until it reaches `target` or `limit` has passed.
///
/// Returns when and at what count the first prediction was seen, the count
/// reached, and when polling stopped, so callers can time from the first
/// prediction to the last and not count group-join time.
fn wait_for_predictions(
    addr: &str,
    target: f64,
    limit: std::time::Duration,
) -> (Option<(Instant, f64)>, f64, Instant) {
    let deadline = Instant::now() + limit;
    let mut first: Option<(Instant, f64)> = None;
    loop {
        let c = metric_sum(addr, "recur_predictions_total");
        if first.is_none() && c > 0.0 {
            first = Some((Instant::now(), c));
        }
        if c >= target || Instant::now() > deadline {
            return (first, c, Instant::now());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the stage over the backlog and times it, then feeds the paced latency
/// events and stops the stage once they have their predictions.
///
/// Returns the end-to-end rate (events/s) and the number of latency events fed.
fn run_stage_timed(b: &PipelineBench, cfg: &Config, brokers: &str) -> anyhow::Result<(f64, u64)> {
    use std::sync::Arc;

    let addr = cfg.metrics.addr.clone();
    let done = Arc::new(tokio::sync::Notify::new());
    let d = done.clone();
    let run_cfg = cfg.clone();
    let stage = std::thread::spawn(move || {
        recur::stage::run(
            run_cfg,
            async move { d.notified().await },
            recur::stage::LiveLine::Quiet,
        )
    });
    // Time from the first prediction to the last, so group-join time is not counted.
    let (first, reached, end) =
        wait_for_predictions(&addr, b.events as f64, std::time::Duration::from_secs(1800));
    let e2e = match first {
        Some((t0, c0)) if reached > c0 => (reached - c0) / (end - t0).as_secs_f64().max(1e-9),
        _ => 0.0,
    };
    eprintln!("bench: end to end {e2e:.0} events/s");

    let lat_events = feed_latency_events(b, brokers, &cfg.kafka.input_topic, &addr, e2e)?;
    done.notify_one();
    stage
        .join()
        .map_err(|_| anyhow::anyhow!("the stage panicked"))??;
    Ok((e2e, lat_events))
}

/// Feeds the latency phase at half the measured throughput `e2e`, with event
/// time = wall clock, and waits for its predictions; returns the events fed.
fn feed_latency_events(
    b: &PipelineBench,
    brokers: &str,
    input_topic: &str,
    addr: &str,
    e2e: f64,
) -> anyhow::Result<u64> {
    use std::sync::atomic::AtomicBool;

    let lat_events = (b.events / 10).clamp(1000, 100_000);
    let rate = ((e2e / 2.0) as u64).max(100);
    let lat_topic = input_topic.to_string();
    let lat_brokers = brokers.to_string();
    let feeder = std::thread::spawn(move || {
        let stop = AtomicBool::new(false);
        recur::tools::produce_latency(&lat_brokers, &lat_topic, 64, rate, lat_events, &stop)
    });
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the latency feeder panicked"))??;
    wait_for_predictions(
        addr,
        (b.events + lat_events) as f64,
        std::time::Duration::from_secs(600),
    );
    Ok(lat_events)
}

/// Reads the output topic back; returns the latencies (ms) of the latency
/// events, sorted: output CreateTime (set when the stage produced) minus event time.
fn output_latencies(
    b: &PipelineBench,
    brokers: &str,
    tag: &str,
    output_topic: &str,
    lat_events: u64,
) -> anyhow::Result<Vec<f64>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let out: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{tag}-lat"))
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..b.partitions {
        tpl.add_partition_offset(output_topic, p, Offset::Beginning)?;
    }
    out.assign(&tpl)?;
    // The stage has stopped: every prediction is in. Read each partition to
    // its end (a broker may already have dropped the oldest records, as the
    // mock cluster does past its retention, so counting to the number
    // produced could wait for records that are gone).
    let ends: Vec<i64> = watermarks(&out, output_topic, b.partitions)?
        .into_iter()
        .map(|(_, high)| high)
        .collect();
    let mut next: Vec<i64> = vec![0; ends.len()];
    let done = |next: &[i64]| next.iter().zip(&ends).all(|(n, e)| n >= e);
    let mut lat = Vec::with_capacity(lat_events as usize);
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while !done(&next) && Instant::now() < deadline {
        if let Some(Ok(m)) = out.poll(std::time::Duration::from_millis(100)) {
            if let Some(n) = next.get_mut(m.partition() as usize) {
                *n = m.offset() + 1;
            }
            if m.key().is_some_and(|k| k.starts_with(b"lat-")) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                if let (Some(ts), Some(made)) = (v["ts"].as_i64(), m.timestamp().to_millis()) {
                    lat.push((made - ts) as f64);
                }
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// The `q` quantile of `sorted` (nearest rank), NaN if it is empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }
}

/// The pipeline report from the measured rates and the sorted latencies `lat`.
fn pipeline_report(
    b: &PipelineBench,
    m: &ModelConfig,
    e2e: f64,
    raw_rate: f64,
    lat: &[f64],
) -> PipelineBenchReport {
    PipelineBenchReport {
        brokers: b.brokers.clone(),
        events: b.events,
        streams: b.streams,
        partitions: b.partitions,
        model: format!(
            "{} H={} update_every={} objective={:?} learning={:?}",
            m.cell.name(),
            m.hidden,
            m.update_every,
            m.objective,
            m.learning
        ),
        events_per_sec: e2e.round(),
        raw_consume_events_per_sec: raw_rate.round(),
        fraction_of_raw: (e2e / raw_rate * 1000.0).round() / 1000.0,
        latency_p50_ms: percentile(lat, 0.5),
        latency_p99_ms: percentile(lat, 0.99),
        latency_events: lat.len() as u64,
    }
}

/// Creates topics on the mock cluster (which has no CreateTopics) or through the admin API.
fn create_topics(
    mock: Option<&rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>>,
    brokers: &str,
    topics: &[(&str, i32)],
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    if let Some(m) = mock {
        for (t, p) in topics {
            m.create_topic(t, *p, 1)?;
        }
        return Ok(());
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
    let new: Vec<_> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// A unique prefix for a bench run's topics and groups.
fn run_tag(what: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("bench-{what}-{}-{secs}", std::process::id())
}

/// What `recur bench restore --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreBenchReport {
    /// Streams restored.
    pub streams: usize,
    /// Bytes of one stream record (default model: LSTM H=32, learning on).
    pub record_bytes: usize,
    /// Decoding the records of one partition into a learner, from memory.
    pub decode_seconds: f64,
    /// `streams / decode_seconds`.
    pub decode_states_per_sec: f64,
    /// The whole restore from the broker: read the changelog partition to its end, then decode.
    pub broker_seconds: Option<f64>,
    /// `streams / broker_seconds`.
    pub broker_states_per_sec: Option<f64>,
    /// Of `broker_seconds`, reading the changelog partition to its end.
    pub broker_read_seconds: Option<f64>,
    /// Changelog records read from the broker.
    pub broker_records: Option<u64>,
}

/// Times restoring `streams` stream states: from memory, and (with a broker) from a changelog topic.
pub fn restore(
    streams: usize,
    brokers: Option<&str>,
    cfg: &recur::config::Config,
) -> anyhow::Result<RestoreBenchReport> {
    use recur::model::Clock;
    use recur::state::{self, Checkpoints, Latest};
    let mut f = Forecaster::<f32>::new(cfg.model.clone()).map_err(anyhow::Error::msg)?;
    let cp = Checkpoints::new(0, None);
    eprintln!("bench: building {streams} streams (3 events each)");
    f.set_clock(Clock {
        ts_ms: 0,
        generation: cp.generation(),
    });
    let width = cfg.model.inputs;
    for step in 0..3 {
        for s in 0..streams {
            let v: Vec<f32> = (0..width)
                .map(|k| ((s * 7 + step * 3 + k) as f32 * 0.1).sin())
                .collect();
            f.observe(&format!("stream-{s}"), &v)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let plan = cp.plan(&f);
    let head = cp.head(&f, plan.seq, 3 * streams as i64);
    let mut latest = Latest::default();
    for (i, r) in plan
        .records
        .iter()
        .chain(std::iter::once(&head))
        .enumerate()
    {
        latest.insert(r.key.clone(), (i as i64, r.value.clone()));
    }
    let record_bytes = plan.records[0].value.as_ref().map_or(0, Vec::len);
    // Median of seven, from memory.
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let r = state::restore::<f32>(&cfg.model, 0, None, &latest)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            r.loaded == streams,
            "restored {} of {streams} streams",
            r.loaded
        );
    }
    times.sort_by(f64::total_cmp);
    let decode = times[times.len() / 2];
    eprintln!("bench: decode {:.0} states/s", streams as f64 / decode);

    let mut report = RestoreBenchReport {
        streams,
        record_bytes,
        decode_seconds: decode,
        decode_states_per_sec: (streams as f64 / decode).round(),
        broker_seconds: None,
        broker_states_per_sec: None,
        broker_read_seconds: None,
        broker_records: None,
    };
    let Some(brokers) = brokers else {
        return Ok(report);
    };
    anyhow::ensure!(
        brokers != "embedded",
        "the embedded mock cluster keeps ~5 MiB per partition, too little for this changelog: pass a real broker"
    );
    let topic = format!("{}-state", run_tag("restore"));
    create_topics(None, brokers, &[(topic.as_str(), 1)])?;
    let client = recur::kafka::client_config(brokers, cfg);
    let mut pc = client.clone();
    pc.set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4");
    let producer: recur::tools::ToolProducer =
        pc.create_with_context(recur::kafka::Logged::new(&pc))?;
    eprintln!(
        "bench: writing {} changelog records to {topic}",
        latest.len()
    );
    for r in plan.records.iter().chain(std::iter::once(&head)) {
        let mut rec = rdkafka::producer::BaseRecord::<[u8], [u8]>::to(&topic)
            .key(&r.key[..])
            .partition(0);
        if let Some(v) = &r.value {
            rec = rec.payload(&v[..]);
        }
        recur::tools::send_waiting(&producer, rec)?;
    }
    rdkafka::producer::Producer::flush(&producer, std::time::Duration::from_secs(120))?;
    let t = Instant::now();
    let (read, records) = state::changelog::read_partition(&client, &topic, 0)?;
    report.broker_read_seconds = Some(t.elapsed().as_secs_f64());
    let r = state::restore::<f32>(&cfg.model, 0, None, &read)?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        r.loaded == streams,
        "restored {} of {streams} streams",
        r.loaded
    );
    report.broker_seconds = Some(secs);
    report.broker_states_per_sec = Some((streams as f64 / secs).round());
    report.broker_records = Some(records);
    eprintln!(
        "bench: from the broker {:.0} states/s",
        streams as f64 / secs
    );
    Ok(report)
}

/// What `recur bench idle --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct IdleBenchReport {
    /// Streams, one event each.
    pub streams: u64,
    /// Event time between consecutive events, ms.
    pub step_ms: i64,
    /// The runs: without eviction, with `state.idle_ttl`, and with
    /// `state.max_streams` when one was given.
    pub runs: Vec<IdleRun>,
}

/// One stage run of the idle-stream bench.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRun {
    /// `state.idle_ttl` ("" = never evict).
    pub idle_ttl: String,
    /// `state.max_streams` (0 = no limit).
    pub max_streams: usize,
    /// `checkpoint.interval`.
    pub checkpoint_interval: String,
    /// Peak resident memory of the stage process (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory when every event had its prediction, MiB.
    pub final_rss_mib: f64,
    /// `recur_streams_active` at the end.
    pub streams_active: f64,
    /// `recur_streams_evicted_total` at the end.
    pub streams_evicted: f64,
    /// Seconds from start until every event had its prediction.
    pub seconds: f64,
}

/// Runs the stage as a child process over `streams` one-event streams, without
/// eviction, with `idle_ttl` and (when not 0) with `max_streams`, and reports
/// its memory.
pub fn idle(
    brokers: &str,
    streams: u64,
    step_ms: i64,
    idle_ttl: &str,
    max_streams: usize,
    interval: &str,
) -> anyhow::Result<IdleBenchReport> {
    anyhow::ensure!(
        brokers != "embedded",
        "the embedded mock cluster keeps ~5 MiB per partition, too little here: pass a real broker"
    );
    let tag = run_tag("idle");
    let input = format!("{tag}-in");
    create_topics(None, brokers, &[(input.as_str(), 4)])?;
    eprintln!("bench: producing {streams} one-event streams to {input}");
    let stop = std::sync::atomic::AtomicBool::new(false);
    recur::tools::produce_one_shot(brokers, &input, streams, step_ms, &stop)?;
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    let mut evictions = vec![("", 0), (idle_ttl, 0)];
    if max_streams > 0 {
        evictions.push(("", max_streams));
    }
    for (i, (ttl, max)) in evictions.into_iter().enumerate() {
        let group = format!("{tag}-{i}");
        let out = format!("{group}-out");
        let changelog = format!("{group}-state");
        create_topics(
            None,
            brokers,
            &[
                (out.as_str(), 4),
                (changelog.as_str(), 4),
                (format!("{group}-dlq").as_str(), 1),
            ],
        )?;
        let addr = free_addr()?;
        let config = dir.join(format!("run-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\noutput_topic = \"{out}\"\ndlq_topic = \"{group}-dlq\"\ngroup = \"{group}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[metrics]\naddr = \"{addr}\"\n[checkpoint]\ninterval = \"{interval}\"\n[state]\nidle_ttl = \"{ttl}\"\nmax_streams = {max}\n"
            ),
        )?;
        eprintln!(
            "bench: stage run {} (idle_ttl = {ttl:?}, max_streams = {max})",
            i + 1
        );
        let start = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(["run", "--quiet", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let pid = child.id();
        let status = |field: &str| -> f64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with(field))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                })
                .map_or(0.0, |kb| kb / 1024.0)
        };
        let metric = |name: &str| -> f64 {
            http_get(&addr, "/metrics")
                .lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(1800);
        while metric("recur_predictions_total") < streams as f64 && Instant::now() < deadline {
            anyhow::ensure!(child.try_wait()?.is_none(), "the stage exited early");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let seconds = start.elapsed().as_secs_f64();
        // Let the next checkpoint run (it evicts what went idle meanwhile).
        std::thread::sleep(std::time::Duration::from_secs(12));
        let run = IdleRun {
            idle_ttl: ttl.to_string(),
            max_streams: max,
            checkpoint_interval: interval.to_string(),
            peak_rss_mib: status("VmHWM:").round(),
            final_rss_mib: status("VmRSS:").round(),
            streams_active: metric("recur_streams_active"),
            streams_evicted: metric("recur_streams_evicted_total"),
            seconds: (seconds * 10.0).round() / 10.0,
        };
        eprintln!("bench: {run:?}");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        child.wait()?;
        runs.push(run);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(IdleBenchReport {
        streams,
        step_ms,
        runs,
    })
}

fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let mut text = String::new();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
        return String::new();
    }
    text
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// End to end: input topic to predictions acknowledged, against the raw consume rate.
    Pipeline {
        /// Bootstrap servers, or `embedded`.
        #[arg(long, default_value = "embedded")]
        brokers: String,
        /// Events in the backlog (the embedded cluster keeps about 5 MB per
        /// partition, some 60,000 events: more are refused there).
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Streams.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Input partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Config file for the stage (model, windows, librdkafka properties).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events per stream between weight updates (overrides the config).
        #[arg(long)]
        update_every: Option<usize>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Restore speed: stream states decoded per second, from memory and from a changelog topic.
    Restore {
        /// Streams to restore.
        #[arg(long, default_value_t = 100_000)]
        streams: usize,
        /// A broker to restore through (write a changelog, then time reading it back).
        #[arg(long)]
        brokers: Option<String>,
        /// Config file (model settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Memory with idle streams: each stream sends one event, then goes quiet;
    /// the stage runs as a child process, without eviction, with
    /// state.idle_ttl and with state.max_streams.
    Idle {
        /// Bootstrap servers of a real broker.
        #[arg(long)]
        brokers: String,
        /// Streams (one event each).
        #[arg(long, default_value_t = 1_000_000)]
        streams: u64,
        /// Event time between consecutive events, ms.
        #[arg(long, default_value_t = 1)]
        step_ms: i64,
        /// state.idle_ttl of the second run.
        #[arg(long, default_value = "60s")]
        idle_ttl: String,
        /// state.max_streams of a third run (per partition; 0: no third run).
        #[arg(long, default_value_t = 0)]
        max_streams: usize,
        /// checkpoint.interval of both runs.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Model throughput: inference and training events per second, state size.
    Model {
        /// Recurrent cell: lstm, gru, rnn or rnn_relu.
        #[arg(long, default_value = "lstm")]
        cell: CellKind,
        /// Hidden units.
        #[arg(long, default_value_t = 32)]
        hidden: usize,
        /// Values per event.
        #[arg(long, default_value_t = 1)]
        inputs: usize,
        /// TBPTT window.
        #[arg(long, default_value_t = 16)]
        tbptt: usize,
        /// Streams the events are interleaved over.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Events timed for inference.
        #[arg(long, default_value_t = 4_000_000)]
        infer_events: usize,
        /// Events timed for training.
        #[arg(long, default_value_t = 300_000)]
        train_events: usize,
        /// Forecast without intervals and anomaly scores (`model.intervals =
        /// []`): what they cost is the ratio to a run without this flag.
        #[arg(long, conflicts_with = "compare_intervals")]
        no_intervals: bool,
        /// Time the benchmark with intervals and without in alternating
        /// rounds in one run, and print the ratios (what intervals cost).
        #[arg(long)]
        compare_intervals: bool,
        /// Rounds of `--compare-intervals` (the events are shared among them).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Print one JSON line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a report as one JSON line, or pretty-printed.
fn print_report(report: &(impl Serialize + std::fmt::Debug), json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report:#?}");
    }
    Ok(())
}

/// Runs one `recur bench` measurement and prints its report.
pub fn run(what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Pipeline {
            brokers,
            events,
            streams,
            partitions,
            config,
            update_every,
            json,
        } => {
            let mut cfg =
                Config::load_layered(config.as_deref(), std::env::vars(), toml::Table::new())?;
            if let Some(u) = update_every {
                cfg.model.update_every = u;
            }
            let report = pipeline(&PipelineBench {
                brokers,
                events,
                streams,
                partitions,
                config: cfg,
            })?;
            print_report(&report, json)?;
        }
        BenchCommand::Restore {
            streams,
            brokers,
            config,
            json,
        } => {
            anyhow::ensure!(streams > 0, "--streams must be at least 1");
            let cfg =
                Config::load_layered(config.as_deref(), std::env::vars(), toml::Table::new())?;
            let r = restore(streams, brokers.as_deref(), &cfg)?;
            print_report(&r, json)?;
        }
        BenchCommand::Idle {
            brokers,
            streams,
            step_ms,
            idle_ttl,
            max_streams,
            interval,
            json,
        } => {
            anyhow::ensure!(streams > 0, "--streams must be at least 1");
            let r = idle(
                &brokers,
                streams,
                step_ms,
                &idle_ttl,
                max_streams,
                &interval,
            )?;
            print_report(&r, json)?;
        }
        BenchCommand::Model {
            cell,
            hidden,
            inputs,
            tbptt,
            streams,
            infer_events,
            train_events,
            no_intervals,
            compare_intervals,
            rounds,
            json,
        } => {
            anyhow::ensure!(streams > 0, "--streams must be at least 1");
            let bench = ModelBench {
                cell,
                hidden,
                inputs,
                tbptt,
                streams,
                infer_events,
                train_events,
                intervals: !no_intervals,
            };
            if compare_intervals {
                let r = intervals_cost(&bench, rounds as usize).map_err(anyhow::Error::msg)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{} H={} streams={}, with intervals against without, {} rounds:\n  inference  {:.3} (rounds {:.3}-{:.3}, fastest rounds {:.3}; {:.0} / {:.0} events/s)\n  training   {:.3} (rounds {:.3}-{:.3}; {:.0} / {:.0} events/s)\n  state      {} / {} bytes/stream",
                        r.cell,
                        r.hidden,
                        r.streams,
                        r.rounds,
                        r.infer_ratio,
                        r.infer_ratio_range[0],
                        r.infer_ratio_range[1],
                        r.infer_ratio_best,
                        r.infer_events_per_sec[0],
                        r.infer_events_per_sec[1],
                        r.train_ratio,
                        r.train_ratio_range[0],
                        r.train_ratio_range[1],
                        r.train_events_per_sec[0],
                        r.train_events_per_sec[1],
                        r.state_bytes_per_stream[0],
                        r.state_bytes_per_stream[1],
                    );
                }
                return Ok(());
            }
            let report = model(&bench).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} H={} D={} T={} streams={} ({}):\n  inference  {:>12.0} events/s\n  training   {:>12.0} events/s (TBPTT({}) + Adam on every event)\n  state      {:>12} bytes/stream (shared weights)",
                    report.cell,
                    hidden,
                    inputs,
                    tbptt,
                    streams,
                    report.dtype,
                    report.infer_events_per_sec,
                    report.train_events_per_sec,
                    tbptt,
                    report.state_bytes_per_stream
                );
            }
        }
    }
    Ok(())
}
