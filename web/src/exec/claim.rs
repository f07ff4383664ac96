//! `POST /api/v1/exec/claim`: a worker takes tasks, waiting a while for work.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService};

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{Assignment, ClaimRequest, ClaimResponse};

pub(crate) async fn claim(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimResponse>, AppError> {
    if request.queues.is_empty() {
        return Err(AppError::unprocessable(
            "`queues` must name at least one queue",
        ));
    }
    if request.worker_id.is_empty() {
        return Err(AppError::unprocessable("`worker_id` must not be empty"));
    }
    if request.limit == 0 {
        return Err(AppError::unprocessable("`limit` must be at least 1"));
    }
    let longest = kiln_engine::execution::MAX_CLAIM_WAIT.as_millis();
    if u128::from(request.wait_ms) > longest {
        return Err(AppError::unprocessable(format!(
            "`wait_ms` is at most {longest}"
        )));
    }
    let wait = Duration::from_millis(request.wait_ms);
    let tasks = execution
        .claim(
            &request.worker_id,
            &request.queues,
            request.limit.min(1000),
            wait,
        )
        .await
        .map_err(api_error)?;
    Ok(Json(ClaimResponse {
        tasks: tasks.into_iter().map(Assignment::from).collect(),
    }))
}
