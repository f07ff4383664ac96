//! How long and how much a client may hold the server for: the options `serve` takes, and the
//! body limit every buffered body goes through.
//!
//! The connection-level limits (headers, idle keep-alive, connection count) live in `serve`;
//! this module holds the per-request ones, which also apply when the app is called without
//! `serve` (the tests' `oneshot`), with the default body time.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// How [`serve`](crate::serve) bounds its clients in time and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a connection may take to send a request's headers. Hyper starts this clock as
    /// soon as a connection waits for its next request, so it is also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a whole buffered body (JSON, forms). A streamed blob
    /// upload may take longer, but not this long between two pieces.
    pub body_timeout: Duration,
    /// The most connections served at once; further ones wait, unaccepted, until one closes.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: 1024,
        }
    }
}

const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The limit axum's extractors apply when a route sets none.
pub(crate) const AXUM_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The body time `serve` gives each request, as a request extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// The body time for this request: `serve`'s, or the default when the app is called directly.
pub(crate) fn body_timeout(request: &Request) -> Duration {
    request
        .extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |timeout| timeout.0)
}

/// Reads the body before the handler does, within `limit` bytes and the body time: a declared
/// `Content-Length` over the limit is refused at once (413) without reading a byte, a body
/// that does not arrive in time gets 408 and the connection closed. axum's own limit only
/// counts bytes as they arrive, so on its own a client declaring a petabyte and sending two
/// bytes held the request until it gave up.
pub(crate) async fn buffer_body(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > u64::try_from(limit).unwrap_or(u64::MAX)
    {
        return too_large(format!(
            "the request body declares {declared} bytes, more than this endpoint takes ({limit} bytes)"
        ));
    }
    let timeout = body_timeout(&request);
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let over = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over {
                return too_large(format!(
                    "the request body is larger than this endpoint takes ({limit} bytes)"
                ));
            }
            return AppError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                message: format!("failed to read the request body: {error}"),
            }
            .into_response();
        }
        Err(_) => {
            let mut response = AppError::BadRequest {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            }
            .into_response();
            // The rest of the body may still be on its way; this connection serves no more.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(message: String) -> Response {
    let mut response = AppError::BadRequest {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message,
    }
    .into_response();
    // Its bytes are not read, so the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
