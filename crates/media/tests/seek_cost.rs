//! What a seek costs: the player feeds only the pictures its target needs.
//! Every frame of x265 streams (defaults with open GOPs and B-frames, a
//! temporal sub-layer for non-reference B-frames, a deep B-pyramid) is
//! asked for as a fresh seek (a new player, the span ending at the frame); each must still be the frame FFmpeg decodes there,
//! and the pictures decoded plus those skipped never exceed what a seek
//! from the frame's decode start would feed. Streams with sub-layer
//! non-reference pictures at their top sub-layer must skip some.

use bytes::Bytes;
use media::{FileSource, Player, RangeRead, Span, Threading};
use testkit::image::{box_downscale, check_frame, factor_for};

/// (fixture, whether seeks must skip pictures)
const STREAMS: [(&str, bool); 4] = [
    ("open_gop_bframes.mp4", true),
    ("closed_gop_bframes.mp4", true),
    ("temporal_layers.mp4", true),
    ("b_pyramid.mp4", true),
];

#[test]
fn seeks_decode_only_what_the_frame_needs_and_stay_exact() {
    for (name, must_skip) in STREAMS {
        let fixture = testkit::fixtures::generated_named(name).unwrap();
        let source = FileSource::open(&fixture.path).unwrap();
        let index = media::probe::index(&source, &Default::default()).unwrap();
        let factor = factor_for(index.width as usize);
        let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
        let (mut fed_without_skipping, mut decoded, mut skipped) = (0u64, 0u64, 0u64);
        for frame in 0..index.frame_count() as u32 {
            let (position, _) = index.frame(frame).unwrap();
            let range = Player::required_bytes(&index, position);
            let bytes = source.read_range(range.start, range.end - range.start).unwrap();
            let span = Span::new(range.start, Bytes::from(bytes));
            // A fresh player: nothing kept from the frame before, a true seek.
            let mut player = Player::new(&index, Threading::Single, 64 << 20).unwrap();
            let picture = player.picture(&index, position, &span, &|| false).unwrap();
            let start = index.sample(position).decode_from.min(position);
            fed_without_skipping += u64::from(position - start + 1);
            decoded += player.pictures_decoded();
            skipped += player.pictures_skipped();
            let jpeg = media::encode_jpeg(&picture, 90).unwrap();
            let rgb = media::jpeg::decode_rgb(&jpeg).unwrap();
            let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
            if let Err(reason) = check_frame(&small, &reference, frame as usize, 30.0) {
                panic!("{name}: {reason}");
            }
        }
        eprintln!("{name}: {decoded} decoded, {skipped} skipped, {fed_without_skipping} samples from decode starts");
        assert!(decoded + skipped <= fed_without_skipping, "{name}: more work than a plain seek");
        if must_skip {
            assert!(skipped > 0, "{name}: no picture skipped");
            assert!(
                decoded < fed_without_skipping * 9 / 10,
                "{name}: seeks decoded {decoded} of {fed_without_skipping}"
            );
        }
    }
}

/// A seek stopped between samples (a time slice of the decode pool) and
/// taken up again for the same frame goes on leaving out what nothing
/// references: it costs what an uninterrupted seek costs, and stays exact.
#[test]
fn a_seek_resumed_after_each_sample_skips_what_an_uninterrupted_one_skips() {
    let fixture = testkit::fixtures::generated_named("temporal_layers.mp4").unwrap();
    let source = FileSource::open(&fixture.path).unwrap();
    let index = media::probe::index(&source, &Default::default()).unwrap();
    let last_gop_start = (0..index.samples.len() as u32).rev().find(|&p| index.sample(p).keyframe).unwrap();
    let position = (last_gop_start..index.samples.len() as u32).max_by_key(|&p| index.sample(p).pts).unwrap();
    let range = Player::required_bytes(&index, position);
    let span = Span::new(range.start, Bytes::from(source.read_range(range.start, range.end - range.start).unwrap()));

    let mut whole = Player::new(&index, Threading::Single, 64 << 20).unwrap();
    let expected = whole.picture(&index, position, &span, &|| false).unwrap();

    let mut sliced = Player::new(&index, Threading::Single, 64 << 20).unwrap();
    let asks = std::cell::Cell::new(0u32);
    let every_other_ask = || {
        asks.set(asks.get() + 1);
        asks.get().is_multiple_of(2)
    };
    let mut resumes = 0;
    let picture = loop {
        match sliced.picture(&index, position, &span, &every_other_ask) {
            Ok(picture) => break picture,
            Err(media::DecodeError::Cancelled) => resumes += 1,
            Err(other) => panic!("{other}"),
        }
    };
    assert!(resumes > 3, "the seek was not interrupted");
    assert!(whole.pictures_skipped() > 0, "the fixture has nothing to skip at its end");
    assert_eq!(sliced.seeks(), 1, "a resumed seek started over");
    assert_eq!(
        (sliced.pictures_decoded(), sliced.pictures_skipped()),
        (whole.pictures_decoded(), whole.pictures_skipped())
    );
    assert_eq!(media::encode_jpeg(&picture, 90).unwrap(), media::encode_jpeg(&expected, 90).unwrap());
}

/// A frame the player has already decoded past (its picture output and no
/// longer kept) costs a seek from its decode start, not a run to the end of
/// the bytes in hand looking for it first. This happened when a batch's
/// frames reached the decoder out of order: a 4K job for frame 0 decoded 34
/// pictures before starting over.
#[test]
fn a_frame_already_passed_costs_a_seek_not_a_run_to_the_end() {
    let fixture = testkit::fixtures::generated_named("no_bframes.mp4").unwrap();
    let source = FileSource::open(&fixture.path).unwrap();
    let index = media::probe::index(&source, &Default::default()).unwrap();
    let factor = factor_for(index.width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    let gop_end = (1..index.samples.len() as u32).find(|&p| index.sample(p).keyframe).unwrap() - 1;
    let range = Player::required_bytes(&index, gop_end);
    let span = Span::new(range.start, Bytes::from(source.read_range(range.start, range.end - range.start).unwrap()));
    // Keeps as few pictures as it may (4): frame 2 is gone once frame 10 is out.
    let mut player = Player::new(&index, Threading::Single, 0).unwrap();
    let (ahead, _) = index.frame(10).unwrap();
    player.picture_among_neighbours(&index, ahead, &span, &|| false).unwrap();
    let before = player.pictures_decoded();
    let (behind, _) = index.frame(2).unwrap();
    assert!(!player.continues_to(&index, behind), "a player past the frame counts as positioned for it");
    let picture = player.picture_among_neighbours(&index, behind, &span, &|| false).unwrap();
    let start = index.sample(behind).decode_from.min(behind);
    assert_eq!(player.pictures_decoded() - before, u64::from(behind - start + 1), "decoded more than a seek");
    assert_eq!(player.seeks(), 2);
    let rgb = media::jpeg::decode_rgb(&media::encode_jpeg(&picture, 90).unwrap()).unwrap();
    let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
    check_frame(&small, &reference, 2, 30.0).unwrap();
}
