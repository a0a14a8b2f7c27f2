//! Converts a decoded picture into what a JPEG (JFIF) decoder expects:
//! 8-bit 4:2:0, full range, BT.601 matrix.
//!
//! Videos are usually limited range (16-235) with a BT.709 matrix; written
//! into a JPEG unchanged they look washed out and slightly off in hue in every
//! browser. One pass here maps range, matrix and bit depth (8-16 bit) at
//! once; swscale is only used first for chroma layouts other than 4:2:0.

use anyhow::Result;
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

const BT601: Matrix = Matrix { kr: 0.299, kb: 0.114 };
const BT709: Matrix = Matrix { kr: 0.2126, kb: 0.0722 };
const BT2020: Matrix = Matrix { kr: 0.2627, kb: 0.0593 };

/// The matrix of a picture.
fn matrix_of(space: Space, width: u32, height: u32) -> Matrix {
    match resolved_space(space, width, height) {
        Space::BT709 | Space::SMPTE240M => BT709,
        Space::BT2020NCL | Space::BT2020CL => BT2020,
        _ => BT601,
    }
}

/// The colour space a picture of this tag and size is read with: its tag,
/// or what players assume for untagged pictures, BT.709 for HD sizes and
/// BT.601 for SD. A scaled copy is tagged with it, so its new size does not
/// change the guess.
pub fn resolved_space(space: Space, width: u32, height: u32) -> Space {
    match space {
        Space::BT709
        | Space::SMPTE240M
        | Space::BT470BG
        | Space::SMPTE170M
        | Space::FCC
        | Space::BT2020NCL
        | Space::BT2020CL => space,
        _ if width >= 1280 || height > 576 => Space::BT709,
        _ => Space::BT470BG,
    }
}

/// Whether a picture's samples use the full range (else the limited 16-235).
pub fn is_full_range(frame: &Video) -> bool {
    frame.color_range() == ColourRange::JPEG
        || matches!(frame.format(), Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P)
}

/// `[Y, Pb, Pr] -> [R, G, B]` for a matrix.
fn to_rgb(m: Matrix) -> [[f64; 3]; 3] {
    let kg = 1.0 - m.kr - m.kb;
    [
        [1.0, 0.0, 2.0 * (1.0 - m.kr)],
        [1.0, -2.0 * (1.0 - m.kb) * m.kb / kg, -2.0 * (1.0 - m.kr) * m.kr / kg],
        [1.0, 2.0 * (1.0 - m.kb), 0.0],
    ]
}

/// `[R, G, B] -> [Y, Pb, Pr]` for a matrix.
fn from_rgb(m: Matrix) -> [[f64; 3]; 3] {
    let kg = 1.0 - m.kr - m.kb;
    let pb = 0.5 / (1.0 - m.kb);
    let pr = 0.5 / (1.0 - m.kr);
    [[m.kr, kg, m.kb], [-m.kr * pb, -kg * pb, (1.0 - m.kb) * pb], [(1.0 - m.kr) * pr, -kg * pr, -m.kb * pr]]
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

/// The conversion as fixed-point (16 fractional bits) linear coefficients on
/// source code values: luma gain and black level, and the contributions of
/// Cb and Cr (centred) to the output Y, Cb and Cr.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    luma_gain: i32,
    luma_black: i32,
    chroma_mid: i32,
    /// `[to Y, to Cb, to Cr]` per unit of centred Cb and Cr.
    from_cb: [i32; 3],
    from_cr: [i32; 3],
}

const ONE: f64 = 65536.0;
const HALF: i32 = 1 << 15;

impl Coefficients {
    fn new(matrix: Matrix, full_range: bool, bit_depth: u32) -> Self {
        let scale = f64::from(1u32 << (bit_depth - 8));
        let max = f64::from((1u32 << bit_depth) - 1);
        let (luma_black, luma_span, chroma_span) =
            if full_range { (0.0, max, max) } else { (16.0 * scale, 219.0 * scale, 224.0 * scale) };
        // t maps (Y, Pb, Pr) of the source matrix to those of BT.601; t[0][0] = 1.
        let t = multiply(from_rgb(BT601), to_rgb(matrix));
        let fixed = |value: f64| (value * ONE).round() as i32;
        let chroma = |column: usize| [0, 1, 2].map(|row| fixed(255.0 * t[row][column] / chroma_span));
        Self {
            luma_gain: fixed(255.0 * t[0][0] / luma_span),
            luma_black: luma_black as i32,
            chroma_mid: (128.0 * scale) as i32,
            from_cb: chroma(1),
            from_cr: chroma(2),
        }
    }

    /// Output chroma: `row` 1 for Cb, 2 for Cr, from source Cb and Cr codes.
    #[inline(always)]
    fn chroma(&self, row: usize, cb: i32, cr: i32) -> u8 {
        let (cb, cr) = (cb - self.chroma_mid, cr - self.chroma_mid);
        clamp_u8((128 << 16) + HALF + self.from_cb[row] * cb + self.from_cr[row] * cr)
    }

    /// What a chroma sample adds to its luma samples (rounding and black level folded in).
    #[inline(always)]
    fn luma_offset(&self, cb: i32, cr: i32) -> i32 {
        let (cb, cr) = (cb - self.chroma_mid, cr - self.chroma_mid);
        HALF - self.luma_gain * self.luma_black + self.from_cb[0] * cb + self.from_cr[0] * cr
    }

    /// Output luma from a source luma code and its chroma's offset.
    #[inline(always)]
    fn luma(&self, code: i32, offset: i32) -> u8 {
        clamp_u8(self.luma_gain * code + offset)
    }
}

#[inline(always)]
fn clamp_u8(value: i32) -> u8 {
    (value >> 16).clamp(0, 255) as u8
}

/// A plane sample: 8-bit, or 16-bit little-endian holding 9-16 bits.
trait Code: Copy {
    fn value(self) -> i32;
}

impl Code for u8 {
    #[inline(always)]
    fn value(self) -> i32 {
        i32::from(self)
    }
}

impl Code for u16 {
    #[inline(always)]
    fn value(self) -> i32 {
        i32::from(self)
    }
}

/// One plane of a picture viewed as rows of samples of type `T`.
struct Plane<'a, T> {
    samples: &'a [T],
    /// Row pitch in samples.
    stride: usize,
}

impl<'a, T: Code> Plane<'a, T> {
    fn of(frame: &'a Video, index: usize) -> Self {
        let bytes = frame.data(index);
        // SAFETY: every bit pattern is a valid u8/u16; `align_to` only returns
        // the middle part for addresses aligned to T, and FFmpeg aligns planes.
        let (head, samples, _) = unsafe { bytes.align_to::<T>() };
        assert!(head.is_empty(), "FFmpeg planes are aligned");
        Self { samples, stride: frame.stride(index) / std::mem::size_of::<T>() }
    }

    fn row(&self, row: usize, width: usize) -> &'a [T] {
        &self.samples[row * self.stride..row * self.stride + width]
    }
}

/// The conversion loops compiled for AVX2 (8 lanes of 32-bit multiplies);
/// the baseline x86-64 build has no vector 32-bit multiply and runs them
/// several times slower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn convert_planes_avx2<T: Code>(frame: &Video, width: usize, height: usize, k: Coefficients) -> JfifPlanes {
    convert_planes::<T>(frame, width, height, k)
}

/// Runs the conversion with the best instruction set this CPU has.
fn convert_planes_fastest<T: Code>(frame: &Video, width: usize, height: usize, k: Coefficients) -> JfifPlanes {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { convert_planes_avx2::<T>(frame, width, height, k) };
    }
    convert_planes::<T>(frame, width, height, k)
}

#[inline(always)]
fn convert_planes<T: Code>(frame: &Video, width: usize, height: usize, k: Coefficients) -> JfifPlanes {
    let chroma_width = width.div_ceil(2);
    let chroma_height = height.div_ceil(2);
    let mut out = JfifPlanes {
        width,
        height,
        y: vec![0; width * height],
        u: vec![0; chroma_width * chroma_height],
        v: vec![0; chroma_width * chroma_height],
    };
    // Per luma column, what the co-sited chroma sample adds to it.
    let mut row_offset = vec![0i32; chroma_width * 2];
    let (luma, cb, cr) = (Plane::<T>::of(frame, 0), Plane::<T>::of(frame, 1), Plane::<T>::of(frame, 2));
    // Simple element-wise loops over two or three slices, which the compiler vectorises.
    for chroma_y in 0..chroma_height {
        let (cb_row, cr_row) = (cb.row(chroma_y, chroma_width), cr.row(chroma_y, chroma_width));
        let rows = chroma_y * chroma_width..(chroma_y + 1) * chroma_width;
        for (row, target) in [(1, &mut out.u[rows.clone()]), (2, &mut out.v[rows])] {
            for ((out, &b), &r) in target.iter_mut().zip(cb_row).zip(cr_row) {
                *out = k.chroma(row, b.value(), r.value());
            }
        }
        for ((pair, &b), &r) in row_offset.chunks_exact_mut(2).zip(cb_row).zip(cr_row) {
            let offset = k.luma_offset(b.value(), r.value());
            pair[0] = offset;
            pair[1] = offset;
        }
        for y in (chroma_y * 2)..((chroma_y * 2 + 2).min(height)) {
            let source = luma.row(y, width);
            let target = &mut out.y[y * width..(y + 1) * width];
            for ((out, &code), &offset) in target.iter_mut().zip(source).zip(&row_offset) {
                *out = k.luma(code.value(), offset);
            }
        }
    }
    out
}

/// Converts a decoded picture to JFIF planes.
pub fn to_jfif(frame: &Video) -> Result<JfifPlanes> {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let full_range = is_full_range(frame);
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
    let coefficients = Coefficients::new(matrix, full_range, bit_depth);
    Ok(if bit_depth > 8 {
        convert_planes_fastest::<u16>(frame, width, height, coefficients)
    } else {
        convert_planes_fastest::<u8>(frame, width, height, coefficients)
    })
}

/// Resamples other chroma layouts and bit depths to 8-bit 4:2:0, keeping the range.
fn to_yuv420(frame: &Video, full_range: bool) -> Result<Video> {
    let target = if full_range { Pixel::YUVJ420P } else { Pixel::YUV420P };
    let flags = ffmpeg::software::scaling::Flags::BILINEAR;
    crate::scale::reformat(frame, target, frame.width(), frame.height(), flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(k: &Coefficients, y: i32, cb: i32, cr: i32) -> (u8, u8, u8) {
        (k.luma(y, k.luma_offset(cb, cr)), k.chroma(1, cb, cr), k.chroma(2, cb, cr))
    }

    #[test]
    fn identity_for_full_range_bt601() {
        let k = Coefficients::new(BT601, true, 8);
        assert_eq!(apply(&k, 200, 60, 200), (200, 60, 200));
        assert_eq!(apply(&k, 0, 128, 128), (0, 128, 128));
        assert_eq!(apply(&k, 255, 255, 0), (255, 255, 0));
    }

    #[test]
    fn limited_range_is_expanded() {
        let k = Coefficients::new(BT709, false, 8);
        assert_eq!(apply(&k, 16, 128, 128), (0, 128, 128));
        assert_eq!(apply(&k, 235, 128, 128), (255, 128, 128));
        let ten_bit = Coefficients::new(BT709, false, 10);
        assert_eq!(apply(&ten_bit, 940, 512, 512), (255, 128, 128));
        assert_eq!(apply(&ten_bit, 64, 512, 512), (0, 128, 128));
    }

    #[test]
    fn bt709_red_stays_red() {
        // Pure red in limited-range BT.709 is Y=63, Cb=102, Cr=240;
        // in full-range BT.601 it is Y=76, Cb=85, Cr=255.
        let (y, u, v) = apply(&Coefficients::new(BT709, false, 8), 63, 102, 240);
        assert!((i32::from(y) - 76).abs() <= 1, "{y}");
        assert!((i32::from(u) - 85).abs() <= 1, "{u}");
        assert!(v >= 254, "{v}");
    }

    /// A flat picture of `format` with these sample values in every plane.
    fn flat(format: Pixel, values: [u8; 3]) -> Video {
        let mut frame = Video::new(format, 64, 48);
        for (plane, value) in values.into_iter().enumerate() {
            frame.data_mut(plane).fill(value);
        }
        frame
    }

    #[test]
    fn other_chroma_layouts_convert_as_4_2_0_does() {
        // 4:4:4 and 4:2:2 go through libswscale to 4:2:0 first; a flat
        // picture must come out exactly as the same values in 4:2:0.
        let expected = to_jfif(&flat(Pixel::YUV420P, [100, 120, 140])).unwrap();
        for format in [Pixel::YUV444P, Pixel::YUV422P] {
            let planes = to_jfif(&flat(format, [100, 120, 140])).unwrap();
            assert_eq!((planes.width, planes.height), (64, 48));
            assert_eq!((planes.y, planes.u, planes.v), (expected.y.clone(), expected.u.clone(), expected.v.clone()));
        }
    }
}
