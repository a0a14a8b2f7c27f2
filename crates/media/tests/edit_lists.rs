//! Edit lists with several entries: a file whose edit list shows two pieces
//! of the video (frames 5-14, then frames 40-54) has exactly those 25
//! frames, in that order, each the picture FFmpeg shows at that position;
//! the samples between are decoded only as references.

mod support;

use bytes::Bytes;
use media::{Budget, FileSource, Player, Span, Threading};
use mp4_atom::{Edts, Elst, ElstEntry};
use support::{video_trak, with_moov};
use testkit::image::{box_downscale, check_frame, factor_for};

#[test]
fn several_edits_show_their_pieces_in_order() {
    let fixture = testkit::fixtures::generated_named("closed_gop_bframes.mp4").unwrap(); // moov at the end
    let base = std::fs::read(&fixture.path).unwrap();
    let edited = with_moov(&base, |moov| {
        let movie = u64::from(moov.mvhd.timescale);
        let trak = video_trak(moov);
        let media = u64::from(trak.mdia.mdhd.timescale);
        // The muxer's own edit list starts at the first frame's composition time.
        let start = trak.edts.as_ref().and_then(|e| e.elst.as_ref()).and_then(|l| l.entries[0].media_time).unwrap_or(0);
        let frame = media / 25;
        let piece = |first: u64, frames: u64| ElstEntry {
            segment_duration: frames * movie / 25,
            media_time: Some(start + first * frame),
            media_rate: 1.into(),
        };
        trak.edts = Some(Edts { elst: Some(Elst { entries: vec![piece(5, 10), piece(40, 15)] }) });
    });
    let path = testkit::fixtures::fixtures_dir().join("edit_list_two_pieces.mp4");
    let temporary = testkit::unique_temporary(&testkit::fixtures::fixtures_dir(), "edit_list_two_pieces.mp4");
    std::fs::write(&temporary, &edited).unwrap();
    std::fs::rename(&temporary, &path).unwrap();

    let source = FileSource::open(&path).unwrap();
    let index = media::probe::index(&source, &Budget::default()).unwrap();
    let factor = factor_for(index.width as usize);
    let reference = testkit::reference::frames(&path, factor).unwrap();
    assert_eq!(index.frame_count(), 25, "two pieces of 10 and 15 frames");
    assert_eq!(reference.len(), 25, "FFmpeg shows the same 25 frames");
    let hidden = index.samples.iter().filter(|s| !s.shown).count();
    assert_eq!(hidden, index.samples.len() - 25);
    let mut player = Player::new(&index, Threading::Single, 64 << 20).unwrap();
    for number in 0..25 {
        let (position, _) = index.frame(number).unwrap();
        let range = Player::required_bytes(&index, position);
        let span = Span::new(range.start, Bytes::copy_from_slice(&edited[range.start as usize..range.end as usize]));
        let picture = player.picture(&index, position, &span, &|| false).unwrap();
        let rgb = media::jpeg::decode_rgb(&media::encode_jpeg(&picture, 90).unwrap()).unwrap();
        let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
        check_frame(&small, &reference, number as usize, 30.0)
            .unwrap_or_else(|reason| panic!("frame {number}: {reason}"));
    }
    // Frame times follow the edit list: the second piece continues where the first ended.
    let time = |n: u32| index.frame(n).unwrap().1.time;
    let step = time(1) - time(0);
    assert_eq!(time(10) - time(9), step, "no gap between the pieces");
}
