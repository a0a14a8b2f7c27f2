//! The process-wide set of open videos (channels), keyed by path. Opening is
//! single-flight: sessions asking for the same video at once wait for one
//! header read. The set is bounded; videos no session holds are closed first,
//! and `close_idle` closes those unused for the idle timeout (their decoder
//! thread and caches go with them).

use crate::channel::{Channel, OpenError, Shared};
use crate::metrics::CHANNELS;
use crate::storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<Arc<Channel>>>;

pub struct Channels {
    storage: Arc<Storage>,
    shared: Arc<Shared>,
    next_id: std::sync::atomic::AtomicU64,
    slots: Mutex<HashMap<String, Slot>>,
    limit: usize,
}

impl Channels {
    pub fn new(storage: Arc<Storage>, shared: Shared, limit: usize) -> Self {
        Self {
            storage,
            shared: Arc::new(shared),
            next_id: Default::default(),
            slots: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// Drops decoders idle for `age` in every open video; how many.
    pub fn release_idle_decoders(&self, age: std::time::Duration) -> usize {
        let open: Vec<Arc<Channel>> =
            self.slots.lock().expect("channel map lock").values().filter_map(|slot| slot.get().cloned()).collect();
        open.iter().map(|channel| channel.release_idle_decoders(age)).sum()
    }

    /// Bytes the frame cache holds now.
    pub fn frame_cache_bytes(&self) -> u64 {
        self.shared.frames.bytes()
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The channel of `path`, opening the video if needed.
    pub async fn open(&self, path: &str) -> Result<Arc<Channel>, OpenError> {
        let path = self.storage.parse_path(path)?;
        let slot = self.slot(&path.text)?;
        let (storage, shared) = (self.storage.clone(), self.shared.clone());
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let opened = slot
            .get_or_try_init(|| async {
                let channel = Arc::new(Channel::open(id, storage, shared.clone(), path.clone()).await?);
                let reclaim: Arc<dyn crate::memory_budget::Reclaim> = channel.clone();
                shared.memory.register(Arc::downgrade(&reclaim));
                Ok(channel)
            })
            .await;
        match opened {
            Ok(channel) => Ok(channel.clone()),
            Err(error) => {
                // Failed opens leave no entry behind (a later upload may succeed).
                let mut slots = self.slots.lock().expect("channel map lock");
                if slots.get(&path.text).is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none()) {
                    slots.remove(&path.text);
                }
                metrics::gauge!(CHANNELS).set(slots.len() as f64);
                Err(error)
            }
        }
    }

    /// Closes channels that no session holds and that have not been asked for
    /// a frame for `idle`. Returns how many were closed.
    pub fn close_idle(&self, idle: std::time::Duration) -> usize {
        let mut slots = self.slots.lock().expect("channel map lock");
        let before = slots.len();
        slots.retain(|_, slot| match slot.get() {
            Some(channel) => Arc::strong_count(channel) > 1 || channel.idle_for() < idle,
            None => true, // still opening
        });
        metrics::gauge!(CHANNELS).set(slots.len() as f64);
        before - slots.len()
    }

    fn slot(&self, key: &str) -> Result<Slot, OpenError> {
        let mut slots = self.slots.lock().expect("channel map lock");
        if let Some(slot) = slots.get(key) {
            if slot.get().is_none_or(|channel| channel.is_usable()) {
                return Ok(slot.clone());
            }
            // Its decoder died and could not be rebuilt: open the video afresh.
            slots.remove(key);
        }
        if slots.len() >= self.limit {
            // Close videos nobody holds: only this map refers to them.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.get().is_some_and(|c| Arc::strong_count(c) > 1));
        }
        if slots.len() >= self.limit {
            return Err(OpenError::Refused(format!(
                "too many videos open in this process ({}); try again later",
                self.limit
            )));
        }
        let slot = Slot::default();
        slots.insert(key.to_string(), slot.clone());
        metrics::gauge!(CHANNELS).set(slots.len() as f64);
        Ok(slot)
    }
}
