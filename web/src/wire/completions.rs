//! Finished attempts on the wire: what `POST /api/v1/exec/complete` reports (outcomes, outputs,
//! cache entries) and how each report was taken.

use kiln_engine::artifacts::BlobRef;
use kiln_engine::state::TaskState;
use kiln_engine::store::{
    AttemptResult, CacheRecord, Completion, CompletionOutcome, DatasetStats, OutputContent,
    ProducedOutput, Rejection,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::DatasetView;
use super::exec::{Assignment, LogChunkUpload};
use super::schema;

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
