//! The browser client (`web/` in the repository), compiled into the binary
//! so a server needs no files beside it: `GET /` is the page, `/web/...`
//! its script and style. Sent with `no-cache` so a new build is picked up
//! at once.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (path under /web/, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../../web/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../web/style.css")),
    ("js/app.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/app.js")),
    ("js/clip.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/clip.js")),
    ("js/connection.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/connection.js")),
    ("js/picker.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/picker.js")),
    ("js/play_buffer.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/play_buffer.js")),
    ("js/shortcuts.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/shortcuts.js")),
    ("js/stats.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/stats.js")),
    ("js/timeline.js", "text/javascript; charset=utf-8", include_str!("../../../web/js/timeline.js")),
];

pub async fn page() -> Response {
    file(Path("index.html".to_string())).await
}

pub async fn file(Path(path): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, contents)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *contents).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no file /web/{path}")).into_response(),
    }
}
