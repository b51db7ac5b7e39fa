//! The changelog topic on the broker: created compacted with one partition per
//! input partition, read back on assignment, and fetched from by offset when
//! an evicted stream returns.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Latest;

/// Why the changelog could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    /// A Kafka call failed.
    #[error("changelog {topic}: {source}")]
    Kafka {
        /// The changelog topic.
        topic: String,
        /// The cause.
        source: KafkaError,
    },
    /// The topic exists but cannot serve as this stage's changelog.
    #[error("changelog {topic}: {reason}")]
    Unfit {
        /// The changelog topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading did not reach the end of the partition in time.
    #[error("changelog {topic} partition {partition}: no end after {secs} s")]
    Timeout {
        /// The changelog topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Seconds waited.
        secs: u64,
    },
}

/// How long reading a changelog partition may take before it is an error.
const READ_LIMIT: Duration = Duration::from_secs(300);

/// Partitions of `topic`, from the cluster's metadata (`None` if it does not exist).
pub fn partition_count(
    config: &ClientConfig,
    topic: &str,
) -> Result<Option<usize>, ChangelogError> {
    let kafka = |source| ChangelogError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let c = crate::kafka::consumer(config).map_err(kafka)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0))
}

/// Creates the changelog (compacted, `partitions` partitions, `replication`
/// replicas, -1 for the broker's default) unless it exists; an existing one
/// must have at least `partitions` partitions.
pub fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: usize,
    replication: i32,
) -> Result<(), ChangelogError> {
    let kafka = |source| ChangelogError::Kafka {
        topic: topic.to_string(),
        source,
    };
    if partition_count(config, topic)?.is_none() {
        let admin: AdminClient<crate::kafka::Logged> = config
            .create_with_context(crate::kafka::Logged::new(config))
            .map_err(kafka)?;
        let new = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(replication),
        )
        .set("cleanup.policy", "compact");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ChangelogError::Unfit {
                topic: topic.to_string(),
                reason: format!("cannot start a runtime for the admin call: {e}"),
            })?;
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let created = rt.block_on(admin.create_topics(&[new], &opts)).map_err(|e| {
            ChangelogError::Unfit {
                topic: topic.to_string(),
                reason: format!(
                    "does not exist and could not be created ({e}): create it (cleanup.policy=compact, {partitions} partitions) or set checkpoint.interval = \"off\""
                ),
            }
        })?;
        for r in created {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(kafka(KafkaError::AdminOp(code))),
            }
        }
        // Metadata takes a moment to show a new topic.
        let deadline = Instant::now() + Duration::from_secs(10);
        while partition_count(config, topic)?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    match partition_count(config, topic)? {
        Some(n) if n >= partitions => Ok(()),
        Some(n) => Err(ChangelogError::Unfit {
            topic: topic.to_string(),
            reason: format!(
                "has {n} partitions, the input topic {partitions}: state of input partition p lives in changelog partition p"
            ),
        }),
        None => Err(ChangelogError::Unfit {
            topic: topic.to_string(),
            reason: "was created but does not show up in the metadata".into(),
        }),
    }
}

/// An assign-only consumer of the changelog (no group, nothing committed).
fn reader(config: &ClientConfig, topic: &str) -> Result<crate::kafka::Consumer, ChangelogError> {
    let mut c = config.clone();
    c.set("group.id", "recur-changelog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    crate::kafka::fetch_defaults(&mut c);
    crate::kafka::consumer(&c).map_err(|source| ChangelogError::Kafka {
        topic: topic.to_string(),
        source,
    })
}

/// Reads partition `partition` of the changelog to its end, keeping the latest record per key.
pub fn read_partition(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
) -> Result<(Latest, u64), ChangelogError> {
    let kafka = |source| ChangelogError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let c = reader(config, topic)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(kafka)?;
    c.assign(&tpl).map_err(kafka)?;
    let mut latest = Latest::default();
    let mut records = 0u64;
    let start = Instant::now();
    // Reading to the end (EOF) rather than to a listed end offset: some
    // brokers (tansu) do not answer ListOffsets with the log end.
    loop {
        if start.elapsed() > READ_LIMIT {
            return Err(ChangelogError::Timeout {
                topic: topic.to_string(),
                partition,
                secs: READ_LIMIT.as_secs(),
            });
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                let Some(key) = m.key() else { continue };
                let value = m.payload().map(<[u8]>::to_vec);
                match latest.get_mut(key) {
                    Some(slot) => *slot = (m.offset(), value),
                    None => {
                        latest.insert(key.to_vec(), (m.offset(), value));
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
            Some(Err(e)) if is_transient(&e) => {}
            Some(Err(e)) => return Err(kafka(e)),
            None => {}
        }
    }
    Ok((latest, records))
}

fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// Fetches single changelog records by offset (an evicted stream coming back).
pub struct Fetcher {
    consumer: crate::kafka::Consumer,
    topic: String,
    partition: i32,
}

impl Fetcher {
    /// A fetcher for one changelog partition.
    pub fn new(config: &ClientConfig, topic: &str, partition: i32) -> Result<Self, ChangelogError> {
        Ok(Fetcher {
            consumer: reader(config, topic)?,
            topic: topic.to_string(),
            partition,
        })
    }

    /// The key and value of the record at `offset`.
    pub fn fetch(&self, offset: i64) -> Result<(Vec<u8>, Option<Vec<u8>>), ChangelogError> {
        let kafka = |source| ChangelogError::Kafka {
            topic: self.topic.clone(),
            source,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .map_err(kafka)?;
        self.consumer.assign(&tpl).map_err(kafka)?;
        let start = Instant::now();
        while start.elapsed() < READ_LIMIT {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.offset() == offset => {
                    return Ok((
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                }
                // A compacted topic may have removed the record: the next one is not it.
                Some(Ok(m)) if m.offset() > offset => break,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) if !is_transient(&e) => return Err(kafka(e)),
                _ => {}
            }
        }
        Err(ChangelogError::Unfit {
            topic: self.topic.clone(),
            reason: format!(
                "partition {} has no record at offset {offset}",
                self.partition
            ),
        })
    }
}
