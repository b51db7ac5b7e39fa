//! `recur bench`: the measurements behind the README's performance figures.

use std::time::Instant;

use serde::Serialize;

use crate::model::learner::Learning;
use crate::model::{CellKind, Forecaster, ModelConfig};
use crate::synth::NoisySine;

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
}

fn config(b: &ModelBench, learning: Learning) -> ModelConfig {
    ModelConfig {
        cell: b.cell,
        hidden: b.hidden,
        inputs: b.inputs,
        tbptt: b.tbptt,
        learning,
        ..ModelConfig::default()
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

/// Runs the model benchmark.
pub fn model(b: &ModelBench) -> Result<ModelBenchReport, String> {
    let keys: Vec<String> = (0..b.streams).map(|i| format!("stream-{i}")).collect();
    // 512 distinct events per stream, cycled: inputs stay realistic and cheap to fetch.
    let series: Vec<Vec<f32>> = (0..b.streams)
        .map(|i| {
            NoisySine::new(24.0, 0.1, i as u64)
                .take(512 * b.inputs)
                .map(|v| v as f32)
                .collect()
        })
        .collect();

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
    })
}
