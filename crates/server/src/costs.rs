//! What decoding a picture and encoding a frame of one video have cost
//! lately (moving averages), to tell whether a lone reader's playback is
//! held back by decoding, which a second decoder on the next group of
//! pictures speeds up, or by encoding, where a second decoder would only
//! take cores from the encoder (`channel.rs`, `prefetch_next_gop`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moving average of seconds, kept as the bits of an `f64` (0: nothing measured yet).
#[derive(Default)]
struct Average(AtomicU64);

impl Average {
    /// Weight of the newest measurement.
    const NEWEST: f64 = 0.2;

    fn record(&self, seconds: f64) {
        let old = self.get();
        let new = if old == 0.0 { seconds } else { old + (seconds - old) * Self::NEWEST };
        // A lost race loses one sample of an average: no need for a loop.
        self.0.store(new.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

pub struct Costs {
    /// Pixels in one of the video's pictures.
    pixels: u64,
    decode_per_picture: Average,
    encode_per_frame: Average,
}

impl Costs {
    /// Below this many pixels a picture (under 720p) decodes fast on any
    /// core; a slow reading there is the machine's contention (measured on
    /// CI: 360p pictures taking over 10 ms each while every test ran), and
    /// a second decoder would only decode the pictures at GOP boundaries twice.
    const SMALL_PICTURE_PIXELS: u64 = 1280 * 720;

    pub fn new(width: u32, height: u32) -> Self {
        Self {
            pixels: u64::from(width) * u64::from(height),
            decode_per_picture: Average::default(),
            encode_per_frame: Average::default(),
        }
    }

    /// A decode job took `busy` for `pictures` pictures.
    pub fn decoded(&self, pictures: u64, busy: Duration) {
        if pictures > 0 {
            self.decode_per_picture.record(busy.as_secs_f64() / pictures as f64);
        }
    }

    /// Encoding one frame took `busy`.
    pub fn encoded(&self, busy: Duration) {
        self.encode_per_frame.record(busy.as_secs_f64());
    }

    /// Whether one decoder's pictures come clearly slower (by `MARGIN`) than
    /// `encoders` encoding at once turn them into frames, and slowly enough
    /// to matter (false until both were measured). Close to even, a second
    /// decoder would gain little and cost the pictures both decode at a GOP
    /// boundary; a picture decoded in under `SLOW_PICTURE` plays at over
    /// 100 frames/s on one core already, and so does any picture smaller
    /// than 720p.
    pub fn decoding_holds_back(&self, encoders: usize) -> bool {
        const MARGIN: f64 = 1.5;
        const SLOW_PICTURE: f64 = 0.010;
        let (decode, encode) = (self.decode_per_picture.get(), self.encode_per_frame.get());
        self.pixels >= Self::SMALL_PICTURE_PIXELS
            && decode >= SLOW_PICTURE
            && encode > 0.0
            && decode * encoders as f64 > encode * MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_which_side_holds_playback_back() {
        let costs = Costs::new(3840, 2160);
        assert!(!costs.decoding_holds_back(1), "nothing measured yet");
        costs.decoded(10, Duration::from_millis(600)); // 60 ms a picture (4K)
        costs.encoded(Duration::from_millis(32));
        assert!(costs.decoding_holds_back(1));
        for _ in 0..30 {
            costs.decoded(10, Duration::from_millis(120)); // 12 ms a picture (1080p)
            costs.encoded(Duration::from_millis(10));
        }
        assert!(!costs.decoding_holds_back(1), "about even: not clearly held back by decoding");
        assert!(costs.decoding_holds_back(2), "unless two encoders share the frames");
        costs.decoded(0, Duration::from_secs(1)); // a job that decoded nothing changes nothing
        assert!(!costs.decoding_holds_back(1));
        let fast = Costs::new(1920, 1080);
        fast.decoded(10, Duration::from_millis(40)); // 4 ms a picture
        fast.encoded(Duration::from_millis(1));
        assert!(!fast.decoding_holds_back(1), "one core plays it at 250 frames/s");
        let small = Costs::new(640, 360);
        small.decoded(10, Duration::from_millis(300)); // 30 ms a picture: a machine under load
        small.encoded(Duration::from_millis(1));
        assert!(!small.decoding_holds_back(1), "360p decodes fast on any core that is not shared");
    }
}
