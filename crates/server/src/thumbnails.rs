//! Thumbnail strips for a timeline (`/api/v1/thumbnails`): evenly spaced
//! keyframes of a video, each decoded on its own (a keyframe references no
//! other picture, so no group of pictures is decoded), scaled to a tile of
//! the video's aspect and laid out in one JPEG sprite, with a map of which
//! frame is where. A strip is made once per video, tile width and count
//! (single-flight) and kept with the video's channel (`Channel::thumbnails`).

use crate::channel::{Channel, Failure, FrameFailure};
use crate::memory_budget::{Holder, MemoryBudget, Reservation};
use crate::urgency::Urgency;
use bytes::Bytes;
use futures_util::StreamExt;
use media::sprite::Sprite;
use media::VideoIndex;
use serde::Serialize;
use std::sync::{Arc, Mutex};

pub const DEFAULT_WIDTH: u32 = 160;
pub const MAX_WIDTH: u32 = 480;
pub const DEFAULT_COUNT: u32 = 100;
pub const MAX_COUNT: u32 = 400;
/// Tiles per row of the sprite.
const COLUMNS: u32 = 10;
const QUALITY: u8 = 75;
/// Keyframes read and decoded at once (the decode pool spreads them over the cores).
const AT_ONCE: usize = 8;
/// How long a strip's decodes give requested frames precedence.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a client asked of a strip, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StripSpec {
    /// Tile width in pixels (the height follows the video's aspect).
    pub width: u32,
    /// At most this many tiles (fewer when the video has fewer keyframes).
    pub count: u32,
}

impl StripSpec {
    pub fn new(width: Option<u32>, count: Option<u32>) -> Result<Self, String> {
        let width = width.unwrap_or(DEFAULT_WIDTH);
        let count = count.unwrap_or(DEFAULT_COUNT);
        if !(16..=MAX_WIDTH).contains(&width) {
            return Err(format!("width must be 16-{MAX_WIDTH}, not {width}"));
        }
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(format!("count must be 1-{MAX_COUNT}, not {count}"));
        }
        Ok(Self { width, count })
    }
}

/// Where one frame's tile lies in the sprite.
#[derive(Debug, Clone, Serialize)]
pub struct Tile {
    /// Presentation-order frame number.
    pub frame: u32,
    /// Seconds from the first frame.
    pub time: f64,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A made strip: the sprite JPEG and its map.
pub struct Strip {
    pub sprite: Bytes,
    pub width: u32,
    pub height: u32,
    pub tiles: Vec<Tile>,
}

/// Frame numbers of up to `count` keyframes spread evenly over the video's
/// time: for each of `count` equal stretches, the keyframe nearest its middle.
pub fn choose(index: &VideoIndex, count: u32) -> Vec<u32> {
    let keyframes: Vec<(u32, i64)> = (0..index.frame_count() as u32)
        .filter_map(|n| index.frame(n).filter(|(_, sample)| sample.keyframe).map(|(_, sample)| (n, sample.time)))
        .collect();
    let (Some(&(_, first)), Some(&(_, last))) = (keyframes.first(), keyframes.last()) else { return Vec::new() };
    let span = i128::from(last) - i128::from(first);
    let mut chosen: Vec<u32> = Vec::new();
    for stretch in 0..i128::from(count) {
        let target = i128::from(first) + span * (2 * stretch + 1) / (2 * i128::from(count));
        let after = keyframes.partition_point(|&(_, time)| i128::from(time) < target);
        let nearest = [after.checked_sub(1), Some(after)]
            .into_iter()
            .flatten()
            .filter_map(|i| keyframes.get(i))
            .min_by_key(|&&(_, time)| (i128::from(time) - target).abs())
            .expect("there is a keyframe");
        if chosen.last() != Some(&nearest.0) {
            chosen.push(nearest.0);
        }
    }
    chosen
}

/// Holds the sprite's planes (78 MB for 400 tiles 480 wide) against the
/// memory budget until the strip is encoded; `busy` when they do not fit.
fn reserve_planes(
    budget: &Arc<MemoryBudget>,
    count: u32,
    tile_width: u32,
    tile_height: u32,
) -> Result<Reservation, FrameFailure> {
    let needed = Sprite::memory_needed(count, COLUMNS, tile_width, tile_height);
    budget.reserve(Holder::Thumbnails, needed).ok_or_else(|| {
        MemoryBudget::refused(Holder::Thumbnails);
        FrameFailure::new(
            Failure::Busy,
            "no memory for a thumbnail strip now: the memory budget is full; try again later",
        )
    })
}

/// Makes the strip of `spec` for the channel's video. A keyframe that
/// cannot be decoded is left out of the map (its tile stays black).
pub async fn make(channel: &Arc<Channel>, spec: StripSpec) -> Result<Strip, FrameFailure> {
    let index = &channel.index;
    let frames = choose(index, spec.count);
    let encode_failed = |e: String| FrameFailure::new(Failure::EncodeFailed, e);
    if frames.is_empty() {
        return Err(FrameFailure::new(Failure::NotAFrame, "the video has no keyframe"));
    }
    let even = |n: u32| (n / 2 * 2).max(2);
    let tile_width = even(spec.width.min(index.width));
    let tile_height = even((u64::from(tile_width) * u64::from(index.height) / u64::from(index.width.max(1))) as u32);
    let count = frames.len() as u32;
    let _memory = reserve_planes(channel.memory(), count, tile_width, tile_height)?;
    let sprite = Sprite::new(count, COLUMNS, tile_width, tile_height).map_err(|e| encode_failed(e.to_string()))?;
    let sprite = Arc::new(Mutex::new(sprite));
    let timescale = f64::from(index.timescale.max(1));
    let first_time = index.frame(0).map_or(0, |(_, sample)| sample.time);
    // Behind every frame a client waits for: a strip is a hover aid, the
    // picture on screen comes first (a keyframe decode is one sample); but
    // a client asked for it, so a busy pod's requests hold it back only so long.
    let urgency = Urgency::ahead_for(PATIENCE);
    let mut decoded = futures_util::stream::iter(frames.iter().copied().enumerate())
        .map(|(n, frame)| {
            let urgency = urgency.clone();
            async move {
                let (position, _) = channel.index.frame(frame).expect("a chosen frame");
                (n as u32, frame, channel.decode(position, None, None, urgency).await)
            }
        })
        .buffered(AT_ONCE);
    let mut tiles = Vec::with_capacity(frames.len());
    while let Some((n, frame, picture)) = decoded.next().await {
        let picture = match picture {
            Ok(picture) => picture,
            Err(failure) => {
                tracing::debug!(frame, "a thumbnail's keyframe failed: {}", failure.message);
                continue;
            }
        };
        let pasting = sprite.clone();
        tokio::task::spawn_blocking(move || pasting.lock().expect("sprite lock").paste(n, &picture))
            .await
            .map_err(|e| encode_failed(format!("thumbnail thread failed: {e}")))?
            .map_err(|e| encode_failed(format!("{e:#}")))?;
        let (x, y) = sprite.lock().expect("sprite lock").place(n);
        let time = index.frame(frame).map_or(0, |(_, sample)| sample.time);
        tiles.push(Tile { frame, time: (time - first_time) as f64 / timescale, x, y, w: tile_width, h: tile_height });
    }
    let (sprite, width, height) =
        tokio::task::spawn_blocking(move || sprite.lock().expect("sprite lock").encode(QUALITY))
            .await
            .map_err(|e| encode_failed(format!("thumbnail thread failed: {e}")))?
            .map_err(|e| encode_failed(format!("{e:#}")))?;
    Ok(Strip { sprite: Bytes::from(sprite), width, height, tiles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_strip_s_planes_are_held_against_the_budget_or_refused_busy() {
        let largest = Sprite::memory_needed(MAX_COUNT, COLUMNS, MAX_WIDTH, MAX_WIDTH * 9 / 16);
        assert!(largest > 70 << 20, "{largest} bytes");
        let (small, _) = MemoryBudget::new(64 << 20, 0);
        let refused = reserve_planes(&small, MAX_COUNT, MAX_WIDTH, MAX_WIDTH * 9 / 16).err().expect("refused");
        assert_eq!(refused.failure, Failure::Busy);
        assert_eq!(small.held(), 0, "a refusal holds nothing");
        let (roomy, _) = MemoryBudget::new(256 << 20, 0);
        let held = reserve_planes(&roomy, MAX_COUNT, MAX_WIDTH, MAX_WIDTH * 9 / 16).expect("fits");
        assert_eq!(roomy.held(), largest);
        drop(held);
        assert_eq!(roomy.held(), 0, "given back once the strip is encoded");
    }
}
