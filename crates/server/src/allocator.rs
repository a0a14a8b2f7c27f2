//! How the process asks glibc's allocator to hold memory, so the memory
//! budget (`memory_budget.rs`) is what the pod's RSS shows.
//!
//! Frames are multi-megabyte buffers allocated and freed hundreds of times a
//! second (by FFmpeg, libjpeg-turbo and us). glibc's defaults hand such
//! blocks back to the kernel on every free, so each new frame page-faults
//! its memory in again: measured at about a third of the per-frame CPU
//! time at 1080p. Keeping freed memory in the process removes that cost.
//!
//! Decoders are different: the budget drops idle ones (tens of megabytes
//! each) to make room, and glibc keeps what they held in the arena they
//! were freed in. With glibc's eight arenas per core, 24 1080p videos under
//! `--memory-budget 384MiB` peaked at 568 MB RSS. Two arenas, and handing
//! the freed pages of dropped decoders back (`return_freed_memory`), keep
//! RSS near the budget.

/// Sets the allocator up; call before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands whole free pages back to the kernel (after decoders were dropped).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
