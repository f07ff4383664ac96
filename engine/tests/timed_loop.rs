//! The scheduler's timed loop outlives its failures: with the DAG folder gone for 10 s (both
//! backends), and with every connection of the server terminated in a loop for 20 s
//! (PostgreSQL), retries, lease rescue, cron, leadership and the MLflow outbox's sender all go
//! on or resume within seconds, and neither loop ends on its own.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::duties::LEADER_DUTY;
use kiln_engine::mlflow::{MLFLOW_OUTBOX_DUTY, MlflowClient, MlflowConfig, Sender, SenderConfig};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::state::TaskState;
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, RunFilter, Store, TriggerKind, now_micros,
};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use common::{TestDb, registry};

/// Retries after a second, so one falls due while the loop is being disturbed.
const STEADY: &str = r#"
id = "steady"
[defaults]
retries = 3
retry_delay = "1s"
[[tasks]]
id = "a"
kind = "noop"
[[tasks]]
id = "b"
kind = "noop"
depends_on = ["a"]
"#;

/// A DAG that arrives while the loop is disturbed: every minute with catch-up, so the loop
/// creates its runs as soon as it reads the file.
fn every_minute() -> String {
    let start = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    format!(
        "id = \"every_minute\"\nschedule = \"* * * * *\"\nstart_date = \"{}\"\ncatchup = true\nmax_catchup_runs = 3\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n",
        start.to_rfc3339()
    )
}

async fn claim(store: &dyn Store, worker: &str, lease: Duration) -> ClaimedTask {
    let mut claimed = store
        .task_instance_claim(&ClaimParams {
            worker_id: worker.to_owned(),
            queues: vec!["default".to_owned()],
            limit: 1,
            lease,
            now: now_micros(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one task to claim");
    claimed.remove(0)
}

/// What the loop must get done while (or right after) it is disturbed: a retry falling due
/// and a lease running out.
struct Due {
    retrying: i64,
    expiring: i64,
}

/// Two runs of `steady`: one whose first task failed and retries in a second, one whose first
/// task is held by a worker that will never heartbeat its one-second lease.
async fn prepare(scheduler: &Scheduler, store: &dyn Store) -> Due {
    scheduler.sync_dags().await.unwrap();
    let params = serde_json::Map::new();
    scheduler
        .trigger("steady", &params, TriggerKind::Manual)
        .await
        .unwrap();
    let failing = claim(store, "flaky-worker", Duration::from_secs(300)).await;
    let failure = Completion {
        task_instance_id: failing.task_instance_id,
        fence: failing.fence,
        result: AttemptResult::Failure {
            error: "first try fails".to_owned(),
            retryable: true,
        },
    };
    store
        .task_instance_complete(&[failure], now_micros())
        .await
        .unwrap();
    scheduler
        .trigger("steady", &params, TriggerKind::Manual)
        .await
        .unwrap();
    let expiring = claim(store, "vanishing-worker", Duration::from_secs(1)).await;
    Due {
        retrying: failing.task_instance_id,
        expiring: expiring.task_instance_id,
    }
}

async fn state_of(store: &dyn Store, task_instance_id: i64) -> Option<TaskState> {
    let runs = store.run_list(&RunFilter::default()).await.ok()?;
    for run in runs {
        for instance in store.task_instance_list(run.id).await.ok()? {
            if instance.id == task_instance_id {
                return Some(instance.state);
            }
        }
    }
    None
}

/// Whether the retry was requeued (its second try may already run elsewhere: queued or later)
/// and the expired lease's attempt was closed.
async fn retried_and_rescued(store: &dyn Store, due: &Due) -> bool {
    let retried = state_of(store, due.retrying)
        .await
        .is_some_and(|state| state != TaskState::UpForRetry);
    let rescued = match store.attempt_list(due.expiring).await {
        Ok(attempts) => attempts
            .first()
            .is_some_and(|attempt| attempt.state != "running"),
        Err(_) => false,
    };
    retried && rescued
}

/// Polls `check` every 100 ms for up to `limit`; the time it took, or `None`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn dag_known(store: &dyn Store, dag_id: &str) -> bool {
    matches!(store.dag_get(dag_id).await, Ok(Some(_)))
}

async fn run_count(store: &dyn Store, dag_id: &str) -> usize {
    store
        .run_list(&RunFilter {
            dag_id: Some(dag_id.to_owned()),
            ..RunFilter::default()
        })
        .await
        .map_or(0, |runs| runs.len())
}

fn start_loop(scheduler: &Arc<Scheduler>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let running = scheduler.clone();
    let stop = cancel.clone();
    (cancel, tokio::spawn(async move { running.run(stop).await }))
}

/// A scheduler named `name` over a fresh DAG folder holding the steady DAG, with a retry and
/// an expired lease waiting (see `prepare`). The folder lives as long as the returned guard.
async fn steady_scheduler(
    db: &TestDb,
    name: &str,
) -> (tempfile::TempDir, PathBuf, Arc<Scheduler>, Due) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("dags");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("steady.toml"), STEADY).unwrap();
    let scheduler = Arc::new(Scheduler::new(
        db.store.clone(),
        registry(),
        dir.clone(),
        name.to_owned(),
    ));
    let due = prepare(&scheduler, &*db.store).await;
    (parent, dir, scheduler, due)
}

fn moved_away(dir: &Path) -> PathBuf {
    dir.with_extension("away")
}

async fn the_loop_outlives_a_missing_dag_folder(db: &TestDb) {
    let (_folder, dir, scheduler, due) = steady_scheduler(db, "folder-test").await;

    std::fs::rename(&dir, moved_away(&dir)).unwrap();
    let (cancel, running) = start_loop(&scheduler);

    // With the folder gone, the loop's other duties go on: the retry is requeued and the
    // expired lease rescued, each due within about a second.
    let took = within(Duration::from_secs(8), || {
        retried_and_rescued(&*db.store, &due)
    })
    .await;
    assert!(
        took.is_some(),
        "retries and lease rescue stopped with the DAG folder gone"
    );
    let health = scheduler.health();
    let sync = within(Duration::from_secs(3), || async {
        health
            .duties()
            .get("dag_sync")
            .is_some_and(|status| status.consecutive_failures > 0)
    })
    .await;
    assert!(sync.is_some(), "{:?}", health.duties());
    let error = health.duties()["dag_sync"].last_error.clone().unwrap();
    assert!(error.contains("cannot read the DAG folder"), "{error}");
    assert!(
        health.ready().is_ok(),
        "a missing folder is not a store outage"
    );

    // The folder is missing for 10 s in all; it comes back with a DAG it did not have.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(took.unwrap_or_default())).await;
    assert!(!running.is_finished(), "the timed loop ended");
    std::fs::rename(moved_away(&dir), &dir).unwrap();
    std::fs::write(dir.join("every_minute.toml"), every_minute()).unwrap();

    let resumed = within(Duration::from_secs(10), || async {
        dag_known(&*db.store, "every_minute").await
            && run_count(&*db.store, "every_minute").await >= 3
    })
    .await;
    assert!(resumed.is_some(), "DAG sync and cron did not resume");
    assert_eq!(health.duties()["dag_sync"].consecutive_failures, 0);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the loop stops when cancelled")
        .unwrap();
}

conformance!(the_loop_outlives_a_missing_dag_folder);

/// Terminates every connection to `database` but its own, every 20 ms, until `stop`.
async fn terminate_connections(
    admin_url: String,
    database: String,
    stop: CancellationToken,
) -> u64 {
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    // No new connection either, superusers included, so that every duty meets the storm: a
    // killed idle connection alone is replaced unseen (sqlx pings before it hands one out).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut terminated = 0u64;
    while !stop.is_cancelled() {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        terminated += killed.iter().filter(|killed| **killed).count() as u64;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    terminated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_outlives_a_storm_of_terminated_connections_on_postgres() {
    let Some(db) = TestDb::postgres("the_loop_outlives_a_storm_of_terminated_connections").await
    else {
        return;
    };
    let admin_url = std::env::var("KILN_TEST_DATABASE_URL").unwrap();
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    let (_folder, dir, scheduler, due) = steady_scheduler(&db, "storm-test").await;
    let (cancel, running) = start_loop(&scheduler);
    // The outbox's sender runs apart from the loop, under the same error policy, and reports
    // to the same health record. Nothing is tracked, so it only elects and reads the outbox.
    let sender = Sender::new(
        db.store.clone(),
        MlflowClient::new(&MlflowConfig::new("http://127.0.0.1:9", None, None, None).unwrap()),
        "storm-test".to_owned(),
    )
    .with_config(SenderConfig {
        poll: Duration::from_millis(100),
        ..SenderConfig::default()
    })
    .with_health(scheduler.health().clone());
    let sender_cancel = cancel.clone();
    let sending = tokio::spawn(async move { sender.run(sender_cancel).await });
    // Leading (and sending) before the storm.
    let leading = within(Duration::from_secs(5), || async {
        let duties = scheduler.health().duties();
        [LEADER_DUTY, MLFLOW_OUTBOX_DUTY].iter().all(|duty| {
            duties
                .get(duty)
                .is_some_and(|status| status.last_success.is_some())
        })
    })
    .await;
    assert!(leading.is_some());

    let stop = CancellationToken::new();
    let storm = tokio::spawn(terminate_connections(admin_url, database, stop.clone()));
    // A DAG arrives mid-storm; its cron runs are due at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(dir.join("every_minute.toml"), every_minute()).unwrap();
    tokio::time::sleep(Duration::from_secs(18)).await;
    stop.cancel();
    let terminated = storm.await.unwrap();
    assert!(terminated > 0, "the storm terminated nothing");
    assert!(!running.is_finished(), "the timed loop ended in the storm");
    let failures = scheduler.health().duties()[LEADER_DUTY].failures_total;
    assert!(
        failures > 0,
        "the storm never reached the loop ({terminated} terminated)"
    );
    assert!(
        !sending.is_finished(),
        "the outbox's sender ended in the storm"
    );
    assert!(
        scheduler.health().duties()[MLFLOW_OUTBOX_DUTY].failures_total > 0,
        "the storm never reached the sender"
    );

    // Within seconds of the storm: retries, lease rescue, DAG sync and cron have happened,
    // and the loop leads again.
    let resumed = within(Duration::from_secs(10), || async {
        retried_and_rescued(&*db.store, &due).await
            && run_count(&*db.store, "every_minute").await >= 3
            && scheduler.health().ready().is_ok()
            && scheduler.health().duties()[MLFLOW_OUTBOX_DUTY].consecutive_failures == 0
    })
    .await;
    assert!(
        resumed.is_some(),
        "the loop did not resume: {:?}",
        scheduler.health().duties()
    );
    // Another scheduler cannot take over: this one renewed its leadership.
    let other = db
        .store
        .leader_attempt_elect(
            "scheduler",
            "another-server",
            Duration::from_secs(10),
            now_micros(),
        )
        .await
        .unwrap();
    assert!(!other, "leadership lapsed after the storm");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the loop stops when cancelled")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .expect("the sender stops when cancelled")
        .unwrap();
    db.cleanup().await;
}
