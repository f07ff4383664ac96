//! The one route table of `/api/v1`, which both `app` serves and the OpenAPI document is
//! written from (`openapi`), and `app` itself: the table's routes behind their tokens, the
//! probes and the console.

pub mod openapi;
mod route;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, on};

use self::route::{
    Access, Body, EXEC_BODY_LIMIT, EXECUTION, Method, PREDICT_BODY_LIMIT, Reply, Route, json, query,
};
use crate::api::{artifacts, dags, models, runs, workers};
use crate::console::{self, ConsoleState};
use crate::exec::{blobs, cache, claim, complete, leases, logs, register};
use crate::state::AppState;
use crate::wire::{
    AliasMove, ArtifactDetail, ArtifactList, BlobView, CacheLookupRequest, CacheLookupResponse,
    CancelResponse, ClaimRequest, ClaimResponse, ClearRequest, ClearResponse, CompleteRequest,
    CompleteResponse, DagDetail, DagList, DetailQuery, HeartbeatResponse, LeasesRequest,
    LineageQuery, LineageView, ListQuery, LogPage, LogQuery, LogsRequest, LogsResponse,
    MarkRequest, ModelDetail, ModelList, PredictRequest, PredictResponse, PromoteRequest,
    RegisterRequest, RegisterResponse, ReleaseResponse, RollbackRequest, RunDetail, RunList,
    RunQuery, RunView, TriggerRequest, VersionView, WorkerList,
};
use crate::{auth, error, health};

/// The HTTP application: the probes `/healthz` and `/readyz`, the REST API under `/api/v1` (its OpenAPI document at
/// `/api/v1/openapi.json`), the execution API under `/api/v1/exec`, and the console at `/`
/// unless it is disabled.
pub fn app(state: AppState) -> Router {
    // Every `/api/v1` route comes from the table the OpenAPI document is written from, so the
    // two cannot drift apart; add routes there, not here (`tests/openapi.rs` fails on a route
    // mounted here other than `/healthz`). Each group has routes, so `route_layer` (which panics
    // on an empty router) cannot panic.
    let routes = routes();
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
        router.merge(console::router(ConsoleState::from_ref(&state)))
    } else {
        router
    }
}

/// Every route under `/api/v1`, in the order the document lists them.
fn routes() -> Vec<Route> {
    use Method::{Get, Post};
    vec![
        Route::new(
            Get,
            "/api/v1/openapi.json",
            "getOpenApi",
            "meta",
            "This document",
            |filter| on(filter, openapi::openapi_json),
        )
        .public()
        .reply(Reply::Json(200, openapi::document_schema)),
        // DAGs.
        Route::new(
            Get,
            "/api/v1/dags",
            "listDags",
            "dags",
            "List DAGs and the files that failed to load",
            |filter| on(filter, dags::list_dags),
        )
        .reply(Reply::Json(200, json::<DagList>())),
        Route::new(
            Get,
            "/api/v1/dags/{dag_id}",
            "getDag",
            "dags",
            "One DAG: its params and tasks",
            |filter| on(filter, dags::get_dag),
        )
        .reply(Reply::Json(200, json::<DagDetail>()))
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/dags/{dag_id}/runs",
            "triggerRun",
            "dags",
            "Trigger a run",
            |filter| on(filter, dags::trigger_run),
        )
        .body(Body::OptionalJson(json::<TriggerRequest>()))
        .reply(Reply::Json(201, json::<RunView>()))
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/dags/{dag_id}/pause",
            "pauseDag",
            "dags",
            "Stop scheduling a DAG",
            |filter| on(filter, dags::pause_dag),
        )
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/dags/{dag_id}/unpause",
            "unpauseDag",
            "dags",
            "Resume scheduling a DAG",
            |filter| on(filter, dags::unpause_dag),
        )
        .errors(&[404]),
        // Runs and their tasks.
        Route::new(
            Get,
            "/api/v1/runs",
            "listRuns",
            "runs",
            "List runs, newest first",
            |filter| on(filter, runs::list_runs),
        )
        .query(query::<RunQuery>())
        .reply(Reply::Json(200, json::<RunList>()))
        .errors(&[422]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}",
            "getRun",
            "runs",
            "A run and its task instances",
            |filter| on(filter, runs::get_run),
        )
        .reply(Reply::Json(200, json::<RunDetail>()))
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/runs/{run_id}/cancel",
            "cancelRun",
            "runs",
            "Cancel a run; running tasks are stopped",
            |filter| on(filter, runs::cancel_run),
        )
        .reply(Reply::Json(200, json::<CancelResponse>()))
        .errors(&[404]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
            "getTaskLogs",
            "runs",
            "A task's log, in chunks",
            |filter| on(filter, runs::task_logs),
        )
        .query(query::<LogQuery>())
        .reply(Reply::Json(200, json::<LogPage>()))
        .errors(&[404, 422]),
        Route::new(
            Post,
            "/api/v1/runs/{run_id}/tasks/{task_id}/clear",
            "clearTask",
            "runs",
            "Run a task again",
            |filter| on(filter, runs::clear_task),
        )
        .body(Body::OptionalJson(json::<ClearRequest>()))
        .reply(Reply::Json(200, json::<ClearResponse>()))
        .errors(&[404, 409]),
        Route::new(
            Post,
            "/api/v1/runs/{run_id}/tasks/{task_id}/mark",
            "markTask",
            "runs",
            "Mark a task success or failed",
            |filter| on(filter, runs::mark_task),
        )
        .body(Body::Json(json::<MarkRequest>()))
        .errors(&[404, 409]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}/lineage",
            "getRunLineage",
            "artifacts",
            "Everything a run's attempts read and wrote",
            |filter| on(filter, artifacts::run_lineage),
        )
        .reply(Reply::Json(200, json::<LineageView>()))
        .errors(&[404]),
        // Workers.
        Route::new(
            Get,
            "/api/v1/workers",
            "listWorkers",
            "workers",
            "Workers the server has heard from",
            |filter| on(filter, workers::list_workers),
        )
        .reply(Reply::Json(200, json::<WorkerList>())),
        // Models.
        Route::new(
            Get,
            "/api/v1/models",
            "listModels",
            "models",
            "List models",
            |filter| on(filter, models::list_models),
        )
        .reply(Reply::Json(200, json::<ModelList>())),
        Route::new(
            Get,
            "/api/v1/models/{name}",
            "getModel",
            "models",
            "A model: the version served, its metrics and history",
            |filter| on(filter, models::get_model),
        )
        .reply(Reply::Json(200, json::<ModelDetail>()))
        .errors(&[404, 503]),
        Route::new(
            Post,
            "/api/v1/models/{name}/predict",
            "predict",
            "models",
            "Predict with the production version",
            |filter| on(filter, models::predict),
        )
        .body(Body::Json(json::<PredictRequest>()))
        .reply(Reply::Json(200, json::<PredictResponse>()))
        .errors(&[404, 503])
        .body_limit(PREDICT_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/models/{name}/promote",
            "promoteModel",
            "models",
            "Point an alias at a version",
            |filter| on(filter, models::promote),
        )
        .body(Body::Json(json::<PromoteRequest>()))
        .reply(Reply::Json(200, json::<AliasMove>()))
        .errors(&[404, 409]),
        Route::new(
            Post,
            "/api/v1/models/{name}/rollback",
            "rollbackModel",
            "models",
            "Point an alias back at its previous version",
            |filter| on(filter, models::rollback),
        )
        .body(Body::OptionalJson(json::<RollbackRequest>()))
        .reply(Reply::Json(200, json::<AliasMove>()))
        .errors(&[404, 409]),
        // Artifacts.
        Route::new(
            Get,
            "/api/v1/artifacts",
            "listArtifacts",
            "artifacts",
            "List artifact names and their latest version",
            |filter| on(filter, artifacts::list_artifacts),
        )
        .query(query::<ListQuery>())
        .reply(Reply::Json(200, json::<ArtifactList>()))
        .errors(&[422]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}",
            "getArtifact",
            "artifacts",
            "An artifact and its versions, newest first",
            |filter| on(filter, artifacts::get_artifact),
        )
        .query(query::<DetailQuery>())
        .reply(Reply::Json(200, json::<ArtifactDetail>()))
        .errors(&[404]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}",
            "getArtifactVersion",
            "artifacts",
            "One version of an artifact",
            |filter| on(filter, artifacts::get_version),
        )
        .reply(Reply::Json(200, json::<VersionView>()))
        .errors(&[404, 422]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}/content",
            "getArtifactContent",
            "artifacts",
            "A version's bytes, streamed, with its media type",
            |filter| on(filter, artifacts::get_content),
        )
        .reply(Reply::TypedBytes)
        .errors(&[404, 422, 503]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}/lineage",
            "getArtifactLineage",
            "artifacts",
            "What a version was made from, or what was made from it",
            |filter| on(filter, artifacts::version_lineage),
        )
        .query(query::<LineageQuery>())
        .reply(Reply::Json(200, json::<LineageView>()))
        .errors(&[404, 422]),
        // The workers' execution API.
        Route::new(
            Post,
            "/api/v1/exec/register",
            "registerWorker",
            EXECUTION,
            "Register a worker",
            |filter| on(filter, register::register),
        )
        .body(Body::Json(json::<RegisterRequest>()))
        .reply(Reply::Json(200, json::<RegisterResponse>()))
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/claim",
            "claimTasks",
            EXECUTION,
            "Claim tasks, waiting for work up to `wait_ms`",
            |filter| on(filter, claim::claim),
        )
        .body(Body::Json(json::<ClaimRequest>()))
        .reply(Reply::Json(200, json::<ClaimResponse>()))
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/heartbeat",
            "heartbeat",
            EXECUTION,
            "Extend the worker's leases; answers the tasks to stop (a lease that moved on is \
             listed there, not refused; 404 when a task instance does not exist, and then no \
             lease is extended)",
            |filter| on(filter, leases::heartbeat),
        )
        .body(Body::Json(json::<LeasesRequest>()))
        .reply(Reply::Json(200, json::<HeartbeatResponse>()))
        .errors(&[404])
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/logs",
            "uploadLogs",
            EXECUTION,
            "Store log chunks of running attempts (all or none: 404 when a task instance or \
             attempt does not exist, 409 when an attempt has ended)",
            |filter| on(filter, logs::logs),
        )
        .body(Body::Json(json::<LogsRequest>()))
        .reply(Reply::Json(200, json::<LogsResponse>()))
        .errors(&[404, 409])
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/complete",
            "completeTasks",
            EXECUTION,
            "Report finished attempts, and claim the next tasks (a stale report is refused in \
             its `results` entry and its log chunks are dropped; 404, applying nothing, when a \
             task instance does not exist)",
            |filter| on(filter, complete::complete),
        )
        .body(Body::Json(json::<CompleteRequest>()))
        .reply(Reply::Json(200, json::<CompleteResponse>()))
        .errors(&[404])
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/release",
            "releaseTasks",
            EXECUTION,
            "Give back running tasks without reporting: their attempts are lost, and the tasks run \
             again elsewhere (a lease that moved on is skipped; 404, giving back nothing, when a \
             task instance does not exist)",
            |filter| on(filter, leases::release),
        )
        .body(Body::Json(json::<LeasesRequest>()))
        .reply(Reply::Json(200, json::<ReleaseResponse>()))
        .errors(&[404])
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/unclaim",
            "unclaimTasks",
            EXECUTION,
            "Give back tasks handed out but never started: their claims are undone",
            |filter| on(filter, leases::unclaim),
        )
        .body(Body::Json(json::<LeasesRequest>()))
        .reply(Reply::Json(200, json::<ReleaseResponse>()))
        .errors(&[404])
        .body_limit(EXEC_BODY_LIMIT),
        Route::new(
            Post,
            "/api/v1/exec/cache/lookup",
            "lookupCache",
            EXECUTION,
            "Find an earlier attempt whose outputs may be reused",
            |filter| on(filter, cache::cache_lookup),
        )
        .body(Body::Json(json::<CacheLookupRequest>()))
        .reply(Reply::Json(200, json::<CacheLookupResponse>()))
        .body_limit(EXEC_BODY_LIMIT),
        // Blobs stream through without being buffered, so no body limit applies to them.
        Route::new(
            Post,
            "/api/v1/exec/blobs",
            "uploadBlob",
            EXECUTION,
            "Store the body as a blob",
            |filter| on(filter, blobs::blob_upload),
        )
        .body(Body::Bytes)
        .reply(Reply::Json(200, json::<BlobView>()))
        .errors(&[422, 503]),
        Route::new(
            Get,
            "/api/v1/exec/blobs/{sha256}",
            "downloadBlob",
            EXECUTION,
            "A blob's bytes, streamed",
            |filter| on(filter, blobs::blob_download),
        )
        .reply(Reply::Bytes)
        .errors(&[404, 422, 503]),
    ]
}
