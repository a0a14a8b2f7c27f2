//! The index of every fixture agrees with `ffprobe -show_packets`: same
//! sample offsets, sizes and keyframes in decode order, same presentation
//! order, and the same samples hidden by an edit list (FFmpeg flags them
//! `D`, discard: decoded as references, never shown), and the same
//! wavefront flag as FFmpeg's `trace_headers` reads in the PPS.

use media::{FileSource, VideoIndex};

/// Checks the fixture; whether it decodes in wavefronts.
fn check(fixture: &testkit::fixtures::Fixture) -> bool {
    let source = FileSource::open(&fixture.path).unwrap();
    let index: VideoIndex =
        media::probe::index(&source, &Default::default()).unwrap_or_else(|e| panic!("{}: {e:#}", fixture.name));
    let packets = testkit::reference::packets(&fixture.path).unwrap();
    assert_eq!(index.samples.len(), packets.len(), "{}: sample count", fixture.name);
    for (position, (sample, packet)) in index.samples.iter().zip(&packets).enumerate() {
        assert_eq!(sample.offset, packet.pos, "{} sample {position}: offset", fixture.name);
        assert_eq!(u64::from(sample.size), packet.size, "{} sample {position}: size", fixture.name);
        assert_eq!(sample.keyframe, packet.keyframe(), "{} sample {position}: keyframe", fixture.name);
        assert_eq!(sample.shown, !packet.flags.contains('D'), "{} sample {position}: shown", fixture.name);
    }
    // Presentation order: where ffprobe knows pts, sorting by it must give ours.
    if packets.iter().all(|p| p.pts.is_some()) {
        let mut theirs: Vec<usize> = (0..packets.len()).filter(|&i| !packets[i].flags.contains('D')).collect();
        theirs.sort_by_key(|&i| (packets[i].pts, i));
        let ours: Vec<usize> = index.presentation_order.iter().map(|&p| p as usize).collect();
        assert_eq!(ours, theirs, "{}: presentation order", fixture.name);
    }
    let info = testkit::reference::stream_info(&fixture.path).unwrap();
    assert_eq!((index.width, index.height), (info.width, info.height), "{}: dimensions", fixture.name);
    let wavefront = testkit::reference::wavefront(&fixture.path).unwrap();
    assert_eq!(index.decoder.wavefront, wavefront, "{}: wavefront", fixture.name);
    wavefront
}

#[test]
fn generated_fixtures_match_ffprobe() {
    let wavefront: Vec<bool> = testkit::fixtures::generated().unwrap().iter().map(check).collect();
    assert!(wavefront.contains(&true), "x265's default streams are wavefront ones");
}

#[test]
fn shared_media_matches_ffprobe() {
    let wavefront: Vec<bool> = testkit::fixtures::shared().unwrap().iter().map(check).collect();
    assert!(wavefront.contains(&false), "the shared encodes are not wavefront ones");
}
