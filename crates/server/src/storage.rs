//! Where videos live: a local folder or an S3(-compatible) bucket, behind
//! `object_store`. Owns path confinement (nothing outside the root or
//! prefix is reachable, in reads and in listings), timeouts and retries, the
//! read counters that show what a frame costs in storage traffic, and what a
//! storage failure may tell a client: its kind and a request id, never the
//! endpoint or a server path (those go to the log under the same id).

use crate::config::{S3Args, ServeArgs, StorageBackend};
use crate::metrics::{STORAGE_READ_BYTES, STORAGE_REQUESTS};
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("Video not found: {0}")]
    NotFound(String),
    #[error("storage error for {path}: {kind} (request {request_id})")]
    Failed { path: String, kind: FailureKind, request_id: String },
}

/// What kind of storage failure happened, in words safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    AccessDenied,
    TimedOut,
    Unreachable,
    Failed,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::AccessDenied => "storage refused the credentials",
            FailureKind::TimedOut => "storage did not answer in time",
            FailureKind::Unreachable => "storage cannot be reached",
            FailureKind::Failed => "storage request failed",
        })
    }
}

impl FailureKind {
    fn of(error: &object_store::Error) -> Self {
        if matches!(error, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) {
            return FailureKind::AccessDenied;
        }
        // object_store maps 401/403 to the variants above; the rest it reports
        // as text: S3 error codes, timeouts and connection failures.
        let text = error.to_string();
        let has = |needles: &[&str]| needles.iter().any(|needle| text.contains(needle));
        if has(&["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"]) {
            FailureKind::AccessDenied
        } else if has(&["timed out"]) {
            // Not the bare word "timeout": every retried error names its `retry_timeout`.
            FailureKind::TimedOut
        } else if has(&["error sending request", "connect", "dns error", "Connection refused"]) {
            FailureKind::Unreachable
        } else {
            FailureKind::Failed
        }
    }
}

/// A short id for a failure, shown to the client and written to the log.
pub fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PROCESS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        nanos ^ std::process::id().rotate_left(16)
    });
    format!("{process:08x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl StorageError {
    /// Short machine-readable reason for protocol answers.
    pub fn failure(&self) -> crate::failure::Failure {
        use crate::failure::Failure;
        match self {
            StorageError::InvalidPath { .. } => Failure::InvalidPath,
            StorageError::NotFound(_) => Failure::NotFound,
            StorageError::Failed { .. } => Failure::StorageError,
        }
    }
}

/// A video path that passed validation: relative, no `.`/`..`, no empty segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VideoPath {
    pub text: String,
    location: ObjectPath,
}

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Canonical root of the local backend, for the symlink check.
    local_root: Option<PathBuf>,
    /// How a path is shown to users: `s3://bucket/prefix/` for S3; nothing
    /// for the local backend (the path as the client named it).
    url_prefix: String,
}

impl Storage {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        match args.storage_backend {
            StorageBackend::Local => Self::local(&args.local_path),
            StorageBackend::S3 => {
                let bucket = args.s3.s3_bucket.clone().unwrap_or_default();
                Self::s3(&bucket, &args.s3, Duration::from_secs(args.storage_timeout_secs))
            }
        }
    }

    pub fn local(root: &std::path::Path) -> anyhow::Result<Self> {
        let root = root.canonicalize().map_err(|e| anyhow::anyhow!("local path {}: {e}", root.display()))?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self { store: Arc::new(store), url_prefix: String::new(), local_root: Some(root) })
    }

    /// A bucket (optionally narrowed to `--s3-prefix`) as storage.
    pub fn s3(bucket: &str, args: &S3Args, timeout: Duration) -> anyhow::Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new().with_timeout(timeout).with_connect_timeout(Duration::from_secs(5)),
            )
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: timeout, backoff: BackoffConfig::default() });
        if let Some(region) = &args.s3_region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &args.s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(key), Some(secret)) = (&args.s3_access_key, &args.s3_secret_key) {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        let prefix = args.s3_prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
        let (store, url_prefix) = match prefix {
            Some(prefix) => {
                let location = ObjectPath::parse(prefix).map_err(|e| anyhow::anyhow!("--s3-prefix: {e}"))?;
                (
                    Arc::new(PrefixStore::new(store, location)) as Arc<dyn ObjectStore>,
                    format!("s3://{bucket}/{prefix}/"),
                )
            }
            None => (store, format!("s3://{bucket}/")),
        };
        Ok(Self { store, local_root: None, url_prefix })
    }

    /// The user-facing URL of a video: `s3://bucket/prefix/videos/a.mp4`, or
    /// the path itself on the local backend (server paths are never shown).
    pub fn url_of(&self, path: &VideoPath) -> String {
        format!("{}{}", self.url_prefix, path.text)
    }

    /// Where the videos are, for the server's own log.
    pub fn describe(&self) -> String {
        match &self.local_root {
            Some(root) => root.display().to_string(),
            None => self.url_prefix.clone(),
        }
    }

    /// Whether storage answers: a metadata request for a key that should
    /// not exist must come back "not found" (wrong credentials, a missing
    /// bucket or an unreachable endpoint come back otherwise).
    pub async fn check(&self) -> Result<(), FailureKind> {
        let probe = ObjectPath::from(".bucket-streamer-readiness-probe");
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => {
                let kind = FailureKind::of(&error);
                tracing::warn!(error = %error, "storage check failed: {kind}");
                Err(kind)
            }
        }
    }

    /// Validates a client-supplied path. Keys are relative to the root:
    /// absolute paths, `.`/`..` segments, backslashes and control characters are refused.
    pub fn parse_path(&self, text: &str) -> Result<VideoPath, StorageError> {
        let invalid = |reason| StorageError::InvalidPath { path: text.to_string(), reason };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.len() > 1024 {
            return Err(invalid("longer than 1024 bytes"));
        }
        if text.starts_with('/') {
            return Err(invalid("absolute paths are not allowed"));
        }
        if text.contains('\\') || text.chars().any(char::is_control) {
            return Err(invalid("backslashes and control characters are not allowed"));
        }
        if text.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
            return Err(invalid("empty, '.' and '..' segments are not allowed"));
        }
        let location = ObjectPath::parse(text).map_err(|_| invalid("not a valid object key"))?;
        Ok(VideoPath { text: text.to_string(), location })
    }

    /// Size and version of a video; on the local backend also refuses
    /// symlinks that lead outside the root.
    pub async fn head(&self, path: &VideoPath) -> Result<ObjectMeta, StorageError> {
        if let Some(root) = &self.local_root {
            let full = root.join(&path.text);
            match full.canonicalize() {
                Ok(real) if !real.starts_with(root) => {
                    return Err(StorageError::InvalidPath {
                        path: path.text.clone(),
                        reason: "it leads outside the storage root",
                    })
                }
                Ok(real) if !real.is_file() => return Err(StorageError::NotFound(path.text.clone())),
                Ok(_) => {}
                Err(_) => return Err(StorageError::NotFound(path.text.clone())),
            }
        }
        metrics::counter!(STORAGE_REQUESTS).increment(1);
        self.store.head(&path.location).await.map_err(|e| self.error(path, e))
    }

    /// Reads a byte range of a video.
    pub async fn read_range(&self, path: &VideoPath, range: Range<u64>) -> Result<Bytes, StorageError> {
        metrics::counter!(STORAGE_REQUESTS).increment(1);
        let bytes = self.store.get_range(&path.location, range).await.map_err(|e| self.error(path, e))?;
        metrics::counter!(STORAGE_READ_BYTES).increment(bytes.len() as u64);
        Ok(bytes)
    }

    fn error(&self, path: &VideoPath, error: object_store::Error) -> StorageError {
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound(path.text.clone()),
            other => failure(&path.text, &other),
        }
    }

    /// Lists video-like objects under `prefix` (at most `limit`).
    pub async fn list(&self, prefix: Option<&str>, limit: usize) -> Result<Vec<ObjectMeta>, StorageError> {
        use futures_util::StreamExt;
        let location = match prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(prefix) => Some(self.parse_path(prefix)?.location),
            None => None,
        };
        metrics::counter!(STORAGE_REQUESTS).increment(1);
        let mut stream = self.store.list(location.as_ref());
        let mut found = Vec::new();
        let mut seen = 0usize;
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| failure(prefix.unwrap_or(""), &e))?;
            seen += 1;
            if self.inside_root(&meta.location) {
                found.push(meta);
            }
            // Links out of the root are dropped but still cost a look: bound those too.
            if found.len() >= limit || seen >= limit.saturating_mul(4) {
                break;
            }
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }
}

impl Storage {
    /// Whether a listed object really lies under the local root (a symlinked
    /// file or folder may lead out of it); S3 keys always do.
    fn inside_root(&self, location: &ObjectPath) -> bool {
        let Some(root) = &self.local_root else { return true };
        root.join(location.as_ref()).canonicalize().is_ok_and(|real| real.starts_with(root))
    }
}

/// A storage failure as the client sees it; the full error is logged under the same request id.
fn failure(path: &str, error: &object_store::Error) -> StorageError {
    let kind = FailureKind::of(error);
    let request_id = request_id();
    tracing::warn!(%request_id, path, error = %error, "storage request failed: {kind}");
    StorageError::Failed { path: path.to_string(), kind, request_id }
}

/// Synchronous range reads for the media crate's indexers. Used only on
/// blocking threads, where waiting on the runtime is allowed.
pub struct BlockingObject {
    pub storage: Arc<Storage>,
    pub path: VideoPath,
    pub size: u64,
    pub runtime: tokio::runtime::Handle,
}

impl media::RangeRead for BlockingObject {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, length: u64) -> anyhow::Result<Vec<u8>> {
        let end = offset.saturating_add(length).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bytes = self.runtime.block_on(self.storage.read_range(&self.path, offset..end))?;
        Ok(bytes.to_vec())
    }
}
