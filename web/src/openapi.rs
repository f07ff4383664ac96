//! The OpenAPI 3.1 document of everything under `/api/v1`, and the one route table it is written
//! from: `app` builds its `/api/v1` routes from the same table, so the document can neither
//! promise a route the server does not serve nor miss one it does.
//!
//! Schemas come from `schemars` (JSON Schema 2020-12, which OpenAPI 3.1 uses) and sit under
//! `components.schemas`. There is one schema per type, for what a reader of the JSON must
//! accept (schemars' deserialize contract): a response field that is `null` when empty is
//! documented as optional, which is looser than what the server sends but never wrong.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Map, Value, json};

use crate::models_api::{
    AliasMove, ModelDetail, ModelList, PredictRequest, PredictResponse, PromoteRequest,
    RollbackRequest,
};
use crate::wire::{
    ArtifactDetail, ArtifactList, BlobView, CacheLookupRequest, CacheLookupResponse,
    CancelResponse, ClaimRequest, ClaimResponse, ClearRequest, ClearResponse, CompleteRequest,
    CompleteResponse, DagDetail, DagList, ErrorBody, HeartbeatResponse, LeasesRequest, LineageView,
    LogPage, LogsRequest, LogsResponse, MarkRequest, RegisterRequest, RegisterResponse,
    ReleaseResponse, RunDetail, RunList, RunView, TriggerRequest, VersionView, WorkerList,
};
use crate::{AppState, api, artifacts_api, exec, models_api};

/// Writes one schema into the document (a `$ref` for named types).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Who may call a route: what `auth` checks in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `auth::require_api_token`: the API token, when the server has one.
    ApiToken,
    /// `auth::require_worker_token`: the workers' token, always.
    WorkerToken,
    /// Anyone.
    Public,
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// What a route reads from the request body.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// `JsonBody`: JSON sent as `application/json`, required.
    Json(SchemaFn),
    /// `JsonOrEmpty`: JSON, or no body at all for the defaults.
    OptionalJson(SchemaFn),
    /// Bytes, streamed.
    Bytes,
}

/// What a route answers when it succeeds.
#[derive(Clone, Copy)]
enum Reply {
    /// JSON, with this status.
    Json(u16, SchemaFn),
    /// 204 and no body.
    NoContent,
    /// Bytes, streamed, as `application/octet-stream`.
    Bytes,
    /// Bytes, streamed, with the media type recorded for them (an artifact's `text/csv`,
    /// `application/vnd.apache.parquet` …), so the document cannot name one.
    TypedBytes,
}

/// One route of `/api/v1`: how `app` serves it and how the document describes it.
pub(crate) struct Route {
    method: Method,
    /// The full path, in axum's syntax (which is OpenAPI's: `{name}`).
    pub(crate) path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    tag: &'static str,
    /// Who may call it.
    pub(crate) access: Access,
    /// The handler's `Query<…>` type, if it has one.
    query: Option<SchemaFn>,
    body: Body,
    reply: Reply,
    /// The error statuses the handler itself gives; those the extractors and `auth` give are
    /// added from the rest of the entry.
    errors: &'static [u16],
    /// The largest body the extractors take, when not axum's default of 2 MiB.
    body_limit: Option<usize>,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Route {
    fn new(
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        tag: &'static str,
        summary: &'static str,
        handler: fn(MethodFilter) -> MethodRouter<AppState>,
    ) -> Route {
        let access = if tag == EXECUTION {
            Access::WorkerToken
        } else {
            Access::ApiToken
        };
        Route {
            method,
            path,
            operation_id,
            summary,
            tag,
            access,
            query: None,
            body: Body::None,
            reply: Reply::NoContent,
            errors: &[],
            body_limit: None,
            handler,
        }
    }

    fn query(self, query: SchemaFn) -> Route {
        Route {
            query: Some(query),
            ..self
        }
    }

    fn body(self, body: Body) -> Route {
        Route { body, ..self }
    }

    fn reply(self, reply: Reply) -> Route {
        Route { reply, ..self }
    }

    fn errors(self, errors: &'static [u16]) -> Route {
        Route { errors, ..self }
    }

    fn body_limit(self, limit: usize) -> Route {
        Route {
            body_limit: Some(limit),
            ..self
        }
    }

    fn public(self) -> Route {
        Route {
            access: Access::Public,
            ..self
        }
    }

    /// The handler, behind its body limit, as `app` mounts it. A JSON body is read in full,
    /// within the limit and the body time, before the handler runs (`limits::buffer_body`).
    pub(crate) fn method_router(&self) -> MethodRouter<AppState> {
        let router = (self.handler)(self.method.filter());
        let limit = self.body_limit.unwrap_or(AXUM_BODY_LIMIT);
        let router = match self.body {
            Body::Json(_) | Body::OptionalJson(_) => router.layer(
                axum::middleware::from_fn_with_state(limit, crate::limits::buffer_body),
            ),
            Body::None | Body::Bytes => router,
        };
        match self.body_limit {
            Some(limit) => router.layer(DefaultBodyLimit::max(limit)),
            None => router,
        }
    }
}

const EXECUTION: &str = "execution";

/// The limit axum's extractors apply when a route sets none.
pub(crate) const AXUM_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Workers send log chunks in requests of about 1 MiB; leave room above that.
const EXEC_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Room for 10,000 rows of a few dozen features.
const PREDICT_BODY_LIMIT: usize = 64 * 1024 * 1024;

fn json<T: JsonSchema>() -> SchemaFn {
    SchemaGenerator::subschema_for::<T>
}

fn query<T: JsonSchema>() -> SchemaFn {
    // Inline, not a `$ref`: the document lists each property as a parameter.
    T::json_schema
}

/// Every route under `/api/v1`, in the order the document lists them.
pub(crate) fn routes() -> Vec<Route> {
    use Method::{Get, Post};
    vec![
        Route::new(
            Get,
            "/api/v1/openapi.json",
            "getOpenApi",
            "meta",
            "This document",
            |filter| on(filter, openapi_json),
        )
        .public()
        .reply(Reply::Json(200, document_schema)),
        // DAGs.
        Route::new(
            Get,
            "/api/v1/dags",
            "listDags",
            "dags",
            "List DAGs and the files that failed to load",
            |filter| on(filter, api::list_dags),
        )
        .reply(Reply::Json(200, json::<DagList>())),
        Route::new(
            Get,
            "/api/v1/dags/{dag_id}",
            "getDag",
            "dags",
            "One DAG: its params and tasks",
            |filter| on(filter, api::get_dag),
        )
        .reply(Reply::Json(200, json::<DagDetail>()))
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/dags/{dag_id}/runs",
            "triggerRun",
            "dags",
            "Trigger a run",
            |filter| on(filter, api::trigger_run),
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
            |filter| on(filter, api::pause_dag),
        )
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/dags/{dag_id}/unpause",
            "unpauseDag",
            "dags",
            "Resume scheduling a DAG",
            |filter| on(filter, api::unpause_dag),
        )
        .errors(&[404]),
        // Runs and their tasks.
        Route::new(
            Get,
            "/api/v1/runs",
            "listRuns",
            "runs",
            "List runs, newest first",
            |filter| on(filter, api::list_runs),
        )
        .query(query::<api::RunQuery>())
        .reply(Reply::Json(200, json::<RunList>()))
        .errors(&[422]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}",
            "getRun",
            "runs",
            "A run and its task instances",
            |filter| on(filter, api::get_run),
        )
        .reply(Reply::Json(200, json::<RunDetail>()))
        .errors(&[404]),
        Route::new(
            Post,
            "/api/v1/runs/{run_id}/cancel",
            "cancelRun",
            "runs",
            "Cancel a run; running tasks are stopped",
            |filter| on(filter, api::cancel_run),
        )
        .reply(Reply::Json(200, json::<CancelResponse>()))
        .errors(&[404]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
            "getTaskLogs",
            "runs",
            "A task's log, in chunks",
            |filter| on(filter, api::task_logs),
        )
        .query(query::<api::LogQuery>())
        .reply(Reply::Json(200, json::<LogPage>()))
        .errors(&[404, 422]),
        Route::new(
            Post,
            "/api/v1/runs/{run_id}/tasks/{task_id}/clear",
            "clearTask",
            "runs",
            "Run a task again",
            |filter| on(filter, api::clear_task),
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
            |filter| on(filter, api::mark_task),
        )
        .body(Body::Json(json::<MarkRequest>()))
        .errors(&[404, 409]),
        Route::new(
            Get,
            "/api/v1/runs/{run_id}/lineage",
            "getRunLineage",
            "artifacts",
            "Everything a run's attempts read and wrote",
            |filter| on(filter, artifacts_api::run_lineage),
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
            |filter| on(filter, api::list_workers),
        )
        .reply(Reply::Json(200, json::<WorkerList>())),
        // Models.
        Route::new(
            Get,
            "/api/v1/models",
            "listModels",
            "models",
            "List models",
            |filter| on(filter, models_api::list_models),
        )
        .reply(Reply::Json(200, json::<ModelList>())),
        Route::new(
            Get,
            "/api/v1/models/{name}",
            "getModel",
            "models",
            "A model: the version served, its metrics and history",
            |filter| on(filter, models_api::get_model),
        )
        .reply(Reply::Json(200, json::<ModelDetail>()))
        .errors(&[404, 503]),
        Route::new(
            Post,
            "/api/v1/models/{name}/predict",
            "predict",
            "models",
            "Predict with the production version",
            |filter| on(filter, models_api::predict),
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
            |filter| on(filter, models_api::promote),
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
            |filter| on(filter, models_api::rollback),
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
            |filter| on(filter, artifacts_api::list_artifacts),
        )
        .query(query::<artifacts_api::ListQuery>())
        .reply(Reply::Json(200, json::<ArtifactList>()))
        .errors(&[422]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}",
            "getArtifact",
            "artifacts",
            "An artifact and its versions, newest first",
            |filter| on(filter, artifacts_api::get_artifact),
        )
        .query(query::<artifacts_api::DetailQuery>())
        .reply(Reply::Json(200, json::<ArtifactDetail>()))
        .errors(&[404]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}",
            "getArtifactVersion",
            "artifacts",
            "One version of an artifact",
            |filter| on(filter, artifacts_api::get_version),
        )
        .reply(Reply::Json(200, json::<VersionView>()))
        .errors(&[404, 422]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}/content",
            "getArtifactContent",
            "artifacts",
            "A version's bytes, streamed, with its media type",
            |filter| on(filter, artifacts_api::get_content),
        )
        .reply(Reply::TypedBytes)
        .errors(&[404, 422, 503]),
        Route::new(
            Get,
            "/api/v1/artifacts/{name}/versions/{version}/lineage",
            "getArtifactLineage",
            "artifacts",
            "What a version was made from, or what was made from it",
            |filter| on(filter, artifacts_api::version_lineage),
        )
        .query(query::<artifacts_api::LineageQuery>())
        .reply(Reply::Json(200, json::<LineageView>()))
        .errors(&[404, 422]),
        // The workers' execution API.
        Route::new(
            Post,
            "/api/v1/exec/register",
            "registerWorker",
            EXECUTION,
            "Register a worker",
            |filter| on(filter, exec::register),
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
            |filter| on(filter, exec::claim),
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
            |filter| on(filter, exec::heartbeat),
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
            |filter| on(filter, exec::logs),
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
            |filter| on(filter, exec::complete),
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
            |filter| on(filter, exec::release),
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
            |filter| on(filter, exec::unclaim),
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
            |filter| on(filter, exec::cache_lookup),
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
            |filter| on(filter, exec::blob_upload),
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
            |filter| on(filter, exec::blob_download),
        )
        .reply(Reply::Bytes)
        .errors(&[404, 422, 503]),
    ]
}

/// Every route `app` serves under `/api/v1`, as (method, path in OpenAPI syntax): what the drift
/// test holds the document against.
pub fn served() -> Vec<(&'static str, &'static str)> {
    routes()
        .iter()
        .map(|route| (route.method.as_str(), route.path))
        .collect()
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// `GET /api/v1/openapi.json`.
async fn openapi_json() -> Json<Value> {
    Json(DOCUMENT.clone())
}

fn document_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "description": "An OpenAPI 3.1 document." })
}

/// The OpenAPI 3.1 document of `/api/v1`, as `GET /api/v1/openapi.json` serves it.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            // The document says which dialect its schemas use, once, for all of them.
            settings.meta_schema = None;
        })
        .into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for route in routes() {
        let operation = operation(&route, &mut generator, &error);
        if let Value::Object(item) = paths.entry(route.path).or_insert_with(|| json!({})) {
            item.insert(route.method.as_str().to_lowercase(), operation);
        }
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "kiln",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "kiln's REST API, and the execution API its workers call. Errors are \
                `{\"error\": \"…\"}`; times are RFC 3339 unless a field says otherwise.",
            "license": { "name": "GPL-3.0-or-later", "identifier": "GPL-3.0-or-later" },
        },
        "tags": [
            { "name": "dags", "description": "DAGs and triggering runs." },
            { "name": "runs", "description": "Runs, their tasks and logs." },
            { "name": "workers", "description": "The workers the server has heard from." },
            { "name": "models", "description": "The model registry and serving." },
            { "name": "artifacts", "description": "Artifact versions, their bytes and lineage." },
            { "name": EXECUTION, "description": "What workers call; not for people." },
            { "name": "meta", "description": "This document." },
        ],
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The server's API token (`--api-token` or `KILN_API_TOKEN`). \
                        A server started without one takes requests without it.",
                },
                "workerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token the server and its workers share \
                        (`--worker-token` or `KILN_WORKER_TOKEN`).",
                },
            },
        },
    });
    bound_integers(&mut document);
    document
}

/// Gives every integer schema with a width (`format: int64`, `uint32` …) the bounds of that
/// width, unless it has tighter ones. JSON Schema validators, schemathesis among them, do not
/// read bounds from `format`, so without them a client may send a number the server cannot hold
/// and be told nothing by the document.
fn bound_integers(document: &mut Value) {
    let mut pending = vec![document];
    while let Some(node) = pending.pop() {
        match node {
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::Object(fields) => {
                let bounds = match fields.get("format").and_then(Value::as_str) {
                    Some("int8") => Some((json!(i8::MIN), json!(i8::MAX))),
                    Some("uint8") => Some((json!(0), json!(u8::MAX))),
                    Some("int16") => Some((json!(i16::MIN), json!(i16::MAX))),
                    Some("uint16") => Some((json!(0), json!(u16::MAX))),
                    Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                    Some("uint32") => Some((json!(0), json!(u32::MAX))),
                    Some("int64") => Some((json!(i64::MIN), json!(i64::MAX))),
                    Some("uint64" | "uint") => Some((json!(0), json!(u64::MAX))),
                    _ => None,
                };
                if let Some((minimum, maximum)) = bounds {
                    fields.entry("minimum").or_insert(minimum);
                    fields.entry("maximum").or_insert(maximum);
                }
                pending.extend(fields.values_mut());
            }
            _ => {}
        }
    }
}

fn operation(route: &Route, generator: &mut SchemaGenerator, error: &Schema) -> Value {
    let mut parameters = path_parameters(route.path);
    if let Some(query) = route.query {
        parameters.extend(query_parameters(&query(generator)));
    }
    let security = match route.access {
        Access::ApiToken => json!([{ "apiToken": [] }]),
        Access::WorkerToken => json!([{ "workerToken": [] }]),
        Access::Public => json!([]),
    };
    let mut responses = Map::new();
    match route.reply {
        Reply::Json(status, schema) => {
            responses.insert(
                status.to_string(),
                json!({
                    "description": route.summary,
                    "content": { "application/json": { "schema": schema(generator) } },
                }),
            );
        }
        Reply::NoContent => {
            responses.insert("204".to_owned(), json!({ "description": "Done." }));
        }
        Reply::Bytes => {
            responses.insert(
                "200".to_owned(),
                json!({ "description": route.summary, "content": bytes_content() }),
            );
        }
        Reply::TypedBytes => {
            responses.insert(
                "200".to_owned(),
                json!({
                    "description": route.summary,
                    "content": {
                        "*/*": {
                            "schema": { "type": "string", "format": "binary" },
                        },
                    },
                    "headers": {
                        "Content-Type": {
                            "description": "The media type recorded with the version.",
                            "schema": { "type": "string" },
                        },
                    },
                }),
            );
        }
    }
    for (status, response) in error_responses(route, error) {
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
        "security": security,
    });
    let request_body = match route.body {
        Body::None => None,
        Body::Json(schema) => Some(json!({
            "required": true,
            "content": { "application/json": { "schema": schema(generator) } },
        })),
        Body::OptionalJson(schema) => Some(json!({
            "required": false,
            "description": "May be left out for the defaults.",
            "content": { "application/json": { "schema": schema(generator) } },
        })),
        // No body is the empty blob, which a task may well write.
        Body::Bytes => Some(json!({
            "required": false,
            "description": "The bytes; none at all is the empty blob.",
            "content": bytes_content(),
        })),
    };
    if let (Some(body), Value::Object(fields)) = (request_body, &mut operation) {
        fields.insert("requestBody".to_owned(), body);
    }
    operation
}

fn bytes_content() -> Value {
    json!({
        "application/octet-stream": {
            "schema": { "type": "string", "contentMediaType": "application/octet-stream" },
        },
    })
}

/// The statuses a route fails with, each with its bodies: `AppError`'s JSON, or the plain text
/// of axum's own `Path` and `Query` rejections (which never reach `AppError`).
fn error_responses(route: &Route, error: &Schema) -> Vec<(u16, Value)> {
    let json_body = matches!(route.body, Body::Json(_) | Body::OptionalJson(_));
    // A path parameter that is not a number, or a query string that does not parse.
    let plain_400 = route.query.is_some() || route.path.contains("{run_id}");
    let mut statuses: BTreeSet<u16> = route.errors.iter().copied().collect();
    if json_body {
        // Unreadable JSON (400), too slow (408, `limits::buffer_body`), too large (413),
        // well-formed but wrong (422).
        statuses.extend([400, 408, 413, 422]);
    }
    if matches!(route.body, Body::Json(_)) {
        // `JsonBody` wants `content-type: application/json`.
        statuses.insert(415);
    }
    if plain_400 {
        statuses.insert(400);
    }
    if route.access != Access::Public {
        statuses.extend([401, 500]);
    }
    statuses
        .into_iter()
        .map(|status| {
            let mut content = Map::new();
            if status != 400 || json_body {
                content.insert("application/json".to_owned(), json!({ "schema": error }));
            }
            if status == 400 && plain_400 {
                content.insert(
                    "text/plain".to_owned(),
                    json!({ "schema": { "type": "string" } }),
                );
            }
            let response = json!({ "description": error_description(status), "content": content });
            (status, response)
        })
        .collect()
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request could not be read.",
        401 => "The bearer token is missing or wrong.",
        404 => "Not found; the message names what.",
        408 => "The body did not arrive within the server's body time (`--http-body-timeout`).",
        409 => "The request conflicts with the current state.",
        413 => "The body is too large; an oversized `Content-Length` is refused unread.",
        415 => "The body was not sent as `application/json`.",
        422 => "The request is well-formed but fails a check; the message says which.",
        503 => "A part of the server the request needs is not configured or not reachable.",
        _ => "The server failed; the details are in its log.",
    }
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (schema, description) = match name {
                "run_id" => (
                    json!({ "type": "integer", "format": "int64" }),
                    "The run's id.",
                ),
                "dag_id" => (json!({ "type": "string" }), "The DAG's id."),
                "task_id" => (json!({ "type": "string" }), "The task's id in its DAG."),
                "name" if path.starts_with("/api/v1/models/") => {
                    (json!({ "type": "string" }), "The model's name.")
                }
                "name" => (json!({ "type": "string" }), "The artifact's name."),
                "version" => (
                    json!({ "type": "string", "pattern": "^([1-9][0-9]*|latest)$" }),
                    "A version number, from 1, or `latest`.",
                ),
                "sha256" => (
                    json!({ "type": "string", "pattern": SHA256_PATTERN }),
                    "The blob's SHA-256, in hex.",
                ),
                // The drift test fails on an empty description, so a new name gets one here.
                _ => (json!({ "type": "string" }), ""),
            };
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": schema,
            })
        })
        .collect()
}

/// One query parameter per property of a `Query<…>` type's schema.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: BTreeSet<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = without_null(property.clone());
            let description = property
                .as_object_mut()
                .and_then(|fields| fields.remove("description"))
                .unwrap_or_else(|| json!(""));
            json!({
                "name": name,
                "in": "query",
                "required": required.contains(name.as_str()),
                "description": description,
                "schema": property,
            })
        })
        .collect()
}

/// A query parameter's schema without the `null` an `Option` adds: a parameter is absent, never
/// null.
fn without_null(mut schema: Value) -> Value {
    let Value::Object(fields) = &mut schema else {
        return schema;
    };
    if let Some(Value::Array(types)) = fields.get_mut("type") {
        types.retain(|name| name != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            fields.insert("type".to_owned(), only);
        }
    }
    if let Some(Value::Array(values)) = fields.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
    if let Some(Value::Array(options)) = fields.get_mut("anyOf") {
        options.retain(|option| option != &json!({ "type": "null" }));
        if options.len() == 1 {
            let only = options.remove(0);
            fields.remove("anyOf");
            if let Value::Object(only) = only {
                fields.extend(only);
            }
        }
    }
    schema
}

/// What `Sha256Digest` parses: 64 hex digits, either case.
const SHA256_PATTERN: &str = "^[0-9a-fA-F]{64}$";

/// Schemas for the engine types the wire types hold (`#[schemars(with = "…")]`): the engine
/// knows nothing of HTTP, so the shapes it takes on the wire are written here. The enums are
/// listed from the engine's own variants, so a new one shows up in the document by itself.
pub(crate) mod schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    use super::SHA256_PATTERN;

    fn string_enum(description: &str, names: &[&str]) -> Schema {
        json_schema!({ "type": "string", "enum": names, "description": description })
    }

    /// `kiln_engine::state::RunState`.
    pub(crate) struct RunState;

    impl JsonSchema for RunState {
        fn schema_name() -> Cow<'static, str> {
            "RunState".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            let names: Vec<&str> = kiln_engine::state::RunState::ALL
                .iter()
                .map(|state| state.as_str())
                .collect();
            string_enum("The state of a run.", &names)
        }
    }

    /// `kiln_engine::state::TaskState`.
    pub(crate) struct TaskState;

    impl JsonSchema for TaskState {
        fn schema_name() -> Cow<'static, str> {
            "TaskState".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            let names: Vec<&str> = kiln_engine::state::TaskState::ALL
                .iter()
                .map(|state| state.as_str())
                .collect();
            string_enum("The state of a task instance.", &names)
        }
    }

    /// `kiln_engine::dag::ArtifactKind`.
    pub(crate) struct ArtifactKind;

    impl JsonSchema for ArtifactKind {
        fn schema_name() -> Cow<'static, str> {
            "ArtifactKind".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            use kiln_engine::dag::ArtifactKind::{Dataset, File, Model};
            // The engine has no list of kinds; the match stops compiling when it gains one.
            let names = [Dataset, Model, File].map(|kind| match kind {
                Dataset | Model | File => kind.as_str(),
            });
            string_enum("The kind of an artifact.", &names)
        }
    }

    /// `kiln_engine::dag::ModelAlias`.
    pub(crate) struct ModelAlias;

    impl JsonSchema for ModelAlias {
        fn schema_name() -> Cow<'static, str> {
            "ModelAlias".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            use kiln_engine::dag::ModelAlias::{Production, Staging};
            // The engine has no list of aliases; the match stops compiling when it gains one.
            let names = [Production, Staging].map(|alias| match alias {
                Production | Staging => alias.as_str(),
            });
            string_enum("An alias of the model registry.", &names)
        }
    }

    /// `kiln_engine::artifacts::Sha256Digest`.
    pub(crate) struct Sha256;

    impl JsonSchema for Sha256 {
        fn schema_name() -> Cow<'static, str> {
            "Sha256".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": SHA256_PATTERN,
                "description": "A SHA-256 digest, in hex (sent lowercase).",
            })
        }
    }

    /// `kiln_engine::store::ColumnSchema`.
    #[derive(JsonSchema)]
    #[allow(dead_code)] // Only its schema is used.
    pub(crate) struct ColumnSchema {
        /// The column's name.
        name: String,
        /// Its type, in the writer's words (`Float64`, `String`, …).
        dtype: String,
    }

    // Naming every field, this stops compiling when the engine's type gains or loses one.
    impl From<kiln_engine::store::ColumnSchema> for ColumnSchema {
        fn from(column: kiln_engine::store::ColumnSchema) -> ColumnSchema {
            let kiln_engine::store::ColumnSchema { name, dtype } = column;
            ColumnSchema { name, dtype }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_of_a_width_carries_its_bounds() {
        let document = document();
        let mut pending = vec![&document];
        let mut bounded = 0;
        while let Some(node) = pending.pop() {
            match node {
                Value::Array(items) => pending.extend(items),
                Value::Object(fields) => {
                    if let Some(format) = fields.get("format").and_then(Value::as_str)
                        && format.contains("int")
                    {
                        assert!(
                            fields.contains_key("minimum") && fields.contains_key("maximum"),
                            "{format} without bounds: {node}"
                        );
                        bounded += 1;
                    }
                    pending.extend(fields.values());
                }
                _ => {}
            }
        }
        assert!(bounded > 20, "only {bounded} integers found");
        // The run id of a path: a 64-bit integer, as the server parses it.
        let run_id = &document["paths"]["/api/v1/runs/{run_id}"]["get"]["parameters"][0]["schema"];
        assert_eq!(run_id["maximum"], json!(i64::MAX), "{run_id}");
        assert_eq!(run_id["minimum"], json!(i64::MIN), "{run_id}");
    }
}
