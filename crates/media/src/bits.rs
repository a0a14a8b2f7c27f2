//! Bit-level reading and writing of an HEVC RBSP (emulation-prevention bytes
//! removed), and the escaping that turns an RBSP back into NAL unit bytes.
//!
//! Owns just the primitives the HEVC header parsers and the one rewrite of a
//! parameter set need: fixed-width reads, Exp-Golomb codes, skipping and bit
//! copying. Every read is bounds-checked so a corrupt parameter set yields an
//! error, never a panic.

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

/// Inserts the `03` emulation-prevention bytes that keep an RBSP from
/// containing a start code (`00 00` followed by `00`..`03`).
pub fn escape_rbsp(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0usize;
    for &byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// Position of the last `1` bit of `data` (an RBSP's `rbsp_stop_one_bit`).
pub fn last_set_bit(data: &[u8]) -> Option<usize> {
    let byte = data.iter().rposition(|&byte| byte != 0)?;
    Some(byte * 8 + 7 - data[byte].trailing_zeros() as usize)
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

    /// Bits read so far.
    pub fn position(&self) -> usize {
        self.position
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

/// Builds an RBSP bit by bit (most significant first).
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub fn bit(&mut self, on: bool) {
        if self.bits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if on {
            *self.bytes.last_mut().expect("a byte was pushed") |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    /// Unsigned Exp-Golomb code, `ue(v)`.
    pub fn ue(&mut self, value: u32) {
        let code = u64::from(value) + 1;
        let length = 64 - code.leading_zeros();
        for _ in 1..length {
            self.bit(false);
        }
        for shift in (0..length).rev() {
            self.bit(code >> shift & 1 == 1);
        }
    }

    /// Copies the next `count` bits of `reader`.
    pub fn copy(&mut self, reader: &mut BitReader, count: usize) -> Result<()> {
        for _ in 0..count {
            self.bit(reader.bit()?);
        }
        Ok(())
    }

    /// The bytes written, the last one padded with zero bits.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
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
    fn escaping_undoes_unescaping() {
        let rbsp = [0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 4, 7];
        let escaped = escape_rbsp(&rbsp);
        assert_eq!(escaped, vec![0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3, 0, 0, 4, 7]);
        assert_eq!(unescape_rbsp(&escaped), rbsp);
    }

    #[test]
    fn writes_what_the_reader_reads() {
        let mut writer = BitWriter::default();
        let values = [0, 1, 2, 3, 254, 65_535, u32::MAX - 1];
        for value in values {
            writer.ue(value);
        }
        writer.bit(true);
        let bytes = writer.into_bytes();
        let mut reader = BitReader::new(&bytes);
        for value in values {
            assert_eq!(reader.ue().unwrap(), value);
        }
        assert!(reader.bit().unwrap());
        assert_eq!(last_set_bit(&bytes), Some(reader.position() - 1));
        assert_eq!(last_set_bit(&[0, 0]), None);
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
