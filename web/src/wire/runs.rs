//! Runs on the wire: runs, their task instances and logs, the actions on them, and the REST
//! API's run and log queries.

use kiln_engine::state::{RunState, TaskState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

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

/// The filters of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// Only runs of this DAG.
    pub(crate) dag_id: Option<String>,
    /// Only runs in this state.
    // A string rather than the enum, so that a wrong state gets a 422 naming the choices.
    #[schemars(with = "Option<schema::RunState>")]
    pub(crate) state: Option<String>,
    /// The most runs to answer: 100 unless given, at most 1000.
    pub(crate) limit: Option<u32>,
}

/// Which part of a task's log `GET …/logs` answers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// The attempt, from 1; the latest unless given.
    pub(crate) try_number: Option<i64>,
    /// Only chunks after this position; all unless given.
    pub(crate) after_seq: Option<i64>,
}
