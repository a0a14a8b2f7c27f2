//! SIGTERM is never held up by work on a blocking thread: while a request
//! is indexing a huge file (a sparse 200 GB "raw stream" with a NAL unit
//! every 32 MiB, which the scanner reads until its 60 s budget runs out),
//! the server stops within its drain time and exits.

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
