//! `POST /api/v1/exec/cache/lookup`: an earlier attempt whose outputs a task may reuse.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::{ExecutionApi, ExecutionService};

use super::api_error;
use crate::error::{AppError, JsonBody};
use crate::wire::{CacheHitView, CacheLookupRequest, CacheLookupResponse};

pub(crate) async fn cache_lookup(
    State(execution): State<Arc<ExecutionService>>,
    JsonBody(request): JsonBody<CacheLookupRequest>,
) -> Result<Json<CacheLookupResponse>, AppError> {
    let hit = execution
        .cache_lookup(&request.key)
        .await
        .map_err(api_error)?;
    Ok(Json(CacheLookupResponse {
        hit: hit.as_ref().map(CacheHitView::from),
    }))
}
