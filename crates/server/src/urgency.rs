//! Whether somebody is waiting for a piece of work. Requested frames are
//! urgent from the start; prefetched ones are not, until a request for the
//! same frame joins them. The decode thread and the encode slots serve urgent
//! work first, so work done ahead of need never delays a request; work a
//! client asked for at a lower rank becomes urgent after a while.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared between the work and whoever may raise it; clones see the same state.
#[derive(Debug, Clone)]
pub struct Urgency(Arc<AtomicBool>);

impl Urgency {
    /// A client is waiting for this work.
    pub fn requested() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// Work ahead of need (prefetch); it yields to requested work.
    pub fn ahead() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    /// Work a client asked for but that gives requested frames precedence
    /// (a thumbnail strip): ahead of need for `patience`, then urgent, so
    /// a stream of requests cannot hold it back for ever. Needs a Tokio runtime.
    pub fn ahead_for(patience: std::time::Duration) -> Self {
        let urgency = Self::ahead();
        let raised = urgency.clone();
        tokio::spawn(async move {
            tokio::time::sleep(patience).await;
            raised.raise();
        });
        urgency
    }

    /// A client now waits for this work too: it becomes urgent.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_urgent(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
