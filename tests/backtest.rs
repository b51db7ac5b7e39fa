//! `recur backtest` on the published ETTh2 online protocol, and the file-backtest
//! plumbing: outputs, seeds, errors that name the bad setting.

use std::path::PathBuf;

use recur::backtest::job::{self, ProgressBar};
use recur::config::Config;

fn data(file: &str) -> PathBuf {
    let shared = std::env::var_os("RECUR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("data").join(file)
}

/// The protocol flags of the issue, and nothing else.
fn protocol(horizon: usize) -> Config {
    let flags = format!(
        "[backtest]\ntime_column = \"date\"\nwarmup_rows = 2880\neval_rows = \"3600..14400\"\nnormalize = \"warmup\"\n[model]\nhorizon = {horizon}\n"
    );
    Config::load_with(None, flags.parse().unwrap()).unwrap()
}

#[test]
fn etth2_one_step_beats_naive_and_matches_published_figures() {
    let s = job::run_file(&protocol(1), &data("ETTh2.csv"), None, ProgressBar::Off).unwrap();
    eprintln!("ETTh2 H=1: {s:?}");
    assert_eq!(s.predictions, 10_800);
    assert_eq!(s.units, "normalized");
    // The naive baseline as ../shared/data/README.md gives it.
    assert!(
        (s.naive_mse - 0.4043).abs() <= 0.0005,
        "naive MSE {}",
        s.naive_mse
    );
    assert!(
        (s.naive_mae - 0.3363).abs() <= 0.0005,
        "naive MAE {}",
        s.naive_mae
    );
    assert!(
        (s.seasonal_mse - 2.557).abs() <= 0.001,
        "seasonal MSE {}",
        s.seasonal_mse
    );
    assert!(s.mse < s.naive_mse);
    assert!(s.mse <= 0.37, "MSE {} misses the 0.37 goal", s.mse);
}

#[test]
fn etth2_24_steps_without_look_ahead_beats_naive() {
    let s = job::run_file(&protocol(24), &data("ETTh2.csv"), None, ProgressBar::Off).unwrap();
    eprintln!("ETTh2 H=24: {s:?}");
    // Forecasts of rows t..t+23 made after row t-1, all 24 rows inside 3600..14400.
    assert_eq!(s.predictions, 10_777);
    assert!(
        (s.naive_mse - 1.818).abs() <= 0.001,
        "naive MSE {}",
        s.naive_mse
    );
    assert!(s.mse < s.naive_mse);
    assert!(s.mse <= 1.70, "MSE {} misses the 1.70 goal", s.mse);
}

#[test]
fn outputs_are_written_and_seeds_are_reported() {
    let dir = std::env::temp_dir().join(format!("recur-backtest-{}", std::process::id()));
    let mut cfg = protocol(3);
    cfg.backtest.eval_rows = "3600..4600".into();
    cfg.backtest.seeds = 2;
    let s = job::run_file(&cfg, &data("ETTh1.csv"), Some(&dir), ProgressBar::Off).unwrap();
    assert_eq!(s.seeds, 2);
    assert!(s.mse_std > 0.0, "two seeds gave identical results");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["per_step"].as_array().unwrap().len(), 3);
    assert_eq!(metrics["per_target"].as_array().unwrap().len(), 7);
    assert_eq!(metrics["per_seed"].as_array().unwrap().len(), 2);
    let first = metrics["per_seed"][0]["normalized"]["model"]["mse"]
        .as_f64()
        .unwrap();
    let second = metrics["per_seed"][1]["normalized"]["model"]["mse"]
        .as_f64()
        .unwrap();
    assert!(((first + second) / 2.0 - s.mse).abs() < 1e-12);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    // Every scored component of the first seed is in predictions.parquet: forecasts x 3 steps x 7 targets.
    let len = std::fs::metadata(dir.join("predictions.parquet"))
        .unwrap()
        .len();
    assert!(len > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_name_themselves() {
    let mut cfg = protocol(1);
    cfg.backtest.targets = vec!["NOPE".into()];
    let err = job::run_file(&cfg, &data("ETTh2.csv"), None, ProgressBar::Off)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOPE") && err.contains("OT"), "{err}");

    let mut cfg = protocol(1);
    cfg.backtest.eval_rows = "3600..99999".into();
    let err = job::run_file(&cfg, &data("ETTh2.csv"), None, ProgressBar::Off)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--eval-rows"), "{err}");

    let mut cfg = protocol(1);
    cfg.backtest.eval_rows = "12-40".into();
    let err = job::run_file(&cfg, &data("ETTh2.csv"), None, ProgressBar::Off)
        .unwrap_err()
        .to_string();
    assert!(err.contains("backtest.eval_rows"), "{err}");

    let err = Config::load_with(None, "[backtest]\nwarmup = 3\n".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("warmup"), "{err}");
}

#[test]
fn every_preset_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/presets");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 2, "presets missing from {}", dir.display());
}

/// `recur backtest --json` over a short stretch of ETTh1, with extra environment and flags.
fn cli_mse(env: &[(&str, &str)], flags: &[&str]) -> f64 {
    let csv = data("ETTh1.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["backtest", "--csv"])
        .arg(&csv)
        .args(["--time-column", "date", "--warmup-rows", "500"])
        .args(["--eval-rows", "500..1500", "--json", "--quiet"])
        .args(flags)
        .envs(env.iter().copied())
        .output()
        .expect("running recur backtest");
    assert!(
        out.status.success(),
        "recur backtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    v["mse"].as_f64().expect("an mse field")
}

#[test]
fn backtests_read_recur_variables_under_their_flags_as_the_stage_does() {
    let default = cli_mse(&[], &[]);
    let by_env = cli_mse(&[("RECUR_MODEL__UPDATE_EVERY", "16")], &[]);
    let by_flag = cli_mse(&[], &["--update-every", "16"]);
    assert_ne!(by_env, default, "the variable changed nothing");
    assert_eq!(by_env, by_flag, "variable and flag set the same key");
    let flag_wins = cli_mse(
        &[("RECUR_MODEL__UPDATE_EVERY", "16")],
        &["--update-every", "1"],
    );
    assert_eq!(flag_wins, default, "a flag overrides the environment");
}
