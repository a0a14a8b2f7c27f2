//! Damaged and crafted files. The crafted ones, the shapes that once took a
//! server down (a count that promises billions of samples, a box size that
//! wraps, a fragment offset that wraps, a huge sample-to-chunk table), are
//! refused or indexed quickly, with a clear reason and without allocating
//! what the file cannot back. A truncated recording serves every complete
//! frame, pixel-checked against FFmpeg's decode of the whole file.

mod support;

use bytes::Bytes;
use media::budget::DEFAULT_MAX_SAMPLES;
use media::{Budget, MemorySource, Player, Span, Threading, VideoIndex};
use mp4_atom::{StscEntry, StszSamples, SttsEntry};
use std::time::{Duration, Instant};
use support::{find, peak_allocation, video_trak, with_moof, with_moov};
use testkit::image::{box_downscale, check_frame, factor_for};

#[global_allocator]
static ALLOCATOR: support::CountingAllocator = support::CountingAllocator;

/// Indexes `bytes`, returning the result, the time it took and the peak heap it added.
fn index(bytes: Vec<u8>) -> (anyhow::Result<VideoIndex>, Duration, usize) {
    let source = MemorySource(bytes);
    let started = Instant::now();
    let budget = Budget::new(Duration::from_secs(20), DEFAULT_MAX_SAMPLES);
    let (result, peak) = peak_allocation(|| media::probe::index(&source, &budget));
    (result, started.elapsed(), peak)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixtures::generated_named(name).unwrap().path).unwrap()
}

/// Asserts a refusal as `Corrupt` whose message mentions `what`, made fast and small.
fn assert_corrupt(case: &str, (result, elapsed, peak): (anyhow::Result<VideoIndex>, Duration, usize), what: &str) {
    let error = match result {
        Ok(index) => panic!("{case}: indexed {} samples instead of refusing", index.samples.len()),
        Err(error) => error,
    };
    assert!(error.chain().any(|cause| cause.is::<media::Corrupt>()), "{case}: not reported as corrupt: {error:#}");
    assert!(format!("{error:#}").contains(what), "{case}: {error:#} should say {what:?}");
    assert!(elapsed < Duration::from_secs(2), "{case}: took {elapsed:?}");
    assert!(peak < 64 << 20, "{case}: allocated {} MiB", peak >> 20);
}

#[test]
fn crafted_files_are_refused_quickly_and_small() {
    // moov after mdat: the moov can be rewritten without moving any sample.
    let base = fixture("closed_gop_bframes.mp4");
    assert!(index(base.clone()).0.is_ok());

    let promises_billions = with_moov(&base, |moov| {
        video_trak(moov).mdia.minf.stbl.stsz.samples = StszSamples::Identical { count: u32::MAX, size: 4096 };
    });
    assert_corrupt("stsz count", index(promises_billions), "more than the");

    let mdat = find(&base, b"mdat")[0];
    let mut wrapping_box = base.clone();
    wrapping_box[mdat.offset..mdat.offset + 4].copy_from_slice(&1u32.to_be_bytes());
    wrapping_box[mdat.offset + 8..mdat.offset + 16].copy_from_slice(&(u64::MAX - 8).to_be_bytes());
    assert_corrupt("64-bit box size", index(wrapping_box), "wraps");

    let fragmented = fixture("fragmented.mp4");
    let wrapping_fragment = with_moof(&fragmented, 0, |moof| {
        moof.traf[0].tfhd.base_data_offset = Some(u64::MAX - 16);
    });
    assert_corrupt("fragment data offset", index(wrapping_fragment), "wraps");

    let chunks_out_of_order = with_moov(&base, |moov| {
        let stbl = &mut video_trak(moov).mdia.minf.stbl;
        let chunks = stbl.stco.as_ref().map_or(1, |stco| stco.entries.len() as u32);
        stbl.stsc.entries = (0..200_000)
            .map(|i| StscEntry {
                first_chunk: if i % 2 == 0 { 1 } else { chunks },
                samples_per_chunk: 1,
                sample_description_index: 1,
            })
            .collect();
    });
    assert_corrupt("stsc order", index(chunks_out_of_order), "increasing chunk order");

    let edits_galore = with_moov(&base, |moov| {
        let entry = mp4_atom::ElstEntry { segment_duration: 1, media_time: Some(0), media_rate: 1.into() };
        video_trak(moov).edts = Some(mp4_atom::Edts { elst: Some(mp4_atom::Elst { entries: vec![entry; 10_000] }) });
    });
    let (result, elapsed, _) = index(edits_galore);
    let error = result.expect_err("an edit list of 10,000 entries is refused");
    assert!(error.chain().any(|cause| cause.is::<media::OverBudget>()), "{error:#}");
    assert!(elapsed < Duration::from_secs(2));
}

#[test]
fn a_huge_valid_sample_table_indexes_in_linear_time() {
    let base = fixture("closed_gop_bframes.mp4");
    const SAMPLES: u32 = 200_000;
    let huge = with_moov(&base, |moov| {
        let stbl = &mut video_trak(moov).mdia.minf.stbl;
        stbl.stsz.samples = StszSamples::Different { sizes: vec![1; SAMPLES as usize] };
        stbl.stsc.entries = (1..=SAMPLES)
            .map(|chunk| StscEntry { first_chunk: chunk, samples_per_chunk: 1, sample_description_index: 1 })
            .collect();
        stbl.stco = Some(mp4_atom::Stco { entries: (0..SAMPLES).map(|i| 48 + i % 1000).collect() });
        stbl.co64 = None;
        stbl.stts.entries = vec![SttsEntry { sample_count: SAMPLES, sample_delta: 1 }];
        stbl.ctts = None;
        stbl.stss = None;
    });
    let (result, elapsed, peak) = index(huge);
    let index = result.expect("a large but consistent table indexes");
    assert_eq!(index.samples.len(), SAMPLES as usize);
    assert!(elapsed < Duration::from_secs(5), "200,000 chunks took {elapsed:?}");
    assert!(peak < 256 << 20, "allocated {} MiB", peak >> 20);
}

/// Decodes a few shown frames of `cut` (from its own bytes) and checks each
/// against FFmpeg's decode of the whole file at the same sample.
/// An SPS may claim pictures of 2^32 x 2^32 samples: what a decoder of it
/// would need saturates (the server's memory budget then refuses it as
/// `busy`) instead of wrapping to a small number that would fit.
#[test]
fn a_decoder_of_a_crafted_picture_size_needs_more_memory_than_any_budget() {
    let mut index = index(fixture("open_gop_bframes.mp4")).0.unwrap();
    let sane = Player::memory_needed(&index, Threading::Frame(4), 24 << 20);
    assert!(sane > 0 && sane < 1 << 30, "{sane}");
    index.decoder.pictures = Some(media::index::PictureBuffers { count: 16, bytes: u64::MAX / 3 });
    assert_eq!(Player::memory_needed(&index, Threading::Frame(4), 24 << 20), u64::MAX);
    index.decoder.pictures = None;
    index.width = u32::MAX;
    index.height = u32::MAX;
    assert_eq!(Player::memory_needed(&index, Threading::Single, 24 << 20), u64::MAX);
}

fn check_complete_frames(name: &str, cut: &VideoIndex, bytes: &[u8], full: &VideoIndex, path: &std::path::Path) {
    let factor = factor_for(full.width as usize);
    let reference = testkit::reference::frames(path, factor).unwrap();
    let mut player = Player::new(cut, Threading::Single, 64 << 20).unwrap();
    let frames = cut.frame_count() as u32;
    for frame in [0, frames / 3, frames / 2, frames - 1] {
        let (position, sample) = cut.frame(frame).unwrap();
        let range = Player::required_bytes(cut, position);
        let span = Span::new(range.start, Bytes::copy_from_slice(&bytes[range.start as usize..range.end as usize]));
        let picture = player.picture(cut, position, &span, &|| false).unwrap();
        let rgb = media::jpeg::decode_rgb(&media::encode_jpeg(&picture, 90).unwrap()).unwrap();
        let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
        let full_position = full.position_at(sample.offset).unwrap();
        let number = full.sample(full_position).presentation as usize;
        check_frame(&small, &reference, number, 30.0).unwrap_or_else(|reason| panic!("{name} frame {frame}: {reason}"));
    }
}

#[test]
fn truncated_recordings_serve_every_complete_frame() {
    let fragmented = testkit::fixtures::generated_named("fragmented.mp4").unwrap();
    let faststart = testkit::fixtures::generated_named("faststart.mp4").unwrap();
    let fragmented_bytes = std::fs::read(&fragmented.path).unwrap();
    let last_moof = *find(&fragmented_bytes, b"moof").last().unwrap();
    let faststart_bytes = std::fs::read(&faststart.path).unwrap();
    let cases = [
        ("fragment cut in its media data", &fragmented, last_moof.offset + last_moof.size + 300),
        ("fragment cut in its moof", &fragmented, last_moof.offset + 20),
        ("mp4 with its mdat cut short", &faststart, faststart_bytes.len() * 2 / 3),
    ];
    for (name, fixture, cut_at) in cases {
        let bytes = std::fs::read(&fixture.path).unwrap();
        let full = media::probe::index(&MemorySource(bytes.clone()), &Budget::default()).unwrap();
        let cut_bytes = bytes[..cut_at].to_vec();
        let cut = media::probe::index(&MemorySource(cut_bytes.clone()), &Budget::default())
            .unwrap_or_else(|e| panic!("{name}: refused: {e:#}"));
        // Exactly the samples before the first incomplete one (decode order) are kept.
        let complete = full.samples.iter().position(|s| s.end() > cut_at as u64).expect("the cut loses samples");
        assert_eq!(cut.samples.len(), complete, "{name}: complete samples kept");
        assert!(cut.samples.iter().zip(&full.samples).all(|(a, b)| a.offset == b.offset), "{name}: same samples");
        let lost = &full.samples[complete..];
        let promised: Vec<_> = lost.iter().filter(|s| s.offset < cut_at as u64).collect();
        assert!(promised.iter().all(|s| cut.is_truncated_at(s.offset)), "{name}: listed samples cut off are truncated");
        assert!(!cut.is_truncated_at(cut.samples[0].offset));
        check_complete_frames(name, &cut, &cut_bytes, &full, &fixture.path);
    }
}
