//! `bucket-streamer convert`: prepares H.265 MP4s the server streams well,
//! from any video FFmpeg reads (Stage 1's repo-cli). Runs the ffmpeg CLI per
//! file with a progress bar; `--extract-offsets` writes the offsets JSON
//! beside each output.

use crate::index::offsets_json;
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A video file, or a folder of them.
    #[arg(long, short)]
    pub input: PathBuf,

    /// Output file (for one input file) or folder.
    #[arg(long, short)]
    pub output: PathBuf,

    /// Descend into sub-folders of an input folder (keeping their layout).
    #[arg(long, short = 'R')]
    pub recursive: bool,

    /// Divide width and height by this factor.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub downscale: Option<u32>,

    /// Output frame rate.
    #[arg(long)]
    pub fps: Option<f64>,

    /// Frames between keyframes (shorter = cheaper random access, larger files).
    #[arg(long)]
    pub keyint: Option<u32>,

    /// x265 constant rate factor (lower = better quality, larger files).
    #[arg(long, default_value_t = 26)]
    pub crf: u32,

    /// Write `<output>.offsets.json` (the Stage 1 offsets file) for each output.
    #[arg(long)]
    pub extract_offsets: bool,

    /// Overwrite outputs that exist (they are skipped otherwise).
    #[arg(long)]
    pub force: bool,

    /// Encode with NVIDIA NVENC when this ffmpeg has it (falls back to libx265, and says so).
    #[arg(long)]
    pub gpu: bool,
}

const VIDEO_EXTENSIONS: [&str; 12] =
    ["mp4", "mov", "mkv", "avi", "webm", "m4v", "ts", "mts", "h264", "264", "h265", "hevc"];

pub fn run(args: ConvertArgs) -> Result<()> {
    ensure!(args.input.exists(), "--input {} does not exist", args.input.display());
    let jobs = plan(&args)?;
    ensure!(!jobs.is_empty(), "no video files found in {}", args.input.display());
    let encoder = match args.gpu.then(nvenc_status) {
        Some(Ok(())) => "hevc_nvenc",
        Some(Err(reason)) => {
            eprintln!("{reason}: encoding on the CPU with libx265");
            "libx265"
        }
        None => "libx265",
    };
    let (mut converted, mut skipped) = (0, 0);
    for (input, output) in &jobs {
        if output.exists() && !args.force {
            eprintln!("skip {} ({} exists; --force overwrites)", input.display(), output.display());
            skipped += 1;
            continue;
        }
        if let Some(parent) = output.parent() {
            std::fs::create_dir_all(parent)?;
        }
        encode(&args, encoder, input, output)?;
        if args.extract_offsets {
            let source = media::FileSource::open(output)?;
            let index = media::probe::index(&source, &Default::default())?;
            let offsets = offsets_json(&output.display().to_string(), &index);
            let file = PathBuf::from(format!("{}.offsets.json", output.display()));
            std::fs::write(&file, serde_json::to_string_pretty(&offsets)? + "\n")?;
        }
        converted += 1;
    }
    eprintln!("converted {converted}, skipped {skipped}");
    Ok(())
}

/// Pairs each input file with its output path.
fn plan(args: &ConvertArgs) -> Result<Vec<(PathBuf, PathBuf)>> {
    if args.input.is_file() {
        let output = if args.output.is_dir() { args.output.join(mp4_name(&args.input)) } else { args.output.clone() };
        return Ok(vec![(args.input.clone(), output)]);
    }
    let mut jobs = Vec::new();
    let mut folders = vec![args.input.clone()];
    while let Some(folder) = folders.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&folder)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if args.recursive {
                    folders.push(path);
                }
                continue;
            }
            let is_video = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_video {
                let relative = path.strip_prefix(&args.input)?.parent().unwrap_or(Path::new(""));
                jobs.push((path.clone(), args.output.join(relative).join(mp4_name(&path))));
            }
        }
    }
    Ok(jobs)
}

fn mp4_name(input: &Path) -> String {
    format!("{}.mp4", input.file_stem().and_then(|s| s.to_str()).unwrap_or("video"))
}

/// Whether NVENC can encode here: the ffmpeg build must have `hevc_nvenc`
/// and an NVIDIA GPU and driver must answer (tried with one tiny frame).
fn nvenc_status() -> Result<(), String> {
    let encoders = Command::new("ffmpeg").args(["-hide_banner", "-encoders"]).output();
    let listed = encoders.is_ok_and(|output| {
        String::from_utf8_lossy(&output.stdout).lines().any(|line| line.split_whitespace().nth(1) == Some("hevc_nvenc"))
    });
    if !listed {
        return Err("this ffmpeg has no NVENC encoder (hevc_nvenc)".into());
    }
    let probe = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=size=256x256", "-frames:v", "1", "-c:v", "hevc_nvenc"])
        .args(["-f", "null", "-"])
        .output();
    match probe {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("this ffmpeg has hevc_nvenc but no usable NVIDIA GPU (no NVENC device or driver)".into()),
    }
}

fn duration_seconds(input: &Path) -> Option<f64> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1"])
        .arg(input)
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn encode(args: &ConvertArgs, encoder: &str, input: &Path, output: &Path) -> Result<()> {
    let mut filters = Vec::new();
    if let Some(factor) = args.downscale {
        filters.push(format!("scale=trunc(iw/{factor}/2)*2:trunc(ih/{factor}/2)*2"));
    }
    if let Some(fps) = args.fps {
        filters.push(format!("fps={fps}"));
    }
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostats", "-v", "error", "-y", "-i"]).arg(input);
    command.args(["-map", "0:v:0", "-an", "-c:v", encoder, "-tag:v", "hvc1", "-movflags", "+faststart"]);
    if !filters.is_empty() {
        command.args(["-vf", &filters.join(",")]);
    }
    if encoder == "libx265" {
        let mut params = format!("crf={}:log-level=error", args.crf);
        if let Some(keyint) = args.keyint {
            params.push_str(&format!(":keyint={keyint}"));
        }
        command.args(["-x265-params", &params]);
    } else {
        command.args(["-cq", &args.crf.to_string()]);
        if let Some(keyint) = args.keyint {
            command.args(["-g", &keyint.to_string()]);
        }
    }
    command.args(["-progress", "pipe:1"]).arg(output);
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot run ffmpeg")?;
    let total = duration_seconds(input).unwrap_or(0.0);
    let bar = ProgressBar::new((total * 1000.0) as u64);
    bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {percent}% eta {eta}").expect("valid template"));
    bar.set_message(input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        if let Some(micros) = line?.strip_prefix("out_time_us=") {
            bar.set_position(micros.trim().parse::<u64>().unwrap_or(0) / 1000);
        }
    }
    let result = child.wait_with_output()?;
    bar.finish_and_clear();
    if !result.status.success() {
        let _ = std::fs::remove_file(output);
        bail!("ffmpeg failed on {}: {}", input.display(), String::from_utf8_lossy(&result.stderr).trim());
    }
    eprintln!("{} → {}", input.display(), output.display());
    Ok(())
}
