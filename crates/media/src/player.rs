//! Seek logic: turns "give me the picture of sample N" into the shortest feed
//! of samples to one long-lived decoder.
//!
//! The decoder is kept positioned: a later sample of the stream it is already
//! decoding continues from where it stands (sequential playback costs one
//! decode per frame); anything else resets it and starts at the sample's
//! decode start (its IRAP, or the previous IRAP for open-GOP leading
//! pictures). Output is matched by presentation timestamp, never by count,
//! because B-frames come out in a different order than they go in. Recently
//! output pictures are kept (bounded) so neighbours are not decoded twice.
//! A caller may cancel between samples; the decoder then stays where it
//! stopped, still positioned for a later frame of the same stream.
//!
//! A seek for a frame asked for on its own (`picture`; not one of a batch or
//! of playback, whose next requests want the pictures in between, nor a run
//! continued) feeds only what the target needs: a picture before the target
//! (in decode and presentation order) that is a sub-layer non-reference
//! picture (`TRAIL_N`, `RASL_N`, …) of the stream's highest temporal
//! sub-layer is referenced by no picture at all (H.265: only pictures of
//! higher sub-layers may reference a `*_N` picture, and there are none),
//! so it is not fed. In x265's default streams that is about half of the
//! pictures. libavcodec's `skip_frame = AVDISCARD_NONREF` is not used: it
//! would also drop a non-reference target, and it ignores temporal
//! sub-layers. A later request for a skipped picture restarts the run.

use crate::decoder::{share, Decoder, Threading};
use crate::index::VideoIndex;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use ffmpeg_next::frame::Video;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;

/// Consecutive bytes of the object, possibly fetched in several pieces
/// (a span grows when a later frame of the same GOP is requested).
#[derive(Debug, Clone, Default)]
pub struct Span {
    pieces: Vec<(u64, Bytes)>,
}

impl Span {
    pub fn new(offset: u64, bytes: Bytes) -> Self {
        Self { pieces: vec![(offset, bytes)] }
    }

    /// Appends bytes that continue the span exactly where it ends.
    pub fn extend(&mut self, bytes: Bytes) {
        let end = self.range().end;
        self.pieces.push((end, bytes));
    }

    /// Drops the leading pieces that end at or before `offset` (nobody
    /// decoding from `offset` on needs them).
    pub fn drop_before(&mut self, offset: u64) {
        let ends_before = |(start, bytes): &(u64, Bytes)| start + bytes.len() as u64 <= offset;
        let gone = self.pieces.iter().take_while(|piece| ends_before(piece)).count();
        self.pieces.drain(..gone.min(self.pieces.len().saturating_sub(1)));
    }

    pub fn range(&self) -> Range<u64> {
        let start = self.pieces.first().map_or(0, |(offset, _)| *offset);
        let end = self.pieces.last().map_or(0, |(offset, bytes)| offset + bytes.len() as u64);
        start..end
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn covers(&self, range: &Range<u64>) -> bool {
        let own = self.range();
        range.start >= own.start && range.end <= own.end
    }

    /// The bytes of `range`, borrowed when they sit in one piece.
    fn slice(&self, range: Range<u64>) -> Option<Cow<'_, [u8]>> {
        if !self.covers(&range) {
            return None;
        }
        let within =
            |(offset, bytes): &(u64, Bytes)| range.start >= *offset && range.end <= offset + bytes.len() as u64;
        if let Some((offset, bytes)) = self.pieces.iter().find(|piece| within(piece)) {
            return Some(Cow::Borrowed(&bytes[(range.start - offset) as usize..(range.end - offset) as usize]));
        }
        let mut joined = Vec::with_capacity((range.end - range.start) as usize);
        for (offset, bytes) in &self.pieces {
            let piece = *offset..offset + bytes.len() as u64;
            let (from, to) = (range.start.max(piece.start), range.end.min(piece.end));
            if from < to {
                joined.extend_from_slice(&bytes[(from - offset) as usize..(to - offset) as usize]);
            }
        }
        Some(Cow::Owned(joined))
    }
}

/// Why a picture could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The decoder never output the picture (e.g. a leading picture of the
    /// stream's first IRAP, which has no references).
    #[error("the frame cannot be reconstructed from the stream")]
    NotDecodable,
    /// The caller no longer wanted it; decoding stopped between samples and
    /// the decoder stays positioned where it stopped.
    #[error("decoding was cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(#[from] anyhow::Error),
}

#[derive(Debug, Clone, Copy)]
struct Position {
    /// Where the current run of decoding started.
    started_at: u32,
    /// The next sample to feed.
    next: u32,
    /// End of input was signalled; a reset is needed before feeding.
    drained: bool,
    /// The frame a seek that leaves out unreferenced pictures is after: a
    /// job stopped between samples (a time slice) and resumed for the same
    /// frame goes on leaving them out.
    seeking_to: Option<u32>,
}

pub struct Player {
    decoder: Decoder,
    threading: Threading,
    position: Option<Position>,
    kept: VecDeque<(i64, Video)>,
    kept_bytes: usize,
    keep_limit_bytes: usize,
    decoded: u64,
    /// Presentation timestamps not fed in the current run.
    skipped: Vec<i64>,
    /// The latest presentation timestamp the current run has output:
    /// pictures come out in presentation order, so a fed picture at or
    /// before it that is not kept is gone.
    newest_output: Option<i64>,
    skipped_total: u64,
    seeks: u64,
    /// Whether seeks leave out pictures nothing references (the default).
    skip_unreferenced: bool,
}

/// Decoded pictures kept for neighbouring requests, at least this many.
const MIN_KEPT_FRAMES: usize = 4;

impl Player {
    pub fn new(index: &VideoIndex, threads: Threading, keep_limit_bytes: usize) -> Result<Self> {
        Ok(Self {
            decoder: Decoder::new(&index.decoder, threads)?,
            threading: threads,
            position: None,
            kept: VecDeque::new(),
            kept_bytes: 0,
            keep_limit_bytes,
            decoded: 0,
            skipped: Vec::new(),
            newest_output: None,
            skipped_total: 0,
            seeks: 0,
            skip_unreferenced: true,
        })
    }

    /// The most memory a player of this stream holds: libavcodec's picture
    /// pool (the stream's reference and reordering pictures, one being
    /// decoded, one per extra frame thread, each with its motion data: about
    /// half a picture more) and the decoded pictures it keeps for neighbours.
    pub fn memory_needed(index: &VideoIndex, threads: Threading, keep_limit_bytes: usize) -> u64 {
        let pictures = index.decoder.pictures.unwrap_or(crate::index::PictureBuffers {
            count: 16, // the most HEVC allows
            bytes: u64::from(index.width).saturating_mul(u64::from(index.height)).saturating_mul(3),
        });
        // libavcodec pads planes for its block sizes and alignment.
        let picture = pictures.bytes.saturating_add(pictures.bytes / 16);
        let extra_threads = match threads {
            Threading::Frame(count) => count.saturating_sub(1) as u64,
            Threading::Single | Threading::Slice(_) => 0,
        };
        let buffers = picture.saturating_mul(u64::from(pictures.count) + 1 + extra_threads);
        let pool = buffers.saturating_add(buffers / 2); // and their motion data
        let kept =
            (keep_limit_bytes as u64).max(picture.saturating_mul(MIN_KEPT_FRAMES as u64)).saturating_add(picture);
        pool.saturating_add(kept)
    }

    /// How this player's decoder spreads its work over threads.
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// Gives the player a decoder threaded as `threads` (the pictures it
    /// keeps stay; its run ends: the next frame seeks).
    pub fn rethread(&mut self, index: &VideoIndex, threads: Threading) -> Result<()> {
        self.decoder = Decoder::new(&index.decoder, threads)?;
        self.threading = threads;
        self.position = None;
        self.skipped.clear();
        self.newest_output = None;
        Ok(())
    }

    /// With `false`, seeks feed every picture from the decode start (for
    /// comparison, or as an escape hatch for a stream that misbehaves).
    pub fn skip_unreferenced(mut self, on: bool) -> Self {
        self.skip_unreferenced = on;
        self
    }

    /// Byte range that must be in the span to decode sample `target`.
    pub fn required_bytes(index: &VideoIndex, target: u32) -> Range<u64> {
        let from = index.sample(target).decode_from.min(target);
        let samples = &index.samples[from as usize..=target as usize];
        let start = samples.iter().map(|s| s.offset).min().unwrap_or(0);
        let end = samples.iter().map(|s| s.end()).max().unwrap_or(0);
        start..end
    }

    /// Decodes sample `target` (decode-order position), a frame asked for on
    /// its own: a seek leaves out pictures nothing references. `span` must
    /// cover `required_bytes(index, target)`; bytes beyond it let the decoder
    /// run ahead instead of draining, which keeps it positioned for the next
    /// frame. `cancelled` is asked before each sample is fed.
    pub fn picture(
        &mut self,
        index: &VideoIndex,
        target: u32,
        span: &Span,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Video, DecodeError> {
        self.decode(index, target, span, true, cancelled)
    }

    /// Like `picture`, for a frame among others wanted around it (playback,
    /// a batch): a seek feeds every picture, since the next requests are
    /// likely to want the ones in between.
    pub fn picture_among_neighbours(
        &mut self,
        index: &VideoIndex,
        target: u32,
        span: &Span,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Video, DecodeError> {
        self.decode(index, target, span, false, cancelled)
    }

    fn decode(
        &mut self,
        index: &VideoIndex,
        target: u32,
        span: &Span,
        may_skip: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Video, DecodeError> {
        let sample = *index.sample(target);
        if let Some(frame) = self.take_kept(sample.pts) {
            return Ok(frame);
        }
        if self.resumable(&sample, target) {
            if let Some(frame) = self.run(index, target, span, false, may_skip, cancelled)? {
                return Ok(frame);
            }
        }
        self.run(index, target, span, true, may_skip, cancelled)?.ok_or(DecodeError::NotDecodable)
    }

    fn run(
        &mut self,
        index: &VideoIndex,
        target: u32,
        span: &Span,
        restart: bool,
        may_skip: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Video>, DecodeError> {
        let target_pts = index.sample(target).pts;
        if restart {
            self.decoder.reset();
            self.skipped.clear();
            self.newest_output = None;
            self.seeks += 1;
            let start = index.sample(target).decode_from.min(target);
            let seeking_to = may_skip.then_some(target);
            self.position = Some(Position { started_at: start, next: start, drained: false, seeking_to });
        }
        let seeking = may_skip && self.position.is_some_and(|p| p.seeking_to == Some(target));
        let result = self.feed_until(index, target_pts, target, span, seeking, cancelled);
        if matches!(result, Err(DecodeError::Failed(_))) {
            self.position = None; // state unknown after an error: restart next time
        }
        result
    }

    fn feed_until(
        &mut self,
        index: &VideoIndex,
        target_pts: i64,
        target: u32,
        span: &Span,
        seeking: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Video>, DecodeError> {
        let mut position = self.position.expect("run sets the position");
        loop {
            if let Some(frame) = self.take_kept(target_pts) {
                self.position = Some(position);
                return Ok(Some(frame));
            }
            if cancelled() {
                self.position = Some(position);
                return Err(DecodeError::Cancelled);
            }
            let next = index.samples.get(position.next as usize);
            let bytes = next.and_then(|sample| span.slice(sample.offset..sample.end()));
            match (next, bytes) {
                (Some(sample), Some(bytes))
                    if seeking
                        && self.skip_unreferenced
                        && !position.drained
                        && position.next < target
                        && sample.pts < target_pts
                        && unneeded(index, &bytes) =>
                {
                    self.skipped.push(sample.pts);
                    self.skipped_total += 1;
                    position.next += 1;
                    continue;
                }
                (Some(sample), Some(bytes)) if !position.drained => {
                    let pts = sample.pts;
                    self.decoder.send(&bytes, pts)?;
                    position.next += 1;
                }
                (Some(_), None) if position.next <= target => {
                    return Err(
                        anyhow!("sample {} is not in the fetched bytes {:?}", position.next, span.range()).into()
                    )
                }
                _ if !position.drained => {
                    self.decoder.drain()?;
                    position.drained = true;
                }
                _ => {
                    self.receive_all();
                    self.position = Some(position);
                    return Ok(self.take_kept(target_pts));
                }
            }
            self.receive_all();
        }
    }

    /// Whether `target` would come without a seek: its picture is kept, or
    /// this player's run is positioned before it in the same stream.
    pub fn continues_to(&self, index: &VideoIndex, target: u32) -> bool {
        self.samples_to(index, target).is_some()
    }

    /// Whether the picture of `target` is among those kept.
    pub fn holds(&self, index: &VideoIndex, target: u32) -> bool {
        let Some(sample) = index.samples.get(target as usize) else { return false };
        self.kept.iter().any(|(pts, _)| *pts == sample.pts)
    }

    /// How many samples this player must still feed before `target` comes
    /// out without a seek (0 when its picture is kept), or `None` when it
    /// would have to seek: of several positioned players, the one with the
    /// least left to decode is the one to use.
    pub fn samples_to(&self, index: &VideoIndex, target: u32) -> Option<u32> {
        let sample = index.samples.get(target as usize)?;
        if self.holds(index, target) {
            return Some(0);
        }
        let position = self.position.filter(|_| self.resumable(sample, target))?;
        Some(target.saturating_sub(position.next))
    }

    /// Whether the run in progress can go on to `sample` (at decode position
    /// `target`): it started at or before the sample's decode start, has
    /// reached it, is not drained, did not leave the sample out, and has not
    /// output (and since dropped) its picture: a player that ran past a
    /// frame would otherwise decode to the end of its bytes looking for it.
    fn resumable(&self, sample: &crate::index::Sample, target: u32) -> bool {
        let start = sample.decode_from.min(target);
        let still_to_come = self.newest_output.is_none_or(|newest| sample.pts > newest);
        self.position.is_some_and(|p| !p.drained && p.started_at <= start && p.next >= start)
            && !self.skipped.contains(&sample.pts)
            && still_to_come
    }

    /// The next sample the current run would feed (decode order), if any.
    pub fn next_to_feed(&self) -> Option<u32> {
        self.position.filter(|p| !p.drained).map(|p| p.next)
    }

    /// Where the current run of decoding started (decode order), if any.
    pub fn run_start(&self) -> Option<u32> {
        self.position.filter(|p| !p.drained).map(|p| p.started_at)
    }

    /// Pictures the decoder has produced since this player was created.
    pub fn pictures_decoded(&self) -> u64 {
        self.decoded
    }

    /// Pictures a seek did not feed because nothing references them.
    pub fn pictures_skipped(&self) -> u64 {
        self.skipped_total
    }

    /// Runs started from a decode start (an IRAP) rather than continued.
    pub fn seeks(&self) -> u64 {
        self.seeks
    }

    fn receive_all(&mut self) {
        while let Some(frame) = self.decoder.receive() {
            self.decoded += 1;
            let pts = frame.pts().unwrap_or(i64::MIN);
            self.newest_output = self.newest_output.max(Some(pts));
            self.kept_bytes += frame_bytes(&frame);
            self.kept.push_back((pts, frame));
            while self.kept.len() > MIN_KEPT_FRAMES && self.kept_bytes > self.keep_limit_bytes {
                let (_, old) = self.kept.pop_front().expect("non-empty");
                self.kept_bytes -= frame_bytes(&old);
            }
        }
    }

    fn take_kept(&self, pts: i64) -> Option<Video> {
        self.kept.iter().rev().find(|(kept_pts, _)| *kept_pts == pts).map(|(_, frame)| share(frame))
    }
}

/// Whether the picture in `sample` is referenced by no picture at all: a
/// sub-layer non-reference picture of the stream's highest sub-layer.
fn unneeded(index: &VideoIndex, sample: &[u8]) -> bool {
    let Some(highest) = index.decoder.highest_temporal_id else { return false };
    crate::hevc::picture_kind(sample, index.decoder.nal_format)
        .is_some_and(|kind| kind.sub_layer_non_reference && kind.temporal_id >= highest)
}

fn frame_bytes(frame: &Video) -> usize {
    (0..frame.planes()).map(|plane| frame.data(plane).len()).sum()
}
