//! What a client asks a frame to become: a size (fit inside a box, aspect
//! kept, never upscaled), an image format and, for lossy formats, a
//! quality; and the encoding of a decoded picture into it.
//!
//! JPEG is encoded from YUV planes (`colour`, `jpeg`). PNG is lossless RGB
//! of the converted picture, for annotation and ML; WebP goes through
//! libwebp (the `webp` binding) from the same RGB. Scaling happens first,
//! on the decoded picture (`scale`).

use crate::scale;
use anyhow::Result;

/// The largest width or height a client may ask for (HEVC's level 6.2 limit is 8192 x 4320).
pub const MAX_DIMENSION: u32 = 16_384;
/// libwebp's limit on either side of a picture.
pub const MAX_WEBP_DIMENSION: u32 = 16_383;
/// WebP quality when the client names none: the lowest whose PSNR against
/// FFmpeg's decode matches JPEG's at the server's default quality, 80
/// (docs/benchmarks.md, output formats).
pub const DEFAULT_WEBP_QUALITY: u8 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Webp,
    Png,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Webp => "webp",
            Format::Png => "png",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
            Format::Png => "image/png",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "jpeg" | "jpg" => Ok(Format::Jpeg),
            "webp" => Ok(Format::Webp),
            "png" => Ok(Format::Png),
            other => Err(format!("format must be jpeg, webp or png, not {other:?}")),
        }
    }
}

/// A frame's output settings, checked. Equal settings encode equal bytes,
/// so they are part of cache keys and entity tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Output {
    pub format: Format,
    /// The box the picture must fit in; `None`: no bound on that side.
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    /// 1-100 for JPEG and WebP; 0 for PNG, which has none.
    pub quality: u8,
}

impl Output {
    /// Today's answer: a JPEG at the video's size.
    pub fn jpeg(quality: u8) -> Self {
        Self { format: Format::Jpeg, max_width: None, max_height: None, quality }
    }

    /// Checks a client's settings; `jpeg_quality` is the server's default
    /// for JPEG. The error says which setting is wrong and why.
    pub fn new(
        format: Option<Format>,
        max_width: Option<u32>,
        max_height: Option<u32>,
        quality: Option<u8>,
        jpeg_quality: u8,
    ) -> Result<Self, String> {
        for (name, value) in [("width", max_width), ("height", max_height)] {
            if let Some(value) = value.filter(|v| !(1..=MAX_DIMENSION).contains(v)) {
                return Err(format!("{name} must be 1-{MAX_DIMENSION}, not {value}"));
            }
        }
        let format = format.unwrap_or(Format::Jpeg);
        let quality = match (format, quality) {
            (Format::Png, Some(_)) => return Err("quality applies to jpeg and webp, not png (lossless)".into()),
            (Format::Png, None) => 0,
            (_, Some(q)) if !(1..=100).contains(&q) => return Err(format!("quality must be 1-100, not {q}")),
            (_, Some(q)) => q,
            (Format::Jpeg, None) => jpeg_quality,
            (Format::Webp, None) => DEFAULT_WEBP_QUALITY,
        };
        Ok(Self { format, max_width, max_height, quality })
    }

    /// Whether a `width` x `height` video's frames can be encoded with these
    /// settings; the error says what to ask for instead. Checked when the
    /// request comes, so a picture too large for WebP is a bad request, not
    /// a failed encode after its decode.
    pub fn check_size(&self, width: u32, height: u32) -> Result<(), String> {
        let (w, h) = self.size_for(width, height);
        if self.format == Format::Webp && w.max(h) > MAX_WEBP_DIMENSION {
            return Err(format!(
                "webp pictures are at most {MAX_WEBP_DIMENSION} pixels a side and these would be {w}x{h}: \
                 ask for a smaller width or height, or another format"
            ));
        }
        Ok(())
    }

    /// The size a `width` x `height` picture is encoded at: as large as fits
    /// the box with the aspect kept, never larger than it is.
    pub fn size_for(&self, width: u32, height: u32) -> (u32, u32) {
        let ratio = |bound: Option<u32>, size: u32| bound.map_or(1.0, |b| f64::from(b) / f64::from(size.max(1)));
        let scale = ratio(self.max_width, width).min(ratio(self.max_height, height));
        if scale >= 1.0 {
            return (width, height);
        }
        let side = |size: u32, bound: Option<u32>| {
            ((f64::from(size) * scale).round() as u32).clamp(1, bound.unwrap_or(u32::MAX).min(size))
        };
        (side(width, self.max_width), side(height, self.max_height))
    }
}

/// An encoded frame and the size it was encoded at.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Encodes a decoded picture as `output` says.
pub fn encode(picture: &crate::Picture, output: &Output) -> Result<Encoded> {
    let (width, height) = output.size_for(picture.width(), picture.height());
    let bytes = match output.format {
        Format::Jpeg if (width, height) == (picture.width(), picture.height()) => {
            crate::encode_jpeg(picture, output.quality)?
        }
        Format::Jpeg => crate::encode_jpeg(&scale::resize(picture, width, height)?, output.quality)?,
        Format::Png => encode_png(&scale::to_rgb(picture, width, height)?)?,
        Format::Webp => encode_webp(&scale::to_rgb(picture, width, height)?, output.quality)?,
    };
    Ok(Encoded { bytes, width, height })
}

/// Lossless PNG, compressed for speed (a frame is encoded per request), with
/// every row filtered `Up`: Pillow undoes `Up` much faster than the `Paeth`
/// rows adaptive filtering picks, so a bbb 1080p frame decodes in 53 instead
/// of 89 ms for 12 % more bytes (2.83 vs 2.53 MB). The client's decode is
/// what an ML pipeline waits for; the bytes cross a data centre's network.
fn encode_png(rgb: &crate::jpeg::Rgb) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, rgb.width as u32, rgb.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Up);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb.pixels)?;
    writer.finish()?;
    Ok(bytes)
}

fn encode_webp(rgb: &crate::jpeg::Rgb, quality: u8) -> Result<Vec<u8>> {
    let mut config = webp::WebPConfig::new().map_err(|()| anyhow::anyhow!("libwebp cannot make a configuration"))?;
    config.quality = f32::from(quality);
    config.method = WEBP_METHOD;
    let encoder = webp::Encoder::from_rgb(&rgb.pixels, rgb.width as u32, rgb.height as u32);
    let encoded = encoder.encode_advanced(&config).map_err(|error| anyhow::anyhow!("libwebp failed: {error:?}"))?;
    Ok(encoded.to_vec())
}

/// libwebp's speed/size trade-off (0 fastest, 6 smallest): its default, 4.
/// Measured on bbb 1080p at quality 90: method 0 encodes in 40 % less time
/// but its frames are 14 % larger than JPEG q80's, so WebP would buy nothing.
const WEBP_METHOD: i32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(width: Option<u32>, height: Option<u32>) -> Output {
        Output::new(None, width, height, None, 80).unwrap()
    }

    #[test]
    fn sizes_fit_the_box_keep_the_aspect_and_never_grow() {
        assert_eq!(fit(Some(1280), None).size_for(3840, 2160), (1280, 720));
        assert_eq!(fit(None, Some(360)).size_for(1920, 1080), (640, 360));
        assert_eq!(fit(Some(1000), Some(1000)).size_for(3840, 2160), (1000, 563));
        assert_eq!(fit(Some(1000), Some(100)).size_for(3840, 2160), (178, 100));
        assert_eq!(fit(Some(4000), None).size_for(1920, 1080), (1920, 1080));
        assert_eq!(fit(Some(1), Some(1)).size_for(1920, 1080), (1, 1));
        assert_eq!(fit(None, None).size_for(1920, 1080), (1920, 1080));
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        assert!(Output::new(None, Some(0), None, None, 80).unwrap_err().contains("width must be 1-16384"));
        assert!(Output::new(None, None, Some(20_000), None, 80).unwrap_err().contains("height"));
        assert!(Output::new(Some(Format::Png), None, None, Some(90), 80).unwrap_err().contains("png"));
        assert!(Output::new(Some(Format::Webp), None, None, Some(0), 80).unwrap_err().contains("1-100"));
        assert!("gif".parse::<Format>().unwrap_err().contains("jpeg, webp or png"));
    }

    #[test]
    fn a_picture_too_wide_for_webp_is_refused_before_decoding() {
        let webp = |width| Output::new(Some(Format::Webp), width, None, None, 80).unwrap();
        assert!(webp(None).check_size(16_384, 1_000).unwrap_err().contains("at most 16383"));
        assert!(webp(None).check_size(1_000, 16_384).is_err());
        assert_eq!(webp(None).check_size(16_383, 16_383), Ok(()));
        assert_eq!(webp(Some(8_192)).check_size(16_384, 1_000), Ok(()));
        assert_eq!(fit(None, None).check_size(16_384, 16_384), Ok(()));
    }

    #[test]
    fn defaults_are_today_s_jpeg() {
        assert_eq!(Output::new(None, None, None, None, 80).unwrap(), Output::jpeg(80));
        assert_eq!(Output::new(Some(Format::Png), None, None, None, 80).unwrap().quality, 0);
        assert_eq!(Output::new(Some(Format::Webp), None, None, None, 80).unwrap().quality, DEFAULT_WEBP_QUALITY);
    }
}
