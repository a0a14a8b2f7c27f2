//! Prometheus metrics: names in one place, rendered at `GET /metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const STORAGE_REQUESTS: &str = "bucket_streamer_storage_requests_total";
pub const STORAGE_READ_BYTES: &str = "bucket_streamer_storage_read_bytes_total";
pub const FRAMES_SERVED: &str = "bucket_streamer_frames_served_total";
pub const FRAME_ERRORS: &str = "bucket_streamer_frame_errors_total";
pub const FRAMES_DECODED: &str = "bucket_streamer_frames_decoded_total";
pub const SESSIONS: &str = "bucket_streamer_sessions";
pub const CHANNELS: &str = "bucket_streamer_channels";

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A second recorder (e.g. two servers in one test process) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(STORAGE_REQUESTS, "Range and metadata requests sent to storage");
    metrics::describe_counter!(STORAGE_READ_BYTES, "Bytes read from storage");
    metrics::describe_counter!(FRAMES_SERVED, "Frames sent to clients");
    metrics::describe_counter!(FRAME_ERRORS, "Frame requests answered with an error, by reason");
    metrics::describe_counter!(FRAMES_DECODED, "Pictures produced by the decoders");
    metrics::describe_gauge!(SESSIONS, "Open WebSocket sessions");
    metrics::describe_gauge!(CHANNELS, "Videos open in this process");
}
