//! Shared test support. Everything here talks to real things: the ffmpeg and
//! ffprobe CLIs make fixtures and reference decodes, the server and the S3
//! server run as real processes on loopback ports.

pub mod fixtures;
pub mod image;
pub mod processes;
pub mod reference;
pub mod ws;

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}
