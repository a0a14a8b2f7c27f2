//! `--memory-budget` holds for any mix of requests: eight clients on eight
//! 720p videos (each decoder alone a third of the budget) get every frame
//! they ask for, pixel-exact, while what decoders, fetched bytes, indexes
//! and the frame cache hold never exceeds the budget, and the process's
//! peak memory stays near it. A video whose decoder can never fit is
//! answered `busy`, and the process serves on.

mod common;

use common::{binary, check_saved, scratch_dir, start_local, stock, summary};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use testkit::fixtures::Fixture;
use testkit::processes::http_get;

const BUDGET: u64 = 128 << 20;

/// The server's budget gauges: (what reservations hold, what the frame cache holds).
fn held(port: u16) -> (f64, f64) {
    let metrics = http_get(port, "/metrics").map(|r| r.text()).unwrap_or_default();
    let (mut reserved, mut frames) = (0.0, 0.0);
    for line in metrics.lines().filter(|line| line.starts_with("bucket_streamer_memory_held_bytes{")) {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if line.contains("holder=\"frames\"") {
            frames = value;
        } else {
            reserved += value;
        }
    }
    (reserved, frames)
}

#[test]
fn eight_videos_under_a_budget_that_holds_two_decoders_get_every_frame_exactly() {
    let shared = testkit::fixtures::shared().unwrap();
    let Some(bbb) = shared.into_iter().find(|fixture| fixture.name == "bbb720-frag.mp4") else {
        eprintln!("skipped: needs ../shared/media/bbb720-frag.mp4");
        return;
    };
    let fixtures: Vec<Fixture> = (0..8).map(|n| Fixture { name: format!("bbb720_{n}.mp4"), ..bbb.clone() }).collect();
    let root = scratch_dir("memory-budget");
    let videos = stock(&root, &fixtures);
    let server = start_local(&root, &["--memory-budget", &BUDGET.to_string(), "--decode-threads", "2"]);

    assert_eq!(common::metric(&server, "bucket_streamer_memory_budget_bytes"), BUDGET as f64);
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new((0.0f64, 0.0f64)));
    let watcher = {
        let (running, peak, port) = (running.clone(), peak.clone(), server.port);
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let (reserved, frames) = held(port);
                let mut peak = peak.lock().unwrap();
                *peak = (peak.0.max(reserved), peak.1.max(frames));
                drop(peak);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = root.join("frames");
    let mut bench = Command::new(binary());
    bench.args(["bench", "--url", &server.ws_url(), "--json", "--clients", "8", "--pattern", "random"]).args([
        "--frames",
        "8",
        "--batch",
        "1",
        "--timeout-secs",
        "60",
        "--output",
        out.to_str().unwrap(),
    ]);
    for (key, _) in &videos {
        bench.args(["--video", key]);
    }
    let summary = summary(bench.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    running.store(false, Ordering::Relaxed);
    watcher.join().unwrap();

    assert_eq!(summary["frames_errored"], 0, "{summary}");
    assert_eq!(summary["frames_received"], 64, "{summary}");
    assert_eq!(check_saved(&out, &videos), 64);
    let (reserved, frames) = *peak.lock().unwrap();
    eprintln!("peak held: {:.1} MiB reserved, {:.1} MiB frames", reserved / 1048576.0, frames / 1048576.0);
    assert!(reserved > 0.0, "nothing was reserved");
    assert!(reserved + frames <= BUDGET as f64, "held {reserved} + {frames} bytes, budget {BUDGET}");
    let decoders_dropped = common::metric(&server, "bucket_streamer_memory_reclaims_total");
    assert!(decoders_dropped > 0.0, "eight decoders fitted: the budget was never tested");
    // Reclaiming under pressure once panicked a decode thread (a sort by a moving idle time).
    assert_eq!(common::metric(&server, "bucket_streamer_decoder_panics_total"), 0.0);
    assert!(common::metric(&server, "bucket_streamer_resident_bytes") > 0.0, "RSS is published");
    let rss = server.peak_rss_bytes();
    eprintln!("peak RSS {} MiB", rss >> 20);
    // The program itself (a debug build), its runtime and the allocator's slack come on top.
    assert!(rss <= BUDGET + (64 << 20), "peak RSS {} MiB with a {} MiB budget", rss >> 20, BUDGET >> 20);
}

#[test]
fn a_video_whose_decoder_can_never_fit_is_answered_busy_and_others_are_served() {
    let Some(uhd) = testkit::fixtures::shared().unwrap().into_iter().find(|f| f.name == "bbb4k-frag.mp4") else {
        eprintln!("skipped: needs ../shared/media/bbb4k-frag.mp4");
        return;
    };
    let small = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
    let root = scratch_dir("memory-budget-busy");
    let videos = stock(&root, &[uhd, small.clone()]);
    let mut server = start_local(&root, &["--memory-budget", "48MiB"]);

    let refused = http_get(server.port, &format!("/api/v1/index?video={}", videos[0].0)).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("busy"), "{}", refused.text());
    assert_eq!(common::metric(&server, "bucket_streamer_memory_refusals_total"), 1.0);

    let served = common::verify_over_websocket(&server, &videos[1].0, &small, 20).unwrap();
    assert_eq!(served, 20);
    assert!(server.alive());
}
