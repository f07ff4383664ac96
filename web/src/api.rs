//! The public REST API under `/api/v1`: what the CLI, the console and users with curl call.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_engine::mlflow::MlflowRunLink;
use kiln_engine::scheduler::to_datetime;
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{DagRecord, RunFilter, RunRecord, TaskInstanceRecord, TriggerKind};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{JsonBody, JsonOrEmpty};
use crate::openapi::schema;
use crate::wire::{
    CancelResponse, ClearRequest, ClearResponse, DagDetail, DagList, DagSummary, ImportError,
    LogChunkView, LogPage, MarkRequest, MlflowRunView, ParamView, RunDetail, RunList, RunView,
    TaskDefinitionView, TaskInstanceView, TriggerRequest, WorkerList, WorkerView, time,
};
use crate::{AppError, AppState};

async fn summary(
    state: &AppState,
    record: &DagRecord,
) -> Result<(DagSummary, std::sync::Arc<kiln_engine::store::DagPlan>), AppError> {
    let plan = state
        .scheduler()
        .store()
        .dag_version_get(record.current_version_id)
        .await?;
    let dag = &plan.dag;
    let next_run = dag
        .schedule
        .as_ref()
        .and_then(|schedule| schedule.next_after(Utc::now(), dag.timezone))
        .map(|time| time.to_rfc3339());
    let summary = DagSummary {
        id: dag.id.clone(),
        description: dag.description.clone(),
        schedule: dag
            .schedule
            .as_ref()
            .map(|schedule| schedule.expression().to_owned()),
        timezone: dag.timezone.to_string(),
        next_run,
        paused: record.paused,
        version: record.current_version,
        tags: dag.tags.clone(),
        tasks: dag.tasks.len(),
    };
    Ok((summary, plan))
}

pub(crate) async fn list_dags(State(state): State<AppState>) -> Result<Json<DagList>, AppError> {
    let store = state.scheduler().store();
    let mut dags = Vec::new();
    for record in store.dag_list().await? {
        dags.push(summary(&state, &record).await?.0);
    }
    let import_errors = store
        .dag_file_error_list()
        .await?
        .into_iter()
        .map(|error| ImportError {
            file: error.file_path,
            errors: error.errors,
        })
        .collect();
    Ok(Json(DagList {
        dags,
        import_errors,
    }))
}

pub(crate) async fn get_dag(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetail>, AppError> {
    let record = state
        .scheduler()
        .store()
        .dag_get(&dag_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("DAG `{dag_id}` not found")))?;
    let (summary, plan) = summary(&state, &record).await?;
    let params = plan
        .dag
        .params
        .iter()
        .map(|(name, spec)| {
            let view = ParamView {
                param_type: spec.param_type.as_str().to_owned(),
                default: spec.default.clone(),
                description: spec.description.clone(),
            };
            (name.clone(), view)
        })
        .collect();
    let task_list = plan
        .dag
        .tasks
        .iter()
        .map(|task| TaskDefinitionView {
            id: task.id.clone(),
            kind: task.kind.clone(),
            depends_on: task.depends_on.clone(),
        })
        .collect();
    Ok(Json(DagDetail {
        summary,
        params,
        task_list,
    }))
}

fn run_view(run: RunRecord) -> RunView {
    RunView {
        id: run.id,
        dag_id: run.dag_id,
        dag_version_id: run.dag_version_id,
        state: run.state,
        trigger: run.trigger.as_str().to_owned(),
        logical_date: time(run.logical_date),
        params: run.params,
        created_at: time(run.created_at),
        started_at: run.started_at.map(time),
        ended_at: run.ended_at.map(time),
    }
}

fn task_view(instance: TaskInstanceRecord) -> TaskInstanceView {
    let duration_seconds = match (instance.started_at, instance.ended_at) {
        (Some(start), Some(end)) if end >= start => Some((end - start) as f64 / 1e6),
        _ => None,
    };
    TaskInstanceView {
        id: instance.id,
        task_id: instance.task_id,
        state: instance.state,
        try_number: instance.try_number,
        max_tries: instance.max_tries,
        lost_attempts: instance.lost_attempts,
        worker_id: instance.worker_id,
        started_at: instance.started_at.map(time),
        ended_at: instance.ended_at.map(time),
        duration_seconds,
        error: instance.error,
        mlflow: None,
    }
}

fn mlflow_view(link: MlflowRunLink) -> MlflowRunView {
    MlflowRunView {
        experiment_id: link.experiment_id,
        run_id: link.run_id,
        url: link.url,
    }
}

pub(crate) async fn trigger_run(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
    JsonOrEmpty(request): JsonOrEmpty<TriggerRequest>,
) -> Result<(StatusCode, Json<RunView>), AppError> {
    let run = state
        .scheduler()
        .trigger(&dag_id, &request.params, TriggerKind::Api)
        .await?;
    Ok((StatusCode::CREATED, Json(run_view(run))))
}

pub(crate) async fn pause_dag(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.scheduler().set_paused(&dag_id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn unpause_dag(
    State(state): State<AppState>,
    Path(dag_id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.scheduler().set_paused(&dag_id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The filters of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// Only runs of this DAG.
    dag_id: Option<String>,
    /// Only runs in this state.
    // A string rather than the enum, so that a wrong state gets a 422 naming the choices.
    #[schemars(with = "Option<schema::RunState>")]
    state: Option<String>,
    /// The most runs to answer: 100 unless given, at most 1000.
    limit: Option<u32>,
}

pub(crate) async fn list_runs(
    State(state): State<AppState>,
    Query(query): Query<RunQuery>,
) -> Result<Json<RunList>, AppError> {
    let run_state = query
        .state
        .map(|text| text.parse::<RunState>())
        .transpose()
        .map_err(AppError::unprocessable)?;
    let filter = RunFilter {
        dag_id: query.dag_id,
        state: run_state,
        limit: Some(query.limit.unwrap_or(100).min(1000)),
    };
    let runs = state.scheduler().store().run_list(&filter).await?;
    Ok(Json(RunList {
        runs: runs.into_iter().map(run_view).collect(),
    }))
}

async fn run_or_404(state: &AppState, run_id: i64) -> Result<RunRecord, AppError> {
    state
        .scheduler()
        .store()
        .run_get(run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run {run_id} not found")))
}

pub(crate) async fn get_run(
    State(state): State<AppState>,
    Path(run_id): Path<i64>,
) -> Result<Json<RunDetail>, AppError> {
    let run = run_or_404(&state, run_id).await?;
    let store = state.scheduler().store();
    let instances = store.task_instance_list(run_id).await?;
    let mut tasks = Vec::with_capacity(instances.len());
    let mut mlflow = None;
    if let Some(links) = &state.mlflow {
        mlflow = links
            .run(store.as_ref(), &run.dag_id, run.id, &run.params)
            .await?
            .map(mlflow_view);
        for instance in instances {
            let nested = if instance.try_number > 0 {
                links
                    .attempt(
                        store.as_ref(),
                        &run.dag_id,
                        &run.params,
                        instance.id,
                        instance.try_number,
                    )
                    .await?
            } else {
                None
            };
            let mut view = task_view(instance);
            view.mlflow = nested.map(mlflow_view);
            tasks.push(view);
        }
    } else {
        tasks.extend(instances.into_iter().map(task_view));
    }
    Ok(Json(RunDetail {
        run: run_view(run),
        tasks,
        mlflow,
    }))
}

pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    Path(run_id): Path<i64>,
) -> Result<Json<CancelResponse>, AppError> {
    run_or_404(&state, run_id).await?;
    let cancelled = state.scheduler().cancel(run_id).await?;
    Ok(Json(CancelResponse { cancelled }))
}

/// Which part of a task's log `GET …/logs` answers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// The attempt, from 1; the latest unless given.
    try_number: Option<i64>,
    /// Only chunks after this position; all unless given.
    after_seq: Option<i64>,
}

pub(crate) async fn task_logs(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(i64, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>, AppError> {
    let store = state.scheduler().store();
    run_or_404(&state, run_id).await?;
    let instance = store
        .task_instance_list(run_id)
        .await?
        .into_iter()
        .find(|instance| instance.task_id == task_id)
        .ok_or_else(|| AppError::NotFound(format!("task `{task_id}` not found in run {run_id}")))?;
    let try_number = query.try_number.unwrap_or(instance.try_number.max(1));
    if try_number < 1 || try_number > instance.try_number.max(1) {
        return Err(AppError::unprocessable(format!(
            "try_number {try_number} does not exist; task `{task_id}` has had {} attempt(s)",
            instance.try_number
        )));
    }
    let chunks = store
        .log_read(instance.id, try_number, query.after_seq.unwrap_or(-1), 1000)
        .await?;
    let attempt_running = instance.state == TaskState::Running && try_number == instance.try_number;
    let waiting = matches!(
        instance.state,
        TaskState::Scheduled | TaskState::Queued | TaskState::UpForRetry
    ) && try_number >= instance.try_number;
    Ok(Json(LogPage {
        task_instance_id: instance.id,
        try_number,
        state: instance.state,
        finished: !attempt_running && !waiting,
        chunks: chunks
            .into_iter()
            .map(|chunk| LogChunkView {
                seq: chunk.seq,
                text: chunk.chunk,
            })
            .collect(),
    }))
}

pub(crate) async fn clear_task(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(i64, String)>,
    JsonOrEmpty(request): JsonOrEmpty<ClearRequest>,
) -> Result<Json<ClearResponse>, AppError> {
    let cleared = state
        .scheduler()
        .clear(run_id, &task_id, request.downstream)
        .await?;
    Ok(Json(ClearResponse { cleared }))
}

pub(crate) async fn mark_task(
    State(state): State<AppState>,
    Path((run_id, task_id)): Path<(i64, String)>,
    JsonBody(request): JsonBody<MarkRequest>,
) -> Result<StatusCode, AppError> {
    if !matches!(request.state, TaskState::Success | TaskState::Failed) {
        return Err(AppError::unprocessable(format!(
            "a task can be marked success or failed, not {}",
            request.state
        )));
    }
    state
        .scheduler()
        .mark(run_id, &task_id, request.state)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_workers(State(state): State<AppState>) -> Json<WorkerList> {
    let workers = state
        .execution
        .workers()
        .into_iter()
        .map(|worker| WorkerView {
            last_seen: to_datetime(worker.last_seen).to_rfc3339(),
            worker_id: worker.registration.worker_id,
            queues: worker.registration.queues,
            concurrency: worker.registration.concurrency,
            hostname: worker.registration.hostname,
            pid: worker.registration.pid,
            version: worker.registration.version,
        })
        .collect();
    Json(WorkerList { workers })
}
