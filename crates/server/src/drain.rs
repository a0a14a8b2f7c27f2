//! Graceful shutdown (SIGTERM in a rolling restart). Owns the drain's
//! timeline, so every part stops within `--drain-secs` of the signal:
//!
//! 1. at once: `/readyz` answers 503 and new WebSocket sessions are refused
//!    (503, so a proxy tries another server); HTTP requests are still served;
//! 2. each session stops reading, finishes the frames it was asked for, then
//!    closes with 1012 (service restart); clients reconnect and re-ask what
//!    is unanswered (docs/protocol.md);
//! 3. at `session_cutoff` (3 s before the end) sessions still busy close
//!    anyway, with the same code;
//! 4. once every session is gone (or 1 s before the end) the listener stops
//!    and lets HTTP requests in progress finish; the process exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Time a closing session needs after its cutoff (close frame, closing handshake).
const SESSION_CLOSE: Duration = Duration::from_secs(2);
/// Time the listener keeps for HTTP requests after the sessions.
const HTTP_CLOSE: Duration = Duration::from_secs(1);

pub struct Drain {
    total: Duration,
    /// When the drain began (`None` before), watched by the sessions.
    began: watch::Sender<Option<Instant>>,
}

impl Drain {
    /// A drain that may take `total` from the signal to the exit.
    pub fn new(total: Duration) -> Self {
        Self { total, began: watch::Sender::new(None) }
    }

    /// Starts the drain (once; later calls change nothing).
    pub fn begin(&self) {
        self.began.send_if_modified(|began| {
            let first = began.is_none();
            began.get_or_insert_with(Instant::now);
            first
        });
    }

    fn began(&self) -> Option<Instant> {
        *self.began.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.began().is_some()
    }

    /// Resolves when the drain begins.
    pub fn started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut watching = self.began.subscribe();
        async move {
            let _ = watching.wait_for(Option::is_some).await;
        }
    }

    /// When sessions still finishing their frames must close anyway.
    pub fn session_cutoff(&self) -> Option<Instant> {
        let end = self.total.saturating_sub(SESSION_CLOSE + HTTP_CLOSE);
        self.began().map(|began| began + end)
    }

    /// The latest a session may still spend closing.
    pub fn sessions_end(&self) -> Option<Instant> {
        self.began().map(|began| began + self.total.saturating_sub(HTTP_CLOSE))
    }

    /// Waits until `sessions` is zero or the sessions' time is up.
    pub async fn sessions_closed(&self, sessions: &AtomicUsize) {
        let Some(end) = self.sessions_end() else { return };
        while sessions.load(Ordering::Acquire) > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the listener has left for HTTP requests once sessions are done.
    pub fn http_time_left(&self) -> Duration {
        let end = self.began().map_or(Instant::now(), |began| began + self.total);
        end.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timeline_fits_in_the_total() {
        let drain = Drain::new(Duration::from_secs(10));
        assert!(!drain.is_draining());
        assert!(drain.session_cutoff().is_none());
        let started = drain.started();
        drain.begin();
        tokio::time::timeout(Duration::from_secs(1), started).await.expect("the drain began");
        let cutoff = drain.session_cutoff().unwrap();
        let sessions_end = drain.sessions_end().unwrap();
        assert!(cutoff < sessions_end);
        let until_cutoff = cutoff.saturating_duration_since(Instant::now());
        assert!(until_cutoff > Duration::from_secs(6) && until_cutoff <= Duration::from_secs(7));
        assert!(drain.http_time_left() <= Duration::from_secs(10));
        // A late subscriber sees the drain already under way.
        tokio::time::timeout(Duration::from_secs(1), drain.started()).await.expect("already draining");
    }

    #[tokio::test]
    async fn waits_for_the_last_session() {
        let drain = Drain::new(Duration::from_secs(10));
        drain.begin();
        let sessions = std::sync::Arc::new(AtomicUsize::new(1));
        let closing = sessions.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            closing.store(0, Ordering::Release);
        });
        let waited = Instant::now();
        drain.sessions_closed(&sessions).await;
        assert!(waited.elapsed() >= Duration::from_millis(200) && waited.elapsed() < Duration::from_secs(2));
    }
}
