//! One WebSocket connection. Three tasks: the reader parses messages and
//! queues work (and answers what can be answered at once: malformed input,
//! over-limit requests); the worker serves the queue in order against the
//! session's current video; the writer is the only one touching the socket,
//! so a `Frame` header and its JPEG always leave back to back.
//!
//! Every requested frame gets exactly one answer. Closing the connection
//! drops the queued work.

use crate::channel::{Channel, FrameFailure};
use crate::metrics::{FRAMES_SERVED, FRAME_ERRORS, SESSIONS};
use crate::protocol::{parse, Command, FrameRequest, Reply, VideoSummary};
use crate::AppState;
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

enum Outgoing {
    Text(String),
    Frame { header: String, jpeg: Bytes },
}

enum Work {
    SetVideo(String),
    Frames(Vec<FrameRequest>),
}

/// Counts open sessions; dropping it frees the slot.
pub struct SessionSlot(Arc<AtomicUsize>);

impl SessionSlot {
    /// Takes a slot unless `limit` sessions are open.
    pub fn acquire(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        let taken =
            counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1));
        taken.ok().map(|open| {
            metrics::gauge!(SESSIONS).set((open + 1) as f64);
            Self(counter.clone())
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(SESSIONS).set(open as f64);
    }
}

pub async fn run(socket: WebSocket, state: Arc<AppState>, slot: SessionSlot) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Outgoing>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let sent = match message {
                Outgoing::Text(text) => sink.send(Message::Text(text.into())).await,
                Outgoing::Frame { header, jpeg } => match sink.send(Message::Text(header.into())).await {
                    Ok(()) => sink.send(Message::Binary(jpeg)).await,
                    Err(error) => Err(error),
                },
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let queued = Arc::new(AtomicUsize::new(0));
    let (work, queue) = mpsc::unbounded_channel::<Work>();
    let worker = tokio::spawn(serve_queue(queue, out.clone(), state.clone(), queued.clone()));

    while let Some(Ok(message)) = stream.next().await {
        let command = match message {
            Message::Text(text) => parse(text.as_str()),
            Message::Binary(_) => Err("binary messages are not accepted; send JSON text".to_string()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let accepted = match command {
            Err(message) => send(&out, Reply::Error { message }).await,
            Ok(Command::SetVideo { path }) => work.send(Work::SetVideo(path)).is_ok(),
            Ok(Command::RequestFrames { frames }) => enqueue_frames(frames, &state, &queued, &work, &out).await,
        };
        if !accepted {
            break;
        }
    }
    drop(work);
    worker.abort();
    drop(out);
    let _ = writer.await;
    drop(slot);
}

/// Queues what fits within the per-request and per-session bounds and
/// answers the rest at once.
async fn enqueue_frames(
    mut frames: Vec<FrameRequest>,
    state: &AppState,
    queued: &AtomicUsize,
    work: &mpsc::UnboundedSender<Work>,
    out: &mpsc::Sender<Outgoing>,
) -> bool {
    let limits = &state.args;
    let over_request = frames.split_off(frames.len().min(limits.max_frames_per_request));
    let room = limits.max_queued_frames.saturating_sub(queued.load(Ordering::Acquire));
    let over_queue = frames.split_off(frames.len().min(room));
    queued.fetch_add(frames.len(), Ordering::AcqRel);
    if !frames.is_empty() && work.send(Work::Frames(frames)).is_err() {
        return false;
    }
    let refusals = over_request.into_iter().map(|f| {
        let reason = format!("a request may ask for at most {} frames", limits.max_frames_per_request);
        (f, FrameFailure::new("too_many_frames", reason))
    });
    let refusals = refusals.chain(over_queue.into_iter().map(|f| {
        let reason = format!("the session already has {} frames queued", limits.max_queued_frames);
        (f, FrameFailure::new("queue_full", reason))
    }));
    for (frame, failure) in refusals {
        if !send(out, frame_error(&frame, failure)).await {
            return false;
        }
    }
    true
}

async fn serve_queue(
    mut queue: mpsc::UnboundedReceiver<Work>,
    out: mpsc::Sender<Outgoing>,
    state: Arc<AppState>,
    queued: Arc<AtomicUsize>,
) {
    let mut video: Option<Arc<Channel>> = None;
    while let Some(item) = queue.recv().await {
        match item {
            Work::SetVideo(path) => {
                let reply = match state.channels.open(&path).await {
                    Ok(channel) => {
                        let index = &channel.index;
                        let summary = VideoSummary {
                            frame_count: index.samples.len(),
                            width: index.width,
                            height: index.height,
                            frame_rate: index.frame_rate(),
                            codec: index.codec,
                        };
                        video = Some(channel);
                        Reply::VideoSet { path, ok: true, error: None, video: Some(summary) }
                    }
                    Err(error) => {
                        video = None;
                        Reply::VideoSet { path, ok: false, error: Some(error.to_string()), video: None }
                    }
                };
                if !send(&out, reply).await {
                    return;
                }
            }
            Work::Frames(frames) => {
                if !serve_frames(frames, video.as_ref(), &state, &out, &queued).await {
                    return;
                }
            }
        }
    }
}

/// Frames of one request decoded and encoded concurrently (up to this many
/// at once): the decoder works on the next frame while earlier ones are
/// encoded. Answers still leave in request order.
const PIPELINE_DEPTH: usize = 8;

/// Serves one request's frames in order; false when the client is gone.
async fn serve_frames(
    frames: Vec<FrameRequest>,
    video: Option<&Arc<Channel>>,
    state: &AppState,
    out: &mpsc::Sender<Outgoing>,
    queued: &AtomicUsize,
) -> bool {
    let resolved: Vec<Result<u32, FrameFailure>> = frames.iter().map(|frame| resolve(frame, video)).collect();
    // Per IRAP, the furthest frame this request wants: read that far at once.
    let mut furthest: HashMap<u32, u32> = HashMap::new();
    if let Some(channel) = video {
        for &position in resolved.iter().flatten() {
            let irap = channel.index.sample(position).irap;
            furthest.entry(irap).and_modify(|far| *far = (*far).max(position)).or_insert(position);
        }
    }
    let quality = state.args.jpeg_quality;
    let mut answers = futures_util::stream::iter(frames.into_iter().zip(resolved))
        .map(|(frame, resolved)| {
            let read_ahead = video.zip(resolved.as_ref().ok()).map(|(c, &p)| furthest[&c.index.sample(p).irap]);
            async move {
                let answer = match (resolved, video) {
                    (Ok(position), Some(channel)) => channel.jpeg(position, quality, read_ahead).await,
                    (Err(failure), _) => Err(failure),
                    (Ok(_), None) => unreachable!("positions resolve only with a video"),
                };
                (frame, answer)
            }
        })
        .buffered(PIPELINE_DEPTH);
    while let Some((frame, answer)) = answers.next().await {
        queued.fetch_sub(1, Ordering::AcqRel);
        let delivered = match answer {
            Ok(jpeg) => {
                metrics::counter!(FRAMES_SERVED).increment(1);
                let header = Reply::Frame {
                    index: frame.label.clone(),
                    offset: frame.echoed_offset(),
                    size: jpeg.len(),
                    request_id: frame.request_id.clone(),
                };
                out.send(Outgoing::Frame { header: header.to_text(), jpeg }).await.is_ok()
            }
            Err(failure) => send(out, frame_error(&frame, failure)).await,
        };
        if !delivered {
            return false;
        }
    }
    true
}

fn resolve(frame: &FrameRequest, video: Option<&Arc<Channel>>) -> Result<u32, FrameFailure> {
    let Some(channel) = video else {
        return Err(FrameFailure::new("no_video", "no video is set: send SetVideo first"));
    };
    let offset = frame.offset.clone().map_err(|reason| FrameFailure::new("invalid_request", reason))?;
    channel.resolve(offset, frame.irap_offset)
}

fn frame_error(frame: &FrameRequest, failure: FrameFailure) -> Reply {
    metrics::counter!(FRAME_ERRORS, "reason" => failure.code).increment(1);
    Reply::FrameError {
        index: frame.label.clone(),
        offset: frame.echoed_offset(),
        error: failure.code,
        message: failure.message,
        request_id: frame.request_id.clone(),
    }
}

async fn send(out: &mpsc::Sender<Outgoing>, reply: Reply) -> bool {
    out.send(Outgoing::Text(reply.to_text())).await.is_ok()
}
