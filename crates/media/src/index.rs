//! The frame index of one video: every sample's byte range, timestamps,
//! keyframe flag and the sample decoding has to start from.
//!
//! Built once per video from the container alone (see `mp4.rs`, `annexb.rs`);
//! everything the server does per frame is a lookup here. Samples are kept in
//! decode order, the order a decoder must be fed.

use crate::budget::Budget;
use crate::{corrupt, hevc};
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    Mp4,
    FragmentedMp4,
    AnnexB,
}

/// How NAL units are delimited inside a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalFormat {
    /// `hvcC`-style big-endian length prefixes of this many bytes.
    LengthPrefixed(u8),
    /// Start codes (`00 00 01`).
    AnnexB,
}

/// What a decoder needs before the first sample: codec extradata (`hvcC`
/// bytes for MP4, Annex-B parameter sets for raw streams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    pub extradata: Vec<u8>,
    pub nal_format: NalFormat,
    /// The highest temporal sub-layer the stream's SPS allows (`None` when
    /// no SPS could be read): pictures there are referenced by nothing
    /// when they are sub-layer non-reference pictures.
    pub highest_temporal_id: Option<u8>,
    /// What one decoder of the stream holds in pictures at most, the
    /// largest over its SPSs (`None` when no SPS could be read).
    pub pictures: Option<PictureBuffers>,
    /// Whether a PPS enables wavefront decoding (WPP): only then do slice
    /// threads shorten the decoding of one picture.
    pub wavefront: bool,
}

/// The decoded pictures a decoder of the stream keeps: how many and how large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureBuffers {
    /// `sps_max_dec_pic_buffering`: pictures held for reference and reordering.
    pub count: u32,
    /// Bytes of one picture at the coded size and bit depth.
    pub bytes: u64,
}

impl DecoderConfig {
    /// The configuration of a stream with these parameter sets.
    pub fn new<'a>(
        extradata: Vec<u8>,
        nal_format: NalFormat,
        sps: impl IntoIterator<Item = &'a hevc::Sps>,
        pps: impl IntoIterator<Item = &'a hevc::Pps>,
    ) -> Self {
        let sps: Vec<&hevc::Sps> = sps.into_iter().collect();
        let pictures =
            sps.iter().map(|sps| PictureBuffers { count: sps.max_dec_pic_buffering, bytes: sps.picture_bytes() });
        Self {
            extradata,
            nal_format,
            highest_temporal_id: sps.iter().map(|sps| sps.max_sub_layers_minus1.min(6) as u8).max(),
            pictures: pictures
                .reduce(|a, b| PictureBuffers { count: a.count.max(b.count), bytes: a.bytes.max(b.bytes) }),
            wavefront: pps.into_iter().any(|pps| pps.wavefront),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Byte offset of the sample in the object.
    pub offset: u64,
    pub size: u32,
    /// Decode and composition timestamps in `VideoIndex::timescale` units,
    /// as the container stores them (the decoder's output is matched by `pts`).
    pub dts: i64,
    pub pts: i64,
    /// When the frame is shown, after the edit list (`pts` when there is none).
    pub time: i64,
    /// Shown to viewers; false for samples an edit list hides (decoded only
    /// as references for the frames after them, never a frame of the index).
    pub shown: bool,
    /// Random access point (IRAP): decoding can start here.
    pub keyframe: bool,
    /// Decode-order position of the IRAP this sample's group of pictures starts with.
    pub irap: u32,
    /// Decode-order position decoding must start from to reconstruct this
    /// sample: its IRAP, or the IRAP before that for leading pictures, whose
    /// references may lie in the previous group of pictures (open GOP).
    pub decode_from: u32,
    /// Position in presentation order (frame number); meaningful only when `shown`.
    pub presentation: u32,
}

impl Sample {
    /// End of the sample's bytes; the index guarantees it lies within the object.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

/// One edit of an MP4 edit list (`elst`), in the track's timescale: the
/// media from `media_time` on, for `duration` (to the end when `None`), is
/// shown from `presentation_start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    pub media_time: i64,
    pub duration: Option<i64>,
    pub presentation_start: i64,
}

/// Most edits honoured in one edit list (every sample is checked against each).
pub const MAX_EDITS: usize = 256;

#[derive(Debug, Clone)]
pub struct VideoIndex {
    pub container: Container,
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    /// Ticks per second of `pts`/`dts`.
    pub timescale: u32,
    /// Size of the whole object in bytes.
    pub object_size: u64,
    pub decoder: DecoderConfig,
    /// Decode order.
    pub samples: Vec<Sample>,
    /// Shown sample positions (decode order) listed in presentation order.
    pub presentation_order: Vec<u32>,
    /// Offsets of samples the listed file promises but does not hold
    /// (a recording cut short), sorted: asked for, they are `truncated`.
    pub truncated_offsets: Vec<u64>,
    /// Sample positions sorted by byte offset, for offset lookups.
    by_offset: Vec<u32>,
}

/// A sample as listed by a container parser, before the index derives the
/// rest (decode start, presentation order).
#[derive(Debug, Clone, Copy)]
pub struct RawSample {
    pub offset: u64,
    pub size: u32,
    pub dts: i64,
    pub pts: i64,
    pub keyframe: bool,
}

pub struct IndexParts {
    pub container: Container,
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pub timescale: u32,
    pub object_size: u64,
    pub decoder: DecoderConfig,
    pub samples: Vec<RawSample>,
    /// The track's edit list; empty when it has none (every sample shown at its `pts`).
    pub edits: Vec<Edit>,
}

impl VideoIndex {
    /// The frames (decode positions, in presentation order) of the IRAP section
    /// that starts at decode position `irap`: its GOP in decode order, without
    /// samples an edit list hides.
    pub fn section(&self, irap: u32) -> Vec<u32> {
        let mut positions: Vec<u32> = self
            .samples
            .iter()
            .enumerate()
            .skip(irap as usize)
            .take_while(|(position, sample)| *position == irap as usize || !sample.keyframe)
            .filter(|(_, sample)| sample.shown)
            .map(|(position, _)| position as u32)
            .collect();
        positions.sort_by_key(|&position| self.sample(position).presentation);
        positions
    }

    /// Decode position of the last sample of the GOP that `position` is in.
    pub fn gop_end(&self, position: u32) -> u32 {
        let samples = &self.samples;
        let after = samples.get(position as usize + 1..).unwrap_or_default();
        let next_irap = after.iter().position(|s| s.keyframe);
        next_irap.map_or(samples.len() as u32 - 1, |offset| position + offset as u32)
    }

    /// Derives GOP structure and presentation order from raw samples in
    /// decode order. Samples whose bytes lie past the end of the object (a
    /// recording cut short) end the stream there: the complete ones before
    /// them are served, the rest are listed as truncated.
    pub fn build(mut parts: IndexParts, budget: &Budget) -> Result<Self> {
        budget.check_samples(parts.samples.len() as u64)?;
        if parts.edits.len() > MAX_EDITS {
            return Err(crate::budget::OverBudget(format!(
                "an edit list of {} entries (at most {MAX_EDITS} are honoured)",
                parts.edits.len()
            ))
            .into());
        }
        let object_size = parts.object_size;
        let complete =
            |raw: &RawSample| raw.offset.checked_add(u64::from(raw.size)).is_some_and(|end| end <= object_size);
        let mut truncated_offsets = Vec::new();
        if let Some(cut) = parts.samples.iter().position(|raw| !complete(raw)) {
            truncated_offsets = parts.samples.split_off(cut).iter().map(|raw| raw.offset).collect();
            truncated_offsets.sort_unstable();
            if parts.samples.is_empty() {
                return Err(corrupt!("the file is truncated before its first complete frame"));
            }
        }
        anyhow::ensure!(!parts.samples.is_empty(), "the video track has no samples");
        let mut samples = Vec::with_capacity(parts.samples.len());
        let mut current_irap: Option<u32> = None;
        let mut previous_irap: Option<u32> = None;
        for (position, raw) in parts.samples.iter().enumerate() {
            let position = position as u32;
            if raw.keyframe {
                previous_irap = current_irap;
                current_irap = Some(position);
            }
            // Samples before the first keyframe cannot be decoded; they keep
            // position 0 as their start and fail cleanly if asked for.
            let irap = current_irap.unwrap_or(0);
            let irap_pts = parts.samples[irap as usize].pts;
            let leading = !raw.keyframe && raw.pts < irap_pts;
            let decode_from = if leading { previous_irap.unwrap_or(irap) } else { irap };
            let time = shown_at(&parts.edits, raw.pts);
            samples.push(Sample {
                offset: raw.offset,
                size: raw.size,
                dts: raw.dts,
                pts: raw.pts,
                time: time.unwrap_or(raw.pts),
                shown: time.is_some(),
                keyframe: raw.keyframe,
                irap,
                decode_from,
                presentation: u32::MAX,
            });
        }
        let mut presentation_order: Vec<u32> =
            (0..samples.len() as u32).filter(|&position| samples[position as usize].shown).collect();
        if presentation_order.is_empty() {
            return Err(corrupt!("the edit list hides every frame"));
        }
        presentation_order.sort_by_key(|&position| (samples[position as usize].time, position));
        for (rank, &position) in presentation_order.iter().enumerate() {
            samples[position as usize].presentation = rank as u32;
        }
        let mut by_offset: Vec<u32> = (0..samples.len() as u32).collect();
        by_offset.sort_by_key(|&position| samples[position as usize].offset);
        Ok(Self {
            container: parts.container,
            codec: parts.codec,
            width: parts.width,
            height: parts.height,
            timescale: parts.timescale,
            object_size: parts.object_size,
            decoder: parts.decoder,
            samples,
            presentation_order,
            truncated_offsets,
            by_offset,
        })
    }

    /// Decode-order position of the sample starting at `offset`.
    pub fn position_at(&self, offset: u64) -> Option<u32> {
        let found = self.by_offset.binary_search_by_key(&offset, |&p| self.samples[p as usize].offset).ok()?;
        Some(self.by_offset[found])
    }

    pub fn sample(&self, position: u32) -> &Sample {
        &self.samples[position as usize]
    }

    /// The sample shown at presentation position `frame`.
    pub fn frame(&self, frame: u32) -> Option<(u32, &Sample)> {
        let position = *self.presentation_order.get(frame as usize)?;
        Some((position, self.sample(position)))
    }

    /// Whether `offset` starts a sample the file promises but does not hold.
    pub fn is_truncated_at(&self, offset: u64) -> bool {
        self.truncated_offsets.binary_search(&offset).is_ok()
    }

    /// Frames shown to viewers (samples an edit list hides are not frames).
    pub fn frame_count(&self) -> usize {
        self.presentation_order.len()
    }

    /// Average frame rate from the presentation times, as frames per second.
    pub fn frame_rate(&self) -> f64 {
        let count = self.presentation_order.len();
        let first = self.sample(self.presentation_order[0]).time;
        let last = self.sample(self.presentation_order[count - 1]).time;
        if count < 2 || last <= first {
            return 0.0;
        }
        (count - 1) as f64 * f64::from(self.timescale) / (last - first) as f64
    }
}

/// When a sample with composition time `pts` is shown under `edits`, or
/// `None` when no edit shows it. Without an edit list every sample is shown
/// at its own time. Each sample is shown by the first edit that covers it.
fn shown_at(edits: &[Edit], pts: i64) -> Option<i64> {
    if edits.is_empty() {
        return Some(pts);
    }
    edits.iter().find_map(|edit| {
        let into = pts.checked_sub(edit.media_time)?;
        let inside = into >= 0 && edit.duration.is_none_or(|duration| into < duration);
        inside.then(|| edit.presentation_start.saturating_add(into))
    })
}

/// The SPSs among `nals` that parse.
pub fn parse_sps_among<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Vec<hevc::Sps> {
    nals.into_iter()
        .filter(|nal| hevc::nal_type(nal) == hevc::NAL_SPS)
        .filter_map(|nal| hevc::parse_sps(nal).ok())
        .collect()
}

/// The PPSs among `nals` that parse.
pub fn parse_pps_among<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Vec<hevc::Pps> {
    nals.into_iter()
        .filter(|nal| hevc::nal_type(nal) == hevc::NAL_PPS)
        .filter_map(|nal| hevc::parse_pps(nal).ok())
        .collect()
}
