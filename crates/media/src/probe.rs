//! Recognises what kind of video an object is from its first bytes and hands
//! it to the right indexer.

use crate::budget::Budget;
use crate::index::VideoIndex;
use crate::source::RangeRead;
use crate::{annexb, mp4};
use anyhow::{bail, Result};

/// Builds the frame index of a video, reading only what the container needs,
/// within `budget`.
pub fn index(source: &dyn RangeRead, budget: &Budget) -> Result<VideoIndex> {
    let head = source.read_range(0, 16)?;
    if head.is_empty() {
        bail!("the file is empty");
    }
    if annexb::looks_like_annexb(&head) {
        return annexb::index(source, budget);
    }
    if head.len() >= 8 && mp4::TOP_LEVEL_BOXES.iter().any(|kind| &head[4..8] == kind.as_slice()) {
        return mp4::index(source, budget);
    }
    bail!("not a video this server can read: neither MP4/MOV nor a raw H.265 (Annex-B) stream")
}
