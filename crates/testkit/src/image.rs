//! Picture comparison for frame-accuracy checks: integer box downscaling
//! (applied identically to both sides) and PSNR.

#[derive(Debug, Clone)]
pub struct SmallImage {
    pub width: usize,
    pub height: usize,
    /// RGB, rows packed.
    pub pixels: Vec<u8>,
}

/// The downscale factor that brings a width to at most 480 pixels.
pub fn factor_for(width: usize) -> usize {
    width.div_ceil(480).max(1)
}

/// Averages `factor` x `factor` blocks of an RGB image.
pub fn box_downscale(rgb: &[u8], width: usize, height: usize, factor: usize) -> SmallImage {
    let (out_width, out_height) = (width / factor, height / factor);
    let mut sums = vec![0u32; out_width * out_height * 3];
    for y in 0..out_height * factor {
        let row = &rgb[y * width * 3..(y * width + out_width * factor) * 3];
        let out_row = (y / factor) * out_width * 3;
        for (x, pixel) in row.chunks_exact(3).enumerate() {
            let at = out_row + (x / factor) * 3;
            for channel in 0..3 {
                sums[at + channel] += u32::from(pixel[channel]);
            }
        }
    }
    let area = (factor * factor) as u32;
    let pixels = sums.iter().map(|&sum| ((sum + area / 2) / area) as u8).collect();
    SmallImage { width: out_width, height: out_height, pixels }
}

/// Peak signal-to-noise ratio in dB (infinite for identical images).
pub fn psnr(a: &SmallImage, b: &SmallImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "images differ in size");
    let squared: f64 = a.pixels.iter().zip(&b.pixels).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = squared / a.pixels.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Checks that `candidate` is frame `index` of `reference`: close to it in
/// absolute terms, and closer to it than to its neighbours. Returns a reason
/// when not.
pub fn check_frame(
    candidate: &SmallImage,
    reference: &[SmallImage],
    index: usize,
    min_psnr: f64,
) -> Result<f64, String> {
    let own = psnr(candidate, &reference[index]);
    if own < min_psnr {
        return Err(format!("frame {index}: PSNR {own:.1} dB against FFmpeg's decode is below {min_psnr} dB"));
    }
    for neighbour in [index.wrapping_sub(1), index + 1] {
        let Some(other) = reference.get(neighbour) else {
            continue;
        };
        // A neighbour identical to the frame (a still) cannot be told apart.
        if psnr(other, &reference[index]) > 60.0 {
            continue;
        }
        let theirs = psnr(candidate, other);
        if theirs >= own {
            return Err(format!(
                "frame {index}: closer to neighbour {neighbour} ({theirs:.1} dB) than to itself ({own:.1} dB)"
            ));
        }
    }
    Ok(own)
}
