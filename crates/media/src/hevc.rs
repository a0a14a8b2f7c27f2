//! HEVC bitstream syntax that the index needs and FFmpeg does not expose:
//! NAL unit types, the few SPS/PPS fields that locate a slice's picture order
//! count, and the picture-order-count rules of ITU-T H.265 §8.3.1.
//!
//! Raw Annex-B streams carry no timestamps, so presentation order has to be
//! recovered from the POC; MP4 tracks use this only to read the stream's
//! dimensions and reorder depth from `hvcC`.

use crate::bits::{unescape_rbsp, BitReader};
use anyhow::{bail, Context, Result};

pub const NAL_BLA_W_LP: u8 = 16;
pub const NAL_IDR_W_RADL: u8 = 19;
pub const NAL_IDR_N_LP: u8 = 20;
pub const NAL_CRA: u8 = 21;
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;
pub const NAL_EOS: u8 = 36;
pub const NAL_EOB: u8 = 37;
pub const NAL_SEI_PREFIX: u8 = 39;

/// The 6-bit `nal_unit_type` from a NAL unit's two-byte header.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(u8::MAX, |byte| (byte >> 1) & 0x3f)
}

/// `nuh_temporal_id_plus1 - 1`.
pub fn temporal_id(nal: &[u8]) -> u8 {
    nal.get(1).map_or(0, |byte| (byte & 7).saturating_sub(1))
}

pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

pub fn is_idr(nal_type: u8) -> bool {
    nal_type == NAL_IDR_W_RADL || nal_type == NAL_IDR_N_LP
}

/// RADL or RASL: a leading picture of the IRAP before it in decode order.
pub fn is_leading(nal_type: u8) -> bool {
    (6..=9).contains(&nal_type)
}

/// Sub-layer non-reference pictures (`*_N` types below 16): no picture of
/// the same temporal sub-layer uses them as a reference (pictures of higher
/// sub-layers may).
pub fn is_sub_layer_non_reference(nal_type: u8) -> bool {
    nal_type < 16 && nal_type.is_multiple_of(2)
}

/// Whether a VCL NAL unit starts a new picture (`first_slice_segment_in_pic_flag`).
pub fn starts_picture(nal: &[u8]) -> bool {
    is_vcl(nal_type(nal)) && nal.get(2).is_some_and(|byte| byte & 0x80 != 0)
}

/// The sequence parameter set fields this project uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub id: u32,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    /// Display size, after the conformance window crop.
    pub width: u32,
    pub height: u32,
    pub bit_depth_luma: u32,
    pub log2_max_poc_lsb: u32,
    /// `sps_max_num_reorder_pics` of the highest sub-layer.
    pub max_num_reorder: u32,
    /// `sps_max_sub_layers_minus1`: the highest TemporalId a picture may have.
    pub max_sub_layers_minus1: u32,
    /// `sps_max_dec_pic_buffering_minus1 + 1` of the highest sub-layer:
    /// pictures the decoder holds for reference and reordering.
    pub max_dec_pic_buffering: u32,
    /// Coded size (before cropping): the size of the decoder's picture buffers.
    pub coded_width: u32,
    pub coded_height: u32,
}

impl Sps {
    /// Bytes of one decoded picture at the coded size: luma plus chroma
    /// planes, two bytes a sample above 8 bits.
    /// A crafted SPS's sizes (up to 2^32 each) saturate instead of wrapping.
    pub fn picture_bytes(&self) -> u64 {
        let luma = u64::from(self.coded_width).saturating_mul(u64::from(self.coded_height));
        let chroma = match (self.chroma_format_idc, self.separate_colour_plane) {
            (0, _) => 0,
            (1, false) => luma / 2,
            (2, false) => luma,
            _ => luma.saturating_mul(2),
        };
        let sample_bytes = if self.bit_depth_luma > 8 { 2 } else { 1 };
        luma.saturating_add(chroma).saturating_mul(sample_bytes)
    }
}

/// The picture parameter set fields needed to reach `slice_pic_order_cnt_lsb`,
/// and whether its pictures decode in wavefronts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pps {
    pub id: u32,
    pub sps_id: u32,
    pub output_flag_present: bool,
    pub num_extra_slice_header_bits: u32,
    /// `entropy_coding_sync_enabled_flag` (WPP, x265's default): rows of a
    /// picture decode in parallel, which libavcodec's slice threads do.
    /// `false` when the PPS ends before it.
    pub wavefront: bool,
}

fn skip_profile_tier_level(reader: &mut BitReader, max_sub_layers_minus1: u32) -> Result<()> {
    reader.skip(88 + 8)?; // general profile (88 bits) + general_level_idc
    let mut sub_layer_flags = Vec::new();
    for _ in 0..max_sub_layers_minus1 {
        sub_layer_flags.push((reader.bit()?, reader.bit()?));
    }
    if max_sub_layers_minus1 > 0 {
        reader.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for (profile_present, level_present) in sub_layer_flags {
        if profile_present {
            reader.skip(88)?;
        }
        if level_present {
            reader.skip(8)?;
        }
    }
    Ok(())
}

/// Parses an SPS NAL unit (with its two-byte header, escaped as in the stream).
pub fn parse_sps(nal: &[u8]) -> Result<Sps> {
    if nal_type(nal) != NAL_SPS || nal.len() < 3 {
        bail!("not an SPS NAL unit");
    }
    let rbsp = unescape_rbsp(&nal[2..]);
    let mut r = BitReader::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // sps_temporal_id_nesting_flag
    skip_profile_tier_level(&mut r, max_sub_layers_minus1)?;
    let id = r.ue()?;
    if id > 15 {
        bail!("invalid sps_seq_parameter_set_id {id}");
    }
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        bail!("invalid chroma_format_idc {chroma_format_idc}");
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.bit()?;
    let coded_width = r.ue()?;
    let coded_height = r.ue()?;
    let (mut crop_x, mut crop_y) = (0u32, 0u32);
    if r.bit()? {
        let sub_width = if matches!(chroma_format_idc, 1 | 2) && !separate_colour_plane { 2 } else { 1 };
        let sub_height = if chroma_format_idc == 1 && !separate_colour_plane { 2 } else { 1 };
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        crop_x = sub_width * (left.saturating_add(right));
        crop_y = sub_height * (top.saturating_add(bottom));
    }
    let bit_depth_luma = r.ue()? + 8;
    let _bit_depth_chroma = r.ue()? + 8;
    let log2_max_poc_lsb = r.ue()? + 4;
    if log2_max_poc_lsb > 16 {
        bail!("invalid log2_max_pic_order_cnt_lsb {log2_max_poc_lsb}");
    }
    let ordering_info_present = r.bit()?;
    let first = if ordering_info_present { 0 } else { max_sub_layers_minus1 };
    let (mut max_num_reorder, mut max_dec_pic_buffering) = (0, 1);
    for _ in first..=max_sub_layers_minus1 {
        max_dec_pic_buffering = r.ue()?.saturating_add(1).min(16);
        max_num_reorder = r.ue()?;
        let _max_latency_increase_plus1 = r.ue()?;
    }
    Ok(Sps {
        id,
        chroma_format_idc,
        separate_colour_plane,
        width: coded_width.saturating_sub(crop_x),
        height: coded_height.saturating_sub(crop_y),
        bit_depth_luma,
        log2_max_poc_lsb,
        max_num_reorder,
        max_sub_layers_minus1,
        max_dec_pic_buffering,
        coded_width,
        coded_height,
    })
}

/// Parses a PPS NAL unit (with its two-byte header).
pub fn parse_pps(nal: &[u8]) -> Result<Pps> {
    if nal_type(nal) != NAL_PPS || nal.len() < 3 {
        bail!("not a PPS NAL unit");
    }
    let rbsp = unescape_rbsp(&nal[2..]);
    let mut r = BitReader::new(&rbsp);
    let id = r.ue()?;
    let sps_id = r.ue()?;
    if id > 63 || sps_id > 15 {
        bail!("invalid parameter set ids (pps {id}, sps {sps_id})");
    }
    let _dependent_slice_segments_enabled = r.bit()?;
    let output_flag_present = r.bit()?;
    let num_extra_slice_header_bits = r.bits(3)?;
    let wavefront = read_wavefront_flag(&mut r).unwrap_or(false);
    Ok(Pps { id, sps_id, output_flag_present, num_extra_slice_header_bits, wavefront })
}

/// Reads a PPS from `sign_data_hiding_enabled_flag` to
/// `entropy_coding_sync_enabled_flag` (H.265 7.3.2.3.1). Signed codes are
/// skipped as unsigned ones: they have the same length.
fn read_wavefront_flag(r: &mut BitReader) -> Result<bool> {
    r.skip(2)?; // sign_data_hiding_enabled_flag, cabac_init_present_flag
    for _ in 0..3 {
        r.ue()?; // num_ref_idx_l0/l1_default_active_minus1, init_qp_minus26
    }
    r.skip(2)?; // constrained_intra_pred_flag, transform_skip_enabled_flag
    if r.bit()? {
        r.ue()?; // diff_cu_qp_delta_depth
    }
    r.ue()?; // pps_cb_qp_offset
    r.ue()?; // pps_cr_qp_offset
    r.skip(5)?; // chroma qp offsets present, weighted pred/bipred, transquant bypass, tiles
    r.bit()
}

/// What the first slice segment of a picture says about its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceInfo {
    pub pps_id: u32,
    pub poc_lsb: u32,
    pub pic_output: bool,
}

/// Reads a first slice segment header up to `slice_pic_order_cnt_lsb`.
/// `lookup` finds the PPS and its SPS by PPS id.
pub fn parse_first_slice<'p>(nal: &[u8], lookup: impl Fn(u32) -> Option<(&'p Pps, &'p Sps)>) -> Result<SliceInfo> {
    let kind = nal_type(nal);
    if !starts_picture(nal) {
        bail!("not the first slice segment of a picture");
    }
    // The slice header is short; never unescape a whole multi-megabyte slice.
    let rbsp = unescape_rbsp(&nal[2..nal.len().min(64)]);
    let mut r = BitReader::new(&rbsp);
    r.skip(1)?; // first_slice_segment_in_pic_flag
    if is_irap(kind) {
        r.skip(1)?; // no_output_of_prior_pics_flag
    }
    let pps_id = r.ue()?;
    let (pps, sps) = lookup(pps_id).with_context(|| format!("slice refers to unknown PPS {pps_id}"))?;
    r.skip(pps.num_extra_slice_header_bits as usize)?;
    let _slice_type = r.ue()?;
    let pic_output = if pps.output_flag_present { r.bit()? } else { true };
    if sps.separate_colour_plane {
        r.skip(2)?;
    }
    let poc_lsb = if is_idr(kind) { 0 } else { r.bits(sps.log2_max_poc_lsb)? };
    Ok(SliceInfo { pps_id, poc_lsb, pic_output })
}

/// Picture order count across a stream (H.265 §8.3.1), plus a coded video
/// sequence counter so that presentation order survives POC resets.
#[derive(Debug, Default)]
pub struct PocTracker {
    /// 64 bits: a crafted stream can move the POC by 2^15 every other
    /// picture, which would overflow 32 bits within 65,536 pictures.
    prev_tid0_poc: i64,
    sequence: u32,
    started: bool,
    after_end_of_sequence: bool,
}

impl PocTracker {
    /// Notes an end-of-sequence NAL unit: the next CRA starts a new sequence.
    pub fn end_of_sequence(&mut self) {
        self.after_end_of_sequence = true;
    }

    /// Returns `(coded video sequence number, POC)` of the next picture.
    pub fn next(&mut self, nal: &[u8], slice: &SliceInfo, log2_max_poc_lsb: u32) -> (u32, i64) {
        let kind = nal_type(nal);
        let new_sequence = is_irap(kind) && (kind != NAL_CRA || !self.started || self.after_end_of_sequence);
        if new_sequence && self.started {
            self.sequence = self.sequence.saturating_add(1);
        }
        self.started = true;
        self.after_end_of_sequence = false;
        let max_lsb = 1i64 << log2_max_poc_lsb;
        let lsb = i64::from(slice.poc_lsb);
        let msb = if new_sequence {
            0
        } else {
            let prev_lsb = self.prev_tid0_poc.rem_euclid(max_lsb);
            let prev_msb = self.prev_tid0_poc - prev_lsb;
            if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
                prev_msb + max_lsb
            } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
                prev_msb - max_lsb
            } else {
                prev_msb
            }
        };
        let poc = msb + lsb;
        if temporal_id(nal) == 0 && !is_leading(kind) && !is_sub_layer_non_reference(kind) {
            self.prev_tid0_poc = poc;
        }
        (self.sequence, poc)
    }
}

/// Splits an Annex-B buffer into NAL units (start codes removed).
/// What decoding order needs to know of a coded picture: whether pictures
/// of its own sub-layer may reference it, and its sub-layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureKind {
    pub sub_layer_non_reference: bool,
    pub temporal_id: u8,
}

/// The kind of the picture in one sample (access unit), read from its first
/// VCL NAL unit header; `None` when the bytes hold no VCL NAL unit.
pub fn picture_kind(sample: &[u8], format: crate::index::NalFormat) -> Option<PictureKind> {
    let kind = |nal: &[u8]| PictureKind {
        sub_layer_non_reference: is_sub_layer_non_reference(nal_type(nal)),
        temporal_id: temporal_id(nal),
    };
    match format {
        crate::index::NalFormat::AnnexB => {
            annexb_nals(sample).find(|nal| nal.len() >= 2 && is_vcl(nal_type(nal))).map(kind)
        }
        crate::index::NalFormat::LengthPrefixed(width) => {
            length_prefixed_nals(sample, width).find(|nal| nal.len() >= 2 && is_vcl(nal_type(nal))).map(kind)
        }
    }
}

/// The NAL units of a sample whose units are prefixed with their big-endian
/// length in `width` bytes (`hvcC`); stops at the first length that does
/// not fit the sample.
pub fn length_prefixed_nals(data: &[u8], width: u8) -> impl Iterator<Item = &[u8]> {
    let width = usize::from(width.clamp(1, 4));
    let mut rest = data;
    std::iter::from_fn(move || {
        let (prefix, after) = rest.split_at_checked(width)?;
        let length = prefix.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        let (nal, next) = after.split_at_checked(length)?;
        rest = next;
        Some(nal)
    })
}

pub fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<usize> = memchr::memmem::find_iter(data, b"\x00\x00\x01").map(|at| at + 3).collect();
    let ends: Vec<usize> = starts.iter().skip(1).map(|&next| next - 3).chain([data.len()]).collect();
    starts.into_iter().zip(ends).map(move |(start, end)| {
        let mut nal = &data[start..end];
        while let [rest @ .., 0] = nal {
            nal = rest; // trailing zero bytes belong to the next start code
        }
        nal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poc_wraps_forward() {
        let sps = 4; // max lsb 16
        let mut tracker = PocTracker::default();
        let idr = [NAL_IDR_W_RADL << 1, 1, 0x80];
        let trail = [1u8 << 1, 1, 0x80];
        let slice = |lsb| SliceInfo { pps_id: 0, poc_lsb: lsb, pic_output: true };
        assert_eq!(tracker.next(&idr, &slice(0), sps), (0, 0));
        assert_eq!(tracker.next(&trail, &slice(8), sps), (0, 8));
        assert_eq!(tracker.next(&trail, &slice(15), sps), (0, 15));
        assert_eq!(tracker.next(&trail, &slice(2), sps), (0, 18));
        assert_eq!(tracker.next(&idr, &slice(0), sps), (1, 0));
    }

    #[test]
    fn reads_the_picture_kind_after_parameter_sets() {
        use crate::index::NalFormat;
        // An SPS, then a TRAIL_N slice of temporal sub-layer 1, length-prefixed in 4 bytes.
        let sample = [0, 0, 0, 2, NAL_SPS << 1, 1, 0, 0, 0, 3, 0, 2, 0x80];
        let kind = picture_kind(&sample, NalFormat::LengthPrefixed(4)).unwrap();
        assert_eq!(kind, PictureKind { sub_layer_non_reference: true, temporal_id: 1 });
        // A TRAIL_R slice in Annex-B.
        let kind = picture_kind(&[0, 0, 1, 1 << 1, 1, 0x80], NalFormat::AnnexB).unwrap();
        assert_eq!(kind, PictureKind { sub_layer_non_reference: false, temporal_id: 0 });
        // A length that runs past the sample ends the walk; no VCL unit, no kind.
        assert_eq!(picture_kind(&[0, 0, 0, 200, 2, 1], NalFormat::LengthPrefixed(4)), None);
        assert_eq!(picture_kind(&[], NalFormat::LengthPrefixed(4)), None);
    }

    #[test]
    fn a_crafted_sps_size_saturates_the_picture_size() {
        let sps = Sps {
            id: 0,
            chroma_format_idc: 3,
            separate_colour_plane: false,
            width: u32::MAX,
            height: u32::MAX,
            bit_depth_luma: 16,
            log2_max_poc_lsb: 4,
            max_num_reorder: 0,
            max_sub_layers_minus1: 0,
            max_dec_pic_buffering: 16,
            coded_width: u32::MAX,
            coded_height: u32::MAX,
        };
        assert_eq!(sps.picture_bytes(), u64::MAX);
        let small = Sps { coded_width: 1920, coded_height: 1088, chroma_format_idc: 1, bit_depth_luma: 10, ..sps };
        assert_eq!(small.picture_bytes(), 1920 * 1088 * 3);
    }

    #[test]
    fn reads_the_wavefront_flag_and_survives_a_pps_cut_or_mangled_anywhere() {
        // x265's default PPS (open_gop_bframes.mp4): entropy_coding_sync_enabled_flag = 1.
        let pps = [0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];
        let whole = parse_pps(&pps).unwrap();
        assert!(whole.wavefront);
        assert_eq!((whole.id, whole.sps_id), (0, 0));
        // Cut short: the ids still read, the flag is unknown, so off; never a panic.
        for end in 3..pps.len() - 1 {
            let cut = parse_pps(&pps[..end]).unwrap();
            assert!(!cut.wavefront, "cut at {end}");
        }
        // Every single bit flipped (sizes of Exp-Golomb codes change): a PPS or an error, never a panic.
        for bit in 16..pps.len() * 8 {
            let mut mangled = pps;
            mangled[bit / 8] ^= 0x80 >> (bit % 8);
            let _ = parse_pps(&mangled);
        }
        // Thirty-two zero bits make an Exp-Golomb code that cannot end.
        assert!(!parse_pps(&[0x44, 0x01, 0xc0, 0, 0, 0, 0, 0, 0]).is_ok_and(|pps| pps.wavefront));
    }

    #[test]
    fn splits_annexb() {
        let data = [0, 0, 0, 1, 0x40, 1, 7, 0, 0, 1, 0x42, 1, 0, 0, 0, 1, 0x26, 1];
        let nals: Vec<&[u8]> = annexb_nals(&data).collect();
        assert_eq!(nals, vec![&[0x40, 1, 7][..], &[0x42, 1][..], &[0x26, 1][..]]);
    }
}
