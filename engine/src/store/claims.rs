//! Claims: queued task instances handed to workers under a lease and a fencing token, their inputs
//! resolved to exact artifact versions; heartbeats, hand-backs and undone claims.

use super::completions::Ending;
use super::db::{Conn, QueryBuilder, Row, query, query_scalar};
use super::task_instances::task_instances_named;
use super::{
    ArtifactVersionRecord, AttemptResult, Backend, Completion, Micros, RunRecord, SqlStore,
    StoreError, micros,
};
use crate::dag::{InputRef, OutputSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

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

/// An input a claimed task will read: the version it resolved to when the task was claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedInput {
    /// The name the task knows the input by (the key in its `inputs` table).
    pub slot: String,
    /// The version it reads.
    pub version: ArtifactVersionRecord,
}

/// Moves up to `limit` queued tasks to running in one statement. PostgreSQL skips rows another
/// claimer holds (`FOR UPDATE SKIP LOCKED`), so concurrent claimers never wait on or take the
/// same row; SQLite's write transaction already makes the claimer exclusive.
pub(super) async fn claim_rows(
    conn: &mut Conn<'_>,
    params: &ClaimParams,
    lease_expires_at: Micros,
) -> Result<Vec<Row>, sqlx::Error> {
    let sql = match conn.backend() {
        Backend::Postgres => {
            "WITH picked AS ( \
               SELECT id FROM task_instances WHERE state = 'queued' AND queue = ANY($4) \
               ORDER BY priority DESC, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             UPDATE task_instances t SET state = 'running', try_number = t.try_number + 1, fence = t.fence + 1, \
               worker_id = $1, lease_expires_at = $2, started_at = $3, \
               timeout_at = CASE WHEN t.timeout_micros IS NULL THEN NULL ELSE $3 + t.timeout_micros END, \
               ended_at = NULL, error = NULL \
             FROM picked WHERE t.id = picked.id \
             RETURNING t.id, t.run_id, t.task_id, t.try_number, t.fence, t.timeout_at"
        }
        Backend::Sqlite => {
            "UPDATE task_instances SET state = 'running', try_number = try_number + 1, fence = fence + 1, \
             worker_id = $1, lease_expires_at = $2, started_at = $3, \
             timeout_at = CASE WHEN timeout_micros IS NULL THEN NULL ELSE $3 + timeout_micros END, \
             ended_at = NULL, error = NULL \
             WHERE id IN (SELECT id FROM task_instances WHERE state = 'queued' \
                          AND queue IN (SELECT value FROM json_each($4)) ORDER BY priority DESC, id LIMIT $5) \
             RETURNING id, run_id, task_id, try_number, fence, timeout_at"
        }
    };
    query(sql)
        .bind(&params.worker_id)
        .bind(lease_expires_at)
        .bind(params.now)
        .bind(&params.queues)
        .bind(i64::from(params.limit))
        .fetch_all(conn)
        .await
}

/// A claimed attempt's inputs as stored on its attempt row: slot to version id.
pub(super) type StoredInputs = BTreeMap<String, i64>;

impl SqlStore {
    /// Claims queued tasks inside the caller's transaction (see `Store::task_instance_claim`), with
    /// their inputs resolved to exact versions. A task whose input has no version fails at
    /// once instead of being handed out.
    pub(super) async fn claim_in(
        &self,
        conn: &mut Conn<'_>,
        params: &ClaimParams,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let lease_expires_at = params.now + micros(params.lease);
        let rows = claim_rows(&mut *conn, params, lease_expires_at).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut stored_inputs: Vec<Option<String>> = Vec::with_capacity(rows.len());
        let mut unresolved: Vec<(usize, String)> = Vec::new();
        let mut runs: HashMap<i64, RunRecord> = HashMap::new();
        for row in &rows {
            let task_instance_id: i64 = row.try_get("id")?;
            let run_id: i64 = row.try_get("run_id")?;
            let task_id: String = row.try_get("task_id")?;
            let try_number: i64 = row.try_get("try_number")?;
            let fence: i64 = row.try_get("fence")?;
            if let std::collections::hash_map::Entry::Vacant(slot) = runs.entry(run_id) {
                slot.insert(self.run_in(&mut *conn, run_id).await?);
            }
            let run = &runs[&run_id];
            let plan = self.plan_in(&mut *conn, run.dag_version_id).await?;
            let task = plan.task(&task_id).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "task `{task_id}` is not in DAG version {}",
                    plan.version_id
                ))
            })?;
            let mut inputs = Vec::with_capacity(task.inputs.len());
            let mut problems = Vec::new();
            for (slot, input) in &task.inputs {
                match self
                    .resolve_input_in(&mut *conn, run_id, slot, input)
                    .await?
                {
                    Ok(version) => inputs.push(ResolvedInput {
                        slot: slot.clone(),
                        version,
                    }),
                    Err(problem) => problems.push(problem),
                }
            }
            if !problems.is_empty() {
                unresolved.push((claimed.len(), problems.join("; ")));
            }
            stored_inputs.push(if inputs.is_empty() {
                None
            } else {
                let ids: StoredInputs = inputs
                    .iter()
                    .map(|input| (input.slot.clone(), input.version.id))
                    .collect();
                Some(
                    serde_json::to_string(&ids)
                        .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                )
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
            let mut insert = QueryBuilder::new(
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
                result: AttemptResult::Failure {
                    error: problem.clone(),
                    retryable: false,
                },
            };
            let _ = self
                .complete_in(&mut *conn, &completion, Ending::Reported, params.now)
                .await?;
        }
        Ok(claimed)
    }

    /// The version an input reads, or why there is none (the task then fails).
    pub(super) async fn resolve_input_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
        slot: &str,
        input: &InputRef,
    ) -> Result<Result<ArtifactVersionRecord, String>, StoreError> {
        let id: Option<i64> = match input {
            InputRef::Task { task, output } => {
                // The output of the upstream task's successful attempt in this run.
                query_scalar(
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
                query_scalar(
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
}

pub(super) async fn task_instance_claim(
    store: &SqlStore,
    params: &ClaimParams,
) -> Result<Vec<ClaimedTask>, StoreError> {
    if params.limit == 0 || params.queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.pool.begin_write().await?;
    let claimed = store.claim_in(&mut tx, params).await?;
    tx.commit().await?;
    Ok(claimed)
}

pub(super) async fn task_instance_heartbeat(
    store: &SqlStore,
    worker_id: &str,
    tasks: &[(i64, i64)],
    lease_expires_at: Micros,
) -> Result<Vec<i64>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let mut lost = Vec::new();
    // Task rows in id order, the order completions lock them in.
    let mut tasks = tasks.to_vec();
    tasks.sort_unstable();
    for &(task_instance_id, fence) in &tasks {
        let updated = query(
            "UPDATE task_instances SET lease_expires_at = $1 WHERE id = $2 AND fence = $3 AND state = 'running' AND worker_id = $4",
        )
        .bind(lease_expires_at)
        .bind(task_instance_id)
        .bind(fence)
        .bind(worker_id)
        .execute(&mut tx)
        .await?;
        if updated == 0 {
            lost.push(task_instance_id);
        }
    }
    // A lease the worker lost is answered in the list; one that never existed is the
    // caller's mistake, and the whole heartbeat is refused (rolled back).
    let missing = store.missing_in(&mut tx, &lost).await?;
    if !missing.is_empty() {
        return Err(StoreError::NotFound(task_instances_named(&missing)));
    }
    tx.commit().await?;
    Ok(lost)
}

pub(super) async fn task_instance_release(
    store: &SqlStore,
    worker_id: &str,
    tasks: &[(i64, i64)],
    now: Micros,
) -> Result<usize, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let mut kept = Vec::new();
    // Task rows in id order, the order completions lock them in.
    let mut tasks = tasks.to_vec();
    tasks.sort_unstable();
    tasks.dedup();
    let ids: Vec<i64> = tasks.iter().map(|(id, _)| *id).collect();
    // A loss may fail the task, and its downstream then reacts: runs first.
    store.lock_runs_of(&mut tx, &ids).await?;
    let error = format!("handed back by worker `{worker_id}` shutting down");
    let mut released = 0;
    for (task_instance_id, fence) in tasks {
        // The fence names the claim; the worker id makes sure it is this worker's.
        let held: Option<i64> = query_scalar(
            "SELECT id FROM task_instances WHERE id = $1 AND fence = $2 AND state = 'running' AND worker_id = $3",
        )
        .bind(task_instance_id)
        .bind(fence)
        .bind(worker_id)
        .fetch_optional(&mut tx)
        .await?;
        if held.is_none() {
            kept.push(task_instance_id);
            continue;
        }
        let completion = Completion {
            task_instance_id,
            fence,
            result: AttemptResult::Failure {
                error: error.clone(),
                retryable: true,
            },
        };
        if store
            .complete_in(&mut tx, &completion, Ending::Lost, now)
            .await?
            .is_ok()
        {
            released += 1;
        }
    }
    // A lease that moved on has nothing to hand back; one that never existed is the
    // caller's mistake, and nothing is handed back (rolled back).
    let missing = store.missing_in(&mut tx, &kept).await?;
    if !missing.is_empty() {
        return Err(StoreError::NotFound(task_instances_named(&missing)));
    }
    tx.commit().await?;
    Ok(released)
}

pub(super) async fn task_instance_unclaim(
    store: &SqlStore,
    worker_id: &str,
    tasks: &[(i64, i64)],
) -> Result<usize, StoreError> {
    let mut tx = store.pool.begin_write().await?;
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
        let updated = query(
            "UPDATE task_instances SET state = 'queued', try_number = try_number - 1, fence = fence + 1, \
             worker_id = NULL, lease_expires_at = NULL, timeout_at = NULL \
             WHERE id = $1 AND fence = $2 AND state = 'running' AND worker_id = $3",
        )
        .bind(task_instance_id)
        .bind(fence)
        .bind(worker_id)
        .execute(&mut tx)
        .await?;
        if updated == 1 {
            query("DELETE FROM task_attempts WHERE task_instance_id = $1 AND fence = $2 AND state = 'running'")
                .bind(task_instance_id)
                .bind(fence)
                .execute(&mut tx)
                .await?;
            undone += 1;
        } else {
            kept.push(task_instance_id);
        }
    }
    // A lease that moved on has nothing to hand back; one that never existed is the
    // caller's mistake, and nothing is handed back (rolled back).
    let missing = store.missing_in(&mut tx, &kept).await?;
    if !missing.is_empty() {
        return Err(StoreError::NotFound(task_instances_named(&missing)));
    }
    tx.commit().await?;
    Ok(undone)
}
