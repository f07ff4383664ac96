//! How a run reacts when its tasks reach final states: downstream counters, trigger rules, the
//! run's outcome, and re-deriving a run after an operator changed states by hand.

use super::db::{Conn, QueryBuilder, query, query_scalar};
use super::{
    DagPlan, Micros, OutboxEvent, OutboxRunEnd, RunRecord, SqlStore, StoreError, parse_state,
};
use crate::state::{Readiness, TaskState, UpstreamCounts, UpstreamOutcome, evaluate, run_outcome};
use std::collections::{BTreeMap, HashMap};

impl SqlStore {
    /// Lets downstream tasks react to tasks of a run that just reached final states, and
    /// finishes the run when nothing is left. Works in rounds: one statement bumps the
    /// counters of every downstream task the round touches (W1's root has 500), one
    /// queues those that became ready, one per decided state ends the rest, whose own
    /// downstream is the next round. The caller holds the run's lock.
    pub(super) async fn settle_in(
        &self,
        conn: &mut Conn<'_>,
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
                let Some(outcome) = UpstreamOutcome::of(*state) else {
                    continue;
                };
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
                    let mut update = QueryBuilder::new(
                        "UPDATE task_instances SET upstream_success = upstream_success + ",
                    );
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
                        let Some(down) = plan.task(&task_id) else {
                            continue;
                        };
                        match evaluate(down.trigger_rule, counts) {
                            Readiness::Wait => {}
                            Readiness::Ready => ready.push(id),
                            decided_state @ (Readiness::Skip | Readiness::UpstreamFailed) => {
                                let next = decided_state.state().unwrap_or(TaskState::Skipped);
                                decided
                                    .entry(next.as_str())
                                    .or_default()
                                    .push((id, task_id));
                            }
                        }
                    }
                }
            }
            ready.sort_unstable();
            for chunk in ready.chunks(1000) {
                let mut update =
                    QueryBuilder::new("UPDATE task_instances SET state = 'queued', queued_at = ");
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
                    let mut update = QueryBuilder::new("UPDATE task_instances SET state = ");
                    update
                        .push_bind(state)
                        .push(", ended_at = ")
                        .push_bind(now)
                        .push(" WHERE id IN (");
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
        let remaining: Option<i64> = query_scalar(
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

    pub(super) async fn finish_run_in(
        &self,
        conn: &mut Conn<'_>,
        run_id: i64,
        plan: &DagPlan,
        now: Micros,
    ) -> Result<(), StoreError> {
        let rows = query("SELECT task_id, state FROM task_instances WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut states: HashMap<String, TaskState> = HashMap::with_capacity(rows.len());
        for row in &rows {
            states.insert(
                row.try_get("task_id")?,
                parse_state(&row.try_get::<String>("state")?)?,
            );
        }
        let outcome = run_outcome(
            plan.leaves()
                .filter_map(|leaf| states.get(&leaf.id).copied()),
        );
        let finished =
            query("UPDATE runs SET state = $1, ended_at = $2 WHERE id = $3 AND state = 'running'")
                .bind(outcome.as_str())
                .bind(now)
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
        if finished > 0 && self.tracks_plan(plan) {
            let run = self.outbox_run_in(&mut *conn, run_id).await?;
            let end = OutboxRunEnd {
                run,
                state: outcome.as_str().to_owned(),
                ended_at: now,
            };
            self.outbox_append_in(&mut *conn, &OutboxEvent::RunEnd(end), now)
                .await?;
        }
        self.start_queued_in(&mut *conn, Some(&plan.dag.id), now)
            .await?;
        Ok(())
    }

    /// Re-derives every task of a run that has not started (scheduled, queued, skipped,
    /// upstream-failed) from its upstream states, after an operator changed states by hand
    /// (clear, mark). O(tasks in the run).
    pub(super) async fn recompute_run_in(
        &self,
        conn: &mut Conn<'_>,
        run: &RunRecord,
        plan: &DagPlan,
        now: Micros,
    ) -> Result<(), StoreError> {
        let rows = query(
            "SELECT id, task_id, state, upstream_success, upstream_failed, upstream_skipped FROM task_instances WHERE run_id = $1",
        )
        .bind(run.id)
        .fetch_all(&mut *conn)
        .await?;
        #[allow(clippy::type_complexity)]
        // Per task: id, state, upstream (success, failed, skipped).
        let mut current: HashMap<String, (i64, TaskState, (i64, i64, i64))> = HashMap::new();
        for row in &rows {
            current.insert(
                row.try_get("task_id")?,
                (
                    row.try_get("id")?,
                    parse_state(&row.try_get::<String>("state")?)?,
                    (
                        row.try_get("upstream_success")?,
                        row.try_get("upstream_failed")?,
                        row.try_get("upstream_skipped")?,
                    ),
                ),
            );
        }
        let mut unfinished: i64 = 0;
        for task in &plan.dag.tasks {
            let Some(&(id, state, stored)) = current.get(&task.id) else {
                continue;
            };
            let mut counts = UpstreamCounts {
                total: i64::try_from(task.depends_on.len()).unwrap_or(i64::MAX),
                ..UpstreamCounts::default()
            };
            for upstream in &task.depends_on {
                match current
                    .get(upstream)
                    .and_then(|(_, state, _)| UpstreamOutcome::of(*state))
                {
                    Some(UpstreamOutcome::Success) => counts.success += 1,
                    Some(UpstreamOutcome::Failed) => counts.failed += 1,
                    Some(UpstreamOutcome::Skipped) => counts.skipped += 1,
                    None => {}
                }
            }
            let derived = matches!(
                state,
                TaskState::Scheduled
                    | TaskState::Queued
                    | TaskState::UpstreamFailed
                    | TaskState::Skipped
            );
            let next = if derived {
                evaluate(task.trigger_rule, counts)
                    .state()
                    .unwrap_or(TaskState::Scheduled)
            } else {
                state
            };
            if next != state || stored != (counts.success, counts.failed, counts.skipped) {
                query(
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
            query("UPDATE runs SET unfinished_tasks = 0, state = 'running', ended_at = NULL WHERE id = $1")
                .bind(run.id)
                .execute(&mut *conn)
                .await?;
            self.finish_run_in(&mut *conn, run.id, plan, now).await?;
        } else {
            query("UPDATE runs SET unfinished_tasks = $1, state = 'running', ended_at = NULL WHERE id = $2")
                .bind(unfinished)
                .bind(run.id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}
