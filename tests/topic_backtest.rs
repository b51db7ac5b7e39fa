//! Same engine, same answers: a topic backtest equals the file backtest of the
//! same rows, and a live `recur run` over a topic makes exactly the forecasts a
//! backtest of that topic makes. Against the real broker (tansu).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use recur::backtest::engine::{self, Keep, Protocol, Scaling};
use recur::backtest::job::{self, ProgressBar};
use recur::backtest::topic::{self, Bound};
use recur::config::Config;
use recur::stage::{self, LiveLine};

mod common;
use common::{brokers, create_topics, free_port, tuned};

fn etth1() -> PathBuf {
    let shared = std::env::var_os("RECUR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("data/ETTh1.csv")
}

/// Writes the header and data rows `rows` of ETTh1 to a temporary CSV.
fn slice_csv(dir: &std::path::Path, name: &str, rows: std::ops::Range<usize>) -> PathBuf {
    let text = std::fs::read_to_string(etth1()).unwrap();
    let mut lines = text.lines();
    let mut out = String::from(lines.next().unwrap());
    out.push('\n');
    for l in lines.skip(rows.start).take(rows.len()) {
        out.push_str(l);
        out.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn a_topic_backtest_equals_the_file_backtest_of_the_same_rows() {
    let Some(brokers) = brokers() else { return };
    let dir = std::env::temp_dir().join(format!("recur-topic-bt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let topic = format!("etth1-{}", std::process::id());
    create_topics(&brokers, &[(&topic, 3)]);
    // ETTh1 rows 0..4000 as events (message timestamp = row time); replay rows 1000..3000 of them.
    let all = slice_csv(&dir, "first4000.csv", 0..4000);
    recur::tools::produce_csv(&brokers, &topic, &all, Some("etth1"), 0).unwrap();
    let part = slice_csv(&dir, "rows1000to3000.csv", 1000..3000);

    let mut cfg = Config::load(None).unwrap();
    cfg.backtest.time_column = "date".into();
    let file = job::run_file(&cfg, &part, None, ProgressBar::Off).unwrap();

    cfg.model.inputs = 7;
    let hour = 3_600_000i64;
    let t0 = recur::time::parse_time("2016-07-01 00:00:00").unwrap();
    let (from, to) = (Bound::At(t0 + 1000 * hour), Bound::At(t0 + 2999 * hour));
    let tp = job::run_topic(&cfg, &brokers, &topic, from, to, None, ProgressBar::Off).unwrap();

    assert_eq!(file.rows, 2000);
    assert_eq!(tp.rows, file.rows, "the time range selected other rows");
    assert_eq!(tp.predictions, file.predictions);
    for (what, a, b) in [
        ("mse", tp.mse, file.mse),
        ("mae", tp.mae, file.mae),
        ("naive_mse", tp.naive_mse, file.naive_mse),
        ("naive_mae", tp.naive_mae, file.naive_mae),
        ("seasonal_mse", tp.seasonal_mse, file.seasonal_mse),
    ] {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: topic {a} vs file {b}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_live_run_and_a_topic_backtest_make_the_same_forecasts() {
    let Some(brokers) = brokers() else { return };
    let tag = format!("live-bt-{}", std::process::id());
    let (input, output, dlq) = (
        format!("in-{tag}"),
        format!("out-{tag}"),
        format!("dlq-{tag}"),
    );
    create_topics(&brokers, &[(&input, 2), (&output, 2), (&dlq, 1)]);
    let events = 3000u64;
    recur::tools::produce_synthetic(
        &brokers,
        &input,
        20,
        0,
        Some(events),
        &AtomicBool::new(false),
    )
    .unwrap();

    // Live.
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\noutput_topic = \"{output}\"\ndlq_topic = \"{dlq}\"\ngroup = \"g-{tag}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[metrics]\naddr = \"127.0.0.1:{}\"\n",
        free_port()
    );
    let cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    let live_cfg = cfg.clone();
    let run = std::thread::spawn(move || {
        stage::run(live_cfg, async move { s.notified().await }, LiveLine::Quiet).unwrap()
    });
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("group.id", format!("read-{tag}"))
        .set("auto.offset.reset", "earliest");
    let c: BaseConsumer = tuned(&mut cc).create().unwrap();
    c.subscribe(&[&output]).unwrap();
    // Per source offset: the forecast, both levels' bounds and the score, as bits.
    let mut live: HashMap<(i32, i64), Vec<u64>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (live.len() as u64) < events && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let src = (
                v["source"]["partition"].as_i64().unwrap() as i32,
                v["source"]["offset"].as_i64().unwrap(),
            );
            let bits = |x: &serde_json::Value| (x.as_f64().unwrap() as f32).to_bits() as u64;
            let mut f: Vec<u64> = v["forecast"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(bits)
                .collect();
            for level in v["intervals"].as_array().expect("intervals on by default") {
                f.extend(level["lo"][0].as_array().unwrap().iter().map(bits));
                f.extend(level["hi"][0].as_array().unwrap().iter().map(bits));
            }
            f.push(v["score"].as_f64().map_or(u64::MAX, f64::to_bits));
            live.insert(src, f);
        }
    }
    stop.notify_one();
    run.join().unwrap();
    assert_eq!(
        live.len() as u64,
        events,
        "the live run did not forecast every event"
    );

    // Backtest of the same topic.
    let t = topic::read(&cfg, &brokers, &input, Bound::Open, Bound::Open).unwrap();
    assert_eq!(t.replay.rows() as u64, events);
    let protocol = Protocol {
        warmup_rows: 0,
        epochs: 1,
        eval: 0..t.replay.rows(),
        scaling: Scaling::Running,
        season: 24,
        linear: recur::model::linear::LinearConfig::default(),
    };
    let out = engine::run(
        &t.replay,
        &cfg.model,
        &protocol,
        Keep::Predictions,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(out.made.len() as u64, events);
    let mut same = 0;
    let levels = cfg.model.intervals.len();
    for ((row, fc), (lo, hi, score)) in out.made.iter().zip(&out.made_bounds) {
        let src = t.source[*row];
        let bits = |x: &f64| (*x as f32).to_bits() as u64;
        let mut bt: Vec<u64> = fc.iter().map(bits).collect();
        let n = fc.len();
        for l in 0..levels {
            bt.extend(lo[l * n..(l + 1) * n].iter().map(bits));
            bt.extend(hi[l * n..(l + 1) * n].iter().map(bits));
        }
        bt.push(score.map_or(u64::MAX, f64::to_bits));
        assert_eq!(
            live.get(&src),
            Some(&bt),
            "forecast, intervals or score after input {src:?} differ"
        );
        same += 1;
    }
    assert_eq!(same, events);
}
