//! JPEG encoding with libjpeg-turbo's TurboJPEG API, straight from YUV
//! planes (no RGB round trip), and decoding to RGB for tools and tests.
//!
//! Handles are created once per thread and reused: creating one costs more
//! than encoding a small frame.

use crate::colour::JfifPlanes;
use anyhow::{bail, ensure, Result};
use std::cell::RefCell;
use std::ffi::{c_int, c_uchar, c_ulong, CStr};
use turbojpeg_sys as tj;

struct Handle(tj::tjhandle);

impl Handle {
    fn new(handle: tj::tjhandle) -> Self {
        assert!(!handle.is_null(), "TurboJPEG could not allocate a handle");
        Self(handle)
    }

    fn error(&self) -> String {
        // SAFETY: the handle is valid; TurboJPEG returns a NUL-terminated string it owns.
        unsafe { CStr::from_ptr(tj::tjGetErrorStr2(self.0)).to_string_lossy().into_owned() }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInit* and is destroyed once.
        unsafe { tj::tjDestroy(self.0) };
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Handle>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Encodes JFIF planes as a baseline JPEG at `quality` (1-100).
pub fn encode(planes: &JfifPlanes, quality: u8) -> Result<Vec<u8>> {
    ensure!((1..=100).contains(&quality), "JPEG quality must be 1-100, not {quality}");
    let chroma_width = planes.chroma_width();
    ensure!(planes.y.len() >= planes.width * planes.height, "luma plane too small");
    COMPRESSOR.with(|cell| {
        // SAFETY: tjInitCompress has no preconditions.
        let mut slot = cell.borrow_mut();
        let handle = slot.get_or_insert_with(|| Handle::new(unsafe { tj::tjInitCompress() }));
        let mut sources = [planes.y.as_ptr(), planes.u.as_ptr(), planes.v.as_ptr()];
        let strides = [planes.width as c_int, chroma_width as c_int, chroma_width as c_int];
        let mut output: *mut c_uchar = std::ptr::null_mut();
        let mut size: c_ulong = 0;
        // SAFETY: the planes hold width x height luma and ceil(w/2) x ceil(h/2)
        // chroma samples at the given strides; TurboJPEG allocates `output`.
        let status = unsafe {
            tj::tjCompressFromYUVPlanes(
                handle.0,
                sources.as_mut_ptr(),
                planes.width as c_int,
                strides.as_ptr(),
                planes.height as c_int,
                tj::TJSAMP_TJSAMP_420 as c_int,
                &mut output,
                &mut size,
                c_int::from(quality),
                0,
            )
        };
        if status != 0 || output.is_null() {
            let message = handle.error();
            if !output.is_null() {
                // SAFETY: allocated by TurboJPEG.
                unsafe { tj::tjFree(output) };
            }
            bail!("JPEG encoding failed: {message}");
        }
        // SAFETY: TurboJPEG wrote `size` bytes at `output`; copied, then freed once.
        let jpeg = unsafe { std::slice::from_raw_parts(output, size as usize).to_vec() };
        unsafe { tj::tjFree(output) };
        Ok(jpeg)
    })
}

/// A decoded RGB image (3 bytes per pixel, rows packed).
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG to RGB.
pub fn decode_rgb(jpeg: &[u8]) -> Result<Rgb> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        // SAFETY: tjInitDecompress has no preconditions.
        let handle = slot.get_or_insert_with(|| Handle::new(unsafe { tj::tjInitDecompress() }));
        let (mut width, mut height, mut subsampling, mut colourspace) = (0, 0, 0, 0);
        // SAFETY: the buffer pointer and length describe `jpeg`.
        let status = unsafe {
            tj::tjDecompressHeader3(
                handle.0,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                &mut width,
                &mut height,
                &mut subsampling,
                &mut colourspace,
            )
        };
        ensure!(status == 0, "not a JPEG: {}", handle.error());
        ensure!(
            width > 0 && height > 0 && width <= 16384 && height <= 16384,
            "JPEG size {width}x{height} out of range"
        );
        let (width, height) = (width as usize, height as usize);
        let mut pixels = vec![0u8; width * height * 3];
        // SAFETY: `pixels` holds width x height RGB pixels at pitch width*3.
        let status = unsafe {
            tj::tjDecompress2(
                handle.0,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                pixels.as_mut_ptr(),
                width as c_int,
                (width * 3) as c_int,
                height as c_int,
                tj::TJPF_TJPF_RGB as c_int,
                tj::TJFLAG_ACCURATEDCT as c_int,
            )
        };
        ensure!(status == 0, "JPEG decoding failed: {}", handle.error());
        Ok(Rgb { width, height, pixels })
    })
}
