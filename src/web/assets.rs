//! Bootstrap Italia (npm `bootstrap-italia` 2.18.3: its built CSS, JS bundle, icon sprite,
//! fonts and licence) and the site's own stylesheet, embedded in the binary: `cargo run`
//! alone serves every byte a page loads, and no page loads anything from another host.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::Services;

/// One embedded file: its path under `/static/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
    /// Versioned paths never change: browsers may keep them for a year.
    immutable: bool,
}

macro_rules! bi {
    ($file:literal, $media:literal) => {
        Asset {
            path: concat!("bootstrap-italia-2.18.3/", $file),
            media_type: $media,
            bytes: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/bootstrap-italia/",
                $file
            )),
            immutable: true,
        }
    };
}

static ASSETS: &[Asset] = &[
    bi!("LICENSE", "text/plain; charset=utf-8"),
    bi!("css/bootstrap-italia.min.css", "text/css; charset=utf-8"),
    bi!("css/fonts.css", "text/css; charset=utf-8"),
    bi!(
        "fonts/Lora/lora-v20-latin-ext_latin-700.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Lora/lora-v20-latin-ext_latin-700italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Lora/lora-v20-latin-ext_latin-italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Lora/lora-v20-latin-ext_latin-regular.woff2",
        "font/woff2"
    ),
    bi!("fonts/Roboto_Mono/LICENSE.txt", "text/plain; charset=utf-8"),
    bi!(
        "fonts/Roboto_Mono/roboto-mono-v13-latin-ext_latin-700.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Roboto_Mono/roboto-mono-v13-latin-ext_latin-700italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Roboto_Mono/roboto-mono-v13-latin-ext_latin-italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Roboto_Mono/roboto-mono-v13-latin-ext_latin-regular.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-300.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-300italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-600.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-600italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-700.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-700italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-italic.woff2",
        "font/woff2"
    ),
    bi!(
        "fonts/Titillium_Web/titillium-web-v10-latin-ext_latin-regular.woff2",
        "font/woff2"
    ),
    bi!(
        "js/bootstrap-italia.bundle.min.js",
        "text/javascript; charset=utf-8"
    ),
    bi!("svg/sprites.svg", "image/svg+xml"),
    Asset {
        path: "fascicolo.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fascicolo.css")),
        immutable: false,
    },
];

/// `GET /static/...`, gzip-compressed for browsers that accept it (the design system's CSS and
/// JavaScript shrink to a fifth).
pub fn router() -> Router<Services> {
    Router::new()
        .route("/static/{*path}", get(serve))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

async fn serve(Path(path): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.media_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        asset.bytes,
    )
        .into_response()
}
