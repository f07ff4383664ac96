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
mod health;
mod limits;
pub mod models_api;
pub mod openapi;
mod serve;
pub mod serving;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use kiln_engine::execution::ExecutionService;
use kiln_engine::scheduler::Scheduler;

use crate::openapi::Access;

pub use console::{ConsoleConfig, ConsoleConfigError};
pub use error::AppError;
pub use limits::ServeOptions;
pub use serve::serve;

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

/// The HTTP application: the probes `/healthz` and `/readyz`, the REST API under `/api/v1` (its OpenAPI document at
/// `/api/v1/openapi.json`), the execution API under `/api/v1/exec`, and the console at `/`
/// unless it is disabled.
pub fn app(state: AppState) -> Router {
    // Every `/api/v1` route comes from the table the OpenAPI document is written from, so the
    // two cannot drift apart; add routes there, not here (`tests/openapi.rs` fails on a route
    // mounted here other than `/healthz`). Each group has routes, so `route_layer` (which panics
    // on an empty router) cannot panic.
    let routes = openapi::routes();
    let group = |access: Access| {
        routes
            .iter()
            .filter(|route| route.access == access)
            .fold(Router::new(), |router, route| {
                router.route(route.path, route.method_router())
            })
    };
    let exec = group(Access::WorkerToken).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_worker_token,
    ));
    let api = group(Access::ApiToken).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_token,
    ));
    let console_enabled = state.console.enabled;
    let router = Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .merge(exec)
        .merge(api)
        .merge(group(Access::Public))
        .fallback(error::not_found)
        .with_state(state.clone());
    if console_enabled {
        router.merge(console::router(state))
    } else {
        router
    }
}
