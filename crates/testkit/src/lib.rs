//! Shared test support. Everything here talks to real things: the ffmpeg and
//! ffprobe CLIs make fixtures and reference decodes, the server and the S3
//! server run as real processes on loopback ports, nginx in front of them.

pub mod fixtures;
pub mod image;
pub mod nginx;
pub mod processes;
pub mod reference;
pub mod ws;

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// A file name unique to this process and call, for write-then-rename.
pub fn unique_temporary(dir: &std::path::Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{count}.tmp", std::process::id()))
}
