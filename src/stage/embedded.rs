//! The embedded demo (`brokers = "embedded"`): librdkafka's in-process mock
//! cluster with the stage's topics, fed with synthetic seasonal streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::config::{Config, Every};

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
                if let Err(e) = crate::tools::produce_synthetic_live(
                    &brokers, &topic, streams, rate, None, &stop2,
                ) {
                    tracing::warn!("synthetic feeder stopped: {e:#}");
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
