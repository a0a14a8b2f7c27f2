//! Test support for damaged and crafted files: top-level box surgery on real
//! fixtures (decode a `moov`/`moof` with mp4-atom, change a field, put it
//! back) and a counting allocator that tells how much an indexing run
//! allocated at its peak.
#![allow(dead_code)]

pub mod mutate;

use mp4_atom::{Decode, Encode, Moof, Moov};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One top-level box: where it starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct TopBox {
    pub kind: [u8; 4],
    pub offset: usize,
    pub size: usize,
}

/// The top-level boxes of a well-formed file.
pub fn top_level(file: &[u8]) -> Vec<TopBox> {
    let mut boxes = Vec::new();
    let mut offset = 0;
    while offset + 8 <= file.len() {
        let size32 = u32::from_be_bytes(file[offset..offset + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = file[offset + 4..offset + 8].try_into().unwrap();
        let size = match size32 {
            0 => file.len() - offset,
            1 => u64::from_be_bytes(file[offset + 8..offset + 16].try_into().unwrap()) as usize,
            size => size,
        };
        boxes.push(TopBox { kind, offset, size });
        offset += size;
    }
    boxes
}

pub fn find(file: &[u8], kind: &[u8; 4]) -> Vec<TopBox> {
    top_level(file).into_iter().filter(|b| &b.kind == kind).collect()
}

/// `file` with the box at `target` replaced by `replacement` (no other
/// offsets are adjusted: use on boxes after the media data, or where only
/// the index is looked at).
pub fn replace_box(file: &[u8], target: TopBox, replacement: &[u8]) -> Vec<u8> {
    let mut out = file[..target.offset].to_vec();
    out.extend_from_slice(replacement);
    out.extend_from_slice(&file[target.offset + target.size..]);
    out
}

/// `file` with its `moov` decoded, changed by `edit` and encoded again.
pub fn with_moov(file: &[u8], edit: impl FnOnce(&mut Moov)) -> Vec<u8> {
    let target = find(file, b"moov")[0];
    let mut moov = Moov::decode(&mut &file[target.offset..target.offset + target.size]).unwrap();
    edit(&mut moov);
    let mut bytes = Vec::new();
    moov.encode(&mut bytes).unwrap();
    replace_box(file, target, &bytes)
}

/// `file` with its `n`th `moof` decoded, changed by `edit` and encoded again.
pub fn with_moof(file: &[u8], n: usize, edit: impl FnOnce(&mut Moof)) -> Vec<u8> {
    let target = find(file, b"moof")[n];
    let mut moof = Moof::decode(&mut &file[target.offset..target.offset + target.size]).unwrap();
    edit(&mut moof);
    let mut bytes = Vec::new();
    moof.encode(&mut bytes).unwrap();
    replace_box(file, target, &bytes)
}

/// The video track of a decoded `moov`.
pub fn video_trak(moov: &mut Moov) -> &mut mp4_atom::Trak {
    moov.trak.iter_mut().find(|t| t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide")).unwrap()
}

/// Counts live heap bytes and their peak, for "no allocation beyond what the
/// file can justify" checks. Install with `#[global_allocator]`.
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Runs `work` and returns its result with the peak heap bytes it added.
pub fn peak_allocation<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = work();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}
