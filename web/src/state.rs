//! What handlers share: [`AppState`], as the binary builds it, and the parts of it a handler
//! takes instead (`State<Arc<dyn Store>>`, `State<Blobs>` …), each drawn from it by `FromRef`.
//!
//! This is the one place that walks from the execution service to the scheduler and its store,
//! so a handler names what it uses in its signature and no handler knows how the parts hang
//! together.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRef;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_engine::artifacts::{BlobStore, Sha256Digest};
use kiln_engine::execution::ExecutionService;
use kiln_engine::mlflow::MlflowLinks;
use kiln_engine::scheduler::Scheduler;
use kiln_engine::store::Store;

use crate::console::{ConsoleConfig, ConsoleState};
use crate::error::{AppError, blob_error};
use crate::serving::ModelServer;

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
    pub models: Arc<ModelServer>,
    /// Links to MLflow's UI, when runs are mirrored to MLflow.
    pub mlflow: Option<Arc<MlflowLinks>>,
}

impl AppState {
    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        self.execution.scheduler()
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.scheduler().store()
    }
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Arc<dyn Store> {
        Arc::clone(state.store())
    }
}

impl FromRef<AppState> for Arc<Scheduler> {
    fn from_ref(state: &AppState) -> Arc<Scheduler> {
        Arc::clone(state.scheduler())
    }
}

impl FromRef<AppState> for Arc<ExecutionService> {
    fn from_ref(state: &AppState) -> Arc<ExecutionService> {
        Arc::clone(&state.execution)
    }
}

impl FromRef<AppState> for Arc<ModelServer> {
    fn from_ref(state: &AppState) -> Arc<ModelServer> {
        Arc::clone(&state.models)
    }
}

impl FromRef<AppState> for Option<Arc<MlflowLinks>> {
    fn from_ref(state: &AppState) -> Option<Arc<MlflowLinks>> {
        state.mlflow.clone()
    }
}

impl FromRef<AppState> for Blobs {
    fn from_ref(state: &AppState) -> Blobs {
        Blobs(state.execution.artifacts().cloned())
    }
}

impl FromRef<AppState> for ConsoleState {
    fn from_ref(state: &AppState) -> ConsoleState {
        ConsoleState {
            store: Arc::clone(state.store()),
            scheduler: Arc::clone(state.scheduler()),
            execution: Arc::clone(&state.execution),
            blobs: state.execution.artifacts().cloned(),
            models: Arc::clone(&state.models),
            mlflow: state.mlflow.clone(),
            config: state.console.clone(),
        }
    }
}

/// The artifact store's blobs, when the server has an artifact store.
#[derive(Clone)]
pub(crate) struct Blobs(pub(crate) Option<Arc<BlobStore>>);

impl Blobs {
    /// The blob store, or a 503 saying there is none.
    pub(crate) fn required(&self) -> Result<&Arc<BlobStore>, AppError> {
        self.0
            .as_ref()
            .ok_or_else(|| AppError::Unavailable("this server has no artifact store".to_owned()))
    }

    /// The blob store, when there is one.
    pub(crate) fn get(&self) -> Option<&BlobStore> {
        self.0.as_deref()
    }

    /// A streamed response of one blob's bytes, as `media_type`.
    pub(crate) async fn response(
        &self,
        sha256: &Sha256Digest,
        media_type: &str,
    ) -> Result<Response, AppError> {
        let store = self.required()?;
        let size = store.size(sha256).await.map_err(blob_error)?;
        let stream = store.open(sha256).await.map_err(blob_error)?;
        Ok((
            [
                (header::CONTENT_TYPE, media_type.to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::from_stream(stream),
        )
            .into_response())
    }
}
