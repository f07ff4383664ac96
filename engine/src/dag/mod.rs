//! DAG definitions: the validated model every other part of kiln works from, and the loader that
//! turns TOML files into it.
//!
//! A [`Dag`] is only ever built by the loader, so holding one means every check in
//! [`load_dir`] and [`parse_dag`] passed: ids are well formed and unique, plugin params match their
//! plugin's types, references resolve and the graph has no cycle. The model serializes to JSON,
//! which is how a run remembers the exact DAG version it ran.

mod error;
mod graph;
mod load;
mod spec;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use error::{DagFileError, Problem, Severity};
pub use graph::{dependency_cycles, topological_order};
pub use load::{
    DagSet, LoadedDag, MAX_DAG_FILE_BYTES, MAX_DAG_TASKS, check_artifact_name, load_dir, parse_dag,
};

use crate::duration::{serde_human, serde_human_option};
use crate::schedule::Schedule;

/// What the loader must know of the task kinds a build can run, so that a task's params are
/// checked against its plugin's type when its file loads. `plugin::PluginRegistry` implements
/// it: the loader sees kinds through this and nothing else of plugins, so `dag` depends on no
/// other part of kiln but durations and schedules.
pub trait TaskKinds {
    /// Whether `params` fit the plugin of `kind`, and whether there is one.
    fn check_params(&self, kind: &str, params: &serde_json::Value) -> KindCheck;
}

/// What [`TaskKinds::check_params`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindCheck {
    /// The kind exists and the params deserialize into its type.
    Fits,
    /// The kind exists; its params do not fit, for this reason.
    BadParams(String),
    /// The kind is known but not in this build; the note says when it arrives.
    Planned(&'static str),
    /// No such kind; these are the ones there are, sorted.
    Unknown(Vec<&'static str>),
}

/// A validated DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dag {
    /// Unique among all loaded DAGs; letters, digits, `_` and `-`.
    pub id: String,
    /// What the DAG does, for people.
    pub description: String,
    /// When runs are created on their own; `None` means manual and API triggers only.
    pub schedule: Option<Schedule>,
    /// The timezone `schedule`, `start_date` and `end_date` are read in.
    pub timezone: Tz,
    /// No scheduled run has a logical date before this.
    pub start_date: Option<DateTime<Utc>>,
    /// No scheduled run has a logical date after this.
    pub end_date: Option<DateTime<Utc>>,
    /// Whether missed intervals since the last run are created when the scheduler catches up.
    pub catchup: bool,
    /// With `catchup`, at most this many missed intervals are created in one go.
    pub max_catchup_runs: u32,
    /// At most this many runs of the DAG are running at once.
    pub max_active_runs: u32,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// Typed parameters a run may be triggered with.
    pub params: BTreeMap<String, ParamSpec>,
    /// The tasks, in a topological order (upstream before downstream, file order breaking ties).
    pub tasks: Vec<Task>,
}

impl Dag {
    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|task| task.id == id)
    }
}

/// A validated task, with the DAG's defaults already applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within its DAG; letters, digits, `_` and `-`.
    pub id: String,
    /// The plugin that runs it.
    pub kind: String,
    /// What the task does, for people.
    pub description: String,
    /// The plugin's params as JSON; they deserialize into the plugin's params struct.
    pub params: serde_json::Value,
    /// Upstream task ids, including those implied by `inputs`, sorted.
    pub depends_on: Vec<String>,
    /// When the task may run, given its upstreams' final states.
    pub trigger_rule: TriggerRule,
    /// How many times a failed attempt is retried.
    pub retries: u32,
    /// The wait before the first retry.
    #[serde(with = "serde_human")]
    pub retry_delay: Duration,
    /// Whether the wait doubles with each retry (with jitter), up to `max_retry_delay`.
    pub retry_backoff: bool,
    /// The longest wait between retries.
    #[serde(with = "serde_human")]
    pub max_retry_delay: Duration,
    /// How many attempts lost to the infrastructure (the worker died, its lease expired, it
    /// handed the attempt back) are run again without using a retry; the next loss fails the
    /// task. Versions stored before the setting existed read as the default.
    #[serde(default = "default_max_lost_attempts")]
    pub max_lost_attempts: u32,
    /// An attempt running longer than this is stopped and counts as failed.
    #[serde(with = "serde_human_option")]
    pub timeout: Option<Duration>,
    /// Artifacts the task reads, by the name the plugin knows them under.
    pub inputs: BTreeMap<String, InputRef>,
    /// Artifacts the task writes.
    pub outputs: Vec<OutputSpec>,
    /// The worker queue that runs it.
    pub queue: String,
    /// Higher runs first when more tasks are ready than workers can take.
    pub priority: i32,
    /// Whether an earlier successful attempt with the same plugin version, params and inputs may
    /// be reused instead of running again.
    pub cache: bool,
}

/// The lost attempts a task is allowed when neither it nor the DAG's `[defaults]` say.
pub const DEFAULT_MAX_LOST_ATTEMPTS: u32 = 3;

fn default_max_lost_attempts() -> u32 {
    DEFAULT_MAX_LOST_ATTEMPTS
}

/// When a task becomes runnable, given the final states of its upstream tasks (Airflow's rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded (skipped counts as success only for `none_failed`).
    #[default]
    AllSuccess,
    /// Every upstream failed or was marked upstream-failed.
    AllFailed,
    /// Every upstream finished, whatever the outcome.
    AllDone,
    /// At least one upstream succeeded; runs as soon as one does.
    OneSuccess,
    /// At least one upstream failed; runs as soon as one does.
    OneFailed,
    /// No upstream failed (succeeded or skipped).
    NoneFailed,
}

impl TriggerRule {
    /// The name used in DAG files.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::AllDone => "all_done",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::NoneFailed => "none_failed",
        }
    }
}

/// Where an input artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum InputRef {
    /// The version an upstream task produced in the same run.
    Task {
        /// The upstream task.
        task: String,
        /// The output name declared by that task.
        output: String,
    },
    /// A named dataset: its latest version, or a pinned one.
    Dataset {
        /// The dataset's name.
        name: String,
        /// A pinned version number; `None` means the newest when the task is claimed.
        version: Option<u64>,
    },
}

/// An artifact a task declares it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// The output's name within the task; inputs refer to it as `task.name`.
    pub name: String,
    /// What the artifact is.
    pub kind: ArtifactKind,
    /// A registry name to publish the version under (a dataset or model name); by default
    /// `dag.task.output`.
    pub publish_as: Option<String>,
    /// The media type of what the task writes (`text/csv`), when the plugin does not say.
    #[serde(default)]
    pub media_type: Option<String>,
    /// For a model published under a registry name: move this alias to the new version when
    /// the task succeeds, in the same transaction.
    #[serde(default)]
    pub promote: Option<ModelAlias>,
}

/// The aliases of the model registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelAlias {
    /// The version that is served.
    Production,
    /// A version being tried before production.
    Staging,
}

impl ModelAlias {
    /// The name used in DAG files, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelAlias::Production => "production",
            ModelAlias::Staging => "staging",
        }
    }
}

impl std::str::FromStr for ModelAlias {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "production" => Ok(ModelAlias::Production),
            "staging" => Ok(ModelAlias::Staging),
            other => Err(format!("unknown alias `{other}` (production or staging)")),
        }
    }
}

impl OutputSpec {
    /// The name versions of this output are published under.
    pub fn artifact_name(&self, dag_id: &str, task_id: &str) -> String {
        match &self.publish_as {
            Some(name) => name.clone(),
            None => format!("{dag_id}.{task_id}.{}", self.name),
        }
    }
}

/// The kinds of artifact kiln keeps versions of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// Tabular data.
    Dataset,
    /// A trained model.
    Model,
    /// Anything else: metrics, charts, reports.
    File,
}

impl ArtifactKind {
    /// The name used in DAG files and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Dataset => "dataset",
            ArtifactKind::Model => "model",
            ArtifactKind::File => "file",
        }
    }
}

impl std::str::FromStr for ArtifactKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "dataset" => Ok(ArtifactKind::Dataset),
            "model" => Ok(ArtifactKind::Model),
            "file" => Ok(ArtifactKind::File),
            other => Err(format!(
                "unknown artifact kind `{other}` (dataset, model or file)"
            )),
        }
    }
}

/// A typed DAG parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// The JSON type values must have.
    #[serde(rename = "type")]
    pub param_type: ParamType,
    /// The value used when a trigger gives none; a param without one is required.
    pub default: Option<serde_json::Value>,
    /// What the param means, shown on the trigger form.
    pub description: String,
    /// If not empty, the only values allowed.
    pub choices: Vec<serde_json::Value>,
}

impl ParamSpec {
    /// Checks one value against the param's type and choices.
    pub fn check(&self, value: &serde_json::Value) -> Result<(), String> {
        if !self.param_type.matches(value) {
            return Err(format!(
                "expected {}, got {}",
                self.param_type.as_str(),
                json_type_name(value)
            ));
        }
        if !self.choices.is_empty() && !self.choices.contains(value) {
            let choices: Vec<String> = self
                .choices
                .iter()
                .map(|choice| choice.to_string())
                .collect();
            return Err(format!("{value} is not one of {}", choices.join(", ")));
        }
        Ok(())
    }
}

/// The types a DAG param may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list.
    Array,
    /// A table / JSON object.
    Object,
}

impl ParamType {
    /// The name used in DAG files.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }

    /// Whether a JSON value has this type.
    pub fn matches(self, value: &serde_json::Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
            ParamType::Object => value.is_object(),
        }
    }
}

fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(number) if number.is_f64() => "a float",
        serde_json::Value::Number(_) => "an integer",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
