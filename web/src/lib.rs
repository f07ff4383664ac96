//! HTTP for kiln: the REST API, the workers' execution API and the console.
//!
//! Only this crate speaks HTTP. Its request and response types (`wire`) are its own, converted
//! from and to the engine's, so the engine can change without changing the wire format. The
//! same crate holds the matching clients: the worker's execution client and the CLI's API client.

mod api;
mod artifacts_api;
mod auth;
pub mod client;
pub mod console;
mod error;
mod exec;
pub mod models_api;
pub mod serving;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use kiln_engine::execution::ExecutionService;
use kiln_engine::scheduler::Scheduler;

pub use console::{ConsoleConfig, ConsoleConfigError};
pub use error::AppError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The execution service (and through it, the scheduler and store).
    pub execution: Arc<ExecutionService>,
    /// The secret workers must present.
    pub worker_token: Arc<str>,
    /// The secret API callers must present, when one is configured.
    pub api_token: Option<Arc<str>>,
    /// Whether the console is served, and the passwords guarding it.
    pub console: ConsoleConfig,
    /// The models being served, loaded on first use and swapped when promoted.
    pub models: Arc<serving::ModelServer>,
    /// Links to MLflow's UI, when runs are mirrored to MLflow.
    pub mlflow: Option<Arc<kiln_engine::mlflow::MlflowLinks>>,
}

impl AppState {
    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        self.execution.scheduler()
    }
}

/// The HTTP application: `/healthz`, the REST API under `/api/v1`, the execution API under
/// `/api/v1/exec`, and the console at `/` unless it is disabled.
pub fn app(state: AppState) -> Router {
    let exec = Router::new()
        .route("/register", post(exec::register))
        .route("/claim", post(exec::claim))
        .route("/heartbeat", post(exec::heartbeat))
        .route("/logs", post(exec::logs))
        .route("/complete", post(exec::complete))
        .route("/release", post(exec::release))
        .route("/cache/lookup", post(exec::cache_lookup))
        // Workers send log chunks in requests of about 1 MiB; leave room above that.
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        // Blobs stream through without being buffered, so no body limit applies to them.
        .route("/blobs", post(exec::blob_upload))
        .route("/blobs/{sha256}", get(exec::blob_download))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_worker_token,
        ));
    let api = Router::new()
        .route("/dags", get(api::list_dags))
        .route("/dags/{dag_id}", get(api::get_dag))
        .route("/dags/{dag_id}/runs", post(api::trigger_run))
        .route("/dags/{dag_id}/pause", post(api::pause_dag))
        .route("/dags/{dag_id}/unpause", post(api::unpause_dag))
        .route("/runs", get(api::list_runs))
        .route("/runs/{run_id}", get(api::get_run))
        .route("/runs/{run_id}/cancel", post(api::cancel_run))
        .route("/runs/{run_id}/tasks/{task_id}/logs", get(api::task_logs))
        .route(
            "/runs/{run_id}/tasks/{task_id}/clear",
            post(api::clear_task),
        )
        .route("/runs/{run_id}/tasks/{task_id}/mark", post(api::mark_task))
        .route("/workers", get(api::list_workers))
        .route("/models", get(models_api::list_models))
        .route("/models/{name}", get(models_api::get_model))
        .route(
            "/models/{name}/predict",
            // Room for 10,000 rows of a few dozen features.
            post(models_api::predict).layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        .route("/models/{name}/promote", post(models_api::promote))
        .route("/models/{name}/rollback", post(models_api::rollback))
        .route("/artifacts", get(artifacts_api::list_artifacts))
        .route("/artifacts/{name}", get(artifacts_api::get_artifact))
        .route(
            "/artifacts/{name}/versions/{version}",
            get(artifacts_api::get_version),
        )
        .route(
            "/artifacts/{name}/versions/{version}/content",
            get(artifacts_api::get_content),
        )
        .route(
            "/artifacts/{name}/versions/{version}/lineage",
            get(artifacts_api::version_lineage),
        )
        .route("/runs/{run_id}/lineage", get(artifacts_api::run_lineage))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_token,
        ));
    let console_enabled = state.console.enabled;
    let router = Router::new()
        .route("/healthz", get(health))
        .nest("/api/v1/exec", exec)
        .nest("/api/v1", api)
        .fallback(error::not_found)
        .with_state(state.clone());
    if console_enabled {
        router.merge(console::router(state))
    } else {
        router
    }
}

/// Serves [`app`] on `listener` until `shutdown` fires, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn health() -> &'static str {
    "ok"
}
