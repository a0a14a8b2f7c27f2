//! One open video: its index, its positioned decoder and the bytes of the
//! groups of pictures it has fetched. Every session using the video shares
//! the channel, so the header is read once per process and neighbouring
//! frames reuse fetched bytes and decoder state.
//!
//! Decoding and JPEG encoding run on blocking worker threads; the decoder
//! lock is held only while decoding, so encoding overlaps the next decode.

use crate::metrics::FRAMES_DECODED;
use crate::storage::{BlockingObject, Storage, StorageError, VideoPath};
use bytes::Bytes;
use media::{DecodeError, Player, Span, Threading, VideoIndex};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Why a requested frame was not served: a short code for programs and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameFailure {
    pub code: &'static str,
    pub message: String,
}

impl FrameFailure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Why a video could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path} is not a playable video: {reason}")]
    NotVideo { path: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// Decoded pictures a player keeps for neighbouring requests.
const KEPT_PICTURE_BYTES: usize = 48 << 20;
/// Fetched GOP bytes kept per video.
const SPAN_CACHE_BYTES: usize = 64 << 20;

pub struct Channel {
    pub path: VideoPath,
    pub url: String,
    pub index: Arc<VideoIndex>,
    storage: Arc<Storage>,
    player: Arc<Mutex<Player>>,
    spans: Mutex<SpanCache>,
}

impl Channel {
    /// Reads the header and builds the index (a few range reads).
    pub async fn open(storage: Arc<Storage>, path: VideoPath) -> Result<Self, OpenError> {
        let meta = storage.head(&path).await?;
        let object = BlockingObject {
            storage: storage.clone(),
            path: path.clone(),
            size: meta.size,
            runtime: tokio::runtime::Handle::current(),
        };
        let text = path.text.clone();
        let built = tokio::task::spawn_blocking(move || {
            let index = media::probe::index(&object)?;
            let player = Player::new(&index, Threading::Single, KEPT_PICTURE_BYTES)?;
            anyhow::Ok((index, player))
        })
        .await
        .map_err(|e| OpenError::NotVideo { path: text.clone(), reason: format!("indexing crashed: {e}") })?;
        let (index, player) = built.map_err(|error| match error.downcast::<StorageError>() {
            Ok(storage_error) => OpenError::Storage(storage_error),
            Err(other) => OpenError::NotVideo { path: text.clone(), reason: format!("{other:#}") },
        })?;
        Ok(Self {
            url: storage.url_of(&path),
            path,
            index: Arc::new(index),
            storage,
            player: Arc::new(Mutex::new(player)),
            spans: Mutex::new(SpanCache::default()),
        })
    }

    /// Finds the decode-order position of the frame at `offset`, checking a
    /// client-supplied IRAP offset if there is one.
    pub fn resolve(&self, offset: u64, irap_offset: Option<u64>) -> Result<u32, FrameFailure> {
        let index = &self.index;
        let Some(position) = index.position_at(offset) else {
            let last_end = index.samples.iter().map(|s| s.end()).max().unwrap_or(0);
            if offset >= last_end {
                return Err(FrameFailure::new(
                    "offset_out_of_range",
                    format!(
                        "offset {offset} is past the last frame of {} (frames end at byte {last_end})",
                        self.path.text
                    ),
                ));
            }
            return Err(FrameFailure::new(
                "not_a_frame",
                format!("offset {offset} is not the start of a frame in {}", self.path.text),
            ));
        };
        if let Some(irap_offset) = irap_offset {
            let Some(irap) = index.position_at(irap_offset) else {
                return Err(FrameFailure::new(
                    "invalid_irap",
                    format!("irap_offset {irap_offset} is not the start of a frame"),
                ));
            };
            if !index.sample(irap).keyframe {
                return Err(FrameFailure::new(
                    "invalid_irap",
                    format!("irap_offset {irap_offset} is a frame but not an IRAP (keyframe)"),
                ));
            }
            if irap > position {
                return Err(FrameFailure::new(
                    "invalid_irap",
                    format!("irap_offset {irap_offset} lies after the frame at offset {offset}"),
                ));
            }
        }
        Ok(position)
    }

    /// The JPEG of the frame at decode-order `position`.
    pub async fn jpeg(&self, position: u32, quality: u8) -> Result<Bytes, FrameFailure> {
        let needed = Player::required_bytes(&self.index, position);
        let span = self.span_covering(needed).await?;
        let (index, player) = (self.index.clone(), self.player.clone());
        tokio::task::spawn_blocking(move || {
            let picture = {
                let mut player = player.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let before = player.pictures_decoded();
                let result = player.picture(&index, position, &span);
                metrics::counter!(FRAMES_DECODED).increment(player.pictures_decoded() - before);
                result
            };
            let picture = picture.map_err(|error| match error {
                DecodeError::NotDecodable => FrameFailure::new("not_decodable", error.to_string()),
                DecodeError::Failed(cause) => FrameFailure::new("decode_failed", format!("{cause:#}")),
            })?;
            media::encode_jpeg(&picture, quality)
                .map(Bytes::from)
                .map_err(|e| FrameFailure::new("encode_failed", format!("{e:#}")))
        })
        .await
        .map_err(|e| FrameFailure::new("decode_failed", format!("decoder thread failed: {e}")))?
    }

    /// Bytes covering `needed`, from the cache, by extending a cached span of
    /// the same GOP, or with one new range read.
    async fn span_covering(&self, needed: Range<u64>) -> Result<Span, FrameFailure> {
        let cached = self.spans.lock().expect("span cache lock").find(&needed);
        let span = match cached {
            Some(span) if span.covers(&needed) => return Ok(span),
            Some(mut span) => {
                let more = self.read(span.range().end..needed.end).await?;
                span.extend(more);
                span
            }
            None => Span::new(needed.start, self.read(needed.clone()).await?),
        };
        self.spans.lock().expect("span cache lock").insert(span.clone());
        Ok(span)
    }

    async fn read(&self, range: Range<u64>) -> Result<Bytes, FrameFailure> {
        self.storage.read_range(&self.path, range).await.map_err(|e| FrameFailure::new("storage_error", e.to_string()))
    }
}

/// Recently fetched spans, bounded in bytes.
#[derive(Default)]
struct SpanCache {
    spans: VecDeque<Span>,
}

impl SpanCache {
    /// A span that covers `needed`, or one that starts at the same place and
    /// can be extended to cover it.
    fn find(&self, needed: &Range<u64>) -> Option<Span> {
        let covering = self.spans.iter().find(|span| span.covers(needed));
        let extendable = || {
            self.spans.iter().find(|span| {
                let range = span.range();
                range.start <= needed.start && needed.start < range.end && range.end < needed.end
            })
        };
        covering.or_else(extendable).cloned()
    }

    fn insert(&mut self, span: Span) {
        let range = span.range();
        self.spans.retain(|old| !(old.range().start >= range.start && old.range().end <= range.end));
        self.spans.push_back(span);
        while self.spans.len() > 1 && self.spans.iter().map(Span::len).sum::<usize>() > SPAN_CACHE_BYTES {
            self.spans.pop_front();
        }
    }
}
