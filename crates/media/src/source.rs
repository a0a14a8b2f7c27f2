//! Byte access for the indexers: a synchronous "read this range" trait.
//!
//! The media crate never talks to the network. The server implements this
//! trait over object storage (on a blocking thread); tools and tests use the
//! file implementation below.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::Path;

pub trait RangeRead {
    /// Total size of the object in bytes.
    fn size(&self) -> u64;

    /// Reads `length` bytes from `offset`; fewer only when the object ends first.
    fn read_range(&self, offset: u64, length: u64) -> Result<Vec<u8>>;
}

/// A local file read with positioned reads.
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }
}

impl RangeRead for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, length: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let end = offset.saturating_add(length).min(self.size);
        let mut buffer = vec![0u8; end.saturating_sub(offset) as usize];
        self.file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }
}

/// An object held in memory (tests, fuzzing).
pub struct MemorySource(pub Vec<u8>);

impl RangeRead for MemorySource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_range(&self, offset: u64, length: u64) -> Result<Vec<u8>> {
        let start = offset.min(self.size()) as usize;
        let end = offset.saturating_add(length).min(self.size()) as usize;
        Ok(self.0[start..end].to_vec())
    }
}

/// Serves reads from the last window fetched when possible, and fetches at
/// least `window` bytes at a time, so walking many small boxes costs one
/// storage request per window rather than one per box header.
pub struct WindowedReader<'a> {
    source: &'a dyn RangeRead,
    window: u64,
    cached_offset: u64,
    cached: Vec<u8>,
}

impl<'a> WindowedReader<'a> {
    pub fn new(source: &'a dyn RangeRead, window: u64) -> Self {
        Self { source, window, cached_offset: 0, cached: Vec::new() }
    }

    pub fn size(&self) -> u64 {
        self.source.size()
    }

    /// Reads up to `length` bytes at `offset` (fewer at the end of the object).
    pub fn read(&mut self, offset: u64, length: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(length).min(self.source.size());
        let cached_end = self.cached_offset + self.cached.len() as u64;
        if offset < self.cached_offset || end > cached_end {
            let fetch = length.max(self.window);
            self.cached = self.source.read_range(offset, fetch)?;
            self.cached_offset = offset;
        }
        let start = (offset - self.cached_offset) as usize;
        let stop = (end.max(offset) - self.cached_offset) as usize;
        Ok(self.cached[start..stop.min(self.cached.len())].to_vec())
    }
}
