//! Every fixture shape and every third-party file, served from a local
//! folder over a real WebSocket, frame-accurate against FFmpeg's decode.

mod common;

use common::{metric, scratch_dir, start_local, stock, verify_over_websocket};

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
    // Lone frames of streams without wavefronts (bbb's) were decoded with
    // frame threads over the idle cores (widened) and checked above.
    if videos.iter().any(|(_, fixture)| fixture.name.starts_with("bbb")) {
        assert!(metric(&server, "bucket_streamer_widened_seeks_total") > 0.0, "no widened seek was checked");
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

/// One WebSocket, several videos: frames name their video (as the web
/// client's grid does), come back labelled with it and match FFmpeg's decode
/// of their own file; a video that cannot be opened fails only its frames.
#[test]
fn one_session_serves_frames_of_several_videos() {
    use common::{fetch_index, small_rgb, MIN_PSNR};
    use serde_json::json;
    use testkit::ws::{Answer, Client};

    let fixtures: Vec<_> = ["open_gop_bframes.mp4", "main10_bt709.mp4"]
        .iter()
        .map(|name| testkit::fixtures::generated_named(name).unwrap())
        .collect();
    let root = scratch_dir("several-videos");
    let videos = stock(&root, &fixtures);
    let server = start_local(&root, &[]);
    let mut client = Client::connect(&server.ws_url()).unwrap();
    assert_eq!(client.set_video(&videos[0].0).unwrap()["ok"], true);

    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut references = Vec::new(); // (downscale factor, FFmpeg's frames) per video
    for (clip, (key, fixture)) in videos.iter().enumerate() {
        let index = fetch_index(&server, key).unwrap().1;
        let factor = testkit::image::factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
        references.push((factor, testkit::reference::frames(&fixture.path, factor).unwrap()));
        for number in [5usize, 40, 17] {
            frames.push(json!({"video": key, "offset": index[number].offset, "index": {"clip": clip, "n": number}}));
            expected.push((key.clone(), clip, number));
        }
    }
    frames.insert(3, json!({"video": "videos/missing.mp4", "offset": 0, "index": "missing"}));
    client.send_json(&json!({"type": "RequestFrames", "mode": "latest", "frames": frames})).unwrap();

    let mut expected = expected.into_iter();
    for answer in 0..frames.len() {
        match client.receive_answer().unwrap() {
            Answer::Frame { header, jpeg } => {
                let (key, clip, number) = expected.next().unwrap();
                assert_eq!(
                    (header["video"].as_str(), header["index"]["n"].as_u64()),
                    (Some(&*key), Some(number as u64))
                );
                let (factor, reference) = &references[clip];
                let small = small_rgb(&jpeg, *factor).unwrap();
                testkit::image::check_frame(&small, reference, number, MIN_PSNR)
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            Answer::Error(error) => {
                assert_eq!(answer, 3, "only the missing video's frame fails: {error}");
                assert_eq!(
                    (error["error"].as_str(), error["video"].as_str()),
                    (Some("not_found"), Some("videos/missing.mp4"))
                );
            }
        }
    }
    // Frames without a video still come from the session's own.
    let index = fetch_index(&server, &videos[0].0).unwrap().1;
    client.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": index[3].offset, "index": 3}]})).unwrap();
    match client.receive_answer().unwrap() {
        Answer::Frame { header, .. } => assert!(header.get("video").is_none(), "{header}"),
        Answer::Error(error) => panic!("{error}"),
    }
}
