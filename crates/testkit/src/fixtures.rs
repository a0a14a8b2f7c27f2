//! The test videos: shapes generated with the ffmpeg CLI (x265) on first use,
//! plus the third-party encodes in `../shared/media`.
//!
//! Generated files go to `target/fixtures` (or `$BUCKET_STREAMER_FIXTURES`)
//! and are reused while their recipe is unchanged.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Fixture {
    /// File name, also its key under a storage root.
    pub name: String,
    pub path: PathBuf,
    /// Made by this project (false: encoded by a third party).
    pub generated: bool,
}

struct Recipe {
    name: &'static str,
    /// Arguments after the inputs.
    args: &'static [&'static str],
    with_audio: bool,
    /// Made from another fixture (`-ss` seconds before `-i`, as a stream-copy
    /// cut is made) instead of from the test pattern.
    cut_from: Option<(&'static str, &'static str)>,
}

/// A fixture made from the test pattern.
const fn pattern(name: &'static str, args: &'static [&'static str], with_audio: bool) -> Recipe {
    Recipe { name, args, with_audio, cut_from: None }
}

const SOURCE: &str = "testsrc2=size=640x360:rate=25";
const SECONDS: &str = "3";

/// x265's defaults give open GOPs (CRA + leading pictures) and B-frames;
/// `keyint=24` makes several GOPs in three seconds.
const RECIPES: &[Recipe] = &[
    pattern(
        "open_gop_bframes.mp4",
        &["-c:v", "libx265", "-x265-params", "keyint=24:min-keyint=24:log-level=error"],
        true,
    ),
    pattern(
        "closed_gop_bframes.mp4",
        &["-c:v", "libx265", "-x265-params", "keyint=24:min-keyint=24:open-gop=0:log-level=error"],
        false,
    ),
    pattern("no_bframes.mp4", &["-c:v", "libx265", "-x265-params", "keyint=24:bframes=0:log-level=error"], false),
    pattern(
        "main10_bt709.mp4",
        &[
            "-pix_fmt",
            "yuv420p10le",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=24:min-keyint=24:log-level=error",
        ],
        false,
    ),
    pattern(
        "faststart.mp4",
        &["-c:v", "libx265", "-x265-params", "keyint=24:min-keyint=24:log-level=error", "-movflags", "+faststart"],
        true,
    ),
    pattern(
        "fragmented.mp4",
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=24:min-keyint=24:log-level=error",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
        ],
        false,
    ),
    pattern(
        "hvc1.mov",
        &["-c:v", "libx265", "-x265-params", "keyint=24:min-keyint=24:log-level=error", "-tag:v", "hvc1"],
        false,
    ),
    pattern(
        "annexb.h265",
        &["-c:v", "libx265", "-x265-params", "keyint=24:min-keyint=24:log-level=error", "-f", "hevc"],
        false,
    ),
    pattern(
        "full_range.mp4",
        &[
            "-pix_fmt",
            "yuvj420p",
            "-color_range",
            "pc",
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=24:bframes=0:log-level=error",
        ],
        false,
    ),
    pattern("h264.mp4", &["-c:v", "libx264", "-g", "24"], false),
    // Non-reference B-frames in a temporal sub-layer of their own (TSA_N at
    // TemporalId 1), so seeks may skip only those.
    pattern(
        "temporal_layers.mp4",
        &["-c:v", "libx265", "-x265-params", "keyint=48:min-keyint=48:temporal-layers=1:log-level=error"],
        false,
    ),
    // One 10 s group of pictures: dragging the web client's timeline over it
    // shows the keyframe until the pointer rests.
    Recipe {
        name: "long_gop.mp4",
        args: &["-t", "10", "-c:v", "libx265", "-x265-params", "keyint=250:min-keyint=250:log-level=error"],
        with_audio: false,
        cut_from: None,
    },
    // A deep B-pyramid: references several levels down between P-frames.
    pattern(
        "b_pyramid.mp4",
        &["-c:v", "libx265", "-x265-params", "keyint=48:min-keyint=48:bframes=8:b-pyramid=1:b-adapt=0:log-level=error"],
        false,
    ),
    // A stream-copy cut starts at the keyframe before the cut point; its edit
    // list hides the samples before the cut (decoded only as references).
    Recipe {
        name: "edit_list_cut.mp4",
        args: &["-an", "-c", "copy"],
        with_audio: false,
        cut_from: Some(("open_gop_bframes.mp4", "1.3")),
    },
    Recipe { name: "edit_list_cut.mov", args: &["-c", "copy"], with_audio: false, cut_from: Some(("hvc1.mov", "0.7")) },
];

pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("BUCKET_STREAMER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/fixtures"))
}

/// `../shared/media` beside the workspace (or `$BUCKET_STREAMER_SHARED_MEDIA`).
pub fn shared_media_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BUCKET_STREAMER_SHARED_MEDIA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("../shared/media"));
    dir.is_dir().then_some(dir)
}

fn make(recipe: &Recipe, dir: &Path) -> Result<PathBuf> {
    let path = dir.join(recipe.name);
    let stamp = dir.join(format!("{}.recipe", recipe.name));
    let description =
        format!("{SOURCE} {SECONDS} {:?} audio={} cut={:?}", recipe.args, recipe.with_audio, recipe.cut_from);
    if path.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == description) {
        return Ok(path);
    }
    // Unique temporary name: parallel test processes may race to make the same file.
    let extension = Path::new(recipe.name).extension().and_then(|e| e.to_str()).unwrap_or("mp4");
    let temporary = crate::unique_temporary(dir, recipe.name).with_extension(extension);
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y"]);
    if let Some((from, seconds)) = recipe.cut_from {
        let source = RECIPES.iter().find(|r| r.name == from).context("cut of an unknown fixture")?;
        command.args(["-ss", seconds, "-i"]).arg(make(source, dir)?);
    } else {
        command.args(["-f", "lavfi", "-i", SOURCE]);
        if recipe.with_audio {
            command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac", "-shortest"]);
        }
        command.args(["-t", SECONDS]);
    }
    command.args(recipe.args).arg(&temporary);
    let output = command.output().context("cannot run ffmpeg: install it (see the README)")?;
    if !output.status.success() {
        bail!("ffmpeg failed to make {}: {}", recipe.name, String::from_utf8_lossy(&output.stderr));
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::write(&stamp, description)?;
    Ok(path)
}

/// Every generated HEVC fixture (made now if missing).
pub fn generated() -> Result<Vec<Fixture>> {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir)?;
    RECIPES
        .iter()
        .filter(|recipe| recipe.name != "h264.mp4")
        .map(|recipe| Ok(Fixture { name: recipe.name.to_string(), path: make(recipe, &dir)?, generated: true }))
        .collect()
}

/// One generated fixture by name, including non-HEVC ones used for error cases.
pub fn generated_named(name: &str) -> Result<Fixture> {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir)?;
    let recipe = RECIPES.iter().find(|r| r.name == name).with_context(|| format!("no fixture named {name}"))?;
    Ok(Fixture { name: name.to_string(), path: make(recipe, &dir)?, generated: true })
}

/// The third-party files. Missing `../shared/media` fails under CI (which
/// always has it) and is reported and skipped elsewhere.
pub fn shared() -> Result<Vec<Fixture>> {
    let Some(dir) = shared_media_dir() else {
        if std::env::var_os("CI").is_some() {
            bail!("../shared/media is missing: CI must test the third-party encodes");
        }
        eprintln!("note: ../shared/media not found; third-party encodes are not tested in this run");
        return Ok(Vec::new());
    };
    let mut files: Vec<Fixture> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "mp4" || e == "265" || e == "h265"))
        .map(|path| Fixture { name: path.file_name().unwrap().to_string_lossy().into_owned(), path, generated: false })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Generated and third-party fixtures together.
pub fn all() -> Result<Vec<Fixture>> {
    let mut fixtures = generated()?;
    fixtures.extend(shared()?);
    Ok(fixtures)
}
