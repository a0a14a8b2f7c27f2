//! A structure-aware mutator for the fuzz harness. Random byte flips rarely
//! reach the bugs that matter (a count that promises more than the file
//! holds, a size that wraps, an offset past the end), so mutations aim at
//! structure: the size field of a box, the count and entries of a sample
//! table, fragment offsets and times, whole boxes repeated, dropped or cut
//! short; for Annex-B streams the NAL headers and the first bytes of
//! parameter sets and slice headers, start codes added and removed.
//!
//! Two kinds of MP4 mutation: edits of the raw box bytes (sizes that lie,
//! boxes cut, repeated or dropped), and typed ones: the `moov` or a `moof`
//! decoded with mp4-atom, a count, size, offset or time in its sample
//! tables, edit list or fragment runs changed, and the box encoded again,
//! so the file is well-formed and only its numbers lie (a table of
//! identical sizes promising billions of samples, an offset past the end).
//!
//! A mutation is a list of edits, so a failing case is written down as its
//! seed file and edits (`fuzz-regressions/*.json`) and replayed every run.

use mp4_atom::{Decode, Encode, Moof, Moov, StscEntry, StszSamples, SttsEntry, TrunSamples};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Edit {
    /// Overwrite bytes at an offset.
    Write {
        at: usize,
        #[serde(with = "hex")]
        bytes: Vec<u8>,
    },
    /// Copy `len` bytes from `from` and insert them at `to`.
    Repeat { from: usize, len: usize, to: usize },
    /// Remove `len` bytes at `at`.
    Remove { at: usize, len: usize },
    /// Keep only the first `len` bytes.
    Truncate { len: usize },
    /// Replace `len` bytes at `at` with `bytes` (a re-encoded box).
    Splice {
        at: usize,
        len: usize,
        #[serde(with = "hex")]
        bytes: Vec<u8>,
    },
}

/// Bytes as a hex string in the kept cases (a byte per JSON array line
/// would make a re-encoded `moov` thousands of lines long).
mod hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| D::Error::custom("bad hex"))
            })
            .collect()
    }
}

pub fn apply(data: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        match edit {
            Edit::Write { at, bytes } => {
                for (i, byte) in bytes.iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *byte;
                    }
                }
            }
            Edit::Repeat { from, len, to } => {
                if from + len <= data.len() && *to <= data.len() {
                    let copy = data[*from..from + len].to_vec();
                    data.splice(to..to, copy);
                }
            }
            Edit::Remove { at, len } => {
                if at + len <= data.len() {
                    data.drain(*at..at + len);
                }
            }
            Edit::Truncate { len } => data.truncate(*len),
            Edit::Splice { at, len, bytes } => {
                if at + len <= data.len() {
                    data.splice(*at..at + len, bytes.iter().copied());
                }
            }
        }
    }
}

/// A box found in the tree: where its header starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct Found {
    kind: [u8; 4],
    offset: usize,
    size: usize,
}

/// Boxes whose payload is more boxes.
const CONTAINERS: [&[u8; 4]; 11] =
    [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"mvex", b"moof", b"traf", b"dinf", b"udta"];
/// Full boxes whose body is a count at +4 followed by a table.
const TABLES: [&[u8; 4]; 9] = [b"stsc", b"stco", b"co64", b"stts", b"ctts", b"stss", b"elst", b"trun", b"sbgp"];

fn boxes(data: &[u8], start: usize, end: usize, depth: usize, found: &mut Vec<Found>) {
    let mut offset = start;
    while offset + 8 <= end && depth < 8 {
        let size = u32::from_be_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = data[offset + 4..offset + 8].try_into().unwrap();
        let size = if size == 0 { end - offset } else { size };
        if size < 8 || offset + size > end {
            break;
        }
        found.push(Found { kind, offset, size });
        if CONTAINERS.contains(&&kind) {
            boxes(data, offset + 8, offset + size, depth + 1, found);
        }
        if &kind == b"stsd" && size > 16 {
            // The sample entry (hvc1/hev1): 8 header + 78 visual fields, then hvcC.
            let entry = offset + 16;
            if entry + 8 + 78 < offset + size {
                found.push(Found { kind: *b"hvc1", offset: entry, size: offset + size - entry });
                boxes(data, entry + 8 + 78, offset + size, depth + 1, found);
            }
        }
        offset += size;
    }
}

/// Values that break arithmetic: zero, one, sign edges, all ones, and
/// values near the file's own length and the field's current value.
fn interesting_u32(rng: &mut StdRng, current: u32, file_len: usize) -> u32 {
    let len = file_len as u32;
    let choices = [
        0,
        1,
        2,
        7,
        8,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fff0,
        u32::MAX,
        current.wrapping_add(1),
        current.wrapping_sub(1),
        current.wrapping_mul(2),
        current.wrapping_mul(1000),
        len,
        len.wrapping_sub(current),
        len.wrapping_add(8),
    ];
    if rng.random_bool(0.1) {
        rng.random()
    } else {
        choices[rng.random_range(0..choices.len())]
    }
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4).map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
}

fn write_u32(at: usize, value: u32) -> Edit {
    Edit::Write { at, bytes: value.to_be_bytes().to_vec() }
}

/// A random element to change, if there is one.
fn pick_mut<'a, T>(items: &'a mut [T], rng: &mut StdRng) -> Option<&'a mut T> {
    if items.is_empty() {
        return None;
    }
    let at = rng.random_range(0..items.len());
    items.get_mut(at)
}

fn interesting_u64(rng: &mut StdRng, current: u64, file_len: usize) -> u64 {
    match rng.random_range(0..6) {
        0 => u64::MAX - rng.random_range(0..4096),
        1 => (i64::MAX as u64).wrapping_add(rng.random_range(0..2)),
        2 => file_len as u64 + rng.random_range(0..64),
        3 => current.wrapping_mul(1 << rng.random_range(1..40)),
        _ => u64::from(interesting_u32(rng, current as u32, file_len)),
    }
}

/// The `moov` (or, in a fragmented file, sometimes a `moof`) decoded, one
/// to three of its numbers changed, and encoded again in place.
fn mutate_typed(data: &[u8], found: &[Found], rng: &mut StdRng) -> Option<Edit> {
    let moofs: Vec<&Found> = found.iter().filter(|b| &b.kind == b"moof").collect();
    let moov = found.iter().find(|b| &b.kind == b"moov")?;
    let target = if !moofs.is_empty() && rng.random_bool(0.5) { moofs[rng.random_range(0..moofs.len())] } else { moov };
    let bytes = &data[target.offset..target.offset + target.size];
    let len = data.len();
    let mut encoded = Vec::new();
    if &target.kind == b"moov" {
        let mut moov = Moov::decode(&mut &bytes[..]).ok()?;
        let trak = moov.trak.iter_mut().find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"))?;
        for _ in 0..rng.random_range(1..=3) {
            let stbl = &mut trak.mdia.minf.stbl;
            match rng.random_range(0..10) {
                0 => {
                    let size = interesting_u32(rng, 1000, len).max(1);
                    stbl.stsz.samples = StszSamples::Identical { count: interesting_u32(rng, 100, len), size };
                }
                1 => {
                    if let StszSamples::Different { sizes } = &mut stbl.stsz.samples {
                        if let Some(size) = pick_mut(sizes, rng) {
                            *size = interesting_u32(rng, *size, len);
                        }
                    }
                }
                2 => {
                    let entries = &mut stbl.stsc.entries;
                    let first_chunk = interesting_u32(rng, 1, len);
                    let samples_per_chunk = interesting_u32(rng, 1, len);
                    let entry = StscEntry { first_chunk, samples_per_chunk, sample_description_index: 1 };
                    let at = rng.random_range(0..=entries.len());
                    entries.insert(at, entry);
                }
                3 => {
                    if let Some(stco) = &mut stbl.stco {
                        if let Some(offset) = pick_mut(&mut stco.entries, rng) {
                            *offset = interesting_u32(rng, *offset, len);
                        }
                    } else if let Some(co64) = &mut stbl.co64 {
                        if let Some(offset) = pick_mut(&mut co64.entries, rng) {
                            *offset = interesting_u64(rng, *offset, len);
                        }
                    }
                }
                4 => {
                    let (sample_count, sample_delta) = (interesting_u32(rng, 10, len), interesting_u32(rng, 512, len));
                    stbl.stts.entries.insert(0, SttsEntry { sample_count, sample_delta });
                }
                5 => {
                    if let Some(ctts) = &mut stbl.ctts {
                        if let Some(entry) = pick_mut(&mut ctts.entries, rng) {
                            entry.sample_count = interesting_u32(rng, entry.sample_count, len);
                            entry.sample_offset =
                                i64::from(interesting_u32(rng, entry.sample_offset as u32, len) as i32);
                        }
                    }
                }
                6 => {
                    let stss = stbl.stss.get_or_insert_with(Default::default);
                    stss.entries = (0..rng.random_range(0..8)).map(|_| interesting_u32(rng, 1, len)).collect();
                }
                7 => {
                    let entries = (0..rng.random_range(1..5))
                        .map(|_| mp4_atom::ElstEntry {
                            segment_duration: interesting_u64(rng, 1000, len),
                            media_time: rng.random_bool(0.8).then(|| interesting_u64(rng, 1024, len) >> 1),
                            media_rate: 1.into(),
                        })
                        .collect();
                    trak.edts = Some(mp4_atom::Edts { elst: Some(mp4_atom::Elst { entries }) });
                }
                8 => trak.mdia.mdhd.timescale = interesting_u32(rng, trak.mdia.mdhd.timescale, len),
                _ => moov.mvhd.timescale = interesting_u32(rng, moov.mvhd.timescale, len),
            }
        }
        moov.encode(&mut encoded).ok()?;
    } else {
        let mut moof = Moof::decode(&mut &bytes[..]).ok()?;
        let traf = moof.traf.first_mut()?;
        for _ in 0..rng.random_range(1..=3) {
            match rng.random_range(0..7) {
                0 => traf.tfhd.base_data_offset = Some(interesting_u64(rng, target.offset as u64, len)),
                1 => traf.tfhd.default_sample_size = Some(interesting_u32(rng, 1000, len)),
                2 => {
                    let time = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                    traf.tfdt = Some(mp4_atom::Tfdt { base_media_decode_time: interesting_u64(rng, time, len) });
                }
                3 => {
                    if let Some(trun) = traf.trun.first_mut() {
                        trun.data_offset = Some(interesting_u32(rng, trun.data_offset.unwrap_or(0) as u32, len) as i32);
                    }
                }
                4 => {
                    if let Some(trun) = traf.trun.first_mut() {
                        trun.samples =
                            TrunSamples::Inherited { count: interesting_u32(rng, 10, len), first_flags: None };
                    }
                }
                5 => {
                    if let Some(TrunSamples::Explicit(entries)) = traf.trun.first_mut().map(|t| &mut t.samples) {
                        if let Some(entry) = pick_mut(entries, rng) {
                            entry.size = Some(interesting_u32(rng, entry.size.unwrap_or(0), len));
                            entry.duration = Some(interesting_u32(rng, entry.duration.unwrap_or(0), len));
                            entry.cts = Some(i64::from(interesting_u32(rng, 0, len) as i32));
                        }
                    }
                }
                _ => traf.trun.push(traf.trun.first()?.clone()),
            }
        }
        moof.encode(&mut encoded).ok()?;
    }
    Some(Edit::Splice { at: target.offset, len: target.size, bytes: encoded })
}

/// One to four structural edits of an MP4/MOV/fragmented MP4 file.
pub fn mutate_mp4(data: &[u8], rng: &mut StdRng) -> Vec<Edit> {
    let mut found = Vec::new();
    boxes(data, 0, data.len(), 0, &mut found);
    if rng.random_bool(0.5) {
        if let Some(edit) = mutate_typed(data, &found, rng) {
            return vec![edit];
        }
    }
    // Mutate the metadata, not the media payload.
    let metadata: Vec<Found> = found.into_iter().filter(|b| &b.kind != b"mdat" && &b.kind != b"free").collect();
    if metadata.is_empty() {
        return vec![Edit::Truncate { len: rng.random_range(0..=data.len()) }];
    }
    let count = rng.random_range(1..=4);
    (0..count)
        .map(|_| {
            let target = metadata[rng.random_range(0..metadata.len())];
            let body = target.offset + 8;
            match rng.random_range(0..10) {
                // The box's size field.
                0 | 1 => {
                    let current = read_u32(data, target.offset);
                    write_u32(target.offset, interesting_u32(rng, current, data.len()))
                }
                // A 64-bit size that may wrap: size32 = 1 and a large size after it.
                2 => {
                    let large = u64::MAX - rng.random_range(0..(target.offset as u64 + 64));
                    let mut bytes = 1u32.to_be_bytes().to_vec();
                    bytes.extend_from_slice(&target.kind);
                    bytes.extend_from_slice(&large.to_be_bytes());
                    Edit::Write { at: target.offset, bytes }
                }
                // A table's count, or one of its first entries.
                3..=5 if TABLES.contains(&&target.kind) || &target.kind == b"stsz" => {
                    let field = if rng.random_bool(0.5) {
                        body + 4 + if &target.kind == b"stsz" { rng.random_range(0..2) * 4 } else { 0 }
                    } else {
                        body + 8 + 4 * rng.random_range(0..16usize)
                    };
                    let current = read_u32(data, field);
                    write_u32(field, interesting_u32(rng, current, data.len()))
                }
                // Any aligned field of the box (offsets, times, flags, timescales).
                3..=7 => {
                    let fields = (target.size.saturating_sub(8) / 4).max(1);
                    let field = body + 4 * rng.random_range(0..fields.min(64));
                    let current = read_u32(data, field);
                    write_u32(field, interesting_u32(rng, current, data.len()))
                }
                // The box repeated right after itself.
                8 => Edit::Repeat { from: target.offset, len: target.size, to: target.offset + target.size },
                // The file cut inside or just after the box, or the box removed.
                _ if rng.random_bool(0.5) => Edit::Truncate { len: target.offset + rng.random_range(0..=target.size) },
                _ => Edit::Remove { at: target.offset, len: target.size },
            }
        })
        .collect()
}

/// Start offsets of the NAL units (after their start codes).
fn nal_starts(data: &[u8]) -> Vec<usize> {
    memchr::memmem::find_iter(data, b"\x00\x00\x01").map(|at| at + 3).collect()
}

/// One to four structural edits of a raw Annex-B HEVC stream.
pub fn mutate_annexb(data: &[u8], rng: &mut StdRng) -> Vec<Edit> {
    let starts = nal_starts(data);
    if starts.is_empty() {
        return vec![Edit::Truncate { len: rng.random_range(0..=data.len()) }];
    }
    // Parameter sets and the first pictures matter most: weigh the front.
    let pick = |rng: &mut StdRng| {
        let front = if rng.random_bool(0.7) { 12 } else { usize::MAX };
        starts[rng.random_range(0..starts.len().min(front))]
    };
    let count = rng.random_range(1..=4);
    (0..count)
        .map(|_| {
            let nal = pick(rng);
            match rng.random_range(0..8) {
                // NAL type and temporal id.
                0 => Edit::Write { at: nal, bytes: vec![rng.random::<u8>() & 0x7e, rng.random_range(0..8)] },
                // A header field (SPS/PPS/slice header): random bytes or all ones/zeros.
                1..=3 => {
                    let at = nal + 2 + rng.random_range(0..24);
                    let byte = match rng.random_range(0..3) {
                        0 => 0xff,
                        1 => 0x00,
                        _ => rng.random(),
                    };
                    Edit::Write { at, bytes: vec![byte; rng.random_range(1..4)] }
                }
                // A start code in the middle of a unit, or one removed.
                4 => Edit::Write { at: nal + rng.random_range(2..64), bytes: vec![0, 0, 1] },
                5 => Edit::Write { at: nal - 1, bytes: vec![0x55] },
                // A unit repeated, or the stream cut inside one.
                6 => {
                    let end = starts.iter().find(|&&s| s > nal).map_or(data.len(), |&s| s - 3);
                    Edit::Repeat { from: nal - 3, len: end - (nal - 3), to: nal - 3 }
                }
                _ => Edit::Truncate { len: nal + rng.random_range(0..64) },
            }
        })
        .collect()
}
