//! One error type for every handler: the client gets a status and a message it can act on; the
//! details of internal failures go to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
            SchedulerError::DagFolder { .. } => AppError::Internal(error.to_string()),
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

/// A JSON body whose rejection is an [`AppError`] naming the problem.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(AppError::BadRequest {
                status: rejection.status(),
                message: rejection.body_text(),
            }),
        }
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub(crate) struct JsonOrEmpty<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for JsonOrEmpty<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = AppError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| AppError::BadRequest {
                status: rejection.status(),
                message: rejection.body_text(),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonOrEmpty)
            .map_err(|error| {
                let status = if error.is_data() {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::BAD_REQUEST
                };
                AppError::BadRequest {
                    status,
                    message: format!("invalid JSON body: {error}"),
                }
            })
    }
}
