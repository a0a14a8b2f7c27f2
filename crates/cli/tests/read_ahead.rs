//! Playback reads the next group of pictures while the current one plays:
//! a client asking one frame at a time, a few frames into the first GOP,
//! already has the second GOP's bytes fetched (more than the 16 samples a
//! request reads past its own GOP), and plays both GOPs to the end without
//! one more storage request.

mod common;

use common::{fetch_index, metric, serve_generated};
use serde_json::json;
use testkit::ws::{Answer, Client};

const KEY: &str = "videos/b_pyramid.mp4";

fn play(client: &mut Client, frames: &[&common::IndexFrame]) {
    for frame in frames {
        let request = json!({"type": "RequestFrames", "frames": [{"offset": frame.offset, "index": frame.number}]});
        client.send_json(&request).unwrap();
        match client.receive_answer().unwrap() {
            Answer::Frame { header, .. } => assert_eq!(header["index"], frame.number),
            Answer::Error(error) => panic!("frame {}: {error}", frame.number),
        }
    }
}

/// Storage requests once none has been made for a while.
fn settled_storage_requests(server: &testkit::processes::Running) -> f64 {
    let mut last = metric(server, "bucket_streamer_storage_requests_total");
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = metric(server, "bucket_streamer_storage_requests_total");
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("storage requests never settled");
}

#[test]
fn a_few_frames_into_a_gop_the_next_gop_is_already_fetched() {
    let (server, _) = serve_generated("read-ahead", &["b_pyramid.mp4"], &[]);
    let (_, index) = fetch_index(&server, KEY).unwrap();
    let first_irap = index[0].irap_offset;
    let (first_gop, rest): (Vec<_>, Vec<_>) = index.iter().partition(|frame| frame.irap_offset == first_irap);
    assert!(rest.len() > 20, "the fixture's second GOP is longer than what a request reads past its own");
    let mut client = Client::connect(&server.ws_url()).unwrap();
    assert_eq!(client.set_video(KEY).unwrap()["ok"], true);

    // A few frames in: far from the GOP's end, where prefetching the next frames would read on anyway.
    play(&mut client, &first_gop[..6]);
    let before = settled_storage_requests(&server);
    play(&mut client, &first_gop[6..]);
    play(&mut client, &rest);
    assert_eq!(
        metric(&server, "bucket_streamer_storage_requests_total"),
        before,
        "the rest of the first GOP or the second GOP was read when played, not ahead"
    );
}
