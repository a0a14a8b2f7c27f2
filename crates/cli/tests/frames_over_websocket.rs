//! Every fixture shape and every third-party file, served from a local
//! folder over a real WebSocket, frame-accurate against FFmpeg's decode.

mod common;

use common::{scratch_dir, start_local, stock, verify_over_websocket};

/// All frames of short files; a random sample of long or 4K ones.
fn budget(fixture: &testkit::fixtures::Fixture) -> usize {
    if fixture.name.contains("4k") {
        24
    } else if fixture.generated {
        usize::MAX
    } else {
        80
    }
}

#[test]
fn every_fixture_is_frame_accurate_over_websocket() {
    let fixtures = testkit::fixtures::all().unwrap();
    let root = scratch_dir("websocket");
    let videos = stock(&root, &fixtures);
    let server = start_local(&root, &[]);
    for (key, fixture) in &videos {
        let checked = verify_over_websocket(&server, key, fixture, budget(fixture)).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{key}: {checked} frames match FFmpeg");
    }
}

#[test]
fn concurrent_clients_each_get_their_own_frames() {
    let fixtures: Vec<_> = testkit::fixtures::generated()
        .unwrap()
        .into_iter()
        .filter(|f| ["open_gop_bframes.mp4", "main10_bt709.mp4", "annexb.h265"].contains(&f.name.as_str()))
        .collect();
    let root = scratch_dir("concurrent");
    let videos = stock(&root, &fixtures);
    let server = start_local(&root, &[]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|client| {
                let (key, fixture) = &videos[client % videos.len()];
                let server = &server;
                scope.spawn(move || verify_over_websocket(server, key, fixture, 30))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap().unwrap_or_else(|e| panic!("{e:#}"));
        }
    });
}
