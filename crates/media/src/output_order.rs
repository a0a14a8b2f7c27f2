//! Pictures out as soon as they are decoded: the decoder's extradata with
//! every SPS rewritten to promise no reordering.
//!
//! libavcodec's HEVC decoder holds a decoded picture until
//! `sps_max_num_reorder_pics` later pictures wait for output (x265's default
//! streams: 2), so a seek whose target is a P picture went on to decode up to
//! six more pictures, none of them wanted, before the target came out. The
//! player matches pictures by timestamp, not by the order they come in, so it
//! asks for no reordering: each picture comes out when it is decoded. What is
//! decoded, and every pixel, stays the same (reordering only schedules output).
//!
//! Every SPS the decoder sees is rewritten, also those a stream repeats
//! inside its samples (Annex-B, some `hev1` tracks): libavcodec compares a
//! repeated SPS with the one it holds, and a difference is a new sequence
//! that drops every reference picture.

use crate::hevc::{self, annexb_nals, nal_type, NAL_SPS};
use crate::index::{DecoderConfig, NalFormat};
use anyhow::{bail, ensure, Context, Result};
use std::borrow::Cow;

/// `config`'s extradata with each SPS saying `sps_max_num_reorder_pics = 0`.
pub fn without_reordering(config: &DecoderConfig) -> Result<Vec<u8>> {
    match config.nal_format {
        NalFormat::LengthPrefixed(_) => hvcc_without_reordering(&config.extradata),
        NalFormat::AnnexB => annexb_without_reordering(&config.extradata),
    }
}

/// `sample` with each SPS in it rewritten like the extradata's; borrowed
/// as it is when it holds none (nearly every sample). An SPS that cannot be
/// rewritten is an error: the caller feeds the sample as it is.
pub fn sample_without_reordering(sample: &[u8], format: NalFormat) -> Result<Cow<'_, [u8]>> {
    let nals = nal_ranges(sample, format);
    if !nals.iter().any(|nal| nal_type(&sample[nal.clone()]) == NAL_SPS) {
        return Ok(Cow::Borrowed(sample));
    }
    let mut out = Vec::with_capacity(sample.len() + 16);
    let mut copied = 0;
    for nal in nals {
        if nal_type(&sample[nal.clone()]) != NAL_SPS {
            continue;
        }
        let rewritten = hevc::sps_without_reordering(&sample[nal.clone()])?;
        match format {
            NalFormat::AnnexB => out.extend_from_slice(&sample[copied..nal.start]),
            NalFormat::LengthPrefixed(width) => {
                let width = usize::from(width.clamp(1, 4));
                out.extend_from_slice(&sample[copied..nal.start - width]);
                let length = u32::try_from(rewritten.len())?;
                ensure!(width == 4 || length < 1 << (8 * width), "the rewritten SPS outgrows its length prefix");
                out.extend_from_slice(&length.to_be_bytes()[4 - width..]);
            }
        }
        out.extend(rewritten);
        copied = nal.end;
    }
    out.extend_from_slice(&sample[copied..]);
    Ok(Cow::Owned(out))
}

/// Where each NAL unit of a sample lies (without its start code or length).
fn nal_ranges(sample: &[u8], format: NalFormat) -> Vec<std::ops::Range<usize>> {
    let offset = |nal: &[u8]| nal.as_ptr() as usize - sample.as_ptr() as usize;
    let range = |nal: &[u8]| offset(nal)..offset(nal) + nal.len();
    match format {
        NalFormat::AnnexB => annexb_nals(sample).map(range).collect(),
        NalFormat::LengthPrefixed(width) => hevc::length_prefixed_nals(sample, width).map(range).collect(),
    }
}

fn rewrite(nal: &[u8]) -> Result<Vec<u8>> {
    if nal_type(nal) == NAL_SPS {
        hevc::sps_without_reordering(nal)
    } else {
        Ok(nal.to_vec())
    }
}

fn annexb_without_reordering(extradata: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(extradata.len() + 16);
    for nal in annexb_nals(extradata) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend(rewrite(nal)?);
    }
    Ok(out)
}

/// An `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 8.3.3): 22 bytes of
/// profile and format, then arrays of parameter sets, each NAL unit after a
/// 16-bit length. The rewritten record has the same arrays in the same order.
fn hvcc_without_reordering(record: &[u8]) -> Result<Vec<u8>> {
    const FIXED: usize = 22;
    ensure!(record.len() > FIXED, "the hvcC record is {} bytes, too short", record.len());
    let mut out = record[..=FIXED].to_vec();
    let mut rest = &record[FIXED + 1..];
    for _ in 0..record[FIXED] {
        let (header, after) = rest.split_at_checked(3).context("an hvcC array header is cut short")?;
        out.extend_from_slice(header);
        rest = after;
        for _ in 0..u16::from_be_bytes([header[1], header[2]]) {
            let (length, after) = rest.split_at_checked(2).context("an hvcC NAL length is cut short")?;
            let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
            let (nal, after) = after.split_at_checked(length).context("an hvcC NAL unit runs past the record")?;
            let rewritten = rewrite(nal)?;
            let Ok(new_length) = u16::try_from(rewritten.len()) else {
                bail!("a rewritten parameter set no longer fits hvcC's 16-bit length")
            };
            out.extend_from_slice(&new_length.to_be_bytes());
            out.extend(rewritten);
            rest = after;
        }
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // x265's SPS of a 1080p stream (sps_max_num_reorder_pics = 2, two
    // emulation-prevention bytes).
    fn x265_sps() -> Vec<u8> {
        vec![
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x78,
            0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03,
            0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
        ]
    }

    #[test]
    fn the_rewritten_sps_differs_only_in_reordering() {
        let nal = x265_sps();
        let original = hevc::parse_sps(&nal).unwrap();
        assert!(original.max_num_reorder > 0);
        let rewritten = hevc::sps_without_reordering(&nal).unwrap();
        let parsed = hevc::parse_sps(&rewritten).unwrap();
        assert_eq!(parsed, hevc::Sps { max_num_reorder: 0, ..original });
        // Rewriting twice changes nothing more.
        assert_eq!(hevc::sps_without_reordering(&rewritten).unwrap(), rewritten);
    }

    #[test]
    fn rewrites_the_sps_inside_an_hvcc_record_and_keeps_the_rest() {
        let sps = x265_sps();
        let pps = [0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];
        let mut record = vec![1; 22];
        record.push(2); // arrays
        for nal in [&sps[..], &pps[..]] {
            record.extend_from_slice(&[0x80 | nal_type(nal), 0, 1]);
            record.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            record.extend_from_slice(nal);
        }
        let config = |extradata, nal_format| DecoderConfig::new(extradata, nal_format, [], []);
        let out = without_reordering(&config(record.clone(), NalFormat::LengthPrefixed(4))).unwrap();
        let new_sps = hevc::sps_without_reordering(&sps).unwrap();
        let mut expected = record[..23 + 3].to_vec();
        expected.extend_from_slice(&(new_sps.len() as u16).to_be_bytes());
        expected.extend_from_slice(&new_sps);
        expected.extend_from_slice(&record[23 + 3 + 2 + sps.len()..]);
        assert_eq!(out, expected);

        let annexb: Vec<u8> = [&sps[..], &pps[..]].iter().flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat()).collect();
        let out = without_reordering(&config(annexb, NalFormat::AnnexB)).unwrap();
        let nals: Vec<&[u8]> = annexb_nals(&out).collect();
        assert_eq!(nals, vec![&new_sps[..], &pps[..]]);
    }

    #[test]
    fn rewrites_an_sps_repeated_inside_a_sample_and_nothing_else() {
        let sps = x265_sps();
        let new_sps = hevc::sps_without_reordering(&sps).unwrap();
        let slice = [0x26, 0x01, 0xaf, 0x00, 0x00, 0x03, 0x01];
        for width in [1u8, 2, 4] {
            let prefixed = |nal: &[u8]| [&(nal.len() as u32).to_be_bytes()[4 - usize::from(width)..], nal].concat();
            let format = NalFormat::LengthPrefixed(width);
            let plain = prefixed(&slice);
            assert!(matches!(sample_without_reordering(&plain, format).unwrap(), Cow::Borrowed(_)));
            let sample = [prefixed(&sps), prefixed(&slice), vec![9, 9]].concat();
            let expected = [prefixed(&new_sps), prefixed(&slice), vec![9, 9]].concat();
            assert_eq!(sample_without_reordering(&sample, format).unwrap().into_owned(), expected, "width {width}");
        }
        let start = [0u8, 0, 0, 1];
        let sample = [&start[..], &sps, &start, &slice].concat();
        let expected = [&start[..], &new_sps, &start, &slice].concat();
        assert_eq!(sample_without_reordering(&sample, NalFormat::AnnexB).unwrap().into_owned(), expected);
    }

    #[test]
    fn a_record_or_sps_cut_anywhere_is_an_error_not_a_panic() {
        let sps = x265_sps();
        let mut record = vec![1; 22];
        record.extend_from_slice(&[1, 0x80 | NAL_SPS, 0, 1]);
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(&sps);
        for end in 0..record.len() {
            assert!(hvcc_without_reordering(&record[..end]).is_err(), "cut at {end}");
        }
        // A count that promises more NAL units than the record holds.
        let mut lying = record.clone();
        lying[25] = 0xff;
        assert!(hvcc_without_reordering(&lying).is_err());
        for end in 0..sps.len() {
            let _ = hevc::sps_without_reordering(&sps[..end]);
        }
        for bit in 16..sps.len() * 8 {
            let mut mangled = sps.clone();
            mangled[bit / 8] ^= 0x80 >> (bit % 8);
            if let Ok(rewritten) = hevc::sps_without_reordering(&mangled) {
                assert_eq!(hevc::parse_sps(&rewritten).unwrap().max_num_reorder, 0, "bit {bit}");
            }
        }
    }
}
