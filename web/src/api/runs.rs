//! `/api/v1/runs`: runs, their task instances and logs, and the actions on them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_engine::mlflow::{MlflowLinks, MlflowRunLink};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{RunFilter, RunRecord, Store, TaskInstanceRecord};

use crate::error::{AppError, JsonBody, JsonOrEmpty};
use crate::wire::{
    CancelResponse, ClearRequest, ClearResponse, LogChunkView, LogPage, LogQuery, MarkRequest,
    MlflowRunView, RunDetail, RunList, RunQuery, RunView, TaskInstanceView, time,
};

pub(crate) fn run_view(run: RunRecord) -> RunView {
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

pub(crate) async fn list_runs(
    State(store): State<Arc<dyn Store>>,
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
    let runs = store.run_list(&filter).await?;
    Ok(Json(RunList {
        runs: runs.into_iter().map(run_view).collect(),
    }))
}

/// The run, or a 404 naming it.
pub(crate) async fn run_or_404(store: &dyn Store, run_id: i64) -> Result<RunRecord, AppError> {
    store
        .run_get(run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run {run_id} not found")))
}

pub(crate) async fn get_run(
    State(store): State<Arc<dyn Store>>,
    State(mlflow): State<Option<Arc<MlflowLinks>>>,
    Path(run_id): Path<i64>,
) -> Result<Json<RunDetail>, AppError> {
    let run = run_or_404(&*store, run_id).await?;
    let instances = store.task_instance_list(run_id).await?;
    let mut tasks = Vec::with_capacity(instances.len());
    let mut mlflow_run = None;
    if let Some(links) = &mlflow {
        mlflow_run = links
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
        mlflow: mlflow_run,
    }))
}

pub(crate) async fn cancel_run(
    State(store): State<Arc<dyn Store>>,
    State(scheduler): State<Arc<Scheduler>>,
    Path(run_id): Path<i64>,
) -> Result<Json<CancelResponse>, AppError> {
    run_or_404(&*store, run_id).await?;
    let cancelled = scheduler.cancel(run_id).await?;
    Ok(Json(CancelResponse { cancelled }))
}

pub(crate) async fn task_logs(
    State(store): State<Arc<dyn Store>>,
    Path((run_id, task_id)): Path<(i64, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<LogPage>, AppError> {
    run_or_404(&*store, run_id).await?;
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
    State(scheduler): State<Arc<Scheduler>>,
    Path((run_id, task_id)): Path<(i64, String)>,
    JsonOrEmpty(request): JsonOrEmpty<ClearRequest>,
) -> Result<Json<ClearResponse>, AppError> {
    let cleared = scheduler
        .clear(run_id, &task_id, request.downstream)
        .await?;
    Ok(Json(ClearResponse { cleared }))
}

pub(crate) async fn mark_task(
    State(scheduler): State<Arc<Scheduler>>,
    Path((run_id, task_id)): Path<(i64, String)>,
    JsonBody(request): JsonBody<MarkRequest>,
) -> Result<StatusCode, AppError> {
    if !matches!(request.state, TaskState::Success | TaskState::Failed) {
        return Err(AppError::unprocessable(format!(
            "a task can be marked success or failed, not {}",
            request.state
        )));
    }
    scheduler.mark(run_id, &task_id, request.state).await?;
    Ok(StatusCode::NO_CONTENT)
}
