//! The leases a worker holds: `POST /api/v1/exec/heartbeat` extends them, `/release` gives
//! running tasks back and `/unclaim` tasks never started.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService};

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{HeartbeatResponse, LeasesRequest, ReleaseResponse};

fn leases(request: &LeasesRequest) -> Vec<(i64, i64)> {
    request
        .running
        .iter()
        .map(|lease| (lease.task_instance_id, lease.fence))
        .collect()
}

pub(crate) async fn heartbeat(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<HeartbeatResponse>, AppError> {
    let stop = execution
        .heartbeat(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(HeartbeatResponse { stop }))
}

pub(crate) async fn release(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<ReleaseResponse>, AppError> {
    execution
        .release(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(ReleaseResponse {
        released: request.running.len(),
    }))
}

pub(crate) async fn unclaim(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<ReleaseResponse>, AppError> {
    execution
        .unclaim(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(ReleaseResponse {
        released: request.running.len(),
    }))
}
