//! Bit-level reader over an HEVC RBSP (emulation-prevention bytes removed).
//!
//! Owns just the primitives the HEVC header parsers need: fixed-width reads,
//! Exp-Golomb codes and skipping. Every read is bounds-checked so a corrupt
//! parameter set yields an error, never a panic.

use anyhow::{bail, Result};

/// Copies `nal` without its `00 00 03` emulation-prevention bytes.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

pub struct BitReader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, position: 0 }
    }

    pub fn bit(&mut self) -> Result<bool> {
        let byte = self.position / 8;
        if byte >= self.data.len() {
            bail!("bitstream ended early");
        }
        let bit = (self.data[byte] >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Ok(bit == 1)
    }

    /// Reads `count` (at most 32) bits, most significant first.
    pub fn bits(&mut self, count: u32) -> Result<u32> {
        debug_assert!(count <= 32);
        let mut value = 0u32;
        for _ in 0..count {
            value = (value << 1) | u32::from(self.bit()?);
        }
        Ok(value)
    }

    pub fn skip(&mut self, count: usize) -> Result<()> {
        if self.position + count > self.data.len() * 8 {
            bail!("bitstream ended early");
        }
        self.position += count;
        Ok(())
    }

    /// Unsigned Exp-Golomb code, `ue(v)`.
    pub fn ue(&mut self) -> Result<u32> {
        let mut leading_zeros = 0;
        while !self.bit()? {
            leading_zeros += 1;
            if leading_zeros > 31 {
                bail!("invalid Exp-Golomb code");
            }
        }
        let suffix = self.bits(leading_zeros)?;
        Ok(((1u64 << leading_zeros) - 1 + u64::from(suffix)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_emulation_prevention() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
        assert_eq!(unescape_rbsp(&[0, 3, 0]), vec![0, 3, 0]);
    }

    #[test]
    fn reads_exp_golomb() {
        // 1 | 010 | 011 | 00100 -> 0, 1, 2, 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut reader = BitReader::new(&data);
        assert_eq!(reader.ue().unwrap(), 0);
        assert_eq!(reader.ue().unwrap(), 1);
        assert_eq!(reader.ue().unwrap(), 2);
        assert_eq!(reader.ue().unwrap(), 3);
        assert!(reader.ue().is_err());
    }
}
