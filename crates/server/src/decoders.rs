//! One video's decoders: up to a per-video limit of positioned players, so
//! viewers of a busy video decode side by side instead of queueing behind
//! one decoder. A job is given the positioned player with the least left to
//! decode before its frame (same run of the stream, or the picture kept),
//! else one another player has overtaken in its own run, else the least
//! recently used one (a request) or a new one while under the limit. A job
//! in the group of pictures a busy decoder is working in, at most a little
//! ahead of its frame (work ahead of need: anywhere after it), waits for
//! that decoder instead (a second decoder would decode the same pictures
//! again), unless it starts the next group of pictures and a thread has
//! nothing else to do (`can_start_beside`: a lone reader's next GOP decodes
//! on another core). Work ahead of need does not run a player on into a
//! group whose leading pictures it would drop (open GOP). Players share
//! nothing mutable; each belongs to one job at a time. Idle players are
//! dropped after a short time (`release_idle`), so an open video nobody
//! watches holds no decoder memory; the next job makes a new one.
//!
//! Every player holds a reservation of the memory budget for what it may
//! allocate (`Player::memory_needed`); one that cannot get it is not made
//! (`NoMemory`: the job waits for memory), and the budget may drop idle
//! players of any video to make room.
//!
//! Players are narrow (one thread, or slice threads: a decode thread per
//! core never oversubscribes), except that a job the pool would otherwise
//! leave cores idle beside may be widened (`Widening`: frame threads over
//! them, when their memory is free as things are): a frame asked for on
//! its own of a stream without wavefronts, or playback in groups of
//! pictures too long for the next one to be decoded beside. A widened
//! player goes on while positioned; under load it is narrowed at its next
//! seek, or where its run enters the next group of pictures.
//!
//! A player that panicked is dropped, never reused. If a new player cannot
//! be made, the video reports itself broken and is reopened.

use crate::memory_budget::{Holder, MemoryBudget, Reservation};
use crate::urgency::Urgency;
use media::{Player, Threading, VideoIndex};
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
    /// Whether it decoded with frame threads over idle decode threads (`Widening`).
    pub widened: bool,
    /// Time on a decode thread.
    pub busy: Duration,
}

impl Work {
    /// This work and `more` (the same job's next time slice).
    pub fn and(self, more: Work) -> Work {
        Work {
            decoded: self.decoded + more.decoded,
            skipped: self.skipped + more.skipped,
            seeked: self.seeked || more.seeked,
            widened: self.widened || more.widened,
            busy: self.busy + more.busy,
        }
    }
}

type MakePlayer = dyn Fn(Threading) -> anyhow::Result<Player> + Send + Sync;
type OnWork = dyn Fn(Work) + Send + Sync;

/// A new decoder would not fit in the memory budget.
#[derive(Debug, thiserror::Error)]
#[error("no memory for another decoder: the memory budget is full of decoders and bytes in use")]
pub struct NoMemory;

/// How a job with idle cores beside it is decoded: frame threads over them
/// (one thread leaves the cores idle), for the kinds of job it names.
#[derive(Debug, Clone, Copy)]
pub struct Widening {
    pub threading: Threading,
    /// What such a player holds beyond a narrow one.
    pub extra_bytes: u64,
    /// Whether a frame asked for on its own is widened (a stream without
    /// wavefronts: slice threads already spread the others' pictures, and
    /// seek quicker than frame threads).
    pub seeks: bool,
    /// Whether frames among others (playback, batches) are widened: the
    /// stream's groups of pictures are long (`long_gops`), so a reader's
    /// next one is rarely decoded beside the current one.
    pub runs: bool,
}

/// Samples per keyframe from which a stream's groups of pictures count as
/// long: x265's and x264's default 250; 1-2 s GOPs are decoded side by side.
const LONG_GOP_SAMPLES: usize = 64;

/// Samples a run may have fed and still restart widened when playback
/// starts there (its first frame was a narrow seek): re-decoding them costs
/// less than a long group of pictures on one core.
const YOUNG_RUN_SAMPLES: u32 = 8;

/// Whether `index`'s groups of pictures are long on average (`Widening::runs`).
pub fn long_gops(index: &VideoIndex) -> bool {
    let keyframes = index.samples.iter().filter(|sample| sample.keyframe).count();
    index.samples.len() >= LONG_GOP_SAMPLES.saturating_mul(keyframes.max(1))
}

pub struct Decoders {
    pub index: Arc<VideoIndex>,
    make: Box<MakePlayer>,
    /// The threading of players not widened.
    narrow: Threading,
    widening: Option<Widening>,
    memory: Arc<MemoryBudget>,
    /// What each player reserves.
    player_bytes: u64,
    on_work: Box<OnWork>,
    /// Tells whether decoding the next group of pictures beside a busy run
    /// pays (`Costs::decoding_holds_back`).
    side_by_side_test: Box<dyn Fn() -> bool + Send + Sync>,
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
    /// One entry per player out with a job (or being made for one).
    working: Vec<Working>,
}

struct Idle {
    player: Player,
    last_used: Instant,
    memory: Reservation,
    /// What a widened player holds beyond a narrow one.
    wide_memory: Option<Reservation>,
    /// Its job's time slice ended and the job will take it up again: the
    /// memory budget leaves it alone for `RESUME_GRACE`.
    resumes: bool,
}

/// How long the player of a job between time slices is kept from the memory budget's reclaim.
const RESUME_GRACE: Duration = Duration::from_secs(2);

impl Idle {
    fn reclaimable(&self) -> bool {
        !self.resumes || self.last_used.elapsed() >= RESUME_GRACE
    }
}

struct Working {
    /// Where the player's run of decoding started.
    run_start: u32,
    /// The job's frame.
    target: u32,
    /// The player's share of the memory budget.
    memory: Reservation,
    wide_memory: Option<Reservation>,
}

/// What `Decoders::new` needs to make players within the memory budget.
pub struct PlayerMemory {
    pub budget: Arc<MemoryBudget>,
    /// What each player reserves.
    pub bytes: u64,
    /// The reservation of the player made while opening.
    pub first: Reservation,
}

/// A player for one job: an idle one, or a slot to make a new one in, and
/// the threading it decodes the job with (a player that seeks for it may
/// be widened or narrowed).
pub enum Checkout {
    Ready(Player, Threading),
    MakeNew(Threading),
}

impl Decoders {
    /// `first` is the player made while opening the video (it proves the
    /// stream decodes); `make` makes more, threaded as it is told; `on_work` hears what jobs cost.
    pub fn new(
        index: Arc<VideoIndex>,
        (first, memory): (Player, PlayerMemory),
        limit: usize,
        make: impl Fn(Threading) -> anyhow::Result<Player> + Send + Sync + 'static,
        on_work: impl Fn(Work) + Send + Sync + 'static,
        side_by_side_pays: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        let narrow = first.threading();
        let first =
            Idle { player: first, last_used: Instant::now(), memory: memory.first, wide_memory: None, resumes: false };
        let state = State { idle: vec![first], ..State::default() };
        Self {
            index,
            make: Box::new(make),
            narrow,
            widening: None,
            memory: memory.budget,
            player_bytes: memory.bytes,
            on_work: Box::new(on_work),
            side_by_side_test: Box::new(side_by_side_pays),
            limit: limit.max(1),
            state: Mutex::new(state),
            broken: AtomicBool::new(false),
        }
    }

    /// Lets jobs with idle cores beside them be decoded as `widening` says (none: never).
    pub fn widened_when_alone(mut self, widening: Option<Widening>) -> Self {
        self.widening = widening;
        self
    }

    /// Whether a player decoding with `threading` is widened.
    pub fn is_wide(&self, threading: Threading) -> bool {
        self.widening.is_some_and(|widening| widening.threading == threading)
    }

    /// How many of the pool's threads a job decoding with `threading` keeps
    /// busy: a widened player's frame threads, else one.
    pub fn threads_used(&self, threading: Threading) -> usize {
        match threading {
            Threading::Frame(count) if self.is_wide(threading) => count,
            _ => 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a job for decode position `target` could start now: a player
    /// is free and no busy one is about to reach it. Work ahead of need also
    /// waits for a busy run that has reached its decode start, however far
    /// it has to go on (a prefetch of a GOP's later frames must not seek a
    /// second decoder into the GOP the first is decoding).
    pub fn can_take(&self, target: u32, urgency: &Urgency) -> bool {
        let state = self.lock();
        let Some(start) = self.decode_start(target) else { return Self::free(&state, self.limit) };
        let waits = |working: &Working| {
            if urgency.is_urgent() {
                Self::near(working, start, target)
            } else {
                Self::reaches(working, start, target)
            }
        };
        Self::free(&state, self.limit) && !state.working.iter().any(waits)
    }

    /// Whether a job for `target`, which `can_take` makes wait for a busy
    /// player, could instead start a run of its own beside it: a player is
    /// free and `target` decodes from an IRAP that no busy player's frame
    /// has reached. A busy run would reach it only by going on into the
    /// next group of pictures; a second decoder starting there costs the
    /// IRAP again but decodes that group on another core at the same time
    /// (a lone reader's next GOP, a batch's later GOPs) when decoding is
    /// what holds the reader back (`side_by_side_pays`); elsewhere it
    /// would only decode the IRAPs, and an open GOP's leading pictures,
    /// twice. The pool offers this only to a thread that has nothing else to do.
    pub fn can_start_beside(&self, target: u32) -> bool {
        if !self.side_by_side_pays() {
            return false;
        }
        let state = self.lock();
        let Some(start) = self.decode_start(target) else { return false };
        Self::free(&state, self.limit) && state.working.iter().all(|working| working.target < start)
    }

    /// Whether decoding groups of pictures side by side speeds this video's
    /// readers up: decoding, not encoding, holds them back.
    pub fn side_by_side_pays(&self) -> bool {
        (self.side_by_side_test)()
    }

    /// Whether a job for `target` that cannot start now waits for the player
    /// of the busy job for `mine`: no other busy run reaches it, and `mine`'s
    /// run does not come to it after its own frame (giving way would then
    /// only throw away the frame before it).
    pub fn waits_for(&self, target: u32, mine: u32) -> bool {
        let state = self.lock();
        let Some(start) = self.decode_start(target) else { return false };
        let others_reach =
            state.working.iter().any(|working| working.target != mine && Self::reaches(working, start, target));
        let mine_comes_to_it =
            state.working.iter().any(|working| working.target == mine && working.run_start <= start && mine < target);
        !others_reach && !mine_comes_to_it
    }

    fn free(state: &State, limit: usize) -> bool {
        !state.idle.is_empty() || state.working.len() < limit
    }

    /// Whether `working`'s run, which started at or before `target`'s
    /// decode start `start`, is working towards a frame shortly before
    /// `target` or past it: when it is back it is positioned for `target`,
    /// or holds its picture.
    fn near(working: &Working, start: u32, target: u32) -> bool {
        working.run_start <= start && target <= working.target.saturating_add(NEAR_SAMPLES)
    }

    /// Whether `working`'s run comes to `target` (decoded from `start`): it
    /// is near, or has passed `start` in the same run, however far it has to go on.
    fn reaches(working: &Working, start: u32, target: u32) -> bool {
        Self::near(working, start, target) || (working.run_start <= start && start <= working.target)
    }

    /// Where a seek to decode position `target` starts (`None` past the index).
    pub fn decode_start(&self, target: u32) -> Option<u32> {
        self.index.samples.get(target as usize).map(|sample| sample.decode_from.min(target))
    }

    /// Takes the best player for decode position `target` (see the module
    /// header), or a slot to make one with its memory reserved; `Ok(None)`
    /// when all are out, `NoMemory` when a new one would not fit now. A
    /// player that seeks for the job is widened when the pool has nothing
    /// else to do (`pool_idle`), the job is of a kind `Widening` widens
    /// (`alone`: asked for on its own) and the extra memory is free, else
    /// narrow.
    pub fn check_out(
        &self,
        target: u32,
        urgency: &Urgency,
        (alone, pool_idle): (bool, bool),
    ) -> Result<Option<Checkout>, NoMemory> {
        let widen = pool_idle
            && self.widening.is_some_and(|widening| match (alone, urgency.is_urgent()) {
                (true, true) => widening.seeks,
                (true, false) => false, // a thumbnail's keyframe: one picture, nothing to spread
                (false, _) => widening.runs,
            });
        let mut state = self.lock();
        let seek_start = self.decode_start(target).unwrap_or(target);
        // Under load a widened player does not take its frame threads into
        // the next group of pictures: the job seeks there narrow. A lone
        // reader's playback does not go on with a narrow player that has just
        // begun its run (a seek of a wavefront stream): it restarts widened.
        let young = |player: &Player| {
            let (Some(start), Some(next)) = (player.run_start(), player.next_to_feed()) else { return false };
            next.saturating_sub(start) <= YOUNG_RUN_SAMPLES
        };
        let threaded_right = |player: &Player| {
            if player.holds(&self.index, target) {
                return true;
            }
            match (widen, self.is_wide(player.threading())) {
                (false, true) => player.run_start().is_some_and(|run| seek_start <= run),
                (true, false) => alone || !young(player),
                _ => true,
            }
        };
        // Of the players positioned for it, the one with the least left to decode.
        let positioned = (state.idle.iter().enumerate())
            .filter_map(|(at, idle)| Some((at, idle.player.samples_to(&self.index, target)?, &idle.player)))
            .filter(|&(_, _, player)| threaded_right(player))
            .filter(|&(_, _, player)| urgency.is_urgent() || !self.runs_over_leading_pictures(player, target))
            .min_by_key(|&(_, left, _)| left)
            .map(|(at, _, _)| at);
        let least_recent = |overtaken_only: bool| {
            (state.idle.iter().enumerate())
                .filter(|(_, idle)| !overtaken_only || Self::overtaken(&state, &idle.player))
                .min_by_key(|(_, idle)| (idle.resumes, idle.last_used))
                .map(|(at, _)| at)
        };
        // To seek: a player another one is ahead of in its own run first (a
        // sequential reader's decoder left behind at the end of the last
        // GOP, not the one its next frames need). A request may then take
        // the least recently used one. Work ahead of need does not move a
        // player from the front of its run while another one works (that
        // one comes back overtaken soon): it makes a new one, or waits.
        let players = state.idle.len() + state.working.len();
        let may_move_a_front = urgency.is_urgent() || (players >= self.limit && state.working.is_empty());
        let reuse =
            positioned.or_else(|| least_recent(true)).or_else(|| least_recent(false).filter(|_| may_move_a_front));
        let (checkout, run_start, memory, wide_memory) = if let Some(at) = reuse {
            let idle = state.idle.swap_remove(at);
            if positioned.is_some() {
                let (run_start, threading) = (idle.player.run_start().unwrap_or(seek_start), idle.player.threading());
                (Checkout::Ready(idle.player, threading), run_start, idle.memory, idle.wide_memory)
            } else {
                let (threading, wide_memory) = self.threading_of_seek(widen, idle.wide_memory);
                (Checkout::Ready(idle.player, threading), seek_start, idle.memory, wide_memory)
            }
        } else if players < self.limit {
            // Reserving may drop idle players, of this video too: not under its lock.
            drop(state);
            let memory = self.memory.reserve(Holder::Decoders, self.player_bytes).ok_or(NoMemory)?;
            let (threading, wide_memory) = self.threading_of_seek(widen, None);
            state = self.lock();
            (Checkout::MakeNew(threading), seek_start, memory, wide_memory)
        } else {
            return Ok(None);
        };
        state.working.push(Working { run_start, target, memory, wide_memory });
        Ok(Some(checkout))
    }

    /// The threading a player seeks with, holding `wide_memory` if widened
    /// before: wide when `widen` and the extra memory is (or stays) held.
    fn threading_of_seek(&self, widen: bool, wide_memory: Option<Reservation>) -> (Threading, Option<Reservation>) {
        let Some(widening) = self.widening.filter(|_| widen) else { return (self.narrow, None) };
        match wide_memory.or_else(|| self.memory.try_reserve(Holder::Decoders, widening.extra_bytes)) {
            Some(memory) => (widening.threading, Some(memory)),
            None => (self.narrow, None),
        }
    }

    /// A new player for a `MakeNew` slot; a failure marks the video broken.
    pub fn make(&self, threading: Threading) -> anyhow::Result<Player> {
        (self.make)(threading).inspect_err(|_| self.broken.store(true, Ordering::Relaxed))
    }

    /// Whether `player` would reach `target` only by running on from an
    /// earlier group of pictures into one that starts with leading pictures
    /// decoded from the group before (RASL, open GOP) that it has not fed
    /// yet: it would output them on the way and drop them before a reader
    /// asks for them. Work ahead of need does not do that (it starts beside
    /// at the IRAP instead); the player stays positioned for the requests of
    /// those pictures. A player already past them is simply positioned.
    fn runs_over_leading_pictures(&self, player: &Player, target: u32) -> bool {
        let Some(start) = self.decode_start(target) else { return false };
        if player.holds(&self.index, target) {
            return false;
        }
        // Leading pictures follow their IRAP before any trailing one (the HEVC
        // spec's order): the first picture after the IRAP the player has not
        // fed says whether any are left. One look, not a walk over them (a
        // hostile file may list millions), under the lock on the pool's path.
        let Some(next) = player.next_to_feed() else { return false };
        let first_unfed = self.index.samples.get(next.max(start.saturating_add(1)) as usize);
        player.run_start().is_some_and(|run| run < start) && first_unfed.is_some_and(|s| s.decode_from < start)
    }

    /// Whether another player's run has passed where `player`'s run is (so
    /// it can serve what `player` could, with less left to decode): a
    /// player with no run counts as overtaken.
    fn overtaken(state: &State, player: &Player) -> bool {
        let Some(next) = player.next_to_feed() else { return true };
        let busy_past = state.working.iter().any(|working| working.run_start <= next && next <= working.target);
        let idle_past = state.idle.iter().any(|other| {
            other.player.run_start().is_some_and(|start| start <= next)
                && other.player.next_to_feed().is_some_and(|other_next| other_next > next)
        });
        busy_past || idle_past
    }

    /// Gives a player back after its job for `target`; `resumes` when the
    /// job will take it up again (its time slice ended).
    pub fn check_in(&self, target: u32, player: Player, resumes: bool) {
        let mut state = self.lock();
        if let Some(working) = Self::done(&mut state, target) {
            // A player narrowed back gives its extra memory back.
            let wide_memory = working.wide_memory.filter(|_| self.is_wide(player.threading()));
            let memory = working.memory;
            state.idle.push(Idle { player, last_used: Instant::now(), memory, wide_memory, resumes });
        }
    }

    /// Frees the slot of the player of the job for `target`, which is gone
    /// (it panicked, or could not be made).
    pub fn forget(&self, target: u32) {
        let gone = Self::done(&mut self.lock(), target);
        drop(gone); // its reservation, outside the lock
    }

    fn done(state: &mut State, target: u32) -> Option<Working> {
        let at = state.working.iter().position(|working| working.target == target)?;
        Some(state.working.swap_remove(at))
    }

    pub fn report(&self, work: Work) {
        (self.on_work)(work);
    }

    /// Drops players idle for `age` or longer; how many.
    pub fn release_idle(&self, age: Duration) -> usize {
        self.release(|idle| idle.last_used.elapsed() >= age)
    }

    /// Drops the idle players the memory budget may take (not those a job
    /// between time slices will take up again).
    pub fn release_reclaimable(&self) -> usize {
        self.release(Idle::reclaimable)
    }

    fn release(&self, drop_it: impl Fn(&Idle) -> bool) -> usize {
        let mut state = self.lock();
        let (old, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut state.idle).into_iter().partition(drop_it);
        state.idle = kept;
        drop(state); // players and reservations go outside the lock
        let dropped = old.len();
        drop(old);
        if dropped > 0 {
            crate::allocator::return_freed_memory();
        }
        dropped
    }

    /// Players out with a job.
    pub fn working(&self) -> usize {
        self.lock().working.len()
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
