//! The execution API on the wire: registration, claims and the tasks they hand out, leases,
//! log uploads, cache lookups and blob uploads.

use kiln_engine::dag::{ArtifactKind, OutputSpec};
use kiln_engine::store::{ClaimedTask, ResolvedInput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::{AttemptView, VersionView};
use super::schema;

/// An input of a claimed task, resolved to a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InputAssignment {
    /// The task's name for it.
    pub slot: String,
    /// The version to read.
    pub version: VersionView,
}

/// A declared output of a claimed task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputAssignment {
    /// The output's name.
    pub name: String,
    /// What it is.
    #[schemars(with = "schema::ArtifactKind")]
    pub kind: ArtifactKind,
    /// The name to publish it under, when not `dag.task.output`.
    pub publish_as: Option<String>,
    /// Its declared media type.
    pub media_type: Option<String>,
    /// The registry alias the new version takes when the task succeeds.
    #[serde(default)]
    #[schemars(with = "Option<schema::ModelAlias>")]
    pub promote: Option<kiln_engine::dag::ModelAlias>,
}

/// `POST /api/v1/exec/cache/lookup`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CacheLookupRequest {
    /// The cache key.
    pub key: String,
}

/// The answer to a cache lookup.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CacheLookupResponse {
    /// The attempt to reuse, when there is one.
    pub hit: Option<CacheHitView>,
}

/// An attempt whose outputs may be reused.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CacheHitView {
    /// The attempt's id in the store.
    pub attempt_id: i64,
    /// Which attempt.
    pub attempt: AttemptView,
    /// Its outputs.
    pub outputs: Vec<InputAssignment>,
    /// Its summary.
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
}

/// The answer to a blob upload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub struct BlobView {
    /// The digest.
    #[schemars(with = "schema::Sha256")]
    pub sha256: kiln_engine::artifacts::Sha256Digest,
    /// The size.
    pub size: u64,
}

fn resolved_input(input: InputAssignment) -> ResolvedInput {
    ResolvedInput {
        slot: input.slot,
        version: input.version.into(),
    }
}

fn input_assignment(input: &ResolvedInput) -> InputAssignment {
    InputAssignment {
        slot: input.slot.clone(),
        version: VersionView::from(&input.version),
    }
}

impl From<&kiln_engine::store::CacheHit> for CacheHitView {
    fn from(hit: &kiln_engine::store::CacheHit) -> CacheHitView {
        CacheHitView {
            attempt_id: hit.attempt_id,
            attempt: AttemptView::from(&hit.attempt),
            outputs: hit.outputs.iter().map(input_assignment).collect(),
            summary: hit.summary.clone(),
        }
    }
}

impl From<CacheHitView> for kiln_engine::store::CacheHit {
    fn from(hit: CacheHitView) -> kiln_engine::store::CacheHit {
        kiln_engine::store::CacheHit {
            attempt_id: hit.attempt_id,
            attempt: hit.attempt.into(),
            outputs: hit.outputs.into_iter().map(resolved_input).collect(),
            summary: hit.summary,
        }
    }
}

/// `POST /api/v1/exec/register`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegisterRequest {
    /// Unique among live workers.
    #[schemars(length(min = 1))]
    pub worker_id: String,
    /// Queues served.
    #[schemars(length(min = 1))]
    pub queues: Vec<String>,
    /// Tasks run at once.
    pub concurrency: u32,
    /// The worker's host.
    pub hostname: String,
    /// The worker's process id.
    pub pid: u32,
    /// kiln's version on the worker.
    pub version: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegisterResponse {
    /// Lease length without heartbeat.
    pub lease_ms: u64,
    /// How often to heartbeat.
    pub heartbeat_ms: u64,
}

/// `POST /api/v1/exec/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClaimRequest {
    /// The worker.
    #[schemars(length(min = 1))]
    pub worker_id: String,
    /// Queues to claim from.
    #[schemars(length(min = 1))]
    pub queues: Vec<String>,
    /// The most tasks to take.
    #[schemars(range(min = 1))]
    pub limit: u32,
    /// How long to wait for work, at most 30 000.
    #[schemars(range(max = 30_000))]
    pub wait_ms: u64,
}

/// Tasks handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClaimResponse {
    /// Possibly none, when the wait ran out.
    pub tasks: Vec<Assignment>,
}

/// One claimed task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    /// The task instance.
    pub task_instance_id: i64,
    /// The fencing token to present with every report.
    pub fence: i64,
    /// The run.
    pub run_id: i64,
    /// The DAG.
    pub dag_id: String,
    /// The task.
    pub task_id: String,
    /// The attempt number.
    pub try_number: i64,
    /// The plugin kind.
    pub kind: String,
    /// The plugin params.
    pub params: serde_json::Value,
    /// The run's params.
    pub run_params: serde_json::Value,
    /// The run's logical date, in microseconds since the epoch.
    pub logical_date: i64,
    /// When the attempt must stop, in microseconds since the epoch.
    pub timeout_at: Option<i64>,
    /// Inputs, resolved to versions.
    #[serde(default)]
    pub inputs: Vec<InputAssignment>,
    /// Outputs the task must write.
    #[serde(default)]
    pub outputs: Vec<OutputAssignment>,
    /// Whether an earlier attempt's outputs may be reused.
    #[serde(default)]
    pub cache: bool,
}

impl From<ClaimedTask> for Assignment {
    fn from(task: ClaimedTask) -> Assignment {
        Assignment {
            task_instance_id: task.task_instance_id,
            fence: task.fence,
            run_id: task.run_id,
            dag_id: task.dag_id,
            task_id: task.task_id,
            try_number: task.try_number,
            kind: task.kind,
            params: task.params,
            run_params: task.run_params,
            logical_date: task.logical_date,
            timeout_at: task.timeout_at,
            inputs: task.inputs.iter().map(input_assignment).collect(),
            outputs: task
                .outputs
                .into_iter()
                .map(|output| OutputAssignment {
                    name: output.name,
                    kind: output.kind,
                    publish_as: output.publish_as,
                    media_type: output.media_type,
                    promote: output.promote,
                })
                .collect(),
            cache: task.cache,
        }
    }
}

impl From<Assignment> for ClaimedTask {
    fn from(task: Assignment) -> ClaimedTask {
        ClaimedTask {
            task_instance_id: task.task_instance_id,
            fence: task.fence,
            run_id: task.run_id,
            dag_id: task.dag_id,
            task_id: task.task_id,
            try_number: task.try_number,
            kind: task.kind,
            params: task.params,
            run_params: task.run_params,
            logical_date: task.logical_date,
            timeout_at: task.timeout_at,
            inputs: task.inputs.into_iter().map(resolved_input).collect(),
            outputs: task
                .outputs
                .into_iter()
                .map(|output| OutputSpec {
                    name: output.name,
                    kind: output.kind,
                    publish_as: output.publish_as,
                    media_type: output.media_type,
                    promote: output.promote,
                })
                .collect(),
            cache: task.cache,
        }
    }
}

/// A `(task instance, fence)` pair a worker holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub struct Lease {
    /// The task instance.
    pub task_instance_id: i64,
    /// The fence it was claimed under.
    pub fence: i64,
}

/// `POST /api/v1/exec/heartbeat`, `/release` and `/unclaim`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LeasesRequest {
    /// The worker.
    pub worker_id: String,
    /// What it holds.
    pub running: Vec<Lease>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatResponse {
    /// Task instances to stop now.
    pub stop: Vec<i64>,
}

/// `POST /api/v1/exec/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogsRequest {
    /// The worker.
    pub worker_id: String,
    /// Chunks to store.
    pub chunks: Vec<LogChunkUpload>,
}

/// One log chunk.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogChunkUpload {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt.
    pub try_number: i64,
    /// Position in the attempt's log.
    pub seq: i64,
    /// The text.
    pub text: String,
}

/// The answer to `POST /api/v1/exec/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogsResponse {
    /// How many chunks were stored.
    pub stored: usize,
}

/// The answer to `POST /api/v1/exec/release` and `/unclaim`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseResponse {
    /// How many leases were given back.
    pub released: usize,
}

impl From<&kiln_engine::store::LogUpload> for LogChunkUpload {
    fn from(chunk: &kiln_engine::store::LogUpload) -> LogChunkUpload {
        LogChunkUpload {
            task_instance_id: chunk.task_instance_id,
            try_number: chunk.try_number,
            seq: chunk.seq,
            text: chunk.chunk.clone(),
        }
    }
}

impl From<LogChunkUpload> for kiln_engine::store::LogUpload {
    fn from(chunk: LogChunkUpload) -> kiln_engine::store::LogUpload {
        kiln_engine::store::LogUpload {
            task_instance_id: chunk.task_instance_id,
            try_number: chunk.try_number,
            seq: chunk.seq,
            chunk: chunk.text,
        }
    }
}
