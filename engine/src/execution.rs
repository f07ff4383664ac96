//! The execution protocol between the server and its workers, independent of transport.
//!
//! [`ExecutionApi`] is what a worker needs from a server: register, claim (long poll),
//! heartbeat, ship logs, report completions, hand tasks back. [`ExecutionService`] implements it
//! on a [`Scheduler`]; the `web` crate exposes the same calls over HTTP and supplies an HTTP
//! client implementing the trait, so the worker runtime runs unchanged in-process or remote.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::artifacts::{BlobError, BlobRef, BlobStore};
use crate::scheduler::{Scheduler, SchedulerError};
pub use crate::store::LogUpload;
use crate::store::{
    AttemptResult, CacheHit, ClaimParams, ClaimedTask, Completion, CompletionOutcome, Micros,
    OutputContent, Rejection, StoreError, now_micros, task_instances_named,
};

/// The longest a claim may wait for work before answering empty.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// What a worker says about itself when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The worker's id, unique among live workers (by default `hostname-pid`).
    pub worker_id: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    pub concurrency: u32,
    /// Its host.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// kiln's version on the worker.
    pub version: String,
}

/// The server's answer to a registration: the timing the worker must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAck {
    /// How long a lease lasts without a heartbeat, in milliseconds.
    pub lease_ms: u64,
    /// How often to heartbeat, in milliseconds (a third of the lease).
    pub heartbeat_ms: u64,
}

/// What a worker claims along with its completions: as many tasks as the attempts it reports
/// freed slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextClaim {
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The most tasks it takes now.
    pub limit: u32,
}

/// The server's answer to a batch of completions.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionReply {
    /// One outcome per completion, in order.
    pub outcomes: Vec<Result<CompletionOutcome, Rejection>>,
    /// Tasks claimed for the worker in the same transaction.
    pub claimed: Vec<ClaimedTask>,
}

/// Why a call to the server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached or did not answer; try again later.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server failed; try again later.
    #[error("server error: {0}")]
    Server(String),
    /// The worker token was refused.
    #[error("the server refused the worker token")]
    Unauthorized,
    /// The server refused the request as malformed; retrying will not help.
    #[error("request refused: {0}")]
    Rejected(String),
    /// The request names a task instance (or attempt) that does not exist; nothing was applied.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is for an attempt that has ended (finished, fenced off, or superseded by a
    /// later try); nothing was applied.
    #[error("stale: {0}")]
    Stale(String),
}

impl ApiError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Unreachable(_) | ApiError::Server(_))
    }
}

/// What a worker needs from a server.
#[async_trait]
pub trait ExecutionApi: Send + Sync + 'static {
    /// Announces the worker; answers the lease timing.
    async fn register(&self, registration: &Registration) -> Result<RegistrationAck, ApiError>;

    /// Claims up to `limit` tasks, waiting up to `wait` for work when none is ready.
    async fn claim(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ClaimedTask>, ApiError>;

    /// Renews the leases of running `(task instance, fence)` pairs; answers the task instances
    /// the worker must stop (cancelled, timed out, or given to another worker).
    async fn heartbeat(
        &self,
        worker_id: &str,
        running: &[(i64, i64)],
    ) -> Result<Vec<i64>, ApiError>;

    /// Stores log chunks.
    async fn logs(&self, worker_id: &str, chunks: &[LogUpload]) -> Result<(), ApiError>;

    /// Reports finished attempts with their last log chunks; each report is accepted or refused
    /// on its own. With `next`, the worker's next tasks are claimed in the same transaction and
    /// returned in the reply.
    async fn complete(
        &self,
        worker_id: &str,
        completions: &[Completion],
        logs: &[LogUpload],
        next: Option<&NextClaim>,
    ) -> Result<CompletionReply, ApiError>;

    /// Hands running tasks back (the worker is shutting down): each attempt is lost, so the
    /// task runs again elsewhere without using one of its retries (up to its
    /// `max_lost_attempts`).
    async fn release(&self, worker_id: &str, running: &[(i64, i64)]) -> Result<(), ApiError>;

    /// Gives back tasks the worker was handed but never started (it is stopping, or it was
    /// handed more than it asked for): their claims are undone, costing the tasks nothing.
    async fn unclaim(&self, worker_id: &str, claimed: &[(i64, i64)]) -> Result<(), ApiError>;

    /// The newest successful attempt with this cache key, whose outputs a cacheable task may
    /// reuse instead of running.
    async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, ApiError>;

    /// Stores a file in the server's artifact store, for workers without store credentials.
    async fn blob_upload(&self, path: &Path) -> Result<BlobRef, BlobError>;

    /// Fetches a blob from the server's artifact store into `dest`, checked against its digest.
    async fn blob_download(&self, blob: &BlobRef, dest: &Path) -> Result<(), BlobError>;
}

/// A worker the server has heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// What it registered with.
    pub registration: Registration,
    /// When it last called the server.
    pub last_seen: Micros,
}

/// The server side of the execution protocol, on a scheduler.
pub struct ExecutionService {
    scheduler: Arc<Scheduler>,
    lease: Duration,
    workers: Mutex<HashMap<String, WorkerStatus>>,
    artifacts: Option<Arc<BlobStore>>,
}

impl ExecutionService {
    /// A service granting leases of `lease` (workers heartbeat every third of it).
    pub fn new(scheduler: Arc<Scheduler>, lease: Duration) -> ExecutionService {
        ExecutionService {
            scheduler,
            lease,
            workers: Mutex::new(HashMap::new()),
            artifacts: None,
        }
    }

    /// The same service with an artifact store: workers may then move artifact bytes through
    /// the server, and the outputs a completion reports are checked to be in the store.
    pub fn with_artifacts(mut self, artifacts: Arc<BlobStore>) -> ExecutionService {
        self.artifacts = Some(artifacts);
        self
    }

    /// The artifact store, when the service has one.
    pub fn artifacts(&self) -> Option<&Arc<BlobStore>> {
        self.artifacts.as_ref()
    }

    fn artifact_store(&self) -> Result<&Arc<BlobStore>, BlobError> {
        self.artifacts.as_ref().ok_or_else(|| BlobError::Config {
            backend: "server",
            message: "this server has no artifact store configured".to_owned(),
        })
    }

    /// Turns a success whose new outputs are not in the artifact store into a retryable
    /// failure: a version must never name bytes that are not there.
    async fn check_output_blobs(&self, completion: &Completion) -> Completion {
        let AttemptResult::Success { outputs, .. } = &completion.result else {
            return completion.clone();
        };
        let mut problem = None;
        for output in outputs {
            let OutputContent::Blob { blob, .. } = &output.content else {
                continue;
            };
            let found = match self.artifact_store() {
                Ok(store) => {
                    store
                        .size(&blob.sha256)
                        .await
                        .map(Some)
                        .or_else(|error| match error {
                            BlobError::NotFound { .. } => Ok(None),
                            other => Err(other),
                        })
                }
                Err(error) => Err(error),
            };
            problem = match found {
                Ok(Some(size)) if size == blob.size => None,
                Ok(Some(size)) => Some(format!(
                    "output `{}`: the artifact store holds {size} bytes for sha256:{}, the worker reported {}",
                    output.slot, blob.sha256, blob.size
                )),
                Ok(None) => Some(format!(
                    "output `{}`: blob sha256:{} is not in the artifact store",
                    output.slot, blob.sha256
                )),
                Err(error) => Some(format!("output `{}`: {error}", output.slot)),
            };
            if problem.is_some() {
                break;
            }
        }
        match problem {
            None => completion.clone(),
            Some(error) => Completion {
                task_instance_id: completion.task_instance_id,
                fence: completion.fence,
                result: AttemptResult::Failure {
                    error,
                    retryable: true,
                },
            },
        }
    }

    /// The scheduler behind the service.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Workers heard from, by id.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list: Vec<WorkerStatus> = workers.values().cloned().collect();
        list.sort_by(|a, b| a.registration.worker_id.cmp(&b.registration.worker_id));
        list
    }

    /// Ends the attempts of a worker known to be dead as lost, at once, without waiting for its
    /// lease: their tasks run again elsewhere without using one of their retries.
    pub async fn worker_died(&self, worker_id: &str) -> Result<usize, SchedulerError> {
        let rescued = self.scheduler.worker_lost(worker_id).await?;
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(worker_id);
        Ok(rescued)
    }

    /// A claim for this worker now, under this service's lease.
    fn claim_params(&self, worker_id: &str, queues: &[String], limit: u32) -> ClaimParams {
        ClaimParams {
            worker_id: worker_id.to_owned(),
            queues: queues.to_vec(),
            limit,
            lease: self.lease,
            now: now_micros(),
        }
    }

    fn seen(&self, worker_id: &str) {
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(status) = workers.get_mut(worker_id) {
            status.last_seen = now_micros();
        }
    }
}

impl std::fmt::Debug for ExecutionService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ExecutionService")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A claim registered with the scheduler while it waits for work; withdrawn when dropped (a
/// worker's connection closing drops its claim mid-wait).
struct WaitingClaim<'a> {
    scheduler: &'a Scheduler,
    ticket: Option<u64>,
}

impl WaitingClaim<'_> {
    /// Withdraws the claim; false if a trigger took it first.
    fn withdraw(&mut self) -> bool {
        self.ticket
            .take()
            .is_some_and(|ticket| self.scheduler.claim_wait_withdraw(ticket))
    }
}

impl Drop for WaitingClaim<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

fn server_error(error: SchedulerError) -> ApiError {
    tracing::error!(message = "Execution API call failed.", %error);
    ApiError::Server(error.to_string())
}

/// The caller's mistakes the store names are told to the caller; the rest are the server's.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound(_) => ApiError::NotFound(error.to_string()),
        StoreError::Conflict(message) => ApiError::Stale(message),
        other => server_error(other.into()),
    }
}

#[async_trait]
impl ExecutionApi for ExecutionService {
    async fn register(&self, registration: &Registration) -> Result<RegistrationAck, ApiError> {
        if registration.worker_id.is_empty() || registration.queues.is_empty() {
            return Err(ApiError::Rejected(
                "a worker needs an id and at least one queue".to_owned(),
            ));
        }
        tracing::info!(message = "Worker registered.", worker_id = %registration.worker_id, queues = ?registration.queues);
        let status = WorkerStatus {
            registration: registration.clone(),
            last_seen: now_micros(),
        };
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(registration.worker_id.clone(), status);
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        Ok(RegistrationAck {
            lease_ms,
            heartbeat_ms: (lease_ms / 3).max(1),
        })
    }

    async fn claim(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: u32,
        wait: Duration,
    ) -> Result<Vec<ClaimedTask>, ApiError> {
        self.seen(worker_id);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_CLAIM_WAIT);
        let work_available = self.scheduler.work_available();
        loop {
            // Registered before the query, so work queued while it runs still wakes this claim.
            let notified = work_available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let params = self.claim_params(worker_id, queues, limit);
            let claimed = self
                .scheduler
                .store()
                .task_instance_claim(&params)
                .await
                .map_err(|error| server_error(error.into()))?;
            if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(claimed);
            }
            // A trigger claims for the waiting workers in its own transaction; the guard
            // withdraws this claim if the worker goes away while it waits.
            let (ticket, mut pushed) = self.scheduler.claim_wait(params);
            let mut waiter = WaitingClaim {
                scheduler: &self.scheduler,
                ticket: Some(ticket),
            };
            // Another server on the same database may queue work this one is not told about;
            // the one-second poll bounds how late such work is noticed.
            tokio::select! {
                tasks = &mut pushed => {
                    waiter.ticket = None;
                    match tasks {
                        Ok(tasks) if !tasks.is_empty() => return Ok(tasks),
                        _ => continue,
                    }
                }
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !waiter.withdraw() {
                // A trigger took this claim just now: its tasks arrive once it commits.
                if let Ok(tasks) = pushed.await
                    && !tasks.is_empty()
                {
                    return Ok(tasks);
                }
            }
        }
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        running: &[(i64, i64)],
    ) -> Result<Vec<i64>, ApiError> {
        self.seen(worker_id);
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let lease_end = now_micros() + crate::store::micros(self.lease);
        self.scheduler
            .store()
            .task_instance_heartbeat(worker_id, running, lease_end)
            .await
            .map_err(store_error)
    }

    async fn logs(&self, worker_id: &str, chunks: &[LogUpload]) -> Result<(), ApiError> {
        self.seen(worker_id);
        self.scheduler
            .store()
            .log_append(chunks, now_micros())
            .await
            .map_err(store_error)
    }

    async fn complete(
        &self,
        worker_id: &str,
        completions: &[Completion],
        logs: &[LogUpload],
        next: Option<&NextClaim>,
    ) -> Result<CompletionReply, ApiError> {
        self.seen(worker_id);
        // Refused whole before the batch: one call naming a task instance that never existed
        // must not fail the other workers' calls sharing its transaction. Task instances are
        // never deleted, so the answer cannot change before the batch runs.
        let ids: Vec<i64> = completions
            .iter()
            .map(|completion| completion.task_instance_id)
            .chain(logs.iter().map(|chunk| chunk.task_instance_id))
            .collect();
        let missing = self
            .scheduler
            .store()
            .task_instance_list_missing(&ids)
            .await
            .map_err(store_error)?;
        if !missing.is_empty() {
            return Err(ApiError::NotFound(format!(
                "{} not found",
                task_instances_named(&missing)
            )));
        }
        let claim = next.map(|next| self.claim_params(worker_id, &next.queues, next.limit));
        let writes_artifacts = completions.iter().any(|completion| {
            matches!(&completion.result, AttemptResult::Success { outputs, .. } if !outputs.is_empty())
        });
        let mut checked = Vec::new();
        if writes_artifacts {
            for completion in completions {
                checked.push(self.check_output_blobs(completion).await);
            }
        }
        let completions = if writes_artifacts {
            &checked[..]
        } else {
            completions
        };
        let (outcomes, claimed) = self
            .scheduler
            .complete(completions, logs, claim.as_ref())
            .await
            .map_err(server_error)?;
        Ok(CompletionReply { outcomes, claimed })
    }

    async fn release(&self, worker_id: &str, running: &[(i64, i64)]) -> Result<(), ApiError> {
        self.seen(worker_id);
        self.scheduler
            .store()
            .task_instance_release(worker_id, running, now_micros())
            .await
            .map_err(store_error)?;
        self.scheduler.work_available().notify_waiters();
        Ok(())
    }

    async fn unclaim(&self, worker_id: &str, claimed: &[(i64, i64)]) -> Result<(), ApiError> {
        self.seen(worker_id);
        self.scheduler
            .store()
            .task_instance_unclaim(worker_id, claimed)
            .await
            .map_err(store_error)?;
        self.scheduler.work_available().notify_waiters();
        Ok(())
    }

    async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, ApiError> {
        self.scheduler
            .store()
            .cache_lookup(key)
            .await
            .map_err(|error| server_error(error.into()))
    }

    async fn blob_upload(&self, path: &Path) -> Result<BlobRef, BlobError> {
        Ok(self.artifact_store()?.put_file(path).await?.blob)
    }

    async fn blob_download(&self, blob: &BlobRef, dest: &Path) -> Result<(), BlobError> {
        self.artifact_store()?
            .get_to_file(&blob.sha256, dest)
            .await
            .map(drop)
    }
}
