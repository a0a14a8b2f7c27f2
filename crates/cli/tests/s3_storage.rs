//! The same frame-accuracy checks against a real S3-compatible server
//! (s3s-fs, SigV4 auth, started on loopback), and the storage cost of a
//! frame: one IRAP→frame range read, the header read once per process.

mod common;

use common::{fetch_index, metric, scratch_dir, stock, verify_over_websocket};
use serde_json::json;
use testkit::processes::{start_s3, start_server, Running};
use testkit::ws::{Answer, Client};

const BUCKET: &str = "footage";

fn start_pair(
    name: &str,
    fixtures: &[testkit::fixtures::Fixture],
) -> (Running, Running, Vec<(String, testkit::fixtures::Fixture)>) {
    let root = scratch_dir(name);
    let videos = stock(&root.join(BUCKET), fixtures);
    let s3 = start_s3(&root).expect("s3s-fs starts");
    let mut args = vec!["--storage-backend".to_string(), "s3".into(), "--s3-bucket".into(), BUCKET.into()];
    args.extend(common::s3_flags(&s3));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start_server(&common::binary(), &args, &[]).expect("server starts");
    (s3, server, videos)
}

#[test]
fn every_fixture_is_frame_accurate_from_s3() {
    let fixtures = testkit::fixtures::all().unwrap();
    let (_s3, server, videos) = start_pair("s3-frames", &fixtures);
    for (key, fixture) in &videos {
        let budget = if fixture.name.contains("4k") { 12 } else { 40 };
        let checked = verify_over_websocket(&server, key, fixture, budget).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("s3 {key}: {checked} frames match FFmpeg");
    }
}

#[test]
fn a_frame_costs_its_irap_span_and_the_header_once() {
    let fixture = testkit::fixtures::generated_named("closed_gop_bframes.mp4").unwrap();
    let (_s3, server, videos) = start_pair("s3-bytes", std::slice::from_ref(&fixture));
    let key = &videos[0].0;
    let object_size = std::fs::metadata(&fixture.path).unwrap().len() as f64;

    let before_header = metric(&server, "bucket_streamer_storage_read_bytes_total");
    let (index_json, index) = fetch_index(&server, key).unwrap();
    let header_bytes = metric(&server, "bucket_streamer_storage_read_bytes_total") - before_header;
    assert!(header_bytes > 0.0, "the header was read");
    assert!(
        header_bytes < object_size / 2.0,
        "the header read ({header_bytes} B) must not approach the object ({object_size} B)"
    );
    assert_eq!(index_json["frame_count"], 75);

    // A frame in the middle of a GOP that is not a leading picture.
    let frame = index.iter().filter(|f| !f.keyframe).nth(30).unwrap().clone();
    let mut client = Client::connect(&server.ws_url()).unwrap();
    let before_frame = metric(&server, "bucket_streamer_storage_read_bytes_total");
    assert_eq!(client.set_video(key).unwrap()["ok"], true);
    assert_eq!(
        metric(&server, "bucket_streamer_storage_read_bytes_total"),
        before_frame,
        "SetVideo on an open video reads nothing again"
    );
    client.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": frame.offset, "index": 1}]})).unwrap();
    assert!(matches!(client.receive_answer().unwrap(), Answer::Frame { .. }));
    let frame_bytes = metric(&server, "bucket_streamer_storage_read_bytes_total") - before_frame;
    let span = (frame.offset + frame.size - frame.irap_offset) as f64;
    assert!(
        frame_bytes > 0.0 && frame_bytes <= span,
        "one frame read {frame_bytes} B; its IRAP→frame span is {span} B"
    );

    // The same frame again (another session) reads nothing more.
    let mut other = Client::connect(&server.ws_url()).unwrap();
    assert_eq!(other.set_video(key).unwrap()["ok"], true);
    let before_repeat = metric(&server, "bucket_streamer_storage_read_bytes_total");
    other.send_json(&json!({"type": "RequestFrames", "frames": [{"offset": frame.offset, "index": 2}]})).unwrap();
    assert!(matches!(other.receive_answer().unwrap(), Answer::Frame { .. }));
    assert_eq!(metric(&server, "bucket_streamer_storage_read_bytes_total"), before_repeat);
}

/// Waits until `/readyz` answers `status` after storage was checked (before
/// the first check it says so), returning its body.
fn readyz_becomes(server: &Running, status: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = testkit::processes::http_get(server.port, "/readyz").unwrap();
        let checked = !response.text().contains("not been checked");
        if (checked && response.status == status) || std::time::Instant::now() > deadline {
            assert_eq!(response.status, status, "readyz: {}", response.text());
            return response.text();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn wrong_credentials_make_the_server_not_ready_and_errors_name_no_endpoint() {
    let fixture = testkit::fixtures::generated_named("no_bframes.mp4").unwrap();
    let (s3, good, videos) = start_pair("s3-credentials", std::slice::from_ref(&fixture));
    assert_eq!(readyz_becomes(&good, 200), "ready");

    let mut args: Vec<String> =
        ["--storage-backend", "s3", "--s3-bucket", BUCKET, "--storage-timeout-secs", "3"].map(String::from).to_vec();
    args.extend(common::s3_flags_with_secret(&s3, "not-the-secret"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrong = start_server(&common::binary(), &args, &[]).expect("server starts");
    let reason = readyz_becomes(&wrong, 503);
    assert!(reason.contains("credentials"), "{reason}");
    assert!(!reason.contains("127.0.0.1"), "the probe names no endpoint: {reason}");
    let mut client = Client::connect(&wrong.ws_url()).unwrap();
    let set = client.set_video(&videos[0].0).unwrap();
    assert_eq!(set["ok"], false, "{set}");
    let error = set["error"].as_str().unwrap();
    assert!(error.contains("storage") && error.contains("request "), "a kind and a request id: {error}");
    assert!(!error.contains("127.0.0.1") && !error.contains(&s3.port.to_string()), "no endpoint: {error}");
    let request_id = error.rsplit("request ").next().unwrap().trim_end_matches(')');
    let log = std::fs::read_to_string(&wrong.log).unwrap();
    assert!(log.contains(request_id), "the log has the details under {request_id}");
    // The index of S3 videos names them as the offsets file does.
    let (index_json, _) = fetch_index(&good, &videos[0].0).unwrap();
    assert_eq!(index_json["video_url"], format!("s3://{BUCKET}/{}", videos[0].0));
}

#[test]
fn an_unreachable_endpoint_makes_the_server_not_ready() {
    // Nothing listens on this port: a closed loopback port refuses at once.
    let args = [
        "--storage-backend",
        "s3",
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--s3-region",
        "us-east-1",
        "--s3-access-key",
        "key",
        "--s3-secret-key",
        "secret",
        "--storage-timeout-secs",
        "3",
    ];
    let server = start_server(&common::binary(), &args, &[]).expect("server starts");
    let reason = readyz_becomes(&server, 503);
    assert_eq!(reason, "not ready: storage is not answering: storage cannot be reached");
}
