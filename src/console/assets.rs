//! The console's stylesheet and script, embedded in the binary (no build step).

use axum::http::header;
use axum::response::IntoResponse;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// GET /ui/static/console.css.
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
}

/// GET /ui/static/console.js.
pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
}
