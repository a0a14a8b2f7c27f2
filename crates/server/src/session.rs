//! One WebSocket connection. The reader parses messages, opens videos
//! (`SetVideo`), queues requested frames in the session's scheduler
//! (`scheduler.rs`: fifo, lifo, latest) and answers at once what needs no
//! decoding: malformed input, over-limit requests, superseded and cancelled
//! frames. The worker takes frames from the queue and keeps several in
//! flight, so the next one decodes while earlier ones encode. The writer is
//! the only one touching the socket, so a `Frame` header and its JPEG always
//! leave back to back.
//!
//! Every requested frame gets exactly one answer. Frames are served from the
//! video that was set when they were requested. Closing the connection drops
//! the queued work; frames already on a decoder finish into the cache.
//!
//! A client that stops reading holds nothing shared: each frame in flight is
//! produced by a task of its own, which takes the decoder and an encode slot
//! and lets go of them whether or not the session ever sends its answer.
//! What waits for the client is bounded by the session's outgoing byte
//! budget; a write that cannot finish within the client timeout, a client
//! that answers no ping within it, or a client that sends nothing for the
//! idle timeout is closed with a close code saying which (docs/protocol.md).
//!
//! When the server drains (`drain.rs`) a session stops reading, answers
//! the frames it was asked for and closes with 1012.

use crate::auth::Grant;
use crate::channel::{Channel, Failure, FrameFailure, Wanted};
use crate::frame_cache::Image;
use crate::metrics::{FRAMES_SERVED, FRAME_ERRORS, SESSIONS, SESSIONS_CLOSED};
use crate::protocol::{parse, ChunkRejection, ChunkSpec, Command, FrameRequest, Reply, VideoSummary};
use crate::scheduler::{Job, Mode, Queue};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use media::output::Output;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

enum Outgoing {
    Text(String),
    /// A frame and its share of the session's outgoing byte budget, given
    /// back once the socket has taken the bytes.
    Frame {
        header: String,
        image: Bytes,
        _budget: OwnedSemaphorePermit,
    },
    /// Ends the session with this close code.
    Close(u16, &'static str),
    /// A keepalive ping (the writer's own).
    Ping,
}

/// WebSocket close codes this server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// An idle session (no message for the idle timeout); the web client reconnects when used.
    pub const IDLE: u16 = 1000;
    /// The client does not read what it asked for (a write or a ping went unanswered).
    pub const NOT_READING: u16 = 1008;
    /// A message larger than `--max-message-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The server is draining (SIGTERM): reconnect and ask again for what is unanswered.
    pub const RESTART: u16 = 1012;
}

/// How a session's connection is kept honest.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A write may take this long, and a ping must be answered within it.
    pub client: Duration,
    /// How often the server pings.
    pub ping_every: Duration,
    /// A session that sends nothing for this long is closed (`None`: never).
    pub idle: Option<Duration>,
}

/// Frames of `fifo`/`lifo` requests in flight at once: the decoder works on
/// the next frame while earlier ones are encoded. Answers leave in the order
/// the frames were taken from the queue.
const PIPELINE_DEPTH: usize = 8;
/// In `latest` mode a newer request stops the frames in flight, so the
/// newest position never waits behind positions the user has moved past;
/// a few may be in flight so a grid's clips (one frame each, one decoder
/// per video) decode side by side.
const LATEST_DEPTH: usize = 4;

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

/// The queue shared by the reader (which fills it) and the worker, and the
/// cancel flags of the `latest` frames being decoded.
struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    decoding_latest: Mutex<Vec<Arc<AtomicBool>>>,
    /// Bytes of frames produced for this session and not yet taken by its socket.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// The server is draining: once the queue is empty and the frames in
    /// flight are answered, the worker closes the session with 1012.
    draining: AtomicBool,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next queued frame to put in flight, unless `in_flight` already
    /// fills its mode's depth.
    fn next_job(&self, in_flight: usize) -> Option<Job> {
        let mut queue = self.queue();
        let depth = match queue.peek_mode()? {
            Mode::Latest => LATEST_DEPTH,
            _ => PIPELINE_DEPTH,
        };
        if in_flight >= depth {
            return None;
        }
        queue.pop()
    }
}

/// Serves one WebSocket; `grant` says which videos it may open, and
/// `start_on` is the video of the URL (`/ws?video=`), set before any message.
pub async fn run(socket: WebSocket, state: Arc<AppState>, slot: SessionSlot, grant: Grant, start_on: Option<String>) {
    let (sink, mut stream) = socket.split();
    let (out, outgoing) = mpsc::channel::<Outgoing>(64);
    let timeouts = state.args.session_timeouts();
    // When the client was last heard from; `None` while the reader is busy
    // with a command (it reads no pongs then, so silence proves nothing).
    let heard = Arc::new(Mutex::new(Some(Instant::now())));
    let mut writer = tokio::spawn(write(sink, outgoing, timeouts, heard.clone()));
    let budget_bytes = state.args.session_buffer_bytes.clamp(1, u32::MAX as usize);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        ready: Notify::new(),
        decoding_latest: Mutex::default(),
        budget: Arc::new(Semaphore::new(budget_bytes)),
        budget_bytes,
        draining: AtomicBool::new(false),
    });
    let worker = tokio::spawn(serve_queue(shared.clone(), out.clone()));
    let mut video: Option<Arc<Channel>> = None;
    // Registered IRAP sections of the current video: IRAP offset → wanted frame offsets.
    let mut chunks: HashMap<u64, Option<Vec<u64>>> = HashMap::new();
    let mut last_request = Instant::now();
    if let Some(path) = start_on {
        let (channel, reply) = set_video(path, &state, &grant).await;
        video = channel;
        send(&out, reply).await;
    }
    let drain_started = state.drain.started();
    tokio::pin!(drain_started);
    let mut draining = false;

    loop {
        let idle_left = timeouts.idle.map(|idle| idle.saturating_sub(last_request.elapsed()));
        let message = tokio::select! {
            message = stream.next() => message,
            _ = out.closed() => break, // the writer gave up on the client
            _ = &mut drain_started => {
                draining = true;
                break;
            }
            _ = sleep_or_forever(idle_left) => {
                let _ = out.send(Outgoing::Close(close_code::IDLE, "idle timeout")).await;
                break;
            }
        };
        let hear = |at: Option<Instant>| *heard.lock().unwrap_or_else(|p| p.into_inner()) = at;
        hear(Some(Instant::now()));
        let message = match message {
            None => break,
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                if is_too_big(error) {
                    let _ = out.send(Outgoing::Close(close_code::TOO_BIG, "message too big")).await;
                }
                break;
            }
        };
        let command = match message {
            Message::Text(text) => parse(text.as_str()),
            Message::Binary(_) => Err("binary messages are not accepted; send JSON text".to_string()),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        last_request = Instant::now();
        hear(None);
        let delivered = match command {
            Err(message) => send(&out, Reply::Error { message }).await,
            Ok(Command::SetVideo { path }) => {
                let (channel, reply) = set_video(path, &state, &grant).await;
                video = channel;
                chunks.clear();
                send(&out, reply).await
            }
            Ok(Command::RequestFrames { frames, mode }) => {
                request_frames(frames, mode.as_deref(), video.as_ref(), &state, &grant, &shared, &out).await
            }
            Ok(Command::Cancel) => {
                let cancelled = shared.queue().take_all();
                answer_all(cancelled, Failure::Cancelled, "cancelled by the client", &out).await
            }
            Ok(Command::RegisterChunks { chunks: specs }) => {
                send(&out, register_chunks(specs, video.as_ref(), &mut chunks)).await
            }
            Ok(Command::RequestChunk { irap_offset, request_id, mode }) => match video.as_ref() {
                None => send(&out, Reply::Error { message: "no video is set: send SetVideo first".into() }).await,
                Some(channel) => match chunk_frames(channel, irap_offset, request_id, &chunks) {
                    Ok(frames) => {
                        preload_next_chunk(channel, irap_offset, &chunks);
                        request_frames(frames, mode.as_deref(), video.as_ref(), &state, &grant, &shared, &out).await
                    }
                    Err(message) => send(&out, Reply::Error { message }).await,
                },
            },
        };
        hear(Some(Instant::now()));
        if !delivered {
            break;
        }
    }
    if draining {
        finish_for_restart(&state, &shared, worker, &out, &heard).await;
    } else {
        worker.abort();
    }
    drop(out);
    // Let the writer send what is queued (a close frame at least), but never
    // wait on a client that does not read, nor past the drain.
    let flush_until = state
        .drain
        .sessions_end()
        .map_or(Instant::now() + timeouts.client, |end| end.min(Instant::now() + timeouts.client));
    if tokio::time::timeout_at(flush_until.into(), &mut writer).await.is_err() {
        writer.abort();
    }
    // The closing handshake: read what the client still sends until it
    // answers the close (briefly). Dropping a socket with unread data resets
    // it, and the client would lose the close frame that says why.
    let drain = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    drop(slot);
}

/// The drain: new messages are no longer read; the frames asked for are
/// answered, then the worker closes with 1012. At the drain's cutoff a
/// session still busy closes anyway (its client re-asks on reconnect).
async fn finish_for_restart(
    state: &AppState,
    shared: &Shared,
    mut worker: tokio::task::JoinHandle<()>,
    out: &mpsc::Sender<Outgoing>,
    heard: &Mutex<Option<Instant>>,
) {
    // Pongs go unread from here on: silence proves nothing.
    *heard.lock().unwrap_or_else(|p| p.into_inner()) = None;
    shared.draining.store(true, Ordering::Release);
    shared.ready.notify_one();
    let cutoff = state.drain.session_cutoff().unwrap_or_else(Instant::now);
    if tokio::time::timeout_at(cutoff.into(), &mut worker).await.is_err() {
        worker.abort();
        let end = state.drain.sessions_end().unwrap_or_else(Instant::now);
        let close = out.send(Outgoing::Close(close_code::RESTART, "service restart"));
        let _ = tokio::time::timeout_at(end.into(), close).await;
    }
}

/// Sleeps for `duration`, or forever when there is none.
async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Whether a read failed because the client's message was over the size limit.
fn is_too_big(error: axum::Error) -> bool {
    let inner = error.into_inner();
    matches!(inner.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)))
}

/// The only task touching the socket: sends what the session queues, pings
/// the client, and gives up on a client that does not read (a write that
/// does not finish, or no answer of any kind, within the client timeout).
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    timeouts: Timeouts,
    heard: Arc<Mutex<Option<Instant>>>,
) {
    let mut ping = tokio::time::interval(timeouts.ping_every);
    ping.tick().await;
    let reason = loop {
        let message = tokio::select! {
            message = outgoing.recv() => message,
            _ = ping.tick() => {
                let silent = heard.lock().unwrap_or_else(|p| p.into_inner()).map(|at| at.elapsed());
                if silent.is_some_and(|silent| silent > timeouts.client + timeouts.ping_every) {
                    break Some((close_code::NOT_READING, "no answer to pings"));
                }
                Some(Outgoing::Ping)
            }
        };
        let sent = match message {
            None => break None,
            Some(Outgoing::Close(code, reason)) => break Some((code, reason)),
            Some(Outgoing::Ping) => send_within(&mut sink, Message::Ping(Bytes::new()), timeouts.client).await,
            Some(Outgoing::Text(text)) => send_within(&mut sink, Message::Text(text.into()), timeouts.client).await,
            Some(Outgoing::Frame { header, image, _budget }) => {
                match send_within(&mut sink, Message::Text(header.into()), timeouts.client).await {
                    Ok(()) => send_within(&mut sink, Message::Binary(image), timeouts.client).await,
                    error => error,
                }
            }
        };
        match sent {
            Ok(()) => {}
            Err(Stalled) => break Some((close_code::NOT_READING, "the client is not reading")),
            Err(Gone) => return,
        }
    };
    if let Some((code, reason)) = reason {
        metrics::counter!(SESSIONS_CLOSED, "reason" => reason).increment(1);
        tracing::info!(code, reason, "closing a session");
        let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        // Best effort: a client that does not read will not see it either.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
}

/// Why a write did not happen.
enum WriteFailure {
    /// The socket took nothing for the whole client timeout.
    Stalled,
    /// The connection is gone.
    Gone,
}
use WriteFailure::{Gone, Stalled};

async fn send_within(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    limit: Duration,
) -> Result<(), WriteFailure> {
    match tokio::time::timeout(limit, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Gone),
        Err(_) => Err(Stalled),
    }
}

async fn set_video(path: String, state: &AppState, grant: &Grant) -> (Option<Arc<Channel>>, Reply) {
    if !grant.allows(&path) {
        let error = format!("forbidden: {}", grant.refusal(&path));
        return (None, Reply::VideoSet { path, ok: false, error: Some(error), video: None });
    }
    match state.channels.open(&path).await {
        Ok(channel) => {
            let index = &channel.index;
            let summary = VideoSummary {
                frame_count: index.frame_count(),
                width: index.width,
                height: index.height,
                frame_rate: index.frame_rate(),
                codec: index.codec,
            };
            (Some(channel), Reply::VideoSet { path, ok: true, error: None, video: Some(summary) })
        }
        Err(error) => (None, Reply::VideoSet { path, ok: false, error: Some(error.to_string()), video: None }),
    }
}

/// Most IRAP sections one session may register.
const MAX_REGISTERED_CHUNKS: usize = 100_000;
/// Registered sections whose bytes are fetched at once (the rest load when requested).
const PRELOADED_CHUNKS: usize = 4;

/// Records IRAP sections and starts loading the first few in the background.
fn register_chunks(
    specs: Vec<ChunkSpec>,
    video: Option<&Arc<Channel>>,
    chunks: &mut HashMap<u64, Option<Vec<u64>>>,
) -> Reply {
    let mut rejected = Vec::new();
    let mut preload = Vec::new();
    let reject = |spec: &ChunkSpec, error: String| ChunkRejection { irap_offset: spec.irap_offset, error };
    for spec in specs {
        let Some(channel) = video else {
            rejected.push(reject(&spec, "no video is set: send SetVideo first".into()));
            continue;
        };
        let Some(irap) = channel.index.position_at(spec.irap_offset).filter(|&p| channel.index.sample(p).keyframe)
        else {
            rejected.push(reject(
                &spec,
                format!("irap_offset {} is not an IRAP of {}", spec.irap_offset, channel.path.text),
            ));
            continue;
        };
        if chunks.len() >= MAX_REGISTERED_CHUNKS && !chunks.contains_key(&spec.irap_offset) {
            rejected.push(reject(&spec, format!("a session may register at most {MAX_REGISTERED_CHUNKS} chunks")));
            continue;
        }
        if preload.len() < PRELOADED_CHUNKS {
            preload.push(chunk_positions(channel, irap, spec.frames.as_deref()));
        }
        chunks.insert(spec.irap_offset, spec.frames);
    }
    if let Some(channel) = video.filter(|_| !preload.is_empty()).cloned() {
        tokio::spawn(async move {
            for positions in preload {
                if channel.preload(&positions).await.is_err() {
                    break; // the request itself will report the storage error
                }
            }
        });
    }
    Reply::ChunksRegistered { registered: chunks.len(), rejected }
}

/// Decode positions of a registered section's frames (all of its GOP when
/// no frames were listed).
fn chunk_positions(channel: &Channel, irap: u32, frames: Option<&[u64]>) -> Vec<u32> {
    match frames {
        Some(offsets) => offsets.iter().filter_map(|&offset| channel.index.position_at(offset)).collect(),
        None => channel.index.section(irap),
    }
}

/// Fetches the bytes of the registered section after `irap_offset` in the
/// background, so a client going through its chunks in order finds the next
/// one's bytes loaded while this one decodes.
fn preload_next_chunk(channel: &Arc<Channel>, irap_offset: u64, chunks: &HashMap<u64, Option<Vec<u64>>>) {
    let Some((&next, frames)) = chunks.iter().filter(|(&offset, _)| offset > irap_offset).min_by_key(|(&o, _)| o)
    else {
        return;
    };
    let Some(irap) = channel.index.position_at(next) else { return };
    let positions = chunk_positions(channel, irap, frames.as_deref());
    let channel = channel.clone();
    tokio::spawn(async move {
        let _ = channel.preload(&positions).await; // a request for it reports storage errors
    });
}

/// The frames of an IRAP section as a request: the registered ones, or the
/// whole GOP in presentation order. Labels are presentation frame numbers.
fn chunk_frames(
    channel: &Channel,
    irap_offset: u64,
    request_id: Option<serde_json::Value>,
    chunks: &HashMap<u64, Option<Vec<u64>>>,
) -> Result<Vec<FrameRequest>, String> {
    let index = &channel.index;
    let irap = index
        .position_at(irap_offset)
        .filter(|&p| index.sample(p).keyframe)
        .ok_or_else(|| format!("irap_offset {irap_offset} is not an IRAP of {}", channel.path.text))?;
    let offsets: Vec<u64> = match chunks.get(&irap_offset) {
        Some(Some(offsets)) => offsets.clone(),
        _ => channel.index.section(irap).iter().map(|&p| index.sample(p).offset).collect(),
    };
    Ok(offsets
        .into_iter()
        .enumerate()
        .map(|(position_in_chunk, offset)| {
            let label = index.position_at(offset).map_or(position_in_chunk as u32, |p| index.sample(p).presentation);
            FrameRequest {
                label: serde_json::Value::from(label),
                request_id: request_id.clone(),
                offset: Ok(offset),
                irap_offset: Some(irap_offset),
                video: None,
                output: Default::default(),
            }
        })
        .collect())
}

/// Queues what fits within the bounds, in the request's mode, and answers
/// at once what does not fit or was superseded. False when the client is gone.
async fn request_frames(
    mut frames: Vec<FrameRequest>,
    mode: Option<&str>,
    video: Option<&Arc<Channel>>,
    state: &AppState,
    grant: &Grant,
    shared: &Shared,
    out: &mpsc::Sender<Outgoing>,
) -> bool {
    let mode = match Mode::parse(mode) {
        Ok(mode) => mode,
        Err(reason) => {
            let failures =
                frames.into_iter().map(|frame| (frame, FrameFailure::new(Failure::InvalidRequest, reason.clone())));
            return answer_each(failures, out).await;
        }
    };
    let limits = &state.args;
    let over_request = frames.split_off(frames.len().min(limits.max_frames_per_request));
    let room = limits.max_queued_frames.saturating_sub(shared.queue().len());
    let over_queue = frames.split_off(frames.len().min(room));
    let channels = channels_for(&frames, video, state, grant).await;
    let jobs = jobs_for(frames, channels, mode, state.args.jpeg_quality);
    if mode == Mode::Latest {
        // The position being decoded is one the user has left: stop it at the
        // next sample (the decoder stays positioned; nothing decoded is lost).
        for flag in shared.decoding_latest.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            flag.store(true, Ordering::Relaxed);
        }
    }
    let superseded = {
        let mut queue = shared.queue();
        queue.push(jobs, mode)
    };
    shared.ready.notify_one();
    let request_limit = format!("a request may ask for at most {} frames", limits.max_frames_per_request);
    let queue_limit = format!("the session already has {} frames queued", limits.max_queued_frames);
    let refusals = over_request
        .into_iter()
        .map(|frame| (frame, FrameFailure::new(Failure::TooManyFrames, request_limit.clone())))
        .chain(over_queue.into_iter().map(|frame| (frame, FrameFailure::new(Failure::QueueFull, queue_limit.clone()))));
    answer_all(superseded, Failure::Superseded, "a newer request in latest mode replaced it", out).await
        && answer_each(refusals, out).await
}

/// The video of each frame: the one it names (opened now if needed, each
/// named video once per request), else the session's current video.
async fn channels_for(
    frames: &[FrameRequest],
    current: Option<&Arc<Channel>>,
    state: &AppState,
    grant: &Grant,
) -> Vec<Result<Arc<Channel>, FrameFailure>> {
    let mut named: HashMap<&str, Result<Arc<Channel>, FrameFailure>> = HashMap::new();
    let mut channels = Vec::with_capacity(frames.len());
    for frame in frames {
        let channel = match frame.video.as_deref() {
            None => current
                .cloned()
                .ok_or_else(|| FrameFailure::new(Failure::NoVideo, "no video is set: send SetVideo first")),
            Some(path) if !grant.allows(path) => Err(FrameFailure::new(Failure::Forbidden, grant.refusal(path))),
            Some(path) => {
                if !named.contains_key(path) {
                    let opened = state.channels.open(path).await;
                    named.insert(path, opened.map_err(|error| FrameFailure::new(error.failure(), error.to_string())));
                }
                named[path].clone()
            }
        };
        channels.push(channel);
    }
    channels
}

/// Resolves a request's frames against their videos and works out how far
/// each one's read should reach: the furthest frame of the same GOP this
/// request wants.
fn jobs_for(
    frames: Vec<FrameRequest>,
    channels: Vec<Result<Arc<Channel>, FrameFailure>>,
    mode: Mode,
    jpeg_quality: u8,
) -> Vec<Job> {
    let invalid = |reason| FrameFailure::new(Failure::InvalidRequest, reason);
    let outputs: Vec<Result<Output, FrameFailure>> =
        frames.iter().map(|frame| frame.output.resolve(jpeg_quality).map_err(invalid)).collect();
    let targets: Vec<Result<(Arc<Channel>, u32), FrameFailure>> = frames
        .iter()
        .zip(channels)
        .zip(&outputs)
        .map(|((frame, channel), output)| {
            let output = output.as_ref().map_err(Clone::clone)?;
            let channel = channel?;
            output.check_size(channel.index.width, channel.index.height).map_err(invalid)?;
            let offset = frame.offset.clone().map_err(invalid)?;
            let position = channel.resolve(offset, frame.irap_offset)?;
            Ok((channel, position))
        })
        .collect();
    let gop_of = |channel: &Channel, position: u32| (channel.id, channel.index.sample(position).irap);
    let mut furthest: HashMap<(u64, u32), u32> = HashMap::new();
    // Per video: how many frames it asks for, and the last one.
    let mut last_frames: HashMap<u64, (usize, u32)> = HashMap::new();
    for (channel, position) in targets.iter().flatten() {
        let far = furthest.entry(gop_of(channel, *position)).or_insert(*position);
        *far = (*far).max(*position);
        let shown = channel.index.sample(*position).presentation;
        let (count, last) = last_frames.entry(channel.id).or_insert((0, shown));
        *count += 1;
        *last = (*last).max(shown);
    }
    frames
        .into_iter()
        .zip(targets)
        .zip(outputs)
        .map(|((frame, target), output)| {
            let wanted = target.as_ref().ok().map_or_else(Wanted::default, |(channel, position)| Wanted {
                read_ahead_to: Some(furthest[&gop_of(channel, *position)]),
                last_frame: Some(last_frames[&channel.id]).filter(|(count, _)| *count > 1).map(|(_, last)| last),
            });
            let output = output.unwrap_or(Output::jpeg(jpeg_quality));
            Job { frame, target, output, wanted, mode, cancel: Arc::default() }
        })
        .collect()
}

/// Takes frames from the queue, keeps up to the mode's depth in flight and
/// sends their answers in the order they were taken. Each frame is produced
/// by a task of its own, so the decoder and encode slot it uses are given
/// back when the work is done, not when this session gets round to sending.
async fn serve_queue(shared: Arc<Shared>, out: mpsc::Sender<Outgoing>) {
    let mut in_flight = FuturesOrdered::new();
    loop {
        while let Some(job) = shared.next_job(in_flight.len()) {
            if job.mode == Mode::Latest {
                shared.decoding_latest.lock().unwrap_or_else(|p| p.into_inner()).push(job.cancel.clone());
            }
            let frame = job.frame.clone();
            in_flight.push_back(Production { frame: Some(frame), task: tokio::spawn(serve(job)) });
            // Let it start before the next one is spawned: tokio runs the task
            // spawned last first (its LIFO slot), which would send a batch's
            // last frame in flight to storage and the decoder before its
            // first, and the decoder past frames whose pictures 4K cannot keep.
            tokio::task::yield_now().await;
        }
        if in_flight.is_empty() {
            // Nothing queued either (the loop above took what it could).
            if shared.draining.load(Ordering::Acquire) {
                let _ = out.send(Outgoing::Close(close_code::RESTART, "service restart")).await;
                return;
            }
            shared.ready.notified().await;
            continue;
        }
        tokio::select! {
            Some((frame, answer)) = in_flight.next() => {
                if !deliver(&frame, answer, &shared, &out).await {
                    return;
                }
            }
            _ = shared.ready.notified() => {}
        }
    }
}

/// A frame being produced on a task of its own; dropping it (the session
/// ended) stops the work. A task that panicked is answered with an error.
struct Production {
    frame: Option<FrameRequest>,
    task: tokio::task::JoinHandle<Result<Image, FrameFailure>>,
}

impl std::future::Future for Production {
    type Output = (FrameRequest, Result<Image, FrameFailure>);

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let answer = std::task::ready!(std::pin::Pin::new(&mut self.task).poll(cx)).unwrap_or_else(|error| {
            tracing::error!("a frame task failed: {error}");
            Err(FrameFailure::new(Failure::Internal, "the server failed while producing this frame"))
        });
        std::task::Poll::Ready((self.frame.take().expect("polled once after completion"), answer))
    }
}

impl Drop for Production {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(job: Job) -> Result<Image, FrameFailure> {
    let cancel = (job.mode == Mode::Latest).then_some(job.cancel);
    let (channel, position) = job.target?;
    channel.image(position, job.output, job.wanted, cancel).await
}

/// Queues a frame's answer once the session's outgoing budget has room for
/// it. False when the session is over (the writer gave up or the client left).
async fn deliver(
    frame: &FrameRequest,
    answer: Result<Image, FrameFailure>,
    shared: &Shared,
    out: &mpsc::Sender<Outgoing>,
) -> bool {
    match answer {
        Ok(image) => {
            let share = image.bytes.len().clamp(1, shared.budget_bytes) as u32;
            let budget = tokio::select! {
                permit = shared.budget.clone().acquire_many_owned(share) => permit.expect("the budget is never closed"),
                _ = out.closed() => return false,
            };
            metrics::counter!(FRAMES_SERVED).increment(1);
            let header = Reply::Frame {
                index: frame.label.clone(),
                offset: frame.echoed_offset(),
                size: image.bytes.len(),
                format: image.format.name(),
                width: image.width,
                height: image.height,
                request_id: frame.request_id.clone(),
                video: frame.video.clone(),
            };
            out.send(Outgoing::Frame { header: header.to_text(), image: image.bytes, _budget: budget }).await.is_ok()
        }
        Err(failure) => send(out, frame_error(frame, failure)).await,
    }
}

async fn answer_all(jobs: Vec<Job>, failure: Failure, reason: &str, out: &mpsc::Sender<Outgoing>) -> bool {
    answer_each(jobs.into_iter().map(|job| (job.frame, FrameFailure::new(failure, reason))), out).await
}

async fn answer_each(
    failures: impl Iterator<Item = (FrameRequest, FrameFailure)>,
    out: &mpsc::Sender<Outgoing>,
) -> bool {
    for (frame, failure) in failures {
        if !send(out, frame_error(&frame, failure)).await {
            return false;
        }
    }
    true
}

fn frame_error(frame: &FrameRequest, failure: FrameFailure) -> Reply {
    metrics::counter!(FRAME_ERRORS, "reason" => failure.code()).increment(1);
    Reply::FrameError {
        index: frame.label.clone(),
        offset: frame.echoed_offset(),
        error: failure.code(),
        message: failure.message,
        request_id: frame.request_id.clone(),
        video: frame.video.clone(),
    }
}

async fn send(out: &mpsc::Sender<Outgoing>, reply: Reply) -> bool {
    out.send(Outgoing::Text(reply.to_text())).await.is_ok()
}
