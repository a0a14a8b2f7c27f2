//! HTTP surface: the web client, health probes, the WebSocket upgrade, the video listing,
//! the frame index, single frames as JPEG and Prometheus metrics.
//! Text answers are gzip-compressed for clients that accept it: a long
//! video's index is ~110 bytes of JSON per frame (12 MB for an hour at
//! 30 fps) and shrinks about five times; JPEGs are left alone.

use crate::auth::{AuthError, Grant};
use crate::channel::{FrameFailure, OpenError};
use crate::session::{self, SessionSlot};
use crate::AppState;
use axum::extract::{OriginalUri, Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use media::output::Output;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tower_http::compression::{CompressionLayer, CompressionLevel};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(crate::web::page))
        .route("/web/{*path}", get(crate::web::file))
        .route("/health", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/ws", get(websocket))
        .route("/api/v1/videos", get(list_videos))
        .route("/api/v1/videos/{*rest}", get(video_resource))
        .route("/api/v1/index", get(index_by_query))
        .route("/api/v1/frame", get(frame))
        .route(THUMBNAILS_PATH, get(thumbnail_map))
        .route(&format!("{THUMBNAILS_PATH}/sprite"), get(thumbnail_sprite))
        .route("/metrics", get(metrics))
        // The fastest level: nearly all of the gain, and the cores are for decoding.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .with_state(state)
}

/// An HTTP error with a JSON body `{"error": code, "message": text}`.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.1, "message": self.2}));
        if self.0 == StatusCode::UNAUTHORIZED {
            return (self.0, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.0, body).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let status = if error.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        ApiError(status, error.code(), error.to_string())
    }
}

/// What this request may do: everything when authentication is off, else
/// what its bearer token (or, where given, `query_token`) grants.
fn grant(state: &AppState, headers: &HeaderMap, query_token: Option<&str>) -> Result<Grant, ApiError> {
    match &state.auth {
        None => Ok(Grant::everything()),
        Some(auth) => Ok(auth.grant(headers, query_token)?),
    }
}

/// Refuses a video path outside the grant with 403.
fn check_path(grant: &Grant, path: &str) -> Result<(), ApiError> {
    if grant.allows(path) {
        Ok(())
    } else {
        Err(AuthError::Forbidden(grant.refusal(path)).into())
    }
}

impl From<OpenError> for ApiError {
    fn from(error: OpenError) -> Self {
        let failure = error.failure();
        ApiError(failure.http_status(), failure.code(), error.to_string())
    }
}

impl From<FrameFailure> for ApiError {
    fn from(failure: FrameFailure) -> Self {
        ApiError(failure.failure.http_status(), failure.code(), failure.message)
    }
}

#[derive(Deserialize)]
struct WebSocketQuery {
    /// A token for browsers, which cannot set headers on a WebSocket.
    access_token: Option<String>,
    /// The video the session starts on (as if `SetVideo` had been sent), and
    /// the key a load balancer routes by.
    video: Option<String>,
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WebSocketQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !crate::auth::origin_allowed(&headers, &state.args.allowed_origins) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or_default();
        tracing::info!(origin, "refused a WebSocket from another site's page");
        return ApiError(StatusCode::FORBIDDEN, "forbidden", "this page's origin may not open the WebSocket".into())
            .into_response();
    }
    let grant = match grant(&state, &headers, query.access_token.as_deref()) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.into_response(),
    };
    if state.drain.is_draining() {
        // 503 lets a proxy try the next server; a client retries.
        let refusal = ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "this server is restarting".into());
        return ([(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")], refusal).into_response();
    }
    let Some(slot) = SessionSlot::acquire(&state.sessions, state.args.max_sessions) else {
        // Close the refused connection: kept alive, a retrying client would
        // pile up idle connections (and file descriptors) instead.
        let refusal = ApiError(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many sessions; try again later".into());
        return ([(header::CONNECTION, "close")], refusal).into_response();
    };
    upgrade
        .max_message_size(state.args.max_message_bytes)
        .on_upgrade(move |socket| session::run(socket, state, slot, grant, query.video))
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
}

const VIDEO_EXTENSIONS: [&str; 7] = ["mp4", "m4v", "mov", "h265", "hevc", "265", "mkv"];
const LIST_LIMIT: usize = 10_000;

async fn list_videos(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = grant(&state, &headers, None)?;
    // A token limited to a prefix lists under it; asking outside it is refused.
    let prefix = match (query.prefix.as_deref(), grant.prefix()) {
        (Some(asked), Some(granted)) if asked.starts_with(granted) => Some(asked),
        (Some(asked), Some(granted)) if !granted.starts_with(asked) => {
            return Err(AuthError::Forbidden(grant.refusal(asked)).into())
        }
        (_, Some(granted)) => Some(granted.trim_end_matches('/')),
        (asked, None) => asked,
    };
    let objects = state.channels.storage().list(prefix, LIST_LIMIT).await.map_err(OpenError::from)?;
    let videos: Vec<_> = objects
        .iter()
        .filter(|meta| grant.allows(meta.location.as_ref()))
        .filter(|meta| {
            let name = meta.location.as_ref();
            name.rsplit_once('.').is_some_and(|(_, ext)| VIDEO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
        })
        .map(|meta| json!({"path": meta.location.as_ref(), "size": meta.size, "last_modified": meta.last_modified}))
        .collect();
    Ok(Json(json!({"videos": videos, "truncated": objects.len() >= LIST_LIMIT})).into_response())
}

/// `/api/v1/videos/{path}/index`: the path may contain slashes.
async fn video_resource(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = grant(&state, &headers, None)?;
    let Some(path) = rest.strip_suffix("/index") else {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no resource /api/v1/videos/{rest}")));
    };
    check_path(&grant, path)?;
    index_of(&state, path).await
}

#[derive(Deserialize)]
struct IndexQuery {
    video: String,
}

/// `/api/v1/index?video=<path>`: the index with the video in the query,
/// where a load balancer can route by it.
async fn index_by_query(
    State(state): State<Arc<AppState>>,
    Query(query): Query<IndexQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_path(&grant(&state, &headers, None)?, &query.video)?;
    index_of(&state, &query.video).await
}

async fn index_of(state: &AppState, path: &str) -> Result<Response, ApiError> {
    let channel = state.channels.open(path).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], channel.index_document()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameQuery {
    video: String,
    offset: Option<u64>,
    irap_offset: Option<u64>,
    /// Presentation-order frame number, an alternative to `offset`.
    frame: Option<u32>,
    /// Output options (`media::output`): the box to fit in, the format and quality.
    width: Option<u32>,
    height: Option<u32>,
    format: Option<String>,
    quality: Option<u8>,
    /// A signed URL's signature and expiry, checked on the raw query.
    #[serde(rename = "sig")]
    _sig: Option<serde::de::IgnoredAny>,
    #[serde(rename = "exp")]
    _exp: Option<serde::de::IgnoredAny>,
}

impl FrameQuery {
    fn output(&self, jpeg_quality: u8) -> Result<Output, ApiError> {
        let invalid = |reason: String| ApiError(StatusCode::BAD_REQUEST, "invalid_request", reason);
        let format = self.format.as_deref().map(str::parse).transpose().map_err(invalid)?;
        Output::new(format, self.width, self.height, self.quality, jpeg_quality).map_err(invalid)
    }
}

/// Frames never change for a given object version, so caches may keep them
/// forever: shared caches (a proxy, a CDN) too when no token was needed.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A frame a token was needed for: only the browser that showed the token
/// may keep it (a shared cache keys on the URL and would hand it to anyone).
const IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";

async fn frame(
    State(state): State<Arc<AppState>>,
    Query(query): Query<FrameQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cache_control = authorize_image(&state, &uri, uri.path(), &headers, &query.video)?;
    let output = query.output(state.args.jpeg_quality)?;
    let channel = state.channels.open(&query.video).await?;
    output
        .check_size(channel.index.width, channel.index.height)
        .map_err(|reason| ApiError(StatusCode::BAD_REQUEST, "invalid_request", reason))?;
    let position = match (query.offset, query.frame) {
        (Some(offset), None) => channel.resolve(offset, query.irap_offset)?,
        (None, Some(number)) => channel.index.frame(number).map(|(position, _)| position).ok_or_else(|| {
            let count = channel.index.frame_count();
            ApiError(StatusCode::NOT_FOUND, "not_a_frame", format!("frame {number} does not exist ({count} frames)"))
        })?,
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give exactly one of offset or frame".into(),
            ))
        }
    };
    let etag = channel.frame_etag(position, &output);
    let caching = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, cache_control.to_string())];
    if matches_etag(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, caching).into_response());
    }
    let image = channel.image(position, output, Default::default(), None).await?;
    Ok(([(header::CONTENT_TYPE, output.format.media_type())], caching, image.bytes).into_response())
}

/// Whether the client already holds the representation tagged `etag`.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
}

/// Checks who may have an image of `video`; how caches may keep it. A
/// signed URL vouches for exactly the query it was signed with, on
/// `signed_path` (the request's path, or the path of the resource the
/// request is part of), and is its own credential (the signature is part of
/// every cache key); otherwise a token must.
fn authorize_image(
    state: &AppState,
    uri: &axum::http::Uri,
    signed_path: &str,
    headers: &HeaderMap,
    video: &str,
) -> Result<&'static str, ApiError> {
    let raw_query = uri.query().unwrap_or_default();
    Ok(match &state.auth {
        Some(auth) if raw_query.split('&').any(|pair| pair.starts_with("sig=")) => {
            auth.check_signed_url(signed_path, raw_query).map_err(ApiError::from)?;
            IMMUTABLE
        }
        Some(_) => {
            check_path(&grant(state, headers, None)?, video)?;
            IMMUTABLE_PRIVATE
        }
        None => IMMUTABLE,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThumbnailQuery {
    video: String,
    width: Option<u32>,
    count: Option<u32>,
    #[serde(rename = "sig")]
    _sig: Option<serde::de::IgnoredAny>,
    #[serde(rename = "exp")]
    _exp: Option<serde::de::IgnoredAny>,
}

/// Where a strip's map is; a URL signed for it vouches for its sprite too
/// (the map names the sprite with the same query and signature).
const THUMBNAILS_PATH: &str = "/api/v1/thumbnails";

/// Answers a thumbnail request: checked and authorised, 304 when the client
/// holds it, else the strip made (or found) and shown by `show`.
async fn thumbnail_answer(
    state: &AppState,
    query: &ThumbnailQuery,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    kind: &str,
    show: impl FnOnce(&crate::thumbnails::Strip) -> Response,
) -> Result<Response, ApiError> {
    let cache_control = authorize_image(state, uri, THUMBNAILS_PATH, headers, &query.video)?;
    let spec = crate::thumbnails::StripSpec::new(query.width, query.count)
        .map_err(|reason| ApiError(StatusCode::BAD_REQUEST, "invalid_request", reason))?;
    let channel = state.channels.open(&query.video).await?;
    let etag = channel.tag(&format!("thumbnails\0{kind}\0{}\0{}", spec.width, spec.count));
    let caching = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, cache_control.to_string())];
    if matches_etag(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, caching).into_response());
    }
    let strip = channel.thumbnails(spec).await?;
    Ok((caching, show(&strip)).into_response())
}

/// `GET /api/v1/thumbnails`: the strip's map (JSON), naming its sprite.
async fn thumbnail_map(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ThumbnailQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The sprite is fetched with the same query (and signature, if any).
    let sprite = format!("{THUMBNAILS_PATH}/sprite?{}", uri.query().unwrap_or_default());
    thumbnail_answer(&state, &query, &uri, &headers, "map", |strip| {
        let map = json!({"video": query.video, "sprite": sprite, "width": strip.width, "height": strip.height,
                         "tiles": strip.tiles});
        Json(map).into_response()
    })
    .await
}

/// `GET /api/v1/thumbnails/sprite`: the strip's sprite (JPEG).
async fn thumbnail_sprite(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ThumbnailQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    thumbnail_answer(&state, &query, &uri, &headers, "sprite", |strip| {
        ([(header::CONTENT_TYPE, "image/jpeg")], strip.sprite.clone()).into_response()
    })
    .await
}

/// 200 `ready` when storage answers, else 503 with the reason.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness.state() {
        Ok(()) => "ready".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let frames = state.channels.frame_cache_bytes();
    ::metrics::gauge!(crate::metrics::MEMORY_HELD, "holder" => "frames").set(frames as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
