//! The console's error: the same split as the API's `AppError` (the viewer gets a message it can
//! act on, internal details go to the log), rendered as an HTML page instead of JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_engine::scheduler::SchedulerError;
use kiln_engine::store::StoreError;
use maud::html;

use super::layout;
use crate::error::AppError;

/// A console handler failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// No such DAG, run or task (404).
    #[error("{0}")]
    NotFound(String),
    /// The request fails a check (422).
    #[error("{0}")]
    BadRequest(String),
    /// No valid session, no valid CSRF token, or a read-only login (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A part of the server the request needs is not configured or not reachable (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on the server; the viewer is told only that.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AppError> for ConsoleError {
    fn from(error: AppError) -> ConsoleError {
        match error {
            AppError::BadRequest { message, .. } => ConsoleError::BadRequest(message),
            AppError::Unauthorized => ConsoleError::Forbidden("unauthorized".to_owned()),
            AppError::NotFound(message) => ConsoleError::NotFound(message),
            AppError::Conflict(message) => ConsoleError::Conflict(message),
            AppError::Unavailable(message) => ConsoleError::Unavailable(message),
            AppError::Internal(detail) => ConsoleError::Internal(detail),
        }
    }
}

/// Store and scheduler errors map as they do for the API, so both report the same problem.
impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> ConsoleError {
        AppError::from(error).into()
    }
}

impl From<SchedulerError> for ConsoleError {
    fn from(error: SchedulerError) -> ConsoleError {
        AppError::from(error).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ConsoleError::BadRequest(message) => (StatusCode::UNPROCESSABLE_ENTITY, message),
            ConsoleError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            ConsoleError::Conflict(message) => (StatusCode::CONFLICT, message),
            ConsoleError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            ConsoleError::Internal(detail) => {
                tracing::error!(message = "Console request failed.", detail);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error; see the server log".to_owned(),
                )
            }
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            section.problem-page {
                h1 { (status.as_u16()) " " (title) }
                p.problem role="alert" { (message) }
                p { a href="/dags" { "Back to the DAGs" } }
            }
        };
        (status, layout::bare(title, body)).into_response()
    }
}
