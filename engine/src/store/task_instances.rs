//! Task instances (`task_instances`): reading them, and an operator's clear and mark.

use super::completions::Attempts;
use super::db::{Conn, QueryBuilder, Row, Target, query};
use super::{Micros, SqlStore, StoreError, parse_json, parse_state};
use crate::state::{RunState, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

macro_rules! task_instance_columns {
    () => {
        "id, run_id, task_id, state, try_number, max_tries, lost_attempts, max_lost_attempts, priority, queue, worker_id, lease_expires_at, next_retry_at, fence, queued_at, started_at, ended_at, error, summary"
    };
}

pub(super) fn task_instance_from_row(row: &Row) -> Result<TaskInstanceRecord, StoreError> {
    Ok(TaskInstanceRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        task_id: row.try_get("task_id")?,
        state: parse_state(&row.try_get::<String>("state")?)?,
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
        summary: row
            .try_get::<Option<String>>("summary")?
            .as_deref()
            .map(parse_json)
            .transpose()?,
    })
}

impl SqlStore {
    /// Each task instance's current try and state, for those of `ids` that exist. A plain
    /// read: it takes no row lock, so it cannot upset the lock order of what follows.
    pub(super) async fn tries_in(
        &self,
        conn: &mut Conn<'_>,
        ids: &[i64],
    ) -> Result<HashMap<i64, (i64, TaskState)>, StoreError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut query =
                QueryBuilder::new("SELECT id, try_number, state FROM task_instances WHERE id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut *conn).await? {
                found.insert(
                    row.try_get("id")?,
                    (
                        row.try_get("try_number")?,
                        parse_state(&row.try_get::<String>("state")?)?,
                    ),
                );
            }
        }
        Ok(found)
    }

    /// The ids among `ids` that name no task instance, in order, each once.
    pub(super) async fn missing_in(
        &self,
        conn: &mut Conn<'_>,
        ids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        let found = self.tries_in(&mut *conn, ids).await?;
        let mut missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains_key(id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        Ok(missing)
    }

    pub(super) async fn task_instance_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
        task_id: &str,
    ) -> Result<TaskInstanceRecord, StoreError> {
        task_instance_find(&mut *conn, run_id, task_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task `{task_id}` in run {run_id}")))
    }
}

/// One task instance of a run, on the pool or inside a transaction.
async fn task_instance_find<'e>(
    target: impl Into<Target<'e>>,
    run_id: i64,
    task_id: &str,
) -> Result<Option<TaskInstanceRecord>, StoreError> {
    let row = query(concat!(
        "SELECT ",
        task_instance_columns!(),
        " FROM task_instances WHERE run_id = $1 AND task_id = $2"
    ))
    .bind(run_id)
    .bind(task_id)
    .fetch_optional(target)
    .await?;
    row.as_ref().map(task_instance_from_row).transpose()
}

pub(super) async fn task_instance_list(
    store: &SqlStore,
    run_id: i64,
) -> Result<Vec<TaskInstanceRecord>, StoreError> {
    let mut conn = store.pool.acquire().await?;
    let run = store.run_in(&mut conn, run_id).await?;
    let plan = store.plan_in(&mut conn, run.dag_version_id).await?;
    let rows = query(concat!(
        "SELECT ",
        task_instance_columns!(),
        " FROM task_instances WHERE run_id = $1"
    ))
    .bind(run_id)
    .fetch_all(&mut conn)
    .await?;
    let mut records = rows
        .iter()
        .map(task_instance_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let order: HashMap<&str, usize> = plan
        .dag
        .tasks
        .iter()
        .enumerate()
        .map(|(position, task)| (task.id.as_str(), position))
        .collect();
    records.sort_by_key(|record| {
        order
            .get(record.task_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    Ok(records)
}

pub(super) async fn task_instance_clear(
    store: &SqlStore,
    run_id: i64,
    task_id: &str,
    downstream: bool,
    now: Micros,
) -> Result<Vec<String>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let run = store.run_in(&mut tx, run_id).await?;
    if run.state == RunState::Cancelled || run.state == RunState::Queued {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {}; only started runs can have tasks cleared",
            run.state
        )));
    }
    let plan = store.plan_in(&mut tx, run.dag_version_id).await?;
    let targets: Vec<String> = if downstream {
        plan.with_descendants(task_id)
            .into_iter()
            .map(|task| task.id.clone())
            .collect()
    } else {
        plan.task(task_id)
            .map(|task| vec![task.id.clone()])
            .unwrap_or_default()
    };
    if targets.is_empty() {
        return Err(StoreError::NotFound(format!(
            "task `{task_id}` in run {run_id}"
        )));
    }
    for target in &targets {
        let instance = store.task_instance_in(&mut tx, run_id, target).await?;
        if instance.state == TaskState::Running {
            store
                .close_attempts_in(
                    &mut tx,
                    Attempts::OfTaskInstance(instance.id),
                    "cleared while running",
                    now,
                )
                .await?;
        }
        let retries = plan.task(target).map_or(0, |task| i64::from(task.retries));
        query(
            "UPDATE task_instances SET state = 'scheduled', max_tries = try_number + $1 + 1, lost_attempts = 0, fence = fence + 1, \
             worker_id = NULL, lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL, \
             ended_at = NULL, error = NULL, summary = NULL WHERE id = $2",
        )
        .bind(retries)
        .bind(instance.id)
        .execute(&mut tx)
        .await?;
    }
    store.recompute_run_in(&mut tx, &run, &plan, now).await?;
    tx.commit().await?;
    Ok(targets)
}

pub(super) async fn task_instance_mark(
    store: &SqlStore,
    run_id: i64,
    task_id: &str,
    state: TaskState,
    now: Micros,
) -> Result<(), StoreError> {
    if !matches!(state, TaskState::Success | TaskState::Failed) {
        return Err(StoreError::Conflict(format!(
            "a task can be marked success or failed, not {state}"
        )));
    }
    let mut tx = store.pool.begin_write().await?;
    let run = store.run_in(&mut tx, run_id).await?;
    if !matches!(
        run.state,
        RunState::Running | RunState::Success | RunState::Failed
    ) {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {}; only started runs can have tasks marked",
            run.state
        )));
    }
    let plan = store.plan_in(&mut tx, run.dag_version_id).await?;
    let instance = store.task_instance_in(&mut tx, run_id, task_id).await?;
    if instance.state == TaskState::Running {
        store
            .close_attempts_in(
                &mut tx,
                Attempts::OfTaskInstance(instance.id),
                &format!("marked {state} by hand"),
                now,
            )
            .await?;
    }
    query(
        "UPDATE task_instances SET state = $1, ended_at = $2, fence = fence + 1, worker_id = NULL, \
         lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL WHERE id = $3",
    )
    .bind(state.as_str())
    .bind(now)
    .bind(instance.id)
    .execute(&mut tx)
    .await?;
    store.recompute_run_in(&mut tx, &run, &plan, now).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn task_instance_list_missing(
    store: &SqlStore,
    ids: &[i64],
) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = store.pool.acquire().await?;
    store.missing_in(&mut conn, ids).await
}

pub(super) async fn task_instance_list_for_runs(
    store: &SqlStore,
    run_ids: &[i64],
) -> Result<Vec<TaskInstanceRecord>, StoreError> {
    // Sorted and without repeats, so chunks cannot overlap and their results come
    // out in run order one after the other.
    let run_ids: Vec<i64> = run_ids
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .collect();
    let mut records = Vec::new();
    // At most 500 ids per statement keeps well under SQLite's bind-variable limit.
    for chunk in run_ids.chunks(500) {
        let mut query = QueryBuilder::new(concat!(
            "SELECT ",
            task_instance_columns!(),
            " FROM task_instances WHERE run_id IN ("
        ));
        let mut list = query.separated(", ");
        for run_id in chunk {
            list.push_bind(*run_id);
        }
        query.push(") ORDER BY run_id, id");
        for row in query.build().fetch_all(&store.pool).await? {
            records.push(task_instance_from_row(&row)?);
        }
    }
    Ok(records)
}

pub(super) async fn task_instance_list_running(
    store: &SqlStore,
) -> Result<Vec<(String, TaskInstanceRecord)>, StoreError> {
    // The inner filter is exactly the predicate of the partial index
    // `task_instances_running`, so only running rows are read, however many finished
    // ones the table holds.
    let rows = query(concat!(
        "SELECT ti.*, r.dag_id FROM (SELECT ",
        task_instance_columns!(),
        " FROM task_instances WHERE state = 'running') ti JOIN runs r ON r.id = ti.run_id ORDER BY ti.id"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("dag_id")?, task_instance_from_row(row)?)))
        .collect()
}

pub(super) async fn task_instance_get(
    store: &SqlStore,
    run_id: i64,
    task_id: &str,
) -> Result<Option<TaskInstanceRecord>, StoreError> {
    task_instance_find(&store.pool, run_id, task_id).await
}
