//! FFmpeg's own view of a file, the yardstick for the server: packet lists
//! from `ffprobe -show_packets` and every frame decoded by the `ffmpeg` CLI.

use crate::image::{box_downscale, SmallImage};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Deserialize)]
pub struct Packet {
    #[serde(deserialize_with = "number_string")]
    pub pos: u64,
    #[serde(deserialize_with = "number_string")]
    pub size: u64,
    pub flags: String,
    pub pts: Option<i64>,
    pub dts: Option<i64>,
}

impl Packet {
    pub fn keyframe(&self) -> bool {
        self.flags.starts_with('K')
    }
}

fn number_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The video packets of `path` in file (decode) order.
pub fn packets(path: &Path) -> Result<Vec<Packet>> {
    #[derive(Deserialize)]
    struct Output {
        packets: Vec<Packet>,
    }
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pos,size,flags,pts,dts",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .context("cannot run ffprobe")?;
    if !output.status.success() {
        bail!("ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice::<Output>(&output.stdout)?.packets)
}

/// Each packet's IRAP by byte offset: the last keyframe at or before it in
/// decode order, as FFmpeg lists them.
pub fn irap_of(packets: &[Packet]) -> std::collections::HashMap<u64, u64> {
    let mut irap = None;
    packets
        .iter()
        .map(|packet| {
            if packet.keyframe() {
                irap = Some(packet.pos);
            }
            (packet.pos, irap.unwrap_or(packet.pos))
        })
        .collect()
}

/// Whether FFmpeg shows the packet (an edit list hides the ones flagged `D`).
pub fn shown(packet: &Packet) -> bool {
    !packet.flags.contains('D')
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub pix_fmt: String,
    #[serde(default)]
    pub color_space: Option<String>,
    #[serde(default)]
    pub color_range: Option<String>,
}

pub fn stream_info(path: &Path) -> Result<StreamInfo> {
    #[derive(Deserialize)]
    struct Output {
        streams: Vec<StreamInfo>,
    }
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,pix_fmt,color_space,color_range")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .context("cannot run ffprobe")?;
    let streams = serde_json::from_slice::<Output>(&output.stdout)?.streams;
    streams.into_iter().next().with_context(|| format!("{} has no video stream", path.display()))
}

/// Whether the stream's first PPS enables wavefront decoding
/// (`entropy_coding_sync_enabled_flag`), as FFmpeg's `trace_headers` reads it.
pub fn wavefront(path: &Path) -> Result<bool> {
    let output = Command::new("ffmpeg")
        .args(["-v", "trace", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-frames:v", "1", "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
        .output()
        .context("cannot run ffmpeg")?;
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find(|line| line.contains("entropy_coding_sync_enabled_flag"))
        .with_context(|| format!("no PPS traced in {}", path.display()))?;
    Ok(line.trim_end().ends_with("= 1"))
}

/// The YUV→RGB interpretation a video player applies: the stream's tags, or
/// for untagged streams BT.709 at HD sizes and BT.601 below, limited range.
pub fn player_colour(info: &StreamInfo) -> (&'static str, &'static str) {
    let matrix = match info.color_space.as_deref() {
        Some("bt709") => "bt709",
        Some("bt470bg" | "smpte170m") => "bt601",
        Some("bt2020nc" | "bt2020c") => "bt2020",
        _ if info.width >= 1280 || info.height > 576 => "bt709",
        _ => "bt601",
    };
    let full = info.color_range.as_deref() == Some("pc") || info.pix_fmt.starts_with("yuvj");
    (matrix, if full { "pc" } else { "tv" })
}

/// Every frame of the first video stream, in presentation order, as FFmpeg
/// decodes and converts it to RGB, box-downscaled by `factor` to keep memory
/// small. Cached on disk beside the fixtures, keyed by file name, size and factor.
pub fn frames(path: &Path, factor: usize) -> Result<Vec<SmallImage>> {
    let size = std::fs::metadata(path)?.len();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("video");
    let cache_dir = crate::fixtures::fixtures_dir().join("reference");
    let cache = cache_dir.join(format!("{name}.{size}.{factor}.rgb"));
    if let Some(frames) = read_cache(&cache) {
        return Ok(frames);
    }
    let frames = decode_frames(path, factor)?;
    std::fs::create_dir_all(&cache_dir)?;
    let temporary = crate::unique_temporary(&cache_dir, name);
    let mut data = Vec::new();
    for frame in &frames {
        data.extend_from_slice(&(frame.width as u32).to_le_bytes());
        data.extend_from_slice(&(frame.height as u32).to_le_bytes());
        data.extend_from_slice(&frame.pixels);
    }
    std::fs::write(&temporary, data)?;
    std::fs::rename(&temporary, &cache)?;
    Ok(frames)
}

fn read_cache(path: &Path) -> Option<Vec<SmallImage>> {
    let data = std::fs::read(path).ok()?;
    let mut frames = Vec::new();
    let mut rest = data.as_slice();
    while rest.len() >= 8 {
        let width = u32::from_le_bytes(rest[0..4].try_into().ok()?) as usize;
        let height = u32::from_le_bytes(rest[4..8].try_into().ok()?) as usize;
        let end = 8 + width * height * 3;
        let pixels = rest.get(8..end)?.to_vec();
        frames.push(SmallImage { width, height, pixels });
        rest = &rest[end..];
    }
    (!frames.is_empty()).then_some(frames)
}

fn decode_frames(path: &Path, factor: usize) -> Result<Vec<SmallImage>> {
    let info = stream_info(path)?;
    let (matrix, range) = player_colour(&info);
    let filter = format!(
        "scale=in_color_matrix={matrix}:in_range={range}:out_range=pc:flags=accurate_rnd+full_chroma_int,format=rgb24"
    );
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough", "-vf", &filter, "-f", "rawvideo", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run ffmpeg")?;
    let (width, height) = (info.width as usize, info.height as usize);
    let mut stdout = child.stdout.take().expect("piped");
    let mut buffer = vec![0u8; width * height * 3];
    let mut frames = Vec::new();
    loop {
        match stdout.read_exact(&mut buffer) {
            Ok(()) => frames.push(box_downscale(&buffer, width, height, factor)),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error.into()),
        }
    }
    if !child.wait()?.success() {
        bail!("ffmpeg failed to decode {}", path.display());
    }
    Ok(frames)
}
