//! A video's decoder on a thread of its own. Jobs are served strictly in
//! arrival order by one long-lived thread: decode order is deterministic,
//! the decoder's state stays in one core's caches, and no async worker is
//! ever blocked by libavcodec. The thread ends when the channel is dropped.

use media::{DecodeError, Picture, Player, Span, VideoIndex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

struct Job {
    position: u32,
    span: Span,
    cancel: Option<Arc<AtomicBool>>,
    reply: oneshot::Sender<Result<Picture, DecodeError>>,
}

pub struct DecodeThread {
    jobs: mpsc::Sender<Job>,
}

impl DecodeThread {
    /// Starts the thread; `on_decoded` is told how many pictures each job produced.
    pub fn start(
        name: String,
        index: Arc<VideoIndex>,
        mut player: Player,
        on_decoded: impl Fn(u64) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || {
            for job in queue {
                if job.reply.is_closed() {
                    continue; // the requester gave up (disconnected): skip the work
                }
                let before = player.pictures_decoded();
                let cancelled = || job.cancel.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed));
                let result = player.picture(&index, job.position, &job.span, &cancelled);
                on_decoded(player.pictures_decoded() - before);
                let _ = job.reply.send(result);
            }
        })?;
        Ok(Self { jobs })
    }

    /// Decodes the sample at `position` from `span`; setting `cancel` stops
    /// the decode at the next sample boundary.
    pub async fn picture(
        &self,
        position: u32,
        span: Span,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Picture, DecodeError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { position, span, cancel, reply })
            .map_err(|_| DecodeError::Failed(anyhow::anyhow!("the decoder thread has stopped")))?;
        answer.await.map_err(|_| DecodeError::Failed(anyhow::anyhow!("the decoder thread stopped while decoding")))?
    }
}
