//! Every frame the player decodes, requested in random order, is the frame
//! FFmpeg's own decode of the file shows at that position (pixel comparison
//! after JPEG encoding), for every fixture shape.

use bytes::Bytes;
use media::{FileSource, Player, RangeRead, Span, Threading};
use rand::seq::SliceRandom;
use testkit::image::{box_downscale, check_frame, factor_for};

/// Frames checked per file; all of them for short files.
const MAX_FRAMES_PER_FILE: usize = 60;

fn check(fixture: &testkit::fixtures::Fixture) {
    let source = FileSource::open(&fixture.path).unwrap();
    let index = media::probe::index(&source, &Default::default()).unwrap();
    let factor = factor_for(index.width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    assert_eq!(reference.len(), index.frame_count(), "{}: frame count", fixture.name);
    let mut player = Player::new(&index, Threading::Single, 64 << 20).unwrap();
    let mut order: Vec<u32> = (0..index.frame_count() as u32).collect();
    order.shuffle(&mut rand::rng());
    order.truncate(MAX_FRAMES_PER_FILE);
    for frame in order {
        let (position, _) = index.frame(frame).unwrap();
        let range = Player::required_bytes(&index, position);
        let bytes = source.read_range(range.start, range.end - range.start).unwrap();
        let span = Span::new(range.start, Bytes::from(bytes));
        let picture = player
            .picture(&index, position, &span, &|| false)
            .unwrap_or_else(|e| panic!("{} frame {frame}: {e}", fixture.name));
        let jpeg = media::encode_jpeg(&picture, 90).unwrap();
        let rgb = media::jpeg::decode_rgb(&jpeg).unwrap();
        let small = box_downscale(&rgb.pixels, rgb.width, rgb.height, factor);
        if let Err(reason) = check_frame(&small, &reference, frame as usize, 30.0) {
            panic!("{}: {reason}", fixture.name);
        }
    }
}

#[test]
fn generated_fixtures_decode_frame_accurately() {
    for fixture in testkit::fixtures::generated().unwrap() {
        check(&fixture);
    }
}

#[test]
fn shared_media_decodes_frame_accurately() {
    for fixture in testkit::fixtures::shared().unwrap() {
        check(&fixture);
    }
}
