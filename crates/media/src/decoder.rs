//! A libavcodec HEVC decoder fed with samples straight from the index: no
//! demuxer, parameter sets from the container's extradata.
//!
//! This file owns the FFmpeg calls (context set-up, send/receive, drain,
//! flush); the decisions about what to feed live in `player.rs`.

use crate::index::DecoderConfig;
use anyhow::{anyhow, bail, Context, Result};
use ffmpeg::codec::{self, threading};
use ffmpeg::frame::Video;
use ffmpeg_next as ffmpeg;
use std::sync::Once;

/// How libavcodec may spread one stream's decoding over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// One thread; no output delay. Best when many streams decode at once.
    Single,
    /// Frame threads: more throughput, `count - 1` frames of extra delay.
    Frame(usize),
    /// Slice threads: lower latency for one picture when slices exist.
    Slice(usize),
}

pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg::init().expect("libavcodec initialises");
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

pub struct Decoder {
    inner: ffmpeg::decoder::Video,
}

impl Decoder {
    pub fn new(config: &DecoderConfig, threads: Threading) -> Result<Self> {
        init_ffmpeg();
        let codec = ffmpeg::decoder::find(codec::Id::HEVC).context("this FFmpeg build has no HEVC decoder")?;
        let mut context = codec::Context::new_with_codec(codec);
        set_extradata(&mut context, &config.extradata);
        let (kind, count) = match threads {
            Threading::Single => (threading::Type::None, 1),
            Threading::Frame(count) => (threading::Type::Frame, count),
            Threading::Slice(count) => (threading::Type::Slice, count),
        };
        context.set_threading(threading::Config { kind, count, ..Default::default() });
        let inner = context.decoder().open_as(codec)?.video()?;
        Ok(Self { inner })
    }

    /// Sends one sample (a whole access unit) tagged with its pts.
    pub fn send(&mut self, data: &[u8], pts: i64) -> Result<()> {
        let mut packet = ffmpeg::Packet::copy(data);
        packet.set_pts(Some(pts));
        packet.set_dts(None);
        self.inner.send_packet(&packet).map_err(|error| anyhow!("the decoder rejected the sample: {error}"))
    }

    /// Returns the next decoded picture if one is ready.
    pub fn receive(&mut self) -> Option<Video> {
        let mut frame = Video::empty();
        self.inner.receive_frame(&mut frame).ok().map(|()| frame)
    }

    /// Signals the end of input so that every buffered picture comes out.
    /// The decoder accepts no more samples until `reset`.
    pub fn drain(&mut self) -> Result<()> {
        match self.inner.send_eof() {
            Ok(()) | Err(ffmpeg::Error::Eof) => Ok(()),
            Err(error) => bail!("the decoder failed to drain: {error}"),
        }
    }

    /// Drops all decoder state so decoding can restart at an IRAP. Cheaper than
    /// opening a new decoder: buffers and threads are kept.
    pub fn reset(&mut self) {
        self.inner.flush();
    }
}

fn set_extradata(context: &mut codec::Context, extradata: &[u8]) {
    let padding = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: the buffer is allocated with av_mallocz as libavcodec requires
    // (it frees it with the context), zero-padded, and sized to the copy.
    unsafe {
        let buffer = ffmpeg::ffi::av_mallocz(extradata.len() + padding) as *mut u8;
        assert!(!buffer.is_null(), "out of memory for extradata");
        std::ptr::copy_nonoverlapping(extradata.as_ptr(), buffer, extradata.len());
        let raw = context.as_mut_ptr();
        (*raw).extradata = buffer;
        (*raw).extradata_size = extradata.len() as i32;
    }
}

/// A second reference to the same decoded picture (no pixel copy).
pub fn share(frame: &Video) -> Video {
    let mut shared = Video::empty();
    // SAFETY: both pointers are valid AVFrames; av_frame_ref only adds a
    // reference to the source's refcounted buffers.
    let status = unsafe { ffmpeg::ffi::av_frame_ref(shared.as_mut_ptr(), frame.as_ptr()) };
    assert!(status >= 0, "av_frame_ref failed: out of memory");
    shared
}
