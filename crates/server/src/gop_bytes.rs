//! Fetching one video's GOP bytes from storage: a cache of recently fetched
//! spans (`span_cache.rs`) and a lock per span being read, so requests for
//! the same GOP read it once while a read of one GOP never delays a frame
//! of another (or a frame whose bytes are already here).
//!
//! Every read holds its bytes against the memory budget for as long as any
//! copy of them lives, and is bounded (`MAX_SPAN_BYTES`): a crafted index
//! cannot make one request read a multi-gigabyte object into memory.
//!
//! Reads are timed; `read_ahead_gops` turns the recent read time into how
//! many GOPs sequential playback should have in hand, so a slow or distant
//! bucket is read further ahead.

use crate::failure::{Failure, FrameFailure};
use crate::memory_budget::{Holder, MemoryBudget};
use crate::metrics::{Timer, FETCH_SECONDS};
use crate::span_cache::SpanCache;
use crate::storage::{Storage, VideoPath};
use bytes::Bytes;
use media::Span;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest run of bytes one frame may need (its IRAP to itself). Real GOPs
/// are far smaller.
const MAX_SPAN_BYTES: u64 = 256 << 20;
/// Fetched GOP bytes kept per video.
const SPAN_CACHE_BYTES: usize = 32 << 20;
/// A read extends a held span when less than this is held past the frame.
pub const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Most GOPs sequential playback reads ahead, however slow storage is.
const MAX_READ_AHEAD_GOPS: u32 = 4;
/// Storage read time that is worth one more GOP read ahead.
const READ_TIME_PER_GOP_AHEAD: std::time::Duration = std::time::Duration::from_millis(15);

pub struct GopBytes {
    storage: Arc<Storage>,
    path: VideoPath,
    memory: Arc<MemoryBudget>,
    cache: Mutex<SpanCache>,
    /// One lock per span start being read (see the module header).
    reading: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent read times, microseconds (moving average).
    read_micros: AtomicU64,
}

impl GopBytes {
    pub fn new(storage: Arc<Storage>, path: VideoPath, memory: Arc<MemoryBudget>) -> Self {
        Self {
            storage,
            path,
            memory,
            cache: Mutex::new(SpanCache::new(SPAN_CACHE_BYTES)),
            reading: Mutex::new(HashMap::new()),
            read_micros: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SpanCache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes covering `needed` and, for read-ahead, up to `wanted_end`: from
    /// the cache, by extending a cached span with just the missing tail, or
    /// with one new range read.
    pub async fn covering(&self, needed: Range<u64>, wanted_end: u64) -> Result<Span, FrameFailure> {
        if needed.end - needed.start > MAX_SPAN_BYTES {
            return Err(FrameFailure::new(
                Failure::TooLarge,
                format!(
                    "decoding this frame needs {} bytes from its keyframe on, more than the {MAX_SPAN_BYTES} allowed",
                    needed.end - needed.start
                ),
            ));
        }
        let held = self.cache().find(&needed);
        if let Some(span) = held.as_ref().filter(|span| enough(span, &needed, wanted_end)) {
            return Ok(span.clone());
        }
        // Whoever reads this span's bytes first reads them for everyone waiting here.
        let key = held.map_or(needed.start, |span| span.range().start);
        let lock = ReadLock { reading: &self.reading, key, lock: self.reading_lock(key) };
        let _reading = lock.lock.lock().await;
        self.fetch(&needed, wanted_end).await
    }

    fn reading_lock(&self, key: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.reading.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(key).or_default().clone()
    }

    /// `covering`'s work under the span's lock (the cache may have changed meanwhile).
    async fn fetch(&self, needed: &Range<u64>, wanted_end: u64) -> Result<Span, FrameFailure> {
        let Some(mut span) = self.cache().find(needed) else {
            let span = Span::new(needed.start, self.read(needed.start..wanted_end).await?);
            self.cache().insert(span.clone());
            return Ok(span);
        };
        if !enough(&span, needed, wanted_end) {
            let held_end = span.range().end;
            span.extend(self.read(held_end..wanted_end).await?);
            // Playback goes on from GOP to GOP in one span: what lies before this frame's decode start goes.
            span.drop_before(needed.start);
            self.cache().insert(span.clone());
        }
        Ok(span)
    }

    /// Reads `range`; its bytes hold a reservation of the memory budget
    /// for as long as any copy of them lives.
    async fn read(&self, range: Range<u64>) -> Result<Bytes, FrameFailure> {
        let Some(memory) = self.memory.reserve(Holder::Spans, range.end - range.start) else {
            MemoryBudget::refused(Holder::Spans);
            return Err(FrameFailure::new(
                Failure::Busy,
                "no memory for this frame's bytes: the memory budget is full of bytes in use; try again later",
            ));
        };
        let _timer = Timer::new(FETCH_SECONDS);
        let started = std::time::Instant::now();
        let bytes = self
            .storage
            .read_range(&self.path, range)
            .await
            .map_err(|e| FrameFailure::new(Failure::StorageError, e.to_string()))?;
        let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u64;
        let average = self.read_micros.load(Ordering::Relaxed);
        let average = if average == 0 { micros } else { (average * 3 + micros) / 4 };
        self.read_micros.store(average, Ordering::Relaxed);
        Ok(crate::memory_budget::reserved_bytes(bytes, memory))
    }

    /// GOPs sequential playback should have in hand beyond the current one:
    /// one, and one more per `READ_TIME_PER_GOP_AHEAD` that reads take.
    pub fn read_ahead_gops(&self) -> u32 {
        let read_time = std::time::Duration::from_micros(self.read_micros.load(Ordering::Relaxed));
        let more = (read_time.as_micros() / READ_TIME_PER_GOP_AHEAD.as_micros()) as u32;
        (1 + more).min(MAX_READ_AHEAD_GOPS)
    }

    /// Drops the cached spans (the memory budget needs the room); spans
    /// being decoded stay with their decoders until done.
    pub fn drop_cached(&self) {
        self.cache().clear();
    }
}

/// A caller's hold on the lock of the span at `key`; the last one gone,
/// finished or cancelled (a closed session drops its request), removes it.
struct ReadLock<'a> {
    reading: &'a Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    key: u64,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for ReadLock<'_> {
    fn drop(&mut self) {
        let mut reading = self.reading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if Arc::strong_count(&self.lock) == 2 {
            reading.remove(&self.key); // only the map and this caller hold it
        }
    }
}

/// Whether `span` covers the frame and holds either all that was asked for
/// or half the read-ahead window (so long GOPs are not read sample by sample).
fn enough(span: &Span, needed: &Range<u64>, wanted_end: u64) -> bool {
    let held_end = span.range().end;
    span.covers(needed) && (held_end >= wanted_end || held_end >= needed.end + READ_AHEAD_BYTES / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_budget::MemoryBudget;

    fn bytes_of(file: &std::path::Path) -> GopBytes {
        let storage = Arc::new(Storage::local(file.parent().unwrap()).unwrap());
        let path = storage.parse_path(file.file_name().unwrap().to_str().unwrap()).unwrap();
        GopBytes::new(storage, path, MemoryBudget::new(1 << 30, 0).0)
    }

    #[tokio::test]
    async fn a_span_s_read_lock_goes_with_its_last_holder_finished_or_abandoned() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let gop = bytes_of(&video.path);
        let (a, b) = tokio::join!(gop.covering(1000..5000, 9000), gop.covering(1000..5000, 9000));
        assert_eq!(a.unwrap().range(), b.unwrap().range());
        assert!(gop.reading.lock().unwrap().is_empty());

        // A reader waiting for a span another is reading gives up (its session closed); then the other finishes.
        let key = 20_000;
        let reader = ReadLock { reading: &gop.reading, key, lock: gop.reading_lock(key) };
        let reading = reader.lock.lock().await;
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(20), gop.covering(key..30_000, 30_000));
        assert!(abandoned.await.is_err(), "it waited for the span's lock");
        assert_eq!(gop.reading.lock().unwrap().get(&key).map(Arc::strong_count), Some(2), "the map and the reader");
        drop(reading);
        drop(reader);
        assert!(gop.reading.lock().unwrap().is_empty(), "a lock was left behind");
    }
}
