//! The web client in a real browser: Debian's headless Chromium driven by
//! Playwright (`web/tests/browser.mjs`) against the real server. The script
//! opens, steps, scrubs (keyframes while dragging over a long GOP, the exact
//! frame at rest), plays, shows a grid, survives a server restart and
//! shows errors, and uses a token on a server that needs one; this test
//! restarts the server when asked and compares every canvas the script
//! saved with FFmpeg's decode of that frame.

mod common;

use common::{binary, browser_script, browser_tools, check_capture, scratch_dir, stock};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use testkit::image::factor_for;

#[test]
fn the_web_client_shows_steps_scrubs_and_plays_the_right_frames() {
    if let Err(reason) = browser_tools() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test: {reason}");
        eprintln!("note: browser test skipped: {reason}");
        return;
    }
    let shared = testkit::fixtures::shared().unwrap();
    let pick = |name: &str| shared.iter().find(|f| f.name == name).cloned();
    let (Some(first), Some(second)) = (pick("bbb720-frag.mp4"), pick("bbb1080-frag.mp4")) else {
        eprintln!("note: browser test needs ../shared/media");
        return;
    };
    let root = scratch_dir("web-client");
    let long_gop = testkit::fixtures::generated_named("long_gop.mp4").unwrap();
    stock(&root, &[first.clone(), second.clone(), long_gop.clone()]);
    let server_args = ["--local-path", root.to_str().unwrap()];
    let server = testkit::processes::start_server(&binary(), &server_args, &[]).unwrap();
    let (port, base_url) = (server.port, server.base_url());
    let mut server = Some(server);
    let secret = "a-browser-test-secret-long-enough-for-hs256";
    let guarded_args = ["--local-path", root.to_str().unwrap(), "--auth-jwt-secret", secret];
    let guarded = testkit::processes::start_server(&binary(), &guarded_args, &[]).unwrap();
    let token = server::auth::Auth::new(secret).token(None, server::auth::now() + 600);
    let out = testkit::workspace_root().join("target/test-artifacts/web-client");
    let _ = std::fs::remove_dir_all(&out);

    let guarded_url = guarded.base_url();
    let videos = ["videos/bbb720-frag.mp4", "videos/bbb1080-frag.mp4", "videos/long_gop.mp4"];
    let out_dir = out.to_str().unwrap();
    let mut script =
        browser_script("browser.mjs", &[&base_url, videos[0], videos[1], out_dir, &guarded_url, &token, videos[2]]);
    let mut to_script = script.stdin.take().unwrap();
    let mut captures = Vec::new();
    let mut done = false;
    for line in BufReader::new(script.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if event.get("capture").is_some() {
            captures.push(event);
        } else if event["restart"] == "now" {
            server = None; // killed: the page sees its connection drop
        } else if event["waiting"] == "server" {
            server = Some(testkit::processes::start_server_on(port, &binary(), &server_args, &[]).unwrap());
            writeln!(to_script, "restarted").unwrap();
        } else if event["done"] == true {
            done = true;
        }
    }
    let finished = script.wait_with_output().unwrap();
    assert!(
        done && finished.status.success(),
        "the browser script failed: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(out.join("web-client.png").is_file(), "a screenshot is saved");
    drop(server);

    let reference_of = |fixture: &testkit::fixtures::Fixture, width: usize| {
        let factor = factor_for(width);
        (factor, testkit::reference::frames(&fixture.path, factor).unwrap())
    };
    let (first_factor, first_reference) = reference_of(&first, 1280);
    let (second_factor, second_reference) = reference_of(&second, 1920);
    assert!(captures.len() >= 8, "captures: {captures:?}");
    assert!(captures.iter().any(|c| c["capture"] == "with-token"), "the page with a token drew its frame");
    let (long_factor, long_reference) = reference_of(&long_gop, 640);
    assert!(captures.iter().any(|c| c["video"] == "long"), "the long-GOP video was drawn exactly at rest");
    for capture in &captures {
        let (factor, reference) = if capture["video"] == "long" {
            (long_factor, &long_reference)
        } else if capture["clip"] == 1 {
            (second_factor, &second_reference)
        } else {
            (first_factor, &first_reference)
        };
        check_capture(capture, reference, factor).unwrap_or_else(|reason| panic!("{reason}"));
    }
}
