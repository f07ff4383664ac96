//! The workers' execution API: thin HTTP handlers over the engine's `ExecutionService`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, LogUpload, NextClaim, Registration};
use kiln_engine::store::Completion;

use crate::error::JsonBody;
use crate::wire::{
    Assignment, ClaimRequest, ClaimResponse, CompleteRequest, CompleteResponse, CompletionResult,
    HeartbeatResponse, LeasesRequest, LogsRequest, RegisterRequest, RegisterResponse,
};
use crate::{AppError, AppState};

fn api_error(error: kiln_engine::execution::ApiError) -> AppError {
    match error {
        kiln_engine::execution::ApiError::Rejected(message) => AppError::unprocessable(message),
        kiln_engine::execution::ApiError::Unauthorized => AppError::Unauthorized,
        other => AppError::Internal(other.to_string()),
    }
}

fn leases(request: &LeasesRequest) -> Vec<(i64, i64)> {
    request
        .running
        .iter()
        .map(|lease| (lease.task_instance_id, lease.fence))
        .collect()
}

pub(crate) async fn register(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<Json<RegisterResponse>, AppError> {
    let registration = Registration {
        worker_id: request.worker_id,
        queues: request.queues,
        concurrency: request.concurrency,
        hostname: request.hostname,
        pid: request.pid,
        version: request.version,
    };
    let ack = state
        .execution
        .register(&registration)
        .await
        .map_err(api_error)?;
    Ok(Json(RegisterResponse {
        lease_ms: ack.lease_ms,
        heartbeat_ms: ack.heartbeat_ms,
    }))
}

pub(crate) async fn claim(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimResponse>, AppError> {
    if request.queues.is_empty() {
        return Err(AppError::unprocessable(
            "`queues` must name at least one queue",
        ));
    }
    let wait = Duration::from_millis(request.wait_ms);
    let tasks = state
        .execution
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

pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<HeartbeatResponse>, AppError> {
    let stop = state
        .execution
        .heartbeat(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(HeartbeatResponse { stop }))
}

pub(crate) async fn logs(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LogsRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let chunks: Vec<LogUpload> = request.chunks.into_iter().map(LogUpload::from).collect();
    state
        .execution
        .logs(&request.worker_id, &chunks)
        .await
        .map_err(api_error)?;
    Ok(Json(serde_json::json!({ "stored": chunks.len() })))
}

pub(crate) async fn complete(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CompleteRequest>,
) -> Result<Json<CompleteResponse>, AppError> {
    let completions: Vec<Completion> = request
        .completions
        .into_iter()
        .map(Completion::from)
        .collect();
    let logs: Vec<LogUpload> = request.logs.into_iter().map(LogUpload::from).collect();
    let next = request.claim.map(|claim| NextClaim {
        queues: claim.queues,
        limit: claim.limit.min(1000),
    });
    let reply = state
        .execution
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

pub(crate) async fn release(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    state
        .execution
        .release(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(
        serde_json::json!({ "released": request.running.len() }),
    ))
}
