//! Indexes raw Annex-B HEVC elementary streams (`.h265`, `.hevc`, `.265`).
//!
//! A raw stream has no container, so the only way to know where its access
//! units are is to scan it once, in bounded chunks. Access units are split
//! the way FFmpeg's HEVC parser splits them (so offsets match
//! `ffprobe -show_packets`), and presentation order comes from each
//! picture's POC because the stream carries no timestamps.

use crate::budget::Budget;
use crate::corrupt;
use crate::hevc::{self, PocTracker, Pps, Sps};
use crate::index::{Container, DecoderConfig, IndexParts, NalFormat, RawSample, VideoIndex};
use crate::source::RangeRead;
use anyhow::{Context, Result};
use std::collections::HashMap;

const SCAN_CHUNK: u64 = 8 * 1024 * 1024;
/// Largest NAL unit accepted: far above any real slice, and it bounds what
/// the scanner holds while it looks for the next start code.
const MAX_NAL_BYTES: usize = 64 * 1024 * 1024;
/// Raw streams carry no frame rate in the fields we parse; like FFmpeg, assume 25.
pub const ASSUMED_FRAME_RATE: u32 = 25;

/// True when the bytes start like an Annex-B stream (a start code).
pub fn looks_like_annexb(head: &[u8]) -> bool {
    head.starts_with(&[0, 0, 0, 1]) || head.starts_with(&[0, 0, 1])
}

struct AccessUnit {
    offset: u64,
    has_picture: bool,
    keyframe: bool,
    order: (u32, i64),
}

#[derive(Default)]
struct Scanner {
    units: Vec<AccessUnit>,
    unit_open: bool,
    unit_has_picture: bool,
    sps: HashMap<u32, Sps>,
    pps: HashMap<u32, Pps>,
    parameter_sets: Vec<u8>,
    seen_parameter_set_types: Vec<u8>,
    poc: PocTracker,
}

impl Scanner {
    /// Handles one NAL unit whose start code begins at `offset`.
    fn nal(&mut self, offset: u64, nal: &[u8], budget: &Budget) -> Result<()> {
        let kind = hevc::nal_type(nal);
        let opens_unit = matches!(kind, hevc::NAL_VPS..=hevc::NAL_AUD | hevc::NAL_SEI_PREFIX | 41..=44 | 48..=55);
        if (opens_unit || hevc::starts_picture(nal)) && self.unit_has_picture {
            self.unit_open = false;
            self.unit_has_picture = false;
        }
        if !self.unit_open {
            budget.check_samples(self.units.len() as u64 + 1)?;
            self.units.push(AccessUnit { offset, has_picture: false, keyframe: false, order: (0, 0) });
            self.unit_open = true;
        }
        match kind {
            hevc::NAL_SPS => {
                let sps = hevc::parse_sps(nal)?;
                self.sps.insert(sps.id, sps);
                self.keep_parameter_set(kind, nal);
            }
            hevc::NAL_PPS => {
                let pps = hevc::parse_pps(nal)?;
                self.pps.insert(pps.id, pps);
                self.keep_parameter_set(kind, nal);
            }
            hevc::NAL_VPS => self.keep_parameter_set(kind, nal),
            hevc::NAL_EOS => self.poc.end_of_sequence(),
            _ if hevc::starts_picture(nal) => {
                let (sps_map, pps_map) = (&self.sps, &self.pps);
                let slice = hevc::parse_first_slice(nal, |id| {
                    let pps = pps_map.get(&id)?;
                    Some((pps, sps_map.get(&pps.sps_id)?))
                })
                .with_context(|| format!("cannot read the slice header at byte {offset}"))?;
                let sps = &self.sps[&self.pps[&slice.pps_id].sps_id];
                let order = self.poc.next(nal, &slice, sps.log2_max_poc_lsb);
                let unit = self.units.last_mut().expect("a unit is open");
                unit.has_picture = true;
                unit.keyframe = hevc::is_irap(kind);
                unit.order = order;
                self.unit_has_picture = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// The first VPS, SPS and PPS become the decoder's extradata, so any
    /// group of pictures decodes even when the stream does not repeat them.
    fn keep_parameter_set(&mut self, kind: u8, nal: &[u8]) {
        if !self.seen_parameter_set_types.contains(&kind) {
            self.seen_parameter_set_types.push(kind);
            self.parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            self.parameter_sets.extend_from_slice(nal);
        }
    }
}

/// Feeds every NAL unit of the object to `scanner`, reading it in chunks.
fn scan(source: &dyn RangeRead, scanner: &mut Scanner, budget: &Budget) -> Result<()> {
    let size = source.size();
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_offset = 0u64;
    let mut read_offset = 0u64;
    loop {
        budget.check_time()?;
        let at_end = read_offset >= size;
        if pending.len() > MAX_NAL_BYTES + SCAN_CHUNK as usize {
            return Err(corrupt!("a NAL unit at byte {pending_offset} is larger than {MAX_NAL_BYTES} bytes"));
        }
        if !at_end {
            pending.extend(source.read_range(read_offset, SCAN_CHUNK)?);
            read_offset = (read_offset + SCAN_CHUNK).min(size);
        }
        let starts: Vec<usize> = memchr::memmem::find_iter(&pending, b"\x00\x00\x01").collect();
        // The last NAL may continue in the next chunk unless the stream ended.
        let complete = if at_end { starts.len() } else { starts.len().saturating_sub(1) };
        for pair in 0..complete {
            let code = starts[pair];
            let end = starts.get(pair + 1).copied().unwrap_or(pending.len());
            let mut nal = &pending[code + 3..end];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            // Like FFmpeg's parser, a unit begins at its 3-byte start code; the
            // zero_byte of a 4-byte code stays with the unit before.
            scanner.nal(pending_offset + code as u64, nal, budget)?;
        }
        if at_end {
            return Ok(());
        }
        if let Some(&keep_from) = starts.get(complete) {
            pending.drain(..keep_from);
            pending_offset += keep_from as u64;
        } else if pending.len() > 2 {
            // No start code at all: keep two bytes that may begin one.
            let drop = pending.len() - 2;
            pending.drain(..drop);
            pending_offset += drop as u64;
        }
    }
}

pub fn index(source: &dyn RangeRead, budget: &Budget) -> Result<VideoIndex> {
    let mut scanner = Scanner::default();
    scan(source, &mut scanner, budget)?;
    let mut units: Vec<AccessUnit> = scanner.units.into_iter().filter(|unit| unit.has_picture).collect();
    anyhow::ensure!(!units.is_empty(), "no HEVC pictures found in the stream");
    anyhow::ensure!(!scanner.sps.is_empty(), "the stream has no sequence parameter set");
    units[0].offset = 0; // the first unit owns everything before it, as in FFmpeg
    let mut ranks: Vec<usize> = (0..units.len()).collect();
    ranks.sort_by_key(|&i| (units[i].order, i));
    let mut pts = vec![0i64; units.len()];
    for (rank, &i) in ranks.iter().enumerate() {
        pts[i] = rank as i64;
    }
    let object_size = source.size();
    let samples = units
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let size = units.get(i + 1).map_or(object_size, |next| next.offset) - unit.offset;
            let size = u32::try_from(size)
                .map_err(|_| corrupt!("the access unit at byte {} is {size} bytes long", unit.offset))?;
            Ok(RawSample { offset: unit.offset, size, dts: i as i64, pts: pts[i], keyframe: unit.keyframe })
        })
        .collect::<Result<Vec<_>>>()?;
    let sps = scanner.sps.values().next().expect("checked above");
    VideoIndex::build(
        IndexParts {
            container: Container::AnnexB,
            codec: "hevc",
            width: sps.width,
            height: sps.height,
            timescale: ASSUMED_FRAME_RATE,
            object_size,
            decoder: DecoderConfig::new(
                scanner.parameter_sets,
                NalFormat::AnnexB,
                scanner.sps.values(),
                scanner.pps.values(),
            ),
            samples,
            edits: Vec::new(),
        },
        budget,
    )
}
