//! The `console` workload: a SQLite store filled with finished runs of a 100-task DAG, then
//! every console page rendered through `web::app` in this process, called with tower's
//! `oneshot`, and timed to the whole body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::execution::{ExecutionApi as _, ExecutionService, Registration};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::state::RunState;
use kiln_engine::store::{
    AttemptResult, ClaimParams, Completion, CompletionOutcome, LogUpload, RunFilter, TriggerKind,
    connect, now_micros,
};
use tower::ServiceExt as _;

use crate::workloads::layered_dag;

/// The console pages the `console` workload renders, by name and path, for a DAG `dag_id`, its
/// run `run_id` and the task `task_id` of that run.
fn console_pages(dag_id: &str, run_id: i64, task_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DAGs list", "/dags".to_owned()),
        ("DAG graph", format!("/dags/{dag_id}")),
        ("DAG grid", format!("/dags/{dag_id}?view=grid")),
        ("DAG source", format!("/dags/{dag_id}?view=source")),
        ("run", format!("/runs/{run_id}")),
        ("run live fragment", format!("/runs/{run_id}/live")),
        ("task", format!("/runs/{run_id}/tasks/{task_id}")),
        ("workers", "/workers".to_owned()),
        ("artifacts", "/artifacts".to_owned()),
        ("models", "/models".to_owned()),
    ]
}

/// One console page's render times.
#[derive(Debug, Clone)]
pub(crate) struct PageTiming {
    pub(crate) name: &'static str,
    pub(crate) path: String,
    /// Every counted render's time to the whole body.
    pub(crate) times_ms: Vec<f64>,
    /// The body's size at the last render.
    pub(crate) bytes: usize,
}

/// Fills a fresh SQLite store with `runs` finished runs of a 100-task layered DAG, then renders
/// every console page `renders` times through the router, in process (after one warm-up each,
/// so the first render's one-off costs are not counted). Answers the timings and how long
/// filling the store took.
///
/// The runs are real: triggered through the scheduler, their tasks claimed and completed
/// through the store as a worker would (one log line each), a batch of runs at a time.
pub(crate) async fn console_workload(
    runs: usize,
    renders: usize,
) -> anyhow::Result<(Vec<PageTiming>, Duration)> {
    const DAG_ID: &str = "console";
    const LAYERS: usize = 10;
    const WIDTH: usize = 10;
    const WORKER: &str = "bench-console";
    // Runs triggered before their tasks are driven to the end: a few runs in flight at once, as
    // on a busy server, without one claim scanning every run's tasks.
    const BATCH: usize = 50;

    let filling = Instant::now();
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let dags_dir = dir.path().join("dags");
    std::fs::create_dir(&dags_dir).context("failed to create the DAG folder")?;
    std::fs::write(
        dags_dir.join("console.toml"),
        layered_dag(DAG_ID, LAYERS, WIDTH, BATCH),
    )
    .context("failed to write the DAG file")?;
    let store = connect(&format!(
        "sqlite://{}",
        dir.path().join("kiln.db").display()
    ))
    .await
    .context("failed to open the SQLite store")?;
    store
        .migrate()
        .await
        .context("failed to migrate the SQLite store")?;
    let scheduler = Arc::new(Scheduler::new(
        store.clone(),
        kiln_tasks::builtin_registry(),
        dags_dir,
        "bench".to_owned(),
    ));
    let report = scheduler
        .sync_dags()
        .await
        .context("failed to load the benchmark DAG")?;
    if let Some((path, problem)) = report.failed.first() {
        bail!("the benchmark DAG {path} did not load: {problem}");
    }
    let execution = Arc::new(ExecutionService::new(
        scheduler.clone(),
        Duration::from_secs(60),
    ));
    // One live worker, so the workers page lists something.
    execution
        .register(&Registration {
            worker_id: WORKER.to_owned(),
            queues: vec!["default".to_owned()],
            concurrency: 32,
            hostname: "bench".to_owned(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .context("failed to register the benchmark worker")?;

    let claim = |now| ClaimParams {
        worker_id: WORKER.to_owned(),
        queues: vec!["default".to_owned()],
        limit: 1000,
        lease: Duration::from_secs(60),
        now,
    };
    let mut triggered = 0;
    let mut last_run = 0;
    while triggered < runs {
        let batch = BATCH.min(runs - triggered);
        for _ in 0..batch {
            last_run = scheduler
                .trigger(DAG_ID, &serde_json::Map::new(), TriggerKind::Manual)
                .await
                .context("failed to trigger a run")?
                .id;
        }
        triggered += batch;
        let mut claimed = store
            .task_instance_claim(&claim(now_micros()))
            .await
            .context("failed to claim tasks")?;
        while !claimed.is_empty() {
            let completions: Vec<Completion> = claimed
                .iter()
                .map(|task| Completion {
                    task_instance_id: task.task_instance_id,
                    fence: task.fence,
                    result: AttemptResult::success(serde_json::json!({})),
                })
                .collect();
            let logs: Vec<LogUpload> = claimed
                .iter()
                .map(|task| LogUpload {
                    task_instance_id: task.task_instance_id,
                    try_number: task.try_number,
                    seq: 0,
                    chunk: format!("{} ran\n", task.task_id),
                })
                .collect();
            let now = now_micros();
            let (outcomes, next) = store
                .task_instance_complete_and_claim(&completions, &logs, Some(&claim(now)), now)
                .await
                .context("failed to complete tasks")?;
            if let Some(refused) = outcomes
                .iter()
                .find(|outcome| !matches!(outcome, Ok(CompletionOutcome::Succeeded)))
            {
                bail!("a benchmark task did not succeed: {refused:?}");
            }
            claimed = next;
        }
    }
    let finished = store
        .run_list(&RunFilter {
            dag_id: Some(DAG_ID.to_owned()),
            state: Some(RunState::Success),
            limit: Some(u32::try_from(runs).unwrap_or(u32::MAX)),
        })
        .await
        .context("failed to list the runs")?
        .len();
    if finished != runs {
        bail!("{finished} of {runs} benchmark runs succeeded");
    }
    let filled = filling.elapsed();

    let state = kiln_web::AppState {
        execution,
        worker_token: "bench".into(),
        api_token: None,
        console: kiln_web::ConsoleConfig::default(),
        models: Default::default(),
        mlflow: None,
    };
    let app = kiln_web::app(state);
    let last_task = format!("t{}_{}", LAYERS - 1, WIDTH - 1);
    let mut timings = Vec::new();
    for (name, path) in console_pages(DAG_ID, last_run, &last_task) {
        let mut timing = PageTiming {
            name,
            path,
            times_ms: Vec::with_capacity(renders),
            bytes: 0,
        };
        for render in 0..=renders {
            let request = axum::http::Request::get(&timing.path)
                .body(axum::body::Body::empty())
                .context("failed to build a console request")?;
            let started = Instant::now();
            let response = app
                .clone()
                .oneshot(request)
                .await
                .with_context(|| format!("GET {} failed", timing.path))?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 << 20)
                .await
                .with_context(|| format!("failed to read the body of {}", timing.path))?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                bail!(
                    "GET {} answered {status}: {}",
                    timing.path,
                    String::from_utf8_lossy(&body[..body.len().min(500)])
                );
            }
            // The first render warms caches (the DAG's plan, SQLite's pages) and is not counted.
            if render > 0 {
                timing.times_ms.push(elapsed);
            }
            timing.bytes = body.len();
        }
        timings.push(timing);
    }
    drop(app);
    Ok((timings, filled))
}
