//! `bucket-streamer index <video>`: writes the Stage 1 offsets JSON of a
//! local file or an `s3://bucket/key` object, reading only the container
//! header. Frames are listed in decode (file) order, exactly as
//! `ffprobe -show_packets` lists packets, with each frame's presentation
//! number as `index`.

use anyhow::{Context, Result};
use clap::Args;
use media::{FileSource, RangeRead, VideoIndex};
use serde_json::json;
use server::config::S3Args;
use server::storage::{BlockingObject, Storage};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// A local file, or s3://bucket/key.
    pub video: String,

    /// Write the JSON here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: IndexArgs) -> Result<()> {
    let (url, index) = match args.video.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').context("an S3 URL looks like s3://bucket/key")?;
            let storage = Arc::new(Storage::s3(bucket, &args.s3, Duration::from_secs(60))?);
            let path = storage.parse_path(key)?;
            let size = storage.head(&path).await?.size;
            let object = BlockingObject { storage, path, size, runtime: tokio::runtime::Handle::current() };
            (args.video.clone(), tokio::task::spawn_blocking(move || index_of(&object)).await??)
        }
        None => {
            let path = PathBuf::from(&args.video);
            let source = FileSource::open(&path)?;
            let url = path.canonicalize().map_or(args.video.clone(), |p| p.display().to_string());
            (url, index_of(&source)?)
        }
    };
    let text = serde_json::to_string_pretty(&offsets_json(&url, &index))?;
    match &args.output {
        Some(file) => std::fs::write(file, text + "\n").with_context(|| format!("cannot write {}", file.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

fn index_of(source: &dyn RangeRead) -> Result<VideoIndex> {
    media::probe::index(source, &Default::default())
}

/// The Stage 1 offsets file (frames in decode order), with presentation
/// number, pts (after the edit list), keyframe and size added. Samples an
/// edit list hides are not frames and are left out.
pub fn offsets_json(url: &str, index: &VideoIndex) -> serde_json::Value {
    let frames: Vec<_> = index
        .samples
        .iter()
        .filter(|sample| sample.shown)
        .map(|sample| {
            json!({
                "offset": sample.offset,
                "irap_offset": index.sample(sample.irap).offset,
                "index": sample.presentation,
                "size": sample.size,
                "pts": sample.time,
                "keyframe": sample.keyframe,
            })
        })
        .collect();
    json!({
        "video_url": url,
        "width": index.width,
        "height": index.height,
        "timescale": index.timescale,
        "frame_rate": index.frame_rate(),
        "frames": frames,
    })
}
