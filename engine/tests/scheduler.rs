//! Scheduler integration tests on SQLite and PostgreSQL: DAG folder sync, catch-up, pause,
//! `max_active_runs`, trigger params, backfill and operator actions; and, on PostgreSQL, two
//! schedulers sharing one database.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use kiln_engine::scheduler::{Scheduler, SchedulerError, due_ticks, load_dags, to_datetime};
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, CompletionOutcome, Rejection, RunFilter,
    RunRecord, Store, StoreError, TriggerKind, connect, now_micros,
};
use tokio::sync::Notify;

use common::{TestDb, registry};

const HOUR: TimeDelta = TimeDelta::hours(1);

fn write_dag(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn scheduler(db: &TestDb, dir: &Path, holder: &str) -> Scheduler {
    Scheduler::new(
        db.store.clone(),
        registry(),
        dir.to_owned(),
        holder.to_owned(),
    )
}

/// The start of the hour before the current one: every tick up to it is safely in the past.
fn last_full_hour() -> DateTime<Utc> {
    Utc::now().duration_trunc(HOUR).unwrap() - HOUR
}

fn hourly(id: &str, start: DateTime<Utc>, extra: &str) -> String {
    format!(
        "id = \"{id}\"\nschedule = \"@hourly\"\nstart_date = \"{}\"\n{extra}\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n[[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n",
        start.to_rfc3339()
    )
}

/// A DAG's runs, oldest logical date first.
async fn runs_of(store: &dyn Store, dag_id: &str) -> Vec<RunRecord> {
    let mut runs = store
        .run_list(&RunFilter {
            dag_id: Some(dag_id.to_owned()),
            limit: Some(10_000),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    runs.sort_by_key(|run| run.logical_date);
    runs
}

fn logical_dates(runs: &[RunRecord]) -> Vec<DateTime<Utc>> {
    runs.iter()
        .map(|run| to_datetime(run.logical_date))
        .collect()
}

fn count_in(runs: &[RunRecord], state: RunState) -> usize {
    runs.iter().filter(|run| run.state == state).count()
}

async fn states(store: &dyn Store, run_id: i64) -> String {
    store
        .task_instance_list(run_id)
        .await
        .unwrap()
        .iter()
        .map(|instance| format!("{}={}", instance.task_id, instance.state))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn claim(store: &dyn Store, worker: &str, limit: u32) -> Vec<ClaimedTask> {
    store
        .task_instance_claim(&ClaimParams {
            worker_id: worker.to_owned(),
            queues: vec!["default".to_owned()],
            limit,
            lease: Duration::from_secs(300),
            now: now_micros(),
        })
        .await
        .unwrap()
}

/// Workers' reports go straight to the store: the scheduler only adds wake-ups on top.
async fn complete(
    store: &dyn Store,
    completions: &[Completion],
) -> Vec<Result<CompletionOutcome, Rejection>> {
    store
        .task_instance_complete(completions, now_micros())
        .await
        .unwrap()
}

fn success(task: &ClaimedTask) -> Completion {
    Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result: AttemptResult::success(serde_json::json!({})),
    }
}

async fn sync_records_versions_and_keeps_the_last_good_one(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    let path = dir.path().join("alpha.toml");
    let path_text = path.display().to_string();
    let first = "id = \"alpha\"\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n";
    let second = format!("{first}[[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n");
    write_dag(dir.path(), "alpha.toml", first);
    write_dag(
        dir.path(),
        "broken.toml",
        "id = \"broken\"\n[[tasks]]\nid = \"x\"\nkind = \"no_such_kind\"\n",
    );

    let report = scheduler.sync_dags().await.unwrap();
    assert_eq!(report.loaded, ["alpha"]);
    assert_eq!(report.failed.len(), 1);
    let dags = store.dag_list().await.unwrap();
    assert_eq!(
        dags.iter()
            .map(|dag| (dag.id.as_str(), dag.current_version))
            .collect::<Vec<_>>(),
        [("alpha", 1)],
        "a file that never loaded declares no DAG"
    );
    assert_eq!(dags[0].file_path, path_text);
    let errors = store.dag_file_error_list().await.unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file_path.ends_with("broken.toml"), "{errors:?}");
    assert!(errors[0].errors.contains("no_such_kind"), "{errors:?}");

    // Unchanged: same version. Changed: a new version.
    scheduler.sync_dags().await.unwrap();
    assert_eq!(
        store
            .dag_get("alpha")
            .await
            .unwrap()
            .unwrap()
            .current_version,
        1
    );
    write_dag(dir.path(), "alpha.toml", &second);
    scheduler.sync_dags().await.unwrap();
    let alpha = store.dag_get("alpha").await.unwrap().unwrap();
    assert_eq!(alpha.current_version, 2);
    let plan = store
        .dag_version_get(alpha.current_version_id)
        .await
        .unwrap();
    assert_eq!(plan.dag.tasks.len(), 2);

    // A broken edit: the last good version stays active and the error is on record.
    write_dag(
        dir.path(),
        "alpha.toml",
        &second.replace("depends_on = [\"a\"]", "depends_on = [\"missing_task\"]"),
    );
    let report = scheduler.sync_dags().await.unwrap();
    assert_eq!(
        report.loaded,
        Vec::<String>::new(),
        "the broken file did not load"
    );
    let alpha = store.dag_get("alpha").await.unwrap().unwrap();
    assert_eq!(
        (alpha.current_version, alpha.current_version_id),
        (2, plan.version_id),
        "the last good version stays active"
    );
    let errors = store.dag_file_error_list().await.unwrap();
    let alpha_error = errors
        .iter()
        .find(|error| error.file_path == path_text)
        .unwrap_or_else(|| panic!("no error recorded for {path_text}: {errors:?}"));
    assert!(
        alpha_error.errors.contains("missing_task"),
        "{alpha_error:?}"
    );

    // Fixed back to the good content: no new version, and the error is gone.
    write_dag(dir.path(), "alpha.toml", &second);
    let report = scheduler.sync_dags().await.unwrap();
    assert_eq!(report.loaded, ["alpha"]);
    assert_eq!(
        store
            .dag_get("alpha")
            .await
            .unwrap()
            .unwrap()
            .current_version,
        2
    );
    let errors = store.dag_file_error_list().await.unwrap();
    assert!(
        errors.iter().all(|error| error.file_path != path_text),
        "fixing the file clears its error: {errors:?}"
    );
    assert_eq!(errors.len(), 1, "the other broken file still shows");

    // Fixed with new content: a new version, still without an error.
    write_dag(dir.path(), "alpha.toml", &format!("{second}\n# Edited.\n"));
    scheduler.sync_dags().await.unwrap();
    assert_eq!(
        store
            .dag_get("alpha")
            .await
            .unwrap()
            .unwrap()
            .current_version,
        3
    );
}

async fn catchup_creates_exactly_the_missed_runs(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    let anchor = last_full_hour();
    let start = anchor - TimeDelta::hours(4);
    write_dag(
        dir.path(),
        "hourly.toml",
        &hourly("hourly", start, "catchup = true"),
    );
    scheduler.sync_dags().await.unwrap();
    let now = anchor + TimeDelta::minutes(30);

    let next = scheduler.schedule_due(now).await.unwrap();
    assert_eq!(next, Some(anchor + HOUR), "the next tick is the next hour");
    let runs = runs_of(store, "hourly").await;
    let expected: Vec<DateTime<Utc>> = (0..5)
        .map(|hours| start + TimeDelta::hours(hours))
        .collect();
    assert_eq!(logical_dates(&runs), expected);
    for run in &runs {
        assert_eq!(run.trigger, TriggerKind::Schedule);
        assert_eq!(
            (run.data_interval_start, run.data_interval_end),
            (
                Some((to_datetime(run.logical_date) - HOUR).timestamp_micros()),
                Some(run.logical_date)
            ),
            "an hourly run covers the hour before its logical date"
        );
        assert_eq!(run.state, RunState::Running, "started right away");
    }
    let dag = store.dag_get("hourly").await.unwrap().unwrap();
    assert_eq!(dag.last_scheduled_at, Some(anchor.timestamp_micros()));

    // Again at the same time: nothing new.
    scheduler.schedule_due(now).await.unwrap();
    assert_eq!(runs_of(store, "hourly").await, runs);
    // An hour later: exactly one more.
    scheduler.schedule_due(now + HOUR).await.unwrap();
    let later = runs_of(store, "hourly").await;
    assert_eq!(later.len(), 6);
    assert_eq!(later[5].logical_date, (anchor + HOUR).timestamp_micros());
}

async fn without_catchup_only_the_latest_run(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    let anchor = last_full_hour();
    write_dag(
        dir.path(),
        "latest.toml",
        &hourly("latest", anchor - TimeDelta::hours(4), "catchup = false"),
    );
    scheduler.sync_dags().await.unwrap();
    let now = anchor + TimeDelta::minutes(30);
    scheduler.schedule_due(now).await.unwrap();
    let runs = runs_of(store, "latest").await;
    assert_eq!(logical_dates(&runs), [anchor]);
    assert_eq!(
        runs[0].data_interval_start,
        Some((anchor - HOUR).timestamp_micros())
    );
    // Two hours later, the hour in between is skipped.
    scheduler
        .schedule_due(now + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(
        logical_dates(&runs_of(store, "latest").await),
        [anchor, anchor + TimeDelta::hours(2)]
    );
}

async fn a_paused_dag_gets_no_runs(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    let anchor = last_full_hour();
    write_dag(
        dir.path(),
        "paused.toml",
        &hourly("paused", anchor - TimeDelta::hours(2), "catchup = true"),
    );
    scheduler.sync_dags().await.unwrap();
    scheduler.set_paused("paused", true).await.unwrap();
    assert!(store.dag_get("paused").await.unwrap().unwrap().paused);
    let now = anchor + TimeDelta::minutes(30);
    assert_eq!(
        scheduler.schedule_due(now).await.unwrap(),
        None,
        "nothing is due for a paused DAG"
    );
    assert!(runs_of(store, "paused").await.is_empty());

    scheduler.set_paused("paused", false).await.unwrap();
    scheduler.schedule_due(now).await.unwrap();
    assert_eq!(runs_of(store, "paused").await.len(), 3);
    assert!(matches!(
        scheduler.set_paused("nope", true).await,
        Err(SchedulerError::UnknownDag(id)) if id == "nope"
    ));
}

async fn max_active_runs_holds(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    let anchor = last_full_hour();
    write_dag(
        dir.path(),
        "limited.toml",
        &hourly(
            "limited",
            anchor - TimeDelta::hours(4),
            "catchup = true\nmax_active_runs = 2",
        ),
    );
    scheduler.sync_dags().await.unwrap();
    scheduler
        .schedule_due(anchor + TimeDelta::minutes(30))
        .await
        .unwrap();
    let runs = runs_of(store, "limited").await;
    assert_eq!(runs.len(), 5);
    assert_eq!(
        runs.iter().map(|run| run.state).collect::<Vec<_>>(),
        [
            RunState::Running,
            RunState::Running,
            RunState::Queued,
            RunState::Queued,
            RunState::Queued
        ],
        "the two oldest run, the rest wait"
    );
    assert!(
        scheduler.start_queued_runs().await.unwrap().is_empty(),
        "no slot is free"
    );

    // Finishing the oldest run admits the next one. Its tasks have the lowest ids, so a claim
    // of one task at a time takes them first.
    for task_id in ["a", "b"] {
        let claimed = claim(store, "w", 1).await;
        assert_eq!(
            (claimed[0].run_id, claimed[0].task_id.as_str()),
            (runs[0].id, task_id)
        );
        complete(store, &[success(&claimed[0])]).await;
    }
    let runs = runs_of(store, "limited").await;
    assert_eq!(runs[0].state, RunState::Success);
    assert_eq!(count_in(&runs, RunState::Running), 2);
    assert_eq!(runs[2].state, RunState::Running);

    // So does cancelling one.
    assert!(scheduler.cancel(runs[1].id).await.unwrap());
    let runs = runs_of(store, "limited").await;
    assert_eq!(
        runs.iter().map(|run| run.state).collect::<Vec<_>>(),
        [
            RunState::Success,
            RunState::Cancelled,
            RunState::Running,
            RunState::Running,
            RunState::Queued
        ]
    );
}

async fn trigger_applies_defaults_and_rejects_bad_params(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    write_dag(
        dir.path(),
        "train.toml",
        r#"
id = "train"
[params.epochs]
type = "integer"
default = 10
[params.mode]
type = "string"
default = "fast"
choices = ["fast", "slow"]
[params.name]
type = "string"
[[tasks]]
id = "fit"
kind = "noop"
"#,
    );
    scheduler.sync_dags().await.unwrap();
    let given = serde_json::json!({ "name": "wine", "mode": "slow" });
    let before = now_micros();
    let run = scheduler
        .trigger("train", given.as_object().unwrap(), TriggerKind::Manual)
        .await
        .unwrap();
    let after = now_micros();
    assert_eq!(
        run.params,
        serde_json::json!({ "epochs": 10, "mode": "slow", "name": "wine" })
    );
    assert_eq!(run.trigger, TriggerKind::Manual);
    assert_eq!(run.state, RunState::Running);
    assert_eq!(
        (run.data_interval_start, run.data_interval_end),
        (None, None)
    );
    assert!((before..=after + 1000).contains(&run.logical_date));
    assert_eq!(states(&*db.store, run.id).await, "fit=queued");

    // A second trigger right away gets its own logical date.
    let again = scheduler
        .trigger("train", given.as_object().unwrap(), TriggerKind::Api)
        .await
        .unwrap();
    assert_ne!(again.logical_date, run.logical_date);
    assert_eq!(again.trigger, TriggerKind::Api);

    let invalid = |params: serde_json::Value| {
        let scheduler = &scheduler;
        async move {
            let error = scheduler
                .trigger("train", params.as_object().unwrap(), TriggerKind::Manual)
                .await
                .unwrap_err();
            match error {
                SchedulerError::InvalidParams { dag_id, problems } => {
                    assert_eq!(dag_id, "train");
                    problems
                }
                other => panic!("expected invalid params, got {other:?}"),
            }
        }
    };
    let problems = invalid(serde_json::json!({ "name": "wine", "epochs": "ten" })).await;
    assert!(problems.contains("param `epochs`"), "{problems}");
    assert!(!problems.contains("param `name`"), "{problems}");
    let problems = invalid(serde_json::json!({ "epochs": 3 })).await;
    assert!(problems.contains("param `name` is required"), "{problems}");
    let problems = invalid(serde_json::json!({ "name": "x", "mode": "medium" })).await;
    assert!(problems.contains("param `mode`"), "{problems}");
    let problems = invalid(serde_json::json!({ "name": "x", "colour": 1 })).await;
    assert!(problems.contains("unknown param `colour`"), "{problems}");
    assert_eq!(
        runs_of(&*db.store, "train").await.len(),
        2,
        "rejected triggers create no run"
    );
    assert!(matches!(
        scheduler
            .trigger("nope", &serde_json::Map::new(), TriggerKind::Manual)
            .await,
        Err(SchedulerError::UnknownDag(id)) if id == "nope"
    ));
}

async fn backfill_creates_exactly_the_ticks_in_range_once(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    write_dag(
        dir.path(),
        "daily.toml",
        "id = \"daily\"\nschedule = \"@daily\"\ncatchup = false\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n",
    );
    write_dag(
        dir.path(),
        "manual.toml",
        "id = \"manual\"\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n",
    );
    scheduler.sync_dags().await.unwrap();
    let day = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    };

    let created = scheduler
        .backfill(
            "daily",
            day("2026-01-01T12:00:00Z"),
            day("2026-01-05T00:00:00Z"),
        )
        .await
        .unwrap();
    let expected = [
        day("2026-01-02T00:00:00Z"),
        day("2026-01-03T00:00:00Z"),
        day("2026-01-04T00:00:00Z"),
        day("2026-01-05T00:00:00Z"),
    ];
    assert_eq!(logical_dates(&created), expected, "both ends are inclusive");
    for run in &created {
        assert_eq!(run.trigger, TriggerKind::Backfill);
        assert_eq!(
            (run.data_interval_start, run.data_interval_end),
            (
                Some((to_datetime(run.logical_date) - TimeDelta::days(1)).timestamp_micros()),
                Some(run.logical_date)
            )
        );
    }
    assert_eq!(logical_dates(&runs_of(store, "daily").await), expected);

    let again = scheduler
        .backfill(
            "daily",
            day("2026-01-01T12:00:00Z"),
            day("2026-01-05T00:00:00Z"),
        )
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "a second backfill creates nothing: {again:?}"
    );
    assert_eq!(runs_of(store, "daily").await.len(), 4);

    // A wider range only fills the gaps.
    let wider = scheduler
        .backfill(
            "daily",
            day("2026-01-01T00:00:00Z"),
            day("2026-01-06T06:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        logical_dates(&wider),
        [day("2026-01-01T00:00:00Z"), day("2026-01-06T00:00:00Z")]
    );
    let all = runs_of(store, "daily").await;
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter()
            .map(|run| run.logical_date)
            .collect::<HashSet<_>>()
            .len(),
        6
    );
    assert_eq!(count_in(&all, RunState::Running), 6, "backfill runs start");

    assert!(matches!(
        scheduler
            .backfill(
                "daily",
                day("2026-01-05T00:00:00Z"),
                day("2026-01-01T00:00:00Z")
            )
            .await,
        Err(SchedulerError::Invalid(_))
    ));
    assert!(matches!(
        scheduler
            .backfill(
                "manual",
                day("2026-01-01T00:00:00Z"),
                day("2026-01-05T00:00:00Z")
            )
            .await,
        Err(SchedulerError::Invalid(message)) if message.contains("no schedule")
    ));
    assert!(matches!(
        scheduler
            .backfill(
                "nope",
                day("2026-01-01T00:00:00Z"),
                day("2026-01-05T00:00:00Z")
            )
            .await,
        Err(SchedulerError::UnknownDag(_))
    ));
}

async fn cancel_clear_and_mark_through_the_scheduler(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(db, dir.path(), "holder-1");
    let store = &*db.store;
    write_dag(
        dir.path(),
        "chain.toml",
        "id = \"chain\"\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n[[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n[[tasks]]\nid = \"c\"\nkind = \"noop\"\ndepends_on = [\"b\"]\n",
    );
    scheduler.sync_dags().await.unwrap();
    let run = scheduler
        .trigger("chain", &serde_json::Map::new(), TriggerKind::Manual)
        .await
        .unwrap();
    let claimed = claim(store, "w", 10).await;
    assert_eq!(claimed.len(), 1);
    let outcomes = complete(store, &[success(&claimed[0])]).await;
    assert_eq!(outcomes, vec![Ok(CompletionOutcome::Succeeded)]);
    let replay = complete(store, &[success(&claimed[0])]).await;
    assert!(
        matches!(replay[0], Err(Rejection::Stale { .. })),
        "{replay:?}"
    );
    assert_eq!(
        states(store, run.id).await,
        "a=success b=queued c=scheduled"
    );

    scheduler
        .mark(run.id, "b", TaskState::Failed)
        .await
        .unwrap();
    assert_eq!(
        states(store, run.id).await,
        "a=success b=failed c=upstream_failed"
    );
    let failed = store.run_get(run.id).await.unwrap().unwrap();
    assert_eq!(failed.state, RunState::Failed);

    let cleared = scheduler.clear(run.id, "b", true).await.unwrap();
    assert_eq!(cleared, ["b", "c"]);
    assert_eq!(
        states(store, run.id).await,
        "a=success b=queued c=scheduled"
    );
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Running
    );

    let running = claim(store, "w", 10).await;
    assert_eq!(running[0].task_id, "b");
    assert!(scheduler.cancel(run.id).await.unwrap());
    assert!(
        !scheduler.cancel(run.id).await.unwrap(),
        "a finished run cannot be cancelled"
    );
    assert_eq!(
        states(store, run.id).await,
        "a=success b=cancelled c=cancelled"
    );
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Cancelled
    );
    let late = complete(store, &[success(&running[0])]).await;
    assert!(
        matches!(
            late[0],
            Err(Rejection::Stale {
                state: TaskState::Cancelled,
                ..
            })
        ),
        "{late:?}"
    );
    assert!(matches!(
        scheduler.clear(run.id, "b", false).await,
        Err(SchedulerError::Store(StoreError::Conflict(_)))
    ));
    assert!(matches!(
        scheduler.mark(run.id, "b", TaskState::Success).await,
        Err(SchedulerError::Store(StoreError::Conflict(_)))
    ));
    assert!(claim(store, "w", 10).await.is_empty());
}

conformance!(
    sync_records_versions_and_keeps_the_last_good_one,
    catchup_creates_exactly_the_missed_runs,
    without_catchup_only_the_latest_run,
    a_paused_dag_gets_no_runs,
    max_active_runs_holds,
    trigger_applies_defaults_and_rejects_bad_params,
    backfill_creates_exactly_the_ticks_in_range_once,
    cancel_clear_and_mark_through_the_scheduler,
    a_trigger_hands_its_first_tasks_to_a_waiting_claim,
);

/// A worker's claim waiting for work gets a triggered run's first task from the trigger's own
/// transaction: the task is already running when the trigger answers.
async fn a_trigger_hands_its_first_tasks_to_a_waiting_claim(db: &TestDb) {
    use kiln_engine::execution::{ExecutionApi, ExecutionService};
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Arc::new(scheduler(db, dir.path(), "holder-1"));
    write_dag(
        dir.path(),
        "pair.toml",
        "id = \"pair\"\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n[[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n",
    );
    scheduler.sync_dags().await.unwrap();
    let service = Arc::new(ExecutionService::new(
        scheduler.clone(),
        Duration::from_secs(30),
    ));
    let waiting = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .claim("w1", &["default".to_owned()], 4, Duration::from_secs(20))
                .await
        })
    };
    // Let the claim find nothing and start waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = scheduler
        .trigger("pair", &serde_json::Map::new(), TriggerKind::Api)
        .await
        .unwrap();
    assert_eq!(
        states(&*db.store, run.id).await,
        "a=running b=scheduled",
        "claimed in the trigger's transaction"
    );
    let claimed = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting claim answers at once")
        .unwrap()
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task_id, "a");
    assert_eq!(claimed[0].run_id, run.id);
    let reply = service
        .complete("w1", &[success(&claimed[0])], &[], None)
        .await
        .unwrap();
    assert_eq!(reply.outcomes, vec![Ok(CompletionOutcome::Succeeded)]);
}

/// How far the claimers have got, and a signal for each completion.
struct Progress {
    done: AtomicUsize,
    total: usize,
    completed: Notify,
}

/// Claims and completes tasks until every task instance is done; returns the ids it claimed.
async fn drain(store: Arc<dyn Store>, worker: String, progress: Arc<Progress>) -> Vec<i64> {
    let mut mine = Vec::new();
    loop {
        // Registered before claiming, so a completion between the claim and the wait still
        // wakes this claimer.
        let completed = progress.completed.notified();
        tokio::pin!(completed);
        completed.as_mut().enable();
        let claimed = claim(&*store, &worker, 25).await;
        if claimed.is_empty() {
            if progress.done.load(Ordering::SeqCst) >= progress.total {
                return mine;
            }
            completed.await;
            continue;
        }
        let completions: Vec<Completion> = claimed.iter().map(success).collect();
        for outcome in complete(&*store, &completions).await {
            assert_eq!(outcome, Ok(CompletionOutcome::Succeeded));
        }
        mine.extend(claimed.iter().map(|task| task.task_instance_id));
        progress.done.fetch_add(claimed.len(), Ordering::SeqCst);
        progress.completed.notify_waiters();
    }
}

/// Two schedulers on one PostgreSQL database schedule 1,000 runs at once: no run is created twice,
/// and workers on both never get the same task twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_postgres_create_each_run_once_and_queue_each_task_once() {
    let Some(db) = TestDb::postgres("two_schedulers_on_postgres").await else {
        return;
    };
    const RUNS: usize = 1000;
    const TASKS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let start = now.duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(1200);
    write_dag(
        dir.path(),
        "minutely.toml",
        &format!(
            "id = \"minutely\"\nschedule = \"* * * * *\"\ncatchup = true\nmax_catchup_runs = {RUNS}\nmax_active_runs = {RUNS}\nstart_date = \"{}\"\n\
             [[tasks]]\nid = \"a\"\nkind = \"noop\"\n\
             [[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n\
             [[tasks]]\nid = \"c\"\nkind = \"noop\"\ndepends_on = [\"b\"]\n",
            start.to_rfc3339()
        ),
    );
    let dags = load_dags(dir.path(), &registry()).unwrap();
    let expected_ticks = due_ticks(&dags["minutely"].dag, None, now);
    assert_eq!(expected_ticks.len(), RUNS, "the catch-up cap holds");

    let store_a = connect(&db.url).await.unwrap();
    let store_b = connect(&db.url).await.unwrap();
    let scheduler_a = Scheduler::new(
        store_a.clone(),
        registry(),
        dir.path().to_owned(),
        "holder-a".to_owned(),
    );
    let scheduler_b = Scheduler::new(
        store_b.clone(),
        registry(),
        dir.path().to_owned(),
        "holder-b".to_owned(),
    );
    let (synced_a, synced_b) = tokio::join!(scheduler_a.sync_dags(), scheduler_b.sync_dags());
    assert_eq!(synced_a.unwrap().loaded, ["minutely"]);
    assert_eq!(synced_b.unwrap().loaded, ["minutely"]);
    let (due_a, due_b) = tokio::join!(scheduler_a.schedule_due(now), scheduler_b.schedule_due(now));
    due_a.unwrap();
    due_b.unwrap();

    let dag = db.store.dag_get("minutely").await.unwrap().unwrap();
    assert_eq!(dag.current_version, 1, "one version, though both synced");
    let runs = runs_of(&*db.store, "minutely").await;
    assert_eq!(runs.len(), RUNS);
    assert_eq!(logical_dates(&runs), expected_ticks, "one run per tick");
    assert_eq!(
        runs.iter()
            .map(|run| run.logical_date)
            .collect::<HashSet<_>>()
            .len(),
        RUNS,
        "no two runs share a logical date"
    );
    assert_eq!(
        count_in(&runs, RunState::Running),
        RUNS,
        "every run started (max_active_runs = {RUNS})"
    );

    let progress = Arc::new(Progress {
        done: AtomicUsize::new(0),
        total: RUNS * TASKS,
        completed: Notify::new(),
    });
    let mut claimers = Vec::new();
    for (name, store) in [("a", &store_a), ("b", &store_b)] {
        for index in 0..3 {
            claimers.push(tokio::spawn(drain(
                store.clone(),
                format!("worker-{name}{index}"),
                progress.clone(),
            )));
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(120), async {
        let mut claimed = Vec::new();
        for claimer in claimers {
            claimed.extend(claimer.await.unwrap());
        }
        claimed
    })
    .await
    .expect("the claimers finish every task within two minutes");
    let unique: HashSet<i64> = drained.iter().copied().collect();
    assert_eq!(
        (drained.len(), unique.len()),
        (RUNS * TASKS, RUNS * TASKS),
        "every task instance was claimed exactly once"
    );

    let runs = runs_of(&*db.store, "minutely").await;
    assert_eq!(count_in(&runs, RunState::Success), RUNS);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (instances, succeeded_once): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'success' AND try_number = 1) FROM task_instances",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (instances, succeeded_once),
        (
            i64::try_from(RUNS * TASKS).unwrap(),
            i64::try_from(RUNS * TASKS).unwrap()
        )
    );
    let (attempts, instances_with_attempts, successful): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT task_instance_id), COUNT(*) FILTER (WHERE state = 'success') FROM task_attempts",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (attempts, instances_with_attempts, successful),
        (instances, instances, instances),
        "exactly one attempt per task instance"
    );
    pool.close().await;
    drop((scheduler_a, scheduler_b, store_a, store_b));
    db.cleanup().await;
}
