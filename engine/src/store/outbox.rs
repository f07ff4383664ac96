//! The MLflow outbox (`mlflow_outbox`, `mlflow_ids`): events written in the transaction of the
//! change they mirror, and handed to the sender in order per stream.

use super::claims::StoredInputs;
use super::completions::Verdict;
use super::db::{Conn, Row, query, query_as, query_scalar};
use super::{DagPlan, Micros, SqlStore, StoreError, parse_json, parse_state};
use serde::{Deserialize, Serialize};

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

pub(super) fn mlflow_event_from_row(row: &Row) -> Result<MlflowOutboxEvent, StoreError> {
    let kind: MlflowEventKind = parse_state(&row.try_get::<String>("kind")?)?;
    let payload: String = row.try_get("payload")?;
    let call = MlflowCall::parse(kind, &payload).map_err(|error| {
        StoreError::Corrupt(format!(
            "payload of MLflow event {}: {error}",
            row.try_get::<i64>("id").unwrap_or(0)
        ))
    })?;
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
pub(super) fn mlflow_tracks(plan: &DagPlan) -> bool {
    crate::mlflow::tracks(&plan.dag)
}

impl SqlStore {
    pub(super) fn mlflow_on(&self) -> bool {
        self.mlflow_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends one MLflow call to the outbox, in the caller's transaction: the change it
    /// mirrors and the event commit or roll back together.
    pub(super) async fn mlflow_append_in(
        &self,
        conn: &mut Conn<'_>,
        call: &MlflowCall,
        now: Micros,
    ) -> Result<(), StoreError> {
        let payload = call
            .payload()
            .map_err(|error| StoreError::Corrupt(format!("MLflow event payload: {error}")))?;
        let attempt = call.attempt();
        let model = call.model_version();
        query(
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
    pub(super) async fn mlflow_run_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
    ) -> Result<MlflowRun, StoreError> {
        let row = query(
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
            params: parse_json(&row.try_get::<String>("params")?)?,
            dag_file: row.try_get("file_path")?,
            dag_version: row.try_get("version")?,
            dag_source_sha256: row.try_get("source_hash")?,
            started_at: row.try_get("started_at")?,
        })
    }

    /// An artifact version as the MLflow mirror links it.
    pub(super) async fn mlflow_artifact_in(
        &self,
        conn: &mut Conn<'_>,
        slot: &str,
        version_id: i64,
    ) -> Result<MlflowArtifact, StoreError> {
        let (name, version, sha256): (String, i64, String) =
            query_as("SELECT name, version, sha256 FROM artifact_versions WHERE id = $1")
                .bind(version_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("artifact version {version_id}")))?;
        Ok(MlflowArtifact {
            slot: slot.to_owned(),
            name,
            version,
            sha256,
        })
    }

    /// Appends the MLflow event of an ended attempt of a tracked task: what it read
    /// (from its attempt row) and wrote, its worker, summary and outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mlflow_attempt_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
        task: &crate::dag::Task,
        task_instance_id: i64,
        try_number: i64,
        verdict: &Verdict,
        written: &[(String, i64, bool)],
        now: Micros,
    ) -> Result<(), StoreError> {
        let row = query("SELECT worker_id, started_at, inputs FROM task_attempts WHERE task_instance_id = $1 AND try_number = $2")
            .bind(task_instance_id)
            .bind(try_number)
            .fetch_optional(&mut *conn)
            .await?;
        let (worker_id, started_at, stored_inputs) = match &row {
            Some(row) => (
                row.try_get::<String>("worker_id")?,
                row.try_get::<Micros>("started_at")?,
                row.try_get::<Option<String>>("inputs")?,
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
            inputs.push(
                self.mlflow_artifact_in(&mut *conn, slot, *version_id)
                    .await?,
            );
        }
        let mut outputs = Vec::with_capacity(written.len());
        for (slot, version_id, _) in written {
            outputs.push(
                self.mlflow_artifact_in(&mut *conn, slot, *version_id)
                    .await?,
            );
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
        self.mlflow_append_in(&mut *conn, &MlflowCall::TaskAttempt(Box::new(attempt)), now)
            .await
    }
}

pub(super) fn mlflow_set_enabled(store: &SqlStore, enabled: bool) {
    store
        .mlflow_enabled
        .store(enabled, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn mlflow_enabled(store: &SqlStore) -> bool {
    store.mlflow_on()
}

pub(super) async fn mlflow_outbox_append(
    store: &SqlStore,
    calls: &[MlflowCall],
    now: Micros,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    for call in calls {
        store.mlflow_append_in(&mut tx, call, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn mlflow_outbox_due(
    store: &SqlStore,
    now: Micros,
    limit: u32,
) -> Result<Vec<MlflowOutboxEvent>, StoreError> {
    // Only the head of each stream: a later event of a run waits for the earlier ones
    // to be sent (or parked), however due it is itself.
    let rows = query(
        "SELECT o.id, o.kind, o.stream, o.payload, o.attempts, o.next_attempt_at, o.last_error, o.parked, o.created_at \
         FROM mlflow_outbox o WHERE o.parked = FALSE AND o.next_attempt_at <= $1 \
         AND NOT EXISTS (SELECT 1 FROM mlflow_outbox e WHERE e.parked = FALSE AND e.stream = o.stream AND e.id < o.id) \
         ORDER BY o.id LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(mlflow_event_from_row).collect()
}

pub(super) async fn mlflow_outbox_list(
    store: &SqlStore,
    limit: u32,
) -> Result<Vec<MlflowOutboxEvent>, StoreError> {
    let rows = query(
        "SELECT id, kind, stream, payload, attempts, next_attempt_at, last_error, parked, created_at \
         FROM mlflow_outbox ORDER BY id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(mlflow_event_from_row).collect()
}

pub(super) async fn mlflow_outbox_done(store: &SqlStore, id: i64) -> Result<bool, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let deleted = query("DELETE FROM mlflow_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

pub(super) async fn mlflow_outbox_fail(
    store: &SqlStore,
    id: i64,
    error: &str,
    retry_at: Option<Micros>,
) -> Result<bool, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let updated = query(
        "UPDATE mlflow_outbox SET attempts = attempts + 1, last_error = $1, \
         next_attempt_at = COALESCE($2, next_attempt_at), parked = $3 WHERE id = $4",
    )
    .bind(error)
    .bind(retry_at)
    .bind(retry_at.is_none())
    .bind(id)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(updated > 0)
}

pub(super) async fn mlflow_outbox_unpark(
    store: &SqlStore,
    now: Micros,
) -> Result<usize, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let updated = query("UPDATE mlflow_outbox SET parked = FALSE, attempts = 0, next_attempt_at = $1 WHERE parked = TRUE")
        .bind(now)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(updated).unwrap_or(usize::MAX))
}

pub(super) async fn mlflow_id_get(
    store: &SqlStore,
    kind: MlflowIdKind,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let id: Option<String> =
        query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&store.pool)
            .await?;
    Ok(id)
}

pub(super) async fn mlflow_id_record(
    store: &SqlStore,
    kind: MlflowIdKind,
    key: &str,
    mlflow_id: &str,
    now: Micros,
) -> Result<String, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    query(
        "INSERT INTO mlflow_ids (kind, kiln_key, mlflow_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, kiln_key) DO NOTHING",
    )
    .bind(kind.as_str())
    .bind(key)
    .bind(mlflow_id)
    .bind(now)
    .execute(&mut tx)
    .await?;
    let stored: String =
        query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
            .bind(kind.as_str())
            .bind(key)
            .fetch_one(&mut tx)
            .await?;
    tx.commit().await?;
    Ok(stored)
}
