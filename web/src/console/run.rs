//! A run's page: its tasks with states, tries and durations, and a Gantt chart, kept live by an
//! htmx poll of one fragment while the run is going; the run and task actions; and the run's
//! lineage, the artifacts its attempts read and wrote.

use axum::Extension;
use axum::extract::State;
use axum::response::Redirect;
use kiln_engine::state::TaskState;
use kiln_engine::store::{RunRecord, TaskInstanceRecord, now_micros};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleState;
use super::auth::{Viewer, local_path};
use super::error::ConsoleError;
use super::extract::{HtmlForm, HtmlPath};
use super::gantt;
use super::layout::{self, Section, csrf_field, elapsed, state_badge, time, time_or_dash};
use super::lineage;

/// How often a running run's fragment is fetched again.
const POLL: &str = "every 2s";

pub(crate) async fn run_or_404(
    state: &ConsoleState,
    run_id: i64,
) -> Result<RunRecord, ConsoleError> {
    state
        .store
        .run_get(run_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("run {run_id} not found")))
}

/// The live part of the page: state, tasks and Gantt. While the run is not final it carries
/// the attributes that make htmx fetch it again; the final version carries none, so polling
/// stops by itself.
fn live_fragment(viewer: &Viewer, run: &RunRecord, tasks: &[TaskInstanceRecord]) -> Markup {
    let now = now_micros();
    let live = !run.state.is_final();
    let url = format!("/runs/{}/live", run.id);
    let counts = TaskState::ALL
        .iter()
        .map(|state| {
            (
                *state,
                tasks.iter().filter(|task| task.state == *state).count(),
            )
        })
        .filter(|(_, count)| *count > 0);
    html! {
        div #run-live hx-get=[live.then_some(&url)] hx-trigger=[live.then_some(POLL)] hx-swap=[live.then_some("outerHTML")] {
            div.title-row {
                h1 { "Run " (run.id) }
                (state_badge(run.state.as_str()))
                @if live && viewer.can_act() {
                    form.inline method="post" action={ "/runs/" (run.id) "/cancel" } {
                        (csrf_field(viewer))
                        button.danger type="submit" { "Cancel run" }
                    }
                }
                @if live { span.muted.live { "live" } }
            }
            dl.facts {
                dt { "Logical date" } dd { (time(run.logical_date)) }
                dt { "Trigger" } dd { (run.trigger.as_str()) }
                dt { "Started" } dd { (time_or_dash(run.started_at)) }
                dt { "Ended" } dd { (time_or_dash(run.ended_at)) }
                dt { "Duration" } dd { (elapsed(run.started_at, run.ended_at, now)) }
                dt { "Tasks" } dd {
                    @for (state, count) in counts { (state_badge(state.as_str())) " " (count) " " }
                }
            }
            h2 { "Gantt" }
            @match gantt::svg(run.id, tasks, now) {
                Some(chart) => div.scroll { (chart) },
                None => p.muted { "No task has started yet." },
            }
            h2 { "Tasks" }
            table.tasks {
                thead { tr { th { "Task" } th { "State" } th { "Tries" } th { "Started" } th { "Duration" } th { "Worker" } th { "Error" } } }
                tbody {
                    @for task in tasks {
                        tr {
                            td { a href={ "/runs/" (run.id) "/tasks/" (task.task_id) } { (task.task_id) } }
                            td { (state_badge(task.state.as_str())) }
                            td { (layout::tries(task)) }
                            td { (time_or_dash(task.started_at)) }
                            td { (elapsed(task.started_at, task.ended_at, now)) }
                            td { (task.worker_id.as_deref().unwrap_or("—")) }
                            td.error { (task.error.as_deref().map(first_line).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// An error's first line, cut to fit a table cell (the task page shows it whole).
fn first_line(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(119).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The form that clears or marks a task; on the run page it offers every task, on a task's
/// page only that one. It sits outside the polled fragment so a poll never resets it.
pub(crate) fn task_actions(
    viewer: &Viewer,
    run_id: i64,
    task_ids: &[&str],
    return_to: &str,
) -> Markup {
    if !viewer.can_act() || task_ids.is_empty() {
        return html! {};
    }
    html! {
        form.actions method="post" action={ "/runs/" (run_id) "/task-action" } {
            (csrf_field(viewer))
            input type="hidden" name="return_to" value=(return_to);
            @if let [only] = task_ids {
                input type="hidden" name="task_id" value=(only);
            } @else {
                label {
                    "Task "
                    select name="task_id" {
                        @for task_id in task_ids { option value=(task_id) { (task_id) } }
                    }
                }
            }
            button type="submit" name="action" value="clear" { "Clear" }
            label.check { input type="checkbox" name="downstream" value="true"; " downstream too" }
            button type="submit" name="action" value="mark_success" { "Mark success" }
            button type="submit" name="action" value="mark_failed" { "Mark failed" }
        }
    }
}

/// The run page.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(run_id): HtmlPath<i64>,
) -> Result<Markup, ConsoleError> {
    let run = run_or_404(&state, run_id).await?;
    let tasks = state.store.task_instance_list(run_id).await?;
    let task_ids: Vec<&str> = tasks.iter().map(|task| task.task_id.as_str()).collect();
    // Runs of DAGs without a tracked task never reach MLflow: no link, and no "not yet".
    let tracked = match &state.mlflow {
        Some(_) => {
            kiln_engine::mlflow::tracks(&state.store.dag_version_get(run.dag_version_id).await?.dag)
        }
        None => false,
    };
    let mlflow = match &state.mlflow {
        Some(links) if tracked => Some(
            links
                .run(state.store.as_ref(), &run.dag_id, run.id, &run.params)
                .await?,
        ),
        _ => None,
    };
    let body = html! {
        p.crumbs { a href="/dags" { "DAGs" } " / " a href={ "/dags/" (run.dag_id) } { (run.dag_id) } " / run " (run.id) }
        (live_fragment(&viewer, &run, &tasks))
        p { a href={ "/runs/" (run.id) "/lineage" } { "Lineage" } span.muted { ": the artifacts this run read and wrote" } }
        @match &mlflow {
            Some(Some(link)) => p { a href=(link.url) rel="noopener" { "MLflow run" } span.muted { ": " (link.run_id) } },
            Some(None) => p.muted { "MLflow: not mirrored yet (" a href="/mlflow" { "outbox" } ")" },
            None => {},
        }
        @if viewer.can_act() {
            h2 { "Task actions" }
            (task_actions(&viewer, run.id, &task_ids, &format!("/runs/{run_id}")))
        }
        h2 { "Params" }
        pre.params { (serde_json::to_string_pretty(&run.params).unwrap_or_default()) }
    };
    Ok(layout::page(
        &format!("Run {run_id} of {}", run.dag_id),
        &viewer,
        Section::Dags,
        body,
    ))
}

/// The live fragment alone, for htmx.
pub(crate) async fn live(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(run_id): HtmlPath<i64>,
) -> Result<Markup, ConsoleError> {
    let run = run_or_404(&state, run_id).await?;
    let tasks = state.store.task_instance_list(run_id).await?;
    Ok(live_fragment(&viewer, &run, &tasks))
}

/// The run's lineage: every artifact version its attempts read or wrote, and the attempts
/// between them.
pub(crate) async fn lineage(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(run_id): HtmlPath<i64>,
) -> Result<Markup, ConsoleError> {
    let run = run_or_404(&state, run_id).await?;
    let graph = state.store.lineage_get_by_run(run_id).await?;
    let title = format!("Lineage of run {run_id}");
    let body = html! {
        p.crumbs {
            a href="/dags" { "DAGs" } " / " a href={ "/dags/" (run.dag_id) } { (run.dag_id) } " / "
            a href={ "/runs/" (run.id) } { "run " (run.id) } " / lineage"
        }
        div.title-row {
            h1 { (title) }
            (state_badge(run.state.as_str()))
        }
        @match lineage::svg(&graph, None, &title) {
            Some(svg) => {
                div.scroll { (svg) }
                (lineage::legend())
            },
            None => p.muted { "This run has read and written no artifacts." },
        }
    };
    Ok(layout::page(&title, &viewer, Section::Dags, body))
}

/// Cancels the run; its running tasks are told to stop at their next heartbeat.
pub(crate) async fn cancel(
    State(state): State<ConsoleState>,
    HtmlPath(run_id): HtmlPath<i64>,
) -> Result<Redirect, ConsoleError> {
    run_or_404(&state, run_id).await?;
    let cancelled = state.scheduler.cancel(run_id).await?;
    tracing::info!(message = "Run cancel from the console.", run_id, cancelled);
    Ok(Redirect::to(&format!("/runs/{run_id}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskAction {
    Clear,
    MarkSuccess,
    MarkFailed,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TaskActionForm {
    task_id: String,
    action: TaskAction,
    #[serde(default)]
    downstream: bool,
    return_to: Option<String>,
}

/// Clears a task (and optionally its downstream) or marks it success or failed.
pub(crate) async fn task_action(
    State(state): State<ConsoleState>,
    HtmlPath(run_id): HtmlPath<i64>,
    HtmlForm(form): HtmlForm<TaskActionForm>,
) -> Result<Redirect, ConsoleError> {
    run_or_404(&state, run_id).await?;
    let scheduler = state.scheduler;
    match form.action {
        TaskAction::Clear => {
            let cleared = scheduler
                .clear(run_id, &form.task_id, form.downstream)
                .await?;
            tracing::info!(message = "Tasks cleared from the console.", run_id, cleared = ?cleared);
        }
        TaskAction::MarkSuccess => {
            scheduler
                .mark(run_id, &form.task_id, TaskState::Success)
                .await?;
        }
        TaskAction::MarkFailed => {
            scheduler
                .mark(run_id, &form.task_id, TaskState::Failed)
                .await?;
        }
    }
    let fallback = format!("/runs/{run_id}");
    Ok(Redirect::to(
        local_path(form.return_to.as_deref()).unwrap_or(&fallback),
    ))
}
