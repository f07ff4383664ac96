//! The console's static files, compiled into the binary: htmx (vendored from the `htmx.org`
//! npm package, 2.0.11), the stylesheet and the time-zone script.
//!
//! Each URL carries a version (htmx's in its name, a content hash for ours), so browsers may
//! cache the files for a year and still fetch a new build's at once.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ConsoleError;
use super::extract::HtmlPath;

const HTMX_FILE: &str = "htmx-2.0.11.min.js";
const HTMX: &str = include_str!("../../static/htmx-2.0.11.min.js");
const CSS: &str = include_str!("../../static/console.css");
const JS: &str = include_str!("../../static/console.js");

fn versioned(file: &str, content: &str) -> String {
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    format!("/static/{file}?v={}", &digest[..12])
}

/// Where pages load htmx from.
pub(crate) const HTMX_URL: &str = "/static/htmx-2.0.11.min.js";
/// Where pages load the stylesheet from.
pub(crate) static CSS_URL: LazyLock<String> = LazyLock::new(|| versioned("console.css", CSS));
/// Where pages load the time-zone script from.
pub(crate) static JS_URL: LazyLock<String> = LazyLock::new(|| versioned("console.js", JS));

/// Serves one of the embedded files.
pub(crate) async fn serve(HtmlPath(file): HtmlPath<String>) -> Result<Response, ConsoleError> {
    let (content, content_type) = match file.as_str() {
        HTMX_FILE => (HTMX, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(ConsoleError::NotFound(format!("no such file: {file}"))),
    };
    let mut response = (StatusCode::OK, content).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
