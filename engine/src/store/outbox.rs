//! The outbox (`mlflow_outbox`, `mlflow_ids`): events written in the transaction of the
//! change they mirror, and handed to the sender in order per stream.

use super::claims::StoredInputs;
use super::completions::Verdict;
use super::db::{Conn, Row, query, query_as, query_scalar};
use super::{DagPlan, Micros, SqlStore, StoreError, parse_json, parse_state};
use serde::{Deserialize, Serialize};

/// What an outbox event asks the sender to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxEventKind {
    /// A kiln run started: the run to mirror.
    RunStart,
    /// An attempt of a tracked task ended: its nested run, params and metrics.
    TaskAttempt,
    /// A kiln run ended: its status.
    RunEnd,
    /// A deploy wrote a model version: the registered model and its version.
    ModelVersion,
    /// A model alias moved (deploy, promote, rollback): the alias to move.
    AliasSet,
}

impl OutboxEventKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxEventKind::RunStart => "run_start",
            OutboxEventKind::TaskAttempt => "task_attempt",
            OutboxEventKind::RunEnd => "run_end",
            OutboxEventKind::ModelVersion => "model_version",
            OutboxEventKind::AliasSet => "alias_set",
        }
    }
}

impl std::str::FromStr for OutboxEventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<OutboxEventKind, String> {
        match text {
            "run_start" => Ok(OutboxEventKind::RunStart),
            "task_attempt" => Ok(OutboxEventKind::TaskAttempt),
            "run_end" => Ok(OutboxEventKind::RunEnd),
            "model_version" => Ok(OutboxEventKind::ModelVersion),
            "alias_set" => Ok(OutboxEventKind::AliasSet),
            other => Err(format!("outbox event kind `{other}`")),
        }
    }
}

/// A kiln run as the mirror describes it. Every event of a run carries it, so whichever
/// reaches the mirror first can create its run there (a run that started before tracking was
/// switched on has no start event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRun {
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

/// An artifact version an attempt read or wrote, as the mirror links it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxArtifact {
    /// The input or output name in the task.
    pub slot: String,
    /// The artifact name.
    pub name: String,
    /// The version.
    pub version: i64,
    /// SHA-256 of its bytes, as lowercase hex.
    pub sha256: String,
}

/// An ended attempt of a tracked task (see [`OutboxTracking::task_kinds`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxAttempt {
    /// The run it belongs to.
    pub run: OutboxRun,
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
    pub inputs: Vec<OutboxArtifact>,
    /// The versions it wrote.
    pub outputs: Vec<OutboxArtifact>,
}

/// A kiln run that reached a final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRunEnd {
    /// The run.
    pub run: OutboxRun,
    /// `success`, `failed` or `cancelled`.
    pub state: String,
    /// When it ended.
    pub ended_at: Micros,
}

/// A model version a deploy wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxModelVersion {
    /// The model (artifact) name.
    pub name: String,
    /// kiln's version number.
    pub version: i64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// What the deploy said about it (metrics, source model, training data).
    pub metadata: Option<serde_json::Value>,
    /// The run that deployed it.
    pub run: OutboxRun,
    /// The deploying task.
    pub task_id: String,
    /// The deploying attempt.
    pub try_number: i64,
}

/// A model alias that moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxAliasSet {
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

/// One event the outbox holds for the mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxEvent {
    /// See [`OutboxEventKind::RunStart`].
    RunStart(OutboxRun),
    /// See [`OutboxEventKind::TaskAttempt`].
    TaskAttempt(Box<OutboxAttempt>),
    /// See [`OutboxEventKind::RunEnd`].
    RunEnd(OutboxRunEnd),
    /// See [`OutboxEventKind::ModelVersion`].
    ModelVersion(Box<OutboxModelVersion>),
    /// See [`OutboxEventKind::AliasSet`].
    AliasSet(OutboxAliasSet),
}

impl OutboxEvent {
    /// Its kind.
    pub fn kind(&self) -> OutboxEventKind {
        match self {
            OutboxEvent::RunStart(_) => OutboxEventKind::RunStart,
            OutboxEvent::TaskAttempt(_) => OutboxEventKind::TaskAttempt,
            OutboxEvent::RunEnd(_) => OutboxEventKind::RunEnd,
            OutboxEvent::ModelVersion(_) => OutboxEventKind::ModelVersion,
            OutboxEvent::AliasSet(_) => OutboxEventKind::AliasSet,
        }
    }

    /// The stream it is ordered in: a kiln run's events (`run:ID`) are sent one after another,
    /// and so are a model's (`model:NAME`).
    pub fn stream(&self) -> String {
        match self {
            OutboxEvent::RunStart(run) => format!("run:{}", run.run_id),
            OutboxEvent::TaskAttempt(attempt) => format!("run:{}", attempt.run.run_id),
            OutboxEvent::RunEnd(end) => format!("run:{}", end.run.run_id),
            OutboxEvent::ModelVersion(version) => format!("model:{}", version.name),
            OutboxEvent::AliasSet(alias) => format!("model:{}", alias.name),
        }
    }

    /// The payload as stored.
    pub fn payload(&self) -> Result<String, serde_json::Error> {
        match self {
            OutboxEvent::RunStart(run) => serde_json::to_string(run),
            OutboxEvent::TaskAttempt(attempt) => serde_json::to_string(attempt),
            OutboxEvent::RunEnd(end) => serde_json::to_string(end),
            OutboxEvent::ModelVersion(version) => serde_json::to_string(version),
            OutboxEvent::AliasSet(alias) => serde_json::to_string(alias),
        }
    }

    /// Reads a stored payload back.
    pub fn parse(kind: OutboxEventKind, payload: &str) -> Result<OutboxEvent, serde_json::Error> {
        Ok(match kind {
            OutboxEventKind::RunStart => OutboxEvent::RunStart(serde_json::from_str(payload)?),
            OutboxEventKind::TaskAttempt => {
                OutboxEvent::TaskAttempt(serde_json::from_str(payload)?)
            }
            OutboxEventKind::RunEnd => OutboxEvent::RunEnd(serde_json::from_str(payload)?),
            OutboxEventKind::ModelVersion => {
                OutboxEvent::ModelVersion(serde_json::from_str(payload)?)
            }
            OutboxEventKind::AliasSet => OutboxEvent::AliasSet(serde_json::from_str(payload)?),
        })
    }

    /// The kiln run it concerns, if any.
    pub fn run_id(&self) -> Option<i64> {
        match self {
            OutboxEvent::RunStart(run) => Some(run.run_id),
            OutboxEvent::TaskAttempt(attempt) => Some(attempt.run.run_id),
            OutboxEvent::RunEnd(end) => Some(end.run.run_id),
            OutboxEvent::ModelVersion(version) => Some(version.run.run_id),
            OutboxEvent::AliasSet(_) => None,
        }
    }

    /// The attempt it concerns (task instance, try), if any.
    pub fn attempt(&self) -> Option<(i64, i64)> {
        match self {
            OutboxEvent::TaskAttempt(attempt) => {
                Some((attempt.task_instance_id, attempt.try_number))
            }
            _ => None,
        }
    }

    /// The model version it concerns (name, kiln version), if any.
    pub fn model_version(&self) -> Option<(&str, i64)> {
        match self {
            OutboxEvent::ModelVersion(version) => Some((&version.name, version.version)),
            OutboxEvent::AliasSet(alias) => Some((&alias.name, alias.version)),
            _ => None,
        }
    }
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Its id: events are sent in id order within their stream.
    pub id: i64,
    /// The stream it is ordered in (see [`OutboxEvent::stream`]).
    pub stream: String,
    /// What to send.
    pub call: OutboxEvent,
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

pub(super) fn outbox_entry_from_row(row: &Row) -> Result<OutboxEntry, StoreError> {
    let kind: OutboxEventKind = parse_state(&row.try_get::<String>("kind")?)?;
    let payload: String = row.try_get("payload")?;
    let call = OutboxEvent::parse(kind, &payload).map_err(|error| {
        StoreError::Corrupt(format!(
            "payload of outbox event {}: {error}",
            row.try_get::<i64>("id").unwrap_or(0)
        ))
    })?;
    Ok(OutboxEntry {
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

/// What the outbox follows, chosen by the mirror that reads it: the store knows task kinds by
/// name only, never what a mirror does with their events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxTracking {
    /// The task kinds whose ended attempts append a `TaskAttempt` event. Only runs of a DAG
    /// with at least one of them get run events, so a DAG of shell commands appends nothing.
    pub task_kinds: &'static [&'static str],
    /// The task kinds whose model outputs append a `ModelVersion` event.
    pub model_publisher_kinds: &'static [&'static str],
}

impl OutboxTracking {
    /// Whether runs of this DAG get run events.
    pub fn tracks_dag(&self, dag: &crate::dag::Dag) -> bool {
        dag.tasks.iter().any(|task| self.tracks_task(&task.kind))
    }

    /// Whether attempts of this kind get attempt events.
    pub fn tracks_task(&self, kind: &str) -> bool {
        self.task_kinds.contains(&kind)
    }

    /// Whether model versions written by this kind get model version events.
    pub fn publishes_models(&self, kind: &str) -> bool {
        self.model_publisher_kinds.contains(&kind)
    }
}

impl SqlStore {
    /// What the outbox follows now; `None` while it is off.
    pub(super) fn tracking(&self) -> Option<OutboxTracking> {
        // A poisoned lock still holds a whole value: it is only ever replaced, never edited.
        *self
            .outbox_tracking
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this plan's runs get run events now.
    pub(super) fn tracks_plan(&self, plan: &DagPlan) -> bool {
        self.tracking()
            .is_some_and(|tracking| tracking.tracks_dag(&plan.dag))
    }

    /// Appends one event to the outbox, in the caller's transaction: the change it
    /// mirrors and the event commit or roll back together.
    pub(super) async fn outbox_append_in(
        &self,
        conn: &mut Conn<'_>,
        call: &OutboxEvent,
        now: Micros,
    ) -> Result<(), StoreError> {
        let payload = call
            .payload()
            .map_err(|error| StoreError::Corrupt(format!("outbox event payload: {error}")))?;
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

    /// A run as the mirror describes it.
    pub(super) async fn outbox_run_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
    ) -> Result<OutboxRun, StoreError> {
        let row = query(
            "SELECT r.dag_id, r.created_at, r.logical_date, r.trigger_kind, r.params, r.started_at, d.file_path, \
             v.version, v.source_hash FROM runs r JOIN dags d ON d.id = r.dag_id JOIN dag_versions v ON v.id = r.dag_version_id \
             WHERE r.id = $1",
        )
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
        Ok(OutboxRun {
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

    /// An artifact version as the mirror links it.
    pub(super) async fn outbox_artifact_in(
        &self,
        conn: &mut Conn<'_>,
        slot: &str,
        version_id: i64,
    ) -> Result<OutboxArtifact, StoreError> {
        let (name, version, sha256): (String, i64, String) =
            query_as("SELECT name, version, sha256 FROM artifact_versions WHERE id = $1")
                .bind(version_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("artifact version {version_id}")))?;
        Ok(OutboxArtifact {
            slot: slot.to_owned(),
            name,
            version,
            sha256,
        })
    }

    /// Appends the outbox event of an ended attempt of a tracked task: what it read
    /// (from its attempt row) and wrote, its worker, summary and outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn outbox_attempt_in(
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
                self.outbox_artifact_in(&mut *conn, slot, *version_id)
                    .await?,
            );
        }
        let mut outputs = Vec::with_capacity(written.len());
        for (slot, version_id, _) in written {
            outputs.push(
                self.outbox_artifact_in(&mut *conn, slot, *version_id)
                    .await?,
            );
        }
        let attempt = OutboxAttempt {
            run: self.outbox_run_in(&mut *conn, run_id).await?,
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
        self.outbox_append_in(
            &mut *conn,
            &OutboxEvent::TaskAttempt(Box::new(attempt)),
            now,
        )
        .await
    }
}

pub(super) fn outbox_set_tracking(store: &SqlStore, tracking: Option<OutboxTracking>) {
    *store
        .outbox_tracking
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = tracking;
}

pub(super) async fn outbox_append(
    store: &SqlStore,
    calls: &[OutboxEvent],
    now: Micros,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    for call in calls {
        store.outbox_append_in(&mut tx, call, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn outbox_due(
    store: &SqlStore,
    now: Micros,
    limit: u32,
) -> Result<Vec<OutboxEntry>, StoreError> {
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
    rows.iter().map(outbox_entry_from_row).collect()
}

pub(super) async fn outbox_list(
    store: &SqlStore,
    limit: u32,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let rows = query(
        "SELECT id, kind, stream, payload, attempts, next_attempt_at, last_error, parked, created_at \
         FROM mlflow_outbox ORDER BY id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(outbox_entry_from_row).collect()
}

pub(super) async fn outbox_done(store: &SqlStore, id: i64) -> Result<bool, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let deleted = query("DELETE FROM mlflow_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

pub(super) async fn outbox_fail(
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

pub(super) async fn outbox_unpark(store: &SqlStore, now: Micros) -> Result<usize, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let updated = query("UPDATE mlflow_outbox SET parked = FALSE, attempts = 0, next_attempt_at = $1 WHERE parked = TRUE")
        .bind(now)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(updated).unwrap_or(usize::MAX))
}

pub(super) async fn mirror_id_get(
    store: &SqlStore,
    kind: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let id: Option<String> =
        query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
            .bind(kind)
            .bind(key)
            .fetch_optional(&store.pool)
            .await?;
    Ok(id)
}

pub(super) async fn mirror_id_record(
    store: &SqlStore,
    kind: &str,
    key: &str,
    mlflow_id: &str,
    now: Micros,
) -> Result<String, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    query(
        "INSERT INTO mlflow_ids (kind, kiln_key, mlflow_id, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, kiln_key) DO NOTHING",
    )
    .bind(kind)
    .bind(key)
    .bind(mlflow_id)
    .bind(now)
    .execute(&mut tx)
    .await?;
    let stored: String =
        query_scalar("SELECT mlflow_id FROM mlflow_ids WHERE kind = $1 AND kiln_key = $2")
            .bind(kind)
            .bind(key)
            .fetch_one(&mut tx)
            .await?;
    tx.commit().await?;
    Ok(stored)
}
