//! `POST /api/v1/exec/blobs` and `GET /api/v1/exec/blobs/{sha256}`: blob bytes, streamed both
//! ways.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use kiln_engine::artifacts::{ParseDigestError, Sha256Digest};

use crate::error::{AppError, blob_error};
use crate::state::Blobs;
use crate::wire::BlobView;

/// `POST /api/v1/exec/blobs`: stores the request body, streamed, as a blob. A body may take
/// hours, but not the body time between two pieces (a stalled worker).
pub(crate) async fn blob_upload(
    State(blobs): State<Blobs>,
    request: axum::extract::Request,
) -> Result<Json<BlobView>, AppError> {
    let store = blobs.required()?;
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
    State(blobs): State<Blobs>,
    Path(sha256): Path<String>,
) -> Result<Response, AppError> {
    let sha256: Sha256Digest = sha256
        .parse()
        .map_err(|error: ParseDigestError| AppError::unprocessable(error.to_string()))?;
    blobs.response(&sha256, "application/octet-stream").await
}
