//! Encoded frames shared by every session and video in the process:
//! a byte-bounded cache with single-flight loading, so a frame that several
//! requests want at once is decoded and encoded once and a repeat costs no
//! decoding at all.

use crate::metrics::{CACHE_HITS, CACHE_JOINS};
use bytes::Bytes;
use media::output::{Format, Output};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

/// A frame of one opened video at one output setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKey {
    /// Identifies the channel (a reopened video gets a new id).
    pub channel: u64,
    /// Decode-order position of the sample.
    pub position: u32,
    pub output: Output,
}

/// An encoded frame and the size it was encoded at.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Bytes,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone)]
struct ImageBytes;

impl Weighter<FrameKey, Image> for ImageBytes {
    fn weight(&self, _key: &FrameKey, image: &Image) -> u64 {
        image.bytes.len() as u64 + 96
    }
}

pub struct FrameCache {
    cache: Cache<FrameKey, Image, ImageBytes>,
    capacity_bytes: u64,
}

impl FrameCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let options = quick_cache::OptionsBuilder::new()
            // ~100 KB per JPEG is a fair guess for sizing the index; the weight bound is what counts.
            .estimated_items_capacity((capacity_bytes / 100_000).clamp(16, 1_000_000) as usize)
            .weight_capacity(capacity_bytes.max(1))
            // A frame made ahead of a reader is read once, seconds later: it
            // waits in the cache's probation ("cold") part, by default 3 % of
            // each shard (with a shard per 4 cores' worth, less than one
            // 1080p JPEG), where the next insertion into a full cache evicted
            // it before it was read. Half the cache and a few large shards
            // keep a GOP made ahead (`channel.rs`) until playback gets there.
            .hot_allocation(0.5)
            .shards(4)
            .build()
            .expect("valid frame cache options");
        let cache = Cache::with_options(options, ImageBytes, Default::default(), Default::default());
        Self { cache, capacity_bytes }
    }

    /// The most bytes it holds.
    pub fn capacity(&self) -> u64 {
        self.capacity_bytes
    }

    pub fn contains(&self, key: &FrameKey) -> bool {
        self.cache.contains_key(key)
    }

    /// Bytes held now (images and their keys).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn get(&self, key: &FrameKey) -> Option<Image> {
        self.cache.get(key)
    }

    /// The cached image, or the result of `load` (run once however many callers
    /// wait for the same key; failures are not cached).
    pub async fn get_or_load<E>(
        &self,
        key: FrameKey,
        load: impl std::future::Future<Output = Result<Image, E>>,
    ) -> Result<Image, E> {
        if let Some(image) = self.cache.get(&key) {
            metrics::counter!(CACHE_HITS).increment(1);
            return Ok(image);
        }
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .cache
            .get_or_insert_async(&key, async {
                loaded.store(true, std::sync::atomic::Ordering::Relaxed);
                load.await
            })
            .await;
        if result.is_ok() && !loaded.load(std::sync::atomic::Ordering::Relaxed) {
            // Another request was producing this frame: it was decoded once for both.
            metrics::counter!(CACHE_JOINS).increment(1);
        }
        result
    }
}
