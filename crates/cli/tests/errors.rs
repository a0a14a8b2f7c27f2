//! Every kind of bad input gets its own clear answer, and the same session
//! then still serves a good frame. Bad configuration stops the binary with a
//! one-line reason.

mod common;

use common::{binary, fetch_index, scratch_dir, start_local, stock, IndexFrame};
use serde_json::{json, Value};
use std::process::Command;
use testkit::processes::Running;
use testkit::ws::{Answer, Client};

const GOOD: &str = "videos/open_gop_bframes.mp4";

struct Setup {
    server: Running,
    index: Vec<IndexFrame>,
    root: std::path::PathBuf,
}

fn setup(name: &str) -> Setup {
    let fixtures = vec![
        testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap(),
        testkit::fixtures::generated_named("faststart.mp4").unwrap(),
        testkit::fixtures::generated_named("closed_gop_bframes.mp4").unwrap(),
        testkit::fixtures::generated_named("h264.mp4").unwrap(),
    ];
    let root = scratch_dir(name);
    stock(&root, &fixtures);
    let videos = root.join("videos");
    std::fs::write(videos.join("notes.mp4"), "these are not the frames you are looking for\n".repeat(50)).unwrap();
    std::fs::write(videos.join("noise.h265"), (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>())
        .unwrap();
    let faststart = std::fs::read(videos.join("faststart.mp4")).unwrap();
    std::fs::write(videos.join("truncated_front.mp4"), &faststart[..faststart.len() / 2]).unwrap();
    let moov_end = std::fs::read(videos.join("closed_gop_bframes.mp4")).unwrap();
    std::fs::write(videos.join("truncated_end.mp4"), &moov_end[..moov_end.len() * 2 / 3]).unwrap();
    std::fs::write(root.parent().unwrap().join("outside.mp4"), &faststart).unwrap();
    std::os::unix::fs::symlink(root.parent().unwrap().join("outside.mp4"), videos.join("escape.mp4")).unwrap();
    let elsewhere = root.parent().unwrap().join(format!("{name}-elsewhere"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("secret.mp4"), &faststart).unwrap();
    std::os::unix::fs::symlink(&elsewhere, videos.join("linked_folder")).unwrap();
    let server = start_local(&root, &[]);
    let (_, index) = fetch_index(&server, GOOD).unwrap();
    Setup { server, index, root }
}

/// After any error, the session must still serve a good frame.
fn still_serves(client: &mut Client, setup: &Setup) {
    let set = client.set_video(GOOD).unwrap();
    assert_eq!(set["ok"], true, "{set}");
    let frame = &setup.index[40];
    client.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": frame.offset, "index": 40}]})).unwrap();
    match client.receive_answer().unwrap() {
        Answer::Frame { header, jpeg } => {
            assert_eq!(header["index"], 40);
            assert!(jpeg.starts_with(&[0xff, 0xd8]));
        }
        Answer::Error(error) => panic!("good frame failed after an error: {error}"),
    }
}

fn error_message(client: &mut Client) -> String {
    let reply = client.receive_json().unwrap();
    assert_eq!(reply["type"], "Error", "{reply}");
    reply["message"].as_str().unwrap().to_string()
}

fn frame_error(client: &mut Client, request: Value) -> Value {
    client.send_json(&request).unwrap();
    match client.receive_answer().unwrap() {
        Answer::Error(error) => error,
        Answer::Frame { header, .. } => panic!("expected FrameError, got {header}"),
    }
}

#[test]
fn malformed_and_unknown_messages_get_error() {
    let setup = setup("errors-messages");
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    client.send_text("{not json").unwrap();
    assert!(error_message(&mut client).starts_with("malformed message"));
    client.send_text(r#"{"type":"Dance","steps":3}"#).unwrap();
    assert_eq!(error_message(&mut client), "unknown message type: Dance");
    client.send_text(r#"{"path":"x.mp4"}"#).unwrap();
    assert!(error_message(&mut client).contains("type"));
    client.send_text(r#"{"type":"RequestFrames","frames":"all"}"#).unwrap();
    assert!(error_message(&mut client).contains("frames"));
    still_serves(&mut client, &setup);
}

#[test]
fn request_before_set_video_answers_every_frame() {
    let setup = setup("errors-no-video");
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    let frames: Vec<Value> = (0..3).map(|i| json!({"offset": setup.index[i].offset, "index": i})).collect();
    client.send_json(&json!({"type": "RequestFrames", "frames": frames})).unwrap();
    for i in 0..3 {
        let Answer::Error(error) = client.receive_answer().unwrap() else { panic!("expected FrameError") };
        assert_eq!((error["index"].as_u64(), error["error"].as_str()), (Some(i), Some("no_video")), "{error}");
    }
    still_serves(&mut client, &setup);
}

#[test]
fn videos_that_cannot_be_opened_say_why() {
    let setup = setup("errors-open");
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    let cases = [
        ("videos/missing.mp4", "Video not found: videos/missing.mp4"),
        ("videos/notes.mp4", "not a video this server can read"),
        ("videos/noise.h265", "not a playable video"),
        ("videos/truncated_end.mp4", "truncated"),
        ("videos/h264.mp4", "unsupported codec"),
        ("../outside.mp4", "'..' segments are not allowed"),
        ("videos/../../outside.mp4", "'..' segments are not allowed"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("videos/escape.mp4", "outside the storage root"),
        ("", "empty"),
    ];
    for (path, expected) in cases {
        // The same refusal for the video named in the URL (`/ws?video=`), as the session's first message.
        let mut routed = Client::connect(&format!("{}?video={path}", setup.server.ws_url())).unwrap();
        let reply = routed.receive_json().unwrap();
        assert_eq!((reply["type"].as_str(), reply["ok"].as_bool()), (Some("VideoSet"), Some(false)), "{path}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains(expected), "{path} in the URL: {reply}");
        still_serves(&mut routed, &setup);
        let reply = client.set_video(path).unwrap();
        assert_eq!(reply["type"], "VideoSet", "{reply}");
        assert_eq!(reply["ok"], false, "{path}: {reply}");
        assert_eq!(reply["path"], path);
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(expected), "{path}: error {error:?} should mention {expected:?}");
        // A failed SetVideo leaves no video set.
        let answer = frame_error(&mut client, json!({"type": "RequestFrames", "frames": [{"offset": 44, "index": 0}]}));
        assert_eq!(answer["error"], "no_video");
        still_serves(&mut client, &setup);
    }
    // The link leads to a playable video: it is refused for where it leads, not for what it is.
    let outside = start_local(setup.root.parent().unwrap(), &[]);
    let mut direct = Client::connect(&outside.ws_url()).unwrap();
    assert_eq!(direct.set_video("outside.mp4").unwrap()["ok"], true, "the link's target is a good video");
}

#[test]
fn listings_stay_inside_the_root() {
    let setup = setup("errors-listing");
    let listing = testkit::processes::http_get(setup.server.port, "/api/v1/videos").unwrap().json().unwrap();
    let paths: Vec<&str> = listing["videos"].as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&GOOD), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains("linked_folder") || p.contains("escape")),
        "links out of the root: {paths:?}"
    );
    let reply = Client::connect(&setup.server.ws_url()).unwrap().set_video("videos/linked_folder/secret.mp4").unwrap();
    assert_eq!(reply["ok"], false, "{reply}");
    // The index names a local video as the client did, never by its place on the server.
    let (index_json, _) = fetch_index(&setup.server, GOOD).unwrap();
    assert_eq!(index_json["video_url"], GOOD);
}

#[test]
fn a_truncated_recording_serves_its_complete_frames() {
    let setup = setup("errors-truncated");
    let (_, whole) = fetch_index(&setup.server, "videos/faststart.mp4").unwrap();
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    let set = client.set_video("videos/truncated_front.mp4").unwrap();
    assert_eq!(set["ok"], true, "{set}");
    let kept = set["frame_count"].as_u64().unwrap() as usize;
    assert!(kept > 0 && kept < whole.len(), "{kept} of {} frames kept", whole.len());
    let (_, index) = fetch_index(&setup.server, "videos/truncated_front.mp4").unwrap();
    let first_lost = whole.iter().find(|f| !index.iter().any(|kept| kept.offset == f.offset)).unwrap();
    let frames = json!([{"offset": index[kept - 1].offset, "index": "last kept"}, {"offset": first_lost.offset, "index": "lost"}]);
    client.send_json(&json!({"type": "RequestFrames", "frames": frames})).unwrap();
    assert!(matches!(client.receive_answer().unwrap(), Answer::Frame { header, .. } if header["index"] == "last kept"));
    match client.receive_answer().unwrap() {
        Answer::Error(error) => assert_eq!(error["error"], "truncated", "{error}"),
        Answer::Frame { header, .. } => panic!("a frame past the cut was served: {header}"),
    }
    still_serves(&mut client, &setup);
}

#[test]
fn offsets_that_name_no_frame_get_frame_error() {
    let setup = setup("errors-offsets");
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    assert_eq!(client.set_video(GOOD).unwrap()["ok"], true);
    let index = &setup.index;
    let delta = index.iter().find(|f| !f.keyframe && f.irap_offset == index[0].irap_offset).unwrap();
    let keyframes: Vec<&IndexFrame> = index.iter().filter(|f| f.keyframe).collect();
    let object_size = std::fs::metadata(setup.root.join(GOOD)).unwrap().len();
    let cases = [
        (json!({"offset": delta.offset + 1, "index": 1}), "not_a_frame"),
        (json!({"offset": 0, "index": 2}), "not_a_frame"),
        (json!({"offset": object_size + 10, "index": 3}), "offset_out_of_range"),
        (json!({"offset": u64::MAX, "index": 4}), "offset_out_of_range"),
        (json!({"offset": delta.offset, "irap_offset": delta.offset, "index": 5}), "invalid_irap"),
        (json!({"offset": delta.offset, "irap_offset": keyframes[2].offset, "index": 6}), "invalid_irap"),
        (json!({"offset": delta.offset, "irap_offset": 3, "index": 7}), "invalid_irap"),
        (json!({"offset": -1, "index": 8}), "invalid_request"),
        (json!({"offset": "12", "index": 9}), "invalid_request"),
        (json!({"index": 10}), "invalid_request"),
    ];
    for (frame, expected) in cases {
        let error = frame_error(&mut client, json!({"type": "RequestFrames", "frames": [frame.clone()]}));
        assert_eq!(error["type"], "FrameError");
        assert_eq!(error["error"], expected, "{frame}: {error}");
        assert_eq!(error["index"], frame["index"]);
        assert!(!error["message"].as_str().unwrap().is_empty());
        still_serves(&mut client, &setup);
    }
    // Good and bad frames in one request: each answered, in order.
    let frames = json!([{"offset": index[3].offset, "index": "a"}, {"offset": 1, "index": "b"}, {"offset": index[4].offset, "index": "c"}]);
    client.send_json(&json!({"type": "RequestFrames", "frames": frames})).unwrap();
    let answers: Vec<Answer> = (0..3).map(|_| client.receive_answer().unwrap()).collect();
    assert!(matches!(&answers[0], Answer::Frame { header, .. } if header["index"] == "a"));
    assert!(matches!(&answers[1], Answer::Error(e) if e["index"] == "b"));
    assert!(matches!(&answers[2], Answer::Frame { header, .. } if header["index"] == "c"));
}

#[test]
fn binary_messages_and_oversized_requests_are_refused() {
    let setup = setup("errors-bounds");
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    client.send_binary(vec![1, 2, 3]).unwrap();
    assert!(error_message(&mut client).contains("binary messages are not accepted"));
    still_serves(&mut client, &setup);

    let frames: Vec<Value> = (0..12).map(|i| json!({"offset": setup.index[i % 5].offset, "index": i})).collect();
    let limited = start_local(&setup.root, &["--max-frames-per-request", "10", "--max-message-bytes", "4096"]);

    // A message over the size limit closes that connection only.
    let mut greedy = Client::connect(&limited.ws_url()).unwrap();
    greedy.send_text(&format!(r#"{{"type":"SetVideo","path":"{}"}}"#, "a".repeat(8000))).unwrap();
    assert_eq!(greedy.close_code().unwrap().0, 1009, "an oversized message ends the connection with 1009");

    let mut client = Client::connect(&limited.ws_url()).unwrap();
    assert_eq!(client.set_video(GOOD).unwrap()["ok"], true);
    client.send_json(&json!({"type": "RequestFrames", "frames": frames})).unwrap();
    let answers: Vec<Answer> = (0..12).map(|_| client.receive_answer().unwrap()).collect();
    let refused: Vec<i64> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Error(e) if e["error"] == "too_many_frames" => Some(a.index()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![10, 11]);
    assert_eq!(answers.iter().filter(|a| matches!(a, Answer::Frame { .. })).count(), 10);
}

#[test]
fn bad_configuration_exits_with_one_line() {
    let cases: [&[&str]; 4] = [
        &["--storage-backend", "s3"],
        &["--local-path", "/definitely/not/here"],
        &["--jpeg-quality", "0"],
        &["--listen-addr", "not-an-address"],
    ];
    for args in cases {
        let output = Command::new(binary()).arg("serve").args(args).env_remove("S3_BUCKET").output().unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains("error") || first.starts_with("bucket-streamer:"), "{args:?}: {stderr}");
        if !args.contains(&"--jpeg-quality") && !args.contains(&"--listen-addr") {
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        }
    }
}

/// A copy of a moov-at-end MP4 whose last chunk is moved 300 MiB further
/// (into a sparse `free` box before the moov): its first frames then need
/// more than 256 MiB from their keyframe.
fn far_flung_chunk(source: &[u8], target: &std::path::Path) {
    let find = |kind: &[u8], from: usize| from + source[from..].windows(4).position(|w| w == kind).unwrap() - 4;
    let moov = find(b"moov", 0);
    let stco = find(b"stco", moov);
    let count = u32::from_be_bytes(source[stco + 12..stco + 16].try_into().unwrap()) as usize;
    let gap: u32 = 300 << 20;
    let mut head = source[..moov].to_vec();
    head.extend_from_slice(&gap.to_be_bytes());
    head.extend_from_slice(b"free");
    let mut tail = source[moov..].to_vec();
    let last = stco - moov + 16 + 4 * (count - 1);
    tail[last..last + 4].copy_from_slice(&(moov as u32 + gap - (64 << 10)).to_be_bytes());
    let file = std::fs::File::create(target).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &head, 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &tail, (moov + gap as usize) as u64).unwrap();
}

#[test]
fn a_frame_too_far_from_its_keyframe_is_refused_without_reading_it() {
    let setup = setup("errors-far-span");
    // Interleaved with audio: one video sample per chunk, so the last chunk is not its own keyframe.
    let source = std::fs::read(setup.root.join("videos/open_gop_bframes.mp4")).unwrap();
    far_flung_chunk(&source, &setup.root.join("videos/far.mp4"));
    let (_, index) = fetch_index(&setup.server, "videos/far.mp4").unwrap();
    let far = index.iter().find(|f| f.offset - f.irap_offset > 256 << 20).expect("a frame far from its keyframe");
    let before = common::metric(&setup.server, "bucket_streamer_storage_read_bytes_total");
    let answer = testkit::processes::http_get(
        setup.server.port,
        &format!("/api/v1/frame?video=videos/far.mp4&offset={}", far.offset),
    )
    .unwrap();
    assert_eq!((answer.status, answer.json().unwrap()["error"].clone()), (422, json!("too_large")));
    // A chunk preload of the same frame is bounded too (it runs in the background).
    let mut client = Client::connect(&setup.server.ws_url()).unwrap();
    assert_eq!(client.set_video("videos/far.mp4").unwrap()["ok"], true);
    let chunks = json!([{"irap_offset": far.irap_offset, "frames": [far.offset]}]);
    client.send_json(&json!({"type": "RegisterChunks", "chunks": chunks})).unwrap();
    assert_eq!(client.receive_json().unwrap()["registered"], 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let read = common::metric(&setup.server, "bucket_streamer_storage_read_bytes_total") - before;
    assert!(read < (8 << 20) as f64, "{read} bytes read for a frame refused as too far");
    still_serves(&mut client, &setup);
}
