//! The bucket-streamer server: serves decoded frames of HEVC videos in S3 or
//! a local folder over a WebSocket and HTTP.
//!
//! `serve` wires the parts: storage (object_store) → channels (one per open
//! video: index, decoder, fetched bytes) → sessions (one per WebSocket) and
//! the HTTP routes.

pub mod allocator;
pub mod auth;
pub mod channel;
pub mod channels;
pub mod config;
pub mod costs;
pub mod decode_pool;
pub mod decoders;
pub mod drain;
pub mod encode_slots;
pub mod failure;
pub mod frame_cache;
pub mod gop_bytes;
pub mod index_document;
pub mod listener;
pub mod memory_budget;
pub mod metrics;
pub mod protocol;
pub mod readiness;
pub mod routes;
pub mod scheduler;
pub mod session;
pub mod span_cache;
pub mod storage;
pub mod thumbnails;
pub mod urgency;
pub mod web;

use anyhow::Context;
use channels::Channels;
use config::ServeArgs;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// What every request handler can reach.
pub struct AppState {
    pub args: ServeArgs,
    pub channels: Channels,
    pub sessions: Arc<AtomicUsize>,
    pub metrics: PrometheusHandle,
    pub readiness: Arc<readiness::Readiness>,
    /// Set when `--auth-jwt-secret` is: requests must then prove who they are.
    pub auth: Option<auth::Auth>,
    /// Shutdown in progress (SIGTERM): sessions finish and close with 1012.
    pub drain: drain::Drain,
}

/// Runs the server until SIGINT/SIGTERM, then drains (`drain.rs`).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let storage = Arc::new(storage::Storage::from_args(&args)?);
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    let address = listener.local_addr()?;
    // First: every series below exists from the first scrape.
    let metrics = metrics::install();
    let budget_bytes = args.memory_budget(); // reads the cgroup files once
    let (memory, frame_cache_bytes) = memory_budget::MemoryBudget::new(budget_bytes, args.cache_bytes);
    let state = Arc::new(AppState {
        channels: Channels::new(
            storage.clone(),
            channel::Shared {
                frames: frame_cache::FrameCache::new(frame_cache_bytes),
                encode_slots: encode_slots::EncodeSlots::new(args.encode_threads()),
                threading: args.decoder_threading.policy(args.decode_threads()),
                pool: decode_pool::DecodePool::start(args.decode_threads())
                    .context("cannot start the decode threads")?,
                decoders_per_video: args.decoders_per_video.unwrap_or(args.decode_threads()),
                skip_unreferenced: !args.seek_all_pictures,
                index_time: std::time::Duration::from_secs(args.index_timeout_secs),
                memory,
            },
            args.max_open_videos,
        ),
        sessions: Arc::new(AtomicUsize::new(0)),
        metrics,
        readiness: Arc::default(),
        auth: args.auth_jwt_secret.as_deref().map(auth::Auth::new),
        drain: drain::Drain::new(std::time::Duration::from_secs(args.drain_secs)),
        args,
    });
    let reaper = tokio::spawn(close_idle_channels(state.clone()));
    let decoder_reaper = tokio::spawn(release_idle_decoders(state.clone()));
    let resident = tokio::spawn(allocator::keep_resident_within(budget_bytes));
    let readiness = tokio::spawn(state.readiness.clone().watch(storage.clone()));
    let instance = state.args.instance();
    let version = env!("CARGO_PKG_VERSION");
    ::metrics::gauge!(crate::metrics::INSTANCE, "instance" => instance.clone(), "version" => version).set(1.0);
    tracing::info!(%address, storage = %storage.describe(), instance, memory_budget = budget_bytes, "listening");
    let limits = listener::Limits {
        max_connections: state.args.max_connections,
        header_timeout: std::time::Duration::from_secs(state.args.http_header_timeout_secs),
    };
    let draining = {
        let state = state.clone();
        async move {
            shutdown_signal().await;
            state.readiness.shutting_down();
            state.drain.begin();
            state.drain.sessions_closed(&state.sessions).await;
            state.drain.http_time_left()
        }
    };
    listener::serve(listener, routes::router(state.clone()), limits, draining).await;
    reaper.abort();
    decoder_reaper.abort();
    resident.abort();
    readiness.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Decoders idle this long are dropped (the video stays open; its next
/// frame gets a new decoder): an open video nobody watches holds no
/// decoder memory.
const DECODER_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Drops idle decoders every second.
async fn release_idle_decoders(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        state.channels.release_idle_decoders(DECODER_IDLE);
    }
}

/// Closes videos nobody has used for `--channel-idle-secs`, checking a few times per timeout.
async fn close_idle_channels(state: Arc<AppState>) {
    let idle = std::time::Duration::from_secs(state.args.channel_idle_secs);
    let mut tick = tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(250)));
    loop {
        tick.tick().await;
        let closed = state.channels.close_idle(idle);
        if closed > 0 {
            tracing::debug!(closed, "closed idle videos");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
