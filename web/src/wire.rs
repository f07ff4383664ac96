//! The JSON shapes of the REST and execution APIs: this crate's own types, so that the wire
//! format is a decision of its own and not a side effect of engine refactors.

use std::collections::BTreeMap;

use kiln_engine::artifacts::BlobRef;
use kiln_engine::dag::{ArtifactKind, OutputSpec};
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{
    ArtifactVersionRecord, AttemptRef, AttemptResult, CacheRecord, ClaimedTask, ColumnSchema,
    Completion, CompletionOutcome, DatasetStats, OutputContent, ProducedOutput, Rejection,
    ResolvedInput,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::openapi::schema;

/// Times on the wire are RFC 3339 strings (UTC).
pub fn time(micros: i64) -> String {
    kiln_engine::scheduler::to_datetime(micros).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Reads a time written by [`time`]; anything else is the epoch.
fn micros_of(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).map_or(0, |time| time.timestamp_micros())
}

/// The body of every error response (`AppError`): a message the caller can act on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong; for a server failure, only that it happened.
    pub error: String,
}

// ---- Artifacts (both APIs) --------------------------------------------------------------

/// An artifact version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionView {
    /// Its id in the store.
    pub id: i64,
    /// The artifact's name.
    pub name: String,
    /// `dataset`, `model` or `file`.
    #[schemars(with = "schema::ArtifactKind")]
    pub kind: ArtifactKind,
    /// The version number, from 1.
    pub version: i64,
    /// The SHA-256 of its bytes, lowercase hex.
    #[schemars(with = "schema::Sha256")]
    pub sha256: kiln_engine::artifacts::Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The attempt that wrote it; absent when it was put by hand.
    pub producer: Option<AttemptView>,
    /// For datasets: columns and row count, when known.
    pub dataset: Option<DatasetView>,
    /// What the writer said about the version (a model's metrics, say).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
}

/// A task attempt, as lineage names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptView {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt number.
    pub try_number: i64,
    /// The run.
    pub run_id: i64,
    /// The DAG.
    pub dag_id: String,
    /// The task.
    pub task_id: String,
}

/// The shape of a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetView {
    /// Columns in order, as `{name, dtype}`.
    #[schemars(with = "Vec<schema::ColumnSchema>")]
    pub columns: Vec<ColumnSchema>,
    /// Rows.
    pub rows: u64,
}

impl From<&AttemptRef> for AttemptView {
    fn from(attempt: &AttemptRef) -> AttemptView {
        AttemptView {
            task_instance_id: attempt.task_instance_id,
            try_number: attempt.try_number,
            run_id: attempt.run_id,
            dag_id: attempt.dag_id.clone(),
            task_id: attempt.task_id.clone(),
        }
    }
}

impl From<AttemptView> for AttemptRef {
    fn from(attempt: AttemptView) -> AttemptRef {
        AttemptRef {
            task_instance_id: attempt.task_instance_id,
            try_number: attempt.try_number,
            run_id: attempt.run_id,
            dag_id: attempt.dag_id,
            task_id: attempt.task_id,
        }
    }
}

impl From<&ArtifactVersionRecord> for VersionView {
    fn from(version: &ArtifactVersionRecord) -> VersionView {
        VersionView {
            id: version.id,
            name: version.name.clone(),
            kind: version.kind,
            version: version.version,
            sha256: version.blob.sha256,
            size: version.blob.size,
            media_type: version.media_type.clone(),
            producer: version.producer.as_ref().map(AttemptView::from),
            dataset: version.dataset.as_ref().map(|stats| DatasetView {
                columns: stats.columns.clone(),
                rows: stats.rows,
            }),
            metadata: version.metadata.clone(),
            created_at: time(version.created_at),
        }
    }
}

impl From<VersionView> for ArtifactVersionRecord {
    fn from(version: VersionView) -> ArtifactVersionRecord {
        ArtifactVersionRecord {
            id: version.id,
            name: version.name,
            kind: version.kind,
            version: version.version,
            blob: BlobRef {
                sha256: version.sha256,
                size: version.size,
            },
            media_type: version.media_type,
            producer: version.producer.map(AttemptRef::from),
            dataset: version.dataset.map(|stats| DatasetStats {
                columns: stats.columns,
                rows: stats.rows,
            }),
            metadata: version.metadata,
            created_at: micros_of(&version.created_at),
        }
    }
}

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

/// One output of a finished attempt: new bytes, or an existing version reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// New bytes (digest and size) or a reused version, never both nor neither, as the server checks.
#[schemars(extend("oneOf" = [
    {
        "required": ["sha256", "size"],
        "properties": {
            "sha256": { "type": "string" },
            "size": { "type": "integer" },
            "reused_version_id": { "type": "null" },
        },
    },
    {
        "required": ["reused_version_id"],
        "properties": {
            "reused_version_id": { "type": "integer" },
            "sha256": { "type": "null" },
            "size": { "type": "null" },
        },
    },
]))]
pub struct OutputReport {
    /// The output's name.
    pub slot: String,
    /// For new bytes: their digest.
    #[serde(default)]
    #[schemars(with = "Option<schema::Sha256>")]
    pub sha256: Option<kiln_engine::artifacts::Sha256Digest>,
    /// For new bytes: their size.
    #[serde(default)]
    pub size: Option<u64>,
    /// For new bytes: their media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// For new dataset bytes: their shape.
    #[serde(default)]
    pub dataset: Option<DatasetView>,
    /// For new bytes: what the plugin said about them.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// For a reused version: its id.
    #[serde(default)]
    pub reused_version_id: Option<i64>,
}

impl From<&ProducedOutput> for OutputReport {
    fn from(output: &ProducedOutput) -> OutputReport {
        match &output.content {
            OutputContent::Blob {
                blob,
                media_type,
                dataset,
                metadata,
            } => OutputReport {
                metadata: metadata.clone(),
                slot: output.slot.clone(),
                sha256: Some(blob.sha256),
                size: Some(blob.size),
                media_type: Some(media_type.clone()),
                dataset: dataset.as_ref().map(|stats| DatasetView {
                    columns: stats.columns.clone(),
                    rows: stats.rows,
                }),
                reused_version_id: None,
            },
            OutputContent::Reused {
                artifact_version_id,
            } => OutputReport {
                slot: output.slot.clone(),
                sha256: None,
                size: None,
                media_type: None,
                dataset: None,
                metadata: None,
                reused_version_id: Some(*artifact_version_id),
            },
        }
    }
}

impl OutputReport {
    /// Decodes the report; one that is neither new bytes nor a reuse is refused by name.
    pub fn into_output(self) -> Result<ProducedOutput, String> {
        let content = match (self.reused_version_id, self.sha256, self.size) {
            (Some(artifact_version_id), None, None) => OutputContent::Reused {
                artifact_version_id,
            },
            (None, Some(sha256), Some(size)) => OutputContent::Blob {
                blob: BlobRef { sha256, size },
                media_type: self
                    .media_type
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
                dataset: self.dataset.map(|stats| DatasetStats {
                    columns: stats.columns,
                    rows: stats.rows,
                }),
                metadata: self.metadata,
            },
            _ => {
                return Err(format!(
                    "output `{}`: give either `sha256` and `size`, or `reused_version_id`",
                    self.slot
                ));
            }
        };
        Ok(ProducedOutput {
            slot: self.slot,
            content,
        })
    }
}

/// A successful attempt's cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CacheReport {
    /// The cache key.
    pub key: String,
    /// For a cache hit, the attempt reused.
    #[serde(default)]
    pub hit_of: Option<i64>,
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

// ---- Execution API ----------------------------------------------------------------------

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

/// `POST /api/v1/exec/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CompleteRequest {
    /// The worker.
    pub worker_id: String,
    /// Finished attempts.
    pub completions: Vec<CompletionReport>,
    /// Their last log chunks, stored in the same transaction.
    #[serde(default)]
    pub logs: Vec<LogChunkUpload>,
    /// Claim the worker's next tasks in the same transaction.
    #[serde(default)]
    pub claim: Option<ClaimNext>,
}

/// The claim that rides along with a completion batch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClaimNext {
    /// Queues to claim from.
    pub queues: Vec<String>,
    /// The most tasks to take.
    pub limit: u32,
}

/// One finished attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CompletionReport {
    /// The task instance.
    pub task_instance_id: i64,
    /// The fence it was claimed under.
    pub fence: i64,
    /// `true` for success.
    pub success: bool,
    /// The success summary.
    #[serde(default)]
    pub summary: serde_json::Value,
    /// The failure.
    #[serde(default)]
    pub error: Option<String>,
    /// Whether a failure may be retried.
    #[serde(default)]
    pub retryable: bool,
    /// A success's outputs.
    #[serde(default)]
    pub outputs: Vec<OutputReport>,
    /// A cacheable success's cache entry.
    #[serde(default)]
    pub cache: Option<CacheReport>,
}

impl From<&Completion> for CompletionReport {
    fn from(completion: &Completion) -> CompletionReport {
        let mut report = CompletionReport {
            task_instance_id: completion.task_instance_id,
            fence: completion.fence,
            success: false,
            summary: serde_json::Value::Null,
            error: None,
            retryable: false,
            outputs: Vec::new(),
            cache: None,
        };
        match &completion.result {
            AttemptResult::Success {
                summary,
                outputs,
                cache,
            } => {
                report.success = true;
                report.summary = summary.clone();
                report.outputs = outputs.iter().map(OutputReport::from).collect();
                report.cache = cache.as_ref().map(|cache| CacheReport {
                    key: cache.key.clone(),
                    hit_of: cache.hit_of,
                });
            }
            AttemptResult::Failure { error, retryable } => {
                report.error = Some(error.clone());
                report.retryable = *retryable;
            }
        }
        report
    }
}

impl TryFrom<CompletionReport> for Completion {
    type Error = String;

    /// Decodes a report; malformed outputs are refused by name.
    fn try_from(report: CompletionReport) -> Result<Completion, String> {
        let result = if report.success {
            AttemptResult::Success {
                summary: report.summary,
                outputs: report
                    .outputs
                    .into_iter()
                    .map(OutputReport::into_output)
                    .collect::<Result<_, _>>()?,
                cache: report.cache.map(|cache| CacheRecord {
                    key: cache.key,
                    hit_of: cache.hit_of,
                }),
            }
        } else {
            AttemptResult::Failure {
                error: report
                    .error
                    .unwrap_or_else(|| "failed without a message".to_owned()),
                retryable: report.retryable,
            }
        };
        Ok(Completion {
            task_instance_id: report.task_instance_id,
            fence: report.fence,
            result,
        })
    }
}

/// The answer to a completion batch, one result per report, in order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CompleteResponse {
    /// Results.
    pub results: Vec<CompletionResult>,
    /// Tasks claimed for the worker, when the request asked.
    #[serde(default)]
    pub tasks: Vec<Assignment>,
}

/// How one report was taken.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CompletionResult {
    /// `succeeded`, `will_retry`, `failed`, or `refused`.
    pub outcome: String,
    /// For `will_retry`: when, in microseconds since the epoch.
    #[serde(default)]
    pub retry_at: Option<i64>,
    /// For `refused`: the task instance's state now.
    #[serde(default)]
    #[schemars(with = "Option<schema::TaskState>")]
    pub state: Option<TaskState>,
    /// For `refused`: the current fence (absent when the task instance does not exist).
    #[serde(default)]
    pub current_fence: Option<i64>,
    /// For `refused`: why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl CompletionResult {
    /// Encodes one outcome for the wire.
    pub fn from_outcome(outcome: &Result<CompletionOutcome, Rejection>) -> CompletionResult {
        let blank = CompletionResult {
            outcome: String::new(),
            retry_at: None,
            state: None,
            current_fence: None,
            reason: None,
        };
        match outcome {
            Ok(CompletionOutcome::Succeeded) => CompletionResult {
                outcome: "succeeded".to_owned(),
                ..blank
            },
            Ok(CompletionOutcome::WillRetry { at }) => CompletionResult {
                outcome: "will_retry".to_owned(),
                retry_at: Some(*at),
                ..blank
            },
            Ok(CompletionOutcome::Failed) => CompletionResult {
                outcome: "failed".to_owned(),
                ..blank
            },
            Err(rejection) => {
                let (state, current) = match rejection {
                    Rejection::Stale { state, current, .. } => (Some(*state), Some(*current)),
                    Rejection::Unknown(_) => (None, None),
                };
                CompletionResult {
                    outcome: "refused".to_owned(),
                    state,
                    current_fence: current,
                    reason: Some(rejection.to_string()),
                    ..blank
                }
            }
        }
    }

    /// Decodes one outcome; `reported` is the report it answers.
    pub fn into_outcome(self, reported: &Completion) -> Result<CompletionOutcome, Rejection> {
        match (self.outcome.as_str(), self.state, self.current_fence) {
            ("succeeded", ..) => Ok(CompletionOutcome::Succeeded),
            ("will_retry", ..) => Ok(CompletionOutcome::WillRetry {
                at: self.retry_at.unwrap_or_default(),
            }),
            ("failed", ..) => Ok(CompletionOutcome::Failed),
            (_, Some(state), Some(current)) => Err(Rejection::Stale {
                task_instance_id: reported.task_instance_id,
                state,
                current,
                reported: reported.fence,
            }),
            _ => Err(Rejection::Unknown(reported.task_instance_id)),
        }
    }
}

// ---- REST API ---------------------------------------------------------------------------

/// `GET /api/v1/dags`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DagList {
    /// DAGs that loaded.
    pub dags: Vec<DagSummary>,
    /// Files whose newest content did not load.
    pub import_errors: Vec<ImportError>,
}

/// One DAG in a list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DagSummary {
    /// Its id.
    pub id: String,
    /// What it does.
    pub description: String,
    /// Its cron expression or preset, if scheduled.
    pub schedule: Option<String>,
    /// The schedule's timezone.
    pub timezone: String,
    /// The next scheduled time, RFC 3339.
    pub next_run: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// The active version number.
    pub version: i64,
    /// Its tags.
    pub tags: Vec<String>,
    /// How many tasks it has.
    pub tasks: usize,
}

/// A DAG file that did not load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ImportError {
    /// The file.
    pub file: String,
    /// Every problem, one per line.
    pub errors: String,
}

/// `GET /api/v1/dags/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DagDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: DagSummary,
    /// Its params, by name.
    pub params: BTreeMap<String, ParamView>,
    /// Its tasks, upstream before downstream.
    pub task_list: Vec<TaskDefinitionView>,
}

/// A DAG param.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ParamView {
    /// `string`, `integer`, `number`, `boolean`, `array` or `object`.
    #[serde(rename = "type")]
    pub param_type: String,
    /// The default; none means required.
    pub default: Option<serde_json::Value>,
    /// What it means.
    pub description: String,
}

/// A task's definition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskDefinitionView {
    /// Its id.
    pub id: String,
    /// Its plugin.
    pub kind: String,
    /// Its upstream tasks.
    pub depends_on: Vec<String>,
}

/// `POST /api/v1/dags/{id}/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Param values by name; defaults fill the rest.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    /// Its id.
    pub id: i64,
    /// Its DAG.
    pub dag_id: String,
    /// Its DAG version's id.
    pub dag_version_id: i64,
    /// Its state.
    #[schemars(with = "schema::RunState")]
    pub state: RunState,
    /// How it was created.
    pub trigger: String,
    /// RFC 3339.
    pub logical_date: String,
    /// Its params.
    pub params: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub ended_at: Option<String>,
}

/// `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunDetail {
    /// The run.
    pub run: RunView,
    /// Its task instances, in DAG order.
    pub tasks: Vec<TaskInstanceView>,
    /// The MLflow run mirroring it, when MLflow is configured and the run has reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRunView>,
}

/// An MLflow run mirroring a kiln run or attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MlflowRunView {
    /// MLflow's experiment id.
    pub experiment_id: String,
    /// MLflow's run id.
    pub run_id: String,
    /// Its page in MLflow's UI.
    pub url: String,
}

/// A task instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskInstanceView {
    /// Its id.
    pub id: i64,
    /// The task.
    pub task_id: String,
    /// Its state.
    #[schemars(with = "schema::TaskState")]
    pub state: TaskState,
    /// Attempts so far, lost ones included: the latest attempt's number.
    pub try_number: i64,
    /// Attempts allowed: the task's own tries (retries + 1) plus one per lost attempt.
    pub max_tries: i64,
    /// Attempts lost to the infrastructure (the worker died, its lease expired, or it handed the
    /// attempt back), which use none of the task's own tries: those are
    /// `try_number - lost_attempts` of `max_tries - lost_attempts`.
    #[serde(default)]
    pub lost_attempts: i64,
    /// The worker running it.
    pub worker_id: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub ended_at: Option<String>,
    /// Seconds from the latest attempt's start to the end.
    pub duration_seconds: Option<f64>,
    /// The latest failure.
    pub error: Option<String>,
    /// The latest attempt's nested MLflow run (`train` and `evaluate` tasks), when mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRunView>,
}

/// `GET /api/v1/runs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
}

/// `GET /api/v1/runs/{id}/tasks/{task}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogPage {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt shown.
    pub try_number: i64,
    /// The task instance's state.
    #[schemars(with = "schema::TaskState")]
    pub state: TaskState,
    /// Whether the attempt is over (no more chunks will come).
    pub finished: bool,
    /// Chunks after the requested position.
    pub chunks: Vec<LogChunkView>,
}

/// A log chunk.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogChunkView {
    /// Its position.
    pub seq: i64,
    /// Its text.
    pub text: String,
}

/// `POST …/clear`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Also clear everything downstream.
    #[serde(default)]
    pub downstream: bool,
}

/// `POST …/mark`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    /// `success` or `failed`.
    #[schemars(with = "String", extend("enum" = ["success", "failed"]))]
    pub state: TaskState,
}

/// The answer to `POST /api/v1/runs/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CancelResponse {
    /// Whether the run was still going and is now cancelled.
    pub cancelled: bool,
}

/// The answer to `POST …/clear`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClearResponse {
    /// The tasks cleared, to run again.
    pub cleared: Vec<String>,
}

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkerList {
    /// Workers the server has heard from.
    pub workers: Vec<WorkerView>,
}

/// A worker, as it registered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkerView {
    /// Unique among live workers.
    pub worker_id: String,
    /// Queues served.
    pub queues: Vec<String>,
    /// Tasks run at once.
    pub concurrency: u32,
    /// The worker's host.
    pub hostname: String,
    /// The worker's process id.
    pub pid: u32,
    /// kiln's version on the worker.
    pub version: String,
    /// When the server last heard from it, RFC 3339.
    pub last_seen: String,
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

// ---- Artifacts REST ---------------------------------------------------------------------

/// An artifact name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactView {
    /// The name versions are published under.
    pub name: String,
    /// `dataset`, `model` or `file`.
    #[schemars(with = "schema::ArtifactKind")]
    pub kind: ArtifactKind,
    /// The newest version number.
    pub latest_version: i64,
    /// RFC 3339: when the first version was published.
    pub created_at: String,
    /// RFC 3339: when the newest version was published or reused.
    pub updated_at: String,
}

impl From<&kiln_engine::store::ArtifactRecord> for ArtifactView {
    fn from(artifact: &kiln_engine::store::ArtifactRecord) -> ArtifactView {
        ArtifactView {
            name: artifact.name.clone(),
            kind: artifact.kind,
            latest_version: artifact.latest_version,
            created_at: time(artifact.created_at),
            updated_at: time(artifact.updated_at),
        }
    }
}

/// `GET /api/v1/artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactList {
    /// By name.
    pub artifacts: Vec<ArtifactView>,
}

/// `GET /api/v1/artifacts/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactDetail {
    /// The artifact.
    #[serde(flatten)]
    pub artifact: ArtifactView,
    /// Its versions, newest first.
    pub versions: Vec<VersionView>,
}

/// One step of lineage: an attempt read `input` and wrote `output` (version ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineageEdgeView {
    /// The version read.
    pub input: i64,
    /// The version written.
    pub output: i64,
    /// The attempt in between.
    pub attempt: AttemptView,
}

/// An attempt that wrote a version without reading any artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineageSourceView {
    /// The version written (its id).
    pub version: i64,
    /// The attempt.
    pub attempt: AttemptView,
}

/// `GET …/lineage`: versions, and the attempts that turned some into others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineageView {
    /// Every version in the graph.
    pub versions: Vec<VersionView>,
    /// Edges from input version to output version.
    pub edges: Vec<LineageEdgeView>,
    /// Versions written by attempts that read nothing.
    pub sources: Vec<LineageSourceView>,
}

impl From<&kiln_engine::store::LineageGraph> for LineageView {
    fn from(graph: &kiln_engine::store::LineageGraph) -> LineageView {
        LineageView {
            versions: graph.versions.iter().map(VersionView::from).collect(),
            edges: graph
                .edges
                .iter()
                .map(|edge| LineageEdgeView {
                    input: edge.input,
                    output: edge.output,
                    attempt: AttemptView::from(&edge.attempt),
                })
                .collect(),
            sources: graph
                .sources
                .iter()
                .map(|(version, attempt)| LineageSourceView {
                    version: *version,
                    attempt: AttemptView::from(attempt),
                })
                .collect(),
        }
    }
}
