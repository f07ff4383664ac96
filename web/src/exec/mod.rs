//! The workers' execution API under `/api/v1/exec`: thin HTTP handlers over the engine's
//! `ExecutionService`, one file per group of endpoints.

pub(crate) mod blobs;
pub(crate) mod cache;
pub(crate) mod claim;
pub(crate) mod complete;
pub(crate) mod leases;
pub(crate) mod logs;
pub(crate) mod register;

use kiln_engine::execution::ApiError;

use crate::error::AppError;

/// The status and message of an execution-service failure.
fn api_error(error: ApiError) -> AppError {
    match error {
        ApiError::Rejected(message) => AppError::unprocessable(message),
        ApiError::Unauthorized => AppError::Unauthorized,
        ApiError::NotFound(message) => AppError::NotFound(message),
        ApiError::Stale(message) => AppError::Conflict(message),
        other => AppError::Internal(other.to_string()),
    }
}
