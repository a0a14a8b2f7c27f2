//! A video's decoder on a thread of its own. One long-lived thread per video
//! keeps decode order deterministic, the decoder's state in one core's
//! caches, and libavcodec off the async workers.
//!
//! Jobs wait in one queue; urgent ones (a client waits, see `urgency.rs`) go
//! before work ahead of need, each kind in arrival order. A prefetch being
//! decoded when urgent work arrives stops at the next sample (the decoder
//! stays positioned) so the request waits at most one sample's decode.
//! The thread ends when the `DecodeThread` is dropped.
//!
//! A panic while decoding (a bug meeting a file nobody foresaw) is caught on
//! this thread: that job is answered with an error and the player is rebuilt
//! from the index, so the video keeps serving. If even that fails the thread
//! stops, answers everything queued, and refuses new work at once; the
//! channel then reports itself unusable and is reopened. No job is ever left
//! waiting on a thread that is gone.

use crate::metrics::{DECODER_PANICS, PREFETCH_YIELDS};
use crate::urgency::Urgency;
use media::{DecodeError, Picture, Player, Span, VideoIndex};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

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

struct Job {
    position: u32,
    span: Span,
    cancel: Option<Arc<AtomicBool>>,
    urgency: Urgency,
    reply: oneshot::Sender<Result<Picture, DecodeError>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stopped: bool,
}

impl Queue {
    /// The first urgent job, else the oldest; jobs nobody waits for any more are dropped.
    fn next(&mut self) -> Option<Job> {
        self.jobs.retain(|job| !job.reply.is_closed());
        let index = self.jobs.iter().position(|job| job.urgency.is_urgent()).unwrap_or(0);
        self.jobs.remove(index)
    }

    fn urgent_waiting(&self) -> bool {
        self.jobs.iter().any(|job| job.urgency.is_urgent() && !job.reply.is_closed())
    }
}

#[derive(Default)]
struct Jobs {
    queue: Mutex<Queue>,
    arrived: Condvar,
}

pub struct DecodeThread {
    jobs: Arc<Jobs>,
}

impl DecodeThread {
    /// Starts the thread. `rebuild` makes a fresh player after a panic;
    /// `on_decoded` is told what each job cost.
    pub fn start(
        name: String,
        index: Arc<VideoIndex>,
        mut player: Player,
        rebuild: impl Fn() -> anyhow::Result<Player> + Send + 'static,
        on_decoded: impl Fn(Work) + Send + 'static,
    ) -> std::io::Result<Self> {
        let jobs = Arc::new(Jobs::default());
        let queue = jobs.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            while let Some(job) = queue.wait_for_job() {
                let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let before = (player.pictures_decoded(), player.pictures_skipped(), player.seeks());
                    let by_client = || job.cancel.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed));
                    let yields = || !job.urgency.is_urgent() && queue.lock().urgent_waiting();
                    let result = player.picture(&index, job.position, &job.span, &|| by_client() || yields());
                    on_decoded(Work {
                        decoded: player.pictures_decoded() - before.0,
                        skipped: player.pictures_skipped() - before.1,
                        seeked: player.seeks() > before.2,
                    });
                    if matches!(result, Err(DecodeError::Cancelled)) && !by_client() {
                        metrics::counter!(PREFETCH_YIELDS).increment(1);
                    }
                    result
                }));
                let panicked = decoded.is_err();
                let result = decoded.unwrap_or_else(|_| {
                    metrics::counter!(DECODER_PANICS).increment(1);
                    tracing::error!(position = job.position, "the decoder panicked; rebuilding it");
                    Err(DecodeError::Failed(anyhow::anyhow!("the decoder failed on this frame and was restarted")))
                });
                let _ = job.reply.send(result);
                if panicked {
                    match rebuild() {
                        Ok(fresh) => player = fresh,
                        Err(error) => {
                            tracing::error!("cannot rebuild the decoder: {error:#}");
                            queue.stop();
                            return;
                        }
                    }
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// False once the thread has stopped taking work.
    pub fn is_running(&self) -> bool {
        !self.jobs.lock().stopped
    }

    /// Decodes the sample at `position` from `span`. The job is queued by
    /// this call, before the returned future is first polled. Setting
    /// `cancel` stops the decode at the next sample boundary (`Cancelled`);
    /// so does urgent work arriving while this is not urgent.
    pub fn picture(
        &self,
        position: u32,
        span: Span,
        cancel: Option<Arc<AtomicBool>>,
        urgency: Urgency,
    ) -> impl std::future::Future<Output = Result<Picture, DecodeError>> {
        let (reply, answer) = oneshot::channel();
        let mut queue = self.jobs.lock();
        // A stopped thread takes no work: dropping the job answers it at once.
        if !queue.stopped {
            queue.jobs.push_back(Job { position, span, cancel, urgency, reply });
        }
        drop(queue);
        self.jobs.arrived.notify_one();
        async move {
            answer
                .await
                .map_err(|_| DecodeError::Failed(anyhow::anyhow!("the decoder thread stopped before decoding")))?
        }
    }
}

impl Jobs {
    /// The queue; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes no more work and answers what is queued (its waiters see the thread gone).
    fn stop(&self) {
        let mut queue = self.lock();
        queue.stopped = true;
        queue.jobs.clear();
    }

    /// Blocks until there is a job; `None` once the channel is gone.
    fn wait_for_job(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.next() {
                return Some(job);
            }
            if queue.stopped {
                return None;
            }
            queue = self.arrived.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Drop for DecodeThread {
    fn drop(&mut self) {
        self.jobs.lock().stopped = true;
        self.jobs.arrived.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::source::FileSource;
    use media::Threading;
    use std::time::Duration;

    /// A decode thread over a whole file held in memory.
    fn open(path: &std::path::Path) -> (DecodeThread, Arc<VideoIndex>, Span) {
        let index = Arc::new(media::probe::index(&FileSource::open(path).unwrap(), &Default::default()).unwrap());
        let player = Player::new(&index, Threading::Single, 24 << 20).unwrap();
        let span = Span::new(0, std::fs::read(path).unwrap().into());
        let rebuild = {
            let index = index.clone();
            move || Player::new(&index, Threading::Single, 24 << 20)
        };
        (DecodeThread::start("decode-test".into(), index.clone(), player, rebuild, |_: Work| {}).unwrap(), index, span)
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

    fn video_with_long_decodes() -> std::path::PathBuf {
        let shared = testkit::fixtures::shared().unwrap();
        match shared.into_iter().find(|fixture| fixture.name == "bbb1080-frag.mp4") {
            Some(fixture) => fixture.path,
            None => testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap().path,
        }
    }

    #[tokio::test]
    async fn requested_work_goes_before_work_ahead() {
        let (decoder, index, span) = open(&video_with_long_decodes());
        let ahead = gop_ends_backwards(&index);
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for &position in &ahead {
            let answer = decoder.picture(position, span.clone(), None, Urgency::ahead());
            let done = done.clone();
            answers.push(tokio::spawn(async move { done.send(("ahead", answer.await.is_ok())) }));
        }
        let requested = decoder.picture(0, span.clone(), None, Urgency::requested());
        answers.push(tokio::spawn(async move { done.send(("requested", requested.await.is_ok())) }));
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        let mut order = Vec::new();
        while let Ok(entry) = finished.try_recv() {
            order.push(entry);
        }
        let requested_at = order.iter().position(|(kind, _)| *kind == "requested").unwrap();
        assert!(order[requested_at].1, "the requested frame decodes");
        // Only the job already on the decoder when the request came may finish first.
        assert!(requested_at <= 1, "requested frame finished after {requested_at} of {} prefetches", ahead.len());
    }

    #[tokio::test]
    async fn raised_work_overtakes_older_work_ahead() {
        let (decoder, index, span) = open(&video_with_long_decodes());
        let ahead = gop_ends_backwards(&index);
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let joined = Urgency::ahead();
        let mut answers = Vec::new();
        for (n, &position) in ahead.iter().enumerate() {
            let last = n + 1 == ahead.len();
            let urgency = if last { joined.clone() } else { Urgency::ahead() };
            let answer = decoder.picture(position, span.clone(), None, urgency);
            let done = done.clone();
            answers.push(tokio::spawn(async move { done.send((last, answer.await.is_ok())) }));
        }
        joined.raise(); // a request joined the newest prefetch
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        let mut order = Vec::new();
        while let Ok(entry) = finished.try_recv() {
            order.push(entry);
        }
        let raised_at = order.iter().position(|(last, _)| *last).unwrap();
        assert!(order[raised_at].1);
        assert!(raised_at <= 1, "raised work finished after {raised_at} older prefetches");
    }

    #[tokio::test]
    async fn running_work_ahead_stops_for_a_request() {
        let Some(video) = testkit::fixtures::shared().unwrap().into_iter().find(|f| f.name == "bbb1080-frag.mp4")
        else {
            eprintln!("note: needs ../shared/media (a 1080p GOP decode is long enough to interrupt)");
            return;
        };
        let (decoder, index, span) = open(&video.path);
        let gop_end = gop_ends_backwards(&index)[1];
        let prefetch = decoder.picture(gop_end, span.clone(), None, Urgency::ahead());
        // Wait until the thread has taken it (a 25-picture 1080p decode then
        // takes well over 100 ms, so the request arrives while it runs).
        while !decoder.jobs.lock().jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let requested = decoder.picture(0, span.clone(), None, Urgency::requested());
        assert!(matches!(prefetch.await, Err(DecodeError::Cancelled)), "the prefetch yields the decoder");
        let picture = requested.await.expect("the request is served");
        assert_eq!(picture.pts(), Some(index.sample(0).pts));
        // The interrupted frame can still be decoded afterwards.
        let again = decoder.picture(gop_end, span, None, Urgency::ahead()).await.expect("decodes later");
        assert_eq!(again.pts(), Some(index.sample(gop_end).pts));
    }

    #[tokio::test]
    async fn a_panic_while_decoding_answers_the_job_and_the_video_keeps_serving() {
        let video = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
        let (decoder, index, span) = open(&video.path);
        // A position past the index panics inside the player (an index out of
        // bounds): the stand-in for any bug a crafted file might reach.
        let crashed = decoder.picture(u32::MAX, span.clone(), None, Urgency::requested()).await;
        match crashed {
            Err(DecodeError::Failed(error)) => assert!(error.to_string().contains("restarted"), "{error}"),
            other => panic!("a panic must answer the job with an error, got {:?}", other.map(|p| p.pts())),
        }
        assert!(decoder.is_running(), "the player is rebuilt, the thread keeps serving");
        let picture = decoder.picture(5, span, None, Urgency::requested()).await.expect("the next job is served");
        assert_eq!(picture.pts(), Some(index.sample(5).pts));
    }
}
