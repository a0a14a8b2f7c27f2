//! Whether this process should be sent traffic (`GET /readyz`): storage must
//! answer. Checked at start and then periodically, so wrong credentials, a
//! missing bucket or an unreachable endpoint show as "not ready" with the
//! reason in the body (in words safe for anyone who can reach the probe;
//! the full error is in the log).

use crate::metrics::READY;
use crate::storage::Storage;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often storage is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

pub struct Readiness {
    /// `None` when ready, else why not.
    not_ready: Mutex<Option<String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { not_ready: Mutex::new(Some("storage has not been checked yet".into())) }
    }
}

impl Readiness {
    /// `Ok` when ready, else the reason.
    pub fn state(&self) -> Result<(), String> {
        match &*self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
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
        metrics::gauge!(READY).set(if next.is_none() { 1.0 } else { 0.0 });
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
