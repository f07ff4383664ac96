//! Durable state: every DAG version, run, task instance, attempt and log chunk, behind one
//! [`Store`] trait with a PostgreSQL and a SQLite implementation.
//!
//! All SQL lives in this module. Queries the two backends share are written once (in `shared.rs`,
//! expanded for each backend); only claiming (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and the
//! per-DAG lock that keeps `max_active_runs` exact across schedulers differ. Every state change is
//! one transaction that checks the previous state, so a late or duplicated message can never move
//! a task backwards or complete it twice.

// `shared` comes first: its `shared_store!` macro is expanded by the backend modules.
#[macro_use]
mod shared;
mod artifact_records;
mod plan;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use artifact_records::{
    AliasEvent, ArtifactRecord, ArtifactVersionRecord, AttemptArtifact, AttemptRef, CacheHit,
    CacheRecord, ColumnSchema, DatasetStats, LineageDirection, LineageEdge, LineageGraph,
    ModelRecord, OutputContent, ProducedOutput, PublishParams, ResolvedInput,
};
pub use plan::DagPlan;
pub use postgres::PostgresStore;
pub use shared::task_instances_named;
pub use sqlite::SqliteStore;

use crate::dag::{ArtifactKind, LoadedDag, OutputSpec};
use crate::state::{RunState, TaskState};

/// Microseconds since the Unix epoch, UTC: how every time is stored.
pub type Micros = i64;

/// The current time in [`Micros`].
pub fn now_micros() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// Converts a duration to [`Micros`], saturating.
pub fn micros(duration: Duration) -> Micros {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, for production and several schedulers.
    Postgres,
    /// SQLite, the embedded default.
    Sqlite,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer kiln.
    #[error(
        "the database schema is newer than this kiln understands (it has migration {found}, this kiln knows up to {known}); upgrade kiln before starting it on this database"
    )]
    SchemaTooNew {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this build has.
        known: i64,
    },
    /// The URL names no backend kiln supports.
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    /// Something the caller named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A stored definition no longer deserializes.
    #[error("stored definition of DAG version {version_id} is unreadable: {source}")]
    CorruptDefinition {
        /// The DAG version.
        version_id: i64,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored value is not one the schema allows.
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
}

/// A DAG as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    /// The DAG id.
    pub id: String,
    /// The id of the active DAG version.
    pub current_version_id: i64,
    /// The active version's number (1, 2, …).
    pub current_version: i64,
    /// Paused DAGs get no scheduled runs, and their queued runs wait.
    pub paused: bool,
    /// SHA-256 of the active version's file.
    pub source_hash: String,
    /// Where the file was read from.
    pub file_path: String,
    /// The logical date of the newest scheduled run.
    pub last_scheduled_at: Option<Micros>,
    /// When the DAG was last changed.
    pub updated_at: Micros,
}

/// A DAG file whose newest content did not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagFileErrorRecord {
    /// The file.
    pub file_path: String,
    /// The DAG it declares, when that much could be read.
    pub dag_id: Option<String>,
    /// Every problem, one per line.
    pub errors: String,
    /// When it was recorded.
    pub updated_at: Micros,
}

/// One stored version of a DAG file, as the console lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagVersionRecord {
    /// The version's id (what runs refer to).
    pub id: i64,
    /// Its number within the DAG (1, 2, …).
    pub version: i64,
    /// SHA-256 of the file it was loaded from.
    pub source_hash: String,
    /// When it was loaded.
    pub created_at: Micros,
}

/// How a run came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Created by the scheduler from the DAG's schedule.
    Schedule,
    /// Triggered by a person (CLI or console).
    Manual,
    /// Triggered through the REST API.
    Api,
    /// Created by a backfill over past intervals.
    Backfill,
}

impl TriggerKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
            TriggerKind::Api => "api",
            TriggerKind::Backfill => "backfill",
        }
    }

    fn parse(text: &str) -> Result<TriggerKind, StoreError> {
        match text {
            "schedule" => Ok(TriggerKind::Schedule),
            "manual" => Ok(TriggerKind::Manual),
            "api" => Ok(TriggerKind::Api),
            "backfill" => Ok(TriggerKind::Backfill),
            other => Err(StoreError::Corrupt(format!("trigger kind `{other}`"))),
        }
    }
}

/// What creating a run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCreateParams {
    /// The DAG.
    pub dag_id: String,
    /// The DAG version the run executes; `None` means the DAG's current version.
    pub dag_version_id: Option<i64>,
    /// The run's logical date; unique per DAG.
    pub logical_date: Micros,
    /// The data interval the run covers, for scheduled and backfill runs.
    pub data_interval: Option<(Micros, Micros)>,
    /// How the run came to be.
    pub trigger: TriggerKind,
    /// The resolved params (defaults applied, types checked).
    pub params: serde_json::Value,
    /// The time of creation.
    pub now: Micros,
}

/// A run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub id: i64,
    /// The DAG.
    pub dag_id: String,
    /// The exact DAG version it runs.
    pub dag_version_id: i64,
    /// Its logical date.
    pub logical_date: Micros,
    /// The start of its data interval.
    pub data_interval_start: Option<Micros>,
    /// The end of its data interval.
    pub data_interval_end: Option<Micros>,
    /// How it came to be.
    pub trigger: TriggerKind,
    /// Its params.
    pub params: serde_json::Value,
    /// Its state.
    pub state: RunState,
    /// When it was created.
    pub created_at: Micros,
    /// When it started running.
    pub started_at: Option<Micros>,
    /// When it finished.
    pub ended_at: Option<Micros>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this DAG's runs.
    pub dag_id: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
}

/// A task instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInstanceRecord {
    /// The task instance id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// The task's id in the DAG.
    pub task_id: String,
    /// Its state.
    pub state: TaskState,
    /// Attempts started so far, lost ones included: the latest attempt's number.
    pub try_number: i64,
    /// Attempts allowed: the task's own tries (retries + 1) plus one for each lost attempt.
    pub max_tries: i64,
    /// Attempts lost to the infrastructure (the worker died, its lease expired, or it handed the
    /// attempt back) since the task last started afresh; they use none of its own tries.
    pub lost_attempts: i64,
    /// How many lost attempts are run again; the loss after that fails the task.
    pub max_lost_attempts: i64,
    /// Higher is claimed first.
    pub priority: i64,
    /// The worker queue.
    pub queue: String,
    /// The worker running it.
    pub worker_id: Option<String>,
    /// When the running attempt's lease ends unless renewed.
    pub lease_expires_at: Option<Micros>,
    /// When an up-for-retry task is queued again.
    pub next_retry_at: Option<Micros>,
    /// The fencing token of the current claim.
    pub fence: i64,
    /// When it last became queued.
    pub queued_at: Option<Micros>,
    /// When its latest attempt started.
    pub started_at: Option<Micros>,
    /// When it reached a final state.
    pub ended_at: Option<Micros>,
    /// The latest failure.
    pub error: Option<String>,
    /// The latest success's summary.
    pub summary: Option<serde_json::Value>,
}

impl TaskInstanceRecord {
    /// The task's own tries used and allowed (retries + 1), lost attempts left out: what a
    /// person reads as "tries 1/1", whatever the infrastructure lost meanwhile.
    pub fn own_tries(&self) -> (i64, i64) {
        (
            self.try_number - self.lost_attempts,
            self.max_tries - self.lost_attempts,
        )
    }
}

/// One attempt of a task instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's id in the store.
    pub id: i64,
    /// 1 for the first attempt.
    pub try_number: i64,
    /// The worker that ran it.
    pub worker_id: String,
    /// The fencing token it ran under.
    pub fence: i64,
    /// `running`, `success`, `failed`, `cancelled`, `timed_out` or `lost` (lost to the
    /// infrastructure: its worker died, its lease expired or it was handed back; `error` says
    /// which).
    pub state: String,
    /// When it started.
    pub started_at: Micros,
    /// When it ended.
    pub ended_at: Option<Micros>,
    /// Why it failed.
    pub error: Option<String>,
    /// For a cache hit, the attempt whose outputs it reused.
    pub cache_hit_of: Option<i64>,
}

/// A worker asking for work.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimParams {
    /// The worker's id.
    pub worker_id: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The most tasks it takes now.
    pub limit: u32,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// The time of the claim.
    pub now: Micros,
}

/// A task handed to a worker, with everything needed to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    /// The task instance.
    pub task_instance_id: i64,
    /// The fencing token every heartbeat and completion must carry.
    pub fence: i64,
    /// The run.
    pub run_id: i64,
    /// The DAG.
    pub dag_id: String,
    /// The task's id.
    pub task_id: String,
    /// The attempt number (1 for the first).
    pub try_number: i64,
    /// The plugin kind.
    pub kind: String,
    /// The plugin params.
    pub params: serde_json::Value,
    /// The run's params.
    pub run_params: serde_json::Value,
    /// The run's logical date.
    pub logical_date: Micros,
    /// When the attempt must stop.
    pub timeout_at: Option<Micros>,
    /// The artifacts the task reads, resolved to exact versions when it was claimed.
    pub inputs: Vec<ResolvedInput>,
    /// The artifacts the task must write.
    pub outputs: Vec<OutputSpec>,
    /// Whether an earlier attempt's outputs may be reused (the task sets `cache = true`).
    pub cache: bool,
}

/// A worker's report on an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The task instance.
    pub task_instance_id: i64,
    /// The fencing token of the claim the attempt ran under.
    pub fence: i64,
    /// What happened.
    pub result: AttemptResult,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// It succeeded, with a JSON summary and the outputs it wrote.
    Success {
        /// Shown in the console.
        summary: serde_json::Value,
        /// One entry per declared output.
        outputs: Vec<ProducedOutput>,
        /// For a cacheable task, the cache key (and for a cache hit, what it reused).
        cache: Option<CacheRecord>,
    },
    /// It failed.
    Failure {
        /// Why.
        error: String,
        /// Whether another attempt could help.
        retryable: bool,
    },
}

impl AttemptResult {
    /// A success with this summary and no outputs, as tasks that write no artifacts report.
    pub fn success(summary: serde_json::Value) -> AttemptResult {
        AttemptResult::Success {
            summary,
            outputs: Vec::new(),
            cache: None,
        }
    }
}

/// One worker's completion call, as the server may combine several into one transaction.
#[derive(Debug, Clone, Copy)]
pub struct CompletionBatch<'a> {
    /// The reports.
    pub completions: &'a [Completion],
    /// The attempts' last log chunks.
    pub logs: &'a [LogUpload],
    /// The worker's next tasks to claim in the same transaction.
    pub claim: Option<&'a ClaimParams>,
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionOutcome {
    /// The task instance succeeded.
    Succeeded,
    /// It failed and will be retried at this time.
    WillRetry {
        /// When it is queued again.
        at: Micros,
    },
    /// It failed for good.
    Failed,
}

/// Why a completion or heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No such task instance.
    #[error("task instance {0} does not exist")]
    Unknown(i64),
    /// The task moved on (cancelled, timed out, rescued, or claimed again): the report's fencing
    /// token is stale.
    #[error(
        "task instance {task_instance_id} has moved on (it is {state}, fence {current}); the report for fence {reported} is refused"
    )]
    Stale {
        /// The task instance.
        task_instance_id: i64,
        /// Its state now.
        state: TaskState,
        /// Its current fence.
        current: i64,
        /// The fence the report carried.
        reported: i64,
    },
}

/// What periodic maintenance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Up-for-retry tasks queued again.
    pub retried: usize,
    /// Running tasks whose lease expired (their worker is presumed dead): queued again, or
    /// failed when they had lost attempts to spare no more.
    pub rescued: usize,
    /// Running tasks past their timeout.
    pub timed_out: usize,
}

/// A log chunk to store, numbered so that a resent chunk is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogUpload {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt.
    pub try_number: i64,
    /// The chunk's position in the attempt's log.
    pub seq: i64,
    /// The text.
    pub chunk: String,
}

/// A piece of a task attempt's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Its position in the attempt's log (0, 1, …).
    pub seq: i64,
    /// The text.
    pub chunk: String,
    /// When it was stored.
    pub created_at: Micros,
}

/// The plugin kinds whose attempts the MLflow mirror records: their summaries have a documented
/// shape (`train`: algorithm and training info; `evaluate`: candidates and their metrics;
/// `deploy`: the model it registers) that `crate::mlflow` maps to params and metrics. The
/// engine reads only these names, never the plugins themselves.
pub const MLFLOW_TRACKED_KINDS: [&str; 3] = ["train", "evaluate", "deploy"];

/// What an MLflow outbox event asks the sender to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlflowEventKind {
    /// A kiln run started: its MLflow run.
    RunStart,
    /// An attempt of a tracked task ended: its nested run, params and metrics.
    TaskAttempt,
    /// A kiln run ended: its MLflow run's status.
    RunEnd,
    /// A deploy wrote a model version: the registered model and its version.
    ModelVersion,
    /// A model alias moved (deploy, promote, rollback): the MLflow alias.
    AliasSet,
}

impl MlflowEventKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MlflowEventKind::RunStart => "run_start",
            MlflowEventKind::TaskAttempt => "task_attempt",
            MlflowEventKind::RunEnd => "run_end",
            MlflowEventKind::ModelVersion => "model_version",
            MlflowEventKind::AliasSet => "alias_set",
        }
    }
}

impl std::str::FromStr for MlflowEventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<MlflowEventKind, String> {
        match text {
            "run_start" => Ok(MlflowEventKind::RunStart),
            "task_attempt" => Ok(MlflowEventKind::TaskAttempt),
            "run_end" => Ok(MlflowEventKind::RunEnd),
            "model_version" => Ok(MlflowEventKind::ModelVersion),
            "alias_set" => Ok(MlflowEventKind::AliasSet),
            other => Err(format!("MLflow event kind `{other}`")),
        }
    }
}

/// A kiln run as the MLflow mirror describes it. Every event of a run carries it, so whichever
/// reaches MLflow first can create the MLflow run (a run that started before MLflow tracking was
/// switched on has no start event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowRun {
    /// The DAG.
    pub dag_id: String,
    /// The kiln run.
    pub run_id: i64,
    /// When the run was created: with the run id, it names the run across databases.
    pub created_at: Micros,
    /// Its logical date.
    pub logical_date: Micros,
    /// How it came to be (`schedule`, `manual`, …).
    pub trigger: String,
    /// Its resolved params.
    pub params: serde_json::Value,
    /// The DAG file it was loaded from (for the git commit).
    pub dag_file: String,
    /// The DAG version's number.
    pub dag_version: i64,
    /// SHA-256 of the DAG version's file.
    pub dag_source_sha256: String,
    /// When it started running.
    pub started_at: Option<Micros>,
}

/// An artifact version an attempt read or wrote, as the MLflow mirror links it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlflowArtifact {
    /// The input or output name in the task.
    pub slot: String,
    /// The artifact name.
    pub name: String,
    /// The version.
    pub version: i64,
    /// SHA-256 of its bytes, as lowercase hex.
    pub sha256: String,
}

/// An ended attempt of a tracked task (see [`MLFLOW_TRACKED_KINDS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowAttempt {
    /// The run it belongs to.
    pub run: MlflowRun,
    /// The task's id.
    pub task_id: String,
    /// The plugin kind.
    pub kind: String,
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt number.
    pub try_number: i64,
    /// The worker that ran it.
    pub worker_id: String,
    /// How the attempt ended: `success`, `failed`, `timed_out` or `lost`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The task's params from the DAG file.
    pub task_params: serde_json::Value,
    /// The plugin's summary, for a success.
    pub summary: Option<serde_json::Value>,
    /// When the attempt started.
    pub started_at: Micros,
    /// When it ended.
    pub ended_at: Micros,
    /// The versions it read.
    pub inputs: Vec<MlflowArtifact>,
    /// The versions it wrote.
    pub outputs: Vec<MlflowArtifact>,
}

/// A kiln run that reached a final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowRunEnd {
    /// The run.
    pub run: MlflowRun,
    /// `success`, `failed` or `cancelled`.
    pub state: String,
    /// When it ended.
    pub ended_at: Micros,
}

/// A model version a deploy wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowModelVersion {
    /// The model (artifact) name.
    pub name: String,
    /// kiln's version number.
    pub version: i64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// What the deploy said about it (metrics, source model, training data).
    pub metadata: Option<serde_json::Value>,
    /// The run that deployed it.
    pub run: MlflowRun,
    /// The deploying task.
    pub task_id: String,
    /// The deploying attempt.
    pub try_number: i64,
}

/// A model alias that moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlflowAliasSet {
    /// The model.
    pub name: String,
    /// `production` or `staging`.
    pub alias: String,
    /// The version it points at now.
    pub version: i64,
    /// The version it pointed at before.
    pub previous: Option<i64>,
    /// Why it moved.
    pub reason: String,
}

/// One call the MLflow mirror owes MLflow.
#[derive(Debug, Clone, PartialEq)]
pub enum MlflowCall {
    /// See [`MlflowEventKind::RunStart`].
    RunStart(MlflowRun),
    /// See [`MlflowEventKind::TaskAttempt`].
    TaskAttempt(Box<MlflowAttempt>),
    /// See [`MlflowEventKind::RunEnd`].
    RunEnd(MlflowRunEnd),
    /// See [`MlflowEventKind::ModelVersion`].
    ModelVersion(Box<MlflowModelVersion>),
    /// See [`MlflowEventKind::AliasSet`].
    AliasSet(MlflowAliasSet),
}

impl MlflowCall {
    /// Its kind.
    pub fn kind(&self) -> MlflowEventKind {
        match self {
            MlflowCall::RunStart(_) => MlflowEventKind::RunStart,
            MlflowCall::TaskAttempt(_) => MlflowEventKind::TaskAttempt,
            MlflowCall::RunEnd(_) => MlflowEventKind::RunEnd,
            MlflowCall::ModelVersion(_) => MlflowEventKind::ModelVersion,
            MlflowCall::AliasSet(_) => MlflowEventKind::AliasSet,
        }
    }

    /// The stream it is ordered in: a kiln run's events (`run:ID`) are sent one after another,
    /// and so are a model's (`model:NAME`).
    pub fn stream(&self) -> String {
        match self {
            MlflowCall::RunStart(run) => format!("run:{}", run.run_id),
            MlflowCall::TaskAttempt(attempt) => format!("run:{}", attempt.run.run_id),
            MlflowCall::RunEnd(end) => format!("run:{}", end.run.run_id),
            MlflowCall::ModelVersion(version) => format!("model:{}", version.name),
            MlflowCall::AliasSet(alias) => format!("model:{}", alias.name),
        }
    }

    /// The payload as stored.
    pub fn payload(&self) -> Result<String, serde_json::Error> {
        match self {
            MlflowCall::RunStart(run) => serde_json::to_string(run),
            MlflowCall::TaskAttempt(attempt) => serde_json::to_string(attempt),
            MlflowCall::RunEnd(end) => serde_json::to_string(end),
            MlflowCall::ModelVersion(version) => serde_json::to_string(version),
            MlflowCall::AliasSet(alias) => serde_json::to_string(alias),
        }
    }

    /// Reads a stored payload back.
    pub fn parse(kind: MlflowEventKind, payload: &str) -> Result<MlflowCall, serde_json::Error> {
        Ok(match kind {
            MlflowEventKind::RunStart => MlflowCall::RunStart(serde_json::from_str(payload)?),
            MlflowEventKind::TaskAttempt => MlflowCall::TaskAttempt(serde_json::from_str(payload)?),
            MlflowEventKind::RunEnd => MlflowCall::RunEnd(serde_json::from_str(payload)?),
            MlflowEventKind::ModelVersion => {
                MlflowCall::ModelVersion(serde_json::from_str(payload)?)
            }
            MlflowEventKind::AliasSet => MlflowCall::AliasSet(serde_json::from_str(payload)?),
        })
    }

    /// The kiln run it concerns, if any.
    pub fn run_id(&self) -> Option<i64> {
        match self {
            MlflowCall::RunStart(run) => Some(run.run_id),
            MlflowCall::TaskAttempt(attempt) => Some(attempt.run.run_id),
            MlflowCall::RunEnd(end) => Some(end.run.run_id),
            MlflowCall::ModelVersion(version) => Some(version.run.run_id),
            MlflowCall::AliasSet(_) => None,
        }
    }

    /// The attempt it concerns (task instance, try), if any.
    pub fn attempt(&self) -> Option<(i64, i64)> {
        match self {
            MlflowCall::TaskAttempt(attempt) => {
                Some((attempt.task_instance_id, attempt.try_number))
            }
            _ => None,
        }
    }

    /// The model version it concerns (name, kiln version), if any.
    pub fn model_version(&self) -> Option<(&str, i64)> {
        match self {
            MlflowCall::ModelVersion(version) => Some((&version.name, version.version)),
            MlflowCall::AliasSet(alias) => Some((&alias.name, alias.version)),
            _ => None,
        }
    }
}

/// An event in the MLflow outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowOutboxEvent {
    /// Its id: events are sent in id order within their stream.
    pub id: i64,
    /// The stream it is ordered in (see [`MlflowCall::stream`]).
    pub stream: String,
    /// What to send.
    pub call: MlflowCall,
    /// Failed sends so far.
    pub attempts: i64,
    /// Not sent before this time.
    pub next_attempt_at: Micros,
    /// Why the last send failed.
    pub last_error: Option<String>,
    /// Given up on: kept until an operator retries it.
    pub parked: bool,
    /// When it was written.
    pub created_at: Micros,
}

/// What an `mlflow_ids` row maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlflowIdKind {
    /// An experiment, by name.
    Experiment,
    /// A kiln run (by run id) to its MLflow run.
    Run,
    /// An attempt (`TASK_INSTANCE:TRY`) to its nested MLflow run.
    Attempt,
    /// A model version (`NAME@VERSION`) to MLflow's version number.
    ModelVersion,
}

impl MlflowIdKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MlflowIdKind::Experiment => "experiment",
            MlflowIdKind::Run => "run",
            MlflowIdKind::Attempt => "attempt",
            MlflowIdKind::ModelVersion => "model_version",
        }
    }
}

/// Durable state, on PostgreSQL or SQLite. Every method is one transaction.
///
/// ```no_run
/// # async fn demo() -> Result<(), kiln_engine::store::StoreError> {
/// let store = kiln_engine::store::connect("sqlite://.kiln/kiln.db").await?;
/// store.migrate().await?;
/// for dag in store.dag_list().await? {
///     println!("{} (version {})", dag.id, dag.current_version);
/// }
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Applies pending migrations; refuses a schema newer than this build.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Records a loaded DAG: creates it, or adds a version when its file changed, and clears any
    /// load error recorded for its file.
    async fn dag_sync(&self, loaded: &LoadedDag, now: Micros) -> Result<DagRecord, StoreError>;

    /// Records that a DAG file's newest content did not load; its last good version stays active.
    async fn dag_file_error_set(
        &self,
        file_path: &str,
        dag_id: Option<&str>,
        errors: &str,
        now: Micros,
    ) -> Result<(), StoreError>;

    /// Every recorded DAG file error.
    async fn dag_file_error_list(&self) -> Result<Vec<DagFileErrorRecord>, StoreError>;

    /// Every DAG, by id.
    async fn dag_list(&self) -> Result<Vec<DagRecord>, StoreError>;

    /// One DAG.
    async fn dag_get(&self, dag_id: &str) -> Result<Option<DagRecord>, StoreError>;

    /// Pauses or unpauses a DAG.
    async fn dag_set_paused(
        &self,
        dag_id: &str,
        paused: bool,
        now: Micros,
    ) -> Result<(), StoreError>;

    /// A DAG version's definition, prepared for scheduling (cached; versions never change).
    async fn dag_version_get(&self, version_id: i64) -> Result<Arc<DagPlan>, StoreError>;

    /// Moves a DAG's newest scheduled logical date forward (never backwards).
    async fn dag_set_last_scheduled(
        &self,
        dag_id: &str,
        logical_date: Micros,
    ) -> Result<(), StoreError>;

    /// Creates a queued run; `None` if the DAG already has a run at that logical date.
    async fn run_create(&self, params: &RunCreateParams) -> Result<Option<RunRecord>, StoreError>;

    /// Creates a run and, in the same transaction, starts queued runs as
    /// [`Store::run_start_queued`] does (this one included, if its DAG is under
    /// `max_active_runs`) and claims tasks for the workers waiting for work (`claims`, answered
    /// in order): one commit between a trigger and its first running task. Answers the run as it
    /// is after that, or `None` (and claims nothing) if the DAG already has a run at that
    /// logical date.
    async fn run_trigger(
        &self,
        params: &RunCreateParams,
        claims: &[ClaimParams],
    ) -> Result<Option<(RunRecord, Vec<Vec<ClaimedTask>>)>, StoreError>;

    /// One run.
    async fn run_get(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError>;

    /// Runs, newest first.
    async fn run_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// Starts queued runs while their DAG is unpaused and under `max_active_runs`: creates their
    /// task instances and queues the tasks with no upstream. Returns the runs started.
    async fn run_start_queued(&self, now: Micros) -> Result<Vec<i64>, StoreError>;

    /// Cancels a queued or running run and all its unfinished tasks; false if it was already over.
    async fn run_cancel(&self, run_id: i64, now: Micros) -> Result<bool, StoreError>;

    /// A run's task instances, in the DAG's task order.
    async fn task_instance_list(&self, run_id: i64) -> Result<Vec<TaskInstanceRecord>, StoreError>;

    /// A task instance's attempts, oldest first.
    async fn attempt_list(&self, task_instance_id: i64) -> Result<Vec<AttemptRecord>, StoreError>;

    /// Claims up to `limit` queued tasks for a worker, highest priority first.
    async fn task_instance_claim(
        &self,
        params: &ClaimParams,
    ) -> Result<Vec<ClaimedTask>, StoreError>;

    /// Applies workers' reports, in one transaction; each is accepted or refused on its own.
    async fn task_instance_complete(
        &self,
        completions: &[Completion],
        now: Micros,
    ) -> Result<Vec<Result<CompletionOutcome, Rejection>>, StoreError> {
        self.task_instance_complete_with_logs(completions, &[], now)
            .await
    }

    /// Stores the attempts' last log chunks and applies their reports, in one transaction, so a
    /// finished task's log is whole the moment its completion is visible. Chunks for an attempt
    /// that is not running (a stale report's, or naming no attempt) are dropped.
    async fn task_instance_complete_with_logs(
        &self,
        completions: &[Completion],
        logs: &[LogUpload],
        now: Micros,
    ) -> Result<Vec<Result<CompletionOutcome, Rejection>>, StoreError> {
        Ok(self
            .task_instance_complete_and_claim(completions, logs, None, now)
            .await?
            .0)
    }

    /// Stores log chunks, applies reports and, in the same transaction, claims the worker's next
    /// tasks: one commit (and one round trip) per step instead of two, which is what a chain of
    /// tasks waits on.
    async fn task_instance_complete_and_claim(
        &self,
        completions: &[Completion],
        logs: &[LogUpload],
        claim: Option<&ClaimParams>,
        now: Micros,
    ) -> Result<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>), StoreError>;

    /// Applies several workers' completion calls in one transaction (one commit, so one wait for
    /// the disk, for all of them): their log chunks, their reports, then each one's claim, in
    /// order. Answers each call's outcomes and claimed tasks, in order.
    async fn task_instance_complete_batches(
        &self,
        batches: &[CompletionBatch<'_>],
        now: Micros,
    ) -> Result<Vec<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>)>, StoreError>;

    /// Extends the leases of a worker's running tasks; returns those no longer the worker's
    /// (cancelled, timed out or rescued), which it must stop. A task instance that does not
    /// exist is [`StoreError::NotFound`], and then no lease is extended.
    async fn task_instance_heartbeat(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
        lease_expires_at: Micros,
    ) -> Result<Vec<i64>, StoreError>;

    /// Hands running tasks back (a worker shutting down): each attempt is lost to the
    /// infrastructure, so the task is queued again without using one of its retries, or fails
    /// once it has lost more than `max_lost_attempts`. Returns how many were handed back; a
    /// lease that moved on is skipped, and a task instance that does not exist is
    /// [`StoreError::NotFound`] (then nothing is handed back).
    async fn task_instance_release(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
        now: Micros,
    ) -> Result<usize, StoreError>;

    /// Takes back claims that never reached their worker (its long poll went away before the
    /// answer, or it was handed more than it asked for): each task is queued again as if it had
    /// not been claimed, its try and its attempt row undone. Not a loss: the attempt never
    /// started. Returns how many were taken back.
    async fn task_instance_unclaim(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
    ) -> Result<usize, StoreError>;

    /// Ends every attempt a worker is running as lost, as if its lease had expired: for a
    /// worker known to be dead, without waiting for the lease. Each task is queued again
    /// without using one of its retries, or fails once it has lost more than
    /// `max_lost_attempts`. Returns how many were rescued.
    async fn task_instance_rescue_worker(
        &self,
        worker_id: &str,
        now: Micros,
    ) -> Result<usize, StoreError>;

    /// Queues retries that are due, fails or retries tasks past their timeout, and rescues tasks
    /// whose lease expired (their attempts lost, as [`Store::task_instance_rescue_worker`] ends them).
    async fn task_instance_maintain(&self, now: Micros) -> Result<MaintenanceReport, StoreError>;

    /// The earliest time at which [`Store::task_instance_maintain`] will have something to do.
    async fn task_instance_next_due(&self) -> Result<Option<Micros>, StoreError>;

    /// Clears a task instance (and optionally everything downstream of it) so it runs again.
    /// Returns the task ids cleared.
    async fn task_instance_clear(
        &self,
        run_id: i64,
        task_id: &str,
        downstream: bool,
        now: Micros,
    ) -> Result<Vec<String>, StoreError>;

    /// Marks a task instance success or failed by hand; downstream tasks react as if it had run.
    async fn task_instance_mark(
        &self,
        run_id: i64,
        task_id: &str,
        state: TaskState,
        now: Micros,
    ) -> Result<(), StoreError>;

    /// Stores log chunks in one transaction; storing the same `(task instance, try, seq)` again is
    /// a no-op. Only a running attempt takes chunks, and a request naming any other stores
    /// nothing: [`StoreError::NotFound`] for a task instance or attempt that does not exist,
    /// [`StoreError::Conflict`] for an attempt that has ended.
    async fn log_append(&self, chunks: &[LogUpload], now: Micros) -> Result<(), StoreError>;

    /// The ids among `ids` that name no task instance, ascending, each once.
    async fn task_instance_list_missing(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError>;

    /// Log chunks of an attempt after `after_seq` (use -1 for all), in order.
    async fn log_read(
        &self,
        task_instance_id: i64,
        try_number: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, StoreError>;

    /// The task instances of several runs, in one query, ordered by run and then by id (the
    /// order they were created in). Unknown run ids are ignored.
    async fn task_instance_list_for_runs(
        &self,
        run_ids: &[i64],
    ) -> Result<Vec<TaskInstanceRecord>, StoreError>;

    /// The newest `per_dag` runs of every DAG, by DAG id and then newest first.
    async fn run_list_latest_per_dag(&self, per_dag: u32) -> Result<Vec<RunRecord>, StoreError>;

    /// Every running task instance with its DAG id, by task instance id.
    async fn task_instance_list_running(
        &self,
    ) -> Result<Vec<(String, TaskInstanceRecord)>, StoreError>;

    /// One task instance of a run.
    async fn task_instance_get(
        &self,
        run_id: i64,
        task_id: &str,
    ) -> Result<Option<TaskInstanceRecord>, StoreError>;

    /// A DAG's stored versions, newest first; empty for an unknown DAG.
    async fn dag_version_list(&self, dag_id: &str) -> Result<Vec<DagVersionRecord>, StoreError>;

    /// The file text a DAG version was loaded from.
    async fn dag_version_get_source(&self, version_id: i64) -> Result<Option<String>, StoreError>;

    /// Artifact names, by name; only those of `kind` when given.
    async fn artifact_list(
        &self,
        kind: Option<ArtifactKind>,
    ) -> Result<Vec<ArtifactRecord>, StoreError>;

    /// One artifact name.
    async fn artifact_get(&self, name: &str) -> Result<Option<ArtifactRecord>, StoreError>;

    /// A name's versions, newest first, at most `limit`.
    async fn artifact_version_list(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ArtifactVersionRecord>, StoreError>;

    /// One version of a name; `None` as the version means the newest.
    async fn artifact_version_get(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError>;

    /// A version by its store id.
    async fn artifact_version_get_by_id(
        &self,
        id: i64,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError>;

    /// Publishes a blob under a name by hand, outside any task. Identical bytes to the newest
    /// version reuse it (the answer's flag says so) instead of adding a version.
    async fn artifact_publish(
        &self,
        publish: &PublishParams,
        now: Micros,
    ) -> Result<(ArtifactVersionRecord, bool), StoreError>;

    /// The lineage of a version: everything it was made from (upstream, down to the raw
    /// inputs), or everything made from it (downstream).
    async fn lineage_get_by_version(
        &self,
        version_id: i64,
        direction: LineageDirection,
    ) -> Result<LineageGraph, StoreError>;

    /// Everything the attempts of one run read and wrote.
    async fn lineage_get_by_run(&self, run_id: i64) -> Result<LineageGraph, StoreError>;

    /// What a task instance's attempts read and wrote, oldest attempt first.
    async fn attempt_artifact_list(
        &self,
        task_instance_id: i64,
    ) -> Result<Vec<AttemptArtifact>, StoreError>;

    /// The newest successful attempt with this cache key whose outputs all still exist.
    async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, StoreError>;

    /// Every blob digest some version refers to, as lowercase hex.
    async fn artifact_blob_list_in_use(&self) -> Result<Vec<String>, StoreError>;

    /// The models of the registry (artifacts of kind `model`), by name, with their aliases.
    async fn model_list(&self) -> Result<Vec<ModelRecord>, StoreError>;

    /// The version an alias of a model points at.
    async fn model_alias_get(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError>;

    /// Points an alias at a version of a model (which must exist); answers the version it
    /// pointed at before.
    async fn model_alias_set(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
        version: i64,
        reason: &str,
        now: Micros,
    ) -> Result<Option<i64>, StoreError>;

    /// Moves an alias back to the newest older version that held it before (v3 → v2 → v1);
    /// answers `(from, to)`.
    async fn model_alias_rollback(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
        now: Micros,
    ) -> Result<(i64, i64), StoreError>;

    /// The alias moves of a model, oldest first.
    async fn model_alias_event_list(&self, name: &str) -> Result<Vec<AliasEvent>, StoreError>;

    /// Switches the MLflow mirror on or off for this store (off by default). While on, run
    /// starts and ends, attempts of tracked tasks (see [`MLFLOW_TRACKED_KINDS`]) and alias moves
    /// append MLflow events in the same transaction; while off, nothing is written.
    fn mlflow_set_enabled(&self, enabled: bool);

    /// Whether the MLflow mirror is on.
    fn mlflow_enabled(&self) -> bool;

    /// Appends calls to the MLflow outbox, due at once (whatever the switch says: the caller
    /// asked for them).
    async fn mlflow_outbox_append(
        &self,
        calls: &[MlflowCall],
        now: Micros,
    ) -> Result<(), StoreError>;

    /// The events to send now: the oldest unparked event of each stream, if it is due, oldest
    /// first, at most `limit`. An event is never handed out while an older one of its stream
    /// waits, so a run's events reach MLflow in the order they happened.
    async fn mlflow_outbox_due(
        &self,
        now: Micros,
        limit: u32,
    ) -> Result<Vec<MlflowOutboxEvent>, StoreError>;

    /// Every event in the outbox, parked ones included, oldest first, at most `limit`.
    async fn mlflow_outbox_list(&self, limit: u32) -> Result<Vec<MlflowOutboxEvent>, StoreError>;

    /// Removes a sent event; false if it was not there.
    async fn mlflow_outbox_done(&self, id: i64) -> Result<bool, StoreError>;

    /// Records a failed send: counts it and keeps the error; the event waits until `retry_at`,
    /// or is parked when that is `None`. False if the event was not there.
    async fn mlflow_outbox_fail(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Micros>,
    ) -> Result<bool, StoreError>;

    /// Puts every parked event back in line, due at `now` with its failures forgotten (after
    /// an operator fixed what MLflow refused). Answers how many.
    async fn mlflow_outbox_unpark(&self, now: Micros) -> Result<usize, StoreError>;

    /// The MLflow id recorded for a kiln entity.
    async fn mlflow_id_get(
        &self,
        kind: MlflowIdKind,
        key: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Records the MLflow id of a kiln entity; the first one recorded wins, and is answered.
    async fn mlflow_id_record(
        &self,
        kind: MlflowIdKind,
        key: &str,
        mlflow_id: &str,
        now: Micros,
    ) -> Result<String, StoreError>;

    /// Takes or renews the named leadership for `ttl`; true if `holder` is the leader now.
    async fn leader_attempt_elect(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Micros,
    ) -> Result<bool, StoreError>;
}

/// Opens the store a URL names (`postgres://…` or `sqlite://path`), without migrating.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}
