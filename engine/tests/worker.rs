//! The worker runtime in-process, against the real execution service on SQLite: panics become
//! failed attempts, shutdown hands tasks back without spending a try, plugin `tracing` events
//! reach the task log, and a kind the worker lacks fails for good.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::execution::ExecutionService;
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{Store, TaskInstanceRecord, TriggerKind};
use kiln_engine::worker::{TaskLogLayer, WorkerConfig, WorkerSummary, run_worker};
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Empty {}

struct Panicky;

impl TaskPlugin for Panicky {
    const KIND: &'static str = "panicky";
    type Params = Empty;

    async fn run(&self, _ctx: &TaskContext, _params: Empty) -> Result<TaskOutput, TaskError> {
        panic!("boom at row 7");
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepParams {
    millis: u64,
}

struct Sleeper;

impl TaskPlugin for Sleeper {
    const KIND: &'static str = "sleeper";
    type Params = SleepParams;

    async fn run(&self, ctx: &TaskContext, params: SleepParams) -> Result<TaskOutput, TaskError> {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(params.millis)) => Ok(TaskOutput::default()),
            () = ctx.cancellation().cancelled() => Err(TaskError::Cancelled("stopped".to_owned())),
        }
    }
}

struct Noisy;

impl TaskPlugin for Noisy {
    const KIND: &'static str = "noisy";
    type Params = Empty;

    async fn run(&self, _ctx: &TaskContext, _params: Empty) -> Result<TaskOutput, TaskError> {
        tracing::info!(rows = 3, "processed the batch");
        tracing::debug!("too fine to keep");
        Ok(TaskOutput::default())
    }
}

fn full_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(Panicky).unwrap();
    registry.register(Sleeper).unwrap();
    registry.register(Noisy).unwrap();
    registry
}

fn install_tracing() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(TaskLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .try_init();
}

struct Setup {
    db: common::TestDb,
    execution: Arc<ExecutionService>,
    _dir: tempfile::TempDir,
}

async fn setup(dag: &str) -> Setup {
    install_tracing();
    let db = common::TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::write(dir.path().join("dags/test.toml"), dag).unwrap();
    let scheduler = Arc::new(Scheduler::new(
        db.store.clone(),
        full_registry(),
        dir.path().join("dags"),
        "test".to_owned(),
    ));
    let report = scheduler.sync_dags().await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let execution = Arc::new(ExecutionService::new(scheduler, Duration::from_secs(5)));
    Setup {
        db,
        execution,
        _dir: dir,
    }
}

impl Setup {
    async fn trigger(&self, dag_id: &str) -> i64 {
        self.execution
            .scheduler()
            .trigger(dag_id, &serde_json::Map::new(), TriggerKind::Manual)
            .await
            .unwrap()
            .id
    }

    fn worker(
        &self,
        id: &str,
        registry: PluginRegistry,
        grace: Duration,
    ) -> (CancellationToken, tokio::task::JoinHandle<WorkerSummary>) {
        let mut config = WorkerConfig::new(id, self._dir.path().join("work").join(id));
        config.concurrency = 2;
        config.shutdown_grace = grace;
        config.claim_wait = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let api = self.execution.clone();
        let token = shutdown.clone();
        let handle =
            tokio::spawn(async move { run_worker(api, registry, config, token).await.unwrap() });
        (shutdown, handle)
    }

    async fn instance(&self, run_id: i64) -> TaskInstanceRecord {
        self.db
            .store
            .task_instance_list(run_id)
            .await
            .unwrap()
            .remove(0)
    }

    async fn wait_run(&self, run_id: i64, state: RunState) {
        let started = Instant::now();
        loop {
            let run = self.db.store.run_get(run_id).await.unwrap().unwrap();
            if run.state == state {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "run {run_id} is {}, waiting for {state}",
                run.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn log(&self, task_instance_id: i64, try_number: i64) -> String {
        let store: &dyn Store = &*self.db.store;
        store
            .log_read(task_instance_id, try_number, -1, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|chunk| chunk.chunk)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_its_attempt_and_the_worker_goes_on() {
    let setup = setup("id = \"p\"\n[[tasks]]\nid = \"explode\"\nkind = \"panicky\"\nretries = 1\nretry_delay = \"10ms\"\n").await;
    let (shutdown, worker) = setup.worker("w", full_registry(), Duration::from_secs(1));
    let run_id = setup.trigger("p").await;
    // The first failure is retried (maintenance runs in the scheduler loop; drive it by hand).
    let started = Instant::now();
    while setup.db.store.run_get(run_id).await.unwrap().unwrap().state == RunState::Running {
        setup
            .db
            .store
            .task_instance_maintain(kiln_engine::store::now_micros())
            .await
            .unwrap();
        setup
            .execution
            .scheduler()
            .work_available()
            .notify_waiters();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let instance = setup.instance(run_id).await;
    assert_eq!(
        (instance.state, instance.try_number),
        (TaskState::Failed, 2)
    );
    assert_eq!(
        instance.error.as_deref(),
        Some("the plugin panicked: boom at row 7")
    );
    let log = setup.log(instance.id, 2).await;
    assert!(
        log.contains("[kiln] attempt failed: the plugin panicked: boom at row 7"),
        "{log}"
    );
    shutdown.cancel();
    assert_eq!(worker.await.unwrap().attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_tasks_back_without_spending_a_try() {
    let setup = setup(
        "id = \"s\"\n[[tasks]]\nid = \"long\"\nkind = \"sleeper\"\nparams = { millis = 1500 }\n",
    )
    .await;
    let (shutdown, worker) = setup.worker("leaving", full_registry(), Duration::from_millis(100));
    let run_id = setup.trigger("s").await;
    let started = Instant::now();
    while setup.instance(run_id).await.state != TaskState::Running {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let summary = worker.await.unwrap();
    assert_eq!(summary.handed_back, 1);
    let instance = setup.instance(run_id).await;
    assert_eq!(
        (instance.state, instance.lost_attempts, instance.own_tries()),
        (TaskState::Queued, 1, (0, 1))
    );
    let attempts = setup.db.store.attempt_list(instance.id).await.unwrap();
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].error.as_deref()),
        (
            "lost",
            Some("handed back by worker `leaving` shutting down")
        )
    );
    let (stop, next) = setup.worker("arriving", full_registry(), Duration::from_secs(1));
    setup.wait_run(run_id, RunState::Success).await;
    let instance = setup.instance(run_id).await;
    assert_eq!((instance.try_number, instance.own_tries()), (2, (1, 1)));
    stop.cancel();
    next.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_tracing_events_land_in_the_task_log() {
    let setup = setup("id = \"n\"\n[[tasks]]\nid = \"talk\"\nkind = \"noisy\"\n").await;
    let (shutdown, worker) = setup.worker("w", full_registry(), Duration::from_secs(1));
    let run_id = setup.trigger("n").await;
    setup.wait_run(run_id, RunState::Success).await;
    let instance = setup.instance(run_id).await;
    let log = setup.log(instance.id, 1).await;
    assert!(
        log.contains("INFO worker: processed the batch rows=3"),
        "{log}"
    );
    assert!(!log.contains("too fine to keep"), "{log}");
    shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_the_worker_lacks_fails_permanently() {
    let setup = setup("id = \"k\"\n[[tasks]]\nid = \"t\"\nkind = \"noisy\"\nretries = 3\n").await;
    let (shutdown, worker) = setup.worker("w", PluginRegistry::new(), Duration::from_secs(1));
    let run_id = setup.trigger("k").await;
    setup.wait_run(run_id, RunState::Failed).await;
    let instance = setup.instance(run_id).await;
    assert_eq!(instance.try_number, 1, "not retried");
    assert_eq!(
        instance.error.as_deref(),
        Some("this worker has no `noisy` plugin")
    );
    shutdown.cancel();
    worker.await.unwrap();
}
