//! Converts a decoded picture into what a JPEG (JFIF) decoder expects:
//! 8-bit 4:2:0, full range, BT.601 matrix.
//!
//! Videos are usually limited range (16-235) with a BT.709 matrix; written
//! into a JPEG unchanged they look washed out and slightly off in hue in every
//! browser. One pass here maps range, matrix and bit depth (8-16 bit) at
//! once; swscale is only used first for chroma layouts other than 4:2:0.

use anyhow::{anyhow, Result};
use ffmpeg::format::Pixel;
use ffmpeg::frame::Video;
use ffmpeg::util::color::{Range as ColourRange, Space};
use ffmpeg_next as ffmpeg;

/// An 8-bit 4:2:0 full-range BT.601 picture, planes tightly packed.
pub struct JfifPlanes {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl JfifPlanes {
    pub fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Matrix {
    kr: f64,
    kb: f64,
}

const BT601: Matrix = Matrix {
    kr: 0.299,
    kb: 0.114,
};
const BT709: Matrix = Matrix {
    kr: 0.2126,
    kb: 0.0722,
};
const BT2020: Matrix = Matrix {
    kr: 0.2627,
    kb: 0.0593,
};

/// The matrix of a picture; untagged pictures get what players assume:
/// BT.709 for HD sizes, BT.601 for SD.
fn matrix_of(space: Space, width: u32, height: u32) -> Matrix {
    match space {
        Space::BT709 | Space::SMPTE240M => BT709,
        Space::BT470BG | Space::SMPTE170M | Space::FCC => BT601,
        Space::BT2020NCL | Space::BT2020CL => BT2020,
        _ if width >= 1280 || height > 576 => BT709,
        _ => BT601,
    }
}

/// `[Y, Pb, Pr] -> [R, G, B]` for a matrix.
fn to_rgb(m: Matrix) -> [[f64; 3]; 3] {
    let kg = 1.0 - m.kr - m.kb;
    [
        [1.0, 0.0, 2.0 * (1.0 - m.kr)],
        [
            1.0,
            -2.0 * (1.0 - m.kb) * m.kb / kg,
            -2.0 * (1.0 - m.kr) * m.kr / kg,
        ],
        [1.0, 2.0 * (1.0 - m.kb), 0.0],
    ]
}

/// `[R, G, B] -> [Y, Pb, Pr]` for a matrix.
fn from_rgb(m: Matrix) -> [[f64; 3]; 3] {
    let kg = 1.0 - m.kr - m.kb;
    let pb = 0.5 / (1.0 - m.kb);
    let pr = 0.5 / (1.0 - m.kr);
    [
        [m.kr, kg, m.kb],
        [-m.kr * pb, -kg * pb, (1.0 - m.kb) * pb],
        [(1.0 - m.kr) * pr, -kg * pr, -m.kb * pr],
    ]
}

fn multiply(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (row, out_row) in out.iter_mut().enumerate() {
        for (column, cell) in out_row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[row][k] * b[k][column]).sum();
        }
    }
    out
}

/// Fixed-point (16 fractional bits) mapping from source code values to JFIF code values.
struct Mapping {
    luma: Vec<i32>,
    /// Per chroma code value: contributions of Cb and Cr to Y, Cb and Cr.
    cb: Vec<[i32; 3]>,
    cr: Vec<[i32; 3]>,
}

const ONE: f64 = 65536.0;

impl Mapping {
    fn new(matrix: Matrix, full_range: bool, bit_depth: u32) -> Self {
        let codes = 1usize << bit_depth;
        let scale = f64::from(1u32 << (bit_depth - 8));
        let max = (codes - 1) as f64;
        let luma_of = |code: f64| {
            if full_range {
                code / max
            } else {
                (code - 16.0 * scale) / (219.0 * scale)
            }
        };
        let chroma_of = |code: f64| {
            if full_range {
                (code - 128.0 * scale) / max
            } else {
                (code - 128.0 * scale) / (224.0 * scale)
            }
        };
        let t = multiply(from_rgb(BT601), to_rgb(matrix));
        let luma = (0..codes)
            .map(|c| (255.0 * t[0][0] * luma_of(c as f64) * ONE).round() as i32)
            .collect();
        let column = |c: usize, index: usize| -> [i32; 3] {
            let p = chroma_of(c as f64);
            [0, 1, 2].map(|row| (255.0 * t[row][index] * p * ONE).round() as i32)
        };
        let cb = (0..codes).map(|c| column(c, 1)).collect();
        let cr = (0..codes).map(|c| column(c, 2)).collect();
        Self { luma, cb, cr }
    }
}

fn clamp_u8(value: i32) -> u8 {
    ((value + (1 << 15)) >> 16).clamp(0, 255) as u8
}

/// One row of a plane as code values, whatever the sample size.
fn read_row(plane: &[u8], stride: usize, row: usize, width: usize, wide: bool, out: &mut Vec<u16>) {
    out.clear();
    let start = row * stride;
    if wide {
        let bytes = &plane[start..start + width * 2];
        out.extend(
            bytes
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]])),
        );
    } else {
        out.extend(plane[start..start + width].iter().map(|&b| u16::from(b)));
    }
}

/// Converts a decoded picture to JFIF planes.
pub fn to_jfif(frame: &Video) -> Result<JfifPlanes> {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let full_range = frame.color_range() == ColourRange::JPEG
        || matches!(
            frame.format(),
            Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P
        );
    let matrix = matrix_of(frame.color_space(), frame.width(), frame.height());
    let bit_depth = match frame.format() {
        Pixel::YUV420P | Pixel::YUVJ420P => 8,
        Pixel::YUV420P10LE => 10,
        Pixel::YUV420P12LE => 12,
        Pixel::YUV420P16LE => 16,
        _ => {
            let converted = to_yuv420(frame, full_range)?;
            return convert(&converted, width, height, matrix, full_range, 8);
        }
    };
    convert(frame, width, height, matrix, full_range, bit_depth)
}

fn convert(
    frame: &Video,
    width: usize,
    height: usize,
    matrix: Matrix,
    full_range: bool,
    bit_depth: u32,
) -> Result<JfifPlanes> {
    let mapping = Mapping::new(matrix, full_range, bit_depth);
    let wide = bit_depth > 8;
    let chroma_width = width.div_ceil(2);
    let chroma_height = height.div_ceil(2);
    let mut out = JfifPlanes {
        width,
        height,
        y: vec![0; width * height],
        u: vec![0; chroma_width * chroma_height],
        v: vec![0; chroma_width * chroma_height],
    };
    let (mut cb_row, mut cr_row, mut y_row) = (Vec::new(), Vec::new(), Vec::new());
    let mut luma_offset = vec![0i32; chroma_width];
    let mask = (1u16 << bit_depth) - 1;
    for chroma_y in 0..chroma_height {
        read_row(
            frame.data(1),
            frame.stride(1),
            chroma_y,
            chroma_width,
            wide,
            &mut cb_row,
        );
        read_row(
            frame.data(2),
            frame.stride(2),
            chroma_y,
            chroma_width,
            wide,
            &mut cr_row,
        );
        let out_row = chroma_y * chroma_width;
        for x in 0..chroma_width {
            let cb = mapping.cb[(cb_row[x] & mask) as usize];
            let cr = mapping.cr[(cr_row[x] & mask) as usize];
            luma_offset[x] = cb[0] + cr[0];
            out.u[out_row + x] = clamp_u8((128 << 16) + cb[1] + cr[1]);
            out.v[out_row + x] = clamp_u8((128 << 16) + cb[2] + cr[2]);
        }
        for y in (chroma_y * 2)..((chroma_y * 2 + 2).min(height)) {
            read_row(frame.data(0), frame.stride(0), y, width, wide, &mut y_row);
            let out_row = &mut out.y[y * width..(y + 1) * width];
            for (x, (out_pixel, &code)) in out_row.iter_mut().zip(&y_row).enumerate() {
                *out_pixel = clamp_u8(mapping.luma[(code & mask) as usize] + luma_offset[x / 2]);
            }
        }
    }
    Ok(out)
}

/// Resamples other chroma layouts and bit depths to 8-bit 4:2:0, keeping the range.
fn to_yuv420(frame: &Video, full_range: bool) -> Result<Video> {
    let target = if full_range {
        Pixel::YUVJ420P
    } else {
        Pixel::YUV420P
    };
    let mut scaler = ffmpeg::software::scaling::Context::get(
        frame.format(),
        frame.width(),
        frame.height(),
        target,
        frame.width(),
        frame.height(),
        ffmpeg::software::scaling::Flags::BILINEAR,
    )
    .map_err(|error| anyhow!("cannot convert pixel format {:?}: {error}", frame.format()))?;
    let mut converted = Video::empty();
    scaler.run(frame, &mut converted)?;
    converted.set_color_range(frame.color_range());
    converted.set_color_space(frame.color_space());
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_for_full_range_bt601() {
        let mapping = Mapping::new(BT601, true, 8);
        assert_eq!(clamp_u8(mapping.luma[200]), 200);
        let cb = mapping.cb[60];
        let cr = mapping.cr[200];
        assert_eq!(clamp_u8((128 << 16) + cb[1] + cr[1]), 60);
        assert_eq!(clamp_u8((128 << 16) + cb[2] + cr[2]), 200);
        assert_eq!(clamp_u8(mapping.luma[100] + cb[0] + cr[0]), 100);
    }

    #[test]
    fn limited_range_is_expanded() {
        let mapping = Mapping::new(BT709, false, 8);
        assert_eq!(clamp_u8(mapping.luma[16]), 0);
        assert_eq!(clamp_u8(mapping.luma[235]), 255);
        let ten_bit = Mapping::new(BT709, false, 10);
        assert_eq!(clamp_u8(ten_bit.luma[940]), 255);
        assert_eq!(clamp_u8(ten_bit.luma[64]), 0);
    }

    #[test]
    fn bt709_red_stays_red() {
        // Pure red in limited-range BT.709: Y=63, Cb=102, Cr=240.
        let mapping = Mapping::new(BT709, false, 8);
        let (cb, cr) = (mapping.cb[102], mapping.cr[240]);
        let y = clamp_u8(mapping.luma[63] + cb[0] + cr[0]);
        let u = clamp_u8((128 << 16) + cb[1] + cr[1]);
        let v = clamp_u8((128 << 16) + cb[2] + cr[2]);
        // Full-range BT.601 red is Y=76, Cb=85, Cr=255.
        assert!((i32::from(y) - 76).abs() <= 1, "{y}");
        assert!((i32::from(u) - 85).abs() <= 1, "{u}");
        assert!(v >= 254, "{v}");
    }
}
