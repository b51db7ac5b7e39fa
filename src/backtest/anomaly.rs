//! `recur backtest --nab DIR`: every file of a Numenta Anomaly Benchmark
//! corpus through the learner, scored as NAB scores detectors.
//!
//! Each file (`DIR/data/<category>/<name>.csv`, columns `timestamp,value`)
//! is one stream through a learner of its own, built from the same
//! `[model]` (one input, the event's value): files cover different years, so
//! a learner shared across them would learn from one file's future before
//! scoring another's past. Every row's anomaly score is the learner's
//! ([`crate::model::conformal`]): one minus a two-sided p-value of the value
//! against the stream's calibrated one-step interval, 0 before the stream's
//! calibration starts. Results are written in NAB's layout
//! (`<out>/recur/<category>/recur_<name>.csv`) and scored by [`super::nab`]
//! with `DIR/labels/combined_windows.json` and `DIR/config/profiles.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::nab::{self, FileScores, NabError};
use crate::model::{Forecaster, ModelConfig};

/// The name results are written under.
pub const DETECTOR: &str = "recur";

/// One profile's corpus score.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileScore {
    /// `standard`, `reward_low_FP_rate` or `reward_low_FN_rate`.
    pub profile: String,
    /// The NAB score (null detector 0, perfect 100).
    pub score: f64,
    /// The score threshold NAB's sweep chose for this profile.
    pub threshold: f64,
    /// Windows with a detection, of all windows.
    pub windows_detected: usize,
    pub windows_total: usize,
    /// Firing rows outside windows at that threshold.
    pub false_positive_rows: usize,
}

/// What `--nab` prints.
#[derive(Clone, Debug, Serialize)]
pub struct NabReport {
    /// Files scored.
    pub files: usize,
    /// Rows scored.
    pub rows: usize,
    /// The standard profile's score.
    pub standard: f64,
    /// The reward-low-false-positives profile's score.
    pub reward_low_fp_rate: f64,
    /// The reward-low-false-negatives profile's score.
    pub reward_low_fn_rate: f64,
    /// Every profile, with its threshold and counts.
    pub profiles: Vec<ProfileScore>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

/// Runs and scores the corpus at `dir`; writes NAB results under `out` if given.
/// `progress` hears each file's key as it starts.
pub fn run(
    cfg: &ModelConfig,
    dir: &Path,
    out: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<NabReport, NabError> {
    let start = std::time::Instant::now();
    let windows = nab::load_windows(&dir.join("labels/combined_windows.json"))?;
    let profiles = nab::load_profiles(&dir.join("config/profiles.json"))?;
    let mut cfg = cfg.clone();
    cfg.inputs = 1;
    cfg.targets = Vec::new();
    if cfg.intervals.is_empty() {
        return Err(NabError::Data {
            key: "model.intervals".into(),
            reason: "is empty: the anomaly scores come from the intervals".into(),
        });
    }
    let mut files = Vec::new();
    let mut rows = 0;
    for (key, path) in corpus_files(dir)? {
        progress(&key);
        let (timestamps, values) = read_series(&key, &path)?;
        let scores = score_series(&cfg, &key, &values)?;
        rows += values.len();
        let file = FileScores {
            key,
            timestamps,
            scores,
        };
        if let Some(out) = out {
            nab::write_results(out, DETECTOR, &file, &values, &windows)?;
        }
        files.push(file);
    }
    let mut scored = Vec::new();
    for p in &profiles {
        let s = nab::score_corpus(&files, &windows, p)?;
        scored.push(ProfileScore {
            profile: s.profile.clone(),
            score: s.normalized,
            threshold: s.threshold,
            windows_detected: s.windows_detected,
            windows_total: s.windows_total,
            false_positive_rows: s.counts.fp,
        });
    }
    let named = |n: &str| {
        scored
            .iter()
            .find(|s| s.profile == n)
            .map_or(f64::NAN, |s| s.score)
    };
    Ok(NabReport {
        files: files.len(),
        rows,
        standard: named("standard"),
        reward_low_fp_rate: named("reward_low_FP_rate"),
        reward_low_fn_rate: named("reward_low_FN_rate"),
        profiles: scored,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

/// The learner's anomaly score of every value of one series (0 while it has none).
pub fn score_series(cfg: &ModelConfig, key: &str, values: &[f64]) -> Result<Vec<f64>, NabError> {
    let mut f = Forecaster::<f32>::new(cfg.clone()).map_err(|reason| NabError::Data {
        key: "model".into(),
        reason,
    })?;
    let mut scores = Vec::with_capacity(values.len());
    for &v in values {
        let score = match f.observe(key, &[v as f32]) {
            Ok(obs) => obs.anomaly.unwrap_or(0.0),
            // A value the learner refuses (not finite) is as anomalous as it gets.
            Err(_) => 1.0,
        };
        scores.push(score.clamp(0.0, 1.0));
    }
    Ok(scores)
}

/// `(key, path)` of every `data/<category>/<name>.csv`, sorted by key.
fn corpus_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, NabError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NabError::Io { path, source }
    };
    let data = dir.join("data");
    let mut out = Vec::new();
    for category in std::fs::read_dir(&data).map_err(io(&data))? {
        let category = category.map_err(io(&data))?.path();
        if !category.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&category).map_err(io(&category))? {
            let path = file.map_err(io(&category))?.path();
            if path.extension().is_some_and(|e| e == "csv") {
                let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
                if let (Some(c), Some(n)) = (name(&category), name(&path)) {
                    out.push((format!("{c}/{n}"), path));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(NabError::Data {
            key: data.display().to_string(),
            reason: "holds no <category>/<name>.csv files: is this a NAB corpus?".into(),
        });
    }
    out.sort();
    Ok(out)
}

/// A NAB series: timestamps (epoch ms) and values, header `timestamp,value`.
fn read_series(key: &str, path: &Path) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| NabError::Data {
        key: key.to_string(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "timestamp,value" => {}
        other => {
            return Err(bad(
                1,
                format!(
                    "expected the header timestamp,value, got {:?}",
                    other.map(|(_, h)| h)
                ),
            ));
        }
    }
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (t, v) = line
            .split_once(',')
            .ok_or_else(|| bad(i + 1, format!("expected timestamp,value, got {line:?}")))?;
        ts.push(nab::parse_nab_time(t).map_err(|e| bad(i + 1, e))?);
        vs.push(
            v.trim()
                .parse::<f64>()
                .map_err(|e| bad(i + 1, format!("value {v:?}: {e}")))?,
        );
    }
    Ok((ts, vs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_in_a_clean_series_scores_high_and_the_clean_rows_low() {
        let cfg = ModelConfig::default();
        let mut values: Vec<f64> = crate::synth::NoisySine::new(48.0, 0.1, 5)
            .take(3000)
            .map(|v| 10.0 + v)
            .collect();
        values[2500] += 8.0;
        let scores = score_series(&cfg, "s", &values).unwrap();
        assert!(scores[2500] > 0.999, "{}", scores[2500]);
        let clean = scores[1000..2500].iter().filter(|&&s| s > 0.999).count();
        assert!(clean <= 15, "{clean} clean rows flagged");
    }
}
