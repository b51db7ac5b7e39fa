//! `recur train` pretrains on a file and saves a checkpoint; `recur run --init`
//! starts every partition from it, and refuses one that does not fit.

use std::path::PathBuf;
use std::sync::Arc;

use recur::backtest::job::{self, ProgressBar};
use recur::config::Config;
use recur::model::Forecaster;
use recur::stage::{self, LiveLine};

fn etth1() -> PathBuf {
    let shared = std::env::var_os("RECUR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("data/ETTh1.csv")
}

#[test]
fn a_trained_checkpoint_warm_starts_the_stage() {
    let dir = std::env::temp_dir().join(format!("recur-warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("model.ckpt");
    let mut cfg = Config::load(None).unwrap();
    cfg.backtest.columns = vec!["OT".into()];
    let s = job::train_file(&cfg, &etth1(), &ckpt, ProgressBar::Off).unwrap();
    assert_eq!(s.rows, 17_420);
    let trained = Forecaster::<f32>::load(&ckpt).unwrap();
    assert_eq!(
        trained.shared().updates,
        17_419,
        "one update per event after the first"
    );
    assert_eq!(trained.layout().tensors[0].shape, vec![128, 1]);

    // The stage accepts it (shapes match the default single-value model) ...
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[metrics]\naddr = \"127.0.0.1:{port}\"\n[state]\ninit = \"{}\"\n",
        ckpt.display()
    );
    let run_cfg = Config::load_with(None, text.parse().unwrap()).unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        stage::run(run_cfg, async move { s2.notified().await }, LiveLine::Quiet)
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.notify_one();
    handle
        .join()
        .unwrap()
        .expect("the stage starts from the checkpoint");

    // ... and refuses one that does not fit, naming the setting.
    let text = format!(
        "[model]\nhidden = 16\n[metrics]\naddr = \"127.0.0.1:{port}\"\n[state]\ninit = \"{}\"\n",
        ckpt.display()
    );
    let bad = Config::load_with(None, text.parse().unwrap()).unwrap();
    let err = stage::run(bad, async {}, LiveLine::Quiet).unwrap_err();
    assert!(format!("{err:#}").contains("state.init"), "{err:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
