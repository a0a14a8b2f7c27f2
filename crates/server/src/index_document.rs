//! The frame index as served at `/api/v1/videos/{path}/index`: frames in
//! presentation order, a superset of the Stage 1 offsets file. Serialised
//! from typed rows straight to bytes (a JSON value tree of a long video's
//! frames would cost tens of megabytes), once per open video.

use crate::channel::Channel;
use bytes::Bytes;
use media::Container;
use serde::Serialize;

#[derive(Serialize)]
struct Document<'a> {
    path: &'a str,
    video_url: &'a str,
    container: Container,
    codec: &'a str,
    width: u32,
    height: u32,
    frame_rate: f64,
    timescale: u32,
    frame_count: usize,
    object_size: u64,
    frames: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    index: u32,
    /// `pts` is the presentation timestamp after the edit list, in `timescale` units.
    offset: u64,
    irap_offset: u64,
    size: u32,
    pts: i64,
    /// Seconds from the first frame shown, as a player's clock counts.
    time: f64,
    keyframe: bool,
}

pub fn render(channel: &Channel) -> Bytes {
    let index = &channel.index;
    let timescale = f64::from(index.timescale);
    let first_time = index.frame(0).map_or(0, |(_, sample)| sample.time);
    let frames = index
        .presentation_order
        .iter()
        .enumerate()
        .map(|(number, &position)| {
            let sample = index.sample(position);
            Row {
                index: number as u32,
                offset: sample.offset,
                irap_offset: index.sample(sample.irap).offset,
                size: sample.size,
                pts: sample.time,
                time: (sample.time - first_time) as f64 / timescale,
                keyframe: sample.keyframe,
            }
        })
        .collect::<Vec<_>>();
    let document = Document {
        path: &channel.path.text,
        video_url: &channel.url,
        container: index.container,
        codec: index.codec,
        width: index.width,
        height: index.height,
        frame_rate: index.frame_rate(),
        timescale: index.timescale,
        frame_count: frames.len(),
        object_size: index.object_size,
        frames,
    };
    Bytes::from(serde_json::to_vec(&document).expect("the index serialises"))
}
