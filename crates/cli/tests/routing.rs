//! Scale-out, proven with the real thing on loopback: Debian's nginx with
//! the routing users deploy (`deploy/nginx/locations.conf`: `hash
//! $arg_video consistent`, WebSocket upgrade, a proxy cache for frames) in
//! front of three server processes over one storage folder.
//!
//! - every video is opened and decoded in exactly one process;
//! - a repeated frame URL is a cache hit in nginx and costs no decode;
//! - the process playing a video is SIGKILLed: the client (`bench`)
//!   reconnects through nginx and has its next exact frame within 2 s;
//! - SIGTERM during playback and a rolling restart of all three servers
//!   while 4 clients play: every frame asked for is answered once, every
//!   saved frame matches FFmpeg's decode, only reconnects happen.

mod common;

use common::{binary, check_saved, scratch_dir, small_rgb, stock, summary, MIN_PSNR};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::fixtures::Fixture;
use testkit::image::{check_frame, factor_for};
use testkit::nginx::{Backends, Nginx};
use testkit::processes::http_get;
use testkit::ws::{Answer, Client};

const VIDEOS: [&str; 6] = [
    "open_gop_bframes.mp4",
    "closed_gop_bframes.mp4",
    "no_bframes.mp4",
    "main10_bt709.mp4",
    "fragmented.mp4",
    "annexb.h265",
];

/// Three servers over one folder of videos, nginx in front.
struct Cluster {
    videos: Vec<(String, Fixture)>,
    backends: Backends,
    nginx: Nginx,
}

/// `None` (with a note) where nginx is missing outside CI.
fn cluster(name: &str, videos: &[&str], extra: &[&str]) -> Option<Cluster> {
    if let Err(reason) = testkit::nginx::binary() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the routing tests: {reason}");
        eprintln!("note: routing test skipped: {reason}");
        return None;
    }
    let root = scratch_dir(name);
    let fixtures: Vec<Fixture> =
        videos.iter().map(|name| testkit::fixtures::generated_named(name).expect("fixture")).collect();
    let videos = stock(&root, &fixtures);
    let mut args = vec!["--local-path", root.to_str().unwrap(), "--drain-secs", "6"];
    args.extend_from_slice(extra);
    let backends = Backends::start(&binary(), 3, &args).expect("servers start");
    let nginx = Nginx::start(&root.join("nginx"), &backends.ports()).expect("nginx starts");
    Some(Cluster { videos, backends, nginx })
}

impl Cluster {
    /// Per server: the value of `name{video="<key>"}`.
    fn per_video(&self, name: &str, key: &str) -> Vec<f64> {
        self.backends.servers.iter().map(|server| labelled_metric(server.port, name, key)).collect()
    }

    /// Which server has decoded `key` (the one with a non-zero count).
    fn home_of(&self, key: &str) -> Option<usize> {
        self.per_video("bucket_streamer_video_frames_decoded_total", key).iter().position(|&count| count > 0.0)
    }
}

/// `name{video="<key>"}` on the server at `port` (0 when absent).
fn labelled_metric(port: u16, name: &str, key: &str) -> f64 {
    let text = http_get(port, "/metrics").map(|r| r.text()).unwrap_or_default();
    let wanted = format!("{name}{{video=\"{key}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&wanted)?.parse().ok()).unwrap_or(0.0)
}

/// Sum of an unlabelled counter over the servers.
fn total(cluster: &Cluster, name: &str) -> f64 {
    cluster.backends.servers.iter().map(|server| common::metric(server, name)).sum()
}

/// The `video` query value as clients encode it (application/x-www-form-urlencoded).
fn query_value(key: &str) -> String {
    key.replace('/', "%2F")
}

#[test]
fn every_video_is_decoded_in_exactly_one_process_and_repeated_frames_come_from_nginx() {
    let Some(cluster) = cluster("routing", &VIDEOS, &[]) else { return };
    let mut checked = 0;
    for (key, fixture) in &cluster.videos {
        let index =
            http_get(cluster.nginx.port, &format!("/api/v1/index?video={}", query_value(key))).unwrap().json().unwrap();
        let frames = index["frames"].as_array().unwrap().clone();
        let factor = factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
        let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
        // Four sessions per video, each through nginx, each asking other frames.
        for session in 0..4 {
            let url = format!("{}?video={}", cluster.nginx.ws_url(), query_value(key));
            let mut client = Client::connect(&url).unwrap();
            let set = client.receive_json().unwrap();
            assert_eq!(set["type"], "VideoSet", "{set}");
            assert_eq!(set["ok"], true, "{key}: {set}");
            let wanted: Vec<usize> = (0..5).map(|i| (session * 17 + i * 11) % frames.len()).collect();
            let request: Vec<Value> = wanted
                .iter()
                .map(|&n| json!({"offset": frames[n]["offset"], "irap_offset": frames[n]["irap_offset"], "index": n}))
                .collect();
            client.send_json(&json!({"type": "RequestFrames", "frames": request})).unwrap();
            for &n in &wanted {
                match client.receive_answer().unwrap() {
                    Answer::Frame { header, jpeg } => {
                        assert_eq!(header["index"], n);
                        check_frame(&small_rgb(&jpeg, factor).unwrap(), &reference, n, MIN_PSNR)
                            .unwrap_or_else(|reason| panic!("{key}: {reason}"));
                        checked += 1;
                    }
                    Answer::Error(error) => panic!("{key}: frame {n}: {error}"),
                }
            }
        }
    }
    assert_eq!(checked, 6 * 4 * 5);
    let mut homes = HashMap::new();
    for (key, _) in &cluster.videos {
        let decoded = cluster.per_video("bucket_streamer_video_frames_decoded_total", key);
        let opened = cluster.per_video("bucket_streamer_video_opens_total", key);
        let decoding: Vec<usize> = (0..3).filter(|&i| decoded[i] > 0.0).collect();
        let opening: Vec<usize> = (0..3).filter(|&i| opened[i] > 0.0).collect();
        assert_eq!(decoding.len(), 1, "{key} was decoded by servers {decoding:?} ({decoded:?})");
        assert_eq!(opening, decoding, "{key} was opened by {opening:?}, decoded by {decoding:?}");
        homes.insert(key.clone(), decoding[0]);
    }
    eprintln!("homes: {homes:?}");
    // Every server says who it is.
    for (i, server) in cluster.backends.servers.iter().enumerate() {
        let text = http_get(server.port, "/metrics").unwrap().text();
        assert!(text.contains(&format!("bucket_streamer_instance_info{{instance=\"server{i}\"")), "{text}");
    }

    // A frame URL twice through nginx: the second is nginx's cached copy and no server decodes.
    let (key, fixture) = &cluster.videos[0];
    let target = format!("/api/v1/frame?video={}&frame=40", query_value(key));
    let first = http_get(cluster.nginx.port, &target).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    let decoded = total(&cluster, "bucket_streamer_frames_decoded_total");
    let served = total(&cluster, "bucket_streamer_cache_hits_total");
    let second = http_get(cluster.nginx.port, &target).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache-status"), Some("HIT"), "{:?}", second.headers);
    assert_eq!(second.body, first.body);
    assert_eq!(total(&cluster, "bucket_streamer_frames_decoded_total"), decoded, "a cache hit decoded");
    assert_eq!(total(&cluster, "bucket_streamer_cache_hits_total"), served, "a cache hit reached a server");
    let factor = factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    check_frame(&small_rgb(&second.body, factor).unwrap(), &reference, 40, MIN_PSNR).unwrap();
}

/// `bench` through nginx, playing (one frame per request, in order, looping)
/// for `seconds`, saving every frame; JSON summary when it ends.
fn play(nginx: &Nginx, videos: &[&str], clients: usize, seconds: u64, out: &Path) -> Child {
    let mut command = Command::new(binary());
    command
        .args(["bench", "--url", &nginx.ws_url(), "--json", "--batch", "1", "--frames", "100000"])
        .args(["--clients", &clients.to_string(), "--duration-secs", &seconds.to_string()])
        .args(["--timeout-secs", "20", "--output", out.to_str().unwrap()]);
    for video in videos {
        command.args(["--video", video]);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("bench starts")
}

/// Waits until some server has decoded `key`; its index.
fn wait_for_home(cluster: &Cluster, key: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(home) = cluster.home_of(key) {
            return home;
        }
        assert!(Instant::now() < deadline, "nobody decodes {key}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_server_s_client_reconnects_through_nginx_and_draws_its_next_frame_within_2_s() {
    let Some(mut cluster) = cluster("routing-kill", &VIDEOS[..1], &[]) else { return };
    let out = cluster.nginx.dir.join("frames");
    let key = cluster.videos[0].0.clone();
    let bench = play(&cluster.nginx, &[&key], 1, 8, &out);
    let home = wait_for_home(&cluster, &key);
    std::thread::sleep(Duration::from_secs(2));
    let server = &cluster.backends.servers[home];
    let _ = Command::new("kill").args(["-KILL", &server.pid().to_string()]).status();
    assert!(cluster.backends.servers[home].wait_exit(Duration::from_secs(5)));
    let summary = summary(bench);
    eprintln!("after SIGKILL: {summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["frames_errored"], 0, "{summary}");
    assert_eq!(summary["frames_requested"], summary["frames_received"], "{summary}");
    let gaps: Vec<f64> = serde_json::from_value(summary["reconnect_gaps_ms"].clone()).unwrap();
    assert!(!gaps.is_empty() && gaps.iter().all(|&gap| gap < 2000.0), "frame gaps {gaps:?}");
    // Another server took the video over.
    let new_home = cluster.home_of(&key);
    assert!(new_home.is_some_and(|h| h != home), "{key} is now at {new_home:?}, was at {home}");
    assert!(check_saved(&out, &cluster.videos) > 0);
    cluster.backends.restart(home).unwrap();
}

#[test]
fn sigterm_and_a_rolling_restart_lose_no_frame() {
    let Some(mut cluster) = cluster("routing-rolling", &VIDEOS[..4], &[]) else { return };
    let out = cluster.nginx.dir.join("frames");
    let keys: Vec<String> = cluster.videos.iter().map(|(key, _)| key.clone()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let bench = play(&cluster.nginx, &keys, 4, 24, &out);
    let home = wait_for_home(&cluster, keys[0]);
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM to the server playing the first video: it drains and exits well within its 6 s.
    let stopping = Instant::now();
    cluster.backends.servers[home].terminate();
    assert!(cluster.backends.servers[home].wait_exit(Duration::from_secs(8)), "no exit after SIGTERM");
    let drained_in = stopping.elapsed();
    let log = std::fs::read_to_string(&cluster.backends.servers[home].log).unwrap();
    assert!(log.contains("service restart"), "no session closed with 1012:\n{log}");
    cluster.backends.restart(home).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // A rolling restart of all three, one at a time.
    for i in 0..3 {
        cluster.backends.servers[i].terminate();
        assert!(cluster.backends.servers[i].wait_exit(Duration::from_secs(8)), "server {i} did not exit");
        cluster.backends.restart(i).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let summary = summary(bench);
    eprintln!("drain took {drained_in:?}; after SIGTERM and a rolling restart: {summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["frames_errored"], 0, "{summary}");
    assert_eq!(summary["frames_requested"], summary["frames_received"], "{summary}");
    assert!(summary["frames_received"].as_u64().unwrap() > 100, "{summary}");
    let gaps: Vec<f64> = serde_json::from_value(summary["reconnect_gaps_ms"].clone()).unwrap();
    assert!(gaps.iter().all(|&gap| gap < 2000.0), "frame gaps {gaps:?}");
    assert!(check_saved(&out, &cluster.videos) > 0);
}

#[test]
fn the_web_client_plays_on_through_nginx_when_its_server_is_killed() {
    if let Err(reason) = common::browser_tools() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test: {reason}");
        eprintln!("note: browser test skipped: {reason}");
        return;
    }
    let Some(mut cluster) = cluster("routing-browser", &VIDEOS[..1], &[]) else { return };
    let key = cluster.videos[0].0.clone();
    let out = testkit::workspace_root().join("target/test-artifacts/failover");
    let _ = std::fs::remove_dir_all(&out);
    let mut script = common::browser_script("failover.mjs", &[&cluster.nginx.base_url(), &key, out.to_str().unwrap()]);
    let mut to_script = script.stdin.take().unwrap();
    let mut events = Vec::new();
    let mut killed = None;
    use std::io::{BufRead, Write};
    for line in std::io::BufReader::new(script.stdout.take().unwrap()).lines() {
        let Ok(event) = serde_json::from_str::<Value>(&line.unwrap()) else { continue };
        if event["kill"] == "now" {
            let home = cluster.home_of(&key).expect("the video is being decoded somewhere");
            let _ = Command::new("kill").args(["-KILL", &cluster.backends.servers[home].pid().to_string()]).status();
            assert!(cluster.backends.servers[home].wait_exit(Duration::from_secs(5)));
            killed = Some(home);
            writeln!(to_script, "killed").unwrap();
        }
        events.push(event);
    }
    let finished = script.wait_with_output().unwrap();
    assert!(finished.status.success(), "the browser script failed: {}", String::from_utf8_lossy(&finished.stderr));
    assert!(killed.is_some() && events.iter().any(|e| e["done"] == true), "{events:?}");
    let stall = events.iter().find_map(|e| e["stall_ms"].as_f64()).expect("the script measured the stall");
    eprintln!("browser: longest time without a new picture around the kill: {stall} ms");
    assert!(stall < 2000.0, "the page stalled {stall} ms");
    // The page's session was opened again through nginx, to another server.
    let log = std::fs::read_to_string(cluster.nginx.dir.join("access.log")).unwrap();
    let sessions = log.lines().filter(|line| line.contains("/ws?video=") && line.contains(" 101 ")).count();
    assert!(sessions >= 2, "one reconnect through nginx expected:\n{log}");
    let fixture = &cluster.videos[0].1;
    let factor = factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    let capture = events.iter().find(|e| e["capture"] == "after-failover").expect("a capture");
    common::check_capture(capture, &reference, factor).unwrap();
    cluster.backends.restart(killed.unwrap()).unwrap();
}
