//! Durable state: every DAG version, run, task instance, attempt and log chunk, behind one
//! [`Store`] trait with a PostgreSQL and a SQLite implementation.
//!
//! All SQL of kiln lives in this module, one file per table or aggregate (`runs`,
//! `task_instances`, `claims`, `completions`, `artifacts` …), each query written once for both
//! backends over `db`'s statement types; only claiming (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), the per-DAG and per-run locks and lists bound as arrays differ, side by side in
//! the same file. `sql_store` routes the trait's methods to those files. Every state change is
//! one transaction that checks the previous state, so a late or duplicated message can never
//! move a task backwards or complete it twice.

mod admin;
mod artifacts;
mod attempts;
mod catalogue;
mod claims;
mod completions;
mod dags;
mod db;
mod leaders;
mod lineage;
mod logs;
mod maintenance;
mod models;
mod outbox;
mod outputs;
mod plan;
mod postgres;
mod runs;
mod settle;
mod sql_store;
mod sqlite;
mod task_instances;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use admin::{
    AdminError, postgres_database_create, postgres_database_drop, postgres_database_url,
    postgres_server_ping,
};
pub use artifacts::{
    ArtifactRecord, ArtifactVersionRecord, CacheHit, CacheRecord, ColumnSchema, DatasetStats,
    PublishParams,
};
pub use attempts::AttemptRecord;
pub use catalogue::{SchemaDescription, TableDescription};
pub use claims::{ClaimParams, ClaimedTask, ResolvedInput};
pub use completions::{AttemptResult, Completion, CompletionBatch, CompletionOutcome, Rejection};
pub use dags::{DagFileErrorRecord, DagRecord, DagVersionRecord};
pub use lineage::{AttemptArtifact, AttemptRef, LineageDirection, LineageEdge, LineageGraph};
pub use logs::{LogChunk, LogUpload};
pub use maintenance::MaintenanceReport;
pub use models::{AliasEvent, ModelRecord};
pub use outbox::{
    OutboxAliasSet, OutboxArtifact, OutboxAttempt, OutboxEntry, OutboxEvent, OutboxEventKind,
    OutboxModelVersion, OutboxRun, OutboxRunEnd, OutboxTracking,
};
pub use outputs::{OutputContent, ProducedOutput};
pub use plan::DagPlan;
pub use postgres::postgres_pool_options;
pub use runs::{RunCreateParams, RunFilter, RunRecord, TriggerKind};
pub use sql_store::SqlStore;
pub use task_instances::TaskInstanceRecord;
pub use task_instances::task_instances_named;

use crate::dag::{ArtifactKind, LoadedDag};
use crate::state::TaskState;

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
    /// The task running the call (which names it) panicked before it answered: whether its
    /// transaction committed is unknown. Repeating the call is safe, since a report already
    /// applied is refused as stale and a trigger already made finds its run taken.
    #[error("{0} ended without an answer; repeating the call is safe")]
    Interrupted(&'static str),
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
    /// tasks waits on. One call of [`Store::task_instance_complete_batches`].
    async fn task_instance_complete_and_claim(
        &self,
        completions: &[Completion],
        logs: &[LogUpload],
        claim: Option<&ClaimParams>,
        now: Micros,
    ) -> Result<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>), StoreError> {
        let batch = CompletionBatch {
            completions,
            logs,
            claim,
        };
        let mut replies = self
            .task_instance_complete_batches(std::slice::from_ref(&batch), now)
            .await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Applies several workers' completion calls in one transaction (one commit, so one wait for
    /// the disk, for all of them): their log chunks, their reports, then each one's claim, in
    /// order. Answers each call's outcomes and claimed tasks, in order.
    ///
    /// The one way a report enters the store: the other `task_instance_complete*` methods are
    /// this with one call. Reports, claim-time failures, lost and timed-out attempts all end
    /// in the same compare-and-set on (running, fence) inside it.
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

    /// Switches the outbox on (with what it follows) or off for this store (off by default).
    /// While on, the starts and ends of runs of DAGs with a tracked task, the ended attempts of
    /// tracked tasks, the model versions their publishers write and alias moves append events
    /// in the same transaction as the change; while off, nothing is written. The mirror that
    /// reads the outbox decides what it follows.
    fn outbox_set_tracking(&self, tracking: Option<OutboxTracking>);

    /// What the outbox follows; `None` while it is off.
    fn outbox_tracking(&self) -> Option<OutboxTracking>;

    /// Appends events to the outbox, due at once (whatever the switch says: the caller
    /// asked for them).
    async fn outbox_append(&self, calls: &[OutboxEvent], now: Micros) -> Result<(), StoreError>;

    /// The events to send now: the oldest unparked event of each stream, if it is due, oldest
    /// first, at most `limit`. An event is never handed out while an older one of its stream
    /// waits, so a run's events reach the mirror in the order they happened.
    async fn outbox_due(&self, now: Micros, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Every event in the outbox, parked ones included, oldest first, at most `limit`.
    async fn outbox_list(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes a sent event; false if it was not there.
    async fn outbox_done(&self, id: i64) -> Result<bool, StoreError>;

    /// Records a failed send: counts it and keeps the error; the event waits until `retry_at`,
    /// or is parked when that is `None`. False if the event was not there.
    async fn outbox_fail(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Micros>,
    ) -> Result<bool, StoreError>;

    /// Puts every parked event back in line, due at `now` with its failures forgotten (after
    /// an operator fixed what the mirror refused). Answers how many.
    async fn outbox_unpark(&self, now: Micros) -> Result<usize, StoreError>;

    /// The mirror's id recorded for a kiln entity.
    async fn mirror_id_get(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError>;

    /// Records the mirror's id of a kiln entity; the first one recorded wins, and is answered.
    async fn mirror_id_record(
        &self,
        kind: &str,
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
        Ok(Arc::new(SqlStore::connect_postgres(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqlStore::connect_sqlite(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

fn parse_state<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

fn parse_json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("stored JSON: {error}")))
}
