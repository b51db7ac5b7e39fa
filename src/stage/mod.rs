//! `recur run`: the stage. Data flows one way:
//!
//! ```text
//! source (consumer) -> feed (partition queue) -> worker: decode -> window -> model -> encode
//!   -> sink (producer) -> offsets (commit only what was delivered)
//! ```
//!
//! * [`source`]: the consumer: rebalances start and stop partition tasks; commits.
//! * [`feed`]: each partition's fetch queue, split off for its worker.
//! * [`setup`]: what a partition's worker gets when it is assigned.
//! * [`worker`]: one thread per partition running decode → window → model → encode.
//! * [`decode`], [`window`], [`encode`]: message bytes to events (or a dead-letter
//!   reason), Arrow windows, prediction JSON and dead-letter headers.
//! * [`sink`]: the producer and its delivery reports; [`offsets`]: what is safe to commit.
//! * [`checkpoint`]: the worker's side of the changelog protocol.
//! * [`swap`]: `state.init` and `state.watch` (hot swap).
//! * [`embedded`]: the demo's in-process mock cluster and synthetic feeder.

pub mod checkpoint;
pub mod decode;
pub mod embedded;
pub mod encode;
pub mod feed;
pub mod offsets;
mod setup;
pub mod sink;
pub mod source;
pub mod swap;
pub mod window;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, Delivery, Every};
use crate::health::Health;
use crate::kafka::client_config;
use crate::state::changelog;
use crate::telemetry::Metrics;
use embedded::Embedded;
use offsets::{CommitPolicy, Offsets};
use sink::Sink;
use source::Source;
use swap::HotSwap;

/// What a finished run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Good events processed.
    pub events: u64,
    /// Predictions acknowledged.
    pub predictions: u64,
    /// Dead letters acknowledged.
    pub dead_letters: u64,
}

/// Whether to print the live progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveLine {
    /// Every `embedded.report_every_s` seconds, as a log line.
    Print,
    /// Never.
    Quiet,
}

/// Runs the stage until `shutdown` resolves, then drains, commits and returns.
pub fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    live: LiveLine,
) -> anyhow::Result<RunReport> {
    let init = swap::load_init(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(
        cfg.run.broker_loss().map_err(anyhow::Error::msg)?,
    ));
    serve_http(&rt, &cfg, &metrics, &health)?;

    let mut embedded = match cfg.kafka.is_embedded() {
        true => Some(Embedded::start(&cfg)?),
        false => None,
    };
    let brokers = embedded
        .as_ref()
        .map_or(cfg.kafka.brokers.clone(), Embedded::brokers);
    announce(&cfg);
    let every = cfg.checkpoint.every().map_err(anyhow::Error::msg)?;
    let exactly_once = cfg.kafka.delivery == Delivery::ExactlyOnce;
    let policy = match (every, exactly_once) {
        (_, true) => CommitPolicy::Never,
        (Every::Off, false) => CommitPolicy::Acknowledged,
        (_, false) => CommitPolicy::Checkpointed,
    };
    let topic_id = prepare_state(&cfg, &brokers, every)?;
    let swap = Arc::new(HotSwap::default());
    let offsets = Arc::new(Offsets::new(policy));
    let sink = Arc::new(Sink::new(
        client_config(&brokers, &cfg),
        offsets.clone(),
        metrics.clone(),
        health.clone(),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = match cfg.state.watch.is_empty() {
        true => None,
        false => Some(swap::watch(&cfg, swap.clone(), stop.clone())?),
    };
    let mut consumer_cfg = client_config(&brokers, &cfg);
    consumer_cfg.set("group.id", &cfg.kafka.group);
    if exactly_once && consumer_cfg.get("isolation.level").is_none() {
        consumer_cfg.set("isolation.level", "read_committed");
    }
    let wiring = setup::Wiring {
        idle_ttl_ms: cfg.idle_ttl_ms().map_err(anyhow::Error::msg)?,
        cfg: cfg.clone(),
        brokers,
        sink: sink.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        offsets: offsets.clone(),
        swap,
        init,
        every,
        exactly_once,
        topic_id,
    };
    let source = Source::new(
        consumer_cfg,
        &cfg.kafka.input_topic,
        Box::new(move |p, group| wiring.task(p, group)),
        offsets,
        sink,
        metrics.clone(),
        health.clone(),
    )?;
    let source_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("recur-source".into())
            .spawn(move || source.run(&stop))?
    };

    let every = Duration::from_secs(cfg.embedded.report_every_s.max(1));
    rt.block_on(wait(shutdown, &metrics, &health, every, live));
    tracing::info!("shutting down: draining windows, delivering, committing");
    // Held until this function returns: a finished shutdown disarms it.
    let _watchdog = cfg
        .run
        .shutdown_timeout()
        .map_err(anyhow::Error::msg)?
        .map(watchdog);
    if let Some(e) = embedded.as_mut() {
        e.stop_feeding();
    }
    stop.store(true, Ordering::Relaxed);
    source_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the source thread panicked"))?;
    if let Some(w) = watcher {
        let _ = w.join();
    }
    if let Some(e) = health.fatal() {
        anyhow::bail!("stopped: {e}");
    }
    let report = RunReport {
        events: metrics.events.get(),
        predictions: metrics.predictions.get(),
        dead_letters: dead_letters(&metrics),
    };
    tracing::info!(
        "stopped after {} events, {} predictions, {} dead letters",
        report.events,
        report.predictions,
        report.dead_letters
    );
    drop(embedded);
    Ok(report)
}

/// Listens on `metrics.addr` and serves the endpoint on `rt` until it is dropped.
fn serve_http(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> anyhow::Result<()> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cfg.metrics.addr))
        .with_context(|| format!("metrics.addr = {}: cannot listen", cfg.metrics.addr))?;
    rt.spawn(crate::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
    ));
    Ok(())
}

/// Ends the process with status 1 if the shutdown is still running after
/// `bound` (e.g. acknowledgements that never come during an output outage).
/// Dropping the returned sender (the shutdown finished) disarms it.
fn watchdog(bound: Duration) -> std::sync::mpsc::Sender<()> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("recur-shutdown-watchdog".into())
        .spawn(move || {
            if wait.recv_timeout(bound) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            tracing::error!(
                "shutdown still running after run.shutdown_timeout = {bound:?}: exiting; what was not committed is redone by the next owner of its partitions"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!("no shutdown watchdog ({e}): the shutdown is not bounded");
    }
    done
}

/// Logs what the stage connects: topics, group, brokers (secrets redacted), metrics.
fn announce(cfg: &Config) {
    tracing::info!(
        "{} -> {} (dead letters: {}), group {}, brokers {}{}, metrics on http://{}/metrics",
        cfg.kafka.input_topic,
        cfg.kafka.output_topic,
        cfg.kafka.dlq_topic,
        cfg.kafka.group,
        cfg.kafka.brokers,
        if cfg.kafka.properties.is_empty() {
            String::new()
        } else {
            format!(" {:?}", cfg.kafka.redacted_properties())
        },
        cfg.metrics.addr
    );
}

/// With checkpoints on: the changelog topic exists, partitioned as the input;
/// the local copy's directory exists. The input topic's id, if the broker has ids.
fn prepare_state(cfg: &Config, brokers: &str, every: Every) -> anyhow::Result<Option<String>> {
    let mut topic_id = None;
    if every != Every::Off {
        let client = client_config(brokers, cfg);
        let topic = &cfg.kafka.input_topic;
        let n = changelog::partition_count(&client, topic)?.with_context(|| {
            format!("kafka.input_topic = {topic:?} does not exist on {brokers}: create it first (its partition count sizes the changelog)")
        })?;
        changelog::ensure_topic(
            &client,
            &cfg.changelog_topic(),
            n,
            cfg.checkpoint.replication,
        )?;
        topic_id = crate::kafka::topic_id(&client, topic, Duration::from_secs(10));
        match &topic_id {
            Some(id) => tracing::info!("input topic {topic:?} has topic id {id}"),
            None => tracing::info!(
                "the broker gives no topic id for {topic:?}: a recreated topic of the same name cannot be told from the old one"
            ),
        }
    }
    if !cfg.checkpoint.dir.is_empty() {
        std::fs::create_dir_all(&cfg.checkpoint.dir)
            .with_context(|| format!("checkpoint.dir = {:?}: cannot create", cfg.checkpoint.dir))?;
    }
    Ok(topic_id)
}

/// Waits for `shutdown` or a fatal error, logging the live line every `every`.
async fn wait(
    shutdown: impl Future<Output = ()>,
    metrics: &Metrics,
    health: &Health,
    every: Duration,
    live: LiveLine,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = metrics.events.get();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if health.failed() {
                    break;
                }
            }
            _ = tick.tick() => {
                let now = metrics.events.get();
                if live == LiveLine::Print {
                    tracing::info!(
                        "{:>8.0} events/s  online MSE {:.4} vs naive {:.4}  ({} predictions, {} dead letters, {} partitions)",
                        (now - last) as f64 / every.as_secs_f64(),
                        metrics.online_mse.get(),
                        metrics.naive_mse.get(),
                        metrics.predictions.get(),
                        dead_letters(metrics),
                        metrics.partitions_assigned.get(),
                    );
                }
                last = now;
            }
        }
    }
}

fn dead_letters(m: &Metrics) -> u64 {
    m.registry
        .gather()
        .iter()
        .filter(|f| f.name() == "recur_dead_letters_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
