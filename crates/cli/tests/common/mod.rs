//! Helpers shared by the end-to-end tests: storage roots filled with the
//! fixtures, the real server binary, and the frame-by-frame comparison with
//! FFmpeg's decode over a real WebSocket.
#![allow(dead_code)]

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::fixtures::Fixture;
use testkit::image::{box_downscale, check_frame, factor_for, psnr, SmallImage};
use testkit::processes::{http_get, Running};
use testkit::ws::{Answer, Client};

/// JPEG at the server's default quality 80 is well above this against FFmpeg's decode.
pub const MIN_PSNR: f64 = 28.0;

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bucket-streamer"))
}

/// A fresh folder under target/test-data.
/// A token or signed URL minted by the binary's own `token` / `sign-url`
/// command (`args`) with `secret`.
pub fn mint(secret: &str, args: &[&str]) -> String {
    let output = Command::new(binary()).args(args).args(["--secret", secret]).output().expect("the binary runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_string()
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = testkit::workspace_root().join("target/test-data").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Places `fixtures` under `root/videos/` (hard links where possible) and
/// returns their storage keys.
pub fn stock(root: &Path, fixtures: &[Fixture]) -> Vec<(String, Fixture)> {
    let videos = root.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    fixtures
        .iter()
        .map(|fixture| {
            let target = videos.join(&fixture.name);
            if std::fs::hard_link(&fixture.path, &target).is_err() {
                std::fs::copy(&fixture.path, &target).expect("copy fixture");
            }
            (format!("videos/{}", fixture.name), fixture.clone())
        })
        .collect()
}

pub fn start_local(root: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["--local-path", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    testkit::processes::start_server(&binary(), &args, &[]).expect("server starts")
}

/// A server over a fresh storage root (`target/test-data/<dir>`) holding the
/// generated fixtures `names` under `videos/`.
pub fn serve_generated(dir: &str, names: &[&str], extra: &[&str]) -> (Running, PathBuf) {
    let fixtures: Vec<Fixture> =
        names.iter().map(|name| testkit::fixtures::generated_named(name).expect("fixture")).collect();
    let root = scratch_dir(dir);
    stock(&root, &fixtures);
    (start_local(&root, extra), root)
}

/// One frame of the server's index, in presentation order.
#[derive(Debug, Clone)]
pub struct IndexFrame {
    pub number: usize,
    pub offset: u64,
    pub irap_offset: u64,
    pub size: u64,
    pub keyframe: bool,
}

pub fn fetch_index(server: &Running, key: &str) -> Result<(Value, Vec<IndexFrame>)> {
    fetch_index_with(server, key, &[])
}

/// `fetch_index` with extra request headers (a token).
pub fn fetch_index_with(server: &Running, key: &str, headers: &[(&str, &str)]) -> Result<(Value, Vec<IndexFrame>)> {
    let response = testkit::processes::http_get_with(server.port, &format!("/api/v1/videos/{key}/index"), headers)?;
    ensure!(response.status == 200, "index of {key}: HTTP {} {}", response.status, response.text());
    let body = response.json()?;
    let frames = body["frames"]
        .as_array()
        .context("index has frames")?
        .iter()
        .map(|f| IndexFrame {
            number: f["index"].as_u64().unwrap() as usize,
            offset: f["offset"].as_u64().unwrap(),
            irap_offset: f["irap_offset"].as_u64().unwrap(),
            size: f["size"].as_u64().unwrap(),
            keyframe: f["keyframe"].as_bool().unwrap(),
        })
        .collect();
    Ok((body, frames))
}

/// Decodes a JPEG the way the reference frames were prepared.
pub fn small_rgb(jpeg: &[u8], factor: usize) -> Result<testkit::image::SmallImage> {
    let rgb = media::jpeg::decode_rgb(jpeg)?;
    Ok(box_downscale(&rgb.pixels, rgb.width, rgb.height, factor))
}

/// Requests up to `max_frames` frames of `key` in random order over one
/// WebSocket, in batches that mix the three ways of naming the IRAP
/// (per request, per frame, not at all), and checks every answer against
/// FFmpeg's decode of `fixture`: one answer per frame, in order, each frame
/// closest to its own reference picture.
pub fn verify_over_websocket(server: &Running, key: &str, fixture: &Fixture, max_frames: usize) -> Result<usize> {
    let (_, index) = fetch_index(server, key)?;
    let factor = factor_for(testkit::reference::stream_info(&fixture.path)?.width as usize);
    let reference = testkit::reference::frames(&fixture.path, factor)?;
    ensure!(
        index.len() == reference.len(),
        "{key}: index has {} frames, FFmpeg decodes {}",
        index.len(),
        reference.len()
    );
    let mut client = Client::connect(&server.ws_url())?;
    let set = client.set_video(key)?;
    ensure!(set["type"] == "VideoSet" && set["ok"] == true, "{key}: SetVideo answered {set}");
    let mut order: Vec<usize> = (0..index.len()).collect();
    order.shuffle(&mut rand::rng());
    order.truncate(max_frames);
    let batch_sizes = [1usize, 7, 3, 16, 2, 30];
    let mut checked = 0;
    let mut remaining = order.as_slice();
    let mut round = 0;
    while !remaining.is_empty() {
        let (batch, rest) = remaining.split_at(batch_sizes[round % batch_sizes.len()].min(remaining.len()));
        remaining = rest;
        let request = match round % 3 {
            0 => json!({"type": "RequestFrames", "frames": batch.iter().map(|&n| json!({
                "offset": index[n].offset, "irap_offset": index[n].irap_offset, "index": n})).collect::<Vec<_>>()}),
            1 => json!({"type": "RequestFrames", "frames": batch.iter().map(|&n| json!({
                "offset": index[n].offset, "index": n})).collect::<Vec<_>>()}),
            _ => {
                let shared = index[batch[0]].irap_offset;
                let frames: Vec<Value> = batch
                    .iter()
                    .map(|&n| {
                        let mut frame = json!({"offset": index[n].offset, "index": n});
                        if index[n].irap_offset != shared {
                            frame["irap_offset"] = json!(index[n].irap_offset);
                        }
                        frame
                    })
                    .collect();
                json!({"type": "RequestFrames", "irap_offset": shared, "frames": frames})
            }
        };
        client.send_json(&request)?;
        for &number in batch {
            match client.receive_answer()? {
                Answer::Frame { header, jpeg } => {
                    ensure!(header["index"] == number, "{key}: expected frame {number} next, got {header}");
                    ensure!(header["offset"] == index[number].offset, "{key}: wrong offset echoed in {header}");
                    let small = small_rgb(&jpeg, factor)?;
                    check_frame(&small, &reference, number, MIN_PSNR)
                        .map_err(|reason| anyhow::anyhow!("{key}: {reason}"))?;
                    checked += 1;
                }
                Answer::Error(error) => bail!("{key}: frame {number} failed: {error}"),
            }
        }
        round += 1;
    }
    Ok(checked)
}

/// Current value of a Prometheus metric, summed over its labels (0 when not yet reported).
pub fn metric(server: &Running, name: &str) -> f64 {
    let text = http_get(server.port, "/metrics").expect("metrics").text();
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Flags that point the binary at the test S3 server.
pub fn s3_flags(s3: &Running) -> Vec<String> {
    s3_flags_with_secret(s3, testkit::processes::S3_SECRET_KEY)
}

/// `s3_flags` with another secret key (a wrong one, to test refusals).
pub fn s3_flags_with_secret(s3: &Running, secret: &str) -> Vec<String> {
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    [
        "--s3-endpoint",
        &endpoint,
        "--s3-region",
        "us-east-1",
        "--s3-access-key",
        testkit::processes::S3_ACCESS_KEY,
        "--s3-secret-key",
        secret,
    ]
    .iter()
    .map(|flag| flag.to_string())
    .collect()
}

/// What the browser test needs, or why it cannot run here.
pub fn browser_tools() -> Result<(), String> {
    let scripts = testkit::workspace_root().join("web/tests");
    if !scripts.join("node_modules/playwright-core").is_dir() {
        return Err("web/tests/node_modules is missing: run `npm ci --prefix web/tests` (scripts/test does)".into());
    }
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|_| "node is not installed (scripts/test installs nodejs)")?;
    let major: u32 = String::from_utf8_lossy(&version.stdout)
        .trim_start_matches('v')
        .split('.')
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "playwright-core needs Node.js 20 or newer, this is {}",
            String::from_utf8_lossy(&version.stdout).trim()
        ));
    }
    if !Path::new(&std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into())).exists() {
        return Err("chromium is not installed (scripts/test installs Debian's chromium)".into());
    }
    Ok(())
}

/// Starts a browser script of `web/tests` with node, its stdio piped (JSON
/// lines out, answers in).
pub fn browser_script(script: &str, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    Command::new("node")
        .current_dir(testkit::workspace_root().join("web/tests"))
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs")
}

/// Compares a canvas a browser script saved (`{"capture", "file", "width",
/// "height", "frame"}`, raw RGBA) with FFmpeg's decode of its frame.
pub fn check_capture(capture: &Value, reference: &[testkit::image::SmallImage], factor: usize) -> Result<(), String> {
    let (width, height) = (capture["width"].as_u64().unwrap() as usize, capture["height"].as_u64().unwrap() as usize);
    let rgba = std::fs::read(capture["file"].as_str().unwrap()).map_err(|e| e.to_string())?;
    let rgb: Vec<u8> = rgba.chunks_exact(4).flat_map(|pixel| [pixel[0], pixel[1], pixel[2]]).collect();
    let small = box_downscale(&rgb, width, height, factor);
    check_frame(&small, reference, capture["frame"].as_u64().unwrap() as usize, MIN_PSNR)
        .map(|_| ())
        .map_err(|reason| format!("canvas of step {}: {reason}", capture["capture"]))
}

/// The JSON summary of a `bench` run that must succeed.
pub fn summary(bench: std::process::Child) -> Value {
    let output = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("bench printed no JSON: {stderr}"))
}

/// Every frame bench saved (client c plays video c % n) matches FFmpeg's decode.
pub fn check_saved(out: &Path, videos: &[(String, Fixture)]) -> usize {
    let mut references = std::collections::HashMap::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (client, frame) = name
            .strip_prefix("client")
            .and_then(|rest| rest.strip_suffix(".jpg")?.split_once("_frame"))
            .map(|(c, f)| (c.parse::<usize>().unwrap(), f.parse::<usize>().unwrap()))
            .unwrap();
        let (key, fixture) = &videos[client % videos.len()];
        let (factor, reference) = references.entry(client % videos.len()).or_insert_with(|| {
            let factor = factor_for(testkit::reference::stream_info(&fixture.path).unwrap().width as usize);
            (factor, testkit::reference::frames(&fixture.path, factor).unwrap())
        });
        let jpeg = std::fs::read(out.join(&name)).unwrap();
        check_frame(&small_rgb(&jpeg, *factor).unwrap(), reference, frame, MIN_PSNR)
            .unwrap_or_else(|reason| panic!("{key}, {name}: {reason}"));
        checked += 1;
    }
    checked
}

/// Shrinks both to the same size by averaging blocks, so a scaled frame is
/// compared with FFmpeg's full-size decode.
pub fn compare_scaled(scaled: &SmallImage, reference: &SmallImage) -> f64 {
    let factor = reference.width / scaled.width;
    let common = box_downscale(&reference.pixels, reference.width, reference.height, factor);
    let cropped = SmallImage {
        width: common.width.min(scaled.width),
        height: common.height.min(scaled.height),
        pixels: Vec::new(),
    };
    let crop = |image: &SmallImage| {
        let mut pixels = Vec::new();
        for y in 0..cropped.height {
            pixels.extend_from_slice(&image.pixels[y * image.width * 3..(y * image.width + cropped.width) * 3]);
        }
        SmallImage { pixels, ..cropped.clone() }
    };
    psnr(&crop(scaled), &crop(&common))
}

/// The scaled frame is close to reference frame `index` and closer to it
/// than to its neighbours.
pub fn check_scaled(scaled: &SmallImage, reference: &[SmallImage], index: usize, min_psnr: f64) -> Result<(), String> {
    let own = compare_scaled(scaled, &reference[index]);
    if own < min_psnr {
        return Err(format!("frame {index}: {own:.1} dB against FFmpeg's decode, below {min_psnr} dB"));
    }
    for neighbour in [index.wrapping_sub(1), index + 1] {
        if let Some(other) = reference.get(neighbour) {
            let theirs = compare_scaled(scaled, other);
            if theirs >= own {
                return Err(format!("frame {index}: closer to {neighbour} ({theirs:.1} dB) than itself ({own:.1} dB)"));
            }
        }
    }
    Ok(())
}
