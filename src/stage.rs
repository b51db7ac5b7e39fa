//! `recur run`: wires source → workers → sink, the metrics endpoint and, with
//! `brokers = "embedded"`, an in-process demo cluster fed with synthetic data.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::config::{Config, Delivery, Every};
use crate::offsets::{CommitPolicy, Offsets};
use crate::sink::Sink;
use crate::source::Source;
use crate::state::HotSwap;
use crate::state::changelog;
use crate::telemetry::{self, Metrics};
use crate::worker::{StateSetup, WorkerSetup};

/// The client configuration shared by consumer and producer: brokers and pass-through properties.
pub fn client_config(brokers: &str, cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// The embedded demo: a mock cluster with the topics, and the synthetic feeder.
pub struct Embedded {
    cluster: MockCluster<'static, DefaultProducerContext>,
    feeder: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Embedded {
    /// Starts a 1-broker mock cluster with the stage's topics and feeds the input topic.
    pub fn start(cfg: &Config) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(1).context("starting the embedded mock cluster")?;
        let k = &cfg.kafka;
        cluster.create_topic(&k.input_topic, cfg.embedded.partitions, 1)?;
        cluster.create_topic(&k.output_topic, cfg.embedded.partitions, 1)?;
        cluster.create_topic(&k.dlq_topic, 1, 1)?;
        if cfg.checkpoint.every().map_err(anyhow::Error::msg)? != Every::Off {
            cluster.create_topic(&cfg.changelog_topic(), cfg.embedded.partitions, 1)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let brokers = cluster.bootstrap_servers();
        let (topic, streams, rate, stop2) = (
            k.input_topic.clone(),
            cfg.embedded.streams,
            cfg.embedded.rate,
            stop.clone(),
        );
        let feeder = std::thread::Builder::new()
            .name("recur-feeder".into())
            .spawn(move || {
                if let Err(e) =
                    crate::tools::produce_synthetic(&brokers, &topic, streams, rate, None, &stop2)
                {
                    eprintln!("recur: synthetic feeder stopped: {e:#}");
                }
            })
            .context("spawning the feeder")?;
        Ok(Embedded {
            cluster,
            feeder: Some(feeder),
            stop,
        })
    }

    /// The mock cluster's bootstrap servers.
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Stops feeding.
    pub fn stop_feeding(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.feeder.take() {
            let _ = t.join();
        }
    }
}

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
    /// Every `embedded.report_every_s` seconds on stderr.
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
    let init = load_init(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = Metrics::new();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cfg.metrics.addr))
        .with_context(|| format!("metrics.addr = {}: cannot listen", cfg.metrics.addr))?;
    rt.spawn(telemetry::serve(listener, metrics.clone()));

    let mut embedded = if cfg.kafka.is_embedded() {
        Some(Embedded::start(&cfg)?)
    } else {
        None
    };
    let brokers = embedded
        .as_ref()
        .map_or(cfg.kafka.brokers.clone(), Embedded::brokers);
    eprintln!(
        "recur: {} -> {} (dead letters: {}), group {}, brokers {}{}, metrics on http://{}/metrics",
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

    let every = cfg.checkpoint.every().map_err(anyhow::Error::msg)?;
    let idle_ttl_ms = cfg.idle_ttl_ms().map_err(anyhow::Error::msg)?;
    let exactly_once = cfg.kafka.delivery == Delivery::ExactlyOnce;
    let policy = match (every, exactly_once) {
        (_, true) => CommitPolicy::Never,
        (Every::Off, false) => CommitPolicy::Acknowledged,
        (_, false) => CommitPolicy::Checkpointed,
    };
    if every != Every::Off {
        let client = client_config(&brokers, &cfg);
        let topic = &cfg.kafka.input_topic;
        let n = changelog::partition_count(&client, topic)?.with_context(|| {
            format!("kafka.input_topic = {topic:?} does not exist on {brokers}: create it first (its partition count sizes the changelog)")
        })?;
        changelog::ensure_topic(&client, &cfg.changelog_topic(), n)?;
    }
    if !cfg.checkpoint.dir.is_empty() {
        std::fs::create_dir_all(&cfg.checkpoint.dir)
            .with_context(|| format!("checkpoint.dir = {:?}: cannot create", cfg.checkpoint.dir))?;
    }
    let swap = Arc::new(HotSwap::default());
    let offsets = Arc::new(Offsets::new(policy));
    let sink = Arc::new(Sink::new(
        client_config(&brokers, &cfg),
        offsets.clone(),
        metrics.clone(),
    )?);
    let setup = {
        let (cfg, sink, metrics, offsets, swap, brokers) = (
            cfg.clone(),
            sink.clone(),
            metrics.clone(),
            offsets.clone(),
            swap.clone(),
            brokers.clone(),
        );
        move |partition: i32, group: Option<rdkafka::consumer::ConsumerGroupMetadata>| {
            let sink = if exactly_once {
                let id = format!("{}-{}-{partition}", cfg.kafka.group, cfg.kafka.input_topic);
                Arc::new(
                    Sink::transactional(
                        client_config(&brokers, &cfg),
                        &id,
                        offsets.clone(),
                        metrics.clone(),
                    )
                    .map_err(|e| format!("transactional producer {id}: {e}"))?,
                )
            } else {
                sink.clone()
            };
            let state = match every {
                Every::Off => None,
                _ => Some(StateSetup {
                    changelog: cfg.changelog_topic(),
                    client: client_config(&brokers, &cfg),
                    every,
                    idle_ttl_ms,
                    dir: (!cfg.checkpoint.dir.is_empty())
                        .then(|| std::path::PathBuf::from(&cfg.checkpoint.dir)),
                    transaction: if exactly_once {
                        Some(Arc::new(
                            group.ok_or("exactly_once needs the consumer group's metadata")?,
                        ))
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
                decode: cfg.decode_config(),
                model: cfg.model.clone(),
                max_events: cfg.window.max_events,
                linger: Duration::from_millis(cfg.window.linger_ms),
                sink,
                metrics: metrics.clone(),
                offsets: offsets.clone(),
                init: init.clone(),
                state,
                swap: swap.clone(),
            })
        }
    };
    let mut consumer_cfg = client_config(&brokers, &cfg);
    consumer_cfg.set("group.id", &cfg.kafka.group);
    if exactly_once && consumer_cfg.get("isolation.level").is_none() {
        consumer_cfg.set("isolation.level", "read_committed");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = if cfg.state.watch.is_empty() {
        None
    } else {
        Some(watch(&cfg, swap, stop.clone())?)
    };
    let source = Source::new(
        consumer_cfg,
        &cfg.kafka.input_topic,
        Box::new(setup),
        offsets,
        sink,
        metrics.clone(),
    )?;

    let source_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("recur-source".into())
            .spawn(move || source.run(&stop))?
    };

    // Wait for the shutdown signal, printing the live line meanwhile.
    let every = Duration::from_secs(cfg.embedded.report_every_s.max(1));
    let failed = metrics.clone();
    rt.block_on(async {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut last = metrics.events.get();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if failed.failed() {
                        break;
                    }
                    continue;
                }
                _ = tick.tick() => {
                    let now = metrics.events.get();
                    if live == LiveLine::Print {
                        eprintln!(
                            "recur: {:>8.0} events/s  online MSE {:.4} vs naive {:.4}  ({} predictions, {} dead letters, {} partitions)",
                            (now - last) as f64 / every.as_secs_f64(),
                            metrics.online_mse.get(),
                            metrics.naive_mse.get(),
                            metrics.predictions.get(),
                            dead_letters(&metrics),
                            metrics.partitions_assigned.get(),
                        );
                    }
                    last = now;
                }
            }
        }
    });
    eprintln!("recur: shutting down: draining windows, delivering, committing");
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
    if let Some(e) = metrics.fatal() {
        anyhow::bail!("stopped: {e}");
    }
    let report = RunReport {
        events: metrics.events.get(),
        predictions: metrics.predictions.get(),
        dead_letters: dead_letters(&metrics),
    };
    eprintln!(
        "recur: stopped after {} events, {} predictions, {} dead letters",
        report.events, report.predictions, report.dead_letters
    );
    drop(embedded);
    Ok(report)
}

/// Watches `state.watch`: each time the file changes, checks it fits the
/// model and publishes it to every partition (hot swap).
fn watch(
    cfg: &Config,
    swap: Arc<HotSwap>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let path = std::path::PathBuf::from(&cfg.state.watch);
    let model = cfg.model.clone();
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // The file as it is at start is not a swap: `state.init` is for that.
    let mut seen = stamp(&path);
    eprintln!("recur: watching {} for new weights", path.display());
    Ok(std::thread::Builder::new()
        .name("recur-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = stamp(&path);
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                let checked = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| {
                        let mut probe = crate::model::Forecaster::<f32>::new(model.clone())
                            .map_err(anyhow::Error::msg)?;
                        crate::model::checkpoint::Reader::new(&bytes)
                            .and_then(|r| probe.load_weights(&r))?;
                        Ok((bytes, probe.shared().updates))
                    });
                match checked {
                    Ok((bytes, version)) => {
                        eprintln!(
                            "recur: state.watch: {} changed: loading it (model version {version}) into every partition",
                            path.display()
                        );
                        swap.publish(bytes);
                    }
                    Err(e) => eprintln!(
                        "recur: state.watch: {} changed but was not loaded: {e:#}",
                        path.display()
                    ),
                }
            }
        })?)
}

/// Reads and checks `state.init`: the bytes every partition's learner starts from.
fn load_init(cfg: &Config) -> anyhow::Result<Option<Arc<Vec<u8>>>> {
    if cfg.state.init.is_empty() {
        return Ok(None);
    }
    let path = &cfg.state.init;
    let bytes =
        std::fs::read(path).with_context(|| format!("state.init = {path:?}: cannot read"))?;
    let mut probe =
        crate::model::Forecaster::<f32>::new(cfg.model.clone()).map_err(anyhow::Error::msg)?;
    crate::model::checkpoint::Reader::new(&bytes)
        .and_then(|r| probe.load_weights(&r))
        .with_context(|| format!("state.init = {path:?} does not fit the [model] settings"))?;
    eprintln!(
        "recur: every partition starts from the weights in {path} (model version {})",
        probe.shared().updates
    );
    Ok(Some(Arc::new(bytes)))
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
