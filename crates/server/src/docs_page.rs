//! The interactive API page at `/docs`: Swagger UI (shipped inside the
//! binary, see `assets/swagger-ui/README.md`) over `/openapi.json`. The
//! page and its assets are public (they hold no data); the document and
//! every call the page makes need a key as any client's do.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The Swagger UI release the assets are from.
pub const SWAGGER_UI_VERSION: &str = "5.36.0";

const HTML: &str = include_str!("../assets/docs.html");
const JS: &str = include_str!("../assets/docs.js");
const CSS: &str = include_str!("../assets/docs.css");
const BUNDLE: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const BUNDLE_CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");

/// Scripts and styles from this server only; the page calls no other.
/// Swagger UI sets inline styles, and shows images as data URLs.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        HTML,
    )
        .into_response()
}

/// The `/docs` routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(page))
        .route(
            "/docs/assets/docs.js",
            get(|| async { asset(JS.as_bytes(), "text/javascript; charset=utf-8") }),
        )
        .route(
            "/docs/assets/docs.css",
            get(|| async { asset(CSS.as_bytes(), "text/css; charset=utf-8") }),
        )
        .route(
            "/docs/assets/swagger-ui-bundle.js",
            get(|| async { asset(BUNDLE, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/docs/assets/swagger-ui.css",
            get(|| async { asset(BUNDLE_CSS, "text/css; charset=utf-8") }),
        )
}
