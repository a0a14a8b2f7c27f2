//! `bucket-streamer limit <file>`: what one core spends per frame on this
//! machine with the libraries the server uses: libavcodec decode (one
//! thread), the JFIF colour conversion, and libjpeg-turbo encode from YUV.
//! The benchmark script divides the cores by the decode + encode cost to get
//! the hardware limit the server is measured against.

use anyhow::{Context, Result};
use media::decoder::Decoder;
use media::{FileSource, RangeRead, Threading};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Limit {
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub decode_ms_per_frame: f64,
    pub convert_ms_per_frame: f64,
    pub encode_ms_per_frame: f64,
    pub jpeg_quality: u8,
}

pub fn measure(path: &Path, max_frames: usize, quality: u8) -> Result<Limit> {
    let source = FileSource::open(path)?;
    let index = media::probe::index(&source, &Default::default())
        .with_context(|| format!("cannot index {}", path.display()))?;
    let mut decoder = Decoder::new(&index.decoder, Threading::Single)?;
    let (mut decode, mut convert, mut encode) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut frames = 0;
    let mut handle = |picture: media::Picture| -> Result<()> {
        let started = Instant::now();
        let planes = media::colour::to_jfif(&picture)?;
        let converted = Instant::now();
        std::hint::black_box(media::jpeg::encode(&planes, quality)?);
        convert += converted - started;
        encode += converted.elapsed();
        frames += 1;
        Ok(())
    };
    // Decode time covers send + receive; conversion and encoding are timed apart.
    let mut timed_decode =
        |decoder: &mut Decoder, step: &dyn Fn(&mut Decoder) -> Result<()>| -> Result<Vec<media::Picture>> {
            let started = Instant::now();
            step(decoder)?;
            let pictures = std::iter::from_fn(|| decoder.receive()).collect();
            decode += started.elapsed();
            Ok(pictures)
        };
    for sample in index.samples.iter().take(max_frames) {
        let bytes = source.read_range(sample.offset, u64::from(sample.size))?;
        for picture in timed_decode(&mut decoder, &|d| d.send(&bytes, sample.pts))? {
            handle(picture)?;
        }
    }
    for picture in timed_decode(&mut decoder, &|d| d.drain())? {
        handle(picture)?;
    }
    let per_frame = |total: Duration| total.as_secs_f64() * 1000.0 / frames.max(1) as f64;
    Ok(Limit {
        frames,
        width: index.width,
        height: index.height,
        decode_ms_per_frame: per_frame(decode),
        convert_ms_per_frame: per_frame(convert),
        encode_ms_per_frame: per_frame(encode),
        jpeg_quality: quality,
    })
}
