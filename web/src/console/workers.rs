//! The workers page: the workers this server has heard from and the tasks each is running,
//! refreshed by an htmx poll.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use kiln_engine::store::now_micros;
use maud::{Markup, html};

use super::ConsoleState;
use super::auth::Viewer;
use super::error::ConsoleError;
use super::layout::{self, Section, duration, elapsed, time_or_dash};

struct RunningTask {
    run_id: i64,
    dag_id: String,
    task_id: String,
    try_number: i64,
    started_at: Option<i64>,
}

/// Running tasks by worker, from one query over the running task instances only.
async fn running_tasks(
    state: &ConsoleState,
) -> Result<BTreeMap<String, Vec<RunningTask>>, ConsoleError> {
    let running = state.store.task_instance_list_running().await?;
    let mut by_worker: BTreeMap<String, Vec<RunningTask>> = BTreeMap::new();
    for (dag_id, instance) in running {
        let worker = instance.worker_id.clone().unwrap_or_default();
        by_worker.entry(worker).or_default().push(RunningTask {
            run_id: instance.run_id,
            dag_id,
            task_id: instance.task_id,
            try_number: instance.try_number,
            started_at: instance.started_at,
        });
    }
    Ok(by_worker)
}

fn tasks_list(tasks: &[RunningTask], now: i64) -> Markup {
    html! {
        @if tasks.is_empty() {
            span.muted { "idle" }
        } @else {
            ul.plain {
                @for task in tasks {
                    li {
                        a href={ "/runs/" (task.run_id) "/tasks/" (task.task_id) } { (task.dag_id) " / " (task.task_id) }
                        " run " (task.run_id) ", try " (task.try_number) ", "
                        (elapsed(task.started_at, None, now))
                    }
                }
            }
        }
    }
}

async fn fragment(state: &ConsoleState) -> Result<Markup, ConsoleError> {
    let workers = state.execution.workers();
    let mut running = running_tasks(state).await?;
    let now = now_micros();
    let rows: Vec<_> = workers
        .iter()
        .map(|worker| {
            let tasks = running
                .remove(&worker.registration.worker_id)
                .unwrap_or_default();
            (worker, tasks)
        })
        .collect();
    Ok(html! {
        div #workers-live hx-get="/workers/live" hx-trigger="every 2s" hx-swap="outerHTML" {
            @if rows.is_empty() {
                p.muted { "No worker has registered with this server since it started." }
            } @else {
                table.workers {
                    thead { tr { th { "Worker" } th { "Host" } th { "Queues" } th { "Slots" } th { "Last seen" } th { "Running" } } }
                    tbody {
                        @for (worker, tasks) in &rows {
                            @let registration = &worker.registration;
                            tr {
                                td { code { (registration.worker_id) } div.muted { "kiln " (registration.version) } }
                                td { (registration.hostname) " (pid " (registration.pid) ")" }
                                td { (registration.queues.join(", ")) }
                                td { (tasks.len()) " / " (registration.concurrency) }
                                td { (time_or_dash(Some(worker.last_seen))) div.muted { (duration(now - worker.last_seen)) " ago" } }
                                td { (tasks_list(tasks, now)) }
                            }
                        }
                    }
                }
            }
            @if !running.is_empty() {
                h2 { "Running on workers this server does not know" }
                p.muted { "Workers that registered with another server, or before this one restarted." }
                table.workers {
                    tbody {
                        @for (worker, tasks) in &running {
                            tr { td { code { (worker) } } td { (tasks_list(tasks, now)) } }
                        }
                    }
                }
            }
        }
    })
}

/// The workers page.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, ConsoleError> {
    let body = html! {
        h1 { "Workers" }
        (fragment(&state).await?)
    };
    Ok(layout::page("Workers", &viewer, Section::Workers, body))
}

/// The live part alone, for htmx.
pub(crate) async fn live(State(state): State<ConsoleState>) -> Result<Markup, ConsoleError> {
    fragment(&state).await
}
