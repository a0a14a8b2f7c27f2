//! bucket-streamer's media core: find frames in a container, decode them with
//! libavcodec, and turn them into JPEGs. Synchronous and free of network code,
//! so it can be tested and benchmarked on its own.
//!
//! Flow: [`probe::index`] builds a [`VideoIndex`] from byte ranges;
//! [`Player`] decodes a sample given the bytes from its IRAP;
//! [`output::encode`] scales the picture and encodes it as JPEG, WebP or
//! PNG ([`encode_jpeg`]: a JPEG at the picture's size).

mod annexb;
mod bits;
pub mod budget;
pub mod colour;
pub mod decoder;
pub mod hevc;
pub mod index;
pub mod jpeg;
mod mp4;
pub mod output;
pub mod player;
pub mod probe;
pub mod scale;
pub mod source;
pub mod sprite;

pub use budget::{Budget, Corrupt, OverBudget};
pub use decoder::Threading;
pub use ffmpeg_next::frame::Video as Picture;
pub use index::{Container, Sample, VideoIndex};
pub use player::{DecodeError, Player, Span};
pub use source::{FileSource, MemorySource, RangeRead};

/// Converts a decoded picture to a JPEG at `quality` (1-100).
pub fn encode_jpeg(picture: &Picture, quality: u8) -> anyhow::Result<Vec<u8>> {
    jpeg::encode(&colour::to_jfif(picture)?, quality)
}
