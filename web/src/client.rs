//! HTTP clients: [`ExecutionClient`] for workers (it implements the engine's `ExecutionApi`) and
//! [`ApiClient`] for the CLI's calls to the REST API.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use kiln_engine::artifacts::{BlobError, BlobRef, blob_key, save_verified};
use kiln_engine::execution::{
    ApiError, CompletionReply, ExecutionApi, LogUpload, NextClaim, Registration, RegistrationAck,
};
use kiln_engine::state::TaskState;
use kiln_engine::store::{CacheHit, ClaimedTask, Completion};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{
    BlobView, CacheLookupRequest, CacheLookupResponse, CancelResponse, ClaimNext, ClaimRequest,
    ClaimResponse, ClearRequest, ClearResponse, CompleteRequest, CompleteResponse,
    CompletionReport, DagList, HeartbeatResponse, Lease, LeasesRequest, LogChunkUpload, LogPage,
    LogsRequest, MarkRequest, RegisterRequest, RegisterResponse, RunDetail, RunView,
    TriggerRequest,
};

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long moving one blob may take: long enough for gigabytes over a slow link, short
/// enough that a hung transfer does not hold a task forever.
const BLOB_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The last error in `error`'s chain ("Connection refused (os error 111)"): reqwest's own
/// messages around it repeat the URL, which the caller already names.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A failed REST call, for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error(
        "cannot reach the kiln server for {url}: {}; is it running, and is `--server` (`KILN_SERVER`) its address?",
        innermost_cause(error)
    )]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why. Not this error's `source`: the message already says the part that matters, and
        /// reqwest's chain repeats the URL at every level.
        error: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("the server answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// Shared plumbing: base URL, bearer token, JSON in and out.
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    fn new(base: &str, token: Option<String>) -> Http {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Http {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(CALL_TIMEOUT);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        url: String,
    ) -> Result<T, ClientError> {
        let response = builder
            .send()
            .await
            .map_err(|error| ClientError::Unreachable {
                url: url.clone(),
                error,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|value| {
                    value
                        .get("error")
                        .and_then(|error| error.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or(body);
            return Err(ClientError::Status { status, message });
        }
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_value(serde_json::Value::Null).map_err(|_| {
                ClientError::Status {
                    status,
                    message: "expected a body, got none".to_owned(),
                }
            });
        }
        response
            .json()
            .await
            .map_err(|source| ClientError::Decode { url, source })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, path),
            format!("{}{path}", self.base),
        )
        .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let builder = self
            .request(reqwest::Method::POST, path)
            .timeout(timeout)
            .json(body);
        self.send(builder, format!("{}{path}", self.base)).await
    }
}

fn api_error(error: ClientError) -> ApiError {
    match error {
        ClientError::Unreachable { error, .. } => ApiError::Unreachable(error.to_string()),
        ClientError::Status { status, .. } if status == StatusCode::UNAUTHORIZED => {
            ApiError::Unauthorized
        }
        ClientError::Status { status, message } if status.is_server_error() => {
            ApiError::Server(message)
        }
        ClientError::Status { status, message } if status == StatusCode::NOT_FOUND => {
            ApiError::NotFound(message)
        }
        ClientError::Status { status, message } if status == StatusCode::CONFLICT => {
            ApiError::Stale(message)
        }
        ClientError::Status { message, .. } => ApiError::Rejected(message),
        ClientError::Decode { source, .. } => ApiError::Server(source.to_string()),
    }
}

/// A worker's connection to a server's execution API.
#[derive(Debug, Clone)]
pub struct ExecutionClient {
    http: Http,
}

impl ExecutionClient {
    /// A client for the server at `base` (such as `http://127.0.0.1:8080`) using the worker token.
    pub fn new(base: &str, worker_token: &str) -> ExecutionClient {
        ExecutionClient {
            http: Http::new(base, Some(worker_token.to_owned())),
        }
    }
}

fn lease_list(running: &[(i64, i64)]) -> Vec<Lease> {
    running
        .iter()
        .map(|&(task_instance_id, fence)| Lease {
            task_instance_id,
            fence,
        })
        .collect()
}

#[async_trait]
impl ExecutionApi for ExecutionClient {
    async fn register(&self, registration: &Registration) -> Result<RegistrationAck, ApiError> {
        let request = RegisterRequest {
            worker_id: registration.worker_id.clone(),
            queues: registration.queues.clone(),
            concurrency: registration.concurrency,
            hostname: registration.hostname.clone(),
            pid: registration.pid,
            version: registration.version.clone(),
        };
        let response: RegisterResponse = self
            .http
            .post("/api/v1/exec/register", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(RegistrationAck {
            lease_ms: response.lease_ms,
            heartbeat_ms: response.heartbeat_ms,
        })
    }

    async fn claim(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ClaimedTask>, ApiError> {
        let request = ClaimRequest {
            worker_id: worker_id.to_owned(),
            queues: queues.to_vec(),
            limit,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let response: ClaimResponse = self
            .http
            .post("/api/v1/exec/claim", &request, wait + CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(response.tasks.into_iter().map(ClaimedTask::from).collect())
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        running: &[(i64, i64)],
    ) -> Result<Vec<i64>, ApiError> {
        let request = LeasesRequest {
            worker_id: worker_id.to_owned(),
            running: lease_list(running),
        };
        let response: HeartbeatResponse = self
            .http
            .post("/api/v1/exec/heartbeat", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(response.stop)
    }

    async fn logs(&self, worker_id: &str, chunks: &[LogUpload]) -> Result<(), ApiError> {
        let request = LogsRequest {
            worker_id: worker_id.to_owned(),
            chunks: chunks.iter().map(LogChunkUpload::from).collect(),
        };
        let _: serde_json::Value = self
            .http
            .post("/api/v1/exec/logs", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(())
    }

    async fn complete(
        &self,
        worker_id: &str,
        completions: &[Completion],
        logs: &[LogUpload],
        next: Option<&NextClaim>,
    ) -> Result<CompletionReply, ApiError> {
        let request = CompleteRequest {
            worker_id: worker_id.to_owned(),
            completions: completions.iter().map(CompletionReport::from).collect(),
            logs: logs.iter().map(LogChunkUpload::from).collect(),
            claim: next.map(|next| ClaimNext {
                queues: next.queues.clone(),
                limit: next.limit,
            }),
        };
        let response: CompleteResponse = self
            .http
            .post("/api/v1/exec/complete", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        if response.results.len() != completions.len() {
            return Err(ApiError::Server(format!(
                "the server answered {} results for {} completions",
                response.results.len(),
                completions.len()
            )));
        }
        let outcomes = response
            .results
            .into_iter()
            .zip(completions)
            .map(|(result, completion)| result.into_outcome(completion))
            .collect();
        Ok(CompletionReply {
            outcomes,
            claimed: response.tasks.into_iter().map(ClaimedTask::from).collect(),
        })
    }

    async fn release(&self, worker_id: &str, running: &[(i64, i64)]) -> Result<(), ApiError> {
        let request = LeasesRequest {
            worker_id: worker_id.to_owned(),
            running: lease_list(running),
        };
        let _: serde_json::Value = self
            .http
            .post("/api/v1/exec/release", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(())
    }

    async fn unclaim(&self, worker_id: &str, claimed: &[(i64, i64)]) -> Result<(), ApiError> {
        let request = LeasesRequest {
            worker_id: worker_id.to_owned(),
            running: lease_list(claimed),
        };
        let _: serde_json::Value = self
            .http
            .post("/api/v1/exec/unclaim", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(())
    }

    async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, ApiError> {
        let request = CacheLookupRequest {
            key: key.to_owned(),
        };
        let response: CacheLookupResponse = self
            .http
            .post("/api/v1/exec/cache/lookup", &request, CALL_TIMEOUT)
            .await
            .map_err(api_error)?;
        Ok(response.hit.map(CacheHit::from))
    }

    async fn blob_upload(&self, path: &Path) -> Result<BlobRef, BlobError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BlobError::File {
                operation: "open",
                path: path.to_owned(),
                source,
            })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let builder = self
            .http
            .request(reqwest::Method::POST, "/api/v1/exec/blobs")
            .timeout(BLOB_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let url = format!("{}/api/v1/exec/blobs", self.http.base);
        let uploaded: BlobView =
            self.http
                .send(builder, url)
                .await
                .map_err(|error| BlobError::Backend {
                    operation: "upload through the server",
                    key: path.display().to_string(),
                    message: error.to_string(),
                })?;
        Ok(BlobRef {
            sha256: uploaded.sha256,
            size: uploaded.size,
        })
    }

    async fn blob_download(&self, blob: &BlobRef, dest: &Path) -> Result<(), BlobError> {
        let path = format!("/api/v1/exec/blobs/{}", blob.sha256);
        let failed = |message: String| BlobError::Backend {
            operation: "download through the server",
            key: blob_key(&blob.sha256),
            message,
        };
        let response = self
            .http
            .request(reqwest::Method::GET, &path)
            .timeout(BLOB_TIMEOUT)
            .send()
            .await
            .map_err(|error| failed(error.to_string()))?;
        match response.status() {
            status if status.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(BlobError::NotFound {
                    sha256: blob.sha256,
                });
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(failed(format!("the server answered {status}: {body}")));
            }
        }
        let chunks = response
            .bytes_stream()
            .map_err(|error| failed(error.to_string()));
        save_verified(Box::pin(chunks), blob, dest).await
    }
}

/// The CLI's client for the public REST API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: Http,
}

impl ApiClient {
    /// A client for the server at `base`, with the API token if one is configured.
    pub fn new(base: &str, api_token: Option<String>) -> ApiClient {
        ApiClient {
            http: Http::new(base, api_token),
        }
    }

    /// `GET /api/v1/dags`.
    pub async fn dags(&self) -> Result<DagList, ClientError> {
        self.http.get("/api/v1/dags").await
    }

    /// `POST /api/v1/dags/{id}/runs`.
    pub async fn trigger(
        &self,
        dag_id: &str,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<RunView, ClientError> {
        self.http
            .post(
                &format!("/api/v1/dags/{dag_id}/runs"),
                &TriggerRequest { params },
                CALL_TIMEOUT,
            )
            .await
    }

    /// `GET /api/v1/runs/{id}`.
    pub async fn run(&self, run_id: i64) -> Result<RunDetail, ClientError> {
        self.http.get(&format!("/api/v1/runs/{run_id}")).await
    }

    /// `POST /api/v1/runs/{id}/cancel`.
    pub async fn cancel(&self, run_id: i64) -> Result<CancelResponse, ClientError> {
        self.http
            .post(
                &format!("/api/v1/runs/{run_id}/cancel"),
                &serde_json::json!({}),
                CALL_TIMEOUT,
            )
            .await
    }

    /// `POST /api/v1/runs/{id}/tasks/{task}/clear`.
    pub async fn clear(
        &self,
        run_id: i64,
        task_id: &str,
        downstream: bool,
    ) -> Result<ClearResponse, ClientError> {
        self.http
            .post(
                &format!("/api/v1/runs/{run_id}/tasks/{task_id}/clear"),
                &ClearRequest { downstream },
                CALL_TIMEOUT,
            )
            .await
    }

    /// `POST /api/v1/runs/{id}/tasks/{task}/mark`.
    pub async fn mark(
        &self,
        run_id: i64,
        task_id: &str,
        state: TaskState,
    ) -> Result<(), ClientError> {
        self.http
            .post(
                &format!("/api/v1/runs/{run_id}/tasks/{task_id}/mark"),
                &MarkRequest { state },
                CALL_TIMEOUT,
            )
            .await
    }

    /// `GET /api/v1/runs/{id}/tasks/{task}/logs`.
    pub async fn logs(
        &self,
        run_id: i64,
        task_id: &str,
        try_number: Option<i64>,
        after_seq: i64,
    ) -> Result<LogPage, ClientError> {
        let mut path = format!("/api/v1/runs/{run_id}/tasks/{task_id}/logs?after_seq={after_seq}");
        if let Some(try_number) = try_number {
            path.push_str(&format!("&try_number={try_number}"));
        }
        self.http.get(&path).await
    }
}
