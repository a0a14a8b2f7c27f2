//! The process's memory budget (`--memory-budget`): what decoders, fetched
//! bytes, indexes and the frame cache may hold together, so a pod's memory
//! limit is never reached by any mix of requests.
//!
//! The frame cache gets a fixed share (its own byte bound, at most a quarter
//! of the budget). Everything else reserves its bytes before it allocates
//! them and gives them back when dropped (`Reservation`): a decoder its
//! picture buffers at its video's resolution, a storage read its bytes
//! (held until the last copy of them is dropped), an open video its index.
//! When a reservation does not fit, the budget first takes back what nobody
//! is using: idle decoders, then cached GOP bytes, of the videos unused the
//! longest first (`Reclaim`). What still does not fit is refused; the
//! caller answers `busy`.

use crate::metrics::{MEMORY_BUDGET, MEMORY_HELD, MEMORY_RECLAIMED, MEMORY_REFUSALS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What holds reserved memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Decoders: their picture buffers and the pictures they keep.
    Decoders,
    /// Bytes read from storage (GOPs), cached or being decoded.
    Spans,
    /// The indexes of open videos.
    Indexes,
    /// Thumbnail sprites being laid out (their YUV planes).
    Thumbnails,
}

impl Holder {
    const ALL: [Holder; 4] = [Holder::Decoders, Holder::Spans, Holder::Indexes, Holder::Thumbnails];

    fn label(self) -> &'static str {
        match self {
            Holder::Decoders => "decoders",
            Holder::Spans => "spans",
            Holder::Indexes => "indexes",
            Holder::Thumbnails => "thumbnails",
        }
    }
}

/// What the budget can take back from an open video.
pub trait Reclaim: Send + Sync {
    /// How long since the video was last used (the longest idle give first).
    fn idle_for(&self) -> Duration;
    /// Drops the decoders no job is using.
    fn drop_idle_decoders(&self);
    /// Drops the cached bytes no read is filling right now.
    fn drop_cached_bytes(&self);
}

pub struct MemoryBudget {
    /// Bytes reservations may hold in all (the budget less the frame cache's share).
    limit: u64,
    held: AtomicU64,
    by_holder: [AtomicU64; Holder::ALL.len()],
    reclaimers: Mutex<Vec<Weak<dyn Reclaim>>>,
}

/// Bytes held against the budget until dropped.
#[must_use]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    holder: Holder,
    bytes: u64,
}

/// The frame cache's share: its configured bytes, at most this fraction of the budget.
const FRAME_CACHE_SHARE_DIVISOR: u64 = 4;

impl MemoryBudget {
    /// A budget of `total` bytes, of which the frame cache takes
    /// `frame_cache_bytes` (returned with the budget, capped to its share).
    pub fn new(total: u64, frame_cache_bytes: u64) -> (Arc<Self>, u64) {
        let frames = frame_cache_bytes.min(total / FRAME_CACHE_SHARE_DIVISOR);
        metrics::gauge!(MEMORY_BUDGET).set(total as f64);
        let budget = Self {
            limit: total - frames,
            held: AtomicU64::new(0),
            by_holder: Default::default(),
            reclaimers: Mutex::new(Vec::new()),
        };
        for holder in Holder::ALL.map(Holder::label).into_iter().chain(["frames"]) {
            metrics::gauge!(MEMORY_HELD, "holder" => holder).set(0.0);
        }
        (Arc::new(budget), frames)
    }

    /// Registers an open video whose idle memory may be taken back.
    pub fn register(&self, video: Weak<dyn Reclaim>) {
        let mut reclaimers = self.lock_reclaimers();
        reclaimers.retain(|video| video.strong_count() > 0);
        reclaimers.push(video);
    }

    fn lock_reclaimers(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Reclaim>>> {
        self.reclaimers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves `bytes` for `holder`, taking back idle memory if needed;
    /// `None` when it cannot fit.
    pub fn reserve(self: &Arc<Self>, holder: Holder, bytes: u64) -> Option<Reservation> {
        if let Some(reservation) = self.try_reserve(holder, bytes) {
            return Some(reservation);
        }
        if bytes <= self.limit {
            // Idle times read once: they grow while we sort, and a key that
            // changes under the sort makes it panic (on a decode thread).
            let mut videos: Vec<(Duration, Arc<dyn Reclaim>)> = self
                .lock_reclaimers()
                .iter()
                .filter_map(Weak::upgrade)
                .map(|video| (video.idle_for(), video))
                .collect();
            videos.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
            let steps: [fn(&dyn Reclaim); 2] = [|v| v.drop_idle_decoders(), |v| v.drop_cached_bytes()];
            for step in steps {
                for (_, video) in &videos {
                    step(video.as_ref());
                    if let Some(reservation) = self.try_reserve(holder, bytes) {
                        metrics::counter!(MEMORY_RECLAIMED).increment(1);
                        return Some(reservation);
                    }
                }
            }
        }
        None
    }

    /// Counts a request answered `busy` because `holder` found no memory.
    pub fn refused(holder: Holder) {
        metrics::counter!(MEMORY_REFUSALS, "holder" => holder.label()).increment(1);
    }

    /// Reserves `bytes` for `holder` if they fit as things are, taking
    /// nothing back (for what is only worth having while memory is free).
    pub fn try_reserve(self: &Arc<Self>, holder: Holder, bytes: u64) -> Option<Reservation> {
        let fits = |held: u64| held.checked_add(bytes).filter(|&total| total <= self.limit);
        self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).ok()?;
        self.change(holder, bytes, true);
        Some(Reservation { budget: self.clone(), holder, bytes })
    }

    fn change(&self, holder: Holder, bytes: u64, add: bool) {
        let counter = &self.by_holder[holder as usize];
        let now = if add {
            counter.fetch_add(bytes, Ordering::AcqRel) + bytes
        } else {
            counter.fetch_sub(bytes, Ordering::AcqRel) - bytes
        };
        metrics::gauge!(MEMORY_HELD, "holder" => holder.label()).set(now as f64);
    }

    /// Bytes reservations hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        budget.change(self.holder, self.bytes, false);
    }
}

/// Bytes that keep their reservation for as long as any copy of them lives.
pub fn reserved_bytes(bytes: bytes::Bytes, reservation: Reservation) -> bytes::Bytes {
    struct Owned {
        bytes: bytes::Bytes,
        _reservation: Reservation,
    }
    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    bytes::Bytes::from_owner(Owned { bytes, _reservation: reservation })
}

/// The budget when none is given: three quarters of the cgroup's memory
/// limit (the rest is the program, its runtime and the allocator's slack),
/// else half of the machine's memory.
pub fn default_budget() -> u64 {
    match cgroup_limit() {
        Some(limit) => limit / 4 * 3,
        None => machine_memory().unwrap_or(4 << 30) / 2,
    }
}

/// The memory limit of this process's cgroup (v2, else v1), if it has one.
fn cgroup_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    // v1 reports "no limit" as a huge number.
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|&l| l < 1 << 60)
}

fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Video {
        idle: Duration,
        decoder: Mutex<Option<Reservation>>,
        cached: Mutex<Option<Reservation>>,
        log: Arc<Mutex<Vec<String>>>,
        name: &'static str,
    }

    impl Reclaim for Video {
        fn idle_for(&self) -> Duration {
            self.idle
        }
        fn drop_idle_decoders(&self) {
            if self.decoder.lock().unwrap().take().is_some() {
                self.log.lock().unwrap().push(format!("{} decoder", self.name));
            }
        }
        fn drop_cached_bytes(&self) {
            if self.cached.lock().unwrap().take().is_some() {
                self.log.lock().unwrap().push(format!("{} bytes", self.name));
            }
        }
    }

    #[test]
    fn a_reservation_that_does_not_fit_takes_idle_decoders_then_cached_bytes_longest_idle_first() {
        let (budget, frames) = MemoryBudget::new(1200, 400);
        assert_eq!(frames, 300, "the frame cache gets at most a quarter");
        let log = Arc::new(Mutex::new(Vec::new()));
        let video = |name, idle_secs, decoder, cached| {
            Arc::new(Video {
                idle: Duration::from_secs(idle_secs),
                decoder: Mutex::new(budget.reserve(Holder::Decoders, decoder)),
                cached: Mutex::new(budget.reserve(Holder::Spans, cached)),
                log: log.clone(),
                name,
            })
        };
        let recent = video("recent", 1, 300, 100);
        let old = video("old", 60, 300, 100);
        for video in [&recent, &old] {
            budget.register(Arc::downgrade(&(video.clone() as Arc<dyn Reclaim>)));
        }
        assert_eq!(budget.held(), 800);
        let held = budget.reserve(Holder::Decoders, 300).expect("the old video's decoder makes room");
        assert_eq!(*log.lock().unwrap(), ["old decoder"]);
        let more = budget.reserve(Holder::Decoders, 450).expect("then every idle decoder, then cached bytes");
        assert_eq!(*log.lock().unwrap(), ["old decoder", "recent decoder", "old bytes"]);
        assert_eq!(budget.held(), 100 + 300 + 450);
        assert!(budget.reserve(Holder::Decoders, 901).is_none(), "larger than the budget");
        assert!(budget.reserve(Holder::Decoders, u64::MAX).is_none(), "a size that would wrap the total");
        assert!(budget.reserve(Holder::Decoders, 300).is_none(), "only memory in use left");
        drop((held, more));
        assert_eq!(budget.held(), 0);
    }

    /// A video in use: its idle time differs at every look.
    struct Busy(AtomicU64);

    impl Reclaim for Busy {
        fn idle_for(&self) -> Duration {
            let looks = self.0.fetch_add(1, Ordering::Relaxed);
            Duration::from_millis(looks.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
        }
        fn drop_idle_decoders(&self) {}
        fn drop_cached_bytes(&self) {}
    }

    #[test]
    fn reclaiming_from_videos_whose_idle_time_moves_while_it_looks_does_not_panic() {
        let (budget, _) = MemoryBudget::new(1000, 0);
        let videos: Vec<Arc<dyn Reclaim>> = (0..64).map(|n| Arc::new(Busy(AtomicU64::new(n))) as _).collect();
        for video in &videos {
            budget.register(Arc::downgrade(video));
        }
        let _held = budget.reserve(Holder::Decoders, 900).unwrap();
        for _ in 0..20 {
            assert!(budget.reserve(Holder::Decoders, 200).is_none(), "nothing to take back");
        }
    }

    #[test]
    fn reserved_bytes_hold_their_reservation_until_the_last_copy_is_dropped() {
        let (budget, _) = MemoryBudget::new(1 << 20, 0);
        let reservation = budget.reserve(Holder::Spans, 5).unwrap();
        let bytes = reserved_bytes(bytes::Bytes::from_static(b"hello"), reservation);
        let copy = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(budget.held(), 5);
        assert_eq!(&copy[..], b"el");
        drop(copy);
        assert_eq!(budget.held(), 0);
    }
}
