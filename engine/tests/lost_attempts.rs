//! Attempts lost to the infrastructure, on SQLite and on PostgreSQL: a dead worker, an expired
//! lease or a hand-back runs the task again without using its retries, up to its
//! `max_lost_attempts`; the loss after that fails the task with every loss named; racing
//! rescuers count a loss once; a claim that never reached its worker is undone.

#[macro_use]
mod common;

use std::time::Duration;

use common::{TestDb, dag};
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, CompletionOutcome, Rejection,
    RunCreateParams, RunRecord, Store, TaskInstanceRecord, TriggerKind,
};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SECOND;
const LEASE: Duration = Duration::from_secs(30);

/// One task without retries, and one downstream of it.
const NO_RETRIES: &str = r#"
id = "fragile"
[[tasks]]
id = "work"
kind = "noop"
[[tasks]]
id = "after"
kind = "noop"
depends_on = ["work"]
"#;

async fn started_run(store: &dyn Store, text: &str) -> RunRecord {
    let loaded = dag(text);
    store.dag_sync(&loaded, T0).await.unwrap();
    let run = store
        .run_create(&RunCreateParams {
            dag_id: loaded.dag.id.clone(),
            dag_version_id: None,
            logical_date: T0,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: T0,
        })
        .await
        .unwrap()
        .expect("the run is new");
    assert_eq!(store.run_start_queued(T0).await.unwrap(), vec![run.id]);
    run
}

async fn claim(store: &dyn Store, worker: &str, limit: u32, now: i64) -> Vec<ClaimedTask> {
    store
        .task_instance_claim(&ClaimParams {
            worker_id: worker.to_owned(),
            queues: vec!["default".to_owned()],
            limit,
            lease: LEASE,
            now,
        })
        .await
        .unwrap()
}

async fn instance(store: &dyn Store, run_id: i64, task_id: &str) -> TaskInstanceRecord {
    store
        .task_instance_get(run_id, task_id)
        .await
        .unwrap()
        .unwrap()
}

/// A task's attempts as `(state, error)`, oldest first.
async fn attempts(store: &dyn Store, task_instance_id: i64) -> Vec<(String, Option<String>)> {
    store
        .attempt_list(task_instance_id)
        .await
        .unwrap()
        .into_iter()
        .map(|attempt| (attempt.state, attempt.error))
        .collect()
}

fn report(task: &ClaimedTask, result: AttemptResult) -> Completion {
    Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result,
    }
}

fn boom() -> AttemptResult {
    AttemptResult::Failure {
        error: "boom".to_owned(),
        retryable: true,
    }
}

async fn a_rescued_attempt_runs_again_without_using_a_try(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, NO_RETRIES).await;
    let first = claim(store, "dead", 1, T0).await;
    assert_eq!(first[0].task_id, "work");
    assert_eq!(
        store
            .task_instance_rescue_worker("dead", T0 + 1)
            .await
            .unwrap(),
        1
    );

    let work = instance(store, run.id, "work").await;
    assert_eq!(work.state, TaskState::Queued, "{work:?}");
    assert_eq!(
        (work.try_number, work.lost_attempts, work.own_tries()),
        (1, 1, (0, 1)),
        "the loss used none of the task's one try: {work:?}"
    );
    assert_eq!(work.queued_at, Some(T0 + 1));
    assert_eq!(
        attempts(store, work.id).await,
        [(
            "lost".to_owned(),
            Some("worker `dead` died while running the attempt".to_owned())
        )]
    );
    // Rescuing the same worker again finds nothing: the loss was counted once.
    assert_eq!(
        store
            .task_instance_rescue_worker("dead", T0 + 2)
            .await
            .unwrap(),
        0
    );
    assert_eq!(instance(store, run.id, "work").await.lost_attempts, 1);

    // Queued at once, not after a retry delay, and the dead worker's late report is refused.
    let again = claim(store, "alive", 1, T0 + 2).await;
    assert_eq!(
        (again[0].task_id.as_str(), again[0].try_number),
        ("work", 2)
    );
    let late = store
        .task_instance_complete(
            &[report(
                &first[0],
                AttemptResult::success(serde_json::json!({})),
            )],
            T0 + 3,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            late[0],
            Err(Rejection::Stale {
                state: TaskState::Running,
                ..
            })
        ),
        "{late:?}"
    );
    let done = store
        .task_instance_complete(
            &[report(
                &again[0],
                AttemptResult::success(serde_json::json!({})),
            )],
            T0 + 4,
        )
        .await
        .unwrap();
    assert_eq!(done, [Ok(CompletionOutcome::Succeeded)]);
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.own_tries(), work.lost_attempts),
        (TaskState::Success, (1, 1), 1)
    );
    let after = claim(store, "alive", 1, T0 + 5).await;
    store
        .task_instance_complete(
            &[report(
                &after[0],
                AttemptResult::success(serde_json::json!({})),
            )],
            T0 + 6,
        )
        .await
        .unwrap();
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Success
    );
}

async fn an_expired_lease_is_a_lost_attempt_too(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, NO_RETRIES).await;
    let claimed = claim(store, "silent", 1, T0).await;
    let lease_end = T0 + 30 * SECOND;
    assert_eq!(
        store
            .task_instance_maintain(lease_end)
            .await
            .unwrap()
            .rescued,
        0
    );
    let report = store.task_instance_maintain(lease_end + 1).await.unwrap();
    assert_eq!((report.rescued, report.retried), (1, 0));
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.lost_attempts, work.own_tries()),
        (TaskState::Queued, 1, (0, 1)),
        "{work:?}"
    );
    assert_eq!(
        attempts(store, work.id).await,
        [(
            "lost".to_owned(),
            Some("worker `silent` stopped heartbeating: its lease expired".to_owned())
        )]
    );
    // A heartbeat from the silent worker now says the task is gone.
    assert_eq!(
        store
            .task_instance_heartbeat(
                "silent",
                &[(claimed[0].task_instance_id, claimed[0].fence)],
                lease_end + 60 * SECOND
            )
            .await
            .unwrap(),
        vec![claimed[0].task_instance_id]
    );
    let again = claim(store, "alive", 1, lease_end + 2).await;
    assert_eq!(again[0].try_number, 2);
}

async fn after_its_budget_a_task_fails_naming_every_loss(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, NO_RETRIES).await;
    // Four losses, one of each kind and a second death: the default budget is three.
    let mut now = T0;
    let first = claim(store, "w1", 1, now).await;
    assert_eq!(
        store.task_instance_rescue_worker("w1", now).await.unwrap(),
        1
    );
    now += SECOND;
    claim(store, "w2", 1, now).await;
    now += 31 * SECOND;
    assert_eq!(store.task_instance_maintain(now).await.unwrap().rescued, 1);
    let third = claim(store, "w3", 1, now).await;
    let handed_back = store
        .task_instance_release("w3", &[(third[0].task_instance_id, third[0].fence)], now)
        .await
        .unwrap();
    assert_eq!(handed_back, 1);
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.lost_attempts, work.own_tries()),
        (TaskState::Queued, 3, (0, 1)),
        "three losses are within the budget: {work:?}"
    );
    claim(store, "w4", 1, now).await;
    assert_eq!(
        store.task_instance_rescue_worker("w4", now).await.unwrap(),
        1
    );

    let work = instance(store, run.id, "work").await;
    assert_eq!(work.state, TaskState::Failed, "{work:?}");
    assert_eq!(
        work.error.as_deref(),
        Some(
            "lost 4 attempts to the infrastructure (`max_lost_attempts` is 3): \
             attempt 1: worker `w1` died while running the attempt; \
             attempt 2: worker `w2` stopped heartbeating: its lease expired; \
             attempt 3: handed back by worker `w3` shutting down; \
             attempt 4: worker `w4` died while running the attempt"
        )
    );
    assert_eq!((work.lost_attempts, work.own_tries()), (4, (0, 1)));
    // Every loss stays recorded as one, with its own reason.
    let recorded = attempts(store, work.id).await;
    assert_eq!(recorded.len(), 4);
    assert!(
        recorded.iter().all(|(state, _)| state == "lost"),
        "{recorded:?}"
    );
    assert_eq!(
        recorded[3].1.as_deref(),
        Some("worker `w4` died while running the attempt")
    );
    assert_eq!(
        instance(store, run.id, "after").await.state,
        TaskState::UpstreamFailed
    );
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Failed
    );
    // The first dead worker's report is refused for good.
    let late = store
        .task_instance_complete(
            &[report(
                &first[0],
                AttemptResult::success(serde_json::json!({})),
            )],
            now,
        )
        .await
        .unwrap();
    assert!(matches!(late[0], Err(Rejection::Stale { .. })), "{late:?}");

    // Cleared, the task starts afresh: a full budget of losses again, only new ones named.
    store
        .task_instance_clear(run.id, "work", true, now)
        .await
        .unwrap();
    let work = instance(store, run.id, "work").await;
    assert_eq!((work.state, work.lost_attempts), (TaskState::Queued, 0));
    for worker in ["w5", "w6", "w7"] {
        claim(store, worker, 1, now).await;
        assert_eq!(
            store
                .task_instance_rescue_worker(worker, now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            instance(store, run.id, "work").await.state,
            TaskState::Queued
        );
    }
    claim(store, "w8", 1, now).await;
    store.task_instance_rescue_worker("w8", now).await.unwrap();
    let work = instance(store, run.id, "work").await;
    assert_eq!(work.state, TaskState::Failed);
    let error = work.error.unwrap();
    assert!(
        error.starts_with("lost 4 attempts to the infrastructure (`max_lost_attempts` is 3): attempt 5: worker `w5`"),
        "{error}"
    );
    assert!(!error.contains("`w1`"), "{error}");
}

async fn the_budget_is_set_per_task_and_in_the_defaults(db: &TestDb) {
    let store = &*db.store;
    let text = r#"
id = "budgets"
[defaults]
max_lost_attempts = 1
[[tasks]]
id = "inherits"
kind = "noop"
[[tasks]]
id = "none"
kind = "noop"
max_lost_attempts = 0
[[tasks]]
id = "many"
kind = "noop"
max_lost_attempts = 7
"#;
    let run = started_run(store, text).await;
    let budgets: Vec<(String, i64)> = store
        .task_instance_list(run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|instance| (instance.task_id, instance.max_lost_attempts))
        .collect();
    assert_eq!(
        budgets,
        [
            ("inherits".to_owned(), 1),
            ("none".to_owned(), 0),
            ("many".to_owned(), 7)
        ]
    );
    claim(store, "w1", 3, T0).await;
    assert_eq!(
        store.task_instance_rescue_worker("w1", T0).await.unwrap(),
        3
    );
    let none = instance(store, run.id, "none").await;
    assert_eq!(none.state, TaskState::Failed);
    assert_eq!(
        none.error.as_deref(),
        Some(
            "lost 1 attempt to the infrastructure (`max_lost_attempts` is 0): \
             attempt 1: worker `w1` died while running the attempt"
        )
    );
    assert_eq!(
        instance(store, run.id, "inherits").await.state,
        TaskState::Queued
    );
    claim(store, "w2", 3, T0).await;
    assert_eq!(
        store.task_instance_rescue_worker("w2", T0).await.unwrap(),
        2
    );
    assert_eq!(
        instance(store, run.id, "inherits").await.state,
        TaskState::Failed
    );
    // With many losses, the error names the latest five and counts the rest.
    for round in 3..=8 {
        let worker = format!("w{round}");
        assert_eq!(claim(store, &worker, 3, T0).await.len(), 1);
        store
            .task_instance_rescue_worker(&worker, T0)
            .await
            .unwrap();
    }
    let many = instance(store, run.id, "many").await;
    assert_eq!((many.state, many.lost_attempts), (TaskState::Failed, 8));
    let error = many.error.unwrap();
    assert!(
        error.starts_with(
            "lost 8 attempts to the infrastructure (`max_lost_attempts` is 7); the latest: attempt 4: worker `w4` died"
        ),
        "{error}"
    );
    assert!(
        error.ends_with("attempt 8: worker `w8` died while running the attempt"),
        "{error}"
    );
    assert_eq!(error.matches("attempt ").count(), 5, "{error}");
}

async fn an_ordinary_failure_still_uses_the_tasks_retries(db: &TestDb) {
    let store = &*db.store;
    let text = "id = \"retrying\"\n[[tasks]]\nid = \"work\"\nkind = \"noop\"\nretries = 1\nretry_delay = \"10s\"\n";
    let run = started_run(store, text).await;
    claim(store, "dead", 1, T0).await;
    store.task_instance_rescue_worker("dead", T0).await.unwrap();
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.own_tries(), work.next_retry_at),
        (TaskState::Queued, (0, 2), None),
        "a loss neither uses a retry nor waits for one: {work:?}"
    );

    let second = claim(store, "w", 1, T0).await;
    let outcome = store
        .task_instance_complete(&[report(&second[0], boom())], T0 + SECOND)
        .await
        .unwrap();
    // The first retry's delay (10 s, jittered by up to 10%), not the doubled second one: the
    // loss before it was not one of the task's failures.
    assert!(
        matches!(
            outcome[..],
            [Ok(CompletionOutcome::WillRetry { at })] if (T0 + 10 * SECOND..=T0 + 12 * SECOND).contains(&at)
        ),
        "{outcome:?}"
    );
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.own_tries(), work.lost_attempts),
        (TaskState::UpForRetry, (1, 2), 1)
    );
    store
        .task_instance_maintain(T0 + 12 * SECOND)
        .await
        .unwrap();
    let third = claim(store, "w", 1, T0 + 12 * SECOND).await;
    assert_eq!(third[0].try_number, 3);
    let outcome = store
        .task_instance_complete(&[report(&third[0], boom())], T0 + 13 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome, [Ok(CompletionOutcome::Failed)]);
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (work.state, work.own_tries(), work.error.as_deref()),
        (TaskState::Failed, (2, 2), Some("boom")),
        "both of the task's own tries were used by its failures"
    );
    let states: Vec<String> = attempts(store, work.id)
        .await
        .into_iter()
        .map(|(state, _)| state)
        .collect();
    assert_eq!(states, ["lost", "failed", "failed"]);
}

/// Three rescuers at once (the dead-worker path, lease expiry and a hand-back), each on its own
/// connection pool, over the same 20 attempts: every loss is counted exactly once.
async fn racing_rescuers_count_each_loss_once(db: &TestDb) {
    let stores = [
        kiln_engine::store::connect(&db.url).await.unwrap(),
        kiln_engine::store::connect(&db.url).await.unwrap(),
        kiln_engine::store::connect(&db.url).await.unwrap(),
    ];
    let mut text = String::from("id = \"wide\"\n");
    for index in 0..20 {
        text.push_str(&format!("[[tasks]]\nid = \"t{index}\"\nkind = \"noop\"\n"));
    }
    let run = started_run(&*db.store, &text).await;
    let mut now = T0;
    for round in 1..=4i64 {
        let claimed = claim(&*db.store, "doomed", 20, now).await;
        assert_eq!(claimed.len(), 20, "round {round}");
        let held: Vec<(i64, i64)> = claimed
            .iter()
            .map(|task| (task.task_instance_id, task.fence))
            .collect();
        now += 31 * SECOND;
        let (rescued, maintained, released) = tokio::join!(
            stores[0].task_instance_rescue_worker("doomed", now),
            stores[1].task_instance_maintain(now),
            stores[2].task_instance_release("doomed", &held, now),
        );
        let total = rescued.unwrap() + maintained.unwrap().rescued + released.unwrap();
        assert_eq!(total, 20, "round {round}: each attempt ended once");
        for instance in db.store.task_instance_list(run.id).await.unwrap() {
            assert_eq!(
                (instance.lost_attempts, instance.try_number),
                (round, round),
                "round {round}: {instance:?}"
            );
            let expected = if round <= 3 {
                TaskState::Queued
            } else {
                TaskState::Failed
            };
            assert_eq!(instance.state, expected, "round {round}: {instance:?}");
            let recorded = attempts(&*db.store, instance.id).await;
            assert_eq!(recorded.len(), usize::try_from(round).unwrap());
            assert!(recorded.iter().all(|(state, _)| state == "lost"));
        }
    }
    assert_eq!(
        db.store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Failed
    );
}

async fn a_claim_that_never_reached_its_worker_is_undone(db: &TestDb) {
    let store = &*db.store;
    let run = started_run(store, NO_RETRIES).await;
    let claimed = claim(store, "gone", 1, T0).await;
    let held = [(claimed[0].task_instance_id, claimed[0].fence)];
    assert_eq!(
        store
            .task_instance_unclaim("someone-else", &held)
            .await
            .unwrap(),
        0,
        "only the worker it was claimed for can give it back"
    );
    assert_eq!(store.task_instance_unclaim("gone", &held).await.unwrap(), 1);
    assert_eq!(store.task_instance_unclaim("gone", &held).await.unwrap(), 0);
    let work = instance(store, run.id, "work").await;
    assert_eq!(
        (
            work.state,
            work.try_number,
            work.lost_attempts,
            work.max_tries
        ),
        (TaskState::Queued, 0, 0, 1),
        "as if it had never been claimed: {work:?}"
    );
    assert!(attempts(store, work.id).await.is_empty());
    assert!(work.fence > claimed[0].fence, "the undone claim stays dead");
    let late = store
        .task_instance_complete(
            &[report(
                &claimed[0],
                AttemptResult::success(serde_json::json!({})),
            )],
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(late[0], Err(Rejection::Stale { .. })), "{late:?}");
    let again = claim(store, "w", 1, T0).await;
    assert_eq!(again[0].try_number, 1);
}

conformance!(
    a_rescued_attempt_runs_again_without_using_a_try,
    an_expired_lease_is_a_lost_attempt_too,
    after_its_budget_a_task_fails_naming_every_loss,
    the_budget_is_set_per_task_and_in_the_defaults,
    an_ordinary_failure_still_uses_the_tasks_retries,
    racing_rescuers_count_each_loss_once,
    a_claim_that_never_reached_its_worker_is_undone,
);
