//! The process's decode threads, shared by every open video (`--decode-threads`,
//! default one per core): an open video costs no thread, and a busy video
//! may use several at once, one per decoder (`decoders.rs`).
//!
//! Jobs wait in one queue. A thread takes the first urgent job (a client
//! waits, see `urgency.rs`) whose video can give it a decoder, else the
//! first such job of any kind, else one that can start the next group of
//! pictures beside a busy run; jobs nobody waits for any more are dropped.
//! Work ahead of need being decoded pauses at the next sample and goes back
//! in the queue (its decoder stays positioned, nothing decoded is lost)
//! when an urgent job could run but every thread is busy, or waits for its
//! decoder (`urgent_blocked`). Requested work shares the
//! threads by time slices: a job that has decoded for `SLICE` while another
//! video's request waits for a thread goes back in the queue after the
//! current sample (its decoder stays positioned and takes it up again), so
//! a long seek in a 4K video delays another video's frame by about one
//! sample's decode, not by the whole seek.
//!
//! A job with the pool to itself (nothing running, no request waiting but
//! those of its run) may decode with frame threads over the idle cores
//! (widened, see `decoders.rs`: a lone seek, or a lone reader's playback
//! in long groups of pictures): it counts as that many of the pool's
//! threads, so work ahead of need does not start beside it. A request
//! that comes meanwhile and could start takes a thread at once: the
//! widened job is counted as one thread again and
//! its frame threads go on beside that request until its frame (for that
//! while a thread more than cores; pausing it instead would lose its run
//! when the request takes its decoder). Under load the player is narrowed
//! at its next seek or group of pictures.
//!
//! A panic while decoding (a bug meeting a file nobody foresaw) is caught on
//! the thread: that job is answered with an error, its player is dropped
//! and the next job of the video gets a new one. No job is left waiting.

use crate::decoders::{Checkout, Decoders, NoMemory, Work};
use crate::memory_budget::{Holder, MemoryBudget};
use crate::metrics::{InProgress, DECODER_PANICS, DECODE_JOBS, DECODE_SLICES, PREFETCH_YIELDS};
use crate::urgency::Urgency;
use media::{DecodeError, Picture, Span};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

struct Job {
    decoders: Arc<Decoders>,
    position: u32,
    /// Asked for on its own (a seek may leave out unreferenced pictures).
    alone: bool,
    span: Span,
    cancel: Option<Arc<AtomicBool>>,
    urgency: Urgency,
    reply: oneshot::Sender<Result<Picture, DecodeError>>,
    /// What its earlier time slices cost (reported once, when it is done).
    spent: Work,
    /// Counted in `bucket_streamer_decode_jobs` until the job is done or dropped.
    _counted: InProgress,
}

impl Job {
    /// Whether a client waits for this job and its video could start it now.
    fn request_that_could_start(&self) -> bool {
        self.urgency.is_urgent() && !self.reply.is_closed() && self.decoders.can_take(self.position, &self.urgency)
    }
}

/// How long a requested job decodes before it lets another video's waiting request have its thread.
const SLICE: std::time::Duration = std::time::Duration::from_millis(40);

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Decode threads of the pool.
    threads: usize,
    /// Threads the jobs on a thread now keep busy (a widened job counts its frame threads).
    running: usize,
    /// Of `running`, the threads a widened job holds beyond its own (one
    /// job at most: a seek is widened only when nothing runs).
    lent: usize,
    stopped: bool,
}

impl Queue {
    /// The job to run next (see the module header), with its decoder. A job
    /// whose video needs a new decoder that does not fit in the memory
    /// budget waits until memory is given back; if no job is running (none
    /// will give any back) one such job is answered `NoMemory` (`busy`),
    /// which frees its bytes.
    fn take(&mut self) -> Option<(Job, Checkout, bool)> {
        loop {
            if self.all_threads_busy() {
                // A widened job holds this thread's core until a request comes;
                // then its frame threads go on beside it (for the rest of its seek).
                if self.lent == 0 || !self.jobs.iter().any(Job::request_that_could_start) {
                    return None;
                }
                self.running -= std::mem::take(&mut self.lent);
            }
            self.jobs.retain(|job| !job.reply.is_closed());
            let urgent = (0..self.jobs.len()).filter(|&at| self.jobs[at].urgency.is_urgent());
            let rest = (0..self.jobs.len()).filter(|&at| !self.jobs[at].urgency.is_urgent());
            let in_order: Vec<usize> = urgent.chain(rest).collect();
            let runnable = in_order
                .iter()
                .copied()
                .filter(|&at| self.jobs[at].decoders.can_take(self.jobs[at].position, &self.jobs[at].urgency));
            // With nothing else to run, this thread starts a job's GOP beside a busy run of its video.
            let beside =
                in_order.iter().copied().filter(|&at| self.jobs[at].decoders.can_start_beside(self.jobs[at].position));
            let candidates: Vec<usize> = runnable.chain(beside).collect();
            let mut starved = None;
            for at in candidates {
                let at = self.earliest_of_its_run(at);
                let job = &self.jobs[at];
                let pool_idle = self.running == 0 && self.no_other_request(job);
                match job.decoders.check_out(job.position, &job.urgency, (job.alone, pool_idle)) {
                    Ok(Some(checkout)) => {
                        let threading = match &checkout {
                            Checkout::Ready(_, threading) | Checkout::MakeNew(threading) => *threading,
                        };
                        // A player still widened from an earlier job holds its
                        // threads too, when they are idle and none are lent.
                        let threads = job.decoders.threads_used(threading).min(self.idle_threads());
                        let lends = threads > 1 && self.lent == 0;
                        if lends {
                            self.lent = threads - 1;
                        }
                        self.running += if lends { threads } else { 1 };
                        return self.jobs.remove(at).map(|job| (job, checkout, lends));
                    }
                    Ok(None) => {}
                    Err(NoMemory) => starved = starved.or(Some(at)),
                }
            }
            let at = starved.filter(|_| self.running == 0)?;
            let job = self.jobs.remove(at)?;
            tracing::debug!(position = job.position, "no memory for a decoder and none in use: busy");
            MemoryBudget::refused(Holder::Decoders);
            let _ = job.reply.send(Err(DecodeError::Failed(NoMemory.into())));
        }
    }

    /// The queued job of the same video, urgency and run of decoding (same
    /// decode start) as the job at `at` whose frame comes first in decode
    /// order: a batch's frames may reach the queue out of order (their
    /// bytes arrive at once), and starting with a later one would decode
    /// past the earlier ones, whose pictures may be dropped before their
    /// jobs come (4K keeps few).
    fn earliest_of_its_run(&self, at: usize) -> usize {
        let chosen = &self.jobs[at];
        let run = chosen.decoders.decode_start(chosen.position);
        (0..self.jobs.len())
            .filter(|&other| {
                let job = &self.jobs[other];
                Arc::ptr_eq(&job.decoders, &chosen.decoders)
                    && job.urgency.is_urgent() == chosen.urgency.is_urgent()
                    && job.position < chosen.position
                    && job.decoders.decode_start(job.position) == run
            })
            .min_by_key(|&other| self.jobs[other].position)
            .unwrap_or(at)
    }

    /// Whether a request of another video than `decoders` waits for a
    /// thread (none idle) and could run.
    fn other_video_waiting(&self, decoders: &Arc<Decoders>) -> bool {
        self.all_threads_busy()
            && self.jobs.iter().any(|job| !Arc::ptr_eq(&job.decoders, decoders) && job.request_that_could_start())
    }

    /// Whether every thread has a job (a thread between two jobs does not).
    fn all_threads_busy(&self) -> bool {
        self.running >= self.threads
    }

    fn idle_threads(&self) -> usize {
        self.threads.saturating_sub(self.running)
    }

    /// Whether every request waiting is of `job`'s run of decoding (a
    /// batch's frames; same video and decode start): nobody else waits.
    fn no_other_request(&self, job: &Job) -> bool {
        let run = job.decoders.decode_start(job.position);
        self.jobs.iter().all(|other| {
            !other.urgency.is_urgent()
                || other.reply.is_closed()
                || (Arc::ptr_eq(&other.decoders, &job.decoders) && other.decoders.decode_start(other.position) == run)
        })
    }

    /// Whether work ahead of need for decode position `running` of
    /// `decoders` should give way to an urgent job: one that could run but
    /// finds every thread busy needs its thread; one of the same video that
    /// cannot start needs its decoder, unless another busy run or this
    /// one, going on, comes to it (`Decoders::waits_for`).
    fn urgent_blocked(&self, decoders: &Arc<Decoders>, running: u32) -> bool {
        self.jobs.iter().any(|job| {
            if !job.urgency.is_urgent() || job.reply.is_closed() {
                return false;
            }
            let can_start = job.decoders.can_take(job.position, &job.urgency);
            let needs_the_thread = can_start && self.all_threads_busy();
            let needs_the_decoder =
                || !can_start && Arc::ptr_eq(&job.decoders, decoders) && decoders.waits_for(job.position, running);
            needs_the_thread || needs_the_decoder()
        })
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct DecodePool {
    shared: Arc<Shared>,
}

impl DecodePool {
    /// Starts `threads` decode threads.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let threads = threads.max(1);
        shared.lock().threads = threads;
        for n in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("decode-{n}")).spawn(move || work(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Whether a decode thread is without a job and every job running or
    /// queued is of the video of `decoders`: the process has cores to spare
    /// for it alone.
    pub fn spare_for(&self, decoders: &Arc<Decoders>) -> bool {
        let queue = self.shared.lock();
        !queue.all_threads_busy()
            && queue.running <= decoders.working()
            && queue.jobs.iter().all(|job| Arc::ptr_eq(&job.decoders, decoders))
    }

    /// Decodes the sample at `position` of the video of `decoders` from
    /// `span`; `alone` when no frames around it are wanted too (see
    /// `Player::picture`). The job is queued by this call, before the
    /// returned future is first polled. Setting `cancel` stops the decode at the next sample
    /// boundary (`Cancelled`); so does urgent work that has to wait for it
    /// while this is not urgent.
    pub fn picture(
        &self,
        decoders: &Arc<Decoders>,
        (position, alone): (u32, bool),
        span: Span,
        cancel: Option<Arc<AtomicBool>>,
        urgency: Urgency,
    ) -> impl std::future::Future<Output = Result<Picture, DecodeError>> {
        let (reply, answer) = oneshot::channel();
        let mut queue = self.shared.lock();
        // A stopped pool takes no work: dropping the job answers it at once.
        if !queue.stopped {
            let _counted = InProgress::new(DECODE_JOBS);
            queue.jobs.push_back(Job {
                decoders: decoders.clone(),
                position,
                alone,
                span,
                cancel,
                urgency,
                reply,
                spent: Work::default(),
                _counted,
            });
        }
        drop(queue);
        self.shared.changed.notify_all();
        async move { answer.await.map_err(|_| DecodeError::Failed(anyhow::anyhow!("the decoder stopped before decoding")))? }
    }
}

impl Drop for DecodePool {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_all();
    }
}

/// One decode thread: takes jobs until the pool stops.
fn work(shared: &Shared) {
    loop {
        let (job, checkout, lends) = {
            let mut queue = shared.lock();
            loop {
                if queue.stopped {
                    return;
                }
                match std::panic::catch_unwind(AssertUnwindSafe(|| queue.take())) {
                    Ok(Some(taken)) => break taken,
                    Ok(None) => {}
                    Err(_) => {
                        // A bug in choosing work must not cost the process a
                        // decode thread (or, with all gone, every answer): the
                        // queued jobs are answered with an error and the thread goes on.
                        tracing::error!(jobs = queue.jobs.len(), "choosing a decode job panicked; queued jobs fail");
                        metrics::counter!(DECODER_PANICS).increment(1);
                        queue.jobs.clear();
                        continue;
                    }
                }
                queue = shared.changed.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        run(shared, job, checkout);
        let mut queue = shared.lock();
        let lent = if lends { std::mem::take(&mut queue.lent) } else { 0 };
        queue.running -= 1 + lent;
        drop(queue);
        // A decoder came back: a job waiting for one may run now.
        shared.changed.notify_all();
    }
}

fn run(shared: &Shared, mut job: Job, checkout: Checkout) {
    let decoders = job.decoders.clone();
    let made = match checkout {
        // A player seeking with other threading than it has is given a decoder threaded so.
        Checkout::Ready(mut player, threading) if player.threading() != threading => {
            player.rethread(&decoders.index, threading).map(|()| player)
        }
        Checkout::Ready(player, _) => Ok(player),
        Checkout::MakeNew(threading) => decoders.make(threading),
    };
    let mut player = match made {
        Ok(player) => player,
        Err(error) => {
            decoders.forget(job.position);
            tracing::error!("cannot make a decoder: {error:#}");
            let _ = job.reply.send(Err(DecodeError::Failed(error.context("cannot make a decoder"))));
            return;
        }
    };
    let started = std::time::Instant::now();
    // Set when the job stops for other work (it goes back in the queue).
    let paused = std::cell::Cell::new(false);
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let before = (player.pictures_decoded(), player.pictures_skipped(), player.seeks());
        let by_client = || job.cancel.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed));
        let yields = || {
            let yields = if job.urgency.is_urgent() {
                started.elapsed() >= SLICE && shared.lock().other_video_waiting(&decoders)
            } else {
                shared.lock().urgent_blocked(&decoders, job.position)
            };
            paused.set(yields);
            yields
        };
        let cancelled = || by_client() || yields();
        let result = if job.alone {
            player.picture(&decoders.index, job.position, &job.span, &cancelled)
        } else {
            player.picture_among_neighbours(&decoders.index, job.position, &job.span, &cancelled)
        };
        let work = job.spent.and(Work {
            decoded: player.pictures_decoded() - before.0,
            skipped: player.pictures_skipped() - before.1,
            seeked: player.seeks() > before.2,
            widened: decoders.threads_used(player.threading()) > 1,
            busy: started.elapsed(),
        });
        (result, work)
    }));
    match decoded {
        Ok((Err(DecodeError::Cancelled), work)) if paused.get() => {
            // Its time slice is over, or work ahead of need gives way to a
            // request: back in the queue, behind the waiting request. Its
            // decoder stays positioned, and the frames it decoded are not
            // thrown away (the next job on that decoder would run past them).
            decoders.check_in(job.position, player, true);
            let counter = if job.urgency.is_urgent() { DECODE_SLICES } else { PREFETCH_YIELDS };
            metrics::counter!(counter).increment(1);
            job.spent = work;
            shared.lock().jobs.push_back(job);
        }
        Ok((result, work)) => {
            decoders.check_in(job.position, player, false);
            tracing::debug!(
                position = job.position,
                decoded = work.decoded,
                seeked = work.seeked,
                urgent = job.urgency.is_urgent(),
                "decoded"
            );
            decoders.report(work);
            let _ = job.reply.send(result);
        }
        Err(_) => {
            // The player's state is unknown: it is not reused.
            drop(player);
            decoders.forget(job.position);
            metrics::counter!(DECODER_PANICS).increment(1);
            tracing::error!(position = job.position, "the decoder panicked; it is replaced");
            let failure = anyhow::anyhow!("the decoder failed on this frame and was restarted");
            let _ = job.reply.send(Err(DecodeError::Failed(failure)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoders::{PlayerMemory, Widening};
    use media::source::FileSource;
    use media::{Player, Threading, VideoIndex};
    use std::time::Duration;

    /// The decoders of a file held in memory, and a span of all of it.
    fn open(path: &std::path::Path, limit: usize) -> (Arc<Decoders>, Arc<VideoIndex>, Span) {
        open_within(path, limit, &plenty_of_memory())
    }

    fn plenty_of_memory() -> Arc<MemoryBudget> {
        MemoryBudget::new(1 << 40, 0).0
    }

    /// `open` with each decoder reserving `PLAYER_BYTES` of `budget`.
    fn open_within(
        path: &std::path::Path,
        limit: usize,
        budget: &Arc<MemoryBudget>,
    ) -> (Arc<Decoders>, Arc<VideoIndex>, Span) {
        open_with(path, limit, budget, || true)
    }

    /// `open_within` with `side_by_side` as the decoders' cost test.
    fn open_with(
        path: &std::path::Path,
        limit: usize,
        budget: &Arc<MemoryBudget>,
        side_by_side: impl Fn() -> bool + Send + Sync + 'static,
    ) -> (Arc<Decoders>, Arc<VideoIndex>, Span) {
        let (index, span) = indexed(path);
        (Arc::new(decoders_of(&index, limit, budget, |_| {}, side_by_side)), index, span)
    }

    /// The index of a file, and a span of all of it.
    fn indexed(path: &std::path::Path) -> (Arc<VideoIndex>, Span) {
        let index = Arc::new(media::probe::index(&FileSource::open(path).unwrap(), &Default::default()).unwrap());
        (index, Span::new(0, std::fs::read(path).unwrap().into()))
    }

    /// Up to `limit` decoders of `index`, each reserving `PLAYER_BYTES` of `budget`.
    fn decoders_of(
        index: &Arc<VideoIndex>,
        limit: usize,
        budget: &Arc<MemoryBudget>,
        on_work: impl Fn(Work) + Send + Sync + 'static,
        side_by_side: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Decoders {
        let make = {
            let index = index.clone();
            move |threads| Player::new(&index, threads, 24 << 20)
        };
        let first = (make(Threading::Single).unwrap(), player_memory(budget));
        Decoders::new(index.clone(), first, limit, make, on_work, side_by_side)
    }

    const PLAYER_BYTES: u64 = 1000;

    fn player_memory(budget: &Arc<MemoryBudget>) -> PlayerMemory {
        let first = budget.reserve(Holder::Decoders, PLAYER_BYTES).expect("room for the first decoder");
        PlayerMemory { budget: budget.clone(), bytes: PLAYER_BYTES, first }
    }

    /// Decode positions of the last sample of each GOP, last GOP first: every
    /// one of them needs a decode from its IRAP.
    fn gop_ends_backwards(index: &VideoIndex) -> Vec<u32> {
        let samples = &index.samples;
        let mut ends: Vec<u32> = (1..samples.len()).filter(|&i| samples[i].keyframe).map(|i| i as u32 - 1).collect();
        ends.push(samples.len() as u32 - 1);
        ends.reverse();
        ends
    }

    /// The shared 1080p clip, else `None` with a note saying `why` it is needed.
    fn shared_1080p(why: &str) -> Option<std::path::PathBuf> {
        let shared = testkit::fixtures::shared().unwrap().into_iter().find(|f| f.name == "bbb1080-frag.mp4");
        if shared.is_none() {
            eprintln!("note: needs ../shared/media ({why})");
        }
        shared.map(|fixture| fixture.path)
    }

    fn video_with_long_decodes() -> std::path::PathBuf {
        let shared = testkit::fixtures::shared().unwrap();
        match shared.into_iter().find(|fixture| fixture.name == "bbb1080-frag.mp4") {
            Some(fixture) => fixture.path,
            None => testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap().path,
        }
    }

    /// Runs jobs and returns the order they finished in, by label.
    async fn finishing_order(
        jobs: Vec<(&'static str, impl std::future::Future<Output = Result<Picture, DecodeError>> + Send + 'static)>,
    ) -> Vec<(&'static str, bool)> {
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for (label, job) in jobs {
            let done = done.clone();
            answers.push(tokio::spawn(async move { done.send((label, job.await.is_ok())) }));
        }
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        let mut order = Vec::new();
        while let Ok(entry) = finished.try_recv() {
            order.push(entry);
        }
        order
    }

    #[tokio::test]
    async fn requested_work_goes_before_work_ahead() {
        let pool = DecodePool::start(1).unwrap();
        let (decoders, index, span) = open(&video_with_long_decodes(), 1);
        let mut jobs: Vec<_> = gop_ends_backwards(&index)
            .into_iter()
            .map(|position| ("ahead", pool.picture(&decoders, (position, true), span.clone(), None, Urgency::ahead())))
            .collect();
        jobs.push(("requested", pool.picture(&decoders, (0, true), span.clone(), None, Urgency::requested())));
        let order = finishing_order(jobs).await;
        let requested_at = order.iter().position(|(kind, _)| *kind == "requested").unwrap();
        assert!(order[requested_at].1, "the requested frame decodes");
        // Only the job already on the decoder when the request came may finish first.
        assert!(requested_at <= 1, "requested frame finished after {requested_at} of {} prefetches", order.len() - 1);
    }

    #[tokio::test]
    async fn a_panic_while_choosing_a_job_fails_the_queued_jobs_and_keeps_the_thread() {
        let pool = DecodePool::start(1).unwrap();
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let looked = AtomicBool::new(false);
        // The scheduler's first look at this video panics (as a sort with a moving key once did).
        let side_by_side = move || {
            assert!(looked.swap(true, Ordering::Relaxed), "a bug in choosing work");
            false
        };
        let (decoders, _, span) = open_with(&video.path, 1, &plenty_of_memory(), side_by_side);
        let failed = pool.picture(&decoders, (3, true), span.clone(), None, Urgency::requested());
        let failed = tokio::time::timeout(Duration::from_secs(30), failed).await.expect("answered, not left waiting");
        assert!(matches!(failed, Err(DecodeError::Failed(_))));
        let decoded = tokio::time::timeout(
            Duration::from_secs(30),
            pool.picture(&decoders, (3, true), span, None, Urgency::requested()),
        );
        assert!(decoded.await.expect("the decode thread lives on").is_ok());
    }

    /// What each job of a video cost, in order.
    type Works = Arc<Mutex<Vec<Work>>>;

    /// Decoders of `path` whose lone seeks (and with `runs`, lone runs) may
    /// be widened to two frame threads, and what each of their jobs cost.
    fn open_widened(path: &std::path::Path, runs: bool) -> (Arc<Decoders>, Arc<VideoIndex>, Span, Works) {
        open_widened_within(path, runs, &plenty_of_memory(), PLAYER_BYTES)
    }

    /// `open_widened` within `budget`, a widened player needing `extra_bytes` more.
    fn open_widened_within(
        path: &std::path::Path,
        runs: bool,
        budget: &Arc<MemoryBudget>,
        extra_bytes: u64,
    ) -> (Arc<Decoders>, Arc<VideoIndex>, Span, Works) {
        let (index, span) = indexed(path);
        let works = Arc::new(Mutex::new(Vec::new()));
        let heard = works.clone();
        let on_work = move |work| heard.lock().unwrap().push(work);
        let widening = Widening { threading: Threading::Frame(2), extra_bytes, seeks: true, runs };
        let decoders = decoders_of(&index, 2, budget, on_work, || false).widened_when_alone(Some(widening));
        (Arc::new(decoders), index, span, works)
    }

    fn last_work(works: &Mutex<Vec<Work>>) -> Work {
        *works.lock().unwrap().last().expect("a job was done")
    }

    #[tokio::test]
    async fn a_frame_asked_for_alone_with_the_pool_to_itself_seeks_on_frame_threads_else_narrow() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(2).unwrap();
        let (decoders, index, span, works) = open_widened(&video.path, false);
        let ends = gop_ends_backwards(&index);
        assert!(ends.len() >= 3, "three GOPs to seek in");
        let requested = |decoders: &Arc<Decoders>, target, alone| {
            pool.picture(decoders, (target, alone), span.clone(), None, Urgency::requested())
        };

        let picture = requested(&decoders, ends[0], true).await.unwrap();
        assert_eq!(picture.pts(), Some(index.sample(ends[0]).pts));
        let work = last_work(&works);
        assert!(work.seeked && work.widened, "{work:?}");

        // A frame among others wanted (playback, a batch) seeks narrow: its neighbours come next.
        requested(&decoders, ends[1], false).await.unwrap();
        let work = last_work(&works);
        assert!(work.seeked && !work.widened, "{work:?}");

        // With another video at work, a seek is narrow too.
        let long = testkit::fixtures::generated_named("long_gop.mp4").unwrap();
        let (other, other_index, other_span) = open(&long.path, 1);
        let far = other_index.samples.len() as u32 - 1;
        let busy = pool.picture(&other, (far, true), other_span, None, Urgency::requested());
        while !pool.shared.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let picture = requested(&decoders, ends[2], true).await.unwrap();
        assert_eq!(picture.pts(), Some(index.sample(ends[2]).pts));
        let work = last_work(&works);
        assert!(work.seeked && !work.widened, "{work:?}");
        busy.await.unwrap();
    }

    #[tokio::test]
    async fn a_seek_whose_wider_decoder_does_not_fit_the_budget_is_decoded_narrow_and_takes_nothing_more() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(2).unwrap();
        let budget = MemoryBudget::new(4 * PLAYER_BYTES, 0).0;
        // What a crafted stream's size could make of the extra memory: more than any budget, held + it wraps.
        for extra_bytes in [3 * PLAYER_BYTES + 1, u64::MAX] {
            let (decoders, index, span, works) = open_widened_within(&video.path, false, &budget, extra_bytes);
            let target = gop_ends_backwards(&index)[0];
            let picture = pool.picture(&decoders, (target, true), span, None, Urgency::requested()).await.unwrap();
            assert_eq!(picture.pts(), Some(index.sample(target).pts));
            let work = last_work(&works);
            assert!(work.seeked && !work.widened, "{extra_bytes} more bytes: {work:?}");
            assert_eq!(budget.held(), PLAYER_BYTES, "only the narrow player's reservation is held");
        }
    }

    #[tokio::test]
    async fn a_lone_reader_s_run_is_widened_and_under_load_narrowed_where_it_enters_the_next_gop() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(2).unwrap();
        let (decoders, index, span, works) = open_widened(&video.path, true);
        let next_irap = (1..index.samples.len()).find(|&at| index.samples[at].keyframe).unwrap() as u32;
        let among_others =
            |target: u32| pool.picture(&decoders, (target, false), span.clone(), None, Urgency::requested());

        among_others(1).await.unwrap();
        let work = last_work(&works);
        assert!(work.seeked && work.widened, "a lone reader's run: {work:?}");

        // Another video's long seeks keep a thread busy (one decoder: one after the other).
        let (busy, busy_index, busy_span) = open(&video_with_long_decodes(), 1);
        let ends = gop_ends_backwards(&busy_index);
        let load: Vec<_> = (ends.iter().take(3))
            .map(|&end| pool.picture(&busy, (end, true), busy_span.clone(), None, Urgency::requested()))
            .collect();
        while pool.shared.lock().running == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // In its group of pictures the widened player goes on; the next group is decoded narrow.
        among_others(next_irap - 1).await.unwrap(); // its GOP's last: the player is at the next IRAP
        let work = last_work(&works);
        assert!(!work.seeked && work.widened, "within its GOP: {work:?}");
        // (Its leading pictures decode from the IRAP before: still the run's.)
        let trailing = (next_irap..).find(|&at| index.sample(at).decode_from == next_irap).unwrap();
        let picture = among_others(trailing).await.unwrap();
        assert_eq!(picture.pts(), Some(index.sample(trailing).pts));
        let work = last_work(&works);
        assert!(work.seeked && !work.widened, "into the next GOP under load: {work:?}");
        assert!(pool.shared.lock().running > 0, "the load lasted");
        for job in load {
            job.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_widened_seek_holds_both_threads_until_a_request_comes_which_starts_at_once() {
        let Some(video) = shared_1080p("a 1080p GOP decode is long enough to overlap") else { return };
        let pool = DecodePool::start(2).unwrap();
        let (decoders, index, span, works) = open_widened(&video, false);
        let ends = gop_ends_backwards(&index);
        let seek = pool.picture(&decoders, (ends[1], true), span.clone(), None, Urgency::requested());
        while !pool.shared.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pool.shared.lock().running, 2, "the widened seek counts as both threads");
        // A viewer of the same video asks for a frame of another GOP: it takes
        // the second thread and decoder at once (pausing the seek at a time
        // slice would let it take the seek's positioned decoder instead).
        let request = pool.picture(&decoders, (0, true), span, None, Urgency::requested());
        let order = finishing_order(vec![("seek", seek), ("request", request)]).await;
        assert_eq!(order, vec![("request", true), ("seek", true)], "the request waited for the seek");
        let works = works.lock().unwrap().clone();
        assert_eq!(works.iter().filter(|work| work.seeked).count(), 2, "no seek was started twice: {works:?}");
        assert!(works.iter().any(|work| work.widened) && works.iter().any(|work| !work.widened));
        // The threads count themselves out just after answering.
        for _ in 0..1000 {
            if pool.shared.lock().running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queue = pool.shared.lock();
        assert_eq!((queue.running, queue.lent), (0, 0), "every thread counted out");
    }

    #[tokio::test]
    async fn work_asked_for_at_a_lower_rank_waits_behind_a_stream_of_requests_only_for_its_patience() {
        use futures_util::StreamExt;
        let busy = testkit::fixtures::generated_named("long_gop.mp4").unwrap();
        let other = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = Arc::new(DecodePool::start(1).unwrap());
        let (busy_decoders, busy_index, busy_span) = open(&busy.path, 1);
        let (decoders, _, span) = open(&other.path, 1);
        // Requests of another video, several always waiting, until told to stop (20 s at most).
        let stop = Arc::new(AtomicBool::new(false));
        let flood = tokio::spawn({
            let (pool, stop) = (pool.clone(), stop.clone());
            async move {
                let frames = busy_index.samples.len() as u32;
                let mut waiting = futures_util::stream::FuturesUnordered::new();
                let started = std::time::Instant::now();
                for n in 0u32.. {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    let position = (n * 97) % frames;
                    let job = (position, true);
                    waiting.push(pool.picture(&busy_decoders, job, busy_span.clone(), None, Urgency::requested()));
                    if waiting.len() >= 4 {
                        waiting.next().await.unwrap().unwrap();
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let strip = pool.picture(&decoders, (3, true), span, None, Urgency::ahead_for(Duration::from_millis(200)));
        let done = tokio::time::timeout(Duration::from_secs(10), strip).await;
        stop.store(true, Ordering::Relaxed);
        flood.await.unwrap();
        assert!(done.expect("held back by the requests for more than 10 s").is_ok());
    }

    #[tokio::test]
    async fn raised_work_overtakes_older_work_ahead() {
        let pool = DecodePool::start(1).unwrap();
        let (decoders, index, span) = open(&video_with_long_decodes(), 1);
        let ahead = gop_ends_backwards(&index);
        let joined = Urgency::ahead();
        let mut jobs = Vec::new();
        for (n, &position) in ahead.iter().enumerate() {
            let last = n + 1 == ahead.len();
            let urgency = if last { joined.clone() } else { Urgency::ahead() };
            jobs.push((
                if last { "raised" } else { "ahead" },
                pool.picture(&decoders, (position, true), span.clone(), None, urgency),
            ));
        }
        joined.raise(); // a request joined the newest prefetch
        let order = finishing_order(jobs).await;
        let raised_at = order.iter().position(|(kind, _)| *kind == "raised").unwrap();
        assert!(order[raised_at].1);
        assert!(raised_at <= 1, "raised work finished after {raised_at} older prefetches");
    }

    #[tokio::test]
    async fn running_work_ahead_gives_way_to_a_request_that_waits_for_its_decoder_and_finishes_after() {
        let Some(video) = shared_1080p("a 1080p GOP decode is long enough to interrupt") else { return };
        let pool = DecodePool::start(2).unwrap();
        let (decoders, index, span) = open(&video, 1);
        let gop_end = gop_ends_backwards(&index)[1];
        let prefetch = pool.picture(&decoders, (gop_end, true), span.clone(), None, Urgency::ahead());
        // Wait until a thread has taken it (a 1080p GOP decode then takes
        // well over 100 ms, so the request arrives while it runs).
        while !pool.shared.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let requested = pool.picture(&decoders, (0, true), span.clone(), None, Urgency::requested());
        let order = finishing_order(vec![("prefetch", prefetch), ("requested", requested)]).await;
        // The prefetch gave way at a sample boundary, then went back in the queue and was finished after.
        assert_eq!(order, vec![("requested", true), ("prefetch", true)]);
        assert!(pool.shared.lock().jobs.is_empty(), "nothing is left queued");
        let again = pool.picture(&decoders, (gop_end, true), span, None, Urgency::ahead()).await.unwrap();
        assert_eq!(again.pts(), Some(index.sample(gop_end).pts));
    }

    #[tokio::test]
    async fn work_ahead_in_the_next_gop_starts_beside_a_busy_run_on_an_idle_thread() {
        let Some(video) = shared_1080p("a 1080p GOP decode is long enough to overlap") else { return };
        let pool = DecodePool::start(2).unwrap();
        let (decoders, index, span) = open(&video, 2);
        let next_irap = (1..index.samples.len()).find(|&at| index.samples[at].keyframe).unwrap() as u32;
        let gop_end = pool.picture(&decoders, (next_irap - 1, true), span.clone(), None, Urgency::requested());
        while !pool.shared.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The next GOP's IRAP: near the busy run (it would get there), so it
        // would wait for it, but the other thread has nothing else to do.
        let next_gop = pool.picture(&decoders, (next_irap, true), span, None, Urgency::ahead());
        let mut side_by_side = false;
        for _ in 0..2000 {
            side_by_side |= decoders.working() == 2;
            if side_by_side || pool.shared.lock().running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (end, start) = tokio::join!(gop_end, next_gop);
        assert_eq!(end.unwrap().pts(), Some(index.sample(next_irap - 1).pts));
        assert_eq!(start.unwrap().pts(), Some(index.sample(next_irap).pts));
        assert!(side_by_side, "the next GOP waited for the run of the one before");
    }

    #[tokio::test]
    async fn a_busy_video_gets_a_decoder_per_gop_and_each_job_the_positioned_one() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(2).unwrap();
        let (_, index, span) = open(&video.path, 2);
        let (counted, seeks) = counting_seeks(&index);
        let irap = |n: usize| index.samples.iter().enumerate().filter(|(_, s)| s.keyframe).nth(n).unwrap().0 as u32;
        // Two long jobs at once (the ends of two GOPs apart): two decoders, side by side.
        let (end_a, end_b) = (irap(1) - 1, irap(3) - 1);
        let (a, b) = tokio::join!(
            pool.picture(&counted, (end_a, true), span.clone(), None, Urgency::requested()),
            pool.picture(&counted, (end_b, true), span.clone(), None, Urgency::requested())
        );
        assert_eq!(
            (a.unwrap().pts(), b.unwrap().pts()),
            (Some(index.sample(end_a).pts), Some(index.sample(end_b).pts))
        );
        assert_eq!(counted.count(), 2, "one decoder per GOP in use");
        assert_eq!(seeks.load(Ordering::Relaxed), 2);
        // The frames after each go to the decoder already there: no more seeks.
        for position in [end_a + 1, end_b + 1, end_a + 2, end_b + 2, end_a + 3, end_b + 3] {
            pool.picture(&counted, (position, true), span.clone(), None, Urgency::requested()).await.unwrap();
        }
        assert_eq!(seeks.load(Ordering::Relaxed), 2, "each job went to the decoder positioned before it");
        // Idle decoders go, and come back when needed.
        assert_eq!(counted.release_idle(Duration::ZERO), 2);
        assert_eq!(counted.count(), 0);
        pool.picture(&counted, (end_a, true), span, None, Urgency::requested()).await.unwrap();
        assert_eq!(counted.count(), 1);
    }

    /// Decoders of `index` (up to 2, GOPs not started side by side) and the
    /// number of seeks their jobs made.
    fn counting_seeks(index: &Arc<VideoIndex>) -> (Arc<Decoders>, Arc<std::sync::atomic::AtomicUsize>) {
        let seeks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = seeks.clone();
        let on_work = move |work: Work| {
            if work.seeked {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        };
        (Arc::new(decoders_of(index, 2, &plenty_of_memory(), on_work, || false)), seeks)
    }

    #[tokio::test]
    async fn work_ahead_runs_no_player_over_leading_pictures_it_has_not_fed_and_uses_one_past_them() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(2).unwrap();
        let (_, index, span) = open(&video.path, 2);
        let irap = (1..index.samples.len()).find(|&at| index.samples[at].keyframe).unwrap() as u32;
        let leading = (irap + 1..).take_while(|&at| index.sample(at).decode_from < irap);
        let last_leading = leading.last().expect("an open GOP: the IRAP has leading pictures");
        let after_them = last_leading + 2;
        let ahead = |decoders: &Arc<Decoders>| {
            pool.picture(decoders, (after_them, false), span.clone(), None, Urgency::ahead())
        };

        // A player before the IRAP would output the leading pictures on its way and drop them:
        // the work ahead seeks another decoder to the IRAP instead.
        let (before, seeks) = counting_seeks(&index);
        pool.picture(&before, (irap / 2, false), span.clone(), None, Urgency::requested()).await.unwrap();
        ahead(&before).await.unwrap();
        assert_eq!((seeks.load(Ordering::Relaxed), before.count()), (2, 2));

        // A player that has fed them (a reader asked for the last one) is simply positioned.
        let (past, seeks) = counting_seeks(&index);
        pool.picture(&past, (last_leading, false), span.clone(), None, Urgency::requested()).await.unwrap();
        let picture = ahead(&past).await.unwrap();
        assert_eq!(picture.pts(), Some(index.sample(after_them).pts));
        assert_eq!((seeks.load(Ordering::Relaxed), past.count()), (1, 1), "the work ahead seeked a second decoder");
    }

    #[tokio::test]
    async fn a_long_request_gives_its_thread_to_another_video_s_request() {
        let long = testkit::fixtures::generated_named("long_gop.mp4").unwrap();
        let short = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(1).unwrap();
        let (long_decoders, long_index, long_span) = open(&long.path, 1);
        let (short_decoders, _, short_span) = open(&short.path, 1);
        // The end of one 250-picture GOP: far longer than a time slice.
        let far = long_index.samples.len() as u32 - 1;
        let seek = pool.picture(&long_decoders, (far, true), long_span, None, Urgency::requested());
        while !pool.shared.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let other = pool.picture(&short_decoders, (3, true), short_span, None, Urgency::requested());
        let order = finishing_order(vec![("long", seek), ("other", other)]).await;
        assert_eq!(order, vec![("other", true), ("long", true)], "the other video's frame went first");
        // The long seek was resumed on its positioned decoder, not restarted.
        assert_eq!(long_decoders.count(), 1);
    }

    /// The memory budget's view of one video's decoders (a channel in the server).
    struct IdleDecoders(Arc<Decoders>);

    impl crate::memory_budget::Reclaim for IdleDecoders {
        fn idle_for(&self) -> Duration {
            Duration::ZERO
        }
        fn drop_idle_decoders(&self) {
            self.0.release_reclaimable();
        }
        fn drop_cached_bytes(&self) {}
    }

    #[tokio::test]
    async fn a_job_that_needs_a_decoder_the_budget_cannot_hold_waits_for_one_to_come_back() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let budget = MemoryBudget::new(PLAYER_BYTES, 0).0; // one decoder
        let (decoders, index, span) = open_within(&video.path, 2, &budget);
        let pool = DecodePool::start(2).unwrap();
        // Two seeks far apart: two decoders if memory allowed, here one after the other on one.
        let ends = gop_ends_backwards(&index);
        let (a, b) = tokio::join!(
            pool.picture(&decoders, (ends[0], true), span.clone(), None, Urgency::requested()),
            pool.picture(&decoders, (ends[ends.len() - 1], true), span.clone(), None, Urgency::requested()),
        );
        assert!(a.is_ok() && b.is_ok(), "both frames decode");
        assert_eq!(decoders.count(), 1, "never more decoders than the budget holds");
        assert_eq!(budget.held(), PLAYER_BYTES);
    }

    #[tokio::test]
    async fn a_new_decoder_takes_the_memory_of_another_video_s_idle_one_else_the_job_is_answered_busy() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let budget = MemoryBudget::new(2 * PLAYER_BYTES, 0).0;
        let (idle_video, _, _) = open_within(&video.path, 1, &budget);
        let (busy_video, index, span) = open_within(&video.path, 1, &budget);
        busy_video.release_idle(Duration::ZERO); // its next job needs a new decoder
        let _bytes_in_use = budget.reserve(Holder::Spans, PLAYER_BYTES).unwrap();
        let pool = DecodePool::start(1).unwrap();
        let last = index.samples.len() as u32 - 1;

        let refused = pool.picture(&busy_video, (last, true), span.clone(), None, Urgency::requested()).await;
        let Err(DecodeError::Failed(cause)) = refused else { panic!("not refused: {:?}", refused.err()) };
        assert!(cause.is::<NoMemory>(), "{cause:#}");

        let reclaim: Arc<dyn crate::memory_budget::Reclaim> = Arc::new(IdleDecoders(idle_video.clone()));
        budget.register(Arc::downgrade(&reclaim));
        let decoded = pool.picture(&busy_video, (last, true), span.clone(), None, Urgency::requested()).await;
        assert!(decoded.is_ok(), "decodes once the other video's idle decoder is dropped");
        assert_eq!((idle_video.count(), busy_video.count()), (0, 1));
    }

    #[tokio::test]
    async fn a_panic_while_decoding_answers_the_job_and_the_video_keeps_serving() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let pool = DecodePool::start(1).unwrap();
        let (decoders, index, span) = open(&video.path, 1);
        // A position past the index panics inside the player (an index out of
        // bounds): the stand-in for any bug a crafted file might reach.
        let crashed = pool.picture(&decoders, (u32::MAX, true), span.clone(), None, Urgency::requested()).await;
        match crashed {
            Err(DecodeError::Failed(error)) => assert!(error.to_string().contains("restarted"), "{error}"),
            other => panic!("a panic must answer the job with an error, got {:?}", other.map(|p| p.pts())),
        }
        assert!(decoders.is_usable());
        let picture =
            pool.picture(&decoders, (5, true), span, None, Urgency::requested()).await.expect("the next job is served");
        assert_eq!(picture.pts(), Some(index.sample(5).pts));
    }
}
