//! Queue modes (`fifo`, `lifo`, `latest`), `Cancel`, request ids, shared
//! decoding across sessions and freeing a closed session's work, over real
//! sockets.

mod common;

use common::{fetch_index, metric, scratch_dir, serve_generated, start_local, stock, IndexFrame};
use serde_json::{json, Value};
use testkit::processes::Running;
use testkit::ws::{Answer, Client};

const KEY: &str = "videos/open_gop_bframes.mp4";

fn setup(name: &str) -> (Running, Vec<IndexFrame>) {
    let (server, _) = serve_generated(name, &["open_gop_bframes.mp4"], &[]);
    let (_, index) = fetch_index(&server, KEY).unwrap();
    (server, index)
}

fn frames(index: &[IndexFrame], numbers: impl IntoIterator<Item = usize>, prefix: &str) -> Vec<Value> {
    numbers.into_iter().map(|n| json!({"offset": index[n].offset, "index": format!("{prefix}{n}")})).collect()
}

/// Reads `count` answers; returns (label, error code or "frame") in arrival order.
fn answers(client: &mut Client, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|_| match client.receive_answer().unwrap() {
            Answer::Frame { header, .. } => (header["index"].as_str().unwrap().to_string(), "frame".to_string()),
            Answer::Error(error) => {
                (error["index"].as_str().unwrap().to_string(), error["error"].as_str().unwrap().to_string())
            }
        })
        .collect()
}

fn connect(server: &Running) -> Client {
    let mut client = Client::connect(&server.ws_url()).unwrap();
    assert_eq!(client.set_video(KEY).unwrap()["ok"], true);
    client
}

/// A backlog in a B-frame/open-GOP video: every frame in reverse order, so each
/// costs a decode from its IRAP.
fn backlog(index: &[IndexFrame]) -> Vec<Value> {
    frames(index, (0..index.len()).rev(), "old")
}

#[test]
fn latest_supersedes_the_backlog_and_serves_the_newest() {
    let (server, index) = setup("queue-latest");
    let mut client = connect(&server);
    client.send_json(&json!({"type": "RequestFrames", "frames": backlog(&index)})).unwrap();
    client
        .send_json(&json!({"type": "RequestFrames", "mode": "latest", "frames": frames(&index, [40], "new")}))
        .unwrap();
    let got = answers(&mut client, index.len() + 1);
    let superseded = got.iter().filter(|(_, code)| code == "superseded").count();
    assert!(superseded > index.len() / 2, "most of the backlog is superseded: {superseded}");
    assert!(got.iter().all(|(label, code)| code == "frame" || (code == "superseded" && label.starts_with("old"))));
    assert_eq!(got.last().unwrap(), &("new40".to_string(), "frame".to_string()), "the newest frame is served");
    let labels: std::collections::HashSet<&String> = got.iter().map(|(label, _)| label).collect();
    assert_eq!(labels.len(), index.len() + 1, "every frame answered exactly once");
}

#[test]
fn lifo_serves_the_newest_request_first_and_still_answers_the_old() {
    let (server, index) = setup("queue-lifo");
    let mut client = connect(&server);
    client.send_json(&json!({"type": "RequestFrames", "frames": backlog(&index)})).unwrap();
    client
        .send_json(&json!({"type": "RequestFrames", "mode": "lifo", "frames": frames(&index, [10, 11], "new")}))
        .unwrap();
    let got = answers(&mut client, index.len() + 2);
    assert!(got.iter().all(|(_, code)| code == "frame"), "lifo answers everything: {got:?}");
    let position = |label: &str| got.iter().position(|(l, _)| l == label).unwrap();
    assert!(position("new10") < position("new11"), "a request keeps its own order");
    assert!(position("new11") < got.len() - 10, "the newest request overtakes the queued backlog");
}

#[test]
fn cancel_answers_everything_queued_and_the_session_goes_on() {
    let (server, index) = setup("queue-cancel");
    let mut client = connect(&server);
    client.send_json(&json!({"type": "RequestFrames", "id": 7, "frames": backlog(&index)})).unwrap();
    client.send_json(&json!({"type": "Cancel"})).unwrap();
    let mut cancelled = 0;
    for _ in 0..index.len() {
        let answer = client.receive_answer().unwrap();
        let header = match &answer {
            Answer::Frame { header, .. } | Answer::Error(header) => header,
        };
        assert_eq!(header["request_id"], 7, "request ids are echoed: {header}");
        if let Answer::Error(error) = answer {
            assert_eq!(error["error"], "cancelled");
            cancelled += 1;
        }
    }
    assert!(cancelled > index.len() / 2, "most frames were still queued: {cancelled}");
    client.send_json(&json!({"type": "RequestFrames", "frames": frames(&index, [5], "after")})).unwrap();
    assert_eq!(answers(&mut client, 1), vec![("after5".to_string(), "frame".to_string())]);
    client
        .send_json(&json!({"type": "RequestFrames", "mode": "newest", "frames": frames(&index, [5], "bad")}))
        .unwrap();
    assert_eq!(answers(&mut client, 1), vec![("bad5".to_string(), "invalid_request".to_string())]);
}

#[test]
fn sessions_asking_for_the_same_frames_share_one_decode() {
    let (server, index) = setup("queue-shared");
    let wanted: Vec<usize> = (0..50).collect();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (server, index, wanted) = (&server, &index, &wanted);
            scope.spawn(move || {
                let mut client = connect(server);
                client
                    .send_json(&json!({"type": "RequestFrames", "frames": frames(index, wanted.clone(), "f")}))
                    .unwrap();
                let got = answers(&mut client, wanted.len());
                assert!(got.iter().all(|(_, code)| code == "frame"), "{got:?}");
            });
        }
    });
    let decoded = metric(&server, "bucket_streamer_frames_decoded_total");
    // Frames 0-49 in presentation order need pictures up to a few beyond 49 in
    // decode order (B-frame reordering): never 8 times the work.
    let seeks = metric(&server, "bucket_streamer_seek_pictures_count");
    assert!((50.0..=60.0).contains(&decoded), "8 sessions × 50 frames decoded {decoded} pictures in {seeks} seeks");
    assert!(
        metric(&server, "bucket_streamer_cache_hits_total") + metric(&server, "bucket_streamer_cache_joins_total")
            >= 350.0
    );
}

#[test]
fn closing_a_session_frees_its_queued_work() {
    let (server, index) = setup("queue-disconnect");
    let mut client = connect(&server);
    client.send_json(&json!({"type": "RequestFrames", "frames": backlog(&index)})).unwrap();
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Served to the end, the backlog would be 75 encodes; only the frames
    // already in flight (and a few decoded ahead) may finish after the close.
    let encoded = metric(&server, "bucket_streamer_encode_seconds_count");
    assert!(encoded < 25.0, "work continued after the client left: {encoded} frames encoded");
    // The same backlog served to the end costs an encode per frame not yet cached.
    let mut other = connect(&server);
    other.send_json(&json!({"type": "RequestFrames", "frames": backlog(&index)})).unwrap();
    let got = answers(&mut other, index.len());
    assert!(got.iter().all(|(_, code)| code == "frame"));
    let after = metric(&server, "bucket_streamer_encode_seconds_count");
    assert!(after - encoded >= 50.0, "a full backlog encodes its frames ({encoded} → {after})");
}

#[test]
fn idle_videos_close_and_held_ones_stay_open() {
    let (server, _) =
        serve_generated("queue-idle", &["open_gop_bframes.mp4", "no_bframes.mp4"], &["--channel-idle-secs", "1"]);
    let mut holder = connect(&server); // keeps open_gop_bframes.mp4 set
    fetch_index(&server, "videos/no_bframes.mp4").unwrap();
    assert_eq!(metric(&server, "bucket_streamer_channels"), 2.0);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(metric(&server, "bucket_streamer_channels"), 1.0, "the unused video was closed");
    let index = fetch_index(&server, KEY).unwrap().1;
    holder.send_json(&json!({"type": "RequestFrames", "frames": frames(&index, [9], "h")})).unwrap();
    assert_eq!(answers(&mut holder, 1), vec![("h9".to_string(), "frame".to_string())]);
    fetch_index(&server, "videos/no_bframes.mp4").unwrap();
    assert_eq!(metric(&server, "bucket_streamer_channels"), 2.0, "a closed video opens again on demand");
}

#[test]
fn registered_chunks_are_preloaded_and_served_whole() {
    let (server, index) = setup("queue-chunks");
    let mut client = connect(&server);
    let keyframes: Vec<&IndexFrame> = index.iter().filter(|f| f.keyframe).collect();
    let (first, second) = (keyframes[1], keyframes[2]);
    // Two frames of the second GOP, chosen by the client; the third GOP whole.
    let picked: Vec<&IndexFrame> = index.iter().filter(|f| f.irap_offset == first.offset).take(2).collect();
    let read_before = metric(&server, "bucket_streamer_storage_read_bytes_total");
    client
        .send_json(&json!({"type": "RegisterChunks", "chunks": [
            {"irap_offset": first.offset, "frames": picked.iter().map(|f| f.offset).collect::<Vec<_>>()},
            {"irap_offset": second.offset},
            {"irap_offset": index.iter().find(|f| !f.keyframe).unwrap().offset},
        ]}))
        .unwrap();
    let reply = client.receive_json().unwrap();
    assert_eq!(reply["type"], "ChunksRegistered", "{reply}");
    assert_eq!(reply["registered"], 2);
    assert!(reply["rejected"][0]["error"].as_str().unwrap().contains("not an IRAP"), "{reply}");

    // The preload runs in the background; once done, serving the chunks reads nothing more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let section: Vec<&IndexFrame> = index.iter().filter(|f| f.irap_offset == second.offset).collect();
    let section_end = section.iter().map(|f| f.offset + f.size).max().unwrap();
    while metric(&server, "bucket_streamer_storage_read_bytes_total") - read_before
        < (section_end - first.offset) as f64
    {
        assert!(std::time::Instant::now() < deadline, "the registered chunks were not preloaded");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let read_after_preload = metric(&server, "bucket_streamer_storage_read_bytes_total");

    client.send_json(&json!({"type": "RequestChunk", "irap_offset": first.offset, "id": "c1"})).unwrap();
    for frame in &picked {
        match client.receive_answer().unwrap() {
            Answer::Frame { header, .. } => {
                assert_eq!(
                    (header["index"].as_u64(), header["request_id"].as_str()),
                    (Some(frame.number as u64), Some("c1"))
                )
            }
            Answer::Error(error) => panic!("{error}"),
        }
    }
    client.send_json(&json!({"type": "RequestChunk", "irap_offset": second.offset})).unwrap();
    let mut numbers = Vec::new();
    for _ in &section {
        match client.receive_answer().unwrap() {
            Answer::Frame { header, .. } => numbers.push(header["index"].as_u64().unwrap() as usize),
            Answer::Error(error) => panic!("{error}"),
        }
    }
    let expected: Vec<usize> = section.iter().map(|f| f.number).collect();
    assert_eq!(numbers, expected, "a whole section comes in presentation order");
    assert_eq!(
        metric(&server, "bucket_streamer_storage_read_bytes_total"),
        read_after_preload,
        "all bytes were preloaded"
    );

    client.send_json(&json!({"type": "RequestChunk", "irap_offset": 12345})).unwrap();
    let error = client.receive_json().unwrap();
    assert!(error["type"] == "Error" && error["message"].as_str().unwrap().contains("not an IRAP"), "{error}");
}

/// One session with a long backlog does not starve another: the second
/// session's frame arrives while the first is still far from done.
#[test]
fn a_busy_session_does_not_starve_another() {
    // No frame cache: every frame of the backlog costs a decode and an encode.
    let (server, _) =
        serve_generated("queue-fairness", &["open_gop_bframes.mp4", "no_bframes.mp4"], &["--cache-bytes", "1"]);
    let index = fetch_index(&server, KEY).unwrap().1;
    let other_index = fetch_index(&server, "videos/no_bframes.mp4").unwrap().1;
    let backlog: Vec<Value> =
        (0..4).flat_map(|round| frames(&index, (0..index.len()).rev(), &format!("r{round}-"))).collect();
    let total = backlog.len();
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            let mut client = connect(&server);
            client.send_json(&json!({"type": "RequestFrames", "frames": backlog})).unwrap();
            for _ in 0..total {
                assert!(matches!(client.receive_answer().unwrap(), Answer::Frame { .. }));
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        while served.load(std::sync::atomic::Ordering::SeqCst) < 5 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut other = Client::connect(&server.ws_url()).unwrap();
        assert_eq!(other.set_video("videos/no_bframes.mp4").unwrap()["ok"], true);
        let before = served.load(std::sync::atomic::Ordering::SeqCst);
        other.send_json(&json!({"type": "RequestFrames", "frames": frames(&other_index, [40], "o")})).unwrap();
        assert_eq!(answers(&mut other, 1), vec![("o40".to_string(), "frame".to_string())]);
        let meanwhile = served.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(
            meanwhile < total / 3,
            "the other session waited while {meanwhile} of {total} backlog frames were served"
        );
        busy.join().unwrap();
    });
}

/// Going through registered chunks in order: asking for one fetches the
/// next one's bytes meanwhile, so it is served without another read. The
/// chunks list a few frames each (as an annotation tool sampling a video
/// would), so playback read-ahead does not fetch them anyway.
#[test]
fn requesting_a_chunk_preloads_the_next_one() {
    let Some(video) = testkit::fixtures::shared().unwrap().into_iter().find(|f| f.name == "bbb720-frag.mp4") else {
        eprintln!("note: needs ../shared/media (a video with many GOPs)");
        return;
    };
    let root = scratch_dir("queue-next-chunk");
    stock(&root, std::slice::from_ref(&video));
    let server = start_local(&root, &[]);
    let key = "videos/bbb720-frag.mp4";
    let index = fetch_index(&server, key).unwrap().1;
    let iraps: Vec<u64> = index.iter().filter(|f| f.keyframe).map(|f| f.offset).collect();
    assert!(iraps.len() >= 8, "the video has {} GOPs", iraps.len());
    // Every section's IRAP and its tenth frame.
    let sampled = |irap: u64| -> Vec<u64> {
        let section: Vec<&IndexFrame> = index.iter().filter(|f| f.irap_offset == irap).collect();
        vec![section[0].offset, section[10].offset]
    };
    let read = || metric(&server, "bucket_streamer_storage_read_bytes_total");
    // Background preloads are done when the byte count stops moving.
    let settled = || {
        let mut last = read();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let now = read();
            if now == last {
                return now;
            }
            last = now;
        }
    };

    let mut client = Client::connect(&server.ws_url()).unwrap();
    assert_eq!(client.set_video(key).unwrap()["ok"], true);
    let all: Vec<Value> = iraps.iter().map(|&irap| json!({"irap_offset": irap, "frames": sampled(irap)})).collect();
    client.send_json(&json!({"type": "RegisterChunks", "chunks": all})).unwrap();
    assert_eq!(client.receive_json().unwrap()["registered"], iraps.len());
    settled(); // the first four chunks

    // The last chunk is the one served from the preload, so nothing else is preloaded meanwhile.
    let (this, next) = (iraps[iraps.len() - 2], iraps[iraps.len() - 1]);
    client.send_json(&json!({"type": "RequestChunk", "irap_offset": this})).unwrap();
    assert!(answers_are_frames(&mut client, 2));
    let preloaded = settled();
    client.send_json(&json!({"type": "RequestChunk", "irap_offset": next})).unwrap();
    assert!(answers_are_frames(&mut client, 2));
    assert_eq!(read(), preloaded, "the next chunk's bytes were already fetched");
}

fn answers_are_frames(client: &mut Client, count: usize) -> bool {
    (0..count).all(|_| matches!(client.receive_answer().unwrap(), Answer::Frame { .. }))
}
