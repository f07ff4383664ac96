//! `/api/v1/dags`: DAGs, their params and tasks, triggering runs, pausing.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_engine::scheduler::Scheduler;
use kiln_engine::store::{DagPlan, DagRecord, Store, TriggerKind};

use super::runs::run_view;
use crate::error::{AppError, JsonOrEmpty};
use crate::wire::{
    DagDetail, DagList, DagSummary, ImportError, ParamView, RunView, TaskDefinitionView,
    TriggerRequest,
};

async fn summary(
    store: &dyn Store,
    record: &DagRecord,
) -> Result<(DagSummary, Arc<DagPlan>), AppError> {
    let plan = store.dag_version_get(record.current_version_id).await?;
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

pub(crate) async fn list_dags(
    State(store): State<Arc<dyn Store>>,
) -> Result<Json<DagList>, AppError> {
    let mut dags = Vec::new();
    for record in store.dag_list().await? {
        dags.push(summary(&*store, &record).await?.0);
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
    State(store): State<Arc<dyn Store>>,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetail>, AppError> {
    let record = store
        .dag_get(&dag_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("DAG `{dag_id}` not found")))?;
    let (summary, plan) = summary(&*store, &record).await?;
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

pub(crate) async fn trigger_run(
    State(scheduler): State<Arc<Scheduler>>,
    Path(dag_id): Path<String>,
    JsonOrEmpty(request): JsonOrEmpty<TriggerRequest>,
) -> Result<(StatusCode, Json<RunView>), AppError> {
    let run = scheduler
        .trigger(&dag_id, &request.params, TriggerKind::Api)
        .await?;
    Ok((StatusCode::CREATED, Json(run_view(run))))
}

pub(crate) async fn pause_dag(
    State(scheduler): State<Arc<Scheduler>>,
    Path(dag_id): Path<String>,
) -> Result<StatusCode, AppError> {
    scheduler.set_paused(&dag_id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn unpause_dag(
    State(scheduler): State<Arc<Scheduler>>,
    Path(dag_id): Path<String>,
) -> Result<StatusCode, AppError> {
    scheduler.set_paused(&dag_id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
