//! Server configuration: the Stage 1 flags and their environment variables,
//! parsed by clap and checked before anything starts.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    /// A folder on this machine (the default; the demo uses ./data).
    Local,
    /// Amazon S3 or an S3-compatible server (MinIO, Ceph, ...).
    S3,
}

/// Where and how to reach S3 (or an S3-compatible server).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Bucket of the S3 backend; video paths are keys in it.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Only keys under this prefix are reachable (video paths are relative to it).
    #[arg(long, env = "S3_PREFIX")]
    pub s3_prefix: Option<String>,

    /// AWS region (default: from the AWS environment, else us-east-1).
    #[arg(long, env = "S3_REGION")]
    pub s3_region: Option<String>,

    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (path-style requests; plain HTTP allowed).
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Access key; without it the standard AWS credential chain is used.
    #[arg(long, env = "S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,

    /// Secret key matching --s3-access-key.
    #[arg(long, env = "S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3000")]
    pub listen_addr: SocketAddr,

    /// Where videos are read from.
    #[arg(long, env = "STORAGE_BACKEND", value_enum, default_value_t = StorageBackend::Local)]
    pub storage_backend: StorageBackend,

    /// Root folder of the local backend; video paths are relative to it.
    #[arg(long, env = "LOCAL_PATH", default_value = "./data")]
    pub local_path: PathBuf,

    #[command(flatten)]
    pub s3: S3Args,

    /// JPEG quality of served frames, 1-100.
    #[arg(long, env = "JPEG_QUALITY", default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Bytes of encoded frames kept for repeats, shared by all videos.
    #[arg(long, env = "CACHE_BYTES", default_value_t = 64 << 20)]
    pub cache_bytes: u64,

    /// Memory that decoders, fetched GOP bytes, indexes and the frame cache
    /// may hold together: bytes, or with a unit (`384MiB`, `2Gi`, `1.5GB`).
    /// Default: three quarters of the cgroup memory limit, else half of the
    /// machine's memory. Idle decoders and cached bytes are dropped to stay
    /// under it; a frame that cannot fit is answered `busy`.
    #[arg(long, env = "MEMORY_BUDGET", value_parser = parse_byte_size)]
    pub memory_budget: Option<u64>,

    /// libavcodec threading per decoder: `auto`, `single`, `frame:N` or
    /// `slice:N`. `auto` gives each decoder the cores the decode threads
    /// leave (frame threads, up to 4), so decoding never oversubscribes the
    /// cores; with the default decode threads, decoders of wavefront (WPP)
    /// streams get slice threads, one per core up to 4 (a lone seek uses
    /// the idle cores), others are single-threaded; a lone seek, or a lone
    /// reader's playback in long GOPs, that has the decode threads to
    /// itself gets frame threads over the idle cores.
    #[arg(long, env = "DECODER_THREADING", default_value = "auto")]
    pub decoder_threading: DecoderThreading,

    /// Decode threads shared by all videos (default: one per core).
    #[arg(long, env = "DECODE_THREADS")]
    pub decode_threads: Option<usize>,

    /// Decoders one video may use at once, so its viewers decode side by
    /// side (default: the decode threads).
    #[arg(long, env = "DECODERS_PER_VIDEO")]
    pub decoders_per_video: Option<usize>,

    /// JPEG encodes at once (default: one less than the cores, at least one).
    #[arg(long, env = "ENCODE_THREADS")]
    pub encode_threads: Option<usize>,

    /// Most WebSocket sessions at once; further upgrades get 503.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 1024)]
    pub max_sessions: usize,

    /// Most HTTP connections open at once; more are closed at once.
    /// (WebSocket sessions are bounded by --max-sessions.)
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds a client may take to send a request's headers; also how long
    /// an idle kept-alive HTTP connection stays open.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// Most frames one RequestFrames may ask for; the rest are answered with FrameError.
    #[arg(long, env = "MAX_FRAMES_PER_REQUEST", default_value_t = 10_000)]
    pub max_frames_per_request: usize,

    /// Most frames waiting in one session's queue; more are answered with FrameError `queue_full`.
    #[arg(long, env = "MAX_QUEUED_FRAMES", default_value_t = 20_000)]
    pub max_queued_frames: usize,

    /// Most videos open at once in this process (idle ones are closed first).
    #[arg(long, env = "MAX_OPEN_VIDEOS", default_value_t = 256)]
    pub max_open_videos: usize,

    /// Seconds a video stays open (index, decoder, caches) after its last use
    /// when no session has it set.
    #[arg(long, env = "CHANNEL_IDLE_SECS", default_value_t = 300)]
    pub channel_idle_secs: u64,

    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Seconds before a storage request is abandoned (after retries).
    #[arg(long, env = "STORAGE_TIMEOUT_SECS", default_value_t = 30)]
    pub storage_timeout_secs: u64,

    /// Bytes of frames a session may have produced but not yet sent; the
    /// session's work waits beyond it until the client reads.
    #[arg(long, env = "SESSION_BUFFER_BYTES", default_value_t = 16 << 20)]
    pub session_buffer_bytes: usize,

    /// Seconds a client may take to read what it was sent or to answer a
    /// ping before its session is closed (close code 1008).
    #[arg(long, env = "CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub client_timeout_secs: u64,

    /// Seconds between WebSocket pings to each client.
    #[arg(long, env = "PING_INTERVAL_SECS", default_value_t = 15)]
    pub ping_interval_secs: u64,

    /// Seconds a session may send nothing before it is closed (close code
    /// 1000, "idle timeout"); 0 keeps idle sessions open.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 900)]
    pub idle_timeout_secs: u64,

    /// Secret for HS256 tokens and signed frame URLs (at least 32 bytes).
    /// When set, `/ws` and `/api/v1/*` need a token or a signed URL.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,

    /// Web page origins allowed to open `/ws` (comma list, `*` for any); the
    /// server's own origin always is. Default: any origin.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Seconds allowed to index one video (read its header, build the frame
    /// table); a file that takes longer is refused as `too_large`.
    #[arg(long, env = "INDEX_TIMEOUT_SECS", default_value_t = 60)]
    pub index_timeout_secs: u64,

    /// Seconds from SIGTERM to exit: sessions finish the frames they were
    /// asked for and close with 1012, then HTTP requests finish. Keep the
    /// pod's terminationGracePeriodSeconds above preStop + this.
    #[arg(long, env = "DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,

    /// Seeks decode every picture from the keyframe, also those nothing
    /// references (by default they are left out); for comparison.
    #[arg(long, env = "SEEK_ALL_PICTURES")]
    pub seek_all_pictures: bool,

    /// This process's name in /metrics (`bucket_streamer_instance_info`);
    /// default: the host name (the pod's name on Kubernetes).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
}

/// A `--decoder-threading` value.
#[derive(Debug, Clone, Copy)]
pub struct DecoderThreading(pub Option<media::Threading>);

impl DecoderThreading {
    /// How decoders are threaded when `decode_threads` decode at once.
    pub fn policy(&self, decode_threads: usize) -> ThreadingPolicy {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.0 {
            Some(threading) => ThreadingPolicy::Fixed(threading),
            None => ThreadingPolicy::Auto { cores, decode_threads: decode_threads.max(1) },
        }
    }
}

/// Chooses the threading of each stream's decoders.
#[derive(Debug, Clone, Copy)]
pub enum ThreadingPolicy {
    /// As `--decoder-threading` says.
    Fixed(media::Threading),
    /// Cores the decode threads leave become frame threads (up to 4). With
    /// none left (the default, a decode thread per core), wavefront
    /// streams get slice threads, one per core up to 4: a lone seek then
    /// uses the idle cores, and under load they add threads but no work
    /// (frame threads would add delay and decode pictures nobody asked
    /// for). Other streams decode on one thread. A job with the pool to
    /// itself may be widened to frame threads over the idle cores (`for_lone_reader`).
    Auto { cores: usize, decode_threads: usize },
}

impl ThreadingPolicy {
    /// The threading of a decoder of this stream.
    pub fn for_stream(&self, stream: &media::index::DecoderConfig) -> media::Threading {
        match *self {
            Self::Fixed(threading) => threading,
            Self::Auto { cores, decode_threads } => match ((cores / decode_threads).min(4), cores.min(4)) {
                (spare @ 2.., _) => media::Threading::Frame(spare),
                (_, cores @ 2..) if stream.wavefront => media::Threading::Slice(cores),
                _ => media::Threading::Single,
            },
        }
    }

    /// The threading of a job of this stream that has the decode pool to
    /// itself (`decoders::Widening` says which), when it differs from
    /// `for_stream`'s: frame threads over the cores (up to 4), for a stream
    /// whose decoders get none.
    pub fn for_lone_reader(&self, stream: &media::index::DecoderConfig) -> Option<media::Threading> {
        match (*self, self.for_stream(stream)) {
            (_, media::Threading::Frame(_)) => None,
            (Self::Auto { cores, .. }, _) if cores >= 2 => Some(media::Threading::Frame(cores.min(4))),
            _ => None,
        }
    }
}

impl std::str::FromStr for DecoderThreading {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let count = |n: &str| n.parse::<usize>().ok().filter(|&n| (1..=64).contains(&n));
        let threading = match text.split_once(':') {
            None if text == "auto" => None,
            None if text == "single" => Some(media::Threading::Single),
            Some(("frame", n)) => Some(media::Threading::Frame(count(n).ok_or("frame:N needs N in 1..=64")?)),
            Some(("slice", n)) => Some(media::Threading::Slice(count(n).ok_or("slice:N needs N in 1..=64")?)),
            _ => return Err(format!("{text:?} is not auto, single, frame:N or slice:N")),
        };
        Ok(Self(threading))
    }
}

impl ServeArgs {
    /// Decode threads: as configured, else one per core.
    pub fn decode_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.decode_threads.unwrap_or(cores).max(1)
    }

    /// Concurrent JPEG encodes: as configured, else one core left to decoding.
    pub fn encode_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.encode_threads.unwrap_or(cores - 1).max(1)
    }

    /// This process's name: `--instance-id`, else the host name.
    pub fn instance(&self) -> String {
        self.instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }

    /// How sessions time out (see `session.rs`).
    pub fn session_timeouts(&self) -> crate::session::Timeouts {
        crate::session::Timeouts {
            client: std::time::Duration::from_secs(self.client_timeout_secs),
            ping_every: std::time::Duration::from_secs(self.ping_interval_secs),
            idle: (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs)),
        }
    }

    /// The memory budget in bytes (`--memory-budget` or its default).
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget.unwrap_or_else(crate::memory_budget::default_budget).max(MIN_MEMORY_BUDGET)
    }

    /// Checks combinations clap cannot express; the error is one line.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.storage_backend {
            StorageBackend::Local => {
                anyhow::ensure!(
                    self.local_path.is_dir(),
                    "--local-path {} is not a folder (create it or point LOCAL_PATH elsewhere)",
                    self.local_path.display()
                );
            }
            StorageBackend::S3 => {
                anyhow::ensure!(
                    self.s3.s3_bucket.as_deref().is_some_and(|b| !b.is_empty()),
                    "--storage-backend s3 needs --s3-bucket (S3_BUCKET)"
                );
                anyhow::ensure!(
                    self.s3.s3_access_key.is_some() == self.s3.s3_secret_key.is_some(),
                    "--s3-access-key and --s3-secret-key must be given together"
                );
                if let Some(endpoint) = &self.s3.s3_endpoint {
                    anyhow::ensure!(
                        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                        "--s3-endpoint must be an http:// or https:// URL, not {endpoint}"
                    );
                }
            }
        }
        if let Some(secret) = &self.auth_jwt_secret {
            anyhow::ensure!(secret.len() >= 32, "--auth-jwt-secret must be at least 32 bytes (HS256 needs 256 bits)");
        }
        anyhow::ensure!(self.max_sessions > 0, "--max-sessions must be at least 1");
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be at least 1");
        anyhow::ensure!(self.http_header_timeout_secs > 0, "--http-header-timeout-secs must be at least 1");
        anyhow::ensure!(self.max_frames_per_request > 0, "--max-frames-per-request must be at least 1");
        anyhow::ensure!(self.max_open_videos > 0, "--max-open-videos must be at least 1");
        anyhow::ensure!(self.storage_timeout_secs > 0, "--storage-timeout-secs must be at least 1");
        anyhow::ensure!(self.channel_idle_secs > 0, "--channel-idle-secs must be at least 1");
        anyhow::ensure!(self.index_timeout_secs > 0, "--index-timeout-secs must be at least 1");
        anyhow::ensure!(self.client_timeout_secs > 0, "--client-timeout-secs must be at least 1");
        anyhow::ensure!(self.ping_interval_secs > 0, "--ping-interval-secs must be at least 1");
        anyhow::ensure!(self.session_buffer_bytes > 0, "--session-buffer-bytes must be at least 1");
        if let Some(budget) = self.memory_budget {
            anyhow::ensure!(budget >= MIN_MEMORY_BUDGET, "--memory-budget must be at least 32MiB");
        }
        anyhow::ensure!(self.drain_secs >= 4, "--drain-secs must be at least 4 (sessions need 3 s to close)");
        Ok(())
    }
}

/// Less cannot hold one 1080p decoder and its bytes.
const MIN_MEMORY_BUDGET: u64 = 32 << 20;

/// Parses a byte size: a number with an optional unit, decimal (`k`, `M`,
/// `G`, `T`, with or without `B`) or binary (`Ki`, `Mi`, `Gi`, `Ti`, with
/// or without `B`), as Kubernetes quantities and humans write them.
fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 384MiB, 2Gi, 1000000)"))?;
    let unit = unit.trim().trim_end_matches(['B', 'b']);
    let multiple: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(format!("unknown unit in {text:?} (use k, M, G, T, Ki, Mi, Gi or Ti)")),
    };
    let bytes = number * multiple as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_byte_size;

    #[test]
    fn byte_sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_byte_size("1000"), Ok(1000));
        assert_eq!(parse_byte_size("384MiB"), Ok(384 << 20));
        assert_eq!(parse_byte_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_byte_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_byte_size("512 M"), Ok(512_000_000));
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999Ti").is_err());
    }
}
