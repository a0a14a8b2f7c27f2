//! One open video: its index, its decoders (`decoders.rs`) and the bytes of
//! the groups of pictures it has fetched (`gop_bytes.rs`). Every session
//! using the video shares the channel, so the header is read once per
//! process and neighbouring frames reuse fetched bytes and decoder state.
//! This file owns opening, offset checks and what each request makes the
//! parts do.
//!
//! Decoding runs on the process's decode threads, with up to
//! `--decoders-per-video` decoders of this video at once, and JPEG encoding
//! on blocking worker threads, so encoding overlaps the next decode.
//! Encoded frames go through the process-wide frame cache (single flight).
//! Sequential access reads ahead (the rest of the GOP, and the next GOPs in
//! the background) and prefetches the next few frames, below every
//! requested frame.

use crate::config::ThreadingPolicy;
use crate::costs::Costs;
use crate::decode_pool::DecodePool;
use crate::decoders::{long_gops, Decoders, NoMemory, PlayerMemory, Widening, Work};
use crate::encode_slots::EncodeSlots;
pub use crate::failure::{Failure, FrameFailure};
use crate::frame_cache::{FrameCache, FrameKey, Image};
use crate::gop_bytes::{GopBytes, READ_AHEAD_BYTES};
use crate::memory_budget::{Holder, MemoryBudget, Reclaim, Reservation};
use crate::metrics::{
    Timer, DECODE_SECONDS, ENCODE_SECONDS, FRAMES_DECODED, PICTURES_SKIPPED, SEEK_PICTURES, VIDEO_FRAMES_DECODED,
    VIDEO_OPENS, WIDENED_SEEKS,
};
use crate::storage::{BlockingObject, Storage, StorageError, VideoPath};
use crate::thumbnails::{Strip, StripSpec};
use crate::urgency::Urgency;
use bytes::Bytes;
use media::output::Output;
use media::{DecodeError, Player, VideoIndex};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Why a video could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path} is not a playable video: {reason}")]
    NotVideo { path: String, reason: String },
    /// The container's own sizes, counts or offsets do not fit together.
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: String, reason: String },
    /// Indexing would take more time or memory than allowed.
    #[error("{path} cannot be opened: {reason}")]
    TooLarge { path: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

impl OpenError {
    /// What kind of failure this is (its wire code and HTTP status).
    pub fn failure(&self) -> Failure {
        match self {
            OpenError::Storage(storage) => storage.failure(),
            OpenError::NotVideo { .. } => Failure::NotAVideo,
            OpenError::Corrupt { .. } => Failure::Corrupt,
            OpenError::TooLarge { .. } => Failure::TooLarge,
            OpenError::Refused(_) => Failure::Busy,
        }
    }

    /// Classifies an indexing failure by the typed error at its root.
    fn from_indexing(path: &str, error: anyhow::Error) -> Self {
        let path = path.to_string();
        let reason = format!("{error:#}");
        if error.chain().any(|cause| cause.is::<media::Corrupt>()) {
            return OpenError::Corrupt { path, reason };
        }
        if error.chain().any(|cause| cause.is::<media::OverBudget>()) {
            return OpenError::TooLarge { path, reason };
        }
        match error.downcast::<StorageError>() {
            Ok(storage_error) => OpenError::Storage(storage_error),
            Err(_) => OpenError::NotVideo { path, reason },
        }
    }
}

/// Decoded pictures a player keeps for neighbouring requests.
const KEPT_PICTURE_BYTES: usize = 24 << 20;
/// Samples read past the last frame a reader is known to want: the decoder
/// must see a few more pictures before B-frame reordering lets that frame
/// out, and at a GOP boundary the next IRAP and its leading pictures follow.
/// Without them the decoder would have to drain and start over.
const READ_AHEAD_SAMPLES: u32 = 16;
/// Frames decoded and encoded ahead of a sequential reader.
const PREFETCH_FRAMES: u32 = 4;
/// Frames in a row after which a sequential reader counts as playing (its
/// next group of pictures is made ahead): a reader stepping through a few
/// frames does not start a second decoder, nor does a burst of new readers
/// whose first frames find the decode threads idle.
const PLAYING_AFTER: u32 = 8;
/// Encoded frames of the next group of pictures prefetched for a sequential reader, at most.
const NEXT_GOP_BYTES: u64 = 16 << 20;

/// What the request a frame comes with asks for besides it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// The furthest decode position it wants in the frame's GOP (its bytes
    /// are read together).
    pub read_ahead_to: Option<u32>,
    /// The last frame (presentation number) it wants of the video, when it
    /// asks for more than one: frames past it are not worked on ahead.
    pub last_frame: Option<u32>,
}

/// What all channels of the process share.
pub struct Shared {
    /// Encoded frames of every video.
    pub frames: FrameCache,
    /// JPEG encodes allowed at once, requested frames first.
    pub encode_slots: EncodeSlots,
    /// Chooses each video's decoder threading.
    pub threading: ThreadingPolicy,
    /// The process's decode threads.
    pub pool: DecodePool,
    /// Decoders one video may use at once.
    pub decoders_per_video: usize,
    /// Seeks leave out pictures nothing references (`--seek-all-pictures` turns it off).
    pub skip_unreferenced: bool,
    /// Time allowed to index one video.
    pub index_time: std::time::Duration,
    /// What decoders, fetched bytes and indexes may hold (`--memory-budget`).
    pub memory: Arc<MemoryBudget>,
}

pub struct Channel {
    /// Unique per opened video in this process (cache keys).
    pub id: u64,
    pub path: VideoPath,
    pub url: String,
    pub index: Arc<VideoIndex>,
    shared: Arc<Shared>,
    decoders: Arc<Decoders>,
    /// The GOP bytes fetched from storage.
    bytes: GopBytes,
    /// Frames being prefetched, raised to urgent when a request joins one.
    prefetching: Mutex<HashMap<FrameKey, Urgency>>,
    /// Presentation number of the last frame asked for, and how many
    /// requests in a row each asked for the frame after the one before (playback).
    last_requested: Mutex<Option<(u32, u32)>>,
    /// When a frame was last asked for (or the channel opened), for the idle timeout.
    last_used: Mutex<std::time::Instant>,
    /// Identifies the object's content (its ETag, or size and modification time).
    pub version: String,
    /// The serialised index, made on first request.
    index_document: std::sync::OnceLock<Bytes>,
    /// Thumbnail strips made (or being made) for this video, a few at most.
    strips: Mutex<HashMap<StripSpec, Arc<tokio::sync::OnceCell<Arc<Strip>>>>>,
    /// What its pictures cost to decode and its frames to encode lately.
    costs: Arc<Costs>,
    /// The index's share of the memory budget.
    _index_memory: Reservation,
}

/// Thumbnail strips (different widths or counts) kept per video.
const KEPT_STRIPS: usize = 4;

impl Channel {
    /// Reads the header and builds the index (a few range reads).
    pub async fn open(id: u64, storage: Arc<Storage>, shared: Arc<Shared>, path: VideoPath) -> Result<Self, OpenError> {
        let meta = storage.head(&path).await?;
        let version = match &meta.e_tag {
            Some(tag) => tag.clone(),
            None => format!("{}-{}", meta.size, meta.last_modified.timestamp_nanos_opt().unwrap_or_default()),
        };
        let object = BlockingObject {
            storage: storage.clone(),
            path: path.clone(),
            size: meta.size,
            runtime: tokio::runtime::Handle::current(),
        };
        let text = path.text.clone();
        let policy = shared.threading;
        let skip_unreferenced = shared.skip_unreferenced;
        let budget = media::Budget::new(shared.index_time, media::budget::DEFAULT_MAX_SAMPLES);
        let built = tokio::task::spawn_blocking(move || {
            let index = media::probe::index(&object, &budget)?;
            let threading = policy.for_stream(&index.decoder);
            let player = Player::new(&index, threading, KEPT_PICTURE_BYTES)?.skip_unreferenced(skip_unreferenced);
            anyhow::Ok((index, threading, player))
        })
        .await
        .map_err(|e| OpenError::Corrupt { path: text.clone(), reason: format!("indexing crashed: {e}") })?;
        let (index, threading, player) = built.map_err(|error| OpenError::from_indexing(&text, error))?;
        let no_memory = |holder| {
            MemoryBudget::refused(holder);
            OpenError::Refused(format!("no memory to open {text}: the memory budget is full; try again later"))
        };
        let index_bytes =
            (index.samples.len() * std::mem::size_of::<media::Sample>() + index.decoder.extradata.len()) as u64;
        let index_memory =
            shared.memory.reserve(Holder::Indexes, index_bytes).ok_or_else(|| no_memory(Holder::Indexes))?;
        let player_bytes = Player::memory_needed(&index, threading, KEPT_PICTURE_BYTES);
        let first = shared.memory.reserve(Holder::Decoders, player_bytes).ok_or_else(|| no_memory(Holder::Decoders))?;
        let player_memory = PlayerMemory { budget: shared.memory.clone(), bytes: player_bytes, first };
        let index = Arc::new(index);
        let make = {
            let index = index.clone();
            move |threading| Ok(Player::new(&index, threading, KEPT_PICTURE_BYTES)?.skip_unreferenced(skip_unreferenced))
        };
        let runs = long_gops(&index);
        let widening = policy.for_lone_reader(&index.decoder).map(|wide| Widening {
            threading: wide,
            extra_bytes: Player::memory_needed(&index, wide, KEPT_PICTURE_BYTES).saturating_sub(player_bytes),
            seeks: threading == media::Threading::Single,
            runs,
        });
        let label = crate::metrics::video_label(&text);
        metrics::counter!(VIDEO_OPENS, "video" => label.clone()).increment(1);
        let decoded_here = metrics::counter!(VIDEO_FRAMES_DECODED, "video" => label);
        let costs = Arc::new(Costs::new(index.width, index.height));
        let decode_costs = costs.clone();
        let on_work = move |work: Work| {
            decode_costs.decoded(work.decoded, work.busy);
            metrics::counter!(FRAMES_DECODED).increment(work.decoded);
            metrics::counter!(PICTURES_SKIPPED).increment(work.skipped);
            if work.seeked {
                metrics::histogram!(SEEK_PICTURES).record(work.decoded as f64);
            }
            if work.seeked && work.widened {
                metrics::counter!(WIDENED_SEEKS).increment(1);
            }
            decoded_here.increment(work.decoded);
        };
        let side_by_side_pays = {
            let (costs, encoders) = (costs.clone(), shared.encode_slots.slots());
            move || costs.decoding_holds_back(encoders)
        };
        let limit = shared.decoders_per_video;
        let decoders = Decoders::new(index.clone(), (player, player_memory), limit, make, on_work, side_by_side_pays)
            .widened_when_alone(widening);
        Ok(Self {
            id,
            url: storage.url_of(&path),
            bytes: GopBytes::new(storage, path.clone(), shared.memory.clone()),
            path,
            index,
            shared,
            decoders: Arc::new(decoders),
            prefetching: Mutex::new(HashMap::new()),
            last_requested: Mutex::new(None),
            last_used: Mutex::new(std::time::Instant::now()),
            index_document: std::sync::OnceLock::new(),
            strips: Mutex::default(),
            costs,
            version,
            _index_memory: index_memory,
        })
    }

    /// A strong HTTP entity tag for a frame: the same object content, frame and
    /// output settings always give the same tag, in every process.
    pub fn frame_etag(&self, position: u32, output: &Output) -> String {
        let Output { format, max_width, max_height, quality } = output;
        // Today's JPEG keeps its tag; other settings extend it.
        if *output == Output::jpeg(*quality) {
            self.tag(&format!("{position}\0{quality}"))
        } else {
            self.tag(&format!("{position}\0{quality}\0{}\0{max_width:?}\0{max_height:?}", format.name()))
        }
    }

    /// The process's memory budget.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.shared.memory
    }

    /// A strong HTTP entity tag for `what` of this object's content.
    pub fn tag(&self, what: &str) -> String {
        // FNV-1a: stable across builds and machines, unlike std's hasher.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let text = format!("{}\0{}\0{what}", self.path.text, self.version);
        for byte in text.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("\"{hash:016x}\"")
    }

    /// Whether this video's decoder can still take work (a decoder that
    /// could not be rebuilt after a crash cannot; the video is then reopened).
    pub fn is_usable(&self) -> bool {
        self.decoders.is_usable()
    }

    /// Drops this video's decoders idle for `age`; how many.
    pub fn release_idle_decoders(&self, age: std::time::Duration) -> usize {
        self.decoders.release_idle(age)
    }

    /// Fetches the bytes of these frames (and what they decode from) into the
    /// span cache, without decoding. Returns the bytes now held for them.
    pub async fn preload(&self, positions: &[u32]) -> Result<u64, FrameFailure> {
        let Some(&last) = positions.iter().max() else { return Ok(0) };
        // Leading pictures decode from the IRAP before: the span starts where the earliest needs it.
        let start = positions.iter().map(|&p| Player::required_bytes(&self.index, p).start).min().unwrap_or(0);
        let needed = Player::required_bytes(&self.index, last);
        let end = self.read_ahead_end(last, Some(self.past_furthest(last)), needed.end);
        let span = self.bytes.covering(start.min(needed.start)..needed.end, end).await?;
        Ok(span.len() as u64)
    }

    /// How long since a frame of this video was last asked for.
    pub fn idle_for(&self) -> std::time::Duration {
        self.last_used.lock().expect("last use lock").elapsed()
    }

    /// The index as JSON (see `index_document.rs`).
    pub fn index_document(&self) -> Bytes {
        self.index_document.get_or_init(|| crate::index_document::render(self)).clone()
    }

    /// Finds the decode-order position of the frame at `offset`, checking a
    /// client-supplied IRAP offset if there is one.
    pub fn resolve(&self, offset: u64, irap_offset: Option<u64>) -> Result<u32, FrameFailure> {
        let index = &self.index;
        let Some(position) = index.position_at(offset) else {
            if index.is_truncated_at(offset) {
                return Err(FrameFailure::new(
                    Failure::Truncated,
                    format!(
                        "the recording {} is cut short: the frame at offset {offset} is not complete",
                        self.path.text
                    ),
                ));
            }
            let last_end = index.samples.iter().map(|s| s.end()).max().unwrap_or(0);
            if offset >= last_end {
                return Err(FrameFailure::new(
                    Failure::OffsetOutOfRange,
                    format!(
                        "offset {offset} is past the last frame of {} (frames end at byte {last_end})",
                        self.path.text
                    ),
                ));
            }
            return Err(FrameFailure::new(
                Failure::NotAFrame,
                format!("offset {offset} is not the start of a frame in {}", self.path.text),
            ));
        };
        if !index.sample(position).shown {
            return Err(FrameFailure::new(
                Failure::NotAFrame,
                format!("offset {offset} is a sample the edit list of {} hides, not a frame", self.path.text),
            ));
        }
        if let Some(irap_offset) = irap_offset {
            let Some(irap) = index.position_at(irap_offset) else {
                return Err(FrameFailure::new(
                    Failure::InvalidIrap,
                    format!("irap_offset {irap_offset} is not the start of a frame"),
                ));
            };
            if !index.sample(irap).keyframe {
                return Err(FrameFailure::new(
                    Failure::InvalidIrap,
                    format!("irap_offset {irap_offset} is a frame but not an IRAP (keyframe)"),
                ));
            }
            if irap > position {
                return Err(FrameFailure::new(
                    Failure::InvalidIrap,
                    format!("irap_offset {irap_offset} lies after the frame at offset {offset}"),
                ));
            }
        }
        Ok(position)
    }

    /// The thumbnail strip of `spec` (`thumbnails.rs`): made once, however
    /// many ask at the same time; failures are not kept.
    pub async fn thumbnails(self: &Arc<Self>, spec: StripSpec) -> Result<Arc<Strip>, FrameFailure> {
        let cell = {
            let mut strips = self.strips.lock().expect("strips lock");
            if strips.len() >= KEPT_STRIPS && !strips.contains_key(&spec) {
                strips.clear();
            }
            strips.entry(spec).or_default().clone()
        };
        cell.get_or_try_init(|| async { crate::thumbnails::make(self, spec).await.map(Arc::new) }).await.cloned()
    }

    /// The image of the frame at decode-order `position`. `wanted` says what
    /// else the same request asks for (a batch), so its bytes come in the
    /// same read and work ahead stays within it. Setting `cancel` abandons
    /// the decode between samples (`superseded`).
    pub async fn image(
        self: &Arc<Self>,
        position: u32,
        output: Output,
        wanted: Wanted,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Image, FrameFailure> {
        let Wanted { read_ahead_to, last_frame } = wanted;
        let in_a_row = self.note_request(position);
        let sequential = in_a_row > 0;
        let read_ahead_to = if sequential { Some(self.index.gop_end(position)) } else { read_ahead_to };
        // A lone frame reads exactly its span; more is read only when more is wanted.
        let read_ahead_to =
            read_ahead_to.filter(|&furthest| furthest > position).map(|furthest| self.past_furthest(furthest));
        let key = FrameKey { channel: self.id, position, output };
        if let Some(prefetch) = self.prefetching.lock().expect("prefetch lock").get(&key) {
            prefetch.raise(); // this request joins it below: it must not wait behind requests
        }
        let produce = self.produce(position, output, read_ahead_to, cancel, Urgency::requested());
        let image = self.shared.frames.get_or_load(key, produce).await?;
        if sequential {
            self.prefetch_after(position, output);
            if in_a_row >= PLAYING_AFTER {
                self.prefetch_next_gop(position, output, image.bytes.len() as u64, last_frame);
            }
            self.read_ahead_gops(position);
        }
        Ok(image)
    }

    /// Fetches the bytes of the GOPs after `position`'s in the background
    /// (more of them when storage is slow, see `gop_bytes.rs`), so playback
    /// finds the next GOP here when it gets there.
    fn read_ahead_gops(self: &Arc<Self>, position: u32) {
        let last_sample = self.index.samples.len() as u32 - 1;
        let mut last = position;
        for _ in 0..=self.bytes.read_ahead_gops() {
            last = self.index.gop_end(last.saturating_add(1).min(last_sample));
        }
        let needed = Player::required_bytes(&self.index, position);
        let wanted_end = self.read_ahead_end(position, Some(self.past_furthest(last)), needed.end);
        let channel = self.clone();
        tokio::spawn(async move {
            if let Err(failure) = channel.bytes.covering(needed, wanted_end).await {
                tracing::debug!("reading ahead failed: {failure:?}");
            }
        });
    }

    /// Records a request; how many requests in a row (this one included)
    /// each asked for the frame shown right after the one before (0: this
    /// one did not).
    fn note_request(&self, position: u32) -> u32 {
        let shown = self.index.sample(position).presentation;
        *self.last_used.lock().expect("last use lock") = std::time::Instant::now();
        let mut last = self.last_requested.lock().expect("last request lock");
        let in_a_row = match *last {
            Some((previous, in_a_row)) if shown == previous + 1 => in_a_row.saturating_add(1),
            _ => 0,
        };
        *last = Some((shown, in_a_row));
        in_a_row
    }

    /// Decodes and encodes the next few frames in presentation order in the
    /// background, so a player asking one frame at a time finds them ready.
    /// They yield to requested frames on the decoder and the encode slots.
    fn prefetch_after(self: &Arc<Self>, position: u32, output: Output) {
        let shown = self.index.sample(position).presentation;
        for ahead in 1..=PREFETCH_FRAMES {
            let Some((next, _)) = self.index.frame(shown + ahead) else { break };
            self.prefetch(next, output);
        }
    }

    /// Decodes and encodes the first frames of the group of pictures after
    /// the one `position` decodes from, in the background, when decoding is
    /// what holds playback back (a picture takes longer to decode than the
    /// encoders take per frame, `costs.rs`) and the decode threads have
    /// nothing to do but this video (`DecodePool::spare_for`): the idle
    /// thread starts them beside the decoder working through this group
    /// (`Decoders::can_start_beside`), so a lone reader's playback decodes
    /// on two cores, each decoder taking every other GOP. With other
    /// videos at work nothing changes (measured with 4 readers of 4 videos:
    /// more pictures decoded for the same frames); when encoding is the
    /// slower side, a second decoder would only take the encoders' cores
    /// (measured: 1080p one frame per request, 8 % fewer frames per second). At most `NEXT_GOP_BYTES` of
    /// encoded frames (an eighth of the frame cache at most, estimated from
    /// `frame_bytes`, this frame's size), and within `last_frame` when the
    /// request says where it ends.
    fn prefetch_next_gop(self: &Arc<Self>, position: u32, output: Output, frame_bytes: u64, last_frame: Option<u32>) {
        // Leading pictures shown before an IRAP decode from the IRAP before it: their run is this one.
        let run_start = self.index.sample(position).decode_from.min(position);
        let next_irap = self.index.gop_end(run_start) + 1;
        if next_irap as usize >= self.index.samples.len()
            || !self.decoders.side_by_side_pays()
            || !self.shared.pool.spare_for(&self.decoders)
        {
            return;
        }
        let bytes = NEXT_GOP_BYTES.min(self.shared.frames.capacity() / 8);
        let count = (bytes / frame_bytes.max(1)) as usize;
        // Its leading pictures decode from this group's IRAP: the decoder here takes them.
        let frames = self.index.section(next_irap).into_iter().filter(|&next| {
            let sample = self.index.sample(next);
            sample.decode_from == next_irap && last_frame.is_none_or(|last| sample.presentation <= last)
        });
        for next in frames.take(count) {
            self.prefetch(next, output);
        }
    }

    /// Produces frame `position` at `output` in the background, ahead of
    /// need, unless it is cached or on its way.
    fn prefetch(self: &Arc<Self>, position: u32, output: Output) {
        let key = FrameKey { channel: self.id, position, output };
        if self.shared.frames.contains(&key) {
            return;
        }
        let urgency = Urgency::ahead();
        match self.prefetching.lock().expect("prefetch lock").entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => return,
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(urgency.clone()),
        };
        let channel = self.clone();
        tokio::spawn(async move {
            let read_ahead_to = Some(channel.past_furthest(channel.index.gop_end(position)));
            let produce = channel.produce(position, output, read_ahead_to, None, urgency);
            let _ = channel.shared.frames.get_or_load(key, produce).await;
            channel.prefetching.lock().expect("prefetch lock").remove(&key);
        });
    }

    /// Where a read wanted up to `furthest` should end: `READ_AHEAD_SAMPLES`
    /// further, within the video.
    fn past_furthest(&self, furthest: u32) -> u32 {
        furthest.saturating_add(READ_AHEAD_SAMPLES).min(self.index.samples.len() as u32 - 1)
    }

    /// The decoded picture at decode-order `position`, its bytes read up to
    /// `read_ahead_to` (`None`: asked for on its own, a random access).
    pub async fn decode(
        &self,
        position: u32,
        read_ahead_to: Option<u32>,
        cancel: Option<Arc<AtomicBool>>,
        urgency: Urgency,
    ) -> Result<media::Picture, FrameFailure> {
        let needed = Player::required_bytes(&self.index, position);
        let wanted_end = self.read_ahead_end(position, read_ahead_to, needed.end);
        let span = self.bytes.covering(needed, wanted_end).await?;
        let _decode_timer = Timer::new(DECODE_SECONDS);
        let alone = read_ahead_to.is_none();
        self.shared.pool.picture(&self.decoders, (position, alone), span, cancel, urgency).await.map_err(|error| {
            match error {
                DecodeError::NotDecodable => FrameFailure::new(Failure::NotDecodable, error.to_string()),
                // Either a newer latest-mode request replaced it, or (a prefetch) a request needed the decoder.
                DecodeError::Cancelled => {
                    FrameFailure::new(Failure::Superseded, "a newer request in latest mode replaced it")
                }
                DecodeError::Failed(cause) if cause.is::<NoMemory>() => {
                    FrameFailure::new(Failure::Busy, format!("{cause:#}; try again later"))
                }
                DecodeError::Failed(cause) => FrameFailure::new(Failure::DecodeFailed, format!("{cause:#}")),
            }
        })
    }

    async fn produce(
        &self,
        position: u32,
        output: Output,
        read_ahead_to: Option<u32>,
        cancel: Option<Arc<AtomicBool>>,
        urgency: Urgency,
    ) -> Result<Image, FrameFailure> {
        let picture = self.decode(position, read_ahead_to, cancel, urgency.clone()).await?;
        // Encodes wait their turn (in order) so they never crowd the decoders off the cores.
        let _encoding = crate::metrics::InProgress::new(crate::metrics::ENCODES);
        let _slot = self.shared.encode_slots.acquire(urgency).await;
        let costs = self.costs.clone();
        tokio::task::spawn_blocking(move || {
            let _timer = Timer::new(ENCODE_SECONDS);
            let started = std::time::Instant::now();
            let encoded = media::output::encode(&picture, &output);
            costs.encoded(started.elapsed());
            encoded
        })
        .await
        .map_err(|e| FrameFailure::new(Failure::EncodeFailed, format!("encoder thread failed: {e}")))?
        .map(|encoded| Image {
            bytes: Bytes::from(encoded.bytes),
            format: output.format,
            width: encoded.width,
            height: encoded.height,
        })
        .map_err(|e| FrameFailure::new(Failure::EncodeFailed, format!("{e:#}")))
    }

    /// Where the read for `position` should end: the end of its own bytes,
    /// or further (bounded) up to the end of sample `read_ahead_to`.
    fn read_ahead_end(&self, position: u32, read_ahead_to: Option<u32>, needed_end: u64) -> u64 {
        let Some(last) = read_ahead_to.filter(|&last| last > position) else { return needed_end };
        let limit = needed_end + READ_AHEAD_BYTES;
        let samples = &self.index.samples[position as usize + 1..=last as usize];
        samples.iter().map(|s| s.end()).take_while(|&end| end <= limit).fold(needed_end, u64::max)
    }
}

/// What the memory budget may take back from an open video.
impl Reclaim for Channel {
    fn idle_for(&self) -> std::time::Duration {
        Channel::idle_for(self)
    }

    fn drop_idle_decoders(&self) {
        self.decoders.release_reclaimable();
    }

    fn drop_cached_bytes(&self) {
        self.bytes.drop_cached();
    }
}
