//! Whether the stage is ready and whether it must stop: shared by the stage's
//! threads (which set it) and the HTTP endpoint (`/readyz`, `/healthz`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Readiness and the first fatal error.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    restoring: AtomicUsize,
    failed: AtomicBool,
    fatal: Mutex<Option<String>>,
}

impl Health {
    /// Marks the stage ready (it has joined its group and consumes).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the stage serves: it consumes, no assigned partition is still
    /// restoring its state, and nothing failed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.restoring.load(Ordering::Acquire) == 0
            && !self.failed()
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
}
