//! `POST /api/v1/exec/logs`: log chunks of running attempts.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService, LogUpload};

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{LogsRequest, LogsResponse};

pub(crate) async fn logs(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<LogsRequest>,
) -> Result<Json<LogsResponse>, AppError> {
    let chunks: Vec<LogUpload> = request.chunks.into_iter().map(LogUpload::from).collect();
    execution
        .logs(&request.worker_id, &chunks)
        .await
        .map_err(api_error)?;
    Ok(Json(LogsResponse {
        stored: chunks.len(),
    }))
}
