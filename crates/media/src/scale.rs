//! Resizing and RGB conversion of decoded pictures with libswscale.
//!
//! Resizing keeps the picture's own pixel format (8-16 bit YUV), so it
//! happens before colour conversion and encoding, on the fewest samples;
//! the copy is tagged with the colour space and range the original is read
//! with (`colour::resolved_space`), so a smaller untagged HD picture is not
//! taken for SD. RGB conversion uses the stream's matrix and range and the
//! flags of the tests' FFmpeg reference (`accurate_rnd`, `full_chroma_int`),
//! so a lossless output is FFmpeg's own RGB within rounding.
//!
//! Why libswscale and not a filter of our own: measured in
//! docs/benchmarks.md (output formats), its area filter shrinks a 4K
//! picture to 1280 wide in a few milliseconds, a fraction of what the JPEG
//! encode of the full picture costs, with SIMD on every CPU FFmpeg knows.

use crate::colour::{is_full_range, resolved_space};
use crate::jpeg::Rgb;
use anyhow::{anyhow, ensure, Result};
use ffmpeg::format::Pixel;
use ffmpeg::frame::Video;
use ffmpeg::software::scaling::{Context, Flags};
use ffmpeg::util::color::{Range as ColourRange, Space};
use ffmpeg_next as ffmpeg;

/// The filter for shrinking: each output sample averages the input samples
/// it covers, so fine detail does not alias.
const RESIZE_FLAGS: Flags = Flags::AREA;

/// The picture at `width` x `height`, in its own pixel format.
pub fn resize(picture: &Video, width: u32, height: u32) -> Result<Video> {
    reformat(picture, picture.format(), width, height, RESIZE_FLAGS)
}

/// The picture in pixel format `format` at `width` x `height`, tagged with
/// the colour space and range it is read with.
pub fn reformat(picture: &Video, format: Pixel, width: u32, height: u32, flags: Flags) -> Result<Video> {
    ensure!(width > 0 && height > 0, "cannot scale to {width}x{height}");
    let space = resolved_space(picture.color_space(), picture.width(), picture.height());
    let range = if is_full_range(picture) { ColourRange::JPEG } else { ColourRange::MPEG };
    let mut scaler = Context::get(picture.format(), picture.width(), picture.height(), format, width, height, flags)
        .map_err(|error| anyhow!("cannot convert pixel format {:?} to {format:?}: {error}", picture.format()))?;
    let mut scaled = Video::empty();
    scaler.run(picture, &mut scaled)?;
    scaled.set_color_space(space);
    scaled.set_color_range(range);
    Ok(scaled)
}

/// The picture as tightly packed, full-range 8-bit RGB at `width` x `height`, read with its
/// matrix and range (scaling, when the size differs, in the same pass).
pub fn to_rgb(picture: &Video, width: u32, height: u32) -> Result<Rgb> {
    ensure!(width > 0 && height > 0, "cannot convert to {width}x{height}");
    let flags = if (width, height) == (picture.width(), picture.height()) { Flags::BICUBIC } else { RESIZE_FLAGS };
    let mut scaler = Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        Pixel::RGB24,
        width,
        height,
        flags | Flags::ACCURATE_RND | Flags::FULL_CHR_H_INT,
    )
    .map_err(|error| anyhow!("cannot convert pixel format {:?} to RGB: {error}", picture.format()))?;
    let matrix = match resolved_space(picture.color_space(), picture.width(), picture.height()) {
        Space::BT709 => ffmpeg::ffi::SWS_CS_ITU709,
        Space::SMPTE240M => ffmpeg::ffi::SWS_CS_SMPTE240M,
        Space::FCC => ffmpeg::ffi::SWS_CS_FCC,
        Space::BT2020NCL | Space::BT2020CL => ffmpeg::ffi::SWS_CS_BT2020,
        _ => ffmpeg::ffi::SWS_CS_ITU601,
    };
    // SAFETY: the context is valid and not in use; the coefficient tables are
    // static ones libswscale owns; 1 << 16 is neutral contrast and saturation.
    let status = unsafe {
        let coefficients = ffmpeg::ffi::sws_getCoefficients(matrix);
        ffmpeg::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            coefficients,
            i32::from(is_full_range(picture)),
            coefficients,
            1,
            0,
            1 << 16,
            1 << 16,
        )
    };
    ensure!(status >= 0, "libswscale cannot convert this colour space");
    let mut converted = Video::empty();
    scaler.run(picture, &mut converted)?;
    let row = width as usize * 3;
    let stride = converted.stride(0);
    let data = converted.data(0);
    let mut pixels = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        pixels.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(Rgb { width: width as usize, height: height as usize, pixels })
}
