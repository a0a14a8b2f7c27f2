//! Whether this process should be sent traffic (`GET /readyz`): storage must
//! answer. Checked at start and then periodically, so wrong credentials, a
//! missing bucket or an unreachable endpoint show as "not ready" with the
//! reason in the body (in words safe for anyone who can reach the probe;
//! the full error is in the log). From SIGTERM on it stays "shutting down".

use crate::metrics::READY;
use crate::storage::Storage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often storage is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

pub struct Readiness {
    /// `None` when ready, else why not.
    not_ready: Mutex<Option<String>>,
    /// Set for good when the drain begins.
    shutting_down: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            not_ready: Mutex::new(Some("storage has not been checked yet".into())),
            shutting_down: AtomicBool::new(false),
        }
    }
}

impl Readiness {
    /// `Ok` when ready, else the reason.
    pub fn state(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match &*self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// Not ready from now on: the process is draining.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        metrics::gauge!(READY).set(0.0);
    }

    fn set(&self, state: Result<(), String>) {
        let mut current = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        let next = state.err();
        if *current != next {
            match &next {
                None => tracing::info!("ready: storage answers"),
                Some(reason) => tracing::warn!(reason, "not ready"),
            }
        }
        let ready = next.is_none() && !self.shutting_down.load(Ordering::Acquire);
        metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
        *current = next;
    }

    /// Checks storage now and every `CHECK_EVERY`, for as long as the task runs.
    pub async fn watch(self: Arc<Self>, storage: Arc<Storage>) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            let checked = tokio::time::timeout(CHECK_EVERY, storage.check()).await;
            self.set(match checked {
                Ok(Ok(())) => Ok(()),
                Ok(Err(kind)) => Err(format!("storage is not answering: {kind}")),
                Err(_) => Err(format!("storage is not answering: no answer within {} s", CHECK_EVERY.as_secs())),
            });
        }
    }
}
