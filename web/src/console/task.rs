//! A task instance's page: its state, tries, worker, error and params, its attempts, the
//! artifacts one attempt read and wrote, and that attempt's log, which streams while the attempt
//! runs: the log ends in a "tail" element that htmx replaces with the chunks stored after the
//! last one shown, plus a new tail.

use axum::Extension;
use axum::extract::State;
use kiln_engine::state::TaskState;
use kiln_engine::store::{AttemptArtifact, LogChunk, TaskInstanceRecord, now_micros};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleState;
use super::auth::Viewer;
use super::error::ConsoleError;
use super::extract::{HtmlPath, HtmlQuery};
use super::layout::{self, Section, bytes, elapsed, state_badge, time, time_or_dash};
use super::lineage::version_href;
use super::run::{run_or_404, task_actions};

/// Chunks rendered into the page at once; a longer log continues through the tail.
const PAGE_CHUNKS: u32 = 2_000;
/// Chunks per tail request.
const TAIL_CHUNKS: u32 = 500;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TaskQuery {
    /// The attempt; the latest by default.
    #[serde(rename = "try")]
    try_number: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TailQuery {
    #[serde(rename = "try")]
    try_number: i64,
    after: i64,
}

async fn instance_or_404(
    state: &ConsoleState,
    run_id: i64,
    task_id: &str,
) -> Result<TaskInstanceRecord, ConsoleError> {
    state
        .store
        .task_instance_get(run_id, task_id)
        .await?
        .ok_or_else(|| {
            ConsoleError::NotFound(format!("task `{task_id}` not found in run {run_id}"))
        })
}

/// Whether more of this attempt's log may still come: the attempt is running, or it has not
/// started yet.
fn log_may_grow(instance: &TaskInstanceRecord, try_number: i64) -> bool {
    let running = instance.state == TaskState::Running && try_number == instance.try_number;
    let waiting = matches!(
        instance.state,
        TaskState::Scheduled | TaskState::Queued | TaskState::UpForRetry
    ) && try_number > instance.try_number;
    running || waiting
}

/// The log text and, when more is coming (or a page was full), the tail that fetches it.
fn log_piece(
    instance: &TaskInstanceRecord,
    try_number: i64,
    after: i64,
    chunks: &[LogChunk],
    full: bool,
) -> Markup {
    let last = chunks.last().map_or(after, |chunk| chunk.seq);
    let more = full || log_may_grow(instance, try_number);
    // A full page continues at once; a growing log is asked again in a second.
    let trigger = if full { "load" } else { "load delay:1s" };
    html! {
        @for chunk in chunks { (chunk.chunk) }
        @if more {
            span #log-tail hx-get={ "/runs/" (instance.run_id) "/tasks/" (instance.task_id) "/log?try=" (try_number) "&after=" (last) }
                hx-trigger=(trigger) hx-swap="outerHTML" {}
        }
    }
}

/// The state badge, swapped in out of band by each tail response so the header stays current.
fn state_line(instance: &TaskInstanceRecord, oob: bool) -> Markup {
    html! {
        span #task-state hx-swap-oob=[oob.then_some("true")] {
            (state_badge(instance.state.as_str()))
            @let (used, allowed) = instance.own_tries();
            " try " (used) " of " (allowed)
            @if instance.lost_attempts > 0 { ", " (instance.lost_attempts) " lost to the infrastructure" }
        }
    }
}

/// What one attempt read and wrote, inputs first.
fn artifacts_table(run_id: i64, artifacts: &[&AttemptArtifact]) -> Markup {
    html! {
        @if artifacts.is_empty() {
            p.muted { "This attempt read and wrote no artifacts." }
        } @else {
            table.artifacts {
                thead { tr { th { "Direction" } th { "Slot" } th { "Version" } th { "Kind" } th { "Size" } th { "Media type" } } }
                tbody {
                    @for artifact in artifacts {
                        @let version = &artifact.version;
                        tr {
                            td { (if artifact.direction == "input" { "read" } else { "wrote" }) }
                            td { code { (artifact.slot) } }
                            td {
                                a href=(version_href(&version.name, version.version)) { (version.label()) }
                                @if artifact.reused { " " span.muted { "(reused from the cache)" } }
                            }
                            td { span class={ "kind kind-" (version.kind.as_str()) } { (version.kind.as_str()) } }
                            td { (bytes(version.blob.size)) }
                            td { code { (version.media_type) } }
                        }
                    }
                }
            }
            p { a href={ "/runs/" (run_id) "/lineage" } { "Lineage of the whole run" } }
        }
    }
}

/// The task page.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath((run_id, task_id)): HtmlPath<(i64, String)>,
    HtmlQuery(query): HtmlQuery<TaskQuery>,
) -> Result<Markup, ConsoleError> {
    let store = &state.store;
    let run = run_or_404(&state, run_id).await?;
    let instance = instance_or_404(&state, run_id, &task_id).await?;
    let attempts = store.attempt_list(instance.id).await?;
    let recorded = store.attempt_artifact_list(instance.id).await?;
    let plan = store.dag_version_get(run.dag_version_id).await?;
    let definition = plan.task(&task_id);
    let latest = instance.try_number.max(1);
    let try_number = query.try_number.unwrap_or(latest);
    if try_number < 1 || try_number > latest {
        return Err(ConsoleError::NotFound(format!(
            "task `{task_id}` has no attempt {try_number}"
        )));
    }
    // Inputs before outputs, as the store orders them.
    let artifacts: Vec<&AttemptArtifact> = recorded
        .iter()
        .filter(|artifact| artifact.try_number == try_number)
        .collect();
    let chunks = store
        .log_read(instance.id, try_number, -1, PAGE_CHUNKS)
        .await?;
    let full = chunks.len() == PAGE_CHUNKS as usize;
    let now = now_micros();
    let here = format!("/runs/{run_id}/tasks/{task_id}");
    // Only the tracked kinds have nested MLflow runs; the lookup is cheap but the link would
    // only ever be empty for the others.
    let mlflow = match (&state.mlflow, definition) {
        (Some(links), Some(task))
            if kiln_engine::mlflow::MLFLOW_TRACKED_KINDS.contains(&task.kind.as_str()) =>
        {
            links
                .attempt(
                    store.as_ref(),
                    &run.dag_id,
                    &run.params,
                    instance.id,
                    try_number,
                )
                .await?
        }
        _ => None,
    };
    let body = html! {
        p.crumbs {
            a href="/dags" { "DAGs" } " / "
            a href={ "/dags/" (run.dag_id) } { (run.dag_id) } " / "
            a href={ "/runs/" (run.id) } { "run " (run.id) } " / " (task_id)
        }
        div.title-row {
            h1 { (task_id) }
            (state_line(&instance, false))
        }
        dl.facts {
            dt { "Kind" } dd { (definition.map_or("—", |task| task.kind.as_str())) }
            @if let Some(link) = &mlflow {
                dt { "MLflow" } dd { a href=(link.url) rel="noopener" { "nested run " (link.run_id) } }
            }
            dt { "Worker" } dd { (instance.worker_id.as_deref().unwrap_or("—")) }
            dt { "Queue" } dd { (instance.queue) }
            dt { "Started" } dd { (time_or_dash(instance.started_at)) }
            dt { "Ended" } dd { (time_or_dash(instance.ended_at)) }
            dt { "Duration" } dd { (elapsed(instance.started_at, instance.ended_at, now)) }
            @if let Some(at) = instance.next_retry_at {
                dt { "Next try" } dd { (time(at)) }
            }
        }
        @if let Some(error) = &instance.error {
            h2 { "Error" }
            pre.errors { (error) }
        }
        @if viewer.can_act() {
            (task_actions(&viewer, run_id, &[task_id.as_str()], &here))
        }
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            table.attempts {
                thead { tr { th { "Try" } th { "State" } th { "Worker" } th { "Started" } th { "Duration" } th { "Error" } } }
                tbody {
                    @for attempt in &attempts {
                        tr aria-current=[(attempt.try_number == try_number).then_some("true")] {
                            td { a href={ (here) "?try=" (attempt.try_number) } { (attempt.try_number) } }
                            td { (state_badge(&attempt.state)) }
                            td { (attempt.worker_id) }
                            td { (time(attempt.started_at)) }
                            td { (elapsed(Some(attempt.started_at), attempt.ended_at, now)) }
                            td.error { (attempt.error.as_deref().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        h2 { "Artifacts" @if attempts.len() > 1 || try_number != latest { " of try " (try_number) } }
        (artifacts_table(run_id, &artifacts))
        h2 { "Log" @if attempts.len() > 1 || try_number != latest { " of try " (try_number) } }
        pre.log #log { (log_piece(&instance, try_number, -1, &chunks, full)) }
        @if chunks.is_empty() && !log_may_grow(&instance, try_number) {
            p.muted { "This attempt wrote no log." }
        }
        noscript { p.muted { a href=(here) { "Reload" } " to see newer log lines." } }
        h2 { "Params" }
        h3 { "Task" }
        pre.params { (definition.map(|task| serde_json::to_string_pretty(&task.params).unwrap_or_default()).unwrap_or_default()) }
        h3 { "Run" }
        pre.params { (serde_json::to_string_pretty(&run.params).unwrap_or_default()) }
    };
    Ok(layout::page(
        &format!("{task_id} in run {run_id}"),
        &viewer,
        Section::Dags,
        body,
    ))
}

/// The log after `after`, for htmx to put where the old tail was, and the current state.
pub(crate) async fn log_tail(
    State(state): State<ConsoleState>,
    HtmlPath((run_id, task_id)): HtmlPath<(i64, String)>,
    HtmlQuery(query): HtmlQuery<TailQuery>,
) -> Result<Markup, ConsoleError> {
    let instance = instance_or_404(&state, run_id, &task_id).await?;
    let chunks = state
        .store
        .log_read(instance.id, query.try_number, query.after, TAIL_CHUNKS)
        .await?;
    let full = chunks.len() == TAIL_CHUNKS as usize;
    Ok(html! {
        (log_piece(&instance, query.try_number, query.after, &chunks, full))
        (state_line(&instance, true))
    })
}
