//! SIGTERM is never held up by work on a blocking thread: while a request
//! is indexing a huge file (a sparse 200 GB "raw stream" with a NAL unit
//! every 32 MiB, which the scanner reads until its 60 s budget runs out),
//! the server stops within its drain time and exits. And the drain itself:
//! frames asked for are answered, then sessions close with 1012.

mod common;

use common::{scratch_dir, start_local};
use std::time::{Duration, Instant};

#[test]
fn sigterm_does_not_wait_for_an_index_being_built() {
    let root = scratch_dir("shutdown");
    std::fs::create_dir_all(root.join("videos")).unwrap();
    let huge = std::fs::File::create(root.join("videos/endless.h265")).unwrap();
    // Sparse: only the pages with an access unit delimiter use disk (25 MB in all).
    for unit in 0..6400u64 {
        std::os::unix::fs::FileExt::write_all_at(&huge, &[0, 0, 0, 1, 0x46, 0x01, 0x50], unit << 25).unwrap();
    }
    huge.set_len(200 << 30).unwrap();
    let mut server = start_local(&root, &["--drain-secs", "10"]);
    let port = server.port;
    let request =
        std::thread::spawn(move || testkit::processes::http_get(port, "/api/v1/videos/videos/endless.h265/index"));
    std::thread::sleep(Duration::from_secs(2)); // the scan is under way
    assert!(!request.is_finished(), "the index is still being built");
    let asked = Instant::now();
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)), "the server is still running 20 s after SIGTERM");
    let took = asked.elapsed();
    // The drain lets requests run for 10 s, then the process exits at once.
    assert!(took < Duration::from_secs(14), "exit took {took:?}");
    let _ = request.join();
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

/// The drain of a rolling restart: at SIGTERM `/readyz` turns 503 and new
/// sessions are refused at once; an open session still gets every frame it
/// asked for (it is made to wait on its own reading here, with a small
/// outgoing budget), then the close code 1012; the process then exits.
#[test]
fn sigterm_answers_the_frames_asked_for_then_closes_sessions_with_1012() {
    let args = ["--drain-secs", "10", "--session-buffer-bytes", "100000"];
    let (mut server, _root) = common::serve_generated("drain", &["open_gop_bframes.mp4"], &args);
    let key = "videos/open_gop_bframes.mp4";
    let (_, index) = common::fetch_index(&server, key).unwrap();
    let url = format!("{}?video={}", server.ws_url(), key.replace('/', "%2F"));
    let mut client = testkit::ws::Client::connect(&url).unwrap();
    let set = client.receive_json().unwrap();
    assert_eq!((set["type"].as_str(), set["ok"].as_bool()), (Some("VideoSet"), Some(true)), "{set}");
    let frames: Vec<_> = index
        .iter()
        .map(|f| serde_json::json!({"offset": f.offset, "irap_offset": f.irap_offset, "index": f.number}))
        .collect();
    client.send_json(&serde_json::json!({"type": "RequestFrames", "frames": frames})).unwrap();
    // The first answer proves the request was read before the signal.
    assert!(matches!(client.receive_answer().unwrap(), testkit::ws::Answer::Frame { .. }));
    server.terminate();
    let asked = Instant::now();
    let readyz = loop {
        let response = testkit::processes::http_get(server.port, "/readyz").unwrap();
        if response.status == 503 || asked.elapsed() > Duration::from_secs(2) {
            break response;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((readyz.status, readyz.text().as_str()), (503, "not ready: shutting down"));
    let refused = testkit::ws::Client::connect(&url).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(refused.contains("503"), "a new session during the drain: {refused}");
    for frame in &index[1..] {
        match client.receive_answer().unwrap() {
            testkit::ws::Answer::Frame { header, .. } => assert_eq!(header["index"], frame.number),
            testkit::ws::Answer::Error(error) => panic!("frame {}: {error}", frame.number),
        }
    }
    assert_eq!(client.close_code().unwrap(), (1012, "service restart".to_string()));
    assert!(server.wait_exit(Duration::from_secs(5)), "the server is still running after its sessions closed");
    assert!(asked.elapsed() < Duration::from_secs(10), "the drain took {:?}", asked.elapsed());
}
