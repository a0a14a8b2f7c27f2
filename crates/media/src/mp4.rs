//! Indexes MP4/MOV files (`moov` at the front or the end) and fragmented MP4
//! (`moof` + `mdat` pairs) from box headers and the metadata boxes alone.
//!
//! Top-level boxes are walked with small windowed range reads; `mdat` payloads
//! are skipped, never read. `mp4-atom` decodes the `moov`/`moof` boxes; this
//! module turns their sample tables into byte offsets and timestamps.
//!
//! Every size, count and offset here comes from the file and is untrusted:
//! arithmetic is checked, nothing is allocated from a count the object's
//! bytes cannot back, table expansion is linear, and the walk stops at a box
//! that runs past the end (a recording cut short keeps what it holds).

use crate::budget::Budget;
use crate::corrupt;
use crate::index::{Container, DecoderConfig, Edit, IndexParts, NalFormat, RawSample, VideoIndex};
use crate::source::{RangeRead, WindowedReader};
use anyhow::{bail, Context, Result};
use mp4_atom::{Codec, Decode, Encode, Moof, Moov, Stbl, StszSamples, Trak, Trex};

/// Header reads fetch at least this much, so a front `moov` or a fragment's
/// `moof` usually arrives with the read of its header.
const HEADER_WINDOW: u64 = 64 * 1024;
/// Largest `moov` accepted (hours of video at high frame rates fit easily).
const MAX_MOOV_BYTES: u64 = 256 * 1024 * 1024;
const MAX_MOOF_BYTES: u64 = 16 * 1024 * 1024;
/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// Box types that may start an ISO-BMFF / QuickTime file.
pub const TOP_LEVEL_BOXES: [&[u8; 4]; 9] =
    [b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"sidx"];

struct BoxHeader {
    kind: [u8; 4],
    offset: u64,
    size: u64,
}

impl BoxHeader {
    fn name(&self) -> String {
        String::from_utf8_lossy(&self.kind).into_owned()
    }
}

/// The box header at `offset`, or `None` when fewer bytes than a header remain.
fn read_box_header(reader: &mut WindowedReader, offset: u64) -> Result<Option<BoxHeader>> {
    let object_size = reader.size();
    if offset.saturating_add(8) > object_size {
        return Ok(None);
    }
    let head = reader.read(offset, 16)?;
    let size32 = u32::from_be_bytes(head[0..4].try_into()?);
    let kind: [u8; 4] = head[4..8].try_into()?;
    let (size, header_len) = match size32 {
        0 => (object_size - offset, 8),
        1 if head.len() < 16 => return Ok(None),
        1 => (u64::from_be_bytes(head[8..16].try_into()?), 16),
        size => (u64::from(size), 8),
    };
    if size < header_len {
        return Err(corrupt!(
            "box '{}' at byte {offset} has an impossible size {size}",
            String::from_utf8_lossy(&kind)
        ));
    }
    Ok(Some(BoxHeader { kind, offset, size }))
}

fn read_whole_box(reader: &mut WindowedReader, header: &BoxHeader, limit: u64) -> Result<Vec<u8>> {
    if header.size > limit {
        bail!(crate::budget::OverBudget(format!(
            "'{}' box of {} bytes is larger than the {limit} byte limit",
            header.name(),
            header.size
        )));
    }
    reader.read(header.offset, header.size)
}

/// Builds the index of an MP4/MOV/fragmented MP4 object.
pub fn index(source: &dyn RangeRead, budget: &Budget) -> Result<VideoIndex> {
    let object_size = source.size();
    let mut reader = WindowedReader::new(source, HEADER_WINDOW);
    let mut track: Option<Track> = None;
    let mut fragmented = false;
    let mut offset = 0;
    while let Some(header) = read_box_header(&mut reader, offset)? {
        budget.check_time()?;
        let end = header
            .offset
            .checked_add(header.size)
            .ok_or_else(|| corrupt!("box '{}' at byte {} has a size that wraps", header.name(), header.offset))?;
        if end > object_size {
            // A box cut short by the end of the file: a recording that was
            // interrupted. A metadata box cannot be used; the samples listed
            // so far are kept and those past the end are dropped.
            if &header.kind == b"moov" {
                return Err(corrupt!(
                    "the 'moov' box at byte {} runs past the end of the file: truncated file",
                    offset
                ));
            }
            break;
        }
        match &header.kind {
            b"moov" => {
                let bytes = read_whole_box(&mut reader, &header, MAX_MOOV_BYTES)?;
                let moov =
                    Moov::decode(&mut bytes.as_slice()).map_err(|e| corrupt!("cannot parse the 'moov' box: {e}"))?;
                track = Some(Track::from_moov(&moov, object_size, budget)?);
            }
            b"moof" => {
                let track = track.as_mut().ok_or_else(|| corrupt!("a 'moof' box comes before the 'moov' box"))?;
                let bytes = read_whole_box(&mut reader, &header, MAX_MOOF_BYTES)?;
                let moof = Moof::decode(&mut bytes.as_slice())
                    .map_err(|e| corrupt!("cannot parse the 'moof' box at byte {}: {e}", header.offset))?;
                track.add_fragment(header.offset, &moof, budget)?;
                fragmented = true;
            }
            _ => {}
        }
        offset = end;
    }
    let track = track.context("no 'moov' box: the file is truncated or not an MP4/MOV")?;
    track.into_index(fragmented, object_size, budget)
}

/// The video track as read so far: its decoder set-up and samples.
struct Track {
    track_id: u32,
    trex: Option<Trex>,
    width: u32,
    height: u32,
    timescale: u32,
    decoder: DecoderConfig,
    edits: Vec<Edit>,
    samples: Vec<RawSample>,
    /// Decode time of the next fragment sample when its fragment has no `tfdt`.
    next_dts: i64,
}

impl Track {
    fn from_moov(moov: &Moov, object_size: u64, budget: &Budget) -> Result<Self> {
        let trak = moov
            .trak
            .iter()
            .find(|trak| trak.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"))
            .context("the file has no video track")?;
        let stbl = &trak.mdia.minf.stbl;
        let (visual, hvcc) = match stbl.stsd.codecs.first() {
            Some(Codec::Hvc1(entry)) => (&entry.visual, &entry.hvcc),
            Some(Codec::Hev1(entry)) => (&entry.visual, &entry.hvcc),
            Some(other) => {
                bail!("unsupported codec {}: this server decodes H.265/HEVC (hvc1/hev1)", codec_name(other))
            }
            None => bail!("the video track has no sample description"),
        };
        let mut encoded = Vec::new();
        hvcc.encode(&mut encoded)?;
        let extradata = encoded.split_off(8); // drop the box header, keep the hvcC record
        let parameter_sets = || hvcc.arrays.iter().flat_map(|array| array.nalus.iter().map(Vec::as_slice));
        let sps = crate::index::parse_sps_among(parameter_sets());
        let pps = crate::index::parse_pps_among(parameter_sets());
        let (width, height) = sps
            .first()
            .map(|sps| (sps.width, sps.height))
            .unwrap_or((u32::from(visual.width), u32::from(visual.height)));
        let timescale = trak.mdia.mdhd.timescale.max(1);
        let samples = sample_table(stbl, object_size, budget)?;
        let next_dts = match samples.last() {
            Some(last) => last.dts.checked_add(1).ok_or_else(|| corrupt!("decode times overflow"))?,
            None => 0,
        };
        Ok(Self {
            track_id: trak.tkhd.track_id,
            trex: moov
                .mvex
                .as_ref()
                .and_then(|mvex| mvex.trex.iter().find(|t| t.track_id == trak.tkhd.track_id))
                .cloned(),
            width,
            height,
            timescale,
            decoder: DecoderConfig::new(
                extradata,
                NalFormat::LengthPrefixed(hvcc.length_size_minus_one + 1),
                &sps,
                &pps,
            ),
            edits: edit_list(trak, moov.mvhd.timescale, timescale),
            samples,
            next_dts,
        })
    }

    /// Appends this track's samples of one fragment (`moof`/`traf`/`trun`).
    fn add_fragment(&mut self, moof_offset: u64, moof: &Moof, budget: &Budget) -> Result<()> {
        let trex = self.trex.as_ref();
        for traf in moof.traf.iter().filter(|traf| traf.tfhd.track_id == self.track_id) {
            let tfhd = &traf.tfhd;
            let base = tfhd.base_data_offset.unwrap_or(moof_offset);
            if let Some(tfdt) = &traf.tfdt {
                self.next_dts = i64::try_from(tfdt.base_media_decode_time)
                    .map_err(|_| corrupt!("fragment decode time {} is out of range", tfdt.base_media_decode_time))?;
            }
            let mut position = base;
            for trun in &traf.trun {
                let count = self.samples.len() as u64 + trun.samples.len() as u64;
                budget.check_samples(count)?;
                if let Some(data_offset) = trun.data_offset {
                    position = base
                        .checked_add_signed(i64::from(data_offset))
                        .ok_or_else(|| corrupt!("fragment data offset {data_offset} wraps past byte {base}"))?;
                }
                for entry in trun.samples.iter() {
                    let duration = entry
                        .duration
                        .or(tfhd.default_sample_duration)
                        .or(trex.map(|t| t.default_sample_duration))
                        .unwrap_or(0);
                    let size =
                        entry.size.or(tfhd.default_sample_size).or(trex.map(|t| t.default_sample_size)).unwrap_or(0);
                    let flags =
                        entry.flags.or(tfhd.default_sample_flags).or(trex.map(|t| t.default_sample_flags)).unwrap_or(0);
                    let dts = self.next_dts;
                    let pts =
                        dts.checked_add(entry.cts.unwrap_or(0)).ok_or_else(|| corrupt!("sample times overflow"))?;
                    self.samples.push(RawSample {
                        offset: position,
                        size,
                        dts,
                        pts,
                        keyframe: flags & NON_SYNC_SAMPLE == 0,
                    });
                    position = position
                        .checked_add(u64::from(size))
                        .ok_or_else(|| corrupt!("fragment sample at byte {position} of size {size} wraps"))?;
                    self.next_dts =
                        dts.checked_add(i64::from(duration)).ok_or_else(|| corrupt!("sample times overflow"))?;
                }
            }
        }
        Ok(())
    }

    fn into_index(self, fragmented: bool, object_size: u64, budget: &Budget) -> Result<VideoIndex> {
        VideoIndex::build(
            IndexParts {
                container: if fragmented { Container::FragmentedMp4 } else { Container::Mp4 },
                codec: "hevc",
                width: self.width,
                height: self.height,
                timescale: self.timescale,
                object_size,
                decoder: self.decoder,
                samples: self.samples,
                edits: self.edits,
            },
            budget,
        )
    }
}

fn codec_name(codec: &Codec) -> String {
    let debug = format!("{codec:?}");
    debug.split(['(', ' ', '{']).next().unwrap_or("unknown").to_lowercase()
}

/// The track's edit list in its own timescale. Empty edits (`media_time`
/// -1) delay what follows; edits at a rate other than 1 (dwells, slow
/// motion) are not honoured and leave the list empty: every sample is then
/// shown at its own time, as without an edit list.
fn edit_list(trak: &Trak, movie_timescale: u32, media_timescale: u32) -> Vec<Edit> {
    let Some(elst) = trak.edts.as_ref().and_then(|edts| edts.elst.as_ref()) else { return Vec::new() };
    let to_media = |duration: u64| {
        let scaled = u128::from(duration) * u128::from(media_timescale) / u128::from(movie_timescale.max(1));
        i64::try_from(scaled).unwrap_or(i64::MAX)
    };
    let mut edits = Vec::new();
    let mut presentation_start = 0i64;
    for entry in &elst.entries {
        let duration = (entry.segment_duration > 0).then(|| to_media(entry.segment_duration));
        match entry.media_time {
            None => presentation_start = presentation_start.saturating_add(duration.unwrap_or(0)),
            Some(_) if (entry.media_rate.integer(), entry.media_rate.decimal()) != (1, 0) => return Vec::new(),
            Some(media_time) => {
                let Ok(media_time) = i64::try_from(media_time) else { return Vec::new() };
                edits.push(Edit { media_time, duration, presentation_start });
                presentation_start = presentation_start.saturating_add(duration.unwrap_or(0));
            }
        }
    }
    edits
}

/// Expands a classic sample table (stsz/stsc/stco/stts/ctts/stss) into
/// samples, in time and memory linear in the table's own bytes.
fn sample_table(stbl: &Stbl, object_size: u64, budget: &Budget) -> Result<Vec<RawSample>> {
    let (count, size_of): (usize, Box<dyn Fn(usize) -> u32 + '_>) = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => {
            // Nothing backs a count of identical sizes but the object itself.
            let total = u64::from(*count).checked_mul(u64::from(*size));
            if total.is_none_or(|total| total > object_size) {
                return Err(corrupt!(
                    "the sample table promises {count} samples of {size} bytes, more than the {object_size} byte file holds"
                ));
            }
            (*count as usize, Box::new(move |_| *size))
        }
        StszSamples::Different { sizes } => (sizes.len(), Box::new(move |i| sizes[i])),
    };
    budget.check_samples(count as u64)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err(corrupt!("the sample table has no chunk offsets")),
    };
    let offsets = sample_offsets(stbl, &chunk_offsets, count, &size_of)?;
    let mut durations =
        stbl.stts.entries.iter().flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize));
    let mut composition = stbl
        .ctts
        .iter()
        .flat_map(|ctts| ctts.entries.iter())
        .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize));
    let sync: Option<std::collections::HashSet<u32>> = stbl.stss.as_ref().map(|s| s.entries.iter().copied().collect());
    let mut dts = 0i64;
    let mut samples = Vec::with_capacity(count);
    for (index, &offset) in offsets.iter().enumerate() {
        if index % 65_536 == 0 {
            budget.check_time()?;
        }
        let pts = dts.checked_add(composition.next().unwrap_or(0)).ok_or_else(|| corrupt!("sample times overflow"))?;
        let keyframe = sync.as_ref().is_none_or(|sync| sync.contains(&(index as u32 + 1)));
        samples.push(RawSample { offset, size: size_of(index), dts, pts, keyframe });
        dts = dts
            .checked_add(i64::from(durations.next().unwrap_or(0)))
            .ok_or_else(|| corrupt!("sample times overflow"))?;
    }
    Ok(samples)
}

/// Each sample's byte offset from the sample-to-chunk table: chunk runs must
/// start at increasing chunk numbers (ISO/IEC 14496-12 §8.7.4), which keeps
/// the walk linear in chunks plus samples however the table is crafted.
fn sample_offsets(
    stbl: &Stbl,
    chunk_offsets: &[u64],
    count: usize,
    size_of: &dyn Fn(usize) -> u32,
) -> Result<Vec<u64>> {
    let entries = &stbl.stsc.entries;
    let chunk_count = chunk_offsets.len() as u64;
    let mut offsets = Vec::with_capacity(count);
    'entries: for (entry_index, entry) in entries.iter().enumerate() {
        if entry.first_chunk == 0 {
            return Err(corrupt!("sample-to-chunk entry {entry_index} starts at chunk 0 (chunks count from 1)"));
        }
        let next_first = entries.get(entry_index + 1).map(|next| next.first_chunk);
        if next_first.is_some_and(|next| next <= entry.first_chunk) {
            return Err(corrupt!("sample-to-chunk entries are not in increasing chunk order (entry {entry_index})"));
        }
        let last_chunk = next_first.map_or(chunk_count, |next| u64::from(next - 1).min(chunk_count));
        for chunk in u64::from(entry.first_chunk)..=last_chunk {
            let mut position = chunk_offsets[(chunk - 1) as usize];
            for _ in 0..entry.samples_per_chunk {
                if offsets.len() == count {
                    break 'entries;
                }
                let size = size_of(offsets.len());
                offsets.push(position);
                position = position
                    .checked_add(u64::from(size))
                    .ok_or_else(|| corrupt!("sample at byte {position} of size {size} wraps"))?;
            }
        }
    }
    if offsets.len() != count {
        return Err(corrupt!("the sample table lists {count} sizes but its chunks hold {} samples", offsets.len()));
    }
    Ok(offsets)
}
