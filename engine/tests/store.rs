//! The store conformance suite: every check runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestDb, dag};
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{
    AttemptResult, Backend, ClaimParams, ClaimedTask, Completion, CompletionBatch,
    CompletionOutcome, LogUpload, Rejection, RunCreateParams, RunFilter, RunRecord, Store,
    StoreError, TriggerKind,
};
use sqlx::Connection;

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SECOND;

const CHAIN: &str = r#"
id = "chain"
[defaults]
retries = 1
retry_delay = "10s"
retry_backoff = false
[[tasks]]
id = "a"
kind = "noop"
[[tasks]]
id = "b"
kind = "noop"
depends_on = ["a"]
[[tasks]]
id = "c"
kind = "noop"
depends_on = ["b"]
"#;

async fn create_run(store: &dyn Store, dag_id: &str, logical_date: i64) -> RunRecord {
    store
        .run_create(&RunCreateParams {
            dag_id: dag_id.to_owned(),
            dag_version_id: None,
            logical_date,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: logical_date,
        })
        .await
        .unwrap()
        .expect("the run is new")
}

async fn claim(store: &dyn Store, worker: &str, limit: u32, now: i64) -> Vec<ClaimedTask> {
    store
        .task_instance_claim(&ClaimParams {
            worker_id: worker.to_owned(),
            queues: vec!["default".to_owned()],
            limit,
            lease: Duration::from_secs(30),
            now,
        })
        .await
        .unwrap()
}

fn success(task: &ClaimedTask) -> Completion {
    Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result: AttemptResult::success(serde_json::json!({ "ok": true })),
    }
}

fn failure(task: &ClaimedTask, retryable: bool) -> Completion {
    Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result: AttemptResult::Failure {
            error: "boom".to_owned(),
            retryable,
        },
    }
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

async fn run_state(store: &dyn Store, run_id: i64) -> RunState {
    store.run_get(run_id).await.unwrap().unwrap().state
}

/// Loads a DAG and starts one run of it at `T0`.
async fn started_run(store: &dyn Store, text: &str) -> RunRecord {
    let loaded = dag(text);
    store.dag_sync(&loaded, T0).await.unwrap();
    let run = create_run(store, &loaded.dag.id, T0).await;
    assert_eq!(store.run_start_queued(T0).await.unwrap(), vec![run.id]);
    run
}

async fn migrations_are_idempotent_and_a_newer_schema_is_refused(db: &TestDb) {
    db.store.migrate().await.unwrap();
    let future = 99_990_101_000_000_i64;
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, 'future', TRUE, $2, 0)",
            )
            .bind(future)
            .bind(vec![0u8; 4])
            .execute(&mut conn)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, 'future', TRUE, $2, 0)",
            )
            .bind(future)
            .bind(vec![0u8; 4])
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    let error = db.store.migrate().await.unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found, .. } if found == future),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade kiln"), "{error}");
}

async fn dag_versions_follow_file_changes(db: &TestDb) {
    let store = &*db.store;
    let first = store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    assert_eq!(
        (first.id.as_str(), first.current_version, first.paused),
        ("chain", 1, false)
    );
    let same = store.dag_sync(&dag(CHAIN), T0 + 1).await.unwrap();
    assert_eq!(
        same.current_version_id, first.current_version_id,
        "unchanged file, same version"
    );
    let changed = store
        .dag_sync(&dag(&CHAIN.replace("retries = 1", "retries = 3")), T0 + 2)
        .await
        .unwrap();
    assert_eq!(changed.current_version, 2);
    let plan = store
        .dag_version_get(changed.current_version_id)
        .await
        .unwrap();
    assert_eq!(plan.dag.tasks[0].retries, 3);
    let old = store
        .dag_version_get(first.current_version_id)
        .await
        .unwrap();
    assert_eq!(
        old.dag.tasks[0].retries, 1,
        "old versions stay as they were"
    );

    store
        .dag_file_error_set("test.toml", None, "test.toml:1:1: broken", T0 + 3)
        .await
        .unwrap();
    store
        .dag_file_error_set("test.toml", None, "test.toml:2:1: still broken", T0 + 4)
        .await
        .unwrap();
    let errors = store.dag_file_error_list().await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].errors, "test.toml:2:1: still broken");
    assert_eq!(
        store
            .dag_get("chain")
            .await
            .unwrap()
            .unwrap()
            .current_version,
        2,
        "last good version stays"
    );
    store.dag_sync(&dag(CHAIN), T0 + 5).await.unwrap();
    assert!(
        store.dag_file_error_list().await.unwrap().is_empty(),
        "a good load clears the file's error"
    );
    assert_eq!(store.dag_list().await.unwrap().len(), 1);
}

async fn one_run_per_logical_date(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    let run = create_run(store, "chain", T0).await;
    assert_eq!(run.state, RunState::Queued);
    let duplicate = store
        .run_create(&RunCreateParams {
            dag_id: "chain".to_owned(),
            dag_version_id: None,
            logical_date: T0,
            data_interval: None,
            trigger: TriggerKind::Schedule,
            params: serde_json::json!({}),
            now: T0,
        })
        .await
        .unwrap();
    assert_eq!(duplicate, None);
    let missing = store
        .run_create(&RunCreateParams {
            dag_id: "nope".to_owned(),
            dag_version_id: None,
            logical_date: T0,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: T0,
        })
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let listed = store
        .run_list(&RunFilter {
            dag_id: Some("chain".to_owned()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let none = store
        .run_list(&RunFilter {
            state: Some(RunState::Success),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn a_chain_runs_to_success(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    assert_eq!(
        states(store, run.id).await,
        "a=queued b=scheduled c=scheduled"
    );
    assert_eq!(run_state(store, run.id).await, RunState::Running);
    for (step, expected) in [
        "a=success b=queued c=scheduled",
        "a=success b=success c=queued",
        "a=success b=success c=success",
    ]
    .iter()
    .enumerate()
    {
        let now = T0 + (step as i64 + 1) * SECOND;
        let claimed = claim(store, "w1", 10, now).await;
        assert_eq!(
            claimed.len(),
            1,
            "exactly one task is ready at a time in a chain"
        );
        assert_eq!(claimed[0].try_number, 1);
        assert_eq!(claimed[0].kind, "noop");
        let outcome = store
            .task_instance_complete(&[success(&claimed[0])], now)
            .await
            .unwrap();
        assert_eq!(outcome, vec![Ok(CompletionOutcome::Succeeded)]);
        assert_eq!(states(store, run.id).await, *expected);
    }
    let finished = store.run_get(run.id).await.unwrap().unwrap();
    assert_eq!(finished.state, RunState::Success);
    assert!(finished.ended_at.is_some());
    let instances = store.task_instance_list(run.id).await.unwrap();
    let attempts = store.attempt_list(instances[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].worker_id.as_str()),
        ("success", "w1")
    );
    assert_eq!(
        instances[0].summary,
        Some(serde_json::json!({ "ok": true }))
    );
}

async fn late_and_duplicate_reports_are_refused(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let claimed = claim(store, "w1", 1, T0).await;
    let first = store
        .task_instance_complete(&[success(&claimed[0]), success(&claimed[0])], T0 + 1)
        .await
        .unwrap();
    assert_eq!(first[0], Ok(CompletionOutcome::Succeeded));
    assert!(
        matches!(
            first[1],
            Err(Rejection::Stale {
                state: TaskState::Success,
                ..
            })
        ),
        "{:?}",
        first[1]
    );
    let unknown = store
        .task_instance_complete(
            &[Completion {
                task_instance_id: 999_999,
                fence: 1,
                result: AttemptResult::success(serde_json::json!(null)),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(unknown, vec![Err(Rejection::Unknown(999_999))]);
    let again = store
        .task_instance_complete(&[failure(&claimed[0], true)], T0 + 2)
        .await
        .unwrap();
    assert!(matches!(again[0], Err(Rejection::Stale { .. })));
    assert_eq!(
        states(store, run.id).await,
        "a=success b=queued c=scheduled",
        "a late failure cannot move a task back"
    );
}

async fn retries_wait_then_run_again(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let first = claim(store, "w1", 1, T0).await;
    let outcome = store
        .task_instance_complete(&[failure(&first[0], true)], T0)
        .await
        .unwrap();
    let Ok(CompletionOutcome::WillRetry { at }) = outcome[0] else {
        panic!("{outcome:?}")
    };
    assert!(
        (T0 + 9 * SECOND..=T0 + 11 * SECOND).contains(&at),
        "10 s ±10%: {}",
        at - T0
    );
    assert_eq!(
        states(store, run.id).await,
        "a=up_for_retry b=scheduled c=scheduled"
    );
    assert_eq!(store.task_instance_next_due().await.unwrap(), Some(at));
    assert!(
        claim(store, "w1", 1, T0 + SECOND).await.is_empty(),
        "not claimable before its retry time"
    );
    assert_eq!(
        store.task_instance_maintain(at - 1).await.unwrap().retried,
        0
    );
    assert_eq!(store.task_instance_maintain(at).await.unwrap().retried, 1);
    let second = claim(store, "w2", 1, at).await;
    assert_eq!(second[0].try_number, 2);
    assert!(second[0].fence > first[0].fence);
    // Out of tries: the failure is final and everything downstream is upstream-failed.
    let outcome = store
        .task_instance_complete(&[failure(&second[0], true)], at + SECOND)
        .await
        .unwrap();
    assert_eq!(outcome, vec![Ok(CompletionOutcome::Failed)]);
    assert_eq!(
        states(store, run.id).await,
        "a=failed b=upstream_failed c=upstream_failed"
    );
    assert_eq!(run_state(store, run.id).await, RunState::Failed);
    let attempts = store
        .attempt_list(second[0].task_instance_id)
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|attempt| attempt.state.as_str())
            .collect::<Vec<_>>(),
        ["failed", "failed"]
    );
}

async fn permanent_failures_are_not_retried(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let claimed = claim(store, "w1", 1, T0).await;
    let outcome = store
        .task_instance_complete(&[failure(&claimed[0], false)], T0)
        .await
        .unwrap();
    assert_eq!(outcome, vec![Ok(CompletionOutcome::Failed)]);
    assert_eq!(run_state(store, run.id).await, RunState::Failed);
}

async fn trigger_rules_route_failures(db: &TestDb) {
    let store = &*db.store;
    let text = r#"
id = "rules"
[[tasks]]
id = "work"
kind = "noop"
[[tasks]]
id = "after"
kind = "noop"
depends_on = ["work"]
[[tasks]]
id = "alert"
kind = "noop"
depends_on = ["work"]
trigger_rule = "one_failed"
[[tasks]]
id = "cleanup"
kind = "noop"
depends_on = ["after", "alert"]
trigger_rule = "all_done"
[[tasks]]
id = "report"
kind = "noop"
depends_on = ["after"]
trigger_rule = "none_failed"
"#;
    let run = started_run(store, text).await;
    let work = claim(store, "w", 1, T0).await;
    store
        .task_instance_complete(&[failure(&work[0], false)], T0)
        .await
        .unwrap();
    assert_eq!(
        states(store, run.id).await,
        "work=failed after=upstream_failed alert=queued cleanup=scheduled report=upstream_failed"
    );
    let alert = claim(store, "w", 1, T0).await;
    assert_eq!(alert[0].task_id, "alert");
    store
        .task_instance_complete(&[success(&alert[0])], T0)
        .await
        .unwrap();
    let cleanup = claim(store, "w", 1, T0).await;
    assert_eq!(cleanup[0].task_id, "cleanup");
    store
        .task_instance_complete(&[success(&cleanup[0])], T0)
        .await
        .unwrap();
    assert_eq!(
        states(store, run.id).await,
        "work=failed after=upstream_failed alert=success cleanup=success report=upstream_failed"
    );
    // The leaves are cleanup (success) and report (upstream_failed): the run failed.
    assert_eq!(run_state(store, run.id).await, RunState::Failed);

    // On success instead, the alert is skipped and the clean-up still runs.
    let second = create_run(store, "rules", T0 + SECOND).await;
    store.run_start_queued(T0 + SECOND).await.unwrap();
    let work = claim(store, "w", 1, T0 + SECOND).await;
    store
        .task_instance_complete(&[success(&work[0])], T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(
        states(store, second.id).await,
        "work=success after=queued alert=skipped cleanup=scheduled report=scheduled"
    );
    for _ in 0..3 {
        let next = claim(store, "w", 1, T0 + SECOND).await;
        store
            .task_instance_complete(&[success(&next[0])], T0 + SECOND)
            .await
            .unwrap();
    }
    assert_eq!(
        states(store, second.id).await,
        "work=success after=success alert=skipped cleanup=success report=success"
    );
    assert_eq!(run_state(store, second.id).await, RunState::Success);
}

async fn expired_leases_are_rescued_and_fenced(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let claimed = claim(store, "dead-worker", 1, T0).await;
    let lease_end = T0 + 30 * SECOND;
    assert_eq!(
        store
            .task_instance_heartbeat(
                "dead-worker",
                &[(claimed[0].task_instance_id, claimed[0].fence)],
                lease_end
            )
            .await
            .unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.task_instance_next_due().await.unwrap(),
        Some(lease_end)
    );
    assert_eq!(
        store
            .task_instance_maintain(lease_end)
            .await
            .unwrap()
            .rescued,
        0,
        "a lease is good until it has passed"
    );
    let report = store.task_instance_maintain(lease_end + 1).await.unwrap();
    assert_eq!(report.rescued, 1);
    // Lost, not failed: queued again at once, without using the task's one retry.
    assert_eq!(
        states(store, run.id).await,
        "a=queued b=scheduled c=scheduled"
    );
    let attempts = store
        .attempt_list(claimed[0].task_instance_id)
        .await
        .unwrap();
    assert_eq!(attempts[0].state, "lost");
    // The dead worker comes back: its heartbeat says the task is gone, its completion is refused.
    let lost = store
        .task_instance_heartbeat(
            "dead-worker",
            &[(claimed[0].task_instance_id, claimed[0].fence)],
            lease_end + 60 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(lost, vec![claimed[0].task_instance_id]);
    // A task instance that never existed is the caller's mistake, not a lost lease.
    for refused in [
        store
            .task_instance_heartbeat("dead-worker", &[(999_999, 1)], lease_end)
            .await
            .map(drop),
        store
            .task_instance_release("dead-worker", &[(999_999, 1)], lease_end)
            .await
            .map(drop),
    ] {
        assert!(
            matches!(&refused, Err(StoreError::NotFound(what)) if what == "task instance 999999"),
            "{refused:?}"
        );
    }
    let late = store
        .task_instance_complete(&[success(&claimed[0])], lease_end + 2)
        .await
        .unwrap();
    assert!(
        matches!(
            late[0],
            Err(Rejection::Stale {
                state: TaskState::Queued,
                ..
            })
        ),
        "{late:?}"
    );
    // It runs again elsewhere and succeeds exactly once.
    store
        .task_instance_maintain(lease_end + 60 * SECOND)
        .await
        .unwrap();
    let again = claim(store, "live-worker", 1, lease_end + 60 * SECOND).await;
    assert_eq!(again[0].try_number, 2);
    store
        .task_instance_complete(&[success(&again[0])], lease_end + 61 * SECOND)
        .await
        .unwrap();
    let attempts = store
        .attempt_list(claimed[0].task_instance_id)
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .filter(|attempt| attempt.state == "success")
            .count(),
        1
    );
}

async fn timeouts_fail_the_attempt(db: &TestDb) {
    let store = &*db.store;
    let text = "id = \"slow\"\n[[tasks]]\nid = \"t\"\nkind = \"noop\"\ntimeout = \"5s\"\nretries = 1\nretry_delay = \"1s\"\n";
    let run = started_run(store, text).await;
    let claimed = claim(store, "w", 1, T0).await;
    assert_eq!(claimed[0].timeout_at, Some(T0 + 5 * SECOND));
    assert_eq!(
        store
            .task_instance_maintain(T0 + 5 * SECOND - 1)
            .await
            .unwrap()
            .timed_out,
        0
    );
    assert_eq!(
        store
            .task_instance_maintain(T0 + 5 * SECOND)
            .await
            .unwrap()
            .timed_out,
        1
    );
    let instance = &store.task_instance_list(run.id).await.unwrap()[0];
    assert_eq!(instance.state, TaskState::UpForRetry);
    assert_eq!(instance.error.as_deref(), Some("timed out after 5s"));
    assert_eq!(
        store.attempt_list(instance.id).await.unwrap()[0].state,
        "timed_out"
    );
}

async fn cancelling_a_run_stops_its_tasks_and_admits_the_next(db: &TestDb) {
    let store = &*db.store;
    let text = format!("{CHAIN}\nmax_active_runs = 1\n")
        .replace("id = \"chain\"\n", "id = \"chain\"\nmax_active_runs = 1\n");
    let text = text.trim_end_matches("max_active_runs = 1\n");
    let loaded = dag(text);
    assert_eq!(loaded.dag.max_active_runs, 1);
    store.dag_sync(&loaded, T0).await.unwrap();
    let first = create_run(store, "chain", T0).await;
    let second = create_run(store, "chain", T0 + 1).await;
    assert_eq!(store.run_start_queued(T0).await.unwrap(), vec![first.id]);
    let claimed = claim(store, "w", 1, T0).await;
    assert!(store.run_cancel(first.id, T0 + 2).await.unwrap());
    assert!(
        !store.run_cancel(first.id, T0 + 3).await.unwrap(),
        "cancelling twice does nothing"
    );
    assert_eq!(
        states(store, first.id).await,
        "a=cancelled b=cancelled c=cancelled"
    );
    assert_eq!(run_state(store, first.id).await, RunState::Cancelled);
    let lost = store
        .task_instance_heartbeat(
            "w",
            &[(claimed[0].task_instance_id, claimed[0].fence)],
            T0 + 30 * SECOND,
        )
        .await
        .unwrap();
    assert_eq!(
        lost,
        vec![claimed[0].task_instance_id],
        "the worker learns its task was cancelled"
    );
    let late = store
        .task_instance_complete(&[success(&claimed[0])], T0 + 4)
        .await
        .unwrap();
    assert!(matches!(
        late[0],
        Err(Rejection::Stale {
            state: TaskState::Cancelled,
            ..
        })
    ));
    assert_eq!(
        run_state(store, second.id).await,
        RunState::Running,
        "the queued run took the free slot"
    );
}

async fn max_active_runs_and_pause_hold(db: &TestDb) {
    let store = &*db.store;
    let text = CHAIN.replace("id = \"chain\"\n", "id = \"chain\"\nmax_active_runs = 2\n");
    store.dag_sync(&dag(&text), T0).await.unwrap();
    store.dag_set_paused("chain", true, T0).await.unwrap();
    let runs: Vec<RunRecord> = futures_free_create(store, 5).await;
    assert!(
        store.run_start_queued(T0).await.unwrap().is_empty(),
        "a paused DAG starts nothing"
    );
    store.dag_set_paused("chain", false, T0).await.unwrap();
    let running = store
        .run_list(&RunFilter {
            state: Some(RunState::Running),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        running.iter().map(|run| run.id).collect::<HashSet<_>>(),
        HashSet::from([runs[0].id, runs[1].id])
    );
    // Finish the oldest run: the next queued one starts in the same transaction.
    for _ in 0..3 {
        let claimed = claim(store, "w", 1, T0).await;
        assert_eq!(
            claimed[0].run_id, runs[0].id,
            "the older run's tasks come first (lower ids)"
        );
        store
            .task_instance_complete(&[success(&claimed[0])], T0)
            .await
            .unwrap();
    }
    assert_eq!(run_state(store, runs[0].id).await, RunState::Success);
    assert_eq!(run_state(store, runs[2].id).await, RunState::Running);
    assert_eq!(run_state(store, runs[3].id).await, RunState::Queued);
    assert!(matches!(
        store.dag_set_paused("nope", true, T0).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn futures_free_create(store: &dyn Store, count: i64) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for index in 0..count {
        runs.push(create_run(store, "chain", T0 + index).await);
    }
    runs
}

async fn clear_and_mark_rerun_and_reroute(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    for _ in 0..3 {
        let claimed = claim(store, "w", 1, T0).await;
        store
            .task_instance_complete(&[success(&claimed[0])], T0)
            .await
            .unwrap();
    }
    assert_eq!(run_state(store, run.id).await, RunState::Success);
    let cleared = store
        .task_instance_clear(run.id, "b", true, T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(cleared, ["b", "c"]);
    assert_eq!(
        states(store, run.id).await,
        "a=success b=queued c=scheduled"
    );
    assert_eq!(run_state(store, run.id).await, RunState::Running);
    let again = claim(store, "w", 1, T0 + SECOND).await;
    assert_eq!((again[0].task_id.as_str(), again[0].try_number), ("b", 2));
    store
        .task_instance_complete(&[success(&again[0])], T0 + SECOND)
        .await
        .unwrap();
    assert_eq!(states(store, run.id).await, "a=success b=success c=queued");

    // Marking b failed by hand: c can no longer run; the run fails.
    store
        .task_instance_mark(run.id, "b", TaskState::Failed, T0 + 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        states(store, run.id).await,
        "a=success b=failed c=upstream_failed"
    );
    assert_eq!(run_state(store, run.id).await, RunState::Failed);
    // Marking it success: c becomes ready again.
    store
        .task_instance_mark(run.id, "b", TaskState::Success, T0 + 3 * SECOND)
        .await
        .unwrap();
    assert_eq!(states(store, run.id).await, "a=success b=success c=queued");
    assert_eq!(run_state(store, run.id).await, RunState::Running);
    assert!(matches!(
        store
            .task_instance_mark(run.id, "b", TaskState::Queued, T0)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.task_instance_clear(run.id, "zzz", false, T0).await,
        Err(StoreError::NotFound(_))
    ));

    // Marking a running task: its worker's report is refused afterwards.
    let running = claim(store, "w", 1, T0 + 4 * SECOND).await;
    store
        .task_instance_mark(run.id, "c", TaskState::Success, T0 + 5 * SECOND)
        .await
        .unwrap();
    let late = store
        .task_instance_complete(&[failure(&running[0], false)], T0 + 6 * SECOND)
        .await
        .unwrap();
    assert!(matches!(late[0], Err(Rejection::Stale { .. })));
    assert_eq!(run_state(store, run.id).await, RunState::Success);
}

async fn logs_are_stored_once_and_read_in_order(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let claimed = claim(store, "w", 1, T0).await;
    let id = claimed[0].task_instance_id;
    let chunk = |seq: i64, text: &str| LogUpload {
        task_instance_id: id,
        try_number: 1,
        seq,
        chunk: text.to_owned(),
    };
    store.log_append(&[chunk(1, "second\n")], T0).await.unwrap();
    store
        .log_append(&[chunk(0, "first\n"), chunk(0, "first, sent again\n")], T0)
        .await
        .unwrap();
    store.log_append(&[], T0).await.unwrap();
    let chunks = store.log_read(id, 1, -1, 100).await.unwrap();
    assert_eq!(
        chunks
            .iter()
            .map(|chunk| chunk.chunk.as_str())
            .collect::<String>(),
        "first\nsecond\n"
    );
    assert_eq!(store.log_read(id, 1, 0, 100).await.unwrap().len(), 1);
    assert!(store.log_read(id, 2, -1, 100).await.unwrap().is_empty());
    // A completion carries the attempt's last chunk in the same transaction.
    let last = chunk(2, "third\n");
    store
        .task_instance_complete_with_logs(&[success(&claimed[0])], &[last], T0)
        .await
        .unwrap();
    assert_eq!(
        store.log_read(id, 1, 1, 100).await.unwrap()[0].chunk,
        "third\n"
    );
    assert_eq!(
        states(store, run.id).await,
        "a=success b=queued c=scheduled"
    );
    // The attempt has ended: more chunks for it are refused, and nothing of the request is
    // stored; a task instance or attempt that does not exist is not found (never a foreign-key
    // failure).
    let refused = store.log_append(&[chunk(3, "late\n")], T0).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(message)) if message.contains("has ended")),
        "{refused:?}"
    );
    let unknown = LogUpload {
        task_instance_id: 999_999,
        ..chunk(0, "x")
    };
    let refused = store.log_append(std::slice::from_ref(&unknown), T0).await;
    assert!(
        matches!(&refused, Err(StoreError::NotFound(what)) if what == "task instance 999999"),
        "{refused:?}"
    );
    let no_try = LogUpload {
        try_number: 2,
        ..chunk(0, "x")
    };
    let refused = store.log_append(&[no_try], T0).await;
    assert!(
        matches!(&refused, Err(StoreError::NotFound(what)) if what == &format!("attempt 2 of task instance {id}")),
        "{refused:?}"
    );
    assert_eq!(
        store
            .task_instance_list_missing(&[999_999, id, 999_999, 888_888])
            .await
            .unwrap(),
        [888_888, 999_999]
    );
    // Riding with a completion, such chunks are dropped instead: the batch is not failed.
    let next = claim(store, "w", 1, T0).await;
    store
        .task_instance_complete_with_logs(&[success(&next[0])], &[unknown, chunk(4, "late\n")], T0)
        .await
        .unwrap();
    assert_eq!(store.log_read(id, 1, 2, 100).await.unwrap().len(), 0);
}

async fn leadership_is_exclusive_until_it_expires(db: &TestDb) {
    let store = &*db.store;
    let ttl = Duration::from_secs(10);
    assert!(
        store
            .leader_attempt_elect("scheduler", "a", ttl, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .leader_attempt_elect("scheduler", "b", ttl, T0 + SECOND)
            .await
            .unwrap()
    );
    assert!(
        store
            .leader_attempt_elect("scheduler", "a", ttl, T0 + 5 * SECOND)
            .await
            .unwrap(),
        "the leader renews"
    );
    assert!(
        !store
            .leader_attempt_elect("scheduler", "b", ttl, T0 + 14 * SECOND)
            .await
            .unwrap()
    );
    assert!(
        store
            .leader_attempt_elect("scheduler", "b", ttl, T0 + 16 * SECOND)
            .await
            .unwrap(),
        "b takes over once a's lease lapsed"
    );
    assert!(
        !store
            .leader_attempt_elect("scheduler", "a", ttl, T0 + 17 * SECOND)
            .await
            .unwrap()
    );
}

async fn claims_follow_queues_and_priority(db: &TestDb) {
    let store = &*db.store;
    let text = r#"
id = "queues"
[[tasks]]
id = "low"
kind = "noop"
[[tasks]]
id = "high"
kind = "noop"
priority = 10
[[tasks]]
id = "gpu"
kind = "noop"
queue = "gpu"
"#;
    started_run(store, text).await;
    let first = claim(store, "w", 1, T0).await;
    assert_eq!(first[0].task_id, "high");
    let rest = claim(store, "w", 10, T0).await;
    assert_eq!(
        rest.iter()
            .map(|task| task.task_id.as_str())
            .collect::<Vec<_>>(),
        ["low"],
        "gpu waits for a gpu worker"
    );
    let gpu = store
        .task_instance_claim(&ClaimParams {
            worker_id: "g".to_owned(),
            queues: vec!["gpu".to_owned()],
            limit: 10,
            lease: Duration::from_secs(30),
            now: T0,
        })
        .await
        .unwrap();
    assert_eq!(gpu[0].task_id, "gpu");
}

async fn concurrent_claimers_never_share_a_task(db: &TestDb) {
    let store = db.store.clone();
    let mut text = String::from("id = \"wide\"\n");
    for index in 0..200 {
        text.push_str(&format!("[[tasks]]\nid = \"t{index}\"\nkind = \"noop\"\n"));
    }
    started_run(&*store, &text).await;
    let mut handles = Vec::new();
    for worker in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&*store, &format!("w{worker}"), 7, T0).await;
                if claimed.is_empty() {
                    return mine;
                }
                let completions: Vec<Completion> = claimed.iter().map(success).collect();
                for outcome in store
                    .task_instance_complete(&completions, T0)
                    .await
                    .unwrap()
                {
                    assert_eq!(outcome, Ok(CompletionOutcome::Succeeded));
                }
                mine.extend(claimed.into_iter().map(|task| task.task_instance_id));
            }
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (200, 200),
        "every task claimed exactly once"
    );
}

/// A chain step's report, its last log chunk and the claim of the next task go through in one
/// call; a replayed report is refused and its claim finds nothing, and a report without a claim
/// claims nothing.
async fn a_completion_claims_the_next_task_in_the_same_call(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, CHAIN).await;
    let first = claim(store, "w1", 1, T0).await;
    assert_eq!(first[0].task_id, "a");
    let logs = vec![LogUpload {
        task_instance_id: first[0].task_instance_id,
        try_number: 1,
        seq: 0,
        chunk: "a done\n".to_owned(),
    }];
    let next_claim = claim_params("w1", 4, T0 + 1);
    let (outcomes, mut claimed) = store
        .task_instance_complete_and_claim(&[success(&first[0])], &logs, Some(&next_claim), T0 + 1)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Ok(CompletionOutcome::Succeeded)]);
    assert_eq!(claimed.len(), 1, "b became ready in the same transaction");
    let b = claimed.remove(0);
    assert_eq!((b.task_id.as_str(), b.try_number), ("b", 1));
    assert_eq!(
        states(store, run.id).await,
        "a=success b=running c=scheduled"
    );
    let read = store
        .log_read(first[0].task_instance_id, 1, -1, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);

    let (outcomes, claimed) = store
        .task_instance_complete_and_claim(&[success(&first[0])], &[], Some(&next_claim), T0 + 2)
        .await
        .unwrap();
    assert!(
        matches!(outcomes[..], [Err(Rejection::Stale { .. })]),
        "{outcomes:?}"
    );
    assert!(claimed.is_empty(), "c still waits on b");

    let (outcomes, claimed) = store
        .task_instance_complete_and_claim(&[success(&b)], &[], None, T0 + 3)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Ok(CompletionOutcome::Succeeded)]);
    assert!(claimed.is_empty(), "no claim was asked for");
    assert_eq!(
        states(store, run.id).await,
        "a=success b=success c=queued",
        "c is ready and waits for a claim"
    );
}

async fn last_scheduled(store: &dyn Store) -> Option<i64> {
    store
        .dag_get("chain")
        .await
        .unwrap()
        .unwrap()
        .last_scheduled_at
}

/// The newest scheduled logical date only moves forward, and an unknown DAG changes nothing.
async fn the_last_scheduled_date_only_moves_forward(db: &TestDb) {
    let store = &*db.store;
    assert_eq!(store.backend(), db.backend);
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    assert_eq!(last_scheduled(store).await, None);
    store
        .dag_set_last_scheduled("chain", T0 + 10)
        .await
        .unwrap();
    assert_eq!(last_scheduled(store).await, Some(T0 + 10));
    store.dag_set_last_scheduled("chain", T0 + 5).await.unwrap();
    assert_eq!(
        last_scheduled(store).await,
        Some(T0 + 10),
        "never backwards"
    );
    store
        .dag_set_last_scheduled("chain", T0 + 20)
        .await
        .unwrap();
    assert_eq!(last_scheduled(store).await, Some(T0 + 20));
    store.dag_set_last_scheduled("missing", T0).await.unwrap();
    assert!(store.dag_get("missing").await.unwrap().is_none());
}

/// Every method of the `Store` trait is called by a check that runs on both backends (a file
/// of `engine/tests` that defines its checks with `conformance!`), so a method cannot be added
/// without one.
#[test]
fn every_store_method_has_a_conformance_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let store_trait = std::fs::read_to_string(root.join("src/store/mod.rs")).unwrap();
    let body = store_trait
        .split_once("pub trait Store")
        .and_then(|(_, rest)| rest.split_once("\n}\n"))
        .map(|(body, _)| body)
        .expect("engine/src/store/mod.rs declares `pub trait Store { … }`");
    let methods: Vec<&str> = body
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("async fn ")
                .or_else(|| line.strip_prefix("fn "))?;
            rest.split(['(', '<']).next()
        })
        .collect();
    assert!(methods.len() > 60, "found only {methods:?}");
    let mut suites = String::new();
    for entry in std::fs::read_dir(root.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("\nconformance!(") {
                suites.push_str(&text);
            }
        }
    }
    let missing: Vec<&str> = methods
        .into_iter()
        .filter(|method| !suites.contains(&format!(".{method}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "store methods no conformance check calls: {missing:?}"
    );
}

conformance!(
    migrations_are_idempotent_and_a_newer_schema_is_refused,
    dag_versions_follow_file_changes,
    one_run_per_logical_date,
    a_chain_runs_to_success,
    late_and_duplicate_reports_are_refused,
    retries_wait_then_run_again,
    permanent_failures_are_not_retried,
    trigger_rules_route_failures,
    expired_leases_are_rescued_and_fenced,
    timeouts_fail_the_attempt,
    cancelling_a_run_stops_its_tasks_and_admits_the_next,
    max_active_runs_and_pause_hold,
    clear_and_mark_rerun_and_reroute,
    logs_are_stored_once_and_read_in_order,
    leadership_is_exclusive_until_it_expires,
    claims_follow_queues_and_priority,
    concurrent_claimers_never_share_a_task,
    crossing_completion_batches_do_not_deadlock,
    combined_completion_calls_share_one_transaction,
    a_trigger_claims_for_waiting_workers,
    a_completion_claims_the_next_task_in_the_same_call,
    the_last_scheduled_date_only_moves_forward,
);

/// Two batches finishing tasks of the same runs in opposite orders, at once, from two
/// connection pools: on PostgreSQL this deadlocked until completions were applied in one order.
async fn crossing_completion_batches_do_not_deadlock(db: &TestDb) {
    let store_a = kiln_engine::store::connect(&db.url).await.unwrap();
    let store_b = kiln_engine::store::connect(&db.url).await.unwrap();
    let text = "id = \"p\"\nmax_active_runs = 1000\n[[tasks]]\nid = \"t1\"\nkind = \"noop\"\n[[tasks]]\nid = \"t2\"\nkind = \"noop\"\n[[tasks]]\nid = \"j\"\nkind = \"noop\"\ndepends_on = [\"t1\", \"t2\"]\n";
    db.store.dag_sync(&dag(text), T0).await.unwrap();
    for round in 0..30i64 {
        let first = create_run(&*db.store, "p", T0 + round * 10).await;
        let second = create_run(&*db.store, "p", T0 + round * 10 + 1).await;
        db.store.run_start_queued(T0).await.unwrap();
        let claimed = claim(&*db.store, "w", 10, T0).await;
        assert_eq!(claimed.len(), 4);
        let find = |run_id: i64, task: &str| {
            success(
                claimed
                    .iter()
                    .find(|c| c.run_id == run_id && c.task_id == task)
                    .unwrap(),
            )
        };
        let one_way = vec![find(first.id, "t1"), find(second.id, "t1")];
        let other_way = vec![find(second.id, "t2"), find(first.id, "t2")];
        let (a, b) = tokio::join!(
            store_a.task_instance_complete(&one_way, T0),
            store_b.task_instance_complete(&other_way, T0)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            a.iter()
                .chain(&b)
                .all(|outcome| *outcome == Ok(CompletionOutcome::Succeeded))
        );
        let joins = claim(&*db.store, "w", 10, T0).await;
        assert_eq!(joins.len(), 2, "both joins became ready");
        let done: Vec<Completion> = joins.iter().map(success).collect();
        db.store.task_instance_complete(&done, T0).await.unwrap();
    }
}

fn claim_params(worker: &str, limit: u32, now: i64) -> ClaimParams {
    ClaimParams {
        worker_id: worker.to_owned(),
        queues: vec!["default".to_owned()],
        limit,
        lease: Duration::from_secs(30),
        now,
    }
}

/// A fan-out of 40 whose completions arrive as two workers' calls applied in one transaction:
/// each call gets its own outcomes and claims, a stale report loses to the current one, and
/// the join is queued once, by the last of the 40.
async fn combined_completion_calls_share_one_transaction(db: &TestDb) {
    let store = &*db.store;
    let mut text = "id = \"fan\"\n[[tasks]]\nid = \"root\"\nkind = \"noop\"\n".to_owned();
    let mut all = Vec::new();
    for index in 0..40 {
        text.push_str(&format!(
            "[[tasks]]\nid = \"m{index}\"\nkind = \"noop\"\ndepends_on = [\"root\"]\n"
        ));
        all.push(format!("\"m{index}\""));
    }
    text.push_str(&format!(
        "[[tasks]]\nid = \"join\"\nkind = \"noop\"\ndepends_on = [{}]\n",
        all.join(", ")
    ));
    let run = started_run(store, &text).await;
    let root = claim(store, "w1", 1, T0).await;
    let logs = vec![LogUpload {
        task_instance_id: root[0].task_instance_id,
        try_number: 1,
        seq: 0,
        chunk: "root done\n".to_owned(),
    }];
    let first_claim = claim_params("w1", 25, T0 + 1);
    let replies = store
        .task_instance_complete_batches(
            &[CompletionBatch {
                completions: &[success(&root[0])],
                logs: &logs,
                claim: Some(&first_claim),
            }],
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, vec![Ok(CompletionOutcome::Succeeded)]);
    let first = replies[0].1.clone();
    assert_eq!(
        first.len(),
        25,
        "all 40 became ready at once; the call claimed 25"
    );
    let second = claim(store, "w2", 25, T0 + 1).await;
    assert_eq!(second.len(), 15);
    let read = store
        .log_read(root[0].task_instance_id, 1, -1, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);

    // Worker 1 reports 24 of its tasks and a stale report for the 25th (an older fence);
    // worker 2 reports all of its tasks and the 25th with the right fence.
    let one: Vec<Completion> = first[..24].iter().map(success).collect();
    let mut one = one;
    one.push(Completion {
        fence: first[24].fence - 1,
        ..success(&first[24])
    });
    let mut two: Vec<Completion> = second.iter().map(success).collect();
    two.push(success(&first[24]));
    let claim_one = claim_params("w1", 25, T0 + 2);
    let claim_two = claim_params("w2", 16, T0 + 2);
    let replies = store
        .task_instance_complete_batches(
            &[
                CompletionBatch {
                    completions: &one,
                    logs: &[],
                    claim: Some(&claim_one),
                },
                CompletionBatch {
                    completions: &two,
                    logs: &[],
                    claim: Some(&claim_two),
                },
            ],
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert!(
        replies[0].0[..24]
            .iter()
            .all(|outcome| *outcome == Ok(CompletionOutcome::Succeeded))
    );
    assert!(
        matches!(replies[0].0[24], Err(Rejection::Stale { .. })),
        "{:?}",
        replies[0].0[24]
    );
    assert!(
        replies[1]
            .0
            .iter()
            .all(|outcome| *outcome == Ok(CompletionOutcome::Succeeded))
    );
    let joins: Vec<&ClaimedTask> = replies.iter().flat_map(|reply| &reply.1).collect();
    assert_eq!(
        joins.len(),
        1,
        "the join is claimed once, by the first call"
    );
    assert_eq!(joins[0].task_id, "join");
    assert_eq!(replies[0].1.len(), 1);
    let done = store
        .task_instance_complete(&[success(joins[0])], T0 + 3)
        .await
        .unwrap();
    assert_eq!(done, vec![Ok(CompletionOutcome::Succeeded)]);
    assert_eq!(run_state(store, run.id).await, RunState::Success);
}

/// A trigger creates, starts and claims for waiting workers in one transaction; a trigger at a
/// taken logical date claims nothing.
async fn a_trigger_claims_for_waiting_workers(db: &TestDb) {
    let store = &*db.store;
    let loaded = dag(CHAIN);
    store.dag_sync(&loaded, T0).await.unwrap();
    let params = RunCreateParams {
        dag_id: "chain".to_owned(),
        dag_version_id: None,
        logical_date: T0,
        data_interval: None,
        trigger: TriggerKind::Api,
        params: serde_json::json!({}),
        now: T0,
    };
    let claims = [claim_params("w1", 4, T0), claim_params("w2", 4, T0)];
    let (run, claimed) = store
        .run_trigger(&params, &claims)
        .await
        .unwrap()
        .expect("the run is new");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        claimed[0].len(),
        1,
        "the first waiting worker gets the root"
    );
    assert_eq!(claimed[0][0].task_id, "a");
    assert!(claimed[1].is_empty());
    assert_eq!(
        states(store, run.id).await,
        "a=running b=scheduled c=scheduled"
    );
    assert!(store.run_trigger(&params, &claims).await.unwrap().is_none());
    let outcome = store
        .task_instance_complete(&[success(&claimed[0][0])], T0 + 1)
        .await
        .unwrap();
    assert_eq!(outcome, vec![Ok(CompletionOutcome::Succeeded)]);
}
