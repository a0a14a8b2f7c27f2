//! The frame index of one video: every sample's byte range, timestamps,
//! keyframe flag and the sample decoding has to start from.
//!
//! Built once per video from the container alone (see `mp4.rs`, `annexb.rs`);
//! everything the server does per frame is a lookup here. Samples are kept in
//! decode order, the order a decoder must be fed.

use crate::hevc;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Byte offset of the sample in the object.
    pub offset: u64,
    pub size: u32,
    /// Decode and presentation timestamps in `VideoIndex::timescale` units.
    pub dts: i64,
    pub pts: i64,
    /// Random access point (IRAP): decoding can start here.
    pub keyframe: bool,
    /// Decode-order position of the IRAP this sample's group of pictures starts with.
    pub irap: u32,
    /// Decode-order position decoding must start from to reconstruct this
    /// sample: its IRAP, or the IRAP before that for leading pictures, whose
    /// references may lie in the previous group of pictures (open GOP).
    pub decode_from: u32,
    /// Position in presentation order.
    pub presentation: u32,
}

impl Sample {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

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
    /// Sample positions (decode order) listed in presentation order.
    pub presentation_order: Vec<u32>,
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
}

impl VideoIndex {
    /// Derives GOP structure and presentation order from raw samples in decode order.
    pub fn build(parts: IndexParts) -> Result<Self> {
        anyhow::ensure!(!parts.samples.is_empty(), "the video track has no samples");
        for raw in &parts.samples {
            anyhow::ensure!(
                raw.offset + u64::from(raw.size) <= parts.object_size,
                "sample at byte {} (size {}) lies past the end of the object ({} bytes): truncated file?",
                raw.offset,
                raw.size,
                parts.object_size
            );
        }
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
            samples.push(Sample {
                offset: raw.offset,
                size: raw.size,
                dts: raw.dts,
                pts: raw.pts,
                keyframe: raw.keyframe,
                irap,
                decode_from,
                presentation: 0,
            });
        }
        let mut presentation_order: Vec<u32> = (0..samples.len() as u32).collect();
        presentation_order.sort_by_key(|&position| (samples[position as usize].pts, position));
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

    /// Average frame rate from the presentation timestamps, as frames per second.
    pub fn frame_rate(&self) -> f64 {
        let count = self.samples.len();
        let first = self.sample(self.presentation_order[0]).pts;
        let last = self.sample(self.presentation_order[count - 1]).pts;
        if count < 2 || last <= first {
            return 0.0;
        }
        (count - 1) as f64 * f64::from(self.timescale) / (last - first) as f64
    }
}

/// Reads `(width, height)` from the SPS among `nals`, if there is one.
pub fn dimensions_from_parameter_sets<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Option<(u32, u32)> {
    nals.into_iter()
        .filter(|nal| hevc::nal_type(nal) == hevc::NAL_SPS)
        .find_map(|nal| hevc::parse_sps(nal).ok())
        .map(|sps| (sps.width, sps.height))
}
