//! What indexing one object may cost, and the typed reasons it can refuse a
//! file. A container's sizes, counts and offsets are untrusted: a sample
//! table may promise billions of entries, a box size may wrap, a stream may
//! never end. Every indexer checks its work against a `Budget` (time and
//! sample count) and reports a bad file as `Corrupt` with what was wrong,
//! so the server can answer `corrupt` or `too_large` instead of aborting,
//! spinning or allocating what the object cannot hold.

use std::time::{Duration, Instant};

/// The file's own structure is inconsistent (sizes that wrap or overrun the
/// object, counts the data cannot hold, tables out of order).
#[derive(Debug, thiserror::Error)]
#[error("corrupt file: {0}")]
pub struct Corrupt(pub String);

/// Indexing the file would take more time or memory than allowed.
#[derive(Debug, thiserror::Error)]
#[error("too large to index: {0}")]
pub struct OverBudget(pub String);

/// Returns a `Corrupt` error with a formatted reason.
#[macro_export]
macro_rules! corrupt {
    ($($arg:tt)*) => { anyhow::Error::from($crate::budget::Corrupt(format!($($arg)*))) };
}

/// Limits for indexing one object.
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Instant,
    /// Most samples (frames) one video may have.
    pub max_samples: usize,
}

/// About 19 hours at 60 frames per second; the index then holds ~300 MB.
pub const DEFAULT_MAX_SAMPLES: usize = 1 << 22;
pub const DEFAULT_TIME: Duration = Duration::from_secs(60);

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_TIME, DEFAULT_MAX_SAMPLES)
    }
}

impl Budget {
    pub fn new(time: Duration, max_samples: usize) -> Self {
        Self { deadline: Instant::now() + time, max_samples }
    }

    /// Fails once the time is up.
    pub fn check_time(&self) -> anyhow::Result<()> {
        if Instant::now() > self.deadline {
            return Err(OverBudget("indexing took longer than allowed".into()).into());
        }
        Ok(())
    }

    /// Fails when `count` samples would be more than allowed.
    pub fn check_samples(&self, count: u64) -> anyhow::Result<()> {
        if count > self.max_samples as u64 {
            return Err(OverBudget(format!("{count} samples, more than the {} allowed", self.max_samples)).into());
        }
        Ok(())
    }
}
