//! Whether the stage is ready and whether it must stop: shared by the stage's
//! threads (which set it) and the HTTP endpoint (`/readyz`, `/healthz`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the broker may be unreachable before `/readyz` turns 503, by default.
pub const BROKER_LOSS: Duration = Duration::from_secs(30);

/// Readiness and the first fatal error.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    restoring: AtomicUsize,
    failed: AtomicBool,
    fatal: Mutex<Option<String>>,
    /// Since when no broker has been reachable, if none is.
    lost: Mutex<Option<Instant>>,
    broker_loss: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(BROKER_LOSS)
    }
}

impl Health {
    /// Health whose readiness ends once no broker was reachable for `broker_loss`.
    pub fn new(broker_loss: Duration) -> Self {
        Health {
            ready: AtomicBool::new(false),
            restoring: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            fatal: Mutex::new(None),
            lost: Mutex::new(None),
            broker_loss,
        }
    }

    /// Records whether any broker is reachable now (from the client's statistics).
    pub fn broker_seen(&self, reachable: bool) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match (reachable, *lost) {
            (true, Some(since)) => {
                tracing::info!("brokers reachable again after {:.0?}", since.elapsed());
                *lost = None;
            }
            (false, None) => *lost = Some(Instant::now()),
            _ => {}
        }
    }

    /// Why the stage does not serve, if it does not: see [`Health::is_ready`].
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(e) = self.fatal() {
            return Err(format!("failed: {e}"));
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Err("no partitions assigned yet".into());
        }
        let restoring = self.restoring.load(Ordering::Acquire);
        if restoring > 0 {
            return Err(format!("{restoring} partition(s) restoring their state"));
        }
        let lost = *self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match lost {
            Some(since) if since.elapsed() >= self.broker_loss => Err(format!(
                "no broker reachable for {:.0?} (run.broker_loss = {:?})",
                since.elapsed(),
                self.broker_loss
            )),
            _ => Ok(()),
        }
    }

    /// Marks the stage ready (it has joined its group and consumes).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the stage serves: it consumes, no assigned partition is still
    /// restoring its state, nothing failed, and a broker was reachable within
    /// the broker-loss bound.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Counts a partition as restoring until the returned guard is dropped.
    pub fn restoring(self: &Arc<Self>) -> Restoring {
        self.restoring.fetch_add(1, Ordering::AcqRel);
        Restoring(self.clone())
    }

    /// Records an error that must stop the stage. The first one is reported
    /// and logged as an error; later ones (an outage fails every record in
    /// flight) log at debug only.
    pub fn fail(&self, message: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!("{message}");
            *f = Some(message);
        } else {
            tracing::debug!("also: {message}");
        }
        self.failed.store(true, Ordering::Release);
    }

    /// Whether an error stops the stage (cheap: for loops).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The error that stops the stage, if any.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A partition restoring its state: `/readyz` stays 503 while one lives.
#[derive(Debug)]
pub struct Restoring(Arc<Health>);

impl Drop for Restoring {
    fn drop(&mut self) {
        self.0.restoring.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_partition_restored_and_never_when_failed() {
        let h = Arc::new(Health::default());
        assert!(!h.is_ready(), "not before the group assigned partitions");
        let (a, b) = (h.restoring(), h.restoring());
        h.set_ready();
        assert!(!h.is_ready(), "two partitions still restoring");
        drop(a);
        assert!(!h.is_ready(), "one still restoring");
        drop(b);
        assert!(h.is_ready());
        h.fail("boom".into());
        assert!(!h.is_ready() && h.fatal().as_deref() == Some("boom"));
    }

    #[test]
    fn a_broker_lost_for_longer_than_the_bound_ends_readiness() {
        let h = Health::new(Duration::from_millis(200));
        h.set_ready();
        h.broker_seen(false);
        assert!(h.is_ready(), "a short loss is tolerated");
        std::thread::sleep(Duration::from_millis(250));
        h.broker_seen(false);
        let why = h.readiness().unwrap_err();
        assert!(why.contains("no broker reachable"), "{why}");
        h.broker_seen(true);
        assert!(h.is_ready(), "ready again once a broker is back");
    }
}
