//! The web console: server-rendered HTML pages (maud), made live with htmx where a run or a log
//! is still moving.
//!
//! Every page reads well without JavaScript: htmx only replaces fragments that the server also
//! renders into the full page, and `console.js` only rewrites UTC times into the viewer's
//! timezone. Assets are compiled into the binary, so the console needs no CDN and no Node.
//! Every action is a POST guarded by a per-session CSRF token; with a password configured,
//! viewers log in first, and a read-only password gives a role whose POSTs are refused.

mod artifacts;
mod assets;
mod auth;
mod config;
mod csv;
mod dag;
mod dags;
mod error;
mod extract;
mod gantt;
mod graph;
mod layout;
mod lineage;
mod metric_chart;
mod mlflow;
mod models;
mod params;
mod prediction;
mod run;
mod schedule_words;
mod task;
mod throttle;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

use kiln_engine::artifacts::BlobStore;
use kiln_engine::execution::ExecutionService;
use kiln_engine::mlflow::MlflowLinks;
use kiln_engine::scheduler::Scheduler;
use kiln_engine::store::Store;

pub use config::{ConsoleConfig, ConsoleConfigError};

use crate::serving::{ModelServer, ServeError, ServedModel};

/// What the console's handlers share: the parts of the server's state the pages read and act
/// on (`state` builds it from `AppState`).
#[derive(Clone)]
pub(crate) struct ConsoleState {
    /// The store the pages read.
    pub(crate) store: Arc<dyn Store>,
    /// The scheduler the actions go through (trigger, cancel, clear, mark, pause).
    pub(crate) scheduler: Arc<Scheduler>,
    /// The execution service, for the workers it has heard from.
    pub(crate) execution: Arc<ExecutionService>,
    /// The artifact store's blobs, for previews, when there is an artifact store.
    pub(crate) blobs: Option<Arc<BlobStore>>,
    /// The models being served.
    pub(crate) models: Arc<ModelServer>,
    /// Links to MLflow's UI, when runs are mirrored to MLflow.
    pub(crate) mlflow: Option<Arc<MlflowLinks>>,
    /// The passwords and the session table.
    pub(crate) config: ConsoleConfig,
}

impl ConsoleState {
    /// The production version of a model, as served: loaded once, swapped when promoted.
    pub(crate) async fn production_model(
        &self,
        name: &str,
    ) -> Result<Arc<ServedModel>, ServeError> {
        self.models
            .production(&*self.store, self.blobs.as_deref(), name)
            .await
    }
}

/// The console's routes, at `/`, with the state they need applied.
pub(crate) fn router(state: ConsoleState) -> Router {
    // Actions that change something: only the admin role may call them.
    let admin = Router::new()
        .route("/dags/{dag_id}/trigger", post(dags::trigger))
        .route("/dags/{dag_id}/pause", post(dags::set_paused))
        .route("/runs/{run_id}/cancel", post(run::cancel))
        .route("/runs/{run_id}/task-action", post(run::task_action))
        .route("/models/{name}/promote", post(models::promote))
        .route("/models/{name}/rollback", post(models::rollback))
        .route("/mlflow/retry", post(mlflow::retry))
        .route_layer(axum::middleware::from_fn(auth::require_admin));
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/dags") }))
        .route("/dags", get(dags::list))
        .route("/dags/{dag_id}", get(dag::page))
        .route("/dags/{dag_id}/trigger", get(dags::trigger_page))
        .route("/runs/{run_id}", get(run::page))
        .route("/runs/{run_id}/live", get(run::live))
        .route("/runs/{run_id}/lineage", get(run::lineage))
        .route("/runs/{run_id}/tasks/{task_id}", get(task::page))
        .route("/runs/{run_id}/tasks/{task_id}/log", get(task::log_tail))
        .route("/artifacts", get(artifacts::list))
        .route("/artifacts/{name}", get(artifacts::artifact_page))
        .route("/artifacts/{name}/{version}", get(artifacts::version_page))
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::page))
        // A prediction changes nothing, so read-only logins may try one too (CSRF still applies).
        .route("/models/{name}/predict", post(prediction::predict))
        .route("/mlflow", get(mlflow::page))
        .route("/workers", get(workers::page))
        .route("/workers/live", get(workers::live))
        .route("/logout", post(auth::logout))
        .merge(admin)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    let public = Router::new()
        .route("/static/{file}", get(assets::serve))
        .route("/login", get(auth::login_page).post(auth::login));
    public
        .merge(pages)
        // Forms are read in full, within axum's default limit and the body time, first.
        .layer(axum::middleware::from_fn_with_state(
            crate::limits::AXUM_BODY_LIMIT,
            crate::limits::buffer_body,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every console response carries: the pages load scripts and styles only from this
/// server and cannot be framed, and a page (which may show logs and params) is never cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
