//! Prometheus metrics: names in one place, rendered at `GET /metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const STORAGE_REQUESTS: &str = "bucket_streamer_storage_requests_total";
pub const STORAGE_READ_BYTES: &str = "bucket_streamer_storage_read_bytes_total";
pub const FRAMES_SERVED: &str = "bucket_streamer_frames_served_total";
pub const FRAME_ERRORS: &str = "bucket_streamer_frame_errors_total";
pub const FRAMES_DECODED: &str = "bucket_streamer_frames_decoded_total";
pub const CACHE_HITS: &str = "bucket_streamer_cache_hits_total";
pub const CACHE_JOINS: &str = "bucket_streamer_cache_joins_total";
pub const PREFETCH_YIELDS: &str = "bucket_streamer_prefetch_yields_total";
pub const DECODER_PANICS: &str = "bucket_streamer_decoder_panics_total";
pub const FETCH_SECONDS: &str = "bucket_streamer_fetch_seconds";
pub const DECODE_SECONDS: &str = "bucket_streamer_decode_seconds";
pub const ENCODE_SECONDS: &str = "bucket_streamer_encode_seconds";
pub const SESSIONS: &str = "bucket_streamer_sessions";
pub const SESSIONS_CLOSED: &str = "bucket_streamer_sessions_closed_total";
pub const CHANNELS: &str = "bucket_streamer_channels";
pub const READY: &str = "bucket_streamer_ready";
pub const CONNECTIONS: &str = "bucket_streamer_http_connections";
pub const CONNECTIONS_REFUSED: &str = "bucket_streamer_http_connections_refused_total";
pub const DECODE_JOBS: &str = "bucket_streamer_decode_jobs";
pub const ENCODES: &str = "bucket_streamer_encodes";
pub const DECODE_SLICES: &str = "bucket_streamer_decode_slices_total";
pub const PICTURES_SKIPPED: &str = "bucket_streamer_pictures_skipped_total";
pub const SEEK_PICTURES: &str = "bucket_streamer_seek_pictures";
pub const WIDENED_SEEKS: &str = "bucket_streamer_widened_seeks_total";
pub const INSTANCE: &str = "bucket_streamer_instance_info";
pub const VIDEO_FRAMES_DECODED: &str = "bucket_streamer_video_frames_decoded_total";
pub const VIDEO_OPENS: &str = "bucket_streamer_video_opens_total";
pub const MEMORY_BUDGET: &str = "bucket_streamer_memory_budget_bytes";
pub const MEMORY_HELD: &str = "bucket_streamer_memory_held_bytes";
pub const MEMORY_RECLAIMED: &str = "bucket_streamer_memory_reclaims_total";
pub const MEMORY_REFUSALS: &str = "bucket_streamer_memory_refusals_total";
pub const RESIDENT: &str = "bucket_streamer_resident_bytes";
pub const ALLOCATOR_TRIMS: &str = "bucket_streamer_allocator_trims_total";

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
            let pictures = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(SEEK_PICTURES.into()),
                        &pictures,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
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
    metrics::describe_counter!(
        PREFETCH_YIELDS,
        "Prefetch decodes paused (and queued again) so a requested frame could go first"
    );
    metrics::describe_counter!(DECODER_PANICS, "Decoder panics caught (the job failed, the decoder was rebuilt)");
    metrics::describe_counter!(FRAME_ERRORS, "Frame requests answered with an error, by reason");
    metrics::describe_counter!(FRAMES_DECODED, "Pictures produced by the decoders");
    metrics::describe_gauge!(DECODE_JOBS, "Decode jobs waiting for or on a decode thread");
    metrics::describe_gauge!(ENCODES, "JPEG encodes waiting for or holding an encode slot");
    metrics::describe_counter!(
        DECODE_SLICES,
        "Requested decodes that gave their thread to another video's waiting request for a while"
    );
    metrics::describe_counter!(PICTURES_SKIPPED, "Pictures seeks did not decode because nothing references them");
    metrics::describe_histogram!(SEEK_PICTURES, "Pictures decoded by a request that started from a keyframe (a seek)");
    metrics::describe_counter!(
        WIDENED_SEEKS,
        "Seeks decoded with frame threads over decode threads that had nothing else to do"
    );
    metrics::describe_counter!(CACHE_HITS, "Frames served from the encoded-frame cache");
    metrics::describe_counter!(CACHE_JOINS, "Requests that waited for a frame another request was producing");
    metrics::describe_histogram!(FETCH_SECONDS, "Storage reads for frames (GOP bytes), seconds");
    metrics::describe_histogram!(
        DECODE_SECONDS,
        "Decoding one requested frame, including frames decoded on the way, seconds"
    );
    metrics::describe_histogram!(
        ENCODE_SECONDS,
        "Scaling, colour conversion and encoding (JPEG, WebP or PNG) of one frame, seconds"
    );
    metrics::describe_gauge!(SESSIONS, "Open WebSocket sessions");
    metrics::describe_counter!(SESSIONS_CLOSED, "Sessions the server closed, by reason (not reading, idle, too big)");
    metrics::describe_gauge!(CHANNELS, "Videos open in this process");
    metrics::describe_gauge!(CONNECTIONS, "HTTP connections open (WebSocket sessions are counted as sessions)");
    metrics::describe_counter!(CONNECTIONS_REFUSED, "Connections closed at once because --max-connections were open");
    metrics::describe_gauge!(READY, "1 when storage answers and the process takes traffic, else 0");
    metrics::describe_gauge!(INSTANCE, "Always 1; labels name this process (--instance-id) and its version");
    metrics::describe_counter!(
        VIDEO_FRAMES_DECODED,
        "Pictures decoded, by video (the first 100 videos by path, the rest as \"other\")"
    );
    metrics::describe_counter!(VIDEO_OPENS, "Videos opened (indexed), by video (first 100 by path, then \"other\")");
    metrics::describe_gauge!(
        MEMORY_BUDGET,
        "--memory-budget: bytes decoders, fetched bytes, indexes and the frame cache may hold"
    );
    metrics::describe_gauge!(
        MEMORY_HELD,
        "Bytes held against the memory budget, by holder (decoders, spans, indexes, frames)"
    );
    metrics::describe_counter!(
        MEMORY_RECLAIMED,
        "Reservations that fitted after idle decoders or cached bytes were dropped"
    );
    metrics::describe_counter!(
        MEMORY_REFUSALS,
        "Requests answered busy because the memory budget was full of memory in use, by holder"
    );
    metrics::describe_gauge!(RESIDENT, "Resident memory of the process (RSS), bytes, sampled four times a second");
    metrics::describe_counter!(
        ALLOCATOR_TRIMS,
        "Times RSS was over the memory budget and the allocator handed its free pages back"
    );
    // Every series exists from the first scrape, so dashboards and rate() work on a fresh pod.
    for counter in [
        STORAGE_REQUESTS,
        STORAGE_READ_BYTES,
        FRAMES_SERVED,
        FRAME_ERRORS,
        FRAMES_DECODED,
        CACHE_HITS,
        CACHE_JOINS,
        PREFETCH_YIELDS,
        PICTURES_SKIPPED,
        WIDENED_SEEKS,
        DECODE_SLICES,
        DECODER_PANICS,
        SESSIONS_CLOSED,
        CONNECTIONS_REFUSED,
        MEMORY_RECLAIMED,
        MEMORY_REFUSALS,
        ALLOCATOR_TRIMS,
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for gauge in [SESSIONS, CHANNELS, READY, CONNECTIONS, DECODE_JOBS, ENCODES, RESIDENT] {
        metrics::gauge!(gauge).set(0.0);
    }
    for histogram in [FETCH_SECONDS, DECODE_SECONDS, ENCODE_SECONDS, SEEK_PICTURES] {
        let _ = metrics::histogram!(histogram);
    }
}

/// Counts one in a gauge for as long as it lives.
pub struct InProgress(&'static str);

impl InProgress {
    pub fn new(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        Self(gauge)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Records the time until it is dropped into a histogram.
pub struct Timer {
    name: &'static str,
    started: std::time::Instant,
}

impl Timer {
    pub fn new(name: &'static str) -> Self {
        Self { name, started: std::time::Instant::now() }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        metrics::histogram!(self.name).record(self.started.elapsed().as_secs_f64());
    }
}

/// Videos with a label of their own; later ones share `video="other"`, so
/// a process that opens millions of videos keeps a bounded set of series.
pub const VIDEO_LABELS: usize = 100;

/// The `video` label for `path`: itself while fewer than `VIDEO_LABELS`
/// videos have one, else "other".
pub fn video_label(path: &str) -> String {
    static LABELLED: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut labelled = LABELLED.lock().unwrap_or_else(|p| p.into_inner());
    let labelled = labelled.get_or_insert_with(Default::default);
    if labelled.contains(path) {
        return path.to_string();
    }
    if labelled.len() < VIDEO_LABELS {
        labelled.insert(path.to_string());
        return path.to_string();
    }
    "other".into()
}
