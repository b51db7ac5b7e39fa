//! Configuration: built-in defaults (`config/default.toml`) < a file <
//! `RECUR_*` environment variables < command-line flags.
//!
//! The defaults live in one place, the TOML file that documents every key; each
//! layer is merged over it table by table, then the result is checked against
//! the typed structs (unknown keys and bad values are errors that name the key).
//!
//! Environment variables name a key with double underscores between levels:
//! `RECUR_KAFKA__BROKERS=host:9092`, `RECUR_MODEL__OPTIMIZER__LR=0.01`. Under
//! `kafka.properties` single underscores become dots, so
//! `RECUR_KAFKA__PROPERTIES__SASL_USERNAME` sets `sasl.username`. Values are
//! read as TOML (`32`, `true`, `[1, 2]`) and otherwise as strings.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use crate::model::linear::LinearConfig;

/// The built-in defaults, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// recur's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The online forecaster.
    pub model: ModelConfig,
    /// File and topic replays.
    pub backtest: BacktestConfig,
    /// Brokers, topics, group and librdkafka properties.
    pub kafka: KafkaConfig,
    /// Input event format.
    pub events: EventsConfig,
    /// Arrow windows.
    pub window: WindowConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The embedded demo cluster.
    pub embedded: EmbeddedConfig,
    /// Where learner state comes from, idle eviction, hot swap.
    pub state: StateConfig,
    /// Checkpoints to the changelog topic.
    pub checkpoint: CheckpointConfig,
    /// Log lines.
    #[serde(default)]
    pub log: LogConfig,
    /// `recur run`'s process: the shutdown bound.
    #[serde(default)]
    pub run: RunConfig,
    /// Anomaly flags from the intervals' scores.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
}

/// `[anomaly]`: which events are flagged, and where flagged events also go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Events whose score is at or above this are flagged (`"anomaly":true`).
    pub threshold: f64,
    /// A topic that also receives every flagged prediction record; "" for none.
    pub topic: String,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            threshold: 0.999,
            topic: String::new(),
        }
    }
}

/// `[run]`: the stage process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Longest a shutdown (signal or fatal error) may take before the process
    /// exits with status 1 regardless; what was not committed is redone by
    /// the partitions' next owner. A duration or "off".
    pub shutdown_timeout: String,
    /// How long no broker may be reachable (by the consumer's statistics,
    /// every `statistics.interval.ms`) before `/readyz` answers 503.
    pub broker_loss: String,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            shutdown_timeout: "30s".into(),
            broker_loss: "30s".into(),
        }
    }
}

impl RunConfig {
    /// The broker-loss bound of `/readyz`.
    pub fn broker_loss(&self) -> Result<std::time::Duration, String> {
        parse_duration(self.broker_loss.trim())
            .map_err(|e| format!("run.broker_loss = {:?}: {e}", self.broker_loss))
    }

    /// The shutdown bound; `None` when "off".
    pub fn shutdown_timeout(&self) -> Result<Option<std::time::Duration>, String> {
        match self.shutdown_timeout.trim() {
            "off" => Ok(None),
            t => parse_duration(t).map(Some).map_err(|e| {
                format!(
                    "run.shutdown_timeout = {:?}: {e} (or \"off\")",
                    self.shutdown_timeout
                )
            }),
        }
    }
}

/// `[log]`: how log lines are written (`RUST_LOG` filters them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one object per line).
    pub format: crate::log::Format,
}

/// `[state]`: learner state at start, idle streams, hot swap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Checkpoint whose weights every partition starts from; empty starts fresh.
    pub init: String,
    /// Evict streams idle this long in event time (e.g. `"6h"`); empty never evicts.
    pub idle_ttl: String,
    /// Checkpoint file to watch and load into every partition when it changes; empty = off.
    pub watch: String,
    /// A changelog checkpoint that does not fit (another input topic, or a
    /// `[model]` that shapes the state differently): stop, or start afresh.
    #[serde(default)]
    pub on_mismatch: OnMismatch,
    /// Streams a partition keeps in memory at most (0: no limit); past it the
    /// least recently seen are evicted to the changelog at each checkpoint,
    /// and a checkpoint comes early at `max_streams * 9/8 + 64` streams.
    /// Without checkpoints they are dropped there instead.
    #[serde(default)]
    pub max_streams: usize,
}

/// `state.on_mismatch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Stop the stage with an error naming what differs.
    #[default]
    Fail,
    /// Start the partition afresh (its old state is deleted at the first checkpoint).
    Fresh,
}

/// A count or a duration in the config: `50000` (events) or `"10s"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CountOrText {
    /// A plain number.
    Count(u64),
    /// Text such as `"10s"`, `"500ms"`, `"off"`.
    Text(String),
}

/// When a partition checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Never: offsets are committed once outputs are acknowledged; state starts fresh.
    Off,
    /// After this many events of the partition.
    Events(u64),
    /// After this much time.
    Time(std::time::Duration),
}

/// `[checkpoint]`: each partition's state to the changelog topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// `"10s"`, `50000` (events) or `"off"`.
    pub interval: CountOrText,
    /// Changelog topic; empty means `<group>-state`.
    pub topic: String,
    /// Also write each partition's latest checkpoint here; empty = no.
    pub dir: String,
    /// Replication factor of a changelog recur creates; -1 = the broker's default.
    #[serde(default = "default_replication")]
    pub replication: i32,
}

fn default_replication() -> i32 {
    -1
}

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"6h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{text:?} is not a duration such as \"500ms\", \"10s\", \"5m\", \"6h\", \"7d\"")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "{text:?}: unknown unit {u:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{text:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

impl CheckpointConfig {
    /// The interval, checked.
    pub fn every(&self) -> Result<Every, String> {
        match &self.interval {
            CountOrText::Count(0) => {
                Err("checkpoint.interval = 0: use \"off\" to disable checkpoints".into())
            }
            CountOrText::Count(n) => Ok(Every::Events(*n)),
            CountOrText::Text(t) if t == "off" => Ok(Every::Off),
            CountOrText::Text(t) if t.trim().chars().all(|c| c.is_ascii_digit()) => t
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .map(Every::Events)
                .ok_or_else(|| format!("checkpoint.interval = {t:?}: must be at least 1")),
            CountOrText::Text(t) => parse_duration(t)
                .map(Every::Time)
                .map_err(|e| format!("checkpoint.interval = {e}")),
        }
    }
}

impl Config {
    /// The changelog topic: `checkpoint.topic`, or `<group>-state`.
    pub fn changelog_topic(&self) -> String {
        if self.checkpoint.topic.is_empty() {
            format!("{}-state", self.kafka.group)
        } else {
            self.checkpoint.topic.clone()
        }
    }

    /// `state.idle_ttl` in milliseconds, if set.
    pub fn idle_ttl_ms(&self) -> Result<Option<i64>, String> {
        if self.state.idle_ttl.is_empty() {
            return Ok(None);
        }
        parse_duration(&self.state.idle_ttl)
            .map(|d| Some(d.as_millis() as i64))
            .map_err(|e| format!("state.idle_ttl = {e}"))
    }
}

/// `[kafka]`: where events come from and go to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, or `embedded`.
    pub brokers: String,
    /// Topic of input events.
    pub input_topic: String,
    /// Topic of predictions.
    pub output_topic: String,
    /// Topic of dead letters.
    pub dlq_topic: String,
    /// Consumer group.
    pub group: String,
    /// At-least-once or exactly-once (transactional) output.
    pub delivery: Delivery,
    /// librdkafka properties passed through.
    pub properties: BTreeMap<String, String>,
}

/// How outputs and input offsets are committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets committed after outputs are acknowledged; a crash may repeat outputs.
    AtLeastOnce,
    /// Outputs, changelog records and offsets in one transaction per checkpoint.
    ExactlyOnce,
}

impl KafkaConfig {
    /// True for the in-process mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.brokers == "embedded"
    }

    /// `transaction.timeout.ms` of the producer (librdkafka's default, 60 s,
    /// when unset): the broker aborts a transaction open longer.
    pub fn transaction_timeout_ms(&self) -> u64 {
        self.properties
            .get("transaction.timeout.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(60_000)
    }

    /// Bytes of key and value a dead letter may carry: librdkafka's
    /// `message.max.bytes` (default 1,000,000) less 8 KiB for headers and
    /// record overhead.
    pub fn dead_letter_budget(&self) -> usize {
        let max = self
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1_000_000);
        max.saturating_sub(8 * 1024).max(1024)
    }

    /// The pass-through properties with secret values replaced, for logs.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let secret = is_secret(k);
                (
                    k.clone(),
                    if secret {
                        "<redacted>".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }
}

/// The `[backtest]` section of the configuration (defaults in `config/default.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestConfig {
    /// Rows `[0, warmup_rows)` pretrain the model before the online run.
    pub warmup_rows: usize,
    /// Passes over the warm-up rows.
    pub epochs: usize,
    /// Scored rows as `"A..B"`; empty scores every row after the warm-up.
    pub eval_rows: String,
    /// `auto`, `warmup`, `running` or `none`.
    pub normalize: String,
    /// Season (rows) of the seasonal-naive baseline; 0 infers one day of rows
    /// from the event times ([`crate::backtest::engine::infer_season`]).
    pub season: usize,
    /// Time column, `none` (row index) or `auto`.
    pub time_column: String,
    /// Value columns to read; empty reads every numeric column.
    pub columns: Vec<String>,
    /// Columns to forecast; empty forecasts every column read.
    pub targets: Vec<String>,
    /// Runs with seeds `seed, seed+1, …`.
    pub seeds: usize,
    /// Rows shown in the report's forecast chart: `"A..B"`, or empty for the last 500 scored rows.
    pub report_span: String,
    /// The linear baseline (`[backtest.linear]`).
    pub linear: LinearConfig,
}

/// Property names whose values are secrets (matched case-insensitively, anywhere in the name).
/// `sasl.oauthbearer.config` carries client secrets; `token` covers bearer tokens.
const SECRET_WORDS: [&str; 6] = [
    "password",
    "secret",
    "key",
    "token",
    "oauthbearer.config",
    "credential",
];

/// Whether a `kafka.properties` value is a secret (redacted in logs and `recur config`).
pub fn is_secret(property: &str) -> bool {
    let k = property.to_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `[events]`: the input JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Field holding the stream id.
    pub stream_field: String,
    /// Field holding the event time.
    pub ts_field: String,
    /// Field holding the values array.
    pub values_field: String,
    /// Field holding a single value.
    pub value_field: String,
    /// Largest accepted message in bytes.
    pub max_bytes: usize,
    /// Longest accepted stream id in bytes.
    #[serde(default = "default_max_stream_bytes")]
    pub max_stream_bytes: usize,
    /// How far past the wall clock an event time may lie (a duration), or "off".
    #[serde(default = "default_max_future")]
    pub max_future: String,
    /// An event whose time goes back before its stream's last one.
    #[serde(default)]
    pub late: Late,
}

/// `events.late`: what happens to an event older than its stream's last one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Late {
    /// Forecast it in arrival order, like any other (the stream's last time stays the newest).
    #[default]
    Accept,
    /// Send it to the dead-letter topic (reason `late`).
    DeadLetter,
}

fn default_max_stream_bytes() -> usize {
    256
}

fn default_max_future() -> String {
    "1d".into()
}

impl EventsConfig {
    /// `max_future` in ms; `None` when "off".
    pub fn max_future_ms(&self) -> Result<Option<i64>, String> {
        match self.max_future.trim() {
            "off" => Ok(None),
            text => parse_duration(text)
                .map(|d| Some(d.as_millis().min(i64::MAX as u128) as i64))
                .map_err(|e| {
                    format!(
                        "events.max_future = {:?}: {e} (or \"off\")",
                        self.max_future
                    )
                }),
        }
    }
}

/// `[window]`: when a partition's Arrow window is flushed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Events per window at most.
    pub max_events: usize,
    /// Milliseconds after a window's first event before it is flushed.
    pub linger_ms: u64,
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address of /metrics, /healthz and /readyz.
    pub addr: String,
}

/// `[embedded]`: the demo cluster behind `brokers = "embedded"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Synthetic streams.
    pub streams: usize,
    /// Events per second fed.
    pub rate: u64,
    /// Seconds between live progress lines.
    pub report_every_s: u64,
}

/// Turns `RECUR_A__B=v` variables into a table `{a: {b: v}}`; other variables are ignored.
pub fn env_table(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    let mut top = toml::Table::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("RECUR_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let mut path: Vec<String> = rest.split("__").map(|p| p.to_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Parse {
                origin: format!("environment variable {name}"),
                message: "empty key segment".into(),
            });
        }
        if path.len() == 3 && path[0] == "kafka" && path[1] == "properties" {
            path[2] = path[2].replace('_', ".");
        }
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) if path.get(1).is_none_or(|p| p != "properties") => {
                t.remove("v").unwrap_or(toml::Value::String(raw.clone()))
            }
            _ => toml::Value::String(raw.clone()),
        };
        let mut table = &mut top;
        for key in &path[..path.len() - 1] {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Parse {
                        origin: format!("environment variable {name}"),
                        message: format!("`{key}` is both a value and a table"),
                    });
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(top)
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("config {origin}: {message}")]
    Parse {
        /// Which layer (file name or "built-in defaults").
        origin: String,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A value is of the right type but out of range.
    #[error("config: {0}")]
    Invalid(String),
}

/// Merges `over` into `base`, recursing into tables; other values replace.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string(),
    })
}

impl Config {
    /// The defaults, optionally overlaid with a file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, toml::Table::new())
    }

    /// The full stack: defaults < file < `RECUR_*` environment < `flags`.
    pub fn load_layered(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<Self, ConfigError> {
        let mut over = env_table(env)?;
        merge(&mut over, flags);
        Self::load_with(file, over)
    }

    /// The layers of [`Config::load_layered`], each as given, lowest first,
    /// named: for `recur config`, which says which layer set each key.
    pub fn layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<Vec<(String, toml::Table)>, ConfigError> {
        let mut layers = vec![(
            "default".to_string(),
            parse_table(DEFAULT_TOML, "built-in defaults")?,
        )];
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let name = path.display().to_string();
            layers.push((format!("file {name}"), parse_table(&text, &name)?));
        }
        layers.push(("env".to_string(), env_table(env)?));
        layers.push(("flag".to_string(), flags));
        Ok(layers)
    }

    /// The defaults < a file < `overrides` (e.g. from command-line flags).
    pub fn load_with(file: Option<&Path>, overrides: toml::Table) -> Result<Self, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, "built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            merge(&mut table, parse_table(&text, &path.display().to_string())?);
        }
        let origin = match file {
            Some(p) if overrides.is_empty() => p.display().to_string(),
            Some(p) => format!("{} with command-line flags", p.display()),
            None if overrides.is_empty() => "built-in defaults".into(),
            None => "command-line flags".into(),
        };
        merge(&mut table, overrides);
        Self::from_table(table, origin)
    }

    /// Checks a merged table against the typed configuration.
    pub fn from_table(table: toml::Table, origin: String) -> Result<Self, ConfigError> {
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })?;
        cfg.model.validate().map_err(ConfigError::Invalid)?;
        cfg.validate().map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }
}

impl Config {
    /// How the stage (and a topic backtest) decodes input messages.
    pub fn decode_config(&self) -> crate::stage::decode::DecodeConfig {
        let e = &self.events;
        crate::stage::decode::DecodeConfig {
            fields: crate::stage::decode::Fields {
                stream: e.stream_field.clone(),
                ts: e.ts_field.clone(),
                values: e.values_field.clone(),
                value: e.value_field.clone(),
            },
            width: self.model.inputs,
            max_bytes: e.max_bytes,
            max_stream_bytes: e.max_stream_bytes,
            max_ts_ms: crate::stage::decode::MAX_TS_MS,
        }
    }

    /// Range checks beyond the types, naming the key and value.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.anomaly.threshold) {
            return Err(format!(
                "anomaly.threshold = {}: must be in [0, 1] (scores are)",
                self.anomaly.threshold
            ));
        }
        let k = &self.kafka;
        for (key, v) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.output_topic", &k.output_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.group", &k.group),
        ] {
            if v.trim().is_empty() {
                return Err(format!("{key} is empty"));
            }
        }
        if k.input_topic == k.output_topic || k.input_topic == k.dlq_topic {
            return Err(format!(
                "kafka.input_topic = {:?} is also the output or dead-letter topic",
                k.input_topic
            ));
        }
        self.backtest.linear.validate("backtest.linear")?;
        if self.window.max_events == 0 {
            return Err("window.max_events = 0: must be at least 1".into());
        }
        self.events.max_future_ms()?;
        self.run.shutdown_timeout()?;
        self.run.broker_loss()?;
        if self.kafka.delivery == Delivery::ExactlyOnce
            && let Every::Time(every) = self.checkpoint.every()?
        {
            // Each checkpoint commits the transaction open since the last one.
            let timeout_ms = self.kafka.transaction_timeout_ms();
            if every.as_millis() as u64 >= timeout_ms / 2 {
                return Err(format!(
                    "checkpoint.interval = {every:?} with kafka.delivery = \"exactly_once\": each transaction stays open for an interval, and the broker aborts one after transaction.timeout.ms = {timeout_ms}; use an interval under half of it"
                ));
            }
        }
        if self.checkpoint.replication == 0 || self.checkpoint.replication < -1 {
            return Err(format!(
                "checkpoint.replication = {}: a replication factor of at least 1, or -1 for the broker's default",
                self.checkpoint.replication
            ));
        }
        if self.events.max_stream_bytes == 0 {
            return Err("events.max_stream_bytes = 0: must be at least 1".into());
        }
        if self.events.max_bytes == 0 {
            return Err("events.max_bytes = 0: must be at least 1".into());
        }
        if self.metrics.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "metrics.addr = {:?}: expected host:port, e.g. 127.0.0.1:9898",
                self.metrics.addr
            ));
        }
        if self.embedded.partitions < 1 || self.embedded.streams == 0 {
            return Err("embedded.partitions and embedded.streams must be at least 1".into());
        }
        let every = self.checkpoint.every()?;
        if self.idle_ttl_ms()?.is_some() && every == Every::Off {
            return Err(format!(
                "state.idle_ttl = {:?} needs checkpoints (evicted streams live in the changelog), but checkpoint.interval = \"off\"",
                self.state.idle_ttl
            ));
        }
        if self.kafka.delivery == Delivery::ExactlyOnce && every == Every::Off {
            return Err("kafka.delivery = \"exactly_once\" commits with each checkpoint's transaction, but checkpoint.interval = \"off\"".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_refuses_a_checkpoint_interval_the_transaction_cannot_last() {
        let load = |extra: &str| {
            let t = format!("[kafka]\ndelivery = \"exactly_once\"\n{extra}")
                .parse()
                .unwrap();
            Config::load_with(None, t)
        };
        assert!(load("[checkpoint]\ninterval = \"10s\"\n").is_ok());
        let e = load("[checkpoint]\ninterval = \"45s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("transaction.timeout.ms = 60000"), "{e}");
        let raised = "[kafka.properties]\n\"transaction.timeout.ms\" = \"300000\"\n[checkpoint]\ninterval = \"45s\"\n";
        assert!(load(raised).is_ok());
    }

    #[test]
    fn every_property_that_can_carry_a_secret_is_redacted() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.token.endpoint.url",
            "ssl.key.pem",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret(k), "{k} is not redacted");
        }
        for k in [
            "bootstrap.servers",
            "security.protocol",
            "sasl.username",
            "sasl.mechanism",
        ] {
            assert!(!is_secret(k), "{k} is redacted but is not a secret");
        }
    }

    #[test]
    fn defaults_parse_and_match_the_struct_defaults() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.model, ModelConfig::default());
        assert_eq!(
            cfg.backtest.linear,
            crate::model::linear::LinearConfig::default()
        );
        assert_eq!(cfg.backtest.season, 0, "the season is inferred by default");
    }

    #[test]
    fn bad_linear_baseline_settings_are_named() {
        for (key, value) in [("lags", "1"), ("forgetting", "1.5"), ("ridge", "0.0")] {
            let flags = format!("[backtest.linear]\n{key} = {value}\n");
            let err = Config::load_with(None, flags.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("backtest.linear.{key}")), "{err}");
        }
    }

    #[test]
    fn linear_lags_are_auto_by_default_a_number_or_a_clear_error() {
        let load = |toml: &str| Config::load_with(None, toml.parse().unwrap());
        let lags = |toml: &str| load(toml).unwrap().model.linear_lags();
        // One input: twice the horizon, at least a day of hourly rows.
        assert_eq!(lags(""), 25);
        assert_eq!(lags("[model]\nhorizon = 24\n"), 48);
        assert_eq!(lags("[model]\nhorizon = 48\n"), 96);
        // Several inputs: 25, whatever the horizon.
        assert_eq!(lags("[model]\ninputs = 7\nhorizon = 48\n"), 25);
        assert_eq!(
            lags("[model]\nhorizon = 48\n[model.linear]\nlags = 30\n"),
            30
        );
        // The baseline's window stays fixed, whatever the expert's.
        assert_eq!(
            load("").unwrap().backtest.linear.lags,
            crate::model::linear::Lags::Rows(24)
        );
        for bad in ["\"often\"", "-3", "1"] {
            let err = load(&format!("[model.linear]\nlags = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("lags") && err.contains("auto"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_file_overrides_and_bad_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("recur-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[model]\ncell = \"gru\"\n[model.optimizer]\nlr = 0.01\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&good)).unwrap();
        assert_eq!(cfg.model.cell, crate::model::CellKind::Gru);
        assert_eq!(cfg.model.optimizer.lr, 0.01);
        assert_eq!(cfg.model.hidden, 32);

        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, "[model]\nhiden = 8\n").unwrap();
        let err = Config::load(Some(&unknown)).unwrap_err().to_string();
        assert!(err.contains("hiden"), "{err}");

        let zero = dir.join("zero.toml");
        std::fs::write(&zero, "[model]\ntbptt = 0\n").unwrap();
        let err = Config::load(Some(&zero)).unwrap_err().to_string();
        assert!(err.contains("model.tbptt = 0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn intervals_and_durations_parse_or_name_the_key() {
        let mut cfg = Config::load(None).unwrap();
        assert_eq!(
            cfg.checkpoint.every().unwrap(),
            Every::Time(std::time::Duration::from_secs(10))
        );
        for (v, want) in [
            (CountOrText::Count(500), Every::Events(500)),
            (CountOrText::Text("2000".into()), Every::Events(2000)),
            (CountOrText::Text("off".into()), Every::Off),
            (
                CountOrText::Text("250ms".into()),
                Every::Time(std::time::Duration::from_millis(250)),
            ),
        ] {
            cfg.checkpoint.interval = v;
            assert_eq!(cfg.checkpoint.every().unwrap(), want);
        }
        cfg.checkpoint.interval = CountOrText::Text("10 parsecs".into());
        let err = cfg.validate().unwrap_err();
        assert!(
            err.contains("checkpoint.interval") && err.contains("parsecs"),
            "{err}"
        );
        cfg.checkpoint.interval = CountOrText::Text("off".into());
        cfg.state.idle_ttl = "6h".into();
        assert_eq!(cfg.idle_ttl_ms().unwrap(), Some(6 * 3600 * 1000));
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("state.idle_ttl"), "{err}");
        let err = Config::load_layered(
            None,
            [("RECUR_STATE__IDLE_TTL".to_string(), "soon".to_string())],
            toml::Table::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("state.idle_ttl") && err.contains("soon"),
            "{err}"
        );
        let cfg = Config::load_layered(
            None,
            [("RECUR_CHECKPOINT__INTERVAL".to_string(), "777".to_string())],
            toml::Table::new(),
        )
        .unwrap();
        assert_eq!(cfg.checkpoint.every().unwrap(), Every::Events(777));
        assert_eq!(cfg.changelog_topic(), "recur-state");
    }

    #[test]
    fn environment_sits_between_file_and_flags() {
        let env = [
            ("RECUR_KAFKA__BROKERS".to_string(), "env:9092".to_string()),
            ("RECUR_MODEL__HIDDEN".into(), "8".into()),
            (
                "RECUR_KAFKA__PROPERTIES__SASL_PASSWORD".into(),
                "hunter2".into(),
            ),
            ("RECUR_TEST_BROKERS".into(), "ignored".into()),
        ];
        let flags: toml::Table = "[kafka]\nbrokers = \"flag:9092\"".parse().unwrap();
        let cfg = Config::load_layered(None, env.clone(), flags).unwrap();
        assert_eq!(cfg.kafka.brokers, "flag:9092");
        assert_eq!(cfg.model.hidden, 8);
        assert_eq!(cfg.kafka.properties["sasl.password"], "hunter2");
        assert_eq!(
            cfg.kafka.redacted_properties()["sasl.password"],
            "<redacted>"
        );
        let cfg = Config::load_layered(None, env, toml::Table::new()).unwrap();
        assert_eq!(cfg.kafka.brokers, "env:9092");

        let err = Config::load_layered(
            None,
            [("RECUR_MODEL__HIDEN".to_string(), "8".to_string())],
            toml::Table::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hiden"), "{err}");
        let err = Config::load_layered(
            None,
            [("RECUR_METRICS__ADDR".to_string(), "nope".to_string())],
            toml::Table::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("metrics.addr") && err.contains("nope"),
            "{err}"
        );
    }
}
