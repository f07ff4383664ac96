//! The scheduler: turns schedules into runs, starts queued runs, requeues retries, rescues tasks
//! whose worker vanished, and keeps the store in step with the DAG folder. It also carries the
//! operations the CLI, the API and the console use (trigger, cancel, clear, mark, pause,
//! backfill).
//!
//! Work that follows from an event (a run was triggered, a task finished) happens inside that
//! event's transaction, so nothing waits for a tick. The loop itself only handles what is due at
//! a time: cron ticks, retry times, lease expiries, timeouts. It sleeps until the earliest of
//! those (or a wake-up), so an idle scheduler issues a handful of queries every few seconds.

mod completions;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dag::{Dag, LoadedDag, load_dir};
use crate::duties::{self, DutyHealth, Failed, LEADER_DUTY};
use crate::plugin::PluginRegistry;
use crate::state::TaskState;
use crate::store::{
    ClaimParams, ClaimedTask, Completion, CompletionOutcome, DagRecord, LogUpload, Micros,
    Rejection, RunCreateParams, RunRecord, Store, StoreError, TriggerKind, now_micros,
};

/// How long leadership lasts without renewal; a crashed leader is replaced after this.
const LEADER_TTL: Duration = Duration::from_secs(10);
/// How often the leader renews, and the longest the loop sleeps.
const LEADER_RENEW: Duration = Duration::from_secs(3);
/// How often the DAG folder is re-read.
const DAG_REFRESH: Duration = Duration::from_secs(5);

/// The duties of the timed loop, as [`Scheduler::health`] names them.
const DAG_SYNC_DUTY: &str = "dag_sync";
const SCHEDULE_DUTY: &str = "schedule";
const MAINTENANCE_DUTY: &str = "maintenance";

/// A scheduler operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The DAG folder could not be read.
    #[error("cannot read the DAG folder {path}: {source}")]
    DagFolder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Loading the DAG folder panicked (a bug; the files are read again at the next refresh).
    #[error("loading the DAG folder panicked: {0}")]
    DagLoaderPanicked(String),
    /// No such DAG.
    #[error("DAG `{0}` not found")]
    UnknownDag(String),
    /// Trigger params did not match the DAG's param types.
    #[error("invalid params for DAG `{dag_id}`: {problems}")]
    InvalidParams {
        /// The DAG.
        dag_id: String,
        /// Every problem, separated by `; `.
        problems: String,
    },
    /// The request makes no sense for this DAG or range.
    #[error("{0}")]
    Invalid(String),
}

/// What one pass over the DAG folder found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DagSyncReport {
    /// DAG ids that loaded.
    pub loaded: Vec<String>,
    /// Files that did not, with their problems.
    pub failed: Vec<(String, String)>,
}

/// The scheduler of one kiln server. Several may share a PostgreSQL database: only the elected
/// leader runs the timed loop, and every operation is safe to run on any of them.
pub struct Scheduler {
    store: Arc<dyn Store>,
    registry: PluginRegistry,
    dags_dir: PathBuf,
    holder: String,
    wake: Notify,
    work_available: Arc<Notify>,
    completions: completions::CompletionQueue,
    claim_waiters: ClaimWaiters,
    health: DutyHealth,
}

/// A worker's claim waiting for work, which a trigger may answer.
struct ClaimWaiter {
    ticket: u64,
    params: ClaimParams,
    reply: tokio::sync::oneshot::Sender<Vec<ClaimedTask>>,
}

/// The claims waiting for work, so that a trigger can claim for them in its own transaction
/// instead of committing first and letting them claim in another (one commit instead of two
/// before the first task runs).
#[derive(Default)]
struct ClaimWaiters {
    next_ticket: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<Vec<ClaimWaiter>>,
}

impl ClaimWaiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ClaimWaiter>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(
        &self,
        params: ClaimParams,
    ) -> (u64, tokio::sync::oneshot::Receiver<Vec<ClaimedTask>>) {
        let ticket = self
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.lock().push(ClaimWaiter {
            ticket,
            params,
            reply,
        });
        (ticket, receiver)
    }

    fn withdraw(&self, ticket: u64) -> bool {
        let mut waiting = self.lock();
        let before = waiting.len();
        waiting.retain(|waiter| waiter.ticket != ticket);
        waiting.len() < before
    }

    /// Takes every waiting claim whose worker still listens.
    fn take(&self) -> Vec<ClaimWaiter> {
        let mut waiting = std::mem::take(&mut *self.lock());
        waiting.retain(|waiter| !waiter.reply.is_closed());
        waiting
    }
}

/// Sends each waiting claim the tasks claimed for it; tasks whose claim went away meanwhile (its
/// worker's connection closed) are taken back at once rather than left to their lease, as
/// claims that never happened: they never ran, so they cost the task neither a try nor a loss.
async fn hand_over(store: &dyn Store, waiting: Vec<ClaimWaiter>, claimed: Vec<Vec<ClaimedTask>>) {
    for (waiter, tasks) in waiting.into_iter().zip(claimed) {
        let worker_id = waiter.params.worker_id.clone();
        if let Err(tasks) = waiter.reply.send(tasks)
            && !tasks.is_empty()
        {
            let running: Vec<(i64, i64)> = tasks
                .iter()
                .map(|task| (task.task_instance_id, task.fence))
                .collect();
            if let Err(error) = store.task_instance_unclaim(&worker_id, &running).await {
                tracing::warn!(message = "Could not hand back tasks claimed for a worker that stopped waiting; their leases will expire.", %error);
            }
        }
    }
}

impl Scheduler {
    /// A scheduler over `store`, reading DAG files from `dags_dir`. `holder` names this process
    /// in leader election and must be unique among schedulers on the same database.
    pub fn new(
        store: Arc<dyn Store>,
        registry: PluginRegistry,
        dags_dir: PathBuf,
        holder: String,
    ) -> Scheduler {
        Scheduler {
            store,
            registry,
            dags_dir,
            holder,
            wake: Notify::new(),
            work_available: Arc::new(Notify::new()),
            completions: completions::CompletionQueue::default(),
            claim_waiters: ClaimWaiters::default(),
            health: DutyHealth::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Signalled whenever tasks may have become claimable; workers' long polls wait on it.
    pub fn work_available(&self) -> Arc<Notify> {
        self.work_available.clone()
    }

    /// Reads the DAG folder and records every DAG (a new version when a file changed) and every
    /// file that failed to load; a broken file keeps its DAG's last good version active.
    pub async fn sync_dags(&self) -> Result<DagSyncReport, SchedulerError> {
        // Parsing is CPU work (a 100,000-task file takes a while): off the async threads, so
        // that requests and the loop's other duties go on meanwhile.
        let dags_dir = self.dags_dir.clone();
        let registry = self.registry.clone();
        let loaded = tokio::task::spawn_blocking(move || load_dir(&dags_dir, &registry))
            .await
            .map_err(|error| SchedulerError::DagLoaderPanicked(error.to_string()))?;
        let set = loaded.map_err(|source| SchedulerError::DagFolder {
            path: self.dags_dir.clone(),
            source,
        })?;
        let now = now_micros();
        let mut report = DagSyncReport::default();
        for loaded in &set.dags {
            self.store.dag_sync(loaded, now).await?;
            report.loaded.push(loaded.dag.id.clone());
        }
        for error in &set.errors {
            let path = error.path.display().to_string();
            self.store
                .dag_file_error_set(&path, None, &error.to_string(), now)
                .await?;
            report.failed.push((path, error.to_string()));
        }
        Ok(report)
    }

    /// Creates the runs whose schedule time has come, for every unpaused scheduled DAG, and
    /// returns the earliest future time a run will be due.
    pub async fn schedule_due(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, SchedulerError> {
        let mut next_due: Option<DateTime<Utc>> = None;
        for record in self.store.dag_list().await? {
            let plan = self
                .store
                .dag_version_get(record.current_version_id)
                .await?;
            let dag = &plan.dag;
            let Some(schedule) = &dag.schedule else {
                continue;
            };
            if record.paused {
                continue;
            }
            let last = record
                .last_scheduled_at
                .and_then(|micros| Utc.timestamp_micros(micros).single());
            let ticks = due_ticks(dag, last, now);
            let params = if ticks.is_empty() {
                serde_json::Value::Null
            } else {
                checked_params(dag, &serde_json::Map::new())?
            };
            for tick in ticks {
                let created = self
                    .store
                    .run_create(&tick_run(
                        dag,
                        record.current_version_id,
                        tick,
                        TriggerKind::Schedule,
                        &params,
                        now.timestamp_micros(),
                    ))
                    .await?;
                if created.is_some() {
                    tracing::info!(message = "Scheduled a run.", dag_id = %dag.id, logical_date = %tick.to_rfc3339());
                }
                self.store
                    .dag_set_last_scheduled(&dag.id, tick.timestamp_micros())
                    .await?;
            }
            let after = last.map_or(now, |last| last.max(now));
            if let Some(next) = schedule.next_after(after, dag.timezone) {
                let next = next.with_timezone(&Utc);
                let within_end = dag.end_date.is_none_or(|end| next <= end);
                if within_end {
                    next_due = Some(next_due.map_or(next, |due: DateTime<Utc>| due.min(next)));
                }
            }
        }
        self.start_queued_runs().await?;
        Ok(next_due)
    }

    /// Starts queued runs that fit under their DAG's `max_active_runs`.
    pub async fn start_queued_runs(&self) -> Result<Vec<i64>, SchedulerError> {
        let started = self.store.run_start_queued(now_micros()).await?;
        if !started.is_empty() {
            self.work_available.notify_waiters();
        }
        Ok(started)
    }

    /// Triggers a run now, with `params` checked against the DAG's param types.
    pub async fn trigger(
        &self,
        dag_id: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        trigger: TriggerKind,
    ) -> Result<RunRecord, SchedulerError> {
        let record = self.dag(dag_id).await?;
        let plan = self
            .store
            .dag_version_get(record.current_version_id)
            .await?;
        let params = checked_params(&plan.dag, params)?;
        let now = now_micros();
        // Two triggers in the same microsecond would share a logical date; the next free one is
        // taken instead.
        for offset in 0..1000 {
            // Created, started and handed to the workers waiting for work in one transaction:
            // one commit (one wait for the disk on PostgreSQL) before the first tasks run.
            let waiting = self.claim_waiters.take();
            let claims: Vec<ClaimParams> = waiting
                .iter()
                .map(|waiter| ClaimParams {
                    now,
                    ..waiter.params.clone()
                })
                .collect();
            let create = RunCreateParams {
                dag_id: dag_id.to_owned(),
                dag_version_id: Some(record.current_version_id),
                logical_date: now + offset,
                data_interval: None,
                trigger,
                params: params.clone(),
                now,
            };
            // In its own task, so that a caller going away mid-commit (an API client hanging
            // up) cannot leave tasks claimed for workers that are never told.
            let store = self.store.clone();
            let created = tokio::spawn(async move {
                let created = store.run_trigger(&create, &claims).await?;
                Ok::<_, StoreError>(match created {
                    Some((run, claimed)) => {
                        hand_over(&*store, waiting, claimed).await;
                        Some(run)
                    }
                    // Dropping the waiters tells their claims to look for work themselves.
                    None => None,
                })
            })
            .await
            .unwrap_or(Err(StoreError::Interrupted("the trigger's transaction")))?;
            if let Some(run) = created {
                self.work_available.notify_waiters();
                return Ok(run);
            }
        }
        Err(SchedulerError::Invalid(format!(
            "could not find a free logical date for DAG `{dag_id}`"
        )))
    }

    /// Creates backfill runs for every schedule tick in `[from, to]` that has no run yet, oldest
    /// first; returns the runs created.
    pub async fn backfill(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, SchedulerError> {
        if to < from {
            return Err(SchedulerError::Invalid(format!(
                "backfill range ends ({to}) before it starts ({from})"
            )));
        }
        let record = self.dag(dag_id).await?;
        let plan = self
            .store
            .dag_version_get(record.current_version_id)
            .await?;
        let dag = &plan.dag;
        let schedule = dag.schedule.as_ref().ok_or_else(|| {
            SchedulerError::Invalid(format!("DAG `{dag_id}` has no schedule to backfill"))
        })?;
        let params = checked_params(dag, &serde_json::Map::new())?;
        let now = now_micros();
        let mut created = Vec::new();
        let mut cursor =
            schedule.next_after(from - chrono::Duration::microseconds(1), dag.timezone);
        while let Some(tick) = cursor.map(|tick| tick.with_timezone(&Utc)) {
            if tick > to {
                break;
            }
            let run = self
                .store
                .run_create(&tick_run(
                    dag,
                    record.current_version_id,
                    tick,
                    TriggerKind::Backfill,
                    &params,
                    now,
                ))
                .await?;
            created.extend(run);
            cursor = schedule.next_after(tick, dag.timezone);
        }
        self.start_queued_runs().await?;
        Ok(created)
    }

    /// Cancels a run; false if it had already finished.
    pub async fn cancel(&self, run_id: i64) -> Result<bool, SchedulerError> {
        let cancelled = self.store.run_cancel(run_id, now_micros()).await?;
        self.work_available.notify_waiters();
        Ok(cancelled)
    }

    /// Clears a task instance (and optionally its downstream) so it runs again.
    pub async fn clear(
        &self,
        run_id: i64,
        task_id: &str,
        downstream: bool,
    ) -> Result<Vec<String>, SchedulerError> {
        let cleared = self
            .store
            .task_instance_clear(run_id, task_id, downstream, now_micros())
            .await?;
        self.work_available.notify_waiters();
        Ok(cleared)
    }

    /// Marks a task instance success or failed by hand.
    pub async fn mark(
        &self,
        run_id: i64,
        task_id: &str,
        state: TaskState,
    ) -> Result<(), SchedulerError> {
        self.store
            .task_instance_mark(run_id, task_id, state, now_micros())
            .await?;
        self.work_available.notify_waiters();
        Ok(())
    }

    /// Pauses or unpauses a DAG.
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), SchedulerError> {
        match self
            .store
            .dag_set_paused(dag_id, paused, now_micros())
            .await
        {
            Err(StoreError::NotFound(_)) => Err(SchedulerError::UnknownDag(dag_id.to_owned())),
            other => {
                other?;
                self.work_available.notify_waiters();
                Ok(())
            }
        }
    }

    /// Applies workers' reports (with their attempts' last log chunks), claims the worker's next
    /// tasks in the same transaction when asked, and wakes waiting workers when downstream tasks
    /// became ready. Calls arriving while another is being applied share the next transaction
    /// (see `completions`).
    pub async fn complete(
        &self,
        completions: &[Completion],
        logs: &[LogUpload],
        claim: Option<&ClaimParams>,
    ) -> Result<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>), SchedulerError> {
        let (outcomes, claimed) = self
            .completions
            .apply(&self.store, completions, logs, claim)
            .await?;
        self.work_available.notify_waiters();
        self.wake.notify_one();
        Ok((outcomes, claimed))
    }

    /// Ends the attempts of a worker known to be dead as lost, at once, without waiting for its
    /// lease (their tasks run again without using a retry), and wakes the loop and the waiting
    /// workers for what became ready. Answers how many attempts ended.
    ///
    /// With [`Scheduler::complete`] for reports and the timed loop's maintenance for expired
    /// leases and timeouts, one of the three ways an attempt's end enters the scheduler; all
    /// three end in the store's one compare-and-set on (running, fence).
    pub async fn worker_lost(&self, worker_id: &str) -> Result<usize, SchedulerError> {
        let rescued = self
            .store
            .task_instance_rescue_worker(worker_id, now_micros())
            .await?;
        self.wake.notify_one();
        self.work_available.notify_waiters();
        Ok(rescued)
    }

    /// Registers a worker's claim that found no work, so that the next trigger can claim for
    /// it in its own transaction. The answer arrives on the receiver (possibly empty: look
    /// again); withdraw with [`Scheduler::claim_wait_withdraw`] when the wait ends otherwise.
    pub fn claim_wait(
        &self,
        params: ClaimParams,
    ) -> (u64, tokio::sync::oneshot::Receiver<Vec<ClaimedTask>>) {
        self.claim_waiters.register(params)
    }

    /// Withdraws a waiting claim; false if a trigger already took it, in which case its tasks
    /// are on their way to the receiver.
    pub fn claim_wait_withdraw(&self, ticket: u64) -> bool {
        self.claim_waiters.withdraw(ticket)
    }

    /// Wakes the loop early (a retry or timeout may now be due sooner).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn dag(&self, dag_id: &str) -> Result<DagRecord, SchedulerError> {
        self.store
            .dag_get(dag_id)
            .await?
            .ok_or_else(|| SchedulerError::UnknownDag(dag_id.to_owned()))
    }

    /// The health of the timed loop's duties, for the server's probes.
    pub fn health(&self) -> &DutyHealth {
        &self.health
    }

    /// Runs the timed loop until `cancel` fires: leader election, DAG folder refresh, cron
    /// ticks, queued runs, retries, lease rescue and timeouts.
    ///
    /// Nothing but `cancel` ends it: a duty that fails (the store is unreachable, the DAG
    /// folder is gone) is logged at ERROR, counted in [`Scheduler::health`], and tried again
    /// after a backoff, while the other duties and leadership renewal go on.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut next_refresh = Utc::now();
        loop {
            let now = Utc::now();
            let mut wake_at = now + to_chrono(LEADER_RENEW);
            let mut failed: Option<Failed> = None;
            let mut fail = |duty, context: &str, error: &dyn std::fmt::Display| {
                let failure = self.health.failed(duty, context, error);
                failed = Some(failed.map_or(failure, |earlier: Failed| {
                    Failed {
                        consecutive_failures: earlier
                            .consecutive_failures
                            .max(failure.consecutive_failures),
                    }
                }));
            };
            let leading = self
                .store
                .leader_attempt_elect(
                    "scheduler",
                    &self.holder,
                    LEADER_TTL,
                    now.timestamp_micros(),
                )
                .await;
            match leading {
                Err(error) => fail(LEADER_DUTY, "could not renew or elect the leader", &error),
                Ok(leading) => {
                    self.health.succeeded(LEADER_DUTY);
                    if leading {
                        if now >= next_refresh {
                            // Refreshed on schedule whether or not it works: a missing folder
                            // is read again in `DAG_REFRESH`, not in a tight loop.
                            next_refresh = now + to_chrono(DAG_REFRESH);
                            match self.sync_dags().await {
                                Ok(report) => {
                                    self.health.succeeded(DAG_SYNC_DUTY);
                                    for (path, problems) in &report.failed {
                                        tracing::warn!(
                                            message = "A DAG file did not load.",
                                            path,
                                            problems
                                        );
                                    }
                                }
                                Err(error) => {
                                    fail(DAG_SYNC_DUTY, "could not refresh the DAGs", &error)
                                }
                            }
                        }
                        wake_at = wake_at.min(next_refresh);
                        match self.schedule_due(now).await {
                            Ok(due) => {
                                self.health.succeeded(SCHEDULE_DUTY);
                                if let Some(due) = due {
                                    wake_at = wake_at.min(due);
                                }
                            }
                            Err(error) => {
                                fail(SCHEDULE_DUTY, "could not create scheduled runs", &error)
                            }
                        }
                        match self.maintain().await {
                            Ok(due) => {
                                self.health.succeeded(MAINTENANCE_DUTY);
                                if let Some(due) = due {
                                    wake_at = wake_at.min(due);
                                }
                            }
                            Err(error) => fail(
                                MAINTENANCE_DUTY,
                                "could not requeue retries, rescue expired leases or time out tasks",
                                &error,
                            ),
                        }
                    }
                    self.health.tick_completed();
                }
            }
            if let Some(failure) = failed {
                wake_at =
                    wake_at.min(now + to_chrono(duties::backoff(failure.consecutive_failures)));
            }
            let sleep = (wake_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Requeues retries that are due, rescues tasks whose lease expired and times out tasks
    /// past their limit; returns when the next of those falls due.
    async fn maintain(&self) -> Result<Option<DateTime<Utc>>, SchedulerError> {
        let report = self.store.task_instance_maintain(now_micros()).await?;
        if report != Default::default() {
            tracing::info!(
                message = "Maintenance.",
                retried = report.retried,
                rescued = report.rescued,
                timed_out = report.timed_out
            );
            self.start_queued_runs().await?;
            self.work_available.notify_waiters();
        }
        Ok(self
            .store
            .task_instance_next_due()
            .await?
            .and_then(|micros| Utc.timestamp_micros(micros).single()))
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scheduler")
            .field("backend", &self.store.backend())
            .field("dags_dir", &self.dags_dir)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// The run of one schedule tick: its logical date is the tick, its data interval runs from the
/// previous tick to this one.
fn tick_run(
    dag: &Dag,
    version_id: i64,
    tick: DateTime<Utc>,
    trigger: TriggerKind,
    params: &serde_json::Value,
    now: Micros,
) -> RunCreateParams {
    let previous = dag
        .schedule
        .as_ref()
        .and_then(|schedule| schedule.previous_before(tick, dag.timezone))
        .map(|start| start.with_timezone(&Utc).timestamp_micros());
    RunCreateParams {
        dag_id: dag.id.clone(),
        dag_version_id: Some(version_id),
        logical_date: tick.timestamp_micros(),
        data_interval: previous.map(|start| (start, tick.timestamp_micros())),
        trigger,
        params: params.clone(),
        now,
    }
}

/// [`resolve_params`] with its problems as a [`SchedulerError`].
fn checked_params(
    dag: &Dag,
    given: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, SchedulerError> {
    resolve_params(dag, given).map_err(|problems| SchedulerError::InvalidParams {
        dag_id: dag.id.clone(),
        problems,
    })
}

/// The schedule ticks due by `now` that have no run yet, oldest first.
///
/// With `catchup`, every tick after the last scheduled one (or from `start_date`) up to `now` is
/// due, but at most `max_catchup_runs` of them: the most recent ones (older ones are left to
/// `kiln backfill`). Without `catchup`, only the latest tick is due. Ticks before `start_date` or
/// after `end_date` never are.
pub fn due_ticks(
    dag: &Dag,
    last_scheduled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let Some(schedule) = &dag.schedule else {
        return Vec::new();
    };
    let horizon = dag.end_date.map_or(now, |end| end.min(now));
    let cap = if dag.catchup && (last_scheduled.is_some() || dag.start_date.is_some()) {
        usize::try_from(dag.max_catchup_runs).unwrap_or(usize::MAX)
    } else {
        1
    };
    let mut ticks = Vec::new();
    let mut cursor = schedule
        .latest_at_or_before(horizon, dag.timezone)
        .map(|tick| tick.with_timezone(&Utc));
    while let Some(tick) = cursor {
        let already = last_scheduled.is_some_and(|last| tick <= last);
        let too_early = dag.start_date.is_some_and(|start| tick < start);
        if already || too_early || ticks.len() >= cap {
            break;
        }
        ticks.push(tick);
        cursor = schedule
            .previous_before(tick, dag.timezone)
            .map(|tick| tick.with_timezone(&Utc));
    }
    ticks.reverse();
    ticks
}

/// Applies defaults to trigger params and checks them against the DAG's param types. Every
/// problem is reported, separated by `; `.
pub fn resolve_params(
    dag: &Dag,
    given: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !dag.params.contains_key(name) {
            let known: Vec<&str> = dag.params.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            problems.push(format!(
                "unknown param `{name}` (the DAG's params: {known})"
            ));
        }
    }
    let mut resolved = BTreeMap::new();
    for (name, spec) in &dag.params {
        match given.get(name).or(spec.default.as_ref()) {
            Some(value) => match spec.check(value) {
                Ok(()) => {
                    resolved.insert(name.clone(), value.clone());
                }
                Err(message) => problems.push(format!("param `{name}`: {message}")),
            },
            None => problems.push(format!(
                "param `{name}` is required ({})",
                spec.param_type.as_str()
            )),
        }
    }
    if problems.is_empty() {
        Ok(serde_json::Value::Object(resolved.into_iter().collect()))
    } else {
        Err(problems.join("; "))
    }
}

/// The DAGs of a folder as the scheduler would load them, keyed by id (for callers that need the
/// definitions without a store).
pub fn load_dags(
    dir: &std::path::Path,
    registry: &PluginRegistry,
) -> std::io::Result<BTreeMap<String, LoadedDag>> {
    Ok(load_dir(dir, registry)?
        .dags
        .into_iter()
        .map(|loaded| (loaded.dag.id.clone(), loaded))
        .collect())
}

/// Converts stored microseconds to a UTC time (the epoch for out-of-range values).
pub fn to_datetime(micros: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::dag::parse_dag;

    fn dag(extra: &str) -> Dag {
        let text = format!("id = \"d\"\n{extra}\n[[tasks]]\nid = \"t\"\nkind = \"x\"\n");
        let mut registry = PluginRegistry::new();
        registry.register_planned("x", "test");
        parse_dag(Path::new("d.toml"), text.as_bytes(), &registry)
            .unwrap()
            .dag
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn render(ticks: &[DateTime<Utc>]) -> String {
        ticks
            .iter()
            .map(|tick| tick.to_rfc3339())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn catchup_creates_exactly_the_missed_intervals() {
        let hourly =
            dag("schedule = \"@hourly\"\ncatchup = true\nstart_date = \"2026-01-01T00:00:00Z\"");
        let ticks = due_ticks(
            &hourly,
            Some(at("2026-01-01T02:00:00Z")),
            at("2026-01-01T05:30:00Z"),
        );
        expect_test::expect![[r#"
            2026-01-01T03:00:00+00:00
            2026-01-01T04:00:00+00:00
            2026-01-01T05:00:00+00:00"#]]
        .assert_eq(&render(&ticks));
        // Nothing new is due until the next tick.
        assert!(
            due_ticks(
                &hourly,
                Some(at("2026-01-01T05:00:00Z")),
                at("2026-01-01T05:59:59Z")
            )
            .is_empty()
        );
        // First start: every tick from the start date.
        assert_eq!(
            due_ticks(&hourly, None, at("2026-01-01T05:30:00Z")).len(),
            6
        );
    }

    #[test]
    fn catchup_is_capped_to_the_most_recent_intervals() {
        let capped = dag(
            "schedule = \"@hourly\"\ncatchup = true\nmax_catchup_runs = 2\nstart_date = \"2026-01-01\"",
        );
        expect_test::expect![[r#"
            2026-01-01T04:00:00+00:00
            2026-01-01T05:00:00+00:00"#]]
        .assert_eq(&render(&due_ticks(
            &capped,
            None,
            at("2026-01-01T05:30:00Z"),
        )));
    }

    #[test]
    fn without_catchup_only_the_latest_interval() {
        let hourly = dag("schedule = \"@hourly\"\ncatchup = false\nstart_date = \"2026-01-01\"");
        expect_test::expect!["2026-01-01T05:00:00+00:00"].assert_eq(&render(&due_ticks(
            &hourly,
            Some(at("2026-01-01T01:00:00Z")),
            at("2026-01-01T05:30:00Z"),
        )));
    }

    #[test]
    fn start_and_end_dates_bound_the_ticks() {
        let bounded = dag(
            "schedule = \"@daily\"\ncatchup = true\nstart_date = \"2026-01-03\"\nend_date = \"2026-01-05\"",
        );
        expect_test::expect![[r#"
            2026-01-03T00:00:00+00:00
            2026-01-04T00:00:00+00:00
            2026-01-05T00:00:00+00:00"#]]
        .assert_eq(&render(&due_ticks(
            &bounded,
            None,
            at("2026-02-01T00:00:00Z"),
        )));
        assert!(due_ticks(&bounded, None, at("2026-01-02T12:00:00Z")).is_empty());
    }

    #[test]
    fn catchup_across_dst_in_berlin_and_new_york() {
        // A daily 02:30 job over the Berlin spring-forward: one run per day, the gap day at 03:00.
        let berlin = dag(
            "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatchup = true\nstart_date = \"2026-03-28\"",
        );
        expect_test::expect![[r#"
            2026-03-28T01:30:00+00:00
            2026-03-29T01:00:00+00:00
            2026-03-30T00:30:00+00:00"#]]
        .assert_eq(&render(&due_ticks(
            &berlin,
            None,
            at("2026-03-30T12:00:00Z"),
        )));
        // A daily 01:30 job over the New York fall-back: the doubled hour runs once.
        let new_york = dag(
            "schedule = \"30 1 * * *\"\ntimezone = \"America/New_York\"\ncatchup = true\nstart_date = \"2026-10-31\"",
        );
        expect_test::expect![[r#"
            2026-10-31T05:30:00+00:00
            2026-11-01T05:30:00+00:00
            2026-11-02T06:30:00+00:00"#]]
        .assert_eq(&render(&due_ticks(
            &new_york,
            None,
            at("2026-11-02T12:00:00Z"),
        )));
    }

    #[test]
    fn params_get_defaults_and_type_checks() {
        let with_params = dag(
            "[params.epochs]\ntype = \"integer\"\ndefault = 10\n[params.name]\ntype = \"string\"\n[params.mode]\ntype = \"string\"\ndefault = \"fast\"\nchoices = [\"fast\", \"slow\"]",
        );
        let given = serde_json::json!({ "name": "x" });
        assert_eq!(
            resolve_params(&with_params, given.as_object().unwrap()),
            Ok(serde_json::json!({ "epochs": 10, "mode": "fast", "name": "x" }))
        );
        let bad = serde_json::json!({ "epochs": "ten", "mode": "medium", "colour": 1 });
        expect_test::expect!["unknown param `colour` (the DAG's params: epochs, mode, name); param `epochs`: expected integer, got a string; param `mode`: \"medium\" is not one of \"fast\", \"slow\"; param `name` is required (string)"]
            .assert_eq(&resolve_params(&with_params, bad.as_object().unwrap()).unwrap_err());
    }
}
