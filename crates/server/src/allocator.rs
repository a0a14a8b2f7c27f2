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
//!
//! Memory freed elsewhere (GOP bytes dropped, frames encoded) stays
//! resident up to the trim threshold, and a busy heap fragments: in runs of
//! 24 1080p videos glibc held 80-130 MB free at times. `keep_resident_within`
//! samples RSS four times a second (`bucket_streamer_resident_bytes`) and
//! hands free pages back only while RSS is over the budget, so the fast path
//! keeps its memory and a pod nearing its limit gets it back.

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

/// Hands whole free pages back to the kernel (after decoders were dropped,
/// or while RSS is over the budget).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often the resident size is compared with the budget.
const RESIDENT_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Publishes the process's resident bytes and hands free pages back to the
/// kernel whenever they exceed `budget`; runs until aborted.
pub async fn keep_resident_within(budget: u64) {
    let mut tick = tokio::time::interval(RESIDENT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(resident) = resident_bytes() else { continue };
        metrics::gauge!(crate::metrics::RESIDENT).set(resident as f64);
        if resident > budget {
            // Trimming walks the arenas' free lists: milliseconds, kept off the async workers.
            let _ = tokio::task::spawn_blocking(return_freed_memory).await;
            metrics::counter!(crate::metrics::ALLOCATOR_TRIMS).increment(1);
        }
    }
}

/// The process's resident set in bytes (`/proc/self/statm`), where there is one.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page).ok()?)
}
