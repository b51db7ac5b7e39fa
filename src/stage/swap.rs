//! New weights without a restart: `state.init` (every partition's starting
//! weights, checked at start) and `state.watch` (a file watched for changes,
//! each change checked and published to every partition's worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

/// A checkpoint published to every partition without a restart (hot swap).
#[derive(Debug, Default)]
pub struct HotSwap {
    version: std::sync::atomic::AtomicU64,
    bytes: std::sync::Mutex<Option<std::sync::Arc<Vec<u8>>>>,
}

impl HotSwap {
    /// Publishes checkpoint bytes (already checked to fit the model).
    pub fn publish(&self, bytes: Vec<u8>) {
        *self.bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(bytes));
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many checkpoints were published so far.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The latest published checkpoint and its version.
    pub fn latest(&self) -> (u64, Option<std::sync::Arc<Vec<u8>>>) {
        // Version first: a publish in between makes the bytes newer, never older.
        let version = self.version();
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (version, bytes)
    }
}

/// Watches `state.watch`: each time the file changes, checks it fits the
/// model and publishes it to every partition (hot swap).
pub(super) fn watch(
    cfg: &Config,
    swap: Arc<HotSwap>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let path = std::path::PathBuf::from(&cfg.state.watch);
    let model = cfg.model.clone();
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // The file as it is at start is not a swap: `state.init` is for that.
    let mut seen = stamp(&path);
    tracing::info!("watching {} for new weights", path.display());
    Ok(std::thread::Builder::new()
        .name("recur-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = stamp(&path);
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                let checked = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| {
                        let mut probe = crate::model::Forecaster::<f32>::new(model.clone())
                            .map_err(anyhow::Error::msg)?;
                        crate::model::checkpoint::Reader::new(&bytes)
                            .and_then(|r| probe.load_weights(&r))?;
                        Ok((bytes, probe.shared().updates))
                    });
                match checked {
                    Ok((bytes, version)) => {
                        tracing::info!(
                            "state.watch: {} changed: loading it (model version {version}) into every partition",
                            path.display()
                        );
                        swap.publish(bytes);
                    }
                    Err(e) => tracing::warn!(
                        "state.watch: {} changed but was not loaded: {e:#}",
                        path.display()
                    ),
                }
            }
        })?)
}

/// Reads and checks `state.init`: the bytes every partition's learner starts from.
pub(super) fn load_init(cfg: &Config) -> anyhow::Result<Option<Arc<Vec<u8>>>> {
    if cfg.state.init.is_empty() {
        return Ok(None);
    }
    let path = &cfg.state.init;
    let bytes =
        std::fs::read(path).with_context(|| format!("state.init = {path:?}: cannot read"))?;
    let mut probe =
        crate::model::Forecaster::<f32>::new(cfg.model.clone()).map_err(anyhow::Error::msg)?;
    crate::model::checkpoint::Reader::new(&bytes)
        .and_then(|r| probe.load_weights(&r))
        .with_context(|| format!("state.init = {path:?} does not fit the [model] settings"))?;
    tracing::info!(
        "every partition starts from the weights in {path} (model version {})",
        probe.shared().updates
    );
    Ok(Some(Arc::new(bytes)))
}
