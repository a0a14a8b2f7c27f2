//! The browser client (`web/` in the repository), compiled into the binary
//! so a server needs no files beside it: `GET /` is the page, `/web/...`
//! its script and style. Sent with `no-cache` so a new build is picked up
//! at once.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (path under /web/, contents)
const FILES: &[(&str, &str)] = &[
    ("index.html", include_str!("../../../web/index.html")),
    ("style.css", include_str!("../../../web/style.css")),
    ("js/app.js", include_str!("../../../web/js/app.js")),
    ("js/auth.js", include_str!("../../../web/js/auth.js")),
    ("js/clip.js", include_str!("../../../web/js/clip.js")),
    ("js/connection.js", include_str!("../../../web/js/connection.js")),
    ("js/picker.js", include_str!("../../../web/js/picker.js")),
    ("js/play_buffer.js", include_str!("../../../web/js/play_buffer.js")),
    ("js/shortcuts.js", include_str!("../../../web/js/shortcuts.js")),
    ("js/stats.js", include_str!("../../../web/js/stats.js")),
    ("js/timeline.js", include_str!("../../../web/js/timeline.js")),
];

pub async fn page() -> Response {
    file(Path("index.html".to_string())).await
}

pub async fn file(Path(path): Path<String>) -> Response {
    let Some((_, contents)) = FILES.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, format!("no file /web/{path}")).into_response();
    };
    let content_type = match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/javascript; charset=utf-8",
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], *contents).into_response()
}
