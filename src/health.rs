//! Whether the stage is ready and whether it must stop: shared by the stage's
//! threads (which set it) and the HTTP endpoint (`/readyz`, `/healthz`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness and the first fatal error.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    failed: AtomicBool,
    fatal: Mutex<Option<String>>,
}

impl Health {
    /// Marks the stage ready (it has joined its group and consumes).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the stage consumes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records an error that must stop the stage, and logs it. The first one
    /// is the one reported; every one is logged.
    pub fn fail(&self, message: String) {
        tracing::error!("{message}");
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(message);
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
