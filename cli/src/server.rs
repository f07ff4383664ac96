//! `kiln server` and `kiln worker`: the two long-running processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_engine::duties;
use kiln_engine::execution::ExecutionService;
use kiln_engine::mlflow::{MLFLOW_TRACKING, MlflowClient, MlflowConfig, MlflowLinks, Sender};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::worker::{WorkerConfig, hostname, run_worker};
use kiln_web::client::ExecutionClient;
use kiln_web::{AppState, ConsoleConfig};
use tokio_util::sync::CancellationToken;

use crate::ops::DatabaseConfig;

/// How a server is set up.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) worker_token: String,
    pub(crate) api_token: Option<String>,
    pub(crate) lease: Duration,
    /// How long the timed loop may go without a tick before `/healthz` fails.
    pub(crate) health_stall_limit: Duration,
    /// How long and how many clients the HTTP server serves.
    pub(crate) http: kiln_web::ServeOptions,
    /// Whether the console is served, and its passwords (its `Debug` hides them).
    pub(crate) console: ConsoleConfig,
    /// Where runs are mirrored to MLflow, if anywhere.
    pub(crate) mlflow: MlflowOptions,
}

/// The MLflow mirror's settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct MlflowOptions {
    /// The tracking server the runs are mirrored to, if any (credentials come from the
    /// environment, never from here).
    pub(crate) tracking_uri: Option<String>,
    /// MLflow's address for a browser (the console's links); the tracking URI when unset.
    pub(crate) ui_url: Option<String>,
}

/// A server that is up: where it listens, and its execution service (standalone needs it to
/// report dead workers at once).
pub(crate) struct RunningServer {
    pub(crate) address: SocketAddr,
    pub(crate) execution: Arc<ExecutionService>,
    pub(crate) done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the scheduler and the HTTP server; they stop when `shutdown` fires.
pub(crate) async fn start_server(
    database: &DatabaseConfig,
    dags_dir: &Path,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningServer> {
    if !options.listen.ip().is_loopback() && options.api_token.is_none() {
        tracing::warn!(
            message = "Listening beyond loopback without KILN_API_TOKEN: anyone who reaches this port can trigger and cancel runs.",
            listen = %options.listen
        );
    }
    let store = database.open().await?;
    let holder = format!("server-{}-{}", hostname(), std::process::id());
    let mlflow_sender = match options.mlflow.tracking_uri.as_deref() {
        Some(uri) => {
            let config = MlflowConfig::from_env(uri).context(
                "failed to configure MLflow tracking (--mlflow-tracking-uri, MLFLOW_TRACKING_URI)",
            )?;
            // On before the scheduler starts anything, so no run of this server goes unmirrored.
            store.outbox_set_tracking(Some(MLFLOW_TRACKING));
            Some(Sender::new(
                store.clone(),
                MlflowClient::new(&config),
                holder.clone(),
            ))
        }
        None => None,
    };
    let scheduler = Arc::new(Scheduler::new(
        store,
        kiln_tasks::builtin_registry(),
        dags_dir.to_owned(),
        holder,
    ));
    scheduler
        .health()
        .set_stall_limit(options.health_stall_limit);
    // The outbox's duty is reported by the probes with the scheduler's.
    let mlflow_sender = mlflow_sender.map(|sender| sender.with_health(scheduler.health().clone()));
    let report = scheduler
        .sync_dags()
        .await
        .with_context(|| format!("failed to load DAGs from {}", dags_dir.display()))?;
    for (path, problems) in &report.failed {
        tracing::warn!(
            message = "A DAG file did not load; `kiln dags validate` shows why.",
            path,
            problems
        );
    }
    let artifacts = database.artifact_store()?;
    let execution =
        Arc::new(ExecutionService::new(scheduler.clone(), options.lease).with_artifacts(artifacts));
    let state = AppState {
        execution: execution.clone(),
        worker_token: options.worker_token.into(),
        api_token: options.api_token.map(Into::into),
        console: options.console,
        models: Default::default(),
        mlflow: options.mlflow.tracking_uri.as_deref().map(|uri| {
            Arc::new(MlflowLinks::new(
                options.mlflow.ui_url.as_deref().unwrap_or(uri),
            ))
        }),
    };
    state.console.check_listen(options.listen).context(
        "the console needs a password here: set --console-password (KILN_CONSOLE_PASSWORD), listen on loopback, or pass --no-console",
    )?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("failed to listen on {}", options.listen))?;
    let address = listener
        .local_addr()
        .context("failed to read the bound address")?;
    // Each loop is started again if it panics; only shutdown ends them.
    let loop_shutdown = shutdown.clone();
    let scheduler_loop = tokio::spawn(duties::supervise(
        "scheduler",
        shutdown.clone(),
        move || {
            let scheduler = scheduler.clone();
            let shutdown = loop_shutdown.clone();
            async move { scheduler.run(shutdown).await }
        },
    ));
    let sender_loop = mlflow_sender.map(|sender| {
        let sender = Arc::new(sender);
        let sender_shutdown = shutdown.clone();
        tokio::spawn(duties::supervise(
            "mlflow_sender",
            shutdown.clone(),
            move || {
                let sender = sender.clone();
                let shutdown = sender_shutdown.clone();
                async move { sender.run(shutdown).await }
            },
        ))
    });
    let done = tokio::spawn(async move {
        kiln_web::serve(listener, state, options.http, shutdown)
            .await
            .context("the HTTP server failed")?;
        scheduler_loop
            .await
            .context("the scheduler's supervisor panicked")?;
        if let Some(sender_loop) = sender_loop {
            sender_loop
                .await
                .context("the MLflow sender's supervisor panicked")?;
        }
        Ok(())
    });
    tracing::info!(message = "kiln server listening.", address = %address, dags = report.loaded.len());
    Ok(RunningServer {
        address,
        execution,
        done,
    })
}

/// Fires the token on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) fn cancel_on_signals() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install the SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!(message = "Shutting down.");
        cancel.cancel();
    });
    Ok(token)
}

pub(crate) async fn server(
    database: &DatabaseConfig,
    dags_dir: &Path,
    options: ServerOptions,
) -> anyhow::Result<()> {
    let shutdown = cancel_on_signals()?;
    let running = start_server(database, dags_dir, options, shutdown).await?;
    crate::banner(format_args!(
        "kiln server listening on http://{}",
        running.address
    ));
    running.done.await.context("the server task panicked")?
}

/// How a worker is set up.
#[derive(Debug, Clone)]
pub(crate) struct WorkerOptions {
    pub(crate) server: String,
    pub(crate) token: String,
    pub(crate) concurrency: usize,
    pub(crate) queues: Vec<String>,
    pub(crate) id: Option<String>,
    pub(crate) work_dir: Option<PathBuf>,
    pub(crate) shutdown_grace: Duration,
    /// With a store configuration the worker reads and writes artifacts itself; without, it
    /// moves them through the server.
    pub(crate) artifacts_config: Option<PathBuf>,
    /// The DAG folder as this worker sees it, for plugins that read files beside the DAGs.
    pub(crate) dags_dir: PathBuf,
}

pub(crate) async fn worker(options: WorkerOptions) -> anyhow::Result<()> {
    let shutdown = cancel_on_signals()?;
    let worker_id = options
        .id
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let work_root = options
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-worker-{worker_id}")));
    let mut config = WorkerConfig::new(worker_id.clone(), work_root);
    config.concurrency = options.concurrency.max(1);
    if !options.queues.is_empty() {
        config.queues = options.queues;
    }
    config.shutdown_grace = options.shutdown_grace;
    if let Some(path) = &options.artifacts_config {
        let store_config = crate::ops::read_artifacts_config(path)?;
        let store = kiln_engine::artifacts::BlobStore::from_config(&store_config)
            .with_context(|| format!("failed to open the artifact store {store_config:?}"))?;
        config.artifacts = Some(Arc::new(store));
    }
    config.dags_dir = std::fs::canonicalize(&options.dags_dir).ok();
    let api = Arc::new(ExecutionClient::new(&options.server, &options.token));
    let summary = run_worker(api, kiln_tasks::builtin_registry(), config, shutdown)
        .await
        .with_context(|| format!("worker `{worker_id}` stopped"))?;
    tracing::info!(
        message = "Worker exited.",
        attempts = summary.attempts,
        handed_back = summary.handed_back
    );
    Ok(())
}
