//! `POST /api/v1/exec/complete`: finished attempts, their last logs, and the next claim, in
//! one transaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService, LogUpload, NextClaim};
use kiln_engine::store::Completion;

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{Assignment, CompleteRequest, CompleteResponse, CompletionResult};

pub(crate) async fn complete(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<CompleteRequest>,
) -> Result<Json<CompleteResponse>, AppError> {
    let completions: Vec<Completion> = request
        .completions
        .into_iter()
        .map(Completion::try_from)
        .collect::<Result<_, _>>()
        .map_err(AppError::unprocessable)?;
    let logs: Vec<LogUpload> = request.logs.into_iter().map(LogUpload::from).collect();
    let next = request.claim.map(|claim| NextClaim {
        queues: claim.queues,
        limit: claim.limit.min(1000),
    });
    let reply = execution
        .complete(&request.worker_id, &completions, &logs, next.as_ref())
        .await
        .map_err(api_error)?;
    Ok(Json(CompleteResponse {
        results: reply
            .outcomes
            .iter()
            .map(CompletionResult::from_outcome)
            .collect(),
        tasks: reply.claimed.into_iter().map(Assignment::from).collect(),
    }))
}
