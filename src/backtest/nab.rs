//! Numenta Anomaly Benchmark (NAB v1.1) scorer.
//!
//! A faithful port of the reference scorer in numenta/NAB: `nab/sweeper.py`
//! (per-row sweep scores and the threshold sweep), `nab/optimizer.py` (one
//! threshold per profile, chosen on the whole corpus) and `nab/runner.py`
//! (`normalize`). Row positions, not elapsed time, drive every weight, exactly
//! as in the reference.
//!
//! Scoring rules (sweeper.py, `calcSweepScore` / `calcScoreByThreshold`):
//! * rows with index `< min(floor(0.15 n), 0.15 * 5000)` are probationary and
//!   are dropped before scoring;
//! * a row inside a window `[l, r]` of width `w = r - l + 1` is worth
//!   `tpWeight * S(-(r - i + 1) / w) / S(-1)` if it fires, where
//!   `S(x) = 2 sigmoid(-5x) - 1` (and `-1` for `x > 3`); a window scores the
//!   best (= earliest) of its firing rows, or `-fnWeight` if none fires;
//! * a firing row outside windows is worth `fpWeight * S((i - r) / (w - 1))`
//!   relative to the preceding window, or `-fpWeight` when no window precedes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Fraction of each file that is probationary (NAB's `probationaryPercent`).
const PROBATION_PERCENT: f64 = 0.15;

/// Threshold at which NAB's sweep starts: above every score, so nothing fires.
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// Labelled anomaly windows per file key (`<category>/<name>.csv`), as
/// inclusive `(start, end)` epoch-millisecond pairs sorted by start.
pub type Windows = BTreeMap<String, Vec<(i64, i64)>>;

/// Errors from loading NAB files or scoring detector output.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file did not have the expected NAB shape.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Detector output, labels or a timestamp of one file are inconsistent.
    #[error("{key}: {reason}")]
    Data { key: String, reason: String },
    /// The perfect and null scores coincide, so the score has no scale.
    #[error("cannot normalise for profile {profile}: perfect ({perfect}) equals null ({null})")]
    CannotNormalise {
        profile: String,
        perfect: f64,
        null: f64,
    },
}

/// An application profile: the cost matrix from NAB's `config/profiles.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name, e.g. `standard`.
    pub name: String,
    /// Reward for detecting a window at its very start.
    pub tp: f64,
    /// Penalty scale for a false positive.
    pub fp: f64,
    /// Penalty for a missed window.
    pub fn_: f64,
    /// True-negative weight; NAB loads it but never uses it.
    pub tn: f64,
}

/// One detector output file: a score in `[0, 1]` for every row of a data file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileScores {
    /// Corpus key `<category>/<name>.csv`, as in `combined_windows.json`.
    pub key: String,
    /// Row timestamps (epoch ms) of every row of the data file, in file order.
    pub timestamps: Vec<i64>,
    /// Anomaly score of each row.
    pub scores: Vec<f64>,
}

/// Row counts in NAB's `ThresholdScore` sense (probationary rows excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Firing rows inside windows.
    pub tp: usize,
    /// Firing rows outside windows.
    pub fp: usize,
    /// Silent rows inside windows.
    pub fn_: usize,
    /// Silent rows outside windows.
    pub tn: usize,
}

/// Corpus-level result for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusScore {
    /// Profile the score was computed for.
    pub profile: String,
    /// A row fires when its score is `>= threshold` ([`NO_DETECTION_THRESHOLD`]: none fires).
    pub threshold: f64,
    /// Scoreboard score: `100 (raw - null) / (perfect - null)`.
    pub normalized: f64,
    /// Raw NAB score summed over the corpus.
    pub raw: f64,
    /// Raw score of the null detector (nothing fires).
    pub null: f64,
    /// Raw score of the perfect detector (`tpWeight` per window).
    pub perfect: f64,
    /// Row counts at `threshold`.
    pub counts: Counts,
    /// Windows with at least one firing (non-probationary) row.
    pub windows_detected: usize,
    /// All labelled windows of the scored files.
    pub windows_total: usize,
}

/// Parses a NAB timestamp (`YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC) into epoch ms.
pub fn parse_nab_time(s: &str) -> Result<i64, String> {
    crate::time::parse_time(s)
}

/// Formats epoch milliseconds as NAB's `YYYY-MM-DD HH:MM:SS` (with `.ffffff` if needed).
pub fn format_nab_time(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    let secs = rem / 1000;
    let mut out = format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    if rem % 1000 != 0 {
        let _ = write!(out, ".{:06}", rem % 1000 * 1000);
    }
    out
}

/// The proleptic Gregorian date of a day number since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| NabError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Loads `labels/combined_windows.json` (file key -> list of `[start, end]`).
pub fn load_windows(path: &Path) -> Result<Windows, NabError> {
    let raw: BTreeMap<String, Vec<(String, String)>> = read_json(path)?;
    let time = |key: &str, s: &str| {
        parse_nab_time(s).map_err(|reason| NabError::Data {
            key: format!("{} ({key})", path.display()),
            reason: format!("bad timestamp {s:?}: {reason}"),
        })
    };
    raw.into_iter()
        .map(|(key, list)| {
            let mut spans = list
                .iter()
                .map(|(a, b)| Ok((time(&key, a)?, time(&key, b)?)))
                .collect::<Result<Vec<_>, NabError>>()?;
            // The sweep enters windows in order, so keep them sorted by start.
            spans.sort_unstable();
            Ok((key, spans))
        })
        .collect()
}

#[derive(Deserialize)]
struct RawProfile {
    #[serde(rename = "CostMatrix")]
    cost: RawCost,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCost {
    tp_weight: f64,
    fp_weight: f64,
    fn_weight: f64,
    tn_weight: f64,
}

/// Loads `config/profiles.json`; profiles come back sorted by name.
pub fn load_profiles(path: &Path) -> Result<Vec<Profile>, NabError> {
    // JSON has no NaN or infinity, so every weight that parses is finite.
    let raw: BTreeMap<String, RawProfile> = read_json(path)?;
    let profiles = raw
        .into_iter()
        .map(|(name, p)| Profile {
            name,
            tp: p.cost.tp_weight,
            fp: p.cost.fp_weight,
            fn_: p.cost.fn_weight,
            tn: p.cost.tn_weight,
        })
        .collect();
    Ok(profiles)
}

/// NAB's scaled sigmoid `2 sigmoid(-5x) - 1`, clamped to `-1` beyond `x > 3`.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// How a scorable row counts if it fires (unweighted sigmoid value).
#[derive(Clone, Copy)]
enum Role {
    InWindow { window: usize, sigmoid: f64 },
    Outside { sigmoid: f64 },
}

struct Row {
    score: f64,
    role: Role,
}

/// All scorable rows of a corpus, independent of the profile.
struct Prepared {
    rows: Vec<Row>,
    /// Per global window id: does it have a non-probationary row?
    in_play: Vec<bool>,
}

fn data_err(key: &str, reason: String) -> NabError {
    NabError::Data {
        key: key.to_owned(),
        reason,
    }
}

fn validate(file: &FileScores) -> Result<(), NabError> {
    let key = &file.key;
    if file.timestamps.len() != file.scores.len() {
        let (t, s) = (file.timestamps.len(), file.scores.len());
        return Err(data_err(key, format!("{t} timestamps but {s} scores")));
    }
    match file.scores.iter().position(|s| !(0.0..=1.0).contains(s)) {
        Some(i) => Err(data_err(
            key,
            format!("score {} at row {i} is not in [0, 1]", file.scores[i]),
        )),
        None => Ok(()),
    }
}

/// Maps window limits to inclusive row-index spans.
///
/// NAB's sweeper enters a window on an exact timestamp match and finds the end
/// with `timestamps.index` (first occurrence). Real NAB files repeat and even
/// reorder timestamps around DST changes, so search by first occurrence, not
/// by bisection; limits that are not row timestamps are an error.
fn window_spans(
    file: &FileScores,
    windows: &[(i64, i64)],
) -> Result<Vec<(usize, usize)>, NabError> {
    let row = |t: i64| {
        file.timestamps.iter().position(|&x| x == t).ok_or_else(|| {
            data_err(
                &file.key,
                format!("window limit {} is not a row timestamp", format_nab_time(t)),
            )
        })
    };
    let spans = windows
        .iter()
        .map(|&(a, b)| Ok((row(a)?, row(b)?)))
        .collect::<Result<Vec<_>, NabError>>()?;
    let disordered = spans.iter().any(|s| s.0 > s.1) || spans.windows(2).any(|p| p[1].0 <= p[0].1);
    if disordered {
        return Err(data_err(
            &file.key,
            "windows are reversed or overlap".into(),
        ));
    }
    Ok(spans)
}

/// Sigmoid for a false positive `distance` rows after a window of `width` rows.
fn after_window_sigmoid(distance: usize, width: usize) -> f64 {
    // sweeper.py divides by (width - 1) and crashes on one-row windows; the
    // older scorer.py used a relative position of 2.0 there, so do that.
    if width <= 1 {
        scaled_sigmoid(2.0)
    } else {
        scaled_sigmoid(distance as f64 / (width - 1) as f64)
    }
}

/// Port of `Sweeper.calcSweepScore` for one file (probationary rows dropped).
fn push_file_rows(
    file: &FileScores,
    spans: &[(usize, usize)],
    first_id: usize,
    prep: &mut Prepared,
) {
    let n = file.scores.len();
    let probation = (PROBATION_PERCENT * n as f64)
        .floor()
        .min(PROBATION_PERCENT * 5000.0);
    let (mut next, mut current, mut previous) = (0, None, None::<usize>);
    for (i, &score) in file.scores.iter().enumerate() {
        if current.is_none() && spans.get(next).is_some_and(|s| s.0 == i) {
            current = Some(next);
            next += 1;
        }
        let role = match current {
            Some(w) => {
                let (l, r) = spans[w];
                let position = -((r - i + 1) as f64) / (r - l + 1) as f64;
                Role::InWindow {
                    window: first_id + w,
                    sigmoid: scaled_sigmoid(position),
                }
            }
            None => Role::Outside {
                sigmoid: previous.map_or(-1.0, |w| {
                    after_window_sigmoid(i - spans[w].1, spans[w].1 - spans[w].0 + 1)
                }),
            },
        };
        if i as f64 >= probation {
            if let Role::InWindow { window, .. } = role {
                prep.in_play[window] = true;
            }
            prep.rows.push(Row { score, role });
        }
        if current.is_some_and(|w| spans[w].1 == i) {
            previous = current.take();
        }
    }
}

fn prepare(files: &[FileScores], windows: &Windows) -> Result<Prepared, NabError> {
    let mut prep = Prepared {
        rows: Vec::new(),
        in_play: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for file in files {
        if !seen.insert(file.key.as_str()) {
            return Err(data_err(&file.key, "file given twice".into()));
        }
        validate(file)?;
        let limits = windows
            .get(&file.key)
            .ok_or_else(|| data_err(&file.key, "no entry in the windows file".into()))?;
        let spans = window_spans(file, limits)?;
        let first_id = prep.in_play.len();
        prep.in_play.resize(first_id + spans.len(), false);
        push_file_rows(file, &spans, first_id, &mut prep);
    }
    Ok(prep)
}

/// Running score state of `Sweeper.calcScoreByThreshold` for one profile.
struct Tally {
    tp_scale: f64,
    fp_weight: f64,
    /// Score of a window nothing fired in: `-fnWeight`.
    miss: f64,
    fp_sum: f64,
    window_sum: f64,
    best: Vec<Option<f64>>,
    counts: Counts,
    detected: usize,
}

impl Tally {
    fn new(prep: &Prepared, profile: &Profile) -> Self {
        let inside = prep
            .rows
            .iter()
            .filter(|r| matches!(r.role, Role::InWindow { .. }))
            .count();
        let in_play = prep.in_play.iter().filter(|&&p| p).count();
        Tally {
            // sweeper.py divides by S(-1) so a detection at the window start earns exactly tpWeight.
            tp_scale: profile.tp / scaled_sigmoid(-1.0),
            fp_weight: profile.fp,
            miss: -profile.fn_,
            fp_sum: 0.0,
            // Every window with a scorable row starts as a miss (`_prepareScoreByThresholdParts`).
            window_sum: -profile.fn_ * in_play as f64,
            best: vec![None; prep.in_play.len()],
            counts: Counts {
                tp: 0,
                fp: 0,
                fn_: inside,
                tn: prep.rows.len() - inside,
            },
            detected: 0,
        }
    }

    fn fire(&mut self, row: &Row) {
        match row.role {
            Role::InWindow { window, sigmoid } => {
                self.counts.tp += 1;
                self.counts.fn_ -= 1;
                let value = sigmoid * self.tp_scale;
                let old = match self.best[window] {
                    Some(best) => best,
                    None => {
                        self.detected += 1;
                        self.miss
                    }
                };
                // Only the best (= earliest) detection of a window counts.
                let new = old.max(value);
                self.best[window] = Some(new);
                self.window_sum += new - old;
            }
            Role::Outside { sigmoid } => {
                self.counts.fp += 1;
                self.counts.tn -= 1;
                self.fp_sum += sigmoid * self.fp_weight;
            }
        }
    }

    fn raw(&self) -> f64 {
        self.fp_sum + self.window_sum
    }
}

/// Snapshot of a tally at one threshold.
struct Outcome {
    threshold: f64,
    raw: f64,
    counts: Counts,
    detected: usize,
}

impl Outcome {
    fn of(tally: &Tally, threshold: f64) -> Self {
        Outcome {
            threshold,
            raw: tally.raw(),
            counts: tally.counts,
            detected: tally.detected,
        }
    }
}

// Normalisation is corpus-level, as in nab/runner.py `normalize`: it reads
// `results["Score"].iloc[-1]`, the "Totals" row that nab/scorer.py
// `scoreCorpus` appends (the sum of every file's score), and computes
// `100 * (total - base) / (perfect - base)` with `base` the null detector's
// Totals and `perfect = tpCount * tpWeight`, tpCount = windows in the label
// file. Here tpCount counts the windows of the files being scored, which is
// the same on the full corpus and keeps partial corpora on a 0..100 scale.
fn finish(outcome: &Outcome, prep: &Prepared, profile: &Profile) -> Result<CorpusScore, NabError> {
    let windows_total = prep.in_play.len();
    // The null detector (nothing fires) misses every window that has scorable rows.
    let null = -profile.fn_ * prep.in_play.iter().filter(|&&p| p).count() as f64;
    let perfect = profile.tp * windows_total as f64;
    if perfect == null {
        return Err(NabError::CannotNormalise {
            profile: profile.name.clone(),
            perfect,
            null,
        });
    }
    Ok(CorpusScore {
        profile: profile.name.clone(),
        threshold: outcome.threshold,
        normalized: 100.0 * (outcome.raw - null) / (perfect - null),
        raw: outcome.raw,
        null,
        perfect,
        counts: outcome.counts,
        windows_detected: outcome.detected,
        windows_total,
    })
}

/// Scores a corpus at the threshold that maximises its raw score (NAB's optimize step).
///
/// Like nab/optimizer.py this sweeps every distinct score of the whole
/// corpus, highest first, in O(n log n); ties keep the highest threshold.
pub fn score_corpus(
    files: &[FileScores],
    windows: &Windows,
    profile: &Profile,
) -> Result<CorpusScore, NabError> {
    let prep = prepare(files, windows)?;
    let mut order: Vec<&Row> = prep.rows.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut tally = Tally::new(&prep, profile);
    let mut best = Outcome::of(&tally, NO_DETECTION_THRESHOLD);
    for group in order.chunk_by(|a, b| a.score == b.score) {
        for row in group {
            tally.fire(row);
        }
        // Strictly greater: NAB's stable sort by score keeps the first (highest) threshold on ties.
        if tally.raw() > best.raw {
            best = Outcome::of(&tally, group[0].score);
        }
    }
    finish(&best, &prep, profile)
}

/// Scores a corpus with rows firing when `score >= threshold` (NAB's score step).
pub fn score_corpus_at(
    files: &[FileScores],
    windows: &Windows,
    profile: &Profile,
    threshold: f64,
) -> Result<CorpusScore, NabError> {
    let prep = prepare(files, windows)?;
    let mut tally = Tally::new(&prep, profile);
    for row in prep.rows.iter().filter(|r| r.score >= threshold) {
        tally.fire(row);
    }
    finish(&Outcome::of(&tally, threshold), &prep, profile)
}

/// Writes NAB's results CSV `<out>/<detector>/<category>/<detector>_<name>.csv`.
///
/// Columns are `timestamp,value,anomaly_score,label`, with `label` 1 inside a
/// window; returns the path written.
pub fn write_results(
    out_dir: &Path,
    detector: &str,
    file: &FileScores,
    values: &[f64],
    windows: &Windows,
) -> Result<PathBuf, NabError> {
    let (category, name) = file
        .key
        .split_once('/')
        .ok_or_else(|| data_err(&file.key, "key is not <category>/<name>.csv".into()))?;
    validate(file)?;
    if values.len() != file.timestamps.len() {
        let (v, t) = (values.len(), file.timestamps.len());
        return Err(data_err(
            &file.key,
            format!("{v} values but {t} timestamps"),
        ));
    }
    let limits = windows.get(&file.key).map_or(&[][..], Vec::as_slice);
    let mut csv = String::from("timestamp,value,anomaly_score,label\n");
    for ((&t, value), score) in file.timestamps.iter().zip(values).zip(&file.scores) {
        let label = u8::from(limits.iter().any(|&(a, b)| (a..=b).contains(&t)));
        let _ = writeln!(csv, "{},{value},{score},{label}", format_nab_time(t));
    }
    let dir = out_dir.join(detector).join(category);
    let path = dir.join(format!("{detector}_{name}"));
    let io = |source| NabError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(&path, csv).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "cat/f.csv";

    fn profile(fp: f64, fn_: f64) -> Profile {
        Profile {
            name: "p".into(),
            tp: 1.0,
            fp,
            fn_,
            tn: 1.0,
        }
    }

    fn standard() -> Profile {
        profile(0.11, 1.0)
    }

    /// 100 one-minute rows (probation = min(floor(15), 750) = 15 rows), all
    /// silent except `fired` (row, score), with windows given as row spans.
    fn corpus(fired: &[(usize, f64)], spans: &[(usize, usize)]) -> (Vec<FileScores>, Windows) {
        let timestamps: Vec<i64> = (0..100).map(|i| i * 60_000).collect();
        let mut scores = vec![0.0; 100];
        for &(i, s) in fired {
            scores[i] = s;
        }
        let limits = spans
            .iter()
            .map(|&(a, b)| (timestamps[a], timestamps[b]))
            .collect();
        let windows = Windows::from([(KEY.to_owned(), limits)]);
        (
            vec![FileScores {
                key: KEY.into(),
                timestamps,
                scores,
            }],
            windows,
        )
    }

    fn raw_at(
        fired: &[(usize, f64)],
        spans: &[(usize, usize)],
        p: &Profile,
        t: f64,
    ) -> CorpusScore {
        let (files, windows) = corpus(fired, spans);
        score_corpus_at(&files, &windows, p, t).expect("valid corpus")
    }

    #[test]
    fn scaled_sigmoid_matches_nab_docstring() {
        // sweeper.py docstring: S(-1) = 0.98661, S(-0.5) = 0.84828, S(0) = 0, S(1) = -0.98661.
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn detection_at_window_start_earns_tp_weight() {
        // Window rows 40..=49 (w = 10); row 40: position -(49-40+1)/10 = -1,
        // so tp * S(-1) / S(-1) = 1.0 exactly. Best threshold is 1.0.
        let (files, windows) = corpus(&[(40, 1.0)], &[(40, 49)]);
        let s = score_corpus(&files, &windows, &standard()).expect("valid");
        assert!((s.raw - 1.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.threshold, 1.0);
        assert_eq!(
            s.counts,
            Counts {
                tp: 1,
                fp: 0,
                fn_: 9,
                tn: 75
            }
        );
        assert_eq!((s.windows_detected, s.windows_total), (1, 1));
    }

    #[test]
    fn detection_after_window_costs_a_fraction_of_fp_weight() {
        // Row 52 is 3 rows past the end (49) of a 10-row window: position 3/9,
        // S(1/3) = 2/(1+e^(5/3)) - 1 = -0.682262; times fp 0.11 = -0.075049.
        // The window is missed too: raw = -1 - 0.075049.
        let s = raw_at(&[(52, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert!((s.raw - (-1.075049)).abs() < 1e-6, "{s:?}");
        assert_eq!(s.counts.fp, 1);
    }

    #[test]
    fn false_positive_far_from_windows_costs_full_fp_weight() {
        // Row 20 precedes every window: -fp = -0.11. Row 90 is 41/9 = 4.6 > 3
        // window-lengths past the window: S = -1, again -0.11. Plus the miss.
        let before = raw_at(&[(20, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert!((before.raw - (-1.11)).abs() < 1e-12, "{before:?}");
        let far_after = raw_at(&[(90, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert!((far_after.raw - (-1.11)).abs() < 1e-12, "{far_after:?}");
    }

    #[test]
    fn no_detection_costs_fn_weight_per_window() {
        // Two missed windows under reward_low_FN_rate (fn = 2): raw = -4, and
        // the optimiser keeps the no-detection threshold 1.1.
        let (files, windows) = corpus(&[], &[(30, 39), (60, 69)]);
        let s = score_corpus(&files, &windows, &profile(0.11, 2.0)).expect("valid");
        assert_eq!(
            (s.raw, s.threshold, s.windows_detected),
            (-4.0, NO_DETECTION_THRESHOLD, 0)
        );
    }

    #[test]
    fn only_the_first_detection_in_a_window_counts() {
        // Rows 40 and 45 both fire: only row 40 counts, raw = 1.0 (not 1.86).
        let both = raw_at(&[(40, 1.0), (45, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert!((both.raw - 1.0).abs() < 1e-12, "{both:?}");
        // Row 45 alone: position -(49-45+1)/10 = -0.5, S(-0.5)/S(-1) = 0.84828/0.98661 = 0.859793.
        let late = raw_at(&[(45, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert!((late.raw - 0.859793).abs() < 1e-6, "{late:?}");
        // Sweep: row 45 scores 0.9, row 40 scores 0.8. At 0.9 raw = 0.8598, at
        // 0.8 raw = 1.0 (earliest wins), so the optimiser picks 0.8.
        let (files, windows) = corpus(&[(40, 0.8), (45, 0.9)], &[(40, 49)]);
        let s = score_corpus(&files, &windows, &standard()).expect("valid");
        assert_eq!(s.threshold, 0.8);
        assert!((s.raw - 1.0).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn probationary_rows_are_not_scored() {
        // Row 10 < 15 probationary rows: its detection is ignored, raw = -1
        // (the miss only); the same detection at row 20 would cost -0.11.
        let s = raw_at(&[(10, 1.0)], &[(40, 49)], &standard(), 0.5);
        assert_eq!((s.raw, s.counts.fp), (-1.0, 0));
        assert_eq!(s.counts.tn + s.counts.fn_, 85);
    }

    #[test]
    fn normalisation_maps_null_to_0_and_perfect_to_100() {
        // Two windows: null = -2, perfect = 2. Hitting both starts: raw 2 -> 100.
        // Hitting one start: raw = 1 - 1 = 0 -> 100 * (0 + 2) / (2 + 2) = 50.
        let spans = [(30, 39), (60, 69)];
        let null = raw_at(&[], &spans, &standard(), 0.5);
        let perfect = raw_at(&[(30, 1.0), (60, 1.0)], &spans, &standard(), 0.5);
        let half = raw_at(&[(30, 1.0)], &spans, &standard(), 0.5);
        assert_eq!((null.null, null.perfect, null.normalized), (-2.0, 2.0, 0.0));
        assert!((perfect.normalized - 100.0).abs() < 1e-9, "{perfect:?}");
        assert!((half.normalized - 50.0).abs() < 1e-9, "{half:?}");
    }

    #[test]
    fn bad_input_is_reported_with_its_key() {
        let (mut files, windows) = corpus(&[], &[(40, 49)]);
        files[0].scores.pop();
        let err = score_corpus(&files, &windows, &standard()).expect_err("length mismatch");
        assert!(err.to_string().starts_with(KEY), "{err}");
        let (files, _) = corpus(&[], &[]);
        let unaligned = Windows::from([(KEY.to_owned(), vec![(30_000, 90_000)])]);
        let err = score_corpus(&files, &unaligned, &standard()).expect_err("unaligned window");
        assert!(err.to_string().contains("not a row timestamp"), "{err}");
    }

    #[test]
    fn parses_and_formats_nab_timestamps() {
        assert_eq!(parse_nab_time("1970-01-01 00:00:00"), Ok(0));
        // 2014-02-19 10:50 UTC = 1392807000 s (16120 days * 86400 + 39000).
        assert_eq!(
            parse_nab_time("2014-02-19 10:50:00.000000"),
            Ok(1_392_807_000_000)
        );
        assert_eq!(parse_nab_time("2000-03-01 00:00:00.5"), Ok(951_868_800_500));
        assert!(parse_nab_time("2014-02-30 00:00:00").is_err());
        assert_eq!(format_nab_time(1_392_807_000_000), "2014-02-19 10:50:00");
        assert_eq!(format_nab_time(-1), "1969-12-31 23:59:59.999000");
    }

    #[test]
    fn writes_results_csv_with_labels() {
        let (files, windows) = corpus(&[(40, 1.0)], &[(40, 49)]);
        let out = std::env::temp_dir().join(format!("nab_results_{}", std::process::id()));
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let path = write_results(&out, "recur", &files[0], &values, &windows).expect("write");
        assert_eq!(path, out.join("recur/cat/recur_f.csv"));
        let text = std::fs::read_to_string(&path).expect("read back");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "timestamp,value,anomaly_score,label");
        assert_eq!(lines[41], "1970-01-01 00:40:00,40,1,1");
        assert_eq!(lines[51], "1970-01-01 00:50:00,50,0,0");
        let _ = std::fs::remove_dir_all(&out);
    }

    /// Reads a NAB data CSV's timestamps.
    fn read_timestamps(path: &Path) -> Vec<i64> {
        let text = std::fs::read_to_string(path).expect("readable data file");
        let stamp =
            |line: &str| parse_nab_time(line.split(',').next().unwrap_or(line)).expect("timestamp");
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(stamp)
            .collect()
    }

    #[test]
    fn shared_corpus_null_scores_0_and_window_starts_score_100() {
        let shared = std::env::var("RECUR_SHARED_DIR").unwrap_or_else(|_| "../shared".into());
        let root = Path::new(&shared).join("data/nab");
        if !root.is_dir() {
            eprintln!(
                "skipping: {} not found (set RECUR_SHARED_DIR)",
                root.display()
            );
            return;
        }
        let windows = load_windows(&root.join("labels/combined_windows.json")).expect("windows");
        let profiles = load_profiles(&root.join("config/profiles.json")).expect("profiles");
        assert_eq!(profiles.len(), 3);
        let present = windows
            .keys()
            .filter(|k| root.join("data").join(k).is_file());
        let (mut null, mut starts) = (Vec::new(), Vec::new());
        for key in present {
            let timestamps = read_timestamps(&root.join("data").join(key));
            let zeros = vec![0.0; timestamps.len()];
            let mut hits = zeros.clone();
            for &(start, _) in &windows[key] {
                hits[timestamps
                    .iter()
                    .position(|&t| t == start)
                    .expect("aligned window")] = 1.0;
            }
            null.push(FileScores {
                key: key.clone(),
                timestamps: timestamps.clone(),
                scores: zeros,
            });
            starts.push(FileScores {
                key: key.clone(),
                timestamps,
                scores: hits,
            });
        }
        assert!(!null.is_empty(), "no data files under {}", root.display());
        for p in &profiles {
            let n = score_corpus(&null, &windows, p).expect("null scores");
            assert_eq!(n.normalized, 0.0, "{n:?}");
            let s = score_corpus(&starts, &windows, p).expect("start detector scores");
            assert!(s.normalized > 99.9 && s.normalized <= 100.0 + 1e-9, "{s:?}");
            eprintln!(
                "{}: null {:.2}, starts {:.4} ({} windows)",
                p.name, n.normalized, s.normalized, s.windows_total
            );
        }
    }
}
