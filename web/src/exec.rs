//! The workers' execution API: thin HTTP handlers over the engine's `ExecutionService`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use kiln_engine::artifacts::{BlobError, BlobStore, Sha256Digest};
use kiln_engine::execution::{ExecutionApi, LogUpload, NextClaim, Registration};
use kiln_engine::store::Completion;

use crate::error::JsonBody;
use crate::wire::{
    Assignment, BlobView, CacheHitView, CacheLookupRequest, CacheLookupResponse, ClaimRequest,
    ClaimResponse, CompleteRequest, CompleteResponse, CompletionResult, HeartbeatResponse,
    LeasesRequest, LogsRequest, LogsResponse, RegisterRequest, RegisterResponse, ReleaseResponse,
};
use crate::{AppError, AppState};

fn api_error(error: kiln_engine::execution::ApiError) -> AppError {
    match error {
        kiln_engine::execution::ApiError::Rejected(message) => AppError::unprocessable(message),
        kiln_engine::execution::ApiError::Unauthorized => AppError::Unauthorized,
        kiln_engine::execution::ApiError::NotFound(message) => AppError::NotFound(message),
        kiln_engine::execution::ApiError::Stale(message) => AppError::Conflict(message),
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
) -> Result<Json<LogsResponse>, AppError> {
    let chunks: Vec<LogUpload> = request.chunks.into_iter().map(LogUpload::from).collect();
    state
        .execution
        .logs(&request.worker_id, &chunks)
        .await
        .map_err(api_error)?;
    Ok(Json(LogsResponse {
        stored: chunks.len(),
    }))
}

pub(crate) async fn complete(
    State(state): State<AppState>,
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
) -> Result<Json<ReleaseResponse>, AppError> {
    state
        .execution
        .release(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(ReleaseResponse {
        released: request.running.len(),
    }))
}

pub(crate) async fn unclaim(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LeasesRequest>,
) -> Result<Json<ReleaseResponse>, AppError> {
    state
        .execution
        .unclaim(&request.worker_id, &leases(&request))
        .await
        .map_err(api_error)?;
    Ok(Json(ReleaseResponse {
        released: request.running.len(),
    }))
}

pub(crate) async fn cache_lookup(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CacheLookupRequest>,
) -> Result<Json<CacheLookupResponse>, AppError> {
    let hit = state
        .execution
        .cache_lookup(&request.key)
        .await
        .map_err(api_error)?;
    Ok(Json(CacheLookupResponse {
        hit: hit.as_ref().map(CacheHitView::from),
    }))
}

fn artifact_store(state: &AppState) -> Result<&std::sync::Arc<BlobStore>, AppError> {
    state
        .execution
        .artifacts()
        .ok_or_else(|| AppError::Unavailable("this server has no artifact store".to_owned()))
}

/// Turns a blob-layer failure into a response: a missing blob is a 404, a corrupt one a 500
/// that names it (the worker fails the task), anything else the store being unavailable.
pub(crate) fn blob_error(error: BlobError) -> AppError {
    match error {
        BlobError::NotFound { .. } => AppError::NotFound(error.to_string()),
        BlobError::Input(_) => AppError::unprocessable(error.to_string()),
        other => AppError::Internal(other.to_string()),
    }
}

/// `POST /api/v1/exec/blobs`: stores the request body, streamed, as a blob. A body may take
/// hours, but not the body time between two pieces (a stalled worker).
pub(crate) async fn blob_upload(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Json<BlobView>, AppError> {
    let store = artifact_store(&state)?;
    let gap = crate::limits::body_timeout(&request);
    let body = Body::new(tower_http::timeout::TimeoutBody::new(
        gap,
        request.into_body(),
    ));
    let reader =
        tokio_util::io::StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let outcome = store.put_stream(reader).await.map_err(blob_error)?;
    Ok(Json(BlobView {
        sha256: outcome.blob.sha256,
        size: outcome.blob.size,
    }))
}

/// `GET /api/v1/exec/blobs/{sha256}`: streams a blob. Bytes that fail their digest end the
/// response with an error instead of a clean end, and the client checks the digest as well.
pub(crate) async fn blob_download(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, AppError> {
    let sha256: Sha256Digest =
        sha256
            .parse()
            .map_err(|error: kiln_engine::artifacts::ParseDigestError| {
                AppError::unprocessable(error.to_string())
            })?;
    blob_response(artifact_store(&state)?, &sha256, "application/octet-stream").await
}

/// A streamed response of one blob's bytes.
pub(crate) async fn blob_response(
    store: &BlobStore,
    sha256: &Sha256Digest,
    media_type: &str,
) -> Result<Response, AppError> {
    let size = store.size(sha256).await.map_err(blob_error)?;
    let stream = store.open(sha256).await.map_err(blob_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, media_type.to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
