//! Hostile input on the real broker: every kind of bad message, and sizes
//! just under, at and over every limit, interleaved with good events across
//! 4 partitions. Every input offset gets exactly one outcome (a prediction,
//! or a dead letter with the expected reason), the committed offsets reach
//! the end, SIGTERM exits 0 within the bound, and a restart reprocesses
//! nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod common;
use common::{assert_committed_at, brokers, create_topics, free_port};

const PARTITIONS: i32 = 4;
const T0: i64 = 1_467_331_200_000;

/// One input message and the outcome it must get: `None` a prediction, else the dead-letter reason.
struct Case {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    expect: Option<&'static str>,
}

fn good(stream: &str, i: i64) -> Case {
    Case {
        key: Some(stream.as_bytes().to_vec()),
        value: format!(
            r#"{{"stream":"{stream}","ts":{},"value":{}}}"#,
            T0 + i * 1000,
            i % 10
        )
        .into_bytes(),
        expect: None,
    }
}

fn bad(key: Option<&[u8]>, value: impl Into<Vec<u8>>, reason: &'static str) -> Case {
    Case {
        key: key.map(<[u8]>::to_vec),
        value: value.into(),
        expect: Some(reason),
    }
}

/// A good event padded with spaces to exactly `len` bytes.
fn padded(stream: &str, len: usize) -> Vec<u8> {
    let mut v = format!(r#"{{"stream":"{stream}","ts":{T0},"value":1}}"#).into_bytes();
    assert!(v.len() <= len);
    v.splice(1..1, std::iter::repeat_n(b' ', len - v.len()));
    v
}

fn hostile() -> Vec<Case> {
    let max = 65_536; // events.max_bytes
    let long = |n: usize| "s".repeat(n);
    let mut cases = vec![
        bad(None, "not json", "not_json"),
        bad(None, "", "not_json"),
        bad(None, "[1,2,3]", "bad_type"),
        bad(None, r#"{"ts":1,"value":1}"#, "missing_field"),
        bad(None, r#"{"stream":"a","value":null,"ts":1}"#, "bad_type"),
        bad(
            None,
            r#"{"stream":"a","ts":1,"values":[1,2]}"#,
            "wrong_width",
        ),
        bad(None, r#"{"stream":"a","ts":1,"value":NaN}"#, "non_finite"),
        bad(None, r#"{"stream":"a","ts":1,"value":1e400}"#, "non_finite"),
        bad(
            None,
            r#"{"stream":"a","ts":1,"value":1e39}"#,
            "out_of_range",
        ),
        bad(None, r#"{"stream":"a","ts":-5,"value":1}"#, "bad_timestamp"),
        bad(
            None,
            r#"{"stream":"a","ts":"yesterday","value":1}"#,
            "bad_timestamp",
        ),
        bad(
            None,
            r#"{"stream":"a","ts":253402300799000,"value":1}"#,
            "future_timestamp",
        ),
        bad(
            Some(b"b"),
            r#"{"stream":"a","ts":1,"value":1}"#,
            "stream_mismatch",
        ),
        bad(Some(&[0xff, 0xfe]), r#"{"ts":1,"value":1}"#, "bad_type"),
        bad(
            None,
            r#"{"stream":"a","stream":"b","ts":1,"value":1}"#,
            "bad_type",
        ),
        bad(None, padded("a", max + 1), "oversize"),
        bad(None, vec![b'x'; 2 << 20], "oversize"),
        bad(
            Some(&vec![b'k'; 600_000]),
            r#"{"ts":1,"value":1}"#,
            "stream_too_long",
        ),
        bad(
            None,
            format!(r#"{{"stream":"{}","ts":1,"value":1}}"#, long(257)),
            "stream_too_long",
        ),
    ];
    for (stream, value) in [
        ("at-limit", padded("at-limit", max)),
        ("under-limit", padded("under-limit", max - 1)),
        (
            &*long(256),
            format!(r#"{{"stream":"{}","ts":{T0},"value":1}}"#, long(256)).into_bytes(),
        ),
        (
            "f32-max",
            format!(r#"{{"stream":"f32-max","ts":{T0},"value":3.4e38}}"#).into_bytes(),
        ),
    ] {
        cases.push(Case {
            key: Some(stream.as_bytes().to_vec()),
            value,
            expect: None,
        });
    }
    // Interleave with good events.
    let mut all = Vec::new();
    let mut i = 0;
    for c in cases {
        for _ in 0..3 {
            all.push(good(&format!("g{}", i % 11), i));
            i += 1;
        }
        all.push(c);
    }
    all
}

/// Produces the cases round-robin over the partitions, in order; returns
/// each case's (partition, offset) and the end offset of every partition.
fn produce(brokers: &str, topic: &str, cases: &[Case]) -> (Vec<(i32, i64)>, HashMap<i32, i64>) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut at = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let part = i as i32 % PARTITIONS;
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(&c.value)
            .partition(part);
        if let Some(k) = &c.key {
            rec = rec.key(k);
        }
        p.send(rec).map_err(|(e, _)| e).unwrap();
        let o = next.entry(part).or_insert(0);
        at.push((part, *o));
        *o += 1;
    }
    p.flush(Duration::from_secs(60)).unwrap();
    (at, next)
}

/// Every record of `topic` so far: (source partition, source offset) → outcome.
fn outcomes(
    brokers: &str,
    topic: &str,
    dead_letters: bool,
    out: &mut HashMap<(i32, i64), Vec<String>>,
) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("read-{topic}-{}", out.len()))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "8000000")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let n = md.topics()[0].partitions().len();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    out.clear();
    let (mut eof, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while eof < n && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (src, what) = if dead_letters {
                    let hs = m.headers().unwrap();
                    let h = |name: &str| {
                        let v = hs.iter().find(|h| h.key == name).unwrap().value.unwrap();
                        String::from_utf8_lossy(v).into_owned()
                    };
                    let reason = h("recur.error").split(':').next().unwrap().to_string();
                    let src = (
                        h("recur.source.partition").parse().unwrap(),
                        h("recur.source.offset").parse().unwrap(),
                    );
                    (src, reason)
                } else {
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap()).unwrap();
                    let s = &v["source"];
                    (
                        (
                            s["partition"].as_i64().unwrap() as i32,
                            s["offset"].as_i64().unwrap(),
                        ),
                        "prediction".into(),
                    )
                };
                out.entry(src).or_default().push(what);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
}

struct Stage {
    child: Child,
    log: PathBuf,
}

impl Stage {
    fn start(config: &PathBuf, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["run", "--quiet", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Stage { child, log }
    }

    /// SIGTERM; the exit status and how long the exit took.
    fn sigterm(mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(90) {
                let _ = self.child.kill();
                panic!(
                    "no exit 90 s after SIGTERM:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn every_hostile_message_gets_exactly_one_outcome_and_nothing_stalls() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("hostile-{}", std::process::id());
    let (input, out, dlq) = (
        format!("in-{tag}"),
        format!("out-{tag}"),
        format!("dlq-{tag}"),
    );
    create_topics(
        &brokers,
        &[(&input, PARTITIONS), (&out, PARTITIONS), (&dlq, 1)],
    );
    let cases = hostile();
    let (at, ends) = produce(&brokers, &input, &cases);

    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("stage.toml");
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        common::stage_toml(&brokers, &tag, &addr) + "[checkpoint]\ninterval = \"1s\"\n",
    )
    .unwrap();
    let stage = Stage::start(&config, dir.join("first.log"));

    let (mut preds, mut letters) = (HashMap::new(), HashMap::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        outcomes(&brokers, &out, false, &mut preds);
        outcomes(&brokers, &dlq, true, &mut letters);
        if preds.len() + letters.len() >= cases.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2)); // let a checkpoint commit the last offsets
    let (status, took) = stage.sigterm();
    assert!(
        status.success(),
        "exit {status}: {}",
        std::fs::read_to_string(dir.join("first.log")).unwrap()
    );
    assert!(took <= Duration::from_secs(30), "SIGTERM took {took:?}");

    outcomes(&brokers, &out, false, &mut preds);
    outcomes(&brokers, &dlq, true, &mut letters);
    for (c, src) in cases.iter().zip(&at) {
        let mut got: Vec<String> = preds.get(src).cloned().unwrap_or_default();
        got.extend(letters.get(src).cloned().unwrap_or_default());
        let want = c.expect.unwrap_or("prediction");
        assert_eq!(
            got,
            vec![want.to_string()],
            "input {src:?} ({} bytes, starts {:?})",
            c.value.len(),
            String::from_utf8_lossy(&c.value[..c.value.len().min(60)])
        );
    }
    assert_committed_at(&brokers, &format!("recur-{tag}"), &input, &ends);

    // A restart finds nothing to redo.
    let before = (
        preds.values().map(Vec::len).sum::<usize>(),
        letters.values().map(Vec::len).sum::<usize>(),
    );
    let again = Stage::start(&config, dir.join("second.log"));
    std::thread::sleep(Duration::from_secs(10));
    let (status, _) = again.sigterm();
    assert!(status.success());
    outcomes(&brokers, &out, false, &mut preds);
    outcomes(&brokers, &dlq, true, &mut letters);
    let after = (
        preds.values().map(Vec::len).sum::<usize>(),
        letters.values().map(Vec::len).sum::<usize>(),
    );
    assert_eq!(after, before, "the restart reprocessed input");
}
