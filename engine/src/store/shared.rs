//! SQL shared by both backends, written once and expanded for each by `shared_store!`.
//!
//! The macro expands to the whole [`Store`](super::Store) implementation for a concrete sqlx
//! database type, so every shared query is type-checked against both drivers without generic
//! bounds. A backend supplies `pool`, `begin_write`, `lock_dag`, `claim_rows`, `MIGRATOR` and a
//! `plans` cache; everything else is here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::DagPlan;
use crate::state::TaskState;

/// Where a log chunk's attempt stands: only a running attempt takes chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogTarget {
    /// No such task instance.
    Unknown,
    /// The task instance exists but has no attempt with that number.
    NoAttempt,
    /// The attempt exists but has ended (it finished, was fenced off, or a later try began).
    Ended,
    /// The attempt is running.
    Open,
}

impl LogTarget {
    /// Classifies a chunk for `try_number` of a task instance that is `current` (its try and
    /// state), or unknown (`None`). Try numbers name attempts, so a try below the current one
    /// is an attempt that ended, whatever its worker believes.
    pub(crate) fn of(current: Option<(i64, TaskState)>, try_number: i64) -> LogTarget {
        match current {
            None => LogTarget::Unknown,
            Some((current, _)) if try_number < 1 || try_number > current => LogTarget::NoAttempt,
            Some((current, TaskState::Running)) if try_number == current => LogTarget::Open,
            Some(_) => LogTarget::Ended,
        }
    }
}

/// Names task instances for a message: "task instance 7", "task instances 7, 8, 9" (at most
/// ten, then how many more).
pub fn task_instances_named(ids: &[i64]) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<String> = ids.iter().take(SHOWN).map(i64::to_string).collect();
    if ids.len() > SHOWN {
        list.push(format!("and {} more", ids.len() - SHOWN));
    }
    match ids {
        [_] => format!("task instance {}", list.join(", ")),
        _ => format!("task instances {}", list.join(", ")),
    }
}

/// Column lists, as macros so they can be spliced into `'static` SQL with `concat!`.
macro_rules! run_columns {
    () => {
        "id, dag_id, dag_version_id, logical_date, data_interval_start, data_interval_end, trigger_kind, params, state, created_at, started_at, ended_at"
    };
}

macro_rules! task_instance_columns {
    () => {
        "id, run_id, task_id, state, try_number, max_tries, lost_attempts, max_lost_attempts, priority, queue, worker_id, lease_expires_at, next_retry_at, fence, queued_at, started_at, ended_at, error, summary"
    };
}

/// A version with its kind and producer: select these `FROM` [`version_from!`].
macro_rules! version_columns {
    () => {
        "av.id, av.name, a.kind, av.version, av.sha256, av.size, av.media_type, av.task_instance_id, av.try_number, \
         av.dataset_schema, av.row_count, av.metadata, av.created_at, pti.run_id AS producer_run_id, pti.task_id AS producer_task_id, \
         pr.dag_id AS producer_dag_id"
    };
}

macro_rules! version_from {
    () => {
        " FROM artifact_versions av JOIN artifacts a ON a.name = av.name \
         LEFT JOIN task_instances pti ON pti.id = av.task_instance_id LEFT JOIN runs pr ON pr.id = pti.run_id "
    };
}

macro_rules! dag_columns {
    () => {
        "d.id, d.current_version_id, v.version, d.paused, d.source_hash, d.file_path, d.last_scheduled_at, d.updated_at"
    };
}

/// Parsed DAG versions by id. Versions are immutable, so entries never go stale.
#[derive(Debug, Default)]
pub(crate) struct PlanCache(Mutex<HashMap<i64, Arc<DagPlan>>>);

impl PlanCache {
    pub(crate) fn get(&self, version_id: i64) -> Option<Arc<DagPlan>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&version_id)
            .cloned()
    }

    pub(crate) fn insert(&self, plan: DagPlan) -> Arc<DagPlan> {
        let plan = Arc::new(plan);
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(plan.version_id, plan.clone());
        plan
    }
}

macro_rules! shared_store {
    ($Store:ty, $Db:ty) => {
        use std::collections::{BTreeMap, HashMap as SharedHashMap};
        use std::sync::Arc as SharedArc;

        use sqlx::Row as _;

        use $crate::dag::Dag;
        use $crate::state::{
            evaluate, retry_delay, run_outcome, Readiness, RunState, TaskState, UpstreamCounts, UpstreamOutcome,
        };
        use $crate::dag::{ArtifactKind, InputRef, OutputSpec};
        use $crate::store::{
            micros, AliasEvent, ArtifactRecord, ModelRecord, ArtifactVersionRecord, AttemptArtifact, AttemptRecord, AttemptRef, AttemptResult, Backend,
            CacheHit, ClaimParams, ClaimedTask, Completion, CompletionBatch, CompletionOutcome, DagFileErrorRecord, DagPlan, DagRecord, DagVersionRecord,
            DatasetStats, LineageDirection, LineageEdge, LineageGraph, LogChunk, LogUpload, MaintenanceReport, PublishParams,
            Micros, OutputContent, ProducedOutput, Rejection, ResolvedInput, RunCreateParams, RunFilter, RunRecord, Store,
            StoreError, TaskInstanceRecord, TriggerKind, MlflowAliasSet, MlflowArtifact, MlflowAttempt, MlflowCall, MlflowEventKind,
            MlflowIdKind, MlflowModelVersion, MlflowOutboxEvent, MlflowRun, MlflowRunEnd, MLFLOW_TRACKED_KINDS,
        };

        use super::shared::{task_instances_named, LogTarget};

        type Conn = <$Db as sqlx::Database>::Connection;
        type DbRow = <$Db as sqlx::Database>::Row;

        fn parse_state<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
            text.parse().map_err(StoreError::Corrupt)
        }

        fn parse_json(text: &str) -> Result<serde_json::Value, StoreError> {
            serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("stored JSON: {error}")))
        }

        fn run_from_row(row: &DbRow) -> Result<RunRecord, StoreError> {
            Ok(RunRecord {
                id: row.try_get("id")?,
                dag_id: row.try_get("dag_id")?,
                dag_version_id: row.try_get("dag_version_id")?,
                logical_date: row.try_get("logical_date")?,
                data_interval_start: row.try_get("data_interval_start")?,
                data_interval_end: row.try_get("data_interval_end")?,
                trigger: TriggerKind::parse(&row.try_get::<String, _>("trigger_kind")?)?,
                params: parse_json(&row.try_get::<String, _>("params")?)?,
                state: parse_state(&row.try_get::<String, _>("state")?)?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
            })
        }

        fn task_instance_from_row(row: &DbRow) -> Result<TaskInstanceRecord, StoreError> {
            Ok(TaskInstanceRecord {
                id: row.try_get("id")?,
                run_id: row.try_get("run_id")?,
                task_id: row.try_get("task_id")?,
                state: parse_state(&row.try_get::<String, _>("state")?)?,
                try_number: row.try_get("try_number")?,
                max_tries: row.try_get("max_tries")?,
                lost_attempts: row.try_get("lost_attempts")?,
                max_lost_attempts: row.try_get("max_lost_attempts")?,
                priority: row.try_get("priority")?,
                queue: row.try_get("queue")?,
                worker_id: row.try_get("worker_id")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                next_retry_at: row.try_get("next_retry_at")?,
                fence: row.try_get("fence")?,
                queued_at: row.try_get("queued_at")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
                error: row.try_get("error")?,
                summary: row.try_get::<Option<String>, _>("summary")?.as_deref().map(parse_json).transpose()?,
            })
        }

        fn dag_from_row(row: &DbRow) -> Result<DagRecord, StoreError> {
            Ok(DagRecord {
                id: row.try_get("id")?,
                current_version_id: row.try_get("current_version_id")?,
                current_version: row.try_get("version")?,
                paused: row.try_get("paused")?,
                source_hash: row.try_get("source_hash")?,
                file_path: row.try_get("file_path")?,
                last_scheduled_at: row.try_get("last_scheduled_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn version_from_row(row: &DbRow) -> Result<ArtifactVersionRecord, StoreError> {
            let sha256: String = row.try_get("sha256")?;
            let size: i64 = row.try_get("size")?;
            let task_instance_id: Option<i64> = row.try_get("task_instance_id")?;
            let producer = match task_instance_id {
                Some(task_instance_id) => Some(AttemptRef {
                    task_instance_id,
                    try_number: row.try_get::<Option<i64>, _>("try_number")?.unwrap_or(0),
                    run_id: row.try_get::<Option<i64>, _>("producer_run_id")?.unwrap_or(0),
                    dag_id: row.try_get::<Option<String>, _>("producer_dag_id")?.unwrap_or_default(),
                    task_id: row.try_get::<Option<String>, _>("producer_task_id")?.unwrap_or_default(),
                }),
                None => None,
            };
            let schema: Option<String> = row.try_get("dataset_schema")?;
            let row_count: Option<i64> = row.try_get("row_count")?;
            let dataset = match (schema, row_count) {
                (Some(schema), Some(rows)) => Some(DatasetStats {
                    columns: serde_json::from_str(&schema)
                        .map_err(|error| StoreError::Corrupt(format!("stored dataset schema: {error}")))?,
                    rows: u64::try_from(rows).unwrap_or(0),
                }),
                _ => None,
            };
            Ok(ArtifactVersionRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                kind: parse_state(&row.try_get::<String, _>("kind")?)?,
                version: row.try_get("version")?,
                blob: $crate::artifacts::BlobRef {
                    sha256: sha256.parse().map_err(|error| StoreError::Corrupt(format!("stored digest: {error}")))?,
                    size: u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("stored size {size}")))?,
                },
                media_type: row.try_get("media_type")?,
                producer,
                dataset,
                metadata: row.try_get::<Option<String>, _>("metadata")?.as_deref().map(parse_json).transpose()?,
                created_at: row.try_get("created_at")?,
            })
        }

        fn artifact_from_row(row: &DbRow) -> Result<ArtifactRecord, StoreError> {
            Ok(ArtifactRecord {
                name: row.try_get("name")?,
                kind: parse_state(&row.try_get::<String, _>("kind")?)?,
                latest_version: row.try_get("latest_version")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn attempt_ref_from_row(row: &DbRow) -> Result<AttemptRef, StoreError> {
            Ok(AttemptRef {
                task_instance_id: row.try_get("task_instance_id")?,
                try_number: row.try_get("try_number")?,
                run_id: row.try_get("run_id")?,
                dag_id: row.try_get("dag_id")?,
                task_id: row.try_get("task_id")?,
            })
        }

        fn mlflow_event_from_row(row: &DbRow) -> Result<MlflowOutboxEvent, StoreError> {
            let kind: MlflowEventKind = parse_state(&row.try_get::<String, _>("kind")?)?;
            let payload: String = row.try_get("payload")?;
            let call = MlflowCall::parse(kind, &payload)
                .map_err(|error| StoreError::Corrupt(format!("payload of MLflow event {}: {error}", row.try_get::<i64, _>("id").unwrap_or(0))))?;
            Ok(MlflowOutboxEvent {
                id: row.try_get("id")?,
                stream: row.try_get("stream")?,
                call,
                attempts: row.try_get("attempts")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                last_error: row.try_get("last_error")?,
                parked: row.try_get("parked")?,
                created_at: row.try_get("created_at")?,
            })
        }

        /// Whether the MLflow mirror follows this DAG's runs: only DAGs with a tracked task get
        /// an experiment, so a DAG of shell commands never shows up in MLflow.
        fn mlflow_tracks(plan: &DagPlan) -> bool {
            crate::mlflow::tracks(&plan.dag)
        }

        /// A claimed attempt's inputs as stored on its attempt row: slot to version id.
        type StoredInputs = BTreeMap<String, i64>;

        /// A task instance as a completion reads it.
        #[derive(Clone)]
        struct CompletionRow {
            run_id: i64,
            task_id: String,
            state: TaskState,
            fence: i64,
            try_number: i64,
            max_tries: i64,
            lost_attempts: i64,
            max_lost_attempts: i64,
            dag_version_id: i64,
        }

        /// A task instance a completion moved to a final state, whose downstream must react.
        struct Finished {
            run_id: i64,
            plan: SharedArc<DagPlan>,
            task_id: String,
            state: TaskState,
        }

        /// A report that may apply, with what it will do.
        struct Prepared<'a> {
            /// Its position among the reports of the batch.
            index: usize,
            completion: &'a Completion,
            row: CompletionRow,
            plan: SharedArc<DagPlan>,
            /// The failure a success with undeclared or missing outputs turns into.
            refused: Option<AttemptResult>,
            verdict: Verdict,
        }

        impl Prepared<'_> {
            /// What the attempt is recorded as: its report, or the failure it was turned into.
            fn result(&self) -> &AttemptResult {
                self.refused.as_ref().unwrap_or(&self.completion.result)
            }
        }

        /// Where a finished attempt leaves its task instance.
        struct Verdict {
            state: TaskState,
            attempt_state: &'static str,
            next_retry_at: Option<Micros>,
            /// The task instance's error.
            error: Option<String>,
            /// The attempt's own error: the same, except for a task that failed after losing
            /// too many attempts, whose error names every loss.
            attempt_error: Option<String>,
            summary: Option<String>,
            outcome: CompletionOutcome,
            /// Whether the attempt was lost to the infrastructure (and is counted as such).
            lost: bool,
        }

        /// How an attempt came to its end, which decides what its failure costs the task.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Ending {
            /// The worker reported it (or the claim failed it): a failure uses one of the task's
            /// tries.
            Reported,
            /// It ran past its timeout: a failure like a reported one, recorded `timed_out`.
            TimedOut,
            /// The infrastructure lost it (its worker died, its lease expired, or it was handed
            /// back): recorded `lost`, and run again without using a try while the task has
            /// lost attempts to spare.
            Lost,
        }

        impl Ending {
            fn failure_state(self) -> &'static str {
                match self {
                    Ending::Reported => "failed",
                    Ending::TimedOut => "timed_out",
                    Ending::Lost => "lost",
                }
            }
        }

        /// At most this many losses are spelt out in the error of a task that lost too many;
        /// the rest are counted.
        const LOSSES_NAMED: usize = 5;

        impl $Store {
            fn mlflow_on(&self) -> bool {
                self.mlflow_enabled.load(std::sync::atomic::Ordering::Relaxed)
            }

            /// Appends one MLflow call to the outbox, in the caller's transaction: the change it
            /// mirrors and the event commit or roll back together.
            async fn mlflow_append_in(&self, conn: &mut Conn, call: &MlflowCall, now: Micros) -> Result<(), StoreError> {
                let payload = call.payload().map_err(|error| StoreError::Corrupt(format!("MLflow event payload: {error}")))?;
                let attempt = call.attempt();
                let model = call.model_version();
                sqlx::query(
                    "INSERT INTO mlflow_outbox (kind, stream, payload, run_id, task_instance_id, try_number, model_name, model_version, \
                     next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                )
                .bind(call.kind().as_str())
                .bind(call.stream())
                .bind(payload)
                .bind(call.run_id())
                .bind(attempt.map(|(task_instance_id, _)| task_instance_id))
                .bind(attempt.map(|(_, try_number)| try_number))
                .bind(model.map(|(name, _)| name.to_owned()))
                .bind(model.map(|(_, version)| version))
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// A run as the MLflow mirror describes it.
            async fn mlflow_run_in(&self, conn: &mut Conn, run_id: i64) -> Result<MlflowRun, StoreError> {
                let row = sqlx::query(
                    "SELECT r.dag_id, r.created_at, r.logical_date, r.trigger_kind, r.params, r.started_at, d.file_path, \
                     v.version, v.source_hash FROM runs r JOIN dags d ON d.id = r.dag_id JOIN dag_versions v ON v.id = r.dag_version_id \
                     WHERE r.id = $1",
                )
                .bind(run_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
                Ok(MlflowRun {
                    dag_id: row.try_get("dag_id")?,
                    run_id,
                    created_at: row.try_get("created_at")?,
                    logical_date: row.try_get("logical_date")?,
                    trigger: row.try_get("trigger_kind")?,
                    params: parse_json(&row.try_get::<String, _>("params")?)?,
                    dag_file: row.try_get("file_path")?,
                    dag_version: row.try_get("version")?,
                    dag_source_sha256: row.try_get("source_hash")?,
                    started_at: row.try_get("started_at")?,
                })
            }

            /// An artifact version as the MLflow mirror links it.
            async fn mlflow_artifact_in(&self, conn: &mut Conn, slot: &str, version_id: i64) -> Result<MlflowArtifact, StoreError> {
                let (name, version, sha256): (String, i64, String) =
                    sqlx::query_as("SELECT name, version, sha256 FROM artifact_versions WHERE id = $1")
                        .bind(version_id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("artifact version {version_id}")))?;
                Ok(MlflowArtifact { slot: slot.to_owned(), name, version, sha256 })
            }

            /// Appends the MLflow event of an ended attempt of a tracked task: what it read
            /// (from its attempt row) and wrote, its worker, summary and outcome.
            #[allow(clippy::too_many_arguments)]
            async fn mlflow_attempt_in(
                &self,
                conn: &mut Conn,
                run_id: i64,
                task: &$crate::dag::Task,
                task_instance_id: i64,
                try_number: i64,
                verdict: &Verdict,
                written: &[(String, i64, bool)],
                now: Micros,
            ) -> Result<(), StoreError> {
                let row = sqlx::query("SELECT worker_id, started_at, inputs FROM task_attempts WHERE task_instance_id = $1 AND try_number = $2")
                    .bind(task_instance_id)
                    .bind(try_number)
                    .fetch_optional(&mut *conn)
                    .await?;
                let (worker_id, started_at, stored_inputs) = match &row {
                    Some(row) => (
                        row.try_get::<String, _>("worker_id")?,
                        row.try_get::<Micros, _>("started_at")?,
                        row.try_get::<Option<String>, _>("inputs")?,
                    ),
                    None => (String::new(), now, None),
                };
                let stored_inputs: StoredInputs = match stored_inputs {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|error| StoreError::Corrupt(format!("stored attempt inputs: {error}")))?,
                    None => StoredInputs::new(),
                };
                let mut inputs = Vec::with_capacity(stored_inputs.len());
                for (slot, version_id) in &stored_inputs {
                    inputs.push(self.mlflow_artifact_in(&mut *conn, slot, *version_id).await?);
                }
                let mut outputs = Vec::with_capacity(written.len());
                for (slot, version_id, _) in written {
                    outputs.push(self.mlflow_artifact_in(&mut *conn, slot, *version_id).await?);
                }
                let attempt = MlflowAttempt {
                    run: self.mlflow_run_in(&mut *conn, run_id).await?,
                    task_id: task.id.clone(),
                    kind: task.kind.clone(),
                    task_instance_id,
                    try_number,
                    worker_id,
                    state: verdict.attempt_state.to_owned(),
                    error: verdict.attempt_error.clone(),
                    task_params: task.params.clone(),
                    summary: verdict.summary.as_deref().map(parse_json).transpose()?,
                    started_at,
                    ended_at: now,
                    inputs,
                    outputs,
                };
                self.mlflow_append_in(&mut *conn, &MlflowCall::TaskAttempt(Box::new(attempt)), now).await
            }

            async fn plan_in(&self, conn: &mut Conn, version_id: i64) -> Result<SharedArc<DagPlan>, StoreError> {
                if let Some(plan) = self.plans.get(version_id) {
                    return Ok(plan);
                }
                let definition: Option<String> = sqlx::query_scalar("SELECT definition FROM dag_versions WHERE id = $1")
                    .bind(version_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let definition = definition.ok_or_else(|| StoreError::NotFound(format!("DAG version {version_id}")))?;
                let dag: Dag = serde_json::from_str(&definition)
                    .map_err(|source| StoreError::CorruptDefinition { version_id, source })?;
                Ok(self.plans.insert(DagPlan::new(version_id, dag)))
            }

            /// Inserts a queued run; `None` if its DAG already has a run at that logical date.
            async fn run_insert_in(&self, conn: &mut Conn, params: &RunCreateParams) -> Result<Option<RunRecord>, StoreError> {
                let version_id = match params.dag_version_id {
                    Some(version_id) => version_id,
                    None => {
                        let current: Option<Option<i64>> = sqlx::query_scalar("SELECT current_version_id FROM dags WHERE id = $1")
                            .bind(&params.dag_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                        current.flatten().ok_or_else(|| StoreError::NotFound(format!("DAG `{}`", params.dag_id)))?
                    }
                };
                let row = sqlx::query(concat!(
                    "INSERT INTO runs (dag_id, dag_version_id, logical_date, data_interval_start, data_interval_end, \
                     trigger_kind, params, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8) \
                     ON CONFLICT (dag_id, logical_date) DO NOTHING RETURNING ",
                    run_columns!()
                ))
                .bind(&params.dag_id)
                .bind(version_id)
                .bind(params.logical_date)
                .bind(params.data_interval.map(|interval| interval.0))
                .bind(params.data_interval.map(|interval| interval.1))
                .bind(params.trigger.as_str())
                .bind(params.params.to_string())
                .bind(params.now)
                .fetch_optional(&mut *conn)
                .await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn run_in(&self, conn: &mut Conn, run_id: i64) -> Result<RunRecord, StoreError> {
                let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"))
                    .bind(run_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
                run_from_row(&row)
            }

            async fn dag_in(&self, conn: &mut Conn, dag_id: &str) -> Result<Option<DagRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    dag_columns!(),
                    " FROM dags d JOIN dag_versions v ON v.id = d.current_version_id WHERE d.id = $1"
                ))
                .bind(dag_id)
                .fetch_optional(&mut *conn)
                .await?;
                row.as_ref().map(dag_from_row).transpose()
            }

            /// Starts queued runs (of one DAG, or of all) within their DAG's `max_active_runs`.
            async fn start_queued_in(&self, conn: &mut Conn, only_dag: Option<&str>, now: Micros) -> Result<Vec<i64>, StoreError> {
                let rows = sqlx::query(
                    "SELECT r.id, r.dag_id, r.dag_version_id FROM runs r JOIN dags d ON d.id = r.dag_id \
                     WHERE r.state = 'queued' AND d.paused = FALSE AND ($1 IS NULL OR r.dag_id = $1) \
                     ORDER BY r.logical_date, r.id LIMIT 1000",
                )
                .bind(only_dag)
                .fetch_all(&mut *conn)
                .await?;
                let mut by_dag: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
                for row in &rows {
                    by_dag.entry(row.try_get("dag_id")?).or_default().push((row.try_get("id")?, row.try_get("dag_version_id")?));
                }
                let mut started = Vec::new();
                for (dag_id, candidates) in by_dag {
                    Self::lock_dag(&mut *conn, &dag_id).await?;
                    let mut running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE dag_id = $1 AND state = 'running'")
                        .bind(&dag_id)
                        .fetch_one(&mut *conn)
                        .await?;
                    for (run_id, version_id) in candidates {
                        let plan = self.plan_in(&mut *conn, version_id).await?;
                        if running >= i64::from(plan.dag.max_active_runs) {
                            break;
                        }
                        if self.start_run_in(&mut *conn, run_id, &plan, now).await? {
                            running += 1;
                            started.push(run_id);
                        }
                    }
                }
                Ok(started)
            }

            /// Moves one queued run to running and creates its task instances.
            async fn start_run_in(&self, conn: &mut Conn, run_id: i64, plan: &DagPlan, now: Micros) -> Result<bool, StoreError> {
                let task_count = i64::try_from(plan.dag.tasks.len()).unwrap_or(i64::MAX);
                let updated = sqlx::query(
                    "UPDATE runs SET state = 'running', started_at = $1, unfinished_tasks = $2 WHERE id = $3 AND state = 'queued'",
                )
                .bind(now)
                .bind(task_count)
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
                // At most 1,000 rows per statement keeps well under SQLite's bind-variable limit.
                for chunk in plan.dag.tasks.chunks(1000) {
                    let mut insert = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO task_instances (run_id, task_id, state, max_tries, max_lost_attempts, priority, queue, upstream_total, timeout_micros, queued_at) ",
                    );
                    insert.push_values(chunk, |mut values, task| {
                        let upstream_total = i64::try_from(task.depends_on.len()).unwrap_or(i64::MAX);
                        let ready = upstream_total == 0;
                        values
                            .push_bind(run_id)
                            .push_bind(task.id.clone())
                            .push_bind(if ready { "queued" } else { "scheduled" })
                            .push_bind(i64::from(task.retries) + 1)
                            .push_bind(i64::from(task.max_lost_attempts))
                            .push_bind(i64::from(task.priority))
                            .push_bind(task.queue.clone())
                            .push_bind(upstream_total)
                            .push_bind(task.timeout.map(micros))
                            .push_bind(if ready { Some(now) } else { None });
                    });
                    insert.build().execute(&mut *conn).await?;
                }
                if self.mlflow_on() && mlflow_tracks(plan) {
                    let run = self.mlflow_run_in(&mut *conn, run_id).await?;
                    self.mlflow_append_in(&mut *conn, &MlflowCall::RunStart(run), now).await?;
                }
                Ok(true)
            }

            /// Lets downstream tasks react to tasks of a run that just reached final states, and
            /// finishes the run when nothing is left. Works in rounds: one statement bumps the
            /// counters of every downstream task the round touches (W1's root has 500), one
            /// queues those that became ready, one per decided state ends the rest, whose own
            /// downstream is the next round. The caller holds the run's lock.
            async fn settle_in(
                &self,
                conn: &mut Conn,
                run_id: i64,
                plan: &DagPlan,
                finished: Vec<(String, TaskState)>,
                now: Micros,
            ) -> Result<(), StoreError> {
                let mut round = finished;
                let mut settled: i64 = 0;
                while !round.is_empty() {
                    settled += i64::try_from(round.len()).unwrap_or(i64::MAX);
                    // Downstream task id to its (success, failed, skipped) increments.
                    let mut bumps: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
                    for (task_id, state) in &round {
                        let Some(outcome) = UpstreamOutcome::of(*state) else { continue };
                        for down in plan.downstream_of(task_id) {
                            let bump = bumps.entry(down.id.as_str()).or_insert((0, 0, 0));
                            match outcome {
                                UpstreamOutcome::Success => bump.0 += 1,
                                UpstreamOutcome::Failed => bump.1 += 1,
                                UpstreamOutcome::Skipped => bump.2 += 1,
                            }
                        }
                    }
                    // One statement per distinct increment (usually one or two: most tasks gain
                    // one success), naming its tasks by `(run_id, task_id)`, which the unique
                    // index serves whatever the table's statistics say. (A join with a list of
                    // values, one row per task, was planned as a scan of a fresh, unanalysed
                    // table: 56 ms a round on W5.)
                    let mut groups: BTreeMap<(i64, i64, i64), Vec<&str>> = BTreeMap::new();
                    for (task_id, bump) in bumps {
                        groups.entry(bump).or_default().push(task_id);
                    }
                    let mut ready: Vec<i64> = Vec::new();
                    let mut decided: BTreeMap<&'static str, Vec<(i64, String)>> = BTreeMap::new();
                    for ((success, failed, skipped), tasks) in groups {
                        // At most 1,000 names per statement keeps well under SQLite's limit of
                        // bind variables.
                        for chunk in tasks.chunks(1000) {
                            let mut update = sqlx::QueryBuilder::<$Db>::new("UPDATE task_instances SET upstream_success = upstream_success + ");
                            update
                                .push_bind(success)
                                .push(", upstream_failed = upstream_failed + ")
                                .push_bind(failed)
                                .push(", upstream_skipped = upstream_skipped + ")
                                .push_bind(skipped)
                                .push(" WHERE run_id = ")
                                .push_bind(run_id)
                                .push(" AND state = 'scheduled' AND task_id IN (");
                            let mut list = update.separated(", ");
                            for task_id in chunk {
                                list.push_bind(*task_id);
                            }
                            update.push(") RETURNING id, task_id, upstream_total, upstream_success, upstream_failed, upstream_skipped");
                            for row in update.build().fetch_all(&mut *conn).await? {
                                let counts = UpstreamCounts {
                                    total: row.try_get("upstream_total")?,
                                    success: row.try_get("upstream_success")?,
                                    failed: row.try_get("upstream_failed")?,
                                    skipped: row.try_get("upstream_skipped")?,
                                };
                                let id: i64 = row.try_get("id")?;
                                let task_id: String = row.try_get("task_id")?;
                                let Some(down) = plan.task(&task_id) else { continue };
                                match evaluate(down.trigger_rule, counts) {
                                    Readiness::Wait => {}
                                    Readiness::Ready => ready.push(id),
                                    decided_state @ (Readiness::Skip | Readiness::UpstreamFailed) => {
                                        let next = decided_state.state().unwrap_or(TaskState::Skipped);
                                        decided.entry(next.as_str()).or_default().push((id, task_id));
                                    }
                                }
                            }
                        }
                    }
                    ready.sort_unstable();
                    for chunk in ready.chunks(1000) {
                        let mut update = sqlx::QueryBuilder::<$Db>::new("UPDATE task_instances SET state = 'queued', queued_at = ");
                        update.push_bind(now).push(" WHERE id IN (");
                        let mut list = update.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        update.push(")");
                        update.build().execute(&mut *conn).await?;
                    }
                    let mut next_round = Vec::new();
                    for (state, mut tasks) in decided {
                        tasks.sort_unstable();
                        let next: TaskState = parse_state(state)?;
                        for chunk in tasks.chunks(1000) {
                            let mut update = sqlx::QueryBuilder::<$Db>::new("UPDATE task_instances SET state = ");
                            update.push_bind(state).push(", ended_at = ").push_bind(now).push(" WHERE id IN (");
                            let mut list = update.separated(", ");
                            for (id, _) in chunk {
                                list.push_bind(*id);
                            }
                            update.push(")");
                            update.build().execute(&mut *conn).await?;
                        }
                        next_round.extend(tasks.into_iter().map(|(_, task_id)| (task_id, next)));
                    }
                    round = next_round;
                }
                let remaining: Option<i64> = sqlx::query_scalar(
                    "UPDATE runs SET unfinished_tasks = unfinished_tasks - $1 WHERE id = $2 AND state = 'running' RETURNING unfinished_tasks",
                )
                .bind(settled)
                .bind(run_id)
                .fetch_optional(&mut *conn)
                .await?;
                if remaining == Some(0) {
                    self.finish_run_in(&mut *conn, run_id, plan, now).await?;
                }
                Ok(())
            }

            async fn finish_run_in(&self, conn: &mut Conn, run_id: i64, plan: &DagPlan, now: Micros) -> Result<(), StoreError> {
                let rows = sqlx::query("SELECT task_id, state FROM task_instances WHERE run_id = $1")
                    .bind(run_id)
                    .fetch_all(&mut *conn)
                    .await?;
                let mut states: SharedHashMap<String, TaskState> = SharedHashMap::with_capacity(rows.len());
                for row in &rows {
                    states.insert(row.try_get("task_id")?, parse_state(&row.try_get::<String, _>("state")?)?);
                }
                let outcome = run_outcome(plan.leaves().filter_map(|leaf| states.get(&leaf.id).copied()));
                let finished = sqlx::query("UPDATE runs SET state = $1, ended_at = $2 WHERE id = $3 AND state = 'running'")
                    .bind(outcome.as_str())
                    .bind(now)
                    .bind(run_id)
                    .execute(&mut *conn)
                    .await?;
                if finished.rows_affected() > 0 && self.mlflow_on() && mlflow_tracks(plan) {
                    let run = self.mlflow_run_in(&mut *conn, run_id).await?;
                    let end = MlflowRunEnd { run, state: outcome.as_str().to_owned(), ended_at: now };
                    self.mlflow_append_in(&mut *conn, &MlflowCall::RunEnd(end), now).await?;
                }
                self.start_queued_in(&mut *conn, Some(&plan.dag.id), now).await?;
                Ok(())
            }

            /// Re-derives every task of a run that has not started (scheduled, queued, skipped,
            /// upstream-failed) from its upstream states, after an operator changed states by hand
            /// (clear, mark). O(tasks in the run).
            async fn recompute_run_in(&self, conn: &mut Conn, run: &RunRecord, plan: &DagPlan, now: Micros) -> Result<(), StoreError> {
                let rows = sqlx::query(
                    "SELECT id, task_id, state, upstream_success, upstream_failed, upstream_skipped FROM task_instances WHERE run_id = $1",
                )
                .bind(run.id)
                .fetch_all(&mut *conn)
                .await?;
                let mut current: SharedHashMap<String, (i64, TaskState, (i64, i64, i64))> = SharedHashMap::new();
                for row in &rows {
                    current.insert(
                        row.try_get("task_id")?,
                        (
                            row.try_get("id")?,
                            parse_state(&row.try_get::<String, _>("state")?)?,
                            (row.try_get("upstream_success")?, row.try_get("upstream_failed")?, row.try_get("upstream_skipped")?),
                        ),
                    );
                }
                let mut unfinished: i64 = 0;
                for task in &plan.dag.tasks {
                    let Some(&(id, state, stored)) = current.get(&task.id) else { continue };
                    let mut counts = UpstreamCounts {
                        total: i64::try_from(task.depends_on.len()).unwrap_or(i64::MAX),
                        ..UpstreamCounts::default()
                    };
                    for upstream in &task.depends_on {
                        match current.get(upstream).and_then(|(_, state, _)| UpstreamOutcome::of(*state)) {
                            Some(UpstreamOutcome::Success) => counts.success += 1,
                            Some(UpstreamOutcome::Failed) => counts.failed += 1,
                            Some(UpstreamOutcome::Skipped) => counts.skipped += 1,
                            None => {}
                        }
                    }
                    let derived = matches!(
                        state,
                        TaskState::Scheduled | TaskState::Queued | TaskState::UpstreamFailed | TaskState::Skipped
                    );
                    let next = if derived {
                        evaluate(task.trigger_rule, counts).state().unwrap_or(TaskState::Scheduled)
                    } else {
                        state
                    };
                    if next != state || stored != (counts.success, counts.failed, counts.skipped) {
                        sqlx::query(
                            "UPDATE task_instances SET state = $1, upstream_success = $2, upstream_failed = $3, upstream_skipped = $4, \
                             queued_at = CASE WHEN $1 = 'queued' THEN $5 ELSE queued_at END, \
                             ended_at = CASE WHEN $1 IN ('skipped', 'upstream_failed') THEN $5 ELSE ended_at END WHERE id = $6",
                        )
                        .bind(next.as_str())
                        .bind(counts.success)
                        .bind(counts.failed)
                        .bind(counts.skipped)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    }
                    if let Some(entry) = current.get_mut(&task.id) {
                        entry.1 = next;
                    }
                    if !next.is_final() {
                        unfinished += 1;
                    }
                }
                if unfinished == 0 {
                    sqlx::query("UPDATE runs SET unfinished_tasks = 0, state = 'running', ended_at = NULL WHERE id = $1")
                        .bind(run.id)
                        .execute(&mut *conn)
                        .await?;
                    self.finish_run_in(&mut *conn, run.id, plan, now).await?;
                } else {
                    sqlx::query("UPDATE runs SET unfinished_tasks = $1, state = 'running', ended_at = NULL WHERE id = $2")
                        .bind(unfinished)
                        .bind(run.id)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            /// Applies one attempt's end: compare-and-set on (running, fence), then the attempt row,
            /// then downstream reactions when the task instance is final.
            async fn complete_in(
                &self,
                conn: &mut Conn,
                completion: &Completion,
                ending: Ending,
                now: Micros,
            ) -> Result<Result<CompletionOutcome, Rejection>, StoreError> {
                let id = completion.task_instance_id;
                let mut rows = self.completion_rows_in(&mut *conn, &[id]).await?;
                let mut answers = self.complete_many_in(&mut *conn, vec![(completion, rows.remove(&id))], ending, now).await?;
                let (outcome, finished) = answers.pop().unwrap_or((Err(Rejection::Unknown(id)), None));
                if let Some(finished) = finished {
                    self.settle_in(&mut *conn, finished.run_id, &finished.plan, vec![(finished.task_id, finished.state)], now).await?;
                }
                Ok(outcome)
            }

            /// What a completion needs to know about its task instances, read in one statement
            /// for a whole batch.
            async fn completion_rows_in(&self, conn: &mut Conn, ids: &[i64]) -> Result<SharedHashMap<i64, CompletionRow>, StoreError> {
                let mut found = SharedHashMap::with_capacity(ids.len());
                for chunk in ids.chunks(1000) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new(
                        "SELECT t.id, t.run_id, t.task_id, t.state, t.fence, t.try_number, t.max_tries, t.lost_attempts, t.max_lost_attempts, \
                         r.dag_version_id \
                         FROM task_instances t JOIN runs r ON r.id = t.run_id WHERE t.id IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    if Self::BACKEND == Backend::Postgres {
                        // Locked in id order, the order heartbeats lock them in, before the
                        // batch's one update touches them in whatever order its plan takes.
                        query.push(" ORDER BY t.id FOR NO KEY UPDATE OF t");
                    }
                    for row in query.build().fetch_all(&mut *conn).await? {
                        found.insert(
                            row.try_get("id")?,
                            CompletionRow {
                                run_id: row.try_get("run_id")?,
                                task_id: row.try_get("task_id")?,
                                state: parse_state(&row.try_get::<String, _>("state")?)?,
                                fence: row.try_get("fence")?,
                                try_number: row.try_get("try_number")?,
                                max_tries: row.try_get("max_tries")?,
                                lost_attempts: row.try_get("lost_attempts")?,
                                max_lost_attempts: row.try_get("max_lost_attempts")?,
                                dag_version_id: row.try_get("dag_version_id")?,
                            },
                        );
                    }
                }
                Ok(found)
            }

            /// Applies reports without the downstream reaction: answers, per report in order,
            /// its outcome and the task it moved to a final state, if any, so a batch settles
            /// each run once for all its completions. Each report comes with its task instance
            /// as read (and, on PostgreSQL, locked) at the start of the batch (`None`: unknown).
            /// A handful of statements serve the whole batch; only outputs, lineage and MLflow
            /// events are written per report.
            async fn complete_many_in(
                &self,
                conn: &mut Conn,
                items: Vec<(&Completion, Option<CompletionRow>)>,
                ending: Ending,
                now: Micros,
            ) -> Result<Vec<(Result<CompletionOutcome, Rejection>, Option<Finished>)>, StoreError> {
                let mut answers: Vec<Option<(Result<CompletionOutcome, Rejection>, Option<Finished>)>> =
                    (0..items.len()).map(|_| None).collect();
                // First, without writing: the verdict of every report that may apply.
                let mut prepared: Vec<Prepared<'_>> = Vec::with_capacity(items.len());
                for (index, (completion, row)) in items.into_iter().enumerate() {
                    let id = completion.task_instance_id;
                    let Some(row) = row else {
                        answers[index] = Some((Err(Rejection::Unknown(id)), None));
                        continue;
                    };
                    if row.state != TaskState::Running || row.fence != completion.fence {
                        let stale = Rejection::Stale { task_instance_id: id, state: row.state, current: row.fence, reported: completion.fence };
                        answers[index] = Some((Err(stale), None));
                        continue;
                    }
                    let plan = self.plan_in(&mut *conn, row.dag_version_id).await?;
                    // A success whose outputs do not match the task's declaration is a failure
                    // that retrying cannot fix.
                    let refused = match (&completion.result, plan.task(&row.task_id)) {
                        (AttemptResult::Success { outputs, .. }, Some(task)) => self
                            .check_outputs_in(&mut *conn, &plan.dag.id, &row.task_id, &task.outputs, outputs)
                            .await?
                            .err()
                            .map(|error| AttemptResult::Failure { error, retryable: false }),
                        (AttemptResult::Success { .. }, None) | (AttemptResult::Failure { .. }, _) => None,
                    };
                    let result = refused.as_ref().unwrap_or(&completion.result);
                    let failure_attempt_state = ending.failure_state();
                    let verdict = match result {
                        AttemptResult::Success { summary, .. } => Verdict {
                            state: TaskState::Success,
                            attempt_state: "success",
                            next_retry_at: None,
                            error: None,
                            attempt_error: None,
                            summary: Some(summary.to_string()),
                            outcome: CompletionOutcome::Succeeded,
                            lost: false,
                        },
                        // A loss is counted by the update below, the statement that moves the
                        // task on, which applies only while the task still runs under this
                        // fence: once, however many rescuers race for it.
                        AttemptResult::Failure { error, .. } if ending == Ending::Lost && row.lost_attempts < row.max_lost_attempts => {
                            Verdict {
                                state: TaskState::Queued,
                                attempt_state: failure_attempt_state,
                                next_retry_at: None,
                                error: Some(error.clone()),
                                attempt_error: Some(error.clone()),
                                summary: None,
                                outcome: CompletionOutcome::WillRetry { at: now },
                                lost: true,
                            }
                        }
                        AttemptResult::Failure { error, .. } if ending == Ending::Lost => Verdict {
                            state: TaskState::Failed,
                            attempt_state: failure_attempt_state,
                            next_retry_at: None,
                            error: Some(self.losses_in(&mut *conn, id, &row, error).await?),
                            attempt_error: Some(error.clone()),
                            summary: None,
                            outcome: CompletionOutcome::Failed,
                            lost: true,
                        },
                        AttemptResult::Failure { error, retryable } if *retryable && row.try_number < row.max_tries => {
                            let at = match plan.task(&row.task_id) {
                                Some(task) => {
                                    // The backoff follows the task's own tries: lost attempts
                                    // were not its failures.
                                    let retry = u32::try_from(row.try_number - row.lost_attempts).unwrap_or(u32::MAX);
                                    let jitter: f64 = rand::random();
                                    now + micros(retry_delay(task.retry_delay, task.max_retry_delay, task.retry_backoff, retry, jitter))
                                }
                                None => now,
                            };
                            Verdict {
                                state: TaskState::UpForRetry,
                                attempt_state: failure_attempt_state,
                                next_retry_at: Some(at),
                                error: Some(error.clone()),
                                attempt_error: Some(error.clone()),
                                summary: None,
                                outcome: CompletionOutcome::WillRetry { at },
                                lost: false,
                            }
                        }
                        AttemptResult::Failure { error, .. } => Verdict {
                            state: TaskState::Failed,
                            attempt_state: failure_attempt_state,
                            next_retry_at: None,
                            error: Some(error.clone()),
                            attempt_error: Some(error.clone()),
                            summary: None,
                            outcome: CompletionOutcome::Failed,
                            lost: false,
                        },
                    };
                    prepared.push(Prepared { index, completion, row, plan, refused, verdict });
                }

                // Then the compare-and-set on (running, fence) for all of them in one statement,
                // and one for their attempt rows. A statement updates a row at most once, so two
                // reports for one task instance go in separate rounds; the second then finds it
                // no longer running.
                let mut applied: Vec<Prepared<'_>> = Vec::with_capacity(prepared.len());
                // The task instances this batch already moved on, and where to.
                let mut moved: SharedHashMap<i64, TaskState> = SharedHashMap::new();
                while !prepared.is_empty() {
                    let mut seen = std::collections::HashSet::new();
                    let (round, later): (Vec<Prepared<'_>>, Vec<Prepared<'_>>) =
                        prepared.into_iter().partition(|item| seen.insert(item.completion.task_instance_id));
                    prepared = later;
                    let (round, refused): (Vec<Prepared<'_>>, Vec<Prepared<'_>>) =
                        round.into_iter().partition(|item| !moved.contains_key(&item.completion.task_instance_id));
                    for item in refused {
                        let id = item.completion.task_instance_id;
                        let state = moved.get(&id).copied().unwrap_or(item.row.state);
                        let stale = Rejection::Stale { task_instance_id: id, state, current: item.row.fence, reported: item.completion.fence };
                        answers[item.index] = Some((Err(stale), None));
                    }
                    if round.is_empty() {
                        continue;
                    }
                    let mut updated = std::collections::HashSet::new();
                    for chunk in round.chunks(500) {
                        let mut update = sqlx::QueryBuilder::<$Db>::new(
                            "WITH done (id, fence, state, next_retry_at, ended_at, error, summary, lost, queued_at) AS (",
                        );
                        update.push_values(chunk, |mut values, item| {
                            let verdict = &item.verdict;
                            values
                                .push_bind(item.completion.task_instance_id)
                                .push_bind(item.completion.fence)
                                .push_bind(verdict.state.as_str())
                                .push_bind(verdict.next_retry_at)
                                .push_bind(if verdict.state.is_final() { Some(now) } else { None })
                                .push_bind(verdict.error.clone())
                                .push_bind(verdict.summary.clone())
                                .push_bind(i64::from(verdict.lost))
                                .push_bind(if verdict.state == TaskState::Queued { Some(now) } else { None });
                        });
                        // A loss raises `max_tries` with `lost_attempts`, so the task keeps its own
                        // tries (`max_tries - lost_attempts`), and bumps the fence as every
                        // transition the worker did not ask for does.
                        update.push(
                            ") UPDATE task_instances SET state = done.state, worker_id = NULL, lease_expires_at = NULL, \
                             timeout_at = NULL, next_retry_at = done.next_retry_at, ended_at = done.ended_at, error = done.error, \
                             summary = done.summary, lost_attempts = task_instances.lost_attempts + done.lost, \
                             max_tries = task_instances.max_tries + done.lost, fence = task_instances.fence + done.lost, \
                             queued_at = COALESCE(done.queued_at, task_instances.queued_at) FROM done WHERE task_instances.id = done.id \
                             AND task_instances.fence = done.fence AND task_instances.state = 'running' RETURNING task_instances.id",
                        );
                        for row in update.build().fetch_all(&mut *conn).await? {
                            updated.insert(row.try_get::<i64, _>("id")?);
                        }
                    }
                    for item in round {
                        if updated.contains(&item.completion.task_instance_id) {
                            moved.insert(item.completion.task_instance_id, item.verdict.state);
                            applied.push(item);
                        } else {
                            let row = &item.row;
                            let stale = Rejection::Stale {
                                task_instance_id: item.completion.task_instance_id,
                                state: row.state,
                                current: row.fence,
                                reported: item.completion.fence,
                            };
                            answers[item.index] = Some((Err(stale), None));
                        }
                    }
                }
                for chunk in applied.chunks(500) {
                    let mut update = sqlx::QueryBuilder::<$Db>::new(
                        "WITH done (task_instance_id, try_number, state, error, summary, cache_key, cache_hit_of) AS (",
                    );
                    update.push_values(chunk, |mut values, item| {
                        let cache = match item.result() {
                            AttemptResult::Success { cache: Some(cache), .. } => Some(cache),
                            _ => None,
                        };
                        values
                            .push_bind(item.completion.task_instance_id)
                            .push_bind(item.row.try_number)
                            .push_bind(item.verdict.attempt_state)
                            .push_bind(item.verdict.attempt_error.clone())
                            .push_bind(item.verdict.summary.clone())
                            .push_bind(cache.map(|cache| cache.key.clone()))
                            .push_bind(cache.and_then(|cache| cache.hit_of));
                    });
                    update.push(") UPDATE task_attempts SET state = done.state, ended_at = ");
                    update.push_bind(now);
                    update.push(
                        ", error = done.error, summary = done.summary, cache_key = done.cache_key, cache_hit_of = done.cache_hit_of \
                         FROM done WHERE task_attempts.task_instance_id = done.task_instance_id \
                         AND task_attempts.try_number = done.try_number AND task_attempts.state = 'running'",
                    );
                    update.build().execute(&mut *conn).await?;
                }

                // Last, what only some attempts have: outputs, lineage, MLflow events.
                for item in applied {
                    self.record_outputs_in(&mut *conn, &item, now).await?;
                    let Prepared { index, row, plan, verdict, .. } = item;
                    let finished = verdict.state.is_final().then(|| Finished {
                        run_id: row.run_id,
                        plan: plan.clone(),
                        task_id: row.task_id,
                        state: verdict.state,
                    });
                    answers[index] = Some((Ok(verdict.outcome), finished));
                }
                Ok(answers
                    .into_iter()
                    .map(|answer| answer.unwrap_or((Err(Rejection::Unknown(0)), None)))
                    .collect())
            }

            /// Publishes an applied success's outputs (moving a `promote`d alias), records what
            /// the attempt read and wrote, and appends its MLflow event, in the completion's
            /// transaction.
            async fn record_outputs_in(&self, conn: &mut Conn, item: &Prepared<'_>, now: Micros) -> Result<(), StoreError> {
                let id = item.completion.task_instance_id;
                let (run_id, task_id, try_number) = (item.row.run_id, &item.row.task_id, item.row.try_number);
                let plan = &item.plan;
                let mut written = Vec::new();
                if let (AttemptResult::Success { outputs, .. }, Some(task)) = (item.result(), plan.task(task_id)) {
                    for output in outputs {
                        let Some(spec) = task.outputs.iter().find(|spec| spec.name == output.slot) else { continue };
                        let (version_id, reused) = match &output.content {
                            OutputContent::Blob { blob, media_type, dataset, metadata } => {
                                let publish = PublishParams {
                                    name: spec.artifact_name(&plan.dag.id, task_id),
                                    kind: spec.kind,
                                    blob: *blob,
                                    media_type: media_type.clone(),
                                    dataset: dataset.clone(),
                                    metadata: metadata.clone(),
                                };
                                self.publish_in(&mut *conn, &publish, Some((id, try_number)), now).await?
                            }
                            OutputContent::Reused { artifact_version_id } => (*artifact_version_id, true),
                        };
                        written.push((output.slot.clone(), version_id, reused));
                        // `deploy` is the registry step: its model outputs are the versions
                        // MLflow's registry mirrors (a trained model is linked from its run).
                        if self.mlflow_on() && task.kind == "deploy" && spec.kind == ArtifactKind::Model {
                            let artifact = self.mlflow_artifact_in(&mut *conn, &output.slot, version_id).await?;
                            let metadata: Option<String> = sqlx::query_scalar("SELECT metadata FROM artifact_versions WHERE id = $1")
                                .bind(version_id)
                                .fetch_one(&mut *conn)
                                .await?;
                            let version = MlflowModelVersion {
                                name: artifact.name,
                                version: artifact.version,
                                sha256: artifact.sha256,
                                metadata: metadata.as_deref().map(parse_json).transpose()?,
                                run: self.mlflow_run_in(&mut *conn, run_id).await?,
                                task_id: task_id.clone(),
                                try_number,
                            };
                            self.mlflow_append_in(&mut *conn, &MlflowCall::ModelVersion(Box::new(version)), now).await?;
                        }
                        if let Some(alias) = spec.promote {
                            let version: (String, i64) =
                                sqlx::query_as("SELECT name, version FROM artifact_versions WHERE id = $1")
                                    .bind(version_id)
                                    .fetch_one(&mut *conn)
                                    .await?;
                            let reason = format!("deployed by run {run_id} task `{task_id}` attempt {try_number}");
                            self.alias_set_in(&mut *conn, &version.0, alias, version.1, &reason, now).await?;
                        }
                    }
                }
                // Most tasks read and write no artifacts: skip the lookup of their inputs.
                if !written.is_empty() || plan.task(task_id).is_some_and(|task| !task.inputs.is_empty()) {
                    self.record_lineage_in(&mut *conn, id, try_number, &written).await?;
                }
                if self.mlflow_on()
                    && let Some(task) = plan.task(task_id)
                    && MLFLOW_TRACKED_KINDS.contains(&task.kind.as_str())
                {
                    self.mlflow_attempt_in(&mut *conn, run_id, task, id, try_number, &item.verdict, &written, now).await?;
                }
                Ok(())
            }

            /// The error of a task that has lost one attempt more than it may: how many it lost,
            /// and why each was lost (the latest [`LOSSES_NAMED`] when there are more), oldest
            /// first. `latest` is the reason of the loss being counted now.
            async fn losses_in(&self, conn: &mut Conn, task_instance_id: i64, row: &CompletionRow, latest: &str) -> Result<String, StoreError> {
                let named = i64::try_from(LOSSES_NAMED).unwrap_or(i64::MAX) - 1;
                // The earlier losses since the task last started afresh are its newest
                // `lost_attempts` lost attempts; any older ones came before a clear.
                let mut losses: Vec<(i64, Option<String>)> = sqlx::query_as(
                    "SELECT try_number, error FROM task_attempts WHERE task_instance_id = $1 AND state = 'lost' AND try_number < $2 \
                     ORDER BY try_number DESC LIMIT $3",
                )
                .bind(task_instance_id)
                .bind(row.try_number)
                .bind(row.lost_attempts.min(named))
                .fetch_all(&mut *conn)
                .await?;
                losses.reverse();
                losses.push((row.try_number, Some(latest.to_owned())));
                let total = row.lost_attempts + 1;
                let listed = losses
                    .iter()
                    .map(|(try_number, reason)| format!("attempt {try_number}: {}", reason.as_deref().unwrap_or("no reason recorded")))
                    .collect::<Vec<_>>()
                    .join("; ");
                let attempts = if total == 1 { "attempt" } else { "attempts" };
                let which = if i64::try_from(losses.len()).unwrap_or(i64::MAX) < total { "; the latest" } else { "" };
                Ok(format!(
                    "lost {total} {attempts} to the infrastructure (`max_lost_attempts` is {}){which}: {listed}",
                    row.max_lost_attempts
                ))
            }

            /// Ends the running attempt of a task instance that an operator or a cancel moved on.
            async fn close_attempt_in(&self, conn: &mut Conn, task_instance_id: i64, reason: &str, now: Micros) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE task_attempts SET state = 'cancelled', ended_at = $1, error = $2 WHERE task_instance_id = $3 AND state = 'running'",
                )
                .bind(now)
                .bind(reason)
                .bind(task_instance_id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Each task instance's current try and state, for those of `ids` that exist. A plain
            /// read: it takes no row lock, so it cannot upset the lock order of what follows.
            async fn tries_in(&self, conn: &mut Conn, ids: &[i64]) -> Result<SharedHashMap<i64, (i64, TaskState)>, StoreError> {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                let mut found = SharedHashMap::with_capacity(ids.len());
                for chunk in ids.chunks(1000) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new("SELECT id, try_number, state FROM task_instances WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    for row in query.build().fetch_all(&mut *conn).await? {
                        found.insert(row.try_get("id")?, (row.try_get("try_number")?, parse_state(&row.try_get::<String, _>("state")?)?));
                    }
                }
                Ok(found)
            }

            /// The ids among `ids` that name no task instance, in order, each once.
            async fn missing_in(&self, conn: &mut Conn, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
                let found = self.tries_in(&mut *conn, ids).await?;
                let mut missing: Vec<i64> = ids.iter().copied().filter(|id| !found.contains_key(id)).collect();
                missing.sort_unstable();
                missing.dedup();
                Ok(missing)
            }

            /// Stores the chunks whose attempt is running and drops the rest: the last chunks
            /// riding with a completion the batch refuses as stale, or naming no attempt, are
            /// not the attempt's to write (the execution API refuses unknown task instances
            /// before they get here; this keeps any other caller clear of the foreign key).
            async fn log_append_open_in(&self, conn: &mut Conn, chunks: &[LogUpload], now: Micros) -> Result<(), StoreError> {
                if chunks.is_empty() {
                    return Ok(());
                }
                let ids: Vec<i64> = chunks.iter().map(|chunk| chunk.task_instance_id).collect();
                let tries = self.tries_in(&mut *conn, &ids).await?;
                let open: Vec<&LogUpload> = chunks
                    .iter()
                    .filter(|chunk| LogTarget::of(tries.get(&chunk.task_instance_id).copied(), chunk.try_number) == LogTarget::Open)
                    .collect();
                self.log_append_in(&mut *conn, &open, now).await
            }

            /// Stores log chunks in one statement per 1,000 (5,000 bind variables: well under
            /// SQLite's limit), not one per chunk: every completion carries its attempt's last.
            async fn log_append_in(&self, conn: &mut Conn, chunks: &[&LogUpload], now: Micros) -> Result<(), StoreError> {
                for chunk in chunks.chunks(1000) {
                    let mut insert =
                        sqlx::QueryBuilder::<$Db>::new("INSERT INTO task_logs (task_instance_id, try_number, seq, chunk, created_at) ");
                    insert.push_values(chunk, |mut values, upload| {
                        values
                            .push_bind(upload.task_instance_id)
                            .push_bind(upload.try_number)
                            .push_bind(upload.seq)
                            .push_bind(upload.chunk.as_str())
                            .push_bind(now);
                    });
                    insert.push(" ON CONFLICT (task_instance_id, try_number, seq) DO NOTHING");
                    insert.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Locks the runs of these task instances, in ascending run id, before any task row is
            /// touched: the one lock order that keeps concurrent completions, rescues and
            /// timeouts on PostgreSQL from deadlocking.
            async fn lock_runs_of(&self, conn: &mut Conn, task_instance_ids: &[i64]) -> Result<(), StoreError> {
                if Self::BACKEND == Backend::Sqlite || task_instance_ids.is_empty() {
                    // One writer at a time: there is no lock order to keep, so skip the lookups.
                    return Ok(());
                }
                let mut runs = Vec::new();
                for chunk in task_instance_ids.chunks(1000) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new("SELECT DISTINCT run_id FROM task_instances WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    for row in query.build().fetch_all(&mut *conn).await? {
                        runs.push(row.try_get::<i64, _>("run_id")?);
                    }
                }
                runs.sort_unstable();
                runs.dedup();
                Self::lock_runs(&mut *conn, &runs).await?;
                Ok(())
            }

            /// Claims queued tasks inside the caller's transaction (see `Store::task_instance_claim`), with
            /// their inputs resolved to exact versions. A task whose input has no version fails at
            /// once instead of being handed out.
            async fn claim_in(&self, conn: &mut Conn, params: &ClaimParams) -> Result<Vec<ClaimedTask>, StoreError> {
                let lease_expires_at = params.now + micros(params.lease);
                let rows = Self::claim_rows(&mut *conn, params, lease_expires_at).await?;
                let mut claimed = Vec::with_capacity(rows.len());
                let mut stored_inputs: Vec<Option<String>> = Vec::with_capacity(rows.len());
                let mut unresolved: Vec<(usize, String)> = Vec::new();
                let mut runs: SharedHashMap<i64, RunRecord> = SharedHashMap::new();
                for row in &rows {
                    let task_instance_id: i64 = row.try_get("id")?;
                    let run_id: i64 = row.try_get("run_id")?;
                    let task_id: String = row.try_get("task_id")?;
                    let try_number: i64 = row.try_get("try_number")?;
                    let fence: i64 = row.try_get("fence")?;
                    if !runs.contains_key(&run_id) {
                        let run = self.run_in(&mut *conn, run_id).await?;
                        runs.insert(run_id, run);
                    }
                    let run = &runs[&run_id];
                    let plan = self.plan_in(&mut *conn, run.dag_version_id).await?;
                    let task = plan
                        .task(&task_id)
                        .ok_or_else(|| StoreError::Corrupt(format!("task `{task_id}` is not in DAG version {}", plan.version_id)))?;
                    let mut inputs = Vec::with_capacity(task.inputs.len());
                    let mut problems = Vec::new();
                    for (slot, input) in &task.inputs {
                        match self.resolve_input_in(&mut *conn, run_id, slot, input).await? {
                            Ok(version) => inputs.push(ResolvedInput { slot: slot.clone(), version }),
                            Err(problem) => problems.push(problem),
                        }
                    }
                    if !problems.is_empty() {
                        unresolved.push((claimed.len(), problems.join("; ")));
                    }
                    stored_inputs.push(if inputs.is_empty() {
                        None
                    } else {
                        let ids: StoredInputs = inputs.iter().map(|input| (input.slot.clone(), input.version.id)).collect();
                        Some(serde_json::to_string(&ids).map_err(|error| StoreError::Corrupt(error.to_string()))?)
                    });
                    claimed.push(ClaimedTask {
                        task_instance_id,
                        fence,
                        run_id,
                        dag_id: run.dag_id.clone(),
                        task_id: task_id.clone(),
                        try_number,
                        kind: task.kind.clone(),
                        params: task.params.clone(),
                        run_params: run.params.clone(),
                        logical_date: run.logical_date,
                        timeout_at: row.try_get("timeout_at")?,
                        inputs,
                        outputs: task.outputs.clone(),
                        cache: task.cache,
                    });
                }
                // One statement for the whole batch's attempt rows (at most 1,000 rows: well under
                // SQLite's bind-variable limit).
                for (chunk, inputs) in claimed.chunks(1000).zip(stored_inputs.chunks(1000)) {
                    let mut insert = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO task_attempts (task_instance_id, try_number, worker_id, fence, state, started_at, inputs) ",
                    );
                    insert.push_values(chunk.iter().zip(inputs), |mut values, (task, inputs)| {
                        values
                            .push_bind(task.task_instance_id)
                            .push_bind(task.try_number)
                            .push_bind(params.worker_id.clone())
                            .push_bind(task.fence)
                            .push_bind("running")
                            .push_bind(params.now)
                            .push_bind(inputs.clone());
                    });
                    insert.build().execute(&mut *conn).await?;
                }
                // Unresolvable inputs will not resolve by retrying: the task fails for good, and
                // its downstream reacts as to any failure.
                for (index, problem) in unresolved.iter().rev() {
                    let task = claimed.remove(*index);
                    let completion = Completion {
                        task_instance_id: task.task_instance_id,
                        fence: task.fence,
                        result: AttemptResult::Failure { error: problem.clone(), retryable: false },
                    };
                    let _ = self.complete_in(&mut *conn, &completion, Ending::Reported, params.now).await?;
                }
                Ok(claimed)
            }

            async fn version_by_id_in(&self, conn: &mut Conn, id: i64) -> Result<Option<ArtifactVersionRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", version_columns!(), version_from!(), "WHERE av.id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            /// The version an input reads, or why there is none (the task then fails).
            async fn resolve_input_in(
                &self,
                conn: &mut Conn,
                run_id: i64,
                slot: &str,
                input: &InputRef,
            ) -> Result<Result<ArtifactVersionRecord, String>, StoreError> {
                let id: Option<i64> = match input {
                    InputRef::Task { task, output } => {
                        // The output of the upstream task's successful attempt in this run.
                        sqlx::query_scalar(
                            "SELECT aa.artifact_version_id FROM attempt_artifacts aa \
                             JOIN task_instances ti ON ti.id = aa.task_instance_id AND ti.try_number = aa.try_number \
                             WHERE ti.run_id = $1 AND ti.task_id = $2 AND ti.state = 'success' \
                             AND aa.direction = 'output' AND aa.slot = $3",
                        )
                        .bind(run_id)
                        .bind(task)
                        .bind(output)
                        .fetch_optional(&mut *conn)
                        .await?
                    }
                    InputRef::Dataset { name, version } => {
                        let version = version.map(|version| i64::try_from(version).unwrap_or(i64::MAX));
                        sqlx::query_scalar(
                            "SELECT id FROM artifact_versions WHERE name = $1 AND ($2 IS NULL OR version = $2) \
                             ORDER BY version DESC LIMIT 1",
                        )
                        .bind(name)
                        .bind(version)
                        .fetch_optional(&mut *conn)
                        .await?
                    }
                };
                let found = match id {
                    Some(id) => self.version_by_id_in(&mut *conn, id).await?,
                    None => None,
                };
                Ok(found.ok_or_else(|| match input {
                    InputRef::Task { task, output } => format!(
                        "input `{slot}` has no version: task `{task}` did not write its output `{output}` in this run"
                    ),
                    InputRef::Dataset { name, version: Some(version) } => {
                        format!("input `{slot}`: dataset `{name}` has no version {version}")
                    }
                    InputRef::Dataset { name, version: None } => {
                        format!("input `{slot}`: dataset `{name}` has no versions yet")
                    }
                }))
            }

            /// Publishes bytes under a name: a new version, or the newest one again when its
            /// bytes are identical. Answers the version id and whether it was reused. The
            /// artifact row is updated first, which serializes publishers of one name.
            async fn publish_in(
                &self,
                conn: &mut Conn,
                publish: &PublishParams,
                producer: Option<(i64, i64)>,
                now: Micros,
            ) -> Result<(i64, bool), StoreError> {
                let PublishParams { name, kind, blob, media_type, dataset, metadata } = publish;
                let kind = *kind;
                let dataset = dataset.as_ref();
                sqlx::query(
                    "INSERT INTO artifacts (name, kind, latest_version, created_at, updated_at) VALUES ($1, $2, 0, $3, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(kind.as_str())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                let (stored_kind, latest): (String, i64) =
                    sqlx::query_as("UPDATE artifacts SET updated_at = $2 WHERE name = $1 RETURNING kind, latest_version")
                        .bind(name)
                        .bind(now)
                        .fetch_one(&mut *conn)
                        .await?;
                if stored_kind != kind.as_str() {
                    return Err(StoreError::Conflict(format!(
                        "artifact `{name}` is a {stored_kind}; a {} cannot be published under the same name",
                        kind.as_str()
                    )));
                }
                let digest = blob.sha256.to_hex();
                if latest > 0 {
                    let newest: Option<(i64, String)> =
                        sqlx::query_as("SELECT id, sha256 FROM artifact_versions WHERE name = $1 AND version = $2")
                            .bind(name)
                            .bind(latest)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if let Some((id, sha256)) = newest
                        && sha256 == digest
                    {
                        return Ok((id, true));
                    }
                }
                let schema = match dataset {
                    Some(stats) => Some(
                        serde_json::to_string(&stats.columns)
                            .map_err(|error| StoreError::Corrupt(format!("dataset schema: {error}")))?,
                    ),
                    None => None,
                };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO artifact_versions (name, version, sha256, size, media_type, task_instance_id, try_number, \
                     dataset_schema, row_count, created_at, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                )
                .bind(name)
                .bind(latest + 1)
                .bind(&digest)
                .bind(i64::try_from(blob.size).unwrap_or(i64::MAX))
                .bind(media_type)
                .bind(producer.map(|(task_instance_id, _)| task_instance_id))
                .bind(producer.map(|(_, try_number)| try_number))
                .bind(schema)
                .bind(dataset.map(|stats| i64::try_from(stats.rows).unwrap_or(i64::MAX)))
                .bind(now)
                .bind(metadata.as_ref().map(|value| value.to_string()))
                .fetch_one(&mut *conn)
                .await?;
                sqlx::query("UPDATE artifacts SET latest_version = $2 WHERE name = $1")
                    .bind(name)
                    .bind(latest + 1)
                    .execute(&mut *conn)
                    .await?;
                Ok((id, false))
            }

            /// Checks a successful attempt's outputs against the task's declaration before
            /// anything is written: every declared output reported once, nothing else, no name
            /// already taken by another kind, every reused version present.
            async fn check_outputs_in(
                &self,
                conn: &mut Conn,
                dag_id: &str,
                task_id: &str,
                declared: &[OutputSpec],
                outputs: &[ProducedOutput],
            ) -> Result<Result<(), String>, StoreError> {
                for output in outputs {
                    if !declared.iter().any(|spec| spec.name == output.slot) {
                        return Ok(Err(format!("the task reported output `{}`, which it does not declare", output.slot)));
                    }
                    if outputs.iter().filter(|other| other.slot == output.slot).count() > 1 {
                        return Ok(Err(format!("the task reported output `{}` twice", output.slot)));
                    }
                }
                for spec in declared {
                    let Some(output) = outputs.iter().find(|output| output.slot == spec.name) else {
                        return Ok(Err(format!("the task did not write its declared output `{}`", spec.name)));
                    };
                    let name = spec.artifact_name(dag_id, task_id);
                    let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM artifacts WHERE name = $1")
                        .bind(&name)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if let Some(kind) = kind
                        && kind != spec.kind.as_str()
                    {
                        return Ok(Err(format!(
                            "output `{}`: artifact `{name}` is a {kind}; a {} cannot be published under the same name",
                            spec.name,
                            spec.kind.as_str()
                        )));
                    }
                    if let OutputContent::Reused { artifact_version_id } = &output.content {
                        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM artifact_versions WHERE id = $1")
                            .bind(artifact_version_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                        if exists.is_none() {
                            return Ok(Err(format!(
                                "output `{}` reuses artifact version {artifact_version_id}, which does not exist",
                                spec.name
                            )));
                        }
                    }
                }
                Ok(Ok(()))
            }

            /// Records what an attempt read (from its attempt row) and wrote, in the caller's
            /// transaction: the completion's.
            async fn record_lineage_in(
                &self,
                conn: &mut Conn,
                task_instance_id: i64,
                try_number: i64,
                outputs: &[(String, i64, bool)],
            ) -> Result<(), StoreError> {
                let inputs: Option<String> =
                    sqlx::query_scalar("SELECT inputs FROM task_attempts WHERE task_instance_id = $1 AND try_number = $2")
                        .bind(task_instance_id)
                        .bind(try_number)
                        .fetch_optional(&mut *conn)
                        .await?
                        .flatten();
                let inputs: StoredInputs = match inputs {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|error| StoreError::Corrupt(format!("stored attempt inputs: {error}")))?,
                    None => StoredInputs::new(),
                };
                let rows = inputs
                    .iter()
                    .map(|(slot, id)| ("input", slot.as_str(), *id, false))
                    .chain(outputs.iter().map(|(slot, id, reused)| ("output", slot.as_str(), *id, *reused)));
                for (direction, slot, version_id, reused) in rows {
                    sqlx::query(
                        "INSERT INTO attempt_artifacts (task_instance_id, try_number, direction, slot, artifact_version_id, reused) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_instance_id, try_number, direction, slot) DO NOTHING",
                    )
                    .bind(task_instance_id)
                    .bind(try_number)
                    .bind(direction)
                    .bind(slot)
                    .bind(version_id)
                    .bind(reused)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            /// The versions with these ids, the edges among them (restricted to one run when
            /// given), and the attempts that wrote one of them from no input at all.
            async fn lineage_graph_in(&self, conn: &mut Conn, ids: &[i64], only_run: Option<i64>) -> Result<LineageGraph, StoreError> {
                let mut graph = LineageGraph::default();
                if ids.is_empty() {
                    return Ok(graph);
                }
                for chunk in ids.chunks(500) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new(concat!("SELECT ", version_columns!(), version_from!(), "WHERE av.id IN ("));
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(") ORDER BY av.id");
                    for row in query.build().fetch_all(&mut *conn).await? {
                        graph.versions.push(version_from_row(&row)?);
                    }
                }
                let id_set: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
                // Every output row of the versions, with its attempt's inputs (if any).
                for chunk in ids.chunks(500) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new(
                        "SELECT o.artifact_version_id AS output, i.artifact_version_id AS input, o.task_instance_id, o.try_number, \
                         ti.run_id, ti.task_id, r.dag_id \
                         FROM attempt_artifacts o \
                         JOIN task_instances ti ON ti.id = o.task_instance_id JOIN runs r ON r.id = ti.run_id \
                         LEFT JOIN attempt_artifacts i ON i.task_instance_id = o.task_instance_id AND i.try_number = o.try_number \
                         AND i.direction = 'input' \
                         WHERE o.direction = 'output' AND o.artifact_version_id IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    if let Some(run_id) = only_run {
                        query.push(" AND ti.run_id = ").push_bind(run_id);
                    }
                    query.push(" ORDER BY o.task_instance_id, o.try_number, o.artifact_version_id, i.artifact_version_id");
                    for row in query.build().fetch_all(&mut *conn).await? {
                        let output: i64 = row.try_get("output")?;
                        let input: Option<i64> = row.try_get("input")?;
                        let attempt = attempt_ref_from_row(&row)?;
                        match input {
                            Some(input) if id_set.contains(&input) => graph.edges.push(LineageEdge { input, output, attempt }),
                            Some(_) => {}
                            None => graph.sources.push((output, attempt)),
                        }
                    }
                }
                Ok(graph)
            }

            /// Points an alias at a version of a model and records the move; answers the
            /// version it pointed at before.
            async fn alias_set_in(
                &self,
                conn: &mut Conn,
                name: &str,
                alias: $crate::dag::ModelAlias,
                version: i64,
                reason: &str,
                now: Micros,
            ) -> Result<Option<i64>, StoreError> {
                let kind: Option<String> = sqlx::query_scalar(
                    "SELECT a.kind FROM artifacts a JOIN artifact_versions av ON av.name = a.name WHERE a.name = $1 AND av.version = $2",
                )
                .bind(name)
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
                match kind.as_deref() {
                    None => return Err(StoreError::NotFound(format!("model `{name}` version {version}"))),
                    Some("model") => {}
                    Some(other) => {
                        return Err(StoreError::Conflict(format!("artifact `{name}` is a {other}, not a model")));
                    }
                }
                let previous: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM model_aliases WHERE name = $1 AND alias = $2")
                        .bind(name)
                        .bind(alias.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                if previous == Some(version) {
                    return Ok(previous);
                }
                sqlx::query(
                    "INSERT INTO model_aliases (name, alias, version, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(alias.as_str())
                .bind(version)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO model_alias_events (name, alias, version, previous, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(name)
                .bind(alias.as_str())
                .bind(version)
                .bind(previous)
                .bind(reason)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                sqlx::query("UPDATE artifacts SET updated_at = $2 WHERE name = $1")
                    .bind(name)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                if self.mlflow_on() {
                    let moved = MlflowAliasSet {
                        name: name.to_owned(),
                        alias: alias.as_str().to_owned(),
                        version,
                        previous,
                        reason: reason.to_owned(),
                    };
                    self.mlflow_append_in(&mut *conn, &MlflowCall::AliasSet(moved), now).await?;
                }
                Ok(previous)
            }

            async fn task_instance_in(&self, conn: &mut Conn, run_id: i64, task_id: &str) -> Result<TaskInstanceRecord, StoreError> {
                let row = sqlx::query(concat!("SELECT ", task_instance_columns!(), " FROM task_instances WHERE run_id = $1 AND task_id = $2"))
                    .bind(run_id)
                    .bind(task_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("task `{task_id}` in run {run_id}")))?;
                task_instance_from_row(&row)
            }
        }

        #[async_trait::async_trait]
        impl Store for $Store {
            fn backend(&self) -> Backend {
                Self::BACKEND
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                let known = Self::MIGRATOR.iter().map(|migration| migration.version).max().unwrap_or(0);
                let table_exists = self.migrations_table_exists().await?;
                if table_exists {
                    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                        .fetch_one(self.pool())
                        .await?;
                    if let Some(found) = found
                        && found > known
                    {
                        return Err(StoreError::SchemaTooNew { found, known });
                    }
                }
                Self::MIGRATOR.run(self.pool()).await?;
                Ok(())
            }

            async fn dag_sync(&self, loaded: &$crate::dag::LoadedDag, now: Micros) -> Result<DagRecord, StoreError> {
                let dag_id = loaded.dag.id.as_str();
                let file_path = loaded.path.display().to_string();
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO dags (id, paused, source_hash, file_path, created_at, updated_at) \
                     VALUES ($1, FALSE, '', $2, $3, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(dag_id)
                .bind(&file_path)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Self::lock_dag(&mut *tx, dag_id).await?;
                let current: Option<(Option<i64>, String, String)> =
                    sqlx::query_as("SELECT current_version_id, source_hash, file_path FROM dags WHERE id = $1")
                        .bind(dag_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let unchanged = matches!(&current, Some((Some(_), hash, _)) if *hash == loaded.source_hash);
                if !unchanged {
                    let next_version: i64 =
                        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM dag_versions WHERE dag_id = $1")
                            .bind(dag_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let definition = serde_json::to_string(&loaded.dag)
                        .map_err(|error| StoreError::Corrupt(format!("DAG `{dag_id}` does not serialize: {error}")))?;
                    let version_id: i64 = sqlx::query_scalar(
                        "INSERT INTO dag_versions (dag_id, version, source_hash, source, definition, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(dag_id)
                    .bind(next_version)
                    .bind(&loaded.source_hash)
                    .bind(&loaded.source)
                    .bind(definition)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE dags SET current_version_id = $1, source_hash = $2, file_path = $3, updated_at = $4 WHERE id = $5")
                        .bind(version_id)
                        .bind(&loaded.source_hash)
                        .bind(&file_path)
                        .bind(now)
                        .bind(dag_id)
                        .execute(&mut *tx)
                        .await?;
                } else if current.as_ref().is_some_and(|(_, _, path)| *path != file_path) {
                    sqlx::query("UPDATE dags SET file_path = $1, updated_at = $2 WHERE id = $3")
                        .bind(&file_path)
                        .bind(now)
                        .bind(dag_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM dag_file_errors WHERE file_path = $1")
                    .bind(&file_path)
                    .execute(&mut *tx)
                    .await?;
                let record = self.dag_in(&mut *tx, dag_id).await?;
                tx.commit().await?;
                record.ok_or_else(|| StoreError::NotFound(format!("DAG `{dag_id}`")))
            }

            async fn dag_file_error_set(&self, file_path: &str, dag_id: Option<&str>, errors: &str, now: Micros) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO dag_file_errors (file_path, dag_id, errors, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (file_path) DO UPDATE SET dag_id = excluded.dag_id, errors = excluded.errors, updated_at = excluded.updated_at",
                )
                .bind(file_path)
                .bind(dag_id)
                .bind(errors)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn dag_file_error_list(&self) -> Result<Vec<DagFileErrorRecord>, StoreError> {
                let rows: Vec<(String, Option<String>, String, i64)> =
                    sqlx::query_as("SELECT file_path, dag_id, errors, updated_at FROM dag_file_errors ORDER BY file_path")
                        .fetch_all(self.pool())
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(file_path, dag_id, errors, updated_at)| DagFileErrorRecord { file_path, dag_id, errors, updated_at })
                    .collect())
            }

            async fn dag_list(&self) -> Result<Vec<DagRecord>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    dag_columns!(),
                    " FROM dags d JOIN dag_versions v ON v.id = d.current_version_id ORDER BY d.id"
                ))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(dag_from_row).collect()
            }

            async fn dag_get(&self, dag_id: &str) -> Result<Option<DagRecord>, StoreError> {
                let mut conn = self.pool().acquire().await?;
                self.dag_in(&mut conn, dag_id).await
            }

            async fn dag_set_paused(&self, dag_id: &str, paused: bool, now: Micros) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query("UPDATE dags SET paused = $1, updated_at = $2 WHERE id = $3")
                    .bind(paused)
                    .bind(now)
                    .bind(dag_id)
                    .execute(&mut *tx)
                    .await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("DAG `{dag_id}`")));
                }
                if !paused {
                    self.start_queued_in(&mut *tx, Some(dag_id), now).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn dag_version_get(&self, version_id: i64) -> Result<SharedArc<DagPlan>, StoreError> {
                if let Some(plan) = self.plans.get(version_id) {
                    return Ok(plan);
                }
                let mut conn = self.pool().acquire().await?;
                self.plan_in(&mut conn, version_id).await
            }

            async fn dag_set_last_scheduled(&self, dag_id: &str, logical_date: Micros) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE dags SET last_scheduled_at = $1 WHERE id = $2 AND (last_scheduled_at IS NULL OR last_scheduled_at < $1)",
                )
                .bind(logical_date)
                .bind(dag_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn run_create(&self, params: &RunCreateParams) -> Result<Option<RunRecord>, StoreError> {
                let mut tx = self.begin_write().await?;
                let run = self.run_insert_in(&mut *tx, params).await?;
                tx.commit().await?;
                Ok(run)
            }

            async fn run_trigger(
                &self,
                params: &RunCreateParams,
                claims: &[ClaimParams],
            ) -> Result<Option<(RunRecord, Vec<Vec<ClaimedTask>>)>, StoreError> {
                let mut tx = self.begin_write().await?;
                let Some(run) = self.run_insert_in(&mut *tx, params).await? else { return Ok(None) };
                self.start_queued_in(&mut *tx, None, params.now).await?;
                let mut claimed = Vec::with_capacity(claims.len());
                for claim in claims {
                    claimed.push(if claim.limit > 0 && !claim.queues.is_empty() {
                        self.claim_in(&mut *tx, claim).await?
                    } else {
                        Vec::new()
                    });
                }
                let run = self.run_in(&mut *tx, run.id).await?;
                tx.commit().await?;
                Ok(Some((run, claimed)))
            }

            async fn run_get(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"))
                    .bind(run_id)
                    .fetch_optional(self.pool())
                    .await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn run_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM runs WHERE ($1 IS NULL OR dag_id = $1) AND ($2 IS NULL OR state = $2) ORDER BY id DESC LIMIT $3"
                ))
                .bind(filter.dag_id.as_deref())
                .bind(filter.state.map(RunState::as_str))
                .bind(i64::from(filter.limit.unwrap_or(100)))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn run_start_queued(&self, now: Micros) -> Result<Vec<i64>, StoreError> {
                let mut tx = self.begin_write().await?;
                let started = self.start_queued_in(&mut *tx, None, now).await?;
                tx.commit().await?;
                Ok(started)
            }

            async fn run_cancel(&self, run_id: i64, now: Micros) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let dag_id: Option<String> = sqlx::query_scalar(
                    "UPDATE runs SET state = 'cancelled', ended_at = $1, unfinished_tasks = 0 \
                     WHERE id = $2 AND state IN ('queued', 'running') RETURNING dag_id",
                )
                .bind(now)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(dag_id) = dag_id else {
                    tx.commit().await?;
                    return Ok(false);
                };
                if self.mlflow_on() {
                    let run = self.run_in(&mut *tx, run_id).await?;
                    let plan = self.plan_in(&mut *tx, run.dag_version_id).await?;
                    // A run cancelled before it started never had an MLflow run to end.
                    if run.started_at.is_some() && mlflow_tracks(&plan) {
                        let run = self.mlflow_run_in(&mut *tx, run_id).await?;
                        let end = MlflowRunEnd { run, state: "cancelled".to_owned(), ended_at: now };
                        self.mlflow_append_in(&mut *tx, &MlflowCall::RunEnd(end), now).await?;
                    }
                }
                sqlx::query(
                    "UPDATE task_attempts SET state = 'cancelled', ended_at = $1, error = 'the run was cancelled' \
                     WHERE state = 'running' AND task_instance_id IN (SELECT id FROM task_instances WHERE run_id = $2 AND state = 'running')",
                )
                .bind(now)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE task_instances SET state = 'cancelled', ended_at = $1, fence = fence + 1, worker_id = NULL, \
                     lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL \
                     WHERE run_id = $2 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')",
                )
                .bind(now)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                self.start_queued_in(&mut *tx, Some(&dag_id), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn task_instance_list(&self, run_id: i64) -> Result<Vec<TaskInstanceRecord>, StoreError> {
                let mut conn = self.pool().acquire().await?;
                let run = self.run_in(&mut conn, run_id).await?;
                let plan = self.plan_in(&mut conn, run.dag_version_id).await?;
                let rows = sqlx::query(concat!("SELECT ", task_instance_columns!(), " FROM task_instances WHERE run_id = $1"))
                    .bind(run_id)
                    .fetch_all(&mut *conn)
                    .await?;
                let mut records = rows.iter().map(task_instance_from_row).collect::<Result<Vec<_>, _>>()?;
                let order: SharedHashMap<&str, usize> =
                    plan.dag.tasks.iter().enumerate().map(|(position, task)| (task.id.as_str(), position)).collect();
                records.sort_by_key(|record| order.get(record.task_id.as_str()).copied().unwrap_or(usize::MAX));
                Ok(records)
            }

            async fn attempt_list(&self, task_instance_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, try_number, worker_id, fence, state, started_at, ended_at, error, cache_hit_of FROM task_attempts \
                     WHERE task_instance_id = $1 ORDER BY try_number",
                )
                .bind(task_instance_id)
                .fetch_all(self.pool())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AttemptRecord {
                            id: row.try_get("id")?,
                            try_number: row.try_get("try_number")?,
                            worker_id: row.try_get("worker_id")?,
                            fence: row.try_get("fence")?,
                            state: row.try_get("state")?,
                            started_at: row.try_get("started_at")?,
                            ended_at: row.try_get("ended_at")?,
                            error: row.try_get("error")?,
                            cache_hit_of: row.try_get("cache_hit_of")?,
                        })
                    })
                    .collect()
            }

            async fn task_instance_claim(&self, params: &ClaimParams) -> Result<Vec<ClaimedTask>, StoreError> {
                if params.limit == 0 || params.queues.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                let claimed = self.claim_in(&mut *tx, params).await?;
                tx.commit().await?;
                Ok(claimed)
            }

            async fn task_instance_complete_and_claim(
                &self,
                completions: &[Completion],
                logs: &[LogUpload],
                claim: Option<&ClaimParams>,
                now: Micros,
            ) -> Result<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>), StoreError> {
                let batch = CompletionBatch { completions, logs, claim };
                let mut replies = self.task_instance_complete_batches(std::slice::from_ref(&batch), now).await?;
                Ok(replies.pop().unwrap_or_default())
            }

            async fn task_instance_complete_batches(
                &self,
                batches: &[CompletionBatch<'_>],
                now: Micros,
            ) -> Result<Vec<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>)>, StoreError> {
                let mut tx = self.begin_write().await?;
                let logs: Vec<LogUpload> = batches.iter().flat_map(|batch| batch.logs.iter().cloned()).collect();
                self.log_append_open_in(&mut *tx, &logs, now).await?;
                // Runs first, in id order, then task instances in id order: one global lock
                // order, so two batches finishing tasks of the same runs cannot deadlock on
                // PostgreSQL.
                let mut ids: Vec<i64> =
                    batches.iter().flat_map(|batch| batch.completions.iter().map(|completion| completion.task_instance_id)).collect();
                self.lock_runs_of(&mut *tx, &ids).await?;
                ids.sort_unstable();
                ids.dedup();
                let rows = self.completion_rows_in(&mut *tx, &ids).await?;
                let mut order: Vec<(i64, usize, usize)> = batches
                    .iter()
                    .enumerate()
                    .flat_map(|(batch, entry)| {
                        entry.completions.iter().enumerate().map(move |(index, completion)| (completion.task_instance_id, batch, index))
                    })
                    .collect();
                order.sort_unstable();
                let items: Vec<(&Completion, Option<CompletionRow>)> = order
                    .iter()
                    .map(|&(id, batch, index)| (&batches[batch].completions[index], rows.get(&id).cloned()))
                    .collect();
                let answers = self.complete_many_in(&mut *tx, items, Ending::Reported, now).await?;
                let mut outcomes: Vec<Vec<Option<Result<CompletionOutcome, Rejection>>>> =
                    batches.iter().map(|batch| vec![None; batch.completions.len()]).collect();
                // Downstream reactions wait until every completion is applied, then run once per
                // run, in run id order: a join after 500 tasks gets one counter update per batch.
                let mut finished: BTreeMap<i64, (SharedArc<DagPlan>, Vec<(String, TaskState)>)> = BTreeMap::new();
                for (&(_, batch, index), (outcome, done)) in order.iter().zip(answers) {
                    outcomes[batch][index] = Some(outcome);
                    if let Some(done) = done {
                        finished.entry(done.run_id).or_insert_with(|| (done.plan.clone(), Vec::new())).1.push((done.task_id, done.state));
                    }
                }
                for (run_id, (plan, tasks)) in finished {
                    self.settle_in(&mut *tx, run_id, &plan, tasks, now).await?;
                }
                let mut replies = Vec::with_capacity(batches.len());
                for (batch, outcomes) in batches.iter().zip(outcomes) {
                    let outcomes = outcomes.into_iter().map(|outcome| outcome.unwrap_or(Err(Rejection::Unknown(0)))).collect();
                    let claimed = match batch.claim {
                        Some(params) if params.limit > 0 && !params.queues.is_empty() => self.claim_in(&mut *tx, params).await?,
                        _ => Vec::new(),
                    };
                    replies.push((outcomes, claimed));
                }
                tx.commit().await?;
                Ok(replies)
            }

            async fn task_instance_heartbeat(&self, worker_id: &str, tasks: &[(i64, i64)], lease_expires_at: Micros) -> Result<Vec<i64>, StoreError> {
                let mut tx = self.begin_write().await?;
                let mut lost = Vec::new();
                // Task rows in id order, the order completions lock them in.
                let mut tasks = tasks.to_vec();
                tasks.sort_unstable();
                for &(task_instance_id, fence) in &tasks {
                    let updated = sqlx::query(
                        "UPDATE task_instances SET lease_expires_at = $1 WHERE id = $2 AND fence = $3 AND state = 'running' AND worker_id = $4",
                    )
                    .bind(lease_expires_at)
                    .bind(task_instance_id)
                    .bind(fence)
                    .bind(worker_id)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        lost.push(task_instance_id);
                    }
                }
                // A lease the worker lost is answered in the list; one that never existed is the
                // caller's mistake, and the whole heartbeat is refused (rolled back).
                let missing = self.missing_in(&mut *tx, &lost).await?;
                if !missing.is_empty() {
                    return Err(StoreError::NotFound(task_instances_named(&missing)));
                }
                tx.commit().await?;
                Ok(lost)
            }

            async fn task_instance_release(&self, worker_id: &str, tasks: &[(i64, i64)], now: Micros) -> Result<usize, StoreError> {
                let mut tx = self.begin_write().await?;
                let mut kept = Vec::new();
                // Task rows in id order, the order completions lock them in.
                let mut tasks = tasks.to_vec();
                tasks.sort_unstable();
                tasks.dedup();
                let ids: Vec<i64> = tasks.iter().map(|(id, _)| *id).collect();
                // A loss may fail the task, and its downstream then reacts: runs first.
                self.lock_runs_of(&mut *tx, &ids).await?;
                let error = format!("handed back by worker `{worker_id}` shutting down");
                let mut released = 0;
                for (task_instance_id, fence) in tasks {
                    // The fence names the claim; the worker id makes sure it is this worker's.
                    let held: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM task_instances WHERE id = $1 AND fence = $2 AND state = 'running' AND worker_id = $3",
                    )
                    .bind(task_instance_id)
                    .bind(fence)
                    .bind(worker_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if held.is_none() {
                        kept.push(task_instance_id);
                        continue;
                    }
                    let completion =
                        Completion { task_instance_id, fence, result: AttemptResult::Failure { error: error.clone(), retryable: true } };
                    if self.complete_in(&mut *tx, &completion, Ending::Lost, now).await?.is_ok() {
                        released += 1;
                    }
                }
                // A lease that moved on has nothing to hand back; one that never existed is the
                // caller's mistake, and nothing is handed back (rolled back).
                let missing = self.missing_in(&mut *tx, &kept).await?;
                if !missing.is_empty() {
                    return Err(StoreError::NotFound(task_instances_named(&missing)));
                }
                tx.commit().await?;
                Ok(released)
            }

            async fn task_instance_unclaim(&self, worker_id: &str, tasks: &[(i64, i64)]) -> Result<usize, StoreError> {
                let mut tx = self.begin_write().await?;
                // Task rows in id order, the order completions lock them in.
                let mut tasks = tasks.to_vec();
                tasks.sort_unstable();
                tasks.dedup();
                let mut undone = 0;
                let mut kept = Vec::new();
                for (task_instance_id, fence) in tasks {
                    // The claim is taken back whole: its try and its attempt row, which nothing
                    // refers to yet (the attempt never started, so it has no log, lineage or
                    // completion). The fence still moves on, so the claim stays dead.
                    let updated = sqlx::query(
                        "UPDATE task_instances SET state = 'queued', try_number = try_number - 1, fence = fence + 1, \
                         worker_id = NULL, lease_expires_at = NULL, timeout_at = NULL \
                         WHERE id = $1 AND fence = $2 AND state = 'running' AND worker_id = $3",
                    )
                    .bind(task_instance_id)
                    .bind(fence)
                    .bind(worker_id)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 1 {
                        sqlx::query("DELETE FROM task_attempts WHERE task_instance_id = $1 AND fence = $2 AND state = 'running'")
                            .bind(task_instance_id)
                            .bind(fence)
                            .execute(&mut *tx)
                            .await?;
                        undone += 1;
                    } else {
                        kept.push(task_instance_id);
                    }
                }
                // A lease that moved on has nothing to hand back; one that never existed is the
                // caller's mistake, and nothing is handed back (rolled back).
                let missing = self.missing_in(&mut *tx, &kept).await?;
                if !missing.is_empty() {
                    return Err(StoreError::NotFound(task_instances_named(&missing)));
                }
                tx.commit().await?;
                Ok(undone)
            }

            async fn task_instance_rescue_worker(&self, worker_id: &str, now: Micros) -> Result<usize, StoreError> {
                let mut tx = self.begin_write().await?;
                let running: Vec<(i64, i64)> =
                    sqlx::query_as("SELECT id, fence FROM task_instances WHERE state = 'running' AND worker_id = $1 ORDER BY id")
                        .bind(worker_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let ids: Vec<i64> = running.iter().map(|(id, _)| *id).collect();
                self.lock_runs_of(&mut *tx, &ids).await?;
                let mut rescued = 0;
                for (task_instance_id, fence) in running {
                    let error = format!("worker `{worker_id}` died while running the attempt");
                    let completion = Completion { task_instance_id, fence, result: AttemptResult::Failure { error, retryable: true } };
                    if self.complete_in(&mut *tx, &completion, Ending::Lost, now).await?.is_ok() {
                        rescued += 1;
                    }
                }
                tx.commit().await?;
                Ok(rescued)
            }

            async fn task_instance_maintain(&self, now: Micros) -> Result<MaintenanceReport, StoreError> {
                let mut tx = self.begin_write().await?;
                let mut report = MaintenanceReport::default();
                let retried = sqlx::query(
                    "UPDATE task_instances SET state = 'queued', next_retry_at = NULL, queued_at = $1 \
                     WHERE state = 'up_for_retry' AND next_retry_at <= $1",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                report.retried = usize::try_from(retried.rows_affected()).unwrap_or(usize::MAX);

                let expired: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
                    "SELECT id, fence, worker_id FROM task_instances WHERE state = 'running' AND lease_expires_at < $1 ORDER BY id LIMIT 1000",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let timed_out: Vec<(i64, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT id, fence, started_at, timeout_micros FROM task_instances \
                     WHERE state = 'running' AND timeout_at IS NOT NULL AND timeout_at <= $1 ORDER BY id LIMIT 1000",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let involved: Vec<i64> = expired.iter().map(|(id, ..)| *id).chain(timed_out.iter().map(|(id, ..)| *id)).collect();
                self.lock_runs_of(&mut *tx, &involved).await?;
                for (task_instance_id, fence, worker_id) in expired {
                    let error = format!(
                        "worker `{}` stopped heartbeating: its lease expired",
                        worker_id.unwrap_or_default()
                    );
                    let completion = Completion { task_instance_id, fence, result: AttemptResult::Failure { error, retryable: true } };
                    if self.complete_in(&mut *tx, &completion, Ending::Lost, now).await?.is_ok() {
                        report.rescued += 1;
                    }
                }

                for (task_instance_id, fence, _started_at, timeout_micros) in timed_out {
                    let limit = std::time::Duration::from_micros(u64::try_from(timeout_micros.unwrap_or(0)).unwrap_or(0));
                    let error = format!("timed out after {}", $crate::duration::format(limit));
                    let completion = Completion { task_instance_id, fence, result: AttemptResult::Failure { error, retryable: true } };
                    if self.complete_in(&mut *tx, &completion, Ending::TimedOut, now).await?.is_ok() {
                        report.timed_out += 1;
                    }
                }
                tx.commit().await?;
                Ok(report)
            }

            async fn task_instance_next_due(&self) -> Result<Option<Micros>, StoreError> {
                let due: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(due) FROM ( \
                       SELECT MIN(next_retry_at) AS due FROM task_instances WHERE state = 'up_for_retry' \
                       UNION ALL SELECT MIN(lease_expires_at) AS due FROM task_instances WHERE state = 'running' \
                       UNION ALL SELECT MIN(timeout_at) AS due FROM task_instances WHERE state = 'running' \
                     ) AS pending",
                )
                .fetch_one(self.pool())
                .await?;
                Ok(due)
            }

            async fn task_instance_clear(&self, run_id: i64, task_id: &str, downstream: bool, now: Micros) -> Result<Vec<String>, StoreError> {
                let mut tx = self.begin_write().await?;
                let run = self.run_in(&mut *tx, run_id).await?;
                if run.state == RunState::Cancelled || run.state == RunState::Queued {
                    return Err(StoreError::Conflict(format!("run {run_id} is {}; only started runs can have tasks cleared", run.state)));
                }
                let plan = self.plan_in(&mut *tx, run.dag_version_id).await?;
                let targets: Vec<String> = if downstream {
                    plan.with_descendants(task_id).into_iter().map(|task| task.id.clone()).collect()
                } else {
                    plan.task(task_id).map(|task| vec![task.id.clone()]).unwrap_or_default()
                };
                if targets.is_empty() {
                    return Err(StoreError::NotFound(format!("task `{task_id}` in run {run_id}")));
                }
                for target in &targets {
                    let instance = self.task_instance_in(&mut *tx, run_id, target).await?;
                    if instance.state == TaskState::Running {
                        self.close_attempt_in(&mut *tx, instance.id, "cleared while running", now).await?;
                    }
                    let retries = plan.task(target).map_or(0, |task| i64::from(task.retries));
                    sqlx::query(
                        "UPDATE task_instances SET state = 'scheduled', max_tries = try_number + $1 + 1, lost_attempts = 0, fence = fence + 1, \
                         worker_id = NULL, lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL, \
                         ended_at = NULL, error = NULL, summary = NULL WHERE id = $2",
                    )
                    .bind(retries)
                    .bind(instance.id)
                    .execute(&mut *tx)
                    .await?;
                }
                self.recompute_run_in(&mut *tx, &run, &plan, now).await?;
                tx.commit().await?;
                Ok(targets)
            }

            async fn task_instance_mark(&self, run_id: i64, task_id: &str, state: TaskState, now: Micros) -> Result<(), StoreError> {
                if !matches!(state, TaskState::Success | TaskState::Failed) {
                    return Err(StoreError::Conflict(format!("a task can be marked success or failed, not {state}")));
                }
                let mut tx = self.begin_write().await?;
                let run = self.run_in(&mut *tx, run_id).await?;
                if !matches!(run.state, RunState::Running | RunState::Success | RunState::Failed) {
                    return Err(StoreError::Conflict(format!("run {run_id} is {}; only started runs can have tasks marked", run.state)));
                }
                let plan = self.plan_in(&mut *tx, run.dag_version_id).await?;
                let instance = self.task_instance_in(&mut *tx, run_id, task_id).await?;
                if instance.state == TaskState::Running {
                    self.close_attempt_in(&mut *tx, instance.id, &format!("marked {state} by hand"), now).await?;
                }
                sqlx::query(
                    "UPDATE task_instances SET state = $1, ended_at = $2, fence = fence + 1, worker_id = NULL, \
                     lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL WHERE id = $3",
                )
                .bind(state.as_str())
                .bind(now)
                .bind(instance.id)
                .execute(&mut *tx)
                .await?;
                self.recompute_run_in(&mut *tx, &run, &plan, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn log_append(&self, chunks: &[LogUpload], now: Micros) -> Result<(), StoreError> {
                if chunks.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                let ids: Vec<i64> = chunks.iter().map(|chunk| chunk.task_instance_id).collect();
                let tries = self.tries_in(&mut *tx, &ids).await?;
                // All or nothing: a request naming an attempt that cannot take chunks stores none.
                for chunk in chunks {
                    let (id, try_number) = (chunk.task_instance_id, chunk.try_number);
                    let current = tries.get(&id).copied();
                    match LogTarget::of(current, try_number) {
                        LogTarget::Open => {}
                        LogTarget::Unknown => return Err(StoreError::NotFound(format!("task instance {id}"))),
                        LogTarget::NoAttempt => return Err(StoreError::NotFound(format!("attempt {try_number} of task instance {id}"))),
                        LogTarget::Ended => {
                            let (current_try, state) = current.unwrap_or((try_number, TaskState::Running));
                            return Err(StoreError::Conflict(format!(
                                "attempt {try_number} of task instance {id} has ended (the task instance is {state}, on try {current_try}); it takes no more log chunks"
                            )));
                        }
                    }
                }
                let chunks: Vec<&LogUpload> = chunks.iter().collect();
                self.log_append_in(&mut *tx, &chunks, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn task_instance_list_missing(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut conn = self.pool().acquire().await?;
                self.missing_in(&mut *conn, ids).await
            }

            async fn log_read(&self, task_instance_id: i64, try_number: i64, after_seq: i64, limit: u32) -> Result<Vec<LogChunk>, StoreError> {
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                    "SELECT seq, chunk, created_at FROM task_logs WHERE task_instance_id = $1 AND try_number = $2 AND seq > $3 \
                     ORDER BY seq LIMIT $4",
                )
                .bind(task_instance_id)
                .bind(try_number)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
                Ok(rows.into_iter().map(|(seq, chunk, created_at)| LogChunk { seq, chunk, created_at }).collect())
            }

            async fn task_instance_list_for_runs(&self, run_ids: &[i64]) -> Result<Vec<TaskInstanceRecord>, StoreError> {
                // Sorted and without repeats, so chunks cannot overlap and their results come
                // out in run order one after the other.
                let run_ids: Vec<i64> = run_ids.iter().copied().collect::<std::collections::BTreeSet<i64>>().into_iter().collect();
                let mut records = Vec::new();
                // At most 500 ids per statement keeps well under SQLite's bind-variable limit.
                for chunk in run_ids.chunks(500) {
                    let mut query = sqlx::QueryBuilder::<$Db>::new(concat!(
                        "SELECT ",
                        task_instance_columns!(),
                        " FROM task_instances WHERE run_id IN ("
                    ));
                    let mut list = query.separated(", ");
                    for run_id in chunk {
                        list.push_bind(*run_id);
                    }
                    query.push(") ORDER BY run_id, id");
                    for row in query.build().fetch_all(self.pool()).await? {
                        records.push(task_instance_from_row(&row)?);
                    }
                }
                Ok(records)
            }

            async fn run_list_latest_per_dag(&self, per_dag: u32) -> Result<Vec<RunRecord>, StoreError> {
                // One pass over `runs_by_dag` (dag_id, id) instead of one query per DAG.
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM (SELECT ",
                    run_columns!(),
                    ", ROW_NUMBER() OVER (PARTITION BY dag_id ORDER BY id DESC) AS newest FROM runs) ranked \
                     WHERE newest <= $1 ORDER BY dag_id, id DESC"
                ))
                .bind(i64::from(per_dag))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn task_instance_list_running(&self) -> Result<Vec<(String, TaskInstanceRecord)>, StoreError> {
                // The inner filter is exactly the predicate of the partial index
                // `task_instances_running`, so only running rows are read, however many finished
                // ones the table holds.
                let rows = sqlx::query(concat!(
                    "SELECT ti.*, r.dag_id FROM (SELECT ",
                    task_instance_columns!(),
                    " FROM task_instances WHERE state = 'running') ti JOIN runs r ON r.id = ti.run_id ORDER BY ti.id"
                ))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(|row| Ok((row.try_get("dag_id")?, task_instance_from_row(row)?))).collect()
            }

            async fn task_instance_get(&self, run_id: i64, task_id: &str) -> Result<Option<TaskInstanceRecord>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", task_instance_columns!(), " FROM task_instances WHERE run_id = $1 AND task_id = $2"))
                    .bind(run_id)
                    .bind(task_id)
                    .fetch_optional(self.pool())
                    .await?;
                row.as_ref().map(task_instance_from_row).transpose()
            }

            async fn dag_version_list(&self, dag_id: &str) -> Result<Vec<DagVersionRecord>, StoreError> {
                let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
                    "SELECT id, version, source_hash, created_at FROM dag_versions WHERE dag_id = $1 ORDER BY version DESC",
                )
                .bind(dag_id)
                .fetch_all(self.pool())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, version, source_hash, created_at)| DagVersionRecord { id, version, source_hash, created_at })
                    .collect())
            }

            async fn dag_version_get_source(&self, version_id: i64) -> Result<Option<String>, StoreError> {
                Ok(sqlx::query_scalar("SELECT source FROM dag_versions WHERE id = $1")
                    .bind(version_id)
                    .fetch_optional(self.pool())
                    .await?)
            }

            async fn artifact_list(&self, kind: Option<ArtifactKind>) -> Result<Vec<ArtifactRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, kind, latest_version, created_at, updated_at FROM artifacts \
                     WHERE latest_version > 0 AND ($1 IS NULL OR kind = $1) ORDER BY name",
                )
                .bind(kind.map(ArtifactKind::as_str))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(artifact_from_row).collect()
            }

            async fn artifact_get(&self, name: &str) -> Result<Option<ArtifactRecord>, StoreError> {
                let row = sqlx::query(
                    "SELECT name, kind, latest_version, created_at, updated_at FROM artifacts WHERE name = $1 AND latest_version > 0",
                )
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
                row.as_ref().map(artifact_from_row).transpose()
            }

            async fn artifact_version_list(&self, name: &str, limit: u32) -> Result<Vec<ArtifactVersionRecord>, StoreError> {
                let rows = sqlx::query(concat!("SELECT ", version_columns!(), version_from!(), "WHERE av.name = $1 ORDER BY av.version DESC LIMIT $2"))
                    .bind(name)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?;
                rows.iter().map(version_from_row).collect()
            }

            async fn artifact_version_get(&self, name: &str, version: Option<i64>) -> Result<Option<ArtifactVersionRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    version_columns!(),
                    version_from!(),
                    "WHERE av.name = $1 AND av.version = COALESCE($2, a.latest_version)"
                ))
                .bind(name)
                .bind(version)
                .fetch_optional(self.pool())
                .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn artifact_version_get_by_id(&self, id: i64) -> Result<Option<ArtifactVersionRecord>, StoreError> {
                let mut conn = self.pool().acquire().await?;
                self.version_by_id_in(&mut conn, id).await
            }

            async fn artifact_publish(&self, publish: &PublishParams, now: Micros) -> Result<(ArtifactVersionRecord, bool), StoreError> {
                let mut tx = self.begin_write().await?;
                let (id, reused) = self.publish_in(&mut *tx, publish, None, now).await?;
                let version = self
                    .version_by_id_in(&mut *tx, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("artifact version {id}")))?;
                tx.commit().await?;
                Ok((version, reused))
            }

            async fn lineage_get_by_version(&self, version_id: i64, direction: LineageDirection) -> Result<LineageGraph, StoreError> {
                // Walk attempts: from a version to the attempts that wrote it and on to what they
                // read (upstream), or to the attempts that read it and on to what they wrote
                // (downstream). UNION, not UNION ALL, so shared ancestors are visited once.
                let sql = match direction {
                    LineageDirection::Upstream => {
                        "WITH RECURSIVE lineage(id) AS (SELECT id FROM artifact_versions WHERE id = $1 UNION \
                         SELECT i.artifact_version_id FROM lineage l \
                         JOIN attempt_artifacts o ON o.artifact_version_id = l.id AND o.direction = 'output' \
                         JOIN attempt_artifacts i ON i.task_instance_id = o.task_instance_id AND i.try_number = o.try_number \
                         AND i.direction = 'input') SELECT id FROM lineage ORDER BY id"
                    }
                    LineageDirection::Downstream => {
                        "WITH RECURSIVE lineage(id) AS (SELECT id FROM artifact_versions WHERE id = $1 UNION \
                         SELECT o.artifact_version_id FROM lineage l \
                         JOIN attempt_artifacts i ON i.artifact_version_id = l.id AND i.direction = 'input' \
                         JOIN attempt_artifacts o ON o.task_instance_id = i.task_instance_id AND o.try_number = i.try_number \
                         AND o.direction = 'output') SELECT id FROM lineage ORDER BY id"
                    }
                };
                let mut conn = self.pool().acquire().await?;
                let ids: Vec<i64> = sqlx::query_scalar(sql).bind(version_id).fetch_all(&mut *conn).await?;
                if ids.is_empty() {
                    return Err(StoreError::NotFound(format!("artifact version {version_id}")));
                }
                self.lineage_graph_in(&mut conn, &ids, None).await
            }

            async fn lineage_get_by_run(&self, run_id: i64) -> Result<LineageGraph, StoreError> {
                let mut conn = self.pool().acquire().await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT aa.artifact_version_id FROM attempt_artifacts aa \
                     JOIN task_instances ti ON ti.id = aa.task_instance_id WHERE ti.run_id = $1 ORDER BY aa.artifact_version_id",
                )
                .bind(run_id)
                .fetch_all(&mut *conn)
                .await?;
                self.lineage_graph_in(&mut conn, &ids, Some(run_id)).await
            }

            async fn attempt_artifact_list(&self, task_instance_id: i64) -> Result<Vec<AttemptArtifact>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT aa.try_number AS slot_try, aa.direction, aa.slot, aa.reused, ",
                    version_columns!(),
                    " FROM attempt_artifacts aa JOIN artifact_versions av ON av.id = aa.artifact_version_id \
                     JOIN artifacts a ON a.name = av.name \
                     LEFT JOIN task_instances pti ON pti.id = av.task_instance_id LEFT JOIN runs pr ON pr.id = pti.run_id \
                     WHERE aa.task_instance_id = $1 ORDER BY aa.try_number, aa.direction, aa.slot"
                ))
                .bind(task_instance_id)
                .fetch_all(self.pool())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AttemptArtifact {
                            try_number: row.try_get("slot_try")?,
                            direction: row.try_get("direction")?,
                            slot: row.try_get("slot")?,
                            reused: row.try_get("reused")?,
                            version: version_from_row(row)?,
                        })
                    })
                    .collect()
            }

            async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, StoreError> {
                let mut conn = self.pool().acquire().await?;
                let row = sqlx::query(
                    "SELECT ta.id AS attempt_id, ta.task_instance_id, ta.try_number, ta.summary, ti.run_id, ti.task_id, r.dag_id \
                     FROM task_attempts ta JOIN task_instances ti ON ti.id = ta.task_instance_id JOIN runs r ON r.id = ti.run_id \
                     WHERE ta.cache_key = $1 AND ta.state = 'success' ORDER BY ta.id DESC LIMIT 1",
                )
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let attempt = attempt_ref_from_row(&row)?;
                let outputs: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT slot, artifact_version_id FROM attempt_artifacts \
                     WHERE task_instance_id = $1 AND try_number = $2 AND direction = 'output' ORDER BY slot",
                )
                .bind(attempt.task_instance_id)
                .bind(attempt.try_number)
                .fetch_all(&mut *conn)
                .await?;
                let mut resolved = Vec::with_capacity(outputs.len());
                for (slot, version_id) in outputs {
                    let Some(version) = self.version_by_id_in(&mut conn, version_id).await? else { return Ok(None) };
                    resolved.push(ResolvedInput { slot, version });
                }
                let summary = row.try_get::<Option<String>, _>("summary")?.as_deref().map(parse_json).transpose()?;
                Ok(Some(CacheHit { attempt_id: row.try_get("attempt_id")?, attempt, outputs: resolved, summary }))
            }

            async fn artifact_blob_list_in_use(&self) -> Result<Vec<String>, StoreError> {
                Ok(sqlx::query_scalar("SELECT DISTINCT sha256 FROM artifact_versions ORDER BY sha256")
                    .fetch_all(self.pool())
                    .await?)
            }

            async fn model_list(&self) -> Result<Vec<ModelRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT a.name, a.latest_version, a.updated_at, \
                     (SELECT version FROM model_aliases m WHERE m.name = a.name AND m.alias = 'production') AS production, \
                     (SELECT version FROM model_aliases m WHERE m.name = a.name AND m.alias = 'staging') AS staging \
                     FROM artifacts a WHERE a.kind = 'model' AND a.latest_version > 0 ORDER BY a.name",
                )
                .fetch_all(self.pool())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ModelRecord {
                            name: row.try_get("name")?,
                            latest_version: row.try_get("latest_version")?,
                            production: row.try_get("production")?,
                            staging: row.try_get("staging")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .collect()
            }

            async fn model_alias_get(&self, name: &str, alias: $crate::dag::ModelAlias) -> Result<Option<ArtifactVersionRecord>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    version_columns!(),
                    version_from!(),
                    "JOIN model_aliases m ON m.name = av.name AND m.version = av.version WHERE m.name = $1 AND m.alias = $2"
                ))
                .bind(name)
                .bind(alias.as_str())
                .fetch_optional(self.pool())
                .await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn model_alias_set(
                &self,
                name: &str,
                alias: $crate::dag::ModelAlias,
                version: i64,
                reason: &str,
                now: Micros,
            ) -> Result<Option<i64>, StoreError> {
                let mut tx = self.begin_write().await?;
                let previous = self.alias_set_in(&mut *tx, name, alias, version, reason, now).await?;
                tx.commit().await?;
                Ok(previous)
            }

            async fn model_alias_rollback(&self, name: &str, alias: $crate::dag::ModelAlias, now: Micros) -> Result<(i64, i64), StoreError> {
                let mut tx = self.begin_write().await?;
                let current: Option<i64> = sqlx::query_scalar("SELECT version FROM model_aliases WHERE name = $1 AND alias = $2")
                    .bind(name)
                    .bind(alias.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(current) = current else {
                    return Err(StoreError::NotFound(format!("model `{name}` with a {} version", alias.as_str())));
                };
                // The newest version older than the current one that ever held the alias: a
                // history v1 → v2 → v3 rolls back to v2, then to v1.
                let previous: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(version) FROM model_alias_events WHERE name = $1 AND alias = $2 AND version < $3",
                )
                .bind(name)
                .bind(alias.as_str())
                .bind(current)
                .fetch_one(&mut *tx)
                .await?;
                let Some(target) = previous else {
                    return Err(StoreError::Conflict(format!(
                        "model `{name}` has had no other {} version to roll back to",
                        alias.as_str()
                    )));
                };
                let reason = format!("rolled back from version {current}");
                self.alias_set_in(&mut *tx, name, alias, target, &reason, now).await?;
                tx.commit().await?;
                Ok((current, target))
            }

            async fn model_alias_event_list(&self, name: &str) -> Result<Vec<AliasEvent>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, alias, version, previous, reason, created_at FROM model_alias_events WHERE name = $1 ORDER BY id",
                )
                .bind(name)
                .fetch_all(self.pool())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AliasEvent {
                            name: row.try_get("name")?,
                            alias: parse_state(&row.try_get::<String, _>("alias")?)?,
                            version: row.try_get("version")?,
                            previous: row.try_get("previous")?,
                            reason: row.try_get("reason")?,
                            created_at: row.try_get("created_at")?,
                        })
                    })
                    .collect()
            }

            fn mlflow_set_enabled(&self, enabled: bool) {
                self.mlflow_enabled.store(enabled, std::sync::atomic::Ordering::Relaxed);
            }

            fn mlflow_enabled(&self) -> bool {
                self.mlflow_on()
            }

            async fn mlflow_outbox_append(&self, calls: &[MlflowCall], now: Micros) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                for call in calls {
                    self.mlflow_append_in(&mut *tx, call, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn mlflow_outbox_due(&self, now: Micros, limit: u32) -> Result<Vec<MlflowOutboxEvent>, StoreError> {
                // Only the head of each stream: a later event of a run waits for the earlier ones
                // to be sent (or parked), however due it is itself.
                let rows = sqlx::query(
                    "SELECT o.id, o.kind, o.stream, o.payload, o.attempts, o.next_attempt_at, o.last_error, o.parked, o.created_at \
                     FROM mlflow_outbox o WHERE o.parked = FALSE AND o.next_attempt_at <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM mlflow_outbox e WHERE e.parked = FALSE AND e.stream = o.stream AND e.id < o.id) \
                     ORDER BY o.id LIMIT $2",
                )
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(mlflow_event_from_row).collect()
            }

            async fn mlflow_outbox_list(&self, limit: u32) -> Result<Vec<MlflowOutboxEvent>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, kind, stream, payload, attempts, next_attempt_at, last_error, parked, created_at \
                     FROM mlflow_outbox ORDER BY id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
                rows.iter().map(mlflow_event_from_row).collect()
            }

            async fn mlflow_outbox_done(&self, id: i64) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let deleted = sqlx::query("DELETE FROM mlflow_outbox WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn mlflow_outbox_fail(&self, id: i64, error: &str, retry_at: Option<Micros>) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query(
                    "UPDATE mlflow_outbox SET attempts = attempts + 1, last_error = $1, \
                     next_attempt_at = COALESCE($2, next_attempt_at), parked = $3 WHERE id = $4",
                )
                .bind(error)
                .bind(retry_at)
                .bind(retry_at.is_none())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn mlflow_outbox_unpark(&self, now: Micros) -> Result<usize, StoreError> {
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query("UPDATE mlflow_outbox SET parked = FALSE, attempts = 0, next_attempt_at = $1 WHERE parked = TRUE")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(usize::try_from(updated.rows_affected()).unwrap_or(usize::MAX))
            }

            async fn mlflow_id_get(&self, kind: MlflowIdKind, key: &str) -> Result<Option<String>, StoreError> {
                let id: Option<String> = sqlx::query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
                    .bind(kind.as_str())
                    .bind(key)
                    .fetch_optional(self.pool())
                    .await?;
                Ok(id)
            }

            async fn mlflow_id_record(&self, kind: MlflowIdKind, key: &str, mlflow_id: &str, now: Micros) -> Result<String, StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO mlflow_ids (kind, kiln_key, mlflow_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (kind, kiln_key) DO NOTHING",
                )
                .bind(kind.as_str())
                .bind(key)
                .bind(mlflow_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let stored: String = sqlx::query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
                    .bind(kind.as_str())
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn leader_attempt_elect(&self, name: &str, holder: &str, ttl: std::time::Duration, now: Micros) -> Result<bool, StoreError> {
                // Through the writer queue like every write, so a busy SQLite never leaves the
                // leader waiting out the busy handler's sleeps and losing its lease.
                let mut tx = self.begin_write().await?;
                let leader: Option<String> = sqlx::query_scalar(
                    "INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leaders.holder = excluded.holder OR leaders.expires_at < $4 RETURNING holder",
                )
                .bind(name)
                .bind(holder)
                .bind(now + micros(ttl))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(leader.as_deref() == Some(holder))
            }
        }
    };
}
