//! Indexes MP4/MOV files (`moov` at the front or the end) and fragmented MP4
//! (`moof` + `mdat` pairs) from box headers and the metadata boxes alone.
//!
//! Top-level boxes are walked with small windowed range reads; `mdat` payloads
//! are skipped, never read. `mp4-atom` decodes the `moov`/`moof` boxes; this
//! module turns their sample tables into byte offsets and timestamps.

use crate::index::{Container, DecoderConfig, IndexParts, NalFormat, RawSample, VideoIndex};
use crate::source::{RangeRead, WindowedReader};
use anyhow::{bail, ensure, Context, Result};
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

fn read_box_header(reader: &mut WindowedReader, offset: u64) -> Result<Option<BoxHeader>> {
    let object_size = reader.size();
    if offset + 8 > object_size {
        return Ok(None);
    }
    let head = reader.read(offset, 16)?;
    let size32 = u32::from_be_bytes(head[0..4].try_into()?);
    let kind: [u8; 4] = head[4..8].try_into()?;
    let (size, header_len) = match size32 {
        0 => (object_size - offset, 8),
        1 => {
            ensure!(head.len() >= 16, "truncated 64-bit box header at byte {offset}");
            (u64::from_be_bytes(head[8..16].try_into()?), 16)
        }
        size => (u64::from(size), 8),
    };
    ensure!(size >= header_len, "invalid box size {size} at byte {offset}");
    Ok(Some(BoxHeader { kind, offset, size }))
}

fn read_whole_box(reader: &mut WindowedReader, header: &BoxHeader, limit: u64) -> Result<Vec<u8>> {
    let name = String::from_utf8_lossy(&header.kind);
    ensure!(header.size <= limit, "'{name}' box of {} bytes is larger than the {limit} byte limit", header.size);
    ensure!(
        header.offset + header.size <= reader.size(),
        "'{name}' box at byte {} runs past the end of the file: truncated file",
        header.offset
    );
    reader.read(header.offset, header.size)
}

/// Builds the index of an MP4/MOV/fragmented MP4 object.
pub fn index(source: &dyn RangeRead) -> Result<VideoIndex> {
    let mut reader = WindowedReader::new(source, HEADER_WINDOW);
    let mut moov: Option<Moov> = None;
    let mut fragments: Vec<(u64, Moof)> = Vec::new();
    let mut offset = 0;
    while let Some(header) = read_box_header(&mut reader, offset)? {
        match &header.kind {
            b"moov" => {
                let bytes = read_whole_box(&mut reader, &header, MAX_MOOV_BYTES)?;
                moov = Some(Moov::decode(&mut bytes.as_slice()).context("cannot parse the 'moov' box")?);
            }
            b"moof" => {
                let bytes = read_whole_box(&mut reader, &header, MAX_MOOF_BYTES)?;
                let moof = Moof::decode(&mut bytes.as_slice())
                    .with_context(|| format!("cannot parse the 'moof' box at byte {}", header.offset))?;
                fragments.push((header.offset, moof));
            }
            _ => {}
        }
        offset = header.offset + header.size;
    }
    let moov = moov.context("no 'moov' box: the file is truncated or not an MP4/MOV")?;
    build(&moov, &fragments, source.size())
}

fn build(moov: &Moov, fragments: &[(u64, Moof)], object_size: u64) -> Result<VideoIndex> {
    let trak = moov
        .trak
        .iter()
        .find(|trak| trak.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"))
        .context("the file has no video track")?;
    let stbl = &trak.mdia.minf.stbl;
    let (visual, hvcc) = match stbl.stsd.codecs.first() {
        Some(Codec::Hvc1(entry)) => (&entry.visual, &entry.hvcc),
        Some(Codec::Hev1(entry)) => (&entry.visual, &entry.hvcc),
        Some(other) => bail!("unsupported codec {}: this server decodes H.265/HEVC (hvc1/hev1)", codec_name(other)),
        None => bail!("the video track has no sample description"),
    };
    let mut encoded = Vec::new();
    hvcc.encode(&mut encoded)?;
    let extradata = encoded.split_off(8); // drop the box header, keep the hvcC record
    let parameter_sets = hvcc.arrays.iter().flat_map(|array| array.nalus.iter().map(Vec::as_slice));
    let (width, height) = crate::index::dimensions_from_parameter_sets(parameter_sets)
        .unwrap_or((u32::from(visual.width), u32::from(visual.height)));
    let mut samples = sample_table(stbl)?;
    let fragmented = !fragments.is_empty();
    if fragmented {
        let trex = moov.mvex.as_ref().and_then(|mvex| mvex.trex.iter().find(|t| t.track_id == trak.tkhd.track_id));
        fragment_samples(trak, trex, fragments, &mut samples)?;
    }
    VideoIndex::build(IndexParts {
        container: if fragmented { Container::FragmentedMp4 } else { Container::Mp4 },
        codec: "hevc",
        width,
        height,
        timescale: trak.mdia.mdhd.timescale.max(1),
        object_size,
        decoder: DecoderConfig { extradata, nal_format: NalFormat::LengthPrefixed(hvcc.length_size_minus_one + 1) },
        samples,
    })
}

fn codec_name(codec: &Codec) -> String {
    let debug = format!("{codec:?}");
    debug.split(['(', ' ', '{']).next().unwrap_or("unknown").to_lowercase()
}

/// Expands a classic sample table (stsz/stsc/stco/stts/ctts/stss) into samples.
fn sample_table(stbl: &Stbl) -> Result<Vec<RawSample>> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => vec![*size; *count as usize],
        StszSamples::Different { sizes } => sizes.clone(),
    };
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => bail!("the sample table has no chunk offsets"),
    };
    let mut offsets = Vec::with_capacity(sizes.len());
    let entries = &stbl.stsc.entries;
    for (entry_index, entry) in entries.iter().enumerate() {
        let first_chunk = entry.first_chunk.max(1) as usize;
        let last_chunk = entries.get(entry_index + 1).map_or(chunk_offsets.len(), |next| next.first_chunk as usize - 1);
        for chunk in first_chunk..=last_chunk.min(chunk_offsets.len()) {
            let mut position = chunk_offsets[chunk - 1];
            for _ in 0..entry.samples_per_chunk {
                let Some(&size) = sizes.get(offsets.len()) else {
                    break;
                };
                offsets.push(position);
                position += u64::from(size);
            }
        }
    }
    ensure!(offsets.len() == sizes.len(), "sample table lists {} sizes but {} offsets", sizes.len(), offsets.len());
    let mut durations =
        stbl.stts.entries.iter().flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize));
    let mut composition = stbl
        .ctts
        .iter()
        .flat_map(|ctts| ctts.entries.iter())
        .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize));
    let sync: Option<std::collections::HashSet<u32>> = stbl.stss.as_ref().map(|s| s.entries.iter().copied().collect());
    let mut dts = 0i64;
    let mut samples = Vec::with_capacity(sizes.len());
    for (index, (&size, &offset)) in sizes.iter().zip(&offsets).enumerate() {
        let pts = dts + composition.next().unwrap_or(0);
        let keyframe = sync.as_ref().is_none_or(|sync| sync.contains(&(index as u32 + 1)));
        samples.push(RawSample { offset, size, dts, pts, keyframe });
        dts += i64::from(durations.next().unwrap_or(0));
    }
    Ok(samples)
}

/// Appends the samples of the track's fragments (`moof`/`traf`/`trun`).
fn fragment_samples(
    trak: &Trak,
    trex: Option<&Trex>,
    fragments: &[(u64, Moof)],
    samples: &mut Vec<RawSample>,
) -> Result<()> {
    let track_id = trak.tkhd.track_id;
    let mut next_dts = samples.last().map_or(0, |last| last.dts + 1);
    for (moof_offset, moof) in fragments {
        for traf in moof.traf.iter().filter(|traf| traf.tfhd.track_id == track_id) {
            let tfhd = &traf.tfhd;
            let base = tfhd.base_data_offset.unwrap_or(*moof_offset);
            if let Some(tfdt) = &traf.tfdt {
                next_dts = tfdt.base_media_decode_time as i64;
            }
            let mut position = base;
            for trun in &traf.trun {
                if let Some(data_offset) = trun.data_offset {
                    position = base.checked_add_signed(i64::from(data_offset)).context("invalid trun data offset")?;
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
                    samples.push(RawSample {
                        offset: position,
                        size,
                        dts: next_dts,
                        pts: next_dts + entry.cts.unwrap_or(0),
                        keyframe: flags & NON_SYNC_SAMPLE == 0,
                    });
                    position += u64::from(size);
                    next_dts += i64::from(duration);
                }
            }
        }
    }
    Ok(())
}
