//! Completions: an attempt's end applied under its fence, in batches, with its outputs, lineage
//! and the downstream reaction, in one transaction.

use super::db::{Conn, QueryBuilder, query, query_as};
use super::{
    Backend, CacheRecord, ClaimParams, ClaimedTask, DagPlan, LogUpload, Micros, ProducedOutput,
    SqlStore, StoreError, micros, parse_state,
};
use crate::state::{TaskState, retry_delay};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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

/// Locks runs' rows until the transaction ends, in ascending id order (the caller sorts).
/// Every transaction that finishes tasks locks the runs involved first, so two of them touching
/// the same runs serialize instead of deadlocking on the task rows in between. `NO KEY UPDATE`
/// is enough to exclude each other and does not block the foreign-key checks of rows inserted
/// for the run (attempts, logs). Nothing to lock on SQLite: the write transaction already
/// excludes every other.
pub(super) async fn lock_runs(conn: &mut Conn<'_>, run_ids: &[i64]) -> Result<(), sqlx::Error> {
    if conn.backend() == Backend::Sqlite || run_ids.is_empty() {
        return Ok(());
    }
    query("SELECT id FROM runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(run_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// A task instance as a completion reads it.
#[derive(Clone)]
pub(super) struct CompletionRow {
    pub(super) run_id: i64,
    pub(super) task_id: String,
    pub(super) state: TaskState,
    fence: i64,
    pub(super) try_number: i64,
    max_tries: i64,
    lost_attempts: i64,
    max_lost_attempts: i64,
    dag_version_id: i64,
}

/// A task instance a completion moved to a final state, whose downstream must react.
pub(super) struct Finished {
    run_id: i64,
    pub(super) plan: Arc<DagPlan>,
    task_id: String,
    state: TaskState,
}

/// A report that may apply, with what it will do.
pub(super) struct Prepared<'a> {
    /// Its position among the reports of the batch.
    pub(super) index: usize,
    pub(super) completion: &'a Completion,
    pub(super) row: CompletionRow,
    pub(super) plan: Arc<DagPlan>,
    /// The failure a success with undeclared or missing outputs turns into.
    pub(super) refused: Option<AttemptResult>,
    pub(super) verdict: Verdict,
}

impl Prepared<'_> {
    /// What the attempt is recorded as: its report, or the failure it was turned into.
    pub(super) fn result(&self) -> &AttemptResult {
        self.refused.as_ref().unwrap_or(&self.completion.result)
    }
}

/// Where a finished attempt leaves its task instance.
pub(super) struct Verdict {
    pub(super) state: TaskState,
    pub(super) attempt_state: &'static str,
    pub(super) next_retry_at: Option<Micros>,
    /// The task instance's error.
    pub(super) error: Option<String>,
    /// The attempt's own error: the same, except for a task that failed after losing
    /// too many attempts, whose error names every loss.
    pub(super) attempt_error: Option<String>,
    pub(super) summary: Option<String>,
    pub(super) outcome: CompletionOutcome,
    /// Whether the attempt was lost to the infrastructure (and is counted as such).
    pub(super) lost: bool,
}

/// Which running attempts [`SqlStore::close_attempts_in`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempts {
    /// The running attempt of one task instance.
    OfTaskInstance(i64),
    /// The running attempts of a run's running tasks.
    OfRun(i64),
}

/// How an attempt came to its end, which decides what its failure costs the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
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
pub(super) const LOSSES_NAMED: usize = 5;

impl SqlStore {
    /// Applies one attempt's end: compare-and-set on (running, fence), then the attempt row,
    /// then downstream reactions when the task instance is final.
    pub(super) async fn complete_in(
        &self,
        conn: &mut Conn<'_>,
        completion: &Completion,
        ending: Ending,
        now: Micros,
    ) -> Result<Result<CompletionOutcome, Rejection>, StoreError> {
        let id = completion.task_instance_id;
        let mut rows = self.completion_rows_in(&mut *conn, &[id]).await?;
        let mut answers = self
            .complete_many_in(
                &mut *conn,
                vec![(completion, rows.remove(&id))],
                ending,
                now,
            )
            .await?;
        let (outcome, finished) = answers.pop().unwrap_or((Err(Rejection::Unknown(id)), None));
        if let Some(finished) = finished {
            self.settle_in(
                &mut *conn,
                finished.run_id,
                &finished.plan,
                vec![(finished.task_id, finished.state)],
                now,
            )
            .await?;
        }
        Ok(outcome)
    }

    /// What a completion needs to know about its task instances, read in one statement
    /// for a whole batch.
    pub(super) async fn completion_rows_in(
        &self,
        conn: &mut Conn<'_>,
        ids: &[i64],
    ) -> Result<HashMap<i64, CompletionRow>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut query = QueryBuilder::new(
                "SELECT t.id, t.run_id, t.task_id, t.state, t.fence, t.try_number, t.max_tries, t.lost_attempts, t.max_lost_attempts, \
                 r.dag_version_id \
                 FROM task_instances t JOIN runs r ON r.id = t.run_id WHERE t.id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            if conn.backend() == Backend::Postgres {
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
                        state: parse_state(&row.try_get::<String>("state")?)?,
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
    /// A handful of statements serve the whole batch; only outputs, lineage and outbox
    /// events are written per report.
    pub(super) async fn complete_many_in(
        &self,
        conn: &mut Conn<'_>,
        items: Vec<(&Completion, Option<CompletionRow>)>,
        ending: Ending,
        now: Micros,
    ) -> Result<Vec<(Result<CompletionOutcome, Rejection>, Option<Finished>)>, StoreError> {
        #[allow(clippy::type_complexity)] // An answer per completion, in order, once known.
        let mut answers: Vec<
            Option<(Result<CompletionOutcome, Rejection>, Option<Finished>)>,
        > = (0..items.len()).map(|_| None).collect();
        // First, without writing: the verdict of every report that may apply.
        let mut prepared: Vec<Prepared<'_>> = Vec::with_capacity(items.len());
        for (index, (completion, row)) in items.into_iter().enumerate() {
            let id = completion.task_instance_id;
            let Some(row) = row else {
                answers[index] = Some((Err(Rejection::Unknown(id)), None));
                continue;
            };
            if row.state != TaskState::Running || row.fence != completion.fence {
                let stale = Rejection::Stale {
                    task_instance_id: id,
                    state: row.state,
                    current: row.fence,
                    reported: completion.fence,
                };
                answers[index] = Some((Err(stale), None));
                continue;
            }
            let plan = self.plan_in(&mut *conn, row.dag_version_id).await?;
            // A success whose outputs do not match the task's declaration is a failure
            // that retrying cannot fix.
            let refused = match (&completion.result, plan.task(&row.task_id)) {
                (AttemptResult::Success { outputs, .. }, Some(task)) => self
                    .check_outputs_in(
                        &mut *conn,
                        &plan.dag.id,
                        &row.task_id,
                        &task.outputs,
                        outputs,
                    )
                    .await?
                    .err()
                    .map(|error| AttemptResult::Failure {
                        error,
                        retryable: false,
                    }),
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
                AttemptResult::Failure { error, .. }
                    if ending == Ending::Lost && row.lost_attempts < row.max_lost_attempts =>
                {
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
                AttemptResult::Failure { error, retryable }
                    if *retryable && row.try_number < row.max_tries =>
                {
                    let at = match plan.task(&row.task_id) {
                        Some(task) => {
                            // The backoff follows the task's own tries: lost attempts
                            // were not its failures.
                            let retry = u32::try_from(row.try_number - row.lost_attempts)
                                .unwrap_or(u32::MAX);
                            let jitter: f64 = rand::random();
                            now + micros(retry_delay(
                                task.retry_delay,
                                task.max_retry_delay,
                                task.retry_backoff,
                                retry,
                                jitter,
                            ))
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
            prepared.push(Prepared {
                index,
                completion,
                row,
                plan,
                refused,
                verdict,
            });
        }

        // Then the compare-and-set on (running, fence) for all of them in one statement,
        // and one for their attempt rows. A statement updates a row at most once, so two
        // reports for one task instance go in separate rounds; the second then finds it
        // no longer running.
        let mut applied: Vec<Prepared<'_>> = Vec::with_capacity(prepared.len());
        // The task instances this batch already moved on, and where to.
        let mut moved: HashMap<i64, TaskState> = HashMap::new();
        while !prepared.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<Prepared<'_>>, Vec<Prepared<'_>>) = prepared
                .into_iter()
                .partition(|item| seen.insert(item.completion.task_instance_id));
            prepared = later;
            let (round, refused): (Vec<Prepared<'_>>, Vec<Prepared<'_>>) = round
                .into_iter()
                .partition(|item| !moved.contains_key(&item.completion.task_instance_id));
            for item in refused {
                let id = item.completion.task_instance_id;
                let state = moved.get(&id).copied().unwrap_or(item.row.state);
                let stale = Rejection::Stale {
                    task_instance_id: id,
                    state,
                    current: item.row.fence,
                    reported: item.completion.fence,
                };
                answers[item.index] = Some((Err(stale), None));
            }
            if round.is_empty() {
                continue;
            }
            let mut updated = std::collections::HashSet::new();
            for chunk in round.chunks(500) {
                let mut update = QueryBuilder::new(
                    "WITH done (id, fence, state, next_retry_at, ended_at, error, summary, lost, queued_at) AS (",
                );
                update.push_values(chunk, |mut values, item| {
                    let verdict = &item.verdict;
                    values
                        .push_bind(item.completion.task_instance_id)
                        .push_bind(item.completion.fence)
                        .push_bind(verdict.state.as_str())
                        .push_bind(verdict.next_retry_at)
                        .push_bind(if verdict.state.is_final() {
                            Some(now)
                        } else {
                            None
                        })
                        .push_bind(verdict.error.clone())
                        .push_bind(verdict.summary.clone())
                        .push_bind(i64::from(verdict.lost))
                        .push_bind(if verdict.state == TaskState::Queued {
                            Some(now)
                        } else {
                            None
                        });
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
                    updated.insert(row.try_get::<i64>("id")?);
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
            let mut update = QueryBuilder::new(
                "WITH done (task_instance_id, try_number, state, error, summary, cache_key, cache_hit_of) AS (",
            );
            update.push_values(chunk, |mut values, item| {
                let cache = match item.result() {
                    AttemptResult::Success {
                        cache: Some(cache), ..
                    } => Some(cache),
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

        // Last, what only some attempts have: outputs, lineage, outbox events.
        for item in applied {
            self.record_outputs_in(&mut *conn, &item, now).await?;
            let Prepared {
                index,
                row,
                plan,
                verdict,
                ..
            } = item;
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

    /// The error of a task that has lost one attempt more than it may: how many it lost,
    /// and why each was lost (the latest [`LOSSES_NAMED`] when there are more), oldest
    /// first. `latest` is the reason of the loss being counted now.
    pub(super) async fn losses_in(
        &self,
        conn: &mut Conn<'_>,
        task_instance_id: i64,
        row: &CompletionRow,
        latest: &str,
    ) -> Result<String, StoreError> {
        let named = i64::try_from(LOSSES_NAMED).unwrap_or(i64::MAX) - 1;
        // The earlier losses since the task last started afresh are its newest
        // `lost_attempts` lost attempts; any older ones came before a clear.
        let mut losses: Vec<(i64, Option<String>)> = query_as(
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
            .map(|(try_number, reason)| {
                format!(
                    "attempt {try_number}: {}",
                    reason.as_deref().unwrap_or("no reason recorded")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let attempts = if total == 1 { "attempt" } else { "attempts" };
        let which = if i64::try_from(losses.len()).unwrap_or(i64::MAX) < total {
            "; the latest"
        } else {
            ""
        };
        Ok(format!(
            "lost {total} {attempts} to the infrastructure (`max_lost_attempts` is {}){which}: {listed}",
            row.max_lost_attempts
        ))
    }

    /// Ends running attempts that an operator or a cancel moved on, as `cancelled` with
    /// `reason`: the one way besides [`SqlStore::complete_in`] that an attempt ends, for
    /// attempts that did not end on their own.
    pub(super) async fn close_attempts_in(
        &self,
        conn: &mut Conn<'_>,
        attempts: Attempts,
        reason: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        let (sql, id) = match attempts {
            Attempts::OfTaskInstance(id) => (
                "UPDATE task_attempts SET state = 'cancelled', ended_at = $1, error = $2 \
                 WHERE state = 'running' AND task_instance_id = $3",
                id,
            ),
            Attempts::OfRun(run_id) => (
                "UPDATE task_attempts SET state = 'cancelled', ended_at = $1, error = $2 \
                 WHERE state = 'running' AND task_instance_id IN \
                 (SELECT id FROM task_instances WHERE run_id = $3 AND state = 'running')",
                run_id,
            ),
        };
        query(sql)
            .bind(now)
            .bind(reason)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Locks the runs of these task instances, in ascending run id, before any task row is
    /// touched: the one lock order that keeps concurrent completions, rescues and
    /// timeouts on PostgreSQL from deadlocking.
    pub(super) async fn lock_runs_of(
        &self,
        conn: &mut Conn<'_>,
        task_instance_ids: &[i64],
    ) -> Result<(), StoreError> {
        if conn.backend() == Backend::Sqlite || task_instance_ids.is_empty() {
            // One writer at a time: there is no lock order to keep, so skip the lookups.
            return Ok(());
        }
        let mut runs = Vec::new();
        for chunk in task_instance_ids.chunks(1000) {
            let mut query =
                QueryBuilder::new("SELECT DISTINCT run_id FROM task_instances WHERE id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut *conn).await? {
                runs.push(row.try_get::<i64>("run_id")?);
            }
        }
        runs.sort_unstable();
        runs.dedup();
        lock_runs(&mut *conn, &runs).await?;
        Ok(())
    }
}

pub(super) async fn task_instance_complete_batches(
    store: &SqlStore,
    batches: &[CompletionBatch<'_>],
    now: Micros,
) -> Result<Vec<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>)>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let logs: Vec<LogUpload> = batches
        .iter()
        .flat_map(|batch| batch.logs.iter().cloned())
        .collect();
    store.log_append_open_in(&mut tx, &logs, now).await?;
    // Runs first, in id order, then task instances in id order: one global lock
    // order, so two batches finishing tasks of the same runs cannot deadlock on
    // PostgreSQL.
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|batch| {
            batch
                .completions
                .iter()
                .map(|completion| completion.task_instance_id)
        })
        .collect();
    store.lock_runs_of(&mut tx, &ids).await?;
    ids.sort_unstable();
    ids.dedup();
    let rows = store.completion_rows_in(&mut tx, &ids).await?;
    let mut order: Vec<(i64, usize, usize)> = batches
        .iter()
        .enumerate()
        .flat_map(|(batch, entry)| {
            entry
                .completions
                .iter()
                .enumerate()
                .map(move |(index, completion)| (completion.task_instance_id, batch, index))
        })
        .collect();
    order.sort_unstable();
    let items: Vec<(&Completion, Option<CompletionRow>)> = order
        .iter()
        .map(|&(id, batch, index)| (&batches[batch].completions[index], rows.get(&id).cloned()))
        .collect();
    let answers = store
        .complete_many_in(&mut tx, items, Ending::Reported, now)
        .await?;
    let mut outcomes: Vec<Vec<Option<Result<CompletionOutcome, Rejection>>>> = batches
        .iter()
        .map(|batch| vec![None; batch.completions.len()])
        .collect();
    // Downstream reactions wait until every completion is applied, then run once per
    // run, in run id order: a join after 500 tasks gets one counter update per batch.
    #[allow(clippy::type_complexity)] // Per run: its plan, and the tasks that finished.
    let mut finished: BTreeMap<i64, (Arc<DagPlan>, Vec<(String, TaskState)>)> = BTreeMap::new();
    for (&(_, batch, index), (outcome, done)) in order.iter().zip(answers) {
        outcomes[batch][index] = Some(outcome);
        if let Some(done) = done {
            finished
                .entry(done.run_id)
                .or_insert_with(|| (done.plan.clone(), Vec::new()))
                .1
                .push((done.task_id, done.state));
        }
    }
    for (run_id, (plan, tasks)) in finished {
        store.settle_in(&mut tx, run_id, &plan, tasks, now).await?;
    }
    let mut replies = Vec::with_capacity(batches.len());
    for (batch, outcomes) in batches.iter().zip(outcomes) {
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Err(Rejection::Unknown(0))))
            .collect();
        let claimed = match batch.claim {
            Some(params) if params.limit > 0 && !params.queues.is_empty() => {
                store.claim_in(&mut tx, params).await?
            }
            _ => Vec::new(),
        };
        replies.push((outcomes, claimed));
    }
    tx.commit().await?;
    Ok(replies)
}
