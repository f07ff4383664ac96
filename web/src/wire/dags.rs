//! DAGs on the wire: the list, one DAG's params and tasks, and the trigger request.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
