//! Runs (`runs`): creating, triggering, admitting queued runs under `max_active_runs`, cancelling,
//! listing.

use super::completions::Attempts;
use super::dags::lock_dag;
use super::db::{Conn, QueryBuilder, Row, query, query_scalar};
use super::{
    ClaimParams, ClaimedTask, DagPlan, Micros, OutboxEvent, OutboxRunEnd, SqlStore, StoreError,
    micros, parse_json, parse_state,
};
use crate::state::RunState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Column lists, as macros so they can be spliced into `'static` SQL with `concat!`.
macro_rules! run_columns {
    () => {
        "id, dag_id, dag_version_id, logical_date, data_interval_start, data_interval_end, trigger_kind, params, state, created_at, started_at, ended_at"
    };
}

pub(super) fn run_from_row(row: &Row) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        dag_id: row.try_get("dag_id")?,
        dag_version_id: row.try_get("dag_version_id")?,
        logical_date: row.try_get("logical_date")?,
        data_interval_start: row.try_get("data_interval_start")?,
        data_interval_end: row.try_get("data_interval_end")?,
        trigger: TriggerKind::parse(&row.try_get::<String>("trigger_kind")?)?,
        params: parse_json(&row.try_get::<String>("params")?)?,
        state: parse_state(&row.try_get::<String>("state")?)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

impl SqlStore {
    /// Inserts a queued run; `None` if its DAG already has a run at that logical date.
    pub(super) async fn run_insert_in(
        &self,
        conn: &mut Conn<'_>,
        params: &RunCreateParams,
    ) -> Result<Option<RunRecord>, StoreError> {
        let version_id = match params.dag_version_id {
            Some(version_id) => version_id,
            None => {
                let current: Option<Option<i64>> =
                    query_scalar("SELECT current_version_id FROM dags WHERE id = $1")
                        .bind(&params.dag_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                current
                    .flatten()
                    .ok_or_else(|| StoreError::NotFound(format!("DAG `{}`", params.dag_id)))?
            }
        };
        let row = query(concat!(
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

    pub(super) async fn run_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
    ) -> Result<RunRecord, StoreError> {
        let row = query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
        run_from_row(&row)
    }

    /// Starts queued runs (of one DAG, or of all) within their DAG's `max_active_runs`.
    pub(super) async fn start_queued_in(
        &self,
        conn: &mut Conn<'_>,
        only_dag: Option<&str>,
        now: Micros,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = query(
            "SELECT r.id, r.dag_id, r.dag_version_id FROM runs r JOIN dags d ON d.id = r.dag_id \
             WHERE r.state = 'queued' AND d.paused = FALSE AND ($1 IS NULL OR r.dag_id = $1) \
             ORDER BY r.logical_date, r.id LIMIT 1000",
        )
        .bind(only_dag)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_dag: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for row in &rows {
            by_dag
                .entry(row.try_get("dag_id")?)
                .or_default()
                .push((row.try_get("id")?, row.try_get("dag_version_id")?));
        }
        let mut started = Vec::new();
        for (dag_id, candidates) in by_dag {
            lock_dag(&mut *conn, &dag_id).await?;
            let mut running: i64 =
                query_scalar("SELECT COUNT(*) FROM runs WHERE dag_id = $1 AND state = 'running'")
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
    pub(super) async fn start_run_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
        plan: &DagPlan,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let task_count = i64::try_from(plan.dag.tasks.len()).unwrap_or(i64::MAX);
        let updated = query(
            "UPDATE runs SET state = 'running', started_at = $1, unfinished_tasks = $2 WHERE id = $3 AND state = 'queued'",
        )
        .bind(now)
        .bind(task_count)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
        if updated == 0 {
            return Ok(false);
        }
        // At most 1,000 rows per statement keeps well under SQLite's bind-variable limit.
        for chunk in plan.dag.tasks.chunks(1000) {
            let mut insert = QueryBuilder::new(
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
        if self.tracks_plan(plan) {
            let run = self.outbox_run_in(&mut *conn, run_id).await?;
            self.outbox_append_in(&mut *conn, &OutboxEvent::RunStart(run), now)
                .await?;
        }
        Ok(true)
    }
}

pub(super) async fn run_create(
    store: &SqlStore,
    params: &RunCreateParams,
) -> Result<Option<RunRecord>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let run = store.run_insert_in(&mut tx, params).await?;
    tx.commit().await?;
    Ok(run)
}

pub(super) async fn run_trigger(
    store: &SqlStore,
    params: &RunCreateParams,
    claims: &[ClaimParams],
) -> Result<Option<(RunRecord, Vec<Vec<ClaimedTask>>)>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let Some(run) = store.run_insert_in(&mut tx, params).await? else {
        return Ok(None);
    };
    store.start_queued_in(&mut tx, None, params.now).await?;
    let mut claimed = Vec::with_capacity(claims.len());
    for claim in claims {
        claimed.push(if claim.limit > 0 && !claim.queues.is_empty() {
            store.claim_in(&mut tx, claim).await?
        } else {
            Vec::new()
        });
    }
    let run = store.run_in(&mut tx, run.id).await?;
    tx.commit().await?;
    Ok(Some((run, claimed)))
}

pub(super) async fn run_get(
    store: &SqlStore,
    run_id: i64,
) -> Result<Option<RunRecord>, StoreError> {
    let row = query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
    ))
    .bind(run_id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

pub(super) async fn run_list(
    store: &SqlStore,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE ($1 IS NULL OR dag_id = $1) AND ($2 IS NULL OR state = $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(filter.dag_id.as_deref())
    .bind(filter.state.map(RunState::as_str))
    .bind(i64::from(filter.limit.unwrap_or(100)))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}

pub(super) async fn run_start_queued(
    store: &SqlStore,
    now: Micros,
) -> Result<Vec<i64>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let started = store.start_queued_in(&mut tx, None, now).await?;
    tx.commit().await?;
    Ok(started)
}

pub(super) async fn run_cancel(
    store: &SqlStore,
    run_id: i64,
    now: Micros,
) -> Result<bool, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let dag_id: Option<String> = query_scalar(
        "UPDATE runs SET state = 'cancelled', ended_at = $1, unfinished_tasks = 0 \
         WHERE id = $2 AND state IN ('queued', 'running') RETURNING dag_id",
    )
    .bind(now)
    .bind(run_id)
    .fetch_optional(&mut tx)
    .await?;
    let Some(dag_id) = dag_id else {
        tx.commit().await?;
        return Ok(false);
    };
    if store.tracking().is_some() {
        let run = store.run_in(&mut tx, run_id).await?;
        let plan = store.plan_in(&mut tx, run.dag_version_id).await?;
        // A run cancelled before it started never had a run start event to end.
        if run.started_at.is_some() && store.tracks_plan(&plan) {
            let run = store.outbox_run_in(&mut tx, run_id).await?;
            let end = OutboxRunEnd {
                run,
                state: "cancelled".to_owned(),
                ended_at: now,
            };
            store
                .outbox_append_in(&mut tx, &OutboxEvent::RunEnd(end), now)
                .await?;
        }
    }
    store
        .close_attempts_in(
            &mut tx,
            Attempts::OfRun(run_id),
            "the run was cancelled",
            now,
        )
        .await?;
    query(
        "UPDATE task_instances SET state = 'cancelled', ended_at = $1, fence = fence + 1, worker_id = NULL, \
         lease_expires_at = NULL, timeout_at = NULL, next_retry_at = NULL \
         WHERE run_id = $2 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')",
    )
    .bind(now)
    .bind(run_id)
    .execute(&mut tx)
    .await?;
    store.start_queued_in(&mut tx, Some(&dag_id), now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn run_list_latest_per_dag(
    store: &SqlStore,
    per_dag: u32,
) -> Result<Vec<RunRecord>, StoreError> {
    // One pass over `runs_by_dag` (dag_id, id) instead of one query per DAG.
    let rows = query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM (SELECT ",
        run_columns!(),
        ", ROW_NUMBER() OVER (PARTITION BY dag_id ORDER BY id DESC) AS newest FROM runs) ranked \
         WHERE newest <= $1 ORDER BY dag_id, id DESC"
    ))
    .bind(i64::from(per_dag))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(run_from_row).collect()
}
