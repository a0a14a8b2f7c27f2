//! Whether somebody is waiting for a piece of work. Requested frames are
//! urgent from the start; prefetched ones are not, until a request for the
//! same frame joins them. The decode thread and the encode slots serve urgent
//! work first, so work done ahead of need never delays a request.

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

    /// A client now waits for this work too: it becomes urgent.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_urgent(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
