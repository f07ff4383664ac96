//! One error type for every handler: the client gets a status and a message it can act on; the
//! details of internal failures go to the log only.

use axum::Json;
use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_engine::artifacts::BlobError;
use kiln_engine::scheduler::SchedulerError;
use kiln_engine::store::StoreError;

use crate::wire::ErrorBody;

/// A handler failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or names something invalid (400 or 422).
    #[error("{message}")]
    BadRequest {
        /// 400 for unreadable requests, 422 for well-formed ones that fail checks.
        status: StatusCode,
        /// What is wrong, for the caller.
        message: String,
    },
    /// Missing or wrong credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Something failed on the server; the client is told only that.
    #[error("internal error: {0}")]
    Internal(String),
    /// A part of the server the request needs is not configured or not reachable (503).
    #[error("{0}")]
    Unavailable(String),
}

impl AppError {
    /// A 422 with a message naming the problem.
    pub fn unprocessable(message: impl Into<String>) -> AppError {
        AppError::BadRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
        }
    }
}

impl From<SchedulerError> for AppError {
    fn from(error: SchedulerError) -> AppError {
        match error {
            SchedulerError::UnknownDag(id) => AppError::NotFound(format!("DAG `{id}` not found")),
            SchedulerError::InvalidParams { .. } | SchedulerError::Invalid(_) => {
                AppError::unprocessable(error.to_string())
            }
            SchedulerError::Store(store) => store.into(),
            SchedulerError::DagFolder { .. } | SchedulerError::DagLoaderPanicked(_) => {
                AppError::Internal(error.to_string())
            }
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        match error {
            StoreError::NotFound(what) => AppError::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => AppError::Conflict(message),
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// Turns a blob-layer failure into a response: a missing blob is a 404, a corrupt one a 500
/// that names it (the worker fails the task), anything else the store being unavailable.
pub(crate) fn blob_error(error: BlobError) -> AppError {
    match error {
        BlobError::NotFound { .. } => AppError::NotFound(error.to_string()),
        BlobError::Input(_) => AppError::unprocessable(error.to_string()),
        other => AppError::Internal(other.to_string()),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest { status, message } => (status, message),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            AppError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            AppError::Conflict(message) => (StatusCode::CONFLICT, message),
            AppError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            AppError::Internal(detail) => {
                tracing::error!(message = "Request failed.", detail);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error; see the server log".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> AppError {
    AppError::NotFound(format!("no such endpoint: {}", uri.path()))
}

/// A JSON object body sent as `application/json`, whose rejection is an [`AppError`] naming
/// the problem.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(request.headers()) {
            return Err(AppError::BadRequest {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "expected a request with `Content-Type: application/json`".to_owned(),
            });
        }
        let bytes = read_body(request, state).await?;
        decode_object(&bytes).map(JsonBody)
    }
}

/// A JSON object body that may be left out entirely (then `T::default()`).
pub(crate) struct JsonOrEmpty<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonOrEmpty<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = AppError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        decode_object(&bytes).map(JsonOrEmpty)
    }
}

/// `application/json`, or any `application/…+json`, as axum's own `Json` accepts.
fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The whole body, within the router's body limit (413 past it).
async fn read_body<S: Send + Sync>(
    request: axum::extract::Request,
    state: &S,
) -> Result<axum::body::Bytes, AppError> {
    axum::body::Bytes::from_request(request, state)
        .await
        .map_err(|rejection| AppError::BadRequest {
            status: rejection.status(),
            message: rejection.body_text(),
        })
}

/// Every request body of the API is a JSON object. serde also reads a struct from a JSON array
/// of its fields, so without this check `[]` would be taken as "all defaults".
fn decode_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let starts_as_object = bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
    if !starts_as_object && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(AppError::unprocessable(
            "invalid JSON body: the body must be a JSON object",
        ));
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(value) => Ok(value),
        Err(error) if error.is_data() => from_whole_numbers(bytes)
            .ok_or_else(|| AppError::unprocessable(format!("invalid JSON body: {error}"))),
        Err(error) => Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid JSON body: {error}"),
        }),
    }
}

/// The body read again with every whole-number float (`161422.0`) turned into an integer.
/// To JSON Schema, the language of the API document, such a number is an integer, and clients
/// whose languages have one number type send them; serde refuses them for integer fields. Only
/// a body that failed is read twice, so well-formed requests pay nothing.
fn from_whole_numbers<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut pending = vec![&mut value];
    let mut changed = false;
    // An explicit stack: serde_json caps nesting at 128, but a walk needs no recursion anyway.
    while let Some(node) = pending.pop() {
        match node {
            serde_json::Value::Array(items) => pending.extend(items.iter_mut()),
            serde_json::Value::Object(fields) => pending.extend(fields.values_mut()),
            serde_json::Value::Number(number) => {
                if let Some(whole) = whole_number(number) {
                    *number = whole;
                    changed = true;
                }
            }
            _ => {}
        }
    }
    if !changed {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// `number` as an integer, when it is a float with no fraction that a float holds exactly.
/// Past 2^53 a float is no longer exact, and serde_json reads an integer literal too large for
/// 64 bits (`-9223372036854775809`) as the nearest float, which must stay refused rather than
/// become the nearest integer that fits.
fn whole_number(number: &serde_json::Number) -> Option<serde_json::Number> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if !number.is_f64() {
        return None;
    }
    let float = number.as_f64()?;
    if float.fract() != 0.0 || float.abs() > EXACT {
        return None;
    }
    // Exact: a whole float of at most 2^53 in magnitude is an i64.
    Some(serde_json::Number::from(float as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    struct Sample {
        #[serde(default)]
        limit: u32,
        #[serde(default)]
        ratio: f64,
        #[serde(default)]
        ids: Vec<i64>,
    }

    fn decode(body: &str) -> Result<Sample, String> {
        decode_object::<Sample>(body.as_bytes()).map_err(|error| match error {
            AppError::BadRequest { status, message } => format!("{} {message}", status.as_u16()),
            other => other.to_string(),
        })
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(decode("{}"), Ok(Sample::default()));
        for body in ["[]", "[3]", "3", "\"x\"", "null", " true"] {
            let refused = decode(body).expect_err(body);
            assert!(
                refused.starts_with("422") && refused.contains("JSON object"),
                "{body}: {refused}"
            );
        }
        let unreadable = decode("]").expect_err("syntax");
        assert!(unreadable.starts_with("400"), "{unreadable}");
    }

    #[test]
    fn whole_number_floats_are_integers_and_fractions_are_not() {
        assert_eq!(
            decode(r#"{"limit": 161422.0, "ratio": 2.0, "ids": [1.0, -7.0, 8]}"#),
            Ok(Sample {
                limit: 161_422,
                ratio: 2.0,
                ids: vec![1, -7, 8]
            })
        );
        let fraction = decode(r#"{"limit": 1.5}"#).expect_err("a fraction is no integer");
        assert!(
            fraction.starts_with("422") && fraction.contains("1.5"),
            "{fraction}"
        );
        let too_big = decode(r#"{"limit": 1e12}"#).expect_err("out of range for u32");
        assert!(too_big.starts_with("422"), "{too_big}");
        assert_eq!(
            decode(r#"{"ids": [9007199254740992.0, -9007199254740992.0]}"#)
                .map(|sample| sample.ids),
            Ok(vec![9_007_199_254_740_992, -9_007_199_254_740_992])
        );
        // Past 2^53 a float is inexact, and an integer literal too large for 64 bits arrives as
        // one: neither may become a nearby integer.
        for inexact in [r#"{"ids": [1e18]}"#, r#"{"ids": [-9223372036854775809]}"#] {
            let refused = decode(inexact).expect_err(inexact);
            assert!(refused.starts_with("422"), "{inexact}: {refused}");
        }
    }
}
