//! `POST /api/v1/exec/register`: a worker says who it is and what it serves.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService, Registration};

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{RegisterRequest, RegisterResponse};

pub(crate) async fn register(
    State(execution): State<Arc<ExecutionService>>,
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
    let ack = execution.register(&registration).await.map_err(api_error)?;
    Ok(Json(RegisterResponse {
        lease_ms: ack.lease_ms,
        heartbeat_ms: ack.heartbeat_ms,
    }))
}
