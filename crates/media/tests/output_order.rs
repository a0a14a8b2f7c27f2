//! Pictures come out as soon as they are decoded (`output_order.rs`): a
//! seek decodes nothing after its target, and playback stays exact when a
//! stream repeats its SPS in the middle of a run, which libavcodec would take
//! for a new sequence if only the extradata's SPS had been rewritten.

use bytes::Bytes;
use media::{FileSource, MemorySource, Player, RangeRead, Seeks, Span, Threading};
use testkit::image::{box_downscale, check_frame, factor_for};

fn check(picture: &media::Picture, reference: &[testkit::image::SmallImage], frame: u32, factor: usize) {
    let jpeg = media::encode_jpeg(picture, 90).unwrap();
    let rgb = media::jpeg::decode_rgb(&jpeg).unwrap();
    let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
    if let Err(reason) = check_frame(&small, reference, frame as usize, 30.0) {
        panic!("{reason}");
    }
}

/// The target comes out as soon as it is decoded: with the rest of the
/// stream at hand (as the server has a GOP's bytes), a seek decodes nothing
/// after its target in decoding order, where the stream's own output order
/// (`Seeks::Plain`) would hold a picture back until later ones were decoded.
#[test]
fn a_seek_decodes_nothing_after_its_target() {
    let fixture = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
    let source = FileSource::open(&fixture.path).unwrap();
    let index = media::probe::index(&source, &Default::default()).unwrap();
    let factor = factor_for(index.width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    let whole = Span::new(0, Bytes::from(source.read_range(0, source.size()).unwrap()));
    let mut plain_after = 0u64;
    for frame in 0..index.frame_count() as u32 {
        let (position, _) = index.frame(frame).unwrap();
        let up_to_target = u64::from(position - index.sample(position).decode_from.min(position) + 1);
        let mut lean = Player::new(&index, Threading::Single, 64 << 20, Seeks::Lean).unwrap();
        let picture = lean.picture(&index, position, &whole, &|| false).unwrap();
        let fed = lean.pictures_decoded() + lean.pictures_skipped();
        assert!(fed <= up_to_target, "frame {frame}: {fed} pictures fed, {up_to_target} up to the target");
        check(&picture, &reference, frame, factor);
        let mut plain = Player::new(&index, Threading::Single, 64 << 20, Seeks::Plain).unwrap();
        plain.picture(&index, position, &whole, &|| false).unwrap();
        plain_after += plain.pictures_decoded().saturating_sub(up_to_target);
    }
    assert!(plain_after > 0, "the stream's output order held no picture back: the fixture shows nothing");
    eprintln!("pictures out before the target after it in decoding order: plain {plain_after}, lean none");
}

/// An Annex-B stream with open GOPs whose parameter sets come before its
/// first and third keyframes only. A fresh player starts at the second
/// keyframe (the decoder has the extradata's SPS) and plays to the end in one
/// run, meeting the repeated SPS in the middle of it: every frame must still
/// be FFmpeg's, the leading pictures after the third keyframe too, whose
/// references come before it.
#[test]
fn an_sps_repeated_in_the_middle_of_a_run_keeps_playback_exact() {
    let fixture = testkit::fixtures::generated_named("annexb.h265").unwrap();
    let original = std::fs::read(&fixture.path).unwrap();
    let stream = without_parameter_sets_before_keyframe(&original, 1);
    let source = MemorySource(stream.clone());
    let index = media::probe::index(&source, &Default::default()).unwrap();
    let factor = factor_for(index.width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    assert_eq!(reference.len(), index.frame_count());
    let keyframes: Vec<u32> = (0..index.samples.len() as u32).filter(|&p| index.sample(p).keyframe).collect();
    assert!(keyframes.len() >= 3, "the fixture has {} keyframes", keyframes.len());
    let second = index.sample(keyframes[1]).pts;
    let whole = Span::new(0, Bytes::from(stream));
    let mut player = Player::new(&index, Threading::Single, 64 << 20, Seeks::Lean).unwrap();
    let mut played = 0;
    for frame in 0..index.frame_count() as u32 {
        let (position, _) = index.frame(frame).unwrap();
        if index.sample(position).pts < second {
            continue;
        }
        let picture = player.picture_among_neighbours(&index, position, &whole, &|| false).unwrap();
        check(&picture, &reference, frame, factor);
        played += 1;
    }
    assert!(played > 24, "{played} frames played");
    assert_eq!(player.seeks(), 1, "playback was not one run");
}

/// `stream` (Annex-B, parameter sets before every keyframe) without the VPS,
/// SPS and PPS before keyframe number `which` (0 is the first).
fn without_parameter_sets_before_keyframe(stream: &[u8], which: usize) -> Vec<u8> {
    let starts: Vec<usize> = (0..stream.len().saturating_sub(3)).filter(|&i| stream[i..i + 3] == [0, 0, 1]).collect();
    let kind = |start: usize| (stream[start + 3] >> 1) & 0x3f;
    let (mut out, mut keyframes_seen) = (stream[..starts[0]].to_vec(), 0);
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(stream.len());
        if (16..=23).contains(&kind(start)) && stream[start + 5] & 0x80 != 0 {
            keyframes_seen += 1;
        }
        let parameter_set = (32..=34).contains(&kind(start));
        if !(parameter_set && keyframes_seen == which) {
            out.extend_from_slice(&stream[start..end]);
        }
    }
    assert!(out.len() < stream.len(), "no parameter set removed");
    out
}

/// Played in presentation order, every picture is decoded once in one run,
/// with as few pictures kept as the player ever keeps: pictures that come
/// out before their turn (a P ahead of its B-frames, up to the stream's
/// reorder depth) are kept until asked for, not dropped as the oldest.
#[test]
fn playback_decodes_every_picture_once() {
    for name in ["open_gop_bframes.mp4", "b_pyramid.mp4"] {
        let fixture = testkit::fixtures::generated_named(name).unwrap();
        let source = FileSource::open(&fixture.path).unwrap();
        let index = media::probe::index(&source, &Default::default()).unwrap();
        let whole = Span::new(0, Bytes::from(source.read_range(0, source.size()).unwrap()));
        let mut player = Player::new(&index, Threading::Single, 0, Seeks::Lean).unwrap();
        for frame in 0..index.frame_count() as u32 {
            let (position, _) = index.frame(frame).unwrap();
            player.picture_among_neighbours(&index, position, &whole, &|| false).unwrap();
        }
        assert_eq!(player.seeks(), 1, "{name}: playback started over");
        assert_eq!(player.pictures_decoded(), index.frame_count() as u64, "{name}: pictures decoded twice");
    }
}
