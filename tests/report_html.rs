//! The backtest report opened in a real browser: headless Chromium must load
//! the page without a single console message and find every chart in it.
//!
//! Needs `/usr/bin/chromium` (Debian package `chromium`). Without it the tests
//! print a notice and pass, except under `CI=true`, where they fail.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use recur::backtest::report::{self, MetricRow, ReportData, RollingPanel, SeriesPanel, StepError};

const CHROMIUM: &str = "/usr/bin/chromium";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "recur-report-html-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the browser is installed; under `CI=true` its absence is a failure.
fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{CHROMIUM} not found: CI must install the Debian package `chromium` \
             (apt-get install -y chromium) for the report_html tests"
        );
    }
    eprintln!(
        "notice: {CHROMIUM} not found, skipping the browser check of report.html \
         (install it with `apt-get install -y chromium`)"
    );
    false
}

/// What Chromium printed for one page.
struct Loaded {
    dom: String,
    stderr: String,
}

/// Loads `page` in headless Chromium with a fresh profile and returns the DOM it dumped.
///
/// Panics if the browser fails or is still running after [`TIMEOUT`].
fn load(page: &Path, dir: &TempDir) -> Loaded {
    let stem = page.file_stem().unwrap().to_string_lossy();
    let profile = dir.0.join(format!("profile-{stem}"));
    std::fs::create_dir_all(&profile).unwrap();
    let (out_path, err_path) = (
        dir.0.join(format!("{stem}.dom")),
        dir.0.join(format!("{stem}.stderr")),
    );
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox", // needed as root, e.g. in CI containers
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(file_url(page))
        .stdin(Stdio::null())
        // Files, not pipes: a chatty browser can never block on a full pipe.
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        // Its own process group, so a timeout can take down the renderer and GPU processes too.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium still running after {TIMEOUT:?} on {}; stderr:\n{}",
                page.display(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "chromium exited with {status} on {}; stderr:\n{stderr}",
        page.display()
    );
    Loaded {
        dom: std::fs::read_to_string(&out_path).unwrap(),
        stderr,
    }
}

/// `file://` URL of an absolute path, percent-encoding all but unreserved bytes and `/`.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_str().expect("temp paths are UTF-8").bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                url.push(b as char)
            }
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    url
}

/// Chromium's log lines for the page's console messages.
///
/// Chromium 156 prints `[pid:tid:time:INFO:CONSOLE:12] "text", source: file:///... (12)`
/// for every level (log, warn and error all come out as INFO), and older builds
/// `INFO:CONSOLE(12)`. The report has no script, so any console line is a problem:
/// an error, or the page's Content-Security-Policy blocking an external load.
/// (Plain `ERROR` lines are useless here: Chromium logs D-Bus failures as ERROR.)
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// A backtest of a noisy sine: the model is slightly off, naive repeats the previous actual.
fn sample() -> ReportData {
    let n = 6000;
    let season = 24;
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let actual: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64;
            10.0 + 3.0 * (t * std::f64::consts::TAU / season as f64).sin()
                + 0.4 * (t * 0.37).sin() * (t * 0.011).cos()
        })
        .collect();
    let forecast: Vec<f64> = (0..n)
        .map(|i| actual[i] + 0.25 * (i as f64 * 0.9).sin() + 0.05)
        .collect();
    let naive: Vec<f64> = (0..n)
        .map(|i| if i == 0 { f64::NAN } else { actual[i - 1] })
        .collect();
    let seasonal: Vec<f64> = (0..n)
        .map(|i| {
            if i < season {
                f64::NAN
            } else {
                actual[i - season] * 0.98
            }
        })
        .collect();

    let window = 96;
    let rolling = |pred: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| {
                let lo = (i + 1).saturating_sub(window);
                let errs: Vec<f64> = (lo..=i)
                    .map(|j| (pred[j] - actual[j]).powi(2))
                    .filter(|e| e.is_finite())
                    .collect();
                if errs.is_empty() {
                    f64::NAN
                } else {
                    errs.iter().sum::<f64>() / errs.len() as f64
                }
            })
            .collect()
    };
    let panel = |name: &str, lo: usize, hi: usize| SeriesPanel {
        name: name.to_string(),
        x: x[lo..hi].to_vec(),
        actual: actual[lo..hi].to_vec(),
        forecast: forecast[lo..hi].to_vec(),
        naive: Some(naive[lo..hi].to_vec()),
        bands: Vec::new(),
    };
    let metric = |scope: &str, mse: f64, mae: f64, smape: f64, mase: f64| MetricRow {
        scope: scope.to_string(),
        units: "original".to_string(),
        mse,
        mae,
        rmse: mse.sqrt(),
        smape,
        mase,
    };
    ReportData {
        title: "recur backtest: ETTh2.csv <&> \"quoted\"".to_string(),
        summary: vec![
            ("rows".to_string(), n.to_string()),
            ("predictions".to_string(), (n - 24).to_string()),
            ("mse".to_string(), "0.03378".to_string()),
            ("naive_mse".to_string(), "0.6112".to_string()),
            ("elapsed".to_string(), "1.23 s".to_string()),
        ],
        series: vec![
            panel("OT, first 500 rows", 0, 500),
            panel("OT, last 500 rows", n - 500, n),
            panel("OT, all rows", 0, n),
        ],
        rolling: Some(RollingPanel {
            window,
            x: x.clone(),
            model: rolling(&forecast),
            naive: rolling(&naive),
            seasonal: Some(rolling(&seasonal)),
            linear: None,
        }),
        coverage: None,
        by_step: (1..=24)
            .map(|step| StepError {
                step,
                model_mse: 0.03 + 0.004 * step as f64,
                naive_mse: 0.6
                    * (1.0
                        + (step as f64 * std::f64::consts::TAU / 24.0 - 1.3)
                            .sin()
                            .abs()
                            * 8.0),
                seasonal_mse: Some(0.2),
                linear_mse: None,
            })
            .collect(),
        metrics: vec![
            metric("model, all streams", 0.033781, 0.1502, 1.37, 0.31),
            metric("naive, all streams", 0.61124, 0.6604, 6.12, 1.0),
            metric("seasonal, all streams", 0.20031, 0.3511, 3.3, 0.54),
        ],
        per_stream: Vec::new(),
        notes: vec![
            "cell = lstm, hidden = 64, layers = 1".to_string(),
            "tbptt = 48, horizon = 24, optimiser = adam (lr 0.001)".to_string(),
        ],
    }
}

#[test]
fn report_loads_in_chromium_with_every_chart_and_no_console_message() {
    if !chromium_available() {
        return;
    }
    let dir = TempDir::new("report");
    let data = sample();
    let page = dir.0.join("report.html");
    report::write(&data, &page).unwrap();
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 500_000, "report.html is {size} bytes");

    let loaded = load(&page, &dir);
    let console = console_lines(&loaded.stderr);
    assert!(
        console.is_empty(),
        "console messages while loading report.html:\n{}",
        console.join("\n")
    );

    let dom = &loaded.dom;
    let series = data.series.len();
    assert_eq!(dom.matches("<svg").count(), series + 2, "one svg per chart");
    assert_eq!(dom.matches("<svg class=\"chart series\"").count(), series);
    assert_eq!(dom.matches("<svg class=\"chart rolling\"").count(), 1);
    assert_eq!(dom.matches("<svg class=\"chart by-step\"").count(), 1);
    assert_eq!(dom.matches("role=\"img\"").count(), series + 2);
    assert_eq!(
        dom.matches("<rect ").count(),
        24 * 3,
        "model, naive and seasonal bars per step"
    );
    assert!(
        dom.contains("<h1>recur backtest: ETTh2.csv &lt;&amp;&gt; \"quoted\"</h1>"),
        "title escaped once"
    );
    assert!(dom.contains("The model beats every baseline."));
    assert!(!dom.contains("NaN"));
}

#[test]
fn console_check_catches_errors_and_external_loads() {
    if !chromium_available() {
        return;
    }
    let dir = TempDir::new("selfcheck");

    // A deliberate console.error must show up in what the check reads.
    let error_page = dir.0.join("console-error.html");
    std::fs::write(
        &error_page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>t</title></head>\
         <body><p>x</p><script>console.error(\"deliberate report_html error\")</script></body></html>",
    )
    .unwrap();
    let loaded = load(&error_page, &dir);
    let console = console_lines(&loaded.stderr);
    assert!(
        console
            .iter()
            .any(|l| l.contains("deliberate report_html error")),
        "a deliberate console.error was not detected; chromium stderr:\n{}",
        loaded.stderr
    );

    // The report's Content-Security-Policy must turn any external load into a console line.
    let html = report::render(&sample()).replacen(
        "<body>",
        "<body><img alt=\"\" src=\"https://example.invalid/pixel.png\">",
        1,
    );
    let leaky_page = dir.0.join("leaky-report.html");
    std::fs::write(&leaky_page, html).unwrap();
    let loaded = load(&leaky_page, &dir);
    let console = console_lines(&loaded.stderr);
    assert!(
        console.iter().any(|l| l.contains("example.invalid")),
        "an external image in the report was not reported; chromium stderr:\n{}",
        loaded.stderr
    );
}
