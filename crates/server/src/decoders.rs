//! One video's decoders: up to a per-video limit of positioned players, so
//! viewers of a busy video decode side by side instead of queueing behind
//! one decoder. A job is given the player already positioned before its
//! frame (same run of the stream, or the picture kept), else the least
//! recently used one, else a new one while under the limit. A job in the
//! group of pictures a busy decoder is working in, at most a little ahead
//! of its frame, waits for that decoder instead (a second decoder would
//! decode the same pictures again). Players share
//! nothing mutable; each belongs to one job at a time. Idle players are
//! dropped after a short time (`release_idle`), so an open video nobody
//! watches holds no decoder memory; the next job makes a new one.
//!
//! A player that panicked is dropped, never reused. If a new player cannot
//! be made, the video reports itself broken and is reopened.

use media::{Player, VideoIndex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one job cost the decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    /// Pictures decoded.
    pub decoded: u64,
    /// Pictures a seek did not feed (referenced by nothing).
    pub skipped: u64,
    /// Whether the job restarted decoding at a decode start (a seek).
    pub seeked: bool,
}

impl Work {
    /// This work and `more` (the same job's next time slice).
    pub fn and(self, more: Work) -> Work {
        Work {
            decoded: self.decoded + more.decoded,
            skipped: self.skipped + more.skipped,
            seeked: self.seeked || more.seeked,
        }
    }
}

type MakePlayer = dyn Fn() -> anyhow::Result<Player> + Send + Sync;
type OnWork = dyn Fn(Work) + Send + Sync;

pub struct Decoders {
    pub index: Arc<VideoIndex>,
    make: Box<MakePlayer>,
    on_work: Box<OnWork>,
    limit: usize,
    state: Mutex<State>,
    broken: AtomicBool,
}

/// Decode positions within which a job waits for a busy decoder working
/// towards a frame before it, rather than seeking with another decoder: the
/// busy one, continuing, reaches it (also across a GOP boundary, where a
/// second decoder would decode the new GOP's start again), while frames
/// further apart are decoded side by side.
const NEAR_SAMPLES: u32 = 32;
#[derive(Default)]
struct State {
    idle: Vec<Idle>,
    /// One entry per player out with a job (or being made for one): its
    /// run's decode start and the job's target.
    working: Vec<(u32, u32)>,
}

struct Idle {
    player: Player,
    last_used: Instant,
}

/// A player for one job: an idle one, or a slot to make a new one in.
pub enum Checkout {
    Ready(Player),
    MakeNew,
}

impl Decoders {
    /// `first` is the player made while opening the video (it proves the
    /// stream decodes); `make` makes more; `on_work` hears what jobs cost.
    pub fn new(
        index: Arc<VideoIndex>,
        first: Player,
        limit: usize,
        make: impl Fn() -> anyhow::Result<Player> + Send + Sync + 'static,
        on_work: impl Fn(Work) + Send + Sync + 'static,
    ) -> Self {
        let state = State { idle: vec![Idle { player: first, last_used: Instant::now() }], ..State::default() };
        Self {
            index,
            make: Box::new(make),
            on_work: Box::new(on_work),
            limit: limit.max(1),
            state: Mutex::new(state),
            broken: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a job for decode position `target` could start now.
    pub fn can_take(&self, target: u32) -> bool {
        let state = self.lock();
        let free = !state.idle.is_empty() || state.working.len() < self.limit;
        free && !self.near_busy(&state, target)
    }

    /// Whether a busy player's run, which started at or before `target`'s
    /// decode start, is working towards a frame shortly before `target` or
    /// past it: when it is back it is positioned for `target`, or holds its picture.
    fn near_busy(&self, state: &State, target: u32) -> bool {
        let Some(start) = self.decode_start(target) else { return false };
        state
            .working
            .iter()
            .any(|&(run_start, working_on)| run_start <= start && target <= working_on.saturating_add(NEAR_SAMPLES))
    }

    /// Where a seek to decode position `target` starts (`None` past the index).
    fn decode_start(&self, target: u32) -> Option<u32> {
        self.index.samples.get(target as usize).map(|sample| sample.decode_from.min(target))
    }

    /// Takes the best player for decode position `target` (see the module
    /// header), or a slot to make one; `None` when all are out.
    pub fn check_out(&self, target: u32) -> Option<Checkout> {
        let mut state = self.lock();
        let seek_start = self.decode_start(target).unwrap_or(target);
        let positioned = state.idle.iter().position(|idle| idle.player.continues_to(&self.index, target));
        let least_recent = state.idle.iter().enumerate().min_by_key(|(_, idle)| idle.last_used).map(|(at, _)| at);
        let (checkout, run_start) = if let Some(at) = positioned {
            let player = state.idle.swap_remove(at).player;
            let run_start = player.run_start().unwrap_or(seek_start);
            (Checkout::Ready(player), run_start)
        } else if let Some(at) = least_recent {
            (Checkout::Ready(state.idle.swap_remove(at).player), seek_start)
        } else if state.working.len() < self.limit {
            (Checkout::MakeNew, seek_start)
        } else {
            return None;
        };
        state.working.push((run_start, target));
        Some(checkout)
    }

    /// A new player for a `MakeNew` slot; a failure marks the video broken.
    pub fn make(&self) -> anyhow::Result<Player> {
        (self.make)().inspect_err(|_| self.broken.store(true, Ordering::Relaxed))
    }

    /// Gives a player back after its job for `target`.
    pub fn check_in(&self, target: u32, player: Player) {
        let mut state = self.lock();
        Self::done(&mut state, target);
        state.idle.push(Idle { player, last_used: Instant::now() });
    }

    /// Frees the slot of the player of the job for `target`, which is gone
    /// (it panicked, or could not be made).
    pub fn forget(&self, target: u32) {
        Self::done(&mut self.lock(), target);
    }

    fn done(state: &mut State, target: u32) {
        if let Some(at) = state.working.iter().position(|&(_, working_on)| working_on == target) {
            state.working.swap_remove(at);
        }
    }

    pub fn report(&self, work: Work) {
        (self.on_work)(work);
    }

    /// Drops players idle for `age` or longer; how many.
    pub fn release_idle(&self, age: Duration) -> usize {
        let mut state = self.lock();
        let before = state.idle.len();
        state.idle.retain(|idle| idle.last_used.elapsed() < age);
        before - state.idle.len()
    }

    /// Players in existence (idle or out with a job).
    pub fn count(&self) -> usize {
        let state = self.lock();
        state.idle.len() + state.working.len()
    }

    /// False once a player could not be made (the video is reopened).
    pub fn is_usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }
}
