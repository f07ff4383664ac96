//! `/api/v1/workers`: the workers the server has heard from.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine::execution::ExecutionService;
use kiln_engine::scheduler::to_datetime;

use crate::wire::{WorkerList, WorkerView};

pub(crate) async fn list_workers(
    State(execution): State<Arc<ExecutionService>>,
) -> Json<WorkerList> {
    let workers = execution
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
